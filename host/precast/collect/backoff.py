"""Backoff: the delays between retries, doubling from a first one to a ceiling.

Every retry on the host takes its delays from here: the storing thread's
through a database outage (outage.py), PostgreSQL's while a commit is in
doubt (store/postgres.py). The MQTT sink's reconnects are paho's own
(reconnect_delay_set).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays first, 2*first, ... up to most; reset() after a success."""

    first: float
    most: float
    delay: float = field(init=False)

    def __post_init__(self) -> None:
        self.delay = self.first

    def __iter__(self) -> Backoff:
        return self

    def __next__(self) -> float:
        """The delay to wait now; the next one doubles (up to most)."""
        d = self.delay
        self.delay = min(d * 2, self.most)
        return d

    def reset(self) -> None:
        """Back to the first delay (the retried thing worked)."""
        self.delay = self.first

    def sleep(self, deadline: float | None = None) -> None:
        """Sleep the next delay, never past deadline (monotonic)."""
        wait = next(self)
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        time.sleep(wait)
