"""The CMAC of a frame as viper code: the MIC's half of the hot path, one call a reading.

viper.py's seal calls it (as `sender.mac.sign`) for a template whose check is
an AES-CMAC; cmac.py takes it where checks.py chose viper, else its own plain
sign with the same bytes. Only a bundle whose template has a MIC carries it
(1 KB of native code a CRC-16 node never runs). The steps are
Cmac.compute's (RFC 4493): X = 0; X = AES(X ^ M_i) for each block but the
last; T = AES(X ^ M_last ^ K'), K' the subkey for the last block computed
once; cryptolib's AES encrypts one block in place. Viper folds only this
module's const(): layout.py's names with a leading _.
"""
# ruff: noqa: F821  (ptr8 and ptr32 are viper's built-in types)

import micropython
from micropython import const

_PAYLOAD_OFFSET = const(42)
_AES_BLOCK = const(16)
_P_CHECK = const(2)
_P_CHECK_LEN = const(3)


@micropython.viper
def sign(sender):
    """The CMAC of payload [0, check) into the frame at the check, truncated to its length."""
    frame = ptr8(sender.frame)
    params = ptr32(sender.params)
    stop = _PAYLOAD_OFFSET + params[_P_CHECK]
    mac = sender.mac
    xo = mac.x
    x = ptr8(xo)
    k = ptr8(mac.last_key)
    enc = mac.enc
    n = int(mac.n)
    if n == 1:
        i = 0
        while i < _AES_BLOCK:
            x[i] = k[i]
            i += 1
    else:
        i = 0
        while i < _AES_BLOCK:
            x[i] = frame[_PAYLOAD_OFFSET + i]
            i += 1
        enc(xo, xo)
        b = 1
        while b < n - 1:
            p = _PAYLOAD_OFFSET + b * _AES_BLOCK
            i = 0
            while i < _AES_BLOCK:
                x[i] = x[i] ^ frame[p + i]
                i += 1
            enc(xo, xo)
            b += 1
        i = 0
        while i < _AES_BLOCK:
            x[i] = x[i] ^ k[i]
            i += 1
    p = _PAYLOAD_OFFSET + (n - 1) * _AES_BLOCK
    rest = int(mac.rest)
    i = 0
    while i < rest:
        x[i] = x[i] ^ frame[p + i]
        i += 1
    enc(xo, xo)
    n = params[_P_CHECK_LEN]
    i = 0
    while i < n:
        frame[stop + i] = x[i]
        i += 1
