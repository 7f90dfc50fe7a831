"""The sequence number across deep sleep, resets and power loss: never the same seq twice.

Flash holds a reservation: a number L above every seq sent so far. At
power-on the store reads L, starts at seq L and writes L + R before the
first send; sending counts down the R numbers reserved, and the send that
reaches the limit first writes the next reservation. A power loss at any
moment restarts from a saved L that no sent seq has reached, so no seq
repeats, at the cost of skipping up to R numbers (the collector counts
those as lost readings). A fast sender would write the flash often (at
--interval-ms 0, thousands of readings a second: an fsync each on the
unix port, a littlefs commit and flash wear on a board), so with
write_ms (cfg.SEQ_WRITE_MS: build sets 2000 unless --seq-reserve is given) R grows while a
reservation lasts less than write_ms, up to MAX_RESERVE, and halves back
toward the configured R when readings slow: about one write per write_ms
at any rate, and a skip after a power loss of at most about as many
readings as go out in 2 x write_ms.

The file holds two slots, written alternately, each "%010d/%010d\\n" (the
limit twice): a write torn by a power loss leaves its slot unreadable and
the other slot's older limit, which is still above every seq sent. The
file is opened once and rewritten in place from a preallocated buffer, so
a reservation allocates nothing (littlefs, ESP32's and the Pico W's file
system, commits a file at flush; the unix port's flush is an fsync).

Deep sleep ends in a reboot but keeps the RTC's memory (ESP32): before
sleeping the store leaves "PCSQ", seq, limit and a check there, and the
next boot takes the seq from it instead of the flash, so waking costs no
flash write and skips nothing. The record is cleared as soon as it is read,
so a later reset cannot replay it. A port without RTC memory (rp2) writes
next_seq itself as the reservation before sleeping instead.
"""

import struct
import time

import machine

_SLOT = 22  # "0000001000/0000001000\n"
_MAGIC = b"PCSQ"
_RTC_FMT = ">4sIII"  # magic, seq, limit, check
_RTC_LEN = 16
DEFAULT_RESERVE = 1000
MAX_RESERVE = 1 << 20


def _rtc():
    """The RTC whose memory survives deep sleep, or None where the port has none."""
    try:
        rtc = machine.RTC()
    except AttributeError:  # the unix port has no RTC class
        return None
    return rtc if hasattr(rtc, "memory") else None  # rp2's RTC keeps no memory


def _check(seq, limit):
    return (seq ^ limit ^ 0x5EC5EC5E) & 0xFFFFFFFF


def parse_slot(b):
    """The limit in one slot's bytes; -2 for a slot never written, -1 torn or garbage."""
    if len(b) < _SLOT or b[0] == 0x0A:
        return -2
    if b[10] != 0x2F or b[21] != 0x0A:
        return -1
    a = 0
    for i in range(10):
        c = b[i]
        if c < 0x30 or c > 0x39 or c != b[11 + i]:
            return -1
        a = a * 10 + c - 0x30
    return a


class SeqStore:
    """start() gives the first seq; take() before each send; save_for_sleep() before deep sleep."""

    def __init__(self, path="precast_seq", reserve=DEFAULT_RESERVE, rtc=None, write_ms=0):
        # rtc: an object with memory() / memory(buf); None asks machine for the RTC.
        # write_ms > 0: a reservation used up sooner than that makes the next one larger (up
        # to MAX_RESERVE), one lasting 8x longer halves it (not below reserve), so a fast sender
        # writes the flash about once per write_ms (a write is a commit: an fsync, flash wear).
        self.path = path
        self.reserve = reserve
        self.step = reserve  # the reservation written next
        self.write_ms = write_ms
        self._since = None  # ticks_ms of the last reservation written
        self.rtc = _rtc() if rtc is None else rtc
        self.limit = 0
        self.left = 0
        self.resumed = False  # True when start() took the seq from RTC memory
        self._file = None
        self._slot = 0
        self._buf = bytearray(b"0000000000/0000000000\n")
        self._rec = bytearray(_RTC_LEN)

    def start(self):
        """The seq of the first reading after this boot."""
        slots = self._read_file()
        self._slot = 0 if slots[0] <= slots[1] else 1  # overwrite the older slot first
        best = max(slots)
        if self._resume(best):
            return self.limit - self.left
        if best < 0:
            # No limit in either slot: a device's first boot, or both slots lost (say so).
            if -1 in slots:
                print("precast: seq file %s unreadable; starting seq at 0" % self.path)
            best = 0
        self.limit = best
        self.left = 0  # the first take() reserves [best, best + R)
        return best

    def take(self):
        """Claim the next seq for a send; writes a new reservation once every R calls."""
        if self.left <= 0:
            self._renew()
        self.left -= 1

    def _renew(self):
        r = self.step
        if self.write_ms:
            now = time.ticks_ms()
            if self._since is not None:
                took = time.ticks_diff(now, self._since)
                if took < self.write_ms and r < MAX_RESERVE:
                    # Toward write_ms at this rate in one step, growing at most 16x a time.
                    r = min(MAX_RESERVE, r * min(16, max(2, self.write_ms // max(1, took))))
                elif took > 8 * self.write_ms and r > self.reserve:
                    r = max(self.reserve, r // 2)
                self.step = r
            self._since = now
        self._reserve(self.limit + r)
        self.left = r

    def claim(self, n):
        """Claim up to n seqs at once (a burst of sends); how many, at least 1.

        As many take() calls would, without crossing the reservation: every seq
        handed out is below the limit on the flash before its send.
        """
        if self.left <= 0:
            self._renew()
        k = n if n < self.left else self.left
        self.left -= k
        return k

    def release(self, next_seq):
        """At a clean stop: the sender's next seq (mod 2**32) comes back to the store.

        A burst claims its seqs ahead; those it did not send are handed out again
        (never a seq that was sent: they are all below next_seq).
        """
        back = (self.limit - self.left - next_seq) & 0xFFFFFFFF
        if back <= self.step - self.left:
            self.left += back

    @property
    def next_seq(self):
        """The seq the next take() hands out."""
        return self.limit - self.left

    def save_for_sleep(self):
        """Before a deep sleep: next_seq into RTC memory, or where there is none into the flash.

        Without RTC memory (rp2) the reservation is cut back to next_seq itself, so a wake
        skips nothing, for one flash write per sleep.
        """
        if not self.save_rtc():
            self.save_exact()

    def save_exact(self):
        """Cut the reservation back to next_seq: after a clean stop the next boot skips nothing.

        Every seq below next_seq was claimed by take() before its send, so starting there
        repeats none. Into both slots, the older first: boot takes the larger slot, so until
        the second write lands the current, larger limit still stands (an interrupt or a
        power loss halfway costs a skip, never a repeat).
        """
        n = self.limit - self.left
        if self._file is None or n == self.limit:
            return  # nothing reserved beyond next_seq: no flash write
        self._reserve(n)
        self._reserve(n)
        self.left = 0

    def save_rtc(self):
        """Leave next_seq in RTC memory for the boot after a deep sleep (False: no RTC)."""
        if self.rtc is None:
            return False
        seq = self.limit - self.left
        struct.pack_into(_RTC_FMT, self._rec, 0, _MAGIC, seq, self.limit, _check(seq, self.limit))
        self.rtc.memory(self._rec)
        return True

    def clear_rtc(self):
        """Forget a record left in RTC memory (the board did not sleep after all)."""
        if self.rtc is not None:
            self.rtc.memory(b"")

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

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
        if seq > limit:
            return False
        self.resumed = True
        self.limit = limit
        self.left = limit - seq
        return True

    def _read_file(self):
        """Both slots' limits (see parse_slot), leaving the file open for writes."""
        try:
            f = open(self.path, "r+b")
        except OSError:  # no file yet: the device's first boot
            f = open(self.path, "w+b")
            f.write(b"\n" * (2 * _SLOT))  # committed with the first reservation: a file
            self._file = f  # lost before that reads as new again, which is what it is
            return [-2, -2]
        self._file = f
        data = f.read(2 * _SLOT)
        return [parse_slot(data[:_SLOT]), parse_slot(data[_SLOT:])]

    def _reserve(self, limit):
        b = self._buf
        n = limit
        for i in range(9, -1, -1):
            d = 0x30 + n % 10
            b[i] = d
            b[11 + i] = d
            n //= 10
        f = self._file
        f.seek(self._slot * _SLOT)
        f.write(b)
        f.flush()
        self._slot ^= 1
        self.limit = limit
