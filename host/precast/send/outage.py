"""Live through an outage as a node does: keep what cannot be sent, send it late with its age.

`--outage START:SECONDS`: from START seconds after the first reading, for
SECONDS, nothing reaches the network. Each reading taken meanwhile goes into its
device's backlog, a ring of `--backlog N` readings kept with the time they were
taken; a full ring drops its oldest (counted). Once the outage is over, before
each new reading of a device, up to LATE_PER_READING of its kept readings go out,
oldest first, as delayed frames (docs/PROTOCOL.md: flag bit 1 and the age, here
the milliseconds on this process's clock from taking to sending), so a long
backlog never holds new readings back for long. The firmware does the same with
its preallocated ring.

The backlog paces the readings itself, one every 1/RATE seconds, as a node's
timer does (the engine's pump then sends at once): a reading and the late
ones before it go out together at its tick, so an age is measured right when
its frame is handed to the transport, and the rate of frames briefly exceeds
RATE while a backlog drains.
"""

from __future__ import annotations

import argparse
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from precast.args import non_negative
from precast.errors import UsageError
from precast.send.transports import FrameRows, rows_of
from precast.wire.codec import delay
from precast.wire.constants import AGE_LEN, OFF_DEVICE, OFF_TEMPLATE, PAYLOAD_OFFSET
from precast.wire.layout import Layout

LATE_PER_READING = 4  # delayed frames sent before each new reading, at most
DEFAULT_BACKLOG = 64  # readings a device keeps


@dataclass(frozen=True)
class Outage:
    """An outage START seconds after the first reading, SECONDS long."""

    start: float
    seconds: float

    def covers(self, t: float) -> bool:
        return self.start <= t < self.start + self.seconds


def outage_arg(text: str) -> Outage:
    """argparse type for --outage START:SECONDS."""
    start, colon, seconds = text.partition(":")
    try:
        o = Outage(float(start), float(seconds))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:SECONDS, got {text!r}") from None
    if not colon or not (o.start >= 0 and o.seconds > 0) or o.start + o.seconds == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected START:SECONDS, START >= 0 and SECONDS > 0, got {text!r}"
        )
    return o


def add_outage_args(p: argparse.ArgumentParser) -> None:
    """--outage START:SECONDS and --backlog N."""
    p.add_argument(
        "--outage",
        type=outage_arg,
        metavar="START:SECONDS",
        help="simulate an outage: keep the readings taken in it, send them late (delayed "
        "frames, with their age) once it is over; needs --rate",
    )
    p.add_argument(
        "--backlog",
        type=non_negative,
        default=DEFAULT_BACKLOG,
        metavar="N",
        help=f"readings each device keeps through an outage (default {DEFAULT_BACKLOG}; "
        "a full backlog drops its oldest)",
    )


@dataclass
class Kept:
    """What the backlogs did: readings kept, sent late, dropped from a full ring."""

    kept: int = 0
    sent_late: int = 0
    dropped: int = 0

    def summary(self, waiting: int = 0) -> str:
        line = f"backlog: kept {self.kept}, sent late {self.sent_late}, dropped {self.dropped}"
        return line + (f", still kept at the end {waiting}" if waiting else "")


class Backlogs:
    """Per device, a ring of (frame, time taken) kept through the outage."""

    def __init__(
        self,
        outage: Outage,
        capacity: int,
        interval: float,
        layouts: Iterable[Layout],
        key: bytes | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.outage = outage
        self.capacity = capacity
        self.interval = interval
        self.layouts = {lay.template.id: lay for lay in layouts}
        self.key = key
        self.counts = Kept()
        self._rings: dict[bytes, deque[tuple[bytes, float]]] = {}
        self._clock = clock
        self._sleep = sleep
        self._t0: float | None = None
        self._n = 0  # readings so far: reading n is due at t0 + n * interval

    def frames(self, chunks: Iterable[FrameRows]) -> Iterator[list[bytes]]:
        """Each reading's frames as they go out: its device's late ones, then itself."""
        for chunk in chunks:
            for row in rows_of(chunk):
                yield from self._reading(bytes(row))

    def _reading(self, frame: bytes) -> Iterator[list[bytes]]:
        if self._t0 is None:
            self._t0 = self._clock()
        at = self._n * self.interval  # the reading's tick, from the first one
        self._n += 1
        wait = self._t0 + at - self._clock()
        if wait > 0:
            self._sleep(wait)
        now = self._clock()
        p = PAYLOAD_OFFSET
        dev = frame[p + OFF_DEVICE : p + OFF_DEVICE + 4]
        ring = self._rings.get(dev)
        if self.outage.covers(at):
            if not self.capacity:  # --backlog 0: no ring, the reading is gone
                self.counts.dropped += 1
            else:
                if ring is None:
                    ring = self._rings[dev] = deque(maxlen=self.capacity)
                if len(ring) == self.capacity:
                    self.counts.dropped += 1  # the deque drops its oldest
                ring.append((frame, now))
                self.counts.kept += 1
            return
        out: list[bytes] = []
        while ring and len(out) < LATE_PER_READING:
            late, taken = ring.popleft()
            tid = int.from_bytes(late[p + OFF_TEMPLATE : p + OFF_TEMPLATE + 2], "big")
            out.append(delay(self.layouts[tid], late, (self._clock() - taken) * 1000, self.key))
        self.counts.sent_late += len(out)
        out.append(frame)
        yield out

    def waiting(self) -> int:
        """Readings still kept (the run ended before they could go)."""
        return sum(map(len, self._rings.values()))


def check_outage(args: argparse.Namespace) -> None:
    """An outage is in seconds of readings: it needs a paced run."""
    if args.outage is not None and not args.rate > 0:
        raise UsageError("--outage needs --rate: an outage is measured in seconds of readings")


def frame_room(frame_len: int, args: argparse.Namespace) -> int:
    """The longest frame a run sends: its delayed frames are 4 bytes longer."""
    return frame_len + (AGE_LEN if args.outage is not None else 0)
