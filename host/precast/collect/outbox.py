"""What each sink has yet to take, kept in the store: every sink gets every stored reading.

The sinks (--jsonl, --mqtt) take the readings after their commit, so a
collector killed between the two leaves committed readings no sink took. Each
commit therefore also writes, in the same transaction and per sink, one
outbox entry: a reference to the rows it stored (SQLite: each table's rowid
range; PostgreSQL: the readings' keys) and how many. An entry is deleted by a
later commit once its sink has taken all of it (written, published, or
counted dropped). A clean stop leaves no entry.

A collector starting takes over the entries no running collector owns (a
killed one's: on PostgreSQL each collector holds an advisory lock on its
token while it runs), reads their rows back and hands them to the sink
before anything new: at least once. What a sink can get twice is what it took
after the last commit before the kill (about a second's readings) and the
rest of an entry it had begun. A row of an entry no longer in the database
(deleted by hand) is counted dropped by its sink.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    """One commit's readings for one sink: `until` counts this collector's readings
    committed for the sink through this entry (its key in the store, with the sink's
    name and the collector's token), `n` the readings it holds."""

    until: int
    n: int


@dataclass(frozen=True, slots=True)
class Pending:
    """An entry taken over from a collector that is gone: n readings, the store's reference
    to their rows (opaque here)."""

    n: int
    ref: bytes


class Outbox:
    """One sink's entries not yet taken, in the order the sink was handed their readings.

    handed: readings handed to the sink this run through entries (taken over and new),
    which the sink's taken() count catches up with; an entry is done when it has.
    """

    def __init__(self, sink: str) -> None:
        self.sink = sink  # the sink's `position` name
        self.committed = 0  # `until` of the newest entry
        self.handed = 0
        self._ends: deque[tuple[int, int]] = deque()  # (until, handed through it)

    def next(self, n: int) -> Entry:
        """The entry of a commit of n readings (not counted until record())."""
        return Entry(self.committed + n, n)

    def record(self, e: Entry) -> None:
        """The entry's commit was made, and its readings handed to the sink."""
        self.committed = e.until
        self.handed += e.n
        self._ends.append((e.until, self.handed))

    def owe(self, n: int) -> int:
        """n readings handed to the sink without an entry (a killed run's the outbox did not
        hold, which the sink counts dropped); n."""
        self.handed += n
        return n

    def done(self, taken: int) -> int | None:
        """The newest `until` whose entries the sink has taken all of (taken: its count this
        run), to delete through; None when no entry is done. Not forgotten until forget()."""
        last = None
        for until, end in self._ends:
            if end > taken:
                break
            last = until
        return last

    def forget(self, until: int) -> None:
        """Entries through `until` are deleted from the store."""
        while self._ends and self._ends[0][0] <= until:
            self._ends.popleft()

    def pending(self, committing: int, taken: int) -> int:
        """Readings committed for the sink (committing: in the commit being built) and not
        yet taken: the sink's position counter."""
        return self.handed + committing - taken
