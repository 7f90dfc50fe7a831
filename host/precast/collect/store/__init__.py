"""Where the collector keeps readings and books: one interface, a backend per module.

A backend is picked by the --db value: a path is an SQLite file (sqlite.py,
the default); a `postgresql://` or `postgres://` URL goes to postgres.py:
several collectors may write one such database. Every backend keeps the same
tables (readings_<id>, devices, rejects, counters, templates and a `readings`
view; the devices table from schema.py) and writes one batch in one
transaction, so its counters never disagree with its rows.

Two contracts: `Store` (open_store) is the collector's writer; `Reader`
(open_reader) is what `precast stats`, `plot`, `top`, `device reset` and the
pytest plugin read, on either backend, without blocking a running collector
(sqlite_reader.py, postgres_reader.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from precast.collect.dburl import is_postgres, redact
from precast.collect.ingest import Commit
from precast.collect.outbox import Pending
from precast.collect.tracker import Device
from precast.errors import PrecastError, UsageError
from precast.wire.layout import Layout

Row = tuple[Any, ...]  # device, seq, epoch, received_at, taken_at, source, then the fields


def quote(name: str) -> str:
    """An SQL identifier, quoted (SQLite; PostgreSQL's are psycopg's sql.Identifier)."""
    return '"' + name.replace('"', '""') + '"'


class StoreError(PrecastError):
    """A database that cannot be opened, is not a precast collector's, or refused a write.

    full: the write failed for want of disk space (the caller writes smaller pieces).
    """

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


# A batch's commit, built by the collector once the store holds the books it needs:
# build(fresh) gets the books of touched devices another collector moved on (None: it has
# none any more), takes them into its tracker, and returns what to write.
Build = Callable[[dict[int, Device | None]], Commit]


class Store(Protocol):
    """What the collector needs of a database; every backend implements all of it."""

    transient: tuple[type[BaseException], ...]  # what a write raises worth retrying
    deadline: float | None  # monotonic; a stopping collector stops retrying then
    # The books live in the database, other collectors may move them (PostgreSQL): an
    # operator's reset is applied there, not only in this collector's tracker.
    books_shared: bool

    def ensure_templates(self, layouts: Iterable[Layout]) -> None:
        """A readings table per template (new field columns added), and the readings view."""

    def load_devices(self) -> list[Device]:
        """The tracker state saved by earlier runs."""

    def load_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(rejects by reason, counters by name) saved by earlier runs."""

    def commit(self, touched: Collection[int], build: Build) -> int:
        """One batch in one transaction: the readings stored.

        PostgreSQL locks the books of `touched` and hands build() those another
        collector moved on; SQLite (one writer) ignores touched and hands it none.
        build() may be called again (PostgreSQL, when its Commit changed the books of
        a device not in touched: then with that device locked too); each call must
        start from the state the first one started from.
        The Commit's rows, devices, reject counts (added) and counters (totals) are
        written all or nothing; a failure raises one of `transient` or StoreError.
        """

    def adopt_outbox(self, sink: str) -> list[Pending]:
        """The sink's outbox entries of collectors that are gone, made this one's (outbox.py)."""
        ...

    def outbox_rows(self, p: Pending) -> dict[int, list[Row]]:
        """The rows of an entry still stored, by template id (templates loaded), in order."""
        ...

    def write(
        self,
        rows: Mapping[int, Sequence[Row]],
        devices: Iterable[Device],
        rejects: Mapping[str, int],
        counters: Mapping[str, int],
    ) -> None:
        """One transaction of readings, books and totals (rejects as totals), no locking:
        for tools and tests that write books directly. Raises StoreError."""

    def save_recent(self, recent: Sequence[Mapping[str, Any]]) -> None:
        """Replace the latest refusals (newest first: at, reason, source, device, template,
        bytes) that `precast stats` shows. Raises StoreError."""

    def take_requests(self) -> list[tuple[int, str]]:
        """Operator requests not yet applied, (device, action), oldest first; they are deleted.

        The one action is "reset" (`precast device reset`). Raises StoreError.
        """

    def load_configs(self) -> list[str]:
        """The topics of the Home Assistant discovery configs an MQTT sink published and has
        not cleared (table discovery_configs, made here if missing). Raises StoreError."""

    def save_configs(self, configs: Mapping[str, bool]) -> None:
        """Record configs published (True) or cleared (False), by topic. Raises StoreError."""

    def reconnect(self) -> None:
        """A new connection after an outage (raises one of `transient` while it lasts)."""

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (reconnect() before the next attempt)."""

    def close(self) -> None:
        """Close the database."""


def _need_psycopg(db: str) -> None:
    """A usage error, without the password, where psycopg is not installed."""
    try:
        import psycopg  # noqa: F401
    except ImportError as e:
        raise UsageError(
            f"--db {redact(db)}: PostgreSQL needs psycopg 3 (pip install 'precast[postgres]'): {e}"
        ) from None


def open_store(db: str) -> Store:
    """The backend for a --db value: postgresql:// or postgres:// URLs, else an SQLite path."""
    if is_postgres(db):
        _need_psycopg(db)
        from precast.collect.store.postgres import PostgresStore

        return PostgresStore(db)
    from precast.collect.store.sqlite import SqliteStore

    return SqliteStore(db)


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
    """A template as the collector recorded it (the templates table): id, name, readings
    table, fields in wire order. A reader needs no template file."""

    id: int
    name: str
    table: str
    fields: tuple[FieldInfo, ...]


def template_info(tid: int, name: str, table: str, columns: Any, fields: Any) -> TemplateInfo:
    """A templates row (columns, fields: the decoded JSON) as a TemplateInfo; a row written
    before units were recorded (fields NULL) has names and columns only."""
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
            for f in fields
        )
    else:
        infos = tuple(FieldInfo(name=n, column=c) for c, n in columns)
    return TemplateInfo(int(tid), str(name), str(table), infos)


class StoredReading(NamedTuple):
    """One stored reading: at is its arrival and taken when it was taken (unix seconds; a
    delayed frame's arrival less its age, else at), values its template's fields in
    TemplateInfo.fields order (in units)."""

    device: int
    seq: int
    epoch: int
    at: float
    taken: float
    source: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Stats:
    """Everything `precast stats` shows, read in one go: a page of the devices' books (by
    id) and how many there are, rejects by reason, counters by name, template names, and
    the latest refusals (newest first: at, reason, source, device, template, bytes)."""

    devices: list[Device]
    devices_total: int
    rejects: dict[str, int]
    counters: dict[str, int]
    templates: dict[int, str]
    recent_rejects: list[dict[str, Any]] = field(default_factory=list)


class Reader(Protocol):
    """What is read of a collector's database, on every backend; never blocks a writer.

    A database that is missing, unreachable or not a collector's raises StoreError
    when opened; a failed read raises StoreError too (never an empty answer).
    """

    def templates(self) -> dict[int, TemplateInfo]:
        """Every template the collector has a readings table for, by id."""

    def devices(self, limit: int | None = None, offset: int = 0) -> list[Device]:
        """The devices' books, by id: limit of them (None: all) after offset."""

    def stats(self, limit: int | None = None, offset: int = 0) -> Stats:
        """Everything `precast stats` shows; limit and offset page the devices."""

    def readings(
        self,
        template: TemplateInfo,
        devices: Sequence[int] | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[StoredReading]:
        """A template's readings of these devices (None: all) received in [since, until]
        (None: unbounded), in arrival order."""

    def latest(self, template: TemplateInfo) -> list[StoredReading]:
        """Each device's latest reading of a template."""

    def follow(
        self, template: TemplateInfo, mark: object | None, since: float
    ) -> tuple[list[StoredReading], object]:
        """A template's readings stored since the last call, in arrival order, and the mark
        to pass to the next. The first call (mark None) reads those received since `since`."""

    def count(self, device: int | None = None) -> int:
        """Readings stored (of one device, or all): 0 before the collector's first."""

    def request_reset(self, device: int) -> int:
        """Queue an operator's reset of a device's books for the collector; the request's id."""

    def request_pending(self, request: int) -> bool:
        """Whether a request still waits for a collector to apply it."""

    def close(self) -> None:
        """Close the database."""


def open_reader(db: str | Path) -> Reader:
    """The reader for a --db value: postgresql:// or postgres:// URLs, else an SQLite path."""
    db = str(db)
    if is_postgres(db):
        _need_psycopg(db)
        from precast.collect.store.postgres_reader import PostgresReader

        return PostgresReader(db)
    from precast.collect.store.sqlite_reader import SqliteReader

    return SqliteReader(db)
