"""Benchmark: plain.py's seal (the hot path of a port without viper) on both unix ports.

For a CRC-16 template (env-node) and a CMAC one (power-meter), µs per reading on the plain
path, best of --repeat, on the 64-bit PyPI port and the 32-bit one (build/mp32/micropython,
`make mp32`): Sender.patch alone, with seq and values near 2**31 (big ints on a 32-bit port,
had they been read as ints), and a whole reading, the simulated sensor's read (plain.py's
sim_walk) then patch, with seq near 2**31. Exits 1 when a 32-bit reading takes more than 3x
its 64-bit time, measured on the same machine in the same run.

    .venv/bin/python tools/bench/plain_ports.py [--repeat 5] [--n 20000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "host")]

from firmware_kit import build, no_viper  # noqa: E402

PORTS = {
    "mp64": Path(sys.executable).parent / "micropython",
    "mp32": ROOT / "build/mp32/micropython",
}
KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"
SCRIPT = """
import time, precast_config as cfg, precast_template as tpl
from precast_fw.checks import VIPER
from precast_fw.sender import Sender
from precast_fw.sensors.sim import Sensor
assert not VIPER
s = Sender(tpl, getattr(cfg, 'KEY', None))
s.seq = 2**31 - %(n)d // 2
v = s.values
for i in range(len(v)):
    v[i] = -5 if i == 0 else 2**30 + i if tpl.FIELD_SIZES[i] == 4 else i
best = None
for _ in range(%(repeat)d):
    t = time.ticks_us()
    for i in range(%(n)d):
        s.patch(v)
    us = time.ticks_diff(time.ticks_us(), t) / %(n)d
    best = us if best is None or us < best else best
sensor = Sensor(tpl, cfg)
read = sensor.read
patch = s.patch
s.seq = 2**31 - %(n)d // 2
whole = None
for _ in range(%(repeat)d):
    t = time.ticks_us()
    for i in range(%(n)d):
        read(v)
        patch(v)
    us = time.ticks_diff(time.ticks_us(), t) / %(n)d
    whole = us if whole is None or us < whole else whole
print(best, whole)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n", type=int, default=20000)
    a = ap.parse_args()
    if not PORTS["mp32"].exists():
        print("no build/mp32/micropython: `make mp32` builds it", file=sys.stderr)
        return 1
    worst = 0.0
    print("| template | patch mp64 µs | mp32 µs | ratio | read + patch mp64 µs | mp32 µs | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        for name, extra in (("env-node", []), ("power-meter", ["--key", KEY_HEX])):
            out = Path(d) / name
            build(out, ROOT / "templates" / f"{name}.toml", "--device", "3", *extra)
            no_viper(out)
            (out / "b.py").write_text(SCRIPT % {"n": a.n, "repeat": a.repeat})
            us = {}
            for port, mp in PORTS.items():
                r = subprocess.run([str(mp), "b.py"], cwd=out, capture_output=True, text=True)
                if r.returncode:
                    print(f"{name} on {port}: {r.stdout}{r.stderr}", file=sys.stderr)
                    return 1
                us[port] = [float(x) for x in r.stdout.split()]
            cells = [f"| {name} "]
            for k in (0, 1):  # patch alone, then read + patch
                ratio = us["mp32"][k] / us["mp64"][k]
                worst = max(worst, ratio)
                cells.append(f"| {us['mp64'][k]:.1f} | {us['mp32'][k]:.1f} | {ratio:.2f} ")
            print("".join(cells) + "|")
    return 0 if worst <= 3 else 1


if __name__ == "__main__":
    sys.exit(main())
