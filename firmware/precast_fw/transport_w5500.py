"""W5500 transport: the whole frame through a WIZnet W5500's MACRAW socket, over SPI.

The board needs no IP stack: socket 0 in MACRAW mode puts the bytes it is
given on the wire and the chip appends the Ethernet FCS. It does not pad:
a frame shorter than Ethernet's 60-byte minimum (a small template's 58)
would leave as a runt, so this driver pads it with zeros to 60 bytes in
the same SPI transaction (the receiver's IPv4 total length ignores them).

SPI frame (W5500 datasheet 2.2): a 16-bit offset address (MSB first), a
control byte `BSB << 3 | RWB << 2 | OM` (block select: 0 common registers,
1 socket 0's registers, 2 its TX buffer; RWB 1 = write; OM 00 = variable
length, ended by CS rising), then the data; the address increments per
byte, and in a TX buffer block the chip maps the 16-bit pointer onto the
buffer's size (so a frame may wrap without the driver splitting it).

Per reading: the previous frame's SEND_OK in Sn_IR (read with Sn_SR: a
socket no longer in MACRAW means the chip was reset), clear it, the link
in PHYCFGR, Sn_TX_FSR until two reads agree, the frame (and any padding)
written at Sn_TX_WR in one transaction, Sn_TX_WR advanced (mod 2^16),
SEND, then Sn_CR until it reads 0. Nine transactions and 39 bytes plus
the frame (five more bytes per extra Sn_IR poll, four per extra Sn_CR
poll); every header and answer buffer is made once, so a reading
allocates nothing.

The command handshake (datasheet 4.2 Sn_CR; WIZnet's ioLibrary does the
same after every command): the chip clears Sn_CR once it has taken a
command, and one written before that may not be taken, so every write of
Sn_CR (OPEN, SEND, CLOSE) is followed by a bounded wait for 0. A SEND the
chip never takes leaves the socket to be set up again (the next send says
ENOTCONN and Robust reopens). CLOSE during a transmission aborts it, so
close() and reopen() first let a pending SEND finish (SEND_OK or the
chip's TIMEOUT, bounded by _SEND_US): the last frame of a run, or of a
board about to sleep, leaves whole.

Config: the wiring (ethchip.py), ETH_LINK_MS. Errors are OSErrors that
robust.Robust retries and reopens on: ENODEV (no chip: VERSIONR is not
0x04), ETIMEDOUT (a SEND that never completes), ENETDOWN (no link),
ENOBUFS (the TX buffer never has room), ENOTCONN (the socket is closed).
"""

import time

from micropython import const

from .ethchip import EIO, EMSGSIZE, ENETDOWN, ENOBUFS, ENODEV, ENOTCONN, ETIMEDOUT, MAX_FRAME, Chip

# Block select << 3 with RWB: common registers, socket 0 registers, socket 0 TX buffer.
_COMMON_R = const(0x00)
_COMMON_W = const(0x04)
_S0_R = const(0x08)
_S0_W = const(0x0C)
# Common registers.
_MR = const(0x0000)
_MR_RST = const(0x80)
_SHAR = const(0x0009)
_PHYCFGR = const(0x002E)
_LNK = const(0x01)
_VERSIONR = const(0x0039)
_CHIP_VERSION = const(0x04)  # what VERSIONR reads on a W5500
# Socket registers.
_SN_MR = const(0x0000)
_SN_RXBUF_SIZE = const(0x001E)
_SN_TXBUF_SIZE = const(0x001F)
_SN_SR = const(0x0003)
_SN_TX_WR = const(0x0024)
_SEND_OK = const(0x10)
_TIMEOUT = const(0x08)
_SOCK_MACRAW = const(0x42)
# Sn_MR: MACRAW (socket 0 only), MAC filter on (MFEN), and broadcast, multicast and IPv6
# multicast blocked: a sender reads nothing, so nothing need fill its RX buffer.
_MACRAW_MODE = const(0xF4)
_TXBUF_KB = const(16)  # the sockets share 16 KB of TX buffer: all of it to socket 0
_RXBUF_KB = const(2)
_MIN_FRAME = const(60)  # Ethernet's minimum without the FCS
# Bounds on waiting: a 1514-byte frame takes 1.2 ms on the wire at 10 Mbit/s; the chip takes
# a command within a few of its 150 MHz clocks.
_SEND_US = const(20000)
_FREE_US = const(20000)
_CMD_US = const(10000)
_RESET_MS = const(100)

# Per-reading transactions, header and dummy bytes made once (address hi, lo, control).
_Q_IR_SR = b"\x00\x02\x08\x00\x00"  # socket 0: Sn_IR, Sn_SR
_W_IR_CLEAR_ALL = b"\x00\x02\x0c\x1f"  # Sn_IR: clear everything (write 1s)
_Q_PHYCFGR = b"\x00\x2e\x00\x00"
_Q_FSR = b"\x00\x20\x08\x00\x00"  # Sn_TX_FSR, 16-bit
_Q_CR = b"\x00\x01\x08\x00"  # Sn_CR: 0 once the chip has taken the command
_W_OPEN = b"\x00\x01\x0c\x01"  # Sn_CR = OPEN
_W_SEND = b"\x00\x01\x0c\x20"  # Sn_CR = SEND
_W_CLOSE = b"\x00\x01\x0c\x10"  # Sn_CR = CLOSE


class Transport(Chip):
    """send(mv) raises OSError on failure; reopen() resets and sets the chip up again."""

    NAME = "w5500"
    COUNTS = (
        ("resets", "resets"),
        ("send-timeouts", "timeouts"),
        ("no-link", "no_link"),
        ("tx-full", "full"),
        ("unconfirmed", "unconfirmed"),
    )
    NO_LINK = "w5500: no link (PHYCFGR LNK clear)"

    def __init__(self, tpl, cfg=None, spi=None, cs=None):
        Chip.__init__(self, tpl, cfg, spi, cs)
        self._a4 = bytearray(4)  # answers of one-byte reads (3 header bytes, then data)
        self._a5 = bytearray(5)  # two-byte reads
        self._a5b = bytearray(5)
        self._hframe = bytearray(b"\x00\x00\x14")  # TX buffer write at Sn_TX_WR
        self._wwr = bytearray(b"\x00\x24\x0c\x00\x00")  # Sn_TX_WR = new pointer
        zeros = bytearray(_MIN_FRAME)
        # Padding for every short length, sliced once: a frame of n bytes takes pads[n].
        self._pads = [memoryview(zeros)[: _MIN_FRAME - n] for n in range(_MIN_FRAME)]
        self._wr = 0
        self._pending = False  # a SEND whose SEND_OK has not been seen yet
        self.full = 0
        self.unconfirmed = 0  # frames handed to the chip whose SEND_OK never came
        self._open(self._link_ms)

    # -- SPI transactions (set-up path: allocation is allowed here) --

    def _read(self, addr, ctl, n):
        q = bytearray(3 + n)
        q[0] = addr >> 8
        q[1] = addr & 0xFF
        q[2] = ctl
        a = bytearray(3 + n)
        self._cs(0)
        try:
            self._spi.write_readinto(q, a)
        finally:
            self._cs(1)
        return a[3:]

    def _write(self, addr, ctl, data):
        self._cs(0)
        try:
            self._spi.write(bytes((addr >> 8, addr & 0xFF, ctl)))
            self._spi.write(data)
        finally:
            self._cs(1)

    def _open(self, link_ms=0):
        """Reset the chip and open socket 0 in MACRAW mode."""
        self._up = False
        if self._pending:
            self.unconfirmed += 1  # handed to the chip, never confirmed: the reset ends it
            self._pending = False
        self.pulse_reset(2)  # PLL lock: at most 1 ms
        v = self._read(_VERSIONR, _COMMON_R, 1)[0]
        if v != _CHIP_VERSION:
            raise OSError(
                ENODEV,
                "w5500: VERSIONR reads 0x%02x, not 0x04: no chip, or a wiring fault "
                "(MISO, CS, power)" % v,
            )
        self._write(_MR, _COMMON_W, b"\x80")
        t0 = time.ticks_ms()
        while self._read(_MR, _COMMON_R, 1)[0] & _MR_RST:
            if time.ticks_diff(time.ticks_ms(), t0) > _RESET_MS:
                raise OSError(ETIMEDOUT, "w5500: MR.RST never cleared")
            time.sleep_ms(1)
        self._write(_SHAR, _COMMON_W, self._mac)
        got = bytes(self._read(_SHAR, _COMMON_R, 6))
        if got != self._mac:
            raise OSError(EIO, "w5500: SHAR reads back %s: a wiring fault (MOSI, SCK)" % got.hex())
        for n in range(1, 8):  # the other sockets' TX buffers to 0 KB, so socket 0 has 16
            self._write(_SN_TXBUF_SIZE, (4 * n + 1) << 3 | 0x04, b"\x00")
        self._write(_SN_TXBUF_SIZE, _S0_W, bytes((_TXBUF_KB,)))
        self._write(_SN_RXBUF_SIZE, _S0_W, bytes((_RXBUF_KB,)))
        self._write(_SN_MR, _S0_W, bytes((_MACRAW_MODE,)))
        if not self._command(_W_OPEN):
            raise OSError(ETIMEDOUT, "w5500: socket 0 never took OPEN (Sn_CR stays set)")
        sr = self._read(_SN_SR, _S0_R, 1)[0]
        if sr != _SOCK_MACRAW:
            raise OSError(EIO, "w5500: socket 0 status 0x%02x after OPEN, not MACRAW 0x42" % sr)
        self._write(0x0002, _S0_W, b"\x1f")  # Sn_IR: clear everything
        a = self._read(_SN_TX_WR, _S0_R, 2)
        self._wr = a[0] << 8 | a[1]
        if link_ms:
            self.wait_link(link_ms)
        self._up = True
        self.resets += 1

    def link(self):
        """True while PHYCFGR says the link is up."""
        return bool(self._read(_PHYCFGR, _COMMON_R, 1)[0] & _LNK)

    # -- the hot path: no allocation --

    def _command(self, w):
        """Write the Sn_CR command `w` and wait (bounded) until Sn_CR reads 0; False if never."""
        spi = self._spi
        cs = self._cs
        a = self._a4
        cs(0)
        spi.write(w)
        cs(1)
        bound = self._bound
        bound.start(_CMD_US)
        while True:
            cs(0)
            spi.write_readinto(_Q_CR, a)
            cs(1)
            if a[3] == 0:
                return True
            if bound.over():
                return False

    def _finish(self):
        """Wait (bounded) for the pending SEND's SEND_OK or TIMEOUT; 0, or the errno of why not."""
        spi = self._spi
        cs = self._cs
        a = self._a5
        bound = self._bound
        bound.start(_SEND_US)
        while True:
            cs(0)
            spi.write_readinto(_Q_IR_SR, a)
            cs(1)
            if a[4] != _SOCK_MACRAW:  # reset under us (brown-out), or the chip is gone
                return ENOTCONN
            if a[3] & (_SEND_OK | _TIMEOUT):
                break
            if bound.over():
                return ETIMEDOUT
        cs(0)
        spi.write(_W_IR_CLEAR_ALL)
        cs(1)
        self._pending = False
        if not a[3] & _SEND_OK:
            self.unconfirmed += 1  # the chip gave up on the frame
        return 0

    def send(self, mv):
        if not self._up:
            raise OSError(ENOTCONN)
        spi = self._spi
        cs = self._cs
        n = len(mv)
        if n > MAX_FRAME:
            raise OSError(EMSGSIZE)
        if self._pending:
            err = self._finish()
            if err:
                if err == ENOTCONN:
                    self._up = False
                else:
                    self.timeouts += 1
                self._last = err
                raise OSError(err)
        a = self._a4
        cs(0)
        spi.write_readinto(_Q_PHYCFGR, a)
        cs(1)
        if not a[3] & _LNK:
            self.no_link += 1
            self._last = ENETDOWN
            raise OSError(ENETDOWN)
        wire = n if n >= _MIN_FRAME else _MIN_FRAME
        a = self._a5
        b = self._a5b
        bound = self._bound
        bound.start(_FREE_US)
        while True:  # Sn_TX_FSR can change while it is read: until two reads agree
            cs(0)
            spi.write_readinto(_Q_FSR, a)
            cs(1)
            cs(0)
            spi.write_readinto(_Q_FSR, b)
            cs(1)
            if a[3] == b[3] and a[4] == b[4] and (a[3] << 8 | a[4]) >= wire:
                break
            if bound.over():
                self.full += 1
                self._last = ENOBUFS
                raise OSError(ENOBUFS)
        wr = self._wr
        h = self._hframe
        h[0] = wr >> 8
        h[1] = wr & 0xFF
        cs(0)
        spi.write(h)
        spi.write(mv)
        if n < _MIN_FRAME:
            spi.write(self._pads[n])
        cs(1)
        wr = (wr + wire) & 0xFFFF
        self._wr = wr
        w = self._wwr
        w[3] = wr >> 8
        w[4] = wr & 0xFF
        cs(0)
        spi.write(w)
        cs(1)
        self._pending = True
        if self._command(_W_SEND):
            self._last = 0
        else:  # not taken: set the chip up again before the next frame (Robust reopens)
            self.timeouts += 1
            self._up = False
            self._last = ETIMEDOUT

    def close(self):
        """Let a pending SEND finish, then close socket 0 (the chip stays set up for a reopen)."""
        if not self._up:
            return
        self._up = False
        try:
            if self._pending and self._finish():
                self.unconfirmed += 1  # still going after _SEND_US: the CLOSE cuts it off
                self._pending = False
            self._command(_W_CLOSE)
        except OSError:  # a bus error: the chip is reset at the next open anyway
            pass
