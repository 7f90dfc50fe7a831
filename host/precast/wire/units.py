"""What the units a template names mean to people: the values a real sensor gives.

The simulated sensors (`precast simulate`, and the firmware's `sim` sensor that
`precast build` configures) keep a field whose unit is known inside the range a
real sensor of that kind reports, so a simulated reading never looks like a
decoding bug (humidity 327 %, pressure 268,435,369 Pa). A field with another
unit, or none, stays in the middle tenth of its type's range. A meter (a
total_increasing field: energy) counts up from the low end, at a plausible rate.
"""

from __future__ import annotations

from precast.wire.layout import FieldSlot

# unit -> (typical low, typical high) in that unit
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "degC": (15.0, 30.0),  # indoors
    "K": (288.0, 303.0),
    "%": (30.0, 70.0),  # relative humidity, battery level
    "Pa": (99_000.0, 103_000.0),  # sea-level air pressure
    "hPa": (990.0, 1_030.0),
    "mV": (3_300.0, 4_100.0),  # a Li-ion cell
    "V": (3.3, 4.1),
    "A": (0.0, 10.0),
    "mA": (0.0, 500.0),
    "W": (0.0, 2_000.0),  # a household load
    "kW": (0.0, 2.0),
    "Wh": (0.0, 100_000.0),
    "kWh": (0.0, 100.0),
    "lx": (50.0, 1_000.0),
    "ppm": (400.0, 1_200.0),  # indoor CO2
}
# Mains voltage is a V field too: its name says so.
_MAINS = (225.0, 235.0)
# A meter (state class total_increasing) counts up at about this many units an hour: a
# household's 1 kW, a tap's 50 litres. Another unit, or none, counts 1 raw step a second.
COUNTER_PER_HOUR: dict[str, float] = {
    "Wh": 1_000.0,
    "kWh": 1.0,
    "MWh": 0.001,
    "m3": 0.05,
    "L": 50.0,
}


def plausible_raw(slot: FieldSlot) -> tuple[float, float]:
    """(middle, half-width) of a field's simulated raw values, inside its type's range."""
    f = slot.field
    lo_t, hi_t = f.range
    span = PLAUSIBLE.get(f.unit)
    if f.unit == "V" and any(w in f.name.lower() for w in ("mains", "line", "grid", "voltage")):
        span = _MAINS
    if span is not None:
        scale = 1 if f.type == "f32" else f.scale
        offset = 0 if f.type == "f32" else f.offset
        lo, hi = ((u - offset) / scale for u in span)
        lo, hi = min(lo, hi), max(lo, hi)
        if lo_t is not None and hi_t is not None:
            lo, hi = max(lo, lo_t), min(hi, hi_t)
        if lo < hi:
            return (lo + hi) / 2, (hi - lo) / 2
    if lo_t is None or hi_t is None:  # an f32 with no known unit: around zero
        return 0.0, 1.0
    return (lo_t + hi_t) / 2, (hi_t - lo_t) * 0.05


def counter_raw(slot: FieldSlot) -> tuple[float, float] | None:
    """(start, raw steps a second) of a meter that only counts up; None for another field."""
    f = slot.field
    if f.classes.state_class != "total_increasing":
        return None
    per_hour = COUNTER_PER_HOUR.get(f.unit)
    scale = 1 if f.type == "f32" else f.scale
    rate = 1.0 if per_hour is None else per_hour / 3600 / abs(scale)
    mid, amp = plausible_raw(slot)
    return max(mid - amp, 0.0 if f.range[0] is None else float(f.range[0])), rate
