"""The outputs the docs show, made by running their commands: never edited by hand.

A ```console block in README.md or docs/*.md is a session: lines starting with `$ ` are
commands (a line ending in a backslash continues on the next), the lines after a command
up to the next one are what it prints (stdout and stderr, as a terminal shows them). Each
block runs in a fresh directory holding a link to the checkout's templates/, with this
Python's bin folder (the .venv's) first on PATH, in the order written; a command with no
lines after it is run for its effect and must exit 0; a command whose output is shown must
print exactly that (trailing spaces aside).

    .venv/bin/python tools/docs/outputs.py            # check every block; a diff where one differs
    .venv/bin/python tools/docs/outputs.py --write    # run them and write what they print

tests/docs/test_docs_outputs.py runs the check in `make test`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```console\n(.*?)^```\n", re.S | re.M)
# tshark's line when run as root (this machine's CI is root; a user's shell is not).
NOISE = re.compile(r'^Running as user "root" and group "root"\. This could be dangerous\.\n', re.M)


@dataclass
class Step:
    command: str  # as shown, continuation lines joined by the shell
    shown: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: Path
    start: int  # the block's offset in the page: where --write puts the new text
    end: int
    steps: list[Step]


def parse(page: Path) -> list[Block]:
    text = page.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        steps: list[Step] = []
        cont = False
        for line in m.group(1).splitlines():
            if cont:
                steps[-1].command += "\n" + line
                cont = line.endswith("\\")
            elif line.startswith("$ "):
                steps.append(Step(line[2:]))
                cont = line.endswith("\\")
            elif steps:
                steps[-1].shown.append(line.rstrip())
            else:
                raise SystemExit(f"{page.name}: a console block must start with '$ '")
        blocks.append(Block(page, m.start(1), m.end(1), steps))
    return blocks


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def run(block: Block, root: Path) -> list[list[str]]:
    """What each step prints, run in a fresh directory."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "100",
        "TZ": "UTC",
        "NO_COLOR": "1",
    }
    got: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="precast-docs-") as tmp:
        (Path(tmp) / "templates").symlink_to(root / "templates")
        for step in block.steps:
            proc = subprocess.run(
                ["bash", "-c", step.command],
                cwd=tmp,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=120,
            )
            out = NOISE.sub("", proc.stdout)
            lines = [line.rstrip() for line in out.splitlines()]
            while lines and not lines[-1]:
                lines.pop()
            if not step.shown and proc.returncode != 0:
                raise SystemExit(
                    f"{block.page.name}: `{step.command}` exited {proc.returncode}:\n{out}"
                )
            got.append(lines)
    return got


def render(block: Block, got: list[list[str]]) -> str:
    out = []
    for step, lines in zip(block.steps, got, strict=True):
        out.append(f"$ {step.command}")
        if step.shown:  # a step shown without output stays so
            out.extend(lines)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write what the commands print")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: this one)")
    args = ap.parse_args(argv)
    bad = 0
    for page in pages(args.root):
        blocks = parse(page)
        if not blocks:
            continue
        text = page.read_text()
        new = text
        for block in reversed(blocks):  # offsets stay right when writing back to front
            now = render(block, run(block, args.root))
            was = text[block.start : block.end]
            if now != was:
                bad += 1
                sys.stdout.writelines(
                    difflib.unified_diff(
                        was.splitlines(keepends=True),
                        now.splitlines(keepends=True),
                        f"{page.name} (shown)",
                        f"{page.name} (printed now)",
                    )
                )
            new = new[: block.start] + now + new[block.end :]
        if args.write and new != text:
            page.write_text(new)
    if bad and not args.write:
        print(f"{bad} block(s) differ from what their commands print: run outputs.py --write")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
