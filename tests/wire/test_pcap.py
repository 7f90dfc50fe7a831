"""pcap files: ours read by scapy, scapy's read by us, and `precast decode --pcap`."""

from __future__ import annotations

import json
from pathlib import Path

from kit import TEMPLATES, precast
from precast import compile_template, encode_raw, load_template
from precast.wire.pcap import PcapWriter, read_frames
from scapy.utils import rdpcap, wrpcap

LAY = compile_template(load_template(TEMPLATES / "env-node.toml"))


def test_scapy_reads_what_we_write(tmp_path: Path) -> None:
    frames = [encode_raw(LAY, [i, i, i, i], 5, i) for i in range(20)]
    p = tmp_path / "out.pcap"
    with PcapWriter(p) as w:
        for f in frames:
            w.write(f)
    assert [bytes(pkt) for pkt in rdpcap(str(p))] == frames


def test_we_read_what_scapy_writes_and_decode_it(tmp_path: Path) -> None:
    frames = [encode_raw(LAY, [i, i, i, i], 5, i) for i in range(5)]
    p = tmp_path / "scapy.pcap"
    wrpcap(str(p), frames)
    assert list(read_frames(p)) == frames
    r = precast("decode", str(TEMPLATES), "--pcap", str(p))
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["seq"] for x in r.stdout.splitlines()] == [0, 1, 2, 3, 4]


def test_not_a_pcap_is_one_line(tmp_path: Path) -> None:
    p = tmp_path / "x.pcap"
    p.write_bytes(b"hello, this is not a capture file")
    r = precast("decode", str(TEMPLATES), "--pcap", str(p))
    assert r.returncode == 2 and "not a pcap file" in r.stderr and "Traceback" not in r.stderr
