"""Helpers for the collector tests: a real `precast collect` process, frames, and a judge.

The judge (`expected_counts`) counts from the definitions in issue 4 over a
whole arrival list with sets, not with the collector's sliding bitmap.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from kit import TEMPLATES, precast
from precast import Layout, compile_template, encode, load_templates
from precast.pytest_plugin import PrecastCollector
from precast.wire.constants import PAYLOAD_OFFSET

LAYOUTS: dict[str, Layout] = {
    lay.template.name: lay for lay in map(compile_template, load_templates([TEMPLATES]))
}


def stats(db: Path) -> dict[str, Any]:
    """`precast stats --json`, parsed."""
    r = precast("stats", "--db", str(db), "--json")
    assert r.returncode == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


def by_device(doc: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {d["device"]: d for d in doc["devices"]}


class Collector(PrecastCollector):
    """The plugin's `precast collect` (PrecastCollector) with what these tests add: the
    collector's default log level, stdout apart from the log, a socket to send from, signals."""

    def __init__(
        self,
        tmp: Path,
        *extra: str,
        db: Path | None = None,
        templates: Path = TEMPLATES,
        name: str = "c",
    ) -> None:
        super().__init__(
            [str(templates)], tmp, args=extra, db=db, name=name, log_level=None, capture_stdout=True
        )
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
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait, and the exit status."""
        try:
            return super().stop(timeout)
        finally:
            self.sock.close()

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
