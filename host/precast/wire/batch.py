"""Checking a batch of payloads as arrays: the validator's verdicts, a numpy call per column.

A batch is a (rows, width) uint8 array and each row's length: datagram i is
row i's first lens[i] bytes (the rest of the row is stale). Frames are
grouped by template with two vectorized comparisons, the header's first four
bytes (magic, version/flags, template id: a constant of the template) and the
length. Each group is read as a structured array of the template's layout
(header, fields, check), and checked for every row at once:

- CRC-16/CCITT-FALSE over payload [0, c) is affine over GF(2) for a fixed
  length: with the head [0, 4) fixed, crc(x) = base XOR the contribution of
  each byte [4, c) alone, looked up in a per-position table of 256 entries:
  one gather and one XOR-reduce replace c-4 table steps per row. The sender
  patches CRCs with the same tables (send/batch.py).
- AES-CMAC (RFC 4493) is a CBC-MAC: X = AES(K, X XOR block), the last block
  XORed with the subkey K1 (whole) or padded with 0x80 0... and XORed with K2.
  For rows of one length and one key, each block position is one AES-ECB call
  over that block of every row (`cryptography`), instead of a CMAC object per
  frame. Rows are grouped by their device's key.

Whatever is not a template's frame of the right length is handed to the
validator one by one, so every refusal reason, and the order they are checked
in (docs/PROTOCOL.md), stays the codec's. tests/wire/test_batch.py holds this
against validator.Validator frame by frame on fuzzed batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from precast.wire import header
from precast.wire.checks import crc16
from precast.wire.constants import CRC, MIC, NO_KEY, REASONS
from precast.wire.layout import Layout
from precast.wire.validator import Spec, Validator

Rows = npt.NDArray[np.uint8]
Index = npt.NDArray[np.intp]

# A frame's verdict as a small integer: VALID, or 1 + its reason's index in REASONS.
VALID = 0
CODES = {r: i + 1 for i, r in enumerate(REASONS)}
_CRC_CODE, _MIC_CODE, NO_KEY_CODE = CODES[CRC], CODES[MIC], CODES[NO_KEY]

# The big-endian numpy dtype of each field type (the sender packs with it too).
DTYPES = {
    "u8": ">u1",
    "i8": ">i1",
    "u16": ">u2",
    "i16": ">i2",
    "u32": ">u4",
    "i32": ">i4",
    "f32": ">f4",
}
_RB = 0x87  # RFC 4493's R_b for 128-bit blocks


def reason_of(code: int) -> str:
    """The reason a verdict code stands for ('' for VALID)."""
    return REASONS[code - 1] if code else ""


def crc16_tables(length: int, start: int) -> tuple[int, npt.NDArray[np.uint16]]:
    """The CRC of `length` zero bytes, and each position's table for [start, length).

    With the rest zeroed, byte value v at position i contributes
    crc(v at i) XOR crc(all zero): the affine part cancels.
    """
    zero = bytearray(length)
    base = crc16(bytes(zero))
    tables = np.zeros((length - start, 256), dtype=np.uint16)
    for i in range(start, length):
        for v in range(1, 256):
            zero[i] = v
            tables[i - start, v] = crc16(bytes(zero)) ^ base
        zero[i] = 0
    return base, tables


class Crc16Rows:
    """CRC-16 of rows of `length` bytes that all begin with the same `head`."""

    def __init__(self, head: bytes, length: int) -> None:
        self.start = len(head)
        self.length = length
        fixed = bytearray(length)
        fixed[: self.start] = head
        self.base = crc16(bytes(fixed))  # the head's part, and the zeros' affine part
        _, tables = crc16_tables(length, self.start)
        self.flat = tables.reshape(-1)
        self._at = np.arange(length - self.start, dtype=np.intp) * 256

    def __call__(self, rows: Rows) -> npt.NDArray[np.uint16]:
        """Each row's CRC over its first `length` bytes (its head is taken as given)."""
        idx = rows[:, self.start : self.length].astype(np.intp)
        idx += self._at
        crc: npt.NDArray[np.uint16] = np.bitwise_xor.reduce(self.flat[idx], axis=1)
        return crc ^ np.uint16(self.base)


def _dbl(x: int) -> int:
    """Doubling in GF(2^128), RFC 4493's subkey step."""
    x <<= 1
    return (x ^ _RB) & ((1 << 128) - 1) if x >> 128 else x


class CmacRows:
    """AES-128-CMAC of many equal-length messages under one key: CBC-MAC over AES-ECB."""

    def __init__(self, key: bytes) -> None:
        self.ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        k1 = _dbl(int.from_bytes(self.ecb.update(bytes(16)), "big"))
        self.k1 = np.frombuffer(k1.to_bytes(16, "big"), dtype=np.uint8)
        self.k2 = np.frombuffer(_dbl(k1).to_bytes(16, "big"), dtype=np.uint8)

    def __call__(self, msgs: Rows) -> Rows:
        """The 16-byte CMAC of each row of msgs (rows, length)."""
        n, length = msgs.shape
        blocks = max(1, -(-length // 16))
        m = np.zeros((n, blocks * 16), dtype=np.uint8)
        m[:, :length] = msgs
        last = slice((blocks - 1) * 16, blocks * 16)
        if length and length % 16 == 0:
            m[:, last] ^= self.k1
        else:
            m[:, length] = 0x80
            m[:, last] ^= self.k2
        x = m[:, :16]
        for b in range(1, blocks):
            x = self._encrypt(x) ^ m[:, b * 16 : (b + 1) * 16]
        return self._encrypt(x)

    def _encrypt(self, blocks: Rows) -> Rows:
        """AES-ECB of each row's 16 bytes: one call for every row."""
        out = self.ecb.update(blocks.tobytes())
        return np.frombuffer(out, dtype=np.uint8).reshape(len(blocks), 16)


def body_dtype(layout: Layout) -> np.dtype[np.void]:
    """A template's payload as a record: header, fields (by name), a delayed frame's age
    (ms, before the check) and check, big-endian."""
    return np.dtype(
        [
            *[(name, dtype) for name, _, dtype in header.FIELDS],
            *[(f"field_{s.name}", DTYPES[s.field.type]) for s in layout.fields],
            *([("age", ">u4")] if layout.delayed else []),
            ("check", f"V{layout.check_len}"),
        ]
    )


@dataclass(frozen=True, slots=True)
class Group:
    """The frames of one template in a batch: where they are, their records, their verdicts."""

    spec: Spec
    index: Index  # rows of the batch
    body: npt.NDArray[np.void]  # one body_dtype record per row
    code: npt.NDArray[np.uint8]  # VALID, crc, mic or no-key per row

    @property
    def device(self) -> npt.NDArray[np.uint32]:
        return self.body["device"].astype(np.uint32)

    @property
    def seq(self) -> npt.NDArray[np.uint32]:
        return self.body["seq"].astype(np.uint32)

    def raw(self, i: int) -> npt.NDArray[np.generic]:
        """The raw values of field i (in wire order), one per row."""
        return self.body[f"field_{self.spec.layout.fields[i].name}"]


@dataclass(frozen=True, slots=True)
class Checked:
    """A batch's verdicts: a code per frame, and its template frames by group."""

    code: npt.NDArray[np.uint8]  # VALID or 1 + REASONS index, per frame
    groups: list[Group]


class _Kind:
    """What the batch checker keeps per template."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.prefix = int.from_bytes(spec.prefix, "big")
        self.dtype = body_dtype(spec.layout)
        self.crc = None if spec.mic else Crc16Rows(spec.prefix, spec.check_offset)


class BatchValidator:
    """Validator.check for a whole batch of payloads at once (module docstring)."""

    def __init__(self, validator: Validator) -> None:
        self.validator = validator
        self.codec = validator.codec
        self.kinds = [_Kind(s) for s in validator.specs.values()]
        self._cmacs: dict[bytes, CmacRows] = {}

    def check(self, rows: Rows, lens: npt.NDArray[np.integer]) -> Checked:
        """Every frame's verdict; datagram i is rows[i, :lens[i]]."""
        n = len(lens)
        code = np.zeros(n, dtype=np.uint8)
        rest = np.ones(n, dtype=bool)
        groups: list[Group] = []
        if n and rows.shape[1] >= 4:
            head = np.ascontiguousarray(rows[:n, :4]).view(">u4")[:, 0]
            for k in self.kinds:
                index = np.flatnonzero((head == k.prefix) & (lens == k.spec.length))
                if not len(index):
                    continue
                rest[index] = False
                g = self._group(k, rows[index, : k.spec.length])
                code[index] = g[1]
                groups.append(Group(k.spec, index, g[0], g[1]))
        why = self.validator.reason
        for i in np.flatnonzero(rest).tolist():
            code[i] = CODES[why(rows[i, : lens[i]].tobytes())]
        return Checked(code, groups)

    def _group(self, k: _Kind, frames: Rows) -> tuple[npt.NDArray[np.void], npt.NDArray[np.uint8]]:
        body = np.ascontiguousarray(frames).view(k.dtype)[:, 0]
        c = k.spec.check_offset
        if k.crc is not None:
            got = frames[:, c].astype(np.uint16) << 8 | frames[:, c + 1]
            bad = k.crc(frames) != got
            return body, np.where(bad, _CRC_CODE, VALID).astype(np.uint8)
        return body, self._mics(k.spec, frames, body["device"])

    def _mics(
        self, spec: Spec, frames: Rows, device: npt.NDArray[np.unsignedinteger]
    ) -> npt.NDArray[np.uint8]:
        """VALID, mic or no-key for each MIC frame: one CMAC run per key."""
        code = np.full(len(frames), NO_KEY_CODE, dtype=np.uint8)
        devs, inverse = np.unique(device, return_inverse=True)
        keys = [self.codec.key_for(d) for d in devs.tolist()]
        by_key: dict[bytes, list[int]] = {}
        for j, key in enumerate(keys):
            if key is not None:
                by_key.setdefault(key, []).append(j)
        c, n = spec.check_offset, spec.check_len
        inverse = inverse.reshape(-1)
        for key, js in by_key.items():
            cm = self._cmacs.get(key)
            if cm is None:
                cm = self._cmacs[key] = CmacRows(key)
            if len(js) == len(devs):  # one key for every device: the common case
                code[:] = _verdicts(cm, frames, c, n)
            else:
                at = np.flatnonzero(np.isin(inverse, js))
                code[at] = _verdicts(cm, frames[at], c, n)
        return code


def _verdicts(cm: CmacRows, frames: Rows, c: int, n: int) -> npt.NDArray[np.uint8]:
    """VALID where a frame's check is the first n bytes of the CMAC of its [0, c), else mic."""
    ok = (cm(frames[:, :c])[:, :n] == frames[:, c : c + n]).all(axis=1)
    return np.where(ok, VALID, _MIC_CODE).astype(np.uint8)
