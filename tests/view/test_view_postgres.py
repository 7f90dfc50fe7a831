"""Every reader on a PostgreSQL URL: stats, plot, top --once, device reset and the plugin's
PrecastCollector, against the real server the suite starts, from one collector run.

psql (pg_server.psql) is the judge of what is stored; the password is never printed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from collector_harness import Collector, by_device, payload
from kit import wait_for
from pg_server import PASSWORD
from precast.cli import main as precast_main

ENV = {"humidity": 50, "pressure": 101325, "battery": 3000}
HOLE = (5, 6, 7)  # device 7's seqs never sent


DB = "t_view_postgres"


@dataclass
class Run:
    """The database one collector filled, and the collector (still running)."""

    server: Any
    url: str
    tmp: Path
    collector: Collector


@pytest.fixture(scope="module")
def run(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Device 7 (env-node) with a hole and a duplicate, device 8 (minimal) with a bad CRC,
    device 9 one reading; the collector keeps running for `device reset`."""
    url = pg_server.create_db(DB)
    tmp = tmp_path_factory.mktemp("view-pg")
    col = Collector(tmp, db=url)
    try:
        for seq in range(20):
            if seq not in HOLE:
                col.send([payload("env-node", {"temperature": 20 + seq / 10, **ENV}, 7, seq)])
        col.send([payload("env-node", {"temperature": 21, **ENV}, 7, 10)])  # a duplicate
        col.send([payload("minimal", {"value": 100 + seq}, 8, seq) for seq in range(10)])
        bad = bytearray(payload("minimal", {"value": 1}, 8, 10))
        bad[-1] ^= 1
        col.send([bytes(bad)])
        col.send([payload("minimal", {"value": 5}, 9, 0)])
        # The plugin's count(), through the store's Reader on the URL.
        assert col.wait_for_readings(28) == 28
        wait_for(lambda: pg_server.psql("SELECT count(*) FROM rejects", db=DB) == "1", 10, "crc")
        yield Run(pg_server, url, tmp, col)
    finally:
        col.stop()


def psql_count(run: Run, query: str) -> int:
    return int(run.server.psql(query, db=DB))


def precast(capsys: pytest.CaptureFixture[str], *args: str) -> CompletedProcess[str]:
    """The command through the entry point in this process (matplotlib and rich load once)."""
    rc = precast_main(list(args))
    out = capsys.readouterr()
    return CompletedProcess(list(args), rc, out.out, out.err)


def no_password(*outputs: str) -> None:
    for text in outputs:
        assert PASSWORD not in text, text


def test_plugin_reads_the_url_through_the_store(run: Run) -> None:
    col = run.collector
    assert col.count() == psql_count(run, "SELECT count(*) FROM readings") == 28
    assert col.count(8) == psql_count(run, "SELECT count(*) FROM readings WHERE device = 8")
    got = col.readings(7)
    assert [r["seq"] for r in got] == [s for s in range(20) if s not in HOLE]
    assert got[0]["fields"]["temperature"] == 20.0 and got[0]["template"] == 1
    assert got[0]["received_at"].endswith("Z") and got[0]["source"].startswith("127.0.0.1:")


def test_a_reader_that_cannot_read_raises_rather_than_counting_zero(run: Run) -> None:
    """A PostgreSQL test fails at once, not after waiting for readings that never come."""
    from precast.collect.store import StoreError

    col = run.collector
    col.close_reader()
    col.db = run.url.replace(PASSWORD, "not-the-" + PASSWORD)
    try:
        with pytest.raises(StoreError) as e:
            col.count()
    finally:
        col.close_reader()
        col.db = run.url
    assert PASSWORD not in str(e.value) and "127.0.0.1" in str(e.value)
    assert col.count() == 28


def test_stats_on_the_url(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    r = precast(capsys, "stats", "--db", run.url, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    devs = by_device(doc)
    assert (devs[7]["received"], devs[7]["lost"], devs[7]["duplicates"]) == (17, 3, 1)
    assert devs[8]["received"] == 10 and devs[9]["received"] == 1
    assert doc["rejected"] == {"crc": 1}
    table = precast(capsys, "stats", "--db", run.url)
    assert table.returncode == 0 and "precast devices (postgresql://precast@" in table.stdout
    assert "nothing dropped" in table.stdout and "dropped before" not in table.stdout
    no_password(r.stdout, r.stderr, table.stdout, table.stderr)


def test_plot_on_the_url(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    out = run.tmp / "t.svg"
    r = precast(capsys, "plot", "--db", run.url, "--field", "temperature", "value", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "2 panels, 28 readings" in r.stderr
    svg = out.read_text()
    m = re.search(r'<g id="precast-temperature-device-7">\s*<path d="([^"]*)"', svg)
    assert m and len(re.findall(r"M ", m.group(1))) == 2  # broken at the hole
    assert "precast-value-device-8" in svg and "precast-value-device-9" in svg
    one = precast(capsys, "plot", "--db", run.url, "--device", "9", "-o", str(run.tmp / "9.svg"))
    assert one.returncode == 0 and "1 panel, 1 reading" in one.stderr, one.stderr
    empty = precast(
        capsys,
        "plot",
        "--db",
        run.url,
        "--until",
        "2001-01-01T00:00:00Z",
        "-o",
        str(run.tmp / "e.svg"),
    )
    assert empty.returncode == 1 and "no readings" in empty.stderr
    no_password(r.stdout, r.stderr, one.stderr, empty.stderr)


def test_top_once_on_the_url(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    r = precast(capsys, "top", "--db", run.url, "--once")
    assert r.returncode == 0, r.stderr
    rows = {}
    for line in r.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) > 5 and cells[0].isdigit():
            rows[int(cells[0])] = cells
    assert set(rows) == {7, 8, 9}
    assert [rows[7][i] for i in (3, 4, 6)] == ["17", "3", "1"]
    assert rows[8][7] == "1"  # the bad CRC
    assert re.search(r"temperature\s+21\.9 degC\s+[▁▂▃▄▅▆▇█ ]*[▁▂▃▄▅▆▇█]", r.stdout), r.stdout
    assert re.search(r"value\s+109\b", r.stdout) and re.search(r"value\s+5\b", r.stdout)
    no_password(r.stdout, r.stderr)


def test_device_reset_on_the_url(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    r = precast(capsys, "device", "reset", "--db", run.url, "7")
    assert r.returncode == 0, r.stderr
    assert "books reset by the collector" in r.stdout, r.stdout
    assert run.server.psql("SELECT restart FROM devices WHERE device = 7", db=DB) == "t"
    unknown = precast(capsys, "device", "reset", "--db", run.url, "12345")
    assert unknown.returncode != 0 and "no device 12345" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
    no_password(r.stdout, r.stderr, unknown.stdout, unknown.stderr)


def test_follow_returns_each_reading_once(run: Run) -> None:
    """top's incremental read on PostgreSQL (no rowid: it reads the last FOLLOW_LAG seconds
    again and drops what it returned): every reading once, new ones as they are stored."""
    from precast.collect.store import open_reader

    col = run.collector
    reader = open_reader(run.url)
    try:
        minimal = next(t for t in reader.templates().values() if t.name == "minimal")
        got, mark = reader.follow(minimal, None, 0.0)
        assert sorted((r.device, r.seq) for r in got) == [(8, s) for s in range(10)] + [(9, 0)]
        again, mark = reader.follow(minimal, mark, 0.0)
        assert again == []
        col.send([payload("minimal", {"value": 200 + s}, 9, s) for s in range(1, 4)])
        col.wait_for_readings(3 + 1, device=9)
        new, mark = reader.follow(minimal, mark, 0.0)
        assert [(r.device, r.seq, r.values) for r in new] == [(9, s, (200 + s,)) for s in (1, 2, 3)]
        assert reader.follow(minimal, mark, 0.0)[0] == []
        latest = {r.device: r.seq for r in reader.latest(minimal)}
        assert latest == {8: 9, 9: 3}
    finally:
        reader.close()
