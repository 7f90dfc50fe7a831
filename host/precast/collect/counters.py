"""The counters a collector keeps in its database: drops, and the sinks' positions.

Each is a total over every run: this run's count added to what the earlier
runs left (`base`, loaded at start). `saved` is what the database holds now,
so a commit writes only the counters that moved. A sink's position
(sinks/: `jsonl_pending`, `mqtt_pending`) is the readings committed for it
less those it has taken: what a killed run left it owing; which readings those
are, each sink's outbox (outbox.py) says, written with the same commits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from precast.collect.backlog import Backlog
from precast.collect.ingest import Commit
from precast.collect.outbox import Entry, Outbox
from precast.collect.sinks import Sink
from precast.collect.store import Store

log = logging.getLogger("precast.collect")


class Counters:
    """This run's counts on top of the earlier runs' totals; what the database holds."""

    def __init__(
        self,
        base: Mapping[str, int],
        backlog: Backlog,
        sinks: Sequence[Sink],
        kernel_drops: Callable[[], int],
    ) -> None:
        held = dict(base)
        # The earlier runs' totals, by name; a sink's position is its outbox's, not a total.
        self.base = {k: n for k, n in held.items() if k not in {s.position for s in sinks}}
        self.backlog = backlog
        self.sinks = sinks
        self.kernel_drops = kernel_drops  # this run's socket's, as last read
        self.outboxes = {s.position: Outbox(s.position) for s in sinks}
        # What the database holds (a killed run's positions included, until the first commit).
        self.saved: dict[str, int] = {k: held.get(k, 0) for k in self.now()}

    def now(self, committing: int = 0) -> dict[str, int]:
        """Every total as it stands. committing: the readings of the commit they go with
        (the sinks' positions count them as committed)."""
        run = {"queue_drops": self.backlog.dropped, "kernel_drops": self.kernel_drops()}
        run["jsonl_drops"] = 0  # shown (as 0) without --jsonl too
        for sink in self.sinks:
            for k, n in sink.counters().items():
                run[k] = run.get(k, 0) + n
        base = self.base
        out = {k: base.get(k, 0) + n for k, n in run.items()}
        for sink in self.sinks:
            out[sink.position] = self.outboxes[sink.position].pending(committing, sink.taken())
        return out

    def outbox(self, committing: int) -> tuple[dict[str, Entry], dict[str, int]]:
        """For a commit of `committing` readings: each sink's new outbox entry, and by sink
        the `until` through which its entries are taken (those to delete)."""
        entries = (
            {k: box.next(committing) for k, box in self.outboxes.items()} if committing else {}
        )
        done = {}
        for sink in self.sinks:
            until = self.outboxes[sink.position].done(sink.taken())
            if until is not None:
                done[sink.position] = until
        return entries, done

    def recorded(self, c: Commit) -> None:
        """c's outbox entries and deletions are in the database."""
        for k, e in c.outbox.items():
            self.outboxes[k].record(e)
        for k, until in c.outbox_done.items():
            self.outboxes[k].forget(until)

    def changed(self, committing: int = 0) -> dict[str, int]:
        """The totals that differ from what the database holds."""
        saved = self.saved
        return {k: n for k, n in self.now(committing).items() if saved.get(k) != n}

    def grown(self) -> dict[str, int]:
        """How much each total grew since it was last written (what a spill carries)."""
        return {k: v - self.saved.get(k, 0) for k, v in self.now().items()}

    def written(self, counters: Mapping[str, int]) -> None:
        """counters are in the database now."""
        self.saved.update(counters)

    def add_spilled(self, counters: Mapping[str, int]) -> None:
        """A replayed spill's counts: the spilling run counted them but could not write them;
        they go in with the spill's datagrams (so are unsaved until then)."""
        for k, n in counters.items():
            self.base[k] = self.base.get(k, 0) + n
            self.saved.pop(k, None)

    def save(self, store: Store) -> None:
        """Write the totals that moved (in a commit of their own), if the database takes them."""
        changed = self.changed()
        _, done = self.outbox(0)
        if not changed and not done:
            return
        c = Commit(counters=changed, outbox_done=done)
        try:
            store.commit((), lambda fresh: c)
            self.written(changed)
            self.recorded(c)
        except store.transient as e:
            log.error("cannot write the last counters to the database: %s", e)
