"""One batch of datagrams in, one Commit out: check, track, build the rows. No I/O.

The storing thread's steps, in docs/PROTOCOL.md's order, as named functions:

- `touched`: the devices a batch may change (their books are locked by a store
  other collectors share), read from each frame's header;
- `load`: the books another collector moved on, into the tracker;
- `run`: each datagram checked (wire/validator.py), tracked (tracker.py) and, when
  stored, built into its template's row (rows.py); the result is a Commit: the rows
  per template, the changed devices' books, the reject counts this batch adds, and
  what the reporter tells the log (refusals, new devices).

The store writes a Commit in one transaction; the sinks and the reporter read it
once it is written. A Commit the store refused is undone in the tracker (rollback)
and the batch is run again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from precast.collect.backlog import Batch
from precast.collect.rows import Row, RowBuilder, row_builder, utc_iso
from precast.collect.tracker import (
    AUTH_CRC,
    AUTH_MIC,
    CONFLICT_REASON,
    JUMP_REASON,
    Device,
    Tracker,
    Verdict,
)
from precast.wire.codec import Codec
from precast.wire.constants import NO_KEY
from precast.wire.validator import Validator


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

    rows: the readings to store, by template id, each a row in the store's column
    order (rows.py); devices: the books the batch changed; rejects: the reject counts
    it adds, by reason; counters: the totals by name to write with it (queue drops,
    the sinks', set by the collector); refused and new: for the reporter.
    """

    rows: dict[int, list[Row]] = field(default_factory=dict)
    devices: list[Device] = field(default_factory=list)
    rejects: dict[str, int] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
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
        self.names: dict[int, list[str]] = {
            tid: [s.field.name for s in lay.fields] for tid, lay in codec.layouts.items()
        }
        tracker.keyed = set(codec.keys)  # a key of its own: accepted only with a MIC
        # touched()'s checks of the batches it was given, for run() on the same batches
        self._checked: tuple[Iterable[Batch], list[list[Any]]] | None = None

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
        verdicts = [[check(data) for data, _ in b] for _, b in batches]
        self._checked = (batches, verdicts)
        tracker = self.tracker
        known, keyed = tracker.devices, tracker.keyed
        full = len(known) >= tracker.max_devices
        touched = set(tracker.dirty)
        for per in verdicts:
            for reason, sp, v in per:
                if reason or v is None or sp is None:
                    continue
                device = v[3]
                if not sp.mic and (device in keyed or (full and device not in known)):
                    continue  # the tracker refuses it (mic-required, device-limit) unlocked
                touched.add(device)
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
        check = self.validator.check
        builders = self.builders
        tracker = self.tracker
        observe = tracker.observe
        known = tracker.devices
        sources = self.sources
        describe = self.describe
        out = Commit()
        rows = out.rows
        rejects = out.rejects
        refused = out.refused
        new = out.new
        stored = Verdict.STORED
        kept = self._checked
        verdicts = kept[1] if kept is not None and kept[0] is batches else None
        for i, (ts, batch) in enumerate(batches):
            at = utc_iso(ts)
            per = verdicts[i] if verdicts is not None else None
            for j, (data, addr) in enumerate(batch):
                reason, sp, v = per[j] if per is not None else check(data)
                if reason:
                    if v is not None and reason != NO_KEY:
                        tracker.bad_check(v[3])
                    rejects[reason] = rejects.get(reason, 0) + 1
                    refused.append(Refusal(reason, addr, data))
                    continue
                assert sp is not None and v is not None
                device = v[3]
                if device not in known:
                    new.append(NewDevice(device, sp.id, addr))
                src = sources.get(addr)
                if src is None:
                    src = describe(addr)
                verdict, epoch, held = observe(device, sp.id, v[4], ts, sp.mic, data, src)
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
                        rows.setdefault(hsp.id, []).append(
                            builders[hsp.id](
                                hsp.unpack(held.data), held.epoch, utc_iso(held.at), held.source
                            )
                        )
                r = rows.get(sp.id)
                if r is None:
                    r = rows[sp.id] = []
                r.append(builders[sp.id](v, epoch, at, src))
        if tracker.discarded:
            rejects[JUMP_REASON] = rejects.get(JUMP_REASON, 0) + tracker.discarded
        if tracker.conflicted:  # held first frames of a rival sequence, refused with the second
            rejects[CONFLICT_REASON] = rejects.get(CONFLICT_REASON, 0) + tracker.conflicted
        out.devices = tracker.take_dirty()
        return out
