"""The firmware's numbers are the host's: every `NAME = const(N)` held against the wire module.

The firmware names its wire numbers in precast_fw/layout.py, and each module
repeats the ones it uses as a private `_NAME = const(N)` (folded in, no
global; viper folds only its own module's const()), so no module imports
layout.py. Read from the source (ast, no MicroPython needed): each name has
one value wherever it is defined, the wire names equal the host's constants,
the hot path has no bare frame offsets left, and the firmware's modules
import each other without a cycle. The CRC-16 the firmware computes on the
unix port (without a table) is crcmod's.
"""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import crcmod
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from firmware_kit import build, no_viper
from kit import ROOT, TEMPLATES, run_bundle
from precast.boards import build as host_build
from precast.wire import constants as wire

FW = ROOT / "firmware" / "precast_fw"

# The firmware's wire names and what the host says each one is.
HOST = {
    "UDP_CSUM_OFFSET": wire.UDP_CSUM_OFFSET,
    "PAYLOAD_OFFSET": wire.PAYLOAD_OFFSET,
    "OFF_MAGIC": wire.OFF_MAGIC,
    "OFF_VERFLAGS": wire.OFF_VERFLAGS,
    "OFF_SEQ": wire.OFF_SEQ,
    "OFF_FIELDS": wire.OFF_FIELDS,
    "FRAME_SEQ": wire.PAYLOAD_OFFSET + wire.OFF_SEQ,
    "FRAME_FIELDS": wire.PAYLOAD_OFFSET + wire.OFF_FIELDS,
    "MAGIC": wire.MAGIC,
    "VERSION": wire.VERSION,
    "FLAG_MIC": wire.FLAG_MIC,
    "FLAG_DELAYED": wire.FLAG_DELAYED,
    "CHECK_CRC16": host_build.CHECK_KINDS["crc16"],
    "CRC16_LEN": wire.CHECKS["crc16"],
    "CRC16_POLY": wire.CRC16_POLY,
    "AES_BLOCK": algorithms.AES.block_size // 8,
}


def _consts(path: Path, copies: bool = False) -> dict[str, int]:
    """NAME -> N for every top-level `NAME = const(N)` in a firmware module; with `copies`
    (every module but layout.py: layout's names with a leading _, which leave no global)
    `_NAME` as NAME."""
    out = {}
    seen: dict[str, int] = {}  # as written: a const() may use those defined before it
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "const"
        ):
            (target,) = node.targets
            assert isinstance(target, ast.Name)
            expr = ast.Expression(node.value.args[0])  # a literal, or arithmetic on literals
            name = target.id.lstrip("_") if copies else target.id
            seen[target.id] = eval(compile(expr, str(path), "eval"), {"__builtins__": {}, **seen})
            out[name] = seen[target.id]
    return out


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(FW.parent).with_suffix("").parts): p for p in FW.rglob("*.py")}


def test_firmware_wire_names_are_the_hosts() -> None:
    layout = _consts(FW / "layout.py")
    assert set(HOST) <= set(layout), set(HOST) - set(layout)
    for name, value in HOST.items():
        assert layout[name] == value, name


def test_firmware_names_have_one_value_everywhere() -> None:
    layout = _consts(FW / "layout.py")
    seen = 0
    for mod, path in _modules().items():
        if mod == "precast_fw.layout":
            continue
        for name, value in _consts(path, copies=True).items():
            if name in layout:
                assert value == layout[name], f"{mod}.{name} = {value}, layout says {layout[name]}"
                seen += 1
    viper = _consts(FW / "viper.py", copies=True)
    assert set(viper) <= set(layout), set(viper) - set(layout)  # every copy has its original
    assert seen >= len(viper) > 10


def test_firmware_hot_path_has_no_bare_offsets() -> None:
    """The frame offsets (40, 42, 50, 54) appear only as const() definitions."""
    for name in ("viper.py", "viper_cmac.py", "plain.py", "sender.py"):
        tree = ast.parse((FW / name).read_text())
        defs = {
            id(n.value.args[0])
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and n.value.args
        }
        bare = [
            (name, n.lineno, n.value)
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in (40, 42, 50, 54) and id(n) not in defs
        ]
        assert not bare, bare


def _imports(mod: str, path: Path) -> set[str]:
    pkg = mod.split(".")[:-1] if path.name != "__init__.py" else mod.split(".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[: len(pkg) - node.level + 1]
            target = ".".join(base + ([node.module] if node.module else []))
            names = [target + "." + a.name for a in node.names]
            out |= {n for n in names if n in _modules()} or {target}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_firmware_imports_have_no_cycle() -> None:
    mods = _modules()
    graph = {m: {i for i in _imports(m, p) if i in mods and i != m} for m, p in mods.items()}
    # No module imports layout.py: each has private copies, so no bundle carries it.
    assert not [m for m, deps in graph.items() if "precast_fw.layout" in deps]
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 2:
            return
        assert state.get(m) != 1, "import cycle: " + " -> ".join([*path, m])
        state[m] = 1
        for n in sorted(graph[m]):
            visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


CRC_SCRIPT = r"""
import json, binascii
import precast_template as tpl
from precast_fw import sender
s = sender.Sender(tpl)
with open("cases.json") as f:
    for seq, value in json.load(f):
        s.seq = seq
        s.values[0] = value
        s.patch(s.values)
        print(binascii.hexlify(s.payload_mv).decode())
"""


@pytest.mark.usefixtures("mp_port")
def test_firmware_crc16_is_crcmods(tmp_path: Path) -> None:
    """The table-free CRC-16 of viper's seal, then of plain's, against crcmod's."""
    crc = crcmod.Crc(0x11021, initCrc=0xFFFF, rev=False, xorOut=0)
    rng = random.Random(16)
    cases = [(rng.getrandbits(32), rng.getrandbits(16)) for _ in range(200)]
    cases += [(0, 0), (2**32 - 1, 2**16 - 1)]
    for plain in (False, True):
        out = tmp_path / ("plain" if plain else "viper")
        build(out, TEMPLATES / "minimal.toml", "--device", "1")
        if plain:
            no_viper(out)
        (out / "cases.json").write_text(json.dumps(cases))
        r = run_bundle(out, CRC_SCRIPT)
        assert r.returncode == 0, r.stderr
        payloads = [bytes.fromhex(line) for line in r.stdout.split()]
        assert len(payloads) == len(cases)
        for p in payloads:  # the minimal template: its check is the last two bytes
            want = crc.copy()
            want.update(p[:-2])
            assert p[-2:] == want.digest(), p.hex()
