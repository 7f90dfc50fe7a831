"""The build's second frame: the firmware's Sender makes the host codec's delayed frame.

The delayed frame (flag bit 1, the age after the fields, P + 4) is
precomputed by `precast build` (its IPv4 length and checksum, UDP length and
partial sum, CRC state) into precast_template_late.py and patched by the
same hot path as the live frame,
the age one more u32 field. Judges: codec.encode_raw with age_ms, and a
receiver's own sums over the IPv4 header and the UDP segment.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from firmware_kit import build, no_viper
from kit import KEY_HEX, TEMPLATES, run_bundle
from precast.wire.codec import encode_raw
from precast.wire.layout import load_layouts
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

pytestmark = pytest.mark.usefixtures("mp_port")

KEY = bytes.fromhex(KEY_HEX)
DEVICE = 0xDEADBEEF

SCRIPT = r"""
import json, binascii
import precast_template as tpl
import precast_template_late as late
from precast_fw import sender, checks
with open("cases.json") as f:
    cases = json.load(f)
s = sender.Sender(late, KEY)
v = s.values  # the template's fields, then the age
print("viper", checks.VIPER, len(s.frame), len(tpl.FRAME))
for seq, raws, age in cases:
    s.seq = seq
    i = 0
    for r in raws:
        v[i] = r
        i += 1
    v[i] = age
    s.patch(v)
    print(binascii.hexlify(s.frame).decode())
"""


@pytest.mark.parametrize("plain", [False, True], ids=["viper", "plain"])
def test_the_late_frame_is_the_codecs_delayed_frame(tmp_path: Path, plain: bool) -> None:
    for n, path in enumerate(sorted(TEMPLATES.glob("*.toml"))):
        lay = load_layouts([path])[0]
        out = tmp_path / f"b{n}"
        build(out, path, "--device", str(DEVICE), "--key", KEY_HEX)
        if plain:
            no_viper(out)
        rng = random.Random(n)
        raws = [[s.field.range[0] if s.field.type != "f32" else 1.5 for s in lay.fields]]
        raws += [
            [rng.randint(*s.field.range) if s.field.type != "f32" else 0.25 for s in lay.fields]
            for _ in range(20)
        ]
        ages = [0, 1, 90_000, 0x3FFFFFFF] + [rng.randrange(1 << 30) for _ in range(17)]
        cases = [(rng.randrange(1 << 32), r, a) for r, a in zip(raws, ages, strict=True)]
        (out / "cases.json").write_text(json.dumps(cases))
        r = run_bundle(out, f"KEY = {KEY!r}\n" + SCRIPT)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().split("\n")
        assert lines[0] == f"viper {not plain} {lay.frame_len + 4} {lay.frame_len}", lines[0]
        for (seq, raw, age), line in zip(cases, lines[1:], strict=True):
            frame = bytes.fromhex(line)
            assert frame == encode_raw(lay, raw, DEVICE, seq, KEY, age), (path.name, seq, age)
        p = Ether(bytes.fromhex(lines[1]))
        del p[IP].chksum, p[UDP].chksum
        assert bytes(Ether(bytes(p))) == bytes.fromhex(lines[1])
