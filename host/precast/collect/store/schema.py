"""The books' schema, written once: the devices table's columns, from the tracker's Device.

A column per field of tracker.Device, in its order; its SQL type comes from the
field's Python type through a backend's Dialect. `seen` (an int of window + 1
bits) is stored as big-endian bytes. A field with a default is NOT NULL DEFAULT
the value a row written before the column existed gets: the field's default,
or OLD_ROW's where that differs. So each backend's CREATE TABLE, its migration
(a column the tracker gains is added to an existing table) and its rows all
come from the dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints

from precast.collect.tracker import Device

# What a row from before a column existed gets, where it is not the field's default:
# its authentication is unknown, not "crc".
OLD_ROW: dict[str, Any] = {"auth": ""}


@dataclass(frozen=True)
class Column:
    """One column of the devices table: name, Python type, and the old rows' value."""

    name: str
    type: type  # int, float, str, bytes or bool
    old: Any = None  # None: no default, nullable (the fields every Device is made with)


@dataclass(frozen=True)
class Dialect:
    """How a backend spells the column types and their default values."""

    types: Mapping[type, str]
    true: str
    false: str
    blob: Callable[[bytes], str]

    def literal(self, v: Any) -> str:
        """A default value as an SQL literal."""
        if isinstance(v, bool):
            return self.true if v else self.false
        if isinstance(v, bytes):
            return self.blob(v)
        if isinstance(v, str):
            return "'" + v.replace("'", "''") + "'"
        return repr(v)

    def declarations(self) -> list[tuple[str, str]]:
        """(column, declaration) per column in order; the first (device) is the key."""
        out = []
        for i, c in enumerate(DEVICE_COLUMNS):
            decl = self.types[c.type]
            if i == 0:
                decl += " PRIMARY KEY"
            elif c.old is not None:
                decl += f" NOT NULL DEFAULT {self.literal(c.old)}"
            out.append((c.name, decl))
        return out


SQLITE = Dialect(
    {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB", bool: "INTEGER"},
    "1",
    "0",
    lambda b: f"x'{b.hex()}'",
)
POSTGRES = Dialect(
    {int: "bigint", float: "double precision", str: "text", bytes: "bytea", bool: "boolean"},
    "true",
    "false",
    lambda b: f"'\\x{b.hex()}'::bytea",
)


def _columns() -> tuple[Column, ...]:
    hints = get_type_hints(Device)
    out = []
    for f in dataclasses.fields(Device):
        typ = bytes if f.name == "seen" else hints[f.name]
        old = f.default if f.default is not dataclasses.MISSING else None
        out.append(Column(f.name, typ, OLD_ROW.get(f.name, old)))
    return tuple(out)


DEVICE_COLUMNS = _columns()
DEVICE_NAMES = tuple(c.name for c in DEVICE_COLUMNS)


def _bitmap(seen: int) -> bytes:
    return seen.to_bytes((seen.bit_length() + 7) // 8, "big")


def _values_function() -> Callable[[Device], tuple[Any, ...]]:
    """device_values, generated from DEVICE_NAMES: one attribute read per column, as fast
    as a tuple written out by hand (a loop over the names, or attrgetter, took about twice
    as long a device; a commit writes every device its batch touched)."""
    items = ", ".join("_bitmap(d.seen)" if n == "seen" else f"d.{n}" for n in DEVICE_NAMES)
    env: dict[str, Any] = {"_bitmap": _bitmap}
    exec(compile(f"def values(d):\n    return ({items},)\n", "<device values>", "exec"), env)
    values: Callable[[Device], tuple[Any, ...]] = env["values"]
    return values


device_values = _values_function()
device_values.__doc__ = "A Device as the devices table's values, in DEVICE_NAMES order."


def device_from_row(names: Sequence[str], row: Sequence[Any]) -> Device:
    """A Device from a row of the named columns; a missing or NULL one gets the old rows' value."""
    kw = dict(zip(names, row, strict=True))
    for c in DEVICE_COLUMNS:
        v = kw.get(c.name)
        if v is None:
            kw[c.name] = v = c.old
        if c.type is bytes and v is not None:
            kw[c.name] = bytes(v)  # PostgreSQL's bytea arrives as a memoryview
        elif c.type is bool:
            kw[c.name] = bool(v)  # SQLite's 0/1
    kw["seen"] = int.from_bytes(kw["seen"] or b"", "big")
    return Device(**{n: kw[n] for n in DEVICE_NAMES})
