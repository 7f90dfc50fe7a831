"""A stored reading as a database row and as a JSON object, made fast.

The row is (device, seq, epoch, received_at, taken_at, source, <fields in
units>...), in the store's column order (taken_at: when the reading was taken,
received_at less a delayed frame's age; a live reading's is its received_at);
the JSON object is what `--jsonl` writes and the sinks publish: {"template",
"device", "seq", "received_at", "taken_at", "fields"}.

row_builder makes one row from one decoded frame (the per-frame path);
Readings holds a template's readings of a commit as one record array, made
from a batch's decoded records a column at a time (RecordBuilder), the same
values: PostgreSQL copies its bytes, SQLite and the sinks take its rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from precast.collect.utc import iso_of_us, taken_us
from precast.wire.codec import to_units
from precast.wire.header import DEVICE, FIRST_FIELD, SEQ
from precast.wire.layout import FieldSlot, Layout

Row = tuple[Any, ...]
RowBuilder = Callable[[tuple[Any, ...], int, str, str, str], Row]
FIELDS_AT = 6  # a row's first field: after device, seq, epoch, received_at, taken_at, source
TAKEN_AT = 4
SOURCE_AT = 5


def row_builder(layout: Layout) -> RowBuilder:
    """A function (unpacked body, epoch, received_at, taken_at, source) -> the readings row.

    Generated once per template so that each field costs one expression. A
    field in units is codec.to_units: raw * scale + offset, rounded to the
    scale's decimals k. With integers m = scale * 10**k and o = offset * 10**k
    that is (raw * m + o) / 10**k, one correctly rounded division: the same
    float, without round()'s cost. An f32 field carries units (no scale, no
    offset): to_units only names the float32 by its shortest decimal.
    """
    env: dict[str, Any] = {}
    parts = []
    for i, s in enumerate(layout.fields):
        f = s.field
        v = f"v[{FIRST_FIELD + i}]"
        ints = type(f.scale) is int and type(f.offset) is int
        if f.type == "f32":
            env[f"_u{i}"] = partial(to_units, s)
            parts.append(f"_u{i}({v})")
        elif ints and f.scale == 1 and f.offset == 0:
            parts.append(v)
        elif ints or not s.digits:
            parts.append(f"({v} * {f.scale!r} + {f.offset!r})")
        else:
            d = 10**s.digits
            m = Decimal(repr(f.scale)) * d
            o = Decimal(repr(f.offset)) * d
            assert m == int(m) and o == int(o), (f, s.digits)
            parts.append(f"(({v} * {int(m)} + {int(o)}) / {d})")
    head = f"v[{DEVICE}], v[{SEQ}]"
    src = f"def row(v, e, t, k, s):\n    return ({head}, e, t, k, s, {', '.join(parts)})\n"
    exec(compile(src, f"<row {layout.template.name}>", "exec"), env)
    fn: RowBuilder = env["row"]
    return fn


def reading_doc(template: int, names: list[str], row: Row) -> dict[str, Any]:
    """The JSON object of a stored row: non-finite floats (an f32 NaN) become null."""
    fields = {
        n: (None if isinstance(x, float) and not math.isfinite(x) else x)
        for n, x in zip(names, row[FIELDS_AT:], strict=True)
    }
    return {
        "template": template,
        "device": row[0],
        "seq": row[1],
        "received_at": row[3],
        "taken_at": row[TAKEN_AT],
        "fields": fields,
    }


# ---- a commit's readings of one template as one record array ---------------------------------

_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_EXACT = 2**53  # integers below it convert to a float exactly


def exact(slot: FieldSlot) -> bool:
    """Whether a field's value in units is an integer (an INTEGER column), else a float."""
    f = slot.field
    return f.type != "f32" and type(f.scale) is int and type(f.offset) is int


def reading_dtype(kinds: Sequence[str]) -> np.dtype[np.void]:
    """Readings' records: the fixed columns (received_at and taken_at as unix µs, source an
    index into the sources), then each field in units as kinds says ("i8", "f8", or "O")."""
    return np.dtype(
        [
            ("device", "<i8"),
            ("seq", "<i8"),
            ("epoch", "<i8"),
            ("at", "<i8"),
            ("taken", "<i8"),
            ("source", "<i4"),
            *[(f"f{i}", k) for i, k in enumerate(kinds)],
        ]
    )


class Readings(Sequence[Row]):
    """A template's readings of one commit: a record each, and the sources they name.

    The stores read it as they want it: PostgreSQL's COPY straight from the
    records (store/postgres.py), SQLite's executemany and the sinks as the row
    tuples rows.row_builder makes (tuples(): one numpy call makes them all).
    """

    def __init__(self, records: npt.NDArray[np.void], sources: list[str]) -> None:
        self.records = records
        self.sources = sources
        self._tuples: list[Row] | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[Row], kinds: Sequence[str]) -> Readings:
        """Readings of row tuples (received_at, taken_at ISO strings, as utc_iso writes them)."""
        rec = np.zeros(len(rows), dtype=reading_dtype(kinds))
        sources: dict[str, int] = {}
        times: dict[str, int] = {}

        def us(text: str) -> int:
            t = times.get(text)
            if t is None:
                d = datetime.fromisoformat(text.replace("Z", "+00:00"))
                t = times[text] = (d - _UNIX) // timedelta(microseconds=1)
            return t

        for j, r in enumerate(rows):
            src = sources.setdefault(r[SOURCE_AT], len(sources))
            rec[j] = (r[0], r[1], r[2], us(r[3]), us(r[TAKEN_AT]), src, *r[FIELDS_AT:])
        return cls(rec, list(sources))

    @classmethod
    def concat(cls, parts: Sequence[Readings]) -> Readings:
        """Several Readings of one template as one, in order."""
        if len(parts) == 1:
            return parts[0]
        recs, sources = [], list[str]()
        for p in parts:
            r = p.records.copy()
            r["source"] += len(sources)
            recs.append(r)
            sources += p.sources
        return cls(np.concatenate(recs), sources)

    def tuples(self) -> list[Row]:
        """The rows (device, seq, epoch, received_at, taken_at, source, fields...) as
        row_builder's."""
        if self._tuples is None:
            rec = self.records
            cols: list[Iterable[Any]] = [rec[n].tolist() for n in rec.dtype.names or ()]
            cols[3] = _iso(rec["at"])
            cols[TAKEN_AT] = _iso(rec["taken"])
            cols[SOURCE_AT] = _spread(self.sources, rec["source"])
            self._tuples = list(zip(*cols, strict=True))
        return self._tuples

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, i: int) -> Row: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Row]: ...
    def __getitem__(self, i: int | slice) -> Row | Sequence[Row]:
        return self.tuples()[i]

    def __iter__(self) -> Iterator[Row]:
        return iter(self.tuples())


def _iso(us: npt.NDArray[np.int64]) -> Iterable[str]:
    """A column of unix µs as utc.iso_of_us's text, each distinct time formatted once (a
    batch's readings mostly share one arrival time)."""
    times, where = np.unique(us, return_inverse=True)
    return _spread([iso_of_us(t) for t in times.tolist()], where.reshape(-1))


def _spread(values: list[Any], index: npt.NDArray[np.integer]) -> Iterable[Any]:
    """values[i] for each i of index (one value: repeated, no array made)."""
    if len(values) == 1:
        return itertools.repeat(values[0], len(index))
    return np.array(values, dtype=object)[index].tolist()  # type: ignore[no-any-return]


Column = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]


def _column(slot: FieldSlot) -> tuple[str, Column]:
    """A field's kind and its raw column -> units, the same values row_builder's give.

    Integer arithmetic stays in int64 while it cannot overflow, and a division
    of integers below 2**53 is the one correctly rounded float, as Python's; a
    field whose values could leave those bounds is converted value by value.
    """
    f = slot.field
    top = 1 << 32  # |raw| of any integer field type is below it
    if f.type == "f32":
        units = partial(to_units, slot)
        return "f8", lambda raw: np.array([units(x) for x in raw.tolist()], dtype="f8")
    s, o = f.scale, f.offset
    ints = type(s) is int and type(o) is int
    if ints:
        if abs(s) * top + abs(o) >= 2**63:
            return "O", lambda raw: np.array([x * s + o for x in raw.tolist()], dtype=object)
        return "i8", lambda raw: raw.astype(np.int64) * s + o
    if not slot.digits:
        if type(s) is int and abs(s) * top >= _EXACT:
            return "f8", lambda raw: np.array([x * s + o for x in raw.tolist()], dtype="f8")
        if type(s) is int:
            return "f8", lambda raw: (raw.astype(np.int64) * s).astype(np.float64) + o
        return "f8", lambda raw: raw.astype(np.float64) * s + o
    d = 10**slot.digits
    m, b = int(Decimal(repr(s)) * d), int(Decimal(repr(o)) * d)
    if abs(m) * top + abs(b) >= _EXACT:
        return "f8", lambda raw: np.array([(x * m + b) / d for x in raw.tolist()], dtype="f8")
    return "f8", lambda raw: (raw.astype(np.int64) * m + b) / d


class RecordBuilder:
    """A template's decoded bodies (wire/batch.py's records) -> Readings' records."""

    def __init__(self, layout: Layout) -> None:
        made = [_column(s) for s in layout.fields]
        self.kinds = [k for k, _ in made]
        self.columns = [c for _, c in made]
        self.raw = [f"field_{s.name}" for s in layout.fields]
        self.dtype = reading_dtype(self.kinds)

    def __call__(
        self,
        body: npt.NDArray[np.void],
        epoch: npt.NDArray[np.int64],
        at: int | npt.NDArray[np.int64],
        source: int | npt.NDArray[np.intp],
    ) -> npt.NDArray[np.void]:
        """The records of the bodies, stored under epoch, at (unix µs), from source; taken
        at `at` less a delayed body's age."""
        rec = np.empty(len(body), dtype=self.dtype)
        rec["device"] = body["device"]
        rec["seq"] = body["seq"]
        rec["epoch"] = epoch
        rec["at"] = at
        names = body.dtype.names or ()
        rec["taken"] = taken_us(rec["at"], body["age"].astype(np.int64)) if "age" in names else at
        rec["source"] = source
        for i, (raw, col) in enumerate(zip(self.raw, self.columns, strict=True)):
            rec[f"f{i}"] = col(body[raw])
        return rec
