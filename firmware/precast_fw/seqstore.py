"""The sequence number across resets and power loss: never the same seq twice.

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
the other slot's older limit, which is still above every seq sent.

A limit is a point on the seq's circle, mod 2**32 like the seq itself, so it
always fits the ten digits, past 2**32 and 10**10 readings (a file an older
firmware wrote with a larger number is read mod 2**32). Of two limits the
one "ahead" is the one the other reaches by going forward less than half
the circle ((a - b) mod 2**32 < 2**31): two slots never differ by more than
one reservation (at most MAX_RESERVE), so that is always the newer. On a
32-bit port an int at or above 2**30 is a heap object, so the limit lives in
two 16-bit halves (_hi, _lo) and everything a reading or a sleep does works
on halves: nothing is allocated under heap_lock, for any seq. The
file is opened once and rewritten in place from a preallocated buffer, so
a reservation allocates nothing (littlefs, ESP32's and the Pico W's file
system, commits a file at flush; the unix port's flush is an fsync).

Deep sleep (a reboot) costs no flash write where the board has RTC memory:
deepsleep.SeqStore, which a bundle built with `--sleep deep` carries, leaves
the next seq there.
"""

import time

from micropython import const

_SLOT = const(22)  # "0000001000/0000001000\n"
DEFAULT_RESERVE = 1000
MAX_RESERVE = const(1 << 20)  # public: deepsleep.SeqStore reads it


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
    return a & 0xFFFFFFFF  # a point on the seq's circle (an older firmware wrote it whole)


class SeqStore:
    """start() gives the first seq; claim(n) before sends; save_exact() at a clean stop."""

    def __init__(self, path="precast_seq", reserve=DEFAULT_RESERVE, write_ms=0):
        # write_ms > 0: a reservation used up sooner than that makes the next one larger (up
        # to MAX_RESERVE), one lasting 8x longer halves it (not below reserve), so a fast sender
        # writes the flash about once per write_ms (a write is a commit: an fsync, flash wear).
        self.path = path
        self.reserve = reserve
        self.step = reserve  # the reservation written next
        self.write_ms = write_ms
        self._since = None  # ticks_ms of the last reservation written
        self._hi = 0  # the limit, mod 2**32, in 16-bit halves (small ints on any port)
        self._lo = 0
        self._shi = 0  # next_seq's halves, as _next_halves() last found them
        self._slo = 0
        self.left = 0
        self._file = None
        self._slot = 0
        self._buf = bytearray(b"0000000000/0000000000\n")

    def start(self):
        """The seq of the first reading after this boot."""
        slots = self._read_file()
        a, b = slots
        # The newer slot: the one ahead on the circle (see above); none: slot 0 is written first.
        newer = 0 if a >= 0 and (b < 0 or (a - b) & 0xFFFFFFFF < 0x80000000) else 1
        self._slot = newer ^ 1  # overwrite the older slot first
        best = slots[newer]
        if self._resume(best):
            return self.next_seq
        if best < 0:
            # No limit in either slot: a device's first boot, or both slots lost (say so).
            if -1 in slots:
                print("precast: seq file %s unreadable; starting seq at 0" % self.path)
            best = 0
        self.limit = best
        self.left = 0  # the first claim() reserves [best, best + R)
        return best

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
        lo = self._lo + r  # the limit + r, mod 2**32, by halves: r < 2**21
        self._reserve((self._hi + (lo >> 16)) & 0xFFFF, lo & 0xFFFF)
        self.left = r

    def claim(self, n):
        """Claim up to n seqs for the next sends; how many, at least 1 (fewer than n where
        the reservation ends: every seq handed out is below the limit on the flash before its
        send). A new reservation is written once the last one is used up."""
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
    def limit(self):
        """The limit on the flash (an int: allocates past 2**30 on a 32-bit port)."""
        return self._hi << 16 | self._lo

    @limit.setter
    def limit(self, value):
        self._hi = (value >> 16) & 0xFFFF
        self._lo = value & 0xFFFF

    @property
    def next_seq(self):
        """The seq the next claim() hands out first (an int, mod 2**32)."""
        return (self.limit - self.left) & 0xFFFFFFFF

    def save_exact(self):
        """Cut the reservation back to next_seq: after a clean stop the next boot skips nothing.

        Every seq below next_seq was claimed before its send, so starting there
        repeats none. Into both slots, the older first: boot takes the larger slot, so until
        the second write lands the current, larger limit still stands (an interrupt or a
        power loss halfway costs a skip, never a repeat).
        """
        if self._file is None or self.left == 0:
            return  # nothing reserved beyond next_seq: no flash write
        self._next_halves()  # under heap_lock when a board without RTC memory sleeps
        self._reserve(self._shi, self._slo)
        self._reserve(self._shi, self._slo)
        self.left = 0

    def _next_halves(self):
        """next_seq (limit - left, mod 2**32) into _shi, _slo: small ints on any port."""
        lo = self._lo - self.left
        self._shi = (self._hi + (lo >> 16)) & 0xFFFF  # lo >> 16 is negative when lo borrows
        self._slo = lo & 0xFFFF

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None

    def _resume(self, flash_limit):
        """deepsleep.SeqStore's: the seq from RTC memory after a deep sleep. None here."""
        return False

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

    def _reserve(self, hi, lo):
        """Write the limit hi << 16 | lo into the next slot; it becomes the limit."""
        b = self._buf
        h = hi
        l = lo  # noqa: E741
        for i in range(9, -1, -1):  # decimal digits by long division on the halves
            x = (hi % 10) << 16 | lo
            hi //= 10
            lo = x // 10
            d = 0x30 + x % 10
            b[i] = d
            b[11 + i] = d
        f = self._file
        f.seek(self._slot * _SLOT)
        f.write(b)
        f.flush()
        self._slot ^= 1
        self._hi = h
        self._lo = l
