"""The checks a frame carries: CRC-16/CCITT-FALSE, AES-CMAC, and the Internet checksum.

- crc16: poly 0x1021, init 0xFFFF, no reflection, xorout 0 (crcmod's
  predefined `crc-ccitt-false`; "123456789" -> 0x29B1).
- cmac: AES-128-CMAC (RFC 4493) truncated to its first 4 or 8 bytes.
- ones_sum / fold / udp_checksum: RFC 1071's one's-complement sum, and RFC
  1624's incremental update (add the sum of the changed words to a partial
  sum precomputed over everything fixed).
"""

from __future__ import annotations

from collections.abc import Callable

import crcmod.predefined
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

from precast.errors import PrecastError

crc16: Callable[[bytes | bytearray | memoryview], int] = crcmod.predefined.mkCrcFun(
    "crc-ccitt-false"
)


def parse_key(text: str) -> bytes:
    """A 16-byte AES key from 32 hex digits, or a PrecastError saying what is wrong."""
    digits = text.strip()
    bad = [c for c in digits if c not in "0123456789abcdefABCDEF"]
    if bad:
        raise PrecastError(f"key: {bad[0]!r} is not a hex digit (need 32 hex digits)")
    if len(digits) != 32:
        raise PrecastError(f"key: {len(digits)} hex digits, need 32 (an AES-128 key)")
    return bytes.fromhex(digits)


def cmac(key: bytes, data: bytes | bytearray | memoryview, length: int = 16) -> bytes:
    """AES-128-CMAC of data under key, truncated to its first `length` bytes."""
    c = CMAC(algorithms.AES(key))
    c.update(bytes(data))
    return c.finalize()[:length]


def ones_sum(data: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Unfolded one's-complement sum of big-endian 16-bit words; an odd tail is zero-padded.

    `start` is the parity of data's first byte in the checksummed stream: 1
    means data begins on the low byte of a word.
    """
    b = bytes(data)
    if start & 1:
        b = b"\x00" + b
    if len(b) & 1:
        b += b"\x00"
    return sum(int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2))


def fold(s: int) -> int:
    """Fold a one's-complement sum to 16 bits (end-around carry)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The Internet checksum (RFC 1071) of data: the complement of its folded sum."""
    return ~fold(ones_sum(data)) & 0xFFFF


def udp_final(partial: int) -> int:
    """UDP checksum from a full sum; a computed 0 goes out as 0xFFFF (RFC 768)."""
    c = ~fold(partial) & 0xFFFF
    return c or 0xFFFF
