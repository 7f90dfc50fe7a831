"""What crosses a deep sleep: the seq store's record and the backlog's readings, in RTC memory.

machine.deepsleep powers the board down, and it boots again into main.py:
RAM is lost, RTC memory (ESP32: 2 KiB, machine.RTC().memory()) is kept.
Only a bundle built with `--sleep deep` carries this module (board.setup
loads it at start, outside any heap_lock), so a node that never deep-sleeps
holds none of it. It layers over the plain classes, as umqtt.robust over
umqtt.simple: `SeqStore` over seqstore's, `Board` over board's.

The seq: before sleeping the store leaves "PCSQ", seq, limit and a check
in RTC memory, and the next boot takes the seq from it instead of the
flash, so waking costs no flash write and skips nothing. The record is
cleared as soon as it is read, so a later reset cannot replay it, and a
record whose limit is not the flash's is stale. A port without RTC memory
(rp2) writes next_seq itself as the reservation before sleeping instead.
The record is written by 16-bit halves: under heap_lock on a 32-bit port
an int past 2**30 would not be made.

The backlog: before the sleep what the ring keeps is saved, each reading
with its age so far and the RTC's time, so the ages go on from the RTC's
clock at the next boot (ticks_ms restarts): into RTC memory after the seq
store's record, as many of the newest readings as fit there, the rest (or
all, without RTC memory) into a file (cfg.BACKLOG_FILE). At boot the ring
is restored before the seq store reads its record (which clears RTC memory)
and both are removed at once, so a reset brings nothing back. RTC memory
survives deep sleep and a watchdog or soft reset, not a power loss; a
power loss loses what it held (the seq store still guarantees no seq
repeats).
"""

import struct
import time

import machine
from micropython import const

from . import board, seqstore

_MAGIC = b"PCSQ"
_RTC_FMT = ">4sIII"  # magic, seq, limit, check
_RTC_LEN = const(16)  # the seq store's record; the ring's readings follow it
_RTC_MAX = const(2048)  # ESP32's RTC memory (MICROPY_HW_RTC_USER_MEM_MAX, its default)
_CHECK_HI = const(0x5EC5)  # the record's check is seq ^ limit ^ 0x5EC5EC5E, by 16-bit halves
_CHECK_LO = const(0xEC5E)
_TICKS_AGE_MAX = const(1 << 28)  # ages restored after a sleep stay inside ticks_diff's range
# lwIP queues a datagram and the WiFi driver sends it later: deep sleep at once would cut the
# radio first. A margin, not a measurement.
_TX_DRAIN_MS = const(100)

# Looked up once: under heap_lock a failed lookup could not even build its AttributeError.
try:
    _deepsleep = machine.deepsleep
except AttributeError:  # the unix port: an ordinary wait stands in (and the run goes on)
    _deepsleep = None


def rtc_memory():
    """The RTC whose memory survives deep sleep, or None where the port has none."""
    try:
        rtc = machine.RTC()
    except AttributeError:  # the unix port has no RTC class
        return None
    return rtc if hasattr(rtc, "memory") else None  # rp2's RTC keeps no memory


def _check(seq, limit):
    """The RTC record's check of seq and limit (ints: at boot, where allocating is fine)."""
    return seq ^ limit ^ (_CHECK_HI << 16 | _CHECK_LO)


def _be16(buf, i, v):
    buf[i] = v >> 8
    buf[i + 1] = v & 0xFF


class SeqStore(seqstore.SeqStore):
    """seqstore's, whose next seq crosses a deep sleep in RTC memory (`rtc`, or machine's)."""

    def __init__(self, path="precast_seq", reserve=seqstore.DEFAULT_RESERVE, write_ms=0,
                 rtc=None):  # fmt: skip
        seqstore.SeqStore.__init__(self, path, reserve, write_ms)
        # rtc: an object with memory() / memory(buf); None asks machine for the RTC.
        self.rtc = rtc_memory() if rtc is None else rtc
        self.resumed = False  # True when start() took the seq from RTC memory
        self._rec = bytearray(_MAGIC + bytes(_RTC_LEN - 4))

    def save_for_sleep(self):
        """Before a deep sleep: next_seq into RTC memory, or where there is none into the flash.

        Without RTC memory (rp2) the reservation is cut back to next_seq itself, so a wake
        skips nothing, for one flash write per sleep.
        """
        if not self.save_rtc():
            self.save_exact()

    def save_rtc(self):
        """Leave next_seq in RTC memory for the boot after a deep sleep (False: no RTC)."""
        if self.rtc is None:
            return False
        self._next_halves()
        hi = self._shi
        lo = self._slo
        rec = self._rec  # _MAGIC at [0, 4) since __init__
        _be16(rec, 4, hi)
        _be16(rec, 6, lo)
        _be16(rec, 8, self._hi)
        _be16(rec, 10, self._lo)
        _be16(rec, 12, hi ^ self._hi ^ _CHECK_HI)
        _be16(rec, 14, lo ^ self._lo ^ _CHECK_LO)
        self.rtc.memory(rec)
        return True

    def clear_rtc(self):
        """Forget a record left in RTC memory (the board did not sleep after all)."""
        if self.rtc is not None:
            self.rtc.memory(b"")

    def _resume(self, flash_limit):
        if self.rtc is None:
            return False
        rec = self.rtc.memory()
        if len(rec) < _RTC_LEN:
            return False
        self.clear_rtc()  # read once: a later reset must not replay this record
        magic, seq, limit, check = struct.unpack_from(_RTC_FMT, rec, 0)
        # The flash always holds the current limit: a record that disagrees is stale.
        if magic != _MAGIC or check != _check(seq, limit) or limit != flash_limit:
            return False
        left = (limit - seq) & 0xFFFFFFFF
        if left > seqstore.MAX_RESERVE:  # seq is not just behind the limit: not a record of ours
            return False
        self.resumed = True
        self.limit = limit
        self.left = left
        return True


def _rtc_ms():
    """The RTC's time in ms: it runs through deep sleep, where ticks_ms restarts."""
    try:
        return time.time_ns() // 1000000
    except AttributeError:  # a port without time_ns: whole seconds
        return int(time.time()) * 1000


def save(ring, path, rtc):
    """Before deep sleep: what `ring` keeps, each reading's age so far and the RTC's time. The
    newest readings that fit go into rtc's memory after the seq store's record (written just
    before), the rest into `path` (no file when nothing is left for it: no flash written).
    Allocates: call it with the heap unlocked."""
    n = len(ring)
    k = 0  # the newest k go into RTC memory
    if rtc is not None and n:
        k = min(n, (_RTC_MAX - _RTC_LEN - 10) // (4 + ring.width))
        head = bytes(rtc.memory()[:_RTC_LEN])
        try:
            rtc.memory(head + bytes(_RTC_LEN - len(head)) + _image(ring, n - k, n))
        except ValueError:  # a port whose RTC memory is smaller (rp2: 32 bytes)
            k = 0
    if n - k:
        with open(path, "wb") as f:
            f.write(_image(ring, 0, n - k))
    else:
        forget(path)


def _image(ring, lo, hi):
    """Readings lo..hi-1 (0: the oldest) as save() writes them: the RTC's time and their
    count, then each one's age so far and its bytes."""
    now = ring.clock()
    w = ring.width
    out = bytearray(struct.pack(">QH", _rtc_ms(), hi - lo))
    while lo < hi:
        at = ring.slot(lo)
        out += struct.pack(">I", ring.diff(now, ring.taken[at]))
        out += ring.kept[at * w : at * w + w]
        lo += 1
    return out


def restore(ring, path, rtc):
    """Take back what save() wrote into `ring`, the file's (the older) then RTC memory's, and
    remove both (RTC memory keeps only the seq store's record); the readings restored."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        forget(path)
    except OSError:
        data = b""
    n = _take(ring, data)
    if rtc is not None:
        mem = rtc.memory()
        if len(mem) > _RTC_LEN:
            rtc.memory(mem[:_RTC_LEN])  # read once: a later reset must not bring it back
            n += _take(ring, mem[_RTC_LEN:])
    return n


def _take(ring, data):
    """Readings from one _image() into the ring, each taken its age ago; how many."""
    w = ring.width
    if len(data) < 10:
        return 0
    saved, n = struct.unpack_from(">QH", data, 0)
    if len(data) != 10 + n * (4 + w):
        return 0  # not this template's (a rebuilt bundle): nothing to trust
    slept = max(0, _rtc_ms() - saved)
    now = ring.clock()
    at = 10
    i = 0
    while i < n:
        age = min(struct.unpack_from(">I", data, at)[0] + slept, _TICKS_AGE_MAX)
        ring.put(data, at + 4, time.ticks_add(now, -age))
        at += 4 + w
        i += 1
    return n


def forget(path):
    """Remove a saved backlog (the sleep did not happen: this run goes on with it)."""
    import os

    try:
        os.remove(path)
    except OSError:
        pass


class Board(board.Board):
    """board's, whose pause is a deep sleep: what crosses it is saved first."""

    def __init__(self, cfg, store=None, wdt=None):
        board.Board.__init__(self, cfg, store, wdt)
        self.rtc = rtc_memory() if self.store is None else self.store.rtc
        self.ring = None
        self.path = getattr(cfg, "BACKLOG_FILE", None)

    def seq_store(self, cfg):
        """This module's SeqStore: its record crosses the sleep in RTC memory."""
        return SeqStore(cfg.SEQ_FILE, getattr(cfg, "SEQ_RESERVE", seqstore.DEFAULT_RESERVE),
                        getattr(cfg, "SEQ_WRITE_MS", 0))  # fmt: skip

    def keep_over_sleep(self, ring):
        """At boot, before first_seq: what the last sleep saved goes back into `ring` (before
        the seq store reads and clears its record in the same RTC memory); it is saved again
        before each sleep."""
        self.ring = ring
        if self.path:
            restore(ring, self.path, self.rtc)

    def pause(self, ms):
        """Save the seq and the ring, then machine.deepsleep (the board boots into main.py)."""
        if self.wlan is not None and _deepsleep is not None:
            time.sleep_ms(_TX_DRAIN_MS)
            ms -= _TX_DRAIN_MS
        if ms <= 0:
            return
        store = self.store
        keep = self.ring is not None and self.path
        if store is not None:
            store.save_for_sleep()  # allocation-free: the loop may run under heap_lock
        if keep:
            self._unlocked(_save, self)  # a file: the heap is needed
        # Deep sleep stops the watchdog with the chip, so it goes in one piece.
        if _deepsleep is not None:
            _deepsleep(ms)  # does not return: the board boots into main.py
        time.sleep_ms(ms)  # the unix port's stand-in: go on as if rebooted
        if self.wdt is not None:
            self.wdt.feed()
        # Still running: no deep sleep happened. A record left in RTC memory must not outlive
        # this moment, or a later reset would replay it; the same for the saved ring.
        if store is not None:
            store.clear_rtc()
        if keep:
            self._unlocked(forget, self.path)


def _save(b):
    save(b.ring, b.path, b.rtc)
