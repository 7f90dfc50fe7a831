"""A simulated sensor for the unix port and tests: seeded, drifting, noisy raw integers.

Each field walks from the middle of its range by a drift of a few raw
units per reading, turning at the edges, with noise on top. The random
source is a 16-bit xorshift (every intermediate fits a 32-bit port's
small int), so a seed gives the same readings on every port. Functions
stay small: a bytecode function whose locals and stack pass 11 slots
takes its frame from the heap on each call.
"""


class Sensor:
    """read(values) fills values with the next simulated raw reading of every field."""

    def __init__(self, tpl, cfg=None):
        seed = getattr(cfg, "SEED", 1)
        self._x = (seed & 0xFFFF) or 1
        self._n = tpl.FIELD_COUNT
        self._lo = list(tpl.SIM_LO)
        self._hi = list(tpl.SIM_HI)
        self._v = [(lo + hi) // 2 for lo, hi in zip(self._lo, self._hi)]
        self._noise = [max(1, min(100, (hi - lo) // 256)) for lo, hi in zip(self._lo, self._hi)]
        self._drift = [1 + (self._next() & 3) for _ in range(self._n)]

    def _next(self):
        x = self._x
        x ^= (x << 7) & 0xFFFF
        x ^= x >> 9
        x ^= (x << 8) & 0xFFFF
        self._x = x
        return x

    def _walk(self, i):
        v = self._v[i] + self._drift[i]
        if v < self._lo[i] or v > self._hi[i]:
            self._drift[i] = -self._drift[i]
            v = self._v[i] + self._drift[i]
        self._v[i] = v
        return v

    def _noisy(self, i, v):
        a = self._noise[i]
        v += self._next() % (2 * a + 1) - a
        return max(self._lo[i], min(self._hi[i], v))

    def read(self, values):
        i = 0
        while i < self._n:
            values[i] = self._noisy(i, self._walk(i))
            i += 1
