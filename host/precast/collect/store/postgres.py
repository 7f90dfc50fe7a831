"""The collector's PostgreSQL store: the SQLite store's schema and methods, shared by collectors.

`precast collect --db postgresql://USER[:PASS]@HOST[:PORT]/DBNAME` (libpq URIs,
`postgres://` too, and the PG* environment variables). Tables go into the
database's default schema (`public`) unless the URL's
`options=-csearch_path=...` names another:

    readings_<template id>(device bigint, seq bigint, epoch bigint,
                           received_at timestamptz, source text, <field>...)
        fields bigint when exact (integer scale and offset), else double precision;
        unique (device, epoch, seq): a reading is stored once, however many
        collectors received it; an index (device, received_at) for the query a
        dashboard makes (one device's readings over time)
    readings        a view over every readings_<id>: device, template, seq, epoch,
                    received_at, source, fields (jsonb)
    templates(id, name, tbl, columns jsonb, fields jsonb)
        fields: each field's name, column, type, unit, scale and offset (the SQLite
        store's field_info), so a reader needs no template files
    devices(device, version, <the tracker's Device fields>)
        seen (the window bitmap) and cand_data (a held far jump's frame) are bytea,
        restart boolean, times are unix seconds (double precision); a column the
        tracker gains is added, old rows getting the value the SQLite migration gives
    rejects(reason, count), counters(name, count)
    recent_rejects(collector, at, reason, source, device, template, bytes)
        the latest refusals each collector saw (`precast stats` shows the newest)
    requests(id, device, action, requested_at)
        operator requests (`precast device reset`); the collector that takes one
        applies it to the device's row in the same transaction (version + 1), so
        every collector sharing the database sees the reset

Several collectors may write one database. The devices table is the truth
about every device's books, a collector's tracker a cache of it: each batch
is one transaction that first locks the rows of the devices it touches
(SELECT ... FOR UPDATE, in device order so two collectors never deadlock;
a device nobody has seen yet gets a placeholder row, version 0, so that it
can be locked too), reloads into the tracker every device whose version
moved on since this collector last wrote it, lets the tracker classify the
batch, then writes the readings (COPY, binary, into a temporary table, then
INSERT ... ON CONFLICT DO NOTHING into readings_<id>), the devices with
version + 1, and rejects and counters as increments, and commits. Two
collectors that hear the same frame thus serialize on its device: the
second sees the first's books and counts a duplicate, exactly as one
collector would have. If the transaction fails, the touched devices are
forgotten (reloaded next time) and the caller retries the whole batch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import psycopg.errors
from psycopg import sql

from precast.collect.dburl import is_postgres, redact
from precast.collect.store import Build, Row, StoreError
from precast.collect.store.sqlite import (
    _ADDED_COLUMNS,
    FIXED_COLUMNS,
    RECENT_COLUMNS,
    field_columns,
    field_info,
    table_name,
)
from precast.collect.tracker import Device
from precast.wire.layout import Layout

log = logging.getLogger("precast.store.postgres")

SCHEMA_VERSION = 1
SCHEMA_COMMENT = f"precast collector devices, schema {SCHEMA_VERSION}"
# pg_advisory_xact_lock key for schema changes ('prcs' in ASCII): two collectors that start
# together must not both CREATE the same table.
DDL_LOCK = 0x70726373
COMMIT_PREFIX = "commit:"  # counters rows a running collector keeps (removed at its exit)
_PG_TYPES = {"INTEGER": "bigint", "REAL": "double precision"}
_JSON_CHUNK = 50  # jsonb_build_object takes at most 100 arguments
RECENT_KEPT = 200  # refusals kept in recent_rejects, over all collectors
# The value a devices row from before a column existed gets (as the SQLite migration's).
_OLD_ROW = {
    "auth": "''",
    "seen_window": "0",
    "cand_seq": "-1",
    "cand_at": "0",
    "cand_data": "''::bytea",
    "cand_source": "''",
    "restart": "false",
    "source": "''",
    "conflicts": "0",
    "rival_seq": "-1",
    "rival_at": "0",
    "rival_source": "''",
}
assert set(_OLD_ROW) == {c for c, _ in _ADDED_COLUMNS}


def _pg_error(e: BaseException) -> str:
    """psycopg's message on one line (libpq's carry host and user, never the password)."""
    return " ".join(str(e).split()) or type(e).__name__


def _connect_kwargs(url: str) -> dict[str, Any]:
    """Defaults that the URL and the PG* environment variables override."""
    kw: dict[str, Any] = {}
    if "application_name" not in url and "PGAPPNAME" not in os.environ:
        kw["application_name"] = "precast"
    if "connect_timeout" not in url and "PGCONNECT_TIMEOUT" not in os.environ:
        kw["connect_timeout"] = 5
    return kw


def connect(url: str) -> psycopg.Connection[Any]:
    """A connection, or a StoreError naming the (redacted) URL and the server's reason."""
    try:
        return psycopg.connect(url, **_connect_kwargs(url))
    except psycopg.Error as e:
        raise StoreError(f"{redact(url)}: cannot connect: {_pg_error(e)}") from None


# ---- the devices table, from the tracker's Device ------------------------------------------


def device_fields() -> list[tuple[str, str]]:
    """(column, PostgreSQL type) per field of the tracker's Device, in order.

    Derived from the dataclass, so that a field the tracker gains becomes a
    column (added to an existing table by ensure_templates).
    """
    out = []
    for f in dataclasses.fields(Device):
        ann = str(f.type).replace(" ", "")
        if f.name == "seen" or ann.startswith("bytes"):
            typ = "bytea"  # seen: a bitmap of window + 1 bits
        elif ann.startswith("bool"):
            typ = "boolean"
        elif ann.startswith("int"):
            typ = "bigint"
        elif ann.startswith("float"):
            typ = "double precision"
        else:
            typ = "text"
        out.append((f.name, typ))
    return out


def _seen_bytes(seen: int) -> bytes:
    return seen.to_bytes((seen.bit_length() + 7) // 8, "big")


def _device_from_row(names: Sequence[str], row: Sequence[Any]) -> Device:
    kw = dict(zip(names, row, strict=True))
    kw["seen"] = int.from_bytes(kw.get("seen") or b"", "big")
    if kw.get("cand_data") is not None:
        kw["cand_data"] = bytes(kw["cand_data"])
    for f in dataclasses.fields(Device):
        if kw.get(f.name) is None and f.default is not dataclasses.MISSING:
            kw[f.name] = f.default  # NULL: a column added after the row was written
    return Device(**kw)


def _q(name: str) -> sql.Identifier:
    return sql.Identifier(name)


class PostgresStore:
    """The collector's writer into PostgreSQL; the methods of the SQLite store, plus transact()."""

    # psycopg's errors are an outage or a conflict with another collector: retried.
    transient: tuple[type[BaseException], ...] = (psycopg.Error, StoreError)
    books_shared = True  # other collectors may write the same database

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        self.dev_cols = device_fields()
        self.dev_names = [c for c, _ in self.dev_cols]
        self.layouts: dict[int, Layout] = {}
        self.columns: dict[int, list[tuple[str, str, str]]] = {}
        self.versions: dict[int, int] = {}  # device -> version this collector last saw
        self.base_rejects: dict[str, int] = {}  # totals as last read or written
        self.base_counters: dict[str, int] = {}
        self._packers: dict[tuple[str, ...], _Packer] = {}
        # Names this collector's commit count in the counters table while it runs.
        self.token = f"{COMMIT_PREFIX}{uuid.uuid4().hex}"
        self.commits = 0
        self.deadline: float | None = None  # monotonic; set by a stopping collector
        self._locked: list[int] = []
        self._pending: tuple[dict[int, int], dict[str, int], dict[str, int]] = ({}, {}, {})
        self.conn = connect(url)
        try:
            self._create_schema()
        except psycopg.Error as e:
            self.conn.close()
            raise StoreError(f"{self.where}: cannot create the schema: {_pg_error(e)}") from None

    # -- connection

    def close(self) -> None:
        try:
            if not self.broken:
                with self.conn.transaction():
                    self.conn.execute("DELETE FROM counters WHERE name = %s", (self.token,))
        except psycopg.Error:
            pass
        try:
            self.conn.close()
        except psycopg.Error:
            pass

    def reconnect(self) -> None:
        """A new connection after an outage (raises psycopg.Error while the server is away)."""
        self.close()
        self.conn = psycopg.connect(self.url, **_connect_kwargs(self.url))
        self._staging()
        # Whatever this collector cached may have moved on while it was away.
        self.versions.clear()

    @property
    def broken(self) -> bool:
        return bool(self.conn.closed or self.conn.broken)

    # -- schema

    def _create_schema(self) -> None:
        c = self.conn
        with c.transaction():
            c.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
            have = c.execute(
                "SELECT obj_description(to_regclass('devices'), 'pg_class')"
            ).fetchone()
            comment = have[0] if have else None
            exists = c.execute("SELECT to_regclass('devices') IS NOT NULL").fetchone()
            if exists and exists[0] and comment != SCHEMA_COMMENT:
                raise StoreError(
                    f"{self.where}: a devices table that is not a precast collector's "
                    f"(schema {SCHEMA_VERSION} expected)"
                )
            cols = sql.SQL(", ").join(
                sql.SQL("{} {}").format(_q(n), sql.SQL(t))
                for n, t in self.dev_cols
                if n != "device"
            )
            c.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS devices (device bigint PRIMARY KEY, "
                    "version bigint NOT NULL DEFAULT 0, {})"
                ).format(cols)
            )
            present = {
                r[0]
                for r in c.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'devices'::regclass "
                    "AND attnum > 0 AND NOT attisdropped"
                )
            }
            for n, t in self.dev_cols:
                if n not in present:
                    old = _OLD_ROW.get(n)
                    default = sql.SQL(f" NOT NULL DEFAULT {old}" if old else "")
                    c.execute(
                        sql.SQL("ALTER TABLE devices ADD COLUMN {} {}{}").format(
                            _q(n), sql.SQL(t), default
                        )
                    )
            c.execute(sql.SQL("COMMENT ON TABLE devices IS {}").format(sql.Literal(SCHEMA_COMMENT)))
            c.execute(
                "CREATE TABLE IF NOT EXISTS templates (id integer PRIMARY KEY, "
                "name text NOT NULL, tbl text NOT NULL, columns jsonb NOT NULL, fields jsonb)"
            )
            c.execute("ALTER TABLE templates ADD COLUMN IF NOT EXISTS fields jsonb")
            c.execute(
                "CREATE TABLE IF NOT EXISTS recent_rejects (collector text NOT NULL, "
                "at text, reason text, source text, device bigint, template bigint, bytes bigint)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS requests (id bigserial PRIMARY KEY, "
                "device bigint NOT NULL, action text NOT NULL, "
                "requested_at double precision NOT NULL)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS rejects "
                "(reason text PRIMARY KEY, count bigint NOT NULL)"
            )
            c.execute(
                "CREATE TABLE IF NOT EXISTS counters (name text PRIMARY KEY, count bigint NOT NULL)"
            )
        self._staging()

    def _staging(self) -> None:
        """This connection's temporary tables for COPY (emptied at each commit)."""
        c = self.conn
        with c.transaction():
            c.execute(
                "CREATE TEMP TABLE IF NOT EXISTS stage_devices "
                "(LIKE devices INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            for tid in self.layouts:
                self._stage_table(tid)

    def _stage_table(self, tid: int) -> None:
        stage = _q(f"stage_{tid}")
        self.conn.execute(sql.SQL("DROP TABLE IF EXISTS pg_temp.{}").format(stage))
        self.conn.execute(
            sql.SQL("CREATE TEMP TABLE {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                stage, _q(table_name(tid))
            )
        )

    def ensure_templates(self, layouts: Iterable[Layout]) -> None:
        """A readings table per template (new field columns added), and the readings view."""
        c = self.conn
        layouts = list(layouts)
        try:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
                for lay in layouts:
                    t = lay.template
                    tbl = table_name(t.id)
                    cols = field_columns(lay)
                    have = {
                        r[0]
                        for r in c.execute(
                            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                            "AND attnum > 0 AND NOT attisdropped",
                            (tbl,),
                        )
                    }
                    if not have:
                        defs = sql.SQL(", ").join(
                            sql.SQL("{} {}").format(_q(col), sql.SQL(_PG_TYPES[typ]))
                            for col, _, typ in cols
                        )
                        c.execute(
                            sql.SQL(
                                "CREATE TABLE {} (device bigint NOT NULL, seq bigint NOT NULL, "
                                "epoch bigint NOT NULL, received_at timestamptz NOT NULL, "
                                "source text, {})"
                            ).format(_q(tbl), defs)
                        )
                        c.execute(
                            sql.SQL("CREATE UNIQUE INDEX {} ON {} (device, epoch, seq)").format(
                                _q(f"{tbl}_key"), _q(tbl)
                            )
                        )
                        c.execute(
                            sql.SQL("CREATE INDEX {} ON {} (device, received_at)").format(
                                _q(f"{tbl}_time"), _q(tbl)
                            )
                        )
                    else:
                        for col, _, typ in cols:
                            if col not in have:
                                c.execute(
                                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                                        _q(tbl), _q(col), sql.SQL(_PG_TYPES[typ])
                                    )
                                )
                    c.execute(
                        "INSERT INTO templates (id, name, tbl, columns, fields) "
                        "VALUES (%s, %s, %s, %s, %s) "
                        "ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, tbl = EXCLUDED.tbl, "
                        "columns = EXCLUDED.columns, fields = EXCLUDED.fields",
                        (
                            t.id,
                            t.name,
                            tbl,
                            json.dumps([[col, name] for col, name, _ in cols]),
                            json.dumps(field_info(lay)),
                        ),
                    )
                    self.layouts[t.id] = lay
                    self.columns[t.id] = cols
                    self._stage_table(t.id)
                self._create_view()
        except psycopg.Error as e:
            raise StoreError(
                f"{self.where}: cannot create the readings tables: {_pg_error(e)}"
            ) from None

    def _create_view(self) -> None:
        c = self.conn
        selects = []
        for tid, tbl, columns in c.execute("SELECT id, tbl, columns FROM templates ORDER BY id"):
            pairs = [sql.SQL("{}, {}").format(sql.Literal(name), _q(col)) for col, name in columns]
            chunks: list[sql.Composable] = [
                sql.SQL("jsonb_build_object({})").format(
                    sql.SQL(", ").join(pairs[i : i + _JSON_CHUNK])
                )
                for i in range(0, len(pairs), _JSON_CHUNK)
            ] or [sql.SQL("'{}'::jsonb")]
            selects.append(
                sql.SQL(
                    "SELECT device, {} AS template, seq, epoch, received_at, source, "
                    "{} AS fields FROM {}"
                ).format(sql.Literal(int(tid)), sql.SQL(" || ").join(chunks), _q(tbl))
            )
        c.execute("DROP VIEW IF EXISTS readings")
        if selects:
            c.execute(sql.SQL("CREATE VIEW readings AS ") + sql.SQL(" UNION ALL ").join(selects))

    # -- reading state

    def load_devices(self) -> list[Device]:
        """Every device's books as the database holds them now."""
        cols = sql.SQL(", ").join(map(_q, self.dev_names))
        with self.conn.transaction():
            rows = self.conn.execute(
                sql.SQL("SELECT version, {} FROM devices WHERE version > 0").format(cols)
            ).fetchall()
        out = []
        for version, *rest in rows:
            d = _device_from_row(self.dev_names, rest)
            self.versions[d.device] = version
            out.append(d)
        return out

    def load_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(rejects by reason, counters by name) as the database holds them now."""
        with self.conn.transaction():
            rejects = dict(self.conn.execute("SELECT reason, count FROM rejects").fetchall())
            counters = dict(
                self.conn.execute(
                    "SELECT name, count FROM counters WHERE name NOT LIKE %s",
                    (COMMIT_PREFIX + "%",),
                ).fetchall()
            )
        self.base_rejects = dict(rejects)
        self.base_counters = dict(counters)
        return rejects, counters

    # -- the latest refusals, operator requests

    def save_recent(self, recent: Sequence[Mapping[str, Any]]) -> None:
        """Replace this collector's latest refusals (newest first) that `precast stats` shows;
        those of all collectors beyond the newest RECENT_KEPT go."""
        c = self.conn
        try:
            with c.transaction():
                c.execute("DELETE FROM recent_rejects WHERE collector = %s", (self.token,))
                if recent:
                    with c.cursor().copy(
                        sql.SQL("COPY recent_rejects (collector, {}) FROM STDIN").format(
                            sql.SQL(", ").join(map(_q, RECENT_COLUMNS))
                        )
                    ) as cp:
                        for r in recent:
                            cp.write_row([self.token, *(r[k] for k in RECENT_COLUMNS)])
                c.execute(
                    "DELETE FROM recent_rejects WHERE ctid NOT IN (SELECT ctid FROM "
                    "recent_rejects ORDER BY at DESC LIMIT %s)",
                    (RECENT_KEPT,),
                )
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {_pg_error(e)}") from e

    def take_requests(self) -> list[tuple[int, str]]:
        """Operator requests not yet applied, (device, action), oldest first; they are deleted.

        A reset is applied to the device's row here, in the same transaction (its version
        moves on, so every collector reloads the books); the caller resets its cache too.
        """
        c = self.conn
        try:
            with c.transaction():
                got = c.execute(
                    "DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY id "
                    "FOR UPDATE SKIP LOCKED) RETURNING id, device, action"
                ).fetchall()
                got.sort()  # oldest first; the rows locked in device order (as transact's)
                for dev in sorted({d for _, d, a in got if a == "reset"}):
                    c.execute(
                        "UPDATE devices SET restart = true, cand_seq = -1, cand_at = 0, "
                        "cand_data = ''::bytea, cand_source = '', version = version + 1 "
                        "WHERE device = %s AND version > 0",
                        (dev,),
                    )
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {_pg_error(e)}") from e
        return [(int(dev), str(action)) for _, dev, action in got]

    # -- writing

    def write(
        self,
        rows: Mapping[int, Sequence[Row]],
        devices: Iterable[Device],
        rejects: Mapping[str, int],
        counters: Mapping[str, int],
    ) -> None:
        """One transaction, no locking: the SQLite store's write(), for a lone collector.

        A failure raises StoreError (the interface's contract); transact() raises
        psycopg's own errors, which the collector's retry tells apart.
        """
        try:
            with self.conn.transaction():
                self._locked = []
                self._write(rows, list(devices), self._deltas(rejects, self.base_rejects), counters)
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {_pg_error(e)}") from e
        self._commit_cache()

    def commit(self, touched: Collection[int], build: Build) -> int:
        """One batch as one transaction, with the books of the touched devices locked.

        build(fresh) gets the devices another collector moved on since this one
        last saw them (None: no books yet), must load them into its tracker,
        classify the batch and return the Commit to write. Returns the readings stored.
        On an error the transaction is rolled back, the touched devices are
        forgotten (so the next attempt reloads them) and the error is raised.
        """
        ids = sorted(set(touched))
        self.commits += 1
        committing = False
        try:
            with self.conn.transaction():
                self._locked = ids
                fresh = self._lock(ids)
                c = build(fresh)
                stored = self._write(c.rows, c.devices, c.rejects, c.counters)
                # This collector's commit count, written with the batch: if the connection
                # dies during COMMIT, it tells whether the batch is in (see _in_doubt).
                self.conn.execute(
                    "INSERT INTO counters (name, count) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET count = EXCLUDED.count",
                    (self.token, self.commits),
                )
                committing = True
        except psycopg.OperationalError:
            if committing and self._in_doubt(self.commits):
                self._commit_cache()
                return stored
            for d in ids:
                self.versions.pop(d, None)
            raise
        except BaseException:
            for d in ids:
                self.versions.pop(d, None)
            raise
        self._commit_cache()
        return stored

    def _in_doubt(self, n: int) -> bool:
        """After a connection lost during COMMIT: reconnect until it can tell; True if it was.

        Retried with backoff until `deadline` (a stopping collector's); past it the
        batch counts as not written (retried or spilled by the caller): its readings
        are then never stored twice (the unique key), though counted as duplicates.
        """
        delay = 0.1
        log.warning("the connection was lost during a commit; finding out whether it was made")
        while True:
            try:
                self.reconnect()
                with self.conn.transaction():
                    row = self.conn.execute(
                        "SELECT count FROM counters WHERE name = %s", (self.token,)
                    ).fetchone()
                made = row is not None and row[0] == n
                log.warning("the commit in doubt was %s", "made" if made else "not made")
                return made
            except psycopg.Error:
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _commit_cache(self) -> None:
        """After a commit: the versions written and the totals the database now holds."""
        versions, rejects, counters = self._pending
        self.versions.update(versions)
        base = self.base_rejects
        for k, n in rejects.items():
            base[k] = base.get(k, 0) + n
        self.base_counters.update(counters)

    def _lock(self, ids: list[int]) -> dict[int, Device | None]:
        c = self.conn
        if not ids:
            return {}
        # A row for every device, so that even a first reading is serialized by a row lock.
        c.execute(
            "INSERT INTO devices (device, version) SELECT d, 0 FROM unnest(%s::bigint[]) AS d "
            "ORDER BY d ON CONFLICT (device) DO NOTHING",
            (ids,),
        )
        cols = sql.SQL(", ").join(map(_q, self.dev_names))
        cur = c.execute(
            sql.SQL(
                "SELECT version, {} FROM devices WHERE device = ANY(%s) ORDER BY device FOR UPDATE"
            ).format(cols),
            (ids,),
        )
        fresh: dict[int, Device | None] = {}
        for version, *rest in cur:
            dev = rest[0]
            if self.versions.get(dev, 0) == version:
                continue  # this collector's cache is the truth
            fresh[dev] = _device_from_row(self.dev_names, rest) if version > 0 else None
            self.versions[dev] = version
        return fresh

    def _write(
        self,
        rows: Mapping[int, Sequence[Row]],
        devices: Iterable[Device],
        rejects: Mapping[str, int],
        counters: Mapping[str, int],
    ) -> int:
        """Readings, books, reject counts added and counter totals; the readings stored."""
        c = self.conn
        stored = 0
        for tid, batch in rows.items():
            if not batch:
                continue
            stored += self._copy_readings(tid, batch)
        devs = list(devices)
        if devs:
            with c.cursor().copy(
                sql.SQL("COPY stage_devices ({}) FROM STDIN (FORMAT BINARY)").format(
                    sql.SQL(", ").join(map(_q, self.dev_names))
                )
            ) as cp:
                cp.set_types([t for _, t in self.dev_cols])
                for d in devs:
                    cp.write_row(
                        [
                            _seen_bytes(d.seen) if n == "seen" else getattr(d, n)
                            for n in self.dev_names
                        ]
                    )
            sets = sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(_q(n), _q(n)) for n in self.dev_names[1:]
            )
            cols = sql.SQL(", ").join(map(_q, self.dev_names))
            cur = c.execute(
                sql.SQL(
                    "INSERT INTO devices (version, {cols}) SELECT 1, {cols} FROM stage_devices "
                    "ON CONFLICT (device) DO UPDATE SET version = devices.version + 1, {sets} "
                    "RETURNING device, version"
                ).format(cols=cols, sets=sets)
            )
            new_versions = dict(cur.fetchall())
        else:
            new_versions = {}
        if self._locked:
            # Placeholders of devices that got no books (every frame refused) go again.
            c.execute("DELETE FROM devices WHERE device = ANY(%s) AND version = 0", (self._locked,))
        drej = {k: n for k, n in rejects.items() if n}
        if drej:
            c.execute(
                "INSERT INTO rejects (reason, count) SELECT * FROM unnest(%s::text[], "
                "%s::bigint[]) ON CONFLICT (reason) DO UPDATE SET count = rejects.count + "
                "EXCLUDED.count",
                (list(drej), list(drej.values())),
            )
        dcnt = self._deltas(counters, self.base_counters)
        if dcnt:
            c.execute(
                "INSERT INTO counters (name, count) SELECT * FROM unnest(%s::text[], "
                "%s::bigint[]) ON CONFLICT (name) DO UPDATE SET count = counters.count + "
                "EXCLUDED.count",
                (list(dcnt), list(dcnt.values())),
            )
        # The cache moves on only once this commits (_commit_cache).
        self._pending = (new_versions, drej, dict(counters))
        return stored

    @staticmethod
    def _deltas(totals: Mapping[str, int], base: Mapping[str, int]) -> dict[str, int]:
        return {k: n - base.get(k, 0) for k, n in totals.items() if n != base.get(k, 0)}

    def _copy_readings(self, tid: int, batch: Sequence[Row]) -> int:
        """COPY a template's readings in; those already stored (by their key) are skipped.

        The books make a reading already stored a duplicate, so the fast path copies
        straight into readings_<id> under a savepoint. Only if the unique key
        (device, epoch, seq) still finds one stored (books reset by hand, a bug) does
        it go again through a temporary table and INSERT ... ON CONFLICT DO NOTHING.
        """
        c = self.conn
        cols = self.columns[tid]
        names = [*FIXED_COLUMNS, *(col for col, _, _ in cols)]
        ident = sql.SQL(", ").join(map(_q, names))
        try:
            with c.transaction():
                self._copy(table_name(tid), ident, cols, batch)
            return len(batch)
        except psycopg.errors.UniqueViolation:
            pass
        self._copy(f"stage_{tid}", ident, cols, batch)
        cur = c.execute(
            sql.SQL(
                # No conflict target: any unique index will do (a TimescaleDB hypertable's
                # key must include received_at, README).
                "INSERT INTO {} ({cols}) SELECT {cols} FROM {} ON CONFLICT DO NOTHING"
            ).format(_q(table_name(tid)), _q(f"stage_{tid}"), cols=ident)
        )
        n = cur.rowcount
        log.warning(
            "template %d: %d of %d readings were stored already (not stored again)",
            tid,
            len(batch) - n,
            len(batch),
        )
        return n

    def _copy(
        self,
        table: str,
        ident: sql.Composable,
        cols: list[tuple[str, str, str]],
        batch: Sequence[Row],
    ) -> None:
        """Binary COPY of rows into table, packed here in one buffer (_Packer)."""
        key = tuple(typ for _, _, typ in cols)
        packer = self._packers.get(key)
        if packer is None:
            packer = self._packers[key] = _Packer(key)
        try:
            data = packer.pack(batch)
        except (struct.error, TypeError, ValueError):
            data = None  # a value the packer cannot take: psycopg's dumpers decide
        with self.conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(_q(table), ident)
        ) as cp:
            if data is not None:
                cp.write(data)
                return
            cp.set_types(["int8", "int8", "int8", "timestamptz", "text", *packer.types])
            for r in batch:
                cp.write_row((r[0], r[1], r[2], _parse_utc(r[3]), *r[4:]))


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class _Packer:
    """Rows of one field layout as PostgreSQL's binary COPY format, with struct.

    psycopg's write_row dumps each value through its adapters; here one generated
    function packs a whole row (bigint device, seq, epoch; timestamptz received_at
    as microseconds since 2000; text source, cached; then bigint or float8 fields),
    a few times faster. Values out of range raise struct.error: the caller then
    lets psycopg dump the batch.
    """

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.types = ["int8" if k == "INTEGER" else "float8" for k in kinds]
        head = struct.Struct(">hiqiqiqiq")
        tail = struct.Struct(">" + "".join("iq" if k == "INTEGER" else "id" for k in kinds))
        n = 5 + len(kinds)
        args = ", ".join(f"8, r[{5 + i}]" for i in range(len(kinds)))
        src = (
            "def pack(r, ts, src):\n"
            f"    return H({n}, 8, r[0], 8, r[1], 8, r[2], 8, ts) + src + T({args})\n"
        )
        env: dict[str, Any] = {"H": head.pack, "T": tail.pack}
        exec(compile(src, "<copy row>", "exec"), env)
        self.row: Callable[[Row, int, bytes], bytes] = env["pack"]
        self.times: dict[str, int] = {}
        self.sources: dict[str, bytes] = {}

    def pack(self, batch: Sequence[Row]) -> bytes:
        times, sources, row = self.times, self.sources, self.row
        if len(times) > 4096:
            times.clear()
        if len(sources) > 4096:
            sources.clear()
        out = [_COPY_SIGNATURE]
        for r in batch:
            ts = times.get(r[3])
            if ts is None:
                ts = times[r[3]] = (_parse_utc(r[3]) - _PG_EPOCH) // _MICROSECOND
            sb = sources.get(r[4])
            if sb is None:
                raw = r[4].encode()
                sb = sources[r[4]] = struct.pack(">i", len(raw)) + raw
            out.append(row(r, ts, sb))
        out.append(_COPY_TRAILER)
        return b"".join(out)


def _parse_utc(at: str) -> datetime:
    """The collector's received_at (UTC ISO 8601 with Z) as an aware datetime."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(UTC)


def read_stats(url: str, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    """Everything `precast stats` shows, read-only: devices, rejects, counters, template names.

    limit and offset page the devices (by id); devices_total counts them all.
    """
    conn = connect(url)
    names = [c for c, _ in device_fields()]
    try:
        conn.read_only = True
        with conn.transaction():
            if not conn.execute("SELECT to_regclass('devices') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
                raise StoreError(
                    f"{redact(url)}: no precast tables (start `precast collect --db URL`)"
                )
            cur = conn.execute(
                sql.SQL(
                    "SELECT {} FROM devices WHERE version > 0 ORDER BY device LIMIT %s OFFSET %s"
                ).format(sql.SQL(", ").join(map(_q, names))),
                (limit, offset),
            )
            devices = []
            for r in cur:
                d = dict(zip(names, r, strict=True))
                for k in ("seen", "cand_data"):
                    if isinstance(d.get(k), memoryview):
                        d[k] = bytes(d[k])
                devices.append(d)
            total = conn.execute("SELECT count(*) FROM devices WHERE version > 0").fetchone()
            rejects = dict(conn.execute("SELECT reason, count FROM rejects ORDER BY reason"))
            counters = dict(
                conn.execute(
                    "SELECT name, count FROM counters WHERE name NOT LIKE %s ORDER BY name",
                    (COMMIT_PREFIX + "%",),
                )
            )
            tnames = dict(conn.execute("SELECT id, name FROM templates"))
            recent: list[dict[str, Any]] = []
            if conn.execute("SELECT to_regclass('recent_rejects') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
                cur = conn.execute(
                    sql.SQL("SELECT {} FROM recent_rejects ORDER BY at DESC").format(
                        sql.SQL(", ").join(map(_q, RECENT_COLUMNS))
                    )
                )
                recent = [dict(zip(RECENT_COLUMNS, r, strict=True)) for r in cur]
    except psycopg.Error as e:
        raise StoreError(
            f"{redact(url)}: not a precast collector database: {_pg_error(e)}"
        ) from None
    finally:
        conn.close()
    return {
        "devices": devices,
        "devices_total": int(total[0]) if total else 0,
        "rejects": rejects,
        "counters": counters,
        "templates": tnames,
        "recent_rejects": recent,
    }


def request_reset(url: str, device: int) -> int:
    """Ask the collectors of this database to reset a device's books; the request's id."""
    conn = connect(url)
    try:
        with conn.transaction():
            if not conn.execute("SELECT to_regclass('requests') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
                raise StoreError(
                    f"{redact(url)}: no precast tables (start `precast collect --db URL`)"
                )
            known = conn.execute(
                "SELECT 1 FROM devices WHERE device = %s AND version > 0", (device,)
            ).fetchone()
            if known is None:
                raise StoreError(f"{redact(url)}: no device {device} in the database")
            row = conn.execute(
                "INSERT INTO requests (device, action, requested_at) VALUES (%s, 'reset', %s) "
                "RETURNING id",
                (device, time.time()),
            ).fetchone()
    except psycopg.Error as e:
        raise StoreError(
            f"{redact(url)}: not a precast collector database: {_pg_error(e)}"
        ) from None
    finally:
        conn.close()
    return int(row[0]) if row else 0


def request_pending(url: str, request: int) -> bool:
    """True while the request is still waiting for a collector to apply it."""
    try:
        conn = connect(url)
    except StoreError:
        return True
    try:
        with conn.transaction():
            row = conn.execute("SELECT 1 FROM requests WHERE id = %s", (request,)).fetchone()
    except psycopg.Error:
        return True
    finally:
        conn.close()
    return row is not None


__all__ = [
    "PostgresStore",
    "StoreError",
    "is_postgres",
    "read_stats",
    "redact",
    "request_pending",
    "request_reset",
]
