"""Delayed frames on the wire (docs/PROTOCOL.md, Delayed frames): flag bit 1, a u32 age, P + 4.

Judges besides precast: scapy recomputes the IPv4 and UDP lengths and
checksums, crcmod the CRC-16, the `cryptography` package the AES-CMAC, and
struct reads the age from where the protocol puts it.
"""

from __future__ import annotations

import json
import struct

import crcmod.predefined
import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import TEMPLATES, precast
from precast import Codec, EncodeError, Layout, compile_template, encode_raw, load_template
from precast.wire.codec import Reading, Rejected
from precast.wire.constants import PAYLOAD_OFFSET
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from strategies import KEY, delayed_frames, examples, raws, templates

CRC = crcmod.predefined.mkCrcFun("crc-ccitt-false")
MINIMAL = compile_template(load_template(TEMPLATES / "minimal.toml"))


def judged_by_scapy(frame: bytes) -> bytes:
    """The frame as scapy rebuilds it with its own lengths and checksums."""
    p = Ether(frame)
    del p[IP].len, p[IP].chksum, p[UDP].len, p[UDP].chksum
    return bytes(p)


@settings(max_examples=examples(200), deadline=None)
@given(delayed_frames())
def test_a_delayed_frame_is_the_live_one_with_its_age_before_the_check(
    d: tuple[Layout, bytes, int],
) -> None:
    late, frame, age = d
    live = late.live
    payload = frame[PAYLOAD_OFFSET:]
    assert len(payload) == live.payload_len + 4 == late.payload_len
    assert judged_by_scapy(frame) == frame
    assert payload[1] == (1 << 4) | (0x03 if live.template.mic else 0x02)
    c = live.check_offset  # the live frame's check offset is the delayed frame's age offset
    assert struct.unpack_from(">I", payload, c)[0] == age
    if live.template.mic:
        mac = CMAC(algorithms.AES(KEY))
        mac.update(payload[: c + 4])
        assert payload[c + 4 :] == mac.finalize()[: live.check_len]
    else:
        assert struct.unpack_from(">H", payload, c + 4)[0] == CRC(payload[: c + 4])
    r = Codec([live], key=KEY).decode(frame)
    assert isinstance(r, Reading) and r.age_ms == age and r.delayed
    assert r.layout is live
    # the same reading live: the same fields, no age
    again = Codec([live], key=KEY).decode(encode_raw(live, r.raw, r.device, r.seq, KEY))
    assert isinstance(again, Reading) and again.age_ms is None
    assert (again.raw, again.device, again.seq) == (r.raw, r.device, r.seq)


@settings(max_examples=examples(40), deadline=None)
@given(st.data())
def test_any_single_flipped_bit_of_a_delayed_payload_is_refused(data: st.DataObject) -> None:
    lay: Layout = data.draw(templates(max_fields=4))
    frame = encode_raw(lay, data.draw(raws(lay)), 1, 2, KEY, data.draw(st.integers(0, 2**32 - 1)))
    codec = Codec([lay], key=KEY)
    payload = frame[PAYLOAD_OFFSET:]
    for bit in range(len(payload) * 8):
        bad = bytearray(payload)
        bad[bit // 8] ^= 1 << (bit % 8)
        assert isinstance(codec.decode(bytes(bad)), Rejected), f"bit {bit} flipped went unnoticed"


def test_the_flag_and_the_length_must_agree() -> None:
    codec = Codec([MINIMAL])
    live = encode_raw(MINIMAL, [5], 1, 9)[PAYLOAD_OFFSET:]
    late = encode_raw(MINIMAL, [5], 1, 9, age_ms=1000)[PAYLOAD_OFFSET:]
    flagged = bytearray(live)
    flagged[1] |= 0x02  # says delayed, carries no age
    r = codec.decode(bytes(flagged))
    assert isinstance(r, Rejected) and r.reason == "length", r
    unflagged = bytearray(late)
    unflagged[1] &= ~0x02  # an age, and the flag cleared
    r = codec.decode(bytes(unflagged))
    assert isinstance(r, Rejected) and r.reason == "length", r
    for reserved in (0x04, 0x08):
        bad = bytearray(late)
        bad[1] |= reserved
        r = codec.decode(bytes(bad))
        assert isinstance(r, Rejected) and r.reason == "flags", r


def test_the_age_saturates_and_is_never_negative() -> None:
    frame = encode_raw(MINIMAL, [5], 1, 9, age_ms=2**40)
    r = Codec([MINIMAL]).decode(frame)
    assert isinstance(r, Reading) and r.age_ms == 0xFFFFFFFF
    with pytest.raises(EncodeError, match="negative"):
        encode_raw(MINIMAL, [5], 1, 9, age_ms=-1)


def test_a_template_whose_delayed_frame_would_not_fit_is_refused(tmp_path) -> None:
    from precast import TemplateError

    fields = "".join(f'[[field]]\nname = "f{i}"\ntype = "u32"\n' for i in range(364))
    p = tmp_path / "big.toml"
    p.write_text("id = 1\n" + fields)  # 12 + 1456 + 2 = 1470 live, 1474 delayed
    with pytest.raises(TemplateError, match="1474 delayed"):
        load_template(p)


def test_encode_age_ms_and_decode_print_it() -> None:
    r = precast(
        "encode", str(TEMPLATES / "minimal.toml"), "--device", "1", "--seq", "9",
        "--age-ms", "90000", "value=5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    frame = bytes.fromhex(r.stdout.strip())
    assert len(frame) == MINIMAL.frame_len + 4
    assert judged_by_scapy(frame) == frame
    d = precast("decode", str(TEMPLATES), frame.hex())
    assert d.returncode == 0, d.stderr
    assert '"age_ms": 90000' in d.stdout and '"seq": 9' in d.stdout
    live = precast("decode", str(TEMPLATES), encode_raw(MINIMAL, [5], 1, 9).hex())
    assert "age_ms" not in live.stdout
    bad = precast(
        "encode", str(TEMPLATES / "minimal.toml"), "--device", "1", "--seq", "9",
        "--age-ms", "-1", "value=5",
    )  # fmt: skip
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "Traceback" not in bad.stderr


@settings(max_examples=examples(100), deadline=None)
@given(st.data())
def test_delay_makes_of_a_live_frame_what_encode_makes_delayed(data: st.DataObject) -> None:
    from precast.wire.codec import delay

    lay: Layout = data.draw(templates())
    raw = data.draw(raws(lay))
    age = data.draw(st.integers(0, 2**32 - 1))
    live = encode_raw(lay, raw, 3, 4, KEY)
    assert delay(lay, live, age, KEY) == encode_raw(lay, raw, 3, 4, KEY, age)


def test_compile_shows_the_delayed_frame() -> None:
    r = precast("compile", str(TEMPLATES / "env-node.toml"))
    assert r.returncode == 0, r.stderr
    # 0xb6b1: docs/PROTOCOL.md's delayed example, its checksum judged there by scapy
    want = "delayed: frame 70 bytes, payload 28, age (u32 ms) at 22, crc16 at 26,"
    assert f"  {want} IPv4 checksum 0xb6b1" in r.stdout.splitlines()
    j = precast("compile", str(TEMPLATES / "env-node.toml"), "--json")
    late = json.loads(j.stdout)["delayed"]
    assert (late["frame_length"], late["age_offset"], late["ip_checksum"]) == (70, 22, 0xB6B1)
