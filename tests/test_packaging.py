"""The wheel carries the firmware, so `precast build` works from an installed package too."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from kit import ROOT


def test_wheel_ships_every_firmware_file(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("precast-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    fw = ROOT / "firmware" / "precast_fw"
    want = {f"precast/firmware/{p.relative_to(fw).as_posix()}" for p in fw.rglob("*.py")}
    assert want and want <= names, sorted(want - names)
    host = ROOT / "host"
    modules = {p.relative_to(host).as_posix() for p in (host / "precast").rglob("*.py")}
    assert "precast/send/transports/packet.py" in modules  # the walk sees subpackages
    assert modules <= names, sorted(modules - names)  # a subpackage left out of pyproject
    assert "precast/py.typed" in names
