"""The per-reading hot path in plain Python: the fallback where the port has no viper.

checks.py picks these or viper.py's (same names, same bytes out); nothing
else imports this module. seal(sender, values) writes seq (then counts it
up), the fields, the check (CRC-16/CCITT-FALSE, or the CMAC in
sender.mac) and the UDP checksum, RFC 1624's incremental form: the
template's partial sum (pseudo-header, UDP header, payload [0, 8)) plus
the sum of payload [8, P); a computed 0 goes out as 0xFFFF (RFC 768).
sim_walk(sensor, values) is the simulated sensor's step (sensors/sim.py).

On a 32-bit port an int at or above 2**30 is a heap object, so seq and the
values are never read as ints here: their bytes are copied from the arrays'
own memory (uctypes.bytearray_at, made once per array), and seq is counted
up in place, a byte and a carry at a time. Every port precast runs on
(unix on x86 and ARM, ESP32, RP2040, RP2350) is little-endian.
"""

import uctypes
from micropython import const

# layout.py's numbers, repeated as private const(): folded into the bytecode, no global left
# (tests/firmware/test_firmware_constants.py holds each one against layout.py's).
_UDP_CSUM_OFFSET = const(40)
_PAYLOAD_OFFSET = const(42)
_FRAME_SEQ = const(50)
_FRAME_FIELDS = const(54)
_CRC16_LEN = const(2)
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


def _udp(frame, stop, s):
    i = _FRAME_SEQ
    while i + 1 < stop:
        s += (frame[i] << 8) | frame[i + 1]
        i += 2
    if i < stop:
        s += frame[i] << 8
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = ~s & 0xFFFF
    if c == 0:
        c = 0xFFFF  # RFC 768: a computed 0 goes out as all ones
    frame[_UDP_CSUM_OFFSET] = c >> 8
    frame[_UDP_CSUM_OFFSET + 1] = c & 0xFF


def _put(frame, p, v, size):
    while size:
        size -= 1
        frame[p + size] = v & 0xFF
        v >>= 8


def _crc(frame, stop, crc):
    i = _FRAME_SEQ
    while i < stop:  # CRC-16/CCITT-FALSE a byte at a time, without a table (as viper's seal)
        t = ((crc >> 8) ^ frame[i]) & 0xFF
        t ^= t >> 4
        crc = ((crc << 8) ^ (t << 12) ^ (t << 5) ^ t) & 0xFFFF
        i += 1
    return crc


def bytes_of(a):
    """The memory of array a as a bytearray (no copy): its items' bytes, little-endian."""
    return uctypes.bytearray_at(uctypes.addressof(a), 4 * len(a))


def seal(sender, values):
    """Write seq (then count it up), the fields, the check and the UDP checksum."""
    frame = sender.frame
    params = sender.params
    pb = sender.params_b
    q = 4 * _P_SEQ
    frame[_FRAME_SEQ] = pb[q + 3]
    frame[_FRAME_SEQ + 1] = pb[q + 2]
    frame[_FRAME_SEQ + 2] = pb[q + 1]
    frame[_FRAME_SEQ + 3] = pb[q]
    while q < 4 * _P_SEQ + 4:  # seq + 1, mod 2**32
        c = pb[q] + 1
        if c < 256:
            pb[q] = c
            break
        pb[q] = 0
        q += 1
    i = 0
    p = _FRAME_FIELDS
    n = params[_P_FIELDS]  # 0: the fields are in the frame already (f32, or a kept reading)
    vb = sender.values_b if values is sender.values or not n else bytes_of(values)
    while i < n:
        size = params[_P_SIZES + i]
        j = 4 * i
        e = p + size
        while e > p:  # the low `size` bytes, big-endian: two's complement for a signed field
            e -= 1
            frame[e] = vb[j]
            j += 1
        p += size
        i += 1
    stop = _PAYLOAD_OFFSET + params[_P_CHECK]
    if params[_P_MAC]:
        _copy_mac(frame, stop, sender.mac.compute(), params[_P_CHECK_LEN])
        _udp(frame, stop + params[_P_CHECK_LEN], params[_P_PARTIAL])
    else:
        _put(frame, stop, _crc(frame, stop, params[_P_CRC_INIT]), _CRC16_LEN)
        _udp(frame, stop + _CRC16_LEN, params[_P_PARTIAL])


def _copy_mac(frame, p, mac, n):
    i = 0
    while i < n:
        frame[p + i] = mac[i]
        i += 1


def sim_walk(sensor, values):
    """The simulated sensor's next reading into values (the slots: S_* in layout.py)."""
    st = sensor.state
    x = st[_S_X]
    i = 0
    j = _S_FIELDS
    while i < st[_S_N]:
        x = _sim_field(st, j, x, values, i)
        i += 1
        j += _S_STRIDE
    st[_S_X] = x


def _sim_field(st, j, x, values, i):
    d = st[j + _S_DRIFT]
    v = st[j + _S_V] + d - _S_BIAS
    if v < st[j + _S_LO] or v > st[j + _S_HI]:
        d = 2 * _S_BIAS - d
        st[j + _S_DRIFT] = d
        v = st[j + _S_V] + d - _S_BIAS
    st[j + _S_V] = v
    x ^= (x << 7) & 0xFFFF
    x ^= x >> 9
    x ^= (x << 8) & 0xFFFF
    a = st[j + _S_NOISE]
    v += x % (2 * a + 1) - a
    values[i] = max(st[j + _S_LO], min(st[j + _S_HI], v)) - _S_BIAS
    return x


def load_be32(words, i, src, at):
    """words[i] = the big-endian u32 at src[at:at + 4]; words is the Sender's byte view of
    its params (params_b): a seq at or above 2**30 would be an int object on a 32-bit port,
    so it is moved a byte at a time into the little-endian word."""
    q = 4 * i
    words[q] = src[at + 3]
    words[q + 1] = src[at + 2]
    words[q + 2] = src[at + 1]
    words[q + 3] = src[at]
