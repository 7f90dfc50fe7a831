"""`precast plot`: draw a collector's stored readings with matplotlib (Agg), to PNG or SVG.

One panel per field (fields of the same name and unit share a panel, whatever
their template), one line per device, the time each reading was taken (UTC;
a delayed reading's arrival less its age) on the x axis and the
field's unit on the y axis. A device's line is broken, not drawn across, at a
hole in seq or in time:

- its seq jumps by more than GAP_INTERVALS (readings lost in a row), or
- a step takes more than GAP_INTERVALS of its intervals per reading it
  advances, and more than GAP_MIN_S: a silence, whether its seqs run on after
  it (a clean stop and start) or a new epoch begins (a restart).

Its interval is the median of its steps, each divided by the readings it
advances (its seq jump; 1 across a restart): a lost reading's step is not a
long one, and a silence counts once however much of the range it fills (a
mean would grow with it). GAP_MIN_S is for the jitter of arrival: readings
come in bursts (a sender's batches, the collector's socket batches stamped at
once), so a fast device's median step is tiny or 0 and its steps between
bursts tens of ms (10 simulated devices at 2 kHz each: a median of 0, steps up
to 150 ms with no reading lost). A silence shorter than GAP_MIN_S is not told
from those; a lost reading still is, by its seq.

A device has one colour in the whole figure, the same on every panel and no
two alike (palette): tab20's strong ten first (matplotlib's own cycle, so a
few devices look as they always did), then its light ten, then past 20 the
rest spread evenly along viridis (perceptually uniform, its lightness
monotonic, so no two samples coincide). Past about 20 no eye tells the lines
apart by colour alone: the legend names them.

Each panel's legend stands right of its axes, never over the lines: a title
saying how many devices the panel has, then their numbers, lowest first,
LEGEND_ROWS to a column (what a panel's height holds) in as many columns as
fit the strip (LEGEND_COLS at most; long device numbers fit fewer, measured
with the renderer, not guessed). Past that room (36 devices) the last entry
is '+N more': their lines are drawn all the same, and in an SVG each carries
its device in its id (line_id). Beside the axes rather than in them (where it
hid lines, and was left out past 12 devices) or labels at the lines' ends
(which overlap where lines run close, as many devices' do); a strip of fixed
width keeps every panel's axes alike, whatever its count.

The figure is WIDTH_IN inches wide, LEGEND_IN of them the legends' strip, and
PANEL_IN per panel plus MARGIN_IN high, at DPI: 1000 px wide and 80 + 240 px
per panel. The margins are fixed (no tight_layout: it costs more than drawing).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from precast.args import examples, plural
from precast.collect.dburl import display_db
from precast.collect.store import FieldInfo, Reader, open_reader
from precast.collect.utc import utc_iso
from precast.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GAP_INTERVALS = 3.0
GAP_MIN_S = 1.0
WIDTH_IN, PANEL_IN, MARGIN_IN, DPI = 10.0, 2.4, 0.8, 100
LEGEND_IN, LEGEND_ROWS, LEGEND_COLS = 1.7, 12, 3
FORMATS = {".png": "png", ".svg": "svg"}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in a duration: 90, 90s, 15m, 2h, 1d, 1h30m."""
    t = text.strip().lower()
    try:
        v = float(t)
    except ValueError:
        pos, v = 0, 0.0
        for m in _DURATION.finditer(t):
            if m.start() != pos:
                break
            v += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        if pos != len(t) or not t:
            raise argparse.ArgumentTypeError(
                f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 1d, 1h30m)"
            ) from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"a duration must be positive: {text!r}")
    return v


def parse_time(text: str) -> float:
    """Unix time from `now`, unix seconds, or ISO 8601 (UTC unless it names a zone)."""
    from datetime import UTC, datetime

    t = text.strip()
    if t == "now":
        return time.time()
    try:
        return float(t)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (e.g. now, 2026-01-02T03:04:05Z, or unix seconds)"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


@dataclass
class Series:
    """One device's readings of one field: unix times and values, in time order."""

    device: int
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)


@dataclass
class Panel:
    """A field (name and unit) and its series, one per device."""

    info: FieldInfo
    templates: list[str]
    series: dict[int, Series] = field(default_factory=dict)


def load_panels(
    reader: Reader,
    devices: list[int] | None,
    fields: list[str] | None,
    since: float | None,
    until: float | None,
) -> list[Panel]:
    """The panels to draw, with their readings, from the database alone."""
    tmpl = reader.templates()
    known = sorted({f.name for t in tmpl.values() for f in t.fields})
    if fields:
        unknown = [f for f in fields if f not in known]
        if unknown:
            raise UsageError(
                f"no field {unknown[0]!r} in the database (fields: {', '.join(known) or 'none'})"
            )
    panels: dict[tuple[str, str], Panel] = {}
    order = fields or None
    for t in tmpl.values():
        wanted = [(i, f) for i, f in enumerate(t.fields) if order is None or f.name in order]
        if not wanted:
            continue
        rows = reader.readings(t, devices or None, since, until)
        if not rows:
            continue
        for i, f in wanted:
            key = (f.name, f.unit)
            panel = panels.get(key)
            if panel is None:
                panel = panels[key] = Panel(f, [])
            panel.templates.append(t.name)
            for r in rows:
                v = r.values[i]
                if v is None:
                    continue
                s = panel.series.get(r.device)
                if s is None:
                    s = panel.series[r.device] = Series(r.device)
                s.times.append(r.taken)  # a delayed reading where it was taken
                s.values.append(float(v))
                s.seqs.append(r.seq)
                s.epochs.append(r.epoch)
    out = [p for p in panels.values() if p.series]
    for p in out:
        for s in p.series.values():  # readings come by arrival; a delayed one was taken earlier
            if any(b < a for a, b in zip(s.times, s.times[1:], strict=False)):
                by = sorted(range(len(s.times)), key=s.times.__getitem__)
                s.times = [s.times[i] for i in by]
                s.values = [s.values[i] for i in by]
                s.seqs = [s.seqs[i] for i in by]
                s.epochs = [s.epochs[i] for i in by]
    if order:
        out.sort(key=lambda p: order.index(p.info.name))
    return out


def holes(s: Series) -> list[int]:
    """Indexes i where the line must break between reading i and i + 1 (module docstring)."""
    import numpy as np

    if len(s.times) < 2:
        return []
    dt = np.diff(np.asarray(s.times, dtype=np.float64))
    seq = np.asarray(s.seqs, dtype=np.int64)
    epoch = np.asarray(s.epochs, dtype=np.int64)
    # Readings a step advances: its seq jump, or 1 across a restart (a new epoch's seqs
    # start again) or to a late reading drawn where it was taken (seq backwards).
    jump = np.where(epoch[1:] == epoch[:-1], np.maximum(np.diff(seq), 1), 1)
    lost = jump > GAP_INTERVALS
    per = dt / jump  # a step's time per reading: a lost reading's step is not a long one
    interval = float(np.median(per))
    silent = (per > GAP_INTERVALS * interval) & (dt > GAP_MIN_S)
    return [int(i) for i in np.nonzero(lost | silent)[0]]


def broken(s: Series) -> tuple[Any, Any]:
    """(times, values) as numpy arrays with a NaN inserted at every hole, so lines break there."""
    import numpy as np

    t = np.asarray(s.times, dtype=np.float64)
    v = np.asarray(s.values, dtype=np.float64)
    at = np.asarray(holes(s), dtype=np.int64)
    if len(at) == 0:
        return t, v
    mid = (t[at] + t[at + 1]) / 2
    return np.insert(t, at + 1, mid), np.insert(v, at + 1, np.nan)


def line_id(panel: Panel, device: int) -> str:
    """The id a device's line carries in an SVG (a <g id=...> around its path)."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", panel.info.name)
    return f"precast-{name}-device-{device}"


def palette(n: int) -> list[tuple[float, float, float]]:
    """n distinct colours, for a figure's devices in order (module docstring)."""
    import matplotlib
    import numpy as np

    tab20 = np.asarray(matplotlib.colormaps["tab20"](np.arange(20)))[:, :3]
    rgb = tab20[[*range(0, 20, 2), *range(1, 20, 2)]][:n]  # its strong ten are tab10
    if n > len(rgb):
        # Interpolated between viridis's colours, not looked up: a lookup in its 256 gives
        # one colour twice once more than 256 are wanted.
        viridis = matplotlib.colormaps["viridis"]
        lut = np.asarray(viridis(np.arange(viridis.N)))[:, :3]
        at = np.linspace(0, viridis.N - 1, n - len(rgb))
        more = [np.interp(at, np.arange(viridis.N), lut[:, c]) for c in range(3)]
        rgb = np.vstack((rgb, np.column_stack(more)))
    return [(float(r), float(g), float(b)) for r, g, b in rgb]


def legend(ax: Axes, panel: Panel) -> None:
    """A panel's legend beside its axes: its devices, LEGEND_ROWS to a column, as many
    columns as fit (LEGEND_COLS at most), and '+N more' past them (module docstring)."""
    from matplotlib.lines import Line2D

    lines = ax.get_lines()
    names = [str(dev) for dev in sorted(panel.series)]
    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    for cols in range(LEGEND_COLS, 0, -1):
        room = LEGEND_ROWS * cols
        handles: list[Any] = list(lines)
        labels = names
        if len(lines) > room:
            handles = [*lines[: room - 1], Line2D([], [], linestyle="none")]
            labels = [*names[: room - 1], f"+{len(lines) - room + 1} more"]
        box = ax.legend(
            handles,
            labels,
            title=plural(len(lines), "device"),
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            ncols=-(-len(handles) // LEGEND_ROWS),
            fontsize=7,
            title_fontsize=7,
            frameon=False,
            handlelength=1.2,
            handletextpad=0.4,
            columnspacing=0.8,
            labelspacing=0.25,
            alignment="left",
        )
        if box.get_window_extent(renderer).x1 <= ax.figure.bbox.x1:
            return  # else long device numbers: fewer columns


def figure(panels: list[Panel]) -> Figure:
    """The matplotlib figure of the panels (Agg: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    devices = sorted({dev for p in panels for dev in p.series})
    colour = dict(zip(devices, palette(len(devices)), strict=True))
    n = len(panels)
    height = MARGIN_IN + PANEL_IN * n
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI)
    FigureCanvasAgg(fig)  # a renderer to measure the legends with
    fig.subplots_adjust(
        left=0.09,
        right=1 - LEGEND_IN / WIDTH_IN,
        top=1 - 0.3 / height,
        bottom=0.5 / height,
        hspace=0.35,
    )  # before the legends: they are placed and measured beside the axes
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    for ax, panel in zip(axes, panels, strict=True):
        for dev in sorted(panel.series):
            s = panel.series[dev]
            t, v = broken(s)
            x = (t * 1e6).astype("datetime64[us]")  # unix seconds as UTC times
            (line,) = ax.plot(x, v, label=f"device {dev}", linewidth=1.2, color=colour[dev])
            line.set_gid(line_id(panel, dev))
        ax.set_ylabel(panel.info.label)
        ax.set_title(f"{panel.info.name} ({', '.join(panel.templates)})", fontsize=9, loc="right")
        ax.grid(True, alpha=0.3)
        legend(ax, panel)
    loc = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    axes[-1].xaxis.set_major_locator(loc)
    axes[-1].xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("time (UTC)")
    return fig


def drawn(panels: list[Panel]) -> tuple[int, int]:
    """(readings, points) drawn: a point is a finite value on a panel, and a reading counts
    once however many panels (one per field) it is a point on."""
    import numpy as np

    keys, points = [], 0
    for p in panels:
        for s in p.series.values():
            ok = np.isfinite(np.asarray(s.values, dtype=np.float64))
            points += int(ok.sum())
            # A reading is its device, epoch, seq and time (the float's bits, exactly).
            t = np.asarray(s.times, dtype=np.float64).view(np.int64)
            key = np.column_stack((np.full(len(t), s.device), s.epochs, s.seqs, t))
            keys.append(key[ok])
    readings = len(np.unique(np.concatenate(keys), axis=0)) if keys else 0
    return readings, points


def cmd_plot(args: argparse.Namespace) -> int:
    """`precast plot`: the readings in the range to a PNG or SVG file."""
    out = Path(args.output)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"{out}: the file's extension picks the format: .png or .svg")
    try:
        import matplotlib
    except ImportError:
        raise UsageError("precast plot needs matplotlib: pip install 'precast[plot]'") from None
    until = args.until
    since = until - args.since if args.since is not None and until is not None else None
    if args.since is not None and until is None:
        since = time.time() - args.since
    reader = open_reader(args.db)
    try:
        panels = load_panels(reader, args.device, args.field, since, until)
    finally:
        reader.close()
    if not panels:
        rng = []
        if since is not None:
            rng.append(f"since {utc_iso(since)}")
        if until is not None:
            rng.append(f"until {utc_iso(until)}")
        which = f" of device {', '.join(map(str, args.device))}" if args.device else ""
        where = display_db(args.db)
        print(
            f"precast: no readings{which} in {where}{' ' + ' '.join(rng) if rng else ''}",
            file=sys.stderr,
        )
        return 1
    fig = figure(panels)
    try:
        # SVG text as text, not outlines: smaller, searchable, selectable.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "precast"}):
            fig.savefig(out, format=fmt, dpi=DPI)
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    readings, points = drawn(panels)
    also = f" ({plural(points, 'point')})" if points != readings else ""
    print(
        f"wrote {out}: {plural(len(panels), 'panel')}, {plural(readings, 'reading')}{also}",
        file=sys.stderr,
    )
    return 0


def register(sub: Any) -> None:
    """Add the `plot` command."""
    p = sub.add_parser(
        "plot",
        help="draw stored readings to a PNG or SVG file",
        description="Draw a collector's stored readings with matplotlib: one panel per field "
        "with its unit, one line per device, time (UTC) on the x axis, and a gap where a "
        f"device's seq jumps by more than {GAP_INTERVALS:g} (readings lost) or it was silent "
        f"for more than {GAP_INTERVALS:g} of its intervals and {GAP_MIN_S:g} s (stopped, or "
        "restarted). PNG or SVG by the file's extension. Reads the database alone (no "
        "template files). Exit 1 when no reading is in the range.",
        epilog=examples(
            "precast plot --db precast.db -o readings.png",
            "precast plot --db precast.db --field temperature --device 7 --since 1h -o t.svg",
        ),
    )
    p.add_argument(
        "--db",
        default="precast.db",
        metavar="PATH|URL",
        help="the collector's database: an SQLite path or a postgresql:// URL",
    )
    p.add_argument(
        "--device",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="only these devices (repeatable)",
    )
    p.add_argument(
        "--field",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="only these fields, in this order (repeatable)",
    )
    p.add_argument(
        "--since",
        type=parse_duration,
        metavar="DURATION",
        help="only the last DURATION before --until (or now): 90s, 15m, 2h, 1d",
    )
    p.add_argument(
        "--until",
        type=parse_time,
        metavar="TIME",
        help="only readings up to TIME: ISO 8601 (UTC unless zoned), unix seconds, or now",
    )
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="FILE.png or FILE.svg")
    p.set_defaults(func=cmd_plot)
