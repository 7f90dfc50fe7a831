"""Bad input to the decoder: always a reason, never an exception."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from kit import TEMPLATES
from precast import Codec, compile_template, encode, encode_raw, load_template, load_templates
from precast.wire.codec import Reading, Rejected
from precast.wire.constants import PAYLOAD_OFFSET

LAYOUTS = [compile_template(t) for t in load_templates([TEMPLATES])]
KEY = bytes(range(16))
CODEC = Codec(LAYOUTS, key=KEY)
ENV = compile_template(load_template(TEMPLATES / "env-node.toml"))
GOOD = encode(ENV, {"temperature": 20, "humidity": 50, "pressure": 100000, "battery": 3000}, 1, 1)
PAYLOAD = GOOD[PAYLOAD_OFFSET:]


def reason(data: bytes) -> str:
    r = CODEC.decode(data)
    assert isinstance(r, Rejected), r
    return r.reason


def with_byte(data: bytes, i: int, v: int) -> bytes:
    b = bytearray(data)
    b[i] = v
    return bytes(b)


def test_good_frame_and_payload_decode() -> None:
    assert isinstance(CODEC.decode(GOOD), Reading)
    assert isinstance(CODEC.decode(PAYLOAD), Reading)


def test_truncated_and_oversized() -> None:
    for n in range(14):
        assert reason(PAYLOAD[:n]) == "short"
    assert reason(PAYLOAD[:-1]) == "length"
    assert reason(PAYLOAD + b"\0") == "length"
    assert reason(PAYLOAD + bytes(65507 - len(PAYLOAD))) == "length"


def test_wrong_magic_version_flags() -> None:
    assert reason(with_byte(PAYLOAD, 0, 0x51)) == "magic"
    assert reason(with_byte(PAYLOAD, 1, 0x20)) == "version"
    for bit in (0x02, 0x04, 0x08):
        assert reason(with_byte(PAYLOAD, 1, 0x10 | bit)) == "flags"


def test_unknown_template_and_wrong_check_kind() -> None:
    assert reason(PAYLOAD[:2] + struct.pack(">H", 999) + PAYLOAD[4:]) == "unknown-template"
    assert reason(with_byte(PAYLOAD, 1, 0x11)) == "check-kind"  # MIC flag on a crc16 template


def test_wrong_crc_and_wrong_mic_and_missing_key() -> None:
    assert reason(PAYLOAD[:-1] + bytes([PAYLOAD[-1] ^ 1])) == "crc"
    pm = compile_template(load_template(TEMPLATES / "power-meter.toml"))
    f = encode_raw(pm, [1, 2, 3, 0.5], 9, 9, KEY)
    assert isinstance(CODEC.decode(f), Reading)
    assert reason(encode_raw(pm, [1, 2, 3, 0.5], 9, 9, bytes(16))) == "mic"
    assert isinstance(Codec(LAYOUTS).decode(f), Rejected)
    assert Codec(LAYOUTS).decode(f).reason == "no-key"  # type: ignore[union-attr]
    # a per-device key wins over the default key
    assert isinstance(Codec(LAYOUTS, key=bytes(16), keys={9: KEY}).decode(f), Reading)


def test_padded_ethernet_frame_uses_header_lengths() -> None:
    assert isinstance(CODEC.decode(GOOD + bytes(20)), Reading)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_a_reason(data: bytes) -> None:
    r = CODEC.decode(data)
    assert isinstance(r, Rejected | Reading)


@settings(max_examples=500, deadline=None)
@given(st.binary(min_size=1, max_size=2), st.integers(0, len(PAYLOAD) - 1))
def test_any_burst_of_16_bits_is_refused(junk: bytes, at: int) -> None:
    # CRC-16 catches every error burst up to 16 bits long.
    data = (PAYLOAD[:at] + junk + PAYLOAD[at + len(junk) :])[: len(PAYLOAD)]
    r = CODEC.decode(data)
    if data != PAYLOAD:
        assert isinstance(r, Rejected)
