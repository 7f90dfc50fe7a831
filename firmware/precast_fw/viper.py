"""The per-reading hot path as viper code: seq, fields, CRC-16 or AES-CMAC, UDP checksum; the sim.

checks.py imports it where the port has a native emitter; plain.py holds
versions with the same names that compute the same bytes. Viper keeps its
locals on the C stack and reaches buffers through raw pointers, so a
reading is one call and allocates nothing (a CMAC calls cryptolib's AES
in place, once per 16-byte block).

`sender.params` is an array('I') (slots P_* in layout.py), the sim's
state another (S_*). Viper folds only this module's const(): the names
below repeat layout.py's, and tests/firmware/test_firmware_constants.py holds them
equal. Viper takes at most four arguments, so the CRC table is a module
global. The offsets are docs/PROTOCOL.md's.

The UDP checksum is RFC 1624's incremental form: the template's partial
sum (pseudo-header, UDP header, payload [0, 8)) plus payload [8, P).
"""
# ruff: noqa: F821  (ptr8, ptr16 and ptr32 are viper's built-in types)

import micropython
from micropython import const

from .layout import CRC_TABLE

UDP_CSUM_OFFSET = const(40)
PAYLOAD_OFFSET = const(42)
FRAME_SEQ = const(50)
FRAME_FIELDS = const(54)
AES_BLOCK = const(16)
P_SEQ = const(0)
P_FIELDS = const(1)
P_CHECK = const(2)
P_CHECK_LEN = const(3)
P_CRC_INIT = const(4)
P_PARTIAL = const(5)
P_MAC = const(6)
P_SIZES = const(8)
S_X = const(0)
S_N = const(1)
S_FIELDS = const(2)
S_V = const(0)
S_LO = const(1)
S_HI = const(2)
S_DRIFT = const(3)
S_NOISE = const(4)
S_STRIDE = const(5)
S_BIAS = const(0x10000000)


@micropython.viper
def seal(sender, values):
    """Write seq (then count it up), the fields, the check and the UDP checksum.

    A method of Sender (its `patch` for an integer template: one call per
    reading). values (an array('i'): Sender.values) are the raw fields;
    values[i] goes out big-endian in params[P_SIZES + i] bytes;
    two's complement makes signed and unsigned the same bytes. With
    P_FIELDS 0 (a template with f32 fields) the fields are already in place.
    """
    frame = ptr8(sender.frame)
    params = ptr32(sender.params)
    seq = params[P_SEQ]
    frame[FRAME_SEQ] = seq >> 24
    frame[FRAME_SEQ + 1] = seq >> 16
    frame[FRAME_SEQ + 2] = seq >> 8
    frame[FRAME_SEQ + 3] = seq
    params[P_SEQ] = seq + 1
    n = params[P_FIELDS]
    i = 0
    p = FRAME_FIELDS
    vals = ptr32(values if n else sender.params)  # an array('i'); no fields: not read at all
    while i < n:
        v = vals[i]
        size = params[P_SIZES + i]
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
    stop = PAYLOAD_OFFSET + params[P_CHECK]
    s = params[P_PARTIAL]
    if params[P_MAC]:
        # AES-CMAC (RFC 4493) of payload [0, check), steps as in Cmac.compute.
        mac = sender.mac
        xo = mac.x
        x = ptr8(xo)
        k = ptr8(mac.last_key)
        enc = mac.enc
        n = int(mac.n)
        if n == 1:
            i = 0
            while i < AES_BLOCK:
                x[i] = k[i]
                i += 1
        else:
            i = 0
            while i < AES_BLOCK:
                x[i] = frame[PAYLOAD_OFFSET + i]
                i += 1
            enc(xo, xo)
            b = 1
            while b < n - 1:
                p = PAYLOAD_OFFSET + b * AES_BLOCK
                i = 0
                while i < AES_BLOCK:
                    x[i] = x[i] ^ frame[p + i]
                    i += 1
                enc(xo, xo)
                b += 1
            i = 0
            while i < AES_BLOCK:
                x[i] = x[i] ^ k[i]
                i += 1
        p = PAYLOAD_OFFSET + (n - 1) * AES_BLOCK
        rest = int(mac.rest)
        i = 0
        while i < rest:
            x[i] = x[i] ^ frame[p + i]
            i += 1
        enc(xo, xo)
        n = params[P_CHECK_LEN]
        i = 0
        while i < n:
            frame[stop + i] = x[i]
            i += 1
        stop += n
        i = FRAME_SEQ
        while i + 1 < stop:
            s += (frame[i] << 8) | frame[i + 1]
            i += 2
        if i < stop:
            s += frame[i] << 8
    else:
        # CRC over payload [8, check) and the UDP sum over [8, P), in one pass of words.
        t = ptr16(CRC_TABLE)
        crc = params[P_CRC_INIT]
        i = FRAME_SEQ
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
    frame[UDP_CSUM_OFFSET] = c >> 8
    frame[UDP_CSUM_OFFSET + 1] = c


@micropython.viper
def xor_into(dst, src, n):
    """dst[i] ^= src[i] for i < n."""
    d = ptr8(dst)
    s = ptr8(src)
    k = int(n)
    i = 0
    while i < k:
        d[i] = d[i] ^ s[i]
        i += 1


@micropython.viper
def copy_into(dst, src, n):
    """dst[i] = src[i] for i < n (a slice assignment would allocate)."""
    d = ptr8(dst)
    s = ptr8(src)
    k = int(n)
    i = 0
    while i < k:
        d[i] = s[i]
        i += 1


@micropython.viper
def sim_walk(sensor, values):
    """The simulated sensor's next reading into values (sensors/sim.py says what it does)."""
    st = ptr32(sensor.state)
    vals = ptr32(values)  # an array('i') (Sender.values of an integer template)
    x = st[S_X]
    n = st[S_N]
    i = 0
    j = S_FIELDS
    while i < n:
        d = st[j + S_DRIFT]
        v = st[j + S_V] + d - S_BIAS
        if v < st[j + S_LO] or v > st[j + S_HI]:
            d = 2 * S_BIAS - d
            st[j + S_DRIFT] = d
            v = st[j + S_V] + d - S_BIAS
        st[j + S_V] = v
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        a = st[j + S_NOISE]
        v += x % (2 * a + 1) - a
        if v < st[j + S_LO]:
            v = st[j + S_LO]
        elif v > st[j + S_HI]:
            v = st[j + S_HI]
        vals[i] = v - S_BIAS
        i += 1
        j += S_STRIDE
    st[S_X] = x


@micropython.viper
def load_be32(words, i, src, at):
    """words[i] = the big-endian u32 at src[at:at + 4] (a seq on a 32-bit port stays a word)."""
    w = ptr32(words)
    s = ptr8(src)
    a = int(at)
    w[int(i)] = (s[a] << 24) | (s[a + 1] << 16) | (s[a + 2] << 8) | s[a + 3]
