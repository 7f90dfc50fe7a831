"""Byte for byte: the frames the firmware builds on MicroPython are the host codec's.

For every shipped template and for temporary ones covering each check kind
(crc16, cmac4, cmac8), every integer type, odd lengths, CMAC messages of
one short block, one complete block and several blocks, and more fields
than one pack_into call takes, seeded random readings (with each type's
extremes and seqs across the 16- and 32-bit wraps) are patched on the unix
port, through the viper checks and through the plain fallback, and
compared with `codec.encode_raw`. scapy recomputes the IPv4 and UDP
checksums of the firmware's frames as a second judge.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
from firmware_kit import build, no_viper
from kit import KEY_HEX, TEMPLATES, precast, run_bundle
from precast.wire.codec import encode_raw
from precast.wire.layout import Layout, load_layouts
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

KEY = bytes.fromhex(KEY_HEX)
DEVICE = 0xDEADBEEF
CASES = 200

SCRIPT = r"""
import json, binascii
import precast_template as tpl
from precast_fw import sender, checks
with open("cases.json") as f:
    cases = json.load(f)
s = sender.Sender(tpl, KEY)
v = s.values  # an array("i"), or a list where a field is f32
print("viper", checks.VIPER)
for seq, raws in cases:
    s.seq = seq
    i = 0
    for r in raws:
        v[i] = r
        i += 1
    s.patch(v)
    print(binascii.hexlify(s.frame).decode(), s.seq)
"""

INT_TYPES = ["u8", "i8", "u16", "i16", "u32", "i32"]


def _template(path: Path, tid: int, check: str, types: list[str]) -> Path:
    fields = "".join(f'\n[[field]]\nname = "f{i}"\ntype = "{t}"\n' for i, t in enumerate(types))
    path.write_text(f'id = {tid}\nname = "t{tid}"\ncheck = "{check}"\n{fields}')
    return path


def _extra_templates(tmp: Path) -> list[Path]:
    wide = [INT_TYPES[i % 6] for i in range(20)]  # 20 fields: two pack_into calls, odd length
    out = []
    for tid, check in ((101, "crc16"), (102, "cmac4"), (103, "cmac8")):
        out.append(_template(tmp / f"wide-{check}.toml", tid, check, wide))
    # CMAC message lengths: 13 (one short block), 16 (one complete block), 32 (two complete)
    out.append(_template(tmp / "short.toml", 110, "cmac4", ["u8"]))
    out.append(_template(tmp / "block.toml", 111, "cmac8", ["u32"]))
    out.append(_template(tmp / "blocks.toml", 112, "cmac4", ["i32"] * 5))
    out.append(_template(tmp / "u8crc.toml", 113, "crc16", ["u8"]))
    return out


def _raw(rng: random.Random, typ: str) -> int | float:
    if typ == "f32":
        return struct.unpack(">f", struct.pack(">f", rng.uniform(-1e6, 1e6)))[0]
    from precast.wire.template import TYPES

    lo, hi = TYPES[typ][2], TYPES[typ][3]
    assert lo is not None and hi is not None
    return rng.choice([lo, hi, 0, rng.randint(lo, hi), rng.randint(lo, hi)])


def _cases(lay: Layout, seed: int) -> list[tuple[int, list[int | float]]]:
    rng = random.Random(seed)
    seqs = [0, 0xFFFF, 0x10000, 0xFFFFFFFF, 0x3FFFFFFF, 0x40000000]
    seqs += [rng.randrange(1 << 32) for _ in range(CASES - len(seqs))]
    return [(seq, [_raw(rng, s.field.type) for s in lay.fields]) for seq in seqs]


def _check_frames(lay: Layout, cases: list[tuple[int, list[int | float]]], out: str) -> None:
    lines = out.split("\n")
    assert len(lines) == len(cases) + 1
    for (seq, raws), line in zip(cases, lines[1:], strict=True):
        hexframe, next_seq = line.split()
        want = encode_raw(lay, raws, DEVICE, seq, KEY)
        assert bytes.fromhex(hexframe) == want, (seq, raws)
        _receiver_accepts(want)  # every frame, judged as a receiver would
        assert int(next_seq) == (seq + 1) & 0xFFFFFFFF


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _words(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    return sum(int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2))


def _udp_sum(frame: bytes) -> int:
    """A receiver's view (RFC 768/1071, written here, not the codec's): pseudo-header + segment."""
    segment = frame[34:]
    pseudo = frame[26:34] + bytes([0, 17]) + len(segment).to_bytes(2, "big")
    return _fold(_words(pseudo + segment))


def _receiver_accepts(frame: bytes) -> None:
    """What a receiving kernel checks: the IPv4 header and the UDP segment each sum to 0xFFFF,
    and the UDP checksum is not 0 (which would mean "none")."""
    assert _fold(_words(frame[14:34])) == 0xFFFF
    assert frame[40:42] != b"\0\0"
    assert _udp_sum(frame) == 0xFFFF


def _computes_zero(frame: bytes) -> bool:
    """True when the frame's UDP checksum, computed, is 0 (and so goes out as 0xFFFF)."""
    blank = frame[:40] + b"\0\0" + frame[42:]
    return _udp_sum(blank) == 0xFFFF


def _scapy_agrees(frame: bytes) -> None:
    p = Ether(frame)
    ip_sum, udp_sum = p[IP].chksum, p[UDP].chksum
    del p[IP].chksum
    del p[UDP].chksum
    q = Ether(bytes(p))
    assert (q[IP].chksum, q[UDP].chksum) == (ip_sum, udp_sum)


def _templates(tmp: Path) -> list[Path]:
    return sorted(TEMPLATES.glob("*.toml")) + _extra_templates(tmp)


@pytest.mark.parametrize("plain", [False, True], ids=["viper", "plain"])
def test_firmware_frames_equal_host_encode(tmp_path: Path, plain: bool) -> None:
    paths = _templates(tmp_path)
    checks_seen = set()
    for n, path in enumerate(paths):
        lay = load_layouts([path])[0]
        checks_seen.add(lay.template.check)
        out = tmp_path / f"b{n}"
        build(out, path, "--device", str(DEVICE), "--key", KEY_HEX)
        if plain:
            no_viper(out)
        cases = _cases(lay, seed=n)
        (out / "cases.json").write_text(json.dumps(cases))
        script = f"KEY = {KEY!r}\n" + SCRIPT
        r = run_bundle(out, script)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"viper {not plain}"), r.stdout[:40]
        _check_frames(lay, cases, r.stdout.strip())
        _scapy_agrees(bytes.fromhex(r.stdout.split("\n")[1].split()[0]))
    assert checks_seen == {"crc16", "cmac4", "cmac8"}


def test_firmware_frame_equals_precast_encode(tmp_path: Path) -> None:
    """The CLI as the judge: `precast encode` of values in units, the firmware given raws."""
    template = TEMPLATES / "env-node.toml"
    values = ["temperature=-12.34", "humidity=56.78", "pressure=101325", "battery=3300"]
    r = precast("encode", str(template), "--device", "7", "--seq", "70000", *values)
    assert r.returncode == 0, r.stderr
    build(tmp_path / "b", template, "--device", "7")
    (tmp_path / "b" / "cases.json").write_text(json.dumps([[70000, [-1234, 5678, 101325, 3300]]]))
    out = run_bundle(tmp_path / "b", f"KEY = None\n{SCRIPT}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split("\n")[1].split()[0] == r.stdout.strip()


SEARCH = r"""
import precast_template as tpl
from precast_fw import sender
s = sender.Sender(tpl, KEY)
v = s.values
i = 0
for r in RAWS:
    v[i] = r
    i += 1
f = s.frame
hits = []
seq = 0
while seq < N and not hits:
    s.patch(v)
    if (f[40] == 0xFF and f[41] == 0xFF) or (f[40] == 0 and f[41] == 0):
        hits.append(seq)
    seq += 1
print(hits)
"""


def test_firmware_zero_udp_checksum_goes_out_as_ffff(tmp_path: Path) -> None:
    """RFC 768: a computed 0 is sent as 0xFFFF. Seqs whose checksum computes to 0 are found
    (by scanning on the firmware, then confirmed here), then patched by viper and plain."""
    extra = {p.stem: p for p in _extra_templates(tmp_path)}
    paths = [TEMPLATES / "env-node.toml", extra["short"], extra["blocks"]]  # crc16, cmac4 x2
    paths.append(_template(tmp_path / "c8.toml", 120, "cmac8", ["u16", "i16", "u32"]))
    for n, path in enumerate(paths):
        lay = load_layouts([path])[0]
        raws = [_raw(random.Random(n), f.field.type) for f in lay.fields]
        out = tmp_path / f"s{n}"
        build(out, path, "--device", str(DEVICE), "--key", KEY_HEX)
        r = run_bundle(out, f"KEY = {KEY!r}\nRAWS = {raws!r}\nN = 400000\n" + SEARCH)
        assert r.returncode == 0, r.stdout + r.stderr
        hits = json.loads(r.stdout)
        cases = [
            (seq, raws) for seq in hits if _computes_zero(encode_raw(lay, raws, DEVICE, seq, KEY))
        ]
        assert cases, (path.name, hits)  # at least one true zero, by this test's own sum
        for frame in (encode_raw(lay, raws, DEVICE, seq, KEY) for seq, _ in cases):
            assert frame[40:42] == b"\xff\xff"
            _scapy_agrees(frame)  # scapy, too, sends a computed 0 as 0xFFFF
        (out / "cases.json").write_text(json.dumps(cases))
        for plain in (False, True):
            if plain:
                no_viper(out)
            got = run_bundle(out, f"KEY = {KEY!r}\n" + SCRIPT)
            assert got.returncode == 0, got.stdout + got.stderr
            assert got.stdout.startswith(f"viper {not plain}")
            _check_frames(lay, cases, got.stdout.strip())
