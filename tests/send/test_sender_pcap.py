"""What --pcap writes, judged by tshark's checksum checks; decode --pcap on tcpdump's captures."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import TEMPLATES, VethPair, need, precast
from precast.wire.constants import PAYLOAD_OFFSET
from sender_kit import ENV_VALUES, Capture, pair, template_to


def checksum_status(path: Path) -> list[tuple[str, str]]:
    """tshark's verdict (1 good, 0 bad) on each frame's IPv4 and UDP checksums."""
    tshark = need("tshark", "tshark")
    r = subprocess.run(
        [
            tshark,
            "-n",
            "-r",
            str(path),
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
            "-e",
            "ip.checksum.status",
            "-e",
            "udp.checksum.status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [tuple(line.split("\t")) for line in r.stdout.splitlines()]  # type: ignore[misc]


def spoil(src: Path, dst: Path, record: int, offset: int) -> None:
    """Copy a pcap with one byte of one record's frame flipped."""
    data = bytearray(src.read_bytes())
    i = 24
    for _ in range(record):
        i += 16 + int.from_bytes(data[i + 8 : i + 12], "little")
    data[i + 16 + offset] ^= 0x01
    dst.write_bytes(data)


def test_tshark_finds_no_bad_checksum_in_what_send_and_simulate_write(tmp_path: Path) -> None:
    sent = tmp_path / "send.pcap"
    r = precast(
        "send",
        str(TEMPLATES / "env-node.toml"),
        "--device",
        "9",
        "--count",
        "300",
        "--pcap",
        str(sent),
        *ENV_VALUES,
    )
    assert r.returncode == 0, r.stderr
    fleet = tmp_path / "fleet.pcap"
    r = precast(
        "simulate",
        "--templates",
        str(TEMPLATES),
        "--key",
        "00" * 16,
        "--devices",
        "12",
        "--rate",
        "0",
        "--duration",
        "0.3",
        "--corrupt",
        "0.05",
        "--dup",
        "0.05",
        "--seed",
        "4",
        "--pcap",
        str(fleet),
    )
    assert r.returncode == 0, r.stderr
    for path, least in ((sent, 300), (fleet, 12)):
        status = checksum_status(path)
        assert len(status) >= least
        assert set(status) == {("1", "1")}, path
    # corrupt readings had their UDP checksum fixed, so they reach the receiver's own check
    assert "corrupted 0" not in r.stdout

    # Negative controls: one flipped payload byte, one flipped TTL, and tshark says so.
    spoil(sent, tmp_path / "udp.pcap", 17, PAYLOAD_OFFSET + 9)
    status = checksum_status(tmp_path / "udp.pcap")
    assert [i for i, s in enumerate(status) if s != ("1", "1")] == [17]
    assert status[17] == ("1", "0")
    spoil(sent, tmp_path / "ip.pcap", 5, 14 + 8)
    status = checksum_status(tmp_path / "ip.pcap")
    assert [i for i, s in enumerate(status) if s != ("1", "1")] == [5]
    assert status[5][0] == "0"


@pytest.fixture
def veth() -> Iterator[VethPair]:
    yield from pair()


@pytest.mark.parametrize("iface", ["inner", "any"])
def test_decode_pcap_reads_tcpdump_captures(veth: VethPair, tmp_path: Path, iface: str) -> None:
    """tcpdump on the interface (Ethernet) and on `any` (Linux cooked v2) both decode."""
    tpl = template_to(tmp_path, veth)
    cap = Capture(veth, tmp_path / "cap.pcap", iface=veth.inner if iface == "inner" else "any")
    r = precast(
        "send",
        str(tpl),
        "--device",
        "31",
        "--seq",
        "100",
        "--count",
        "50",
        "--iface",
        veth.outer,
        *ENV_VALUES,
    )
    assert r.returncode == 0, r.stderr
    frames = cap.stop()
    assert len(frames) == 50
    if iface == "any":
        assert "LINUX_SLL2" in cap.stats or frames[0][1][:2] == b"\x08\x00"
    d = precast("decode", str(tpl), "--pcap", str(tmp_path / "cap.pcap"))
    assert d.returncode == 0, d.stderr
    rows = [json.loads(line) for line in d.stdout.splitlines()]
    assert [row["seq"] for row in rows] == list(range(100, 150))
    assert {row["device"] for row in rows} == {31}
    assert rows[0]["fields"] == {
        "temperature": 21.5,
        "humidity": 40.25,
        "pressure": 101325,
        "battery": 3000,
    }
