"""The bounded queue between the collector's receiving and storing threads.

The receiving thread puts one batch of datagrams per socket drain; the storing
thread takes everything queued at once. Bounded, so a stalled database costs
counted drops, never unbounded memory: what does not fit is counted, not queued.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

Batch = tuple[float, list[tuple[bytes, Any]]]  # arrival time, [(datagram, source), ...]


class Backlog:
    """A bounded queue of batches, bounded in datagrams; what does not fit is counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self.size = 0
        self.closed = False
        self._q: deque[Batch] = deque()
        self._cv = threading.Condition()

    def put(self, batch: Batch) -> bool:
        """Queue a batch; False (and its datagrams counted as dropped) when it does not fit."""
        n = len(batch[1])
        with self._cv:
            if self.size + n > self.limit:
                self.dropped += n
                return False
            self._q.append(batch)
            self.size += n
            self._cv.notify()
        return True

    def take(self, timeout: float) -> list[Batch]:
        """Every queued batch (waiting up to timeout for one)."""
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout)
            out = list(self._q)
            self._q.clear()
            self.size = 0
        return out

    def close(self) -> None:
        """No more batches: take() stops waiting."""
        with self._cv:
            self.closed = True
            self._cv.notify()
