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
SEND. Eight transactions and 35 bytes plus the frame (five more bytes per
extra Sn_IR poll); every header and answer buffer is made once, so a
reading allocates nothing.

Config (precast_config): SPI_ID, SPI_BAUD, SPI_SCK, SPI_MOSI, SPI_MISO,
CS_PIN, ETH_RESET (a pin number, None when not wired), ETH_LINK_MS (how
long the first open waits for a link). Errors are OSErrors that
robust.Robust retries and reopens on: ENODEV (no chip: VERSIONR is not
0x04), ETIMEDOUT (a SEND that never completes), ENETDOWN (no link),
ENOBUFS (the TX buffer never has room), ENOTCONN (the socket is closed).
"""

import time

from micropython import const

FRAME = True  # sends the whole frame

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
_VERSION = const(0x04)
# Socket registers.
_SN_MR = const(0x0000)
_SN_CR = const(0x0001)
_SN_SR = const(0x0003)
_SN_RXBUF_SIZE = const(0x001E)
_SN_TXBUF_SIZE = const(0x001F)
_SN_TX_WR = const(0x0024)
_OPEN = const(0x01)
_CLOSE = const(0x10)
_SEND_OK = const(0x10)
_TIMEOUT = const(0x08)
_SOCK_MACRAW = const(0x42)
# Sn_MR: MACRAW (socket 0 only), MAC filter on (MFEN), and broadcast, multicast and IPv6
# multicast blocked: a sender reads nothing, so nothing need fill its RX buffer.
_MACRAW_MODE = const(0xF4)
_TXBUF_KB = const(16)  # the sockets share 16 KB of TX buffer: all of it to socket 0
_RXBUF_KB = const(2)
_MIN_FRAME = const(60)  # Ethernet's minimum without the FCS
_MAX_FRAME = const(1514)
# Bounds on waiting: a 1514-byte frame takes 1.2 ms on the wire at 10 Mbit/s.
_SEND_US = const(20000)
_FREE_US = const(20000)
_RESET_MS = const(100)
_MIN_POLLS = const(8)
# errno numbers as Linux and MicroPython's ports have them (the errno module lacks some).
_EIO = const(5)
_ENODEV = const(19)
_EMSGSIZE = const(90)
_ENETDOWN = const(100)
_ENOBUFS = const(105)
_ENOTCONN = const(107)
_ETIMEDOUT = const(110)

# Per-reading transactions, header and dummy bytes made once (address hi, lo, control).
_Q_IR_SR = b"\x00\x02\x08\x00\x00"  # socket 0: Sn_IR, Sn_SR
_W_IR_CLEAR = b"\x00\x02\x0c\x10"  # Sn_IR: clear SEND_OK (write 1)
_W_IR_CLEAR_ALL = b"\x00\x02\x0c\x1f"
_Q_PHYCFGR = b"\x00\x2e\x00\x00"
_Q_FSR = b"\x00\x20\x08\x00\x00"  # Sn_TX_FSR, 16-bit
_W_SEND = b"\x00\x01\x0c\x20"  # Sn_CR = SEND


def _make_bus(cfg):
    """machine.SPI and the CS pin from the config (W5500-EVB-Pico's by default)."""
    from .board import spi_bus

    return spi_bus(cfg, 0, 20000000, 18, 19, 16, 17)


def _reset_pin(cfg):
    pin = getattr(cfg, "ETH_RESET", None)
    if pin is None or callable(pin):
        return pin  # not wired, or a Pin-like object already
    from .board import output_pin

    return output_pin(pin)


class Transport:
    """send(mv) raises OSError on failure; reopen() resets and sets the chip up again."""

    FRAME = FRAME

    def __init__(self, tpl, cfg=None, spi=None, cs=None):
        if spi is None or cs is None:
            spi, cs = _make_bus(cfg)
        self._spi = spi
        self._cs = cs
        self._rst = _reset_pin(cfg)
        self._mac = bytes(tpl.FRAME[6:12])  # the template's source MAC
        self._link_ms = getattr(cfg, "ETH_LINK_MS", 5000)
        self._a4 = bytearray(4)  # answers of one-byte reads (3 header bytes, then data)
        self._a5 = bytearray(5)  # two-byte reads
        self._a5b = bytearray(5)
        self._hframe = bytearray(b"\x00\x00\x14")  # TX buffer write at Sn_TX_WR
        self._wwr = bytearray(b"\x00\x24\x0c\x00\x00")  # Sn_TX_WR = new pointer
        zeros = bytearray(_MIN_FRAME)
        # Padding for every short length, sliced once: a frame of n bytes takes pads[n].
        self._pads = [memoryview(zeros)[: _MIN_FRAME - n] for n in range(_MIN_FRAME)]
        self._wr = 0
        self._up = False
        self._pending = False  # a SEND whose SEND_OK has not been seen yet
        self._last = 0  # errno of the last failed send
        # What happened, for summary(): chip set-ups, and failures by kind.
        self.resets = 0
        self.timeouts = 0
        self.no_link = 0
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

    def _wait(self, addr, ctl, mask, want, ms, what):
        t0 = time.ticks_ms()
        while self._read(addr, ctl, 1)[0] & mask != want:
            if time.ticks_diff(time.ticks_ms(), t0) > ms:
                raise OSError(_ETIMEDOUT, "w5500: %s" % what)
            time.sleep_ms(1)

    def _open(self, link_ms=0):
        """Reset the chip and open socket 0 in MACRAW mode."""
        self._up = False
        if self._pending:
            self.unconfirmed += 1  # handed to the chip, never confirmed: the reset ends it
            self._pending = False
        if self._rst is not None:
            self._rst(0)
            time.sleep_ms(1)  # RSTn low at least 500 us
            self._rst(1)
            time.sleep_ms(2)  # PLL lock: at most 1 ms
        v = self._read(_VERSIONR, _COMMON_R, 1)[0]
        if v != _VERSION:
            raise OSError(
                _ENODEV,
                "w5500: VERSIONR reads 0x%02x, not 0x04: no chip, or a wiring fault "
                "(MISO, CS, power)" % v,
            )
        self._write(_MR, _COMMON_W, b"\x80")
        self._wait(_MR, _COMMON_R, _MR_RST, 0, _RESET_MS, "MR.RST never cleared")
        self._write(_SHAR, _COMMON_W, self._mac)
        got = bytes(self._read(_SHAR, _COMMON_R, 6))
        if got != self._mac:
            raise OSError(_EIO, "w5500: SHAR reads back %s: a wiring fault (MOSI, SCK)" % got.hex())
        for n in range(1, 8):  # the other sockets' TX buffers to 0 KB, so socket 0 has 16
            self._write(_SN_TXBUF_SIZE, (4 * n + 1) << 3 | 0x04, b"\x00")
        self._write(_SN_TXBUF_SIZE, _S0_W, bytes((_TXBUF_KB,)))
        self._write(_SN_RXBUF_SIZE, _S0_W, bytes((_RXBUF_KB,)))
        self._write(_SN_MR, _S0_W, bytes((_MACRAW_MODE,)))
        self._write(_SN_CR, _S0_W, bytes((_OPEN,)))
        self._wait(_SN_CR, _S0_R, 0xFF, 0, _RESET_MS, "socket 0 never took OPEN")
        sr = self._read(_SN_SR, _S0_R, 1)[0]
        if sr != _SOCK_MACRAW:
            raise OSError(_EIO, "w5500: socket 0 status 0x%02x after OPEN, not MACRAW 0x42" % sr)
        self._write(0x0002, _S0_W, b"\x1f")  # Sn_IR: clear everything
        a = self._read(_SN_TX_WR, _S0_R, 2)
        self._wr = a[0] << 8 | a[1]
        if link_ms:
            t0 = time.ticks_ms()
            while not self._read(_PHYCFGR, _COMMON_R, 1)[0] & _LNK:
                if time.ticks_diff(time.ticks_ms(), t0) > link_ms:
                    break  # send() reports it (ENETDOWN) until the cable is in
                time.sleep_ms(10)
        self._up = True
        self.resets += 1

    def reopen(self):
        """Set the chip up again; while only the link is down, the chip is left as it is."""
        if self._last == _ENETDOWN and self._up:
            # A reset restarts the PHY's autonegotiation: seconds more without a link.
            if self._read(_PHYCFGR, _COMMON_R, 1)[0] & _LNK:
                self._last = 0
                return
            raise OSError(_ENETDOWN, "w5500: no link (PHYCFGR LNK clear)")
        self._open()

    # -- the hot path: no allocation --

    def send(self, mv):
        if not self._up:
            raise OSError(_ENOTCONN)
        spi = self._spi
        cs = self._cs
        n = len(mv)
        if n > _MAX_FRAME:
            raise OSError(_EMSGSIZE)
        if self._pending:
            a = self._a5
            t0 = time.ticks_us()
            polls = 0
            while True:
                polls += 1
                cs(0)
                spi.write_readinto(_Q_IR_SR, a)
                cs(1)
                if a[4] != _SOCK_MACRAW:  # reset under us (brown-out), or the chip is gone
                    self._up = False
                    self._last = _ENOTCONN
                    raise OSError(_ENOTCONN)
                if a[3] & (_SEND_OK | _TIMEOUT):
                    break
                # Time and a few polls: a process switched out for a while is not a stuck chip.
                if polls > _MIN_POLLS and time.ticks_diff(time.ticks_us(), t0) > _SEND_US:
                    self.timeouts += 1
                    self._last = _ETIMEDOUT
                    raise OSError(_ETIMEDOUT)
            cs(0)
            spi.write(_W_IR_CLEAR_ALL)
            cs(1)
            self._pending = False
            if not a[3] & _SEND_OK:
                self.unconfirmed += 1  # the chip gave up on the last frame
        a = self._a4
        cs(0)
        spi.write_readinto(_Q_PHYCFGR, a)
        cs(1)
        if not a[3] & _LNK:
            self.no_link += 1
            self._last = _ENETDOWN
            raise OSError(_ENETDOWN)
        wire = n if n >= _MIN_FRAME else _MIN_FRAME
        a = self._a5
        b = self._a5b
        t0 = time.ticks_us()
        polls = 0
        while True:  # Sn_TX_FSR can change while it is read: until two reads agree
            polls += 1
            cs(0)
            spi.write_readinto(_Q_FSR, a)
            cs(1)
            cs(0)
            spi.write_readinto(_Q_FSR, b)
            cs(1)
            if a[3] == b[3] and a[4] == b[4] and (a[3] << 8 | a[4]) >= wire:
                break
            if polls > _MIN_POLLS and time.ticks_diff(time.ticks_us(), t0) > _FREE_US:
                self.full += 1
                self._last = _ENOBUFS
                raise OSError(_ENOBUFS)
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
        cs(0)
        spi.write(_W_SEND)
        cs(1)
        self._pending = True
        self._last = 0

    def summary(self):
        """What the chip did over the run, in one line."""
        return "w5500: resets %d send-timeouts %d no-link %d tx-full %d unconfirmed %d" % (
            self.resets,
            self.timeouts,
            self.no_link,
            self.full,
            self.unconfirmed,
        )

    def close(self):
        """Close socket 0 (the chip stays set up for a later reopen)."""
        if not self._up:
            return
        self._up = False
        try:
            self._write(_SN_CR, _S0_W, bytes((_CLOSE,)))
        except OSError:
            pass
