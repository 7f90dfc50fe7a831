"""`make demo`: a collector, a few simulated sensors for about 10 s, then `precast stats`.

A real `precast collect` listens on 127.0.0.1 (an ephemeral port) with a
database in a temporary directory (or --db PATH). The sensors are
`precast simulate` (a fleet with a little loss, duplication, reordering
and corruption) when that command is installed, else a small loop here that
encodes readings with precast.wire.codec and paces them with a token bucket.
When they are done, the collector is stopped with SIGTERM, the
per-device table is printed, and `precast plot` draws the readings to
demo.png (--png PATH) when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from precast import compile_template, encode, load_templates
from precast.wire.constants import PAYLOAD_OFFSET

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
BIN = Path(sys.executable).parent
KEY = "2b7e151628aed2a6abf7158809cf4f3c"  # RFC 4493's example key, for the cmac template


def precast(*args: str) -> list[str]:
    exe = BIN / "precast"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "precast.cli", *args]


def has_simulate() -> bool:
    r = subprocess.run(precast("simulate", "--help"), capture_output=True, check=False)
    return r.returncode == 0


def simulate(port: int, devices: int, rate: float, seconds: float) -> None:
    """The fleet simulator: faults on, so the table has something to show."""
    subprocess.run(
        precast(
            "simulate",
            "--templates",
            str(TEMPLATES),
            "--devices",
            str(devices),
            "--rate",
            str(rate),
            "--duration",
            str(seconds),
            "--loss",
            "0.02",
            "--dup",
            "0.01",
            "--reorder",
            "0.01",
            "--corrupt",
            "0.005",
            "--seed",
            "1",
            "--key",
            KEY,
            "--udp",
            f"127.0.0.1:{port}",
            "--no-progress",
        ),
        check=True,
    )


def loop(port: int, devices: int, rate: float, seconds: float) -> None:
    """A stand-in fleet: sine readings through precast.wire.codec.encode, token-bucket paced."""
    layouts = [compile_template(t) for t in load_templates([TEMPLATES])]
    key = bytes.fromhex(KEY)
    rng = random.Random(1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    seqs = [0] * devices
    tokens, last, end = 1.0, time.monotonic(), time.monotonic() + seconds
    sent = i = 0
    while (now := time.monotonic()) < end:
        tokens = min(tokens + (now - last) * rate, rate / 10)
        last = now
        if tokens < 1:
            time.sleep(min(0.01, (1 - tokens) / rate))
            continue
        tokens -= 1
        dev = i % devices
        i += 1
        lay = layouts[dev % len(layouts)]
        values = {}
        for s in lay.fields:
            lo, hi = s.field.range
            lo_u = 0.0 if lo is None else float(lo) * s.field.scale + s.field.offset
            hi_u = 1.0 if hi is None else float(hi) * s.field.scale + s.field.offset
            mid, amp = (lo_u + hi_u) / 2, (hi_u - lo_u) / 4
            v = mid + amp * math.sin(now / 5 + dev)
            values[s.name] = round(v) if s.field.type != "f32" and s.field.scale == 1 else v
        seqs[dev] += 1 + (rng.random() < 0.02)  # about 2 % lost
        frame = encode(lay, values, 1 + dev, seqs[dev], key if lay.template.mic else None)
        sock.sendto(frame[PAYLOAD_OFFSET:], ("127.0.0.1", port))
        sent += 1
    print(f"sent {sent} frames in {seconds:.0f} s from {devices} devices (about 2 % lost)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database to keep (default: a temporary one)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--devices", type=int, default=6)
    ap.add_argument("--rate", type=float, default=300.0, help="frames/s over all devices")
    ap.add_argument("--loop", action="store_true", help="use the built-in loop, not simulate")
    ap.add_argument("--png", default="demo.png", help="where `precast plot` draws the readings")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="precast-demo-") as d:
        tmp = Path(d)
        db = Path(args.db) if args.db else tmp / "demo.db"
        ready = tmp / "ready.json"
        jsonl = tmp / "readings.jsonl"
        print(f"$ precast collect --listen 127.0.0.1:0 --db {db} --key ... --jsonl {jsonl}")
        col = subprocess.Popen(
            precast(
                "collect",
                "--listen",
                "127.0.0.1:0",
                "--templates",
                str(TEMPLATES),
                "--db",
                str(db),
                "--key",
                KEY,
                "--jsonl",
                str(jsonl),
                "--ready-file",
                str(ready),
            ),
        )
        try:
            deadline = time.monotonic() + 20
            while not ready.exists():
                if col.poll() is not None or time.monotonic() > deadline:
                    print("demo: the collector did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            port = json.loads(ready.read_text())["port"]
            if not args.loop and has_simulate():
                print(
                    f"$ precast simulate --devices {args.devices} --rate {args.rate:g} "
                    f"--duration {args.seconds:g} --loss 0.02 ... "
                    f"--udp 127.0.0.1:{port}"
                )
                simulate(port, args.devices, args.rate, args.seconds)
            else:
                print(f"sending from {args.devices} simulated sensors for {args.seconds:g} s")
                loop(port, args.devices, args.rate, args.seconds)
        finally:
            if col.poll() is None:
                col.send_signal(signal.SIGTERM)
            col.wait(30)
        lines = jsonl.read_text().splitlines() if jsonl.exists() else []
        if lines:
            print(f"\nlast of {len(lines)} JSON lines:\n{lines[-1]}")
        print(f"\n$ precast stats --db {db}")
        sys.stdout.flush()
        rc = subprocess.run(precast("stats", "--db", str(db)), check=False).returncode
        fields = ["temperature", "humidity", "value", "power"]
        print(f"\n$ precast plot --db {db} --field {' --field '.join(fields)} -o {args.png}")
        sys.stdout.flush()
        plot = [a for f in fields for a in ("--field", f)]
        subprocess.run(precast("plot", "--db", str(db), *plot, "-o", args.png), check=False)
        return rc


if __name__ == "__main__":
    sys.exit(main())
