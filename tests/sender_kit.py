"""Helpers for the sender tests: a veth pair, a tcpdump capture on its far side, templates.

The judge of what went on the wire is tcpdump, run inside the namespace on
the far end of the pair, writing a classic pcap that is read back here
with its kernel timestamps.
"""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from kit import TEMPLATES, VethPair, need, need_netns

ENV_VALUES = ["temperature=21.5", "humidity=40.25", "pressure=101325", "battery=3000"]


_RUNNING: list[subprocess.Popen[str]] = []  # captures a failed test left behind


def pair() -> Iterator[VethPair]:
    need_netns()
    p = VethPair("pcs")
    try:
        yield p
    finally:
        while _RUNNING:
            proc = _RUNNING.pop()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        p.close()


def template_to(tmp: Path, v: VethPair, name: str = "env-node.toml") -> Path:
    """A copy of a shipped template whose frames go to the far end's MAC."""
    text = (TEMPLATES / name).read_text()
    text = text.replace('dst_mac = "ff:ff:ff:ff:ff:ff"', f'dst_mac = "{v.inner_mac}"')
    if "dst_mac" not in text and "[network]" in text:
        text = text.replace("[network]", f'[network]\ndst_mac = "{v.inner_mac}"', 1)
    elif "dst_mac" not in text:
        text = text.replace("[[field]]", f'[network]\ndst_mac = "{v.inner_mac}"\n\n[[field]]', 1)
    out = tmp / name
    out.write_text(text)
    return out


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, frame) of each record of a classic little-endian pcap (tcpdump's default)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), f"not a pcap file: {magic:#x}"
    div = 1e6 if magic == 0xA1B2C3D4 else 1e9
    out = []
    i = 24
    while i + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from("<IIII", data, i)
        out.append((sec + frac / div, data[i + 16 : i + 16 + caplen]))
        i += 16 + caplen
    return out


class Capture:
    """tcpdump on the far end of a veth pair, writing UDP frames to a pcap file."""

    def __init__(self, v: VethPair, path: Path, iface: str | None = None) -> None:
        need("tcpdump", "tcpdump")
        self.path = path
        cmd = v.exec(
            "tcpdump",
            "-i",
            iface or v.inner,
            "-w",
            str(path),
            "-B",
            "65536",
            "-Z",
            "root",
            "-U",
            "-n",
            "udp",
        )
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        _RUNNING.append(self.proc)
        assert self.proc.stderr is not None
        self.stats = ""
        for _ in range(5):
            line = self.proc.stderr.readline()
            self.stats += line
            if "listening on" in line:
                break
        assert "listening on" in self.stats, self.stats

    def stop(self) -> list[tuple[float, bytes]]:
        """Stop tcpdump (after the kernel delivered what is in flight); the frames captured."""
        time.sleep(1.2)  # libpcap hands over a TPACKET_V3 block at its 1 s timeout
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        self.stats += err
        assert "0 packets dropped by kernel" in err, err
        return read_pcap(self.path)
