"""Every command's --help has a description and examples, and every example parses.

The examples are parsed by the real parser (the command is not run), so an
example that names a flag the command no longer has, or a value its type
refuses, fails here. An argument error is one line and a pointer to --help.
"""

from __future__ import annotations

import argparse
import shlex

import pytest
from kit import precast
from precast.cli import build_parser


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_a_description_and_examples_that_parse(name: str) -> None:
    cmd = _commands()[name]
    assert cmd.description and len(cmd.description) > 20, name
    assert cmd.epilog and cmd.epilog.startswith("examples:"), name
    lines = [ln.strip() for ln in cmd.epilog.splitlines()[1:]]
    mine = [ln for ln in lines if ln.startswith(f"precast {name} ")]
    assert mine, f"no example of `precast {name}`"
    for line in mine:
        words = shlex.split(line.split(" | ")[0].split(" && ")[0])[1:]
        try:
            args, extra = build_parser().parse_known_args(words)
        except SystemExit:
            pytest.fail(f"example does not parse: {line}")
        assert args.command == name
        assert all(not w.startswith("-") for w in extra), (line, extra)


def test_an_argument_error_is_one_line_and_points_to_help() -> None:
    r = precast("build", "templates/env-node.toml", "--device", "x", "--out", "/tmp/x")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr
    assert "--device" in r.stderr and "precast build --help" in r.stderr
    assert "usage:" not in r.stderr and "Traceback" not in r.stderr
