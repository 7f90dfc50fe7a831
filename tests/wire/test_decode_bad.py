"""Bad input to the decoder: always a reason, never an exception, and the right reason."""

from __future__ import annotations

import random
import struct

import crcmod.predefined
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import TEMPLATES
from precast import Codec, compile_template, encode, encode_raw, load_template, load_templates
from precast.wire.codec import Reading, Rejected
from precast.wire.constants import PAYLOAD_OFFSET
from strategies import examples

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
    for bit in (0x04, 0x08):
        assert reason(with_byte(PAYLOAD, 1, 0x10 | bit)) == "flags"
    # flag bit 1 says delayed: a frame without the age is the wrong length
    assert reason(with_byte(PAYLOAD, 1, 0x12)) == "length"


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


@settings(max_examples=examples(2000), deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_a_reason(data: bytes) -> None:
    r = CODEC.decode(data)
    assert isinstance(r, Rejected | Reading)


@settings(max_examples=examples(500), deadline=None)
@given(st.binary(min_size=1, max_size=2), st.integers(0, len(PAYLOAD) - 1))
def test_any_burst_of_16_bits_is_refused(junk: bytes, at: int) -> None:
    # CRC-16 catches every error burst up to 16 bits long.
    data = (PAYLOAD[:at] + junk + PAYLOAD[at + len(junk) :])[: len(PAYLOAD)]
    r = CODEC.decode(data)
    if data != PAYLOAD:
        assert isinstance(r, Rejected)


# ---- behind valid headers: the body random, the reason judged from outside ------------------
# The judges: crcmod's CRC-16/CCITT-FALSE and the cryptography package's AES-CMAC (RFC 4493),
# and the receiver's check order written out here from docs/PROTOCOL.md, not from the codec.

_CRC = crcmod.predefined.mkCrcFun("crc-ccitt-false")
_BY_ID = {lay.template.id: lay for lay in LAYOUTS}
_SPOILS = ["none", "fix", "flags", "check-kind", "unknown-template", "length", "no-key"]


def _cmac(key: bytes, data: bytes, n: int) -> bytes:
    c = CMAC(algorithms.AES(key))
    c.update(data)
    return c.finalize()[:n]


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(sorted(_BY_ID)),
    st.sampled_from(_SPOILS),
    st.randoms(use_true_random=False),
)
def test_random_bodies_behind_valid_headers_get_the_right_reason(
    tid: int, spoil: str, rnd: random.Random
) -> None:
    lay = _BY_ID[tid]
    mic = lay.template.mic
    n, c = lay.payload_len, lay.check_offset
    flags = 0x01 if mic else 0x00
    ident = tid
    codec = CODEC
    if spoil == "flags":
        flags |= rnd.choice([0x04, 0x08, 0x0C, 0x0E])
    elif spoil == "check-kind":
        flags ^= 0x01
    elif spoil == "unknown-template":
        ident = rnd.choice([i for i in range(0x10000) if i not in _BY_ID][:1000])
    elif spoil == "length":
        n = rnd.choice([x for x in range(14, n + 40) if x != lay.payload_len])
    elif spoil == "no-key":
        codec = Codec(LAYOUTS)
    head = bytes([0x50, 0x10 | flags]) + ident.to_bytes(2, "big")
    data = bytearray(head + rnd.randbytes(n - 4))
    if spoil in ("fix", "no-key"):  # a right check over the random body
        if mic:
            data[c:] = _cmac(KEY, bytes(data[:c]), n - c)
        else:
            data[c:] = _CRC(bytes(data[:c])).to_bytes(2, "big")
    body = bytes(data)
    # The expected verdict, in PROTOCOL.md's order.
    if spoil == "flags":
        want = "flags"
    elif spoil == "unknown-template":
        want = "unknown-template"
    elif spoil == "check-kind":
        want = "check-kind"
    elif spoil == "length":
        want = "length"
    elif mic and codec is not CODEC:
        want = "no-key"
    elif mic:
        want = "" if _cmac(KEY, body[:c], n - c) == body[c:] else "mic"
    else:
        want = "" if _CRC(body[:c]).to_bytes(2, "big") == body[c:] else "crc"
    r = codec.decode(body)
    if want:
        assert isinstance(r, Rejected) and r.reason == want, (spoil, r)
    else:
        assert isinstance(r, Reading), (spoil, r)
        assert (r.device, r.seq) == struct.unpack_from(">II", body, 4)
    # The codec's frame path agrees with its payload path.
    frame = lay.frame[:PAYLOAD_OFFSET] + body
    rf = codec.decode(frame) if len(body) == lay.payload_len else r
    assert type(rf) is type(r)
    assert getattr(rf, "reason", None) == getattr(r, "reason", None)
