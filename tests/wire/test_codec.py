"""Codec properties: round trips, checksums that match a full recomputation, every bit checked."""

from __future__ import annotations

import struct
from decimal import Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import TEMPLATES
from precast import (
    Codec,
    EncodeError,
    Layout,
    compile_template,
    encode,
    encode_raw,
    load_template,
    parse_template,
)
from precast.wire.checks import checksum, ones_sum
from precast.wire.codec import Reading, Rejected, to_raw
from precast.wire.constants import PAYLOAD_OFFSET
from strategies import KEY, examples, f32s, frames, raws, templates


def full_udp_checksum(frame: bytes) -> int:
    """UDP checksum recomputed from scratch over the pseudo-header and the whole datagram."""
    ip = frame[14:34]
    udp_len = struct.unpack(">H", frame[38:40])[0]
    udp = bytearray(frame[34 : 34 + udp_len])
    udp[6:8] = b"\0\0"
    pseudo = ip[12:20] + struct.pack(">BBH", 0, 17, udp_len)
    c = checksum(pseudo + bytes(udp))
    return c or 0xFFFF


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_round_trip_raw_and_units(data: st.DataObject) -> None:
    lay: Layout = data.draw(templates())
    values = data.draw(raws(lay))
    device = data.draw(st.integers(0, 0xFFFFFFFF))
    seq = data.draw(st.integers(0, 0xFFFFFFFF))
    frame = encode_raw(lay, values, device, seq, KEY)
    r = Codec([lay], key=KEY).decode(frame)
    assert isinstance(r, Reading), r
    assert (r.template, r.device, r.seq) == (lay.template.id, device, seq)
    assert list(r.raw) == values
    # decode(encode(x)) == x in units, for every x that decode returned: an integer
    # field's x is raw * scale + offset, an f32's x names its float32, so encoding x
    # gives back the very same raw values, f32 included.
    again = Codec([lay], key=KEY).decode(encode(lay, r.fields, device, seq, KEY))
    assert isinstance(again, Reading) and again.fields == r.fields
    assert again.raw == r.raw
    # and the bare payload decodes the same
    assert Codec([lay], key=KEY).decode(frame[PAYLOAD_OFFSET:]) == r


@settings(max_examples=examples(300), deadline=None)
@given(frames())
def test_checksums_equal_full_recomputation(lf: tuple[Layout, bytes]) -> None:
    lay, frame = lf
    assert checksum(frame[14:34]) == 0  # a correct IPv4 header sums to 0xFFFF
    assert struct.unpack(">H", frame[24:26])[0] == lay.ip_checksum
    assert struct.unpack(">H", frame[40:42])[0] == full_udp_checksum(frame)
    assert len(frame) == PAYLOAD_OFFSET + lay.payload_len


@settings(max_examples=examples(60), deadline=None)
@given(st.data())
def test_any_single_flipped_payload_bit_is_refused(data: st.DataObject) -> None:
    lay: Layout = data.draw(templates(max_fields=4))
    frame = encode_raw(lay, data.draw(raws(lay)), 1, 2, KEY)
    codec = Codec([lay], key=KEY)
    payload = frame[PAYLOAD_OFFSET:]
    for bit in range(len(payload) * 8):
        bad = bytearray(payload)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert isinstance(codec.decode(bytes(bad)), Rejected), f"bit {bit} flipped went unnoticed"


F32 = compile_template(parse_template({"id": 1, "field": [{"name": "t", "type": "f32"}]}))


def test_f32_round_trip_of_issue_17() -> None:
    # Issue 17's raw value (its template's scale 0.001 and offset 273.15 on the f32 are
    # refused now, tests/wire/test_template.py): the value in units is the float itself.
    frame = encode_raw(F32, [-6.103515625e-05], 7, 1)
    r = Codec([F32]).decode(frame)
    assert isinstance(r, Reading) and r.fields == {"t": -6.1035156e-05}
    assert encode(F32, r.fields, 7, 1) == frame
    assert struct.unpack(">f", frame[PAYLOAD_OFFSET + 12 : PAYLOAD_OFFSET + 16])[0] == -(2**-14)


def _f32_neighbours(x: float) -> tuple[float, float]:
    """The float32s just below and just above x (x a finite, non-zero float32)."""
    bits = struct.unpack(">I", struct.pack(">f", x))[0]
    below, above = (bits - 1, bits + 1) if x > 0 else (bits + 1, bits - 1)
    as_f32 = lambda b: struct.unpack(">f", struct.pack(">I", b))[0]  # noqa: E731
    return as_f32(below), as_f32(above)


@settings(max_examples=examples(300), deadline=None)
@given(f32s().filter(lambda x: x != 0 and abs(x) < 3.4e38), st.sampled_from([-1, 1]))
def test_f32_encodes_the_nearest_float32(x: float, side: int) -> None:
    # A decimal just off the midpoint between x and a neighbour: the nearest float32 is x,
    # judged by exact decimal arithmetic (a value through a double would round twice).
    nb = _f32_neighbours(x)[0 if side < 0 else 1]
    with localcontext(prec=400):  # every float32 is exact in 400 digits
        mid = (Decimal(x) + Decimal(nb)) / 2
        toward_x = (Decimal(x) - mid) * Decimal("1e-30")
        near_x, near_nb = mid + toward_x, mid - toward_x
    for value in (near_x, Decimal(x), Decimal(repr(x))):
        assert to_raw(F32.fields[0], str(value)) == x, value
    assert to_raw(F32.fields[0], str(near_nb)) == nb


def test_f32_range_ends_halfway_past_its_largest() -> None:
    largest = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]
    halfway = Decimal(2**128 - 2**103)
    for sign in (1, -1):
        with localcontext(prec=60):
            below = sign * (halfway - Decimal("1e-10"))  # a double would round it up to halfway
        assert to_raw(F32.fields[0], str(below)) == sign * largest
        with pytest.raises(EncodeError, match="out of range for f32"):
            to_raw(F32.fields[0], str(sign * halfway))


def test_udp_checksum_zero_goes_out_as_ffff() -> None:
    # Search seq values until the computed checksum is 0: it must be sent as 0xFFFF.
    lay = compile_template(load_template(TEMPLATES / "minimal.toml"))
    for seq in range(200_000):
        f = encode_raw(lay, [0], 0, seq)
        s = ones_sum(f[26:34]) + ones_sum(f[34:40]) + 17 + len(f[34:]) + ones_sum(f[42:])
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        if s == 0xFFFF:  # complement would be 0
            assert f[40:42] == b"\xff\xff"
            return
    pytest.fail("no seq gave a zero checksum in range")


def test_rounding_is_half_away_from_zero() -> None:
    lay = compile_template(load_template(TEMPLATES / "env-node.toml"))
    base = {"humidity": 1, "pressure": 1, "battery": 1}
    for value, raw in [
        ("0.005", 1),
        ("-0.005", -1),
        ("0.0049", 0),
        ("21.455", 2146),
        (-21.455, -2146),
        (327.67, 32767),
    ]:
        f = encode(lay, {**base, "temperature": value}, 1, 1)
        r = Codec([lay]).decode(f)
        assert isinstance(r, Reading) and r.raw[0] == raw, (value, r)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", 327.68),
        ("temperature", -327.69),
        ("humidity", -0.01),
        ("pressure", 2**32),
        ("battery", "abc"),
        ("battery", "nan"),
        ("pressure", "inf"),
    ],
)
def test_out_of_range_is_refused_never_wrapped(field: str, value: object) -> None:
    lay = compile_template(load_template(TEMPLATES / "env-node.toml"))
    values: dict[str, object] = {"temperature": 1, "humidity": 1, "pressure": 1, "battery": 1}
    values[field] = value
    with pytest.raises(EncodeError, match=field):
        encode(lay, values, 1, 1)


def test_only_the_variable_bytes_change() -> None:
    lay = compile_template(load_template(TEMPLATES / "env-node.toml"))
    a = encode(lay, {"temperature": 1, "humidity": 2, "pressure": 3, "battery": 4}, 5, 6)
    b = encode(lay, {"temperature": 9, "humidity": 8, "pressure": 7, "battery": 6}, 5, 7)
    changed = {i for i in range(len(a)) if a[i] != b[i]}
    allowed = set(range(40, 42)) | set(range(PAYLOAD_OFFSET + 4, len(a)))
    assert changed and changed <= allowed
    assert a[:40] == lay.frame[:40]
