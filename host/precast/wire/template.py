"""Template files: parse and validate the TOML that describes a sensor's frame.

A template fixes everything about a frame but the readings: its id, its
check (crc16, cmac4, cmac8), the Ethernet/IPv4/UDP addressing, and the
fields in wire order. The schema is a contract:

    id = 1                  # 0..65535
    name = "env-node"       # optional, defaults to the file's stem
    check = "crc16"         # crc16 (default) | cmac4 | cmac8

    [network]               # every key optional
    src_mac = "02:00:00:00:00:01"
    dst_mac = "ff:ff:ff:ff:ff:ff"
    src_ip = "192.0.2.2"
    dst_ip = "192.0.2.1"
    src_port = 20547
    dst_port = 20547
    ttl = 64
    dscp = 0                # 0..63

    [[field]]               # in wire order; at least one
    name = "temperature"    # identifier, unique in the template
    type = "i16"            # u8 i8 u16 i16 u32 i32 f32
    scale = 0.01            # optional, default 1; units = raw * scale + offset
    offset = 0              # optional, default 0; neither on f32 (it carries units)
    unit = "degC"           # optional
    device_class = "temperature"   # optional: Home Assistant's sensor device class
    state_class = "measurement"    # optional: measurement | total | total_increasing

device_class and state_class only matter to MQTT discovery (the collector's
--ha-discovery), which otherwise derives them from the unit.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from precast.errors import TemplateError
from precast.wire.constants import (
    AGE_LEN,
    CHECKS,
    DEFAULT_PORT,
    HEADER_LEN,
    MAX_PAYLOAD,
)

# type name -> (struct code, size, min, max); f32 has no integer range.
TYPES: dict[str, tuple[str, int, int | None, int | None]] = {
    "u8": ("B", 1, 0, 0xFF),
    "i8": ("b", 1, -0x80, 0x7F),
    "u16": ("H", 2, 0, 0xFFFF),
    "i16": ("h", 2, -0x8000, 0x7FFF),
    "u32": ("I", 4, 0, 0xFFFFFFFF),
    "i32": ("i", 4, -0x80000000, 0x7FFFFFFF),
    "f32": ("f", 4, None, None),
}

_TOP_KEYS = {"id", "name", "check", "network", "field"}
_NET_KEYS = {"src_mac", "dst_mac", "src_ip", "dst_ip", "src_port", "dst_port", "ttl", "dscp"}
_FIELD_KEYS = {"name", "type", "scale", "offset", "unit", "device_class", "state_class"}
# Home Assistant's sensor device classes (SensorDeviceClass) and state classes.
DEVICE_CLASSES = frozenset(
    "apparent_power aqi area atmospheric_pressure battery blood_glucose_concentration "
    "carbon_dioxide carbon_monoxide conductivity current data_rate data_size date distance "
    "duration energy energy_distance energy_storage enum frequency gas humidity illuminance "
    "irradiance moisture monetary nitrogen_dioxide nitrogen_monoxide nitrous_oxide ozone ph "
    "pm1 pm10 pm25 power power_factor precipitation precipitation_intensity pressure "
    "reactive_energy reactive_power signal_strength sound_pressure speed sulphur_dioxide "
    "temperature timestamp volatile_organic_compounds volatile_organic_compounds_parts "
    "voltage volume volume_flow_rate volume_storage water weight wind_direction "
    "wind_speed".split()
)
STATE_CLASSES = ("measurement", "total", "total_increasing")
_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


@dataclass(frozen=True)
class Field:
    """One reading field: its name, wire type and how raw maps to units."""

    name: str
    type: str
    scale: float | int = 1
    offset: float | int = 0
    unit: str = ""
    device_class: str = ""  # "" : derived from the unit where discovery needs one
    state_class: str = ""

    @property
    def code(self) -> str:
        return TYPES[self.type][0]

    @property
    def size(self) -> int:
        return TYPES[self.type][1]

    @property
    def range(self) -> tuple[int | None, int | None]:
        return TYPES[self.type][2], TYPES[self.type][3]


@dataclass(frozen=True)
class Network:
    """The addressing a template fixes for every frame it makes."""

    src_mac: str = "02:00:00:00:00:01"
    dst_mac: str = "ff:ff:ff:ff:ff:ff"
    src_ip: str = "192.0.2.2"
    dst_ip: str = "192.0.2.1"
    src_port: int = DEFAULT_PORT
    dst_port: int = DEFAULT_PORT
    ttl: int = 64
    dscp: int = 0


@dataclass(frozen=True)
class Template:
    """A validated template: what the compiler turns into a frame layout."""

    id: int
    name: str
    check: str
    network: Network
    fields: tuple[Field, ...]
    source: str = "<template>"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def mic(self) -> bool:
        return self.check != "crc16"

    @property
    def check_len(self) -> int:
        return CHECKS[self.check]

    @property
    def fields_len(self) -> int:
        return sum(f.size for f in self.fields)

    @property
    def payload_len(self) -> int:
        return HEADER_LEN + self.fields_len + self.check_len


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(float(v))  # type: ignore[arg-type]


def _unknown(src: str, where: str, got: Iterable[str], allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise TemplateError(
            src, f"{where}{extra[0]}", f"unknown key (expected one of {', '.join(sorted(allowed))})"
        )


def _int_in(src: str, key: str, v: object, lo: int, hi: int) -> int:
    if not _is_int(v):
        raise TemplateError(src, key, f"must be an integer, got {v!r}")
    assert isinstance(v, int)
    if not lo <= v <= hi:
        raise TemplateError(src, key, f"{v} is out of range {lo}..{hi}")
    return v


def _parse_network(src: str, raw: object) -> Network:
    if not isinstance(raw, dict):
        raise TemplateError(src, "network", "must be a table")
    _unknown(src, "network.", raw, _NET_KEYS)
    d = Network()
    vals: dict[str, Any] = {}
    for k in ("src_mac", "dst_mac"):
        v = raw.get(k, getattr(d, k))
        if not isinstance(v, str) or not _MAC_RE.match(v):
            raise TemplateError(
                src, f"network.{k}", f"bad MAC address {v!r} (want aa:bb:cc:dd:ee:ff)"
            )
        vals[k] = v.lower()
    for k in ("src_ip", "dst_ip"):
        v = raw.get(k, getattr(d, k))
        try:
            if not isinstance(v, str):
                raise ValueError
            vals[k] = str(ipaddress.IPv4Address(v))
        except ValueError:
            raise TemplateError(src, f"network.{k}", f"bad IPv4 address {v!r}") from None
    for k in ("src_port", "dst_port"):
        vals[k] = _int_in(src, f"network.{k}", raw.get(k, getattr(d, k)), 1, 65535)
    vals["ttl"] = _int_in(src, "network.ttl", raw.get("ttl", d.ttl), 1, 255)
    vals["dscp"] = _int_in(src, "network.dscp", raw.get("dscp", d.dscp), 0, 63)
    return Network(**vals)


def _parse_field(src: str, i: int, raw: object, seen: set[str]) -> Field:
    where = f"field[{i}]"
    if not isinstance(raw, dict):
        raise TemplateError(src, where, "must be a table ([[field]])")
    _unknown(src, f"{where}.", raw, _FIELD_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise TemplateError(src, f"{where}.name", f"must be an identifier, got {name!r}")
    if name in seen:
        raise TemplateError(src, f"{where}.name", f"duplicate field name {name!r}")
    seen.add(name)
    typ = raw.get("type")
    if typ not in TYPES:
        raise TemplateError(
            src, f"{where}.type", f"unknown type {typ!r} (expected one of {' '.join(TYPES)})"
        )
    if typ == "f32":
        for key in ("scale", "offset"):
            if key in raw:
                why = "not allowed on f32: an f32 field carries its value in units"
                raise TemplateError(src, f"{where}.{key}", why)
    scale = raw.get("scale", 1)
    if not _is_number(scale) or scale == 0:
        raise TemplateError(
            src, f"{where}.scale", f"must be a non-zero finite number, got {scale!r}"
        )
    offset = raw.get("offset", 0)
    if not _is_number(offset):
        raise TemplateError(src, f"{where}.offset", f"must be a finite number, got {offset!r}")
    unit = raw.get("unit", "")
    if not isinstance(unit, str):
        raise TemplateError(src, f"{where}.unit", f"must be a string, got {unit!r}")
    device_class = raw.get("device_class", "")
    if "device_class" in raw and (
        not isinstance(device_class, str) or device_class not in DEVICE_CLASSES
    ):
        raise TemplateError(
            src,
            f"{where}.device_class",
            f"unknown device class {device_class!r} (one of Home Assistant's sensor device "
            "classes: temperature, humidity, pressure, voltage, current, power, energy, ...)",
        )
    state_class = raw.get("state_class", "")
    if "state_class" in raw and (
        not isinstance(state_class, str) or state_class not in STATE_CLASSES
    ):
        raise TemplateError(
            src,
            f"{where}.state_class",
            f"unknown state class {state_class!r} (expected {', '.join(STATE_CLASSES)})",
        )
    return Field(
        name=name,
        type=str(typ),
        scale=scale,
        offset=offset,
        unit=unit,
        device_class=str(device_class),
        state_class=str(state_class),
    )


def parse_template(data: Mapping[str, Any], source: str = "<template>") -> Template:
    """Validate a template already read from TOML; raise TemplateError naming the key."""
    src = source
    _unknown(src, "", data, _TOP_KEYS)
    if "id" not in data:
        raise TemplateError(src, "id", "missing (an integer 0..65535)")
    tid = _int_in(src, "id", data["id"], 0, 0xFFFF)
    default_name = Path(source).stem if source != "<template>" else f"template-{tid}"
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise TemplateError(src, "name", f"must be a non-empty string, got {name!r}")
    check = data.get("check", "crc16")
    if check not in CHECKS:
        raise TemplateError(
            src, "check", f"unknown check {check!r} (expected crc16, cmac4 or cmac8)"
        )
    network = _parse_network(src, data.get("network", {}))
    raw_fields = data.get("field")
    if not isinstance(raw_fields, list) or not raw_fields:
        raise TemplateError(src, "field", "at least one [[field]] is needed")
    seen: set[str] = set()
    fields = tuple(_parse_field(src, i, f, seen) for i, f in enumerate(raw_fields))
    t = Template(id=tid, name=name, check=str(check), network=network, fields=fields, source=src)
    # The delayed frame (P + 4, the age) must fit the MTU too.
    if t.payload_len + AGE_LEN > MAX_PAYLOAD:
        raise TemplateError(
            src,
            "field",
            f"payload is {t.payload_len} bytes ({t.payload_len + AGE_LEN} delayed),"
            f" over the {MAX_PAYLOAD}-byte maximum",
        )
    return t


def load_template(path: str | Path) -> Template:
    """Read and validate one template file."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise TemplateError(str(p), None, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(str(p), None, f"cannot read: {e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TemplateError(str(p), None, f"not valid TOML: {e}") from None
    return parse_template(data, str(p))


def shipped_templates() -> Path:
    """The example templates that ship with precast (templates/ in a checkout)."""
    spec = importlib.util.find_spec("precast.templates")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[3] / "templates"


def default_templates() -> list[Path]:
    """Where a command looks when given no --templates: ./templates, else the shipped ones."""
    here = Path("templates")
    return [here if here.is_dir() else shipped_templates()]


def load_templates(paths: Iterable[str | Path]) -> list[Template]:
    """Read templates from files and directories (every *.toml inside); ids must be unique."""
    out: list[Template] = []
    by_id: dict[int, Template] = {}
    for path in paths:
        p = Path(path)
        files = sorted(p.glob("*.toml")) if p.is_dir() else [p]
        if p.is_dir() and not files:
            raise TemplateError(str(p), None, "directory holds no *.toml template")
        for f in files:
            t = load_template(f)
            if t.id in by_id and by_id[t.id].source != t.source:
                raise TemplateError(
                    t.source, "id", f"id {t.id} is also used by {by_id[t.id].source}"
                )
            if t.id not in by_id:
                by_id[t.id] = t
                out.append(t)
    return out
