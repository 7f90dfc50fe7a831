"""Where the collector keeps readings and books: one interface, a backend per module.

A backend is picked by the --db value (`open_store`): a path is an SQLite file
(sqlite.py, the default); a `postgresql://` or `postgres://` URL goes to
postgres.py: several collectors may write one such database. Every backend
keeps the same tables (readings_<id>, devices, rejects, counters, templates and a
`readings` view) and writes one batch in one transaction, so its counters never
disagree with its rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from precast.collect.dburl import is_postgres, redact
from precast.collect.ingest import Commit
from precast.collect.tracker import Device
from precast.errors import PrecastError, UsageError
from precast.wire.layout import Layout

Row = tuple[Any, ...]  # device, seq, epoch, received_at, source, then the fields in units


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
        The Commit's rows, devices, reject counts (added) and counters (totals) are
        written all or nothing; a failure raises one of `transient` or StoreError.
        """

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

    def reconnect(self) -> None:
        """A new connection after an outage (raises one of `transient` while it lasts)."""

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (reconnect() before the next attempt)."""

    def close(self) -> None:
        """Close the database."""


def open_store(db: str) -> Store:
    """The backend for a --db value: postgresql:// or postgres:// URLs, else an SQLite path."""
    if is_postgres(db):
        try:
            from precast.collect.store.postgres import PostgresStore
        except ImportError as e:
            raise UsageError(
                f"--db {redact(db)}: PostgreSQL needs psycopg 3 "
                f"(pip install 'precast[postgres]'): {e}"
            ) from None
        return PostgresStore(db)
    from precast.collect.store.sqlite import SqliteStore

    return SqliteStore(db)


def read_stats(db: str, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    """Everything `precast stats` shows, read-only: devices (a page of them, by id, and
    devices_total), rejects, counters, template names."""
    if is_postgres(db):
        from precast.collect.store import postgres

        return postgres.read_stats(db, limit, offset)
    from precast.collect.store import sqlite

    return sqlite.read_stats(db, limit, offset)


def request_reset(db: str, device: int) -> int:
    """Queue an operator's reset of a device's books for the collector; the request's id."""
    if is_postgres(db):
        from precast.collect.store import postgres

        return postgres.request_reset(db, device)
    from precast.collect.store import sqlite

    return sqlite.request_reset(db, device)


def request_pending(db: str, request: int) -> bool:
    """True while a request is still waiting for a collector to apply it."""
    if is_postgres(db):
        from precast.collect.store import postgres

        return postgres.request_pending(db, request)
    from precast.collect.store import sqlite

    return sqlite.request_pending(db, request)
