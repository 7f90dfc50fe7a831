"""The systemd unit in the repo: systemd accepts it, and its command line is one precast takes."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from kit import BIN, ROOT, need
from precast.cli import build_parser

UNIT = ROOT / "tools" / "systemd" / "precast-collect.service"


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
