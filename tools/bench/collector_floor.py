"""The SQLite collector's floor: what storing the benchmark's readings costs without receiving.

The same env-node payloads the collector benchmark sends (collector.py's
payloads(): device 1..devices round robin, seq counting up), through the
collector's own SQLite store (its schema, indexes and INSERT, WAL,
synchronous=NORMAL), in two timed parts, CPU time of this process:

- unpack and CRC: struct.unpack of each payload's body and a CRC-16 over it
  (the least checking there is), then the row as rows.row_builder makes it;
- executemany of those rows in batches of 2,000, one transaction each.

The collector has to fit receiving, grouping and tracking in what it spends
above the sum. collector.py --drain runs this in the same run and prints the
ratio; alone:

    .venv/bin/python tools/bench/collector_floor.py [-n 70000] [--devices 50]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from precast.collect.rows import row_builder  # noqa: E402
from precast.collect.store.sqlite import SqliteStore  # noqa: E402
from precast.collect.utc import utc_iso  # noqa: E402
from precast.wire.checks import crc16  # noqa: E402
from precast.wire.layout import load_layouts  # noqa: E402

BATCH = 2000


def floor(n: int, devices: int) -> dict[str, float]:
    """µs per reading of unpack+CRC+row and of executemany, and their sum."""
    from collector import payloads

    data = payloads(n, devices)
    lay = next(lay for lay in load_layouts([ROOT / "templates"]) if lay.template.id == 1)
    unpack = struct.Struct(lay.body_fmt).unpack_from
    build = row_builder(lay)
    at = utc_iso(time.time())
    t0 = time.process_time()
    rows = []
    for d in data:
        if crc16(d):
            continue
        rows.append(build(unpack(d), 0, at, at, "127.0.0.1:20547"))
    t1 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "floor.db")
        store.ensure_templates([lay])
        sql = store.insert_sql[lay.template.id]
        conn = store.conn
        t2 = time.process_time()
        for i in range(0, len(rows), BATCH):
            conn.execute("BEGIN")
            conn.executemany(sql, rows[i : i + BATCH])
            conn.execute("COMMIT")
        t3 = time.process_time()
        stored = conn.execute(f'SELECT count(*) FROM "readings_{lay.template.id}"').fetchone()[0]
        store.close()
    if stored != n:
        raise SystemExit(f"collector_floor: stored {stored} of {n}")
    unpack_us = 1e6 * (t1 - t0) / n
    insert_us = 1e6 * (t3 - t2) / n
    return {
        "unpack_crc_us": unpack_us,
        "executemany_us": insert_us,
        "floor_us": unpack_us + insert_us,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=70_000, help="readings")
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    f = floor(args.n, args.devices)
    if args.json:
        print(json.dumps(f))
        return
    print(
        f"floor, {args.n:,} readings: unpack + CRC + row {f['unpack_crc_us']:.2f} µs, "
        f"executemany (batches of {BATCH}) {f['executemany_us']:.2f} µs: "
        f"{f['floor_us']:.2f} µs a reading"
    )


if __name__ == "__main__":
    main()
