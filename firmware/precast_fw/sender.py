"""The sender core: one preallocated frame, patched in place per reading.

The frame comes whole from the generated template module (`tpl`). Per
reading the sender writes seq and the fields, then the check (CRC-16, or
AES-CMAC truncated to 4 or 8 bytes) and the UDP checksum (RFC 1624). The
fields go in through viper's `fill` for an integer template where the port
has viper, else through tpl.pack: one struct.pack_into with the template's
format, spelled out (a `*values` call would build a tuple per reading).
For an integer template nothing is allocated: memoryviews, the CMAC's
buffers and every bound method are made once, here.

seq is kept as two 16-bit halves: a 32-bit port's small ints end at 2**30,
and a bigger seq would be a heap object every reading.
"""

from .checks import copy_into, crc16_seal, fill, udp_seal

PAYLOAD_OFFSET = 42  # Ethernet 14 + IPv4 20 + UDP 8 (PROTOCOL.md)
CHECK_CRC16 = 0  # tpl.CHECK_KIND; anything else is a CMAC of tpl.CHECK_LEN bytes


class Sender:
    """Patches a template's frame for each reading; `frame_mv`/`payload_mv` are what to send."""

    def __init__(self, tpl, key=None):
        self.frame = bytearray(tpl.FRAME)
        self.frame_mv = memoryview(self.frame)
        self.payload_mv = self.frame_mv[PAYLOAD_OFFSET:]
        self._pack = tpl.pack
        self._sizes = None
        if fill is not None and tpl.INTEGER:
            self._sizes = bytes((tpl.FIELD_COUNT,) + tpl.FIELD_SIZES)
        self._check_off = tpl.OFF_CHECK
        self._plen = tpl.PAYLOAD_LEN
        self._crc_init = tpl.CRC_INIT
        self._partial = tpl.UDP_PARTIAL
        self._hi = 0
        self._lo = 0
        self._cmac = None
        if tpl.CHECK_KIND != CHECK_CRC16:
            if key is None:
                raise ValueError("template %s uses %s: a key is needed" % (tpl.NAME, tpl.CHECK))
            from .cmac import Cmac

            self._cmac = Cmac(key, self.payload_mv, tpl.OFF_CHECK)
            self._mac_len = tpl.CHECK_LEN
            self._check_mv = self.payload_mv[tpl.OFF_CHECK :]

    @property
    def seq(self):
        """The sequence number the next reading goes out with."""
        return (self._hi << 16) | self._lo

    @seq.setter
    def seq(self, value):
        self._hi = (value >> 16) & 0xFFFF
        self._lo = value & 0xFFFF
        self._put_hi()

    def _put_hi(self):
        """seq's high half, at payload offset 8; fill() writes only the low half."""
        self.frame[PAYLOAD_OFFSET + 8] = self._hi >> 8
        self.frame[PAYLOAD_OFFSET + 9] = self._hi & 0xFF

    def patch(self, values):
        """Write the next seq, `values` (raw ints in field order) and both checks into the frame."""
        frame = self.frame
        lo = self._lo
        if self._sizes is None:
            self._pack(frame, self._hi, lo, values)
        else:
            if lo == 0:
                self._put_hi()
            fill(frame, values, self._sizes, lo)  # type: ignore[misc]  # not None: _sizes is set
        if self._cmac is None:
            crc16_seal(frame, self._check_off, self._crc_init, self._partial)
        else:
            copy_into(self._check_mv, self._cmac.compute(), self._mac_len)
            udp_seal(frame, self._plen, self._partial)
        if lo == 0xFFFF:
            self._lo = 0
            self._hi = (self._hi + 1) & 0xFFFF
        else:
            self._lo = lo + 1
