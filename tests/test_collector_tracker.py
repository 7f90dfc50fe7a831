"""The tracker's sliding bitmap against the definitions counted with sets; the store keeps it."""

from __future__ import annotations

from pathlib import Path

import pytest
from collector_harness import LAYOUTS, expected_counts
from hypothesis import given, settings
from hypothesis import strategies as st
from precast.collect.store import open_store
from precast.collect.tracker import DUPLICATE, REPLAY, Tracker
from strategies import examples


def run(tracker: Tracker, seqs: list[int], device: int = 1, mic: bool = False) -> list[int]:
    return [tracker.observe(device, 2, s, float(i), mic) for i, s in enumerate(seqs)]


def counts(tracker: Tracker, device: int = 1) -> dict[str, int]:
    d = tracker.devices[device]
    return {
        "received": d.received,
        "duplicates": d.duplicates,
        "late": d.late,
        "lost": d.lost,
        "last_seq": d.highest,
    }


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=400), st.integers(0, 2**32 - 400))
def test_tracker_matches_the_definitions(seqs: list[int], base: int) -> None:
    """Inside the window, every counter equals its definition over the whole arrival list."""
    seqs = [base + s for s in seqs]
    t = Tracker(window=300)
    out = run(t, seqs)
    assert counts(t) == expected_counts(seqs)
    assert out.count(DUPLICATE) == len(seqs) - len(set(seqs))
    assert REPLAY not in out


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.integers(0, 100), min_size=1, max_size=200), st.integers(1, 199))
def test_store_round_trip_continues_counting(seqs: list[int], cut: int) -> None:
    """Saved and loaded half way (a restart), the counts are those of one uninterrupted run."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        store = open_store(str(Path(d) / "t.db"))
        store.ensure_templates(LAYOUTS.values())
        a = Tracker(window=128)
        run(a, seqs[:cut])
        store.write({}, a.take_dirty(), {}, {})
        b = Tracker(window=128)
        for dev in store.load_devices():
            b.load(dev)
        for i, s in enumerate(seqs[cut:]):
            b.observe(1, 2, s, float(i), False)
        store.close()
    whole = Tracker(window=128)
    run(whole, seqs)
    assert counts(b) == counts(whole) == expected_counts(seqs)


@pytest.mark.parametrize("mic", [False, True])
def test_window_edge(mic: bool) -> None:
    """Exactly `window` below the highest is inside (late); one more is a reboot or a replay."""
    t = Tracker(window=10)
    assert run(t, [20, 10], mic=mic) == [0, 0]
    assert counts(t)["late"] == 1 and counts(t)["lost"] == 9
    out = t.observe(1, 2, 9, 5.0, mic)
    d = t.devices[1]
    if mic:
        assert out == REPLAY and d.replays == 1 and d.reboots == 0 and d.highest == 20
    else:
        assert out == 1 and d.reboots == 1 and d.epoch == 1 and d.highest == 9
        assert d.received == 3 and d.lost == 9  # the old epoch's loss stays counted
        assert t.observe(1, 2, 10, 6.0, mic) == 1 and d.lost == 9


def test_late_below_the_first_reading_counts_the_gap() -> None:
    t = Tracker(window=50)
    run(t, [10, 11, 5])
    assert (
        counts(t)
        == expected_counts([10, 11, 5])
        == {
            "received": 3,
            "duplicates": 0,
            "late": 1,
            "lost": 4,
            "last_seq": 11,
        }
    )


def test_bad_checks_count_only_known_devices() -> None:
    t = Tracker()
    t.bad_check(5)
    assert 5 not in t.devices
    run(t, [0], device=5)
    t.bad_check(5)
    assert t.devices[5].bad == 1
