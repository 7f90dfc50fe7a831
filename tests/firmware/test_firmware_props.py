"""Property: near 2**30, 2**31 and 2**32, the firmware's frames are the host encoder's, with
nothing allocated.

On a 32-bit port (31-bit small ints) every integer at or above 2**30 is a heap object, so a
seq or a u32 field there is where a MicroPython sender allocates by accident. Hypothesis draws
start seqs and field values around those points (and each type's own limits); the unix port
patches a few readings from each start under micropython.heap_lock(), the seq counting up
across the wrap by itself, through viper and through the plain fallback; every frame is
compared with `codec.encode_raw`. A MemoryError (an allocation under the lock) fails it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from firmware_kit import build, no_viper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import KEY_HEX, run_bundle
from precast.wire.codec import encode_raw
from precast.wire.layout import Layout, load_layouts
from precast.wire.template import TYPES

pytestmark = pytest.mark.usefixtures("mp_port")

KEY = bytes.fromhex(KEY_HEX)
DEVICE = 0xFFFFFFFE  # a device id above 2**31 too
READS = 3  # readings from each start

SCRIPT = r"""
import json, binascii, micropython
import precast_template as tpl
from precast_fw import sender
with open("cases.json") as f:
    cases = json.load(f)
s = sender.Sender(tpl, KEY)
v = s.values
f = s.frame
L = len(f)
out = bytearray(L * READS * len(cases))
s.patch(v)  # a warm-up reading, as the app makes before it locks the heap
s.seq = 0
o = 0
for seq, raws in cases:
    s.seq = seq
    n = len(raws)
    micropython.heap_lock()
    i = 0
    while i < n:
        v[i] = raws[i]
        i += 1
    k = 0
    while k < READS:
        s.patch(v)
        j = 0
        while j < L:
            out[o + j] = f[j]
            j += 1
        o += L
        k += 1
    micropython.heap_unlock()
print(binascii.hexlify(out).decode())
"""

INT_TYPES = ["u8", "i8", "u16", "i16", "u32", "i32"]
POINTS = (1 << 30, 1 << 31, 1 << 32)


def _near_seq() -> st.SearchStrategy[int]:
    return st.builds(
        lambda p, d: (p + d) % (1 << 32), st.sampled_from(POINTS), st.integers(-READS - 2, 2)
    )


def _near_value(typ: str) -> st.SearchStrategy[int]:
    lo, hi = TYPES[typ][2], TYPES[typ][3]
    assert lo is not None and hi is not None
    marks = [lo, hi, 0, *(p for p in POINTS if lo <= p <= hi), *(-p for p in POINTS if lo <= -p)]
    near = st.builds(
        lambda m, d: min(max(m + d, lo), hi), st.sampled_from(marks), st.integers(-2, 2)
    )
    return st.one_of(near, st.integers(lo, hi))


_BUNDLES: dict[tuple[str, bool], tuple[Layout, Path]] = {}


def _bundle(tmp: Path, check: str, plain: bool) -> tuple[Layout, Path]:
    """A bundle of a template with every integer type (twice), built once per test run."""
    key = (check, plain)
    if key not in _BUNDLES:
        types = INT_TYPES * 2
        fields = "".join(f'\n[[field]]\nname = "f{i}"\ntype = "{t}"\n' for i, t in enumerate(types))
        path = tmp / f"near-{check}.toml"
        path.write_text(f'id = 120\nname = "near"\ncheck = "{check}"\n{fields}')
        out = tmp / f"b-{check}-{plain}"
        build(out, path, "--device", str(DEVICE), "--key", KEY_HEX)
        if plain:
            no_viper(out)
        _BUNDLES[key] = (load_layouts([path])[0], out)
    return _BUNDLES[key]


CASE = st.tuples(_near_seq(), st.tuples(*(_near_value(t) for t in INT_TYPES * 2)))


@pytest.mark.parametrize("plain", [False, True], ids=["viper", "plain"])
@pytest.mark.parametrize("check", ["crc16", "cmac8"])
@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cases=st.lists(CASE, min_size=1, max_size=6))
def test_frames_near_2_30_2_31_2_32_are_the_encoders_under_heap_lock(
    tmp_path_factory: pytest.TempPathFactory,
    check: str,
    plain: bool,
    cases: list[tuple[int, tuple[int, ...]]],
) -> None:
    lay, bundle = _bundle(tmp_path_factory.getbasetemp(), check, plain)
    (bundle / "cases.json").write_text(json.dumps(cases))
    r = run_bundle(bundle, f"KEY = {KEY!r}\nREADS = {READS}\n{SCRIPT}")
    assert r.returncode == 0, r.stdout + r.stderr  # a MemoryError: allocated under the lock
    got = bytes.fromhex(r.stdout.strip())
    n = lay.frame_len
    assert len(got) == n * READS * len(cases)
    o = 0
    for seq, raws in cases:
        for k in range(READS):
            want = encode_raw(lay, list(raws), DEVICE, (seq + k) & 0xFFFFFFFF, KEY)
            assert got[o : o + n] == want, (seq, k, raws)
            o += n
