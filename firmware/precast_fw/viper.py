"""The per-reading hot path as viper code: seq, fields, CRC-16 or AES-CMAC, UDP checksum; the sim.

checks.py imports it where the port has a native emitter; plain.py holds
versions with the same names that compute the same bytes. Viper keeps its
locals on the C stack and reaches buffers through raw pointers, so a
reading is one call and allocates nothing. A CMAC is the template's
Cmac's sign (viper_cmac.py, carried only with a MIC: 1 KB of native code
a CRC-16 node would never run), which calls cryptolib's AES in place,
once per 16-byte block.

`sender.params` is an array('I') (slots P_* in layout.py), the sim's
state another (S_*). Viper folds only this module's const(): the names
below repeat layout.py's with a leading _ (a private const() leaves no
global behind: 300 bytes of .mpy), and tests/firmware/test_firmware_constants.py
holds them equal. The offsets are docs/PROTOCOL.md's.

The CRC-16 (CCITT-FALSE: polynomial 0x1021, MSB first) goes a byte at a
time without a table: with t = (crc >> 8) ^ byte, t ^= t >> 4, the next
crc is (crc << 8) ^ (t << 12) ^ (t << 5) ^ t, the polynomial's three
terms folded into shifts. A table took 512 bytes of RAM for 0.05-0.1 µs a
reading: env-node's patch, call included, 0.80 against 0.75 µs on the
64-bit unix port and 0.97 against 0.90 µs on the 32-bit one (PC).

The UDP checksum is RFC 1624's incremental form: the template's partial
sum (pseudo-header, UDP header, payload [0, 8)) plus payload [8, P).
"""
# ruff: noqa: F821  (ptr8 and ptr32 are viper's built-in types)

import micropython
from micropython import const

_UDP_CSUM_OFFSET = const(40)
_PAYLOAD_OFFSET = const(42)
_FRAME_SEQ = const(50)
_FRAME_FIELDS = const(54)
_P_SEQ = const(0)
_P_FIELDS = const(1)
_P_CHECK = const(2)
_P_CHECK_LEN = const(3)
_P_CRC_INIT = const(4)
_P_PARTIAL = const(5)
_P_MAC = const(6)
_P_SIZES = const(8)
_S_X = const(0)
_S_N = const(1)
_S_FIELDS = const(2)
_S_V = const(0)
_S_LO = const(1)
_S_HI = const(2)
_S_DRIFT = const(3)
_S_NOISE = const(4)
_S_STRIDE = const(5)
_S_BIAS = const(0x10000000)


@micropython.viper
def seal(sender, values):
    """Write seq (then count it up), the fields, the check and the UDP checksum.

    A method of Sender (its `patch` for an integer template: one call per
    reading). values (an array('i'): Sender.values) are the raw fields;
    values[i] goes out big-endian in params[_P_SIZES + i] bytes;
    two's complement makes signed and unsigned the same bytes. With
    _P_FIELDS 0 (a template with f32 fields) the fields are already in place.
    """
    frame = ptr8(sender.frame)
    params = ptr32(sender.params)
    seq = params[_P_SEQ]
    frame[_FRAME_SEQ] = seq >> 24
    frame[_FRAME_SEQ + 1] = seq >> 16
    frame[_FRAME_SEQ + 2] = seq >> 8
    frame[_FRAME_SEQ + 3] = seq
    params[_P_SEQ] = seq + 1
    n = params[_P_FIELDS]
    i = 0
    p = _FRAME_FIELDS
    vals = ptr32(values if n else sender.params)  # an array('i'); no fields: not read at all
    while i < n:
        v = vals[i]
        q = p
        p += params[_P_SIZES + i]
        j = p
        while j > q:  # big-endian: the low byte last
            j -= 1
            frame[j] = v
            v >>= 8
        i += 1
    stop = _PAYLOAD_OFFSET + params[_P_CHECK]
    if params[_P_MAC]:
        # AES-CMAC of payload [0, check) into the frame at `stop`: the template's cmac.py
        # signs (viper_cmac.sign where viper is, the same code; a CRC-16 node carries neither).
        sign = sender.mac.sign
        sign(sender)
        stop += params[_P_CHECK_LEN]
    else:
        # CRC-16/CCITT-FALSE over payload [8, check), a byte at a time without a table
        # (the shifts fold the polynomial 0x1021 in: no 512-byte table in RAM).
        crc = params[_P_CRC_INIT]
        i = _FRAME_SEQ
        while i < stop:
            t = ((crc >> 8) ^ frame[i]) & 0xFF
            t ^= t >> 4
            crc = ((crc << 8) ^ (t << 12) ^ (t << 5) ^ t) & 0xFFFF
            i += 1
        frame[stop] = crc >> 8
        frame[stop + 1] = crc
        stop += 2
    # The UDP sum over payload [8, P): the template's partial sum holds the rest.
    s = params[_P_PARTIAL]
    i = _FRAME_SEQ
    while i + 1 < stop:
        s += (frame[i] << 8) | frame[i + 1]
        i += 2
    if i < stop:
        s += frame[i] << 8
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = (s ^ 0xFFFF) & 0xFFFF
    if c == 0:
        c = 0xFFFF  # RFC 768: a computed 0 goes out as all ones
    frame[_UDP_CSUM_OFFSET] = c >> 8
    frame[_UDP_CSUM_OFFSET + 1] = c


@micropython.viper
def sim_walk(sensor, values):
    """The simulated sensor's next reading into values (sensors/sim.py says what it does)."""
    st = ptr32(sensor.state)
    vals = ptr32(values)  # an array('i') (Sender.values of an integer template)
    x = st[_S_X]
    n = st[_S_N]
    i = 0
    j = _S_FIELDS
    while i < n:
        lo = st[j + _S_LO]
        hi = st[j + _S_HI]
        d = st[j + _S_DRIFT]
        v = st[j + _S_V] + d - _S_BIAS
        if v < lo or v > hi:
            d = 2 * _S_BIAS - d
            st[j + _S_DRIFT] = d
            v = st[j + _S_V] + d - _S_BIAS
        st[j + _S_V] = v
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        a = st[j + _S_NOISE]
        v += x % (2 * a + 1) - a
        if v < lo:
            v = lo
        elif v > hi:
            v = hi
        vals[i] = v - _S_BIAS
        i += 1
        j += _S_STRIDE
    st[_S_X] = x


@micropython.viper
def load_be32(words, i, src, at):
    """words[i] = the big-endian u32 at src[at:at + 4] (a seq on a 32-bit port stays a word)."""
    w = ptr32(words)
    s = ptr8(src)
    a = int(at)
    w[int(i)] = (s[a] << 24) | (s[a + 1] << 16) | (s[a + 2] << 8) | s[a + 3]
