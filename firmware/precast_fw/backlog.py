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
ticks_diff's range (2**29 ms, 6.2 days). Across deep sleep (a reboot) the ring
is saved (`save` before the sleep, `restore` at boot), each reading with its age
so far and the RTC's time, so the ages go on from the RTC's clock: into RTC
memory where the board has it (ESP32: 2 KiB, beside the seq store's record, so
no flash is written), as many of the newest readings as fit there, the rest
(or all, without RTC memory) into a file. RTC memory survives deep sleep and a
watchdog or soft reset, not a power loss; restore() takes the ring out of it at
once, so a later reset cannot bring it back. A power loss loses what RTC memory
held, a reset during a run loses the ring in RAM (the seq store still
guarantees no seq repeats).
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
B_HEAD = const(0)
B_COUNT = const(1)
B_KEPT = const(2)
B_LATE = const(3)  # sent late
B_DROPPED = const(4)  # overwritten by a newer one in a full ring
AGE_MAX = const(0x3FFFFFFF)  # the largest small int on any port: 12.4 days of ms


_TICKS_AGE_MAX = const(1 << 28)  # ages restored after a sleep stay inside ticks_diff's range
RTC_AT = const(16)  # RTC memory: the seq store's record (seqstore._RTC_LEN), then the ring
RTC_MAX = const(2048)  # ESP32's RTC memory (MICROPY_HW_RTC_USER_MEM_MAX, its default)


def _rtc_ms():
    """The RTC's time in ms: it runs through deep sleep, where ticks_ms restarts."""
    import time

    try:
        return time.time_ns() // 1000000
    except AttributeError:  # a port without time_ns: whole seconds
        return int(time.time()) * 1000


def time_taken(now, age):
    """The ticks_ms a reading was taken at, `age` ms before `now`."""
    import time

    return time.ticks_add(now, -age)


def slot_bytes(fields_len):
    """RAM a slot takes: seq (4), the fields' bytes, the time of taking (4)."""
    return 8 + fields_len


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
        self.rtc = None  # an RTC whose memory() survives deep sleep: the ring goes there
        late.params[_P_FIELDS] = 0  # seal writes seq and checks; the fields come from the ring

    def __len__(self):
        return self.state[B_COUNT]

    def keep(self, frame):
        """Keep the reading just sent (or not) in frame: its seq and fields, and the time."""
        st = self.state
        n = self.n
        if st[B_COUNT] == n:  # full: the oldest goes
            st[B_HEAD] = (st[B_HEAD] + 1) % n
            st[B_COUNT] = n - 1
            st[B_DROPPED] += 1
        slot = (st[B_HEAD] + st[B_COUNT]) % n
        _copy(self.kept, slot * self.width, frame, _FRAME_SEQ, self.width)
        self.taken[slot] = self.clock()  # type: ignore[assignment]  # stubs: ticks are ints here
        st[B_COUNT] += 1
        st[B_KEPT] += 1

    def drain(self, send, mv, limit):
        """Send up to `limit` kept readings, oldest first, through the late sender's mv.

        `send(mv)` raises OSError when it cannot: the reading then stays first in the
        ring. The number sent.
        """
        st = self.state
        now = self.clock()
        sent = 0
        while sent < limit and st[B_COUNT]:
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
        slot = (self.state[B_HEAD] + i) % self.n
        _copy(f, _FRAME_SEQ, self.kept, slot * w, w)
        load_be32(words, _P_SEQ, f, _FRAME_SEQ)
        age = self.diff(now, self.taken[slot])
        if not 0 <= age < AGE_MAX:
            age = AGE_MAX
        f[a] = age >> 24
        f[a + 1] = (age >> 16) & 0xFF
        f[a + 2] = (age >> 8) & 0xFF
        f[a + 3] = age & 0xFF
        seal(late, None)  # seq (from params), the checks, the UDP checksum

    def pop(self, k):
        """The k oldest went out: no longer kept (counted sent late)."""
        st = self.state
        st[B_HEAD] = (st[B_HEAD] + k) % self.n
        st[B_COUNT] -= k
        st[B_LATE] += k

    def save(self, path):
        """Before deep sleep: what is kept, each reading's age so far and the RTC's time, so
        that the next boot's ages go on from the RTC (ticks_ms restarts). The newest readings
        that fit go into self.rtc's memory after the seq store's record (RTC_AT bytes, written
        just before), the rest into `path` (no file when nothing is left for it: no flash
        written). Allocates: call it with the heap unlocked."""
        n = self.state[B_COUNT]
        rtc = self.rtc
        k = 0  # the newest k go into RTC memory
        if rtc is not None and n:
            k = min(n, (RTC_MAX - RTC_AT - 10) // (4 + self.width))
            head = bytes(rtc.memory()[:RTC_AT])
            try:
                rtc.memory(head + bytes(RTC_AT - len(head)) + self._image(n - k, n))
            except ValueError:  # a port whose RTC memory is smaller (rp2: 32 bytes)
                k = 0
        if n - k:
            with open(path, "wb") as f:
                f.write(self._image(0, n - k))
        else:
            self.forget(path)

    def _image(self, lo, hi):
        """Readings lo..hi-1 (0: the oldest) as save() writes them: the RTC's time and their
        count, then each one's age so far and its bytes."""
        import struct

        st = self.state
        now = self.clock()
        w = self.width
        out = bytearray(struct.pack(">QH", _rtc_ms(), hi - lo))
        while lo < hi:
            slot = (st[B_HEAD] + lo) % self.n
            out += struct.pack(">I", self.diff(now, self.taken[slot]))
            out += self.kept[slot * w : slot * w + w]
            lo += 1
        return out

    def restore(self, path):
        """Take back what save() wrote, the file's (the older) then RTC memory's, and remove
        both (RTC memory keeps only the seq store's record); the readings restored."""
        try:
            with open(path, "rb") as f:
                data = f.read()
            self.forget(path)
        except OSError:
            data = b""
        n = self._take(data)
        rtc = self.rtc
        if rtc is not None:
            mem = rtc.memory()
            if len(mem) > RTC_AT:
                rtc.memory(mem[:RTC_AT])  # read once: a later reset must not bring it back
                n += self._take(mem[RTC_AT:])
        return n

    def _take(self, data):
        """Readings from one _image() into the ring; how many."""
        import struct

        w = self.width
        if len(data) < 10:
            return 0
        saved, n = struct.unpack_from(">QH", data, 0)
        if len(data) != 10 + n * (4 + w):
            return 0  # not this template's (a rebuilt bundle): nothing to trust
        slept = max(0, _rtc_ms() - saved)
        now = self.clock()
        at = 10
        i = 0
        while i < n:
            age = min(struct.unpack_from(">I", data, at)[0] + slept, _TICKS_AGE_MAX)
            self._put(data, at + 4, time_taken(now, age))
            at += 4 + w
            i += 1
        return n

    def _put(self, data, at, taken):
        st = self.state
        if st[B_COUNT] == self.n:
            st[B_HEAD] = (st[B_HEAD] + 1) % self.n
            st[B_COUNT] = self.n - 1
            st[B_DROPPED] += 1
        slot = (st[B_HEAD] + st[B_COUNT]) % self.n
        _copy(self.kept, slot * self.width, data, at, self.width)
        self.taken[slot] = taken
        st[B_COUNT] += 1

    @staticmethod
    def forget(path):
        """Remove a saved backlog (the sleep did not happen: this run goes on with it)."""
        import os

        try:
            os.remove(path)
        except OSError:
            pass

    def counts(self):
        """'kept K late L dropped D waiting W', for the run's summary line."""
        st = self.state
        return "kept %d late %d dropped %d waiting %d" % (
            st[B_KEPT],
            st[B_LATE],
            st[B_DROPPED],
            st[B_COUNT],
        )


LATE_PER_READING = const(4)  # kept readings sent before each new one, at most


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
        if b.state[B_COUNT]:
            try:
                b.drain(link.send_raw, self.late_mv, LATE_PER_READING)
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
        except OSError:
            self.link.failed += 1
        except MemoryError:
            self.link.failed += 1


def open_keeper(n, link, sender, key, path=None, rtc=None):
    """A Keeper with a ring of n readings and the delayed frame's Sender (made once, here);
    what a deep sleep left in `path` and `rtc`'s memory is taken back (before the seq store
    reads its record there, which it then clears)."""
    import precast_template_late as late_tpl

    from .sender import Sender

    late = Sender(late_tpl, key)
    mv = late.frame_mv if link.FRAME else late.payload_mv
    ring = Backlog(n, late, late_tpl.OFF_AGE)
    ring.rtc = rtc
    if path:
        ring.restore(path)
    return Keeper(link, sender, ring, mv)
