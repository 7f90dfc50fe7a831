"""`make ha`: a real Home Assistant judges precast's MQTT discovery.

Runs with Home Assistant's own venv (tools/ha/install.py installs it): starts a
Mosquitto broker, Home Assistant (headless, loopback, its MQTT config entry
written into .storage, onboarded through its API for a token) and `precast
collect --mqtt ... --ha-discovery`, all on free ports; sends readings of every
shipped template and the edge templates in tools/ha/templates; and asserts
through Home Assistant's REST and websocket APIs:

- the rules table (wire/sensor_classes.py) is this release's sensor constants;
- every field's entity: its entity id, unique_id, state, unit, device class,
  state class, display precision, category; the devices, their names and models,
  and the collector they are via; the diagnostics (loss, last seen);
- the Energy dashboard's validation of the meters (energy, gas, water);
- availability: a stale device, a clean stop of the collector, a SIGKILL (the
  will), a restart (stale devices stay unavailable);
- a template change across a collector restart (no orphan, the new model);
- a second collector on another prefix (its own entities, nobody's taken over);
- a Home Assistant restart: every sensor shows its last reading again;
- and that Home Assistant's log holds no warning or error at all, but two about how
  this test starts it (LOG_EXPECTED).

With Chromium installed (Debian's `chromium`), the frontend itself is shown too:
device 7's page and the MQTT devices list, logged in, written as PNGs
(tools/ha/screenshot.py; --screenshots DIR, default build/ha/screenshots).

Prints each step with its time; exits 1 on the first failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import screenshot
from homeassistant.util import slugify

ROOT = Path(__file__).resolve().parents[2]
PRECAST = ROOT / ".venv" / "bin" / "precast"
TEMPLATES = ROOT / "templates"
EDGE = Path(__file__).resolve().parent / "templates"
KEY = "000102030405060708090a0b0c0d0e0f"
T0 = time.monotonic()

# device -> (template file, readings in units; the last is what HA must show)
DEVICES: dict[int, tuple[Path, list[dict[str, float]]]] = {
    7: (TEMPLATES / "env-node.toml",
        [{"temperature": 21.37, "humidity": 40.25, "pressure": 101325, "battery": 3712}]),
    8: (TEMPLATES / "env-node.toml",
        [{"temperature": 19.5, "humidity": 55.5, "pressure": 99800, "battery": 3300}]),
    9: (TEMPLATES / "minimal.toml", [{"value": 42}]),
    # One reading per device: readings seconds apart (a process each) would make an
    # interval, and the device stale before the checks are done.
    10: (TEMPLATES / "power-meter.toml",
         [{"energy": 1002, "power": 512.5, "voltage": 229.99, "power_factor": 0.875}]),
    101: (EDGE / "dict-words.toml",
          [{"items": 1, "keys": 2, "values": 3, "get": 4, "copy": 5, "pop": 6, "update": 7}]),
    102: (EDGE / "air.toml",
          [{"co2": 612, "pm25": 8.4, "tvoc": 120, "temp": 22.55, "battery": 87}]),
    103: (EDGE / "meters.toml",
          [{"water": 12.345, "gas": 1.5, "energy_kwh": 3.25, "cost": 12.5, "pulses": 77,
            "pf": 0.5}]),
    104: (EDGE / "battery-node.toml",
          [{"weight": 1.25, "battery_voltage": 3850, "rssi": -67}]),
    105: (EDGE / "accents.toml", [{"température": 21.5, "humidité": 45.5, "Δp": -12}]),
}  # fmt: skip
# The Energy dashboard's sources: (type, the key of their entity, entity). Its validation
# says `statistics_not_defined` until the recorder's first statistics (every 5 minutes),
# which a run this short never sees; any other issue fails.
ENERGY = [
    ("grid", "flow_from", "sensor.power_meter_10_energy"),
    ("grid", "flow_from", "sensor.meters_103_energy"),
    ("gas", "stat_energy_from", "sensor.meters_103_gas"),
    ("water", "stat_energy_from", "sensor.meters_103_water"),
]
# Home Assistant's log lines at WARNING or above that are not about precast: how this test
# starts it (--skip-pip; Python 3.11, which 2024.3 is the last release to run on).
LOG_EXPECTED = [
    "[homeassistant.bootstrap] Skipping pip installation of required modules",
    "[homeassistant.bootstrap] Support for the running Python version 3.11",
]


class Failed(Exception):
    pass


def step(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {text}", flush=True)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Failed(what)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_TABLE = """
import importlib.util, json, sys
from homeassistant.components.sensor import const
from homeassistant.const import __version__ as ha_version

spec = importlib.util.spec_from_file_location("sensor_classes", sys.argv[1])
rules = importlib.util.module_from_spec(spec)
sys.modules["sensor_classes"] = rules
spec.loader.exec_module(rules)
bad = []
if rules.HA_VERSION != ha_version:
    bad.append(f"table from {rules.HA_VERSION}, running {ha_version}")
non = {dc.value for dc in const.NON_NUMERIC_DEVICE_CLASSES}
if set(rules.DEVICE_CLASSES) != {dc.value for dc in const.SensorDeviceClass} - non:
    bad.append("device classes differ")
if rules.NON_NUMERIC != non:
    bad.append("non-numeric classes differ")
for name, rule in rules.DEVICE_CLASSES.items():
    dc = const.SensorDeviceClass(name)
    units = const.DEVICE_CLASS_UNITS.get(dc)
    want = None if units is None else {"" if u is None else str(u) for u in units}
    if rule.units != want:
        bad.append(f"{name}: units {sorted(rule.units or [])} != {sorted(want or [])}")
    sc = {str(s) for s in const.DEVICE_CLASS_STATE_CLASSES[dc]}
    if set(rule.state_classes) != sc:
        bad.append(f"{name}: state classes {rule.state_classes} != {sorted(sc)}")
print(json.dumps(bad))
"""


def check_table() -> None:
    """wire/sensor_classes.py is this Home Assistant's sensor constants, class by class."""
    path = ROOT / "host" / "precast" / "wire" / "sensor_classes.py"
    r = subprocess.run([sys.executable, "-c", _TABLE, str(path)], capture_output=True, text=True)
    check(r.returncode == 0, f"the table check: {r.stderr.strip()}")
    bad = json.loads(r.stdout)
    check(not bad, "rules table: " + "; ".join(bad))


class Proc:
    """A child process with its output in a file."""

    def __init__(self, name: str, argv: list[str], log: Path, **kw: Any) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.kw = kw
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.p = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, **self.kw)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        if self.p is None or self.p.poll() is not None:
            return None if self.p is None else self.p.returncode
        self.p.send_signal(sig)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()


class Rig:
    """Broker, Home Assistant and collectors in one temporary directory."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.mqtt_port = free_port()
        self.http_port = free_port()
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.config = work / "ha"
        self.procs: list[Proc] = []
        self.token = ""
        self.tokens: dict[str, Any] = {}  # onboarding's: access, refresh, expires_in
        self.shots = ROOT / "build" / "ha" / "screenshots"
        self.seq: dict[int, int] = {}
        self.collector: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- processes

    def broker(self) -> None:
        conf = self.work / "mosquitto.conf"
        conf.write_text(f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\n")
        mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        p = Proc("mosquitto", [mosquitto, "-c", str(conf)], self.work / "mosquitto.log")
        p.start()
        self.procs.append(p)
        wait(lambda: _connects(self.mqtt_port), 10, "the broker to listen")

    def write_config(self) -> None:
        storage = self.config / ".storage"
        storage.mkdir(parents=True)
        (self.config / "configuration.yaml").write_text(
            "homeassistant:\n  name: precast\n  time_zone: UTC\n  unit_system: metric\n"
            "  latitude: 52.5\n  longitude: 13.4\n  elevation: 30\n  country: DE\n"
            "  currency: EUR\n"
            f"http:\n  server_host: 127.0.0.1\n  server_port: {self.http_port}\n"
            "logger:\n  default: info\n"
            "api:\nwebsocket_api:\nconfig:\nonboarding:\nfrontend:\nenergy:\n"
            "recorder:\n  commit_interval: 1\n"
        )
        entry = {
            "entry_id": "0123456789abcdef0123456789abcdef",
            "version": 1,
            "minor_version": 1,
            "domain": "mqtt",
            "title": f"127.0.0.1:{self.mqtt_port}",
            "data": {
                "broker": "127.0.0.1",
                "port": self.mqtt_port,
                "discovery": True,
                "discovery_prefix": "homeassistant",
            },
            "options": {},
            "pref_disable_new_entities": False,
            "pref_disable_polling": False,
            "source": "user",
            "unique_id": None,
            "disabled_by": None,
        }
        doc = {"version": 1, "minor_version": 1, "key": "core.config_entries",
               "data": {"entries": [entry]}}  # fmt: skip
        (storage / "core.config_entries").write_text(json.dumps(doc))
        # Onboarding's other steps done: they would set up integrations of their own (met,
        # radio_browser); the user step is left for onboard() to get a token from.
        done = {"version": 4, "minor_version": 1, "key": "onboarding",
                "data": {"done": ["core_config", "analytics", "integration"]}}  # fmt: skip
        (storage / "onboarding").write_text(json.dumps(done))

    def home_assistant(self) -> Proc:
        p = Proc(
            "home-assistant",
            [sys.executable, "-m", "homeassistant", "-c", str(self.config), "--skip-pip"],
            self.work / "hass.out",
        )
        p.start()
        self.procs.append(p)
        return p

    def collect(self, *extra: str, prefix: str = "precast", db: str = "precast.db",
                port: int = 0) -> Proc:  # fmt: skip
        ready = self.work / f"ready-{prefix}.json"
        ready.unlink(missing_ok=True)
        p = Proc(
            f"collector {prefix}",
            [str(PRECAST), "collect", "--templates", str(TEMPLATES), str(EDGE),
             "--db", str(self.work / db), "--listen", f"127.0.0.1:{port or self.udp_port}",
             "--key", KEY, "--mqtt", f"mqtt://127.0.0.1:{self.mqtt_port}/{prefix}",
             "--ha-discovery", "--ready-file", str(ready), *extra],
            self.work / f"collect-{prefix}.log",
        )  # fmt: skip
        p.start()
        self.procs.append(p)
        wait(ready.exists, 30, "the collector's ready file")
        return p

    def send(self, device: int, values: dict[str, float], template: Path | None = None,
             port: int = 0) -> None:  # fmt: skip
        path = template or DEVICES[device][0]
        seq = self.seq.get(device, 0) + 1
        self.seq[device] = seq
        argv = [str(PRECAST), "send", str(path), "--device", str(device), "--seq", str(seq),
                "--key", KEY, "--udp", f"127.0.0.1:{port or self.udp_port}", "--no-progress",
                *(f"{k}={v}" for k, v in values.items())]  # fmt: skip
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"precast send: {r.stderr.strip()}")

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    # -- Home Assistant's API

    async def onboard(self, http: aiohttp.ClientSession) -> None:
        """The first user through onboarding, its code exchanged for an access token."""
        client_id = f"{self.url}/"
        r = await http.post(f"{self.url}/api/onboarding/users", json={
            "client_id": client_id, "name": "precast", "username": "precast",
            "password": "precast-test", "language": "en"})  # fmt: skip
        check(r.status == 200, f"onboarding: HTTP {r.status} {await r.text()}")
        code = (await r.json())["auth_code"]
        r = await http.post(f"{self.url}/auth/token", data={
            "grant_type": "authorization_code", "code": code, "client_id": client_id})  # fmt: skip
        self.tokens = await r.json()
        self.token = self.tokens["access_token"]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def states(self, http: aiohttp.ClientSession) -> dict[str, dict[str, Any]]:
        r = await http.get(f"{self.url}/api/states", headers=self.auth)
        return {s["entity_id"]: s for s in await r.json()}

    async def ws(self, http: aiohttp.ClientSession, *commands: dict[str, Any]) -> list[Any]:
        out = []
        async with http.ws_connect(f"{self.url}/api/websocket") as w:
            await w.receive_json()
            await w.send_json({"type": "auth", "access_token": self.token})
            check((await w.receive_json())["type"] == "auth_ok", "websocket auth")
            for i, cmd in enumerate(commands, 1):
                await w.send_json({"id": i, **cmd})
                while True:
                    msg = await w.receive_json()
                    if msg.get("id") == i and msg["type"] == "result":
                        break
                check(msg["success"], f"websocket {cmd}: {msg}")
                out.append(msg["result"])
        return out


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise Failed(f"timed out ({timeout:g} s) waiting for {what}")
        time.sleep(0.2)


async def await_until(
    pred: Callable[[], Any], timeout: float, what: str, every: float = 0.5
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failed(f"timed out ({timeout:g} s) waiting for {what}")
        await asyncio.sleep(0.5)


async def up(rig: Rig, http: aiohttp.ClientSession) -> None:
    # Before onboarding, onboarding's API (no token needed); after, the API with the token.
    # Never a request without a valid token: Home Assistant logs each as a WARNING (http.ban).
    url, headers = (f"{rig.url}/api/", rig.auth) if rig.token else (f"{rig.url}/api/onboarding", {})

    async def answering() -> bool:
        try:
            r = await http.get(url, headers=headers)
            return r.status == 200
        except aiohttp.ClientError:
            return False

    await await_until(answering, 180, "Home Assistant's HTTP API")


_EXPECTED = """
import json, sys
from precast.collect.sinks.discovery import discovery_config
from precast.wire.layout import compile_template
from precast.wire.template import load_template
out = []
for dev, path in json.loads(sys.argv[1]).items():
    lay = compile_template(load_template(path))
    for s in lay.fields:
        cfg = discovery_config("precast", int(dev), lay, s)
        out.append([int(dev), lay.template.name, s.name, cfg])
print(json.dumps(out))
"""


def expected_entities() -> dict[str, tuple[int, str, dict[str, Any]]]:
    """entity_id -> (device, field, the discovery config precast sends), for DEVICES."""
    paths = {dev: str(path) for dev, (path, _) in DEVICES.items()}
    python = ROOT / ".venv" / "bin" / "python"
    r = subprocess.run(
        [str(python), "-c", _EXPECTED, json.dumps(paths)], capture_output=True, text=True
    )
    check(r.returncode == 0, r.stderr)
    out = {}
    for dev, template, field, cfg in json.loads(r.stdout):
        # Home Assistant's own entity id: the device's name and the entity's, slugified.
        name = f"{template} {dev} {cfg['name']}"
        out[f"sensor.{slugify(name)}"] = (dev, field, cfg)
    return out


async def scenario(rig: Rig) -> None:
    step("rules table against Home Assistant's sensor constants")
    check_table()
    rig.broker()
    rig.write_config()
    hass = rig.home_assistant()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await up(rig, http)
        await rig.onboard(http)
        step("Home Assistant up and onboarded")
        rig.collector = rig.collect()
        for dev, (_, readings) in DEVICES.items():
            for values in readings:
                rig.send(dev, values)
        step(f"sent readings of {len(DEVICES)} devices")
        want = expected_entities()

        async def all_there() -> dict[str, dict[str, Any]] | None:
            st = await rig.states(http)
            ok = all(e in st and st[e]["state"] not in ("unknown", "unavailable") for e in want)
            return st if ok else None

        try:
            st = await await_until(all_there, 60, f"the {len(want)} field entities with states")
        except Failed:
            st = await rig.states(http)
            missing = {e: st.get(e, {}).get("state") for e in want}
            raise Failed(f"entities without a state: {missing}") from None
        for entity, (dev, field, cfg) in want.items():
            s = st[entity]
            a = s["attributes"]
            value = DEVICES[dev][1][-1][field]
            check(float(s["state"]) == float(value), f"{entity}: state {s['state']} != {value}")
            check(a.get("unit_of_measurement") == cfg.get("unit_of_measurement"), f"{entity} unit")
            check(a.get("device_class") == cfg.get("device_class"), f"{entity} device class")
            check(a.get("state_class") == cfg.get("state_class"), f"{entity} state class")
            check(a["friendly_name"].endswith(cfg["name"]), f"{entity} name {a['friendly_name']}")
        step(f"{len(want)} field entities: ids, states, units, classes as sent")

        entities, devices = await rig.ws(
            http, {"type": "config/entity_registry/list"}, {"type": "config/device_registry/list"}
        )
        by_ident = {tuple(i)[1]: d for d in devices for i in d["identifiers"] if i[0] == "mqtt"}
        collector = by_ident.get("precast_collector")
        check(collector is not None, "the collector as a device")
        for dev in DEVICES:
            d = by_ident.get(f"precast_{dev}")
            check(d is not None, f"device precast_{dev}")
            check(d["via_device_id"] == collector["id"], f"device {dev} not via the collector")
            check(d["manufacturer"] == "precast" and d["model"] == d["name"].rsplit(" ", 1)[0],
                  f"device {dev}: {d['name']} {d['model']}")  # fmt: skip
            mine = [e for e in entities if e["device_id"] == d["id"]]
            fields = [e for e in mine if e["entity_category"] is None]
            diagnostic = [e for e in mine if e["entity_category"] == "diagnostic"]
            n = sum(1 for e in want.values() if e[0] == dev)
            check(len(mine) == n + 2, f"device {dev}: {len(mine)} entities, want {n} + 2")
            check(len(diagnostic) >= 2 and len(fields) + len(diagnostic) == len(mine), f"{dev}")
        reg = {e["entity_id"]: e for e in entities}
        for entity, (_, _, cfg) in want.items():
            r = reg[entity]
            check(r["unique_id"] == cfg["unique_id"], f"{entity}: unique_id {r['unique_id']}")
            check(r["entity_category"] == cfg.get("entity_category"), f"{entity} category")
            digits = r["options"].get("sensor", {}).get("suggested_display_precision")
            want_digits = cfg.get("suggested_display_precision")
            check(digits == want_digits, f"{entity}: precision {digits}, sent {want_digits}")
        for e in ("sensor.env_node_7_battery", "sensor.battery_node_104_battery_voltage",
                  "sensor.battery_node_104_rssi", "sensor.env_node_7_loss",
                  "sensor.env_node_7_last_seen"):  # fmt: skip
            check(reg[e]["entity_category"] == "diagnostic", f"{e} not diagnostic")
        check(reg["sensor.env_node_7_temperature"]["unique_id"] == "precast_7_temperature", "ids")
        st = await rig.states(http)
        check(st["sensor.air_102_co2"]["attributes"]["friendly_name"] == "air 102 CO2", "CO2")
        check(st["binary_sensor.precast_collector_status"]["state"] == "on", "collector status")
        step(f"{len(DEVICES)} devices via the collector, diagnostics, names, precision")

        await energy(rig, http)
        step("the Energy dashboard takes the meters: " + ", ".join(e for _, _, e in ENERGY))

        async def diag() -> bool:
            st = await rig.states(http)
            return st["sensor.power_meter_10_loss"]["state"] == "0.0"

        await await_until(diag, 30, "loss 0 % of device 10")
        step("diagnostics: loss, last seen")
        await pictures(rig, by_ident["precast_7"]["id"])

        # Availability: a device gone stale, then the collector stopped, restarted, killed.
        for i in range(5):  # device 11: a reading every 0.2 s, then silence
            rig.send(11, {"value": i}, TEMPLATES / "minimal.toml")
            await asyncio.sleep(0.2)

        async def state_of(entity: str, want_state: str) -> bool:
            return (await rig.states(http)).get(entity, {}).get("state") == want_state

        await await_until(lambda: state_of("sensor.minimal_11_value", "unavailable"), 20, "stale")
        loss = (await rig.states(http))["sensor.minimal_11_loss"]["state"]
        check(loss != "unavailable", "diagnostics stay available while stale")
        step("a stale device's sensors unavailable, its diagnostics not")

        rig.collector.stop(signal.SIGTERM)
        await await_until(
            lambda: state_of("sensor.env_node_7_temperature", "unavailable"), 20, "stop"
        )
        await await_until(
            lambda: state_of("binary_sensor.precast_collector_status", "off"), 20, "off"
        )
        step("collector stopped: unavailable, its status off")

        rig.collector = rig.collect()
        await await_until(
            lambda: state_of("binary_sensor.precast_collector_status", "on"), 20, "on"
        )
        await await_until(lambda: state_of("sensor.env_node_7_temperature", "21.37"), 20, "back")
        check(await state_of("sensor.minimal_11_value", "unavailable"), "stale 11 available")
        step("collector restarted: live devices back, the stale one still unavailable")

        rig.collector.stop(signal.SIGKILL)
        await await_until(
            lambda: state_of("sensor.env_node_7_temperature", "unavailable"), 40, "will"
        )
        step("collector killed: the will made every sensor unavailable")
        rig.collector = rig.collect()

        # A second collector on another prefix takes over nothing.
        port2 = free_port(socket.SOCK_DGRAM)
        other = rig.collect(prefix="site2", db="site2.db", port=port2)
        env7 = {"temperature": 30.0, "humidity": 30.0, "pressure": 100000, "battery": 3000}
        rig.send(7, env7, port=port2)

        async def site2() -> bool:
            st = await rig.states(http)
            return st.get("sensor.env_node_7_site2_temperature", {}).get("state") == "30.0"

        await await_until(site2, 30, "site2's device 7")
        other.stop()
        st = await rig.states(http)
        check(st["sensor.env_node_7_temperature"]["state"] in ("21.37", "30.0"), "site 1's")
        (entities,) = await rig.ws(http, {"type": "config/entity_registry/list"})
        reg = {e["entity_id"]: e for e in entities}
        check(reg["sensor.env_node_7_temperature"]["unique_id"] == "precast_7_temperature", "took")
        check(
            reg["sensor.env_node_7_site2_temperature"]["unique_id"]
            == "precast-site2-7_temperature",
            "site2 id",
        )
        step("a second collector (prefix site2): entities of its own")

        # Home Assistant restarts: sensors show their last reading again.
        rig.collector.stop()
        rig.collector = rig.collect()
        for dev, (_, readings) in DEVICES.items():
            if dev != 9:
                rig.send(dev, readings[-1])
        await await_until(lambda: state_of("sensor.env_node_8_temperature", "19.5"), 20, "8")
        check(hass.stop() == 0, "Home Assistant's stop")
        # Each start rolls the log over (home-assistant.log.1): the first run's is kept here.
        first_log = (rig.config / "home-assistant.log").read_text()
        hass = rig.home_assistant()
        await up(rig, http)

        async def restored() -> bool:
            st = await rig.states(http)
            return all(
                e in st and float(st[e]["state"]) == float(DEVICES[dev][1][-1][f])
                for e, (dev, f, _) in want.items()
                if dev != 9 and st.get(e, {}).get("state") not in (None, "unknown", "unavailable")
            ) and all(st.get(e, {}).get("state") not in (None, "unknown", "unavailable")
                      for e, (dev, _, _) in want.items() if dev != 9)  # fmt: skip

        await await_until(restored, 60, "every sensor's last reading after the restart")
        step("Home Assistant restarted: every sensor shows its last reading")

        # A template change across a restart: device 9 becomes an air sensor.
        rig.collector.stop()
        rig.collector = rig.collect()
        rig.send(9, DEVICES[102][1][0], EDGE / "air.toml")

        async def changed() -> bool:
            _, devs = await rig.ws(http, {"type": "config/entity_registry/list"},
                                   {"type": "config/device_registry/list"})  # fmt: skip
            d = next((d for d in devs for i in d["identifiers"] if i[1] == "precast_9"), None)
            return d is not None and d["model"] == "air"

        await await_until(changed, 30, "device 9's new model")
        entities, devices = await rig.ws(http, {"type": "config/entity_registry/list"},
                                         {"type": "config/device_registry/list"})  # fmt: skip
        d9 = next(d for d in devices for i in d["identifiers"] if i[1] == "precast_9")
        names = sorted(e["entity_id"] for e in entities if e["device_id"] == d9["id"])
        check(d9["name"] == "air 9", f"device 9 named {d9['name']}")
        check(not any(n.endswith("_value") for n in names), f"orphan of minimal: {names}")
        check(len(names) == 5 + 2, f"device 9's entities: {names}")
        step("template change across a restart: new name and model, no orphan")

    rig.collector.stop()
    check(hass.stop() == 0, "Home Assistant's stop")
    log = first_log + (rig.config / "home-assistant.log").read_text()
    # Both runs' logs, every logger's, not only mqtt's and sensor's: a value template's
    # undefined variable is logged by homeassistant.helpers.template.
    bad = [
        line for line in log.splitlines()
        if (m := re.match(r"\S+ \S+ (WARNING|ERROR|CRITICAL) \(\S+\) (.*)", line))
        and not any(m.group(2).startswith(ok) for ok in LOG_EXPECTED)
    ]  # fmt: skip
    check(not bad, "Home Assistant's log:\n" + "\n".join(bad))
    step("Home Assistant's log: no warning or error")


async def energy(rig: Rig, http: aiohttp.ClientSession) -> None:
    """The meters as the Energy dashboard's sources, and its validation of them."""
    grid: dict[str, Any] = {"type": "grid", "flow_from": [], "flow_to": [],
                            "cost_adjustment_day": 0}  # fmt: skip
    sources: list[dict[str, Any]] = [grid]
    no_cost = {"stat_cost": None, "entity_energy_price": None, "number_energy_price": None}
    for kind, key, entity in ENERGY:
        if kind == "grid":
            grid[key].append({"stat_energy_from": entity, **no_cost})
        else:
            sources.append({"type": kind, key: entity, **no_cost})
    _, got = await rig.ws(
        http,
        {"type": "energy/save_prefs", "energy_sources": sources, "device_consumption": []},
        {"type": "energy/validate"},
    )
    check(len(got["energy_sources"]) == len(sources), f"the Energy dashboard's sources: {got}")
    issues = [
        i for group in got["energy_sources"] for i in group if i["type"] != "statistics_not_defined"
    ]
    check(not issues, f"the Energy dashboard's validation: {issues}")


async def pictures(rig: Rig, device_7: str) -> None:
    """The frontend's device page of env-node 7 and its MQTT devices list, as PNGs."""
    if screenshot.chromium() is None:
        step("no chromium: no screenshots (Debian: apt-get install chromium)")
        return
    shots = [
        (f"/config/devices/device/{device_7}",
         ["env-node 7", "Temperature", "21.37", "Loss", "Last seen", "precast collector"],
         rig.shots / "ha-device.png"),
        ("/config/devices/dashboard?domain=mqtt",
         ["env-node 7", "power-meter 10", "air 102", "precast collector"],
         rig.shots / "ha-devices.png"),
    ]  # fmt: skip
    try:
        done = await screenshot.shoot(rig.url, rig.tokens, shots)
    except RuntimeError as e:
        raise Failed(f"the frontend: {e}") from None
    step("the frontend shows them: " + ", ".join(str(p) for p in done))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--screenshots", metavar="DIR", type=Path,
                   help="where the frontend's PNGs go (default build/ha/screenshots)")  # fmt: skip
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="precast-ha-"))
    rig = Rig(work)
    if args.screenshots is not None:
        rig.shots = args.screenshots.resolve()
    try:
        asyncio.run(scenario(rig))
    except Failed as e:
        print(f"make ha: FAILED: {e}\n(logs in {work})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        rig.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"make ha: passed in {time.monotonic() - T0:.0f} s")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
