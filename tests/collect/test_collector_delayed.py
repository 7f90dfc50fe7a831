"""Every rule of the receiver holds for delayed frames (docs/PROTOCOL.md, step 6), judged from
outside: UDP datagrams into a real `precast collect`, its books read with `precast stats` and
its readings table."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from kit import KEY_HEX, TEMPLATES
from precast import compile_template, encode_raw, load_template
from precast.pytest_plugin import PrecastCollector
from precast.wire.constants import PAYLOAD_OFFSET

KEY = bytes.fromhex(KEY_HEX)
MINIMAL = compile_template(load_template(TEMPLATES / "minimal.toml"))
METER = compile_template(load_template(TEMPLATES / "power-meter.toml"))


def _device_when(col: PrecastCollector, dev: int, want: dict[str, int]) -> dict[str, int]:
    """The device's counters once they reach `want` (the last datagrams may come a batch
    later than the readings), or as they are after 10 s."""
    deadline = time.monotonic() + 10
    while True:
        d = col.device(dev)
        if {k: d[k] for k in want} == want or time.monotonic() > deadline:
            return d
        time.sleep(0.1)


def _send(col: PrecastCollector, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for f in frames:
            s.sendto(f[PAYLOAD_OFFSET:], (col.host, col.port))


@pytest.fixture
def collector(tmp_path: Path):
    col = PrecastCollector([str(TEMPLATES)], tmp_path, KEY, args=["--window", "64"])
    try:
        yield col
    finally:
        col.stop()


def test_delayed_readings_fill_their_gap_once(collector: PrecastCollector) -> None:
    dev = 41
    live = [encode_raw(MINIMAL, [s], dev, s) for s in range(10) if s not in (5, 6, 7)]
    late = [encode_raw(MINIMAL, [s], dev, s, age_ms=1000 * (10 - s)) for s in (5, 6, 7)]
    again = [
        encode_raw(MINIMAL, [6], dev, 6, age_ms=9999),  # the same reading, late twice
        encode_raw(MINIMAL, [8], dev, 8, age_ms=10),  # a live one sent late as well
        late[0],  # the very same delayed frame
    ]
    _send(collector, live + late + again)
    collector.wait_for_readings(10, device=dev)
    d = _device_when(collector, dev, {"received": 10, "lost": 0, "duplicates": 3})
    assert (d["received"], d["lost"], d["duplicates"]) == (10, 0, 3), d
    assert sorted(r["seq"] for r in collector.readings(dev)) == list(range(10))
    assert [r["fields"]["value"] for r in collector.readings(dev)] == list(range(10))


def test_delayed_frames_meet_the_mic_and_the_window(collector: PrecastCollector) -> None:
    dev = 42
    raw = [1, -2, 3, 0.5]
    frames = [encode_raw(METER, raw, dev, s, KEY) for s in range(200, 300)]
    forged = bytearray(encode_raw(METER, raw, dev, 150, KEY, age_ms=5))
    forged[-1] ^= 1  # a delayed frame with a wrong MIC
    replay = encode_raw(METER, raw, dev, 10, KEY, age_ms=5)  # far below the window
    _send(collector, [*frames, bytes(forged), replay, encode_raw(METER, raw, dev, 299, KEY, 1)])
    collector.wait_for_readings(100, device=dev)
    d = _device_when(collector, dev, {"received": 100, "duplicates": 1, "replays": 1, "bad": 1})
    assert (d["received"], d["duplicates"], d["replays"], d["bad"]) == (100, 1, 1, 1), d
    rejected = collector.stats()["rejected"]
    assert rejected.get("mic") == 1 and rejected.get("replay") == 1, rejected
