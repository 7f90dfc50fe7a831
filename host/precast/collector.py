"""The collector daemon: receive the UDP stream, check every frame, track, store.

Two threads and a bounded queue between them:

- the receiving thread (the main one, which also takes the signals) waits
  for the socket, then drains it until EAGAIN (recvmmsg(2) through ctypes,
  256 datagrams a call; recvfrom where there is none) and queues the
  datagrams as one batch stamped with one arrival time, then sleeps 2 ms so
  the next batch gathers; it never touches the disk, so a slow commit never
  stops it. When the queue is full the batch is dropped
  and counted (queue_drops); the kernel's own drops on the socket are read
  from /proc/net/udp (the `drops` column of the socket's inode) and counted
  too (kernel_drops).
- the storing thread takes everything queued, checks each datagram in
  docs/PROTOCOL.md's order, tracks each device's sequence (tracker.py) and writes
  the readings, the changed devices and the counters in one transaction
  (store.py), then appends the JSON lines.

A valid frame's first four payload bytes (magic, version/flags, template id)
are constant per template, so one dict lookup finds its template; a CRC-16
over the payload and its own big-endian CRC leaves 0, so one call checks it.
Anything refused there is decoded again by codec.Codec for its reason.

SIGTERM and SIGINT stop receiving, store every datagram already received,
flush and exit 0; SIGHUP reloads templates and keys.

Keys file (--keys): one device per line, `DEVICE HEX`: the device id
(decimal or 0x hex) and its AES-128 key as 32 hex digits; `*` as DEVICE sets
the key of every device not listed; `#` starts a comment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import socket
import sqlite3
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import IO, Any

from . import codec as codec_mod
from .checks import cmac, crc16, parse_key
from .cli import key_arg, load_layouts
from .codec import Codec, Rejected, to_units
from .errors import PrecastError, UsageError
from .layout import Layout
from .receiver import kernel_drops, receiver_for
from .store import Store, field_columns, read_stats
from .template import DEFAULT_PORT
from .tracker import DEFAULT_WINDOW, REPLAY, Tracker

log = logging.getLogger("precast.collect")

DEFAULT_LISTEN = f"0.0.0.0:{DEFAULT_PORT}"
# 32 MiB holds about 80,000 small datagrams (the kernel counts twice what is asked, and
# about 800 bytes per datagram): half a second at 150,000/s while the CPU is busy elsewhere.
DEFAULT_RCVBUF = 32 << 20
DEFAULT_QUEUE = 262_144  # datagrams; about 1.7 s at 150,000 readings/s
BATCH_MAX = 4096  # datagrams per drain, so the queue sees a long burst in pieces
COALESCE = 0.002  # s the receiving thread sleeps after a drain (about a third less CPU)
REPLAY_REASON = "replay"
STALE_INTERVALS = 3  # silent for more than this many of its usual intervals: stale

Row = tuple[Any, ...]
Batch = tuple[float, list[tuple[bytes, Any]]]


# ---- options -------------------------------------------------------------------------------


def parse_hostport(text: str, default_host: str = "0.0.0.0") -> tuple[str, int]:
    """HOST:PORT, [V6]:PORT or :PORT as (host, port); port 0 asks for an ephemeral port."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise UsageError(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]") or default_host
    try:
        p = int(port)
    except ValueError:
        raise UsageError(f"{text!r}: port is not a number") from None
    if not 0 <= p <= 65535:
        raise UsageError(f"{text!r}: port out of range 0..65535")
    return host, p


def load_keys(path: str | Path) -> tuple[bytes | None, dict[int, bytes]]:
    """(default key, {device: key}) from a keys file (format in the module docstring)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: cannot read keys: {e}") from None
    default: bytes | None = None
    keys: dict[int, bytes] = {}
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{path}:{n}"
        if len(words) != 2:
            raise UsageError(f"{where}: expected `DEVICE HEX`, got {line.strip()!r}")
        try:
            key = parse_key(words[1])
        except PrecastError as e:
            raise UsageError(f"{where}: {e}") from None
        if words[0] == "*":
            default = key
            continue
        try:
            dev = int(words[0], 0)
        except ValueError:
            raise UsageError(f"{where}: device {words[0]!r} is not an integer") from None
        if not 0 <= dev <= 0xFFFFFFFF:
            raise UsageError(f"{where}: device {dev} is out of range 0..4294967295")
        keys[dev] = key
    return default, keys


def utc_iso(ts: float) -> str:
    """Unix time as UTC ISO 8601 with microseconds: 2026-01-02T03:04:05.678901Z."""
    sec = int(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((ts - sec) * 1e6):06d}Z"


# ---- decoding ------------------------------------------------------------------------------


def _row_builder(layout: Layout) -> Callable[[tuple[Any, ...], int, str, str], Row]:
    """A function (unpacked body, epoch, received_at, source) -> the readings row.

    Generated once per template so that each field costs one expression. A
    field in units is codec.to_units: raw * scale + offset, rounded to the
    scale's decimals k. With integers m = scale * 10**k and o = offset * 10**k
    that is (raw * m + o) / 10**k, one correctly rounded division: the same
    float, without round()'s cost. An f32 field carries units (no scale, no
    offset): to_units only names the float32 by its shortest decimal.
    """
    env: dict[str, Any] = {}
    parts = []
    for i, s in enumerate(layout.fields):
        f = s.field
        v = f"v[{5 + i}]"
        ints = type(f.scale) is int and type(f.offset) is int
        if f.type == "f32":
            env[f"_u{i}"] = partial(to_units, s)
            parts.append(f"_u{i}({v})")
        elif ints and f.scale == 1 and f.offset == 0:
            parts.append(v)
        elif ints or not s.digits:
            parts.append(f"({v} * {f.scale!r} + {f.offset!r})")
        else:
            d = 10**s.digits
            m = Decimal(repr(f.scale)) * d
            o = Decimal(repr(f.offset)) * d
            assert m == int(m) and o == int(o), (f, s.digits)
            parts.append(f"(({v} * {int(m)} + {int(o)}) / {d})")
    src = f"def row(v, e, t, s):\n    return (v[3], v[4], e, t, s, {', '.join(parts)})\n"
    exec(compile(src, f"<row {layout.template.name}>", "exec"), env)
    fn: Callable[[tuple[Any, ...], int, str, str], Row] = env["row"]
    return fn


class Spec:
    """One template as the storing thread uses it: lengths, check, unpacker, row builder."""

    def __init__(self, layout: Layout) -> None:
        t = layout.template
        self.layout = layout
        self.id = t.id
        self.mic = t.mic
        self.length = layout.payload_len
        self.check_offset = layout.check_offset
        self.check_len = layout.check_len
        self.unpack = struct.Struct(layout.body_fmt).unpack_from
        self.row = _row_builder(layout)
        self.names = [name for _, name, _ in field_columns(layout)]
        self.prefix = layout.payload[:4]  # magic, version/flags, template id


def _reason(codec: Codec, data: bytes) -> str:
    """Why data is refused: codec's reason; a frame that only decodes wrapped is 'length'."""
    r = codec.decode(data)
    # The fast path took every valid bare payload, so data can only decode here as a whole
    # Ethernet frame around one: over UDP that is a datagram of the wrong length.
    return r.reason if isinstance(r, Rejected) else codec_mod.LENGTH


def _mic_reason(codec: Codec, sp: Spec, device: int, data: bytes) -> str:
    """'' when the MIC is right, else no-key or mic."""
    key = codec.key_for(device)
    if key is None:
        return codec_mod.NO_KEY
    c = sp.check_offset
    return "" if cmac(key, data[:c], sp.check_len) == data[c:] else codec_mod.MIC


# ---- the queue between the threads ---------------------------------------------------------


class Backlog:
    """A bounded queue of batches, bounded in datagrams; what does not fit is counted."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.dropped = 0
        self.size = 0
        self.closed = False
        self._q: deque[Batch] = deque()
        self._cv = threading.Condition()

    def put(self, batch: Batch) -> bool:
        """Queue a batch; False (and its datagrams counted as dropped) when it does not fit."""
        n = len(batch[1])
        with self._cv:
            if self.size + n > self.limit:
                self.dropped += n
                return False
            self._q.append(batch)
            self.size += n
            self._cv.notify()
        return True

    def take(self, timeout: float) -> list[Batch]:
        """Every queued batch (waiting up to timeout for one)."""
        with self._cv:
            if not self._q and not self.closed:
                self._cv.wait(timeout)
            out = list(self._q)
            self._q.clear()
            self.size = 0
        return out

    def close(self) -> None:
        """No more batches: take() stops waiting."""
        with self._cv:
            self.closed = True
            self._cv.notify()


# ---- the daemon ----------------------------------------------------------------------------


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
    ) -> None:
        self.templates = templates
        self.key = key
        self.keys_file = keys_file
        self.codec = self._load_codec()
        self.specs = {s.prefix: s for s in map(Spec, self.codec.layouts.values())}
        self.store = Store(db)
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
        self.jsonl: IO[str] | None = None
        if jsonl == "-":
            self.jsonl = sys.stdout
        elif jsonl:
            self.jsonl = open(jsonl, "a", encoding="utf-8")
        self.stopping = threading.Event()
        self.reload_wanted = threading.Event()
        self.sock = self._bind(listen, rcvbuf)
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

    @staticmethod
    def _bind(listen: tuple[str, int], rcvbuf: int) -> socket.socket:
        host, port = listen
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise UsageError(f"--listen {host}:{port}: {e.strerror}") from None
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # SO_RCVBUFFORCE passes net.core.rmem_max when we may (CAP_NET_ADMIN).
            sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), rcvbuf)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            sock.bind(addr)
        except OSError as e:
            sock.close()
            raise UsageError(f"--listen {host}:{port}: {e.strerror}") from None
        sock.setblocking(False)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if got < rcvbuf:
            log.warning(
                "receive buffer is %d bytes, asked for %d (raise net.core.rmem_max)", got, rcvbuf
            )
        return sock

    def reload(self) -> None:
        """Load templates and keys again; on an error keep the ones in use."""
        try:
            codec = self._load_codec()
            self.store.ensure_templates(codec.layouts.values())
        except PrecastError as e:
            log.error("reload failed, keeping the templates and keys in use: %s", e)
            return
        self.codec = codec
        self.specs = {s.prefix: s for s in map(Spec, codec.layouts.values())}
        names = ", ".join(f"{lay.template.name} ({tid})" for tid, lay in codec.layouts.items())
        log.info("reloaded templates: %s; keys for %d devices", names, len(codec.keys))

    # -- the storing thread

    def _counters(self) -> dict[str, int]:
        return {
            "queue_drops": self.base_queue_drops + self.backlog.dropped,
            "kernel_drops": self.base_kernel_drops + self.kernel_drops,
        }

    def _process(self, batches: list[Batch]) -> None:
        """Check, track and store every datagram of the batches, in one transaction."""
        specs = self.specs
        codec = self.codec
        tracker = self.tracker
        observe = tracker.observe
        rejects = self.rejects
        sources = self.sources
        describe = self.receiver.describe
        rows: dict[int, list[Row]] = {}
        lines: list[str] | None = [] if self.jsonl is not None else None
        changed_rejects: set[str] = set()
        for ts, batch in batches:
            at = utc_iso(ts)
            for data, addr in batch:
                sp = specs.get(data[:4])
                if sp is None or len(data) != sp.length:
                    reason = _reason(codec, data)
                    rejects[reason] = rejects.get(reason, 0) + 1
                    changed_rejects.add(reason)
                    continue
                v = sp.unpack(data)
                if sp.mic:
                    reason = _mic_reason(codec, sp, v[3], data)
                elif crc16(data):
                    reason = codec_mod.CRC
                else:
                    reason = ""
                if reason:
                    if reason != codec_mod.NO_KEY:
                        tracker.bad_check(v[3])
                    rejects[reason] = rejects.get(reason, 0) + 1
                    changed_rejects.add(reason)
                    continue
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
                row = sp.row(v, epoch, at, src)
                r = rows.get(sp.id)
                if r is None:
                    r = rows[sp.id] = []
                r.append(row)
                if lines is not None:
                    fields = dict(zip(sp.names, row[5:], strict=True))
                    lines.append(
                        json.dumps(
                            {
                                "template": sp.id,
                                "device": v[3],
                                "seq": v[4],
                                "received_at": at,
                                "fields": fields,
                            }
                        )
                    )
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
            except sqlite3.Error as e:
                # A locked or full disk: keep the batch and retry; the receiving thread goes
                # on, and the queue counts what it cannot hold meanwhile.
                failures += 1
                if self.backlog.closed and failures > 10:
                    raise  # stopping, and the disk stays bad: give up after 10 s
                log.error("cannot write to the database (%s); retrying in 1 s", e)
                time.sleep(1.0)
        self._saved_counters.update(changed_counters)
        self.stored += sum(map(len, rows.values()))
        if lines and self.jsonl is not None:
            self.jsonl.write("\n".join(lines) + "\n")
            self.jsonl.flush()

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
            self.store.close()
            if self.jsonl is not None:
                self.jsonl.flush()
                if self.jsonl is not sys.stdout:
                    self.jsonl.close()
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


# ---- metrics -------------------------------------------------------------------------------


def serve_metrics(collector: Collector, hostport: tuple[str, int]) -> tuple[str, int]:
    """Serve Prometheus text from the collector's state at each scrape; the bound address."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector as PromCollector

    class Metrics(PromCollector):
        def collect(self) -> Iterator[Any]:
            s = collector.status()
            rej = CounterMetricFamily(
                "precast_rejected", "Frames refused, by reason", labels=["reason"]
            )
            for reason, n in sorted(s["rejects"].items()):
                rej.add_metric([reason], n)
            yield rej
            per = {
                "received": ("Distinct readings stored", CounterMetricFamily),
                "lost": ("Sequence numbers never received", GaugeMetricFamily),
                "duplicates": ("Readings received again", CounterMetricFamily),
                "late": ("Readings that arrived after a higher seq", CounterMetricFamily),
                "bad": ("Frames with a failed CRC or MIC", CounterMetricFamily),
                "reboots": ("Sequence restarts (new epochs)", CounterMetricFamily),
            }
            for name, (doc, kind) in per.items():
                fam = kind(f"precast_device_{name}", doc, labels=["device"])
                for d in s["devices"]:
                    fam.add_metric([str(d.device)], getattr(d, name))
                yield fam
            seen = GaugeMetricFamily(
                "precast_device_last_seen_seconds",
                "Unix time of the device's last reading",
                labels=["device"],
            )
            for d in s["devices"]:
                seen.add_metric([str(d.device)], d.last_seen)
            yield seen
            drops = CounterMetricFamily(
                "precast_dropped", "Datagrams never decoded, by where", labels=["where"]
            )
            drops.add_metric(["kernel"], s["counters"]["kernel_drops"])
            drops.add_metric(["queue"], s["counters"]["queue_drops"])
            yield drops
            yield GaugeMetricFamily(
                "precast_queue_depth", "Datagrams waiting to be stored", value=s["queue"]
            )

    registry = CollectorRegistry()
    registry.register(Metrics())
    host, port = hostport
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as e:
        raise UsageError(f"--metrics {host}:{port}: {e.strerror}") from None
    return host, int(server.server_port)


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
    templates = args.templates or ["templates"]
    col = Collector(
        parse_hostport(args.listen),
        templates,
        args.db,
        key=args.key,
        keys_file=args.keys,
        jsonl=args.jsonl,
        window=args.window,
        queue=args.queue,
        rcvbuf=args.rcvbuf,
    )
    metrics = (
        serve_metrics(col, parse_hostport(args.metrics, "127.0.0.1")) if args.metrics else None
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
        log.info("listening on %s:%d, storing in %s; templates: %s", host, port, args.db, names)
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


def _stats_doc(raw: dict[str, Any], now: float) -> dict[str, Any]:
    """The `stats --json` document (the contract keys, then extras) from store.read_stats."""
    devices = []
    for d in raw["devices"]:
        span = d["highest"] - d["epoch_seq"]
        interval = (d["last_seen"] - d["epoch_started"]) / span if span > 0 else None
        silent = max(0.0, now - d["last_seen"])
        total = d["received"] + d["lost"]
        stale = interval is not None and silent > STALE_INTERVALS * interval
        devices.append(
            {
                "device": d["device"],
                "template": d["template"],
                "received": d["received"],
                "lost": d["lost"],
                "duplicates": d["duplicates"],
                "late": d["late"],
                "last_seq": d["highest"],
                "template_name": raw["templates"].get(d["template"]),
                "loss_pct": round(100.0 * d["lost"] / total, 3) if total else 0.0,
                "bad": d["bad"],
                "reboots": d["reboots"],
                "replays": d["replays"],
                "epoch": d["epoch"],
                "first_seen": utc_iso(d["first_seen"]),
                "last_seen": utc_iso(d["last_seen"]),
                "silent_s": round(silent, 3),
                "interval_s": round(interval, 6) if interval is not None else None,
                "stale": stale,
                # The silent tail is loss too, but uncounted until the next reading says how much.
                "tail_lost": int(silent / interval) if stale and interval else 0,
            }
        )
    c = raw["counters"]
    return {
        "devices": devices,
        "rejected": {k: n for k, n in raw["rejects"].items() if n},
        "drops": {"queue": c.get("queue_drops", 0), "kernel": c.get("kernel_drops", 0)},
    }


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def cmd_stats(args: argparse.Namespace) -> int:
    """`precast stats`: the per-device table, or the JSON document."""
    doc = _stats_doc(read_stats(args.db), time.time())
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"precast devices ({args.db})")
    for col in (
        "device",
        "template",
        "received",
        "lost",
        "loss %",
        "dup",
        "late",
        "bad",
        "reboots",
        "last seq",
        "last seen",
        "stale",
    ):
        table.add_column(col, justify="left" if col in ("template", "last seen") else "right")
    for d in doc["devices"]:
        name = d["template_name"] or "?"
        table.add_row(
            str(d["device"]),
            f"{name}",
            str(d["received"]),
            f"{d['lost']} +~{d['tail_lost']}" if d["tail_lost"] else str(d["lost"]),
            f"{d['loss_pct']:.2f}",
            str(d["duplicates"]),
            str(d["late"]),
            str(d["bad"]),
            str(d["reboots"]),
            str(d["last_seq"]),
            _age(d["silent_s"]),
            "[bold red]stale[/]" if d["stale"] else "ok",
        )
    console = Console()
    if not console.is_terminal:  # piped: no 80-column squeeze
        console = Console(width=160)
    console.print(table)
    rej = ", ".join(f"{k} {n}" for k, n in doc["rejected"].items()) or "none"
    console.print(f"rejected: {rej}")
    console.print(
        f"dropped before decoding: {doc['drops']['queue']} by the queue, "
        f"{doc['drops']['kernel']} by the kernel"
    )
    return 0


def register(sub: Any) -> None:
    """Add the `collect` and `stats` commands."""
    c = sub.add_parser(
        "collect",
        help="receive, check and store readings (a daemon)",
        description="Receive precast frames over UDP, check each in the wire format's order "
        "(docs/PROTOCOL.md), track every device's sequence and store readings in SQLite. "
        "SIGTERM/SIGINT: store what was received and exit 0; SIGHUP: reload templates and keys.",
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
        help="template directory or file, repeatable (default templates/)",
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
    c.set_defaults(func=cmd_collect)

    s = sub.add_parser("stats", help="per-device counters from a collector's database")
    s.add_argument(
        "--db", default="precast.db", metavar="PATH", help="SQLite database (default precast.db)"
    )
    s.add_argument(
        "--json",
        action="store_true",
        help='print {"devices": [...], "rejected": {reason: count}, ...}',
    )
    s.set_defaults(func=cmd_stats)
