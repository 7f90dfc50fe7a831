"""The per-reading hot path as viper code: the fields, CRC-16/CCITT-FALSE, the UDP checksum.

Imported where the port has a native emitter; `checks` holds plain
versions that compute the same, and the generated `tpl.pack` (one
struct.pack_into) is the plain way to write the fields. Viper keeps its
locals on the C stack: a bytecode function with a deep stack (a
pack_into call with many arguments) gets its frame from the heap on every
call unless the heap is locked, which mem_total counts. Offsets are
PROTOCOL.md's, the same for every template: payload at frame byte 42, seq
at 50, fields at 54, UDP checksum at 40. Viper takes at most four
arguments, so the CRC table is a module global.
"""
# ruff: noqa: F821  (ptr8, ptr16 and uint are viper's built-in types)

import micropython

from .checks import CRC_TABLE


@micropython.viper
def fill(frame: ptr8, values, sizes: ptr8, lo: int):
    """Write seq's low half at 52 and values[i] (big-endian, sizes[1 + i] bytes) from 54 on.

    sizes[0] is the field count. Two's complement makes signed and unsigned
    the same bytes; a u32 above 2**31 arrives truncated to the machine word.
    """
    frame[52] = lo >> 8
    frame[53] = lo
    n = sizes[0]
    i = 0
    p = 54
    while i < n:
        v = int(values[i])
        size = sizes[i + 1]
        if size == 1:
            frame[p] = v
        elif size == 2:
            frame[p] = v >> 8
            frame[p + 1] = v
        else:
            frame[p] = v >> 24
            frame[p + 1] = v >> 16
            frame[p + 2] = v >> 8
            frame[p + 3] = v
        p += size
        i += 1


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
