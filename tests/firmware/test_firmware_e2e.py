"""End to end: `cd DIR && micropython main.py` sends readings that arrive and decode.

UDP: main.py sends N readings to a socket on loopback. packet: main.py
sends whole frames with AF_PACKET into a veth pair whose far end is in a
network namespace the test makes; a plain UDP socket there receives them,
so the namespace's kernel has checked every IPv4 and UDP checksum. Every
reading arrives, in order, and the host codec decodes it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from firmware_kit import NsReceiver, UdpSink, build, counts, template_for
from kit import KEY_HEX, TEMPLATES, VethPair, precast, run_bundle
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

KEY = bytes.fromhex(KEY_HEX)


def _decoded(templates: list[Path], frames: list[bytes], device: int) -> list[Reading]:
    codec = Codec(load_layouts(templates), key=KEY)
    out = [codec.decode(f) for f in frames]
    assert all(isinstance(r, Reading) for r in out), [r for r in out if not isinstance(r, Reading)]
    readings = [r for r in out if isinstance(r, Reading)]
    assert {r.device for r in readings} == {device}
    return readings


@pytest.mark.parametrize("name", ["env-node", "power-meter"])
def test_firmware_main_udp_to_loopback(tmp_path: Path, name: str) -> None:
    n = 500
    sink = UdpSink()
    try:
        template = TEMPLATES / f"{name}.toml"
        r = precast(
            "build",
            str(template),
            "--device",
            "77",
            "--key",
            KEY_HEX,
            "--out",
            str(tmp_path / "b"),
            "--collector",
            sink.collector,
            "--count",
            str(n),
            "--interval-ms",
            "0",
        )
        assert r.returncode == 0, r.stderr
        run = run_bundle(tmp_path / "b")
        assert run.returncode == 0, run.stdout + run.stderr
        assert counts(run.stdout) == {
            "readings": n,
            "sent": n,
            "failed": 0,
            "dropped": 0,
            "reopened": 0,
        }
        got = sink.drain()
    finally:
        sink.close()
    readings = _decoded([template], got, 77)
    assert [r.seq for r in readings] == list(range(n))


def test_firmware_main_packet_into_namespace(tmp_path: Path, veth: VethPair) -> None:
    n = 300
    templates = [
        template_for(veth, TEMPLATES / f"{t}.toml", tmp_path / f"{t}.toml")
        for t in ("env-node", "power-meter")
    ]
    rx = NsReceiver(veth, 20547, expect=n * len(templates))
    for i, t in enumerate(templates):
        out = tmp_path / f"b{i}"
        build(
            out,
            t,
            "--device",
            "5",
            "--key",
            KEY_HEX,
            "--transport",
            "packet",
            "--iface",
            veth.outer,
            "--count",
            str(n),
            "--interval-ms",
            "0",
        )
        run = run_bundle(out)
        assert run.returncode == 0, run.stdout + run.stderr
        assert counts(run.stdout)["sent"] == n
    got = rx.result()
    readings = _decoded(templates, got, 5)
    for lay in load_layouts(templates):
        seqs = [r.seq for r in readings if r.template == lay.id]
        assert seqs == list(range(n)), lay.template.name


def test_firmware_rate_cap(tmp_path: Path) -> None:
    sink = UdpSink()
    try:
        build(
            tmp_path / "b",
            TEMPLATES / "minimal.toml",
            "--device",
            "1",
            "--collector",
            sink.collector,
            "--count",
            "6",
            "--interval-ms",
            "40",
        )
        t0 = time.monotonic()
        run = run_bundle(tmp_path / "b")
        took = time.monotonic() - t0
        assert run.returncode == 0, run.stdout + run.stderr
        assert len(sink.drain()) == 6
    finally:
        sink.close()
    assert took >= 5 * 0.040  # five gaps of at least 40 ms
    # The default: one reading a second (RFC 8085's rate cap).
    build(tmp_path / "d", TEMPLATES / "minimal.toml", "--device", "1")
    assert "INTERVAL_MS = 1000" in (tmp_path / "d" / "precast_config.py").read_text()
