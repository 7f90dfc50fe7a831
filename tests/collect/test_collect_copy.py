"""PostgreSQL's binary COPY of readings (store/postgres.py copy_data), judged by the server.

The buffer is built from a Readings' record bytes; what the server stores, read
back with psycopg, must be the rows SQLite gets (Readings.tuples()): sources of
several lengths (an empty one too), times to the µs before and after 2000,
extreme integers, negative and non-finite floats.
"""

from __future__ import annotations

import math
from datetime import UTC
from typing import Any

from collector_harness import pg_query
from kit import TEMPLATES
from precast.collect.rows import Readings
from precast.collect.store.postgres import PostgresStore
from precast.collect.utc import iso_of_us
from precast.wire.layout import load_layouts

T0 = 1_700_000_000_123_456
ROWS = [
    # device, seq, epoch, received_at, taken_at (a delayed reading's: earlier), source, fields
    (1, 0, 0, iso_of_us(T0), iso_of_us(T0), "127.0.0.1:20547", 21.5, 40.25, 101325, 3),
    (2**32 - 1, 2**32 - 1, 7, iso_of_us(1), iso_of_us(1), "[::1]:1", -40.0, math.nan, -(2**31), 0),
    (3, 5, 2**40, iso_of_us(946_684_799_999_999), iso_of_us(0), "", math.inf, -0.0, 2**40, -1),
    (4, 6, 1, iso_of_us(T0), iso_of_us(T0 - 4_294_967_295_000), "127.0.0.1:20547", 0.01, 1e300,
     0, 2**62),
    (5, 7, 1, iso_of_us(T0 + 1), iso_of_us(T0 - 1000), "a source named at length", 1.0, 2.0, 3,
     4),
]  # fmt: skip


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b and type(a) is type(b))


def test_copy_data_stores_what_sqlite_gets(pg_url: str) -> None:
    lay = next(lay for lay in load_layouts([TEMPLATES]) if lay.template.id == 1)
    readings = Readings.from_rows(ROWS, ["f8", "f8", "i8", "i8"])
    assert all(all(map(same, r, w)) for r, w in zip(readings.tuples(), ROWS, strict=True))
    store = PostgresStore(pg_url)
    try:
        store.ensure_templates([lay])
        store.write({1: readings}, [], {}, {})
    finally:
        store.close()
    got = pg_query(pg_url, "SELECT * FROM readings_1 ORDER BY device")
    assert len(got) == len(ROWS)
    for g, want in zip(got, sorted(ROWS), strict=True):
        at, taken = (t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") for t in g[3:5])
        row = (*g[:3], at, taken, *g[5:])
        assert all(map(same, row, want)), (row, want)
