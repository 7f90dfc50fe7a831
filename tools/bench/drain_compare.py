"""Before and after in one run: collector.py --drain from another checkout against this one.

Runs `collector.py --drain N --only precast precast-pg` of each tree in turn
(before, after, before, after, ...: load that drifts hits both alike), the
other tree's collector imported from its own host/ (PYTHONPATH) with this
venv, then prints each round's figures, the load average around each, and the
median CPU per reading of each side with their ratio.

    git worktree add /tmp/before main   # or a clone at the commit to compare with
    .venv/bin/python tools/bench/drain_compare.py /tmp/before [--rounds 2] [-n 70000]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| (precast(?:-pg)?) \| ([\d,]+) of ([\d,]+) \| ([\d,]+) \| ([\d.]+) us \|")
FLOOR = re.compile(r"is ([\d.]+)x it")


def drain(tree: Path, n: int) -> tuple[dict[str, tuple[float, float]], float | None, str]:
    """{kind: (readings/s, µs CPU a reading)}, the floor ratio, and the output."""
    env = dict(os.environ, PYTHONPATH=str(tree / "host"))
    cmd = [sys.executable, str(tree / "tools/bench/collector.py"), "--drain", str(n)]
    out = subprocess.run(
        [*cmd, "--only", "precast", "precast-pg"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            got[m[1]] = (float(m[4].replace(",", "")), float(m[5]))
    f = FLOOR.search(out)
    return got, float(f[1]) if f else None, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="the other checkout (its tools/ and host/)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-n", type=int, default=70_000, help="datagrams queued per drain")
    args = ap.parse_args()
    sides = {"before": args.before.resolve(), "after": ROOT}
    runs: dict[str, list[tuple[dict[str, tuple[float, float]], float | None]]] = {
        s: [] for s in sides
    }
    for r in range(args.rounds):
        for side, tree in sides.items():
            load0 = os.getloadavg()[0]
            got, ratio, _ = drain(tree, args.n)
            runs[side].append((got, ratio))
            cells = ", ".join(f"{k} {v[0]:,.0f}/s {v[1]:.2f} us" for k, v in got.items())
            floor = f", SQLite floor ratio {ratio:.2f}x" if ratio else ""
            print(
                f"round {r + 1} {side}: {cells}{floor} "
                f"(load {load0:.2f} -> {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    print(
        "\n| collector | before: CPU per reading | after | after / before | readings/s before "
        "| after |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("precast", "precast-pg"):
        med = {
            s: (
                statistics.median(g[kind][1] for g, _ in runs[s] if kind in g),
                statistics.median(g[kind][0] for g, _ in runs[s] if kind in g),
            )
            for s in sides
        }
        b, a = med["before"], med["after"]
        print(
            f"| {kind} | {b[0]:.2f} us | {a[0]:.2f} us | {a[0] / b[0]:.2f} | {b[1]:,.0f} "
            f"| {a[1]:,.0f} |"
        )
    for s in sides:
        ratios = [x for _, x in runs[s] if x]
        if ratios:
            print(
                f"\nSQLite collector / its floor, {s}: median {statistics.median(ratios):.2f}x "
                "(target at most 1.5x)"
            )


if __name__ == "__main__":
    main()
