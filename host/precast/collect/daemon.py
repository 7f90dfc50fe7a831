"""The collector daemon: receive the UDP stream, check every frame, track, store.

Two threads and a bounded queue (backlog.py) between them:

- the receiving thread (the main one, which also takes the signals) is the
  Listener (listener.py): it drains the socket into the queue, a batch per
  drain stamped with one arrival time, and never touches the disk, so a slow
  commit never stops it; what the queue or the kernel cannot hold is counted.
- the storing thread takes everything queued; the Ingest (ingest.py) checks
  each datagram in docs/PROTOCOL.md's order and tracks each device's sequence
  (tracker.py) into a Commit: the readings, the changed devices and the
  counters (counters.py), which the store (store/) writes in one transaction;
  then the sinks (sinks/: --jsonl, --mqtt) are handed the stored readings and
  the reporter (report.py) what the batch refused. About once a second it lets
  the sinks look at the devices (MQTT: a stale device goes offline), applies
  operator requests (`precast device reset`, from the database) and saves the
  latest refusals.

SIGTERM and SIGINT stop receiving, store every datagram already received,
flush and exit 0; SIGHUP reloads templates and keys (keys.py).

Nothing the environment does is fatal while receiving: a write the database
refuses (locked, full disk, a PostgreSQL server away) is undone in the tracker
and retried (outage.py); stopping while the database stays unwritable
(--stop-timeout) puts every datagram not stored in the spill file (spill.py).
With a PostgreSQL store other collectors share, each piece is one
store.commit(): the books of the devices it touches are locked and reloaded
where another collector moved them on, then tracked as above.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from precast.collect.backlog import DEFAULT_QUEUE_BYTES, Backlog, Batch
from precast.collect.counters import Counters
from precast.collect.dburl import display_db
from precast.collect.ingest import Commit, Ingest
from precast.collect.keys import key_gaps, load_codec
from precast.collect.listener import Listener
from precast.collect.outage import DEFAULT_STOP_TIMEOUT, StoreRetry, Unwritten
from precast.collect.report import Reporter
from precast.collect.sinks import Sink, Stored
from precast.collect.sinks import mqtt as mqtt_sink
from precast.collect.sinks.jsonl import JsonlSink
from precast.collect.spill import DEFAULT_SPILL, read_spill, spill_unwritten
from precast.collect.store import StoreError, open_store
from precast.collect.tracker import DEFAULT_MAX_DEVICES, DEFAULT_WINDOW, Device, Tracker
from precast.errors import PrecastError
from precast.wire.codec import Codec
from precast.wire.constants import DEFAULT_PORT

log = logging.getLogger("precast.collect")

DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
# 32 MiB holds about 80,000 small datagrams (the kernel counts twice what is asked, and
# about 800 bytes per datagram): half a second at 150,000/s while the CPU is busy elsewhere.
DEFAULT_RCVBUF = 32 << 20
DEFAULT_QUEUE = 262_144  # datagrams; about 1.7 s at 150,000 readings/s
# s: stopping, how long an unwritable database is retried before the spill (--stop-timeout)
STOP_WAIT = DEFAULT_STOP_TIMEOUT


@dataclass(frozen=True)
class Options:
    """How a collector runs, besides where it listens, its templates and its database:
    `precast collect`'s options of the same names (collect/cli.py)."""

    key: bytes | None = None
    key_file: str | None = None
    keys_file: str | None = None
    jsonl: str | None = None
    mqtt: tuple[mqtt_sink.MqttUrl, mqtt_sink.MqttOptions] | None = None
    window: int = DEFAULT_WINDOW
    max_devices: int = DEFAULT_MAX_DEVICES
    queue: int = DEFAULT_QUEUE
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    rcvbuf: int = DEFAULT_RCVBUF
    reuse_port: bool = False
    spill: str = DEFAULT_SPILL
    stop_timeout: float = STOP_WAIT


class Collector:
    """Receive, check, track and store: `precast collect` as an object a test can drive."""

    def __init__(
        self, listen: tuple[str, int], templates: list[str], db: str, opts: Options = Options()
    ) -> None:
        self.templates = templates
        self.opts = opts
        self.tracker = Tracker(opts.window, opts.max_devices)
        self.sources: dict[Any, str] = {}  # raw address -> "ip:port", as rows name it
        self._use(self._load_codec())
        self.store = open_store(db)
        self.where = display_db(db)  # never the password
        self.retry = StoreRetry(self.store, self.store.transient)
        self.store.ensure_templates(self.codec.layouts.values())
        for dev in self.store.load_devices():
            self.ingest.load(dev)
        self.rejects, base = self.store.load_counts()
        self.backlog = Backlog(opts.queue, opts.queue_bytes)
        self.sinks: list[Sink] = [JsonlSink(opts.jsonl)] if opts.jsonl else []
        self.mqtt: mqtt_sink.MqttSink | None = None
        self._configs: dict[str, bool] = {}  # discovery configs not yet recorded in the store
        if opts.mqtt is not None:
            # Before the socket is bound: a broker refusing us ends the start (exit 2).
            url, mqtt_opts = opts.mqtt
            self.mqtt = mqtt_sink.MqttSink(
                url,
                self.codec.layouts,
                mqtt_opts,
                devices=self.tracker.devices.values,
                published=self.store.load_configs() if mqtt_opts.discovery is not None else (),
            )
            self.mqtt.start()
            self.sinks.append(self.mqtt)
        self.reporter = Reporter(
            lambda: self.codec.layouts,
            lambda d: d in self.codec.keys,
            proven=lambda d: d in self.tracker.devices and self.tracker.devices[d].received > 0,
            established=self._established,
            max_devices=opts.max_devices,
        )
        self.reload_wanted = threading.Event()
        self.listener = Listener(
            listen, opts.rcvbuf, opts.reuse_port, self.backlog, self._cap(self.codec)
        )
        self.address = self.listener.address
        self.counters = Counters(base, self.backlog, self.sinks, lambda: self.listener.kernel_drops)
        for sink in self.sinks:
            self._resend(sink, base.get(sink.position, 0))
        self.stored = 0
        self.error: BaseException | None = None
        self._next_tick = self._next_chores = 0.0

    # -- templates and keys

    def _load_codec(self) -> Codec:
        o = self.opts
        return load_codec(self.templates, o.key, o.key_file, o.keys_file)

    def _use(self, codec: Codec) -> None:
        """Check frames against codec's templates and keys from now on."""
        self.codec = codec
        self.ingest = Ingest(codec, self.tracker, self.sources, self._source)
        if hasattr(self, "listener"):
            self.listener.receiver.cap = self._cap(codec)

    @staticmethod
    def _cap(codec: Codec) -> int:
        """Bytes of a datagram worth keeping: one more than the longest frame, which is
        then refused as the whole datagram would be (its length fits no template)."""
        return max((lay.frame_len for lay in codec.layouts.values()), default=0) + 1

    def reload(self) -> bool:
        """Load templates and keys again; on an error keep the ones in use.

        False when the database could not take the new templates (locked, full): the
        caller retries; the templates and keys in use stay meanwhile.
        """
        try:
            codec = self._load_codec()
        except PrecastError as e:
            log.error("reload failed, keeping the templates and keys in use: %s", e)
            return True
        try:
            self.store.ensure_templates(codec.layouts.values())
        except StoreError as e:
            log.warning("reload waits: cannot update the database (%s); retrying in 1 s", e)
            return False
        self._use(codec)
        for sink in self.sinks:
            sink.set_layouts(codec.layouts)
        names = ", ".join(f"{lay.template.name} ({tid})" for tid, lay in codec.layouts.items())
        default = ", and a default key for the others" if codec.key is not None else ""
        n = len(codec.keys)
        log.info("reloaded templates: %s; keys for %d device%s%s", names, n, "s"[: n != 1], default)
        for line in key_gaps(codec):
            log.warning("%s", line)
        return True

    def _established(self, device: int) -> str | None:
        """A device's established sequence in words, for a conflict's log line."""
        d = self.tracker.devices.get(device)
        if d is None:
            return None
        return f"at seq {d.highest}, from {d.source or 'an unknown source'}"

    def _template_name(self, tid: int) -> str:
        lay = self.codec.layouts.get(tid)
        return lay.template.name if lay is not None else "?"

    def _source(self, addr: Any) -> str:
        if isinstance(addr, str):  # a replayed spill names its sources already
            return addr
        sources = self.sources
        src = sources.get(addr)
        if src is None:
            if len(sources) > 10_000:  # a flood of spoofed sources: forget them
                sources.clear()
            src = sources[addr] = self.listener.receiver.describe(addr)
        return src

    def _resend(self, sink: Sink, owed: int) -> None:
        """Hand the sink what a killed run committed and it may not have taken (outbox.py):
        its outbox's entries, read back; owed, the killed run's position, counts what no
        entry holds (a database from before the outbox) as dropped."""
        box = self.counters.outboxes[sink.position]
        resent = 0
        for p in self.store.adopt_outbox(sink.position):
            rows = {tid: r for tid, r in self.store.outbox_rows(p).items() if r}
            found = sum(map(len, rows.values()))
            box.record(box.next(p.n))
            if rows:
                sink.write(Stored(rows, {tid: self.ingest.names[tid] for tid in rows}))
            if found < p.n:
                sink.missed(p.n - found)
            resent += found
        if owed > box.handed:
            sink.missed(box.owe(owed - box.handed))
        if resent:
            log.warning(
                "%s: handed again %d readings stored before the collector was killed, which "
                "it may not have taken (those it had may come twice)",
                sink.name,
                resent,
            )

    # -- the storing thread

    def _store_piece(self, batches: list[Batch]) -> None:
        """Check, track and store the datagrams of batches in one transaction (or none).

        The store hands the Ingest the books another collector moved on (PostgreSQL);
        the Ingest classifies the piece into a Commit, which the store writes. A failed
        attempt leaves nothing behind: the tracker is rolled back, and the retry
        classifies the piece again from the database's books.
        """
        tracker, ingest, counters = self.tracker, self.ingest, self.counters
        built: list[Commit] = []

        def build(fresh: dict[int, Device | None]) -> Commit:
            if built:  # asked again, with more devices locked: from where the first began
                tracker.rollback()
                tracker.begin()
            ingest.fresh(fresh)
            c = ingest.run(batches)
            c.counters = counters.changed(c.stored if self.sinks else 0)
            c.outbox, c.outbox_done = counters.outbox(c.stored)
            built.append(c)
            return c

        tracker.begin()
        try:
            self.stored += self.store.commit(ingest.touched(batches), build)
        except BaseException:
            tracker.rollback()
            raise
        tracker.commit()
        c = built[-1]
        for k, n in c.rejects.items():
            self.rejects[k] = self.rejects.get(k, 0) + n
        self.reporter.committed(c, self._template_name, tracker.devices, self._source)
        counters.written(c.counters)
        counters.recorded(c)
        if self.sinks and c.rows:
            batch = Stored(c.rows, {tid: ingest.names[tid] for tid in c.rows})
            for sink in self.sinks:
                try:
                    sink.write(batch)
                except Exception:  # a sink counts its own outages; this is a bug in one
                    log.exception("sink %s failed", sink.name)

    def _process(self, batches: list[Batch], split: bool = True) -> None:
        self.retry.write_all(batches, self._store_piece, lambda: self.backlog.size, split)

    def _chores(self) -> None:
        """Between batches: the sinks' tick, a reload asked for, and once a second the
        operator's requests, the log's counts and what the store keeps of them."""
        now = time.monotonic()
        if now >= self._next_tick and self.sinks:
            self._next_tick = now + 1.0
            wall = time.time()
            for sink in self.sinks:
                sink.tick(wall)
        if self.reload_wanted.is_set():
            self.reload_wanted.clear()
            if not self.reload():
                self.reload_wanted.set()
        if now >= self._next_chores:
            self._next_chores = now + 1.0
            self._requests()
            self.reporter.flush()
            self._save_reports()

    def _save_reports(self) -> None:
        """The latest refusals (for `precast stats`) and the discovery configs the MQTT sink
        published or cleared (so a later run clears a template change's orphans), if the
        store takes them now; else at the next try."""
        try:
            if self.reporter.unsaved:
                self.store.save_recent(list(self.reporter.recent))
                self.reporter.unsaved = False
            if self.mqtt is not None:
                self._configs.update(self.mqtt.take_configs())
                if self._configs:
                    self.store.save_configs(self._configs)
                    self._configs = {}
        except StoreError as e:
            log.debug("cannot save the latest refusals or configs now: %s", e)

    def _requests(self) -> None:
        """Apply operator requests (device resets) written to the database."""
        try:
            requests = self.store.take_requests()
        except StoreError as e:
            log.debug("cannot read operator requests now: %s", e)
            return
        for device, action in requests:
            if action != "reset":
                log.warning("operator request %r for device %d: unknown, ignored", action, device)
            elif self.tracker.reset(device) or self.store.books_shared:
                # (a shared store applied the reset to the database's books already)
                log.warning(
                    "device %d: books reset by an operator (`precast device reset`); "
                    "its next two consecutive readings start a new epoch",
                    device,
                )
            else:
                log.warning("device reset requested for device %d, which is not tracked", device)

    def _storing(self) -> None:
        try:
            while True:
                batches = self.backlog.take(1.0)
                self._chores()
                if batches or self.tracker.dirty:
                    self._process(batches)
                    self.backlog.release(batches)
                elif self.backlog.closed:
                    return  # run() saves the last counters, once the sinks are closed too
                elif self.counters.changed():
                    self._process(batches)
        except Unwritten as e:
            self.error = e
            batches = e.batches + self.backlog.take(0)
            check = self.ingest.validator.check
            readings = sum(1 for _, b in batches for d, _ in b if not check(d)[0])
            named = [(ts, [(d, self._source(a)) for d, a in b]) for ts, b in batches]
            spill_unwritten(self.opts.spill, named, readings, self.counters.grown(), e.cause)
        except BaseException as e:
            self.error = e
            log.exception("storing failed; stopping")
            self.listener.stop()

    def replay(self, path: str) -> int:
        """Store a spill file's datagrams as if they had just arrived; rename it FILE.replayed."""
        batches, counters = read_spill(path)
        # What the spilling run counted but could not write goes in with its datagrams.
        self.counters.add_spilled(counters)
        for _, b in batches:
            for _, source in b:
                self.sources[source] = source
        # One transaction for the whole file: a replay is stored entirely or not at all, so
        # it can always be run again. A database away gets --stop-timeout to come back.
        self.retry.deadline = time.monotonic() + self.opts.stop_timeout
        try:
            self._process([(ts, list(b)) for ts, b in batches], split=False)
        except Unwritten as e:
            raise StoreError(
                f"{self.where}: cannot replay {path} ({' '.join(str(e.cause).split())}); "
                "nothing of it was stored, "
                "run the replay again once the database answers"
            ) from None
        finally:
            self.listener.close()
            self.store.close()
        done = f"{path}.replayed"
        os.replace(path, done)
        log.info(
            "replayed %d datagrams from %s: %d readings stored; the file is now %s",
            sum(len(b) for _, b in batches),
            path,
            self.stored,
            done,
        )
        return 0

    # -- life cycle

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Receive until stopped (stop() or a signal); store everything received; 0 or 1."""
        for line in key_gaps(self.codec):  # once started: a refused start stays one line
            log.warning("%s", line)
        storer = threading.Thread(target=self._storing, name="precast-store", daemon=True)
        storer.start()
        try:
            if ready is not None:
                ready()
            self.listener.run()
        finally:
            self.retry.deadline = time.monotonic() + self.opts.stop_timeout
            self.backlog.close()
            storer.join()
            self.listener.close()
            for sink in self.sinks:
                sink.close()
            self.counters.save(self.store)  # what the sinks counted closing (MQTT's last drops)
            self.reporter.flush(force=True)
            self._save_reports()
            self.store.close()
        c = self.counters.now()
        log.info(
            "stopped: %d readings stored this run; drops: %d queue, %d kernel",
            self.stored,
            c["queue_drops"],
            c["kernel_drops"],
        )
        return 1 if self.error is not None else 0

    def stop(self) -> None:
        """Stop receiving; run() then stores what was received and returns."""
        self.listener.stop()

    def status(self) -> dict[str, Any]:
        """A snapshot for metrics: devices, rejects by reason, drops, queue depth."""
        return {
            "devices": list(self.tracker.devices.values()),
            "rejects": dict(self.rejects),
            "counters": self.counters.now(),
            "queue": self.backlog.size,
            "sinks": {sink.name: sink.stats() for sink in self.sinks},
        }
