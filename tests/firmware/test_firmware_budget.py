"""What a board carries: the bundle as .mpy, and the RAM main.py holds after start-up, on budgets.

The bundle is what `precast build --mpy --march armv6m` writes (an RP2040's
viper as native code): main.py and every .mpy, counted in bytes. The RAM
is gc.mem_alloc() after gc.collect() at the third reading (the transport
open, the sensor read, the first frames sent) of the same bundle built
for the 32-bit unix port (--mpy --march x86: a board loads .mpy files
into RAM as they are; 31-bit small ints and 4-byte pointers, as on a
board), with the build's defaults (the seq file, the backlog); for the
SPI chips, less what the register model itself holds. Every transport's
figures are printed (pytest -s) for the README. A udp + sim env-node is
held to 16 KiB of bundle and 24 KiB of RAM, with the build's defaults
(16,176 B and 24,080 B) and without the backlog and the seq file (12,395 B
and 16,896 B).

The RAM moves in steps where MicroPython's qstr pools grow: on this port
they hold 20, 40, 80, 160, then 320 names (7 bytes a name on a 32-bit
port), and the probe below with the default bundle interns 290 of the
first 300. Ten names more (module globals, functions, attributes,
arguments, short strings) cost 2,256 bytes at once: a
private `_NAME = const(N)` costs none. A board's pools start from its own
frozen names, so its steps fall elsewhere.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from firmware_kit import UdpSink, build
from kit import ROOT, TEMPLATES, micropython32

ENV = TEMPLATES / "env-node.toml"
BUNDLE_BUDGET = 16 * 1024
RAM_BUDGET = 24 * 1024
TRANSPORTS = ["udp", "packet", "serial", "w5500", "enc28j60"]
OPTIONS = {
    "packet": ["--iface", "lo"],
    "serial": ["--serial-port", "/dev/null"],
    "w5500": ["--eth-reset", "none"],
    "enc28j60": ["--eth-reset", "none"],
}

PROBE = r"""
import gc
import sys

# The unix port puts the script's absolute directory first on sys.path, so every module's
# __file__ (a qstr, held for the run) would carry pytest's temporary path: 1 KB over 17
# modules, and a figure that changed with the test's name. A board imports from "" (the
# filesystem's root): "precast_fw/app.mpy". The same here.
sys.path[0] = ""
import precast_config as cfg
import precast_template as tpl
from precast_fw import app
from precast_fw.sensors.sim import Sensor as Sim

model = 0
if cfg.TRANSPORT in ("w5500", "enc28j60"):
    gc.collect()
    before = gc.mem_alloc()
    if cfg.TRANSPORT == "w5500":
        from w5500_model import W5500 as Chip
    else:
        from enc28j60_model import ENC28J60 as Chip
    chip = Chip(None)
    gc.collect()
    model = gc.mem_alloc() - before  # the fake chip's own RAM: not the board's
    from precast_fw import buses

    buses.spi_bus = lambda cfg: (chip, chip.cs)


class Probe:
    # The simulated sensor; at the third reading, the RAM the run holds.
    def __init__(self):
        self.sim = Sim(tpl, cfg)
        self.n = 0
        self.ram = 0

    def read(self, values):
        self.sim.read(values)
        self.n += 1
        if self.n == 3:
            gc.collect()
            self.ram = gc.mem_alloc()


p = Probe()
counts = app.run(tpl, cfg, sensor=p)
print(counts)
print("ram", p.ram - model)
"""


def bundle_size(out: Path) -> int:
    """Bytes a board's filesystem takes for the bundle: main.py and the .mpy files."""
    files = [out / "main.py", *out.rglob("*.mpy"), *(out / "precast_fw").rglob("*.py")]
    return sum(f.stat().st_size for f in files)


# A node that keeps nothing: no backlog ring, no seq file (every boot starts at seq 0).
LEAN = ("--backlog", "0", "--seq-file", "")


def mpy_bundle(tmp_path: Path, transport: str, *extra: str) -> int:
    """Build the env-node bundle for `transport` as .mpy; its size, after checking its files."""
    out = tmp_path / "b"
    build(out, ENV, "--device", "1", "--transport", transport, "--mpy", "--march", "armv6m",
          *OPTIONS.get(transport, []), *extra, mem=False)  # fmt: skip
    size = bundle_size(out)
    print(f"bundle {transport}{' ' if extra else ''}{' '.join(extra)}: {size} bytes as .mpy")
    assert not list((out / "precast_fw").rglob("*.py"))  # all of it precompiled
    names = {p.stem for p in (out / "precast_fw").glob("transport_*.mpy")}
    assert names == {f"transport_{transport}"}  # no other transport rides along
    assert not (out / "precast_fw" / "sensors" / "bme280.mpy").exists()
    assert not (out / "precast_fw" / "cmac.mpy").exists()  # env-node is CRC-16
    assert not (out / "precast_fw" / "viper_cmac.mpy").exists()
    assert not (out / "precast_fw" / "plain.mpy").exists()  # viper is native: --march
    kept = extra != LEAN
    assert (out / "precast_fw" / "backlog.mpy").exists() == kept
    assert (out / "precast_template_late.mpy").exists() == kept
    assert (out / "precast_fw" / "seqstore.mpy").exists() == kept
    return size


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bundle_carries_only_what_the_build_needs(tmp_path: Path, transport: str) -> None:
    mpy_bundle(tmp_path, transport)


def test_udp_bundle_within_budget(tmp_path: Path) -> None:
    size = mpy_bundle(tmp_path, "udp")
    assert size <= BUNDLE_BUDGET, f"{size} bytes > {BUNDLE_BUDGET}"


def test_lean_udp_bundle_within_budget(tmp_path: Path) -> None:
    """Without the backlog and the seq file (--backlog 0 --seq-file ''): what is left."""
    size = mpy_bundle(tmp_path, "udp", *LEAN)
    assert size <= BUNDLE_BUDGET, f"{size} bytes > {BUNDLE_BUDGET}"


def ram_after_start_up(tmp_path: Path, transport: str, *extra: str) -> int:
    """Bytes the run holds after start-up on the 32-bit port (a 5-reading run, checked)."""
    mp32 = micropython32()
    out = tmp_path / "b"
    sink = UdpSink()
    build(out, ENV, "--device", "1", "--transport", transport, "--count", "5",
          "--interval-ms", "0", "--collector", sink.collector, "--mpy", "--march", "x86",
          *OPTIONS.get(transport, []), *extra, mem=False)  # fmt: skip
    for f in (ROOT / "tests" / "chips").glob("*_model.py"):
        (out / f.name).write_bytes(f.read_bytes())
    (out / "probe.py").write_text(PROBE)
    try:
        r = subprocess.run([mp32, "probe.py"], cwd=out, capture_output=True, text=True, timeout=60)
    finally:
        sink.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "readings 5 sent 5 failed 0" in r.stdout, r.stdout
    ram = int(r.stdout.split("ram ")[-1])
    how = f"{' ' if extra else ''}{' '.join(extra)}"
    print(f"ram {transport}{how}: {ram} bytes after start-up (32-bit port)")
    assert 4096 < ram < 256 * 1024  # measured, not a stray zero
    return ram


@pytest.mark.parametrize("transport", ["udp", "w5500", "enc28j60"])
def test_ram_after_start_up_is_measured(tmp_path: Path, transport: str) -> None:
    ram_after_start_up(tmp_path, transport)


def test_udp_ram_within_budget(tmp_path: Path) -> None:
    ram = ram_after_start_up(tmp_path, "udp")
    assert ram <= RAM_BUDGET, f"{ram} bytes > {RAM_BUDGET}"


def test_lean_udp_ram_within_budget(tmp_path: Path) -> None:
    ram = ram_after_start_up(tmp_path, "udp", *LEAN)
    assert ram <= RAM_BUDGET, f"{ram} bytes > {RAM_BUDGET}"
