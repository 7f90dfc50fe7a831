"""Home Assistant's MQTT discovery for the collector's devices: which retained configs, where.

Pure functions from a template's layout, the collector's MQTT prefix and a
device id to the records the MQTT sink publishes (topic, payload), and the
record of which it has published (Published, which the store keeps); no I/O.
DISCOVERY is Home Assistant's discovery prefix (--ha-discovery), PREFIX the
collector's (the --mqtt URL's path):

    DISCOVERY/sensor/<node>/<field>/config         one per field of the device's template
    DISCOVERY/sensor/<node>/diagnostic-loss/config       the device's loss % (diagnostic)
    DISCOVERY/sensor/<node>/diagnostic-last_seen/config  its last reading's time (diagnostic)
    DISCOVERY/binary_sensor/<collector>/status/config    the collector itself: connected

<node> is `precast_<device>` for the default prefix `precast` (the ids of
installations from before prefixes counted) and `precast-<prefix>-<device>`
otherwise, so two collectors on one broker never share an entity; it is also
the device's identifier and the start of every unique_id. A device is
`via_device` of the collector (`precast_collector`, `precast-<prefix>-collector`).
Home Assistant takes a topic's node and object id only in [A-Za-z0-9_-]: a
field's name is its object id where it is ASCII, else slug()'s spelling of it
(`température`: `temp_rature_<hash>`). Field names are identifiers and
diagnostics' names hold a `-`, so they never meet.

What Home Assistant would refuse in a field's unit, device class and state
class was refused when its template loaded (wire/sensor_classes.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from precast import __version__
from precast.collect.stats import loss_pct
from precast.wire.layout import FieldSlot, Layout
from precast.wire.template import Field

DEFAULT_PREFIX = "precast"
ONLINE, OFFLINE = "online", "offline"
LOSS, LAST_SEEN = "diagnostic-loss", "diagnostic-last_seen"

# Words a field name holds that people write in capitals (or their own way).
SPELLING = {
    "co": "CO",
    "co2": "CO2",
    "no2": "NO2",
    "o3": "O3",
    "so2": "SO2",
    "pm1": "PM1",
    "pm10": "PM10",
    "pm25": "PM2.5",
    "voc": "VOC",
    "tvoc": "TVOC",
    "uv": "UV",
    "ph": "pH",
    "pf": "PF",
    "rssi": "RSSI",
    "snr": "SNR",
    "ac": "AC",
    "dc": "DC",
    "id": "ID",
}


@dataclass(frozen=True)
class Config:
    """One retained discovery message: its topic and JSON payload ("" removes the entity)."""

    topic: str
    payload: str


def slug(name: str) -> str:
    """A prefix or a field's name in a topic level and an id: [A-Za-z0-9_-], as Home
    Assistant's discovery topics take; a hash of the name where it had to change."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "_", name)
    if clean == name:
        return clean
    return f"{clean}_{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def node(prefix: str, device: int) -> str:
    """A device's discovery node id, device identifier and unique_id stem."""
    return f"precast_{device}" if prefix == DEFAULT_PREFIX else f"precast-{slug(prefix)}-{device}"


def device_of(prefix: str, node_id: str) -> int | None:
    """The device whose node `node_id` is, under this prefix; None for another's."""
    stem = node(prefix, 0)[:-1]
    rest = node_id[len(stem) :] if node_id.startswith(stem) else ""
    return int(rest) if rest.isdigit() else None


def object_id(config: Config) -> str:
    """The entity's part of a config's topic: a field's name, or a diagnostic's."""
    return config.topic.rsplit("/", 2)[-2]


def collector_node(prefix: str) -> str:
    """The collector's device identifier."""
    return "precast_collector" if prefix == DEFAULT_PREFIX else f"precast-{slug(prefix)}-collector"


def readable_name(field: str) -> str:
    """A field's name as a person writes it: power_factor -> Power factor, co2 -> CO2."""
    words = [w for w in field.split("_") if w]
    if not words:
        return field
    out = [SPELLING.get(w.lower(), w) for w in words]
    if words[0].lower() not in SPELLING:
        out[0] = out[0][:1].upper() + out[0][1:]
    return " ".join(out)


def _site(prefix: str) -> str:
    return "" if prefix == DEFAULT_PREFIX else f" ({prefix})"


def _device(prefix: str, device: int, layout: Layout) -> dict[str, Any]:
    t = layout.template
    return {
        "identifiers": [node(prefix, device)],
        "name": f"{t.name} {device}{_site(prefix)}",
        "model": t.name,
        "manufacturer": "precast",
        "sw_version": __version__,
        "via_device": collector_node(prefix),
    }


def _availability(prefix: str, device: int | None) -> dict[str, Any]:
    topics = [{"topic": f"{prefix}/status"}]
    if device is not None:
        topics.append({"topic": f"{prefix}/{device}/availability"})
    return {
        "availability": topics,
        "availability_mode": "all",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }


ORIGIN = {"name": "precast", "sw_version": __version__}


def field_classes(slot: FieldSlot) -> dict[str, Any]:
    """unit_of_measurement, device_class, state_class, suggested_display_precision of a field."""
    f = slot.field
    c = f.classes
    out: dict[str, Any] = {}
    if c.unit:
        out["unit_of_measurement"] = c.unit
    if c.device_class:
        out["device_class"] = c.device_class
    out["state_class"] = c.state_class
    # The template's precision, else the scale's decimals (0.01 -> 2); a float field says
    # nothing by its scale of 1.
    if f.precision is not None:
        out["suggested_display_precision"] = f.precision
    elif f.type != "f32" or slot.digits:
        out["suggested_display_precision"] = slot.digits
    return out


def is_diagnostic(field: Field) -> bool:
    """A battery's charge or voltage, a radio's signal: about the device, not what it measures."""
    dc = field.classes.device_class
    return dc in ("battery", "signal_strength") or (
        dc == "voltage" and "batt" in field.name.lower()
    )


def discovery_config(prefix: str, device: int, layout: Layout, slot: FieldSlot) -> dict[str, Any]:
    """Home Assistant's MQTT discovery payload for one field of one device."""
    category = {"entity_category": "diagnostic"} if is_diagnostic(slot.field) else {}
    return {
        "name": slot.field.label or readable_name(slot.name),
        "unique_id": f"{node(prefix, device)}_{slug(slot.name)}",
        "state_topic": f"{prefix}/{device}/reading",
        # get(), not an attribute nor a subscript: Jinja2 falls back from either to the
        # dict's method (a field named `items`, `keys`). A reading without the field (an
        # entity whose config is being removed, after a template change) gives "", which
        # Home Assistant's MQTT sensor ignores, with no warning of an undefined value.
        "value_template": f"{{{{ value_json.fields.get('{slot.name}', '') }}}}",
        **_availability(prefix, device),
        **field_classes(slot),
        **category,
        "device": _device(prefix, device, layout),
        "origin": ORIGIN,
    }


def diagnostic_configs(prefix: str, device: int, layout: Layout) -> dict[str, dict[str, Any]]:
    """The device's diagnostic entities by object id: loss % and when it was last heard.

    Available while the collector is up, stale or not: a stale device is when they matter.
    """
    base = node(prefix, device)
    common = {
        **_availability(prefix, None),
        "entity_category": "diagnostic",
        "device": _device(prefix, device, layout),
        "origin": ORIGIN,
    }
    return {
        LOSS: {
            "name": "Loss",
            "unique_id": f"{base}_{LOSS}",
            "state_topic": f"{prefix}/{device}/diagnostics",
            "value_template": "{{ value_json.loss_pct }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "suggested_display_precision": 2,
            "icon": "mdi:lan-disconnect",
            **common,
        },
        LAST_SEEN: {
            "name": "Last seen",
            "unique_id": f"{base}_{LAST_SEEN}",
            "state_topic": f"{prefix}/{device}/reading",
            "value_template": "{{ value_json.received_at }}",
            "device_class": "timestamp",
            **common,
        },
    }


def _topic(discovery: str, component: str, node_id: str, object_id: str) -> str:
    return f"{discovery}/{component}/{node_id}/{object_id}/config"


def parse_topic(discovery: str, prefix: str, topic: str) -> tuple[int, str] | None:
    """(device, object id) of a device config's topic under these prefixes; None otherwise."""
    head, tail = f"{discovery}/sensor/", "/config"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    parts = topic[len(head) : -len(tail)].split("/")
    if len(parts) != 2:
        return None
    dev = device_of(prefix, parts[0])
    return None if dev is None else (dev, parts[1])


def _dump(cfg: dict[str, Any]) -> str:
    return json.dumps(cfg, ensure_ascii=False)


def device_configs(discovery: str, prefix: str, device: int, layout: Layout) -> list[Config]:
    """Every retained config of one device: its fields, then its diagnostics."""
    n = node(prefix, device)
    out = [
        Config(
            _topic(discovery, "sensor", n, slug(s.name)),
            _dump(discovery_config(prefix, device, layout, s)),
        )
        for s in layout.fields
    ]
    for object_id, cfg in diagnostic_configs(prefix, device, layout).items():
        out.append(Config(_topic(discovery, "sensor", n, object_id), _dump(cfg)))
    return out


class Published:
    """The device configs this collector has published and not cleared, and what changed.

    The record a later run needs: when a device is announced with a template that lacks
    some of what it had, those configs are cleared (an empty retained config), whatever the
    broker still holds. It starts from the store's record (the topics), and its changes
    since take() are what the collector writes back there (store: discovery_configs).
    """

    def __init__(self, discovery: str, prefix: str, topics: Iterable[str] = ()) -> None:
        self.discovery = discovery
        self.prefix = prefix
        self.by_device: dict[int, set[str]] = {}
        for t in topics:
            got = parse_topic(discovery, prefix, t)
            if got is not None:
                self.by_device.setdefault(got[0], set()).add(got[1])
        self.changes: deque[tuple[str, bool]] = deque()  # (topic, published); thread-safe

    def announce(self, device: int, layout: Layout) -> list[Config]:
        """The device's configs, after empty ones for the configs it had and no longer has."""
        configs = device_configs(self.discovery, self.prefix, device, layout)
        had = self.by_device.get(device, set())
        ids = {object_id(c) for c in configs}
        n = node(self.prefix, device)
        gone = [Config(_topic(self.discovery, "sensor", n, o), "") for o in sorted(had - ids)]
        self.changes.extend((c.topic, False) for c in gone)
        self.changes.extend((c.topic, True) for c in configs if object_id(c) not in had)
        self.by_device[device] = ids
        return gone + configs

    def take(self) -> dict[str, bool]:
        """The changes since the last take(): topic -> published (True) or cleared (False)."""
        out: dict[str, bool] = {}
        changes = self.changes
        while changes:
            topic, published = changes.popleft()
            out[topic] = published
        return out


def collector_configs(discovery: str, prefix: str) -> list[Config]:
    """The collector as a device: one diagnostic entity, connected or not (its will says)."""
    cn = collector_node(prefix)
    cfg = {
        "name": "Status",
        "unique_id": f"{cn}_status",
        "state_topic": f"{prefix}/status",
        "payload_on": ONLINE,
        "payload_off": OFFLINE,
        "device_class": "connectivity",
        "entity_category": "diagnostic",
        "device": {
            "identifiers": [cn],
            "name": f"precast collector{_site(prefix)}",
            "model": "precast collect",
            "manufacturer": "precast",
            "sw_version": __version__,
        },
        "origin": ORIGIN,
    }
    return [Config(_topic(discovery, "binary_sensor", cn, "status"), _dump(cfg))]


def diagnostics_doc(received: int, lost: int) -> dict[str, Any]:
    """PREFIX/<device>/diagnostics: the device's counts, as `precast stats` gives them."""
    return {"received": received, "lost": lost, "loss_pct": loss_pct(received, lost)}
