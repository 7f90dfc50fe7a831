"""The hot path, chosen once: viper.py where the port has a native emitter, else plain.py.

What every reading runs: seal (seq, fields, CRC-16 or CMAC, UDP checksum:
Sender's patch), sim_walk (the simulated sensor) and load_be32 (a kept
reading's seq).
The two modules have the same names and give the same bytes; viper is 18x
faster on the unix port (0.2 against 3.8 µs a reading). This is the one
place that decides; VIPER says what it decided. A bundle built with --mpy
--march carries viper alone, compiled for the board's arch.
"""

try:
    from .viper import load_be32, seal, sim_walk

    VIPER = True
except (ImportError, SyntaxError, ValueError) as e:  # no viper here, or .mpy of another arch
    try:
        from .plain import load_be32, seal, sim_walk
    except ImportError:  # a bundle built --mpy --march carries viper only: the wrong arch
        raise ImportError("precast: viper does not load on this port (%s) and the bundle has"
                          " no plain.py: build for this board's --march" % e) from None  # fmt: skip

    VIPER = False

__all__ = ["VIPER", "load_be32", "seal", "sim_walk"]
