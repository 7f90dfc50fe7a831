"""One collector per SQLite file: a second is refused at start, a killed one never blocks."""

from __future__ import annotations

import signal
from pathlib import Path

from collector_harness import Collector, payload
from kit import TEMPLATES, precast


def _collect(db: Path, *extra: str) -> tuple[int, str]:
    r = precast(
        "collect", "--templates", str(TEMPLATES), "--listen", "127.0.0.1:0", "--db", str(db),
        *extra, timeout=30,
    )  # fmt: skip
    return r.returncode, r.stdout + r.stderr


def test_second_collector_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "precast.db"
    first = Collector(tmp_path, db=db, name="first")
    try:
        rc, out = _collect(db)
        assert rc == 2, out
        lines = out.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out, out
        assert str(db) in lines[0] and f"pid {first.proc.pid}" in lines[0], out
        # The first goes on storing, alone.
        first.send([payload("minimal", {"value": 1}, 5, 0)])
        first.wait_for_readings(1)
    finally:
        assert first.stop() == 0
    assert not Path(f"{db}.lock").exists()  # removed at a clean exit
    again = Collector(tmp_path, db=db, name="again")  # and the file is free again
    assert again.stop() == 0


def test_a_killed_collectors_lock_does_not_block(tmp_path: Path) -> None:
    db = tmp_path / "precast.db"
    first = Collector(tmp_path, db=db, name="first")
    first.signal(signal.SIGKILL)
    first.proc.wait()
    first.kill()
    assert Path(f"{db}.lock").read_text().strip() == str(first.proc.pid)  # left behind
    second = Collector(tmp_path, db=db, name="second")
    try:
        second.send([payload("minimal", {"value": 2}, 5, 0)])
        second.wait_for_readings(1)
        assert Path(f"{db}.lock").read_text().strip() == str(second.proc.pid)
    finally:
        assert second.stop() == 0


def test_reuse_port_needs_postgresql(tmp_path: Path) -> None:
    db = tmp_path / "precast.db"
    rc, out = _collect(db, "--reuse-port")
    assert rc == 2, out
    assert out.count("\n") == 1 and "--reuse-port" in out and "PostgreSQL" in out, out
    assert not db.exists()  # refused before anything was created


def test_a_link_at_the_lock_file_is_refused_not_followed(tmp_path: Path) -> None:
    """Another user's symlink at `<db>.lock` would have the collector (root) truncate and
    write its pid into the file it names."""
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    db = tmp_path / "precast.db"
    Path(f"{db}.lock").symlink_to(victim)
    rc, out = _collect(db)
    assert rc == 2, out
    assert out.count("\n") == 1 and "symbolic link" in out, out
    assert victim.read_text() == "keep me\n"
