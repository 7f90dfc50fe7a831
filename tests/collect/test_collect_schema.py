"""The books' schema written once (store/schema.py): the devices table of each backend is
tracker.Device's fields, and a row round-trips through a real database."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from precast.collect.store import open_reader, open_store
from precast.collect.store.schema import DEVICE_NAMES, POSTGRES, SQLITE
from precast.collect.tracker import Device


def test_every_field_of_device_is_a_column_of_both_backends() -> None:
    assert DEVICE_NAMES == tuple(f.name for f in dataclasses.fields(Device))
    for dialect in (SQLITE, POSTGRES):
        decls = dict(dialect.declarations())
        assert tuple(decls) == DEVICE_NAMES
        assert decls["device"].endswith("PRIMARY KEY")
        assert decls["template"] in ("INTEGER", "bigint")  # no default: every Device has one
    pg = dict(POSTGRES.declarations())
    assert pg["seen"] == "bytea" and pg["restart"] == "boolean NOT NULL DEFAULT false"
    assert pg["auth"] == "text NOT NULL DEFAULT ''"  # an old row's authentication: unknown
    assert pg["cand_data"] == "bytea NOT NULL DEFAULT '\\x'::bytea"
    lite = dict(SQLITE.declarations())
    assert lite["cand_data"] == "BLOB NOT NULL DEFAULT x''" and lite["cand_at"].startswith("REAL")


def test_books_round_trip_through_sqlite_and_read_back_by_the_reader(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    store = open_store(str(db))
    d = Device(9, 2, 3, 100, 1.5, 90, 300, (1 << 1024) | 0b1011, received=7, auth="mic")
    d.cand_data, d.cand_seq, d.restart, d.seen_window = b"\x00\xff", 40000, True, 1024
    store.write({}, [d], {}, {})
    assert store.load_devices() == [d]
    store.close()
    conn = sqlite3.connect(db)
    cols = [(r[1], r[2]) for r in conn.execute("PRAGMA table_info(devices)")]
    conn.close()
    assert [c for c, _ in cols] == list(DEVICE_NAMES)
    assert dict(cols)["seen"] == "BLOB" and dict(cols)["restart"] == "INTEGER"
    reader = open_reader(db)
    try:
        assert reader.devices() == [d]
        assert reader.stats().devices == [d]
    finally:
        reader.close()


def test_the_reader_takes_a_database_no_collector_migrated(tmp_path: Path) -> None:
    """A version 1 file read as it is (read-only): the columns it lacks get the old rows'
    values, as the migration would give them."""
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE templates (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tbl TEXT NOT NULL,
            columns TEXT NOT NULL);
        CREATE TABLE devices (device INTEGER PRIMARY KEY, template INTEGER, epoch INTEGER,
            epoch_seq INTEGER, epoch_started REAL, lowest INTEGER, highest INTEGER, seen BLOB,
            received INTEGER, lost INTEGER, duplicates INTEGER, late INTEGER, bad INTEGER,
            reboots INTEGER, replays INTEGER, first_seen REAL, last_seen REAL);
        CREATE TABLE rejects (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
        INSERT INTO devices VALUES (7, 2, 0, 0, 1.0, 0, 9, x'03ff', 10, 0, 0, 0, 0, 0, 0, 1, 2);
        PRAGMA user_version=1;
        """
    )
    conn.close()
    reader = open_reader(db)
    try:
        (dev,) = reader.stats().devices
    finally:
        reader.close()
    assert (dev.device, dev.seen, dev.received, dev.auth, dev.cand_seq) == (7, 0x3FF, 10, "", -1)
    assert not dev.restart
