"""README's claims about `precast collect`, each judged from outside the collector.

One collector run serves most of them: repeated --templates, a keys file with a `*` line and
`0x` ids, the ready file's keys, --log-level, WAL mode, INTEGER vs REAL columns, the rejects
and counters tables, the duplicates/late/reboots metric totals, queue_depth and
dropped{where="queue"}, and the stats --json contract. The judges are sqlite3's own PRAGMAs,
the TOML templates read with tomllib, prometheus_client's parser, and this file's counts of
what it sent.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from collector_harness import Collector, by_device, stats
from kit import ROOT, TEMPLATES, need, precast_cmd, wait_for
from precast import compile_template, encode_raw, load_template
from precast.wire.constants import PAYLOAD_OFFSET
from prometheus_client.parser import text_string_to_metric_families

KEY_A = bytes.fromhex("000102030405060708090a0b0c0d0e0f")  # device 0x2d
KEY_B = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")  # device 300
KEY_STAR = bytes.fromhex("ffeeddccbbaa99887766554433221100")  # every other device
WINDOW = 16

MINIMAL = compile_template(load_template(TEMPLATES / "minimal.toml"))
POWER = compile_template(load_template(TEMPLATES / "power-meter.toml"))
ENV = compile_template(load_template(TEMPLATES / "env-node.toml"))


def minimal(device: int, seq: int) -> bytes:
    return encode_raw(MINIMAL, [seq & 0xFFFF], device, seq)[PAYLOAD_OFFSET:]


def power(device: int, seq: int, key: bytes) -> bytes:
    return encode_raw(POWER, [seq, -seq, 230, 0.5], device, seq, key)[PAYLOAD_OFFSET:]


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def readme_stats_example() -> dict[str, Any]:
    """The `precast stats --json` example README shows, parsed."""
    text = (ROOT / "docs" / "collector.md").read_text()
    after = text[text.index("**`precast stats --json`** prints") :].split("\n")[1:]
    block = []
    for line in after[1:]:  # the blank line, then the indented block
        if not line.startswith("    "):
            break
        block.append(line)
    doc: dict[str, Any] = json.loads("\n".join(block))
    return doc


def test_collector_claims(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(
        "# device  AES-128 key\n"
        f"300       {KEY_B.hex()}\n"
        f"0x2d      {KEY_A.hex()}   # hex id\n"
        f"*         {KEY_STAR.hex()}\n"
    )
    col = Collector(
        tmp_path,
        "--templates",
        str(TEMPLATES / "env-node.toml"),
        "--templates",
        str(TEMPLATES / "power-meter.toml"),
        "--keys",
        str(keys),
        "--window",
        str(WINDOW),
        "--metrics",
        "127.0.0.1:0",
        "--log-level",
        "warning",
        templates=TEMPLATES / "minimal.toml",
    )
    try:
        # The ready file: exactly the keys README lists, and true ones.
        info = col.info
        assert set(info) == {"pid", "host", "port", "db", "metrics"}, info
        assert info["pid"] == col.proc.pid and info["host"] == "127.0.0.1"
        assert Path(info["db"]).resolve() == col.db.resolve()
        assert info["metrics"].startswith("127.0.0.1:")
        # Keys: 0x2d (45) and 300 by their lines, 77 by `*`; 45 with the `*` key is refused.
        sent = [power(45, 0, KEY_A), power(300, 0, KEY_B), power(77, 0, KEY_STAR)]
        sent += [power(45, 1, KEY_STAR)]  # the wrong key for 45: mic
        # Device 5 (CRC): 0..9, a duplicate of 3, 12 then late 11, 28 (the window ahead of
        # 12); then, silent for a second, seq 2 (more than the window below 28) and 3, which
        # confirms it: a reboot (below).
        seqs = [*range(10), 3, 12, 11, 28]
        sent += [minimal(5, s) for s in seqs]
        # Device 300 (MIC): a seq far below its highest is a replay, refused.
        sent += [power(300, 100, KEY_B), power(300, 1, KEY_B)]
        # Every repeated --templates is loaded: an env-node reading is stored too.
        sent += [encode_raw(ENV, [2150, 4025, 101325, 3000], 9, 0)[PAYLOAD_OFFSET:]]
        col.send(sent)
        want = 3 + 13 + 1 + 1  # power-meter 45, 300, 77; minimal 5; power-meter 300; env-node
        wait_for(lambda: col.count() == want, 20, "the readings before the reboot")
        time.sleep(1.1)  # its old sequence silent (a frame identical to a stored one: a replay)
        col.send(encode_raw(MINIMAL, [1000 + s], 5, s)[PAYLOAD_OFFSET:] for s in (2, 3))
        wait_for(lambda: col.count() == want + 2, 20, "every good reading stored")
        wait_for(lambda: stats(col.db)["rejected"].get("replay") == 1, 20, "the replay")
        samples = metric_samples(f"http://{info['metrics']}/metrics")
        # WAL mode, while the collector has the database open.
        con = sqlite3.connect(f"file:{col.db}?mode=ro", uri=True)
        try:
            assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            rejects = dict(con.execute("SELECT reason, count FROM rejects"))
            counters = dict(con.execute("SELECT name, count FROM counters"))
            columns = {
                tid: {r[1]: r[2] for r in con.execute(f"PRAGMA table_info(readings_{tid})")}
                for tid in (1, 2, 3)
            }
        finally:
            con.close()
        assert col.proc.poll() is None
    finally:
        assert col.stop() == 0
    err = col.stderr()
    assert " INFO " not in err and "listening on" not in err, err  # --log-level warning
    # The rejects and counters tables.
    assert rejects.get("mic") == 1 and rejects.get("replay") == 1, rejects
    assert counters.get("queue_drops", 0) == 0 and counters.get("kernel_drops", 0) == 0
    assert set(counters) <= {"queue_drops", "kernel_drops"}, counters
    # INTEGER when scale and offset are integers, else REAL: the TOML files say which.
    for name, tid in (("env-node", 1), ("minimal", 2), ("power-meter", 3)):
        doc = tomllib.loads((TEMPLATES / f"{name}.toml").read_text())
        for f in doc["field"]:
            scale, offset = f.get("scale", 1), f.get("offset", 0)
            integral = float(scale).is_integer() and float(offset).is_integer()
            want = "INTEGER" if integral and f["type"] != "f32" else "REAL"
            assert columns[tid][f["name"]] == want, (name, f, columns[tid])
    # Metric totals, counted from what this test sent.
    d5 = (("device", "5"),)
    assert samples[("precast_device_duplicates_total", d5)] == 1
    assert samples[("precast_device_late_total", d5)] == 1
    assert samples[("precast_device_reboots_total", d5)] == 1
    assert samples[("precast_queue_depth", ())] == 0
    assert samples[("precast_dropped_total", (("where", "queue"),))] == 0
    assert samples[("precast_rejected_total", (("reason", "replay"),))] == 1
    assert samples[("precast_device_received_total", (("device", "77"),))] == 1
    assert samples[("precast_device_received_total", (("device", "45"),))] == 1
    # The stats --json contract: every key README shows, with this run's values.
    doc = stats(col.db)
    assert set(doc) >= {"devices", "rejected", "drops"}
    assert {k: doc["drops"][k] for k in ("queue", "kernel")} == {"queue": 0, "kernel": 0}
    example = readme_stats_example()
    assert set(doc) >= set(example)
    assert set(doc["drops"]) >= set(example["drops"])  # more keys may follow, README says
    keys_shown = set(example["devices"][0])
    devs = by_device(doc)
    for d in devs.values():
        assert keys_shown <= set(d), sorted(keys_shown - set(d))
    assert devs[5]["template_name"] == "minimal" and devs[5]["reboots"] == 1
    assert devs[5]["epoch"] == 1 and devs[5]["last_seq"] == 3
    assert devs[300]["replays"] == 1 and devs[300]["last_seq"] == 100
    assert devs[45]["bad"] == 1
    assert devs[9]["template_name"] == "env-node"
    assert devs[5]["first_seen"].endswith("Z") and devs[5]["last_seen"].endswith("Z")


def test_rcvbuf_cap_is_a_warning(tmp_path: Path) -> None:
    """Without CAP_NET_ADMIN the buffer is capped by net.core.rmem_max: a warning, not an error."""
    setpriv = need("setpriv", "util-linux")
    ready = tmp_path / "ready"
    want = 1 << 30  # above any rmem_max a test machine has
    cmd = [
        setpriv,
        "--bounding-set=-net_admin",
        "--inh-caps=-net_admin",
        *precast_cmd(),
        "collect",
        "--listen",
        "127.0.0.1:0",
        "--templates",
        str(TEMPLATES),
        "--db",
        str(tmp_path / "c.db"),
        "--rcvbuf",
        str(want),
        "--ready-file",
        str(ready),
    ]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: ready.exists() or p.poll() is not None, 30, "ready")
        assert p.poll() is None, p.communicate()
    finally:
        p.terminate()
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    line = next((x for x in err.splitlines() if "receive buffer is" in x), "")
    assert f"asked for {want}" in line and "net.core.rmem_max" in line, err
    got = int(line.split("receive buffer is ")[1].split()[0])
    assert got == 2 * rmem_max  # the kernel doubles what it grants, for its bookkeeping
    assert "Traceback" not in err
    assert os.geteuid() != 0 or "WARNING" in line
