"""Run precast's loop through an SPI Ethernet driver into a chip model (MicroPython).

The test writes `eth_params.py` beside this file in the bundle:
CHIP ("w5500" or "enc28j60"), IFACE (the wire's interface, or None),
START (chip attributes set before the driver opens: a fault from power-on)
and SCHEDULE ((reading, attribute, value), in reading order: a fault that
comes and goes while the loop runs). The last line printed is one JSON
object with the loop's counts, the driver's and the model's summaries.
"""

import json
import sys

import eth_params as P
import precast_config as cfg
import precast_template as tpl
from precast_fw import app
from precast_fw.sensors.sim import Sensor as Sim

from wire import Wire

wire = Wire(P.IFACE)
if P.CHIP == "w5500":
    from precast_fw.transport_w5500 import Transport

    from w5500_model import W5500 as Chip
else:
    from precast_fw.transport_enc28j60 import Transport

    from enc28j60_model import ENC28J60 as Chip
chip = Chip(wire)
for name, value in P.START:
    setattr(chip, name, value)
if getattr(P, "RESET_PIN", False):
    cfg.ETH_RESET = chip.rst  # a Pin-like callable: the driver drives it as it would a Pin
try:
    t = Transport(tpl, cfg, spi=chip, cs=chip.cs)
except OSError as e:
    print(json.dumps({"open_error": [e.args[0], e.args[1] if len(e.args) > 1 else ""]}))
    sys.exit(0)


def _setter(name):
    if name == "link" and hasattr(chip, "set_link"):
        return chip.set_link
    return lambda v: setattr(chip, name, v)


class FaultSensor:
    """The simulated sensor, and on the scheduled readings a change to the chip."""

    def __init__(self):
        self.sim = Sim(tpl, cfg)
        self.i = 0
        self.k = 0
        self.at = [s[0] for s in P.SCHEDULE] + [-1]
        self.fn = [_setter(s[1]) for s in P.SCHEDULE]
        self.val = [s[2] for s in P.SCHEDULE]

    def read(self, values):
        self.sim.read(values)
        i = self.i
        while self.at[self.k] == i:
            self.fn[self.k](self.val[self.k])
            self.k += 1
        self.i = i + 1


counts = app.run(tpl, cfg, transport=t, sensor=FaultSensor())
out = {
    "counts": str(counts),
    "driver": t.summary(),
    "detail": counts.detail() if counts.detail is not None else None,  # main.py's second line
    "model": chip.summary(),
    "wire": [wire.frames, wire.shortest, wire.longest],
    "last_errno": counts.last_errno,
    "hard_resets": chip.hard_resets,
}
if P.CHIP == "w5500":
    out["runts"] = chip.runts
    out["bad_open"] = chip.bad_open
    out["misuse"] = chip.misuse
    out["aborted"] = chip.aborted
else:
    out["bad"] = chip.bad
    out["early"] = chip.early
    out["misuse"] = chip.misuse
    out["no_txrst"] = chip.no_txrst
    out["duplex"] = chip.duplex
    out["maadr"] = [chip.banks[3][a] for a in (4, 5, 2, 3, 0, 1)]
    out["macon3"] = chip.banks[2][2]
    out["rxen"] = chip.common[0x1F] & 0x04
wire.close()
print(json.dumps(out))
