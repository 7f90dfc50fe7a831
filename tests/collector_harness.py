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


def stats(db: Path | str) -> dict[str, Any]:
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
        db: Path | str | None = None,
        templates: Path = TEMPLATES,
        name: str = "c",
        listen: str = "127.0.0.1:0",
    ) -> None:
        # Made first: the plugin's start stops a collector that never got ready (stop() below).
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        super().__init__(
            [str(templates)],
            tmp,
            args=extra,
            db=db,
            name=name,
            log_level=None,
            capture_stdout=True,
            listen=listen,
        )

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
        self.close_reader()
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


def is_pg(db: Path | str) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def pg_query(url: str, q: str) -> list[tuple[Any, ...]]:
    """Rows of a query, read with psycopg (not through precast)."""
    import psycopg

    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(q).fetchall()]


def pg_exec(url: str, q: str) -> None:
    """Run a statement with psycopg (not through precast), committed."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(q)


def count_rows(db: Path | str, template: int = 2) -> int:
    """Rows in readings_<template>, counted by the database itself."""
    q = f"SELECT count(*) FROM readings_{template}"
    if is_pg(db):
        return int(pg_query(str(db), q)[0][0])
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(q).fetchone()[0])
    finally:
        conn.close()


def view_rows(db: Path | str) -> list[tuple[int, int, int, dict[str, Any]]]:
    """(template, device, seq, fields) of the readings view."""
    q = "SELECT template, device, seq, fields FROM readings"
    if is_pg(db):
        return [(t, d, s, f) for t, d, s, f in pg_query(str(db), q)]
    conn = sqlite3.connect(db)
    try:
        return [(t, d, s, json.loads(f)) for t, d, s, f in conn.execute(q)]
    finally:
        conn.close()


def rows(db: Path | str, template_id: int, fields: Sequence[str]) -> list[tuple[Any, ...]]:
    """(device, seq, epoch, *fields) of a readings table, in insertion order, read directly."""
    cols = ", ".join(["device", "seq", "epoch", *fields])
    if is_pg(db):
        # A table only ever appended to: ctid order is insertion order.
        return pg_query(str(db), f"SELECT {cols} FROM readings_{template_id} ORDER BY ctid")
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
