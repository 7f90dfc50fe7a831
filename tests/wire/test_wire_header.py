"""The header's one definition against the offsets constants.py names and a frame encoded."""

from __future__ import annotations

import struct

from collector_harness import LAYOUTS
from precast.wire import header
from precast.wire.codec import encode
from precast.wire.constants import (
    HEADER_LEN,
    MAGIC,
    OFF_DEVICE,
    OFF_SEQ,
    OFF_TEMPLATE,
    OFF_VERFLAGS,
    PAYLOAD_OFFSET,
)


def test_each_value_where_constants_put_it() -> None:
    offsets = {"version_flags": OFF_VERFLAGS, "template": OFF_TEMPLATE}
    offsets |= {"magic": 0, "device": OFF_DEVICE, "seq": OFF_SEQ}
    at = 0
    for name, code, _ in header.FIELDS:
        assert offsets[name] == at, name
        at += struct.calcsize(">" + code)
    assert at == HEADER_LEN


def test_parse_and_the_body_positions_agree() -> None:
    lay = LAYOUTS["minimal"]
    frame = encode(lay, {"value": 7}, 0xDEADBEEF, 4_000_000_000)
    payload = frame[PAYLOAD_OFFSET:]
    h = header.parse(payload)
    assert h is not None
    assert (h.magic, h.template, h.device, h.seq) == (MAGIC, lay.id, 0xDEADBEEF, 4_000_000_000)
    body = struct.unpack_from(lay.body_fmt, payload)
    assert (body[header.DEVICE], body[header.SEQ]) == (h.device, h.seq)
    assert body[header.FIRST_FIELD] == 7
    assert header.parse(payload[: HEADER_LEN - 1]) is None
