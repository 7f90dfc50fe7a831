"""Time as the collector stores it: received_at, UTC ISO 8601 with microseconds and a Z.

    2026-01-02T03:04:05.678901Z

One function each way, for every reader and writer of that text: utc_iso
(unix seconds to it) and parse_iso (it, or any ISO 8601 time with a zone, to
unix seconds); unix_us and iso_of_us for the whole microseconds the record
arrays and PostgreSQL's COPY carry.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any


def unix_us(ts: float) -> int:
    """Unix time in whole µs (the µs floored), as the stores and the record arrays hold it."""
    sec = int(ts // 1)
    return sec * 1_000_000 + int((ts - sec) * 1e6)


def taken_us(arrival_us: Any, age_ms: Any) -> Any:
    """When a reading was taken, in unix µs: its arrival less a delayed frame's age (ms).
    Ints or numpy arrays of them alike (the record arrays' column at a time)."""
    return arrival_us - age_ms * 1000


def iso_of_us(us: int) -> str:
    """A time in whole µs as UTC ISO 8601 with microseconds: 2026-01-02T03:04:05.678901Z."""
    sec, frac = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:06d}Z"


def utc_iso(ts: float) -> str:
    """Unix time as UTC ISO 8601 with microseconds: 2026-01-02T03:04:05.678901Z."""
    return iso_of_us(unix_us(ts))


def parse_iso(text: str) -> float:
    """A received_at value (2026-01-02T03:04:05.678901Z) as unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
