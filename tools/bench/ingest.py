"""Checking and tracking a batch: the array path against the per-frame path, CPU per frame.

Batches of 4,096 env-node (crc16) or power-meter (cmac8) payloads from 50
devices, seq after seq (the collector benchmark's traffic), already in
memory: wire/batch.py + collect/arrays.py's judge() against
validator.Validator.check + Tracker.observe per frame, each on its own
tracker warmed by the first batch. CPU time of this process, no receiving
and no storing; the load average is printed before and after.

    .venv/bin/python tools/bench/ingest.py [--batches 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))

from precast.collect.arrays import judge  # noqa: E402
from precast.collect.tracker import Tracker  # noqa: E402
from precast.wire.batch import BatchValidator  # noqa: E402
from precast.wire.codec import Codec, encode_raw  # noqa: E402
from precast.wire.constants import PAYLOAD_OFFSET  # noqa: E402
from precast.wire.layout import Layout, load_layouts  # noqa: E402
from precast.wire.validator import Validator  # noqa: E402

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
ROWS = 4096
DEVICES = 50


def stream(lay: Layout, n: int) -> list[bytes]:
    raw = [1] * len(lay.fields)
    return [
        encode_raw(lay, raw, 1 + i % DEVICES, i // DEVICES, KEY)[PAYLOAD_OFFSET:] for i in range(n)
    ]


def as_rows(data: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    rows = np.zeros((len(data), max(map(len, data)) + 1), dtype=np.uint8)
    for i, d in enumerate(data):
        rows[i, : len(d)] = np.frombuffer(d, dtype=np.uint8)
    return rows, np.array([len(d) for d in data])


def measure(lay: Layout, codec: Codec, batches: int) -> tuple[float, float]:
    """(array path, per-frame path) µs of CPU per frame."""
    v = Validator(codec)
    bv = BatchValidator(v)
    data = stream(lay, ROWS * (batches + 1))
    parts = [data[k * ROWS : (k + 1) * ROWS] for k in range(batches + 1)]
    arrays = [as_rows(p) for p in parts]
    ta, tp = Tracker(), Tracker()

    def per_frame(batch: list[bytes]) -> None:
        for d in batch:
            _, sp, body = v.check(d)
            assert sp is not None and body is not None
            tp.observe(body[3], sp.id, body[4], 1.0, sp.mic, d)

    judge(bv, ta, *arrays[0], 1.0, str)
    per_frame(parts[0])
    t = time.process_time()
    for rows, lens in arrays[1:]:
        judge(bv, ta, rows, lens, 1.0, str)
    a = time.process_time() - t
    t = time.process_time()
    for p in parts[1:]:
        per_frame(p)
    f = time.process_time() - t
    n = ROWS * batches
    return 1e6 * a / n, 1e6 * f / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=10)
    args = ap.parse_args()
    lays = {lay.template.id: lay for lay in load_layouts([ROOT / "templates"])}
    codec = Codec(lays.values(), key=KEY)
    print(f"load average {os.getloadavg()[0]:.2f} at the start")
    print("\n| template | array path µs/frame | per-frame µs/frame | speed-up |")
    print("|---|---:|---:|---:|")
    got = {}
    for tid in (1, 3):
        a, f = measure(lays[tid], codec, args.batches)
        got[tid] = a
        t = lays[tid].template
        print(f"| {t.name} ({t.check}) | {a:.2f} | {f:.2f} | {f / a:.1f}x |", flush=True)
    print(f"\nA MIC frame costs {got[3] / got[1]:.2f}x a CRC frame on the array path (target 2x).")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
