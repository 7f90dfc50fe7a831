"""The per-reading hot path as viper code: seq, fields, CRC-16 or AES-CMAC, UDP checksum.

Imported where the port has a native emitter; `checks` holds plain
versions with the same names that compute the same bytes. Viper keeps its
locals on the C stack and reaches buffers through raw pointers, so a
reading is one call and allocates nothing (a CMAC calls cryptolib's AES
in place, once per 16-byte block).

`sender.params` is an array('I') (layout in checks: P_SEQ, ...).
Offsets are docs/PROTOCOL.md's, the same for every template: payload at frame
byte 42, seq at 50, fields from 54, UDP checksum at 40. Viper takes at
most four arguments, so the CRC table is a module global.

The UDP checksum is RFC 1624's incremental form: the template's partial
sum (pseudo-header, UDP header, payload [0, 8)) plus payload [8, P).
"""
# ruff: noqa: F821  (ptr8, ptr16 and ptr32 are viper's built-in types)

import micropython

from .checks import CRC_TABLE


@micropython.viper
def seal(sender, values):
    """Write seq (then count it up), the fields, the check and the UDP checksum.

    A method of Sender (its `patch` for an integer template: one call per
    reading). values[i] goes out big-endian in params[P_SIZES + i] bytes;
    two's complement makes signed and unsigned the same bytes. With
    P_FIELDS 0 (a template with f32 fields) the fields are already in place.
    """
    frame = ptr8(sender.frame)
    params = ptr32(sender.params)
    seq = params[0]
    frame[50] = seq >> 24
    frame[51] = seq >> 16
    frame[52] = seq >> 8
    frame[53] = seq
    params[0] = seq + 1
    n = params[1]
    i = 0
    p = 54
    while i < n:
        v = int(values[i])
        size = params[8 + i]
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
    stop = 42 + params[2]  # the check
    s = params[5]
    if params[6]:
        # AES-CMAC (RFC 4493) of payload [0, check), steps as in Cmac.compute.
        mac = sender.mac
        xo = mac.x
        x = ptr8(xo)
        k = ptr8(mac.last_key)
        enc = mac.enc
        n = int(mac.n)
        if n == 1:
            i = 0
            while i < 16:
                x[i] = k[i]
                i += 1
        else:
            i = 0
            while i < 16:
                x[i] = frame[42 + i]
                i += 1
            enc(xo, xo)
            b = 1
            while b < n - 1:
                p = 42 + b * 16
                i = 0
                while i < 16:
                    x[i] = x[i] ^ frame[p + i]
                    i += 1
                enc(xo, xo)
                b += 1
            i = 0
            while i < 16:
                x[i] = x[i] ^ k[i]
                i += 1
        p = 42 + (n - 1) * 16
        rest = int(mac.rest)
        i = 0
        while i < rest:
            x[i] = x[i] ^ frame[p + i]
            i += 1
        enc(xo, xo)
        n = params[3]
        i = 0
        while i < n:
            frame[stop + i] = x[i]
            i += 1
        stop += n
        i = 50
        while i + 1 < stop:
            s += (frame[i] << 8) | frame[i + 1]
            i += 2
        if i < stop:
            s += frame[i] << 8
    else:
        # CRC over payload [8, check) and the UDP sum over [8, P), in one pass of words.
        t = ptr16(CRC_TABLE)
        crc = params[4]
        i = 50
        while i + 1 < stop:
            a = frame[i]
            b = frame[i + 1]
            crc = ((crc << 8) ^ t[((crc >> 8) ^ a) & 0xFF]) & 0xFFFF
            crc = ((crc << 8) ^ t[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
            s += (a << 8) | b
            i += 2
        if i < stop:  # an odd check offset: the last byte pairs with the CRC's high byte
            a = frame[i]
            crc = ((crc << 8) ^ t[((crc >> 8) ^ a) & 0xFF]) & 0xFFFF
            s += (a << 8) | (crc >> 8)
            s += (crc & 0xFF) << 8
        else:
            s += crc
        frame[stop] = crc >> 8
        frame[stop + 1] = crc
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = (s ^ 0xFFFF) & 0xFFFF
    if c == 0:
        c = 0xFFFF  # RFC 768: a computed 0 goes out as all ones
    frame[40] = c >> 8
    frame[41] = c


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
