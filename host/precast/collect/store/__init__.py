"""Where the collector keeps readings and books: one interface, a backend per module.

A backend is picked by the --db value (`open_store`): a path is an SQLite file
(sqlite.py, the default); a `postgresql://` URL goes to postgres.py. Every backend
keeps the same tables (readings_<id>, devices, rejects, counters, templates and a
`readings` view) and writes one batch in one transaction, so its counters never
disagree with its rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from precast.collect.tracker import Device
from precast.errors import PrecastError
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


def open_store(db: str) -> Store:
    """The backend for a --db value: an SQLite file path (the default)."""
    from precast.collect.store.sqlite import SqliteStore

    return SqliteStore(db)


def read_stats(db: str, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
    """Everything `precast stats` shows, read-only: devices (a page of them, by id, and
    devices_total), rejects, counters, template names."""
    from precast.collect.store import sqlite

    return sqlite.read_stats(db, limit, offset)


def request_reset(db: str, device: int) -> int:
    """Queue an operator's reset of a device's books for the collector; the request's id."""
    from precast.collect.store import sqlite

    return sqlite.request_reset(db, device)


def request_pending(db: str, request: int) -> bool:
    """True while a request is still waiting for a collector to apply it."""
    from precast.collect.store import sqlite

    return sqlite.request_pending(db, request)
