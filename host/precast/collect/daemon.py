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
from precast.collect.keys import load_keys
from precast.collect.metrics import serve_metrics
from precast.collect.receiver import bind_udp, kernel_drops, receiver_for
from precast.collect.rows import Row, RowBuilder, row_builder, utc_iso
from precast.collect.sinks import Sink, Stored
from precast.collect.sinks import mqtt as mqtt_sink
from precast.collect.sinks.jsonl import JsonlSink
from precast.collect.store import StoreError, open_store
from precast.collect.tracker import DEFAULT_WINDOW, REPLAY, Tracker
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
        mqtt: tuple[mqtt_sink.MqttUrl, mqtt_sink.MqttOptions] | None = None,
    ) -> None:
        self.templates = templates
        self.key = key
        self.keys_file = keys_file
        self.codec = self._load_codec()
        self._use(self.codec)
        self.store = open_store(db)
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
        self.base_mqtt = {k: n for k, n in counters.items() if k.startswith("mqtt_")}
        self.sinks: list[Sink] = [JsonlSink(jsonl)] if jsonl else []
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
        self.sock = bind_udp(listen, rcvbuf)
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
        if self.mqtt is not None:
            self.mqtt.set_layouts(codec.layouts)
        names = ", ".join(f"{lay.template.name} ({tid})" for tid, lay in codec.layouts.items())
        log.info("reloaded templates: %s; keys for %d devices", names, len(codec.keys))

    # -- the storing thread

    def _counters(self) -> dict[str, int]:
        c = {
            "queue_drops": self.base_queue_drops + self.backlog.dropped,
            "kernel_drops": self.base_kernel_drops + self.kernel_drops,
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

    def _process(self, batches: list[Batch]) -> None:
        """Check, track and store every datagram of the batches, in one transaction."""
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
        failures = 0
        while True:
            try:
                self.store.write(
                    rows, devices, {k: rejects[k] for k in changed_rejects}, changed_counters
                )
                break
            except StoreError as e:
                # A locked or full disk: keep the batch and retry; the receiving thread goes
                # on, and the queue counts what it cannot hold meanwhile.
                failures += 1
                if self.backlog.closed and failures > 10:
                    raise  # stopping, and the disk stays bad: give up after 10 s
                log.error("cannot write to the database (%s); retrying in 1 s", e)
                time.sleep(1.0)
        self._saved_counters.update(changed_counters)
        self.stored += sum(map(len, rows.values()))
        if self.sinks and rows:
            stored = Stored(rows, {tid: builders[tid][1] for tid in rows})
            for sink in self.sinks:
                sink.write(stored)

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
                    self.reload()
                if batches:
                    self._process(batches)
                elif self.backlog.closed:
                    return  # run() saves the last counters, once the sinks are closed too
                elif self._counters() != self._saved_counters:
                    self._process(batches)
        except BaseException as e:
            self.error = e
            log.exception("storing failed; stopping")
            self.stopping.set()

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
            self.backlog.close()
            storer.join()
            self.sock.close()
            for sink in self.sinks:
                sink.close()
            self._save_counters()  # what the sinks counted while closing (MQTT's last drops)
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
    if args.window < 1:
        raise UsageError("--window must be at least 1")
    if args.queue < 1:
        raise UsageError("--queue must be at least 1")
    templates = args.templates or [str(p) for p in default_templates()]
    mqtt = mqtt_sink.config_from(args)
    col = Collector(
        parse_hostport(args.listen, default_host="0.0.0.0", allow_zero=True),
        templates,
        args.db,
        key=args.key,
        keys_file=args.keys,
        jsonl=args.jsonl,
        window=args.window,
        queue=args.queue,
        rcvbuf=args.rcvbuf,
        mqtt=mqtt,
    )
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
            args.db,
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
                "db": str(args.db),
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
        "(docs/PROTOCOL.md), track every device's sequence and store readings in SQLite. "
        "SIGTERM/SIGINT: store what was received and exit 0; SIGHUP: reload templates and keys.",
        epilog=examples(
            "precast collect --templates templates --db precast.db",
            "precast collect --listen :20547 --keys keys.txt --jsonl readings.jsonl --metrics "
            ":9108",
            "precast collect --db precast.db --ready-file /run/precast/ready.json --log-level "
            "debug",
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
        "--db", default="precast.db", metavar="PATH", help="SQLite database (default precast.db)"
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
    c.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    mqtt_sink.add_arguments(c)
    c.set_defaults(func=cmd_collect)
