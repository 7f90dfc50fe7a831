"""The array path (wire/batch.py, collect/arrays.py) against the per-frame path, frame by frame.

The per-frame path is what the collector did before batches were arrays:
validator.Validator.check on each datagram, Tracker.bad_check for a failed
check that names a device, Tracker.observe for a valid frame. Both run on
the same fuzzed batches from the same books, one batch after another, and
must agree on every frame's reason or epoch, on the held frames each frame
confirms, and afterwards on every device's books, the changed set, the
undo log and the discarded candidates. The batches mix every refusal
reason, both check kinds (a cmac4 and a cmac8 template beside two crc16
ones, devices with a key of their own, devices with no key at all), many
devices, runs of seqs in order (the fast path) and reordering, duplicates,
gaps, far jumps and their confirmation, replays, resets, keys given by a reload and the device
limit.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import KEY, TEMPLATES
from precast import compile_template, parse_template
from precast.collect.arrays import judge
from precast.collect.tracker import MAX_GAP, Observed, Tracker, Verdict
from precast.wire.batch import BatchValidator, reason_of
from precast.wire.codec import Codec, encode_raw
from precast.wire.constants import NO_KEY, PAYLOAD_OFFSET
from precast.wire.layout import load_layouts
from precast.wire.validator import Validator
from strategies import examples

CMAC4 = compile_template(
    parse_template(
        {
            "id": 40,
            "check": "cmac4",
            "field": [{"name": "a", "type": "i16"}, {"name": "b", "type": "u8"}],
        }
    )
)
LAYOUTS = [*load_layouts([TEMPLATES]), CMAC4]
OTHER_KEY = bytes(range(16))
DEVICES = 8
# devices 0..11: 3 and 4 have keys of their own (keyed: MIC only); 5 has none when the
# default key is off
OWN_KEYS = {3: OTHER_KEY, 4: KEY}
SEQ_MODES = ["next"] * 10 + [
    "dup",
    "late",
    "gap",
    "far",
    "back",
    "confirm",
    "wrap",
    "zero",
    "stray",
]
SPOIL = ["none"] * 12 + [
    "short",
    "magic",
    "version",
    "flags",
    "unknown",
    "kind",
    "length",
    "check",
    "ethernet",
    "garbage",
]

Outcome = str | Observed


def per_frame(
    v: Validator, t: Tracker, datagrams: list[bytes], now: float
) -> tuple[list[Outcome], dict[int, Any]]:
    """The per-frame path, as the collector's storing thread ran it frame by frame."""
    out: list[Outcome] = []
    confirmed: dict[int, Any] = {}
    for i, data in enumerate(datagrams):
        reason, sp, body = v.check(data)
        if reason:
            if body is not None and reason != NO_KEY:
                t.bad_check(body[3])
            out.append(reason)
            continue
        assert sp is not None and body is not None
        e = t.observe(body[3], sp.id, body[4], now, sp.mic, data, f"src{i}")
        if e.verdict is Verdict.HELD:
            t.devices[body[3]].cand_source = f"src{i}"
        out.append(e)
    return out, confirmed


def as_arrays(datagrams: list[bytes], junk: bytes) -> tuple[Any, Any]:
    """The batch as the array receiver leaves it: rows of stale bytes, each datagram in front."""
    width = max(map(len, datagrams), default=0) + 3
    rows = np.frombuffer((junk * (len(datagrams) * width + 1))[: len(datagrams) * width], np.uint8)
    rows = rows.reshape(len(datagrams), width).copy()
    for i, d in enumerate(datagrams):
        rows[i, : len(d)] = np.frombuffer(d, np.uint8)
    return rows, np.array([len(d) for d in datagrams], dtype=np.int64)


def array_path(
    b: BatchValidator, t: Tracker, datagrams: list[bytes], now: float, junk: bytes
) -> tuple[list[Outcome], dict[int, Any], int]:
    rows, lens = as_arrays(datagrams, junk)
    j = judge(b, t, rows, lens, now, lambda i: f"src{i}")
    out: list[Outcome] = [
        reason_of(c) if c else e  # type: ignore[misc]
        for c, e in zip(j.checked.code.tolist(), j.verdicts, strict=True)
    ]
    return out, {}, j.slow


def spoil(how: str, payload: bytes, lay_index: int, flip: int) -> bytes:
    p = bytearray(payload)
    lay = LAYOUTS[lay_index]
    if how == "short":
        return bytes(p[: flip % 14])
    if how == "magic":
        p[0] ^= 1 + flip % 255
    elif how == "version":
        p[1] ^= 0x10 << (flip % 4)
    elif how == "flags":
        p[1] |= 2 << (flip % 3)
    elif how == "unknown":
        p[2:4] = (1000 + flip % 100).to_bytes(2, "big")
    elif how == "kind":
        p[1] ^= 1
    elif how == "length":
        return bytes(p + b"\x00" * (1 + flip % 3)) if flip % 2 else bytes(p[:-1])
    elif how == "check":
        p[4 + flip % (len(p) - 4)] ^= 1 + flip % 255
    elif how == "ethernet":
        return lay.frame[:PAYLOAD_OFFSET] + bytes(p)
    elif how == "garbage":
        return bytes((flip * 7 + i * 13) & 0xFF for i in range(flip % 40))
    return bytes(p)


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    """The books' settings, the keys, and batches of (device, template, seq mode, spoil)."""
    events = st.tuples(
        st.integers(0, DEVICES - 1),
        st.integers(0, len(LAYOUTS) - 1),
        st.sampled_from(SEQ_MODES),
        st.sampled_from(SPOIL),
        st.integers(0, 1 << 20),
    )
    return {
        "window": draw(st.sampled_from([1, 3, 64, 1024])),
        "max_devices": draw(st.sampled_from([4, 10_000])),
        "default_key": draw(st.sampled_from([KEY, None])),
        "own_keys": draw(st.booleans()),
        "mic_devices": draw(st.sets(st.integers(0, DEVICES - 1), max_size=4)),
        "batches": draw(st.lists(st.lists(events, max_size=80), min_size=1, max_size=4)),
        # per batch, devices that send seq after seq, unspoiled: the fast path's case
        "calm": draw(st.lists(st.sets(st.integers(0, DEVICES - 1)), min_size=4, max_size=4)),
        "rekey": draw(st.booleans()),  # a reload gives devices 3 and 4 keys of their own
        "resets": draw(st.lists(st.integers(0, DEVICES - 1), max_size=3)),
        "rollback": draw(st.lists(st.booleans(), min_size=4, max_size=4)),
        "junk": draw(st.binary(min_size=1, max_size=7)),
    }


def datagrams_of(
    sc: dict[str, Any], batch: list[Any], calm: set[int], cursor: dict[int, int]
) -> list[bytes]:
    """The batch's payloads: seqs moved from each device's cursor by its mode."""
    out = []
    for dev, li, mode, how, r in batch:
        if dev in calm:
            li, mode, how, r = dev % 2, "next", "none", r | 1
        lay = LAYOUTS[li]
        if dev in sc["mic_devices"] and not lay.template.mic and how == "none" and r % 4:
            # a device that signs mostly sends MIC frames (and now and then a CRC one)
            lay = LAYOUTS[2] if r % 2 else CMAC4
        c = cursor.get(dev, r % 5000)
        seq = {
            "next": c + 1,
            "dup": c,
            "late": c - 1 - r % 6,
            "gap": c + 2 + r % 40,
            "far": c + MAX_GAP + 1 + r % 1000,
            "back": c - 2000 - r % 3,
            "confirm": c + 1 + r % 20,
            "wrap": 0xFFFFFFFF - r % 3,
            "zero": r % 3,
            "stray": c + MAX_GAP + 1 + r % 1000,  # a far frame the device's next ones ignore
        }[mode] & 0xFFFFFFFF
        if mode in ("next", "gap", "far", "confirm", "wrap", "zero"):
            cursor[dev] = seq
        key = OWN_KEYS.get(dev, KEY) if sc["own_keys"] else KEY
        raw = [r % 100 for _ in lay.fields]
        age = (r >> 4) % 100_000 if r % 9 == 0 else None  # now and then a delayed frame
        payload = encode_raw(lay, raw, dev, seq, key, age_ms=age)[PAYLOAD_OFFSET:]
        out.append(spoil(how, payload, li, r))
    return out


def books(t: Tracker) -> tuple[Any, ...]:
    return (t.devices, t.dirty, t.discarded, t._undo)


@settings(max_examples=examples(150), deadline=None)
@given(scenario())
def test_the_array_path_gives_the_per_frame_verdicts(sc: dict[str, Any]) -> None:
    keys = OWN_KEYS if sc["own_keys"] else {}
    codec = Codec(LAYOUTS, key=sc["default_key"], keys=keys)
    v = Validator(codec)
    b = BatchValidator(v)
    ref = Tracker(sc["window"], sc["max_devices"], keyed=set(keys))
    arr = Tracker(sc["window"], sc["max_devices"], keyed=set(keys))
    cursor: dict[int, int] = {}
    for n, batch in enumerate(sc["batches"]):
        datagrams = datagrams_of(sc, batch, sc["calm"][n], cursor)
        now = 1000.0 + n
        if n == 1:
            for dev in sc["resets"]:
                assert ref.reset(dev) == arr.reset(dev)
            if sc["rekey"]:
                ref.keyed = set(OWN_KEYS)
                arr.keyed = set(OWN_KEYS)
        ref.begin()
        arr.begin()
        want, want_conf = per_frame(v, ref, datagrams, now)
        got, got_conf, _ = array_path(b, arr, datagrams, now, sc["junk"])
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            assert g == w, (i, datagrams[i].hex(), w, g)
        assert got_conf == want_conf
        assert books(arr) == books(ref)
        if sc["rollback"][n]:
            ref.rollback()
            arr.rollback()
        else:
            taken = {d.device: d for d in arr.take_dirty()}  # a set's order: none
            assert taken == {d.device: d for d in ref.take_dirty()}
            ref.commit()
            arr.commit()
        assert books(arr) == books(ref)


def test_runs_in_order_take_the_fast_path() -> None:
    """A negative control: devices sending seq after seq are decided without observe(),
    and the books come out as observe() leaves them (lost, bitmap, highest, received)."""
    codec = Codec(LAYOUTS, key=KEY)
    v = Validator(codec)
    ref, arr = Tracker(window=8), Tracker(window=8)

    def payload(d: int, seq: int) -> bytes:
        lay = LAYOUTS[d % 2]  # two templates
        return encode_raw(lay, [1] * len(lay.fields), d, seq, KEY)[PAYLOAD_OFFSET:]

    first = [payload(d, 100) for d in range(6)]
    per_frame(v, ref, first, 1.0)
    array_path(BatchValidator(v), arr, first, 1.0, b"\xaa")
    batch = [payload(d, 101 + s) for s in range(20) for d in range(6)]
    want, _ = per_frame(v, ref, batch, 2.0)
    got, _, slow = array_path(BatchValidator(v), arr, batch, 2.0, b"\x55")
    assert got == want == [Observed(Verdict.STORED, 0)] * len(batch)
    assert slow == 0
    assert books(arr) == books(ref)
    assert arr.devices[3].highest == 120 and arr.devices[3].seen == (1 << 9) - 1
    # One frame out of order sends its device, and only it, through observe().
    batch[7], batch[13] = batch[13], batch[7]
    ref2, arr2 = copy.deepcopy(ref), copy.deepcopy(arr)
    for t in (ref2, arr2):
        for d in t.devices.values():
            d.highest -= 20
    want, _ = per_frame(v, ref2, batch, 3.0)
    got, _, slow = array_path(BatchValidator(v), arr2, batch, 3.0, b"\x55")
    assert got == want
    assert slow == 20
    assert books(arr2) == books(ref2)


@pytest.mark.parametrize("spoil_how", [s for s in SPOIL if s != "none"])
def test_every_refusal_reason_is_the_validators(spoil_how: str) -> None:
    codec = Codec(LAYOUTS, key=KEY)
    v = Validator(codec)
    datagrams = [
        spoil(spoil_how, encode_raw(lay, [0] * len(lay.fields), 1, 1, KEY)[PAYLOAD_OFFSET:], i, r)
        for r in range(40)
        for i, lay in enumerate(LAYOUTS)
    ]
    rows, lens = as_arrays(datagrams, b"\x50\x11")
    code = BatchValidator(v).check(rows, lens).code
    got = [reason_of(c) for c in code.tolist()]
    assert got == [v.check(d)[0] for d in datagrams]
    assert any(got)


@pytest.mark.parametrize("before", ["held", "reset", "keyed", "first-mic"])
def test_a_run_after_an_exception_goes_by_the_rules(before: str) -> None:
    """Books a run cannot be decided from alone: a held far jump (dropped by the run), a
    reset pending, a key given by a reload (CRC frames refused), a first valid MIC."""
    codec = Codec(LAYOUTS, key=KEY)
    v = Validator(codec)
    ref, arr = Tracker(window=16), Tracker(window=16)
    lay = LAYOUTS[2] if before == "first-mic" else LAYOUTS[0]

    def payload(seq: int, layout: Any = LAYOUTS[0]) -> bytes:
        return encode_raw(layout, [3] * len(layout.fields), 3, seq, KEY)[PAYLOAD_OFFSET:]

    batches = [
        [payload(s) for s in range(100, 106)],
        [],
        [payload(s, lay) for s in range(106, 116)],
    ]
    if before == "held":
        batches[1] = [payload(100 + MAX_GAP + 50)]
    for n, batch in enumerate(batches):
        if n == 2:
            for t in (ref, arr):
                if before == "reset":
                    t.reset(3)
                elif before == "keyed":
                    t.keyed = {3}
        ref.begin()
        arr.begin()
        want, want_conf = per_frame(v, ref, batch, float(n))
        got, got_conf, slow = array_path(BatchValidator(v), arr, batch, float(n), b"\x01")
        assert (got, got_conf) == (want, want_conf)
        assert books(arr) == books(ref)
        ref.commit()
        arr.commit()
    assert slow == len(batches[2])


def test_the_array_receiver_reads_datagrams_into_rows() -> None:
    """Datagrams land in the rows as sent (cut to the width), with their lengths and
    sources; judged by the bytes sent and the sending socket's own address."""
    import socket

    from precast.collect.receiver import ArrayReceiver, MultiReceiver

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    sent = [bytes([i]) * (i % 50) for i in range(150)] + [b"\x07" * 200]
    try:
        recv = ArrayReceiver(rx, width=64, rows=2048)
        recv.PER_CALL = 64  # several calls for one read
        for d in sent:
            tx.sendto(d, rx.getsockname())
        rows, lens, names = recv.views(5000)
        assert len(rows) == len(sent)
        for i, d in enumerate(sent):
            assert int(lens[i]) == min(len(d), 64)
            assert rows[i, : lens[i]].tobytes() == d[:64]
        assert MultiReceiver.describe(names[0, :8].tobytes()) == "{}:{}".format(*tx.getsockname())
        assert len(recv.read(10)) == 0  # dry: EAGAIN
    finally:
        rx.close()
        tx.close()


def commit_of(c: Any) -> dict[str, Any]:
    """A Commit as plain data: rows as tuples (and their values' types), news, books."""
    return {
        "rows": {t: [(r, [type(x) for x in r]) for r in rs] for t, rs in sorted(c.rows.items())},
        "rejects": c.rejects,
        "refused": [(r.reason, r.addr, r.data) for r in c.refused],
        "new": [(n.device, n.template, n.addr) for n in c.new],
        "devices": sorted((d.device, d) for d in c.devices),
    }


@settings(max_examples=examples(100), deadline=None)
@given(scenario(), st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_ingest_of_arrays_commits_what_ingest_frame_by_frame_commits(
    sc: dict[str, Any], cuts: list[int]
) -> None:
    """Ingest.run on Arrivals (the collector's batches) against Ingest.run on (datagram,
    source) pairs, the per-frame path: the same Commit, row for row, refusal for
    refusal, and the same books; a batch cut in two, one half of it sometimes pairs."""
    from precast.collect.backlog import Arrivals
    from precast.collect.ingest import Ingest

    keys = OWN_KEYS if sc["own_keys"] else {}
    codec = Codec(LAYOUTS, key=sc["default_key"], keys=keys)
    ref = Tracker(sc["window"], sc["max_devices"])
    arr = Tracker(sc["window"], sc["max_devices"])

    def describe(a: bytes) -> str:
        return f"src-{a.hex()}"

    ing_ref = Ingest(codec, ref, {}, describe)
    ing_arr = Ingest(codec, arr, {}, describe)
    cursor: dict[int, int] = {}
    for n, batch in enumerate(sc["batches"]):
        datagrams = datagrams_of(sc, batch, sc["calm"][n], cursor)
        names = [bytes([2, 0, 0, 1 + e[4] % 3, 127, 0, 0, 1]) for e in batch]
        now = 1000.0 + n + 0.123456
        if n == 1:
            for dev in sc["resets"]:
                assert ref.reset(dev) == arr.reset(dev)
            if sc["rekey"]:
                ref.keyed = set(OWN_KEYS)
                arr.keyed = set(OWN_KEYS)
        cut = len(datagrams) * cuts[n] // 4
        pairs = list(zip(datagrams, names, strict=True))
        want_batches: list[Any] = [(now, pairs[:cut]), (now + 0.5, pairs[cut:])]
        got_batches: list[Any] = []
        for k, (ts, part) in enumerate(want_batches):
            if k == 0 and cuts[n] == 3:
                got_batches.append((ts, list(part)))  # pairs beside Arrivals in one run
                continue
            rows, lens = as_arrays([d for d, _ in part], sc["junk"])
            width = rows.shape[1] if len(part) else 1
            arrivals = Arrivals(
                rows.reshape(len(part), width),
                lens.astype(np.uint32),
                np.array([list(a) for _, a in part], dtype=np.uint8).reshape(len(part), 8),
            )
            got_batches.append((ts, arrivals))
        for t in (ref, arr):
            t.begin()
        locked = {"ref": ing_ref.touched(want_batches), "arr": ing_arr.touched(got_batches)}
        made = {"ref": ing_ref.run(want_batches), "arr": ing_arr.run(got_batches)}
        assert commit_of(made["arr"]) == commit_of(made["ref"])
        # A shared store locks the touched devices' books: every device whose books the batch
        # made or changed must be among them.
        for name, c in made.items():
            changed = {d.device for d in c.devices}
            assert changed <= locked[name], (name, sorted(changed - locked[name]))
        assert books(arr) == books(ref)
        for t in (ref, arr):
            if sc["rollback"][n]:
                t.rollback()
            else:
                t.commit()
