"""The sender core: one preallocated frame, patched in place per reading.

The frame comes whole from the generated template module (`tpl`). Per
reading, `seal` (viper where the port has it, see checks) writes seq and
the fields at their fixed offsets, then the check (CRC-16, or AES-CMAC
truncated to 4 or 8 bytes) and the UDP checksum (RFC 1624). A template
with an f32 field has its fields written by tpl.pack first: one
struct.pack_into with the template's format, spelled out (a `*values`
call would build a tuple).

For an integer template nothing is allocated: the memoryviews, the
params array, the CMAC's buffers and its bound method are made once, here.
seq lives in the params array (slots P_* in layout) as a uint32, so it never becomes a big int
(a 32-bit port's small ints end at 2**30).
"""

from array import array

from micropython import const

from .checks import VIPER, seal

# layout.py's numbers, as private const(): folded in, no global (held equal by
# tests/firmware/test_firmware_constants.py).
_PAYLOAD_OFFSET = const(42)
_OFF_MAGIC = const(0)
_OFF_VERFLAGS = const(1)
_MAGIC = const(0x50)
_VERSION = const(1)
_FLAG_MIC = const(0x01)
_FLAG_DELAYED = const(0x02)
_CHECK_CRC16 = const(0)
_P_SEQ = const(0)
_P_FIELDS = const(1)


class Sender:
    """Patches a template's frame for each reading; `frame_mv`/`payload_mv` are what to send.

    patch(values) writes the next seq, `values` (raw numbers in field
    order: `self.values`, or any array('i') of the template's field count;
    a list for a template with an f32 field) and the checks. For an
    integer template it is `seal` itself
    (one viper call: 0.2 us with a CRC-16 on a PC); with an f32 field,
    tpl.pack goes first.
    """

    patch = seal
    # Set on an instance only where they apply (each instance attribute is a slot of its own).
    params_b = values_b = None  # plain.seal's byte views of params and values, without viper
    mac = None  # the CMAC (cmac.Cmac) of a template with a MIC
    _pack = None  # tpl.pack, for a template with an f32 field

    def __init__(self, tpl, key=None):
        mac = tpl.CHECK_KIND != _CHECK_CRC16
        magic = tpl.FRAME[_PAYLOAD_OFFSET + _OFF_MAGIC]
        flags = tpl.FRAME[_PAYLOAD_OFFSET + _OFF_VERFLAGS]
        # The delayed frame (precast_template_late) has flag bit 1 set: its age is one more field.
        if magic != _MAGIC or flags & ~_FLAG_DELAYED != _VERSION << 4 | (_FLAG_MIC if mac else 0):
            raise ValueError("template %s: header 0x%02x 0x%02x is not this firmware's (magic"
                             " 0x%02x, version %d): rebuild the bundle"
                             % (tpl.NAME, magic, flags, _MAGIC, _VERSION))  # fmt: skip
        self.frame = bytearray(tpl.FRAME)
        self.frame_mv = memoryview(self.frame)
        self.payload_mv = self.frame_mv[_PAYLOAD_OFFSET:]
        self.params = array(
            "I",
            (
                0,
                tpl.FIELD_COUNT,
                tpl.OFF_CHECK,
                tpl.CHECK_LEN,
                tpl.CRC_INIT,
                tpl.UDP_PARTIAL,
                int(mac),
                tpl.PAYLOAD_LEN,
            )
            + tpl.FIELD_SIZES,
        )
        # The raw fields of a reading, filled by the sensor: an array('i') for an integer
        # template (viper reads it as words), a list where a field is f32.
        n = tpl.FIELD_COUNT
        self.values = array("i", bytes(4 * n)) if tpl.INTEGER else [0] * n
        if not VIPER:  # plain.seal's byte views of params and values (see plain.py)
            from .plain import bytes_of

            self.params_b = bytes_of(self.params)
            self.values_b = bytes_of(self.values) if tpl.INTEGER else None
        if not tpl.INTEGER:
            self._pack = tpl.pack  # struct.pack_into writes the fields, f32 included
            self.params[_P_FIELDS] = 0
        if mac:
            if key is None:
                raise ValueError("template %s uses %s: a key is needed" % (tpl.NAME, tpl.CHECK))
            from .cmac import Cmac

            self.mac = Cmac(key, self.payload_mv, tpl.OFF_CHECK)
        if self._pack is not None:
            self.patch = self._patch_in_steps  # type: ignore[method-assign]  # bound once

    @property
    def seq(self):
        """The sequence number the next reading goes out with."""
        return self.params[_P_SEQ]

    @seq.setter
    def seq(self, value):
        self.params[_P_SEQ] = value & 0xFFFFFFFF

    def _patch_in_steps(self, values):
        self._pack(self.frame, 0, 0, values)  # seal writes seq over the zeros
        seal(self, values)
