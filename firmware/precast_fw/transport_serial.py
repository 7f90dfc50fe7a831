"""Serial transport: the payload SLIP-framed (RFC 1055) on a UART, for `precast bridge`.

For a board without a network: the bridge on the host reads the line,
checks each payload and forwards it. A frame is END (0xC0), the payload
with END sent as ESC ESC_END (0xDB 0xDC) and ESC as ESC ESC_ESC (0xDB
0xDD), then END. The output buffer is allocated once (twice the payload
plus the two ENDs: the worst case), so a reading allocates nothing.

cfg.SERIAL_PORT: a UART id on a board (machine.UART), or on the unix port
a device path (a tty or a pty) opened for binary writes.
cfg.SERIAL_BAUD: the baud rate on a board (default 115200).
"""

from micropython import const

_END = const(0xC0)
_ESC = const(0xDB)
_ESC_END = const(0xDC)
_ESC_ESC = const(0xDD)


def slip_into(src, dst):
    """SLIP-frame src into dst (len >= 2 * len(src) + 2); the frame's length."""
    j = 1
    dst[0] = _END
    for i in range(len(src)):
        b = src[i]
        if b == _END:
            dst[j] = _ESC
            dst[j + 1] = _ESC_END
            j += 2
        elif b == _ESC:
            dst[j] = _ESC
            dst[j + 1] = _ESC_ESC
            j += 2
        else:
            dst[j] = b
            j += 1
    dst[j] = _END
    return j + 1


class Transport:
    """send(mv) raises OSError on failure; reopen() opens the port again."""

    FRAME = False  # sends the payload, not the whole frame

    def __init__(self, tpl, cfg=None):
        self._port = getattr(cfg, "SERIAL_PORT", 1)
        self._baud = getattr(cfg, "SERIAL_BAUD", 115200)
        # Every byte escaped, plus the ENDs, of the longest payload: a delayed one, P + 4.
        self._buf = bytearray(2 * (tpl.PAYLOAD_LEN + 4) + 2)
        self.out = None
        self.reopen()

    def reopen(self):
        """(Re)open the UART, or the device path on the unix port."""
        self.close()
        if isinstance(self._port, str):
            self.out = open(self._port, "wb")
        else:
            from machine import UART

            self.out = UART(self._port, self._baud)

    def send(self, mv):
        n = slip_into(mv, self._buf)
        # write(buf, n): the stream protocol's length argument; a slice would allocate.
        if self.out.write(self._buf, n) != n:
            raise OSError(5)  # EIO: the UART timed out, or a short write

    def close(self):
        if self.out is not None:
            if hasattr(self.out, "close"):
                self.out.close()
            self.out = None
