"""`precast top`: one frame against a real collector's database, and the live view in tmux."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from collector_harness import Collector, by_device, payload, stats
from kit import precast, precast_cmd, wait_for
from precast.view.top import DeviceRow, Frame, View, parse_keys, render
from sender_kit import need

ENV = {"humidity": 50, "pressure": 101325, "battery": 3000}


def fill(col: Collector) -> int:
    """Readings with a known hole, a duplicate and a bad CRC; the number of readings stored."""
    stored = 0
    for seq in range(20):
        if seq in (5, 6, 7):
            continue  # lost
        col.send([payload("env-node", {"temperature": 20 + seq / 10, **ENV}, 7, seq)])
        stored += 1
    col.send([payload("env-node", {"temperature": 21, **ENV}, 7, 10)])  # a duplicate
    for seq in range(10):
        col.send([payload("minimal", {"value": 100 + seq}, 8, seq)])
        stored += 1
    bad = bytearray(payload("minimal", {"value": 1}, 8, 10))
    bad[-1] ^= 1
    col.send([bytes(bad)])
    col.send([payload("minimal", {"value": 5}, 9, 0)])
    return stored + 1


def _table_rows(text: str) -> dict[int, list[str]]:
    """The first line of each device's row: its cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) >= 4 and cells[0].isdigit():  # narrow: device, rd/s, lost, stale, latest
            rows[int(cells[0])] = cells
    return rows


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("top")
    col = Collector(tmp)
    try:
        n = fill(col)
        wait_for(lambda: sum(d["received"] for d in stats(col.db)["devices"]) == n, 10, "stored")
    finally:
        assert col.stop() == 0
    yield col.db


def test_once_shows_every_device_with_the_counts_of_stats(db: Path) -> None:
    want = by_device(stats(db))
    r = precast("top", "--db", str(db), "--once")
    assert r.returncode == 0, r.stderr
    rows = _table_rows(r.stdout)
    assert set(rows) == set(want) == {7, 8, 9}
    for dev, d in want.items():
        cells = rows[dev]
        assert cells[1] == d["template_name"]
        assert int(cells[3]) == d["received"]
        assert int(cells[4]) == d["lost"]
        assert float(cells[5]) == round(d["loss_pct"], 2)
        assert int(cells[6]) == d["duplicates"]
        assert int(cells[7]) == d["bad"]
    assert (want[7]["lost"], want[7]["duplicates"], want[8]["bad"]) == (3, 1, 1)
    # The latest values, from the database alone, with units and a sparkline.
    assert re.search(r"temperature\s+21\.9 degC\s+[▁▂▃▄▅▆▇█ ]*[▁▂▃▄▅▆▇█]", r.stdout), r.stdout
    assert re.search(r"value\s+109\b", r.stdout)
    assert "rejected: crc 1" in r.stdout


def test_once_from_a_running_collectors_metrics(tmp_path: Path) -> None:
    col = Collector(tmp_path, "--metrics", "127.0.0.1:0")
    try:
        n = fill(col)
        wait_for(lambda: sum(d["received"] for d in stats(col.db)["devices"]) == n, 10, "stored")
        want = by_device(stats(col.db))
        r = precast("top", "--metrics", col.info["metrics"], "--db", str(col.db), "--once")
        assert r.returncode == 0, r.stderr
        rows = _table_rows(r.stdout)
        assert set(rows) == set(want)
        for dev, d in want.items():
            assert [int(rows[dev][i]) for i in (3, 4, 6, 7)] == [
                d["received"],
                d["lost"],
                d["duplicates"],
                d["bad"],
            ]
        assert "queue 0" in r.stdout
    finally:
        assert col.stop() == 0
    r = precast("top", "--metrics", col.info["metrics"], "--once")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr  # gone: one line


class Tmux:
    """A tmux server of this test's own (its socket named with our pid), one pane."""

    def __init__(self, tmp: Path) -> None:
        self.tmux = need("tmux", "tmux")
        self.sock = f"precast-top-{os.getpid()}"
        self.tmp = tmp

    def run(self, *args: str) -> str:
        r = subprocess.run(
            [self.tmux, "-L", self.sock, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top")

    def flag(self, name: str) -> str:
        return self.run("display-message", "-p", "-t", "top", f"#{{{name}}}").strip()

    def kill(self) -> None:
        subprocess.run(
            [self.tmux, "-L", self.sock, "kill-server"], capture_output=True, check=False
        )


def test_live_view_in_tmux_quits_on_q_and_restores_the_terminal(db: Path, tmp_path: Path) -> None:
    t = Tmux(tmp_path)
    before, after, rc = tmp_path / "before", tmp_path / "after", tmp_path / "rc"
    top = shlex.join(precast_cmd("top", "--db", str(db)))
    script = (
        f"stty -g > {before}; echo BEFORE-TOP; {top}; echo $? > {rc}; "
        f"stty -g > {after}; echo AFTER-TOP; sleep 60"
    )
    try:
        t.run("new-session", "-d", "-s", "top", "-x", "180", "-y", "45", "sh", "-c", script)
        clock_re = re.compile(r"\d\d:\d\d:\d\d UTC")
        wait_for(lambda: clock_re.search(t.screen()) is not None, 20, "the live view's header")
        assert t.flag("alternate_on") == "1"
        first = t.screen()
        assert "precast top" in first, first
        assert _table_rows(first).keys() == {7, 8, 9}, first
        clock = clock_re.search(first)
        assert clock
        # It refreshes about once a second: the clock moves.
        wait_for(lambda: clock.group(0) not in t.screen(), 5, "a refresh")
        t.run("send-keys", "-t", "top", "q")
        wait_for(lambda: rc.exists() and rc.read_text().strip() != "", 10, "top to quit")
        assert rc.read_text().strip() == "0"
        wait_for(lambda: after.exists() and "AFTER-TOP" in t.screen(), 10, "the shell")
        assert before.read_text() == after.read_text()  # cbreak undone, echo back on
        screen = t.screen()
        assert "BEFORE-TOP" in screen and "precast top" not in screen  # main screen back
        assert t.flag("alternate_on") == "0"
        assert t.flag("cursor_flag") == "1"
    finally:
        t.kill()


def test_live_view_refuses_a_pipe(db: Path) -> None:
    r = precast("top", "--db", str(db))
    assert r.returncode == 2 and "--once" in r.stderr and "Traceback" not in r.stderr


def test_ctrl_c_quits_too(db: Path, tmp_path: Path) -> None:
    t = Tmux(tmp_path)
    rc = tmp_path / "rc"
    top = shlex.join(precast_cmd("top", "--db", str(db)))
    try:
        # The shell traps SIGINT (a handler, so top gets the default back) to outlive Ctrl-C.
        script = f"trap : INT; {top}; echo $? > {rc}; sleep 60"
        t.run("new-session", "-d", "-s", "top", "-x", "160", "-y", "40", "sh", "-c", script)
        wait_for(lambda: "precast top" in t.screen(), 20, "the live view")
        time.sleep(0.5)
        t.run("send-keys", "-t", "top", "C-c")
        wait_for(lambda: rc.exists() and rc.read_text().strip() != "", 10, "top to quit")
        assert rc.read_text().strip() == "0"
        assert t.flag("alternate_on") == "0"
    finally:
        t.kill()


def _fleet() -> Frame:
    """38 devices, the first 25 stale (as in the issue: the sending ones were below)."""
    rows = [
        DeviceRow(
            device=i,
            template="env-node",
            rate=0.0 if i < 25 else 20.0,
            received=1000 + i,
            stale=i < 25,
            silent_s=200.0 if i < 25 else 0.1,
            fields=[f"temperature {20 + i:>11} degC", "humidity 50 %"],
        )
        for i in range(38)
    ]
    return Frame("fleet.db", rows, {}, {})


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 60)])
def test_a_frame_fits_the_terminal_active_first_with_more(width: int, height: int) -> None:
    from rich.console import Console

    view = View()
    console = Console(width=width, height=height, force_terminal=False)
    with console.capture() as cap:
        console.print(render(_fleet(), width, height, view))
    lines = cap.get().splitlines()
    assert len(lines) <= height and max(len(x) for x in lines) <= width, cap.get()
    rows = list(_table_rows(cap.get()))
    assert rows[0] == 25 and len(rows) == view.shown  # sending devices first
    assert f"+{38 - view.shown} more" in lines[-1]
    view.key("end")
    assert view.offset == 37
    view.key("home")
    view.key("pgdn")
    assert view.offset == view.shown
    view.key("sort")
    assert view.order == "device" and view.offset == 0


def test_keys_are_parsed_from_escape_sequences() -> None:
    assert parse_keys(b"\x1b[A\x1b[B\x1b[5~\x1b[6~\x1b[H\x1b[Fsq") == [
        "up",
        "down",
        "pgup",
        "pgdn",
        "home",
        "end",
        "sort",
        "quit",
    ]
