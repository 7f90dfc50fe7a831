"""Home Assistant's sensor rules, with no Home Assistant: the table and what discovery sends.

`make ha` runs a real Home Assistant against these configs (tools/ha/); here the
shipped and the edge templates' discovery configs are held to the rules table
(wire/sensor_classes.py, from Home Assistant 2024.3.3's sensor constants), the
value templates are rendered by Jinja2 (Home Assistant's template engine), and
ids are checked across collector prefixes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import jinja2
import pytest
from kit import ROOT, TEMPLATES
from precast.collect.sinks import discovery as d
from precast.wire.layout import Layout, load_layouts
from precast.wire.sensor_classes import (
    DEVICE_CLASSES,
    NON_NUMERIC,
    STATE_CLASSES,
    UNITS,
    Classes,
    Refusal,
    resolve,
)

EDGE = ROOT / "tools" / "ha" / "templates"
LAYOUTS = load_layouts([TEMPLATES, EDGE])
# Home Assistant 2024.3.3's discovery topic after its prefix (components/mqtt/discovery.py,
# TOPIC_MATCHER, used with match()): a config on a topic it does not match is logged as an
# "illegal discovery topic" and makes no entity.
HA_TOPIC = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)


def configs(prefix: str = "precast") -> list[tuple[Layout, dict[str, Any]]]:
    out = []
    for lay in LAYOUTS:
        for c in d.device_configs("homeassistant", prefix, 7, lay):
            out.append((lay, json.loads(c.payload)))
    return out


def test_every_config_keeps_home_assistants_rules() -> None:
    """Unit, device class and state class of every field agree as the table says."""
    seen_classes = set()
    for _, cfg in configs():
        dc, unit, sc = (
            cfg.get("device_class"),
            cfg.get("unit_of_measurement"),
            cfg.get("state_class"),
        )
        if dc == "timestamp":  # the diagnostic `Last seen`: a text state, no unit, no class
            assert unit is None and sc is None, cfg
            continue
        assert sc in STATE_CLASSES, cfg
        if dc is None:
            continue
        seen_classes.add(dc)
        rule = DEVICE_CLASSES[dc]
        assert rule.units is None or (unit or "") in rule.units, cfg
        assert sc in rule.state_classes, cfg
    # The edge templates reach the classes whose defaults differ.
    assert {"water", "gas", "energy", "monetary", "weight", "power_factor"} <= seen_classes


def test_state_class_defaults_follow_the_device_class() -> None:
    assert resolve("m3", "water", "") == Classes("m³", "water", "total_increasing")
    assert resolve("m3", "gas", "") == Classes("m³", "gas", "total_increasing")
    assert resolve("L", "volume", "") == Classes("L", "volume", "total_increasing")
    assert resolve("EUR", "monetary", "") == Classes("EUR", "monetary", "total")
    assert resolve("kg", "weight", "") == Classes("kg", "weight", "measurement")
    assert resolve("Wh", "", "") == Classes("Wh", "energy", "total_increasing")
    assert resolve("Wh", "", "total") == Classes("Wh", "energy", "total")
    assert resolve("furlong", "", "") == Classes("furlong", "", "measurement")
    assert resolve("", "", "total_increasing") == Classes("", "", "total_increasing")
    for name, rule in DEVICE_CLASSES.items():
        assert rule.default_state_class in rule.state_classes, name


@pytest.mark.parametrize(
    ("unit", "dc", "sc", "key"),
    [
        ("mV", "battery", "", "unit"),  # 2024.3 warns, 2025.7 refuses the entity
        ("", "temperature", "", "unit"),
        ("pH", "ph", "", "unit"),
        ("kWh", "", "measurement", "state_class"),  # the Energy dashboard's missing last_reset
        ("m3", "water", "measurement", "state_class"),
        ("EUR", "monetary", "total_increasing", "state_class"),
        ("", "timestamp", "", "device_class"),
        ("", "date", "", "device_class"),
        ("", "enum", "", "device_class"),
        ("m²", "area", "", "device_class"),  # 2024.10's, not 2024.3's
        ("", "", "sometimes", "state_class"),
    ],
)
def test_what_home_assistant_refuses_is_refused(unit: str, dc: str, sc: str, key: str) -> None:
    got = resolve(unit, dc, sc)
    assert isinstance(got, Refusal) and got.key == key, got


def test_the_table_is_2024_3s() -> None:
    """Its shape: the classes 2024.3 has and no other; every unit map lands on a legal unit."""
    assert len(DEVICE_CLASSES) == 48 and NON_NUMERIC == {"date", "enum", "timestamp"}
    for gone in ("area", "blood_glucose_concentration", "conductivity", "energy_distance"):
        assert gone not in DEVICE_CLASSES
    for unit, (ha_unit, dc) in UNITS.items():
        if dc:
            rule = DEVICE_CLASSES[dc]
            assert rule.units is not None and ha_unit in rule.units, unit


@pytest.mark.parametrize("name", ["items", "keys", "values", "get", "copy", "pop", "update"])
def test_value_templates_read_fields_named_like_dict_methods(name: str) -> None:
    """Jinja2, Home Assistant's engine, renders each value template against a reading."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    reading = {"fields": {name: 42}, "received_at": "2026-01-01T00:00:00.000000Z"}
    old = env.from_string("{{ value_json.fields." + name + " }}").render(value_json=reading)
    assert old != "42"  # the attribute form finds the dict's method: the bug it fixes
    dict_words = next(lay for lay in LAYOUTS if lay.template.name == "dict-words")
    cfg = d.discovery_config(
        "precast", 7, dict_words, next(s for s in dict_words.fields if s.name == name)
    )
    assert env.from_string(cfg["value_template"]).render(value_json=reading) == "42"


def test_every_value_template_renders_its_field() -> None:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for lay, cfg in configs():
        reading = {"fields": {s.name: i + 1 for i, s in enumerate(lay.fields)}}
        reading["received_at"] = "2026-01-01T00:00:00.000000Z"
        diag = {"loss_pct": 1.5}
        doc = diag if cfg["state_topic"].endswith("/diagnostics") else reading
        out = env.from_string(cfg["value_template"]).render(value_json=doc)
        assert out not in ("", "None"), cfg


def test_a_reading_without_the_field_is_ignored_and_not_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An entity whose config is being removed (a template changed) still gets the next
    reading. Home Assistant renders with an Undefined that logs a warning when it is made a
    string (helpers/template.py, as jinja2's logging Undefined), and a missing `items` is
    the dict's method even subscripted; "" is a state its MQTT sensor ignores."""
    env = jinja2.Environment(undefined=jinja2.make_logging_undefined(logging.getLogger("ha")))
    reading = {"fields": {}, "received_at": "2026-01-01T00:00:00.000000Z"}
    fields = [cfg for _, cfg in configs() if "value_json.fields" in cfg["value_template"]]
    assert fields
    for cfg in fields:
        assert env.from_string(cfg["value_template"]).render(value_json=reading) == "", cfg
    assert not caplog.records, caplog.records[0].getMessage()


def test_every_config_topic_is_one_home_assistant_takes() -> None:
    """Field names are identifiers, and an identifier may be `température`: the topic's
    object id is spelled in Home Assistant's characters, the value template reads the name."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    names = set()
    for prefix in ("precast", "site2", "a/b"):
        for lay in LAYOUTS:
            cs = d.device_configs("homeassistant", prefix, 7, lay)
            ids = [d.object_id(c) for c in cs]
            assert len(set(ids)) == len(ids), ids
            for c, slot in zip(cs, lay.fields, strict=False):
                m = HA_TOPIC.match(c.topic.removeprefix("homeassistant/"))
                assert m is not None, c.topic
                assert m.group("node_id", "object_id") == (d.node(prefix, 7), d.object_id(c))
                cfg = json.loads(c.payload)
                assert cfg["unique_id"] == f"{d.node(prefix, 7)}_{d.object_id(c)}"
                reading = {"fields": {slot.name: 12.5}}
                assert env.from_string(cfg["value_template"]).render(value_json=reading) == "12.5"
                names.add(slot.name)
    assert {"température", "Δp"} <= names  # the edge template accents.toml
    assert d.slug("temperature") == "temperature"  # ASCII names keep their ids


def test_ids_carry_the_collector_prefix() -> None:
    """The default prefix keeps the old ids; another prefix never shares one with it."""
    assert (
        d.node("precast", 7) == "precast_7" and d.collector_node("precast") == "precast_collector"
    )
    assert d.node("site2", 7) == "precast-site2-7"
    assert d.node("a/b", 7) != d.node("a_b", 7)
    assert d.node("a/b", 7).startswith("precast-a_b_")
    ids: dict[str, str] = {}
    for prefix in ("precast", "site2", "a/b", "a_b", "7"):
        for _, cfg in configs(prefix):
            uid = cfg["unique_id"]
            assert ids.setdefault(uid, prefix) == prefix, (uid, prefix, ids[uid])
            assert cfg["device"]["identifiers"] == [d.node(prefix, 7)]
            assert cfg["device"]["via_device"] == d.collector_node(prefix)
    site2 = configs("site2")[0][1]
    assert site2["device"]["name"] == "env-node 7 (site2)"
    (status,) = d.collector_configs("homeassistant", "site2")
    assert status.topic == "homeassistant/binary_sensor/precast-site2-collector/status/config"
    assert json.loads(status.payload)["state_topic"] == "site2/status"


def test_names_labels_precision_and_diagnostics() -> None:
    by = {(lay.template.name, cfg["unique_id"].split("_", 2)[-1]): cfg for lay, cfg in configs()}
    cfg = {
        (lay.template.name, s.name): d.discovery_config("precast", 7, lay, s)
        for lay in LAYOUTS
        for s in lay.fields
    }
    assert d.readable_name("co2") == "CO2" and d.readable_name("pf") == "PF"
    assert d.readable_name("pm25") == "PM2.5" and d.readable_name("power_factor") == "Power factor"
    assert d.readable_name("co2_level") == "CO2 level" and d.readable_name("ph") == "pH"
    assert cfg[("air", "co2")]["name"] == "CO2"
    assert cfg[("air", "temp")]["name"] == "Inside temperature"
    assert cfg[("air", "temp")]["suggested_display_precision"] == 1  # not the scale's 2
    assert cfg[("power-meter", "power_factor")]["suggested_display_precision"] == 2
    assert cfg[("meters", "pf")]["suggested_display_precision"] == 2
    diagnostic = {k for k, c in cfg.items() if c.get("entity_category") == "diagnostic"}
    assert diagnostic == {
        ("env-node", "battery"),
        ("air", "battery"),
        ("battery-node", "battery_voltage"),
        ("battery-node", "rssi"),
    }
    loss = by[("env-node", "diagnostic-loss")]
    assert loss["entity_category"] == "diagnostic" and loss["unit_of_measurement"] == "%"
    assert loss["availability"] == [{"topic": "precast/status"}]  # shown while stale too
    seen = by[("env-node", "diagnostic-last_seen")]
    assert seen["device_class"] == "timestamp" and seen["state_topic"] == "precast/7/reading"


def test_edge_templates_refused_by_the_cli(tmp_path: Path) -> None:
    """A template HA would warn about is refused at load by every command, one line, exit 2."""
    from kit import precast

    bad = tmp_path / "bad.toml"
    bad.write_text(
        'id = 5\n[[field]]\nname = "cell"\ntype = "u16"\nunit = "mV"\ndevice_class = "battery"\n'
    )
    r = precast("collect", "--templates", str(bad), "--db", str(tmp_path / "x.db"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "field[0].unit: 'mV' is not a unit of device class 'battery'" in r.stderr
