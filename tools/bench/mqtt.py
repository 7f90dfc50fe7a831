"""The MQTT sink's cost: readings handed to it in batches, published to a local Mosquitto.

    .venv/bin/python tools/bench/mqtt.py [--n 50000] [--qos 0] [--module PATH]

Runs a broker (no persistence) on a free port of 127.0.0.1, hands N readings
to an MqttSink in batches of 500 as the storing thread does (a Stored batch of
raw rows), and waits until all are published and written out. Reports the
wall time, the process's CPU per reading (every thread: the sink's and
paho's), and readings/s. --module loads another mqtt.py (an older one, to
compare two in one run on the same machine).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

from precast.collect.sinks import Stored
from precast.wire.layout import compile_template
from precast.wire.template import load_template

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load(path: str | None) -> ModuleType:
    if path is None:
        import precast.collect.sinks.mqtt as m

        return m
    name = f"mqtt_under_test_{len(sys.modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m  # dataclasses look their module up
    spec.loader.exec_module(m)
    return m


def run(mod: ModuleType, port: int, n: int, qos: int) -> tuple[float, float]:
    layout = compile_template(load_template(ROOT / "templates" / "env-node.toml"))
    names = [s.name for s in layout.fields]
    sink = mod.MqttSink(
        f"mqtt://127.0.0.1:{port}/bench",
        {layout.id: layout},
        mod.MqttOptions(qos=qos, buffer=n),
    )
    sink.start()
    rows = [
        (i % 50, i, 0, f"2026-01-01T00:00:00.{i % 1000000:06d}Z", "", 21.5, 40.25, 101325, 3300)
        for i in range(n)
    ]
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, n, 500):
        sink.write(Stored({layout.id: rows[i : i + 500]}, {layout.id: names}))
    while sink.stats()["published"] < n:
        time.sleep(0.001)
    sink.close(timeout=30)  # what paho still holds is written out before `offline`
    c1, t1 = time.process_time(), time.perf_counter()
    assert sink.stats()["dropped"] == 0, sink.stats()
    return t1 - t0, c1 - c0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--qos", type=int, choices=(0, 1), default=0)
    p.add_argument("--module", action="append", help="an mqtt.py to load (repeatable)")
    a = p.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        conf = Path(d) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n")
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            head = f"{'module':<40} {'n':>7} {'qos':>3} {'wall s':>7}"
            print(f"{head} {'CPU us/reading':>15} {'/s':>8}")
            for path in a.module or [None]:
                wall, cpu = run(load(path), port, a.n, a.qos)
                name = path or "precast.collect.sinks.mqtt"
                print(
                    f"{name:<40} {a.n:>7} {a.qos:>3} {wall:>7.2f} "
                    f"{cpu / a.n * 1e6:>15.1f} {a.n / wall:>8.0f}"
                )
        finally:
            broker.terminate()
            broker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
