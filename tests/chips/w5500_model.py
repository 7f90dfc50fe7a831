"""A WIZnet W5500 at register level, for the MicroPython unix port: a fake chip, not a driver.

Written from the W5500 datasheet v1.0.9, section 2.2 (SPI frame) and
section 4 (registers), for what a MACRAW sender touches. It is the SPI bus
(`write`, `readinto`, `write_readinto`, as machine.SPI) and, through
`cs`, the chip-select pin (cs(0) starts a frame, cs(1) ends it) passed to
`transport_w5500.Transport(tpl, cfg, spi=chip, cs=chip.cs)`.

- SPI frame: address high, address low, control byte `BSB << 3 | RWB << 2
  | OM`, then data; the address increments per data byte. OM 00 (variable
  length) runs until CS rises; OM 01/10/11 carry 1/2/4 bytes, after which
  the next byte starts a new frame. Block 0: common registers; 4n+1:
  socket n's registers; 4n+2: its TX buffer; 4n+3: its RX buffer.
- Common: MR (RST reads back set for `reset_polls` reads, then every
  register has its reset value), SHAR, PHYCFGR (LNK from `link`), VERSIONR
  (0x04, or `version`).
- Socket 0: Sn_MR, Sn_CR (OPEN in MACRAW mode -> Sn_SR SOCK_MACRAW 0x42,
  only if the TX buffer sizes add up to at most 16 KB; CLOSE; SEND; the
  register reads the command back for `cmd_polls` reads, then 0: the chip
  has taken it), Sn_IR (SEND_OK appears `send_polls` SPI transactions
  after SEND, whatever they read: the transmission's time, counted in bus
  traffic; write 1 to clear), Sn_TXBUF_SIZE, Sn_TX_FSR (buffer size minus the bytes
  SEND has not finished), Sn_TX_RD, Sn_TX_WR. The TX buffer maps the
  16-bit pointer onto its size.
- SEND takes the bytes from Sn_TX_RD to Sn_TX_WR as they are and puts them
  on the wire when the transmission ends (SEND_OK): MACRAW adds the FCS and
  nothing else, so a frame under 60 bytes is a runt, which a switch drops:
  the model counts it (`runts`) and drops it too.
- What the datasheet does not promise, the model refuses, as a driver's
  error: a command written while Sn_CR does not yet read 0 (the chip may
  not take it; WIZnet's ioLibrary waits for 0 after every command) is
  counted in `misuse` and ignored; a CLOSE while a SEND is still
  transmitting aborts it (`aborted`): that frame never leaves.

Faults: `miso` (0x00 or 0xFF: no chip, the line floats or is pulled, and
nothing written reaches a chip), `version`, `link` False, `stall` (SEND
is taken but never completes, nothing leaves), `full` (Sn_TX_FSR reads 0),
`glitch` (every 7th Sn_TX_FSR read is off by one, as a read during an
update can be). `start_ptr` sets where Sn_TX_RD/WR stand after OPEN, so a
test can make the first frames straddle the buffer's end and the 16-bit wrap.
`transactions` and `octets` count the bus traffic.
All of it runs without allocating, except the wire's send.
"""

from micropython import const

_SIZES = (0, 1, 2, 4, 8, 16)
_FIXED = (0, 1, 2, 4)  # data bytes per frame, by OM
_MR = const(0x00)
_PHYCFGR = const(0x2E)
_VERSIONR = const(0x39)
_SN_MR = const(0x00)
_SN_CR = const(0x01)
_SN_IR = const(0x02)
_SN_SR = const(0x03)
_SN_TXBUF = const(0x1F)
_SN_RXBUF = const(0x1E)
_FSR = const(0x20)
_TX_RD = const(0x22)
_TX_WR = const(0x24)
_MACRAW = const(0x42)
_SEND_OK = const(0x10)


class W5500:
    def __init__(self, wire=None):
        self.wire = wire
        self.common = bytearray(0x40)
        self.sock = [bytearray(0x30) for _ in range(8)]
        self.txmem = bytearray(16384)  # socket 0's TX buffer (at most 16 KB)
        self.stage = bytearray(16384)
        self._hdr = bytearray(3)
        self.miso = None
        self.version = 0x04
        self.link = True
        self.stall = False
        self.full = False
        self.glitch = False
        self.start_ptr = 0  # Sn_TX_RD/WR after OPEN (a test starts them near the 16-bit wrap)
        self.reset_polls = 2
        self.cmd_polls = 1
        self.send_polls = 6  # longer than the Sn_CR handshake: a CLOSE right after it aborts
        self.transactions = 0
        self.held = False
        self.hard_resets = 0
        self.octets = 0
        self.sends = 0  # SEND commands taken
        self.runts = 0
        self.resets = 0
        self.bad_open = 0  # OPEN refused (not MACRAW, or more than 16 KB of TX buffers)
        self.misuse = 0  # commands written before Sn_CR read 0 again: not taken
        self.aborted = 0  # transmissions a CLOSE cut short: those frames never left
        self._tx_len = 0  # the bytes of the transmission in flight, staged
        self._tx_link = True
        self._phase = 0
        self._addr = self._block = self._wr = self._left = 0
        self._cmd = 0
        self._reset()

    # -- state --

    def _reset(self):
        c = self.common
        for i in range(len(c)):
            c[i] = 0
        c[_VERSIONR] = 0x04
        for s in self.sock:
            for i in range(len(s)):
                s[i] = 0
            s[_SN_RXBUF] = 2
            s[_SN_TXBUF] = 2
        self._rst_left = 0
        self._cmd_left = 0
        self._ok_left = -1  # reads of Sn_IR until SEND_OK; -1: no SEND in flight
        self._fsr_reads = 0
        self._fsr = 0
        self._in_flight = 0  # bytes SEND has not finished
        self.resets += 1

    def _size(self):
        return _SIZES.count(self.sock[0][_SN_TXBUF]) and self.sock[0][_SN_TXBUF] * 1024

    def _ptr(self, reg):
        s = self.sock[0]
        return s[reg] << 8 | s[reg + 1]

    def _set_ptr(self, reg, v):
        s = self.sock[0]
        s[reg] = (v >> 8) & 0xFF
        s[reg + 1] = v & 0xFF

    def _command(self, cmd):
        s = self.sock[0]
        if self._cmd_left:  # the last command not taken yet (Sn_CR not read back as 0)
            self.misuse += 1
            return
        self._cmd_left = self.cmd_polls
        self._cmd = cmd
        if cmd == 0x01:  # OPEN
            total = 0
            for t in self.sock:
                total += t[_SN_TXBUF]
            if s[_SN_MR] & 0x0F == 0x04 and total <= 16 and self._size():
                s[_SN_SR] = _MACRAW
                self._in_flight = 0
                self._set_ptr(_TX_RD, self.start_ptr)
                self._set_ptr(_TX_WR, self.start_ptr)
            else:
                self.bad_open += 1
        elif cmd == 0x10:  # CLOSE
            s[_SN_SR] = 0
            if self._ok_left > 0:
                self.aborted += 1  # mid-transmission: the frame is cut off
            self._ok_left = -1
            self._in_flight = 0
        elif cmd == 0x20 and s[_SN_SR] == _MACRAW:  # SEND
            self.sends += 1
            rd = self._ptr(_TX_RD)
            n = (self._ptr(_TX_WR) - rd) & 0xFFFF
            size = self._size()
            self._in_flight = n
            self._ok_left = self.send_polls
            if self.stall or n > size:
                self._ok_left = -2  # taken, never completes
                return
            mem = self.txmem
            st = self.stage
            mask = size - 1
            for i in range(n):
                st[i] = mem[(rd + i) & mask]
            self._tx_len = n
            self._tx_link = self.link  # a frame that starts on a live link goes out

    def _complete(self):
        s = self.sock[0]
        n = self._tx_len
        if n < 60:
            self.runts += 1  # MACRAW does not pad: a switch would drop it
        elif self.wire is not None and self._tx_link:
            self.wire.send(self.stage, n)
        s[_SN_IR] |= _SEND_OK
        self._set_ptr(_TX_RD, self._ptr(_TX_WR))
        self._in_flight = 0
        self._ok_left = -1

    # -- registers --

    def _load(self, block, addr):
        if block == 0:
            if addr == _MR:
                if self._rst_left:
                    self._rst_left -= 1
                    if self._rst_left == 0:
                        self._reset()
                    return 0x80
                return self.common[_MR]
            if addr == _PHYCFGR:
                return 0xB8 | (0x07 if self.link else 0)  # RST OPMD OPMDC=111; 100M full, LNK
            if addr == _VERSIONR:
                return self.version
            return self.common[addr] if addr < 0x40 else 0
        if block == 1:
            s = self.sock[0]
            if addr == _SN_CR:
                if self._cmd_left:
                    self._cmd_left -= 1
                    return self._cmd
                return 0
            if addr == _SN_IR:
                return s[_SN_IR]
            if addr == _FSR or addr == _FSR + 1:
                free = 0 if self.full else self._size() - self._in_flight
                if addr == _FSR:
                    self._fsr_reads += 1
                    if self.glitch and self._fsr_reads % 7 == 0:
                        free -= 1
                    self._fsr = free
                    return (free >> 8) & 0xFF
                return self._fsr & 0xFF
            return s[addr] if addr < 0x30 else 0
        if block == 2:
            size = self._size()
            return self.txmem[addr & (size - 1)] if size else 0
        if block & 3 == 1:
            s = self.sock[block >> 2]
            return s[addr] if addr < 0x30 else 0
        return 0

    def _store(self, block, addr, b):
        if block == 0:
            if addr == _MR:
                if b & 0x80:
                    self._rst_left = self.reset_polls
                else:
                    self.common[_MR] = b
            elif addr < 0x39:  # VERSIONR and above are read-only
                self.common[addr] = b
        elif block == 1:
            s = self.sock[0]
            if addr == _SN_CR:
                self._command(b)
            elif addr == _SN_IR:
                s[_SN_IR] &= ~b
            elif addr != _SN_SR and addr < 0x30 and not (_FSR <= addr < _TX_WR):
                s[addr] = b
        elif block == 2:
            size = self._size()
            if size:
                self.txmem[addr & (size - 1)] = b
        elif block & 3 == 1:
            s = self.sock[block >> 2]
            if addr < 0x30:
                s[addr] = b

    # -- the bus --

    def _byte(self, b):
        p = self._phase
        if p < 3:
            self._hdr[p] = b
            self._phase = p + 1
            if p == 2:
                h = self._hdr
                self._addr = h[0] << 8 | h[1]
                self._block = b >> 3
                self._wr = b & 0x04
                self._left = _FIXED[b & 0x03]
            return 0
        addr = self._addr
        r = 0
        if self._wr:
            self._store(self._block, addr, b)
        else:
            r = self._load(self._block, addr)
        self._addr = (addr + 1) & 0xFFFF
        if self._left:
            self._left -= 1
            if self._left == 0:
                self._phase = 0  # fixed length: the next byte starts a new frame
        return r

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
            self._phase = 0
            self.transactions += 1
            if self._ok_left > 0 and not self.held:  # the transmission goes on meanwhile
                self._ok_left -= 1
                if self._ok_left == 0:
                    self._complete()

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
            "w5500 model: sends %d runts %d resets %d bad-open %d misuse %d aborted %d "
            "transactions %d octets %d"
        ) % (
            self.sends,
            self.runts,
            self.resets,
            self.bad_open,
            self.misuse,
            self.aborted,
            self.transactions,
            self.octets,
        )
