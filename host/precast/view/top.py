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
import os
import select
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from precast.args import examples, split_hostport
from precast.collect.dburl import display_db
from precast.collect.stats import is_stale, stats_doc
from precast.collect.store import Reader, TemplateInfo, open_reader
from precast.errors import UsageError

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
    interval_s: float | None = None
    fields: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        """Sending: not stale, or (stale unknown) readings arrived in the last sample."""
        return self.stale is False or (self.stale is None and (self.rate or 0.0) > 0)


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

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.templates: dict[int, TemplateInfo] = {}
        self.marks: dict[int, object] = {}  # template id -> where the next read resumes
        # device -> (template id, deque of (unix time, values))
        self.points: dict[int, tuple[int, deque[tuple[float, tuple[Any, ...]]]]] = {}
        self.latest: dict[int, tuple[int, tuple[Any, ...]]] = {}

    def refresh(self, now: float) -> None:
        """Read what arrived since the last refresh; forget what is older than the window."""
        self.templates = self.reader.templates()
        for tid, t in self.templates.items():
            if tid not in self.marks:  # first look: every device's latest reading
                for r in self.reader.latest(t):
                    self.latest[r.device] = (tid, r.values)
            got, self.marks[tid] = self.reader.follow(t, self.marks.get(tid), now - WINDOW_S)
            for r in got:
                entry = self.points.get(r.device)
                if entry is None or entry[0] != tid:
                    entry = self.points[r.device] = (tid, deque())
                entry[1].append((r.at, r.values))
                self.latest[r.device] = (tid, r.values)
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
        self.db = display_db(db)
        self.reader = open_reader(db)
        self.readings = Readings(self.reader)

    def frame(self) -> Frame:
        now = time.time()
        doc = stats_doc(self.reader.stats(), now)
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
                    interval_s=d["interval_s"],
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
            silent = max(0.0, now - seen) if seen else None
            # Stale as `stats` says it, but silent since the metrics' last_seen: the database's
            # copy of the device's books trails the collector's by up to a flush.
            stale = None
            if db_row is not None and silent is not None:
                stale = is_stale(db_row.interval_s, silent)
            if rates.get(dev, 0.0) > 0:
                stale = False
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
                    silent_s=silent,
                    stale=stale,
                    interval_s=db_row.interval_s if db_row else None,
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


# The orders `s` cycles through (`--sort` picks the first). "active": the devices sending
# first (not stale), then the stale ones, each by device id, as htop puts running tasks first.
SORTS = ("active", "device", "loss", "rate")

# Columns dropped, in this order, while the table is wider than the terminal: first what
# `precast stats` shows in full anyway, last what says which device is sending and losing.
# The latest values' column is then cut at the edge. device, rd/s and stale always stay.
DROP_ORDER = ("received", "dup", "last seen", "loss %", "bad", "template", "lost")
COLUMNS = (
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
)
TEMPLATE_MAX = 14  # wider template names end in an ellipsis
TABLE_CHROME = 4  # the table's top border, heading, rule under it and bottom border


@dataclass
class View:
    """What the keys change: the first device shown and the order; what the last frame showed."""

    order: str = "active"
    offset: int = 0
    shown: int = 0
    total: int = 0

    def key(self, name: str) -> None:
        """Act on one key: scroll (up, down, pgup, pgdn, home, end) or `sort`."""
        page = max(1, self.shown)
        last = max(0, self.total - 1)
        if name == "sort":
            self.order = SORTS[(SORTS.index(self.order) + 1) % len(SORTS)]
            self.offset = 0
            return
        moves = {"up": -1, "down": 1, "pgup": -page, "pgdn": page, "home": -self.total}
        self.offset = last if name == "end" else self.offset + moves.get(name, 0)
        self.offset = max(0, min(self.offset, last))


# Escape sequences of the keys (xterm and vt100 spellings, as tmux and most terminals send).
KEYS = {
    b"\x1b[A": "up",
    b"\x1bOA": "up",
    b"\x1b[B": "down",
    b"\x1bOB": "down",
    b"\x1b[5~": "pgup",
    b"\x1b[6~": "pgdn",
    b"\x1b[H": "home",
    b"\x1bOH": "home",
    b"\x1b[1~": "home",
    b"\x1b[F": "end",
    b"\x1bOF": "end",
    b"\x1b[4~": "end",
    b"k": "up",
    b"j": "down",
    b"s": "sort",
    b"q": "quit",
    b"Q": "quit",
}


def parse_keys(data: bytes) -> list[str]:
    """The keys in what one read of the terminal got; unknown bytes are skipped."""
    out = []
    i = 0
    while i < len(data):
        for seq, name in KEYS.items():
            if data.startswith(seq, i):
                out.append(name)
                i += len(seq)
                break
        else:
            i += 1
    return out


def sort_rows(rows: list[DeviceRow], order: str) -> list[DeviceRow]:
    """The rows in one of SORTS' orders."""
    if order == "device":
        return sorted(rows, key=lambda d: d.device)
    if order == "loss":
        return sorted(rows, key=lambda d: (-d.loss_pct, d.device))
    if order == "rate":
        return sorted(rows, key=lambda d: (-(d.rate or 0.0), d.device))
    return sorted(rows, key=lambda d: (not d.active, d.device))


def _header(f: Frame) -> Any:
    from rich.text import Text

    stale = sum(1 for d in f.devices if d.stale)
    received = sum(d.received for d in f.devices)
    lost = sum(d.lost for d in f.devices)
    rates = [d.rate for d in f.devices if d.rate is not None]
    rate = f"{sum(rates):.1f}/s" if rates else "-/s"
    head = Text()
    head.append("precast top", style="bold")
    # The clock and the key first: a long database path is what gets cut at the edge.
    head.append(f"  {time.strftime('%H:%M:%S', time.gmtime())} UTC  (q quits)  {f.title}\n")
    head.append(
        f"devices {len(f.devices)} ({stale} stale)  readings {received} received, {lost} lost, "
        f"{rate}\n"
    )
    rej = ", ".join(f"{k} {n}" for k, n in sorted(f.rejected.items())) or "none"
    head.append(f"rejected: {rej}  ")
    drops = ", ".join(f"{k} {n}" for k, n in sorted(f.drops.items())) or "none"
    head.append(f"drops: {drops}")
    if f.queue is not None:
        head.append(f"  queue {f.queue}")
    if f.note:
        head.append(f"\n{f.note}", style="dim")
    return head


def _cells(d: DeviceRow, lines: list[str]) -> dict[str, str]:
    return {
        "device": str(d.device),
        "template": d.template,
        "rd/s": "-" if d.rate is None else f"{d.rate:.1f}",
        "received": str(d.received),
        "lost": str(d.lost),
        "loss %": f"{d.loss_pct:.2f}",
        "dup": str(d.duplicates),
        "bad": str(d.bad),
        "last seen": _age(d.silent_s),
        "stale": "?" if d.stale is None else ("[bold red]stale[/]" if d.stale else "ok"),
        "latest, last minute": "\n".join(lines) or "-",
    }


def _table(rows: list[dict[str, str]], dropped: set[str], latest_max: int | None) -> Any:
    from rich.table import Table

    table = Table(expand=False, pad_edge=False)
    for col, just in COLUMNS:
        if col in dropped:
            continue
        table.add_column(
            col,
            justify=just,  # type: ignore[arg-type]
            no_wrap=True,
            overflow="ellipsis" if col == "template" else "crop",
            max_width=TEMPLATE_MAX
            if col == "template"
            else latest_max
            if col == COLUMNS[-1][0]
            else None,
        )
    for r in rows:
        table.add_row(*(v for k, v in r.items() if k not in dropped))
    return table


def render(f: Frame, width: int, height: int | None = None, view: View | None = None) -> Any:
    """The header and the devices' table, fitted to width (and to height when given)."""
    from rich.console import Console, Group
    from rich.measure import Measurement
    from rich.text import Text

    view = view or View()
    head = _header(f)
    devices = sort_rows(f.devices, view.order)
    view.total = len(devices)
    view.offset = max(0, min(view.offset, len(devices) - 1))
    # Rows from the offset while they fit: a device takes a line per field.
    room = None if height is None else height - len(head.plain.splitlines()) - TABLE_CHROME - 1
    rows = []
    for d in devices[view.offset :]:
        lines = d.fields
        if room is not None:
            if room <= 0:
                break
            if len(lines) > room:
                lines = lines[:room]
            room -= max(1, len(lines))
        rows.append(_cells(d, lines))
    view.shown = len(rows)
    # Measured on a console wide enough not to clamp the table's natural width.
    console = Console(width=10_000, file=open(os.devnull, "w"))
    dropped: set[str] = set()
    latest_max = None
    for col in (None, *DROP_ORDER):
        if col is not None:
            dropped.add(col)
        need = Measurement.get(console, console.options, _table(rows, dropped, None)).maximum
        if need <= width:
            break
    else:  # still too wide: the latest values are cut at the edge
        latest_max = max(8, width - (need - _latest_width(rows)))
    table = _table(rows, dropped, latest_max)
    console.file.close()
    parts: list[Any] = [head, table]
    below = len(devices) - view.offset - len(rows)
    if view.offset or below or height is not None:
        foot = Text(style="dim")
        if rows:
            foot.append(f"devices {view.offset + 1}-{view.offset + len(rows)} of {len(devices)}")
        if below:
            foot.append(f", +{below} more", style="bold")
        if view.offset:
            foot.append(f", {view.offset} above")
        foot.append(f"  sort: {view.order}")
        if height is not None:
            foot.append("  (s sort; ↑↓ PgUp PgDn Home End)")
        parts.append(foot)
    return Group(*parts)


def _latest_width(rows: list[dict[str, str]]) -> int:
    key = COLUMNS[-1][0]
    return max([len(key), *(len(x) for r in rows for x in r[key].splitlines())])


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def live(source: DbSource | MetricsSource, view: View) -> int:
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

    def draw(f: Frame) -> Any:
        size = console.size
        return render(f, size.width, size.height, view)

    try:
        tty.setcbreak(fd)  # keys one at a time, no echo; Ctrl-C still signals
        frame = source.frame()
        with Live(draw(frame), console=console, screen=True, auto_refresh=False) as screen:
            next_at = time.monotonic() + REFRESH_S
            while True:
                ready, _, _ = select.select([fd], [], [], max(0.0, next_at - time.monotonic()))
                if ready:
                    keys = parse_keys(os.read(fd, 64))
                    if "quit" in keys:
                        break
                    for k in keys:
                        view.key(k)
                    if keys:  # redraw the frame we have at once; fresh data on the clock
                        screen.update(draw(frame), refresh=True)
                    continue
                next_at = time.monotonic() + REFRESH_S
                frame = source.frame()
                screen.update(draw(frame), refresh=True)
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
    view = View(order=args.sort)
    if not args.once:
        return live(source, view)
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped: no 80-column squeeze
        console = Console(width=200)
    if isinstance(source, MetricsSource):  # rates are differences: two samples
        source.frame()
        time.sleep(REFRESH_S)
    console.print(render(source.frame(), console.width, None, view))
    return 0


def register(sub: Any) -> None:
    """Add the `top` command."""
    p = sub.add_parser(
        "top",
        help="a live full-screen view of a collector's devices",
        description="A live view of the fleet, refreshed about once a second: per device its "
        "template, readings/s, loss, duplicates, bad checks, last seen, stale, and the latest "
        "value of each field with a sparkline of the last minute; the collector's totals, "
        "rejects and drops above. Sending devices first; arrows, PgUp/PgDn, Home/End scroll, "
        "s changes the order, q or Ctrl-C quits. In a narrow terminal columns are dropped "
        f"in this order: {', '.join(DROP_ORDER)}. Reads the database alone (no template "
        "files), or the counters from a collector's --metrics endpoint.",
        epilog=examples(
            "precast top --db precast.db",
            "precast top --metrics 127.0.0.1:9547 --db precast.db",
            "precast top --db precast.db --once",
        ),
    )
    p.add_argument(
        "--db",
        metavar="PATH|URL",
        help="the collector's database: an SQLite path or a postgresql:// URL (default precast.db)",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT|URL",
        help="a running collector's metrics endpoint (its `collect --metrics`)",
    )
    p.add_argument(
        "--once",
        action="store_true",
        help="print one frame (every device, fitted to the width) and exit; with --metrics "
        f"it samples twice, {REFRESH_S:g} s apart, for the rates",
    )
    p.add_argument(
        "--sort",
        choices=SORTS,
        default=SORTS[0],
        help="the rows' order (default active: sending devices first, then stale; "
        "`s` cycles in the live view)",
    )
    p.set_defaults(func=cmd_top)
