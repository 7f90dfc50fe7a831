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

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from precast.collect.backlog import DEFAULT_QUEUE_BYTES, Backlog, Batch, Datagrams
from precast.collect.dburl import display_db
from precast.collect.files import LinkRefused
from precast.collect.ingest import Commit, Ingest
from precast.collect.keys import load_key_file, load_keys
from precast.collect.outage import DEFAULT_STOP_TIMEOUT, StoreRetry, Unwritten
from precast.collect.receiver import (
    bind_udp,
    kernel_drops,
    receiver_for,
    seal,
)
from precast.collect.report import Reporter
from precast.collect.sinks import Sink, Stored
from precast.collect.sinks import mqtt as mqtt_sink
from precast.collect.sinks.jsonl import JsonlSink
from precast.collect.spill import DEFAULT_SPILL, read_spill, write_spill
from precast.collect.store import StoreError, open_store
from precast.collect.tracker import DEFAULT_MAX_DEVICES, DEFAULT_WINDOW, Device, Tracker, Verdict
from precast.errors import PrecastError
from precast.wire.codec import Codec
from precast.wire.constants import DEFAULT_PORT
from precast.wire.layout import load_layouts

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
        self.sources: dict[Any, str] = {}
        self.codec = self._load_codec()
        self._use(self.codec)
        self.store = open_store(db)
        self.where = display_db(db)  # never the password
        self.spill = spill
        self.stop_timeout = stop_timeout
        self.retry = StoreRetry(self.store, self.store.transient)
        self.store.ensure_templates(self.codec.layouts.values())
        for dev in self.store.load_devices():
            self.ingest.load(dev)
        self.rejects, counters = self.store.load_counts()
        # Totals of earlier runs, which this run's counts add to (counters by name).
        self.base: dict[str, int] = dict(counters)
        self.kernel_drops = 0  # of this run's socket
        self.backlog = Backlog(queue, queue_bytes)
        self.sinks: list[Sink] = [JsonlSink(jsonl)] if jsonl else []
        self._limit_refused = 0  # device-limit refusals not yet logged
        self._limit_logged = 0.0
        self._next_requests = 0.0
        self.reporter = Reporter(
            lambda: self.codec.layouts,
            lambda d: d in self.codec.keys,
            proven=lambda d: d in self.tracker.devices and self.tracker.devices[d].received > 0,
            established=self._established,
        )
        self._recent_changed = False
        self.mqtt: mqtt_sink.MqttSink | None = None
        self._configs: dict[str, bool] = {}  # discovery configs not yet recorded in the store
        if mqtt is not None:
            # Before the socket is bound: a broker refusing us ends the start (exit 2).
            publisher = mqtt_sink.MqttSink(
                mqtt[0],
                self.codec.layouts,
                mqtt[1],
                devices=self.tracker.devices.values,
                published=self.store.load_configs() if mqtt[1].discovery is not None else (),
            )
            publisher.start()
            self.sinks.append(publisher)
            self.mqtt = publisher
        # Readings committed for the sinks this run; what a killed run left them (sinks/).
        self.sink_committed = 0
        for sink in self.sinks:
            if self.base.get(sink.position, 0) > 0:
                sink.missed(self.base[sink.position])
        self.stopping = threading.Event()
        self.reload_wanted = threading.Event()
        self.reuse_port = reuse_port
        self.sock = bind_udp(listen, rcvbuf, reuse_port)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.receiver = receiver_for(self.sock)
        self.receiver.cap = self._cap(self.codec)
        self.stored = 0
        # What the database holds (a killed run's positions included, until the first commit).
        self._saved_counters: dict[str, int] = {k: self.base.get(k, 0) for k in self._counters()}
        self.error: BaseException | None = None
        self._reported_drops = 0

    # -- setup

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
        self.ingest = Ingest(codec, self.tracker, self.sources, self._source)
        if hasattr(self, "receiver"):
            self.receiver.cap = self._cap(codec)

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
        log.info("reloaded templates: %s; keys for %d devices", names, len(codec.keys))
        return True

    # -- the storing thread

    def _established(self, device: int) -> str | None:
        """A device's established sequence in words, for a conflict's log line."""
        d = self.tracker.devices.get(device)
        if d is None:
            return None
        return f"at seq {d.highest}, from {d.source or 'an unknown source'}"

    def _counters(self, committing: int = 0) -> dict[str, int]:
        """The totals the database keeps: this run's counts added to the earlier runs'.
        committing: the readings of the commit they go with (the sinks' positions)."""
        run = {"queue_drops": self.backlog.dropped, "kernel_drops": self.kernel_drops}
        run["jsonl_drops"] = 0  # shown (as 0) without --jsonl too
        for sink in self.sinks:
            for k, n in sink.counters().items():
                run[k] = run.get(k, 0) + n
            run[sink.position] = self.sink_committed + committing - sink.taken()
        base = self.base
        return {k: base.get(k, 0) + n for k, n in run.items()}

    def _save_counters(self) -> None:
        changed = {k: n for k, n in self._counters().items() if self._saved_counters.get(k) != n}
        if not changed:
            return
        try:
            self.store.commit((), lambda fresh: Commit(counters=changed))
            self._saved_counters.update(changed)
        except self.store.transient as e:
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

    def _store_piece(self, batches: list[Batch]) -> None:
        """Check, track and store the datagrams of batches in one transaction (or none).

        The store hands the Ingest the books another collector moved on (PostgreSQL);
        the Ingest classifies the piece into a Commit, which the store writes. A failed
        attempt leaves nothing behind: the tracker is rolled back, and the retry
        classifies the piece again from the database's books.
        """
        tracker = self.tracker
        ingest = self.ingest
        built: list[Commit] = []

        def build(fresh: dict[int, Device | None]) -> Commit:
            ingest.fresh(fresh)
            c = ingest.run(batches)
            saved = self._saved_counters
            now = self._counters(c.stored if self.sinks else 0)
            c.counters = {k: n for k, n in now.items() if saved.get(k) != n}
            built[:] = [c]
            return c

        tracker.begin()
        try:
            stored = self.store.commit(ingest.touched(batches), build)
        except BaseException:
            tracker.rollback()
            raise
        tracker.commit()
        c = built[0]
        for k, n in c.rejects.items():
            self.rejects[k] = self.rejects.get(k, 0) + n
        self._limit_refused += c.rejects.get(Verdict.DEVICE_LIMIT.value, 0)
        self._report(c)
        self._saved_counters.update(c.counters)
        self.stored += stored
        if self.sinks and c.rows:
            self.sink_committed += c.stored
            batch = Stored(c.rows, {tid: ingest.names[tid] for tid in c.rows})
            for sink in self.sinks:
                try:
                    sink.write(batch)
                except Exception:  # a sink counts its own outages; this is a bug in one
                    log.exception("sink %s failed", sink.name)

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

    def _record_configs(self) -> None:
        """Once a second: the discovery configs the MQTT sink published or cleared, into the
        store, so that a later run clears the orphans of a template change."""
        if self.mqtt is None:
            return
        self._configs.update(self.mqtt.take_configs())
        if not self._configs:
            return
        try:
            self.store.save_configs(self._configs)
            self._configs = {}
        except StoreError as e:
            log.debug("cannot record the discovery configs now: %s", e)

    def _report(self, c: Commit) -> None:
        """Tell the log what the stored batch saw: new devices, refused frames."""
        report = self.reporter
        layouts = self.codec.layouts
        for n in c.new:
            if n.device in self.tracker.devices:  # refused ones (a device limit) are not new
                name = layouts[n.template].template.name if n.template in layouts else "?"
                report.new_device(n.device, name, n.template, self._source(n.addr))
        for r in c.refused:
            report.refused(r.reason, self._source(r.addr), r.data)
        if c.refused:
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
            elif self.tracker.reset(device) or self.store.books_shared:
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
                    self._record_configs()
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
        check = self.ingest.validator.check
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
        for k, n in counters.items():
            self.base[k] = self.base.get(k, 0) + n
        # Those not counted by this run are written with the replay (as they grew).
        self._saved_counters = {k: v for k, v in self._saved_counters.items() if k not in counters}
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
        socket is closed at once, not when storing is done, so a slow database here costs
        the others nothing.

        First the socket is connected to itself (`seal`): a connected UDP socket takes only
        its peer's datagrams, so from then on the kernel gives every source to the rest of a
        --reuse-port group, and the socket's queue is a closed set that the reads empty.
        Closing at once instead loses what arrives between the last read and the close,
        uncounted (under load, dozens of readings a stop).
        """
        read = self.receiver.read
        taken = 0
        seal(self.sock)
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
    def _drain(read: Callable[[int], Datagrams], backlog: Backlog, batches: int) -> None:
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
            self._record_configs()
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
            "sinks": {sink.name: sink.stats() for sink in self.sinks},
        }
