"""Where stored readings go besides the database: one interface, a sink per module.

The storing thread calls every sink once per committed batch with the JSON
objects of the readings it stored ({"template", "device", "seq", "received_at",
"fields"}), so a sink never sees a reading the database refused, or a duplicate.
A sink must not block the storing thread for long: one that talks to a network
(MQTT) hands the readings to a thread of its own through a bounded buffer.
jsonl.py: JSON lines to a file or stdout (--jsonl).
"""

from __future__ import annotations

from typing import Any, Protocol

Doc = dict[str, Any]


class Sink(Protocol):
    """What the collector needs of a sink."""

    name: str

    def write(self, docs: list[Doc]) -> None:
        """Take the readings of one committed batch; never raise for an outage: count it."""

    def tick(self, now: float) -> None:
        """Called about once a second by the storing thread, with or without readings."""

    def stats(self) -> dict[str, int]:
        """Counters for `precast stats` and /metrics (written, dropped, ...)."""

    def close(self) -> None:
        """Flush and close; called once, after the last write."""
