"""Hypothesis strategies for templates and in-range readings."""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from precast import Layout, compile_template, encode_raw, parse_template
from precast.wire.template import TYPES

KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")


def examples(n: int) -> int:
    """n examples under the default profile, scaled as the loaded profile scales its own 100.

    A test that sets max_examples overrides the profile's; this keeps `make fuzz` at ten
    times every test's count (tests/conftest.py registers the profiles).
    """
    return max(1, n * settings.default.max_examples // 100)


_scales = st.sampled_from([1, 1, 0.01, 0.1, 0.5, 2, 10, 0.001, 0.25])
_offsets = st.sampled_from([0, 0, -40, 273.15, 1000, 0.5])
_macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
_ips = st.binary(min_size=4, max_size=4).map(lambda b: ".".join(str(x) for x in b))


@st.composite
def templates(draw: st.DrawFn, max_fields: int = 12) -> Layout:
    """A compiled layout of a random valid template."""
    n = draw(st.integers(1, max_fields))
    fields: list[dict[str, Any]] = []
    for i in range(n):
        typ = draw(st.sampled_from(sorted(TYPES)))
        f: dict[str, Any] = {"name": f"f{i}", "type": typ}
        if typ != "f32" and draw(st.booleans()):  # an f32 carries units: no scale, no offset
            f["scale"] = draw(_scales)
            f["offset"] = draw(_offsets)
        fields.append(f)
    doc = {
        "id": draw(st.integers(0, 0xFFFF)),
        "check": draw(st.sampled_from(["crc16", "cmac4", "cmac8"])),
        "network": {
            "src_mac": draw(_macs),
            "dst_mac": draw(_macs),
            "src_ip": draw(_ips),
            "dst_ip": draw(_ips),
            "src_port": draw(st.integers(1, 65535)),
            "dst_port": draw(st.integers(1, 65535)),
            "ttl": draw(st.integers(1, 255)),
            "dscp": draw(st.integers(0, 63)),
        },
        "field": fields,
    }
    return compile_template(parse_template(doc))


def f32s() -> st.SearchStrategy[float]:
    """Finite floats that a float32 holds exactly; -0.0 is 0.0 in units, so left out."""
    return st.floats(width=32, allow_nan=False, allow_infinity=False).map(
        lambda x: struct.unpack(">f", struct.pack(">f", x))[0] + 0.0
    )


@st.composite
def raws(draw: st.DrawFn, layout: Layout) -> list[int | float]:
    """In-range raw values for every field of layout."""
    out: list[int | float] = []
    for s in layout.fields:
        if s.field.type == "f32":
            out.append(draw(f32s()))
        else:
            lo, hi = s.field.range
            assert lo is not None and hi is not None
            out.append(draw(st.integers(lo, hi)))
    return out


@st.composite
def frames(draw: st.DrawFn, max_fields: int = 12) -> tuple[Layout, bytes]:
    """A random template's layout and one whole frame of an in-range reading (keyed by KEY)."""
    lay: Layout = draw(templates(max_fields))
    u32 = st.integers(0, 0xFFFFFFFF)
    return lay, encode_raw(lay, draw(raws(lay)), draw(u32), draw(u32), KEY)


@st.composite
def delayed_frames(draw: st.DrawFn, max_fields: int = 12) -> tuple[Layout, bytes, int]:
    """A random template's delayed layout, one delayed frame (keyed by KEY) and its age."""
    lay: Layout = draw(templates(max_fields))
    u32 = st.integers(0, 0xFFFFFFFF)
    age = draw(u32)
    return lay.late, encode_raw(lay, draw(raws(lay)), draw(u32), draw(u32), KEY, age), age
