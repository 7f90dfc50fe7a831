"""The collector daemon: receive the UDP stream, check every frame, track, store.

Two threads and a bounded queue (backlog.py) between them:

- the receiving thread (the main one, which also takes the signals) waits
  for the socket, then drains it until EAGAIN (receiver.py: recvmmsg(2), 256
  datagrams a call) and queues the datagrams as one batch stamped with one
  arrival time, then sleeps 2 ms so the next batch gathers; it never touches
  the disk, so a slow commit never stops it. When the queue is full the batch
  is dropped and counted (queue_drops); the kernel's own drops on the socket
  are read from /proc/net/udp and counted too (kernel_drops).
- the storing thread takes everything queued, checks each datagram in
  docs/PROTOCOL.md's order (wire/validator.py, the codec's verdict on a fast
  path), tracks each device's sequence (tracker.py), writes the readings, the
  changed devices and the counters in one transaction (store/), then hands
  the stored readings to the sinks (sinks/: --jsonl, --mqtt), and about once a
  second lets them look at the devices (MQTT: a stale device goes offline).

SIGTERM and SIGINT stop receiving, store every datagram already received,
flush and exit 0; SIGHUP reloads templates and keys (keys.py).

Nothing the environment does is fatal while receiving: a write the database
refuses (locked, full disk, a PostgreSQL server away) is undone in the tracker
and retried with backoff, reconnecting a broken connection (outage.py: one log
line when the outage starts, one when it ends), in ever smaller pieces when the
disk is full, so what fits is written; a reload that cannot take the
database's lock waits and retries; the --jsonl sink counts what it cannot
write. Stopping while the database stays unwritable (--stop-timeout) puts every
datagram not stored in the spill file (spill.py) and says how many readings
they hold. With a PostgreSQL store other collectors share, each piece is one
store.transact(): the books of the devices it touches are locked and reloaded
where another collector moved them on, then tracked as above. Operator
requests (`precast device reset`) are read from the database's requests table
about once a second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from precast.args import examples, key_arg, parse_hostport
from precast.collect.backlog import DEFAULT_QUEUE_BYTES, Backlog, Batch
from precast.collect.dburl import display_db
from precast.collect.files import LinkRefused, refuse_link, write_replacing
from precast.collect.keys import load_key_file, load_keys
from precast.collect.metrics import DEFAULT_METRICS_DEVICES, serve_metrics
from precast.collect.outage import DEFAULT_STOP_TIMEOUT, StoreRetry, Unwritten
from precast.collect.receiver import (
    big_datagrams_unmapped,
    bind_udp,
    kernel_drops,
    receiver_for,
)
from precast.collect.report import Reporter
from precast.collect.rows import Row, RowBuilder, row_builder, utc_iso
from precast.collect.sinks import Sink, Stored
from precast.collect.sinks import mqtt as mqtt_sink
from precast.collect.sinks.jsonl import JsonlSink
from precast.collect.spill import DEFAULT_SPILL, read_spill, write_spill
from precast.collect.store import SharedStore, StoreError, open_store, transient_errors
from precast.collect.tracker import (
    AUTH_CRC,
    AUTH_MIC,
    DEFAULT_MAX_DEVICES,
    DEFAULT_WINDOW,
    DEVICE_LIMIT,
    HELD,
    JUMP_REASON,
    MAX_WINDOW,
    REFUSALS,
    Device,
    Tracker,
)
from precast.errors import PrecastError, UsageError
from precast.wire.codec import Codec
from precast.wire.constants import DEFAULT_PORT, NO_KEY
from precast.wire.layout import load_layouts
from precast.wire.template import default_templates
from precast.wire.validator import Validator

log = logging.getLogger("precast.collect")

DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
# 32 MiB holds about 80,000 small datagrams (the kernel counts twice what is asked, and
# about 800 bytes per datagram): half a second at 150,000/s while the CPU is busy elsewhere.
DEFAULT_RCVBUF = 32 << 20
DEFAULT_QUEUE = 262_144  # datagrams; about 1.7 s at 150,000 readings/s
BATCH_MAX = 4096  # datagrams per drain, so the queue sees a long burst in pieces
COALESCE = 0.002  # s the receiving thread sleeps after a drain (about a third less CPU)
PIECE_MIN = 64  # datagrams: a full disk splits the backlog into pieces down to this size
# s: stopping, how long an unwritable database is retried before the spill (--stop-timeout)
STOP_WAIT = DEFAULT_STOP_TIMEOUT
LIMIT_LOG_EVERY = 60.0  # s between log lines about the device limit


def _datagrams(batches: list[Batch]) -> int:
    return sum(len(b) for _, b in batches)


def _halves(batches: list[Batch]) -> list[list[Batch]]:
    """batches as two pieces of about half the datagrams each (a batch split if need be)."""
    half = _datagrams(batches) // 2
    first: list[Batch] = []
    n = 0
    for i, (ts, b) in enumerate(batches):
        if n + len(b) <= half:
            first.append((ts, b))
            n += len(b)
            continue
        cut = half - n
        if cut:
            first.append((ts, b[:cut]))
        return [first, [(ts, b[cut:]), *batches[i + 1 :]]]
    return [first, []]


class Collector:
    """Receive, check, track and store: `precast collect` as an object a test can drive."""

    def __init__(
        self,
        listen: tuple[str, int],
        templates: list[str],
        db: str,
        key: bytes | None = None,
        keys_file: str | None = None,
        jsonl: str | None = None,
        window: int = DEFAULT_WINDOW,
        queue: int = DEFAULT_QUEUE,
        rcvbuf: int = DEFAULT_RCVBUF,
        reuse_port: bool = False,
        spill: str = DEFAULT_SPILL,
        stop_timeout: float = STOP_WAIT,
        key_file: str | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_devices: int = DEFAULT_MAX_DEVICES,
        mqtt: tuple[mqtt_sink.MqttUrl, mqtt_sink.MqttOptions] | None = None,
    ) -> None:
        self.templates = templates
        self.key = key
        self.key_file = key_file
        self.keys_file = keys_file
        self.tracker = Tracker(window, max_devices)
        self.codec = self._load_codec()
        self._use(self.codec)
        self.store = open_store(db)
        self.where = display_db(db)  # never the password
        self.spill = spill
        self.stop_timeout = stop_timeout
        self.retry = StoreRetry(self.store, transient_errors(self.store))
        self.store.ensure_templates(self.codec.layouts.values())
        for dev in self.store.load_devices():
            self._load(dev)
        self.rejects, counters = self.store.load_counts()
        self.base_queue_drops = counters.get("queue_drops", 0)
        self.base_kernel_drops = counters.get("kernel_drops", 0)
        self.base_jsonl_drops = counters.get("jsonl_drops", 0)
        self.kernel_drops = 0  # of this run's socket
        self.backlog = Backlog(queue, queue_bytes)
        self.sources: dict[Any, str] = {}
        self.base_mqtt = {k: n for k, n in counters.items() if k.startswith("mqtt_")}
        self.sinks: list[Sink] = [JsonlSink(jsonl)] if jsonl else []
        self.jsonl_sinks = [s for s in self.sinks if isinstance(s, JsonlSink)]
        self._limit_refused = 0  # device-limit refusals not yet logged
        self._limit_logged = 0.0
        self._next_requests = 0.0
        self.reporter = Reporter(
            lambda: self.codec.layouts,
            lambda d: d in self.codec.keys,
            proven=lambda d: d in self.tracker.devices and self.tracker.devices[d].received > 0,
        )
        self._refused: list[tuple[str, Any, bytes]] = []  # the stored batch's, for reporter
        self._new: list[tuple[int, int, Any]] = []
        self._verdicts: list[list[Any]] | None = None  # the piece's checks, by _touched
        self._recent_changed = False
        self.mqtt: mqtt_sink.MqttSink | None = None
        if mqtt is not None:
            # Before the socket is bound: a broker refusing us ends the start (exit 2).
            self.mqtt = mqtt_sink.MqttSink(
                mqtt[0], self.codec.layouts, mqtt[1], devices=self.tracker.devices.values
            )
            self.mqtt.start()
            self.sinks.append(self.mqtt)
        self.stopping = threading.Event()
        self.reload_wanted = threading.Event()
        self.reuse_port = reuse_port
        self.sock = bind_udp(listen, rcvbuf, reuse_port)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.receiver = receiver_for(self.sock)
        self.receiver.cap = self._cap(self.codec)
        self.stored = 0
        self._saved_counters: dict[str, int] = self._counters()
        self.error: BaseException | None = None
        self._reported_drops = 0

    # -- setup

    def _load(self, dev: Device) -> None:
        """A device's books from the database into the tracker."""
        if not dev.auth:  # saved before auth was stored: its template's check says
            lay = self.codec.layouts.get(dev.template)
            dev.auth = AUTH_MIC if lay is not None and lay.template.mic else AUTH_CRC
        self.tracker.load(dev)

    def _load_codec(self) -> Codec:
        layouts = load_layouts(self.templates)
        default, keys = self.key, dict[int, bytes]()
        if self.key_file:
            default = load_key_file(self.key_file)
        if self.keys_file:
            file_default, keys = load_keys(self.keys_file)
            default = file_default if file_default is not None else default
        return Codec(layouts, key=default, keys=keys)

    def _use(self, codec: Codec) -> None:
        """Check frames against codec's templates and keys from now on."""
        self.codec = codec
        self.validator = Validator(codec)
        if hasattr(self, "receiver"):
            self.receiver.cap = self._cap(codec)
        self.tracker.keyed = set(codec.keys)  # a key of its own: accepted only with a MIC
        self.rows: dict[int, tuple[RowBuilder, list[str]]] = {
            tid: (row_builder(lay), [s.field.name for s in lay.fields])
            for tid, lay in codec.layouts.items()
        }

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
        if self.mqtt is not None:
            self.mqtt.set_layouts(codec.layouts)
        names = ", ".join(f"{lay.template.name} ({tid})" for tid, lay in codec.layouts.items())
        log.info("reloaded templates: %s; keys for %d devices", names, len(codec.keys))
        return True

    # -- the storing thread

    def _counters(self) -> dict[str, int]:
        c = {
            "queue_drops": self.base_queue_drops + self.backlog.dropped,
            "kernel_drops": self.base_kernel_drops + self.kernel_drops,
            "jsonl_drops": self.base_jsonl_drops + sum(s.dropped for s in self.jsonl_sinks),
        }
        if self.mqtt is not None:  # persisted, so `precast stats` shows them
            base = self.base_mqtt
            c["mqtt_published"] = base.get("mqtt_published", 0) + self.mqtt.published
            c["mqtt_dropped"] = base.get("mqtt_dropped", 0) + self.mqtt.dropped
        return c

    def _save_counters(self) -> None:
        changed = {k: n for k, n in self._counters().items() if self._saved_counters.get(k) != n}
        if not changed:
            return
        try:
            self.store.write({}, [], {}, changed)
            self._saved_counters.update(changed)
        except StoreError as e:
            log.error("cannot write the last counters to the database: %s", e)

    def _process(self, batches: list[Batch], split: bool = True) -> None:
        """Store every datagram of the batches: in one transaction, or in pieces.

        A refused write (a locked or full disk, a PostgreSQL server away) is undone in the
        tracker and retried with backoff, reconnecting a broken connection (outage.py);
        the receiving thread goes on, and the queue counts what it cannot hold meanwhile.
        On a full disk the batches are split in halves (down to PIECE_MIN datagrams), so
        whatever space there is gets used (split=False: a replay, all or nothing, is not).
        Stopping, past --stop-timeout: Unwritten.
        """
        retry = self.retry
        pending = [batches]
        while pending:
            piece = pending[0]
            try:
                self._store_piece(piece)
            except retry.transient as e:
                full = isinstance(e, StoreError) and e.full
                waiting = _datagrams([b for p in pending for b in p]) + self.backlog.size
                retry.failed(e, waiting, full)
                if full and split and _datagrams(piece) > PIECE_MIN:
                    pending[0:1] = _halves(piece)
                    continue
                if retry.expired():
                    raise Unwritten([b for p in pending for b in p], e) from None
                retry.wait()
                continue
            pending.pop(0)
        retry.ok()

    def _touched(self, batches: list[Batch]) -> set[int]:
        """The devices a piece may change, whose books a shared store locks: those of its
        frames that pass the checks (kept for _track, which need not check them again), and
        the devices changed since the last write (an operator reset, a piece rolled back).
        A refused frame takes no lock and no placeholder row: garbage with a template's
        header made one row inserted and deleted per datagram (200,000 dead tuples)."""
        check = self.validator.check
        verdicts = self._verdicts = [[check(data) for data, _ in b] for _, b in batches]
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

    def _store_piece(self, batches: list[Batch]) -> None:
        """Check, track and store the datagrams of batches in one transaction (or none).

        With a database other collectors write too (store.SharedStore), the store locks
        the books of the devices the piece touches and hands back those another collector
        moved on; the tracker takes them, then classifies. A failed attempt leaves nothing
        behind: the tracker and the rejects are rolled back, the store forgets the touched
        devices, and the retry classifies the piece again from the database's books.
        """
        tracker = self.tracker
        rejects = self.rejects
        before = dict(rejects)
        out: list[Any] = [{}, {}]

        def work(
            fresh: dict[int, Device | None],
        ) -> tuple[dict[int, list[Row]], list[Device], dict[str, int], dict[str, int]]:
            for dev, state in fresh.items():
                if state is None:  # no books in the database (yet, or any more)
                    tracker.devices.pop(dev, None)
                    tracker.dirty.discard(dev)
                else:
                    self._load(state)
            rows, changed = self._track(batches)
            counters = self._counters()
            changed_counters = {
                k: n for k, n in counters.items() if self._saved_counters.get(k) != n
            }
            out[:] = [rows, changed_counters]
            return rows, tracker.take_dirty(), {k: rejects[k] for k in changed}, changed_counters

        tracker.begin()
        self._refused.clear()
        self._new.clear()
        try:
            if getattr(self.store, "shared", False):
                shared: SharedStore = self.store  # type: ignore[assignment]
                stored = shared.transact(self._touched(batches), work)
            else:
                written = work({})
                self.store.write(*written)
                stored = sum(map(len, written[0].values()))
        except BaseException:
            tracker.rollback()
            rejects.clear()
            rejects.update(before)
            raise
        tracker.commit()
        rows, changed_counters = out
        self._report()
        self._saved_counters.update(changed_counters)
        self.stored += stored
        if self.sinks and rows:
            builders = self.rows
            batch = Stored(rows, {tid: builders[tid][1] for tid in rows})
            for sink in self.sinks:
                try:
                    sink.write(batch)
                except Exception:  # a sink counts its own outages; this is a bug in one
                    log.exception("sink %s failed", sink.name)

    def _track(self, batches: list[Batch]) -> tuple[dict[int, list[Row]], set[str]]:
        """The rows to store and the reject reasons counted, by checking and tracking."""
        check = self.validator.check
        builders = self.rows
        tracker = self.tracker
        observe = tracker.observe
        confirmed = tracker.confirmed
        rejects = self.rejects
        sources = self.sources
        rows: dict[int, list[Row]] = {}
        changed: set[str] = set()
        known = tracker.devices
        refused = self._refused
        new = self._new
        verdicts, self._verdicts = self._verdicts, None
        for i, (ts, batch) in enumerate(batches):
            at = utc_iso(ts)
            checked = verdicts[i] if verdicts is not None else None
            for j, (data, addr) in enumerate(batch):
                reason, sp, v = checked[j] if checked is not None else check(data)
                if reason:
                    if v is not None and reason != NO_KEY:
                        tracker.bad_check(v[3])
                    rejects[reason] = rejects.get(reason, 0) + 1
                    changed.add(reason)
                    refused.append((reason, addr, data))
                    continue
                assert sp is not None and v is not None
                if v[3] not in known:
                    new.append((v[3], sp.id, addr))
                epoch = observe(v[3], sp.id, v[4], ts, sp.mic, data)
                if epoch < 0:
                    if epoch == HELD:
                        tracker.devices[v[3]].cand_source = self._source(addr)
                    elif epoch in REFUSALS:
                        why = REFUSALS[epoch]
                        rejects[why] = rejects.get(why, 0) + 1
                        changed.add(why)
                        refused.append((why, addr, data))
                        if epoch == DEVICE_LIMIT:
                            self._limit_refused += 1
                    continue
                src = sources.get(addr)
                if src is None:
                    src = self._source(addr)
                r = rows.get(sp.id)
                if r is None:
                    r = rows[sp.id] = []
                if confirmed:
                    # A far jump confirmed: its first frame, held until now, goes first.
                    for cdata, cat, csrc, cepoch in confirmed:
                        creason, csp, cv = check(cdata)
                        if not creason and csp is not None and cv is not None:
                            c = rows.setdefault(csp.id, [])
                            c.append(builders[csp.id][0](cv, cepoch, utc_iso(cat), csrc))
                    confirmed.clear()
                    r = rows[sp.id]
                r.append(builders[sp.id][0](v, epoch, at, src))
        if tracker.discarded:
            rejects[JUMP_REASON] = rejects.get(JUMP_REASON, 0) + tracker.discarded
            changed.add(JUMP_REASON)
        return rows, changed

    def _tell(self) -> None:
        """Once a second: the log's counts of refusals, and the latest ones for stats."""
        self.reporter.flush()
        if not self._recent_changed:
            return
        try:
            self.store.save_recent(list(self.reporter.recent))
            self._recent_changed = False
        except StoreError as e:
            log.debug("cannot save the latest refusals now: %s", e)

    def _report(self) -> None:
        """Tell the log what the stored batch saw: new devices, refused frames."""
        report = self.reporter
        layouts = self.codec.layouts
        for device, tid, addr in self._new:
            if device in self.tracker.devices:  # refused ones (a device limit) are not new
                name = layouts[tid].template.name if tid in layouts else "?"
                report.new_device(device, name, tid, self._source(addr))
        for reason, addr, data in self._refused:
            report.refused(reason, self._source(addr), data)
        if self._refused:
            self._recent_changed = True

    def _source(self, addr: Any) -> str:
        if isinstance(addr, str):  # a replayed spill names its sources already
            return addr
        sources = self.sources
        src = sources.get(addr)
        if src is None:
            if len(sources) > 10_000:  # a flood of spoofed sources: forget them
                sources.clear()
            src = sources[addr] = self.receiver.describe(addr)
        return src

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
            elif self.tracker.reset(device) or getattr(self.store, "shared", False):
                # (a shared store applied the reset to the database's books already)
                log.warning(
                    "device %d: books reset by an operator (`precast device reset`); "
                    "its next two consecutive readings start a new epoch",
                    device,
                )
            else:
                log.warning("device reset requested for device %d, which is not tracked", device)

    def _log_limit(self) -> None:
        now = time.monotonic()
        if self._limit_refused and now - self._limit_logged >= LIMIT_LOG_EVERY:
            log.warning(
                "device limit (%d, --max-devices) reached: refused %d frames of new devices "
                "since the last report (devices with a key of their own are still admitted)",
                self.tracker.max_devices,
                self._limit_refused,
            )
            self._limit_refused = 0
            self._limit_logged = now

    def _storing(self) -> None:
        next_tick = 0.0
        try:
            while True:
                batches = self.backlog.take(1.0)
                now = time.monotonic()
                if now >= next_tick and self.sinks:
                    next_tick = now + 1.0
                    wall = time.time()
                    for sink in self.sinks:
                        sink.tick(wall)
                if self.reload_wanted.is_set():
                    self.reload_wanted.clear()
                    if not self.reload():
                        self.reload_wanted.set()
                now = time.monotonic()
                if now >= self._next_requests:
                    self._next_requests = now + 1.0
                    self._requests()
                    self._tell()
                if batches or self.tracker.dirty:
                    self._process(batches)
                    self.backlog.release(batches)
                elif self.backlog.closed:
                    return  # run() saves the last counters, once the sinks are closed too
                elif self._counters() != self._saved_counters:
                    self._process(batches)
                self._log_limit()
        except Unwritten as e:
            self._spill(e)
        except BaseException as e:
            self.error = e
            log.exception("storing failed; stopping")
            self.stopping.set()

    def _spill(self, e: Unwritten) -> None:
        """Stopping with the database unwritable: every datagram not stored to the spill."""
        batches = e.batches + self.backlog.take(0)
        n = _datagrams(batches)
        check = self.validator.check
        readings = sum(1 for _, b in batches for d, _ in b if not check(d)[0])
        named = [(ts, [(d, self._source(a)) for d, a in b]) for ts, b in batches]
        c = self._counters()
        grown = {k: v - self._saved_counters.get(k, 0) for k, v in c.items()}
        self.error = e
        try:
            write_spill(self.spill, named, grown)
        except (OSError, LinkRefused) as err:
            log.error(
                "stopping: the database stays unwritable (%s) and the spill file %s cannot be "
                "written (%s): %d readings (in %d datagrams) received were not stored",
                e.cause,
                self.spill,
                err.strerror if isinstance(err, OSError) else "a symbolic link, never followed",
                readings,
                n,
            )
            return
        log.error(
            "stopping: the database stays unwritable (%s): %d readings (in %d datagrams) "
            "received were not stored; they are in %s (load them with "
            "`precast collect --replay-spill %s`)",
            e.cause,
            readings,
            n,
            self.spill,
            self.spill,
        )

    def replay(self, path: str) -> int:
        """Store a spill file's datagrams as if they had just arrived; rename it FILE.replayed."""
        batches, counters = read_spill(path)
        # What the spilling run counted but could not write goes in with its datagrams.
        self.base_queue_drops += counters.get("queue_drops", 0)
        self.base_kernel_drops += counters.get("kernel_drops", 0)
        self.base_jsonl_drops += counters.get("jsonl_drops", 0)
        for k, n in counters.items():
            if k.startswith("mqtt_"):
                self.base_mqtt[k] = self.base_mqtt.get(k, 0) + n
        if any(k.startswith("mqtt_") for k in counters):
            self._saved_counters = {
                k: v for k, v in self._saved_counters.items() if not k.startswith("mqtt_")
            }
        for _, b in batches:
            for _, source in b:
                self.sources[source] = source
        # One transaction for the whole file: a replay is stored entirely or not at all, so
        # it can always be run again. A database away gets --stop-timeout to come back.
        self.retry.deadline = time.monotonic() + self.stop_timeout
        try:
            self._process([(ts, list(b)) for ts, b in batches], split=False)
        except Unwritten as e:
            raise StoreError(
                f"{self.where}: cannot replay {path} ({' '.join(str(e.cause).split())}); "
                "nothing of it was stored, "
                "run the replay again once the database answers"
            ) from None
        finally:
            self.sock.close()
            self.store.close()
        done = f"{path}.replayed"
        os.replace(path, done)
        n = sum(len(b) for _, b in batches)
        log.info(
            "replayed %d datagrams from %s: %d readings stored; the file is now %s",
            n,
            path,
            self.stored,
            done,
        )
        return 0

    # -- the receiving thread

    def _receive(self) -> None:
        sock = self.sock
        read = self.receiver.read
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        backlog = self.backlog
        next_check = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                self._check_drops()
            if not poller.poll(200):
                continue
            try:
                self._drain(read, backlog, 16)
            except OSError as e:  # nothing a UDP receive should raise, but never stop for it
                log.error("receiving: %s", e)
            # Let datagrams gather for a moment. Waking for every few of them makes this thread
            # fight the storing one for the GIL, which sqlite3 releases and takes back per row.
            time.sleep(COALESCE)
        self._last_drain()

    def _last_drain(self) -> None:
        """Stopping: take everything the socket holds into the backlog, then close it.

        What the socket holds was received: it goes to the backlog past its bounds (the
        socket's buffer bounds it; a sender still going is cut off at what the buffer holds),
        to be stored, or spilled and counted if the database will not take it. Then the
        socket is closed at once, not when storing is done: with --reuse-port, closing is
        what hands this socket's sources to the rest of the group (the kernel picks among
        the sockets bound then), so a slow database here costs the others nothing. Only a
        datagram that arrives between the last read and the close (microseconds) is lost
        with the socket, uncounted: Linux has no way to leave a group and keep the queue.
        """
        read = self.receiver.read
        taken = 0
        try:
            # At least 768 bytes of buffer a datagram (the kernel's truesize of a small one).
            most = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 768 + BATCH_MAX
            while taken < most:
                batch = read(BATCH_MAX)
                if batch:
                    self.backlog.put((time.time(), batch), force=True)
                    taken += len(batch)
                if len(batch) < BATCH_MAX:
                    break
        except OSError as e:
            log.error("receiving: %s", e)
        self._check_drops()
        self.sock.close()
        log.info(
            "stopping: %d datagrams taken from the socket, which is closed%s; storing them",
            taken,
            " (the other collectors on the port take its sources now)" if self.reuse_port else "",
        )

    def _check_drops(self) -> None:
        """Read the kernel's drop count; log a warning when any drop count grew."""
        kd = kernel_drops(self.sock)
        if kd is not None:
            self.kernel_drops = kd
        drops = self.kernel_drops + self.backlog.dropped
        if drops > self._reported_drops:
            log.warning(
                "dropped datagrams: %d by the kernel (receive buffer full), "
                "%d by the queue (storing too slow)",
                self.kernel_drops,
                self.backlog.dropped,
            )
            self._reported_drops = drops

    @staticmethod
    def _drain(
        read: Callable[[int], list[tuple[bytes, Any]]], backlog: Backlog, batches: int
    ) -> None:
        """Read until EAGAIN, or `batches` full batches; queue them."""
        for _ in range(batches):
            batch = read(BATCH_MAX)
            if batch:
                backlog.put((time.time(), batch))
            if len(batch) < BATCH_MAX:
                return

    # -- life cycle

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Receive until stopped (stop() or a signal); store everything received; 0 or 1."""
        storer = threading.Thread(target=self._storing, name="precast-store", daemon=True)
        storer.start()
        try:
            if ready is not None:
                ready()
            self._receive()
        finally:
            self.retry.deadline = time.monotonic() + self.stop_timeout
            self.backlog.close()
            storer.join()
            self.sock.close()
            for sink in self.sinks:
                sink.close()
            self._save_counters()  # what the sinks counted while closing (MQTT's last drops)
            self.reporter.flush(force=True)
            if self._recent_changed:
                with contextlib.suppress(StoreError):
                    self.store.save_recent(list(self.reporter.recent))
            self.store.close()
        c = self._counters()
        log.info(
            "stopped: %d readings stored this run; drops: %d queue, %d kernel",
            self.stored,
            c["queue_drops"],
            c["kernel_drops"],
        )
        return 1 if self.error is not None else 0

    def stop(self) -> None:
        """Stop receiving; run() then stores what was received and returns."""
        self.stopping.set()

    def status(self) -> dict[str, Any]:
        """A snapshot for metrics: devices, rejects by reason, drops, queue depth."""
        return {
            "devices": list(self.tracker.devices.values()),
            "rejects": dict(self.rejects),
            "counters": self._counters(),
            "queue": self.backlog.size,
        }


# ---- commands ------------------------------------------------------------------------------


def cmd_collect(args: argparse.Namespace) -> int:
    """`precast collect`: run the daemon until SIGTERM or SIGINT."""
    # A SIGHUP while starting would kill the process: templates are being loaded anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not 1 <= args.window <= MAX_WINDOW:
        raise UsageError(
            f"--window must be 1 to {MAX_WINDOW} (its bitmap is kept for every device), "
            f"got {args.window}"
        )
    if args.queue < 1:
        raise UsageError("--queue must be at least 1")
    if args.stop_timeout < 0:
        raise UsageError("--stop-timeout must be at least 0")
    templates = args.templates or [str(p) for p in default_templates()]
    if args.replay_spill:
        listen = ("127.0.0.1", 0)  # nothing is received: the spill file is the input
    else:
        listen = parse_hostport(args.listen, default_host="0.0.0.0", allow_zero=True)
    if args.queue_bytes < 65536 + 160:
        raise UsageError("--queue-bytes must hold one 64 KiB datagram (at least 65696)")
    if args.max_devices < 1:
        raise UsageError("--max-devices must be at least 1")
    if args.metrics_devices < 0:
        raise UsageError("--metrics-devices must be 0 or more")
    # Where the collector writes: a link planted there is refused now, not at the first write.
    for what, path in (
        ("--ready-file", args.ready_file),
        ("--ready-file", args.ready_file and f"{args.ready_file}.tmp"),
        ("--jsonl", args.jsonl if args.jsonl != "-" else None),
        ("--spill", None if args.replay_spill else args.spill),
    ):
        if path:
            refuse_link(what, path)
    big_datagrams_unmapped()  # memory of big (hostile) datagrams goes back when dropped
    # Files the collector creates (database, WAL, --jsonl, spill) are 0640 at most.
    os.umask(os.umask(0o027) | 0o027)
    if args.key is not None:
        log.warning(
            "--key on the command line is readable by every local user (/proc/%d/cmdline); "
            "put the key in a file only the collector can read and use --key-file FILE",
            os.getpid(),
        )
    mqtt = mqtt_sink.config_from(args)
    col = Collector(
        listen,
        templates,
        args.db,
        key=args.key,
        keys_file=args.keys,
        jsonl=args.jsonl,
        window=args.window,
        queue=args.queue,
        rcvbuf=args.rcvbuf,
        reuse_port=args.reuse_port,
        spill=args.spill,
        stop_timeout=args.stop_timeout,
        key_file=args.key_file,
        queue_bytes=args.queue_bytes,
        max_devices=args.max_devices,
        mqtt=mqtt,
    )
    if args.replay_spill:
        return col.replay(args.replay_spill)
    metrics = (
        serve_metrics(
            col.status,
            parse_hostport(args.metrics, default_host="127.0.0.1", allow_zero=True),
            args.metrics_devices,
        )
        if args.metrics
        else None
    )

    def on_stop(signum: int, frame: object) -> None:
        log.info("%s: storing what was received, then exiting", signal.Signals(signum).name)
        col.stop()

    def on_hup(signum: int, frame: object) -> None:
        col.reload_wanted.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)

    def ready() -> None:
        host, port = col.address
        names = ", ".join(f"{lay.template.name} ({tid})" for tid, lay in col.codec.layouts.items())
        log.info(
            "listening on %s:%d, storing in %s; templates: %s (from %s)",
            host,
            port,
            col.where,
            names,
            ", ".join(map(str, templates)),
        )
        if metrics:
            log.info("metrics on http://%s:%d/metrics", *metrics)
        if args.ready_file:
            doc = {
                "pid": os.getpid(),
                "host": host,
                "port": port,
                "db": col.where,
                "metrics": f"{metrics[0]}:{metrics[1]}" if metrics else None,
            }
            try:
                write_replacing("--ready-file", args.ready_file, (json.dumps(doc) + "\n").encode())
            except OSError as e:
                raise UsageError(f"--ready-file {args.ready_file}: {e.strerror}") from None

    return col.run(ready)


def register(sub: Any) -> None:
    """Add the `collect` and `stats` commands."""
    c = sub.add_parser(
        "collect",
        help="receive, check and store readings (a daemon)",
        description="Receive precast frames over UDP, check each in the wire format's order "
        "(docs/PROTOCOL.md), track every device's sequence and store readings in SQLite or "
        "PostgreSQL; several collectors may share one PostgreSQL database (a reading is stored "
        "once, the books stay exact). "
        "SIGTERM/SIGINT: store what was received and exit 0; SIGHUP: reload templates and keys.",
        epilog=examples(
            "precast collect --templates templates --db precast.db",
            "precast collect --listen :20547 --keys keys.txt --jsonl readings.jsonl --metrics "
            ":9108",
            "precast collect --db precast.db --ready-file /run/precast/ready.json --log-level "
            "debug",
            "precast collect --db postgresql://precast@db.example/precast --reuse-port "
            "--spill /var/lib/precast/spill.jsonl",
            "precast collect --db postgresql://precast@db.example/precast --replay-spill "
            "/var/lib/precast/spill.jsonl",
            "precast collect --mqtt mqtt://ha@homeassistant.local --mqtt-password-file pw "
            "--ha-discovery",
        ),
    )
    c.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"UDP address to receive on; port 0 picks one (default {DEFAULT_LISTEN})",
    )
    c.add_argument(
        "--templates",
        nargs="+",
        action="extend",
        metavar="DIR|FILE",
        help="template directory or file, repeatable (default: ./templates, else the "
        "examples shipped with precast)",
    )
    c.add_argument(
        "--db",
        default="precast.db",
        metavar="PATH|URL",
        help="SQLite database path, or postgresql://USER[:PASS]@HOST[:PORT]/DBNAME (libpq URI; "
        "PG* environment variables and ~/.pgpass apply; default precast.db)",
    )
    k = c.add_mutually_exclusive_group()
    k.add_argument(
        "--key",
        type=key_arg,
        metavar="HEX",
        help="AES-128 key of every device (visible to local users: prefer --key-file)",
    )
    k.add_argument(
        "--key-file", metavar="FILE", help="file holding the AES-128 key of every device (hex)"
    )
    k.add_argument(
        "--keys",
        metavar="FILE",
        help="keys file: lines `DEVICE HEX` (* = default); a listed device must use a MIC",
    )
    c.add_argument("--jsonl", metavar="FILE|-", help="append one JSON line per stored reading")
    c.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics over HTTP")
    c.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help=f"sequence window: late/duplicate inside, reboot or replay below "
        f"(default {DEFAULT_WINDOW}, at most {MAX_WINDOW})",
    )
    c.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        metavar="N",
        help=f"datagrams the queue to the storing thread holds (default {DEFAULT_QUEUE})",
    )
    c.add_argument(
        "--queue-bytes",
        type=int,
        default=DEFAULT_QUEUE_BYTES,
        metavar="BYTES",
        help=f"bytes the queue holds, counting {160} per datagram besides its length "
        f"(default {DEFAULT_QUEUE_BYTES >> 20} MiB)",
    )
    c.add_argument(
        "--max-devices",
        type=int,
        default=DEFAULT_MAX_DEVICES,
        metavar="N",
        help="devices tracked at most; beyond, a new device's frames are refused "
        "(device-limit) unless it has a key of its own or sends a valid MIC "
        f"(default {DEFAULT_MAX_DEVICES})",
    )
    c.add_argument(
        "--metrics-devices",
        type=int,
        default=DEFAULT_METRICS_DEVICES,
        metavar="N",
        help="per-device series in /metrics for at most the N devices seen last "
        f"(default {DEFAULT_METRICS_DEVICES})",
    )
    c.add_argument(
        "--spill",
        default=DEFAULT_SPILL,
        metavar="FILE",
        help="where datagrams go that could not be stored at exit because the database "
        "stayed unreachable or unwritable past --stop-timeout (JSON lines, appended; "
        f"default {DEFAULT_SPILL}; --replay-spill loads it)",
    )
    c.add_argument(
        "--rcvbuf",
        type=int,
        default=DEFAULT_RCVBUF,
        metavar="BYTES",
        help=f"socket receive buffer (default {DEFAULT_RCVBUF})",
    )
    c.add_argument(
        "--ready-file",
        metavar="FILE",
        help="once listening, write JSON {pid, host, port, db, metrics} here",
    )
    c.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several collectors on this host share the UDP port "
        "(the kernel keeps each source on one of them)",
    )
    c.add_argument(
        "--stop-timeout",
        type=float,
        default=STOP_WAIT,
        metavar="S",
        help="at SIGTERM, how long to retry an unreachable or unwritable database before "
        f"spilling (default {STOP_WAIT:g})",
    )
    c.add_argument(
        "--replay-spill",
        metavar="FILE",
        help="store a spill file's datagrams (checked and counted as if just received), "
        "rename it FILE.replayed, and exit",
    )
    c.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    mqtt_sink.add_arguments(c)
    c.set_defaults(func=cmd_collect)
