"""ENC28J60 transport: the whole frame through a Microchip ENC28J60 (a 10BASE-T MAC+PHY), over SPI.

The chip has no IP stack and precast needs none: the frame is written
into its buffer memory and sent as it is. The chip pads a short frame to
60 bytes and appends the FCS (MACON3 PADCFG = 001 with TXCRCEN). Reception
stays off (ECON1.RXEN clear, MACON1.MARXEN clear): a sender reads nothing,
and a full RX buffer then cannot stall anything.

SPI (datasheet DS39662E 4.2, mode 0): one opcode byte `ooo a aaaa`, then
data. RCR 000 reads a control register (a MAC or MII register answers a
dummy byte first), WCR 010 writes one, BFS 100 / BFC 101 set or clear
bits (ETH registers only), WBM 0x7A writes buffer memory at EWRPT
(auto-increment), SRC 0xFF resets. Registers 0x00..0x19 are banked by
ECON1.BSEL; EIE, EIR, ESTAT, ECON2, ECON1 (0x1B..0x1F) are in every bank.
PHY registers go through MIREGADR/MIWR/MICMD/MIRD, with MISTAT.BUSY.

Buffer: 8 KB. Transmit area from ETXST = 0x1A00 (1 control byte, a frame of
up to 1514 bytes, the 7-byte status vector fit below 0x2000); the receive
area 0x0000..0x19FF is set (errata: ERXST at 0) but never enabled.

Per reading, all in bank 0 and the common registers: TXRTS clear, EIR
(LINKIF: the PHY says the link changed; only then are PHIR and PHSTAT2
read), the errata workaround (DS80349: set and clear ECON1.TXRST before
each transmission, or the transmit logic can stall after an error), clear
TXIF/TXERIF, EWRPT = ETXST, WBM of the per-packet control byte (0x00: use
MACON3) and the frame in one transaction, ETXND when the length changed,
TXRTS, then wait for TXRTS to clear and read EIR: TXIF alone is a frame
sent; TXERIF (ESTAT: TXABRT or LATECOL) makes the send an OSError (EIO),
and neither (a chip that says nothing: MISO stuck low) ENOTCONN. Robust
retries the reading (an aborted frame never reached a receiver whole, so no
seq is repeated). Eleven transactions and 22 bytes plus the frame with one
TXRTS poll (two transactions more when the length changes and ETXND is
written); every buffer is made once: a reading allocates nothing.

Config: the wiring (ethchip.py), ETH_FULL_DUPLEX (False: the ENC28J60
does not autonegotiate, and a switch port then settles on half duplex),
ETH_LINK_MS.
"""

import time

from micropython import const

from .ethchip import EIO, EMSGSIZE, ENETDOWN, ENODEV, ENOTCONN, ETIMEDOUT, MAX_FRAME, Chip

# Opcodes.
_RCR = const(0x00)
_WCR = const(0x40)
_BFS = const(0x80)
_BFC = const(0xA0)
# Common registers.
_EIR = const(0x1C)
_ESTAT = const(0x1D)
_ECON2 = const(0x1E)
_ECON1 = const(0x1F)
_TXRST = const(0x80)
_TXRTS = const(0x08)
_AUTOINC = const(0x80)
_LINKIF = const(0x10)
_TXIF = const(0x08)
_TXERIF = const(0x02)
_LATECOL = const(0x10)
_TXABRT = const(0x02)
_CLKRDY = const(0x01)
# Bank 0.
_ETXST = const(0x1A00)
_ERXND = const(0x19FF)
# Bank 2 (MAC and MII registers).
_MACON1 = const(0x00)
_MACON3 = const(0x02)
_MACON4 = const(0x03)
_MABBIPG = const(0x04)
_MAIPGL = const(0x06)
_MAIPGH = const(0x07)
_MAMXFLL = const(0x0A)
_MAMXFLH = const(0x0B)
_MICMD = const(0x12)
_MIREGADR = const(0x14)
_MIWRL = const(0x16)
_MIWRH = const(0x17)
_MIRDL = const(0x18)
_MIRDH = const(0x19)
# Bank 3.
_MISTAT = const(0x0A)
_EREVID = const(0x12)
# MACON3: PADCFG 001 (pad to 60 bytes, append the CRC), TXCRCEN, FRMLNEN.
_MACON3_HALF = const(0x32)
_FULDPX = const(0x01)
_DEFER = const(0x40)
# PHY registers.
_PHCON1 = const(0x00)
_PHCON2 = const(0x10)
_PHSTAT2 = const(0x11)
_PHIE = const(0x12)
_PHIR = const(0x13)
_PDPXMD = const(0x0100)
_HDLDIS = const(0x0100)
_LSTAT = const(0x0400)
_PHIE_LINK = const(0x0012)  # PLNKIE | PGEIE: link changes set EIR.LINKIF
_MAX_FLEN = const(1518)
_TX_US = const(20000)  # 1514 bytes take 1.2 ms at 10 Mbit/s; 16 collisions' backoff more
_CLKRDY_MS = const(50)
_MII_US = const(1000)  # a PHY access takes 10.24 us

# Per-reading commands, made once.
_R_ECON1 = b"\x1f\x00"
_R_EIR = b"\x1c\x00"
_R_ESTAT = b"\x1d\x00"
_TXRST_SET = b"\x9f\x80"
_TXRST_CLR = b"\xbf\x80"
_TXRTS_SET = b"\x9f\x08"
_TXRTS_CLR = b"\xbf\x08"
_CLR_TXIF = b"\xbc\x0a"  # BFC EIR: TXIF | TXERIF
_CLR_ERRORS = b"\xbd\x12"  # BFC ESTAT: LATECOL | TXABRT
_EWRPT_L = b"\x42\x00"  # WCR EWRPTL = ETXST low
_EWRPT_H = b"\x43\x1a"  # WCR EWRPTH = ETXST high
_WBM_CONTROL = b"\x7a\x00"  # WBM, then the per-packet control byte 0x00 (MACON3 decides)


class Transport(Chip):
    """send(mv) raises OSError on failure; reopen() resets and sets the chip up again."""

    NAME = "enc28j60"
    COUNTS = (
        ("resets", "resets"),
        ("tx-timeouts", "timeouts"),
        ("no-link", "no_link"),
        ("aborts", "aborts"),
        ("late-collisions", "late"),
        ("silent", "silent"),
    )
    NO_LINK = "enc28j60: no link (PHSTAT2 LSTAT clear)"

    def __init__(self, tpl, cfg=None, spi=None, cs=None):
        Chip.__init__(self, tpl, cfg, spi, cs)
        self._full = bool(getattr(cfg, "ETH_FULL_DUPLEX", False))
        self._q2 = bytearray(2)
        self._a2 = bytearray(2)
        self._q3 = bytearray(3)
        self._a3 = bytearray(3)
        self._txnd_l = bytearray(b"\x46\x00")  # WCR ETXNDL
        self._txnd_h = bytearray(b"\x47\x00")  # WCR ETXNDH
        self._nd_len = -1  # the frame length ETXND is set for
        self._bank = 0
        self._link = False
        self.aborts = 0
        self.late = 0
        self.silent = 0  # transmissions the chip never reported done
        self._open(self._link_ms)

    # -- SPI, with preallocated buffers (PHY reads happen on the hot path when LINKIF is set) --

    def _cmd(self, op, arg):
        q = self._q2
        q[0] = op
        q[1] = arg
        self._cs(0)
        self._spi.write(q)
        self._cs(1)

    def _select(self, bank):
        if bank != self._bank:
            self._cmd(_BFC | _ECON1, 0x03)
            if bank:
                self._cmd(_BFS | _ECON1, bank)
            self._bank = bank

    def _rcr(self, bank, addr, mac=False):
        self._select(bank)
        q = self._q3 if mac else self._q2
        a = self._a3 if mac else self._a2
        q[0] = _RCR | addr
        self._cs(0)
        self._spi.write_readinto(q, a)
        self._cs(1)
        return a[2] if mac else a[1]

    def _wcr(self, bank, addr, value):
        self._select(bank)
        self._cmd(_WCR | addr, value)

    def _mii_wait(self):
        bound = self._bound
        bound.start(_MII_US)
        while self._rcr(3, _MISTAT, True) & 0x01:  # BUSY
            if bound.over():
                raise OSError(ETIMEDOUT, "enc28j60: MISTAT.BUSY never cleared")

    def _phy_write(self, reg, value):
        self._wcr(2, _MIREGADR, reg)
        self._wcr(2, _MIWRL, value & 0xFF)
        self._wcr(2, _MIWRH, value >> 8)  # starts the write
        self._mii_wait()

    def _phy_read(self, reg):
        self._wcr(2, _MIREGADR, reg)
        self._wcr(2, _MICMD, 0x01)  # MIIRD
        self._mii_wait()
        self._wcr(2, _MICMD, 0x00)
        return self._rcr(2, _MIRDL, True) | self._rcr(2, _MIRDH, True) << 8

    def link(self):
        """Read the PHY's link state (PHSTAT2.LSTAT); True while it is up."""
        self._phy_read(_PHIR)  # reading PHIR clears it and EIR.LINKIF
        self._link = bool(self._phy_read(_PHSTAT2) & _LSTAT)
        self._select(0)
        return self._link

    def _open(self, link_ms=0):
        """Reset the chip, set the MAC and PHY up for sending, leave reception off."""
        self._up = False
        self._bank = 0
        self._nd_len = -1
        self.pulse_reset(0)
        self._cs(0)
        self._spi.write(b"\xff")  # SRC
        self._cs(1)
        time.sleep_ms(2)  # errata: CLKRDY may read set too early; wait at least 1 ms after SRC
        t0 = time.ticks_ms()
        while True:
            st = self._rcr(0, _ESTAT)
            if st & 0x08 == 0 and st & _CLKRDY:  # bit 3 is unimplemented: reads 0 from a chip
                break
            if time.ticks_diff(time.ticks_ms(), t0) > _CLKRDY_MS:
                raise OSError(
                    ENODEV,
                    "enc28j60: ESTAT reads 0x%02x, no CLKRDY after reset: no chip, "
                    "or a wiring fault (MISO, CS, power, clock)" % st,
                )
            time.sleep_ms(1)
        rev = self._rcr(3, _EREVID)
        if not 0 < rev < 0x20:
            raise OSError(
                ENODEV, "enc28j60: EREVID reads 0x%02x: no chip, or a wiring fault" % (rev,)
            )
        self._select(0)
        self._cmd(_BFC | _ECON1, 0xFC)  # TXRST RXRST DMAST CSUMEN TXRTS RXEN off; bank 0 stays
        self._cmd(_BFS | _ECON2, _AUTOINC)
        for addr, value in (
            (0x08, 0x00),  # ERXST = 0 (errata: the receive buffer must start at 0)
            (0x09, 0x00),
            (0x0A, _ERXND & 0xFF),  # ERXND
            (0x0B, _ERXND >> 8),
            (0x0C, _ERXND & 0xFF),  # ERXRDPT (errata: odd)
            (0x0D, _ERXND >> 8),
            (0x04, _ETXST & 0xFF),  # ETXST
            (0x05, _ETXST >> 8),
        ):
            self._wcr(0, addr, value)
        macon3 = _MACON3_HALF | (_FULDPX if self._full else 0)
        for addr, value in (
            (_MACON1, 0x00),  # MARXEN off: nothing is received, no pause frames
            (_MACON3, macon3),
            (_MACON4, 0x00 if self._full else _DEFER),
            (_MAMXFLL, _MAX_FLEN & 0xFF),
            (_MAMXFLH, _MAX_FLEN >> 8),
            (_MABBIPG, 0x15 if self._full else 0x12),
            (_MAIPGL, 0x12),
            (_MAIPGH, 0x0C),
        ):
            self._wcr(2, addr, value)
        got = self._rcr(2, _MACON3, True)
        if got != macon3:
            raise OSError(EIO, "enc28j60: MACON3 reads back 0x%02x: MOSI or SCK wiring" % got)
        m = self._mac  # MAADR1 (the first byte) .. MAADR6 at 0x04 0x05 0x02 0x03 0x00 0x01
        for addr, i in ((0x04, 0), (0x05, 1), (0x02, 2), (0x03, 3), (0x00, 4), (0x01, 5)):
            self._wcr(3, addr, m[i])
        self._phy_write(_PHCON1, _PDPXMD if self._full else 0)
        self._phy_write(_PHCON2, _HDLDIS)  # no loopback of our own frames in half duplex
        self._phy_write(_PHIE, _PHIE_LINK)
        if not self.link() and link_ms:
            self.wait_link(link_ms)
        self._select(0)
        self._up = True
        self.resets += 1

    # -- the hot path: no allocation --

    def _wait_tx(self, a):
        spi = self._spi
        cs = self._cs
        bound = self._bound
        bound.start(_TX_US)
        while True:
            cs(0)
            spi.write_readinto(_R_ECON1, a)
            cs(1)
            if not a[1] & _TXRTS:
                return
            if bound.over():
                cs(0)
                spi.write(_TXRTS_CLR)
                cs(1)
                self.timeouts += 1
                self._last = ETIMEDOUT
                raise OSError(ETIMEDOUT)

    def send(self, mv):
        if not self._up:
            raise OSError(ENOTCONN)
        spi = self._spi
        cs = self._cs
        a = self._a2
        n = len(mv)
        if n > MAX_FRAME:
            raise OSError(EMSGSIZE)
        self._wait_tx(a)  # an earlier error may have left TXRTS set
        cs(0)
        spi.write_readinto(_R_EIR, a)
        cs(1)
        if a[1] & _LINKIF:
            self.link()
        if not self._link:
            self.no_link += 1
            self._last = ENETDOWN
            raise OSError(ENETDOWN)
        cs(0)
        spi.write(_TXRST_SET)
        cs(1)
        cs(0)
        spi.write(_TXRST_CLR)
        cs(1)
        cs(0)
        spi.write(_CLR_TXIF)
        cs(1)
        cs(0)
        spi.write(_EWRPT_L)
        cs(1)
        cs(0)
        spi.write(_EWRPT_H)
        cs(1)
        cs(0)
        spi.write(_WBM_CONTROL)
        spi.write(mv)
        cs(1)
        if n != self._nd_len:  # ETXND: the frame's last byte, after the control byte
            end = _ETXST + n
            q = self._txnd_l
            q[1] = end & 0xFF
            cs(0)
            spi.write(q)
            cs(1)
            q = self._txnd_h
            q[1] = end >> 8
            cs(0)
            spi.write(q)
            cs(1)
            self._nd_len = n
        cs(0)
        spi.write(_TXRTS_SET)
        cs(1)
        self._wait_tx(a)
        cs(0)
        spi.write_readinto(_R_EIR, a)
        cs(1)
        if a[1] & (_TXIF | _TXERIF) != _TXIF:
            self._tx_error(a)

    def _tx_error(self, a):
        """TXRTS cleared without TXIF alone: an abort, a late collision, or a silent chip."""
        spi = self._spi
        cs = self._cs
        cs(0)
        spi.write_readinto(_R_ESTAT, a)
        cs(1)
        if a[1] & (_TXABRT | _LATECOL):
            cs(0)
            spi.write(_CLR_ERRORS)
            cs(1)
            if a[1] & _LATECOL:
                self.late += 1
            else:
                self.aborts += 1
            self._last = EIO
            raise OSError(EIO)
        # Neither TXIF nor an error: the chip did not say it sent anything (MISO stuck low,
        # or it was reset under us). A reopen sets it up again.
        self.silent += 1
        self._up = False
        self._last = ENOTCONN
        raise OSError(ENOTCONN)

    def close(self):
        """Nothing to close: the chip sends only when told, and send() waited for it to finish."""
        self._up = False
