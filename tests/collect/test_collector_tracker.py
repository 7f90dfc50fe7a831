"""The tracker's sliding bitmap against the definitions counted with sets; the store keeps it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from collector_harness import LAYOUTS, expected_counts
from hypothesis import given, settings
from hypothesis import strategies as st
from precast.collect.store import open_store
from precast.collect.tracker import (
    CONFLICT,
    DEVICE_LIMIT,
    DUPLICATE,
    HELD,
    MAX_GAP,
    MIC_REQUIRED,
    REPLAY,
    Held,
    Observed,
    Tracker,
    Verdict,
)
from strategies import examples


def stored(epoch: int) -> Observed:
    return Observed(Verdict.STORED, epoch)


def run(tracker: Tracker, seqs: list[int], device: int = 1, mic: bool = False) -> list[Observed]:
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
    """Exactly `window` below the highest is inside (late); one more is a replay (MIC) or a
    reboot candidate (CRC), a reboot once the next seq confirms it."""
    t = Tracker(window=10)
    assert run(t, [20, 10], mic=mic) == [stored(0), stored(0)]
    assert counts(t)["late"] == 1 and counts(t)["lost"] == 9
    out = t.observe(1, 2, 9, 5.0, mic)
    d = t.devices[1]
    if mic:
        assert out == REPLAY and d.replays == 1 and d.reboots == 0 and d.highest == 20
    else:
        assert out == HELD and d.reboots == 0 and d.highest == 20 and d.cand_seq == 9
        ok = t.observe(1, 2, 10, 6.0, mic)
        assert ok.verdict is Verdict.STORED and ok.epoch == 1
        assert ok.held is not None and ok.held.epoch == 1 and ok.held.at == 5.0
        assert d.reboots == 1 and d.epoch == 1 and d.lowest == 9 and d.highest == 10
        assert d.received == 4 and d.lost == 9  # the old epoch's loss stays counted


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


def test_far_jumps_are_held_until_confirmed() -> None:
    """A seq far ahead (CRC or MIC) is held; a second close after it confirms a new epoch; a
    normal frame drops it (counted in discarded). MIC backwards stays a replay."""
    for mic in (False, True):
        t = Tracker(window=64)
        run(t, list(range(10)), mic=mic)
        t.begin()
        assert t.observe(1, 2, 10 + MAX_GAP + 1, 20.0, mic) == HELD
        assert t.observe(1, 2, 10, 21.0, mic) == stored(0) and t.discarded == 1
        d = t.devices[1]
        assert (d.highest, d.lost, d.reboots, d.cand_seq) == (10, 0, 0, -1)
        far = 10**9
        # (the device's last reading 21 s after its first, 10 seqs: silent 3 intervals by 28.0)
        assert t.observe(1, 2, far, 42.0, mic, b"held") == HELD
        assert t.observe(1, 2, far + 2, 43.0, mic) == (
            Verdict.STORED,
            1,
            Held(b"held", 42.0, "", 1),
        )
        assert (d.epoch, d.lowest, d.highest, d.lost, d.reboots) == (1, far, far + 2, 1, 1)
        assert t.observe(1, 2, far + 1, 44.0, mic) == stored(1) and d.lost == 0  # late, inside
        assert t.observe(1, 2, 5, 45.0, mic) == (REPLAY if mic else HELD)


def test_mic_device_refuses_crc_frames_and_a_limit_spares_mic_and_keyed() -> None:
    t = Tracker(max_devices=2, keyed={9})
    assert t.observe(1, 3, 0, 0.0, True) == stored(0)
    assert t.observe(1, 2, 5, 1.0, False) == MIC_REQUIRED
    assert t.observe(9, 2, 0, 1.0, False) == MIC_REQUIRED and 9 not in t.devices
    assert t.observe(2, 2, 0, 1.0, False) == stored(0)
    assert t.observe(3, 2, 0, 1.0, False) == DEVICE_LIMIT and 3 not in t.devices
    assert t.observe(4, 3, 0, 1.0, True) == stored(0)  # a valid MIC is always admitted
    assert t.observe(9, 3, 0, 1.0, True) == stored(0)
    d = t.devices[1]
    assert (d.received, d.highest, d.auth) == (1, 0, "mic")
    # A device known from CRC frames only (anyone's) starts a new epoch at its first MIC.
    run(t, [2**31], device=2)
    assert t.observe(2, 3, 7, 2.0, True) == stored(1) and t.devices[2].auth == "mic"
    assert t.devices[2].highest == 7


def test_rollback_undoes_a_batch_the_store_refused() -> None:
    t = Tracker()
    run(t, [0, 1, 2])
    t.take_dirty()
    t.commit()
    t.begin()
    run(t, [3, 4, 9])
    run(t, [0], device=2)
    t.take_dirty()
    t.rollback()
    assert 2 not in t.devices and t.devices[1].highest == 2 and t.devices[1].received == 3
    assert t.dirty == {1}


def frame(seq: int, value: int) -> bytes:
    """A stand-in for a frame's bytes: its digest is the seq and the value (its last 4 bytes)."""
    return b"P" * 8 + seq.to_bytes(4, "big") + value.to_bytes(4, "big")


def test_a_second_crc_sequence_is_refused_until_the_first_falls_silent() -> None:
    """Issue 21's attack 2: a forged stream at seq + 2**31 + i, three frames to each of a device
    at 100/s. Every real reading stored, no loss, no reboot; every forged frame refused as a
    `conflict` (the first held, then refused with the second). Once the real device is
    silent for the quiet period, the other sequence takes the device over (a reboot)."""
    t = Tracker()
    t.begin()
    real, forged = [], []
    f = 2**31
    for i in range(300):
        real.append(t.observe(5, 2, i, i / 100, False, frame(i, 1), "real"))
        for _ in range(3):
            forged.append(t.observe(5, 2, f, i / 100, False, frame(f, 2), "forger"))
            f += 1
    d = t.devices[5]
    assert set(real) == {stored(0)}
    assert forged[0] == HELD and set(forged[1:]) == {CONFLICT}
    assert (d.received, d.lost, d.reboots, d.epoch, d.highest) == (300, 0, 0, 0, 299)
    assert (d.conflicts, t.conflicted, t.discarded) == (900, 1, 0)
    assert (d.rival_seq, d.rival_source, d.source) == (f - 1, "forger", "real")
    # silent for less than the quiet period: still the established one's
    assert t.observe(5, 2, f, 3.5, False, frame(0, 3)) == CONFLICT
    # a second after its last reading (and more than 3 intervals): the other one takes over
    assert t.observe(5, 2, f + 1, 4.0, False, frame(0, 4)) == stored(1)
    assert (d.reboots, d.epoch, d.lowest, d.rival_seq, d.lost) == (1, 1, f + 1, -1, 0)
    # a MIC device keeps today's rules: a confirmed far jump is a new epoch
    m = Tracker()
    run(m, list(range(10)), device=6, mic=True)
    assert m.observe(6, 2, 10 + MAX_GAP + 1, 9.0, True) == HELD
    assert m.observe(6, 2, 10 + MAX_GAP + 2, 9.0, True).verdict is Verdict.STORED


def test_a_rival_that_falls_silent_is_forgotten() -> None:
    t = Tracker()
    run(t, list(range(100)))  # 0..99 at t = 0..99 s: an interval of 1 s, quiet after 3 s
    assert t.observe(1, 2, 5000, 99.5, False) == HELD
    assert t.observe(1, 2, 5001, 99.5, False) == CONFLICT
    assert t.observe(1, 2, 100, 100.0, False) == stored(0)
    assert t.observe(1, 2, 101, 103.0, False) == stored(0)  # the rival silent 3.5 s
    assert t.observe(1, 2, 5002, 103.1, False) == HELD  # far again, not the rival's
    assert t.devices[1].rival_seq == -1


def test_a_frame_identical_to_one_stored_is_a_replay_in_any_epoch() -> None:
    """Issue 21's attack 3: after an operator's reset, recorded frames (ahead of the device's
    new count, or just below its new start) are refused as replays; a CRC device's frames
    replayed after it moved past the window make no fake reboot; a batch rolled back forgets
    its digests."""
    t = Tracker(window=64)
    for s in range(4900, 5100):
        t.observe(1, 3, s, 0.0, True, frame(s, 7))
    assert t.reset(1)
    # the wiped device restarts at 1: its new frames differ from the old ones
    assert t.observe(1, 3, 1, 10.0, True, frame(1, 8)) == HELD
    assert t.observe(1, 3, 2, 10.0, True, frame(2, 8)).verdict is Verdict.STORED
    old = [t.observe(1, 3, s, 10.0, True, frame(s, 7)) for s in range(4900, 5100)]
    assert set(old) == {REPLAY} and t.devices[1].highest == 2
    assert t.observe(1, 3, 3, 10.0, True, frame(3, 8)) == stored(1)
    # a reset, and the position set just above the old frames: those below are no late ones
    assert t.reset(1)
    assert t.observe(1, 3, 5100, 11.0, True, frame(5100, 9)) == HELD
    assert t.observe(1, 3, 5101, 11.0, True, frame(5101, 9)).epoch == 2
    below = [t.observe(1, 3, s, 11.0, True, frame(s, 7)) for s in range(5037, 5100)]
    assert set(below) == {REPLAY} and t.devices[1].late == 0
    assert t.devices[1].replays == 263
    # CRC: 300 readings, then the same frames 100-199 again (a spill replayed twice)
    c = Tracker(window=64)
    for s in range(300):
        c.observe(2, 2, s, s * 10.0, False, frame(s, 1))
    again = [c.observe(2, 2, s, 5000.0, False, frame(s, 1)) for s in range(100, 200)]
    d = c.devices[2]
    assert set(again) == {REPLAY} and (d.reboots, d.epoch, d.replays) == (0, 0, 100)
    # a frame that differs is held as ever
    assert c.observe(2, 2, 100, 5000.0, False, frame(100, 2)) == HELD
    # rolled back, a batch's frames are not taken for replays when it is run again
    c.take_dirty()
    c.commit()
    c.begin()
    assert c.observe(2, 2, 300, 5001.0, False, frame(300, 1)) == stored(0)
    c.rollback()
    c.begin()
    assert c.observe(2, 2, 300, 5001.0, False, frame(300, 1)) == stored(0)


def test_the_digests_are_bounded() -> None:
    from precast.collect.replays import DIGEST, KEPT, SLACK

    t = Tracker()
    for s in range(5000):
        t.begin()
        t.observe(1, 2, s, 0.0, False, frame(s, 1))
        t.take_dirty()
        t.commit()
    assert len(t.digests[1].data) <= (KEPT + SLACK) * DIGEST
    assert t.observe(1, 2, 4000, 0.0, False, frame(4000, 1)) == DUPLICATE


def test_window_conversion_on_load_never_turns_replays_late(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "t.db"))
    store.ensure_templates(LAYOUTS.values())
    a = Tracker(window=16)
    run(a, list(range(100)), mic=True)
    store.write({}, a.take_dirty(), {}, {})
    b = Tracker(window=64)
    for dev in store.load_devices():
        b.load(dev)
    store.close()
    out = run(b, list(range(100)), mic=True)
    assert set(out) == {DUPLICATE, REPLAY} and out.count(DUPLICATE) == 65
    assert b.devices[1].seen_window == 64


def test_a_version_1_database_is_migrated_and_keeps_counting(tmp_path: Path) -> None:
    """A database written before schema 2 (no auth, window or candidate columns) opens."""
    db = tmp_path / "v1.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE templates (id INTEGER PRIMARY KEY, name TEXT NOT NULL, tbl TEXT NOT NULL,
            columns TEXT NOT NULL);
        CREATE TABLE devices (device INTEGER PRIMARY KEY, template INTEGER, epoch INTEGER,
            epoch_seq INTEGER, epoch_started REAL, lowest INTEGER, highest INTEGER, seen BLOB,
            received INTEGER, lost INTEGER, duplicates INTEGER, late INTEGER, bad INTEGER,
            reboots INTEGER, replays INTEGER, first_seen REAL, last_seen REAL);
        CREATE TABLE rejects (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
        CREATE TABLE counters (name TEXT PRIMARY KEY, count INTEGER NOT NULL);
        INSERT INTO devices VALUES (7, 2, 0, 0, 1.0, 0, 9, x'03ff', 10, 0, 0, 0, 0, 0, 0, 1, 2);
        PRAGMA user_version=1;
        """
    )
    conn.close()
    store = open_store(str(db))
    store.ensure_templates(LAYOUTS.values())
    (dev,) = store.load_devices()
    assert (dev.device, dev.highest, dev.received, dev.auth, dev.seen_window) == (7, 9, 10, "", 0)
    t = Tracker()
    t.load(dev)
    assert t.observe(7, 2, 5, 3.0, False) == DUPLICATE
    assert t.observe(7, 2, 10, 3.0, False) == stored(0)
    store.write({}, t.take_dirty(), {}, {})
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert conn.execute("SELECT received, seen_window FROM devices").fetchone() == (11, 1024)
    conn.close()


def test_stats_and_metrics_stay_fast_at_the_device_limit(tmp_path: Path) -> None:
    """10,000 devices: `stats --json` well under 2 s; a /metrics scrape capped and fast.
    CPU seconds of this process, not wall time: the judge must not depend on the load."""
    import io
    import json
    import time
    import urllib.request
    from contextlib import redirect_stdout

    from precast.cli import main
    from precast.collect.metrics import serve_metrics

    t = Tracker()
    for dev in range(10_000):
        t.observe(dev, 2, 0, float(dev), False)
    store = open_store(str(tmp_path / "s.db"))
    store.ensure_templates(LAYOUTS.values())
    store.write({}, t.take_dirty(), {"device-limit": 5}, {})
    store.close()
    out = io.StringIO()
    t0 = time.process_time()
    with redirect_stdout(out):
        assert main(["stats", "--db", str(tmp_path / "s.db"), "--json"]) == 0
    took = time.process_time() - t0
    doc = json.loads(out.getvalue())
    assert len(doc["devices"]) == doc["devices_total"] == 10_000 and took < 2.0, took
    assert doc["rejected"] == {"device-limit": 5}
    status = {
        "devices": list(t.devices.values()),
        "rejects": {},
        "counters": {"queue_drops": 0, "kernel_drops": 0, "jsonl_drops": 0},
        "queue": 0,
    }
    host, port = serve_metrics(lambda: status, ("127.0.0.1", 0), 100)
    t0 = time.process_time()
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    took = time.process_time() - t0  # the server is a thread of this process
    assert took < 1.0, took
    assert text.count("precast_device_received_total{") == 100
    assert 'device="9999"' in text and 'device="0"' not in text  # the last seen
    assert 'precast_rejected_total{reason="mic-required"} 0.0' in text
    assert "precast_devices 10000.0" in text
