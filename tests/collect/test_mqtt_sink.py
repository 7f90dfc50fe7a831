"""The MQTT publisher against a real Mosquitto broker, judged by mosquitto_sub.

These drive precast.collect.sinks.mqtt.MqttSink directly, as the collector's
storing thread does (write() after each batch, tick() with the tracker's
devices); test_mqtt_collector.py runs the whole `precast collect`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from collector_harness import LAYOUTS
from mqtt_kit import (
    EXPECTED,
    Certs,
    Mosquitto,
    Subscriber,
    free_port,
    make_certs,
    needs_mosquitto,
    publish,
    retained,
    wait_for,
)
from precast import __version__
from precast.collect.sinks.discovery import LAST_SEEN, LOSS, discovery_config
from precast.collect.sinks.mqtt import (
    MqttError,
    MqttOptions,
    MqttSink,
    parse_url,
)
from precast.collect.tracker import Tracker
from precast.errors import UsageError

pytestmark = needs_mosquitto

BY_ID = {lay.id: lay for lay in LAYOUTS.values()}
DIAGNOSTICS = (LOSS, LAST_SEEN)
ENV = LAYOUTS["env-node"]


def reading(device: int, seq: int, t: float = 0.0, template: int = 1) -> dict[str, Any]:
    """A --jsonl object as the collector makes it."""
    fields = {
        1: {
            "temperature": 21.5 + seq / 100,
            "humidity": 40.25,
            "pressure": 101325,
            "battery": 3300,
        },
        2: {"value": seq},
    }[template]
    return {
        "template": template,
        "device": device,
        "seq": seq,
        "received_at": f"2026-01-01T00:00:{seq % 60:02d}.{int(t * 1e6) % 1000000:06d}Z",
        "fields": fields,
    }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path)
    yield b
    b.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def sink(url: str, **opts: Any) -> MqttSink:
    return MqttSink(url, BY_ID, MqttOptions(**opts))


# ---- without a broker ----------------------------------------------------------------------


def test_url_defaults_and_errors() -> None:
    u = parse_url("mqtt://broker")
    assert (u.tls, u.host, u.port, u.user, u.password, u.prefix) == (
        False,
        "broker",
        1883,
        None,
        None,
        "precast",
    )
    u = parse_url("mqtts://ann:p%40ss@10.0.0.5/site/a")
    assert (u.tls, u.port, u.user, u.password, u.prefix) == (True, 8883, "ann", "p@ss", "site/a")
    assert parse_url("mqtt://[::1]:1999/").port == 1999
    for bad in ("http://x", "mqtt://", "mqtt://x:99999", "mqtt://x/a/+", "mqtt://x/a//b"):
        with pytest.raises(UsageError):
            parse_url(bad)
    with pytest.raises(UsageError, match="needs an mqtts:// URL"):
        sink("mqtt://127.0.0.1", ca="/etc/hostname")
    with pytest.raises(UsageError, match="--mqtt-ca /nonexistent"):
        sink("mqtts://127.0.0.1", ca="/nonexistent")
    with pytest.raises(UsageError, match="names no user"):
        sink("mqtt://127.0.0.1", password_file="/etc/hostname")
    with pytest.raises(UsageError, match="0 or 1"):
        sink("mqtt://127.0.0.1", qos=2)


def test_discovery_config_of_every_shipped_field() -> None:
    seen = set()
    for name, layout in LAYOUTS.items():
        for slot in layout.fields:
            cfg = discovery_config("precast", 42, layout, slot)
            label, unit, dclass, sclass, digits = EXPECTED[(name, slot.name)]
            seen.add((name, slot.name))
            assert cfg["name"] == label
            assert cfg["unique_id"] == f"precast_42_{slot.name}"
            assert cfg["state_topic"] == "precast/42/reading"
            assert cfg["value_template"] == "{{ value_json.fields.get('" + slot.name + "', '') }}"
            assert cfg["availability"] == [
                {"topic": "precast/status"},
                {"topic": "precast/42/availability"},
            ]
            assert cfg["availability_mode"] == "all"
            assert cfg.get("unit_of_measurement") == unit
            assert cfg.get("device_class") == dclass
            assert cfg["state_class"] == sclass
            assert cfg.get("suggested_display_precision") == digits
            assert cfg["device"] == {
                "identifiers": ["precast_42"],
                "name": f"{name} 42",
                "model": name,
                "manufacturer": "precast",
                "sw_version": __version__,
                "via_device": "precast_collector",
            }
    assert seen == set(EXPECTED)


def test_template_classes_override_the_unit(tmp_path: Path) -> None:
    from precast import compile_template, load_template

    p = tmp_path / "t.toml"
    p.write_text(
        'id = 5\n[[field]]\nname = "charge"\ntype = "u8"\nunit = "%"\n'
        'device_class = "battery"\n[[field]]\nname = "pulses"\ntype = "u32"\n'
        'state_class = "total_increasing"\n'
    )
    layout = compile_template(load_template(p))
    charge, pulses = (discovery_config("p", 1, layout, s) for s in layout.fields)
    assert (charge["device_class"], charge["unit_of_measurement"]) == ("battery", "%")
    assert pulses["state_class"] == "total_increasing" and "device_class" not in pulses


def test_unreachable_broker_is_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = sink(f"mqtt://127.0.0.1:{free_port()}", buffer=3)
    with caplog.at_level(logging.WARNING, "precast.mqtt"):
        s.start(timeout=5)
        s.write([reading(1, i) for i in range(5)])
        time.sleep(0.3)
        assert s.stats()["dropped"] == 2 and s.stats()["buffered"] == 3
        s.close(timeout=0.5)
    # What was still buffered when it stopped was never published: dropped too.
    assert s.stats()["dropped"] == 5 and s.stats()["published"] == 0
    assert not s.stats()["connected"]
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("Connection refused" in w for w in warnings) == 1, warnings
    assert sum("buffer of 3 readings is full" in w for w in warnings) == 1, warnings


# ---- against the broker ---------------------------------------------------------------------


def test_readings_status_availability_and_discovery(broker: Mosquitto) -> None:
    sub = Subscriber(broker)
    s = sink(broker.url_base + "/site", discovery="homeassistant")
    s.start()
    rows = [reading(7, i) for i in range(1, 21)] + [reading(9, 1, template=2)]
    s.write(rows[:10])
    s.write(rows[10:])
    msgs = sub.wait(lambda m: sum(x["topic"].endswith("/reading") for x in m) >= 21)
    got = [json.loads(m["payload"]) for m in msgs if m["topic"].endswith("/reading")]
    assert got == rows  # one message per reading, in order, the --jsonl object
    topics = [m["topic"] for m in msgs if m["topic"].endswith("/reading")]
    assert topics == ["site/7/reading"] * 20 + ["site/9/reading"]
    payloads = [m["payload"] for m in msgs if m["topic"].endswith("/reading")]
    assert payloads[0] == json.dumps(rows[0])
    # Discovery and availability came before the device's first reading.
    order = [m["topic"] for m in msgs]
    first = order.index("site/7/reading")
    assert order.index("homeassistant/sensor/precast-site-7/temperature/config") < first
    assert order.index("site/7/availability") < first

    ret = retained(broker, "#")
    assert ret["site/status"] == "online"
    assert ret["site/7/availability"] == "online" and ret["site/9/availability"] == "online"
    configs = {t: json.loads(p) for t, p in ret.items() if t.startswith("homeassistant/")}
    diags = DIAGNOSTICS
    assert set(configs) == {
        *(f"homeassistant/sensor/precast-site-7/{slot.name}/config" for slot in ENV.fields),
        "homeassistant/sensor/precast-site-9/value/config",
        *(f"homeassistant/sensor/precast-site-{d}/{o}/config" for d in (7, 9) for o in diags),
        "homeassistant/binary_sensor/precast-site-collector/status/config",
    }
    t = configs["homeassistant/sensor/precast-site-7/temperature/config"]
    assert t == discovery_config("site", 7, ENV, ENV.fields[0])
    assert t["state_topic"] == "site/7/reading" and t["unit_of_measurement"] == "°C"

    # Home Assistant restarting announces itself: every config is published again.
    before = len([m for m in sub.messages() if m["topic"].endswith("/config")])
    assert before == 5 + 2 * 2 + 1
    publish(broker, "homeassistant/status", "online")
    sub.wait(
        lambda m: len([x for x in m if x["topic"].endswith("/config")]) == 20,
        what="discovery again",
    )
    assert s.stats()["published"] == 21 and s.stats()["dropped"] == 0
    s.close()
    assert retained(broker, "site/status") == {"site/status": "offline"}  # a clean stop
    sub.close()


def test_availability_follows_stale(broker: Mosquitto) -> None:
    """Offline when stale as `precast stats` says (silent > 3 intervals), online again."""
    tracker = Tracker(1024)
    s = MqttSink(broker.url_base, BY_ID, MqttOptions(), devices=tracker.devices.values)
    s.start()
    t0 = 1_000_000.0
    for seq in range(5):  # one reading a second
        tracker.observe(3, 2, seq, t0 + seq, False)
        s.write([reading(3, seq, template=2)])
    s.tick(t0 + 4 + 2.9)  # silent 2.9 s: 3 intervals not yet over
    time.sleep(0.3)
    assert retained(broker, "precast/3/availability") == {"precast/3/availability": "online"}
    s.tick(t0 + 4 + 3.1)

    def wait_avail(v: str) -> bool:
        return retained(broker, "precast/3/availability").get("precast/3/availability") == v

    wait_for(lambda: wait_avail("offline"), 5, "offline")
    tracker.observe(3, 2, 5, t0 + 8, False)
    s.write([reading(3, 5, template=2)])
    wait_for(lambda: wait_avail("online"), 5, "online again")
    s.close()


def test_broker_outage_counts_drops_and_republishes(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    s = sink(broker.url_base, discovery="homeassistant", buffer=50)
    with caplog.at_level(logging.INFO, "precast.mqtt"):
        s.start()
        s.write([reading(7, i) for i in range(10)])
        wait_for(lambda: s.stats()["published"] == 10, 5, "published")
        broker.stop()
        wait_for(lambda: not s.stats()["connected"], 5, "the publisher to see the outage")
        for i in range(10, 210, 20):  # 200 readings while the broker is away: 50 fit
            s.write([reading(7, j) for j in range(i, i + 20)])
        assert s.stats()["dropped"] == 150 and s.stats()["buffered"] == 50
        broker.start()  # an empty broker: it lost every retained message
        sub = Subscriber(broker)
        wait_for(lambda: s.stats()["published"] == 60, 15, "publishing to resume")
        ret = retained(broker, "#")
        assert ret["precast/status"] == "online"
        assert ret["precast/7/availability"] == "online"
        assert len([t for t in ret if t.startswith("homeassistant/sensor/precast_7/")]) == 4 + 2
        msgs = sub.wait(lambda m: sum(x["topic"] == "precast/7/reading" for x in m) >= 50)
        seqs = [json.loads(m["payload"])["seq"] for m in msgs if m["topic"] == "precast/7/reading"]
        assert seqs == list(range(10, 60))  # what fitted, in order
        s.close()
        sub.close()
    text = [r.getMessage() for r in caplog.records]
    assert sum("buffer of 50 readings is full" in t for t in text) == 1, text
    assert sum("connection lost" in t for t in text) == 1, text
    assert any("150 readings were not published" in t for t in text), text
    assert any("connected again" in t for t in text), text


def test_password_file_and_wrong_password(tmp_path: Path) -> None:
    b = Mosquitto(tmp_path, users={"ann": "s3cret"})
    try:
        pw = tmp_path / "pw"
        pw.write_text("s3cret\n")
        s = sink(f"mqtt://ann@127.0.0.1:{b.port}", password_file=str(pw))
        s.start()
        assert s.stats()["connected"]
        s.close()
        assert retained(b, "precast/status") == {"precast/status": "offline"}
        bad = sink(f"mqtt://ann:wrong@127.0.0.1:{b.port}")
        with pytest.raises(MqttError) as ei:
            bad.start()
        msg = str(ei.value)
        assert "\n" not in msg and "wrong" not in msg  # one line, and no password in it
        assert f"mqtt://127.0.0.1:{b.port}" in msg
        assert "refused" in msg and ("password" in msg or "authorized" in msg.lower()), msg
        anonymous = sink(f"mqtt://127.0.0.1:{b.port}")
        with pytest.raises(MqttError, match="refused"):
            anonymous.start()
    finally:
        b.close()


def test_tls_with_ca_and_client_certificate(tmp_path: Path, certs: Certs) -> None:
    b = Mosquitto(tmp_path, certs=certs, require_client_cert=True)
    try:
        sub = Subscriber(b)
        s = sink(
            f"mqtts://127.0.0.1:{b.port}/tls",
            ca=str(certs.ca),
            cert=str(certs.client_cert),
            key=str(certs.client_key),
        )
        s.start()
        s.write([reading(1, 1)])
        msgs = sub.wait(lambda m: any(x["topic"] == "tls/1/reading" for x in m))
        assert [json.loads(m["payload"]) for m in msgs if m["topic"] == "tls/1/reading"] == [
            reading(1, 1)
        ]
        s.close()
        sub.close()
        # A CA that did not sign the broker's certificate: one line at start.
        other = sink(f"mqtts://127.0.0.1:{b.port}", ca=str(certs.other_ca))
        with pytest.raises(MqttError, match=r"certificate verify failed|TLS") as ei:
            other.start()
        assert "\n" not in str(ei.value)
    finally:
        b.close()


def test_readme_shows_the_payload_and_units_the_code_makes() -> None:
    """README's discovery example and unit table are what discovery_config and UNITS say."""
    import re

    from kit import ROOT
    from precast.wire.sensor_classes import UNITS

    text = (ROOT / "docs" / "home-assistant.md").read_text()
    section = text.split("\n## ", 1)[0]
    m = re.search(r"```json\n(.*?)```", section, re.S)
    assert m, "no JSON example in README's MQTT section"
    shown = json.loads(m.group(1))
    assert shown == discovery_config("precast", 7, ENV, ENV.fields[0])
    for unit, (ha_unit, dclass) in UNITS.items():
        row = next((r for r in section.splitlines() if f"`{unit}`" in r and r.startswith("|")), "")
        assert dclass in row, (unit, row)
        assert ha_unit in row or "same" in row, (unit, row)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--mqtt-qos", "1"], "--mqtt-qos needs --mqtt URL"),
        (["--ha-discovery"], "--ha-discovery needs --mqtt URL"),
        (["--mqtt-password-file", "pw"], "--mqtt-password-file needs --mqtt URL"),
        (["--mqtt", "mqtt://h", "--ha-discovery", "a/#"], "bad topic prefix 'a/#'"),
    ],
)
def test_flags_without_mqtt_or_bad_are_usage_errors(argv: list[str], error: str) -> None:
    import argparse

    from precast.collect.sinks.mqtt import add_arguments, config_from

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(argv)
    with pytest.raises(UsageError, match=re.escape(error)):
        cfg = config_from(args)
        assert cfg is not None
        MqttSink(cfg[0], BY_ID, cfg[1])


def test_flag_defaults() -> None:
    import argparse

    from precast.collect.sinks.mqtt import DEFAULT_BUFFER, add_arguments, config_from

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert config_from(p.parse_args([])) is None
    cfg = config_from(p.parse_args(["--mqtt", "mqtt://h", "--ha-discovery"]))
    assert cfg is not None
    url, opts = cfg
    assert (url.port, url.prefix, opts.qos, opts.buffer) == (1883, "precast", 0, DEFAULT_BUFFER)
    assert opts.discovery == "homeassistant"
    cfg = config_from(p.parse_args(["--mqtt", "mqtt://h", "--ha-discovery", "ha"]))
    assert cfg is not None and cfg[1].discovery == "ha"


def test_a_device_that_changes_template_loses_the_old_fields(broker: Mosquitto) -> None:
    s = sink(broker.url_base, discovery="homeassistant")
    s.start()
    s.write([reading(8, 1)])  # env-node: four fields
    diag = {f"homeassistant/sensor/precast_8/{o}/config" for o in DIAGNOSTICS}
    collector = {"homeassistant/binary_sensor/precast_collector/status/config"}
    wait_for(lambda: len(retained(broker, "homeassistant/#")) == 4 + 2 + 1, 5, "four configs")
    s.write([reading(8, 2, template=2)])  # now minimal: one field, `value`
    wait_for(
        lambda: (
            set(retained(broker, "homeassistant/#"))
            == {"homeassistant/sensor/precast_8/value/config", *diag, *collector}
        ),
        5,
        "the old configs removed (empty retained), the new one there",
    )
    topic = "homeassistant/sensor/precast_8/value/config"
    cfg = json.loads(retained(broker, "homeassistant/#")[topic])
    assert cfg["device"]["model"] == "minimal"
    s.close()


def test_a_template_changed_by_a_reload_is_announced_again(broker: Mosquitto) -> None:
    """SIGHUP: env-node loses `battery` and is renamed; its devices' configs follow at once."""
    import dataclasses

    from precast.wire.layout import compile_template

    s = sink(broker.url_base, discovery="homeassistant")
    s.start()
    s.write([reading(8, 1), reading(9, 1, template=2)])
    wait_for(lambda: len(retained(broker, "homeassistant/#")) == 4 + 1 + 2 * 2 + 1, 5, "configs")
    sub = Subscriber(broker, "homeassistant/#")
    t = ENV.template
    v2 = compile_template(dataclasses.replace(t, name="env-node-v2", fields=t.fields[:3]))
    s.set_layouts({**BY_ID, ENV.id: v2})
    battery = "homeassistant/sensor/precast_8/battery/config"
    temperature = "homeassistant/sensor/precast_8/temperature/config"
    msgs = sub.wait(
        lambda m: {battery, temperature} <= {x["topic"] for x in m if not x["retain"]},
        what="device 8's configs again",
    )
    assert battery not in retained(broker, "homeassistant/#")
    assert json.loads(retained(broker, "homeassistant/#")[temperature])["device"]["model"] == (
        "env-node-v2"
    )
    # Device 9's template (minimal) did not change: nothing of it is published again.
    assert not [m["topic"] for m in msgs if "precast_9" in m["topic"] and not m["retain"]]
    assert s.take_configs()[battery] is False
    s.close()
    sub.close()


def test_a_stored_batch_is_published_from_its_rows(broker: Mosquitto) -> None:
    """The collector hands over a Stored batch: rows by template; the docs come out the same."""
    from precast.collect.sinks import Stored

    names = {1: [s.name for s in ENV.fields], 2: ["value"]}
    # the second reading delayed: taken 1.5 s before it arrived
    env_rows = [(7, seq, 0, f"2026-01-01T00:00:0{seq}.000000Z",
                 f"2026-01-01T00:00:0{seq}.000000Z" if seq != 2 else "2026-01-01T00:00:00.500000Z",
                 "ip", 21.5, 40.0, 1, 2) for seq in range(1, 4)]  # fmt: skip
    t9 = "2026-01-01T00:00:00.000000Z"
    batch = Stored({1: env_rows, 2: [(9, 1, 0, t9, t9, "ip", 5)]}, names)
    sub = Subscriber(broker)
    s = sink(broker.url_base, buffer=3)
    s.start()
    s.write(batch)  # four readings, room for three: the last (device 9's) is dropped
    assert s.stats()["dropped"] == 1
    msgs = sub.wait(lambda m: sum(x["topic"].endswith("/reading") for x in m) == 3)
    got = [json.loads(m["payload"]) for m in msgs if m["topic"].endswith("/reading")]
    assert got == list(batch)[:3]
    assert got[0] == {
        "template": 1,
        "device": 7,
        "seq": 1,
        "received_at": "2026-01-01T00:00:01.000000Z",
        "taken_at": "2026-01-01T00:00:01.000000Z",
        "fields": {"temperature": 21.5, "humidity": 40.0, "pressure": 1, "battery": 2},
    }
    assert got[1]["taken_at"] == "2026-01-01T00:00:00.500000Z"
    # Device 9 still counts as seen: its availability is published though its reading was not.
    wait_for(lambda: "precast/9/availability" in retained(broker, "precast/#"), 5, "dev 9")
    s.close()
    sub.close()


def test_orphans_are_cleared_across_a_restart(broker: Mosquitto) -> None:
    """A new run knows the old configs from the record (the store's), not from the broker."""
    first = sink(broker.url_base, discovery="homeassistant")
    first.start()
    first.write([reading(8, 1)])  # env-node: four fields
    wait_for(lambda: len(retained(broker, "homeassistant/#")) == 4 + 2 + 1, 5, "configs")
    first.close()
    record = first.take_configs()
    env = {f"homeassistant/sensor/precast_8/{slot.name}/config" for slot in ENV.fields}
    diag = {f"homeassistant/sensor/precast_8/{o}/config" for o in DIAGNOSTICS}
    assert record == dict.fromkeys(env | diag, True)
    broker.stop()  # no persistence: the broker forgets every retained config
    broker.start()
    sub = Subscriber(broker, "homeassistant/#")
    second = MqttSink(
        broker.url_base, BY_ID, MqttOptions(discovery="homeassistant"), published=record
    )
    second.start()
    second.write([reading(8, 2, template=2)])
    value = "homeassistant/sensor/precast_8/value/config"
    msgs = sub.wait(lambda m: any(x["topic"] == value for x in m), what="the new config")
    cleared = {m["topic"] for m in msgs if m["payloadlen"] == 0}
    assert cleared == env  # each old field's entity removed, before the new one came
    assert max(i for i, m in enumerate(msgs) if m["payloadlen"] == 0) < [
        m["topic"] for m in msgs
    ].index(value)
    assert second.take_configs() == {**dict.fromkeys(env, False), value: True}
    second.close()
    sub.close()


def test_stale_devices_are_offline_before_status_online(broker: Mosquitto) -> None:
    """A restart: devices of an earlier run gone stale are marked before `online` goes out."""
    tracker = Tracker(1024)
    now = time.time()
    for seq in range(5):  # device 3: one reading a second, silent for a minute now
        tracker.observe(3, 2, seq, now - 64 + seq, False)
    tracker.observe(4, 2, 1, now - 0.1, False)  # device 4: heard just now (not stale)
    sub = Subscriber(broker, "precast/#")
    s = MqttSink(broker.url_base, BY_ID, MqttOptions(), devices=tracker.devices.values)
    s.start()
    msgs = sub.wait(lambda m: any(x["topic"] == "precast/status" for x in m), what="online")
    s.close()
    order = [(m["topic"], m["payload"]) for m in sub.messages()]
    assert order.index(("precast/3/availability", "offline")) < order.index(
        ("precast/status", "online")
    )
    assert ("precast/4/availability", "offline") not in order
    assert [m["payload"] for m in msgs if m["topic"] == "precast/status"] == ["online"]
    sub.close()
