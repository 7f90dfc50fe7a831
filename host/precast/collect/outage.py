"""Riding out a database outage: retry with backoff, log once, give up only at exit.

The storing thread (daemon.py) hands StoreRetry.write_all() the batches it took,
which tries each piece of them in one transaction. When it fails (an SQLite
file locked or its disk full, a PostgreSQL server restarted or the network
cut), the tracker is rolled back, failed() logs one error line at the start of
the outage (what waits, and that it retries), and wait() sleeps a backoff of
0.1 s doubling to 5 s, then reconnects a store whose connection broke
(PostgreSQL). A full disk is not waited for first: the piece is halved until it
fits. Meanwhile the receiving thread goes on filling the bounded queue (what
overflows is counted as queue drops). When everything waiting is written
again, ok() logs one line with how long the outage lasted.

While stopping (SIGTERM) the retries go on until `deadline` (--stop-timeout
after the stop); past it the caller raises Unwritten with the batches it
could not write, to spill (spill.py) with whatever is still queued.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from precast.collect.backlog import Batch, datagrams, halves
from precast.collect.backoff import Backoff
from precast.collect.store import StoreError

log = logging.getLogger("precast.collect")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DEFAULT_STOP_TIMEOUT = 10.0  # s a stopping collector waits for an unreachable database
PIECE_MIN = 64  # datagrams: a full disk splits the backlog into pieces down to this size


class Unwritten(Exception):
    """The database stayed unreachable past the stop deadline; .batches were not written."""

    def __init__(self, batches: list[Any], cause: BaseException) -> None:
        super().__init__(f"{sum(len(b) for _, b in batches)} datagrams not written: {cause}")
        self.batches = batches
        self.cause = cause


class StoreRetry:
    """Retries of one store's writes across outages (one instance per collector)."""

    def __init__(self, store: Any, transient: tuple[type[BaseException], ...]) -> None:
        self.store = store
        self.transient = transient  # what a write raises that is worth retrying
        self._deadline: float | None = None
        self.down_since: float | None = None
        self.outages = 0
        self.backoff = Backoff(BACKOFF_FIRST, BACKOFF_MAX)

    @property
    def deadline(self) -> float | None:
        """Monotonic time a stopping collector gives up at (the store's in-doubt checks too)."""
        return self._deadline

    @deadline.setter
    def deadline(self, at: float | None) -> None:
        self._deadline = at
        self.store.deadline = at

    def write_all(
        self,
        batches: list[Batch],
        piece: Callable[[list[Batch]], None],
        queued: Callable[[], int],
        split: bool = True,
    ) -> None:
        """Store every datagram of the batches with piece(): in one transaction, or in pieces.

        A refused write (a locked or full disk, a PostgreSQL server away) is undone by
        piece() and retried with backoff, reconnecting a broken connection; the receiving
        thread goes on, and the queue (queued(): its datagrams) counts what it cannot hold
        meanwhile. On a full disk the batches are split in halves (down to PIECE_MIN
        datagrams), so whatever space there is gets used (split=False: a replay, all or
        nothing, is not). Stopping, past the deadline: Unwritten.
        """
        pending = [batches]
        while pending:
            try:
                piece(pending[0])
            except self.transient as e:
                full = isinstance(e, StoreError) and e.full
                waiting = [b for p in pending for b in p]
                self.failed(e, datagrams(waiting) + queued(), full)
                if full and split and datagrams(pending[0]) > PIECE_MIN:
                    pending[0:1] = halves(pending[0])
                    continue
                if self.expired():
                    raise Unwritten(waiting, e) from None
                self.wait()
                continue
            pending.pop(0)
        self.ok()

    def failed(self, e: BaseException, waiting: int, full: bool = False) -> None:
        """A write failed (and was undone): one log line when an outage starts."""
        if self.down_since is not None:
            return
        self.down_since = time.monotonic()
        self.outages += 1
        what = "the disk is full" if full else "cannot write to the database"
        log.error(
            "%s (%s); %d datagrams waiting in the queue, retrying%s",
            what,
            " ".join(str(e).split()) or type(e).__name__,
            waiting,
            " in smaller pieces" if full else " with backoff",
        )

    def expired(self) -> bool:
        """Past the stop deadline: the caller gives up (Unwritten)."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def wait(self) -> None:
        """Sleep the backoff (never past the deadline), then reconnect a broken connection."""
        self.backoff.sleep(self.deadline)
        if self.store.broken:
            try:
                self.store.reconnect()
            except self.transient:
                pass  # still away: the next attempt fails and waits again

    def ok(self) -> None:
        """Everything waiting was written: one log line if an outage ended."""
        self.backoff.reset()
        if self.down_since is not None:
            log.warning(
                "the database is back after %.1f s; writing what waited",
                time.monotonic() - self.down_since,
            )
            self.down_since = None
