"""Helpers for the collector tests: a real `precast collect` process, frames, and a judge.

The judge (`expected_counts`) counts from the definitions in issue 4 over a
whole arrival list with sets, not with the collector's sliding bitmap.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from precast import Layout, compile_template, encode, load_templates
from precast.wire.constants import PAYLOAD_OFFSET

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
BIN = Path(sys.executable).parent
KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")  # RFC 4493's example key

LAYOUTS: dict[str, Layout] = {
    lay.template.name: lay for lay in map(compile_template, load_templates([TEMPLATES]))
}


def precast_cmd(*args: str) -> list[str]:
    exe = BIN / "precast"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "precast.cli", *args]


def run_precast(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        precast_cmd(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def stats(db: Path) -> dict[str, Any]:
    """`precast stats --json`, parsed."""
    r = run_precast("stats", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def by_device(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {d["device"]: d for d in doc["devices"]}


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Collector:
    """A `precast collect` subprocess on 127.0.0.1 with an ephemeral port."""

    def __init__(
        self,
        tmp: Path,
        *extra: str,
        db: Path | None = None,
        templates: Path = TEMPLATES,
        name: str = "c",
    ) -> None:
        self.db = db or tmp / "precast.db"
        self.ready = tmp / f"{name}.ready"
        self.ready.unlink(missing_ok=True)
        self.log = tmp / f"{name}.log"
        self._log = open(self.log, "ab")
        cmd = precast_cmd(
            "collect",
            "--listen",
            "127.0.0.1:0",
            "--templates",
            str(templates),
            "--db",
            str(self.db),
            "--ready-file",
            str(self.ready),
            *extra,
        )
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        try:
            wait_for(lambda: self.ready.exists() or self.proc.poll() is not None, 20, "ready")
        except AssertionError:
            self.kill()
            raise
        if self.proc.poll() is not None:
            raise AssertionError(f"collector exited {self.proc.returncode}: {self.stderr()}")
        self.info = json.loads(self.ready.read_text())
        self.port: int = self.info["port"]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)

    def send(self, datagrams: Iterable[bytes]) -> int:
        n = 0
        for d in datagrams:
            self.sock.sendto(d, ("127.0.0.1", self.port))
            n += 1
        return n

    def stderr(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait, and the exit status."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        finally:
            self.sock.close()
            self._log.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self._log.close()


def payload(
    layout: str, values: dict[str, object], device: int, seq: int, key: bytes | None = None
) -> bytes:
    """The UDP payload of a frame built by precast.wire.codec.encode."""
    return encode(LAYOUTS[layout], values, device, seq, key)[PAYLOAD_OFFSET:]


def rows(db: Path, template_id: int, fields: Sequence[str]) -> list[tuple[Any, ...]]:
    """(device, seq, epoch, *fields) of a readings table, in insertion order, read directly."""
    conn = sqlite3.connect(db)
    try:
        cols = ", ".join(["device", "seq", "epoch", *fields])
        q = f"SELECT {cols} FROM readings_{template_id} ORDER BY rowid"
        return [tuple(r) for r in conn.execute(q)]
    finally:
        conn.close()


def expected_counts(seqs: Sequence[int]) -> dict[str, int]:
    """Counters from the definitions, for one epoch's arrivals (no reboot, no replay)."""
    seen: set[int] = set()
    late = dups = 0
    top = -1
    for s in seqs:
        if s in seen:
            dups += 1
            continue
        if s < top:
            late += 1
        seen.add(s)
        top = max(top, s)
    return {
        "received": len(seen),
        "duplicates": dups,
        "late": late,
        "lost": max(seen) - min(seen) + 1 - len(seen),
        "last_seq": max(seen),
    }
