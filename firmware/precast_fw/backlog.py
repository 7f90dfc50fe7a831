"""The backlog: readings that could not be sent, kept in a preallocated ring, sent late.

A reading whose send failed is kept: its seq (the 4 bytes of the frame it
went out in), the time it was taken and its raw field values, in slots made
once (`Backlog(n, fields)`: 8 + 4 * fields bytes a slot). A full ring
overwrites its oldest reading (counted `dropped`). Once a send works again,
`drain` sends up to `limit` kept readings, oldest first, before the next new
one, each through the late sender (`Sender(precast_template_late)`: the
delayed frame, docs/PROTOCOL.md, Delayed frames) with its age, the
milliseconds from taking to now; a send that fails again leaves the reading
first in the ring. Nothing is allocated per reading: the words move through
checks.put_words / get_words / load_be32 (viper where the port has it), so a
seq or a u32 field never becomes an int object on a 32-bit port.

Integer templates only (an f32 field makes Sender.values a list, and a reading
allocates anyway): the build gives such a template no backlog.

The time of taking is `time.ticks_ms()` by default: an age is right up to
ticks_diff's range (2**29 ms, 6.2 days), and a kept reading does not survive a
reset or power loss (the seq store still guarantees no seq repeats).
"""

from array import array

from micropython import const

from .checks import get_words, load_be32, put_words
from .layout import FRAME_SEQ

# The ring's state, an array('i'): where the oldest is, how many, and the counts.
B_HEAD = const(0)
B_COUNT = const(1)
B_KEPT = const(2)
B_LATE = const(3)  # sent late
B_DROPPED = const(4)  # overwritten by a newer one in a full ring
AGE_MAX = const(0x3FFFFFFF)  # the largest small int on any port: 12.4 days of ms


def slot_bytes(fields):
    """RAM a slot takes: seq and time of taking (4 + 4), the raw fields (4 each)."""
    return 8 + 4 * fields


class Backlog:
    """A ring of n kept readings of a template with `fields` fields."""

    def __init__(self, n, fields, clock=None, diff=None):
        import time

        self.n = n
        self.fields = fields
        self.seqs = array("I", bytes(4 * n))
        self.taken = array("i", bytes(4 * n))
        self.values = array("i", bytes(4 * n * fields))
        self.state = array("i", bytes(4 * 5))
        self.clock = clock or time.ticks_ms
        self.diff = diff or time.ticks_diff

    def __len__(self):
        return self.state[B_COUNT]

    def keep(self, frame, values):
        """Keep the reading just patched into frame (its seq) with its raw values."""
        st = self.state
        n = self.n
        if st[B_COUNT] == n:  # full: the oldest goes
            st[B_HEAD] = (st[B_HEAD] + 1) % n
            st[B_COUNT] = n - 1
            st[B_DROPPED] += 1
        slot = (st[B_HEAD] + st[B_COUNT]) % n
        load_be32(self.seqs, slot, frame, FRAME_SEQ)
        self.taken[slot] = self.clock()
        put_words(self.values, slot * self.fields, values, self.fields)
        st[B_COUNT] += 1
        st[B_KEPT] += 1

    def drain(self, late, send, mv, limit):
        """Send up to `limit` kept readings, oldest first, through the late sender `late`.

        `send(mv)` sends late's frame (or payload) and raises OSError when it cannot;
        the reading then stays first in the ring, and the error goes to the caller.
        """
        st = self.state
        v = late.values
        k = self.fields
        now = self.clock()
        sent = 0
        while sent < limit and st[B_COUNT]:
            slot = st[B_HEAD]
            get_words(late.params, self.seqs, slot, 1)  # params[P_SEQ], slot 0
            get_words(v, self.values, slot * k, k)
            age = self.diff(now, self.taken[slot])
            v[k] = age if 0 <= age < AGE_MAX else AGE_MAX
            late.patch(v)
            send(mv)
            st[B_HEAD] = (slot + 1) % self.n
            st[B_COUNT] -= 1
            st[B_LATE] += 1
            sent += 1
        return sent

    def counts(self):
        """'kept K late L dropped D waiting W', for the run's summary line."""
        st = self.state
        return "kept %d late %d dropped %d waiting %d" % (
            st[B_KEPT],
            st[B_LATE],
            st[B_DROPPED],
            st[B_COUNT],
        )
