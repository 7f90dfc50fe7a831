"""README's example commands, run as written (adapted only where hardware or a network is
needed: --pcap for --udp), give what README says they give."""

from __future__ import annotations

import re
import shlex
import sqlite3
from pathlib import Path

from kit import TEMPLATES, docs_text, precast
from precast.pytest_plugin import PrecastCollector

README = docs_text()


def _block_after(marker: str) -> list[str]:
    """The indented lines of the first code block after `marker`, continuations joined."""
    text = README[README.index(marker) :]
    lines: list[str] = []
    started = False
    for line in text.splitlines()[1:]:
        if line.startswith("    "):
            started = True
            lines.append(line.strip())
        elif started and line.strip():
            break
    joined = " ".join(lines).replace("\\ ", " ")
    return [c.strip() for c in re.split(r"(?=precast )|(?=sqlite3 )", joined) if c.strip()]


def test_the_simulate_example_gives_the_summary_readme_shows(tmp_path: Path) -> None:
    (cmd,) = [c for c in _block_after("## A simulated fleet") if c.startswith("precast simulate")]
    words = shlex.split(cmd)[1:]
    at = words.index("--udp")
    words[at : at + 2] = ["--pcap", str(tmp_path / "fleet.pcap"), "--no-progress"]
    r = precast(*words, timeout=120)
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        if line.startswith(("fleet:", "faults:")):
            assert f"    {line}\n" in README, line  # the same faults from the same seed
        if line.startswith("sent "):
            assert re.match(r"sent 50000 frames in [\d.]+ s: \d+ frames/s, 0 errors", line)


def test_the_decode_errors_look_as_readme_says() -> None:
    payload = precast(
        "encode",
        str(TEMPLATES / "env-node.toml"),
        "--device",
        "7",
        "--seq",
        "1",
        "--payload-only",
        "temperature=21.45",
        "humidity=40.5",
        "pressure=101325",
        "battery=3300",
    ).stdout.strip()
    bad_crc = payload[:-2] + ("00" if payload[-2:] != "00" else "01")
    r = precast("decode", str(TEMPLATES), bad_crc, payload[:-2])
    assert r.returncode == 1
    got = r.stdout.splitlines()
    assert got[0] == '{"error": "crc"}' and '`{"error": "crc"}`' in README
    assert got[1] == '{"error": "length: 23 bytes, template 1 needs 24"}'
    assert '`{"error": "length: 23\nbytes, template 1 needs 24"}`' in README


def test_the_sqlite_examples_run_on_a_collectors_database(
    precast_collector: PrecastCollector,
) -> None:
    sent = precast(
        "send",
        str(TEMPLATES / "env-node.toml"),
        "--device",
        "7",
        "--count",
        "5",
        "--udp",
        precast_collector.address,
        "--no-progress",
        "temperature=21.5",
        "humidity=40.25",
        "pressure=101325",
        "battery=3300",
    )
    assert sent.returncode == 0, sent.stderr
    precast_collector.wait_for_readings(5, device=7)
    queries = [c for c in _block_after("**Database.**") if c.startswith("sqlite3 ")]
    assert len(queries) == 2
    con = sqlite3.connect(precast_collector.db)
    try:
        for q in queries:
            sql = shlex.split(q)[2]
            rows = con.execute(sql).fetchall()
            assert rows, q
        assert (4, 40.25) in con.execute(shlex.split(queries[1])[2]).fetchall()
    finally:
        con.close()


def test_the_quick_start_commands_parse() -> None:
    """Every `precast ...` line of the quick start names flags the command has."""
    from precast.cli import build_parser

    cmds = [c for c in _block_after("## Quick start") if c.startswith("precast ")]
    cmds += [c for c in _block_after("With no hardware, a virtual board") if "precast " in c]
    assert len(cmds) >= 4
    for c in cmds:
        words = shlex.split(c.split(" # ")[0].split(" &")[0])
        words = words[words.index("precast") + 1 :] if "precast" in words else words[1:]
        _args, extra = build_parser().parse_known_args(words)
        assert not [w for w in extra if w.startswith("-")], (c, extra)
