"""`make bench`: run the benchmarks one after another, each printing its own table.

    make bench                          # firmware, sender, collector (about 10 minutes)
    make bench BENCH_ARGS="firmware"    # just one; any of: firmware sender collector

Each benchmark measures its ways side by side in one run and reports
ratios, since these machines are shared and one absolute time means little.
The sender benchmark needs root (network namespaces, AF_PACKET), and
trafgen (Debian netsniff-ng) for its native anchor.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["firmware", "sender", "collector"]


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
    for name in names:
        print(f"\n## {name}: {sys.executable} tools/bench/{name}.py", flush=True)
        t = time.monotonic()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"({name}: exit {rc} after {time.monotonic() - t:.0f} s)", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"bench: failed: {' '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
