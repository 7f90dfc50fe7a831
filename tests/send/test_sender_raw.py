"""The raw path into a veth pair: TX ring and one send() per frame put the same bytes on the wire.

tcpdump on the far side is the judge of what was sent, and its kernel
timestamps are the judge of the rate.
"""

from __future__ import annotations

import bisect
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import BIN, VethPair, need, precast, wait_for
from precast import encode
from precast.send.engine import TokenBucket
from precast.wire.layout import load_layouts
from sender_kit import ENV_VALUES, Capture, pair, template_to

SUMMARY = re.compile(r"^sent (\d+) frames in ([\d.]+) s: (\d+) frames/s, (\d+) errors$")


@pytest.fixture
def veth() -> Iterator[VethPair]:
    yield from pair()


def expected(tpl: Path, device: int, seqs: range) -> list[bytes]:
    lay = load_layouts([tpl])[0]
    values = dict(v.split("=") for v in ENV_VALUES)
    return [encode(lay, values, device, s & 0xFFFFFFFF) for s in seqs]


def last_line(stdout: str) -> re.Match[str]:
    m = SUMMARY.match(stdout.strip().splitlines()[-1])
    assert m, stdout
    return m


def test_tx_ring_sends_byte_for_byte_what_per_frame_sends(veth: VethPair, tmp_path: Path) -> None:
    tpl = template_to(tmp_path, veth)
    sent: dict[str, list[bytes]] = {}
    # 5000 frames through a 4096-slot ring: the ring wraps.
    for mode, flags, says in (
        ("ring", [], "TX ring"),
        ("each", ["--per-frame"], "one send() per frame"),
    ):
        cap = Capture(veth, tmp_path / f"{mode}.pcap")
        r = precast(
            "send",
            str(tpl),
            "--device",
            "77",
            "--seq",
            "4294967000",
            "--count",
            "5000",
            "--iface",
            veth.outer,
            *flags,
            *ENV_VALUES,
        )
        assert r.returncode == 0, r.stderr
        assert says in r.stdout
        assert last_line(r.stdout).group(1, 4) == ("5000", "0")
        sent[mode] = [f for _, f in cap.stop()]
    ring, each = sent["ring"], sent["each"]

    # seq wraps past 2**32 - 1 back to 0, as a u32 does.
    want = expected(tpl, 77, range(4294967000, 4294967000 + 5000))
    assert len(ring) == len(each) == 5000
    assert ring == each
    assert ring == want


def test_raw_send_without_cap_net_raw_points_to_udp(veth: VethPair, tmp_path: Path) -> None:
    tpl = template_to(tmp_path, veth)
    setpriv = [need("setpriv", "util-linux"), "--bounding-set=-net_raw", "--inh-caps=-net_raw"]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    cmd = [*setpriv, "precast", "send", str(tpl), "--device", "1", "--iface", veth.outer]
    r = subprocess.run([*cmd, *ENV_VALUES], capture_output=True, text=True, env=env)
    assert r.returncode == 2, r
    assert "CAP_NET_RAW" in r.stderr and "--udp" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_missing_interface_is_one_line(tmp_path: Path) -> None:
    r = precast(
        "send", "templates/env-node.toml", "--device", "1", "--iface", "pcsnosuch0", *ENV_VALUES
    )
    assert r.returncode == 2
    assert r.stderr.strip() == "precast: error: no network interface 'pcsnosuch0'"


@pytest.mark.parametrize("per_frame", [False, True], ids=["ring", "per-frame"])
def test_interface_deleted_mid_run_stops_the_sender(tmp_path: Path, per_frame: bool) -> None:
    # A sender left running forever on a vanished interface would spin a core for nothing.
    pair = VethPair("pcsg")
    try:
        tpl = template_to(tmp_path, pair)
        cmd = [
            str(BIN / "precast"),
            "send",
            str(tpl),
            "--device",
            "1",
            "--count",
            "0",
            "--rate",
            "2000",
            "--iface",
            pair.outer,
            *ENV_VALUES,
        ]
        p = subprocess.Popen(
            [*cmd, *(["--per-frame"] if per_frame else [])],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        tx = Path(f"/sys/class/net/{pair.outer}/statistics/tx_packets")
        try:
            # Sending, as the interface's own counter shows: now take the interface away.
            wait_for(lambda: int(tx.read_text()) > 100 or p.poll() is not None, 30, "frames")
            assert p.poll() is None, p.communicate()
        finally:
            pair.close()
        _, err = p.communicate(timeout=10)
    finally:
        pair.close()
    assert p.returncode == 2
    assert (
        err.strip().splitlines()[-1]
        == f"precast: error: network interface {pair.outer!r} went away"
    )
    assert "Traceback" not in err


@pytest.mark.parametrize("rate", [1000, 50000])
def test_rate_holds_over_a_whole_run(veth: VethPair, tmp_path: Path, rate: int) -> None:
    """The wire's kernel timestamps judge the pacer over the whole run.

    A token bucket is never ahead of its rate by more than its burst (0.1 s of frames) plus one
    quantum; a loaded machine can only make it late. So the bounds are tight above (a missing
    or broken pacer sends faster) and loose below (a busy machine sends slower)."""
    tpl = template_to(tmp_path, veth)
    count = 2 * rate
    bucket = TokenBucket(rate)
    ahead = bucket.burst + bucket.quantum + 1  # frames a pacer may send ahead of the clock
    cap = Capture(veth, tmp_path / "rate.pcap")
    r = precast(
        "send",
        str(tpl),
        "--device",
        "5",
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--iface",
        veth.outer,
        *ENV_VALUES,
    )
    assert r.returncode == 0, r.stderr
    frames = cap.stop()
    assert len(frames) == count
    times = [t for t, _ in frames]
    span = times[-1] - times[0]
    measured = (count - 1) / span
    print(f"target {rate}/s: {measured:.0f}/s on the wire over {span:.3f} s")
    assert span >= (count - ahead) / rate, f"{count} frames in {span:.3f} s: ahead of the rate"
    assert measured >= 0.3 * rate, f"{measured:.0f}/s: far behind the rate"
    # Paced, not bursts and waits: no 0.1 s window holds more than 0.1 s of frames and the burst.
    w = 0.1
    most = max(bisect.bisect_right(times, t + w) - i for i, t in enumerate(times))
    assert most <= rate * w + ahead, f"{most} frames in {w} s"
    # The summary's own claim agrees with the wire.
    assert abs(int(last_line(r.stdout).group(3)) - measured) <= 0.05 * measured
