"""A simulated fleet reaches receivers through a veth pair; their counts match its faults.

`precast simulate --iface` sends whole frames into a veth pair; the far end
lives in a namespace the test makes. Two receivers judge: a plain UDP
socket decoding with precast.wire.codec.Codec and counting with sets, and the
real collector (`precast collect`), whose counters must equal the faults
the fleet says it injected.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import KEY_HEX, VethPair, precast, precast_cmd, wait_for
from sender_kit import pair, template_to

RECEIVER = r"""
import collections, json, socket, sys
sys.path.insert(0, sys.argv[2])
from precast import Codec
from precast.wire.layout import load_layouts
from precast.wire.codec import Rejected
codec = Codec(load_layouts([sys.argv[1]]), key=bytes.fromhex(sys.argv[3]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
s.bind(("0.0.0.0", 20547))
print("ready", flush=True)
s.settimeout(10)
got = [s.recv(2048)]
s.settimeout(1.5)
try:
    while True:
        got.append(s.recv(2048))
except socket.timeout:
    pass
seen, top = set(), {}
out = collections.Counter(datagrams=len(got))
for d in got:
    r = codec.decode(d)
    if isinstance(r, Rejected):
        out["refused:" + r.reason] += 1
        continue
    k = (r.device, r.seq)
    if k in seen:
        out["duplicates"] += 1
        continue
    seen.add(k)
    if r.seq < top.get(r.device, -1):
        out["late"] += 1
    top[r.device] = max(top.get(r.device, -1), r.seq)
by_dev = collections.defaultdict(set)
for dev, seq in seen:
    by_dev[dev].add(seq)
out["devices"] = len(by_dev)
out["readings"] = len(seen)
out["gaps"] = sum(max(v) - min(v) + 1 - len(v) for v in by_dev.values())
print(json.dumps(out), flush=True)
"""

FAULTS = re.compile(r"faults: lost (\d+), duplicated (\d+), reordered (\d+), corrupted (\d+)")
SENT = re.compile(r"^sent (\d+) frames in [\d.]+ s: \d+ frames/s, (\d+) errors$", re.M)


@pytest.fixture
def veth() -> Iterator[VethPair]:
    yield from pair()


def fleet_templates(tmp: Path, v: VethPair) -> Path:
    d = tmp / "templates"
    d.mkdir()
    for name in ("env-node.toml", "minimal.toml", "power-meter.toml"):
        template_to(d, v, name)
    return d


def simulate(
    tpls: Path, v: VethPair, devices: int, rate: int, duration: float, seed: int
) -> tuple[dict[str, int], int]:
    r = precast(
        "simulate",
        "--templates",
        str(tpls),
        "--key",
        KEY_HEX,
        "--devices",
        str(devices),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--loss",
        "0.03",
        "--dup",
        "0.02",
        "--reorder",
        "0.02",
        "--corrupt",
        "0.02",
        "--seed",
        str(seed),
        "--iface",
        v.outer,
    )
    assert r.returncode == 0, r.stderr
    m = FAULTS.search(r.stdout)
    s = SENT.search(r.stdout)
    assert m and s, r.stdout
    assert s.group(2) == "0"
    faults = dict(zip(("lost", "dup", "reorder", "corrupt"), map(int, m.groups()), strict=True))
    assert min(faults.values()) > 0, faults  # every kind was injected at least once
    return faults, int(s.group(1))


def test_fleet_counts_at_a_plain_udp_socket(veth: VethPair, tmp_path: Path) -> None:
    tpls = fleet_templates(tmp_path, veth)
    host = str(Path(__file__).resolve().parents[2] / "host")
    rx = subprocess.Popen(
        veth.exec(sys.executable, "-c", RECEIVER, str(tpls), host, KEY_HEX),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert rx.stdout is not None
    assert rx.stdout.readline().strip() == "ready"
    faults, sent = simulate(tpls, veth, devices=30, rate=6000, duration=1.0, seed=11)
    out, _ = rx.communicate(timeout=30)
    got = json.loads(out)
    assert got["datagrams"] == sent
    assert got["devices"] == 30
    assert got["duplicates"] == faults["dup"]
    assert got["late"] == faults["reorder"]
    assert got.get("refused:crc", 0) + got.get("refused:mic", 0) == faults["corrupt"]
    assert got["gaps"] == faults["lost"] + faults["corrupt"]
    assert got["readings"] + got["gaps"] == 6000  # every reading of every device, or its gap


def stored_count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
    except sqlite3.Error:
        return 0  # no table before the first write
    finally:
        con.close()


def test_fleet_counts_at_the_collector(veth: VethPair, tmp_path: Path) -> None:
    tpls = fleet_templates(tmp_path, veth)
    db, ready = tmp_path / "c.db", tmp_path / "c.ready"
    col = subprocess.Popen(
        veth.exec(
            *precast_cmd(),
            "collect",
            "--listen",
            "0.0.0.0:20547",
            "--templates",
            str(tpls),
            "--db",
            str(db),
            "--key",
            KEY_HEX,
            "--ready-file",
            str(ready),
        ),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert col.poll() is None, col.stderr.read() if col.stderr else ""
            assert time.monotonic() < deadline, "collector never got ready"
            time.sleep(0.05)
        faults, sent = simulate(tpls, veth, devices=20, rate=5000, duration=1.0, seed=5)
        stored = sent - faults["dup"] - faults["corrupt"]  # each good reading once
        wait_for(lambda: stored_count(db) >= stored, 30, f"{stored} readings stored")
    finally:
        col.send_signal(signal.SIGTERM)
        _, err = col.communicate(timeout=30)
    assert col.returncode == 0, err
    r = precast("stats", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    devs = doc["devices"]
    assert len(devs) == 20
    assert doc["drops"] == {"queue": 0, "kernel": 0, "jsonl": 0}
    assert sum(d["lost"] for d in devs) == faults["lost"] + faults["corrupt"]
    assert sum(d["duplicates"] for d in devs) == faults["dup"]
    assert sum(d["late"] for d in devs) == faults["reorder"]
    rejected = doc["rejected"]
    assert rejected.get("crc", 0) + rejected.get("mic", 0) == faults["corrupt"]
    assert sum(d["received"] for d in devs) + faults["dup"] + faults["corrupt"] == sent
