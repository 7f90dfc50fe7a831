"""The pytest plugin's harnesses: a collector, a simulated fleet and a virtual board, as
processes a test starts and stops (precast.pytest_plugin's fixtures hand them out).

`PrecastCollector` runs `precast collect` and reads what it stored through the
store's Reader, on an SQLite path or a PostgreSQL URL alike; `run_fleet` runs
`precast simulate` and parses its summary into a FleetRun; `MicropythonBoard`
runs `precast board`. Importable from precast.pytest_plugin too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from precast.collect.store import Reader, open_reader

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
        self._reader: Reader | None = None
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
        if not any(a == "--spill" or a.startswith("--spill=") for a in args):
            # What a database outage spills goes beside the log, not into the caller's cwd.
            cmd += ["--spill", str(workdir / f"{name}.spill.jsonl")]
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

    @property
    def reader(self) -> Reader:
        """The store's Reader of the collector's database (opened at first use)."""
        if self._reader is None:
            self._reader = open_reader(self.db)
        return self._reader

    def count(self, device: int | None = None) -> int:
        """Readings stored so far (of one device, or all); a database that cannot be read
        raises StoreError (a test fails at once rather than waiting for readings)."""
        return self.reader.count(device)

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
        """Stored readings as dicts (device, template, seq, epoch, received_at, taken_at,
        source, fields), by device, epoch and seq."""

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        out = []
        for t in self.reader.templates().values():
            for r in self.reader.readings(t, None if device is None else [device]):
                fields = {f.name: v for f, v in zip(t.fields, r.values, strict=True)}
                out.append(
                    {
                        "device": r.device,
                        "template": t.id,
                        "seq": r.seq,
                        "epoch": r.epoch,
                        "received_at": iso(r.at),
                        "taken_at": iso(r.taken),
                        "source": r.source,
                        "fields": fields,
                    }
                )
        out.sort(key=lambda d: (d["device"], d["epoch"], d["seq"]))
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

    def close_reader(self) -> None:
        """Close the Reader, if one was opened."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the collector stores what it has), then wait; its exit status."""
        self.close_reader()
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
