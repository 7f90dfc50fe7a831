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
  the stored readings to the sinks (sinks/: --jsonl).

SIGTERM and SIGINT stop receiving, store every datagram already received,
flush and exit 0; SIGHUP reloads templates and keys (keys.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from precast.args import examples, key_arg, parse_hostport
from precast.collect.backlog import Backlog, Batch
from precast.collect.dburl import display_db
from precast.collect.keys import load_keys
from precast.collect.metrics import serve_metrics
from precast.collect.outage import DEFAULT_STOP_TIMEOUT, StoreRetry, Unwritten
from precast.collect.receiver import bind_udp, kernel_drops, receiver_for
from precast.collect.rows import Row, RowBuilder, reading_doc, row_builder, utc_iso
from precast.collect.sinks import Doc, Sink
from precast.collect.sinks.jsonl import JsonlSink
from precast.collect.spill import DEFAULT_SPILL, read_spill, write_spill
from precast.collect.store import SharedStore, StoreError, open_store, transient_errors
from precast.collect.tracker import DEFAULT_WINDOW, REPLAY, Device, Tracker
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
REPLAY_REASON = "replay"


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
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> None:
        self.templates = templates
        self.key = key
        self.keys_file = keys_file
        self.codec = self._load_codec()
        self._use(self.codec)
        self.store = open_store(db)
        self.where = display_db(db)  # never the password
        self.spill = spill
        self.stop_timeout = stop_timeout
        self.retry = StoreRetry(self.store, transient_errors(self.store))
        self.store.ensure_templates(self.codec.layouts.values())
        self.tracker = Tracker(window)
        for dev in self.store.load_devices():
            self.tracker.load(dev)
        self.rejects, counters = self.store.load_counts()
        self.base_queue_drops = counters.get("queue_drops", 0)
        self.base_kernel_drops = counters.get("kernel_drops", 0)
        self.kernel_drops = 0  # of this run's socket
        self.backlog = Backlog(queue)
        self.sources: dict[Any, str] = {}
        self.sinks: list[Sink] = [JsonlSink(jsonl)] if jsonl else []
        self.stopping = threading.Event()
        self.reload_wanted = threading.Event()
        self.sock = bind_udp(listen, rcvbuf, reuse_port)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.receiver = receiver_for(self.sock)
        self.stored = 0
        self._saved_counters: dict[str, int] = {}
        self.error: BaseException | None = None
        self._reported_drops = 0

    # -- setup

    def _load_codec(self) -> Codec:
        layouts = load_layouts(self.templates)
        default, keys = self.key, dict[int, bytes]()
        if self.keys_file:
            file_default, keys = load_keys(self.keys_file)
            default = file_default if file_default is not None else default
        return Codec(layouts, key=default, keys=keys)

    def _use(self, codec: Codec) -> None:
        """Check frames against codec's templates and keys from now on."""
        self.codec = codec
        self.validator = Validator(codec)
        self.rows: dict[int, tuple[RowBuilder, list[str]]] = {
            tid: (row_builder(lay), [s.field.name for s in lay.fields])
            for tid, lay in codec.layouts.items()
        }

    def reload(self) -> None:
        """Load templates and keys again; on an error keep the ones in use."""
        try:
            codec = self._load_codec()
            self.store.ensure_templates(codec.layouts.values())
        except PrecastError as e:
            log.error("reload failed, keeping the templates and keys in use: %s", e)
            return
        self._use(codec)
        names = ", ".join(f"{lay.template.name} ({tid})" for tid, lay in codec.layouts.items())
        log.info("reloaded templates: %s; keys for %d devices", names, len(codec.keys))

    # -- the storing thread

    def _counters(self) -> dict[str, int]:
        return {
            "queue_drops": self.base_queue_drops + self.backlog.dropped,
            "kernel_drops": self.base_kernel_drops + self.kernel_drops,
        }

    def _process(self, batches: list[Batch]) -> None:
        """Check, track and store every datagram of the batches, in one transaction.

        A write that fails (a locked or full disk, a database away) is retried with
        backoff (outage.py): the receiving thread goes on, and the queue counts what
        it cannot hold meanwhile. Past the stop deadline the batch is spilled.
        """
        store = self.store
        if getattr(store, "shared", False):
            self._process_shared(batches)
            return
        rows, devices, rejects, counters = self._classify(batches)

        def attempt() -> int:
            store.write(rows, devices, rejects, counters)
            return sum(map(len, rows.values()))

        self.stored += self.retry.run(attempt, undo=lambda: None, pending=batches)
        self._saved_counters.update(counters)
        self._emit(rows)

    def _process_shared(self, batches: list[Batch]) -> None:
        """The same, for a database other collectors write too (store.SharedStore).

        The store locks the books of the devices the batch touches and hands back
        those another collector moved on; the tracker takes them, then classifies.
        A failed attempt leaves nothing behind: the rejects are put back as they
        were, the store forgets the touched devices, and the retry classifies the
        batch again from the database's books.
        """
        store: SharedStore = self.store  # type: ignore[assignment]
        specs = self.validator.specs
        # The device ids of the template frames (magic, version/flags and template id, then
        # the device): a frame of the wrong length only locks a device for nothing.
        ids = {data[4:8] for _, batch in batches for data, _ in batch if data[:4] in specs}
        touched = {int.from_bytes(i, "big") for i in ids if len(i) == 4}
        out: list[Any] = []

        def work(fresh: dict[int, Device | None]) -> Any:
            for dev, state in fresh.items():
                if state is None:
                    self.tracker.devices.pop(dev, None)
                else:
                    self.tracker.load(state)
            rows, devices, rejects, counters = self._classify(batches)
            out[:] = [rows, counters]
            return rows, devices, rejects, counters

        saved = dict(self.rejects)

        def undo() -> None:
            self.rejects.clear()
            self.rejects.update(saved)

        self.stored += self.retry.run(
            lambda: store.transact(touched, work), undo=undo, pending=batches
        )
        self._saved_counters.update(out[1])
        self._emit(out[0])

    def _classify(
        self, batches: list[Batch]
    ) -> tuple[dict[int, list[Row]], list[Device], dict[str, int], dict[str, int]]:
        """Check and track every datagram: (rows, changed devices, rejects, counters)."""
        check = self.validator.check
        builders = self.rows
        tracker = self.tracker
        observe = tracker.observe
        rejects = self.rejects
        sources = self.sources
        describe = self.receiver.describe
        rows: dict[int, list[Row]] = {}
        changed_rejects: set[str] = set()
        for ts, batch in batches:
            at = utc_iso(ts)
            for data, addr in batch:
                reason, sp, v = check(data)
                if reason:
                    if v is not None and reason != NO_KEY:
                        tracker.bad_check(v[3])
                    rejects[reason] = rejects.get(reason, 0) + 1
                    changed_rejects.add(reason)
                    continue
                assert sp is not None and v is not None
                epoch = observe(v[3], sp.id, v[4], ts, sp.mic)
                if epoch < 0:
                    if epoch == REPLAY:
                        rejects[REPLAY_REASON] = rejects.get(REPLAY_REASON, 0) + 1
                        changed_rejects.add(REPLAY_REASON)
                    continue
                src = sources.get(addr)
                if src is None:
                    if len(sources) > 10_000:  # a flood of spoofed sources: forget them
                        sources.clear()
                    src = sources[addr] = describe(addr)
                r = rows.get(sp.id)
                if r is None:
                    r = rows[sp.id] = []
                r.append(builders[sp.id][0](v, epoch, at, src))
        counters = self._counters()
        changed_counters = {k: n for k, n in counters.items() if self._saved_counters.get(k) != n}
        devices = tracker.take_dirty()
        return rows, devices, {k: rejects[k] for k in changed_rejects}, changed_counters

    def _emit(self, rows: dict[int, list[Row]]) -> None:
        """Hand the stored readings to the sinks."""
        if self.sinks and rows:
            builders = self.rows
            docs: list[Doc] = [
                reading_doc(tid, builders[tid][1], row) for tid, rs in rows.items() for row in rs
            ]
            for sink in self.sinks:
                sink.write(docs)

    def _storing(self) -> None:
        try:
            while True:
                batches = self.backlog.take(1.0)
                if self.reload_wanted.is_set():
                    self.reload_wanted.clear()
                    self.reload()
                if batches or self._counters() != self._saved_counters:
                    self._process(batches)
                elif self.backlog.closed:
                    return
        except Unwritten as e:
            self._spill(e)
        except BaseException as e:
            self.error = e
            log.exception("storing failed; stopping")
            self.stopping.set()

    def _spill(self, e: Unwritten) -> None:
        """Past the stop deadline with the database away: everything not written to the spill."""
        batches = e.batches + self.backlog.take(0)
        describe = self.receiver.describe
        named = [(ts, [(d, self.sources.get(a) or describe(a)) for d, a in b]) for ts, b in batches]
        c = self._counters()
        grown = {k: n - self._saved_counters.get(k, self._base_counter(k)) for k, n in c.items()}
        n = sum(len(b) for _, b in batches)
        try:
            write_spill(self.spill, named, grown)
        except OSError as err:
            self.error = err
            log.error(
                "the database stayed unreachable (%s) and the spill file %s cannot be written "
                "(%s): %d datagrams received were not stored",
                e.cause,
                self.spill,
                err.strerror,
                n,
            )
            return
        self.error = e
        log.error(
            "the database stayed unreachable for %.0f s after the stop (%s): %d datagrams "
            "received were not stored; they are in %s (load them with "
            "`precast collect --replay-spill %s`)",
            self.stop_timeout,
            " ".join(str(e.cause).split()),
            n,
            self.spill,
            self.spill,
        )

    def _base_counter(self, name: str) -> int:
        base = {"queue_drops": self.base_queue_drops, "kernel_drops": self.base_kernel_drops}
        return int(base.get(name, 0))

    def replay(self, path: str) -> int:
        """Store a spill file's datagrams as if they had just arrived; rename it FILE.replayed."""
        batches, counters = read_spill(path)
        self.base_queue_drops += counters.get("queue_drops", 0)
        self.base_kernel_drops += counters.get("kernel_drops", 0)
        for _, b in batches:
            for _, source in b:
                self.sources[source] = source
        # One transaction for the whole file: a replay is stored entirely or not at all, so
        # it can always be run again. A database away gets --stop-timeout to come back.
        self.retry.deadline = time.monotonic() + self.stop_timeout
        try:
            self._process([(ts, list(b)) for ts, b in batches])
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
        # Stopping: what is already in the socket buffer was received, so store it too (a
        # sender still going would keep it full: take at most what an 8 MiB buffer holds).
        self._drain(read, backlog, 64)
        self._check_drops()

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
        if ready is not None:
            ready()
        try:
            self._receive()
        finally:
            self.retry.deadline = time.monotonic() + self.stop_timeout
            self.backlog.close()
            storer.join()
            self.sock.close()
            self.store.close()
            for sink in self.sinks:
                sink.close()
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
    if args.window < 1:
        raise UsageError("--window must be at least 1")
    if args.queue < 1:
        raise UsageError("--queue must be at least 1")
    if args.stop_timeout < 0:
        raise UsageError("--stop-timeout must be at least 0")
    templates = args.templates or [str(p) for p in default_templates()]
    if args.replay_spill:
        listen = ("127.0.0.1", 0)  # nothing is received: the spill file is the input
    else:
        listen = parse_hostport(args.listen, default_host="0.0.0.0", allow_zero=True)
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
    )
    if args.replay_spill:
        return col.replay(args.replay_spill)
    metrics = (
        serve_metrics(
            col.status, parse_hostport(args.metrics, default_host="127.0.0.1", allow_zero=True)
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
            tmp = Path(f"{args.ready_file}.tmp")
            tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
            tmp.replace(args.ready_file)

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
    k.add_argument("--key", type=key_arg, metavar="HEX", help="AES-128 key of every device")
    k.add_argument("--keys", metavar="FILE", help="keys file: lines `DEVICE HEX` (* = default)")
    c.add_argument("--jsonl", metavar="FILE|-", help="append one JSON line per stored reading")
    c.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics over HTTP")
    c.add_argument(
        "--window",
        type=int,
        default=DEFAULT_WINDOW,
        metavar="N",
        help=f"sequence window: late/duplicate inside, reboot or replay below "
        f"(default {DEFAULT_WINDOW})",
    )
    c.add_argument(
        "--queue",
        type=int,
        default=DEFAULT_QUEUE,
        metavar="N",
        help=f"datagrams the queue to the storing thread holds (default {DEFAULT_QUEUE})",
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
        "--spill",
        default=DEFAULT_SPILL,
        metavar="FILE",
        help="where datagrams go that could not be stored at exit because the database "
        f"stayed unreachable (JSON lines, appended; default {DEFAULT_SPILL})",
    )
    c.add_argument(
        "--stop-timeout",
        type=float,
        default=DEFAULT_STOP_TIMEOUT,
        metavar="S",
        help="at SIGTERM, how long to wait for an unreachable database before spilling "
        f"(default {DEFAULT_STOP_TIMEOUT:g})",
    )
    c.add_argument(
        "--replay-spill",
        metavar="FILE",
        help="store a spill file's datagrams (checked and counted as if just received), "
        "rename it FILE.replayed, and exit",
    )
    c.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    c.set_defaults(func=cmd_collect)
