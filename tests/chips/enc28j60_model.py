"""A Microchip ENC28J60 at register level, for the MicroPython unix port: a fake chip, not a driver.

Written from the datasheet DS39662E (4.2 SPI instruction set, 3.1 control
registers and their reset values, 3.3 PHY registers, 6 MAC and PHY
set-up, 7.1 transmitting) and the errata DS80349, for what a sender
touches. It is the SPI bus (`write`, `readinto`, `write_readinto`) and,
through `cs`, the chip-select pin passed to
`transport_enc28j60.Transport(tpl, cfg, spi=chip, cs=chip.cs)`.

- Instructions: the first byte's top three bits are the opcode, the low
  five the argument. RCR (000) answers the register in the next byte, or a
  dummy byte first for a MAC or MII register (bank 2, and MAADR/MISTAT in
  bank 3); WCR (010) writes the next byte; BFS (100) / BFC (101) set or
  clear bits (ETH registers only: on a MAC register they are counted in
  `misuse` and ignored); WBM (0x7A) writes buffer memory at EWRPT, which
  increments and wraps from 0x1FFF to 0; SRC (0xFF) resets.
- Banks: ECON1.BSEL selects 0..3 for 0x00..0x19; 0x1B..0x1F are common.
- After SRC, ESTAT.CLKRDY reads clear for `clk_polls` reads; any access
  within 1 ms of SRC is counted in `early` (the errata's 1 ms wait).
- PHY: MIWRH starts a write of MIWRH:MIWRL to the register in MIREGADR,
  MICMD.MIIRD a read into MIRDL/MIRDH; MISTAT.BUSY reads set for
  `mii_polls` reads. PHSTAT2.LSTAT follows `link`; a link change sets
  PHIR.PLNKIF and, with PHIE's PGEIE and PLNKIE, EIR.LINKIF; reading PHIR
  clears both.
- Transmit: setting ECON1.TXRTS sends the control byte at ETXST and the
  frame after it up to ETXND. The control byte's POVERRIDE picks its own
  PCRCEN/PPADEN over MACON3's PADCFG/TXCRCEN; a frame the MAC would send
  without its FCS, or shorter than 60 bytes unpadded, is counted (`bad`)
  and not put on the wire. A transmission begun without a TXRST pulse
  since the last one is counted in `no_txrst` (the errata's workaround),
  one with MACON3.FULDPX unlike PHCON1.PDPXMD in `duplex`. TXRTS clears
  `tx_polls` ECON1 reads later, with EIR.TXIF and the 7-byte status
  vector after ETXND.

Faults: `miso` (0x00 or 0xFF on every read: no chip), `clkrdy` False
(CLKRDY never sets), `link` False (via set_link), `stuck` (TXRTS never
clears), `abort` (the next transmissions end with ESTAT.TXABRT and
EIR.TXERIF, nothing sent), `late` (the same with ESTAT.LATECOL).
"""

from micropython import const

_EIR = const(0x1C)
_ESTAT = const(0x1D)
_ECON2 = const(0x1E)
_ECON1 = const(0x1F)
_TXRTS = const(0x08)
_TXRST = const(0x80)
_MICMD = const(0x12)
_MIREGADR = const(0x14)
_MIWRL = const(0x16)
_MIWRH = const(0x17)
_MIRDL = const(0x18)
_MIRDH = const(0x19)
_MISTAT = const(0x0A)
_EREVID = const(0x12)
_PHSTAT2 = const(0x11)
_PHIE = const(0x12)
_PHIR = const(0x13)


class ENC28J60:
    def __init__(self, wire=None):
        import time

        self._time = time
        self.wire = wire
        self.banks = [bytearray(0x20) for _ in range(4)]
        self.common = bytearray(0x20)  # 0x1B..0x1F
        from array import array

        self.phy = array("H", [0] * 0x20)
        self.mem = bytearray(8192)
        self.stage = bytearray(1600)
        self.miso = None
        self.clkrdy = True
        self.link = True
        self.stuck = False
        self.abort = 0  # transmissions still to abort
        self.late = 0  # transmissions still to end in a late collision
        self.clk_polls = 3
        self.mii_polls = 1
        self.tx_polls = 2
        self.transactions = 0
        self.held = False
        self.hard_resets = 0
        self.octets = 0
        self.sent = 0
        self.bad = 0
        self.early = 0
        self.misuse = 0
        self.no_txrst = 0
        self.duplex = 0
        self.resets = 0
        self._op = -1  # the instruction of this frame (-1: none yet)
        self._arg = 0
        self._n = 0
        self._src_at = 0
        self._fail = 0
        self._len = 0
        self._wp = 0
        self._reset()
        self._src_at = self._time.ticks_add(self._time.ticks_us(), -10000)  # powered up long ago

    def _reset(self):
        for b in self.banks:
            for i in range(0x20):
                b[i] = 0
        c = self.common
        for i in range(0x20):
            c[i] = 0
        c[_ECON2] = 0x80  # AUTOINC
        b0 = self.banks[0]
        b0[0x08] = 0xFA  # ERXST 0x05FA
        b0[0x09] = 0x05
        b0[0x0A] = 0xFF  # ERXND 0x1FFF
        b0[0x0B] = 0x1F
        b2 = self.banks[2]
        b2[0x0A] = 0x00  # MAMXFL 0x0600
        b2[0x0B] = 0x06
        self.banks[3][_EREVID] = 0x06  # silicon rev. B7
        p = self.phy
        for i in range(0x20):
            p[i] = 0
        p[_PHSTAT2] = 0x0400 if self.link else 0
        self._clk_left = self.clk_polls
        self._mii_left = 0
        self._tx_left = -1  # ECON1 reads until TXRTS clears; -1: not transmitting
        self._txrst_seen = True
        self._src_at = self._time.ticks_us()
        self.resets += 1

    # -- helpers --

    def _bank(self):
        return self.common[_ECON1] & 0x03

    def _is_mac(self, addr):
        b = self._bank()
        return b == 2 or (b == 3 and (addr <= 0x05 or addr == _MISTAT))

    def _reg16(self, lo):
        b = self.banks[0]
        return b[lo] | b[lo + 1] << 8

    def set_link(self, up):
        if up == self.link:
            return
        self.link = up
        p = self.phy
        p[_PHSTAT2] = (p[_PHSTAT2] | 0x0400) if up else (p[_PHSTAT2] & ~0x0400)
        p[_PHIR] |= 0x0010  # PLNKIF
        if p[_PHIE] & 0x0012 == 0x0012:
            p[_PHIR] |= 0x0004  # PGIF
            self.common[_EIR] |= 0x10  # LINKIF

    def _transmit(self):
        st = self._reg16(0x04)
        nd = self._reg16(0x06)
        self._tx_left = self.tx_polls
        if not self._txrst_seen:
            self.no_txrst += 1
        self._txrst_seen = False
        if self.stuck:
            return  # TXRTS stays set, nothing leaves
        m3 = self.banks[2][0x02]
        if (m3 & 0x01) != ((self.phy[0x00] >> 8) & 0x01):
            self.duplex += 1
        if self.abort or self.late:
            self._fail = 0x12 if self.late else 0x02
            if self.late:
                self.late -= 1
            else:
                self.abort -= 1
            return
        self._fail = 0
        ctl = self.mem[st]
        if ctl & 0x01:  # POVERRIDE
            pad = ctl & 0x04
            crc = ctl & 0x02 or pad
        else:
            pad = m3 & 0xE0
            crc = m3 & 0x10 or pad
        n = (nd - st) & 0x1FFF
        s = self.stage
        mem = self.mem
        for i in range(n):
            s[i] = mem[(st + 1 + i) & 0x1FFF]
        if n < 60 and pad:
            for i in range(n, 60):
                s[i] = 0
            n = 60
        if not crc or n < 60:
            self.bad += 1
            return
        self._len = n
        if self.link and self.wire is not None:
            self.wire.send(s, n)
        self.sent += 1

    def _tx_done(self):
        c = self.common
        c[_ECON1] &= ~_TXRTS
        self._tx_left = -1
        if self._fail:
            c[_ESTAT] |= self._fail
            c[_EIR] |= 0x02  # TXERIF
        else:
            c[_EIR] |= 0x08  # TXIF
        # The status vector after ETXND: byte count, then bit 23 "done", bit 29 late collision.
        at = self._reg16(0x06) + 1
        v = self.mem
        n = self._len if not self._fail else 0
        for i in range(7):
            v[(at + i) & 0x1FFF] = 0
        v[at & 0x1FFF] = n & 0xFF
        v[(at + 1) & 0x1FFF] = n >> 8
        if not self._fail:
            v[(at + 2) & 0x1FFF] = 0x80
        elif self._fail & 0x10:
            v[(at + 3) & 0x1FFF] = 0x20

    # -- registers --

    def _read(self, addr):
        c = self.common
        if addr >= 0x1B:
            if addr == _ESTAT:
                if self._clk_left:
                    self._clk_left -= 1
                    return c[_ESTAT] & ~0x01
                return c[_ESTAT] | (0x01 if self.clkrdy else 0)
            if addr == _ECON1 and self._tx_left > 0 and not self.stuck:
                self._tx_left -= 1
                if self._tx_left == 0:
                    self._tx_done()
            return c[addr]
        b = self._bank()
        if b == 3 and addr == _MISTAT:
            if self._mii_left:
                self._mii_left -= 1
                return 0x01  # BUSY
            return 0
        return self.banks[b][addr]

    def _write(self, addr, v):
        if addr >= 0x1B:
            self._write_common(addr, v)
            return
        b = self._bank()
        regs = self.banks[b]
        regs[addr] = v
        if b == 2 and addr == _MIWRH:
            self.phy[regs[_MIREGADR] & 0x1F] = v << 8 | regs[_MIWRL]
            self._mii_left = self.mii_polls
        elif b == 2 and addr == _MICMD and v & 0x01:
            reg = regs[_MIREGADR] & 0x1F
            val = self.phy[reg]
            regs[_MIRDL] = val & 0xFF
            regs[_MIRDH] = val >> 8
            if reg == _PHIR:
                self.phy[_PHIR] = 0
                self.common[_EIR] &= ~0x10
            self._mii_left = self.mii_polls

    def _write_common(self, addr, v):
        c = self.common
        if addr == _ECON1:
            old = c[_ECON1]
            if v & _TXRST:
                self._txrst_seen = True
                v &= ~_TXRTS  # the transmit logic is held in reset
            c[_ECON1] = v
            if v & _TXRTS and not old & _TXRTS:
                self._transmit()
        elif addr == _EIR:
            c[_EIR] = (c[_EIR] & 0x10) | (v & ~0x10)  # LINKIF is read-only
        else:
            c[addr] = v

    # -- the bus --

    def _byte(self, b):
        n = self._n
        self._n = n + 1
        if n == 0:
            if b != 0xFF and self._time.ticks_diff(self._time.ticks_us(), self._src_at) < 1000:
                self.early += 1
            if b == 0xFF:
                self._reset()
                self._op = 7
                return 0
            self._op = b >> 5
            self._arg = b & 0x1F
            if self._op == 3 and self._arg == 0x1A:  # WBM
                self._wp = self._reg16(0x02)
            return 0
        op = self._op
        a = self._arg
        if op == 0:  # RCR
            if self._is_mac(a) and a < 0x1B and n == 1:
                return 0  # the dummy byte
            return self._read(a)
        if op == 2 and n == 1:  # WCR
            self._write(a, b)
        elif op == 3 and a == 0x1A:  # WBM
            wp = self._wp
            self.mem[wp] = b
            wp = (wp + 1) & 0x1FFF
            self._wp = wp
            b0 = self.banks[0]
            b0[0x02] = wp & 0xFF
            b0[0x03] = wp >> 8
        elif (op == 4 or op == 5) and n == 1:  # BFS, BFC
            if a < 0x1B and self._is_mac(a):
                self.misuse += 1
                return 0
            old = self.common[a] if a >= 0x1B else self.banks[self._bank()][a]
            new = (old | b) if op == 4 else (old & ~b)
            if a == _ESTAT:
                self.common[_ESTAT] = new & 0xFF
            else:
                self._write(a, new & 0xFF)
        return 0

    def rst(self, v):
        """The reset line (RSTn / RESET, active low), as a Pin: held low, the chip is silent."""
        if not v:
            self.held = True
        elif self.held:
            self.held = False
            self._reset()
            self.hard_resets += 1

    def cs(self, v):
        if not v:
            self._n = 0
            self._op = -1
            self.transactions += 1

    def write(self, buf):
        self.octets += len(buf)
        if self.miso is not None or self.held:
            return
        for b in buf:
            self._byte(b)

    def readinto(self, buf, out=0):
        self.octets += len(buf)
        quiet = 0x00 if self.held else self.miso
        for i in range(len(buf)):
            buf[i] = quiet if quiet is not None else self._byte(out)

    def write_readinto(self, wbuf, rbuf):
        self.octets += len(wbuf)
        quiet = 0x00 if self.held else self.miso  # held in reset: MISO stays low
        if quiet is not None:
            for i in range(len(rbuf)):
                rbuf[i] = quiet
            return
        for i in range(len(wbuf)):
            rbuf[i] = self._byte(wbuf[i])

    def summary(self):
        return (
            "enc28j60 model: sent %d bad %d resets %d early %d misuse %d no-txrst %d duplex %d "
            "transactions %d octets %d"
            % (
                self.sent,
                self.bad,
                self.resets,
                self.early,
                self.misuse,
                self.no_txrst,
                self.duplex,
                self.transactions,
                self.octets,
            )
        )
