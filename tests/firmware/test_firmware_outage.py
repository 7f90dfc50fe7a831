"""The issue's outage, for real: a node on the unix port sends whole frames into a veth pair
at a fixed interval; a real `precast collect` listens in the far namespace. The link is
taken down (`ip link set ... down`) for many intervals and brought back.

Every reading taken during the outage that fit the node's ring is stored once, with an age
that puts its time of taking within one interval of when it was taken; the ones beyond the
ring are counted lost at both ends (the node's `dropped`, the collector's `lost`).
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from firmware_kit import build, template_for
from kit import TEMPLATES, VethPair, micropython

pytestmark = pytest.mark.usefixtures("mp_port")

N = 80
INTERVAL_MS = 50
RING = 10


def test_link_down_then_up_every_kept_reading_stored_once(tmp_path: Path, veth: VethPair) -> None:
    t = template_for(veth, TEMPLATES / "minimal.toml", tmp_path / "minimal.toml")
    ready = tmp_path / "ready.json"
    db = tmp_path / "precast.db"
    col = subprocess.Popen(
        veth.exec(
            sys.executable, "-m", "precast.cli", "collect", "--templates", str(t), "--db", str(db),
            "--listen", f"{veth.inner_ip}:20547", "--ready-file", str(ready),
            "--log-level", "warning",
        ),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    node = None
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert col.poll() is None and time.monotonic() < deadline, "no collector"
            time.sleep(0.05)
        out = tmp_path / "b"
        build(
            out, t, "--device", "9", "--transport", "packet", "--iface", veth.outer,
            "--count", str(N), "--interval-ms", str(INTERVAL_MS), "--backlog", str(RING),
        )  # fmt: skip
        node = subprocess.Popen(
            [micropython(), "main.py"], cwd=out, stdout=subprocess.PIPE, text=True
        )
        time.sleep(N * INTERVAL_MS / 1000 / 4)
        down = time.time()
        subprocess.run(["ip", "link", "set", veth.outer, "down"], check=True)
        time.sleep(N * INTERVAL_MS / 1000 / 2.5)
        subprocess.run(["ip", "link", "set", veth.outer, "up"], check=True)
        up = time.time()
        stdout, _ = node.communicate(timeout=60)
        assert node.returncode == 0, stdout
        time.sleep(1.5)  # the collector's batch
    finally:
        if node is not None and node.poll() is None:
            node.kill()
        col.terminate()
        col.wait(timeout=20)
    m = re.search(r"backlog kept (\d+) late (\d+) dropped (\d+) waiting (\d+)", stdout)
    assert m, stdout
    kept, late, ring_dropped, waiting = map(int, m.groups())
    print(f"outage {up - down:.2f} s: kept {kept}, late {late}, dropped {ring_dropped}")
    outage_readings = (up - down) * 1000 / INTERVAL_MS
    # the node paces, never bursts: under load it takes fewer readings than the clock allows
    assert RING < kept <= outage_readings + 3 and late == RING and waiting == 0, stdout
    assert ring_dropped == kept - RING
    stats = subprocess.run(
        [sys.executable, "-m", "precast.cli", "stats", "--db", str(db), "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (dev,) = json.loads(stats.stdout)["devices"]
    con = sqlite3.connect(db)
    got = con.execute(
        "SELECT seq, received_at, taken_at FROM readings WHERE device = 9 ORDER BY seq"
    ).fetchall()
    con.close()
    seqs = [s for s, _, _ in got]

    def unix(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    delayed = [(s, unix(t)) for s, r, t in got if r != t]
    assert len(delayed) == late, (delayed, late)
    assert dev["delayed"] == late, dev
    taken = [unix(t) for _, _, t in got]
    assert taken == sorted(taken), "the time of taking runs with the seq"
    # each kept reading was taken during the outage (this machine's clock), give or take one
    # interval, and one interval or so after the one before it
    slack = INTERVAL_MS / 1000
    for (s0, t0), (s1, t1) in itertools.pairwise(delayed):
        assert s1 == s0 + 1 and 0 < t1 - t0 <= 3 * slack, (s0, t0, s1, t1)
    assert all(down - slack <= t <= up + slack for _, t in delayed), (down, up, delayed)
    assert len(seqs) == len(set(seqs)) == N - ring_dropped, stdout  # each once
    assert dev["lost"] == ring_dropped and dev["duplicates"] == 0, dev
    missing = sorted(set(range(N)) - set(seqs))
    assert len(missing) == ring_dropped and missing == list(range(missing[0], missing[-1] + 1))
