"""AES-128-CMAC (RFC 4493) over a fixed-length message, with every buffer preallocated.

The message is the payload's [0, check) and its length is fixed by the
template, so the subkey for the last block (K1 when it is complete, else
K2 with the 10* padding folded in) is computed once. Per message:
X = 0; X = AES(X ^ M_i) for each block but the last; T = AES(X ^ M_last ^ K').
cryptolib's AES in ECB mode (1) encrypts one block in place.
"""

import cryptolib

from .checks import VIPER

_ECB = 1


def _xor_into(dst, src, n):
    """dst[i] ^= src[i] for i < n (compute() runs where there is no viper: plain.seal's)."""
    i = 0
    while i < n:
        dst[i] ^= src[i]
        i += 1


def _double(b):
    """The subkey step: b << 1 over 128 bits, xor 0x87 when the top bit fell off."""
    out = bytearray(16)
    carry = 0
    i = 15
    while i >= 0:
        v = (b[i] << 1) | carry
        out[i] = v & 0xFF
        carry = v >> 8
        i -= 1
    if b[0] & 0x80:
        out[15] ^= 0x87
    return out


class Cmac:
    """CMAC of `msg` (a memoryview whose first `length` bytes change, not its place).

    compute() is the plain way (plain.py's seal); where checks.py chose viper, `sign` is
    viper_cmac.sign, which viper's seal calls: the same steps on the public attributes
    x (the state, then the tag), enc (AES-ECB in place), last_key (K1, or K2 with the
    padding), n (blocks), rest (bytes in the last).
    """

    def __init__(self, key, msg, length):
        if len(key) != 16:
            raise ValueError("AES-128-CMAC needs a 16-byte key")
        aes = cryptolib.aes(key, _ECB)
        lkey = bytearray(16)
        aes.encrypt(lkey, lkey)
        self.enc = aes.encrypt  # bound once: fetching it per message would allocate
        self.sign = None
        if VIPER:
            from .viper_cmac import sign  # native code: a bundle carries it with a MIC only

            self.sign = sign
        k1 = _double(lkey)
        n = (length + 15) // 16 or 1
        rest = length - (n - 1) * 16
        if length and rest == 16:
            last = k1
        else:
            last = _double(k1)
            last[rest] ^= 0x80
        self.last_key = last
        self.rest = rest
        self.x = bytearray(16)
        self._blocks = [msg[i * 16 : i * 16 + 16] for i in range(n)]
        self.n = n

    def compute(self):
        """The CMAC of the message as it is now, in self.x (16 bytes)."""
        x = self.x
        enc = self.enc
        blocks = self._blocks
        n = self.n
        if n == 1:
            x[:] = self.last_key  # in place: x's bytes, nothing allocated
        else:
            x[:] = blocks[0]
            enc(x, x)
            i = 1
            while i < n - 1:
                _xor_into(x, blocks[i], 16)
                enc(x, x)
                i += 1
            _xor_into(x, self.last_key, 16)
        _xor_into(x, blocks[n - 1], self.rest)
        enc(x, x)
        return x
