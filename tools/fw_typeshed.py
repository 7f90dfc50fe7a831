"""Assemble the typeshed that type-checks the firmware as a port's MicroPython code.

mypy treats stdlib names (time, socket, struct, ...) as typeshed's, so
MicroPython's own stubs have to be a typeshed, not a package on the path:
`stdlib/` from micropython-stdlib-stubs (MicroPython's builtins, typing,
struct, ...) with every module of the port's stubs (micropython-esp32-stubs:
machine, network, time with sleep_ms, ...; micropython-rp2-stubs for the
RP2040 boards (W5500-EVB-Pico, Pico W); or micropython-unix-stubs) added
to it and to its VERSIONS, and mypy's own mypy-extensions stub.
firmware/mypy.ini (esp32) and firmware/mypy-unix.ini point
custom_typeshed_dir here.

micropython-esp32-stubs and micropython-unix-stubs install files of the
same names into one site-packages, so the esp32 files are taken from there
only when their RECORD hashes still match; otherwise the same version's
wheel is fetched with pip (from its cache when it has it).

Usage: python tools/fw_typeshed.py OUT_DIR [esp32|rp2|unix]   (default esp32)
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata as md
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BOARDS = {
    "esp32": "micropython-esp32-stubs",
    "rp2": "micropython-rp2-stubs",
    "unix": "micropython-unix-stubs",
}
STDLIB = "micropython-stdlib-stubs"
SKIP = {"__builtins__.pyi", "README.md", "LICENSE.md", "pyproject.toml"}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _installed_files(dist: md.Distribution) -> dict[str, Path] | None:
    """The distribution's stub files by relative path, or None when any was overwritten."""
    out = {}
    for f in dist.files or []:
        rel = str(f)
        if ".dist-info" in rel or not (rel.endswith(".pyi") or rel.endswith("VERSIONS")):
            continue
        path = Path(str(dist.locate_file(f)))
        if f.hash is None or not path.exists() or _sha256(path) != f.hash.value:
            return None
        out[rel] = path
    return out


def _wheel_files(name: str, version: str, tmp: Path) -> dict[str, Path]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary",
        ":all:",
        "-d",
        str(tmp),
        f"{name}=={version}",
    ]
    subprocess.run(cmd, check=True)
    (wheel,) = tmp.glob("*.whl")
    root = tmp / "unpacked"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
    return {
        str(p.relative_to(root)): p
        for p in root.rglob("*")
        if p.is_file() and ".dist-info" not in str(p) and p.suffix == ".pyi"
    }


def stub_files(name: str, tmp: Path) -> dict[str, Path]:
    dist = md.distribution(name)
    files = _installed_files(dist)
    if files is None:
        # Another port's stubs installed files of the same names over these.
        print(f"fw_typeshed: taking {name} {dist.version} from its wheel")
        files = _wheel_files(name, dist.version, tmp)
    return files


def build(out: Path, board_stubs: str = BOARDS["esp32"]) -> None:
    # The typeshed is kept while the stub versions it came from are installed: a wheel is
    # fetched at most once, when `make venv` first builds it, never during a test run.
    stamp = "".join(f"{n}=={md.version(n)}\n" for n in (STDLIB, board_stubs, "mypy"))
    if (out / ".stamp").is_file() and (out / ".stamp").read_text() == stamp:
        return
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        std = stub_files(STDLIB, tmp / "std")
        board = stub_files(board_stubs, tmp / "board")
        if out.exists():
            shutil.rmtree(out)
        stdlib = out / "stdlib"
        for rel, path in std.items():  # stdlib/... and _mpy_shed/...
            dst = out / rel if rel.startswith("stdlib/") else stdlib / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)
        added = {"_mpy_shed"}
        for rel, path in board.items():
            if rel in SKIP:
                continue
            top = rel.split("/")[0].removesuffix(".pyi")
            if (stdlib / rel).exists() and top not in added:
                continue  # MicroPython's stdlib stub of that name stays
            dst = stdlib / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst)
            added.add(top)
        with (stdlib / "VERSIONS").open("a") as f:
            f.write("# " + board_stubs + "\n")
            for top in sorted(added):
                f.write(f"{top}: 3.0-\n")
        ext = Path(str(md.distribution("mypy").locate_file("mypy/typeshed/stubs/mypy-extensions")))
        shutil.copytree(ext, out / "stubs" / "mypy-extensions")
        (out / ".stamp").write_text(stamp)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[2:3] not in ([], *([b] for b in BOARDS)):
        sys.exit(__doc__)
    build(Path(sys.argv[1]), BOARDS[sys.argv[2] if len(sys.argv) == 3 else "esp32"])
