"""A simulated sensor for the unix port and tests: seeded, drifting, noisy raw integers.

Each field walks from the middle of its range (tpl.SIM_LO..tpl.SIM_HI, which
the host chooses from the field's unit and type) by a drift of a few raw
units per reading, turning at the edges, with noise of about 1/256 of the
range (1 to 100 raw units) on top. The random source is a 16-bit xorshift
(every intermediate fits a 32-bit port's small int), so a seed gives the
same readings on every port. The walk is one call per reading, in viper
where the port has it (checks.sim_walk: about 0.1 µs a field on a PC),
over an array('I') of state whose slots layout.py names (S_*).
"""

from array import array

from micropython import const

from ..checks import sim_walk

_S_BIAS = const(0x10000000)  # layout.py's S_BIAS: values are stored plus it


class Sensor:
    """read(values) fills values with the next simulated raw reading of every field."""

    # sim_walk(self, values): one call per reading, self.state its state; values an array('i')
    # (Sender.values of an integer template).
    read = sim_walk

    def __init__(self, tpl, cfg=None):
        seed = getattr(cfg, "SEED", 1)
        x = (seed & 0xFFFF) or 1
        n = tpl.FIELD_COUNT
        st = [x, n]
        for i in range(n):
            # The host keeps lo <= hi inside +-(S_BIAS - 1024) (build.SIM_LIMIT), so that walk,
            # drift and noise stay small ints.
            lo = tpl.SIM_LO[i]
            hi = tpl.SIM_HI[i]
            x = _xorshift(x)
            drift = 1 + (x & 3)
            noise = max(1, min(100, (hi - lo) // 256))
            mid = (lo + hi) // 2
            st += [mid + _S_BIAS, lo + _S_BIAS, hi + _S_BIAS, drift + _S_BIAS, noise]
        st[0] = x
        self.state = array("I", st)
        if not tpl.INTEGER:  # values is a list (an f32 field): walk in an array, then copy
            self._raw = array("i", bytes(4 * n))
            self.read = self._read_list  # type: ignore[method-assign]

    def _read_list(self, values):
        raw = self._raw
        sim_walk(self, raw)
        i = 0
        while i < len(raw):
            values[i] = raw[i]
            i += 1


def _xorshift(x):
    x ^= (x << 7) & 0xFFFF
    x ^= x >> 9
    x ^= (x << 8) & 0xFFFF
    return x
