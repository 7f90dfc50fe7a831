"""`send` and `simulate` through an outage: kept readings go out late, oldest first, with ages.

Judges: scapy reads the pcap (its own checksums, the capture's timestamps) and
the collector's books (lost = what the backlog dropped, every sent reading
stored once).
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable

from kit import TEMPLATES, precast
from precast.collect.utc import parse_iso
from precast.pytest_plugin import FleetRun, PrecastCollector
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import rdpcap

RATE = 40.0


def test_send_keeps_an_outage_and_sends_it_late_oldest_first(tmp_path) -> None:
    pcap = tmp_path / "outage.pcap"
    r = precast(
        "send", str(TEMPLATES / "minimal.toml"), "--device", "5", "--count", "60",
        "--rate", str(RATE), "--outage", "0.5:0.5", "--backlog", "8", "--pcap", str(pcap),
        "--no-progress", "value=5",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    m = re.search(r"backlog: kept (\d+), sent late (\d+), dropped (\d+)", r.stdout)
    assert m, r.stdout
    kept, late, dropped = map(int, m.groups())
    assert 15 <= kept <= 25 and late == 8 and dropped == kept - 8, r.stdout
    frames = []
    for pkt in rdpcap(str(pcap)):
        raw = bytes(pkt)
        again = Ether(raw)
        del again[IP].chksum, again[IP].len, again[UDP].chksum, again[UDP].len
        assert bytes(again) == raw  # scapy's own lengths and checksums
        payload = bytes(pkt[UDP].payload)
        seq = struct.unpack_from(">I", payload, 8)[0]
        delayed = bool(payload[1] & 0x02)
        age = struct.unpack_from(">I", payload, 14)[0] if delayed else 0
        assert len(payload) == (20 if delayed else 16)
        frames.append((float(pkt.time), seq, delayed, age))
    seqs = [s for _, s, _, _ in frames]
    assert len(seqs) == len(set(seqs)) == 60 - dropped
    missing = sorted(set(range(60)) - set(seqs))
    late = [s for _, s, d, _ in frames if d]
    # the oldest readings of the outage were dropped, the newest 8 sent late, in order
    assert missing == list(range(missing[0], missing[0] + dropped))
    assert late == list(range(missing[-1] + 1, missing[-1] + 9))
    # oldest first, before newer readings, at most 4 before each new one
    run = 0
    for _, _s, d, _ in frames:
        run = run + 1 if d else 0
        assert run <= 4
    first_late = seqs.index(late[0])
    assert all(s < late[0] for s in seqs[:first_late])
    # the time of taking (capture time minus age) runs with the seq, one reading a slot
    taken = sorted((s, t - age / 1000) for t, s, _, age in frames)
    for (s0, t0), (s1, t1) in itertools.pairwise(taken):
        assert t1 > t0, (s0, s1)
    slots = (taken[-1][1] - taken[0][1]) / (taken[-1][0] - taken[0][0])
    assert 0.8 / RATE < slots < 2.0 / RATE, slots


def test_a_fleet_outage_reaches_the_collector_as_delayed_readings(
    sensor_fleet: Callable[..., FleetRun], precast_collector: PrecastCollector
) -> None:
    run = sensor_fleet(devices=3, rate=300, duration=1.5, outage=(0.4, 0.5), backlog=20)
    assert run.sent_late == 3 * 20 and run.dropped > 0, run.output
    assert run.kept == run.sent_late + run.dropped
    precast_collector.wait_for_readings(run.sent)
    stats = precast_collector.stats()
    assert sum(d["lost"] for d in stats["devices"]) == run.dropped
    assert sum(d["duplicates"] for d in stats["devices"]) == 0
    assert not sum(stats["rejected"].values())
    assert precast_collector.count() == run.sent
    # the late readings are stored at their time of taking: counted, and in seq order in time
    readings = precast_collector.readings()
    late = [r for r in readings if r["taken_at"] != r["received_at"]]
    assert len(late) == run.sent_late == sum(d["delayed"] for d in stats["devices"])
    assert all(r["taken_at"] < r["received_at"] for r in late)
    for dev in {r["device"] for r in readings}:
        times = [parse_iso(r["taken_at"]) for r in readings if r["device"] == dev]  # by seq
        # an age is whole ms (floored) and a live reading's time is its arrival: 2 ms of slack
        assert all(t0 <= t1 + 0.002 for t0, t1 in itertools.pairwise(times)), dev


def test_an_outage_needs_a_rate_and_a_well_formed_span() -> None:
    base = ["send", str(TEMPLATES / "minimal.toml"), "--device", "1", "--pcap", "/dev/null"]
    for extra, says in [
        (["--outage", "1:2"], "--outage needs --rate"),
        (["--rate", "5", "--outage", "1"], "START:SECONDS"),
        (["--rate", "5", "--outage", "1:-2"], "START:SECONDS"),
        (["--rate", "5", "--outage", "1:2", "--backlog", "-1"], "must be 0 or more"),
    ]:
        r = precast(*base, *extra, "value=5")
        assert r.returncode == 2 and says in r.stderr, (extra, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
