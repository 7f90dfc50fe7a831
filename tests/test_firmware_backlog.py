"""The firmware's backlog ring on the unix ports: kept readings go out late, oldest first, as
the host codec's delayed frames, a full ring drops its oldest, and nothing is allocated.

The readings are kept and drained under micropython.heap_lock() (a warm-up first, as the
app does), with seqs across 2**30 and u32 fields above it: on the 32-bit port those are
heap objects the moment they become ints. Judge: codec.encode_raw with age_ms.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from firmware_kit import build, no_viper
from kit import KEY_HEX, ROOT, micropython
from kit import TEMPLATES as TEMPLATES_DIR
from precast.wire.codec import encode_raw
from precast.wire.layout import load_layouts

KEY = bytes.fromhex(KEY_HEX)
DEVICE = 0xDEADBEEF
MP32 = ROOT / "build" / "mp32" / "micropython"

SCRIPT = r"""
import json, time, binascii, micropython
import precast_template as tpl
import precast_template_late as late_tpl
from precast_fw import sender, backlog
with open("case.json") as f:
    c = json.load(f)
s = sender.Sender(tpl, KEY)
late = sender.Sender(late_tpl, KEY)
t = [1000]
def clock():
    return t[0]
L = late_tpl.FRAME_LEN
out = bytearray(L * c["readings"])
pos = [0]
def send(mv):
    i = 0
    p = pos[0]
    while i < L:
        out[p + i] = mv[i]
        i += 1
    pos[0] = p + L
v = s.values
warm = backlog.Backlog(2, late, late_tpl.OFF_AGE, clock, time.ticks_diff)
warm.keep(s.frame)
warm.drain(send, late.frame_mv, 1)
pos[0] = 0
b = backlog.Backlog(c["n"], late, late_tpl.OFF_AGE, clock, time.ticks_diff)
s.seq = c["seq"]
rows = c["rows"]
step = c["step_ms"]
def run():
    r = 0
    while r < len(rows):
        row = rows[r]
        i = 0
        while i < tpl.FIELD_COUNT:
            v[i] = row[i]
            i += 1
        s.patch(v)
        b.keep(s.frame)
        t[0] += step
        r += 1
    while len(b):
        b.drain(send, late.frame_mv, c["limit"])
        t[0] += step
# in a function: a new global assigned under heap_lock would grow the module's dict
micropython.heap_lock()
try:
    run()
finally:
    micropython.heap_unlock()
print(b.counts())
k = 0
while k < pos[0]:
    print(binascii.hexlify(out[k:k + L]).decode())
    k += L
"""


def _port(which: str) -> str:
    if which == "unix":
        return micropython()
    if not MP32.exists():
        pytest.skip(
            f"no 32-bit port at {MP32}: sh ../shared/micropython/build-unix32.sh build/mp32"
        )
    return str(MP32)


def _template(tmp: Path, check: str) -> Path:
    types = ["u32", "i32", "u16", "i8"]
    fields = "".join(f'\n[[field]]\nname = "f{i}"\ntype = "{t}"\n' for i, t in enumerate(types))
    p = tmp / f"wide-{check}.toml"
    p.write_text(f'id = 77\nname = "wide"\ncheck = "{check}"\n{fields}')
    return p


@pytest.mark.parametrize("port", ["unix", "unix32"])
@pytest.mark.parametrize("plain", [False, True], ids=["viper", "plain"])
@pytest.mark.parametrize("check", ["crc16", "cmac4"])
def test_the_ring_sends_what_it_kept_oldest_first_without_allocating(
    tmp_path: Path, port: str, plain: bool, check: str, request: pytest.FixtureRequest
) -> None:
    exe = _port(port)
    if plain and port == "unix32":
        # Not the ring's: plain.seal reads params[P_SEQ], a seq at or above 2**30, as an int
        # object on a 32-bit port. The firmware's 32-bit work fixes seal; strict, so this
        # mark must go when it lands.
        request.applymarker(pytest.mark.xfail(strict=True, reason="plain seal on 32-bit"))
    path = _template(tmp_path, check)
    lay = load_layouts([path])[0]
    out = tmp_path / "b"
    build(out, path, "--device", str(DEVICE), "--key", KEY_HEX)
    if plain:
        no_viper(out)
    n, readings, step, seq0 = 8, 13, 1000, 0x3FFFFFFA
    rows = [[0xFFFFFFFF - r, -(2**31) + r, 65535 - r, -128 + r] for r in range(readings)]
    case = {"n": n, "readings": readings, "seq": seq0, "rows": rows, "step_ms": step, "limit": 3}
    (out / "case.json").write_text(json.dumps(case))
    (out / "test_script.py").write_text(f"KEY = {KEY!r}\n" + SCRIPT)
    r = subprocess.run(
        [exe, "test_script.py"], cwd=out, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().split("\n")
    assert lines[0] == f"kept {readings} late {n} dropped {readings - n} waiting 0"
    frames = [bytes.fromhex(x) for x in lines[1:]]
    assert len(frames) == n
    # the newest n, oldest first; drained 3 a round, the clock a step on after each round
    kept = range(readings - n, readings)
    for j, (i, frame) in enumerate(zip(kept, frames, strict=True)):
        now = readings * step + (j // 3) * step  # ms after the first reading
        age = now - i * step
        seq = (seq0 + i) & 0xFFFFFFFF
        assert frame == encode_raw(lay, rows[i], DEVICE, seq, KEY, age), (i, seq, age)


MEM = r"""
import gc
from precast_fw import backlog
from precast_fw.sender import Sender
import precast_template_late as late_tpl
import precast_config as cfg
late = Sender(late_tpl, cfg.KEY)
gc.collect()
a = gc.mem_alloc()
b = backlog.Backlog(cfg.BACKLOG, late, late_tpl.OFF_AGE)
gc.collect()
print(cfg.BACKLOG, gc.mem_alloc() - a)
"""


@pytest.mark.parametrize("port", ["unix", "unix32"])
@pytest.mark.parametrize("template", ["minimal.toml", "env-node.toml"])
def test_the_default_ring_takes_at_most_2_kib(tmp_path: Path, port: str, template: str) -> None:
    """The build's default --backlog, measured by the port's own allocator."""
    from kit import TEMPLATES

    exe = _port(port)
    out = tmp_path / "b"
    build(out, TEMPLATES / template, "--device", "7")
    (out / "test_script.py").write_text(MEM)
    r = subprocess.run(
        [exe, "test_script.py"], cwd=out, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    n, used = map(int, r.stdout.split())
    fields_len = load_layouts([TEMPLATES / template])[0].template.fields_len
    assert n * (8 + fields_len) <= used <= 2048, (n, used)
    assert n >= 60  # and it is not sized down to nothing


def test_backlog_0_is_off(tmp_path: Path) -> None:
    build(tmp_path / "a", TEMPLATES_DIR / "env-node.toml", "--device", "7", "--backlog", "0")
    assert "BACKLOG = 0\n" in (tmp_path / "a" / "precast_config.py").read_text()
    build(tmp_path / "b", TEMPLATES_DIR / "env-node.toml", "--device", "7", "--backlog", "500")
    assert "BACKLOG = 500\n" in (tmp_path / "b" / "precast_config.py").read_text()
