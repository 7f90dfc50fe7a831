"""The bundle `precast build --transport w5500|enc28j60` writes type-checks as its board's code.

mypy checks the whole generated directory (main.py, precast_template.py,
precast_config.py, precast_fw/) against MicroPython's stubs for the port
the transport's defaults suit: the RP2040's (micropython-rp2-stubs) for a
W5500-EVB-Pico, the ESP32's for an ESP32 DevKit with an ENC28J60. (The
firmware package itself is checked against both, and the unix port's, by
`make typecheck`.) The typesheds are the ones `make typecheck` assembles (tools/fw_typeshed.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from firmware_kit import build
from kit import BIN, ROOT, TEMPLATES


def _typeshed(port: str) -> Path:
    out = ROOT / "build" / ("fw-typeshed" + (f"-{port}" if port != "esp32" else ""))
    if not (out / "stdlib" / "VERSIONS").exists():
        tool = ROOT / "tools" / "fw_typeshed.py"
        subprocess.run([sys.executable, str(tool), str(out), port], check=True)
    return out


@pytest.mark.parametrize(
    ("transport", "port", "mcu"),
    [("w5500", "rp2", "rp2040"), ("enc28j60", "esp32", "esp32")],
)
def test_eth_bundle_typechecks(tmp_path: Path, transport: str, port: str, mcu: str) -> None:
    out = tmp_path / "b"
    extra = ["--eth-reset", "none", "--spi", "2"] if mcu == "esp32" else []
    build(out, TEMPLATES / "env-node.toml", "--device", "1", "--transport", transport,
          "--mcu", mcu, *extra)  # fmt: skip
    typeshed = _typeshed(port)
    cmd = [
        str(BIN / "mypy"),
        "--custom-typeshed-dir",
        str(typeshed),
        "--python-version",
        "3.11",
        "--check-untyped-defs",
        "--no-strict-optional",
        "--explicit-package-bases",
        "--cache-dir",
        str(tmp_path / "cache"),
        "main.py",
        "precast_template.py",
        "precast_config.py",
        "precast_fw",
    ]
    r = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=300, check=False)
    # The build leaves out what this board never imports: AES-CMAC for a CRC-16 template,
    # the group of several sensors for one, WiFi for a chip's raw frames, what crosses a
    # deep sleep for a board that does not sleep so. Any other missing module is a fault.
    absent = ("precast_fw.cmac", "precast_fw.sensors.group", "precast_fw.wifi",
              "precast_fw.deepsleep")  # fmt: skip
    lines = [line for line in r.stdout.splitlines() if ": error: " in line]
    left_out = [line for line in lines if any(f'module named "{m}"' in line for m in absent)]
    errors = [line for line in lines if line not in left_out]
    assert not errors, r.stdout + r.stderr
    assert "Success" in r.stdout or f"Found {len(left_out)} errors" in r.stdout, r.stdout
