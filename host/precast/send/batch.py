"""Patch many frames of one template at once: numpy over rows of whole frames.

A batch is a (rows, frame_len) uint8 array whose rows start as compiled
frames (the same one, or one per device when devices differ in MACs and
IPs). Per batch the patcher writes device, seq and fields as big-endian
columns, then the check and the UDP checksum for every row together:

- CRC-16/CCITT-FALSE over payload [0, c) is affine over GF(2) for a fixed
  length: crc(x) = crc(x with bytes [4, c) zeroed) XOR the contribution of
  each of those bytes alone, looked up in a per-position table of 256
  entries (wire/batch.py's, which the collector checks with). One gather
  and one XOR-reduce replace c-4 table steps per row.
- The UDP checksum is the row's folded partial sum plus the sum of the
  payload's 16-bit words from offset 4 (RFC 1624); a 0 goes out as 0xFFFF.

CMAC templates cannot be vectorised: their rows are patched one by one by
codec.patch. Either way the bytes equal codec.encode's exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from precast.wire.batch import DTYPES, crc16_tables
from precast.wire.checks import crc16, fold
from precast.wire.codec import patch
from precast.wire.constants import HEADER_LEN, OFF_DEVICE, OFF_SEQ, PAYLOAD_OFFSET, UDP_CSUM_OFFSET
from precast.wire.layout import Layout

Frames = npt.NDArray[np.uint8]
Scalar = int | float
Column = Scalar | npt.NDArray[Any]


class BatchPatcher:
    """Patches rows of whole frames of one layout: device, seq, fields, check, UDP checksum."""

    def __init__(self, layout: Layout, key: bytes | None = None) -> None:
        self.layout = layout
        self.key = key
        self.frame = np.frombuffer(layout.frame, dtype=np.uint8)
        self.partial = fold(layout.udp_partial)
        p = PAYLOAD_OFFSET
        c = layout.check_offset
        self._dev = slice(p + OFF_DEVICE, p + OFF_DEVICE + 4)
        self._seq = slice(p + OFF_SEQ, p + OFF_SEQ + 4)
        self._fields = [
            (slice(p + s.offset, p + s.offset + s.field.size), np.dtype(DTYPES[s.field.type]))
            for s in layout.fields
        ]
        self._crc_at = p + c
        self._var = slice(p + OFF_DEVICE, p + c)  # bytes the CRC table covers
        if not layout.template.mic:
            # The fixed bytes [0, 4) of the payload fold into the base CRC.
            head = layout.payload[:OFF_DEVICE]
            fixed = bytearray(c)
            fixed[:OFF_DEVICE] = head
            self._crc_base = crc16(bytes(fixed))
            _, tables = crc16_tables(c, OFF_DEVICE)
            self._crc_flat = tables.reshape(-1)
            self._crc_plans: dict[tuple[int, ...], tuple[npt.NDArray[np.intp], ...]] = {}
        # Words summed for the UDP checksum: payload [4, P), zero-padded to even.
        self._sum_from = p + OFF_DEVICE
        self._odd = layout.payload_len % 2 == 1

    def empty(self, rows: int) -> Frames:
        """A batch of `rows` copies of the compiled frame."""
        return np.tile(self.frame, (rows, 1))

    def patch(
        self,
        out: Frames,
        device: Column,
        seq: Column,
        raws: Sequence[Column],
        partial: int | npt.NDArray[np.uint32] | None = None,
    ) -> None:
        """Write device, seq and raw fields (scalars or one value per row), then the checks.

        `partial` is the folded UDP partial sum per row, when rows carry
        different addresses (a fleet); by default the layout's own.
        """
        rows = out.shape[0]
        if rows == 0:
            return
        out[:, self._dev] = _be(device, ">u4", rows)
        out[:, self._seq] = _be(seq, ">u4", rows)
        for (sl, dt), raw in zip(self._fields, raws, strict=True):
            out[:, sl] = _be(raw, dt, rows)
        if self.layout.template.mic:
            self._patch_mic(out)
            if partial is not None:  # the MIC covers the payload alone, not the addresses
                self._udp_checksum(out, partial)
            return
        crc = self._crc(out, [np.ndim(device), np.ndim(seq), *map(np.ndim, raws)])
        out[:, self._crc_at : self._crc_at + 2] = _be(crc, ">u2", rows)
        self._udp_checksum(out, self.partial if partial is None else partial)

    def _crc(self, out: Frames, ndims: list[int]) -> npt.NDArray[np.uint16]:
        """Each row's CRC: table lookups gathered over the columns that differ between rows."""
        key = tuple(ndims)
        if key not in self._crc_plans:
            p = PAYLOAD_OFFSET + OFF_DEVICE
            varies = np.zeros(self._var.stop - self._var.start, dtype=bool)
            spans = [self._dev, self._seq, *(sl for sl, _ in self._fields)]
            for sl, nd in zip(spans, ndims, strict=True):
                varies[sl.start - p : sl.stop - p] = nd > 0
            self._crc_plans[key] = (np.flatnonzero(varies), np.flatnonzero(~varies))
        var, fixed = self._crc_plans[key]
        # Bytes that are the same in every row: one row's lookups, once.
        row0 = out[0, self._var]
        c = self._crc_base
        if len(fixed):
            c ^= int(np.bitwise_xor.reduce(self._crc_flat[fixed * 256 + row0[fixed]]))
        if not len(var):
            return np.full(out.shape[0], c, dtype=np.uint16)
        idx = out[:, self._var][:, var].astype(np.intp)
        idx += var * 256
        crc: npt.NDArray[np.uint16] = np.bitwise_xor.reduce(self._crc_flat[idx], axis=1)
        return crc ^ np.uint16(c)

    def _udp_checksum(self, out: Frames, partial: int | npt.NDArray[np.uint32]) -> None:
        # Rows and the payload start at even offsets: the words are a big-endian u16 view.
        end = self._sum_from + (out.shape[1] - self._sum_from) // 2 * 2
        s = out[:, self._sum_from : end].view(">u2").sum(axis=1, dtype=np.uint32)
        if self._odd:
            s += out[:, -1].astype(np.uint32) << 8
        s += partial
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        c = (~s & 0xFFFF).astype(np.uint16)
        c[c == 0] = 0xFFFF
        out[:, UDP_CSUM_OFFSET : UDP_CSUM_OFFSET + 2] = _be(c, ">u2", out.shape[0])

    def _patch_mic(self, out: Frames) -> None:
        p = PAYLOAD_OFFSET
        for row in out:
            frame = bytearray(row.tobytes())
            # device, seq and fields are already in place: re-pack them as codec.patch does.
            device = int.from_bytes(frame[p + OFF_DEVICE : p + OFF_DEVICE + 4], "big")
            seq = int.from_bytes(frame[p + OFF_SEQ : p + OFF_SEQ + 4], "big")
            raws = _unpack_fields(self.layout, frame)
            patch(self.layout, frame, device, seq, raws, self.key)
            row[:] = np.frombuffer(frame, dtype=np.uint8)


def _unpack_fields(layout: Layout, frame: bytearray) -> tuple[Any, ...]:
    return struct.unpack_from(layout.fields_fmt, frame, PAYLOAD_OFFSET + HEADER_LEN)


def _be(value: Column, dtype: str | np.dtype[Any], rows: int) -> npt.NDArray[np.uint8]:
    """Big-endian bytes of a scalar (broadcast) or of one value per row, shape (rows|1, size)."""
    a = np.asarray(value).astype(dtype, copy=False)
    if a.ndim == 0:
        return a.reshape(1).view(np.uint8)[None, :]
    return np.ascontiguousarray(a).view(np.uint8).reshape(rows, -1)
