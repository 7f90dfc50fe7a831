"""Reading a collector's PostgreSQL database (the Reader contract).

One connection in autocommit, so no transaction stays open between reads
and no row a collector writes is ever waited for. Readings are read a device
at a time through each table's (device, received_at) index: a LATERAL
subquery per device of the devices table (or of the devices asked for), so
a time range never scans a whole table.

`follow` cannot resume after a rowid as SQLite's reader does: rows carry no
order of commit. It reads again from FOLLOW_LAG seconds before the latest
arrival it saw and drops the readings it already returned, by their key
(device, epoch, seq). A reading committed more than FOLLOW_LAG after it
arrived (a batch retried through an outage) is missed by it; the books
(stats) count it all the same.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from precast.collect.dburl import redact
from precast.collect.store import Stats, StoredReading, StoreError, TemplateInfo, template_info
from precast.collect.store.postgres import COMMIT_PREFIX, connect, pg_error
from precast.collect.store.schema import DEVICE_NAMES, device_from_row
from precast.collect.store.sqlite import RECENT_COLUMNS
from precast.collect.tracker import Device

FOLLOW_LAG = 5.0  # s: how late after its arrival a reading may be committed and still followed


def _q(name: str) -> sql.Identifier:
    return sql.Identifier(name)


class PostgresReader:
    """A view of a collector's PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        self._taken_cols: dict[str, str] = {}  # table -> its time-of-taking column
        self.conn = connect(url)
        self.conn.autocommit = True
        try:
            row = self.conn.execute("SELECT to_regclass('templates') IS NOT NULL").fetchone()
        except psycopg.Error as e:
            self.conn.close()
            raise StoreError(f"{self.where}: {pg_error(e)}") from None
        if not (row and row[0]):
            self.conn.close()
            raise StoreError(f"{self.where}: no precast tables (start `precast collect --db URL`)")

    def _all(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self.conn.execute(query, params).fetchall()  # type: ignore[arg-type]
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {pg_error(e)}") from None

    def close(self) -> None:
        self.conn.close()

    def templates(self) -> dict[int, TemplateInfo]:
        out = {}
        for tid, name, tbl, columns, fields in self._all(
            "SELECT id, name, tbl, columns, fields FROM templates ORDER BY id"
        ):
            t = template_info(tid, name, tbl, columns, fields)
            out[t.id] = t
        return out

    def devices(self, limit: int | None = None, offset: int = 0) -> list[Device]:
        have = {
            r[0]
            for r in self._all(
                "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass('devices') "
                "AND attnum > 0 AND NOT attisdropped"
            )
        }
        names = [n for n in DEVICE_NAMES if n in have]  # an older database lacks some
        rows = self._all(
            sql.SQL(
                "SELECT {} FROM devices WHERE version > 0 ORDER BY device LIMIT %s OFFSET %s"
            ).format(sql.SQL(", ").join(map(_q, names))),
            (limit, offset),
        )
        return [device_from_row(names, r) for r in rows]

    def stats(self, limit: int | None = None, offset: int = 0) -> Stats:
        try:
            with self.conn.transaction():  # one snapshot for every table
                self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                recent: list[dict[str, Any]] = []
                if self._all("SELECT to_regclass('recent_rejects') IS NOT NULL")[0][0]:
                    rows = self._all(
                        sql.SQL("SELECT {} FROM recent_rejects ORDER BY at DESC").format(
                            sql.SQL(", ").join(map(_q, RECENT_COLUMNS))
                        )
                    )
                    recent = [dict(zip(RECENT_COLUMNS, r, strict=True)) for r in rows]
                return Stats(
                    devices=self.devices(limit, offset),
                    devices_total=int(
                        self._all("SELECT count(*) FROM devices WHERE version > 0")[0][0]
                    ),
                    rejects=dict(self._all("SELECT reason, count FROM rejects ORDER BY reason")),
                    counters=dict(
                        self._all(
                            "SELECT name, count FROM counters WHERE name NOT LIKE %s ORDER BY name",
                            (COMMIT_PREFIX + "%",),
                        )
                    ),
                    templates=dict(self._all("SELECT id, name FROM templates")),
                    recent_rejects=recent,
                )
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {pg_error(e)}") from None

    def readings(
        self,
        template: TemplateInfo,
        devices: Sequence[int] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredReading]:
        where = [sql.SQL("r.device = d.device")]
        params: list[Any] = []
        if since is not None:
            where.append(sql.SQL("r.received_at >= to_timestamp(%s)"))
            params.append(since)
        if until is not None:
            where.append(sql.SQL("r.received_at <= to_timestamp(%s)"))
            params.append(until)
        if devices is None:
            ids = sql.SQL("(SELECT device FROM devices WHERE version > 0)")
        else:
            ids = sql.SQL("(SELECT unnest(%s::bigint[]) AS device)")
            params.insert(0, list(devices))
        return self._select(
            template,
            sql.SQL(
                "{ids} AS d CROSS JOIN LATERAL (SELECT * FROM {tbl} AS r WHERE {where}) AS r "
                "ORDER BY r.received_at, r.device, r.epoch, r.seq"
            ).format(ids=ids, tbl=_q(template.table), where=sql.SQL(" AND ").join(where)),
            params,
        )

    def latest(self, template: TemplateInfo) -> list[StoredReading]:
        return self._select(
            template,
            sql.SQL(
                "devices AS d CROSS JOIN LATERAL (SELECT * FROM {} AS r WHERE r.device = d.device "
                "ORDER BY r.received_at DESC LIMIT 1) AS r WHERE d.version > 0"
            ).format(_q(template.table)),
        )

    def _select(
        self, template: TemplateInfo, rest: sql.Composable, params: Sequence[Any] = ()
    ) -> list[StoredReading]:
        """SELECT a template's readings (table alias r) FROM rest."""
        cols = sql.SQL("").join(sql.SQL(", r.{}").format(_q(f.column)) for f in template.fields)
        rows = self._all(
            sql.SQL(
                "SELECT r.device, r.seq, r.epoch, extract(epoch FROM r.received_at)::float8, "
                "extract(epoch FROM {})::float8, r.source{} FROM {}"
            ).format(sql.SQL(self._taken(template.table)), cols, rest),
            params,
        )
        return [StoredReading(r[0], r[1], r[2], r[3], r[4], r[5], tuple(r[6:])) for r in rows]

    def _taken(self, table: str) -> str:
        """A reading's time of taking: taken_at (NULL in rows from before delayed frames),
        or received_at in a table no collector has opened since (a reader never migrates)."""
        col = self._taken_cols.get(table)
        if col is None:
            have = self._all(
                "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                "AND attname = 'taken_at' AND NOT attisdropped",
                (table,),
            )
            col = "coalesce(r.taken_at, r.received_at)" if have else "r.received_at"
            self._taken_cols[table] = col
        return col

    def follow(
        self, template: TemplateInfo, mark: object | None, since: float
    ) -> tuple[list[StoredReading], object]:
        if isinstance(mark, tuple):
            last, seen = mark
            got = self.readings(template, since=last - FOLLOW_LAG)
        else:
            last, seen = since, frozenset()
            got = self.readings(template, since=since)
        top = max((r.at for r in got), default=last)
        new = [r for r in got if (r.device, r.epoch, r.seq) not in seen]
        # Every reading at or after top - FOLLOW_LAG was read this time: the next call reads
        # from there and drops these.
        keep = frozenset((r.device, r.epoch, r.seq) for r in got if r.at >= top - FOLLOW_LAG)
        return new, (top, keep)

    def count(self, device: int | None = None) -> int:
        where = sql.SQL("" if device is None else " WHERE device = %s")
        params = () if device is None else (device,)
        return sum(
            int(
                self._all(sql.SQL("SELECT count(*) FROM {}{}").format(_q(t.table), where), params)[
                    0
                ][0]
            )
            for t in self.templates().values()
        )

    def request_reset(self, device: int) -> int:
        try:
            with self.conn.transaction():
                known = self.conn.execute(
                    "SELECT 1 FROM devices WHERE device = %s AND version > 0", (device,)
                ).fetchone()
                if known is None:
                    raise StoreError(f"{self.where}: no device {device} in the database")
                row = self.conn.execute(
                    "INSERT INTO requests (device, action, requested_at) "
                    "VALUES (%s, 'reset', %s) RETURNING id",
                    (device, time.time()),
                ).fetchone()
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {pg_error(e)}") from None
        return int(row[0]) if row else 0

    def request_pending(self, request: int) -> bool:
        try:
            row = self.conn.execute("SELECT 1 FROM requests WHERE id = %s", (request,)).fetchone()
        except psycopg.Error:
            return True
        return row is not None
