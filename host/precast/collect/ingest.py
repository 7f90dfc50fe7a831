"""One batch of datagrams in, one Commit out: check, track, build the rows. No I/O.

The storing thread's steps, in docs/PROTOCOL.md's order, as named functions:

- `touched`: the devices a batch may change (their books are locked by a store
  other collectors share), read from each frame's header;
- `load`: the books another collector moved on, into the tracker;
- `run`: each datagram checked (wire/validator.py), tracked (tracker.py) and, when
  stored, built into its template's row (rows.py); the result is a Commit: the rows
  per template, the changed devices' books, the reject counts this batch adds, and
  what the reporter tells the log (refusals, new devices).

A batch the array receiver left as Arrivals (backlog.py) is checked and tracked
as arrays (wire/batch.py, collect/arrays.py: a device's run of seqs in one step,
the exceptions by the tracker's rules frame by frame) and its readings come out
as Readings (rows.py), one record array per template. A batch of (datagram,
source) pairs (a spill replayed, a system without recvmmsg) goes frame by frame:
validator.check, tracker.observe, rows.row_builder. Both give the same Commit,
frame for frame (tests/test_collector_arrays.py holds one against the other).

The store writes a Commit in one transaction; the sinks and the reporter read it
once it is written. A Commit the store refused is undone in the tracker (rollback)
and the batch is run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from precast.collect.arrays import judge
from precast.collect.backlog import Arrivals, Batch
from precast.collect.outbox import Entry
from precast.collect.rows import (
    Readings,
    RecordBuilder,
    Row,
    RowBuilder,
    row_builder,
)
from precast.collect.tracker import (
    AUTH_CRC,
    AUTH_MIC,
    CONFLICT_REASON,
    JUMP_REASON,
    Device,
    Tracker,
    Verdict,
)
from precast.collect.utc import iso_of_us, taken_us, unix_us
from precast.wire.batch import (
    NO_KEY_CODE,
    VALID,
    BatchValidator,
    Checked,
    Index,
    body_dtype,
    reason_of,
)
from precast.wire.codec import Codec
from precast.wire.constants import NO_KEY
from precast.wire.header import DEVICE, SEQ
from precast.wire.validator import Spec, Validator

# A template's readings in a commit, piece by piece: the batches' in order.
Pieces = dict[int, list[list[Row] | Readings]]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A datagram refused: why, where from (an address, or a source already named)."""

    reason: str
    addr: Any
    data: bytes


@dataclass(frozen=True, slots=True)
class NewDevice:
    """A device first seen in this batch, with its template and where it sent from."""

    device: int
    template: int
    addr: Any


@dataclass(slots=True)
class Commit:
    """What one batch changes: readings by template, books, reject counts, news.

    rows: the readings to store, by template id: a row each in the store's column
    order, or Readings (rows.py); devices: the books the batch changed; rejects: the reject counts
    it adds, by reason; counters: the totals by name to write with it (queue drops,
    the sinks', set by the collector); outbox: by sink, the entry its readings make
    for it, and outbox_done: by sink, the entries through this `until` it has taken
    (outbox.py, set by the collector); refused and new: for the reporter.
    """

    rows: dict[int, Sequence[Row]] = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)
    rejects: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, Entry] = field(default_factory=dict)
    outbox_done: dict[str, int] = field(default_factory=dict)
    refused: list[Refusal] = field(default_factory=list)
    new: list[NewDevice] = field(default_factory=list)

    @property
    def stored(self) -> int:
        """The readings the commit stores."""
        return sum(map(len, self.rows.values()))


class Ingest:
    """The checking and tracking of batches, against one codec's templates and keys."""

    def __init__(
        self,
        codec: Codec,
        tracker: Tracker,
        sources: dict[Any, str],
        describe: Callable[[Any], str],
    ) -> None:
        self.codec = codec
        self.validator = Validator(codec)
        self.tracker = tracker
        self.sources = sources  # address -> source, as the books and rows name it
        self.describe = describe  # an address not in sources (which it then caches)
        self.builders: dict[int, RowBuilder] = {
            tid: row_builder(lay) for tid, lay in codec.layouts.items()
        }
        self.records = {tid: RecordBuilder(lay) for tid, lay in codec.layouts.items()}
        # Each frame's body record by its prefix (magic, version/flags, template id): a
        # template's live and delayed frames differ (the age).
        self.bodies = {p: body_dtype(sp.layout) for p, sp in self.validator.specs.items()}
        self.names: dict[int, list[str]] = {
            tid: [s.field.name for s in lay.fields] for tid, lay in codec.layouts.items()
        }
        self.checker = BatchValidator(self.validator)
        tracker.keyed = set(codec.keys)  # a key of its own: accepted only with a MIC
        # touched()'s checks of the batches it was given, for run() on the same batches:
        # a Checked per Arrivals, the validator's verdicts per datagram of a list
        self._checked: tuple[Iterable[Batch], list[Any]] | None = None

    def load(self, dev: Device) -> None:
        """A device's books from the database into the tracker."""
        if not dev.auth:  # saved before auth was stored: its template's check says
            lay = self.codec.layouts.get(dev.template)
            dev.auth = AUTH_MIC if lay is not None and lay.template.mic else AUTH_CRC
        self.tracker.load(dev)

    def touched(self, batches: list[Batch]) -> set[int]:
        """The devices a batch may change, whose books a shared store locks: those of its
        frames that pass the checks (kept for run(), which need not check them again), and
        the devices changed since the last commit (an operator reset, a batch rolled back).
        A refused frame takes no lock and no placeholder row: garbage with a template's
        header made one row inserted and deleted per datagram (200,000 dead tuples)."""
        check = self.validator.check
        verdicts: list[Any] = [
            self.checker.check(b.rows, b.lens)
            if isinstance(b, Arrivals)
            else [check(data) for data, _ in b]
            for _, b in batches
        ]
        self._checked = (batches, verdicts)
        tracker = self.tracker
        known, keyed = tracker.devices, tracker.keyed
        # Room for this many new devices: the tracker takes new CRC devices in arrival order
        # until it is full and refuses the rest (device-limit) unlocked. Within a group, the
        # first `room` new ids in arrival order are the most it can take, whatever the order
        # of the groups: a batch with the last free place and a flood of new ids locks (and
        # writes a placeholder for) `room` of them, not the flood.
        room = max(0, tracker.max_devices - len(known))
        touched = set(tracker.dirty)

        def take(devices: Iterable[int], mic: bool) -> None:
            new = 0
            for d in devices:
                if d in touched:
                    continue
                if mic:
                    touched.add(d)
                elif d in known:
                    if d not in keyed:
                        touched.add(d)
                elif d not in keyed and new < room:
                    new += 1
                    touched.add(d)

        for per in verdicts:
            if isinstance(per, Checked):
                for g in per.groups:
                    ids, first = np.unique(g.device[g.code == VALID], return_index=True)
                    take(ids[np.argsort(first)].tolist(), g.spec.mic)
                    bad = g.device[(g.code != VALID) & (g.code != NO_KEY_CODE)]
                    if len(bad):  # a failed check is counted on a known device's books
                        touched.update(d for d in np.unique(bad).tolist() if d in known)
                continue
            valid = [
                (v[DEVICE], sp.mic)
                for reason, sp, v in per
                if not reason and v is not None and sp is not None
            ]
            take((d for d, mic in valid if not mic), False)
            take((d for d, mic in valid if mic), True)
            touched.update(
                v[DEVICE]
                for reason, _, v in per
                if reason and reason != NO_KEY and v is not None and v[DEVICE] in known
            )
        return touched

    def fresh(self, books: dict[int, Device | None]) -> None:
        """Take the books another collector moved on (None: it has none any more)."""
        tracker = self.tracker
        for dev, state in books.items():
            if state is None:
                tracker.devices.pop(dev, None)
                tracker.dirty.discard(dev)
            else:
                self.load(state)

    def run(self, batches: Iterable[Batch]) -> Commit:
        """Check and track every datagram of batches: the Commit to write.

        The tracker changes as it goes; the caller began it (tracker.begin()) and
        commits or rolls it back with the store's transaction.
        """
        out = Commit()
        pieces: Pieces = {}
        kept = self._checked
        verdicts = kept[1] if kept is not None and kept[0] is batches else None
        for i, (ts, batch) in enumerate(batches):
            per = verdicts[i] if verdicts is not None else None
            if isinstance(batch, Arrivals):
                self._arrays(ts, batch, per, out, pieces)
            else:
                self._frames(ts, batch, per, out, pieces)
        tracker = self.tracker
        rejects = out.rejects
        if tracker.discarded:
            rejects[JUMP_REASON] = rejects.get(JUMP_REASON, 0) + tracker.discarded
        if tracker.conflicted:  # held first frames of a rival sequence, refused with the second
            rejects[CONFLICT_REASON] = rejects.get(CONFLICT_REASON, 0) + tracker.conflicted
        for tid, ps in pieces.items():
            if len(ps) == 1:
                out.rows[tid] = ps[0]
            elif all(isinstance(p, list) for p in ps):
                out.rows[tid] = [r for p in ps for r in p]
            else:
                kinds = self.records[tid].kinds
                out.rows[tid] = Readings.concat(
                    [p if isinstance(p, Readings) else Readings.from_rows(p, kinds) for p in ps]
                )
        out.devices = tracker.take_dirty()
        return out

    def _frames(
        self,
        ts: float,
        batch: list[tuple[bytes, Any]],
        per: list[Any] | None,
        out: Commit,
        pieces: Pieces,
    ) -> None:
        """One batch of (datagram, source) pairs, frame by frame (per: checked already)."""
        check = self.validator.check
        builders = self.builders
        tracker = self.tracker
        observe = tracker.observe
        known = tracker.devices
        sources = self.sources
        describe = self.describe
        rejects = out.rejects
        refused = out.refused
        new = out.new
        stored = Verdict.STORED
        rows: dict[int, list[Row]] = {}
        at_us = unix_us(ts)
        at = iso_of_us(at_us)
        for j, (data, addr) in enumerate(batch):
            reason, sp, v = per[j] if per is not None else check(data)
            if reason:
                if v is not None and reason != NO_KEY:
                    tracker.bad_check(v[DEVICE])
                rejects[reason] = rejects.get(reason, 0) + 1
                refused.append(Refusal(reason, addr, data))
                continue
            assert sp is not None and v is not None
            device = v[DEVICE]
            if device not in known:
                new.append(NewDevice(device, sp.id, addr))
            src = sources.get(addr)
            if src is None:
                src = describe(addr)
            verdict, epoch, held = observe(device, sp.id, v[SEQ], ts, sp.mic, data, src)
            if verdict is not stored:
                if verdict.refused:
                    why = verdict.value
                    rejects[why] = rejects.get(why, 0) + 1
                    refused.append(Refusal(why, addr, data))
                continue
            if held is not None:
                # A far jump confirmed: its first frame, held until now, goes first.
                hsp = self.validator.specs.get(held.data[:4])
                if hsp is not None and len(held.data) == hsp.length:
                    hv = hsp.unpack(held.data)
                    hat = unix_us(held.at)
                    hiso = iso_of_us(hat)
                    rows.setdefault(hsp.id, []).append(
                        builders[hsp.id](
                            hv,
                            held.epoch,
                            hiso,
                            self._taken(hsp, hv, hat, hiso),
                            held.source,
                        )
                    )
            r = rows.get(sp.id)
            if r is None:
                r = rows[sp.id] = []
            r.append(builders[sp.id](v, epoch, at, self._taken(sp, v, at_us, at), src))
        for tid, rs in rows.items():
            pieces.setdefault(tid, []).append(rs)

    def _taken(self, sp: Spec, v: tuple[Any, ...], at_us: int, at: str) -> str:
        """A stored frame's taken_at: `at`, or for a delayed frame (counted on its device)
        at less its age, the body's last value."""
        if not sp.delayed:
            return at
        self.tracker.count_delayed(v[DEVICE])
        return iso_of_us(taken_us(at_us, v[-1]))

    def _arrays(
        self, ts: float, batch: Arrivals, checked: Checked | None, out: Commit, pieces: Pieces
    ) -> None:
        """One batch of Arrivals, as arrays: the same outcome as _frames, frame for frame."""
        tracker = self.tracker
        rows, lens, names = batch.rows, batch.lens, batch.names
        if checked is None:
            checked = self.checker.check(rows, lens)
        code = checked.code
        # Each distinct source named once; a frame's source is its index in srcs.
        keys, where = np.unique(
            np.ascontiguousarray(names).view(f"V{names.shape[1]}")[:, 0], return_inverse=True
        )
        where = where.reshape(-1)
        addrs = [k.tobytes() for k in keys]
        sources, describe = self.sources, self.describe
        srcs = [sources.get(a) or describe(a) for a in addrs]
        # Devices not known before the batch: their frames up to the first stored one are news.
        valid = [np.unique(g.device[g.code == VALID]) for g in checked.groups]
        known = tracker.devices
        unknown = {d for v in valid for d in v.tolist() if d not in known}
        judged = judge(self.checker, tracker, rows, lens, ts, lambda i: srcs[where[i]], checked)
        # What the reporter hears, in the batch's order: refusals, new devices.
        refusals: list[tuple[int, str]] = []
        bad = np.flatnonzero(code != VALID)
        if len(bad):
            counts = np.bincount(code[bad])
            rejects = out.rejects
            for c in np.flatnonzero(counts).tolist():
                why = reason_of(c)
                rejects[why] = rejects.get(why, 0) + int(counts[c])
            refusals = list(zip(bad.tolist(), map(reason_of, code[bad].tolist()), strict=True))
        held: dict[int, list[tuple[int, Any]]] = {}  # template -> (confirming frame, Held)
        made: set[int] = set()
        stored = Verdict.STORED
        for i, o in sorted(judged.exceptions.items()):
            head = rows[i, :8].tobytes()
            device = int.from_bytes(head[4:8], "big")
            if device in unknown and device not in made:
                out.new.append(NewDevice(device, int.from_bytes(head[2:4], "big"), addrs[where[i]]))
            if o.verdict is stored:
                made.add(device)
                h = o.held
                if h is not None:
                    hsp = self.validator.specs.get(h.data[:4])
                    if hsp is not None and len(h.data) == hsp.length:
                        held.setdefault(hsp.id, []).append((i, h))
                        if hsp.delayed:
                            tracker.count_delayed(device)
            elif o.verdict.refused:
                refusals.append((i, o.verdict.value))
                rejects = out.rejects
                rejects[o.verdict.value] = rejects.get(o.verdict.value, 0) + 1
        if refusals:
            refusals.sort()
            out.refused += [
                Refusal(why, addrs[where[i]], rows[i, : lens[i]].tobytes()) for i, why in refusals
            ]
        # The readings, a record array per template, in the batch's order.
        at = unix_us(ts)
        epoch = judged.epoch
        # A template's live and delayed frames are two groups: their records are merged
        # back into the batch's order.
        made_of: dict[int, list[tuple[Index, Any]]] = {}
        for g in checked.groups:
            e = epoch[g.index]
            ok = e >= 0
            if ok.any():
                index = g.index[ok]
                rec = self.records[g.spec.id](g.body[ok], e[ok], at, where[index])
                made_of.setdefault(g.spec.id, []).append((index, rec))
                if g.spec.delayed:
                    ids, n = np.unique(g.device[ok], return_counts=True)
                    for d, k in zip(ids.tolist(), n.tolist(), strict=True):
                        tracker.count_delayed(d, k)
        for tid, parts in made_of.items():
            if len(parts) == 1:
                index, rec = parts[0]
            else:
                index = np.concatenate([i for i, _ in parts])
                order = np.argsort(index, kind="stable")
                index, rec = index[order], np.concatenate([r for _, r in parts])[order]
            src = srcs
            hs = held.get(tid)
            if hs is not None:
                rec, src = self._with_held(tid, rec, index, hs, srcs)
            pieces.setdefault(tid, []).append(Readings(rec, src))
        for tid, hs in held.items():
            if tid not in made_of:
                rec, src = self._with_held(tid, None, None, hs, srcs)
                pieces.setdefault(tid, []).append(Readings(rec, src))

    def _body(self, data: bytes) -> np.dtype[np.void]:
        """The body record of a held frame (live or delayed), found by its prefix."""
        return self.bodies[data[:4]]

    def _with_held(
        self,
        tid: int,
        rec: Any,
        index: Any,
        hs: list[tuple[int, Any]],
        srcs: list[str],
    ) -> tuple[Any, list[str]]:
        """A template's records with the confirmed far jumps' held frames, each just
        before the frame that confirmed it (as _frames stores them)."""
        build = self.records[tid]
        src = [*srcs, *(h.source for _, h in hs)]
        # A held frame may be live or delayed (P + 4 bytes): each read with its own layout.
        extra = np.concatenate(
            [
                build(
                    np.frombuffer(h.data, dtype=self._body(h.data)),
                    np.array([h.epoch], dtype=np.int64),
                    unix_us(h.at),
                    len(srcs) + j,
                )
                for j, (_, h) in enumerate(hs)
            ]
        )
        if rec is None:
            return extra, src
        at = np.concatenate([index.astype(np.float64), [i - 0.5 for i, _ in hs]])
        both = np.concatenate([rec, extra])
        return both[np.argsort(at, kind="stable")], src
