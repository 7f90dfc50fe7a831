"""CRC-16/CCITT-FALSE and the UDP checksum, patched into the frame in place.

CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, xorout 0,
table-driven. The CRC covers payload bytes [0, check); the host bakes the
CRC state after the constant bytes [0, 8) into the template (CRC_INIT), so
a reading runs it over seq and fields only. The UDP checksum is RFC 1624's
incremental form: the template's partial sum (pseudo-header, UDP header,
payload [0, 8)) plus the sum of payload [8, P); a computed 0 goes out as
0xFFFF (RFC 768). Frame offsets are PROTOCOL.md's: payload at 42, seq at
50, UDP checksum at 40.

The plain functions here allocate nothing; the viper ones in `viper`
replace them where the port has a native emitter (about 10x faster).
"""

from array import array


def _table():
    t = array("H", bytes(512))
    i = 0
    while i < 256:
        c = i << 8
        j = 0
        while j < 8:
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
            c &= 0xFFFF
            j += 1
        t[i] = c
        i += 1
    return t


CRC_TABLE = _table()


def _fold_store(frame, s):
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    c = ~s & 0xFFFF
    if c == 0:
        c = 0xFFFF
    frame[40] = c >> 8
    frame[41] = c & 0xFF
    return c


def _sum(frame, stop, s):
    i = 50
    while i + 1 < stop:
        s += (frame[i] << 8) | frame[i + 1]
        i += 2
    if i < stop:
        s += frame[i] << 8
    return s


def crc16_seal(frame, end, init, partial):
    """CRC over frame[50:42+end) from `init`, stored at 42+end; then the UDP checksum."""
    t = CRC_TABLE
    crc = init
    i = 50
    stop = 42 + end
    while i < stop:
        crc = ((crc << 8) & 0xFF00) ^ t[(crc >> 8) ^ frame[i]]
        i += 1
    frame[stop] = crc >> 8
    frame[stop + 1] = crc & 0xFF
    return _fold_store(frame, _sum(frame, stop + 2, partial))


def udp_seal(frame, plen, partial):
    """UDP checksum from `partial` plus the sum of frame[50:42+plen), stored at 40."""
    return _fold_store(frame, _sum(frame, 42 + plen, partial))


def xor_into(dst, src, n):
    """dst[i] ^= src[i] for i < n."""
    i = 0
    while i < n:
        dst[i] ^= src[i]
        i += 1


def copy_into(dst, src, n):
    """dst[i] = src[i] for i < n (a slice assignment would allocate)."""
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1


PLAIN = (crc16_seal, udp_seal, xor_into, copy_into)
fill = None  # the plain way to write the fields is the template's own pack()
try:
    # mypy (firmware/mypy.ini): fill's first binding above is None, the plain ports' value
    from .viper import copy_into, crc16_seal, fill, udp_seal, xor_into  # type: ignore[assignment]  # noqa: F401

    VIPER = True
except (ImportError, SyntaxError, ValueError):  # no viper on this port, or .mpy of another arch
    VIPER = False
