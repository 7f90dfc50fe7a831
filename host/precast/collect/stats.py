"""`precast stats`: what a collector's database says of each device, as a table or JSON.

Read-only (the collector keeps writing meanwhile). The --json document's
keys are a contract: {"devices": [{device, template, received, lost,
duplicates, late, last_seq, ...}], "rejected": {reason: count},
"drops": {"queue": n, "kernel": n}}.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from precast.args import examples
from precast.collect.rows import utc_iso
from precast.collect.store import read_stats

STALE_INTERVALS = 3  # silent for more than this many of its usual intervals: stale


def stats_doc(raw: dict[str, Any], now: float) -> dict[str, Any]:
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
    doc = stats_doc(read_stats(args.db), time.time())
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
    """Add the `stats` command."""
    s = sub.add_parser(
        "stats",
        help="per-device counters from a collector's database",
        description="What the collector's database says of each device: readings received, "
        "lost, duplicated, late, bad; reboots; when it was last heard from. Read-only: the "
        "collector may keep running.",
        epilog=examples("precast stats --db precast.db", "precast stats --db precast.db --json"),
    )
    s.add_argument(
        "--db", default="precast.db", metavar="PATH", help="SQLite database (default precast.db)"
    )
    s.add_argument(
        "--json",
        action="store_true",
        help='print {"devices": [...], "rejected": {reason: count}, ...}',
    )
    s.set_defaults(func=cmd_stats)
