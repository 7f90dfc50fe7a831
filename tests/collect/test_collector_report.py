"""The collector's account of refusals: one line at once with the likely cause, then counts
once a minute per source and reason, whatever the flood; the latest kept, newest first."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from precast.collect.report import EVERY_S, MAX_KEYS, RECENT, Reporter, header_ids
from precast.wire.constants import MIC, NO_KEY, UNKNOWN_TEMPLATE

# A payload header: magic, version 1 flags 1, template 3, device 9, seq 0; then filler.
HDR = bytes.fromhex("501100030000000900000000") + bytes(12)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def reporter(clock: Clock, keyed: set[int] = frozenset()) -> Reporter:  # type: ignore[assignment]
    return Reporter(lambda: [1, 2], lambda d: d in keyed, clock)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records]
    caplog.clear()
    return out


def test_a_wrong_key_is_named_for_a_device_with_a_key_on_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "precast.collect")
    r = reporter(Clock(), keyed={9})
    r.refused(MIC, "10.0.0.5:4000", HDR)
    (line,) = lines(caplog)
    assert line == (
        "refused from 10.0.0.5:4000: mic (device 9, template id 3): wrong key for device 9? "
        "(the collector has one on file)"
    )


def test_a_bad_mic_from_a_device_with_good_ones_is_not_called_a_wrong_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "precast.collect")
    r = Reporter(lambda: [3], lambda d: True, Clock(), proven=lambda d: d == 9)
    r.refused(MIC, "a:1", HDR)
    (line,) = lines(caplog)
    assert "corrupted on the way, or forged" in line and "wrong key" not in line


def test_hints_for_no_key_and_an_unknown_template(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "precast.collect")
    r = reporter(Clock())
    r.refused(NO_KEY, "a:1", HDR)
    r.refused(UNKNOWN_TEMPLATE, "a:1", HDR)
    r.refused("magic", "b:2", b"GET / HTTP/1.0\r\n")
    got = lines(caplog)
    assert "no key for device 9 (add it to --keys, or give --key)" in got[0]
    assert "template id 3 is not among the loaded templates (ids 1, 2)" in got[1]
    assert got[2].startswith("refused from b:2: magic: not a precast payload")


def test_a_flood_is_one_line_a_minute_per_source_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "precast.collect")
    clock = Clock()
    r = reporter(clock)
    for i in range(10_000):  # 100 s of 100 refusals a second
        clock.t += 0.01
        r.refused(MIC, "a:1", HDR)
        if i % 100 == 0:
            r.flush()
    got = lines(caplog)
    assert len(got) == 1 + 1  # the first at once, one count line after the first minute
    assert got[1].startswith("refused from a:1: mic x6000 in the last 60 s (devices 9)")
    r.flush(force=True)
    (last,) = lines(caplog)
    assert "mic x3999" in last  # every refusal is in a line: 1 + 6000 + 3999


def test_a_flood_of_sources_cannot_grow_the_tallies(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "precast.collect")
    r = reporter(Clock())
    for i in range(MAX_KEYS + 5000):
        r.refused(MIC, f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}:1", HDR)
    assert len(r._tallies) <= MAX_KEYS + 1
    assert len(lines(caplog)) == MAX_KEYS + 1  # then the rest share one tally


def test_recent_refusals_are_bounded_newest_first() -> None:
    clock = Clock()
    r = reporter(clock)
    for i in range(RECENT + 10):
        clock.t += 1
        r.refused(MIC, f"s:{i}", HDR)
    assert len(r.recent) == RECENT
    assert r.recent[0]["source"] == f"s:{RECENT + 9}" and r.recent[0]["device"] == 9
    assert r.recent[0]["at"] > r.recent[-1]["at"]


def test_quiet_pairs_are_forgotten_so_the_next_refusal_logs_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "precast.collect")
    clock = Clock()
    r = reporter(clock)
    r.refused(MIC, "a:1", HDR)
    clock.t += EVERY_S + 1
    r.flush()
    r.refused(MIC, "a:1", HDR)
    assert len(lines(caplog)) == 2


def test_header_ids() -> None:
    assert header_ids(HDR) == (3, 9)
    assert header_ids(b"\x50\x10") == (None, None)
    assert header_ids(b"x" * 20) == (None, None)


def test_a_collector_with_the_wrong_key_says_so_and_stats_names_the_source(tmp_path: Path) -> None:
    """End to end: a real collector, a board whose key is not the collector's."""
    from collector_harness import Collector, payload, stats
    from kit import wait_for

    keys = tmp_path / "keys"
    keys.write_text("9 2b7e151628aed2a6abf7158809cf4f3c\n")
    keys.chmod(0o600)
    col = Collector(tmp_path, "--keys", str(keys))
    try:
        wrong = bytes(16)  # the board's key
        values = {"energy": 1, "power": 2, "voltage": 230, "power_factor": 0.5}
        col.send(payload("power-meter", values, 9, s, wrong) for s in range(5))
        col.send([payload("minimal", {"value": 1}, 4, 0), b"hello"])  # a device, garbage
        ours = f"127.0.0.1:{col.sock.getsockname()[1]}"  # bound by the first send
        wait_for(lambda: len(stats(col.db)["recent_rejects"]) == 6, 10, "the refusals in stats")
        doc = stats(col.db)
    finally:
        assert col.stop() == 0
    log = col.stderr()
    assert "wrong key for device 9? (the collector has one on file)" in log
    assert log.count("refused from 127.0.0.1:") == 3  # mic, short, and the count of the rest
    assert "mic x4 in the last" in log  # the other four, counted on the way out
    assert "new device 4: template minimal (2), from 127.0.0.1:" in log
    newest = doc["recent_rejects"][0]
    assert (newest["reason"], newest["device"]) == ("short", None)
    mic = doc["recent_rejects"][1]
    assert (mic["reason"], mic["device"], mic["template"]) == ("mic", 9, 3)
    assert mic["source"] == ours
