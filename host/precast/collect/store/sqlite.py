"""The collector's SQLite database: readings, per-device counters, rejects by reason.

WAL mode, so `precast stats` and other readers never block the collector;
one transaction per batch (readings, the devices they changed, the reject
and drop counters together), so a crash never leaves counters that
disagree with the rows. The schema (user_version 3; a version 1 or 2 database is
migrated in place when the collector opens it):

    readings_<template id>(device, seq, epoch, received_at, taken_at, source, <field>...)
        one table per template, one column per field in units (INTEGER when
        scale and offset are integers, else REAL); received_at is UTC ISO 8601,
        taken_at too (received_at less a delayed frame's age; a table from before
        delayed frames gains the column, NULL in its old rows: read it as
        coalesce(taken_at, received_at), as the view and the readers do);
        source is "ip:port". A field named like a fixed column gets "field_".
    readings        a view over every readings_<id> table: device, template, seq,
                    epoch, received_at, taken_at, source, fields (a JSON object)
    templates(id, name, tbl, columns, fields)  columns: JSON [[column, field name], ...];
        fields: JSON [{"name", "column", "type", "unit", "scale", "offset"}, ...] in wire
        order, so a reader (plot, top) needs no template files
    devices(device, template, epoch, ..., restart)
        the tracker's state, a column per field of tracker.Device (schema.py derives
        the table and adds a column the tracker gains); times are unix seconds, seen
        the window bitmap; version 2 added auth ("crc"/"mic"), the window the bitmap
        was kept with, the held far-jump candidate and the operator's reset flag
    rejects(reason, count)     frames refused, by codec or tracker reason
    counters(name, count)      "queue_drops", "kernel_drops": datagrams never decoded;
                               "jsonl_drops": stored readings the --jsonl file did not take
    requests(id, device, action, requested_at)
        operator requests (`precast device reset`: action "reset") a running collector
        applies within a second and then deletes
    discovery_configs(topic)
        the Home Assistant discovery configs the MQTT sink published and has not cleared
        (--ha-discovery; made by the first such run): a later run clears a device's
        configs its new template lacks, whatever the broker kept
    sink_outbox(sink, owner, until, n, ref)
        per sink (its position name), the commits' readings it has not taken all of
        (outbox.py): ref is the commit's rowid range in each readings table, as int64
        triples (template id, first, last); owner the collector run's token
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from precast.collect.files import prepare_database
from precast.collect.outbox import Entry, Pending
from precast.collect.store import Build, Row, StoreError
from precast.collect.store import quote as _q
from precast.collect.store.lock import WriterLock
from precast.collect.store.schema import DEVICE_NAMES, SQLITE, device_from_row, device_values
from precast.collect.tracker import Device
from precast.wire.layout import Layout

SCHEMA_VERSION = 3
FIXED_COLUMNS = ("device", "seq", "epoch", "received_at", "taken_at", "source")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, tbl TEXT NOT NULL, columns TEXT NOT NULL,
    fields TEXT);
CREATE TABLE IF NOT EXISTS rejects (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS recent_rejects (
    at TEXT, reason TEXT, source TEXT, device INTEGER, template INTEGER, bytes INTEGER);
"""
RECENT_COLUMNS = ("at", "reason", "source", "device", "template", "bytes")
REQUESTS_TABLE = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, device INTEGER NOT NULL, action TEXT NOT NULL,
    requested_at REAL NOT NULL);
"""
_CONFIGS = "CREATE TABLE IF NOT EXISTS discovery_configs (topic TEXT PRIMARY KEY)"
_OUTBOX = (
    "CREATE TABLE IF NOT EXISTS sink_outbox (sink TEXT NOT NULL, owner TEXT NOT NULL, "
    "until INTEGER NOT NULL, n INTEGER NOT NULL, ref BLOB NOT NULL, "
    "PRIMARY KEY (sink, owner, until))"
)
SQLITE_FULL = 13
_UPSERT_DEVICE = (
    f"INSERT OR REPLACE INTO devices ({', '.join(DEVICE_NAMES)}) "
    f"VALUES ({', '.join('?' * len(DEVICE_NAMES))})"
)
# SQLite functions take at most 100 arguments: json_object() gets fields in chunks.
_JSON_CHUNK = 50


def table_name(template_id: int) -> str:
    """The readings table of a template."""
    return f"readings_{template_id}"


def field_columns(layout: Layout) -> list[tuple[str, str, str]]:
    """(column, field name, SQL type) per field, in wire order."""
    out = []
    for s in layout.fields:
        f = s.field
        col = f"field_{f.name}" if f.name in FIXED_COLUMNS else f.name
        exact = f.type != "f32" and isinstance(f.scale, int) and isinstance(f.offset, int)
        out.append((col, f.name, "INTEGER" if exact else "REAL"))
    return out


def field_info(layout: Layout) -> list[dict[str, Any]]:
    """Each field's column, type, unit, scale and offset: the templates table's `fields`."""
    return [
        {
            "name": s.field.name,
            "column": col,
            "type": s.field.type,
            "unit": s.field.unit,
            "scale": s.field.scale,
            "offset": s.field.offset,
        }
        for s, (col, _, _) in zip(layout.fields, field_columns(layout), strict=True)
    ]


def _error(path: Path, e: sqlite3.Error) -> StoreError:
    """A StoreError saying what went wrong; a full disk is called one."""
    code = getattr(e, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == SQLITE_FULL) or "disk is full" in str(e):
        return StoreError(f"{path}: disk full ({e})", full=True)
    return StoreError(f"{path}: {e}")


def _rollback(c: sqlite3.Connection) -> None:
    """Roll back if a transaction is open; SQLite may have rolled it back itself (a full disk)."""
    try:
        if c.in_transaction:
            c.execute("ROLLBACK")
    except sqlite3.Error:
        pass


_SET_REJECTS = "INSERT OR REPLACE INTO rejects VALUES (?, ?)"
_ADD_REJECTS = (
    "INSERT INTO rejects VALUES (?, ?) "
    "ON CONFLICT (reason) DO UPDATE SET count = count + excluded.count"
)


class SqliteStore:
    """The collector's SQLite writer: create the schema, load state, one batch per transaction."""

    transient: tuple[type[BaseException], ...] = (StoreError,)  # locked, full disk
    books_shared = False  # one writer: the books in the tracker are the truth

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        prepare_database(path)  # a link planted where the database goes is never followed
        self.lock = WriterLock(self.path)  # one collector per file (lock.py)
        try:
            # A short busy timeout: the collector retries a locked write itself, and logs it.
            self.conn = sqlite3.connect(
                self.path, timeout=1.0, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            # WAL with synchronous=NORMAL: a committed batch survives a crash of the collector;
            # the last batches may be lost only when the machine itself loses power.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, 2, SCHEMA_VERSION):
                raise StoreError(f"{path}: schema version {version}, expected {SCHEMA_VERSION}")
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(devices)")}
            if version != SCHEMA_VERSION or not have.issuperset(DEVICE_NAMES):
                self._migrate()
            have = {r[1] for r in self.conn.execute("PRAGMA table_info(templates)")}
            if "fields" not in have:  # a database from before units were recorded
                self.conn.execute("ALTER TABLE templates ADD COLUMN fields TEXT")
            self.conn.execute(_OUTBOX)
        except sqlite3.Error as e:
            self.lock.release()
            raise StoreError(f"{path}: cannot open the database: {e}") from None
        except BaseException:
            self.lock.release()
            raise
        self.insert_sql: dict[int, str] = {}
        self.select_sql: dict[int, str] = {}  # a rowid range of readings, as sinks take rows
        self.token = uuid.uuid4().hex  # this run's, as the owner of its outbox entries
        self.deadline: float | None = None  # unused: SQLite has no commit in doubt

    def _migrate(self) -> None:
        """Create the schema, or add what an older database lacks (a version 1 database's
        devices lack auth ... restart), in one transaction."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for stmt in (_SCHEMA + REQUESTS_TABLE).split(";"):
                if stmt.strip():
                    c.execute(stmt)
            decls = SQLITE.declarations()
            c.execute(
                "CREATE TABLE IF NOT EXISTS devices "
                f"({', '.join(f'{_q(n)} {d}' for n, d in decls)})"
            )
            have = {r[1] for r in c.execute("PRAGMA table_info(devices)")}
            for col, decl in decls:
                if col not in have:
                    c.execute(f"ALTER TABLE devices ADD COLUMN {_q(col)} {decl}")
            c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            _rollback(c)
            raise

    def close(self) -> None:
        """Close the database (WAL checkpointed by SQLite), then let another collector in."""
        self.conn.close()
        self.lock.release()

    def save_recent(self, recent: Sequence[Mapping[str, Any]]) -> None:
        """Replace the latest refusals (newest first) that `precast stats` shows."""
        c = self.conn
        try:
            c.execute("BEGIN")
            try:
                c.execute("DELETE FROM recent_rejects")
                c.executemany(
                    f"INSERT INTO recent_rejects VALUES ({', '.join('?' * len(RECENT_COLUMNS))})",
                    [tuple(r[k] for k in RECENT_COLUMNS) for r in recent],
                )
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        except sqlite3.Error as e:
            raise _error(self.path, e) from e

    def load_configs(self) -> list[str]:
        """The discovery configs published and not cleared (the table made if missing)."""
        try:
            self.conn.execute(_CONFIGS)
            return [r[0] for r in self.conn.execute("SELECT topic FROM discovery_configs")]
        except sqlite3.Error as e:
            raise _error(self.path, e) from e

    def save_configs(self, configs: Mapping[str, bool]) -> None:
        """Record discovery configs published (True) or cleared (False), by topic."""
        c = self.conn
        try:
            c.execute("BEGIN")
            try:
                c.executemany(
                    "INSERT OR IGNORE INTO discovery_configs VALUES (?)",
                    [(t,) for t, on in configs.items() if on],
                )
                c.executemany(
                    "DELETE FROM discovery_configs WHERE topic = ?",
                    [(t,) for t, on in configs.items() if not on],
                )
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        except sqlite3.Error as e:
            raise _error(self.path, e) from e

    def take_requests(self) -> list[tuple[int, str]]:
        """Operator requests not yet applied, (device, action), oldest first; they are deleted."""
        c = self.conn
        try:
            if c.execute("SELECT 1 FROM requests LIMIT 1").fetchone() is None:
                return []  # the usual case: no write lock taken
            c.execute("BEGIN IMMEDIATE")
            try:
                got = c.execute("SELECT id, device, action FROM requests ORDER BY id").fetchall()
                if got:
                    c.execute("DELETE FROM requests WHERE id <= ?", (got[-1][0],))
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        except sqlite3.Error as e:
            raise _error(self.path, e) from e
        return [(int(dev), str(action)) for _, dev, action in got]

    def ensure_templates(self, layouts: Iterable[Layout]) -> None:
        """A readings table per template (new field columns added), and the readings view."""
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            self._ensure_templates(layouts)
            c.execute("COMMIT")
        except sqlite3.Error as e:
            _rollback(c)
            raise _error(self.path, e) from e
        except BaseException:
            _rollback(c)
            raise

    def _ensure_templates(self, layouts: Iterable[Layout]) -> None:
        c = self.conn
        for lay in layouts:
            t = lay.template
            tbl = table_name(t.id)
            cols = field_columns(lay)
            have = {r[1] for r in c.execute(f"PRAGMA table_info({_q(tbl)})")}
            if not have:
                defs = ", ".join(f"{_q(col)} {typ}" for col, _, typ in cols)
                c.execute(
                    f"CREATE TABLE {_q(tbl)} (device INTEGER, seq INTEGER, "
                    f"epoch INTEGER, received_at TEXT, taken_at TEXT, source TEXT, {defs})"
                )
            else:
                for col, _, typ in cols:
                    if col not in have:
                        c.execute(f"ALTER TABLE {_q(tbl)} ADD COLUMN {_q(col)} {typ}")
            names = [*FIXED_COLUMNS, *(col for col, _, _ in cols)]
            self.insert_sql[t.id] = (
                f"INSERT INTO {_q(tbl)} ({', '.join(map(_q, names))}) "
                f"VALUES ({', '.join('?' * len(names))})"
            )
            fields = "".join(f", {_q(col)}" for col, _, _ in cols)
            self.select_sql[t.id] = (
                "SELECT device, seq, epoch, received_at, coalesce(taken_at, received_at), "
                f"source{fields} FROM {_q(tbl)} WHERE rowid BETWEEN ? AND ? ORDER BY rowid"
            )
            c.execute(
                "INSERT OR REPLACE INTO templates (id, name, tbl, columns, fields) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    t.id,
                    t.name,
                    tbl,
                    json.dumps([[col, name] for col, name, _ in cols]),
                    json.dumps(field_info(lay)),
                ),
            )
        # Every readings table gains taken_at, whether or not this run loads its template:
        # the view reads it from all of them. NULL in the rows from before (live readings).
        for (tbl,) in c.execute("SELECT tbl FROM templates").fetchall():
            have = {r[1] for r in c.execute(f"PRAGMA table_info({_q(tbl)})")}
            if have and "taken_at" not in have:
                c.execute(f"ALTER TABLE {_q(tbl)} ADD COLUMN taken_at TEXT")
        self._create_view()

    def _create_view(self) -> None:
        selects = []
        for tid, tbl, columns in self.conn.execute("SELECT id, tbl, columns FROM templates"):
            pairs = [
                f"'{name.replace(chr(39), chr(39) * 2)}', {_q(col)}"
                for col, name in json.loads(columns)
            ]
            chunks = [
                f"json_object({', '.join(pairs[i : i + _JSON_CHUNK])})"
                for i in range(0, len(pairs), _JSON_CHUNK)
            ]
            fields = chunks[0]
            for more in chunks[1:]:
                fields = f"json_patch({fields}, {more})"
            selects.append(
                f"SELECT device, {int(tid)} AS template, seq, epoch, received_at, "
                f"coalesce(taken_at, received_at) AS taken_at, source, {fields} AS fields "
                f"FROM {_q(tbl)}"
            )
        self.conn.execute("DROP VIEW IF EXISTS readings")
        if selects:
            self.conn.execute("CREATE VIEW readings AS " + " UNION ALL ".join(selects))

    def load_devices(self) -> list[Device]:
        """The tracker state saved by earlier runs."""
        cur = self.conn.execute(f"SELECT {', '.join(DEVICE_NAMES)} FROM devices")
        return [device_from_row(DEVICE_NAMES, r) for r in cur]

    def load_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(rejects by reason, counters by name) saved by earlier runs."""
        rejects = dict(self.conn.execute("SELECT reason, count FROM rejects").fetchall())
        counters = dict(self.conn.execute("SELECT name, count FROM counters").fetchall())
        return rejects, counters

    def commit(self, touched: Collection[int], build: Build) -> int:
        """One batch in one transaction (one writer: no books to lock, touched unused)."""
        c = build({})
        self._write(c.rows, c.devices, c.rejects, c.counters, _ADD_REJECTS, c.outbox, c.outbox_done)
        return c.stored

    def write(
        self,
        rows: Mapping[int, Sequence[Row]],
        devices: Iterable[Device],
        rejects: Mapping[str, int],
        counters: Mapping[str, int],
    ) -> None:
        """One transaction: readings by template id, changed devices, totals by name."""
        self._write(rows, devices, rejects, counters, _SET_REJECTS)

    def _write(
        self,
        rows: Mapping[int, Sequence[Row]],
        devices: Iterable[Device],
        rejects: Mapping[str, int],
        counters: Mapping[str, int],
        rejects_sql: str,
        outbox: Mapping[str, Entry] | None = None,
        done: Mapping[str, int] | None = None,
    ) -> None:
        c = self.conn
        try:
            c.execute("BEGIN")
            try:
                ranges = []
                for tid, batch in rows.items():
                    c.executemany(self.insert_sql[tid], batch)
                    if outbox and batch:  # one writer: a commit's rowids run on unbroken
                        last = c.execute("SELECT last_insert_rowid()").fetchone()[0]
                        ranges.append((tid, last - len(batch) + 1, last))
                if outbox:
                    ref = np.array(ranges, dtype="<i8").tobytes()
                    c.executemany(
                        "INSERT INTO sink_outbox VALUES (?, ?, ?, ?, ?)",
                        [(k, self.token, e.until, e.n, ref) for k, e in outbox.items()],
                    )
                if done:
                    c.executemany(
                        "DELETE FROM sink_outbox WHERE sink = ? AND owner = ? AND until <= ?",
                        [(k, self.token, until) for k, until in done.items()],
                    )
                c.executemany(_UPSERT_DEVICE, [device_values(d) for d in devices])
                c.executemany(rejects_sql, rejects.items())
                c.executemany("INSERT OR REPLACE INTO counters VALUES (?, ?)", counters.items())
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        except sqlite3.Error as e:
            raise _error(self.path, e) from e

    def adopt_outbox(self, sink: str) -> list[Pending]:
        """The sink's entries a killed run left (one writer: every other owner's), now this
        run's, numbered on from 0 in their order."""
        c = self.conn
        try:
            c.execute("BEGIN IMMEDIATE")
            try:
                got = c.execute(
                    "SELECT n, ref FROM sink_outbox WHERE sink = ? AND owner <> ? ORDER BY rowid",
                    (sink, self.token),
                ).fetchall()
                c.execute(
                    "DELETE FROM sink_outbox WHERE sink = ? AND owner <> ?", (sink, self.token)
                )
                pending = [Pending(n, bytes(ref)) for n, ref in got]
                until = 0
                for p in pending:
                    until += p.n
                    c.execute(
                        "INSERT INTO sink_outbox VALUES (?, ?, ?, ?, ?)",
                        (sink, self.token, until, p.n, p.ref),
                    )
                c.execute("COMMIT")
            except BaseException:
                _rollback(c)
                raise
        except sqlite3.Error as e:
            raise _error(self.path, e) from e
        return pending

    def outbox_rows(self, p: Pending) -> dict[int, list[Row]]:
        """The rows an entry refers to that are still stored, by template (loaded ones)."""
        out: dict[int, list[Row]] = {}
        for tid, first, last in np.frombuffer(p.ref, dtype="<i8").reshape(-1, 3).tolist():
            q = self.select_sql.get(tid)
            if q is not None:
                try:
                    out.setdefault(tid, []).extend(self.conn.execute(q, (first, last)))
                except sqlite3.Error as e:
                    raise _error(self.path, e) from e
        return out

    def reconnect(self) -> None:
        """Nothing to do: a file does not go away like a server (kept for the interface)."""

    @property
    def broken(self) -> bool:
        return False
