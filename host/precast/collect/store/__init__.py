"""Where the collector keeps readings and books: one interface, a backend per module.

A backend is picked by the --db value (`open_store`): a path is an SQLite file
(sqlite.py, the default); a `postgresql://` or `postgres://` URL goes to
postgres.py, a SharedStore: several collectors may write one such database. Every backend
keeps the same tables (readings_<id>, devices, rejects, counters, templates and a
`readings` view) and writes one batch in one transaction, so its counters never
disagree with its rows.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from precast.collect.dburl import is_postgres, redact
from precast.collect.tracker import Device
from precast.errors import PrecastError, UsageError
from precast.wire.layout import Layout

Row = tuple[Any, ...]  # device, seq, epoch, received_at, source, then the fields in units


class StoreError(PrecastError):
    """A database that cannot be opened, is not a precast collector's, or refused a write.

    full: the write failed for want of disk space (the caller writes smaller pieces).
    """

    def __init__(self, message: str, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class Store(Protocol):
    """What the collector needs of a database."""

    def ensure_templates(self, layouts: Iterable[Layout]) -> None:
        """A readings table per template (new field columns added), and the readings view."""

    def load_devices(self) -> list[Device]:
        """The tracker state saved by earlier runs."""

    def load_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(rejects by reason, counters by name) saved by earlier runs."""

    def write(
        self,
        rows: Mapping[int, Sequence[Row]],
        devices: Iterable[Device],
        rejects: Mapping[str, int],
        counters: Mapping[str, int],
    ) -> None:
        """One transaction: readings by template id, changed devices, totals by name.

        A failure raises StoreError and leaves nothing of the batch written.
        """

    def save_recent(self, recent: Sequence[Mapping[str, Any]]) -> None:
        """Replace the latest refusals (newest first: at, reason, source, device, template,
        bytes) that `precast stats` shows. Raises StoreError."""

    def take_requests(self) -> list[tuple[int, str]]:
        """Operator requests not yet applied, (device, action), oldest first; they are deleted.

        The one action is "reset" (`precast device reset`). Raises StoreError.
        """

    def close(self) -> None:
        """Close the database."""


class SharedStore(Store, Protocol):
    """A database several collectors write (postgres.py): the books live in it, not in memory.

    The collector hands each batch to transact() instead of write(): the store
    locks the books of the devices the batch touches, gives the tracker those
    another collector moved on, and writes what work() returns, in one transaction.
    """

    shared: bool
    deadline: float | None  # monotonic; a stopping collector stops retrying then

    def transact(
        self,
        touched: Collection[int],
        work: Callable[
            [dict[int, Device | None]],
            tuple[
                Mapping[int, Sequence[Row]],
                Iterable[Device],
                Mapping[str, int],
                Mapping[str, int],
            ],
        ],
    ) -> int:
        """One batch with the books of `touched` locked; the readings stored."""

    def reconnect(self) -> None:
        """A new connection after an outage (raises while the server is away)."""

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (reconnect() before the next attempt)."""


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


def transient_errors(store: Store) -> tuple[type[BaseException], ...]:
    """What a store's write raises that is worth retrying (an outage, a lock, a full disk)."""
    if getattr(store, "shared", False):
        import psycopg

        return (psycopg.Error, StoreError)
    return (StoreError,)


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
