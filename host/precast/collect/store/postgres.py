"""The collector's PostgreSQL store: the SQLite store's schema and methods, shared by collectors.

`precast collect --db postgresql://USER[:PASS]@HOST[:PORT]/DBNAME` (libpq URIs,
`postgres://` too, and the PG* environment variables). Tables go into the
database's default schema (`public`) unless the URL's
`options=-csearch_path=...` names another:

    readings_<template id>(device bigint, seq bigint, epoch bigint,
                           received_at timestamptz, taken_at timestamptz, source text,
                           <field>...)
        taken_at: received_at less a delayed frame's age; a table from before delayed
        frames gains the column, NULL in its old rows (read coalesce(taken_at,
        received_at), as the view and the readers do): no rewrite of a big table, and
        a collector not yet upgraded beside this one still writes (its rows NULL)
        fields bigint when exact (integer scale and offset), else double precision;
        unique (device, epoch, seq): a reading is stored once, however many
        collectors received it; an index (device, received_at) for the query a
        dashboard makes (one device's readings over time)
    readings        a view over every readings_<id>: device, template, seq, epoch,
                    received_at, taken_at, source, fields (jsonb)
    templates(id, name, tbl, columns jsonb, fields jsonb)
        fields: each field's name, column, type, unit, scale and offset (the SQLite
        store's field_info), so a reader needs no template files
    devices(device, version, <the tracker's Device fields>)
        seen (the window bitmap) and cand_data (a held far jump's frame) are bytea,
        restart boolean, times are unix seconds (double precision); a column the
        tracker gains is added, old rows getting schema.py's value (as in SQLite)
    rejects(reason, count), counters(name, count)
    recent_rejects(collector, at, reason, source, device, template, bytes)
        the latest refusals each collector saw (`precast stats` shows the newest)
    requests(id, device, action, requested_at)
        operator requests (`precast device reset`); the collector that takes one
        applies it to the device's row in the same transaction (version + 1), so
        every collector sharing the database sees the reset
    discovery_configs(topic)
        the Home Assistant discovery configs MQTT sinks published and have not
        cleared (made by the first --ha-discovery run), as in the SQLite store
    sink_outbox(sink, owner, until, n, ref)
        as in the SQLite store (outbox.py), ref the readings' keys as int64
        quadruples (template id, device, epoch, seq); owner a collector's token,
        on which it holds a session advisory lock while it runs, so that a
        starting collector takes over only the entries of one that is gone

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

import json
import logging
import os
import struct
import time
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
import psycopg.errors
from psycopg import sql

from precast.collect.backoff import Backoff
from precast.collect.dburl import is_postgres, redact
from precast.collect.outbox import Entry, Pending
from precast.collect.rows import FIELDS_AT, Readings
from precast.collect.store import Build, Row, StoreError
from precast.collect.store.schema import (
    DEVICE_COLUMNS,
    DEVICE_NAMES,
    POSTGRES,
    device_from_row,
    device_values,
)
from precast.collect.store.sqlite import (
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


def pg_error(e: BaseException) -> str:
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
        raise StoreError(f"{redact(url)}: cannot connect: {pg_error(e)}") from None


def _q(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _keys(tid: int, rows: Sequence[Row]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The rows' keys as int64 quadruples (template id, device, epoch, seq)."""
    k = np.empty((len(rows), 4), dtype="<i8")
    k[:, 0] = tid
    if isinstance(rows, Readings):
        r = rows.records
        k[:, 1], k[:, 2], k[:, 3] = r["device"], r["epoch"], r["seq"]
    elif rows:
        k[:, 1:] = [(row[0], row[2], row[1]) for row in rows]
    return k


class _Unlocked(Exception):
    """A Commit changed the books of devices the transaction had not locked."""

    def __init__(self, devices: set[int]) -> None:
        super().__init__(f"books of unlocked devices changed: {sorted(devices)}")
        self.devices = devices


class PostgresStore:
    """The collector's writer into PostgreSQL; the methods of the SQLite store, plus transact()."""

    # psycopg's errors are an outage or a conflict with another collector: retried.
    transient: tuple[type[BaseException], ...] = (psycopg.Error, StoreError)
    books_shared = True  # other collectors may write the same database

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact(url)
        self.dev_names = list(DEVICE_NAMES)
        self.layouts: dict[int, Layout] = {}
        self.columns: dict[int, list[tuple[str, str, str]]] = {}
        self.versions: dict[int, int] = {}  # device -> version this collector last saw
        self.base_rejects: dict[str, int] = {}  # totals as last read or written
        self.base_counters: dict[str, int] = {}
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
            raise StoreError(f"{self.where}: cannot create the schema: {pg_error(e)}") from None

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
            (key, key_decl), *decls = POSTGRES.declarations()
            cols = sql.SQL(", ").join(sql.SQL("{} {}").format(_q(n), sql.SQL(d)) for n, d in decls)
            c.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS devices ({} {}, "
                    "version bigint NOT NULL DEFAULT 0, {})"
                ).format(_q(key), sql.SQL(key_decl), cols)
            )
            present = {
                r[0]
                for r in c.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'devices'::regclass "
                    "AND attnum > 0 AND NOT attisdropped"
                )
            }
            for n, d in decls:
                if n not in present:
                    c.execute(
                        sql.SQL("ALTER TABLE devices ADD COLUMN {} {}").format(_q(n), sql.SQL(d))
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
            c.execute(
                "CREATE TABLE IF NOT EXISTS sink_outbox (sink text NOT NULL, owner text NOT NULL, "
                "until bigint NOT NULL, n bigint NOT NULL, ref bytea NOT NULL, "
                "PRIMARY KEY (sink, owner, until))"
            )
        self._staging()

    def _staging(self) -> None:
        """This connection's temporary tables for COPY (emptied at each commit), and the
        advisory lock on the token that tells other collectors this one runs (outbox.py)."""
        c = self.conn
        with c.transaction():
            c.execute("SELECT pg_advisory_lock(hashtext(%s))", (self.token,))
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
                                "taken_at timestamptz, source text, {})"
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
                # Every readings table gains taken_at, whether or not this run loads its
                # template: the view reads it from all of them (NULL in the older rows).
                # (Only where it lacks: an ALTER locks the table, even one with nothing to do.)
                for (tbl,) in c.execute(
                    "SELECT tbl FROM templates WHERE to_regclass(tbl) IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(tbl) "
                    "AND attname = 'taken_at' AND NOT attisdropped)"
                ).fetchall():
                    c.execute(
                        sql.SQL("ALTER TABLE {} ADD COLUMN taken_at timestamptz").format(_q(tbl))
                    )
                self._create_view()
        except psycopg.Error as e:
            raise StoreError(
                f"{self.where}: cannot create the readings tables: {pg_error(e)}"
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
                    "SELECT device, {} AS template, seq, epoch, received_at, "
                    "coalesce(taken_at, received_at) AS taken_at, source, {} AS fields FROM {}"
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
            d = device_from_row(self.dev_names, rest)
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
            raise StoreError(f"{self.where}: {pg_error(e)}") from e

    def load_configs(self) -> list[str]:
        """The discovery configs published and not cleared (the table made if missing)."""
        c = self.conn
        try:
            with c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
                c.execute("CREATE TABLE IF NOT EXISTS discovery_configs (topic text PRIMARY KEY)")
                return [str(r[0]) for r in c.execute("SELECT topic FROM discovery_configs")]
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {pg_error(e)}") from e

    def save_configs(self, configs: Mapping[str, bool]) -> None:
        """Record discovery configs published (True) or cleared (False), by topic."""
        c = self.conn
        on = sorted(t for t, v in configs.items() if v)
        off = sorted(t for t, v in configs.items() if not v)
        try:
            with c.transaction():
                if on:
                    c.execute(
                        "INSERT INTO discovery_configs SELECT unnest(%s::text[]) "
                        "ON CONFLICT DO NOTHING",
                        (on,),
                    )
                if off:
                    c.execute("DELETE FROM discovery_configs WHERE topic = ANY(%s)", (off,))
        except psycopg.Error as e:
            raise StoreError(f"{self.where}: {pg_error(e)}") from e

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
            raise StoreError(f"{self.where}: {pg_error(e)}") from e
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
            raise StoreError(f"{self.where}: {pg_error(e)}") from e
        self._commit_cache()

    def commit(self, touched: Collection[int], build: Build) -> int:
        """One batch as one transaction, with the books of the touched devices locked.

        build(fresh) gets the devices another collector moved on since this one
        last saw them (None: no books yet), must load them into its tracker,
        classify the batch and return the Commit to write. Returns the readings stored.
        A Commit that changes the books of a device not locked (the caller's touched
        set fell short) is not written: the attempt is undone and made again with that
        device locked too (build is called again, and must start from where the first
        call started), so no collector writes books it did not lock.
        On an error the transaction is rolled back, the touched devices are
        forgotten (so the next attempt reloads them) and the error is raised.
        """
        ids = sorted(set(touched))
        while True:
            try:
                return self._commit_locked(ids, build)
            except _Unlocked as e:
                log.debug("a commit changed unlocked devices %s: made again", sorted(e.devices))
                ids = sorted(e.devices.union(ids))

    def _commit_locked(self, ids: list[int], build: Build) -> int:
        self.commits += 1
        committing = False
        try:
            with self.conn.transaction():
                self._locked = ids
                fresh = self._lock(ids)
                c = build(fresh)
                unlocked = {d.device for d in c.devices}.difference(ids)
                if unlocked:
                    raise _Unlocked(unlocked)
                stored = self._write(c.rows, c.devices, c.rejects, c.counters)
                self._write_outbox(c.rows, c.outbox, c.outbox_done)
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
        backoff = Backoff(0.1, 5.0)
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
                backoff.sleep(self.deadline)

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
            fresh[dev] = device_from_row(self.dev_names, rest) if version > 0 else None
            self.versions[dev] = version
        return fresh

    def _write_outbox(
        self,
        rows: Mapping[int, Sequence[Row]],
        outbox: Mapping[str, Entry],
        done: Mapping[str, int],
    ) -> None:
        """The commit's entry for each sink (its readings' keys), and the entries sinks took."""
        c = self.conn
        if outbox:
            ref = np.concatenate([_keys(tid, b) for tid, b in rows.items()] or [_keys(0, [])])
            for k, e in outbox.items():
                c.execute(
                    "INSERT INTO sink_outbox VALUES (%s, %s, %s, %s, %s)",
                    (k, self.token, e.until, e.n, ref.tobytes()),
                )
        for k, until in done.items():
            c.execute(
                "DELETE FROM sink_outbox WHERE sink = %s AND owner = %s AND until <= %s",
                (k, self.token, until),
            )

    def adopt_outbox(self, sink: str) -> list[Pending]:
        """The sink's entries of collectors that are gone (their token's advisory lock is
        free), now this one's, numbered on from 0 in their order."""
        c = self.conn
        try:
            with c.transaction():
                owners = c.execute(
                    "SELECT DISTINCT owner FROM sink_outbox WHERE sink = %s AND owner <> %s "
                    "ORDER BY owner",
                    (sink, self.token),
                ).fetchall()
                pending: list[Pending] = []
                for (owner,) in owners:
                    free = c.execute(
                        "SELECT pg_try_advisory_xact_lock(hashtext(%s))", (owner,)
                    ).fetchone()
                    if not (free and free[0]):
                        continue  # a collector running beside this one: its own
                    got = c.execute(
                        "DELETE FROM sink_outbox WHERE sink = %s AND owner = %s "
                        "RETURNING until, n, ref",
                        (sink, owner),
                    ).fetchall()
                    pending += [Pending(n, bytes(ref)) for _, n, ref in sorted(got)]
                until = 0
                for p in pending:
                    until += p.n
                    c.execute(
                        "INSERT INTO sink_outbox VALUES (%s, %s, %s, %s, %s)",
                        (sink, self.token, until, p.n, p.ref),
                    )
        except psycopg.Error as e:
            raise StoreError(
                f"{self.where}: cannot read the sinks' outbox: {pg_error(e)}"
            ) from None
        return pending

    def outbox_rows(self, p: Pending) -> dict[int, list[Row]]:
        """The rows an entry refers to that are still stored, by template (loaded ones), in
        the entry's order; times as the live rows give them (utc.iso_of_us's text)."""
        keys = np.frombuffer(p.ref, dtype="<i8").reshape(-1, 4)
        out: dict[int, list[Row]] = {}
        iso = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        received = sql.SQL(iso.format("r.received_at"))
        taken = sql.SQL(iso.format("coalesce(r.taken_at, r.received_at)"))
        try:
            with self.conn.transaction():
                for tid in dict.fromkeys(keys[:, 0].tolist()):
                    if tid not in self.columns:
                        continue
                    k = keys[keys[:, 0] == tid]
                    fields = sql.SQL("").join(
                        sql.SQL(", r.{}").format(_q(col)) for col, _, _ in self.columns[tid]
                    )
                    q = sql.SQL(
                        "SELECT r.device, r.seq, r.epoch, {}, {}, r.source{} FROM {} r "
                        "JOIN unnest(%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY "
                        "AS k(device, epoch, seq, i) "
                        "ON (r.device, r.epoch, r.seq) = (k.device, k.epoch, k.seq) ORDER BY k.i"
                    ).format(received, taken, fields, _q(table_name(tid)))
                    cols = (k[:, 1].tolist(), k[:, 2].tolist(), k[:, 3].tolist())
                    out[tid] = [tuple(r) for r in self.conn.execute(q, cols)]
        except psycopg.Error as e:
            raise StoreError(
                f"{self.where}: cannot read the sinks' outbox: {pg_error(e)}"
            ) from None
        return out

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
                cp.set_types([POSTGRES.types[c.type] for c in DEVICE_COLUMNS])
                for d in devs:
                    cp.write_row(device_values(d))
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
        """Binary COPY of a template's readings into table (copy_data)."""
        if not isinstance(batch, Readings):
            batch = Readings.from_rows(
                batch, ["i8" if typ == "INTEGER" else "f8" for *_, typ in cols]
            )
        with self.conn.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(_q(table), ident)
        ) as cp:
            cp.write(copy_data(batch))


_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01, timestamptz's zero, in unix µs


def copy_data(readings: Readings) -> bytes:
    """Readings as PostgreSQL's binary COPY data, from their records' bytes.

    A tuple is an int16 column count, then each column as an int32 length and
    its bytes, big-endian: bigint device, seq, epoch; timestamptz received_at and
    taken_at as µs since 2000; text source; bigint or float8 fields. Every tuple with a
    source of one length is one fixed-size record, so each length is one
    structured array filled column by column, and its bytes are the data (a
    batch's readings mostly come from sources of one or two lengths).
    """
    rec = readings.records
    fields = (rec.dtype.names or ())[FIELDS_AT:]
    encoded = [s.encode() for s in readings.sources]
    width = np.array([len(b) for b in encoded], dtype=np.int32)[rec["source"]]
    texts = np.array(encoded, dtype=object)
    out = [_COPY_SIGNATURE]
    for n in np.unique(width).tolist():
        sel = width == n
        part = rec if sel.all() else rec[sel]
        cols: list[tuple[str, str]] = [("count", ">i2")]
        for c in ("device", "seq", "epoch", "at", "taken"):
            cols += [(f"len_{c}", ">i4"), (c, ">i8")]
        cols += [("len_source", ">i4")] + ([("source", f"S{n}")] if n else [])
        for f in fields:
            cols += [(f"len_{f}", ">i4"), (f, ">i8" if rec.dtype[f].kind == "i" else ">f8")]
        t = np.empty(len(part), dtype=cols)
        t["count"] = FIELDS_AT + len(fields)
        for c in ("device", "seq", "epoch"):
            t[f"len_{c}"] = 8
            t[c] = part[c]
        for c in ("at", "taken"):
            t[f"len_{c}"] = 8
            t[c] = part[c] - _PG_EPOCH_US
        t["len_source"] = n
        if n:
            t["source"] = texts[part["source"]].astype(f"S{n}")
        for f in fields:
            t[f"len_{f}"] = 8
            t[f] = part[f]
        out.append(t.tobytes())
    out.append(_COPY_TRAILER)
    return b"".join(out)


__all__ = [
    "PostgresStore",
    "StoreError",
    "is_postgres",
    "redact",
]
