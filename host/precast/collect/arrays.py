"""A batch of datagrams checked and tracked as arrays, with the per-frame rules for exceptions.

The common case, a device sending seq after seq, is decided for the whole
batch at once: the valid frames are sorted by device (stably, so each device's
frames keep their order), and a device whose frames in the batch are one run
(the first one past its highest seq, each the one after the one before, one
check kind, the kind its books expect, no candidate held, no reset pending, no
rival sequence, no seq an ended epoch's kept digests may have) moves on in one
step: its bitmap shifted by the run's length with the run's bits set, its
highest seq the run's last, the run counted received, the frames' digests kept
(replays.py). Such a
run is exactly what tracker.observe would make of it frame by frame (a step of
1 each time). Every other device's frames (new, reordered, duplicated, a gap,
a far jump, a first MIC, a replay) go through observe() one by one, in the
batch's order: the tracker's rules stay in one place (tracker.py).

tests/collect/test_collector_arrays.py holds judge() against the per-frame path
(validator.Validator, Tracker.observe) frame by frame on fuzzed batches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from precast.collect.tracker import AUTH_MIC, Observed, Tracker, Verdict
from precast.wire.batch import NO_KEY_CODE, VALID, BatchValidator, Checked, Rows


@dataclass(frozen=True, slots=True)
class Tracked:
    """The tracker's verdict on each frame: the epoch a frame is stored under (-1: not
    stored), and the verdict of each frame that went through observe() one by one."""

    epoch: npt.NDArray[np.int64]
    exceptions: dict[int, Observed]

    @property
    def verdicts(self) -> list[Observed]:
        """Each frame's Observed, as observe() would have said it."""
        ex = self.exceptions
        return [
            ex[i] if i in ex else Observed(Verdict.STORED, e)
            for i, e in enumerate(self.epoch.tolist())
        ]

    @property
    def slow(self) -> int:
        """Frames that went through observe() one by one."""
        return len(self.exceptions)


def observe_batch(
    tracker: Tracker,
    device: npt.NDArray[np.integer],
    template: npt.NDArray[np.integer],
    seq: npt.NDArray[np.integer],
    mic: npt.NDArray[np.bool_],
    now: float,
    payload: Callable[[int], bytes],
    source: Callable[[int], str],
    digests: npt.NDArray[np.uint8],
) -> Tracked:
    """observe() for each frame i (device[i], ..., mic[i]: a valid MIC), runs in one step.

    payload(i) is asked only for frames that go one by one (a frame held as a far
    jump keeps it), source(i) for those and the last frame of each run; digests[i]
    is frame i's digest (replays.digest), kept for the frames of a run.
    """
    n = len(device)
    epoch = np.full(n, -1, dtype=np.int64)
    if not n:
        return Tracked(epoch, {})
    dev = device.astype(np.int64)
    order = np.argsort(dev, kind="stable")
    ds, ss, ms = dev[order], seq.astype(np.int64)[order], mic[order]
    starts = np.flatnonzero(np.r_[True, ds[1:] != ds[:-1]])
    ends = np.r_[starts[1:], n]
    # A break inside a device's frames: a seq not one past the one before, or the kind changed.
    brk = np.r_[False, (ss[1:] - ss[:-1] != 1) | (ms[1:] != ms[:-1])]
    brk[starts] = False
    broken = np.logical_or.reduceat(brk, starts).tolist()
    slow = np.zeros(n, dtype=bool)
    devices, keyed, mask, kept = tracker.devices, tracker.keyed, tracker.mask, tracker.digests
    last_template = template[order[ends - 1]].tolist()
    firsts, lasts, kinds = ss[starts].tolist(), ss[ends - 1].tolist(), ms[starts].tolist()
    runs = zip(ds[starts].tolist(), starts.tolist(), ends.tolist(), strict=True)
    for g, (dv, s, e) in enumerate(runs):
        d = devices.get(dv)
        m = kinds[g]
        if (
            broken[g]
            or d is None
            or d.restart
            or d.cand_seq >= 0
            or d.rival_seq >= 0
            or firsts[g] != d.highest + 1
            or (dv in kept and kept[dv].lo <= lasts[g] and firsts[g] <= kept[dv].hi)
            or (d.auth == AUTH_MIC) != m
            or (not m and dv in keyed)
        ):
            slow[s:e] = True
            continue
        k = e - s
        tracker._touch(dv, d)
        d.seen = ((d.seen << k) | ((1 << k) - 1)) & mask
        d.highest = lasts[g]
        d.received += k
        d.template = last_template[g]
        d.last_seen = now
        at = order[s:e]
        d.source = source(int(at[-1]))
        tracker.keep(dv, digests[at].tobytes())
        tracker.dirty.add(dv)
        epoch[at] = d.epoch
    one_by_one = np.sort(order[slow]).tolist()
    exceptions: dict[int, Observed] = {}
    if one_by_one:
        observe = tracker.observe
        devs, tids, seqs, mics = device.tolist(), template.tolist(), seq.tolist(), mic.tolist()
        stored = Verdict.STORED
        for i in one_by_one:
            o = observe(devs[i], tids[i], seqs[i], now, mics[i], payload(i), source(i))
            exceptions[i] = o
            if o.verdict is stored:
                epoch[i] = o.epoch
    return Tracked(epoch, exceptions)


@dataclass(frozen=True, slots=True)
class Judged:
    """Each frame of a batch checked and tracked."""

    checked: Checked
    epoch: npt.NDArray[np.int64]  # the epoch a frame is stored under; -1: not stored
    exceptions: dict[int, Observed]  # frame -> verdict, of valid frames observed one by one

    @property
    def verdicts(self) -> list[Observed | None]:
        """The tracker's verdict on each frame where checked.code is VALID, else None."""
        ex, code = self.exceptions, self.checked.code.tolist()
        return [
            ex[i] if i in ex else (Observed(Verdict.STORED, e) if c == VALID else None)
            for i, (c, e) in enumerate(zip(code, self.epoch.tolist(), strict=True))
        ]

    @property
    def slow(self) -> int:
        """Valid frames that went through observe() one by one."""
        return len(self.exceptions)


def judge(
    checker: BatchValidator,
    tracker: Tracker,
    rows: Rows,
    lens: npt.NDArray[np.integer],
    now: float,
    source: Callable[[int], str],
    checked: Checked | None = None,
) -> Judged:
    """Check every datagram (rows[i, :lens[i]]; checked: done already), count bad checks,
    track the valid frames."""
    if checked is None:
        checked = checker.check(rows, lens)
    n = len(lens)
    epoch = np.full(n, -1, dtype=np.int64)
    exceptions: dict[int, Observed] = {}
    parts = []
    bad: list[tuple[int, int]] = []  # (frame, device) of failed checks that name a device
    for g in checked.groups:
        b = (g.code != VALID) & (g.code != NO_KEY_CODE)
        if b.any():
            bad += zip(g.index[b].tolist(), g.device[b].tolist(), strict=True)
        ok = g.code == VALID
        if ok.any():
            k = int(ok.sum())
            parts.append(
                (
                    g.index[ok],
                    g.device[ok],
                    np.full(k, g.spec.id, dtype=np.int64),
                    g.seq[ok],
                    np.full(k, g.spec.mic, dtype=bool),
                )
            )
    known = {dv for _, dv in bad if dv in tracker.devices}
    if parts:
        if len(parts) == 1:
            index, device, template, seq, mic = parts[0]
        else:
            index, device, template, seq, mic = (
                np.concatenate(c) for c in zip(*parts, strict=True)
            )
            order = np.argsort(index, kind="stable")  # frames in the batch's order
            index, device, seq = index[order], device[order], seq[order]
            template, mic = template[order], mic[order]
        at = index.tolist()
        # Each frame's digest (replays.digest): its seq and its last 4 bytes.
        tail = lens[index][:, None] - 4 + np.arange(4)
        digests = np.concatenate((rows[index, 8:12], rows[index[:, None], tail]), axis=1)
        obs = observe_batch(
            tracker,
            device,
            template,
            seq,
            mic,
            now,
            lambda i: rows[at[i], : lens[at[i]]].tobytes(),
            lambda i: source(at[i]),
            digests,
        )
        epoch[index] = obs.epoch
        exceptions = {at[i]: o for i, o in obs.exceptions.items()}
        if len(known) < len({dv for _, dv in bad}):
            # A device new in this batch counts the failed checks after the frame that
            # made it known (as checking frame by frame would).
            made = _made(at, device.tolist(), exceptions, known)
            bad = [(i, dv) for i, dv in bad if dv in known or made.get(dv, n) < i]
    for _, dv in bad:
        tracker.bad_check(dv)
    return Judged(checked, epoch, exceptions)


def _made(
    index: list[int], device: list[int], exceptions: dict[int, Observed], known: set[int]
) -> dict[int, int]:
    """device -> the frame that made it known, for devices not known before the batch
    (a device not known goes one by one: its frames are exceptions)."""
    made: dict[int, int] = {}
    for i, dv in zip(index, device, strict=True):
        v = exceptions.get(i)
        if v is not None and v.verdict is Verdict.STORED and dv not in known and dv not in made:
            made[dv] = i
    return made
