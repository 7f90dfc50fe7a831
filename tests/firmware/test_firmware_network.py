"""No network is not the end: a bundle started with no route to its collector keeps trying.

The bundle runs on the unix port inside a network namespace this test
makes with nothing in it but `lo`: the collector's address has no route,
so the first connect fails (ENETUNREACH). Once the bundle says so, the test
gives the namespace a route (the collector's address on its `lo`), and a
UDP socket there receives what arrives. The bundle went on through the
outage, counting, and what arrives is exactly what it says it sent, seqs
in order.
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from firmware_kit import NsReceiver, build, counts
from kit import TEMPLATES, micropython, netns_available
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

COLLECTOR = "198.51.100.1"
PORT = 20547
N = 150


class Netns:
    """A network namespace with only `lo` up (no routes), removed by close()."""

    def __init__(self) -> None:
        self.ns = f"pcn{os.getpid() % 100000}"
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)

    def exec(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def route_to(self, addr: str) -> None:
        """The address on the namespace's `lo`: from now on it has a (local) route."""
        subprocess.run(["ip", "-n", self.ns, "addr", "add", f"{addr}/32", "dev", "lo"], check=True)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


@pytest.fixture
def netns() -> object:
    why = netns_available()
    if why:
        pytest.skip(why)
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


def test_firmware_without_a_route_keeps_trying_then_sends(tmp_path: Path, netns: Netns) -> None:
    template = TEMPLATES / "env-node.toml"
    out = tmp_path / "b"
    build(out, template, "--device", "4", "--collector", f"{COLLECTOR}:{PORT}",
          "--count", str(N), "--interval-ms", "20")  # fmt: skip
    recv = NsReceiver(netns, PORT, first_timeout=30)  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    p = subprocess.Popen(
        netns.exec(micropython(), "main.py"),
        cwd=out,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None
        first = p.stdout.readline()  # the bundle's word that it cannot open yet
        assert f"errno {errno.ENETUNREACH}" in first, first
        time.sleep(1.0)  # the outage: longer than one reading's retries (2 + 4 + 8 ms)
        assert p.poll() is None  # and it goes on
        netns.route_to(COLLECTOR)
        rest, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    got = recv.result()
    assert p.returncode == 0, first + rest + err
    assert "Traceback" not in rest + err
    c = counts(rest)
    assert c["readings"] == N
    assert c["dropped"] > 0  # readings made while there was no route: given up live, counted
    assert c["failed"] >= 4 * c["dropped"]  # each: the first try and three retries
    assert c["reopened"] >= 1  # the transport opened late, through the retries
    # and kept: the backlog sends them late, so what arrived is the live ones and the late ones
    m = re.search(r"backlog kept (\d+) late (\d+) dropped (\d+) waiting (\d+)", rest)
    assert m, rest
    kept, late, lost, waiting = map(int, m.groups())
    assert kept == c["dropped"] == late + lost + waiting and late > 0
    assert c["sent"] == N - c["dropped"] and c["sent"] + late == len(got) > 0
    codec = Codec(load_layouts([template]))
    readings = [codec.decode(g) for g in got]
    assert all(isinstance(r, Reading) for r in readings), readings[:3]
    assert sum(r.delayed for r in readings if isinstance(r, Reading)) == late
    seqs = [r.seq for r in readings if isinstance(r, Reading)]
    live = [r.seq for r in readings if isinstance(r, Reading) and not r.delayed]
    assert live == sorted(live) and live[-1] == N - 1  # in order, to the last reading
    assert len(set(seqs)) == len(seqs)  # and a late one never twice
