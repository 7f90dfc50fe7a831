"""The per-reading checks as viper code: CRC-16/CCITT-FALSE and the UDP checksum.

Imported by `checks` where the port has a native emitter; the plain
versions there compute the same. Offsets are PROTOCOL.md's and the same
for every template: payload at frame byte 42, seq at 50, UDP checksum at 40.
Viper takes at most four arguments, so the CRC table is a module global.
"""
# ruff: noqa: F821  (ptr8, ptr16 and uint are viper's built-in types)

import micropython

from .checks import CRC_TABLE


@micropython.viper
def crc16_seal(frame: ptr8, end: int, init: int, partial: int) -> int:
    """CRC over frame[50:42+end) from `init`, stored at 42+end; then the UDP checksum."""
    t = ptr16(CRC_TABLE)
    crc = init
    i = 50
    stop = 42 + end
    while i < stop:
        crc = ((crc << 8) ^ t[((crc >> 8) ^ frame[i]) & 0xFF]) & 0xFFFF
        i += 1
    frame[stop] = crc >> 8
    frame[stop + 1] = crc
    s = partial
    i = 50
    stop += 2
    while i + 1 < stop:
        s += (frame[i] << 8) | frame[i + 1]
        i += 2
    if i < stop:
        s += frame[i] << 8
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = (s ^ 0xFFFF) & 0xFFFF
    if c == 0:
        c = 0xFFFF
    frame[40] = c >> 8
    frame[41] = c
    return c


@micropython.viper
def udp_seal(frame: ptr8, plen: int, partial: int) -> int:
    """UDP checksum from `partial` plus the sum of frame[50:42+plen), stored at 40."""
    s = partial
    i = 50
    stop = 42 + plen
    while i + 1 < stop:
        s += (frame[i] << 8) | frame[i + 1]
        i += 2
    if i < stop:
        s += frame[i] << 8
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = (s ^ 0xFFFF) & 0xFFFF
    if c == 0:
        c = 0xFFFF
    frame[40] = c >> 8
    frame[41] = c
    return c


@micropython.viper
def xor_into(dst: ptr8, src: ptr8, n: int):
    """dst[i] ^= src[i] for i < n."""
    i = 0
    while i < n:
        dst[i] = dst[i] ^ src[i]
        i += 1


@micropython.viper
def copy_into(dst: ptr8, src: ptr8, n: int):
    """dst[i] = src[i] for i < n (a slice assignment would allocate)."""
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1
