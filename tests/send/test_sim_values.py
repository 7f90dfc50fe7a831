"""Simulated readings look like a sensor's: inside what the physical quantity allows.

The judge is a table written here from the sensors' datasheets and physics
(BME280: -40..85 degC, 0..100 %RH, 300..1100 hPa; a Li-ion cell 2.5..4.5 V;
mains under 300 V), not wire/units.py's own table. Values are decoded by the
codec from the pcap `precast simulate` writes.
"""

from __future__ import annotations

from pathlib import Path

from kit import KEY_HEX, TEMPLATES, precast
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts
from precast.wire.pcap import read_frames

PHYSICAL = {
    "temperature": (-40.0, 85.0),
    "humidity": (0.0, 100.0),
    "pressure": (30_000.0, 110_000.0),
    "battery": (2_500.0, 4_500.0),
    "voltage": (100.0, 300.0),
    "power": (-10_000.0, 10_000.0),  # W, a household
    "energy": (0.0, 10_000_000.0),  # Wh
}


def test_simulated_fields_stay_physical(tmp_path: Path) -> None:
    pcap = tmp_path / "sim.pcap"
    r = precast(
        "simulate",
        "--templates",
        str(TEMPLATES),
        "--devices",
        "6",
        "--rate",
        "3000",
        "--duration",
        "1",
        "--key",
        KEY_HEX,
        "--pcap",
        str(pcap),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    codec = Codec(load_layouts([TEMPLATES]), key=bytes.fromhex(KEY_HEX))
    seen: dict[str, list[float]] = {}
    energy: dict[int, list[tuple[int, float]]] = {}
    for frame in read_frames(pcap):
        got = codec.decode(frame)
        assert isinstance(got, Reading), got
        for name, value in got.fields.items():
            seen.setdefault(name, []).append(float(value))
        if "energy" in got.fields:
            energy.setdefault(got.device, []).append((got.seq, float(got.fields["energy"])))
    assert set(PHYSICAL) <= set(seen), sorted(seen)
    for name, (lo, hi) in PHYSICAL.items():
        values = seen[name]
        assert lo <= min(values) and max(values) <= hi, (name, min(values), max(values))
        assert max(values) > min(values), name  # a signal, not a constant
    # A meter (total_increasing) only counts up, reading after reading.
    assert energy
    for dev, series in energy.items():
        values = [v for _, v in sorted(series)]
        assert values == sorted(values), dev


def test_a_meter_counts_up_at_a_household_rate() -> None:
    """Energy over a simulated hour at one reading a minute: up by about 1 kWh, never down."""
    import numpy as np
    from precast.send.fleet import Fleet

    power = next(lay for lay in load_layouts([TEMPLATES]) if lay.template.name == "power-meter")
    fleet = Fleet([power], devices=3)
    g = fleet.groups[0]
    t = np.arange(0, 3601, 60, dtype=np.float64)
    energy = fleet.signals(g, t)[0].reshape(len(t), 3)  # Wh, rounds x devices
    assert (np.diff(energy, axis=0) >= 0).all()
    rise = energy[-1] - energy[0]
    assert ((rise >= 990) & (rise <= 1010)).all(), rise
    # The power field beside it is still a signal around a household load, not a counter.
    watts = fleet.signals(g, t)[1].reshape(len(t), 3) * 0.1
    assert (np.diff(watts, axis=0) < 0).any()
