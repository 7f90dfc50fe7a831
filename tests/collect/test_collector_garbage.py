"""Bad input never stops the collector and never becomes a reading; each is counted by reason.

The judge of each datagram's reason is precast.wire.codec.Codec, the reference
decoder; the collector's own fast path must agree with it on every one.
"""

from __future__ import annotations

import socket
import sqlite3
from collections import Counter
from pathlib import Path

import pytest
from collector_harness import LAYOUTS, Collector, payload, stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import KEY, wait_for
from precast import Codec, Rejected
from strategies import examples

JUDGE = Codec(LAYOUTS.values(), key=KEY)
VALID = [
    payload("env-node", {"temperature": 20, "humidity": 50, "pressure": 1, "battery": 2}, 1, 5),
    payload("minimal", {"value": 7}, 2, 9),
    payload("power-meter", {"energy": 1, "power": 1, "voltage": 1, "power_factor": 1}, 3, 4, KEY),
]


def _flip(t: tuple[bytes, int, int]) -> bytes:
    p, at, bits = t
    b = bytearray(p)
    b[at % len(b)] ^= bits
    return bytes(b)


def _big(t: tuple[int, bytes]) -> bytes:
    n, pattern = t
    return (pattern * (n // len(pattern) + 1))[:n]


valid = st.sampled_from(VALID)
datagrams = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=64, max_size=1500),
    st.tuples(st.integers(1473, 65507), st.binary(min_size=1, max_size=8)).map(_big),
    st.tuples(valid, st.integers(0, 64), st.integers(1, 255)).map(_flip),
    st.tuples(valid, st.integers(0, 40)).map(lambda t: t[0][: t[1]]),
    st.tuples(valid, st.binary(min_size=1, max_size=40)).map(lambda t: t[0] + t[1]),
    st.tuples(valid, st.binary(min_size=30, max_size=30)).map(
        lambda t: t[0][:4] + t[1][: len(t[0]) - 4]  # a known header, random rest
    ),
).filter(lambda d: isinstance(JUDGE.decode(d), Rejected))


@pytest.mark.hypothesis  # a property run inside one collector: `make fuzz` picks it too
def test_garbage_never_crashes_and_is_never_stored(tmp_path: Path) -> None:
    col = Collector(tmp_path, "--key", KEY.hex())
    want: Counter[str] = Counter()

    @settings(
        max_examples=examples(150),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(datagrams, min_size=1, max_size=6))
    def check(batch: list[bytes]) -> None:
        for d in batch:
            r = JUDGE.decode(d)
            assert isinstance(r, Rejected)
            want[r.reason] += 1
        col.send(batch)
        assert col.proc.poll() is None, col.stderr()

    try:
        check()
        biggest = b"\xff" * 65507
        col.send([biggest])
        want[JUDGE.decode(biggest).reason] += 1  # type: ignore[union-attr]
        col.send([VALID[1]])  # a sentinel: stored after everything above
        wait_for(lambda: sum(stats(col.db)["rejected"].values()) == sum(want.values()), 20, "all")
        assert col.proc.poll() is None
    finally:
        assert col.stop() == 0, col.stderr()
    assert "Traceback" not in col.stderr()
    doc = stats(col.db)
    assert doc["drops"] == {"queue": 0, "kernel": 0, "jsonl": 0}
    assert doc["rejected"] == dict(want)
    conn = sqlite3.connect(col.db)
    stored = conn.execute("SELECT template, device, seq FROM readings").fetchall()
    conn.close()
    assert stored == [(2, 2, 9)]


def test_a_flood_from_one_source_does_not_hide_the_others(tmp_path: Path) -> None:
    col = Collector(tmp_path)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(20_000):
            flood.sendto(i.to_bytes(4, "big") * 4, ("127.0.0.1", col.port))
            if i % 1000 == 0:
                col.send([payload("minimal", {"value": i % 65536}, 77, i // 1000)])
    finally:
        flood.close()
        assert col.stop() == 0
    doc = stats(col.db)
    assert doc["devices"][0]["received"] == 20
    assert sum(doc["rejected"].values()) + doc["drops"]["kernel"] == 20_000
