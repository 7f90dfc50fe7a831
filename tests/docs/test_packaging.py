"""The wheel carries the firmware, so `precast build` works from an installed package too.

The wheel is built from this tree and installed (--no-deps) into a fresh venv that sees the
dependencies of this one but not its editable precast; `precast build` run there writes a
bundle from the wheel's own firmware, and that bundle runs on the MicroPython unix port.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from firmware_kit import UdpSink, counts
from kit import FIRMWARE, ROOT, TEMPLATES, run_bundle
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    (w,) = out.glob("precast-*.whl")
    return w


def test_wheel_ships_every_firmware_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    fw = FIRMWARE / "precast_fw"
    want = {f"precast/firmware/{p.relative_to(fw).as_posix()}" for p in fw.rglob("*.py")}
    assert want and want <= names, sorted(want - names)
    host = ROOT / "host"
    modules = {p.relative_to(host).as_posix() for p in (host / "precast").rglob("*.py")}
    assert "precast/send/transports/packet.py" in modules  # the walk sees subpackages
    assert modules <= names, sorted(modules - names)  # a subpackage left out of pyproject
    assert "precast/py.typed" in names
    shipped = {f"precast/templates/{p.name}" for p in (ROOT / "templates").glob("*.toml")}
    assert shipped and shipped <= names, sorted(shipped - names)  # the default outside a checkout


WHERE = "import precast, precast.firmware as f; print(precast.__file__, f.__path__[0])"


@pytest.mark.usefixtures("mp_port")
def test_build_runs_from_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            purelib,
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    # This venv's dependencies as a plain path entry: their .pth files (this venv's editable
    # precast among them) are not run, so the only precast there is the wheel's.
    deps = [p for p in site.getsitepackages() if Path(p).exists()] or [
        sysconfig.get_paths()["purelib"]
    ]
    (Path(purelib) / "zz_deps.pth").write_text("\n".join(deps) + "\n")
    where = subprocess.run(
        [str(py), "-c", WHERE],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split()
    assert all(w.startswith(purelib) for w in where), where
    sink = UdpSink()
    try:
        bundle = tmp_path / "bundle"
        r = subprocess.run(
            [
                str(py),
                "-m",
                "precast.cli",
                "build",
                str(TEMPLATES / "env-node.toml"),
                "--device",
                "4",
                "--count",
                "3",
                "--interval-ms",
                "0",
                "--collector",
                sink.collector,
                "--out",
                str(bundle),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        # The wheel's firmware, byte for byte the tree's.
        shipped = sorted(p.relative_to(bundle) for p in (bundle / "precast_fw").rglob("*.py"))
        assert shipped, sorted(bundle.rglob("*"))
        for rel in shipped:
            assert (bundle / rel).read_bytes() == (FIRMWARE / rel).read_bytes(), rel
        run = run_bundle(bundle)
        assert run.returncode == 0, run.stdout + run.stderr
        assert counts(run.stdout)["sent"] == 3
        got = sink.drain()
    finally:
        sink.close()
    codec = Codec(load_layouts([TEMPLATES / "env-node.toml"]))
    readings = [codec.decode(d) for d in got]
    assert [(r.device, r.seq) for r in readings if isinstance(r, Reading)] == [
        (4, 0),
        (4, 1),
        (4, 2),
    ]
