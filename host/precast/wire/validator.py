"""The receiver's fast path: the codec's verdict on a datagram at a fraction of its cost.

A valid payload's first four bytes (magic, version/flags, template id) are a
constant of its template, so one dict lookup finds the template; a CRC-16 over
the payload and its own big-endian CRC leaves 0, so one call checks it. A
delayed frame (flag bit 1) has a prefix of its own, so it finds its own Spec
(`delayed`, P + 4 bytes, the age the body's last value). Whatever
fails there is handed to codec.Codec for its reason, so the reasons, and the
order they are checked in (docs/PROTOCOL.md), are the codec's.
tests/wire/test_validator.py holds the two against each other on generated inputs.
"""

from __future__ import annotations

import struct
from typing import Any

from precast.wire.checks import cmac, crc16
from precast.wire.codec import Codec, Rejected
from precast.wire.constants import (
    CRC,
    HEADER_LEN,
    LENGTH,
    MAGIC,
    MAGIC_BAD,
    MIC,
    NO_KEY,
    PAYLOAD_OFFSET,
    SHORT,
)
from precast.wire.header import DEVICE
from precast.wire.layout import Layout

# (reason, spec, unpacked body): reason "" for a valid frame; spec and body are None when
# the frame failed before its template was known (or its length did not fit).
Verdict = tuple[str, "Spec | None", "tuple[Any, ...] | None"]


class Spec:
    """One template's frame (live or delayed) as the fast path uses it: prefix, length, check."""

    def __init__(self, layout: Layout) -> None:
        t = layout.template
        self.layout = layout
        self.id = t.id
        self.mic = t.mic
        self.delayed = layout.delayed  # the body ends in the age (ms)
        self.length = layout.payload_len
        self.check_offset = layout.check_offset
        self.check_len = layout.check_len
        # body: the header (header.py), the fields' raw values (, age)
        self.unpack = struct.Struct(layout.body_fmt).unpack_from
        self.prefix = layout.payload[:4]  # magic, version/flags, template id


class Validator:
    """Checks bare UDP payloads as Codec.decode does, in docs/PROTOCOL.md's order."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        frames = [f for lay in codec.layouts.values() for f in (lay, lay.late)]
        self.specs = {s.prefix: s for s in map(Spec, frames)}

    def check(self, data: bytes) -> Verdict:
        """(reason, spec, body) for one datagram; reason '' when it is valid."""
        sp = self.specs.get(data[:4])
        if sp is None or len(data) != sp.length:
            return self.reason(data), None, None
        v = sp.unpack(data)
        if sp.mic:
            return self.mic_reason(sp, v[DEVICE], data), sp, v
        return (CRC if crc16(data) else ""), sp, v

    def reason(self, data: bytes) -> str:
        """Why data is refused: the codec's reason ('length' for a frame that decodes wrapped)."""
        # Garbage, the common refusal under a flood: data that cannot be an Ethernet frame
        # is its own payload, so its first two reasons are one length and one byte away.
        if len(data) < PAYLOAD_OFFSET or data[12:14] != b"\x08\x00":
            if len(data) < HEADER_LEN + 2:
                return SHORT
            if data[0] != MAGIC:
                return MAGIC_BAD
        r = self.codec.decode(data)
        # The fast path took every valid bare payload, so data can only decode here as a whole
        # Ethernet frame around one: over UDP that is a datagram of the wrong length.
        return r.reason if isinstance(r, Rejected) else LENGTH

    def mic_reason(self, sp: Spec, device: int, data: bytes) -> str:
        """'' when the MIC is right, else no-key or mic."""
        key = self.codec.key_for(device)
        if key is None:
            return NO_KEY
        c = sp.check_offset
        return "" if cmac(key, data[:c], sp.check_len) == data[c:] else MIC
