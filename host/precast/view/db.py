"""Reading a collector's database for plot and top: templates with units, readings, counters.

A reader needs no template file: the `templates` table holds each field's
column, type, unit and scale (store.py's `fields` column). A database
written before that column existed still reads, without units.

The SQLite database is opened read-only, so a running collector is never
blocked (WAL mode). A PostgreSQL database is for the collector's store
backend to open; only SQLite paths are read here so far.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from precast.collect.dburl import display_db
from precast.errors import PrecastError


class DatabaseError(PrecastError):
    """A database that cannot be read as a precast collector's."""


@dataclass(frozen=True)
class FieldInfo:
    """One field as the collector recorded it: its column and what its numbers mean."""

    name: str
    column: str
    type: str = ""
    unit: str = ""
    scale: float | int = 1
    offset: float | int = 0

    @property
    def label(self) -> str:
        return f"{self.name} [{self.unit}]" if self.unit else self.name


@dataclass(frozen=True)
class TemplateInfo:
    """A template as the collector recorded it: id, name, readings table, fields."""

    id: int
    name: str
    table: str
    fields: tuple[FieldInfo, ...]


def connect(db: str | Path) -> sqlite3.Connection:
    """A read-only connection to a collector's SQLite database; a clear error when it is not."""
    text = str(db)
    if "://" in text and not text.startswith("sqlite://"):
        raise DatabaseError(
            f"{display_db(text)}: only SQLite databases (a file path) are read so far"
        )
    p = Path(text.removeprefix("sqlite://"))
    if not p.is_file():
        raise DatabaseError(f"{p}: no such database (start `precast collect --db {p}`)")
    try:
        conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True, timeout=5)
        conn.execute("SELECT id FROM templates LIMIT 1").fetchall()
    except sqlite3.Error as e:
        raise DatabaseError(f"{p}: not a precast collector database: {e}") from None
    return conn


def templates(conn: sqlite3.Connection) -> dict[int, TemplateInfo]:
    """Every template the collector has stored readings for, by id."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(templates)")}
    extra = ", fields" if "fields" in have else ", NULL"
    out: dict[int, TemplateInfo] = {}
    for tid, name, tbl, columns, fields in conn.execute(
        f"SELECT id, name, tbl, columns{extra} FROM templates ORDER BY id"
    ):
        if fields:
            infos = tuple(
                FieldInfo(
                    name=f["name"],
                    column=f["column"],
                    type=f.get("type", ""),
                    unit=f.get("unit", ""),
                    scale=f.get("scale", 1),
                    offset=f.get("offset", 0),
                )
                for f in json.loads(fields)
            )
        else:  # recorded before units were: names and columns only
            infos = tuple(FieldInfo(name=n, column=c) for c, n in json.loads(columns))
        out[int(tid)] = TemplateInfo(int(tid), str(name), str(tbl), infos)
    return out
