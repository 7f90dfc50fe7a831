"""A payload's header, named, and its one parse (docs/PROTOCOL.md, "Payload").

    0      1              2..3      4..7     8..11
    magic  version|flags  template  device   seq        (big-endian)

`parse` reads it from a payload for whoever needs only the header (the
codec, the log's account of a refused frame). The fast paths unpack a whole
body in one call, the header then the fields (layout.body_fmt, the array
path's record dtype): both take their header part from FIELDS here, and read
a body's values by the positions DEVICE, SEQ and FIRST_FIELD.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from precast.wire.constants import HEADER_LEN

# (name, struct code, numpy dtype) in wire order: the one definition of the header.
FIELDS = (
    ("magic", "B", "u1"),
    ("version_flags", "B", "u1"),
    ("template", "H", ">u2"),
    ("device", "I", ">u4"),
    ("seq", "I", ">u4"),
)
FORMAT = ">" + "".join(code for _, code, _ in FIELDS)  # ">BBHII"
_STRUCT = struct.Struct(FORMAT)
if _STRUCT.size != HEADER_LEN:  # a header edited out of step with constants.py
    raise ImportError(f"header {FORMAT} is {_STRUCT.size} bytes, HEADER_LEN {HEADER_LEN}")


class Header(NamedTuple):
    """A payload's first HEADER_LEN bytes, by name."""

    magic: int
    version_flags: int
    template: int
    device: int
    seq: int


# Where a body (layout.body_fmt unpacked: the header, then the fields) keeps its values.
DEVICE = Header._fields.index("device")
SEQ = Header._fields.index("seq")
FIRST_FIELD = len(Header._fields)


def parse(data: bytes | bytearray | memoryview) -> Header | None:
    """The header at the start of a bare payload; None when data is too short for one."""
    if len(data) < HEADER_LEN:
        return None
    return Header._make(_STRUCT.unpack_from(data))
