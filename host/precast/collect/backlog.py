"""The bounded queue between the collector's receiving and storing threads.

The receiving thread puts one batch of datagrams per socket drain; the storing
thread takes everything queued at once. Bounded in datagrams and in bytes (a
datagram's length plus DATAGRAM_OVERHEAD, about what Python holds it in), so a
stalled database costs counted drops, never unbounded memory, whatever the
datagrams' size: what does not fit is counted, not queued.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

Batch = tuple[float, list[tuple[bytes, Any]]]  # arrival time, [(datagram, source), ...]

DATAGRAM_OVERHEAD = 160  # bytes: the bytes objects of datagram and source, the pair, the slot
DEFAULT_QUEUE_BYTES = 64 << 20


class Backlog:
    """A queue of batches bounded in datagrams and bytes; what does not fit is counted."""

    def __init__(self, limit: int, limit_bytes: int = DEFAULT_QUEUE_BYTES) -> None:
        self.limit = limit
        self.limit_bytes = limit_bytes
        self.dropped = 0
        self.size = 0  # datagrams queued
        self.bytes = 0  # bytes queued, and taken but not yet released
        self.closed = False
        self._q: deque[Batch] = deque()
        self._cv = threading.Condition()

    def put(self, batch: Batch, force: bool = False) -> bool:
        """Queue a batch; False (and its datagrams counted as dropped) when it does not fit.

        force: queue it past the bounds (stopping, the socket's last contents: its buffer
        bounds them).
        """
        n = len(batch[1])
        nbytes = sum([len(x[0]) for x in batch[1]]) + n * DATAGRAM_OVERHEAD
        with self._cv:
            if not force and (self.size + n > self.limit or self.bytes + nbytes > self.limit_bytes):
                self.dropped += n
                return False
            self._q.append(batch)
            self.size += n
            self.bytes += nbytes
            self._cv.notify()
        return True

    def take(self, timeout: float) -> list[Batch]:
        """Every queued batch (waiting up to timeout for one).

        What is taken still counts against the bytes bound until release(): the
        storing thread's batches in hand are memory too.
        """
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout)
            out = list(self._q)
            self._q.clear()
            self.size = 0
        return out

    def release(self, batches: list[Batch]) -> None:
        """The batches taken are done with: their datagrams and bytes leave the bounds."""
        n = sum(len(b) for _, b in batches)
        nbytes = sum(len(x[0]) for _, b in batches for x in b) + n * DATAGRAM_OVERHEAD
        with self._cv:
            self.bytes -= nbytes

    def close(self) -> None:
        """No more batches: take() stops waiting."""
        with self._cv:
            self.closed = True
            self._cv.notify()
