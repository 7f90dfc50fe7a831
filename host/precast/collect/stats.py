"""`precast stats`: what a collector's database says of each device, as a table or JSON.

Read-only (the collector keeps writing meanwhile). The --json document's keys are a
contract: {"devices": [{device, template, received, lost, duplicates, late, delayed
(readings stored from delayed frames), last_seq, ...}], "rejected": {reason: count},
"drops": {"queue": n, "kernel": n, "jsonl": n}}, "devices_total" (every device, when
--limit printed fewer), "held" (frames held as far jumps of the devices listed, neither
stored nor refused yet), and "mqtt": {"published": n, "dropped": n} when a collector ran
with --mqtt. The reasons are the codec's (short, magic, version, flags,
unknown-template, check-kind, length, crc, mic, no-key) and the tracker's: replay (a MIC
device's seq below its window, or a frame identical to one stored for the device),
mic-required (a CRC frame with the id of a device that uses a MIC), jump (a far seq
never confirmed by a second frame), device-limit (a new device beyond --max-devices),
conflict (a second sequence under a CRC device's id while the established one still
sends; per device in "conflicts", the sequence in "rival").
"""

from __future__ import annotations

import argparse
import json
import textwrap
import time
from typing import Any

from precast.args import examples
from precast.collect.dburl import display_db
from precast.collect.store import Stats, open_reader
from precast.collect.utc import utc_iso
from precast.errors import UsageError

DEFAULT_LIMIT = 10_000  # devices printed: the --max-devices default, fast (stats --json < 2 s)
RECENT_SHOWN = 20  # the latest refusals in --json (the table shows the first few)
STALE_INTERVALS = 3  # silent for more than this many of its usual intervals: stale


def interval_of(
    highest: int, epoch_seq: int, last_seen: float, epoch_started: float
) -> float | None:
    """A device's mean seconds per seq in its epoch; None after its epoch's first reading."""
    span = highest - epoch_seq
    return (last_seen - epoch_started) / span if span > 0 else None


def is_stale(interval: float | None, silent: float) -> bool:
    """Stale: silent for more than STALE_INTERVALS of its usual interval (also MQTT's offline)."""
    return interval is not None and silent > STALE_INTERVALS * interval


def loss_pct(received: int, lost: int) -> float:
    """Lost as a share of what the device sent, in %, to 3 decimals."""
    total = received + lost
    return round(100.0 * lost / total, 3) if total else 0.0


def stats_doc(raw: Stats, now: float) -> dict[str, Any]:
    """The `stats --json` document (the contract keys, then extras) from a Reader's stats."""
    devices = []
    for d in raw.devices:
        interval = interval_of(d.highest, d.epoch_seq, d.last_seen, d.epoch_started)
        silent = max(0.0, now - d.last_seen)
        stale = is_stale(interval, silent)
        devices.append(
            {
                "device": d.device,
                "template": d.template,
                "received": d.received,
                "lost": d.lost,
                "duplicates": d.duplicates,
                "late": d.late,
                "delayed": d.delayed,
                "last_seq": d.highest,
                "template_name": raw.templates.get(d.template),
                "loss_pct": loss_pct(d.received, d.lost),
                "bad": d.bad,
                "reboots": d.reboots,
                "replays": d.replays,
                "epoch": d.epoch,
                "auth": d.auth or None,
                "candidate_seq": d.cand_seq if d.cand_seq >= 0 else None,
                "conflicts": d.conflicts,
                "source": d.source or None,
                "rival": (
                    {"seq": d.rival_seq, "source": d.rival_source} if d.rival_seq >= 0 else None
                ),
                "first_seen": utc_iso(d.first_seen),
                "last_seen": utc_iso(d.last_seen),
                "silent_s": round(silent, 3),
                "interval_s": round(interval, 6) if interval is not None else None,
                # Quiet: silent for more than a few intervals. What it may have sent meanwhile
                # is not counted as lost until its next reading proves the gap.
                "stale": stale,
            }
        )
    # Frames held now as far jumps (a device's candidate): neither stored nor refused yet, so
    # that stored + drops + rejected + held is every frame that arrived, the collector stopped
    # or not (a restart keeps them held).
    held = sum(d["candidate_seq"] is not None for d in devices)
    recent = raw.recent_rejects[:RECENT_SHOWN]  # newest first
    c = raw.counters
    doc: dict[str, Any] = {
        "devices": devices,
        "devices_total": raw.devices_total,
        "rejected": {k: n for k, n in raw.rejects.items() if n},
        "drops": {
            "queue": c.get("queue_drops", 0),
            "kernel": c.get("kernel_drops", 0),
            "jsonl": c.get("jsonl_drops", 0),
        },
        "held": held,
        "recent_rejects": recent,
    }
    if "mqtt_published" in c or "mqtt_dropped" in c:  # a collector with --mqtt wrote here
        doc["mqtt"] = {"published": c.get("mqtt_published", 0), "dropped": c.get("mqtt_dropped", 0)}
    return doc


def dumps_doc(doc: dict[str, Any]) -> str:
    """The document as JSON, one device a line (fast at 10,000 devices, still readable)."""
    devices = ",\n".join("    " + json.dumps(d) for d in doc["devices"])
    rest = {k: v for k, v in doc.items() if k != "devices"}
    tail = json.dumps(rest, indent=2)[1:]
    listed = "[\n" + devices + "\n  ]" if devices else "[]"
    return '{\n  "devices": ' + listed + ",\n" + tail[1:]


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


# (header, width, left-aligned) of the default table: 80 columns with room to spare
_COLUMNS = [
    ("device", 7, False),
    ("template", 11, True),
    ("recv", 7, False),
    ("lost", 6, False),
    ("loss%", 6, False),
    ("dup", 4, False),
    ("late", 4, False),
    ("bad", 4, False),
    ("last seq", 8, False),
    ("last seen", 14, True),
]


def _table(doc: dict[str, Any]) -> str:
    """The default table, plain text, at most 80 columns (a cell too long is cut with ~)."""

    def cell(text: str, width: int, left: bool) -> str:
        text = text if len(text) <= width else text[: width - 1] + "~"
        return text.ljust(width) if left else text.rjust(width)

    lines = [" ".join(cell(h, w, left) for h, w, left in _COLUMNS).rstrip()]
    for d in doc["devices"]:
        age = _age(d["silent_s"]).removesuffix(" ago")
        values = [
            str(d["device"]),
            d["template_name"] or "?",
            str(d["received"]),
            str(d["lost"]),
            f"{d['loss_pct']:.2f}",
            str(d["duplicates"]),
            str(d["late"]),
            str(d["bad"]),
            str(d["last_seq"]),
            f"{age} quiet" if d["stale"] else f"{age} ago",
        ]
        row = (cell(v, w, left) for v, (_, w, left) in zip(values, _COLUMNS, strict=True))
        lines.append(" ".join(row).rstrip())
    return "\n".join(lines)


def _wide_table(doc: dict[str, Any], db: str) -> Any:
    """Every column, as a rich table (about 130 columns)."""
    from rich.table import Table

    table = Table(title=f"precast devices ({db})")
    heads = [h for h, _, _ in _COLUMNS[:-1]]
    cols = [
        *heads,
        "delayed",
        "reboots",
        "replays",
        "conflicts",
        "interval",
        "first seen",
        "last seen",
    ]
    for col in [*cols, "stale"]:
        table.add_column(col, justify="left" if col in ("template", "first seen") else "right")
    for d in doc["devices"]:
        iv = d["interval_s"]
        table.add_row(
            str(d["device"]),
            d["template_name"] or "?",
            str(d["received"]),
            str(d["lost"]),
            f"{d['loss_pct']:.2f}",
            str(d["duplicates"]),
            str(d["late"]),
            str(d["bad"]),
            str(d["last_seq"]),
            str(d["delayed"]),
            str(d["reboots"]),
            str(d["replays"]),
            str(d["conflicts"]),
            f"{iv:.3g} s" if iv is not None else "-",
            d["first_seen"],
            _age(d["silent_s"]),
            "[bold]quiet[/]" if d["stale"] else "ok",
        )
    return table


def cmd_stats(args: argparse.Namespace) -> int:
    """`precast stats`: the per-device table, or the JSON document."""
    if args.limit < 0 or args.offset < 0:
        raise UsageError("--limit and --offset must be 0 or more")
    reader = open_reader(args.db)
    try:
        raw = reader.stats(args.limit or None, args.offset)
    finally:
        reader.close()
    doc = stats_doc(raw, time.time())
    if args.json:
        print(dumps_doc(doc))
        return 0
    if args.wide:
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # piped: no squeeze to a terminal's width
            console = Console(width=200)
        console.print(_wide_table(doc, display_db(args.db)))
    else:
        print(
            textwrap.fill(
                f"precast devices ({display_db(args.db)})", width=80, subsequent_indent="  "
            )
        )
        print(_table(doc))
    rej = ", ".join(f"{k} {n}" for k, n in doc["rejected"].items()) or "none"
    out = [f"rejected: {rej}"]
    if doc["recent_rejects"]:
        out.append("latest refusals, newest first:")
    for r in doc["recent_rejects"][:5]:
        dev = f" device {r['device']}" if r["device"] is not None else ""
        out.append(f"- {r['at'][11:19]} {r['reason']} from {r['source']}{dev}")
    if doc["devices_total"] > len(doc["devices"]):
        out.append(
            f"devices {args.offset + 1}..{args.offset + len(doc['devices'])} of "
            f"{doc['devices_total']} (--limit, --offset)"
        )
    drops = doc["drops"]
    if any(drops.values()):
        out.append(
            f"dropped before decoding: {drops['queue']} by the queue, "
            f"{drops['kernel']} by the kernel; "
            f"lines the --jsonl file did not take: {drops['jsonl']}"
        )
    else:
        out.append("nothing dropped (the queue, the kernel, the --jsonl file)")
    if "mqtt" in doc:
        m = doc["mqtt"]
        lost = (
            f", {m['dropped']} dropped (stored, but not published: the publisher's buffer was full)"
            if m["dropped"]
            else ""
        )
        out.append(f"MQTT: {m['published']} published{lost}")
    for line in out:
        print(textwrap.fill(line, width=80, subsequent_indent="  "))
    return 0


def register(sub: Any) -> None:
    """Add the `stats` command."""
    s = sub.add_parser(
        "stats",
        help="per-device counters from a collector's database",
        description="What the collector's database says of each device: readings received, "
        "lost, duplicated, late, bad; reboots; when it was last heard from. Read-only: the "
        "collector may keep running.",
        epilog=examples(
            "precast stats --db precast.db",
            "precast stats --db postgresql://precast@db.example/precast",
            "precast stats --db precast.db --wide",
            "precast stats --db precast.db --json",
            "precast stats --db precast.db --json --limit 100 --offset 200",
        ),
    )
    s.add_argument(
        "--db",
        default="precast.db",
        metavar="PATH|URL",
        help="SQLite database path, or a postgresql:// URL (default precast.db)",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help='print {"devices": [...], "rejected": {reason: count}, ...}',
    )
    s.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"print at most N devices, by id; 0: all (default {DEFAULT_LIMIT})",
    )
    s.add_argument(
        "--offset", type=int, default=0, metavar="N", help="skip the first N devices (by id)"
    )
    s.add_argument(
        "--wide",
        action="store_true",
        help="every column (reboots, replays, interval, first seen): about 130 columns wide",
    )
    s.set_defaults(func=cmd_stats)
