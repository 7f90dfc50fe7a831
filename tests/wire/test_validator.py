"""The collector's fast path (wire/validator.py) gives the codec's verdict on every datagram.

Judge: Codec.decode, the reference decoder, on the same bytes. Inputs: valid
payloads of generated templates, and the same payloads spoiled the ways a
network or an attacker spoils them (a byte changed, cut short, grown, the
body replaced by random bytes behind a valid header), with and without the key.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from kit import TEMPLATES
from precast import Layout
from precast.wire.codec import Codec, Reading
from precast.wire.constants import PAYLOAD_OFFSET
from precast.wire.layout import load_layouts
from precast.wire.validator import Validator
from strategies import KEY, delayed_frames, examples, frames

GARBAGE_CODEC = Codec(load_layouts([TEMPLATES]))


def verdicts(codec: Codec, payload: bytes) -> tuple[str, str]:
    want = codec.decode(payload)
    reason, spec, body = Validator(codec).check(payload)
    if isinstance(want, Reading):
        assert reason == "" and spec is not None and body is not None
        assert (body[3], body[4]) == (want.device, want.seq)
        assert spec.delayed == want.delayed
        if spec.delayed:
            assert (tuple(body[5:-1]), body[-1]) == (want.raw, want.age_ms)
        else:
            assert tuple(body[5:]) == want.raw
        return "", ""
    return reason, want.reason


@settings(max_examples=examples(300), deadline=None)
@given(st.one_of(frames(), delayed_frames().map(lambda d: (d[0].live, d[1]))), st.data())
def test_fast_path_gives_the_codecs_verdict(lf: tuple[Layout, bytes], data: st.DataObject) -> None:
    layout, frame = lf
    payload = bytearray(frame[PAYLOAD_OFFSET:])
    how = data.draw(st.sampled_from(["valid", "byte", "cut", "grow", "body", "no-key"]))
    if how == "byte":
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] ^= data.draw(st.integers(1, 255))
    elif how == "cut":
        del payload[data.draw(st.integers(0, len(payload) - 1)) :]
    elif how == "grow":
        payload += data.draw(st.binary(min_size=1, max_size=8))
    elif how == "body":  # magic, version, flags, template right; the rest random
        payload[4:] = data.draw(st.binary(min_size=len(payload) - 4, max_size=len(payload) - 4))
    codec = Codec([layout], key=None if how == "no-key" else KEY)
    got, want = verdicts(codec, bytes(payload))
    assert got == want, (how, got, want)


def test_a_valid_payload_is_valid_and_a_bad_crc_is_crc() -> None:
    """A negative control: the property above cannot pass with both sides always agreeing."""
    from precast import compile_template, encode_raw, parse_template

    lay = compile_template(parse_template({"id": 3, "field": [{"name": "x", "type": "u16"}]}))
    payload = bytearray(encode_raw(lay, [513], 1, 2)[PAYLOAD_OFFSET:])
    codec = Codec([lay])
    assert Validator(codec).check(bytes(payload))[0] == ""
    payload[-1] ^= 1
    assert Validator(codec).check(bytes(payload))[0] == "crc"


@settings(max_examples=examples(500), deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80),
        st.tuples(st.binary(min_size=12, max_size=12), st.binary(max_size=60)).map(
            lambda t: t[0] + b"\x08\x00\x45" + t[1]
        ),
        st.binary(max_size=60).map(lambda b: b"\x50" + b),
    )
)
def test_garbage_gets_the_codecs_reason(data: bytes) -> None:
    """The shortcut for garbage (short, magic) agrees with the codec, Ethernet-looking or not."""
    reason, want = verdicts(GARBAGE_CODEC, data)
    assert reason == want
