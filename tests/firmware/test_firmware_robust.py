"""Send failures do not stop the loop, and the counts say what happened.

Injected: the real UDP transport to a loopback socket, wrapped (in the
test script, on the unix port) so that chosen sends raise
OSError(ENOBUFS), or with its socket closed under it mid-run. Real: the
packet transport into a veth pair whose queue a token bucket keeps full
(the kernel answers ENOBUFS and counts its drops), or whose link is down
(ENETDOWN). Robust retries with backoff, reopens, gives a reading up only
after every retry failed, and the counts line reports it; what arrives is
exactly what the counts say: counted where it arrives, the loopback socket
or a UDP socket in the veth's namespace, whose kernel checks each frame.
"""

from __future__ import annotations

import errno
import re
import subprocess
from pathlib import Path

import pytest
from firmware_kit import NsReceiver, UdpSink, build, counts, template_for
from kit import TEMPLATES, VethPair, need, run_bundle
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

N = 200

FLAKY = r"""
import errno
import precast_config as cfg, precast_template as tpl
from precast_fw import app
from precast_fw.transport_udp import Transport

class Flaky:
    # Fails the send attempts whose number is in FAIL (counting from 0).
    def __init__(self, inner):
        self.inner = inner
        self.attempt = 0
        self.FRAME = inner.FRAME
    def send(self, mv):
        a = self.attempt
        self.attempt += 1
        if a in FAIL:
            raise OSError(errno.ENOBUFS)
        self.inner.send(mv)
    def reopen(self):
        self.inner.reopen()
    def close(self):
        self.inner.close()

print(app.run(tpl, cfg, transport=Flaky(Transport(tpl, cfg))))
"""

CLOSER = r"""
import precast_config as cfg, precast_template as tpl
from precast_fw import app
from precast_fw.sensors.sim import Sensor
from precast_fw.transport_udp import Transport

transport = Transport(tpl, cfg)
sim = Sensor(tpl, cfg)

class Closing:
    # Closes the transport's socket under it before reading number CLOSE_AT.
    def __init__(self):
        self.n = 0
    def read(self, values):
        if self.n == CLOSE_AT:
            transport.sock.close()
        self.n += 1
        sim.read(values)

print(app.run(tpl, cfg, transport=transport, sensor=Closing()))
"""


def _run(tmp_path: Path, script: str, *extra: str) -> tuple[dict[str, int], list[Reading]]:
    sink = UdpSink()
    try:
        template = TEMPLATES / "env-node.toml"
        build(
            tmp_path / "b",
            template,
            "--device",
            "3",
            "--collector",
            sink.collector,
            "--count",
            str(N),
            "--interval-ms",
            "0",
            "--backlog",
            "0",  # the link's own counts: no reading kept to be sent late
            *extra,
        )
        r = run_bundle(tmp_path / "b", script)
        assert r.returncode == 0, r.stdout + r.stderr
        got = sink.drain()
    finally:
        sink.close()
    codec = Codec(load_layouts([template]))
    readings = [codec.decode(g) for g in got]
    assert all(isinstance(x, Reading) for x in readings)
    return counts(r.stdout), [x for x in readings if isinstance(x, Reading)]


def test_firmware_enobufs_is_retried(tmp_path: Path) -> None:
    # 20 single failures: each retried once with success
    fail = set(range(10, 210, 10))
    c, got = _run(tmp_path, f"FAIL = {fail!r}\n" + FLAKY)
    assert c == {"readings": N, "sent": N, "failed": 20, "dropped": 0, "reopened": 0}
    assert [r.seq for r in got] == list(range(N))


def test_firmware_enobufs_past_the_retries_drops_one_reading(tmp_path: Path) -> None:
    # attempts 50..53 fail: reading 50's first try and its 3 retries, so it is dropped
    c, got = _run(tmp_path, "FAIL = {50, 51, 52, 53}\n" + FLAKY)
    assert c["readings"] == N
    assert c["failed"] == 4
    assert c["dropped"] == 1
    assert c["sent"] == N - 1
    assert c["reopened"] == 1  # retries used up: the transport is reopened
    assert [r.seq for r in got] == [s for s in range(N) if s != 50]


@pytest.mark.parametrize("lock", [False, True], ids=["unlocked", "heap-locked"])
def test_firmware_closed_socket_is_reopened(tmp_path: Path, lock: bool) -> None:
    extra = ("--heap-lock",) if lock else ()
    c, got = _run(tmp_path, "CLOSE_AT = 100\n" + CLOSER, *extra)
    assert c["readings"] == N
    assert c["failed"] >= 1
    assert c["reopened"] >= 1
    assert c["dropped"] == 0
    assert c["sent"] == N
    assert [r.seq for r in got] == list(range(N))


def _tc_dropped(dev: str) -> int:
    out = subprocess.run(
        ["tc", "-s", "qdisc", "show", "dev", dev], capture_output=True, text=True, check=True
    ).stdout
    m = re.search(r"dropped (\d+)", out)
    assert m, out
    return int(m.group(1))


def test_firmware_real_enobufs_from_a_full_queue(tmp_path: Path, veth: VethPair) -> None:
    """A token bucket on the veth lets ~1 frame a second through: the kernel says ENOBUFS."""
    need("tc", "iproute2")
    subprocess.run(
        [
            "tc",
            "qdisc",
            "add",
            "dev",
            veth.outer,
            "root",
            "tbf",
            "rate",
            "8kbit",
            "burst",
            "1600",
            "limit",
            "1600",
        ],
        check=True,
    )
    n = 100
    addressed = template_for(veth, TEMPLATES / "env-node.toml", tmp_path / "env.toml")
    recv = NsReceiver(veth, 20547)
    build(
        tmp_path / "b",
        addressed,
        "--device",
        "3",
        "--transport",
        "packet",
        "--iface",
        veth.outer,
        "--count",
        str(n),
        "--interval-ms",
        "0",
        "--backlog",
        "0",  # the link's own counts: no reading kept to be sent late
    )
    r = run_bundle(tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    c = counts(r.stdout)
    assert c["readings"] == n
    assert c["sent"] + c["dropped"] == n
    assert c["failed"] > 0
    assert c["dropped"] > 0
    assert f"last_errno {errno.ENOBUFS}" in r.stdout
    assert _tc_dropped(veth.outer) >= c["failed"]  # the kernel's own count of refusals
    # Counted at the far end: what the namespace received is what the counts call sent.
    got = recv.result()
    codec = Codec(load_layouts([addressed]))
    seqs = [x.seq for x in map(codec.decode, got) if isinstance(x, Reading)]
    assert len(seqs) == len(got) == c["sent"]
    assert seqs == sorted(set(seqs))


def test_firmware_link_down_counts_every_reading(tmp_path: Path, veth: VethPair) -> None:
    subprocess.run(["ip", "link", "set", veth.outer, "down"], check=True)
    n = 20
    addressed = template_for(veth, TEMPLATES / "minimal.toml", tmp_path / "minimal.toml")
    recv = NsReceiver(veth, load_layouts([addressed])[0].template.network.dst_port, 5)
    build(
        tmp_path / "b",
        addressed,
        "--device",
        "3",
        "--transport",
        "packet",
        "--iface",
        veth.outer,
        "--count",
        str(n),
        "--interval-ms",
        "0",
        "--backlog",
        "0",  # the link's own counts: no reading kept to be sent late
    )
    r = run_bundle(tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    c = counts(r.stdout)
    assert c == {"readings": n, "sent": 0, "failed": 4 * n, "dropped": n, "reopened": n}
    assert f"last_errno {errno.ENETDOWN}" in r.stdout
    assert recv.result() == []  # and nothing got through: the far end agrees


BACKOFF = r"""
import errno, time
from precast_fw.robust import Robust

class Refusing:
    # Every send fails with ENOBUFS (retried, not a reopen); records when each attempt came.
    FRAME = False
    def __init__(self):
        self.at = []
    def send(self, mv):
        self.at.append(time.ticks_us())
        raise OSError(errno.ENOBUFS)
    def close(self):
        pass

for backoff, cap, retries in CASES:
    t = Refusing()
    link = Robust(t, retries, backoff, max_backoff_ms=cap)
    sent = link.send(b"x")
    gaps = [time.ticks_diff(b, a) for a, b in zip(t.at, t.at[1:])]
    print(sent, link.failed, link.dropped, gaps)
"""


def test_firmware_backoff_doubles_up_to_its_cap(tmp_path: Path) -> None:
    """The waits between attempts, measured on the unix port: 4, 8, 16, 32 ms, and capped."""
    build(tmp_path / "b", TEMPLATES / "minimal.toml", "--device", "3")
    cases = [(4, 1000, 4), (5, 10, 4)]
    r = run_bundle(tmp_path / "b", f"CASES = {cases!r}\n" + BACKOFF)
    assert r.returncode == 0, r.stdout + r.stderr
    told = [ln for ln in r.stdout.splitlines() if ln.startswith("precast: ")]
    assert told == ["precast: send failed (errno 105): ENOBUFS; retrying"] * 2  # once a link
    lines = [ln for ln in r.stdout.strip().splitlines() if ln not in told]
    assert len(lines) == 2
    for (backoff, cap, retries), line in zip(cases, lines, strict=True):
        head, gaps_text = line.split(" [")
        assert head == f"False {retries + 1} 1"  # every attempt failed; the reading dropped
        gaps = [int(g) / 1000 for g in gaps_text.rstrip("]").split(", ")]
        waits = [min(backoff * 2**i, cap) for i in range(retries)]
        assert len(gaps) == len(waits)
        # Each gap is at least its wait, less the port's 1 ms tick (sleep_ms ends up to
        # 0.8 ms early here): a constant wait fails from the second gap on.
        for gap, wait in zip(gaps, waits, strict=True):
            assert gap >= wait - 1, (gaps, waits)
        # And the cap holds: uncapped, the last wait would be 40 ms, not 10.
        if cap < 1000:
            assert max(gaps) < cap + 15, gaps
