"""The backlog: readings that could not be sent, kept in a preallocated ring, sent late.

A reading whose send failed is kept as the bytes its frame carried, seq and
fields (payload [8, 12 + F)), with the time it was taken, in slots made once
(`Backlog(n, late, OFF_AGE)`: 8 + F bytes a slot). A full ring overwrites its oldest
reading (counted `dropped`). Once a send works again, `drain` sends up to
`limit` kept readings, oldest first, before the next new one: each one's bytes
go back into the delayed frame (`Sender(precast_template_late)`, docs/PROTOCOL.md,
Delayed frames) with its age, the milliseconds from taking to now, and seal
writes its seq and checks; a send that fails again leaves the reading first in
the ring and the error goes to the caller.

Nothing is allocated per reading: the fields move as bytes (an f32 field too),
the age is a small int, and the seq goes into the late sender's params through
checks.load_be32 (viper where the port has it: a word, never an int object).

The time of taking is `time.ticks_ms()` by default: an age is right up to
ticks_diff's range (2**29 ms, 6.2 days). Across a deep sleep (a reboot) the
ring is saved and restored by deepsleep.py (a bundle built with `--sleep
deep` carries it), with the ages going on from the RTC's clock; a reset
during a run loses the ring in RAM (the seq store still guarantees no seq
repeats).
"""

from array import array

from micropython import const

from .checks import load_be32, seal
from .robust import REFUSED  # ECONNREFUSED: the datagram before this send was refused

# layout.py's numbers, as private const() (tests/firmware/test_firmware_constants.py).
_PAYLOAD_OFFSET = const(42)
_FRAME_SEQ = const(50)
_P_SEQ = const(0)
_P_FIELDS = const(1)
# The ring's state, an array('i'): where the oldest is, how many, and the counts.
_B_HEAD = const(0)
_B_COUNT = const(1)
_B_KEPT = const(2)
_B_LATE = const(3)  # sent late
_B_DROPPED = const(4)  # overwritten by a newer one in a full ring
_AGE_MAX = const(0x3FFFFFFF)  # the largest small int on any port: 12.4 days of ms
_LATE_PER_READING = const(4)  # kept readings sent before each new one, at most


def _copy(dst, d, src, s, n):
    """dst[d:d + n] = src[s:s + n], byte by byte (a slice would allocate)."""
    i = 0
    while i < n:
        dst[d + i] = src[s + i]
        i += 1


class Backlog:
    """A ring of n kept readings, sent late through the delayed frame's Sender `late`."""

    def __init__(self, n, late, off_age, clock=None, diff=None):
        """n slots; `late` the delayed frame's Sender, `off_age` its OFF_AGE (payload)."""
        import time

        self.n = n
        self.late = late
        self.age_at = _PAYLOAD_OFFSET + off_age
        self.width = self.age_at - _FRAME_SEQ  # payload [8, 12 + F): seq and fields
        self.kept = bytearray(n * self.width)
        self.taken = array("i", bytes(4 * n))
        self.state = array("i", bytes(4 * 5))
        self.clock = clock or time.ticks_ms
        self.diff = diff or time.ticks_diff
        late.params[_P_FIELDS] = 0  # seal writes seq and checks; the fields come from the ring

    def __len__(self):
        return self.state[_B_COUNT]

    def slot(self, i):
        """The slot of kept reading i (0: the oldest)."""
        return (self.state[_B_HEAD] + i) % self.n

    def keep(self, frame):
        """Keep the reading just sent (or not) in frame: its seq and fields, and the time."""
        self.put(frame, _FRAME_SEQ, self.clock())
        self.state[_B_KEPT] += 1

    def put(self, src, at, taken):
        """src[at:at + width] (a reading's seq and fields) into the ring, taken at ticks_ms
        `taken`; a full ring drops its oldest for it."""
        st = self.state
        n = self.n
        if st[_B_COUNT] == n:  # full: the oldest goes
            st[_B_HEAD] = (st[_B_HEAD] + 1) % n
            st[_B_COUNT] = n - 1
            st[_B_DROPPED] += 1
        slot = self.slot(st[_B_COUNT])
        _copy(self.kept, slot * self.width, src, at, self.width)
        self.taken[slot] = taken
        st[_B_COUNT] += 1

    def drain(self, send, mv, limit):
        """Send up to `limit` kept readings, oldest first, through the late sender's mv.

        `send(mv)` raises OSError when it cannot: the reading then stays first in the
        ring. The number sent.
        """
        st = self.state
        now = self.clock()
        sent = 0
        while sent < limit and st[_B_COUNT]:
            self.load(0, now)
            send(mv)
            self.pop(1)
            sent += 1
        return sent

    def load(self, i, now):
        """Kept reading i (0: the oldest) into the late sender's frame, its age at `now`,
        sealed: ready to send, still kept."""
        late = self.late
        f = late.frame
        # plain.py's load_be32 writes through the byte view of params (params_b), viper's
        words = late.params if late.params_b is None else late.params_b
        w = self.width
        a = self.age_at
        slot = self.slot(i)
        _copy(f, _FRAME_SEQ, self.kept, slot * w, w)
        load_be32(words, _P_SEQ, f, _FRAME_SEQ)
        age = self.diff(now, self.taken[slot])
        if not 0 <= age < _AGE_MAX:
            age = _AGE_MAX
        f[a] = age >> 24
        f[a + 1] = (age >> 16) & 0xFF
        f[a + 2] = (age >> 8) & 0xFF
        f[a + 3] = age & 0xFF
        seal(late, None)  # seq (from params), the checks, the UDP checksum

    def pop(self, k):
        """The k oldest went out: no longer kept (counted sent late)."""
        st = self.state
        st[_B_HEAD] = (st[_B_HEAD] + k) % self.n
        st[_B_COUNT] -= k
        st[_B_LATE] += k

    def counts(self):
        """'kept K late L dropped D waiting W', for the run's summary line."""
        st = self.state
        return "kept %d late %d dropped %d waiting %d" % (
            st[_B_KEPT],
            st[_B_LATE],
            st[_B_DROPPED],
            st[_B_COUNT],
        )


class Keeper:
    """The loop's send with a backlog: kept readings first (oldest first, a few), then the
    new one; a new one whose send fails after the link's retries is kept.

    When a kept reading cannot go out, the new one still goes through the link's send,
    its retries and reopening (the link may need reopening to come back at all); if that
    works, the kept ones follow at the next reading.

    A refused send (ECONNREFUSED: the collector's host answered an earlier datagram with
    ICMP port unreachable, so nothing listens there: it is stopped or restarting) is told
    only by the next send on the socket, which then goes nowhere itself, and the one after
    it goes out again, to be lost. So after a refusal the keeper probes: every new reading
    is kept, and one kept reading goes out as a probe, still kept; the next reading's send
    says whether the probe was refused (then it goes again) or not (the collector is back:
    it and the one sent with the answer count as sent late, and the ring drains as usual).
    Each outage costs the one datagram whose refusal told of it (counted dropped).
    """

    def __init__(self, link, sender, backlog, late_mv):
        self.link = link
        self.frame = sender.frame
        self.backlog = backlog
        self.late_mv = late_mv
        self.probing = False

    def send(self, mv):
        """Send mv after what is kept; True when mv went out now."""
        b = self.backlog
        link = self.link
        if self.probing:
            self.probe()
            return False
        if b.state[_B_COUNT]:
            try:
                b.drain(link.send_raw, self.late_mv, _LATE_PER_READING)
            except OSError as e:
                link.failed += 1
                link.last_errno = e.errno
                if e.errno == REFUSED:  # the datagram before this one was refused
                    link.refused += 1
                    self.refused()
                    return False
            except MemoryError:  # under heap_lock a port may fail to build the OSError
                link.failed += 1
        if link.send(mv):
            return True
        b.keep(self.frame)
        if link.last_errno == REFUSED:  # the link did not retry it: see refused()
            self.probe_again()
        return False

    def refused(self):
        """The new reading is kept unsent, and probing starts with the oldest kept one."""
        self.backlog.keep(self.frame)
        self.link.dropped += 1
        self.probe_again()

    def probe(self):
        """Probing: keep the new reading; the next kept one goes out, which tells whether
        the probe (the oldest) was refused."""
        b = self.backlog
        link = self.link
        b.keep(self.frame)
        link.dropped += 1  # not sent now (kept)
        i = 1 if len(b) > 1 else 0  # 0: a full ring of one dropped the probe for it
        b.load(i, b.clock())
        try:
            link.send_raw(self.late_mv)
        except OSError as e:
            link.failed += 1
            link.last_errno = e.errno
            if e.errno == REFUSED:
                self.probe_again()  # refused still: the error is taken, so this one goes
            return
        except MemoryError:
            link.failed += 1
            return
        b.pop(i + 1)  # the probe was not refused: it arrived, and so (it seems) this one
        self.probing = False

    def probe_again(self):
        """Probing: the oldest kept reading goes out, still kept (an error: the next probe
        tells)."""
        self.probing = True
        b = self.backlog
        b.load(0, b.clock())
        try:
            self.link.send_raw(self.late_mv)
        except (OSError, MemoryError):  # MemoryError: heap_lock, the OSError not made
            self.link.failed += 1


def open_keeper(n, link, sender, key):
    """A Keeper with a ring of n readings and the delayed frame's Sender (made once, here)."""
    import sys

    import precast_template_late as late_tpl

    from .sender import Sender

    late = Sender(late_tpl, key)
    mv = late.frame_mv if link.FRAME else late.payload_mv
    keeper = Keeper(link, sender, Backlog(n, late, late_tpl.OFF_AGE), mv)
    # The delayed frame's template is read here and never again (the late Sender holds its
    # frame and numbers): it leaves RAM (336 bytes on the 32-bit port).
    del sys.modules["precast_template_late"]
    return keeper
