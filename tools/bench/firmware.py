"""Benchmark: precast's firmware sender against a naive one, on the MicroPython unix port.

In one MicroPython run, for an integer template (env-node, CRC-16) and a
CMAC one (cmac8 over the same fields), 100,000 readings each of:

    (a)  naive: a dict through json.dumps, then sendto (as tutorials do)
    (a0) the same without the send
    (b)  precast: Sender.patch (seq, fields, check, UDP checksum), no send
    (c)  precast: patch, then send of the payload on a connected socket
    (d)  the limit: send of an unchanging buffer on a connected socket

then the raw Ethernet drivers (w5500, enc28j60) against their chip models:
µs per reading, SPI transactions and bytes per reading (firmware_eth.py).

Passes that time the whole loop give µs per reading (the best of
--repeat, round robin) and the bytes allocated (micropython.mem_total);
as many passes timing every reading with ticks_us give the median, the
99.9th percentile and the worst (GC pauses show there), from each
variant's least disturbed pass: another job taking the core spoils one
pass, a GC pause spoils every one. Sends go to
a UDP socket on loopback that this script holds and never reads (the
kernel drops what overflows it, which costs the sender nothing extra).

The loop that ships is timed whole as well: `micropython main.py` of a
bundle for a template of five integer fields (--count N --interval-ms 0,
the default simulated sensor, UDP to loopback), start-up included, against
two scripts of the same count run the same way: the naive sender (a dict
through json.dumps, then sendto) and a bare loop of send() on a connected
socket. Each is a separate process, timed inside the interpreter from
before the script's first line (its imports, and for main.py the
compilation of the bundle's modules, its board, transport and sensor
set-up) to its exit; best of --repeat, round robin. The process column
adds the interpreter's own start-up, the same for all three (the PyPI
unix port runs inside a CPython process: about 0.2 s here). The CPU
columns are the process's user + system time less an empty script's: on
a busy machine they are the steadier judge (elapsed time counts the
other jobs' turns on the core too).

    .venv/bin/python tools/bench/firmware.py            # Markdown tables on stdout
    .venv/bin/python tools/bench/firmware.py --json     # raw numbers
    .venv/bin/python tools/bench/firmware.py --whole    # only the whole-program table
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "host"))

import firmware_eth  # noqa: E402  # the raw Ethernet rows: SPI drivers against chip models
from precast.boards.build import add_build_arguments, build_bundle  # noqa: E402
from precast.wire.layout import load_layouts  # noqa: E402

BIN = Path(sys.executable).parent
KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"
CMAC_TEMPLATE = """id = 41
name = "env-node-cmac"
check = "cmac8"
[[field]]
name = "temperature"
type = "i16"
[[field]]
name = "humidity"
type = "u16"
[[field]]
name = "pressure"
type = "u32"
[[field]]
name = "battery"
type = "u16"
"""

BENCH = r"""
import gc, json, socket, time, micropython
from array import array
import precast_config as cfg, precast_template as tpl
from precast_fw.sender import Sender
from precast_fw.checks import VIPER

ADDR = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]
plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
conn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
conn.connect(ADDR)
sender = Sender(tpl, cfg.KEY)
patch = sender.patch  # bound once, as app.py does
payload = sender.payload_mv
values = sender.values  # an array('i')
for i, v in enumerate((2150, 4000, 101325, 3300)):
    values[i] = v
fixed = memoryview(bytearray(tpl.PAYLOAD_LEN))
hist = array("I", bytes(4 * 2048))  # readings by µs taken, 2047 meaning 2047 or more

# Each variant is one function with its loop inside, so the loop costs the
# same everywhere: the body is what differs. A timed one fills hist.
VARIANTS = {}
for timed in (False, True):
    for name, body in BODIES:
        src = "def run(N, hist):\n    worst = 0\n    i = 0\n    while i < N:\n"
        if timed:
            src += "        t0 = time.ticks_us()\n"
        src += "".join("        " + line + "\n" for line in body)
        if timed:
            src += "        dt = time.ticks_diff(time.ticks_us(), t0)\n"
            src += "        if dt > worst:\n            worst = dt\n"
            src += "        hist[dt if dt < 2047 else 2047] += 1\n"
        src += "        i += 1\n    return worst\n"
        exec(src)
        VARIANTS[(name, timed)] = run


def percentile(k):
    n = 0
    i = 0
    while i < 2048:
        n += hist[i]
        if n > k:
            return i
        i += 1
    return 2047


out = {"viper": VIPER, "n": N, "heap": HEAP}
best = {}
mem = {}
for _ in range(REPEAT):  # round robin, so a busy moment hits every variant alike
    for name, _ in BODIES:
        gc.collect()
        m0 = micropython.mem_total()
        t0 = time.ticks_us()
        VARIANTS[(name, False)](N, hist)
        dt = time.ticks_diff(time.ticks_us(), t0)
        mem[name] = micropython.mem_total() - m0
        best[name] = min(best.get(name, dt), dt)
# Timed reading by reading, REPEAT passes round robin; each variant keeps its least disturbed
# pass (smallest worst). Another job taking the core spoils one pass, a GC pause every one.
timed = {}
for _ in range(REPEAT):
    for name, _ in BODIES:
        i = 0
        while i < 2048:
            hist[i] = 0
            i += 1
        gc.collect()
        worst = VARIANTS[(name, True)](N, hist)
        if name not in timed or worst < timed[name][2]:
            timed[name] = (percentile(N // 2), percentile(N - N // 1000 - 1), worst)
for name, _ in BODIES:
    med, p999, worst = timed[name]
    out[name] = {"us": best[name] / N, "bytes": mem[name] / N, "median": med, "p999": p999,
                 "worst": worst}
print(json.dumps(out))
"""

# The loop bodies, i counting readings: the same reading in (a), (a0), (b), (c).
BODIES = [
    (
        "a",
        [
            'd = {"device": 1, "seq": i, "temperature": 2150 + (i & 7), "humidity": 4000,'
            ' "pressure": 101325, "battery": 3300}',
            "plain.sendto(json.dumps(d), ADDR)",
        ],
    ),
    (
        "a0",
        [
            'd = {"device": 1, "seq": i, "temperature": 2150 + (i & 7), "humidity": 4000,'
            ' "pressure": 101325, "battery": 3300}',
            "json.dumps(d)",
        ],
    ),
    ("b", ["values[0] = 2150 + (i & 7)", "patch(values)"]),
    ("c", ["values[0] = 2150 + (i & 7)", "patch(values)", "conn.send(payload)"]),
    ("d", ["conn.send(fixed)"]),
]

ROWS = [
    ("a", "naive: dict, json.dumps, sendto"),
    ("a0", "naive without the send"),
    ("b", "precast patch, no send"),
    ("c", "precast patch + send"),
    ("d", "send of an unchanging buffer"),
]


def bundle(template: Path, out: Path, *extra: str) -> None:
    if "--collector" not in extra:  # the per-reading passes send on their own sockets
        extra = (*extra, "--collector", "127.0.0.1:9")
    p = argparse.ArgumentParser()
    add_build_arguments(p)
    build_bundle(
        p.parse_args([str(template), "--device", "1", "--key", KEY_HEX, "--out", str(out), *extra])
    )


FIVE_TEMPLATE = """id = 42
name = "five-ints"
check = "crc16"
[[field]]
name = "temperature"
type = "i16"
scale = 0.01
unit = "degC"
[[field]]
name = "humidity"
type = "u16"
scale = 0.01
unit = "%"
[[field]]
name = "pressure"
type = "u32"
unit = "Pa"
[[field]]
name = "battery"
type = "u16"
unit = "mV"
[[field]]
name = "light"
type = "u16"
unit = "lx"
"""

# The whole-program contenders, each a script of its own: N readings to 127.0.0.1:PORT.
# Their loops are in functions (locals, as main.py's are): the strictest comparison.
NAIVE = """import json, socket
def main():
    addr = socket.getaddrinfo("127.0.0.1", PORT)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    i = 0
    while i < N:
        d = {"device": 1, "seq": i, "temperature": 2150 + (i & 7), "humidity": 4000,
             "pressure": 101325, "battery": 3300, "light": 120}
        s.sendto(json.dumps(d), addr)
        i += 1
main()
"""
BARE = """import socket
def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
    send = s.send
    mv = memoryview(bytearray(LEN))
    i = 0
    while i < N:
        send(mv)
        i += 1
main()
"""
# Runs a script as __main__ and prints how long it took, start-up (its imports) included.
TIMED = """import sys, time
t0 = time.ticks_us()
try:
    exec(open(sys.argv[1]).read(), {"__name__": "__main__"})
except SystemExit:
    pass
print("elapsed_us", time.ticks_diff(time.ticks_us(), t0))
"""
WHOLE_ROWS = [
    ("main", "precast: `micropython main.py`, whole"),
    ("naive", "naive: dict, json.dumps, sendto"),
    ("bare", "bare: send() of an unchanging buffer"),
]


def whole(n: int, repeat: int, heap: str, work: Path) -> dict[str, object]:
    """Seconds for each whole program (best of `repeat`, round robin), and µs per reading."""
    template = work / "five-ints.toml"
    template.write_text(FIVE_TEMPLATE)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    out = work / "whole"
    try:
        bundle(template, out, "--collector", f"127.0.0.1:{port}", "--count", str(n),
               "--interval-ms", "0")  # fmt: skip
        plen = load_layouts([template])[0].payload_len
        (out / "naive.py").write_text(f"N = {n}\nPORT = {port}\n" + NAIVE)
        (out / "bare.py").write_text(f"N = {n}\nPORT = {port}\nLEN = {plen}\n" + BARE)
        (out / "timed.py").write_text(TIMED)
        (out / "empty.py").write_text("")
        scripts = {"main": "main.py", "naive": "naive.py", "bare": "bare.py", "empty": "empty.py"}
        best: dict[str, float] = {}
        wall: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for _ in range(repeat):
            for name, script in scripts.items():
                cmd = [str(BIN / "micropython"), "-X", f"heapsize={heap}", "timed.py", script]
                t0 = time.perf_counter()
                u0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
                u1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                w = time.perf_counter() - t0
                c = u1.ru_utime - u0.ru_utime + u1.ru_stime - u0.ru_stime
                cpu[name] = min(cpu.get(name, c), c)
                m = re.search(r"^elapsed_us (\d+)$", r.stdout, re.M)
                if r.returncode != 0 or not m:
                    sys.exit(f"micropython {script} failed:\n{r.stdout}{r.stderr}")
                if name == "main" and f"readings {n} sent {n} failed 0 " not in r.stdout:
                    sys.exit(f"main.py did not send {n} readings cleanly: {r.stdout}")
                dt = int(m.group(1)) / 1e6
                best[name] = min(best.get(name, dt), dt)
                wall[name] = min(wall.get(name, w), w)
    finally:
        sink.close()
    # CPU seconds of the script itself: the process's, less an empty script's (the host's start-up).
    res: dict[str, object] = {"n": n}
    for k in ("main", "naive", "bare"):
        c = cpu[k] - cpu["empty"]
        res[k] = {"s": best[k], "us": best[k] / n * 1e6, "wall": wall[k], "cpu": c}
    return res


def whole_table(res: dict[str, dict[str, float]]) -> str:
    lines = [
        "five integer fields (crc16), whole programs, start-up included:",
        "",
        "| | s | µs/reading | against bare | CPU s | CPU against bare | process s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in WHOLE_ROWS:
        r = res[key]
        lines.append(
            f"| {label} | {r['s']:.3f} | {r['us']:.2f} | {r['s'] / res['bare']['s']:.2f}x"
            f" | {r['cpu']:.3f} | {r['cpu'] / res['bare']['cpu']:.2f}x | {r['wall']:.3f} |"
        )
    for unit in ("s", "cpu"):
        m, a, d = (res[k][unit] for k in ("main", "naive", "bare"))
        lines += [
            "",
            f"{'Elapsed' if unit == 's' else 'CPU'}: main.py takes {m / d:.2f}x the bare loop"
            f" (target at most 1.3x) and is {a / m:.2f}x faster than the naive sender"
            " (target at least 1.3x).",
        ]
    return "\n".join(lines)


def run(template: Path, n: int, repeat: int, heap: str, work: Path) -> dict[str, object]:
    bundle(template, work)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    try:
        head = (
            f"N = {n}\nREPEAT = {repeat}\nPORT = {sink.getsockname()[1]}\n"
            f"BODIES = {BODIES!r}\nHEAP = {heap!r}\n"
        )
        (work / "bench.py").write_text(head + BENCH)
        cmd = [str(BIN / "micropython"), "-X", f"heapsize={heap}", "bench.py"]
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
    finally:
        sink.close()
    if r.returncode != 0:
        sys.exit(f"micropython failed:\n{r.stdout}{r.stderr}")
    result: dict[str, object] = json.loads(r.stdout)
    return result


def table(name: str, res: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{name}:",
        "",
        "| | µs/reading | bytes/reading | median µs | 99.9 % µs | worst µs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        r = res[key]
        lines.append(
            f"| ({key}) {label} | {r['us']:.2f} | {r['bytes']:.0f} | {r['median']:.0f}"
            f" | {r['p999']:.0f} | {r['worst']:.0f} |"
        )
    a, a0, b, c, d = (res[k]["us"] for k in ("a", "a0", "b", "c", "d"))
    lines += [
        "",
        f"(b) is {a0 / b:.1f}x faster than (a0) (target 8x); (c) is {a / c:.2f}x faster than (a)"
        f" (target 1.3x) and {c / d:.2f}x (d) (target at most 1.25x); worst (c) is"
        f" {res['c']['worst'] / max(res['c']['median'], 1):.1f}x its median (target under 3x).",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000, help="readings per variant")
    ap.add_argument("--repeat", type=int, default=5, help="mean: the best of this many passes")
    ap.add_argument(
        "--heap",
        default="256K",
        help="MicroPython heap (-X heapsize), board-sized by default: an ESP32 "
        "with WiFi up has about 100K free, a Pico W about 190K",
    )
    ap.add_argument(
        "--eth-n", type=int, default=5000, help="readings per pass through each SPI driver"
    )
    ap.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    ap.add_argument("--whole", action="store_true", help="only the whole-program measurement")
    args = ap.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        eth: dict[str, object] = {}
        if not args.whole:
            cmac = t / "env-node-cmac.toml"
            cmac.write_text(CMAC_TEMPLATE)
            env_node = ROOT / "templates" / "env-node.toml"
            results["env-node (crc16)"] = run(env_node, args.n, args.repeat, args.heap, t / "crc")
            results["env-node-cmac (cmac8)"] = run(cmac, args.n, args.repeat, args.heap, t / "cmac")
            eth = firmware_eth.run_all(args.eth_n, args.repeat, t / "eth")  # the SPI drivers
        results["whole"] = whole(args.n, args.repeat, args.heap, t)
    if args.json:
        print(json.dumps({**results, "eth": eth}, indent=2))
        return 0
    ver = "import sys; print('.'.join(map(str, sys.implementation.version[:3])))"
    out = subprocess.run(
        [str(BIN / "micropython"), "-c", ver], capture_output=True, text=True, check=False
    ).stdout.strip()
    print(
        f"MicroPython {out} unix port, a {args.heap} heap, {args.n} readings per row;"
        " µs/reading is the"
        f" best of {args.repeat} passes; median/99.9 %/worst from the least disturbed of"
        f" {args.repeat} more, timed reading by reading.\n"
    )
    for name, res in results.items():
        if name == "whole":
            print(whole_table(res))  # type: ignore[arg-type]
        else:
            print(table(name, res))  # type: ignore[arg-type]
        print()
    if eth:
        print(firmware_eth.table(eth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
