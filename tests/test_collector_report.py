"""The collector's account of refusals: one line at once with the likely cause, then counts
once a minute per source and reason, whatever the flood; the latest kept, newest first."""

from __future__ import annotations

import logging

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
