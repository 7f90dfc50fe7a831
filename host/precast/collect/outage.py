"""Riding out a database outage: retry a batch with backoff, log once, give up only at exit.

The storing thread hands each batch's transaction to StoreRetry.run(). When
it fails (the server restarted, the network cut, the disk full), the attempt
is undone, one error line says the database is unreachable and that batches
wait in the queue, and the attempt is retried with a backoff of 0.1 s
doubling to 5 s, reconnecting when the connection broke. Meanwhile the
receiving thread goes on filling the bounded queue (what overflows is
counted as queue drops). When an attempt succeeds again one line says how
long the outage lasted.

While stopping (SIGTERM) the retries go on until `deadline`; past it run()
raises Unwritten with the batches it could not write, for the caller to
spill (spill.py) with whatever is still queued.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("precast.collect")

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
DEFAULT_STOP_TIMEOUT = 10.0  # s a stopping collector waits for an unreachable database


class Unwritten(Exception):
    """The database stayed unreachable past the stop deadline; .batches were not written."""

    def __init__(self, batches: list[Any], cause: BaseException) -> None:
        super().__init__(f"{sum(len(b) for _, b in batches)} datagrams not written: {cause}")
        self.batches = batches
        self.cause = cause


class StoreRetry:
    """Retries of one store's transactions across outages (one instance per collector)."""

    def __init__(self, store: Any, transient: tuple[type[BaseException], ...]) -> None:
        self.store = store
        self.transient = transient
        self._deadline: float | None = None
        self.down_since: float | None = None
        self.outages = 0

    @property
    def deadline(self) -> float | None:
        """Monotonic time a stopping collector gives up at (the store's in-doubt checks too)."""
        return self._deadline

    @deadline.setter
    def deadline(self, at: float | None) -> None:
        self._deadline = at
        if hasattr(self.store, "deadline"):
            self.store.deadline = at

    def run(
        self, attempt: Callable[[], int], undo: Callable[[], object], pending: list[Any]
    ) -> int:
        """attempt() until it returns; undo() after each failure; Unwritten past the deadline."""
        delay = BACKOFF_FIRST
        while True:
            try:
                n = attempt()
            except self.transient as e:
                undo()
                now = time.monotonic()
                if self.down_since is None:
                    self.down_since = now
                    self.outages += 1
                    log.error(
                        "cannot write to the database (%s); batches wait in the queue, "
                        "retrying with backoff",
                        " ".join(str(e).split()) or type(e).__name__,
                    )
                if self.deadline is not None and now >= self.deadline:
                    raise Unwritten(pending, e) from None
                wait = delay
                if self.deadline is not None:
                    wait = max(0.0, min(wait, self.deadline - now))
                time.sleep(wait)
                delay = min(delay * 2, BACKOFF_MAX)
                if getattr(self.store, "broken", False):
                    try:
                        self.store.reconnect()
                    except self.transient:
                        pass
                continue
            if self.down_since is not None:
                log.warning(
                    "the database is back after %.1f s; writing what waited",
                    time.monotonic() - self.down_since,
                )
                self.down_since = None
            return n
