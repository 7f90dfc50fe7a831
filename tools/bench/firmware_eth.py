"""The raw Ethernet rows of the firmware benchmark: each SPI driver against its chip model.

For env-node (CRC-16) on the MicroPython unix port, per driver (w5500,
enc28j60), N readings each of:

    model:    Sender.patch, then Transport.send into the register-level chip
              model of tests/chips (the model parses every SPI byte in Python,
              so this is mostly the model's time, not the driver's)
    null bus: the same send over a bus that moves no bytes, its answer buffers
              left holding "done, link up, room" (the ENC28J60's EIR read answers
              TXIF): the driver's own Python cost

and, counted by the model, the SPI transactions and bytes per reading,
which at the chip's default clock (the README's wiring defaults) give the
time on the bus per reading on a real board. `firmware.py` prints these
after its own tables; alone: `.venv/bin/python tools/bench/firmware_eth.py`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))

from precast.boards.build import add_build_arguments, build_bundle  # noqa: E402
from precast.boards.ethernet import DEFAULTS  # noqa: E402

BIN = Path(sys.executable).parent
DRIVERS = ("w5500", "enc28j60")

BENCH = r"""
import gc, json, time
import precast_config as cfg, precast_template as tpl
from precast_fw.sender import Sender
from wire import Wire
if CHIP == "w5500":
    from w5500_model import W5500 as Chip
    from precast_fw.transport_w5500 import Transport
else:
    from enc28j60_model import ENC28J60 as Chip
    from precast_fw.transport_enc28j60 import Transport


class NullBus:
    # Moves no bytes: the driver's answer buffers keep what was put in them once.
    def write(self, buf):
        pass

    def readinto(self, buf, out=0):
        pass

    def write_readinto(self, wbuf, rbuf):
        if len(wbuf) == 2:  # ENC28J60: EIR reads TXIF (sent), no LINKIF; ECON1, ESTAT 0
            rbuf[1] = 0x08 if wbuf[0] == 0x1C else 0

    def __call__(self, v):
        pass


def loop(t, n):
    s = Sender(tpl, None)
    v = [2150, 4000, 101325, 3300]
    patch = s.patch
    send = t.send
    mv = s.frame_mv
    i = 0
    gc.collect()
    t0 = time.ticks_us()
    while i < n:
        v[0] = 2150 + (i & 7)
        patch(v)
        send(mv)
        i += 1
    return time.ticks_diff(time.ticks_us(), t0)


chip = Chip(Wire(None))
t = Transport(tpl, cfg, spi=chip, cs=chip.cs)
loop(t, 10)
tx0, oct0 = chip.transactions, chip.octets
best = None
for _ in range(REPEAT):
    dt = loop(t, N)
    best = dt if best is None else min(best, dt)
per_tx = (chip.transactions - tx0) / (REPEAT * N)
per_oct = (chip.octets - oct0) / (REPEAT * N)
null = NullBus()
t._spi = null
t._cs = null
if CHIP == "w5500":  # (the ENC28J60's answers come from NullBus.write_readinto)
    t._a5[3] = t._a5b[3] = 0x10  # Sn_IR SEND_OK; with Sn_SR 0x42: Sn_TX_FSR reads 0x1042
    t._a5[4] = t._a5b[4] = 0x42
    t._a4[3] = 0x01  # PHYCFGR LNK
bare = None
for _ in range(REPEAT):
    dt = loop(t, N)
    bare = dt if bare is None else min(bare, dt)
class Nothing:
    def send(self, mv):
        pass


alone = None
for _ in range(REPEAT):
    dt = loop(Nothing(), N)
    alone = dt if alone is None else min(alone, dt)
print(json.dumps({"model_us": best / N, "null_us": bare / N, "patch_us": alone / N,
                  "transactions": per_tx,
                  "octets": per_oct, "frame": len(tpl.FRAME)}))
"""


def run(chip: str, n: int, repeat: int, work: Path) -> dict[str, float]:
    """One driver's numbers (µs per reading, SPI transactions and bytes per reading)."""
    p = argparse.ArgumentParser()
    add_build_arguments(p)
    template = ROOT / "templates" / "env-node.toml"
    args = [str(template), "--device", "1", "--out", str(work), "--transport", chip]
    args += ["--collector", "127.0.0.1"]  # the model sends nowhere; build wants a destination
    build_bundle(p.parse_args([*args, "--eth-reset", "none", "--watchdog-ms", "0"]))
    for f in (ROOT / "tests" / "chips").glob("*.py"):
        shutil.copy(f, work)
    (work / "bench_eth.py").write_text(f"CHIP = {chip!r}\nN = {n}\nREPEAT = {repeat}\n" + BENCH)
    r = subprocess.run(
        [str(BIN / "micropython"), "bench_eth.py"],
        cwd=work,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        sys.exit(f"micropython failed:\n{r.stdout}{r.stderr}")
    out: dict[str, float] = json.loads(r.stdout)
    return out


def run_all(n: int, repeat: int, work: Path) -> dict[str, dict[str, float]]:
    return {chip: run(chip, n, repeat, work / chip) for chip in DRIVERS}


def table(results: dict[str, dict[str, float]]) -> str:
    lines = [
        "raw Ethernet drivers, env-node (crc16, a 66-byte frame):",
        "",
        "| driver | µs/reading, model | µs/reading, null bus | patch + no-op send"
        " | SPI transactions | SPI bytes | on the bus at |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for chip, r in results.items():
        hz = DEFAULTS[chip].baud
        bus_us = r["octets"] * 8 / hz * 1e6
        lines.append(
            f"| {chip} | {r['model_us']:.1f} | {r['null_us']:.1f} | {r['patch_us']:.2f}"
            f" | {r['transactions']:.1f}"
            f" | {r['octets']:.0f} | {hz // 1_000_000} MHz: {bus_us:.0f} µs |"
        )
    lines += [
        "",
        "The model column is mostly the model's Python (it parses every byte); the null bus"
        " is the driver's own cost. Bus time is bytes x 8 / clock: CS edges and the"
        " gaps between transactions come on top on a real board.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="readings per pass")
    ap.add_argument("--repeat", type=int, default=3, help="the best of this many passes")
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = ap.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(args.n, args.repeat, Path(tmp))
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
