"""Home Assistant's rules for a numeric sensor: device classes, their units and state classes.

A template's field may name a Home Assistant sensor device class and state
class (the collector's --ha-discovery announces them); where it does not, its
unit says. Home Assistant checks the three against each other at every state
it writes: a unit its device class does not know is warned about (2024.3) and
refused outright from 2025.7 (the entity never appears); a state class the
device class makes impossible is warned about; a number under a date,
timestamp or enum class is an invalid state at every reading. precast refuses
all of these when it loads the template (template.py), by the table below.

The facts are Home Assistant's own, from homeassistant/components/sensor/const.py
(DEVICE_CLASS_UNITS, DEVICE_CLASS_STATE_CLASSES, NON_NUMERIC_DEVICE_CLASSES) of
the release in HA_VERSION; `make ha` compares this table with that file of the
installed release.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

HA_VERSION = "2024.3.3"

STATE_CLASSES = ("measurement", "total", "total_increasing")
M = ("measurement",)
T = ("total",)
T_TI = ("total", "total_increasing")
M_T_TI = STATE_CLASSES

# device class -> (its units, "|"-separated, "" for no unit; None: any unit), state classes.
_NUMERIC: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "apparent_power": ("VA", M),
    "aqi": ("", M),
    "atmospheric_pressure": ("Pa|bar|cbar|hPa|inHg|kPa|mbar|mmHg|psi", M),
    "battery": ("%", M),
    "carbon_dioxide": ("ppm", M),
    "carbon_monoxide": ("ppm", M),
    "current": ("A|mA", M),
    "data_rate": ("B/s|GB/s|Gbit/s|GiB/s|KiB/s|MB/s|Mbit/s|MiB/s|bit/s|kB/s|kbit/s", M),
    "data_size": (
        "B|EB|EiB|GB|Gbit|GiB|KiB|MB|Mbit|MiB|PB|PiB|TB|TiB|YB|YiB|ZB|ZiB|bit|kB|kbit",
        M_T_TI,
    ),
    "distance": ("cm|ft|in|km|m|mi|mm|yd", M_T_TI),
    "duration": ("d|h|min|ms|s", M_T_TI),
    "energy": ("GJ|MJ|MWh|Wh|kWh", T_TI),
    "energy_storage": ("GJ|MJ|MWh|Wh|kWh", M),
    "frequency": ("GHz|Hz|MHz|kHz", M),
    "gas": ("CCF|ft³|m³", T_TI),
    "humidity": ("%", M),
    "illuminance": ("lx", M),
    "irradiance": ("BTU/(h⋅ft²)|W/m²", M),
    "moisture": ("%", M),
    "monetary": (None, T),
    "nitrogen_dioxide": ("µg/m³", M),
    "nitrogen_monoxide": ("µg/m³", M),
    "nitrous_oxide": ("µg/m³", M),
    "ozone": ("µg/m³", M),
    "ph": ("", M),
    "pm1": ("µg/m³", M),
    "pm10": ("µg/m³", M),
    "pm25": ("µg/m³", M),
    "power": ("W|kW", M),
    "power_factor": ("|%", M),
    "precipitation": ("cm|in|mm", M_T_TI),
    "precipitation_intensity": ("in/d|in/h|mm/d|mm/h", M),
    "pressure": ("Pa|bar|cbar|hPa|inHg|kPa|mbar|mmHg|psi", M),
    "reactive_power": ("var", M),
    "signal_strength": ("dB|dBm", M),
    "sound_pressure": ("dB|dBA", M),
    "speed": ("ft/s|in/d|in/h|km/h|kn|m/s|mm/d|mm/h|mph", M),
    "sulphur_dioxide": ("µg/m³", M),
    "temperature": ("K|°C|°F", M),
    "volatile_organic_compounds": ("µg/m³", M),
    "volatile_organic_compounds_parts": ("ppb|ppm", M),
    "voltage": ("V|mV", M),
    "volume": ("CCF|L|fl. oz.|ft³|gal|mL|m³", T_TI),
    "volume_flow_rate": ("L/min|ft³/min|gal/min|m³/h", M),
    "volume_storage": ("CCF|L|fl. oz.|ft³|gal|mL|m³", M),
    "water": ("CCF|L|ft³|gal|m³", T_TI),
    "weight": ("g|kg|lb|mg|oz|st|µg", M_T_TI),
    "wind_speed": ("ft/s|km/h|kn|m/s|mph", M),
}
# Their states are a date, a time or one of some options: never a field's number.
NON_NUMERIC = frozenset({"date", "enum", "timestamp"})


@dataclass(frozen=True)
class DeviceClass:
    """One of Home Assistant's numeric sensor device classes, as HA_VERSION checks it."""

    name: str
    units: frozenset[str] | None  # "" is no unit; None: any unit (monetary: a currency)
    state_classes: tuple[str, ...]  # in STATE_CLASSES order

    @property
    def default_state_class(self) -> str:
        """measurement where it may be, else total_increasing (a meter), else total."""
        for sc in ("measurement", "total_increasing", "total"):
            if sc in self.state_classes:
                return sc
        raise AssertionError(self.name)


DEVICE_CLASSES: dict[str, DeviceClass] = {
    name: DeviceClass(name, None if u is None else frozenset(u.split("|")), sc)
    for name, (u, sc) in _NUMERIC.items()
}

# Template unit -> (Home Assistant's unit, the device class it implies, "" none). A unit
# not listed goes out as written, with no device class; a field with no unit gets neither.
UNITS: dict[str, tuple[str, str]] = {
    "degC": ("°C", "temperature"),
    "°C": ("°C", "temperature"),
    "degF": ("°F", "temperature"),
    "°F": ("°F", "temperature"),
    "K": ("K", "temperature"),
    "%": ("%", "humidity"),
    "Pa": ("Pa", "pressure"),
    "hPa": ("hPa", "pressure"),
    "kPa": ("kPa", "pressure"),
    "mbar": ("mbar", "pressure"),
    "bar": ("bar", "pressure"),
    "mV": ("mV", "voltage"),
    "V": ("V", "voltage"),
    "mA": ("mA", "current"),
    "A": ("A", "current"),
    "W": ("W", "power"),
    "kW": ("kW", "power"),
    "Wh": ("Wh", "energy"),
    "kWh": ("kWh", "energy"),
    "MWh": ("MWh", "energy"),
    "Hz": ("Hz", "frequency"),
    "lx": ("lx", "illuminance"),
    "dBm": ("dBm", "signal_strength"),
    # Spellings of Home Assistant's units that a keyboard has: the unit only, no class.
    "m3": ("m³", ""),
    "ug/m3": ("µg/m³", ""),
    "ft3": ("ft³", ""),
}


class Classes(NamedTuple):
    """What a field announces to Home Assistant: unit, device class, state class ("": none)."""

    unit: str
    device_class: str
    state_class: str


class Refusal(NamedTuple):
    """A combination Home Assistant would refuse or warn about: the template key and why."""

    key: str
    why: str


def _spell(units: frozenset[str]) -> str:
    return ", ".join(repr(u) if u else "none" for u in sorted(units))


def resolve(unit: str, device_class: str, state_class: str) -> Classes | Refusal:
    """A field's classes from its template keys ("" where absent), or why HA would refuse them."""
    ha_unit, implied = UNITS.get(unit, (unit, ""))
    if device_class in NON_NUMERIC:
        return Refusal(
            "device_class",
            f"{device_class!r} is for a date, a time or a text; a field is a number",
        )
    if device_class and device_class not in DEVICE_CLASSES:
        return Refusal(
            "device_class",
            f"unknown device class {device_class!r} (not a numeric sensor device class of "
            f"Home Assistant {HA_VERSION}: temperature, humidity, pressure, voltage, ...)",
        )
    if state_class and state_class not in STATE_CLASSES:
        return Refusal(
            "state_class",
            f"unknown state class {state_class!r} (expected {', '.join(STATE_CLASSES)})",
        )
    dc = DEVICE_CLASSES.get(device_class or implied)
    if dc is None:
        return Classes(ha_unit, "", state_class or "measurement")
    if dc.units is not None and ha_unit not in dc.units:
        if not ha_unit:
            why = f"device class {dc.name!r} needs a unit: one of {_spell(dc.units)}"
        elif dc.units == {""}:
            why = f"device class {dc.name!r} takes no unit, got {unit!r}"
        else:
            why = f"{unit!r} is not a unit of device class {dc.name!r} ({_spell(dc.units)})"
        return Refusal("unit", why)
    if state_class and state_class not in dc.state_classes:
        return Refusal(
            "state_class",
            f"{state_class!r} is impossible for device class {dc.name!r} "
            f"(Home Assistant wants {' or '.join(dc.state_classes)})",
        )
    return Classes(ha_unit, dc.name, state_class or dc.default_state_class)
