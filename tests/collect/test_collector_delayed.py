"""Every rule of the receiver holds for delayed frames (docs/PROTOCOL.md, step 6), judged from
outside: UDP datagrams into a real `precast collect`, its books read with `precast stats` and
its readings table."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from collector_harness import (
    Collector,
    by_device,
    count_rows,
    is_pg,
    pg_exec,
    pg_query,
    stats,
    view_rows,
)
from kit import KEY_HEX, TEMPLATES, wait_for
from precast import compile_template, encode_raw, load_template
from precast.pytest_plugin import PrecastCollector
from precast.wire.constants import PAYLOAD_OFFSET

KEY = bytes.fromhex(KEY_HEX)
MINIMAL = compile_template(load_template(TEMPLATES / "minimal.toml"))
METER = compile_template(load_template(TEMPLATES / "power-meter.toml"))


def _device_when(col: PrecastCollector, dev: int, want: dict[str, int]) -> dict[str, int]:
    """The device's counters once they reach `want` (the last datagrams may come a batch
    later than the readings), or as they are after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        d = col.device(dev)
        if {k: d[k] for k in want} == want or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def _send(col: PrecastCollector, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for f in frames:
            s.sendto(f[PAYLOAD_OFFSET:], (col.host, col.port))


@pytest.fixture
def collector(tmp_path: Path):
    col = PrecastCollector([str(TEMPLATES)], tmp_path, KEY, args=["--window", "64"])
    try:
        yield col
    finally:
        col.stop()


def test_delayed_readings_fill_their_gap_once(collector: PrecastCollector) -> None:
    dev = 41
    live = [encode_raw(MINIMAL, [s], dev, s) for s in range(10) if s not in (5, 6, 7)]
    late = [encode_raw(MINIMAL, [s], dev, s, age_ms=1000 * (10 - s)) for s in (5, 6, 7)]
    again = [
        encode_raw(MINIMAL, [6], dev, 6, age_ms=9999),  # the same reading, late twice
        encode_raw(MINIMAL, [8], dev, 8, age_ms=10),  # a live one sent late as well
        late[0],  # the very same delayed frame
    ]
    _send(collector, live + late + again)
    collector.wait_for_readings(10, device=dev)
    d = _device_when(collector, dev, {"received": 10, "lost": 0, "duplicates": 3})
    assert (d["received"], d["lost"], d["duplicates"]) == (10, 0, 3), d
    assert sorted(r["seq"] for r in collector.readings(dev)) == list(range(10))
    assert [r["fields"]["value"] for r in collector.readings(dev)] == list(range(10))


def test_delayed_frames_meet_the_mic_and_the_window(collector: PrecastCollector) -> None:
    dev = 42
    raw = [1, -2, 3, 0.5]
    frames = [encode_raw(METER, raw, dev, s, KEY) for s in range(200, 300)]
    forged = bytearray(encode_raw(METER, raw, dev, 150, KEY, age_ms=5))
    forged[-1] ^= 1  # a delayed frame with a wrong MIC
    replay = encode_raw(METER, raw, dev, 10, KEY, age_ms=5)  # far below the window
    _send(collector, [*frames, bytes(forged), replay, encode_raw(METER, raw, dev, 299, KEY, 1)])
    collector.wait_for_readings(100, device=dev)
    d = _device_when(collector, dev, {"received": 100, "duplicates": 1, "replays": 1, "bad": 1})
    assert (d["received"], d["duplicates"], d["replays"], d["bad"]) == (100, 1, 1, 1), d
    rejected = collector.stats()["rejected"]
    assert rejected.get("mic") == 1 and rejected.get("replay") == 1, rejected


# ---- the time of taking: taken_at, judged by each database ---------------------------------------


def _iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _ages_ms(db: Path | str) -> dict[int, float]:
    """received_at - taken_at of each reading of readings_2 (minimal), in ms, by seq: the
    subtraction done by PostgreSQL itself, or on SQLite's stored text with datetime (a row
    from before delayed frames has no taken_at: its received_at, as the view says)."""
    taken = "coalesce(taken_at, received_at)"
    if is_pg(db):
        got = pg_query(
            str(db),
            f"SELECT seq, extract(epoch FROM received_at - {taken}) * 1000 FROM readings_2",
        )
        return {int(s): float(a) for s, a in got}
    conn = sqlite3.connect(db)
    try:
        got = conn.execute(f"SELECT seq, received_at, {taken} FROM readings_2").fetchall()
    finally:
        conn.close()
    return {s: (_iso(r) - _iso(t)) / timedelta(milliseconds=1) for s, r, t in got}


def test_a_delayed_reading_is_stored_at_its_time_of_taking(
    tmp_path: Path, store_db: Path | str
) -> None:
    """Live readings and delayed ones (ages 1 ms to 49.7 days, the u32 top) of one device: each
    stored once with taken_at = received_at - age, exact to the µs (the database computes the
    difference); the JSON lines carry taken_at too; `stats` counts the delayed readings."""
    ages = {s: [1, 250, 60_000, 3_600_000, 2**32 - 1][s % 5] for s in range(20, 40)}
    out = tmp_path / "out.jsonl"
    col = Collector(tmp_path, "--jsonl", str(out), db=store_db)
    try:
        col.send(encode_raw(MINIMAL, [s], 7, s)[PAYLOAD_OFFSET:] for s in range(20))
        col.send(encode_raw(MINIMAL, [s], 7, s, age_ms=a)[PAYLOAD_OFFSET:] for s, a in ages.items())
        wait_for(lambda: count_rows(store_db) == 40, 20, "every reading stored")
        wait_for(lambda: stats(store_db)["devices"][0]["delayed"] == 20, 20, "delayed counted")
    finally:
        assert col.stop() == 0, col.stderr()
    assert _ages_ms(store_db) == {s: float(ages.get(s, 0)) for s in range(40)}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 40
    for doc in lines:
        age = (_iso(doc["received_at"]) - _iso(doc["taken_at"])) / timedelta(milliseconds=1)
        assert age == ages.get(doc["seq"], 0), doc
    d = by_device(stats(store_db))[7]
    assert (d["received"], d["delayed"], d["lost"]) == (40, 20, 0), d


def test_a_readings_table_from_before_delayed_frames_gains_taken_at(
    tmp_path: Path, store_db: Path | str
) -> None:
    """A database whose readings tables have no taken_at (its view dropped with them, as a
    collector before delayed frames made it): a reader still reads it (taken = received);
    the next collector, given only one of the templates, adds the column to every table
    (the view reads them all), NULL in the old rows, which read as their received_at, and
    stores a delayed reading beside them with its own."""
    col = Collector(tmp_path, db=store_db)
    try:
        col.send(encode_raw(MINIMAL, [s], 3, s)[PAYLOAD_OFFSET:] for s in range(10))
        wait_for(lambda: count_rows(store_db) == 10, 20, "the old readings")
    finally:
        assert col.stop() == 0, col.stderr()
    tables = ["readings_1", "readings_2", "readings_3"]  # env-node, minimal, power-meter
    old = ["DROP VIEW readings", *(f"ALTER TABLE {t} DROP COLUMN taken_at" for t in tables)]
    if is_pg(store_db):
        for q in old:
            pg_exec(str(store_db), q)
    else:
        conn = sqlite3.connect(store_db)
        for q in old:
            conn.execute(q)
        conn.commit()
        conn.close()
    assert [r["seq"] for r in plot_readings(store_db)] == list(range(10))
    col = Collector(tmp_path, db=store_db, name="again", templates=TEMPLATES / "minimal.toml")
    try:
        col.send([encode_raw(MINIMAL, [10], 3, 10, age_ms=1500)[PAYLOAD_OFFSET:]])
        wait_for(lambda: count_rows(store_db) == 11, 20, "the delayed reading")
    finally:
        assert col.stop() == 0, col.stderr()
    assert _ages_ms(store_db) == {**{s: 0.0 for s in range(10)}, 10: 1500.0}
    assert {r[2] for r in view_rows(store_db)} == set(range(11))


def plot_readings(db: Path | str) -> list[dict[str, object]]:
    """The stored readings as precast's own reader gives them (StoredReading), as dicts."""
    from precast.collect.store import open_reader

    reader = open_reader(str(db))
    try:
        t = reader.templates()[2]
        return [r._asdict() for r in reader.readings(t)]
    finally:
        reader.close()
