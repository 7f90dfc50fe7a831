"""Where stored readings go besides the database: one interface, a sink per module.

The storing thread calls every sink once per committed batch with the JSON
objects of the readings it stored ({"template", "device", "seq", "received_at",
"fields"}), so a sink never sees a reading the database refused, or a duplicate.
A sink must not block the storing thread for long: one that talks to a network
(MQTT) hands the readings to a thread of its own through a bounded buffer.
jsonl.py: JSON lines to a file or stdout (--jsonl).

What a sink has yet to take is kept in the database: each commit writes, in
the same transaction as its readings, the counter named by the sink's
`position` (the readings committed for it and not yet taken: written or
published, or counted dropped) and an entry in the sink's outbox naming those
readings (outbox.py). A clean stop leaves the counter at 0 and no entry;
after a SIGKILL the next start reads the entries' readings back and writes
them to the sink again (at least once); what no entry names (a database from
before the outbox, or a row deleted since) goes to the sink's missed(), which
counts it dropped and says so, so that a sink is never silently short of the
database.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, overload

from precast.collect.rows import Row, reading_doc
from precast.wire.layout import Layout

Doc = dict[str, Any]


class Stored(Sequence[Doc]):
    """One committed batch as the sinks get it: the JSON objects, made only when first read.

    A sequence of docs for a sink that wants them all (jsonl); the raw rows by template
    (`rows`, with each template's field `names`) for one that makes its own later, off the
    storing thread (mqtt), so that building a dict per reading is not the storing thread's.
    """

    def __init__(self, rows: Mapping[int, Sequence[Row]], names: Mapping[int, list[str]]):
        self.rows = rows
        self.names = names
        self._n = sum(map(len, rows.values()))
        self._docs: list[Doc] | None = None

    def docs(self) -> list[Doc]:
        if self._docs is None:
            names = self.names
            self._docs = [
                reading_doc(tid, names[tid], row) for tid, rs in self.rows.items() for row in rs
            ]
        return self._docs

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> Doc: ...
    @overload
    def __getitem__(self, i: slice) -> list[Doc]: ...
    def __getitem__(self, i: int | slice) -> Doc | list[Doc]:
        return self.docs()[i]

    def __iter__(self) -> Iterator[Doc]:
        return iter(self.docs())


class Sink(Protocol):
    """What the collector needs of a sink; it knows none by name."""

    name: str
    position: str  # its counter of readings committed and not yet taken

    def write(self, docs: Stored) -> None:
        """Take the readings of one committed batch; never raise for an outage."""

    def tick(self, now: float) -> None:
        """Called about once a second by the storing thread, with or without readings."""

    def set_layouts(self, layouts: Mapping[int, Layout]) -> None:
        """The templates after a reload (SIGHUP)."""

    def stats(self) -> dict[str, int]:
        """This run's counts (written, dropped, ...), for tests and status."""

    def counters(self) -> dict[str, int]:
        """This run's counts the database keeps, by their name in its counters table
        (`precast stats`, /metrics): e.g. jsonl_drops, mqtt_published."""

    def taken(self) -> int:
        """Readings taken this run: written or published, or counted dropped."""

    def missed(self, n: int) -> None:
        """n readings committed before this run that the sink may never have taken (the
        collector was killed): count them dropped and say so."""

    def close(self) -> None:
        """Flush and close; called once, after the last write."""
