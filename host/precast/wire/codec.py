"""Encode readings into compiled frames, and decode frames or payloads back.

Encoding patches a copy of the compiled frame: device, seq, the fields, the
check, and the UDP checksum (the template's partial sum plus the sum of
the payload's variable bytes, RFC 1624). Nothing else changes.

A delayed frame (flag bit 1) is the template's second frame, Layout.late:
the same fields, then a u32 age in milliseconds from taking to sending, then
the check over both; `age_ms` makes one, and a decoded one carries it.

Decoding takes a whole Ethernet frame or a bare UDP payload, checks it in
docs/PROTOCOL.md's order and returns a Reading or a Rejected reason. It never
raises on bad bytes: bad input is data, not an accident.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from precast.errors import EncodeError
from precast.wire import header
from precast.wire.checks import checksum, cmac, crc16, ones_sum, udp_final
from precast.wire.constants import (
    CHECK_KIND,
    CRC,
    FLAG_DELAYED,
    FLAG_MIC,
    FLAGS_BAD,
    FLAGS_RESERVED,
    HEADER_LEN,
    IP_CSUM_OFFSET,
    IP_OFFSET,
    LENGTH,
    MAGIC,
    MAGIC_BAD,
    MIC,
    NO_KEY,
    OFF_DEVICE,
    OFF_SEQ,
    PAYLOAD_OFFSET,
    SHORT,
    U32_MAX,
    UDP_CSUM_OFFSET,
    UDP_LEN_OFFSET,
    UDP_OFFSET,
    UNKNOWN_TEMPLATE,
    VARIABLE_FROM,
    VERSION,
    VERSION_BAD,
)
from precast.wire.header import FIRST_FIELD
from precast.wire.layout import FieldSlot, Layout

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_F32 = struct.Struct(">f")
_F32_MAX = 2.0**128 - 2.0**104  # the largest finite float32
_F32_OVERFLOW = 2.0**128 - 2.0**103  # halfway to the next power: from here on, infinity
_ETH_IP = struct.Struct(">12xHBxHxxxxxB")  # ethertype, ver/ihl, total length, protocol


@dataclass(frozen=True, slots=True)
class Rejected:
    """A frame refused by the decoder: a reason from REASONS and a detail."""

    reason: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"error": self.reason + (f": {self.detail}" if self.detail else "")}


@dataclass(frozen=True, slots=True)
class Reading:
    """A decoded reading: raw field values, and their values in units on demand."""

    layout: Layout
    device: int
    seq: int
    raw: tuple[int | float, ...]
    age_ms: int | None = None  # a delayed frame's age: ms from taking to sending

    @property
    def template(self) -> int:
        return self.layout.template.id

    @property
    def delayed(self) -> bool:
        return self.age_ms is not None

    @property
    def fields(self) -> dict[str, int | float]:
        return {s.name: to_units(s, r) for s, r in zip(self.layout.fields, self.raw, strict=True)}

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "template": self.template,
            "device": self.device,
            "seq": self.seq,
            "fields": self.fields,
        }
        if self.age_ms is not None:
            doc["age_ms"] = self.age_ms
        return doc


def nearest_f32(d: Decimal) -> float:
    """The float32 nearest to d, ties to even; OverflowError past float32's range.

    Decimal -> double -> float32 rounds twice, which is off by one unit only
    when the double lands exactly halfway between two float32s: d decides then.
    """
    x = float(d)
    try:
        y: float = _F32.unpack(_F32.pack(x))[0]
    except OverflowError:
        if abs(x) == _F32_OVERFLOW and d.copy_abs() < Decimal(x).copy_abs():  # rounded up to it
            return math.copysign(_F32_MAX, x)
        raise
    if y != x:
        bits = _U32.unpack(_F32.pack(y))[0]
        nb: float = _F32.unpack(_U32.pack(bits + 1 if abs(x) > abs(y) else bits - 1))[0]
        if math.isfinite(nb) and (y + nb) / 2 == x:
            mid = Decimal(x)  # exact, and so are the comparisons
            if d != mid and (d > mid) == (nb > y):
                return nb
    return y


def _f32_repr(x: float) -> float:
    """The shortest decimal that names the same float32 (0.1f -> 0.1, not 0.10000000149)."""
    if not math.isfinite(x):
        return x
    want = struct.pack(">f", x)
    for p in range(6, 10):
        y = float(f"{x:.{p}g}")
        if struct.pack(">f", y) == want:
            return y
    return x


def to_units(slot: FieldSlot, raw: int | float) -> int | float:
    """A raw wire value in units: raw * scale + offset, rounded to the scale's decimals.

    An f32 field carries its value in units (a template gives it no scale or
    offset): the value is the float itself, named by its shortest decimal.
    """
    f = slot.field
    if f.type == "f32":
        return _f32_repr(float(raw))
    v = raw * f.scale + f.offset
    if isinstance(v, int):
        return v
    return round(v, slot.digits) if slot.digits else v


def _decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool):
        raise EncodeError(f"field {name!r}: not a number: {value!r}")
    try:
        d = Decimal(value if isinstance(value, str | int | Decimal) else repr(value))
    except (InvalidOperation, ValueError, TypeError):
        raise EncodeError(f"field {name!r}: not a number: {value!r}") from None
    if not d.is_finite():
        raise EncodeError(f"field {name!r}: not a finite number: {value!r}")
    return d


def to_raw(slot: FieldSlot, value: object) -> int | float:
    """A value in units as its raw wire value: rounded half away from zero, range-checked.

    For f32 the value is its own raw value: the float32 nearest to it.
    """
    f = slot.field
    d = _decimal(value, f.name)
    if f.type == "f32":
        try:
            return nearest_f32(d)
        except OverflowError:
            raise EncodeError(f"field {f.name!r}: {value} is out of range for f32") from None
    exact = (d - Decimal(repr(f.offset))) / Decimal(repr(f.scale))
    raw = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    lo, hi = f.range
    assert lo is not None and hi is not None
    if not lo <= raw <= hi:
        lo_u = to_units(slot, lo)
        hi_u = to_units(slot, hi)
        raise EncodeError(
            f"field {f.name!r}: {value} is out of range for {f.type} ({lo_u}..{hi_u}"
            f"{' ' + f.unit if f.unit else ''})"
        )
    return raw


def raw_values(layout: Layout, values: Mapping[str, object]) -> list[int | float]:
    """Raw values in wire order from {name: value in units}; every field, nothing more."""
    names = [s.name for s in layout.fields]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise EncodeError(
            f"unknown field {unknown[0]!r} for template {layout.template.name!r}"
            f" (fields: {', '.join(names)})"
        )
    missing = [n for n in names if n not in values]
    if missing:
        raise EncodeError(f"missing field {missing[0]!r} (fields: {', '.join(names)})")
    return [to_raw(s, values[s.name]) for s in layout.fields]


def _check_ids(device: int, seq: int) -> None:
    if not 0 <= device <= 0xFFFFFFFF:
        raise EncodeError(f"device {device} is out of range 0..4294967295")
    if not 0 <= seq <= 0xFFFFFFFF:
        raise EncodeError(f"seq {seq} is out of range 0..4294967295")


def age_of(ms: int | float) -> int:
    """An age on the wire: whole milliseconds, saturating at 0xFFFFFFFF (docs/PROTOCOL.md)."""
    if ms < 0:
        raise EncodeError(f"age {ms} ms is negative: a reading is sent after it is taken")
    return min(int(ms), U32_MAX)


def patch(
    layout: Layout,
    frame: bytearray,
    device: int,
    seq: int,
    raw: Iterable[int | float],
    key: bytes | None = None,
    age_ms: int = 0,
) -> None:
    """Patch a copy of layout.frame in place: device, seq, fields, age, check, UDP checksum.

    The age (a u32, already saturated) is written only in a delayed layout's frame.
    """
    p = PAYLOAD_OFFSET
    _U32.pack_into(frame, p + OFF_DEVICE, device)
    _U32.pack_into(frame, p + OFF_SEQ, seq)
    try:
        struct.pack_into(layout.fields_fmt, frame, p + HEADER_LEN, *raw)
    except struct.error as e:
        raise EncodeError(f"cannot pack fields {layout.fields_fmt!r}: {e}") from None
    if layout.delayed:
        _U32.pack_into(frame, p + layout.age_offset, age_ms)
    c = p + layout.check_offset
    body = memoryview(frame)[p:c]
    if layout.template.mic:
        if key is None:
            raise EncodeError(
                f"template {layout.template.name!r} uses {layout.template.check}: "
                "a key is needed (--key HEX)"
            )
        frame[c : c + layout.check_len] = cmac(key, body, layout.check_len)
    else:
        _U16.pack_into(frame, c, crc16(body))
    body.release()
    s = layout.udp_partial + ones_sum(memoryview(frame)[p + VARIABLE_FROM :])
    _U16.pack_into(frame, UDP_CSUM_OFFSET, udp_final(s))


def encode_raw(
    layout: Layout,
    raw: Iterable[int | float],
    device: int,
    seq: int,
    key: bytes | None = None,
    age_ms: int | float | None = None,
) -> bytes:
    """The whole frame for raw field values; with `age_ms`, the delayed frame."""
    _check_ids(device, seq)
    if age_ms is not None:
        layout = layout.late
    elif layout.delayed:
        raise EncodeError("a delayed frame needs its age (age_ms)")
    frame = bytearray(layout.frame)
    patch(layout, frame, device, seq, raw, key, 0 if age_ms is None else age_of(age_ms))
    return bytes(frame)


def encode(
    layout: Layout,
    values: Mapping[str, object],
    device: int,
    seq: int,
    key: bytes | None = None,
    age_ms: int | float | None = None,
) -> bytes:
    """The whole frame for {name: value in units}; with `age_ms`, the delayed frame."""
    return encode_raw(layout, raw_values(layout, values), device, seq, key, age_ms)


def delay(
    layout: Layout, frame: bytes | bytearray | memoryview, age_ms: int | float, key: bytes | None
) -> bytes:
    """A live frame of layout's template made its delayed frame: flag bit 1, the age, new checks.

    Its own addresses are kept (a fleet's devices differ in them): the IPv4 and UDP
    lengths grow by the age's 4 bytes and both checksums are computed again.
    """
    live = layout.live
    p = PAYLOAD_OFFSET
    c = p + live.check_offset
    if len(frame) != p + live.payload_len:
        raise EncodeError(f"{len(frame)} bytes: not a live frame of template {live.id}")
    out = bytearray(frame[:c])
    out[p + 1] |= FLAG_DELAYED
    out += _U32.pack(age_of(age_ms))
    body = memoryview(out)[p:]
    if live.template.mic:
        if key is None:
            raise EncodeError(f"template {live.template.name!r}: a key is needed for its MIC")
        check = cmac(key, body, live.check_len)
    else:
        check = _U16.pack(crc16(body))
    body.release()
    out += check
    _U16.pack_into(out, IP_OFFSET + 2, len(out) - IP_OFFSET)  # total length
    _U16.pack_into(out, IP_CSUM_OFFSET, 0)
    _U16.pack_into(out, IP_CSUM_OFFSET, checksum(out[IP_OFFSET:UDP_OFFSET]))
    _U16.pack_into(out, UDP_LEN_OFFSET, len(out) - UDP_OFFSET)
    _U16.pack_into(out, UDP_CSUM_OFFSET, 0)
    pseudo = out[IP_OFFSET + 12 : UDP_OFFSET] + struct.pack(">BBH", 0, 17, len(out) - UDP_OFFSET)
    _U16.pack_into(out, UDP_CSUM_OFFSET, udp_final(ones_sum(pseudo) + ones_sum(out[UDP_OFFSET:])))
    return bytes(out)


def payload_of(data: bytes | bytearray | memoryview) -> memoryview:
    """The UDP payload if data is a whole Ethernet/IPv4/UDP frame, else data itself.

    A frame is recognised by its structure (EtherType 0x0800, IPv4, protocol
    17, lengths that agree); lengths come from the headers, never from the
    frame's size, so Ethernet padding is ignored.
    """
    m = memoryview(data)
    if len(m) >= PAYLOAD_OFFSET:
        etype, verihl, total, proto = _ETH_IP.unpack_from(m)
        if etype == 0x0800 and verihl >> 4 == 4 and proto == 17:
            ihl = (verihl & 0x0F) * 4
            u = 14 + ihl
            if ihl >= 20 and len(m) >= u + 8 and 14 + total <= len(m):
                ulen = _U16.unpack_from(m, u + 4)[0]
                if ulen >= 8 and ihl + ulen == total:
                    return m[u + 8 : u + ulen]
    return m


class Codec:
    """Decodes frames against a set of compiled templates and the keys on file."""

    def __init__(
        self,
        layouts: Iterable[Layout],
        key: bytes | None = None,
        keys: Mapping[int, bytes] | None = None,
    ) -> None:
        self.layouts: dict[int, Layout] = {lay.template.id: lay for lay in layouts}
        self.key = key
        self.keys: Mapping[int, bytes] = keys or {}

    def key_for(self, device: int) -> bytes | None:
        return self.keys.get(device, self.key)

    def decode(self, data: bytes | bytearray | memoryview) -> Reading | Rejected:
        """A Reading, or the first reason (docs/PROTOCOL.md's order) the data is refused."""
        m = payload_of(data)
        n = len(m)
        if n < HEADER_LEN + 2:
            return Rejected(SHORT, f"{n} bytes")
        h = header.parse(m)
        assert h is not None  # n >= HEADER_LEN
        magic, vf, tid = h.magic, h.version_flags, h.template
        if magic != MAGIC:
            return Rejected(MAGIC_BAD, f"0x{magic:02x}")
        if vf >> 4 != VERSION:
            return Rejected(VERSION_BAD, str(vf >> 4))
        if vf & FLAGS_RESERVED:
            return Rejected(FLAGS_BAD, f"0x{vf & 0x0F:x}")
        lay = self.layouts.get(tid)
        if lay is None:
            return Rejected(UNKNOWN_TEMPLATE, str(tid))
        mic = bool(vf & FLAG_MIC)
        if mic != lay.template.mic:
            return Rejected(CHECK_KIND, f"template {tid} uses {lay.template.check}")
        delayed = bool(vf & FLAG_DELAYED)
        live = lay
        if delayed:
            lay = lay.late
        if n != lay.payload_len:
            kind = " delayed" if delayed else ""
            return Rejected(LENGTH, f"{n} bytes, template {tid}{kind} needs {lay.payload_len}")
        c = lay.check_offset
        vals = struct.unpack_from(lay.body_fmt, m)[FIRST_FIELD:]
        device, seq = h.device, h.seq
        if mic:
            key = self.key_for(device)
            if key is None:
                return Rejected(NO_KEY, f"device {device}")
            if cmac(key, m[:c], lay.check_len) != m[c:]:
                return Rejected(MIC)
        elif crc16(m[:c]) != _U16.unpack_from(m, c)[0]:
            return Rejected(CRC)
        if delayed:
            return Reading(live, device, seq, vals[:-1], vals[-1])
        return Reading(lay, device, seq, vals)
