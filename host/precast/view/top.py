"""`precast top`: a live full-screen view of a collector's fleet, drawn with rich.

One row per device: its template, readings/s (over the last RATE_S seconds),
received, lost, loss %, duplicates, bad checks, when it was last seen and
whether it is stale (as `precast stats` says), and the latest value of each
field with a sparkline of the last minute (SPARK_BUCKETS means of equal
spans). A header holds the collector's totals, rejects by reason and drops.

Sources: --db reads the collector's database (read-only, so the collector is
never blocked): the counters as `precast stats` computes them, and the
readings tables incrementally (only rows newer than the last refresh), so a
refresh costs what arrived since the last one. --metrics HOST:PORT scrapes a
running collector's Prometheus endpoint for the counters instead; field
values then need --db too.

The live view uses the terminal's alternate screen and cbreak mode, and puts
both back on `q`, Ctrl-C or SIGTERM. --once prints one frame and exits.
"""

from __future__ import annotations

import argparse
import bisect
import os
import select
import signal
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from precast.args import examples, split_hostport
from precast.collect.stats import stats_doc
from precast.collect.store import quote, read_stats
from precast.collect.utc import parse_iso
from precast.errors import UsageError
from precast.view.db import TemplateInfo, connect, templates

WINDOW_S = 60.0  # the sparklines' span
SPARK_BUCKETS = 12  # 5 s each
RATE_S = 10.0
REFRESH_S = 1.0
BARS = "▁▂▃▄▅▆▇█"


def sparkline(points: list[tuple[float, float]], now: float) -> str:
    """SPARK_BUCKETS characters: each the mean of a WINDOW_S/SPARK_BUCKETS span, scaled."""
    sums = [0.0] * SPARK_BUCKETS
    counts = [0] * SPARK_BUCKETS
    span = WINDOW_S / SPARK_BUCKETS
    for t, v in points:
        i = int((t - (now - WINDOW_S)) // span)
        if 0 <= i < SPARK_BUCKETS and v == v:  # NaN never plots
            sums[i] += v
            counts[i] += 1
    means = [s / c if c else None for s, c in zip(sums, counts, strict=True)]
    have = [m for m in means if m is not None]
    if not have:
        return " " * SPARK_BUCKETS
    lo, hi = min(have), max(have)
    out = []
    for m in means:
        if m is None:
            out.append(" ")
        elif hi == lo:
            out.append(BARS[3])
        else:
            out.append(BARS[min(7, int((m - lo) / (hi - lo) * 8))])
    return "".join(out)


def _num(v: float | int | None) -> str:
    if v is None:
        return "-"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 1e15):
        return str(int(v))
    return f"{v:.6g}"


@dataclass
class DeviceRow:
    """What one row of the view shows of a device."""

    device: int
    template: str = "?"
    rate: float | None = None
    received: int = 0
    lost: int = 0
    loss_pct: float = 0.0
    duplicates: int = 0
    bad: int = 0
    silent_s: float | None = None
    stale: bool | None = None
    fields: list[str] = field(default_factory=list)


@dataclass
class Frame:
    """One refresh: the rows and the header's totals."""

    title: str
    devices: list[DeviceRow]
    rejected: dict[str, int]
    drops: dict[str, int]
    queue: int | None = None
    note: str = ""


class Readings:
    """The last minute of every device's readings, read incrementally from the database."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.templates: dict[int, TemplateInfo] = {}
        self.last_rowid: dict[int, int] = {}
        # device -> (template id, deque of (unix time, values))
        self.points: dict[int, tuple[int, deque[tuple[float, tuple[Any, ...]]]]] = {}
        self.latest: dict[int, tuple[int, tuple[Any, ...]]] = {}

    def _first_rowid_since(self, table: str, since: float, top: int) -> int:
        """The first rowid received at or after `since` (rows are appended in time order)."""
        iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since))

        class _Key:
            def __init__(self, conn: sqlite3.Connection) -> None:
                self.conn = conn

            def __getitem__(self, rowid: int) -> str:
                r = self.conn.execute(
                    f"SELECT received_at FROM {quote(table)} WHERE rowid >= ? ORDER BY rowid "
                    "LIMIT 1",
                    (rowid,),
                ).fetchone()
                return str(r[0]) if r else "~"

            def __len__(self) -> int:
                return top + 1

        return bisect.bisect_left(_Key(self.conn), iso)

    def refresh(self, now: float) -> None:
        """Read what arrived since the last refresh; forget what is older than the window."""
        self.templates = templates(self.conn)
        for tid, t in self.templates.items():
            cols = ", ".join(quote(f.column) for f in t.fields)
            try:
                top = self.conn.execute(f"SELECT max(rowid) FROM {quote(t.table)}").fetchone()[0]
            except sqlite3.Error:
                continue  # no readings table yet
            if top is None:
                continue
            if tid not in self.last_rowid:
                # First look: every device's latest reading, then the last minute.
                for row in self.conn.execute(
                    f"SELECT device, {cols} FROM {quote(t.table)} WHERE rowid IN "
                    f"(SELECT max(rowid) FROM {quote(t.table)} GROUP BY device)"
                ):
                    self.latest[row[0]] = (tid, tuple(row[1:]))
                start = self._first_rowid_since(t.table, now - WINDOW_S, top)
            else:
                start = self.last_rowid[tid] + 1
            for row in self.conn.execute(
                f"SELECT device, received_at, {cols} FROM {quote(t.table)} "
                "WHERE rowid >= ? ORDER BY rowid",
                (start,),
            ):
                dev = row[0]
                values = tuple(row[2:])
                entry = self.points.get(dev)
                if entry is None or entry[0] != tid:
                    entry = self.points[dev] = (tid, deque())
                entry[1].append((parse_iso(row[1]), values))
                self.latest[dev] = (tid, values)
            self.last_rowid[tid] = max(top, start - 1)
        for _, q in self.points.values():
            while q and q[0][0] < now - WINDOW_S:
                q.popleft()

    def rate(self, device: int, now: float) -> float:
        """Readings per second of a device over the last RATE_S seconds."""
        entry = self.points.get(device)
        if entry is None:
            return 0.0
        return sum(1 for t, _ in entry[1] if t >= now - RATE_S) / RATE_S

    def field_lines(self, device: int, now: float) -> list[str]:
        """'name value unit sparkline' per field of the device's latest reading."""
        latest = self.latest.get(device)
        if latest is None:
            return []
        tid, values = latest
        t = self.templates.get(tid)
        if t is None:
            return []
        entry = self.points.get(device)
        pts = list(entry[1]) if entry and entry[0] == tid else []
        width = max(len(f.name) for f in t.fields)
        units = max(len(f.unit) for f in t.fields)
        out = []
        for i, f in enumerate(t.fields):
            series = [(ts, float(v[i])) for ts, v in pts if v[i] is not None]
            spark = sparkline(series, now)
            out.append(f"{f.name:<{width}} {_num(values[i]):>11} {f.unit:<{units}} {spark}")
        return out


class DbSource:
    """Frames from a collector's database alone."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.conn = connect(db)
        self.readings = Readings(self.conn)

    def frame(self) -> Frame:
        now = time.time()
        doc = stats_doc(read_stats(self.db), now)
        self.readings.refresh(now)
        rows = []
        for d in doc["devices"]:
            rows.append(
                DeviceRow(
                    device=d["device"],
                    template=d["template_name"] or str(d["template"]),
                    rate=self.readings.rate(d["device"], now),
                    received=d["received"],
                    lost=d["lost"],
                    loss_pct=d["loss_pct"],
                    duplicates=d["duplicates"],
                    bad=d["bad"],
                    silent_s=d["silent_s"],
                    stale=d["stale"],
                    fields=self.readings.field_lines(d["device"], now),
                )
            )
        return Frame(self.db, rows, doc["rejected"], doc["drops"])


class MetricsSource:
    """Frames from a running collector's Prometheus endpoint (and its database for fields)."""

    def __init__(self, url: str, db: str | None) -> None:
        if "://" not in url:
            host, port = split_hostport(url)
            if port is None:
                raise UsageError(f"--metrics {url}: expected HOST:PORT or a URL")
            url = f"http://{host or '127.0.0.1'}:{port}/metrics"
        self.url = url
        self.db = DbSource(db) if db else None
        self.prev: tuple[float, dict[int, int]] | None = None

    def scrape(self) -> dict[str, Any]:
        from prometheus_client.parser import text_string_to_metric_families

        try:
            with urllib.request.urlopen(self.url, timeout=5) as r:
                text = r.read().decode("utf-8")
        except (urllib.error.URLError, OSError) as e:
            raise UsageError(f"--metrics {self.url}: {getattr(e, 'reason', e)}") from None
        out: dict[str, Any] = {"devices": {}, "rejected": {}, "drops": {}, "queue": None}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                name, labels, value = s.name, s.labels, s.value
                if name.startswith("precast_device_") and "device" in labels:
                    key = name.removeprefix("precast_device_").removesuffix("_total")
                    out["devices"].setdefault(int(labels["device"]), {})[key] = value
                elif name == "precast_rejected_total" and value:
                    out["rejected"][labels["reason"]] = int(value)
                elif name == "precast_dropped_total":
                    out["drops"][labels["where"]] = int(value)
                elif name == "precast_queue_depth":
                    out["queue"] = int(value)
        return out

    def frame(self) -> Frame:
        now = time.time()
        m = self.scrape()
        by_db: dict[int, DeviceRow] = {}
        if self.db is not None:
            by_db = {d.device: d for d in self.db.frame().devices}
        received = {dev: int(v.get("received", 0)) for dev, v in m["devices"].items()}
        rates: dict[int, float] = {}
        if self.prev is not None and now > self.prev[0]:
            dt = now - self.prev[0]
            rates = {d: (n - self.prev[1].get(d, n)) / dt for d, n in received.items()}
        self.prev = (now, received)
        rows = []
        for dev, v in sorted(m["devices"].items()):
            lost = int(v.get("lost", 0))
            total = received[dev] + lost
            seen = v.get("last_seen_seconds")
            db_row = by_db.get(dev)
            rows.append(
                DeviceRow(
                    device=dev,
                    template=db_row.template if db_row else "?",
                    rate=rates.get(dev),
                    received=received[dev],
                    lost=lost,
                    loss_pct=round(100.0 * lost / total, 3) if total else 0.0,
                    duplicates=int(v.get("duplicates", 0)),
                    bad=int(v.get("bad", 0)),
                    silent_s=max(0.0, now - seen) if seen else None,
                    stale=db_row.stale if db_row else None,
                    fields=db_row.fields if db_row else [],
                )
            )
        note = "" if self.db else "field values need --db too"
        return Frame(self.url, rows, m["rejected"], m["drops"], m["queue"], note)


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s ago"
    if s < 3600:
        return f"{s / 60:.1f} min ago"
    if s < 86400:
        return f"{s / 3600:.1f} h ago"
    return f"{s / 86400:.1f} d ago"


def render(f: Frame) -> Any:
    """The rich renderable of a frame: the header, then the devices' table."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    stale = sum(1 for d in f.devices if d.stale)
    received = sum(d.received for d in f.devices)
    lost = sum(d.lost for d in f.devices)
    rate = sum(d.rate or 0.0 for d in f.devices)
    head = Text()
    head.append("precast top", style="bold")
    # The clock and the key first: a long database path is what gets cut at the edge.
    head.append(f"  {time.strftime('%H:%M:%S', time.gmtime())} UTC  (q quits)  {f.title}\n")
    head.append(
        f"devices {len(f.devices)} ({stale} stale)  readings {received} received, {lost} lost, "
        f"{rate:.1f}/s\n"
    )
    rej = ", ".join(f"{k} {n}" for k, n in sorted(f.rejected.items())) or "none"
    head.append(f"rejected: {rej}  ")
    drops = ", ".join(f"{k} {n}" for k, n in sorted(f.drops.items())) or "none"
    head.append(f"drops: {drops}")
    if f.queue is not None:
        head.append(f"  queue {f.queue}")
    if f.note:
        head.append(f"\n{f.note}", style="dim")
    table = Table(expand=False, pad_edge=False)
    for col, just in (
        ("device", "right"),
        ("template", "left"),
        ("rd/s", "right"),
        ("received", "right"),
        ("lost", "right"),
        ("loss %", "right"),
        ("dup", "right"),
        ("bad", "right"),
        ("last seen", "left"),
        ("stale", "left"),
        ("latest, last minute", "left"),
    ):
        table.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for d in f.devices:
        table.add_row(
            str(d.device),
            d.template,
            "-" if d.rate is None else f"{d.rate:.1f}",
            str(d.received),
            str(d.lost),
            f"{d.loss_pct:.2f}",
            str(d.duplicates),
            str(d.bad),
            _age(d.silent_s),
            "?" if d.stale is None else ("[bold red]stale[/]" if d.stale else "ok"),
            "\n".join(d.fields) or "-",
        )
    return Group(head, table)


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def live(source: DbSource | MetricsSource) -> int:
    """Refresh about once a second until q, Ctrl-C or SIGTERM; the terminal is put back."""
    import termios
    import tty

    from rich.console import Console
    from rich.live import Live

    console = Console()
    if not console.is_terminal or not sys.stdin.isatty():
        raise UsageError("precast top needs a terminal; use --once for one frame to stdout")
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    _stop_on_sigterm()
    try:
        tty.setcbreak(fd)  # keys one at a time, no echo; Ctrl-C still signals
        with Live(render(source.frame()), console=console, screen=True, auto_refresh=False) as view:
            next_at = time.monotonic() + REFRESH_S
            while True:
                ready, _, _ = select.select([fd], [], [], max(0.0, next_at - time.monotonic()))
                if ready:
                    keys = os.read(fd, 64)
                    if b"q" in keys.lower():
                        break
                    continue
                next_at = time.monotonic() + REFRESH_S
                view.update(render(source.frame()), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    """`precast top`: the live view, or one frame with --once."""
    source: DbSource | MetricsSource
    if args.metrics:
        source = MetricsSource(args.metrics, args.db)
    else:
        source = DbSource(args.db or "precast.db")
    if not args.once:
        return live(source)
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: no 80-column squeeze
        console = Console(width=200)
    console.print(render(source.frame()))
    return 0


def register(sub: Any) -> None:
    """Add the `top` command."""
    p = sub.add_parser(
        "top",
        help="a live full-screen view of a collector's devices",
        description="A live view of the fleet, refreshed about once a second: per device its "
        "template, readings/s, loss, duplicates, bad checks, last seen, stale, and the latest "
        "value of each field with a sparkline of the last minute; the collector's totals, "
        "rejects and drops above. q or Ctrl-C quits. Reads the database alone (no template "
        "files), or the counters from a collector's --metrics endpoint.",
        epilog=examples(
            "precast top --db precast.db",
            "precast top --metrics 127.0.0.1:9547 --db precast.db",
            "precast top --db precast.db --once",
        ),
    )
    p.add_argument("--db", metavar="PATH", help="the collector's database (default precast.db)")
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT|URL",
        help="a running collector's metrics endpoint (its `collect --metrics`)",
    )
    p.add_argument("--once", action="store_true", help="print one frame and exit")
    p.set_defaults(func=cmd_top)
