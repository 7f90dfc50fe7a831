"""`make bench`: run the benchmarks one after another, each printing its own table.

    make bench                          # firmware, sender, collector, ingest (about 10 minutes)
    make bench BENCH_ARGS="firmware"    # just one; any of: firmware sender collector ingest

Each benchmark measures its ways side by side in one run and reports
ratios, since these machines are shared and one absolute time means little.
Every benchmark's output, with the machine's load average (os.getloadavg, 1
minute) when it started and when it ended, goes to docs/BENCHMARKS.md as it is
printed, so the tables in the docs all come from one run (BENCH_DOC=PATH
writes elsewhere, BENCH_DOC= not at all).
The sender benchmark needs root (network namespaces, AF_PACKET), and
trafgen (Debian netsniff-ng) for its native anchor.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BENCHES = ["firmware", "sender", "collector", "ingest"]
# What each benchmark is run with for the docs: the drain table (--drain 70000, with the
# SQLite floor in the same run) beside the rate search.
ARGS: dict[str, list[list[str]]] = {
    "firmware": [[]],
    "sender": [[]],
    "ingest": [[]],
    "collector": [
        [],
        ["--drain", "70000", "--only", "precast", "precast-pg"],
        ["--floods"],
    ],
}


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def run_one(name: str, args: list[str], doc: list[str]) -> int:
    """Run one benchmark, echo its output, add it to doc with the load around it."""
    cmd = [sys.executable, str(HERE / f"{name}.py"), *args]
    shown = " ".join(["tools/bench/" + name + ".py", *args])
    print(f"\n## {name}: {shown}", flush=True)
    before, t = load(), time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    out = []
    for line in p.stdout:
        print(line, end="", flush=True)
        out.append(line)
    rc = p.wait()
    after = load()
    print(f"({name}: exit {rc} after {time.monotonic() - t:.0f} s)", flush=True)
    doc += [
        f"\n## {name}\n\n    .venv/bin/python {shown}\n\n",
        f"Load average (1 min) {before} at the start, {after} at the end; exit {rc}, "
        f"{time.monotonic() - t:.0f} s.\n\n",
        "".join(out),
    ]
    return rc


def main(argv: list[str]) -> int:
    names = argv or BENCHES
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(
            f"bench: unknown benchmark {unknown[0]!r} (one of: {' '.join(BENCHES)})",
            file=sys.stderr,
        )
        return 2
    failed = []
    target = os.environ.get("BENCH_DOC", str(ROOT / "docs" / "BENCHMARKS.md"))
    doc = [
        "# Benchmarks: one `make bench` run\n\n",
        f"Written by tools/bench/run.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}. "
        "The machine may be shared: each table says the load around it. README's "
        "Benchmarks section says what each table measures and its targets.\n",
    ]
    for name in names:
        for args in ARGS[name]:
            if run_one(name, args, doc):
                failed.append(name)
            if target:
                Path(target).write_text("".join(doc), encoding="utf-8")
    if failed:
        print(f"bench: failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
