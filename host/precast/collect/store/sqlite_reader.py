"""Reading a collector's SQLite database (the Reader contract), read-only.

The file is opened read-only (`mode=ro`): in WAL mode a reader never blocks the
collector, nor it the reader. received_at is stored as UTC ISO 8601 text of a
fixed width, so a time range compares as text. Readings tables are only
appended to: rowid order is arrival order, and `follow` resumes after the last
rowid it read. Only an operator's request (`request_reset`) writes, on a
connection of its own.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from precast.collect.store import (
    Stats,
    StoredReading,
    StoreError,
    TemplateInfo,
    quote,
    template_info,
)
from precast.collect.store.schema import DEVICE_NAMES, device_from_row
from precast.collect.store.sqlite import RECENT_COLUMNS, REQUESTS_TABLE
from precast.collect.tracker import Device
from precast.collect.utc import parse_iso, utc_iso

_at = parse_iso


class SqliteReader:
    """A read-only view of a collector's SQLite database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(str(path).removeprefix("sqlite://"))
        self._taken_cols: dict[str, str] = {}  # table -> its time-of-taking column
        if not self.path.is_file():
            raise StoreError(
                f"{self.path}: no such database (start `precast collect --db {self.path}`)"
            )
        try:
            self.conn = sqlite3.connect(
                self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=5
            )
            self.conn.execute("SELECT id FROM templates LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: not a precast collector database: {e}") from None

    def _all(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(query, params).fetchall()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None

    def close(self) -> None:
        self.conn.close()

    def templates(self) -> dict[int, TemplateInfo]:
        have = {r[1] for r in self._all("PRAGMA table_info(templates)")}
        extra = "fields" if "fields" in have else "NULL"  # recorded before units were
        out = {}
        for tid, name, tbl, columns, fields in self._all(
            f"SELECT id, name, tbl, columns, {extra} FROM templates ORDER BY id"
        ):
            t = template_info(tid, name, tbl, json.loads(columns), fields and json.loads(fields))
            out[t.id] = t
        return out

    def devices(self, limit: int | None = None, offset: int = 0) -> list[Device]:
        have = [r[1] for r in self._all("PRAGMA table_info(devices)")]
        names = [n for n in DEVICE_NAMES if n in have]  # an older database lacks some
        rows = self._all(
            f"SELECT {', '.join(map(quote, names))} FROM devices ORDER BY device LIMIT ? OFFSET ?",
            (-1 if limit is None else limit, offset),
        )
        return [device_from_row(names, r) for r in rows]

    def stats(self, limit: int | None = None, offset: int = 0) -> Stats:
        self.conn.execute("BEGIN")  # one snapshot for every table
        try:
            recent: list[dict[str, Any]] = []
            if self._all("SELECT 1 FROM sqlite_master WHERE name = 'recent_rejects'"):
                rows = self._all(
                    f"SELECT {', '.join(RECENT_COLUMNS)} FROM recent_rejects ORDER BY rowid"
                )
                recent = [dict(zip(RECENT_COLUMNS, r, strict=True)) for r in rows]
            return Stats(
                devices=self.devices(limit, offset),
                devices_total=int(self._all("SELECT count(*) FROM devices")[0][0]),
                rejects=dict(self._all("SELECT reason, count FROM rejects ORDER BY reason")),
                counters=dict(self._all("SELECT name, count FROM counters ORDER BY name")),
                templates=dict(self._all("SELECT id, name FROM templates")),
                recent_rejects=recent,
            )
        finally:
            self.conn.execute("COMMIT")

    def _select(
        self, t: TemplateInfo, where: str = "", params: Sequence[Any] = (), order: str = "rowid"
    ) -> list[StoredReading]:
        cols = "".join(f", {quote(f.column)}" for f in t.fields)
        rows = self._all(
            f"SELECT device, seq, epoch, received_at, {self._taken(t.table)}, source{cols} "
            f"FROM {quote(t.table)}{' WHERE ' + where if where else ''} ORDER BY {order}",
            params,
        )
        return [
            StoredReading(r[0], r[1], r[2], _at(r[3]), _at(r[4]), r[5], tuple(r[6:])) for r in rows
        ]

    def _taken(self, table: str) -> str:
        """A reading's time of taking: taken_at (NULL in rows from before delayed frames),
        or received_at in a table no collector has opened since (a reader never migrates)."""
        col = self._taken_cols.get(table)
        if col is None:
            have = {r[1] for r in self._all(f"PRAGMA table_info({quote(table)})")}
            col = "coalesce(taken_at, received_at)" if "taken_at" in have else "received_at"
            self._taken_cols[table] = col
        return col

    def readings(
        self,
        template: TemplateInfo,
        devices: Sequence[int] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredReading]:
        where: list[str] = []
        params: list[Any] = []
        if since is not None:
            where.append("received_at >= ?")
            params.append(utc_iso(since))
        if until is not None:
            where.append("received_at <= ?")
            params.append(utc_iso(until))
        if devices is not None:
            where.append(f"device IN ({', '.join('?' * len(devices))})")
            params += devices
        return self._select(template, " AND ".join(where), params, "received_at, rowid")

    def latest(self, template: TemplateInfo) -> list[StoredReading]:
        tbl = quote(template.table)
        return self._select(template, f"rowid IN (SELECT max(rowid) FROM {tbl} GROUP BY device)")

    def follow(
        self, template: TemplateInfo, mark: object | None, since: float
    ) -> tuple[list[StoredReading], object]:
        tbl = quote(template.table)
        top = self._all(f"SELECT max(rowid) FROM {tbl}")[0][0]
        if top is None:
            return [], mark
        if isinstance(mark, int):
            start = mark + 1
        else:  # the first look: the first rowid received at or after since, by bisection

            def first_at(rowid: int) -> str:
                r = self._all(
                    f"SELECT received_at FROM {tbl} WHERE rowid >= ? ORDER BY rowid LIMIT 1",
                    (rowid,),
                )
                return str(r[0][0]) if r else "~"

            start = bisect.bisect_left(range(int(top) + 1), utc_iso(since), key=first_at)
        got = self._select(template, "rowid >= ?", (start,))
        return got, max(int(top), start - 1)

    def count(self, device: int | None = None) -> int:
        where, params = ("", ()) if device is None else (" WHERE device = ?", (device,))
        return sum(
            int(self._all(f"SELECT count(*) FROM {quote(t.table)}{where}", params)[0][0])
            for t in self.templates().values()
        )

    def request_reset(self, device: int) -> int:
        try:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(REQUESTS_TABLE)
                known = conn.execute("SELECT 1 FROM devices WHERE device = ?", (device,))
                if known.fetchone() is None:
                    conn.execute("ROLLBACK")
                    raise StoreError(f"{self.path}: no device {device} in the database")
                cur = conn.execute(
                    "INSERT INTO requests (device, action, requested_at) VALUES (?, 'reset', ?)",
                    (device, time.time()),
                )
                conn.execute("COMMIT")
                return int(cur.lastrowid or 0)
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from None

    def request_pending(self, request: int) -> bool:
        try:
            row = self.conn.execute("SELECT 1 FROM requests WHERE id = ?", (request,)).fetchone()
        except sqlite3.Error:
            return True  # no requests table yet: the collector has not opened it since
        return row is not None
