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


def collector_in(veth: VethPair, template: Path, db: Path, ready: Path) -> subprocess.Popen[str]:
    """A real `precast collect` in the veth pair's far namespace, on its address; once ready."""
    col = subprocess.Popen(
        veth.exec(
            sys.executable, "-m", "precast.cli", "collect", "--templates", str(template),
            "--db", str(db), "--listen", f"{veth.inner_ip}:20547", "--ready-file", str(ready),
            "--log-level", "warning",
        ),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while not ready.exists():
        if col.poll() is not None or time.monotonic() > deadline:
            col.kill()
            raise AssertionError("no collector")
        time.sleep(0.05)
    return col


def test_link_down_then_up_every_kept_reading_stored_once(tmp_path: Path, veth: VethPair) -> None:
    t = template_for(veth, TEMPLATES / "minimal.toml", tmp_path / "minimal.toml")
    ready = tmp_path / "ready.json"
    db = tmp_path / "precast.db"
    col = collector_in(veth, t, db, ready)
    node = None
    try:
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


@pytest.mark.parametrize("lock", [False, True], ids=["", "heap-lock"])
def test_collector_restart_every_kept_reading_stored_once(tmp_path: Path, lock: bool) -> None:
    """The node sends UDP every 50 ms to a real collector on this host, which is stopped
    (SIGTERM) and started again on the same port and database. While it is down the host
    answers each datagram with ICMP port unreachable, which the node's next send reports
    (ECONNREFUSED): the node keeps its readings and probes with the oldest kept one until
    a probe is not refused. Every reading the ring held is stored once, none twice; what
    the node says it sent (live and late) is what was stored; the rest is lost at both
    ends (the ring's overflow and the one datagram whose refusal told of the outage)."""
    from collector_harness import Collector, by_device, stats
    from pg_server import free_port

    port = free_port()
    listen = f"127.0.0.1:{port}"
    db = tmp_path / "precast.db"
    n, ring = 120, 10  # 6 s: time for a loaded machine to stop and start a collector
    out = tmp_path / "b"
    build(
        out, TEMPLATES / "minimal.toml", "--device", "9", "--collector", listen,
        "--count", str(n), "--interval-ms", str(INTERVAL_MS), "--backlog", str(ring),
        "--seq-file", "", *(["--heap-lock"] if lock else []),
    )  # fmt: skip
    a = Collector(tmp_path, db=db, name="a", listen=listen)
    node = subprocess.Popen([micropython(), "main.py"], cwd=out, stdout=subprocess.PIPE, text=True)
    b = None
    try:
        time.sleep(n * INTERVAL_MS / 1000 / 4)
        assert a.stop() == 0, a.stderr()
        time.sleep(0.5)  # down: more readings than the ring holds
        b = Collector(tmp_path, db=db, name="b", listen=listen)
        stdout, _ = node.communicate(timeout=60)
        assert node.returncode == 0, stdout
        b.wait_for_readings(1, device=9)
        time.sleep(1.0)  # the last batch
    finally:
        if node.poll() is None:
            node.kill()
        if b is not None:
            assert b.stop() == 0, b.stderr()
    counts = re.search(r"readings (\d+) sent (\d+) failed (\d+) dropped (\d+)", stdout)
    ring_line = re.search(r"backlog kept (\d+) late (\d+) dropped (\d+) waiting (\d+)", stdout)
    assert counts and ring_line, stdout
    readings, sent, _, _ = map(int, counts.groups())
    kept, late, overflow, waiting = map(int, ring_line.groups())
    assert readings == n and waiting == 0 and late == ring and overflow == kept - ring, stdout
    con = sqlite3.connect(db)
    seqs = [s for (s,) in con.execute("SELECT seq FROM readings_2 WHERE device = 9")]
    con.close()
    dev = by_device(stats(db))[9]
    assert len(seqs) == len(set(seqs)) and dev["duplicates"] == 0, dev  # none twice
    assert len(seqs) == sent + late, (len(seqs), sent, late, stdout)  # what it said it sent
    assert dev["delayed"] == late and dev["lost"] == n - len(seqs), dev
    assert n - len(seqs) == overflow + 1, (n, len(seqs), overflow, stdout)  # + the telling one


def test_deep_sleep_through_a_link_outage_keeps_the_ring_in_rtc_memory(
    tmp_path: Path, veth: VethPair
) -> None:
    """A deep-sleeping node (an ESP32's RTC memory and deep sleep from a fake `machine`, see
    tests/fake_esp32_machine.py): each boot takes one reading, sends it and what it kept
    over the veth pair to a real collector, and sleeps; the test boots it again. The link is
    down for 12 boots: the ring (10) crosses each sleep in RTC memory (no backlog file is
    ever written), the 10 newest readings of the outage are stored once when the link is
    back, each with a taken_at from its own boot, the 2 before them counted lost."""
    import shutil

    from collector_harness import by_device, stats

    t = template_for(veth, TEMPLATES / "minimal.toml", tmp_path / "minimal.toml")
    ready = tmp_path / "ready.json"
    db = tmp_path / "precast.db"
    col = collector_in(veth, t, db, ready)
    boots, down, up, ring = 30, 6, 18, 10
    began: list[float] = []
    ended: list[float] = []
    try:
        out = tmp_path / "b"
        build(
            out, t, "--device", "9", "--transport", "packet", "--iface", veth.outer,
            "--interval-ms", "200", "--backlog", str(ring), "--sleep", "deep",
        )  # fmt: skip
        shutil.copy(Path(__file__).parents[1] / "fake_esp32_machine.py", out / "machine.py")
        for boot in range(boots):
            if boot in (down, up):
                state = "down" if boot == down else "up"
                subprocess.run(["ip", "link", "set", veth.outer, state], check=True)
            began.append(time.time())
            r = subprocess.run(
                [micropython(), "main.py"], cwd=out, capture_output=True, text=True, timeout=30,
                check=False,
            )  # fmt: skip
            ended.append(time.time())
            assert r.returncode == 0, (boot, r.stdout, r.stderr)
            assert not (out / "precast_backlog").exists(), boot  # RTC memory, not the flash
            slept = out / "deepsleep_ms"
            assert slept.exists(), (boot, r.stdout, r.stderr)  # it went to sleep
            time.sleep(int(slept.read_text()) / 1000)
            slept.unlink()
        time.sleep(1.5)  # the collector's batch
    finally:
        subprocess.run(["ip", "link", "set", veth.outer, "up"], check=False)
        col.terminate()
        col.wait(timeout=20)
    con = sqlite3.connect(db)
    got = con.execute(
        "SELECT seq, received_at, coalesce(taken_at, received_at) FROM readings_2 ORDER BY seq"
    ).fetchall()
    con.close()

    def unix(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    seqs = [s for s, _, _ in got]
    first = seqs[0]  # the seq store's first seq; one seq a boot from there
    lost = list(range(first + down, first + up - ring))
    assert len(seqs) == len(set(seqs)) == boots - len(lost), seqs  # each once
    assert sorted(set(range(first, first + boots)) - set(seqs)) == lost, seqs
    delayed = [(s - first, unix(k)) for s, r, k in got if r != k]
    assert [b for b, _ in delayed] == list(range(up - ring, up)), delayed  # the ring's ten
    for b, taken in delayed:  # taken during its own boot (this machine's clock)
        assert began[b] - 0.05 <= taken <= ended[b] + 0.05, (b, began[b], taken, ended[b])
    dev = by_device(stats(db))[9]
    assert dev["lost"] == len(lost) and dev["delayed"] == ring and dev["duplicates"] == 0, dev
