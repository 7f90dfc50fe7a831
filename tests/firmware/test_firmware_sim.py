"""The firmware's simulated sensor: readings a real sensor could give, the same on both paths.

main.py with the default `sim` sensor sends to a loopback socket; each
reading, decoded by the codec into units, stays inside what a real sensor
of that unit reports (precast.wire.units: degC, %, Pa, mV, W, V ...), and a
field with no known unit inside the middle tenth of its type's range. The
walk moves (not a constant). The viper walk and the plain one give the same
readings for the same seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from firmware_kit import UdpSink, build, counts, no_viper
from kit import KEY_HEX, TEMPLATES, run_bundle
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts
from precast.wire.units import PLAUSIBLE

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

N = 400


def _template(tmp: Path) -> Path:
    p = tmp / "units.toml"
    p.write_text(
        'id = 60\nname = "units"\ncheck = "crc16"\n'
        '[[field]]\nname = "t"\ntype = "i16"\nscale = 0.01\nunit = "degC"\n'
        '[[field]]\nname = "rh"\ntype = "u16"\nscale = 0.01\nunit = "%"\n'
        '[[field]]\nname = "p"\ntype = "u32"\nunit = "Pa"\n'
        '[[field]]\nname = "p2"\ntype = "u16"\nscale = 0.1\nunit = "hPa"\n'
        '[[field]]\nname = "bat"\ntype = "u16"\nunit = "mV"\n'
        '[[field]]\nname = "cell"\ntype = "u16"\nscale = 0.001\nunit = "V"\n'
        '[[field]]\nname = "load"\ntype = "i32"\nunit = "W"\n'
        '[[field]]\nname = "count"\ntype = "u16"\n'
        '[[field]]\nname = "level"\ntype = "i32"\n'
    )
    return p


@pytest.mark.parametrize(
    "template", ["units", "env-node.toml", "power-meter.toml"], ids=lambda t: t.split(".")[0]
)
def test_firmware_sim_stays_plausible(tmp_path: Path, template: str) -> None:
    path = _template(tmp_path) if template == "units" else TEMPLATES / template
    lay = load_layouts([path])[0]
    sink = UdpSink()
    try:
        build(tmp_path / "b", path, "--device", "2", "--collector", sink.collector, "--key",
              KEY_HEX, "--count", str(N), "--interval-ms", "0", "--seq-file", "")  # fmt: skip
        r = run_bundle(tmp_path / "b")
        assert r.returncode == 0, r.stdout + r.stderr
        assert counts(r.stdout)["sent"] == N
        got = sink.drain()
    finally:
        sink.close()
    codec = Codec([lay], key=bytes.fromhex(KEY_HEX))
    readings = [codec.decode(g) for g in got]
    assert len(readings) == N and all(isinstance(x, Reading) for x in readings)
    for slot in lay.fields:
        f = slot.field
        values = [x.fields[f.name] for x in readings if isinstance(x, Reading)]
        # It walks (an f32 without a unit walks whole numbers in [-1, 1]: the sim is integer).
        assert len(set(values)) > (2 if f.type == "f32" else 5), (f.name, values[:10])
        span = PLAUSIBLE.get(f.unit)
        if f.unit == "V" and "voltage" in f.name:
            span = (225.0, 235.0)  # mains
        if span is None and f.type == "f32":
            span = (-1.0, 1.0)  # no unit, no type range: around zero
        if span is None:
            lo_t, hi_t = f.range
            assert lo_t is not None and hi_t is not None
            mid, tenth = (lo_t + hi_t) / 2, (hi_t - lo_t) / 10
            span = ((mid - tenth / 2) * f.scale + f.offset, (mid + tenth / 2) * f.scale + f.offset)
        assert all(span[0] - 1e-9 <= v <= span[1] + 1e-9 for v in values), (f.name, span, values)


SIM = """
import precast_config as cfg, precast_template as tpl
from precast_fw.sender import Sender
from precast_fw.sensors.sim import Sensor
from precast_fw import checks
s = Sensor(tpl, cfg)
v = Sender(tpl).values
out = []
for i in range(300):
    s.read(v)
    out.append(list(v))
print(checks.VIPER, out)
"""


def test_firmware_sim_viper_and_plain_agree(tmp_path: Path) -> None:
    path = _template(tmp_path)
    runs = []
    for plain in (False, True):
        out = tmp_path / f"b{plain}"
        build(out, path, "--device", "2", "--seed", "7")
        if plain:
            no_viper(out)
        r = run_bundle(out, SIM)
        assert r.returncode == 0, r.stdout + r.stderr
        viper, rest = r.stdout.split(" ", 1)
        assert viper == str(not plain)
        runs.append(rest)
    assert runs[0] == runs[1]
    assert len(set(runs[0].split("], ["))) > 100  # the readings change
