"""Cross-check with another author's fault injector: `precast simulate` says what it did."""

from __future__ import annotations

import re
from pathlib import Path

from collector_harness import Collector, stats
from kit import KEY, TEMPLATES, precast


def test_counters_match_the_faults_simulate_injected(tmp_path: Path) -> None:
    col = Collector(tmp_path, "--key", KEY.hex())
    try:
        r = precast(
            "simulate",
            "--templates",
            str(TEMPLATES),
            "--devices",
            "6",
            "--rate",
            "3000",
            "--duration",
            "1.5",
            "--loss",
            "0.05",
            "--dup",
            "0.03",
            "--reorder",
            "0.03",
            "--corrupt",
            "0.02",
            "--seed",
            "3",
            "--key",
            KEY.hex(),
            "--udp",
            f"127.0.0.1:{col.port}",
            "--no-progress",
        )
    finally:
        assert col.stop() == 0, col.stderr()
    assert r.returncode == 0, r.stderr
    m = re.search(r"lost (\d+), duplicated (\d+), reordered (\d+), corrupted (\d+)", r.stdout)
    sent = re.search(r"sent (\d+) frames", r.stdout)
    assert m and sent, r.stdout
    loss, dup, reorder, corrupt = map(int, m.groups())
    assert min(loss, dup, reorder, corrupt) > 0
    doc = stats(col.db)
    devs = doc["devices"]
    assert len(devs) == 6
    assert doc["drops"] == {"queue": 0, "kernel": 0, "jsonl": 0}
    assert sum(d["lost"] for d in devs) == loss + corrupt
    assert sum(d["duplicates"] for d in devs) == dup
    assert sum(d["late"] for d in devs) == reorder
    assert doc["rejected"].get("crc", 0) + doc["rejected"].get("mic", 0) == corrupt
    assert sum(d["received"] for d in devs) + dup + corrupt == int(sent.group(1))
