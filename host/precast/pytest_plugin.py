"""pytest fixtures for testing precast templates, firmware and collectors (a pytest11 plugin).

Installed with precast (entry point `precast`), so a test only names a fixture:

- `precast_templates`: the template files or directories the other fixtures use,
  `templates/` under pytest's rootdir by default. Override the fixture in a conftest.py or a
  test module to use your own.
- `precast_key`: the AES-128 key (bytes) of cmac templates, None by default; override it.
- `precast_collector`: a running `precast collect` on 127.0.0.1 and an ephemeral port with a
  temporary SQLite database. `.address` ("127.0.0.1:PORT") is what a sender or
  `deploy(collector=...)` takes; `.wait_for_readings(n, device=None)` waits until n readings
  are stored; `.readings(device=None)` returns them; `.stats()` is `precast stats --json`
  and `.device(n)` one device's counters from it.
- `sensor_fleet`: a function running `precast simulate` (K devices, with loss, dup, reorder
  and corrupt probabilities, and an outage=(START, SECONDS) whose readings each device keeps,
  up to backlog=N, and sends late as delayed frames) at the test's collector, or at
  `to="HOST:PORT"`; it returns a FleetRun with what was sent, which faults were injected and
  what the backlogs kept, sent late and dropped.
- `micropython_board`: a virtual board (`precast board`: the MicroPython unix port behind a
  TCP port) with a temporary filesystem. `.port` is the socket:// URL mpremote and
  `precast deploy` take, `.root` its files; `.deploy(template, device=N, **options)` runs
  `precast deploy` (options as build's flags: count=5 is --count 5), `.mpremote(*args)`
  the mpremote CLI. Skipped, with the reason, where the unix port is missing.

Fixtures only, no hooks: each starts real processes and stops them when the test ends.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
_PRECAST = [sys.executable, "-m", "precast.cli"]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT_S) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class PrecastCollector:
    """A `precast collect` process and its database.

    `args` are more `precast collect` flags; `name` names its log and ready files in workdir
    (two collectors can share one workdir and, with `db`, one database: an SQLite path or a
    PostgreSQL URL); `listen` its --listen (port 0: a free one); `log_level` None
    leaves the collector's default; `capture_stdout` keeps stdout apart from the log, on
    `.proc.stdout` (for `--jsonl -`)."""

    def __init__(
        self,
        templates: Sequence[str],
        workdir: Path,
        key: bytes | None = None,
        *,
        args: Sequence[str] = (),
        db: Path | str | None = None,
        name: str = "collector",
        listen: str = "127.0.0.1:0",
        log_level: str | None = "warning",
        capture_stdout: bool = False,
    ) -> None:
        self.db = db or workdir / "precast.db"
        self.log_path = workdir / f"{name}.log"
        ready = self.ready = workdir / f"{name}.ready.json"
        ready.unlink(missing_ok=True)
        cmd = [
            *_PRECAST,
            "collect",
            "--listen",
            listen,
            "--db",
            str(self.db),
            "--ready-file",
            str(ready),
        ]
        if log_level is not None:
            cmd += ["--log-level", log_level]
        for t in templates:
            cmd += ["--templates", str(t)]
        if key is not None:
            # A key file only this user can read: a key on the command line is everyone's.
            key_path = workdir / f"{name}.key"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key.hex() + "\n")
            cmd += ["--key-file", str(key_path)]
        cmd += list(args)
        self._log: IO[bytes] = open(self.log_path, "ab")
        out: Any = subprocess.PIPE if capture_stdout else self._log
        err: Any = self._log if capture_stdout else subprocess.STDOUT
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"precast collect did not start:\n{_tail(self.log_path)}")
            time.sleep(0.02)
        self.info: dict[str, Any] = json.loads(ready.read_text())
        self.host: str = self.info["host"]
        self.port: int = self.info["port"]

    @property
    def address(self) -> str:
        """HOST:PORT of the collector's UDP socket."""
        return f"{self.host}:{self.port}"

    def count(self, device: int | None = None) -> int:
        """Readings stored so far (of one device, or all)."""
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        except sqlite3.Error:
            return 0
        try:
            if device is None:
                row = con.execute("SELECT count(*) FROM readings").fetchone()
            else:
                row = con.execute("SELECT count(*) FROM readings WHERE device = ?", (device,))
                row = row.fetchone()
            return int(row[0])
        except sqlite3.Error:
            return 0  # no readings table before the collector's first write
        finally:
            con.close()

    def wait_for_readings(self, n: int, device: int | None = None, timeout: float = 10.0) -> int:
        """Wait until at least n readings are stored; how many there are. Fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.count(device)
            if got >= n:
                return got
            if time.monotonic() > deadline:
                who = "" if device is None else f" of device {device}"
                raise AssertionError(f"{got} of {n} readings{who} stored after {timeout:g} s")
            if self.proc.poll() is not None:
                raise AssertionError(f"the collector exited:\n{_tail(self.log_path)}")
            time.sleep(0.05)

    def readings(self, device: int | None = None) -> list[dict[str, Any]]:
        """Stored readings as dicts (device, template, seq, epoch, received_at, source,
        fields), by device and seq."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        con.row_factory = sqlite3.Row
        try:
            sql = "SELECT * FROM readings"
            params: tuple[int, ...] = ()
            if device is not None:
                sql, params = sql + " WHERE device = ?", (device,)
            rows = con.execute(sql + " ORDER BY device, epoch, seq", params).fetchall()
        finally:
            con.close()
        out = []
        for r in rows:
            d = dict(r)
            d["fields"] = json.loads(d["fields"])
            out.append(d)
        return out

    def stats(self) -> dict[str, Any]:
        """`precast stats --json` of the collector's database."""
        r = subprocess.run(
            [*_PRECAST, "stats", "--db", str(self.db), "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if r.returncode != 0:
            raise AssertionError(f"precast stats failed: {r.stderr.strip()}")
        doc: dict[str, Any] = json.loads(r.stdout)
        return doc

    def device(self, device: int) -> dict[str, Any]:
        """One device's counters from stats() (received, lost, duplicates, late, ...)."""
        for d in self.stats()["devices"]:
            if d["device"] == device:
                return dict(d)
        raise AssertionError(f"device {device} is not in the collector's stats")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the collector stores what it has), then wait; its exit status."""
        _stop(self.proc, timeout)
        self._log.close()
        return int(self.proc.returncode)


@dataclass
class FleetRun:
    """What one `precast simulate` run sent, and the faults it injected."""

    devices: list[int]
    sent: int
    lost: int
    duplicated: int
    reordered: int
    corrupted: int
    output: str
    kept: int = 0  # readings kept through an outage
    sent_late: int = 0  # of them, sent late as delayed frames
    dropped: int = 0  # readings an outage lost: a full backlog's oldest, or no backlog

    @property
    def stored(self) -> int:
        """Readings a collector that loses nothing stores: each good reading once."""
        return self.sent - self.duplicated - self.corrupted


def run_fleet(
    to: str,
    templates: Sequence[str],
    devices: int = 3,
    rate: float = 1000,
    duration: float = 1.0,
    loss: float = 0.0,
    dup: float = 0.0,
    reorder: float = 0.0,
    corrupt: float = 0.0,
    seed: int = 1,
    device_base: int = 1,
    key: bytes | None = None,
    outage: tuple[float, float] | None = None,
    backlog: int | None = None,
) -> FleetRun:
    """Run `precast simulate` at a HOST:PORT; its FleetRun."""
    cmd = [
        *_PRECAST,
        "simulate",
        "--templates",
        *map(str, templates),
        "--devices",
        str(devices),
        "--device-base",
        str(device_base),
        "--rate",
        str(rate),
        "--duration",
        str(duration),
        "--loss",
        str(loss),
        "--dup",
        str(dup),
        "--reorder",
        str(reorder),
        "--corrupt",
        str(corrupt),
        "--seed",
        str(seed),
        "--udp",
        to,
        "--no-progress",
    ]
    if key is not None:
        cmd += ["--key", key.hex()]
    if outage is not None:
        cmd += ["--outage", f"{outage[0]}:{outage[1]}"]
    if backlog is not None:
        cmd += ["--backlog", str(backlog)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=False)
    out = r.stdout + r.stderr
    if r.returncode != 0:
        raise AssertionError(f"precast simulate failed ({r.returncode}):\n{out}")
    sent = re.search(r"sent (\d+) frames in", out)
    faults = re.search(
        r"faults: lost (\d+), duplicated (\d+), reordered (\d+), corrupted (\d+)", out
    )
    if sent is None:
        raise AssertionError(f"no summary from precast simulate:\n{out}")
    lost, dupd, reord, corr = (int(g) for g in faults.groups()) if faults else (0, 0, 0, 0)
    kept = re.search(r"backlog: kept (\d+), sent late (\d+), dropped (\d+)", out)
    k, late, dropped = (int(g) for g in kept.groups()) if kept else (0, 0, 0)
    return FleetRun(
        list(range(device_base, device_base + devices)),
        int(sent.group(1)),
        lost,
        dupd,
        reord,
        corr,
        out,
        k,
        late,
        dropped,
    )


class MicropythonBoard:
    """A `precast board` process: the MicroPython unix port (`micropython`, else the one
    `precast board` finds) behind a TCP port."""

    def __init__(self, root: Path, workdir: Path, micropython: str | None = None) -> None:
        self.root = root
        self.log_path = workdir / "board.log"
        self._log: IO[bytes] = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*_PRECAST, "board", "--listen", "127.0.0.1:0", "--root", str(root)]
            + (["--micropython", micropython] if micropython else []),
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the first line, printed once listening
        m = re.search(r"listening on ([\d.]+):(\d+)", line)
        if m is None:
            self.stop()
            raise RuntimeError(f"precast board did not start: {line!r}\n{_tail(self.log_path)}")
        self.host, self.tcp_port = m.group(1), int(m.group(2))

    @property
    def port(self) -> str:
        """The URL mpremote and precast deploy/monitor take."""
        return f"socket://{self.host}:{self.tcp_port}"

    def deploy(
        self, template: str | Path, device: int, *args: str, timeout: float = 120, **options: Any
    ) -> str:
        """`precast deploy` to this board; its output. Options are build's flags by name
        (count=5, interval_ms=0, collector="127.0.0.1:PORT", mpy=True)."""
        cmd = [*_PRECAST, "deploy", "--port", self.port, str(template), "--device", str(device)]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is not None and value is not False:
                cmd += [flag, str(value)]
        r = subprocess.run(
            [*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if r.returncode != 0:
            raise AssertionError(
                f"precast deploy failed ({r.returncode}):\n{r.stdout}{r.stderr}{self._died()}"
            )
        return r.stdout

    def mpremote(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        """Run `mpremote connect PORT ARGS...`; its output."""
        r = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", self.port, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"mpremote {' '.join(args)} failed:\n{r.stdout}{r.stderr}{self._died()}"
            )
        return r.stdout

    def _died(self) -> str:
        if self.proc.poll() is None:
            return ""
        return f"\nthe board process ended ({self.proc.returncode}):\n{_tail(self.log_path)}"

    def exec(self, code: str) -> str:
        """Run code on the board after a soft reset (mpremote exec); its output."""
        return self.mpremote("exec", code)

    def stop(self) -> None:
        """End the board."""
        _stop(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def precast_templates(request: pytest.FixtureRequest) -> list[str]:
    """Template files or directories: rootdir/templates; override to use your own."""
    return [str(request.config.rootpath / "templates")]


@pytest.fixture
def precast_key() -> bytes | None:
    """The AES-128 key of cmac templates (None: no cmac templates)."""
    return None


@pytest.fixture
def precast_collector(
    precast_templates: list[str],
    precast_key: bytes | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrecastCollector]:
    """A running collector on 127.0.0.1 and a free port, with a temporary database."""
    col = PrecastCollector(precast_templates, tmp_path_factory.mktemp("collector"), precast_key)
    try:
        yield col
    finally:
        col.stop()


@pytest.fixture
def sensor_fleet(
    request: pytest.FixtureRequest, precast_templates: list[str], precast_key: bytes | None
) -> Callable[..., FleetRun]:
    """A function running a simulated fleet (`precast simulate`), by default at the test's
    collector: sensor_fleet(devices=3, rate=1000, duration=1, loss=0.1, ...) -> FleetRun."""

    def run(
        to: str | None = None, templates: Sequence[str] | None = None, **knobs: Any
    ) -> FleetRun:
        if to is None:
            to = request.getfixturevalue("precast_collector").address
        knobs.setdefault("key", precast_key)
        return run_fleet(to, templates or precast_templates, **knobs)

    return run


@pytest.fixture
def micropython_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MicropythonBoard]:
    """A virtual MicroPython board with a temporary filesystem (skipped without the port)."""
    from precast.boards.virtual import find_micropython
    from precast.errors import PrecastError

    try:
        find_micropython()
    except PrecastError as e:
        pytest.skip(f"no virtual board: {e}")
    work = tmp_path_factory.mktemp("board")
    board = MicropythonBoard(work / "root", work)
    try:
        yield board
    finally:
        board.stop()
