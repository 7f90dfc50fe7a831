"""A real `precast collect` on loopback: several devices with injected loss, duplicates,
reordering and corruption; stored rows and counters exactly as the definitions say."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from collector_harness import (
    Collector,
    by_device,
    expected_counts,
    payload,
    rows,
    stats,
    view_rows,
)
from kit import KEY

WINDOW = 64


def env_values(seq: int) -> dict[str, Any]:
    return {
        "temperature": round(-40 + (seq * 7 % 10000) / 100, 2),
        "humidity": (seq * 13 % 10000) / 100,
        "pressure": 90000 + seq,
        "battery": 3000 + seq % 700,
    }


def meter_values(seq: int) -> dict[str, Any]:
    return {
        "energy": seq * 10,
        "power": round((seq - 40) * 1.5, 1),
        "voltage": round(230 + seq / 100, 2),
        "power_factor": (seq % 4) / 4,
    }


def flip(p: bytes, at: int = 13) -> bytes:
    b = bytearray(p)
    b[at] ^= 0x10
    return bytes(b)


class Stream:
    """One device's arrivals: (payload, seq, good) in send order, and the good seqs."""

    def __init__(self, device: int, layout: str, key: bytes | None = None) -> None:
        self.device, self.layout, self.key = device, layout, key
        self.sends: list[tuple[bytes, int, bool]] = []

    def values(self, seq: int, epoch: int = 0) -> dict[str, Any]:
        """A reading's values: those of another epoch differ (a frame identical to one stored
        would be a replay)."""
        return {"env-node": env_values, "power-meter": meter_values}.get(
            self.layout, lambda s: {"value": s % 65536}
        )(seq + 1000 * epoch)

    def good(self, seq: int, epoch: int = 0) -> None:
        values = self.values(seq, epoch)
        self.sends.append((payload(self.layout, values, self.device, seq, self.key), seq, True))

    def bad(self, seq: int) -> None:
        p = payload(self.layout, self.values(seq), self.device, seq, self.key)
        self.sends.append((flip(p), seq, False))

    def good_seqs(self) -> list[int]:
        return [s for _, s, ok in self.sends if ok]


def build_streams(rng: random.Random) -> dict[int, Stream]:
    # 101: gaps, a burst loss, duplicates, swaps, one delayed reading, corrupted copies.
    a = Stream(101, "env-node")
    order = [s for s in range(300) if s % 13 != 5 and not 200 <= s < 210]
    for i in range(0, len(order) - 1, 31):
        order[i], order[i + 1] = order[i + 1], order[i]
    order.remove(150)
    order.insert(order.index(160) + 1, 150)
    for s in order:
        if s % 37 == 11:
            a.bad(s)  # corrupted instead of the reading: lost, and a bad check
            continue
        a.good(s)
        if s % 29 == 0:
            a.good(s)
        if s % 41 == 3:
            a.bad(s)  # a corrupted copy after the reading
    # 102: starts at 1000; random loss, duplicates and local shuffles.
    b = Stream(102, "minimal")
    seqs = [s for s in range(1000, 1200) if rng.random() > 0.1]
    for i in range(0, len(seqs), 4):
        part = seqs[i : i + 4]
        rng.shuffle(part)
        seqs[i : i + 4] = part
    for s in seqs:
        b.good(s)
        if rng.random() < 0.05:
            b.good(s)
    # 103: counts 0..99 (then, silent for a second, it reboots: reboot_103).
    c = Stream(103, "env-node")
    for s in range(100):
        c.good(s)
    # 300: MIC device: loss, a bad MIC, a replay below the window, a duplicate inside it.
    d = Stream(300, "power-meter", KEY)
    for s in range(80):
        if s % 9 != 4:
            d.good(s)
    d.bad(80)
    d.good(3)  # replay: 3 is more than WINDOW below 79
    d.good(70)  # duplicate
    return {s.device: s for s in (a, b, c, d)}


def garbage() -> dict[str, list[bytes]]:
    env = payload("env-node", env_values(1), 104, 1)
    unknown = bytearray(payload("minimal", {"value": 1}, 105, 1))
    unknown[3] = 99  # template 99
    wrong_kind = bytearray(env)
    wrong_kind[1] |= 0x01  # MIC flag on a crc16 template
    return {
        "short": [b"", b"P", bytes(13)],
        "magic": [b"Q" + env[1:]],
        "version": [env[:1] + b"\x20" + env[2:]],
        "flags": [env[:1] + b"\x14" + env[2:]],
        "unknown-template": [bytes(unknown)],
        "check-kind": [bytes(wrong_kind)],
        "length": [env + b"\x00", env[:-1]],
        "no-key": [payload("power-meter", meter_values(1), 301, 1, KEY)],
    }


def interleave(rng: random.Random, streams: dict[int, Stream]) -> list[tuple[int, int]]:
    """A random merge keeping each device's order: (device, index into its sends)."""
    cursors = {d: 0 for d in streams}
    out = []
    while cursors:
        d = rng.choice(sorted(cursors))
        out.append((d, cursors[d]))
        cursors[d] += 1
        if cursors[d] == len(streams[d].sends):
            del cursors[d]
    return out


def reboot_103(col: Collector, stream: Stream) -> int:
    """103 silent for longer than the quiet period (its old sequence over), then counting from
    0 again with new readings: a reboot, nothing lost."""
    time.sleep(1.1)
    for s in range(20):
        stream.good(s, epoch=1)
    return col.send(p for p, _, _ in stream.sends[-20:])


def expected_rows(stream: Stream, fields: list[str]) -> list[tuple[Any, ...]]:
    """What the collector must store for a device, in arrival order: (device, seq, epoch, ...)."""
    out = []
    seen: set[tuple[int, int]] = set()
    epoch, top = 0, None
    for _, s, ok in stream.sends:
        if not ok:
            continue
        if top is not None and top - s > WINDOW:
            if stream.key:
                continue  # replay
            epoch += 1
            top = None
        top = s if top is None else max(top, s)
        if (epoch, s) in seen:
            continue
        seen.add((epoch, s))
        v = stream.values(s, epoch)
        out.append((stream.device, s, epoch, *(v[f] for f in fields)))
    return out


ENV_FIELDS = ["temperature", "humidity", "pressure", "battery"]
METER_FIELDS = ["energy", "power", "voltage", "power_factor"]


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    p = tmp_path / "keys.txt"
    p.write_text(f"# device key\n300 {KEY.hex()}\n0x2d {'00' * 16}  # another device\n")
    return p


def test_collector_stores_and_counts_exactly(
    tmp_path: Path, keys_file: Path, store_db: Path | str
) -> None:
    rng = random.Random(4)
    streams = build_streams(rng)
    jsonl = tmp_path / "readings.jsonl"
    col = Collector(
        tmp_path,
        "--window",
        str(WINDOW),
        "--keys",
        str(keys_file),
        "--jsonl",
        str(jsonl),
        db=store_db,
    )
    try:
        sent = col.send(streams[d].sends[i][0] for d, i in interleave(rng, streams))
        junk = garbage()
        sent += col.send(p for ps in junk.values() for p in ps)
        sent += reboot_103(col, streams[103])
    finally:
        assert col.stop() == 0, col.stderr()
    assert "Traceback" not in col.stderr()

    # The rows, read directly (sqlite3, psycopg), in arrival order, values in units.
    env_rows = rows(col.db, 1, ENV_FIELDS)
    assert [r for r in env_rows if r[0] == 101] == expected_rows(streams[101], ENV_FIELDS)
    assert [r for r in env_rows if r[0] == 103] == expected_rows(streams[103], ENV_FIELDS)
    assert {r[0] for r in env_rows} == {101, 103}
    assert rows(col.db, 2, ["value"]) == expected_rows(streams[102], ["value"])
    assert rows(col.db, 3, METER_FIELDS) == expected_rows(streams[300], METER_FIELDS)

    doc = stats(col.db)
    devs = by_device(doc)
    assert sorted(devs) == [101, 102, 103, 300]
    for dev in (101, 102):
        want = expected_counts(streams[dev].good_seqs())
        got = {k: devs[dev][k] for k in want}
        assert got == want, dev
    assert devs[101]["bad"] == sum(1 for _, _, ok in streams[101].sends if not ok)
    assert devs[101]["template"] == 1 and devs[102]["template"] == 2
    # 103 rebooted: two epochs, counted from the definitions one epoch at a time.
    assert devs[103]["reboots"] == 1 and devs[103]["epoch"] == 1
    assert devs[103]["received"] == 120 and devs[103]["lost"] == 0
    assert devs[103]["last_seq"] == 19
    # 300: the replay is refused, the duplicate counted, the bad MIC counted.
    g = streams[300].good_seqs()
    good300 = g[:-2] + g[-1:]  # all but the replayed 3
    want = expected_counts(good300)
    assert {k: devs[300][k] for k in want} == want
    assert devs[300]["replays"] == 1 and devs[300]["bad"] == 1

    rejected = {k: len(v) for k, v in garbage().items()}
    rejected["crc"] = sum(1 for d in (101, 102, 103) for _, _, ok in streams[d].sends if not ok)
    rejected["mic"] = 1
    rejected["replay"] = 1
    assert doc["rejected"] == rejected
    assert doc["drops"] == {"queue": 0, "kernel": 0, "jsonl": 0}
    stored = sum(d["received"] for d in doc["devices"])
    dups = sum(d["duplicates"] for d in doc["devices"])
    assert stored + dups + sum(rejected.values()) == sent

    # The JSON lines are the stored rows, one each.
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(lines) == stored
    view = view_rows(col.db)
    # Compared as numbers: jsonb writes 0.0 as 0.
    assert sorted(
        (x["template"], x["device"], x["seq"], sorted(x["fields"].items())) for x in lines
    ) == sorted((t, d, s, sorted(f.items())) for t, d, s, f in view)
    assert all(x["received_at"].endswith("Z") for x in lines)


def test_collector_restart_keeps_counting(tmp_path: Path, store_db: Path | str) -> None:
    """Stopped and started again on the same database, it counts as if it never stopped."""
    rng = random.Random(7)
    s = Stream(7, "minimal")
    arrivals = [x for x in range(400) if rng.random() > 0.15]
    for i in range(0, len(arrivals), 5):
        part = arrivals[i : i + 5]
        rng.shuffle(part)
        arrivals[i : i + 5] = part
    for x in arrivals:
        s.good(x)
    # Across the restart: duplicates of readings stored before it, and late fills of its gaps.
    half = len(s.sends) // 2
    first, second = s.sends[:half], s.sends[half:]
    last = [x for _, x, _ in first[-10:]]
    before = {x for _, x, _ in first}
    gap = max(set(range(max(before))) - set(arrivals))  # never sent: a late fill now
    again = Stream(7, "minimal")
    again.good(last[0])
    again.good(last[3])
    again.good(gap)
    second = again.sends + second
    # The first run stops on SIGINT (Ctrl-C) and prints its JSON lines on stdout.
    col = Collector(tmp_path, "--window", str(WINDOW), "--jsonl", "-", name="first", db=store_db)
    try:
        col.send(p for p, _, _ in first)
        col.signal(signal.SIGINT)
        out, _ = col.proc.communicate(timeout=30)
    finally:
        assert col.stop() == 0
    mid = by_device(stats(col.db))[7]
    assert mid["received"] == len({x for _, x, _ in first})
    printed = [json.loads(x) for x in out.decode().splitlines()]
    assert [x["seq"] for x in printed] == list(dict.fromkeys(x for _, x, _ in first))
    col = Collector(tmp_path, "--window", str(WINDOW), db=col.db, name="second")
    try:
        col.send(p for p, _, _ in second)
    finally:
        assert col.stop() == 0
    whole = [x for _, x, _ in first + second]
    want = expected_counts(whole)
    got = by_device(stats(col.db))[7]
    assert {k: got[k] for k in want} == want
    assert got["late"] >= 1 and got["duplicates"] >= 2
    assert [r[1] for r in rows(col.db, 2, ["value"])] == list(dict.fromkeys(whole))
