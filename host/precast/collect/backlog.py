"""The bounded queue between the collector's receiving and storing threads.

The receiving thread puts one batch of datagrams per socket drain; the storing
thread takes everything queued at once. Bounded in datagrams and in bytes (a
datagram's length plus DATAGRAM_OVERHEAD, about what Python holds it in; an
Arrivals batch its arrays' bytes), so a stalled database costs counted drops,
never unbounded memory, whatever the datagrams' size: what does not fit is
counted, not queued.

A batch's datagrams are either (datagram, source) pairs, or Arrivals: the
datagrams as the array receiver (receiver.py) left them, one row each of a
uint8 array, with their lengths and their sources' raw sockaddr bytes. Both
iterate as (bytes, source) pairs and slice, so what is not on the hot path
(the spill, pieces of a batch) treats them alike; collect/ingest.py checks
and tracks Arrivals as arrays.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

DATAGRAM_OVERHEAD = 160  # bytes: the bytes objects of datagram and source, the pair, the slot
DEFAULT_QUEUE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Arrivals:
    """Datagrams received as arrays: datagram i is rows[i, :lens[i]], from names[i]."""

    rows: npt.NDArray[np.uint8]  # (n, width): a row per datagram, stale bytes past its length
    lens: npt.NDArray[np.uint32]
    names: npt.NDArray[np.uint8]  # (n, k): the source's sockaddr (family, port, address)

    def __len__(self) -> int:
        return len(self.lens)

    def __getitem__(self, i: slice) -> Arrivals:
        return Arrivals(self.rows[i], self.lens[i], self.names[i])

    def __iter__(self) -> Iterator[tuple[bytes, Any]]:
        rows, names = self.rows, self.names
        for i, n in enumerate(self.lens.tolist()):
            yield rows[i, :n].tobytes(), names[i].tobytes()

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.lens.nbytes + self.names.nbytes)


Datagrams = list[tuple[bytes, Any]] | Arrivals
Batch = tuple[float, Datagrams]  # arrival time, [(datagram, source), ...] or Arrivals


def _nbytes(datagrams: Datagrams) -> int:
    if isinstance(datagrams, Arrivals):
        return datagrams.nbytes
    return sum([len(x[0]) for x in datagrams]) + len(datagrams) * DATAGRAM_OVERHEAD


def datagrams(batches: list[Batch]) -> int:
    """How many datagrams the batches hold."""
    return sum(len(b) for _, b in batches)


def halves(batches: list[Batch]) -> list[list[Batch]]:
    """batches as two pieces of about half the datagrams each (a batch split if need be)."""
    half = datagrams(batches) // 2
    first: list[Batch] = []
    n = 0
    for i, (ts, b) in enumerate(batches):
        if n + len(b) <= half:
            first.append((ts, b))
            n += len(b)
            continue
        cut = half - n
        if cut:
            first.append((ts, b[:cut]))
        return [first, [(ts, b[cut:]), *batches[i + 1 :]]]
    return [first, []]


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
        nbytes = _nbytes(batch[1])
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
        nbytes = sum(_nbytes(b) for _, b in batches)
        with self._cv:
            self.bytes -= nbytes

    def close(self) -> None:
        """No more batches: take() stops waiting."""
        with self._cv:
            self.closed = True
            self._cv.notify()
