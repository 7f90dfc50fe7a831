"""Compile a template into a frame layout: the frame, its offsets and its constant sums.

Everything here is computed once per template. A sender then copies
`frame`, patches device, seq, fields and check at the offsets below, and
finishes the UDP checksum from `udp_partial` plus the one's-complement sum
of the payload's variable bytes [4, P) (RFC 1624). The IPv4 header
checksum never changes: the length is fixed, identification is 0 and DF
is set (docs/PROTOCOL.md, RFC 6864).

A template has a second frame, its delayed one (`Layout.late`): flag bit 1
set and a u32 age after the fields, before the check, P + 4 bytes, so its
IPv4 total length and checksum, UDP length and partial sum are its own.

Frame: Ethernet II (14) | IPv4 without options (20) | UDP (8) | payload (P).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

from precast.errors import UsageError
from precast.wire import header
from precast.wire.checks import checksum, ones_sum
from precast.wire.constants import (
    AGE_LEN,
    FLAG_DELAYED,
    FLAG_MIC,
    IP_LEN,
    MAGIC,
    OFF_DEVICE,
    OFF_FIELDS,
    OFF_MAGIC,
    OFF_SEQ,
    OFF_TEMPLATE,
    OFF_VERFLAGS,
    PAYLOAD_OFFSET,
    UDP_LEN,
    VARIABLE_FROM,
    VERSION,
)
from precast.wire.template import Field, Template, load_templates


def _decimals(x: float | int) -> int:
    """Digits after the point that x needs in its shortest repr (0.01 -> 2)."""
    if isinstance(x, int):
        return 0
    exp = Decimal(repr(x)).as_tuple().exponent
    return max(0, -exp) if isinstance(exp, int) else 0


@dataclass(frozen=True)
class FieldSlot:
    """A compiled field: where it sits in the payload and how to pack it."""

    field: Field
    offset: int  # in the payload
    code: str
    digits: int  # decimals that units need (for exact round trips)

    @property
    def name(self) -> str:
        return self.field.name


@dataclass(frozen=True)
class Layout:
    """A compiled template: the whole frame and everything a sender patches."""

    template: Template
    frame: bytes
    payload_len: int
    fields: tuple[FieldSlot, ...]
    fields_fmt: str  # struct format of the fields alone, ">..."
    body_fmt: str  # header + fields (+ age when delayed): ">BBHII..."
    check_offset: int  # in the payload
    check_len: int
    ip_checksum: int
    udp_partial: int  # unfolded sum over pseudo-header, UDP header and payload[0:4]
    delayed: bool = False  # flag bit 1 set, the age at age_offset

    @property
    def id(self) -> int:
        return self.template.id

    @property
    def age_offset(self) -> int:
        """Where a delayed frame's age sits in the payload (right before the check)."""
        return self.check_offset - AGE_LEN if self.delayed else self.check_offset

    @cached_property
    def late(self) -> Layout:
        """The template's delayed frame (itself when this one is delayed)."""
        if self.delayed:
            return self
        late = compile_template(self.template, delayed=True)
        late.__dict__["live"] = self  # the pair knows each other: no third compile
        return late

    @cached_property
    def live(self) -> Layout:
        """The template's live frame (itself when this one is live)."""
        return compile_template(self.template) if self.delayed else self

    @property
    def payload_offset(self) -> int:
        return PAYLOAD_OFFSET

    @property
    def frame_len(self) -> int:
        return len(self.frame)

    @property
    def payload(self) -> bytes:
        return self.frame[PAYLOAD_OFFSET:]

    def to_json(self) -> dict[str, Any]:
        """The layout as plain JSON types (`precast compile --json`)."""
        t = self.template
        n = t.network
        late = self.late
        delayed = {
            "frame": late.frame.hex(),
            "frame_length": len(late.frame),
            "payload_length": late.payload_len,
            "age_offset": late.age_offset,
            "check_offset": late.check_offset,
            "ip_checksum": late.ip_checksum,
            "udp_partial": late.udp_partial,
        }
        return {
            "template": t.id,
            "name": t.name,
            "check": t.check,
            "frame": self.frame.hex(),
            "frame_length": len(self.frame),
            "payload_offset": PAYLOAD_OFFSET,
            "payload_length": self.payload_len,
            "device_offset": OFF_DEVICE,
            "seq_offset": OFF_SEQ,
            "check_offset": self.check_offset,
            "check_length": self.check_len,
            "struct": self.body_fmt,
            "ip_checksum": self.ip_checksum,
            "udp_partial": self.udp_partial,
            "delayed": delayed,
            "network": {
                "src_mac": n.src_mac,
                "dst_mac": n.dst_mac,
                "src_ip": n.src_ip,
                "dst_ip": n.dst_ip,
                "src_port": n.src_port,
                "dst_port": n.dst_port,
                "ttl": n.ttl,
                "dscp": n.dscp,
            },
            "fields": [
                {
                    "name": s.name,
                    "type": s.field.type,
                    "offset": s.offset,
                    "frame_offset": PAYLOAD_OFFSET + s.offset,
                    "size": s.field.size,
                    "struct": s.code,
                    "scale": s.field.scale,
                    "offset_units": s.field.offset,
                    "unit": s.field.unit,
                }
                for s in self.fields
            ],
        }


def _mac(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def compile_template(t: Template, delayed: bool = False) -> Layout:
    """Compute the whole frame once, with zeroed device, seq, fields, age and check.

    `delayed`: the template's delayed frame, flag bit 1 set and P + 4 bytes.
    """
    n = t.network
    plen = t.payload_len + (AGE_LEN if delayed else 0)
    slots = []
    off = OFF_FIELDS
    for f in t.fields:
        slots.append(FieldSlot(f, off, f.code, max(_decimals(f.scale), _decimals(f.offset))))
        off += f.size
    fields_fmt = ">" + "".join(s.code for s in slots)
    check_offset = off + (AGE_LEN if delayed else 0)

    payload = bytearray(plen)
    payload[OFF_MAGIC] = MAGIC
    flags = (FLAG_MIC if t.mic else 0) | (FLAG_DELAYED if delayed else 0)
    payload[OFF_VERFLAGS] = (VERSION << 4) | flags
    struct.pack_into(">H", payload, OFF_TEMPLATE, t.id)

    src_ip = ipaddress.IPv4Address(n.src_ip).packed
    dst_ip = ipaddress.IPv4Address(n.dst_ip).packed
    udp_len = UDP_LEN + plen
    ip = bytearray(
        struct.pack(
            ">BBHHHBBH4s4s",
            0x45,
            n.dscp << 2,
            IP_LEN + udp_len,
            0,
            0x4000,
            n.ttl,
            17,
            0,
            src_ip,
            dst_ip,
        )
    )
    ip_csum = checksum(ip)
    struct.pack_into(">H", ip, 10, ip_csum)
    udp = struct.pack(">HHHH", n.src_port, n.dst_port, udp_len, 0)
    eth = _mac(n.dst_mac) + _mac(n.src_mac) + b"\x08\x00"
    frame = eth + bytes(ip) + udp + bytes(payload)

    pseudo = src_ip + dst_ip + struct.pack(">BBH", 0, 17, udp_len)
    # Everything fixed: pseudo-header, UDP header (checksum 0), payload[0:4].
    # UDP header and pseudo-header are 12 + 8 bytes, so payload words stay aligned.
    partial = ones_sum(pseudo) + ones_sum(udp) + ones_sum(payload[:VARIABLE_FROM])
    return Layout(
        template=t,
        frame=frame,
        payload_len=plen,
        fields=tuple(slots),
        fields_fmt=fields_fmt,
        body_fmt=header.FORMAT + fields_fmt[1:] + ("I" if delayed else ""),  # the age last
        check_offset=check_offset,
        check_len=t.check_len,
        ip_checksum=ip_csum,
        udp_partial=partial,
        delayed=delayed,
    )


def load_layouts(paths: Iterable[str | Path]) -> list[Layout]:
    """Compiled layouts for template files and directories."""
    return [compile_template(t) for t in load_templates(paths)]


def pick_layout(paths: Sequence[str | Path], which: str | None) -> Layout:
    """One layout from files/directories: the only one, or the one named by id or name."""
    layouts = load_layouts(paths)
    if which is not None:
        for lay in layouts:
            if which in (str(lay.template.id), lay.template.name):
                return lay
        raise UsageError(f"no template {which!r} in {', '.join(map(str, paths))}")
    if len(layouts) != 1:
        names = ", ".join(f"{lay.template.name} ({lay.template.id})" for lay in layouts)
        raise UsageError(f"several templates ({names}): pick one with --template NAME|ID")
    return layouts[0]
