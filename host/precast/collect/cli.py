"""`precast collect`: its arguments and the command that runs the daemon (daemon.py)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from typing import Any

from precast.args import examples, key_arg, parse_hostport
from precast.collect.backlog import DEFAULT_QUEUE_BYTES
from precast.collect.daemon import (
    DEFAULT_LISTEN,
    DEFAULT_QUEUE,
    DEFAULT_RCVBUF,
    STOP_WAIT,
    Collector,
    Options,
    log,
)
from precast.collect.dburl import is_postgres
from precast.collect.files import need_directory, refuse_link, write_replacing
from precast.collect.metrics import DEFAULT_METRICS_DEVICES, serve_metrics
from precast.collect.receiver import big_datagrams_unmapped
from precast.collect.sinks import mqtt as mqtt_sink
from precast.collect.spill import DEFAULT_SPILL
from precast.collect.tracker import DEFAULT_MAX_DEVICES, DEFAULT_WINDOW, MAX_WINDOW
from precast.errors import UsageError
from precast.wire.template import default_templates


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
    # Where the collector writes: a link planted there is refused now, not at the first write.
    for what, path in (
        ("--ready-file", args.ready_file),
        ("--ready-file", args.ready_file and f"{args.ready_file}.tmp"),
        ("--jsonl", args.jsonl if args.jsonl != "-" else None),
        ("--spill", None if args.replay_spill else args.spill),
    ):
        if path:
            refuse_link(what, path)
            need_directory(what, path)  # said now, not once the collector is listening
    if args.queue < 1:
        raise UsageError("--queue must be at least 1")
    if args.stop_timeout < 0:
        raise UsageError("--stop-timeout must be at least 0")
    if args.reuse_port and not is_postgres(args.db):
        # Collectors sharing a port share the books: only PostgreSQL holds them for several.
        raise UsageError(
            f"--reuse-port needs a PostgreSQL --db (postgresql://...): {args.db} is an SQLite "
            "file, which takes one collector"
        )
    templates = args.templates or [str(p) for p in default_templates()]
    if args.replay_spill:
        listen = ("127.0.0.1", 0)  # nothing is received: the spill file is the input
    else:
        listen = parse_hostport(
            args.listen, default_host="0.0.0.0", allow_zero=True, what="--listen"
        )
    if args.queue_bytes < 65536 + 160:
        raise UsageError("--queue-bytes must hold one 64 KiB datagram (at least 65696)")
    if args.max_devices < 1:
        raise UsageError("--max-devices must be at least 1")
    if args.metrics_devices < 0:
        raise UsageError("--metrics-devices must be 0 or more")
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
    opts = Options(
        key=args.key,
        key_file=args.key_file,
        keys_file=args.keys,
        jsonl=args.jsonl,
        mqtt=mqtt,
        window=args.window,
        max_devices=args.max_devices,
        queue=args.queue,
        queue_bytes=args.queue_bytes,
        rcvbuf=args.rcvbuf,
        reuse_port=args.reuse_port,
        spill=args.spill,
        stop_timeout=args.stop_timeout,
    )
    col = Collector(listen, templates, args.db, opts)
    if args.replay_spill:
        return col.replay(args.replay_spill)
    metrics = (
        serve_metrics(
            col.status,
            parse_hostport(
                args.metrics, default_host="127.0.0.1", allow_zero=True, what="--metrics"
            ),
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
        help=f"UDP address to receive on; :PORT is every address (0.0.0.0:PORT), port 0 picks "
        f"one (default {DEFAULT_LISTEN})",
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
    c.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics over HTTP; :PORT is this host only (127.0.0.1:PORT), "
        "as an exporter's default should be: give 0.0.0.0:PORT for a scraper elsewhere",
    )
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
