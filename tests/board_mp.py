"""Running scripts on the real MicroPython unix port, for the driver and board tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
MICROPYTHON = Path(sys.executable).parent / "micropython"


def micropython() -> str:
    """The unix port's binary, or a skip saying how to get it."""
    if not MICROPYTHON.exists():
        pytest.skip("needs the MicroPython unix port (.venv/bin/micropython, `make venv`)")
    return str(MICROPYTHON)


def run_mp(
    script: str, *, cwd: Path | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `script` on MicroPython with firmware/ and tests/ on its path."""
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:{TESTS}:.frozen")
    r = subprocess.run(
        [micropython(), "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"micropython exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def firmware_on_path() -> None:
    """Make `precast_fw` importable in this CPython process, as the host tests need."""
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
