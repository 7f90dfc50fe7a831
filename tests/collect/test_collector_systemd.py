"""The systemd unit in the repo: systemd accepts it, and its command line is one precast takes."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from kit import BIN, ROOT, need
from precast.cli import build_parser

UNIT = ROOT / "tools" / "systemd" / "precast-collect.service"
TEMPLATE = ROOT / "tools" / "systemd" / "precast-collect@.service"


def exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))


def test_unit_command_line_parses() -> None:
    words = exec_start()
    assert words[0].endswith("/precast") and words[1] == "collect"
    args = build_parser().parse_args(words[1:])
    assert args.func.__name__ == "cmd_collect"
    assert args.listen == "0.0.0.0:20547" and args.metrics == "127.0.0.1:9547"
    assert "ExecReload=/bin/kill -HUP $MAINPID" in UNIT.read_text()


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    need("systemd-analyze", "systemd")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(exec_start()[0], str(BIN / "precast")))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [x for x in r.stderr.splitlines() if UNIT.name in x]
    assert r.returncode == 0 and not problems, r.stderr


def test_template_unit_runs_n_collectors_on_one_port() -> None:
    """precast-collect@PORT: --reuse-port, its own metrics port and spill file, no password."""
    text = TEMPLATE.read_text()
    line = next(x for x in text.replace("\\\n", " ").splitlines() if x.startswith("ExecStart="))
    words = shlex.split(line.removeprefix("ExecStart="))
    words = [w.replace("%i", "9548").replace("${PRECAST_DB}", "postgresql://u@h/d") for w in words]
    args = build_parser().parse_args(words[1:])
    assert args.func.__name__ == "cmd_collect" and args.reuse_port
    assert args.metrics == "127.0.0.1:9548" and args.spill == "/var/lib/precast/spill-9548.jsonl"
    assert args.db == "postgresql://u@h/d" and args.stop_timeout < 30  # < TimeoutStopSec
    assert "PGPASSFILE=%d/pgpass" in text and "UMask=0027" in text


def test_systemd_analyze_verifies_the_template(tmp_path: Path) -> None:
    need("systemd-analyze", "systemd")
    unit = tmp_path / "precast-collect@9548.service"
    text = TEMPLATE.read_text().replace("/opt/precast/.venv/bin/precast", str(BIN / "precast"))
    unit.write_text(text.replace("/etc/precast/collect.env", "-/etc/precast/collect.env"))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [x for x in r.stderr.splitlines() if "precast-collect@" in x]
    assert r.returncode == 0 and not problems, r.stderr


def test_unit_sandbox_and_umask() -> None:
    """UMask 0027 (files 0640), no new privileges, a read-only system but the state directory,
    which holds every file the collector writes."""
    settings = dict(
        x.split("=", 1) for x in UNIT.read_text().splitlines() if "=" in x and x[0].isupper()
    )
    assert settings["UMask"] == "0027"
    assert settings["NoNewPrivileges"] == "true" and settings["PrivateTmp"] == "true"
    assert settings["ProtectSystem"] == "strict"
    writable = settings["ReadWritePaths"].split()
    assert settings["StateDirectory"] == "precast" and writable == ["/var/lib/precast"]
    args = build_parser().parse_args(exec_start()[1:])
    for path in (args.db, args.spill):
        assert Path(path).parent == Path("/var/lib/precast"), path
