"""`precast plot` on a database a real collector filled with a known signal and a known hole."""

from __future__ import annotations

import math
import re
import sqlite3
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from collector_harness import Collector, payload
from kit import precast, wait_for
from precast.cli import main as precast_main
from precast.collect.store import FieldInfo, StoreError, open_reader
from precast.view.plot import Panel, Series, figure, load_panels

HOLE = range(20, 30)  # seqs of device 7 never sent
SEQS = [s for s in range(60) if s not in HOLE]


def temperature(seq: int) -> float:
    return round(20 + 5 * math.sin(seq / 6), 2)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    tmp = tmp_path_factory.mktemp("plot")
    col = Collector(tmp)
    try:
        for seq in range(60):
            if seq not in HOLE:
                values = {
                    "temperature": temperature(seq),
                    "humidity": 50,
                    "pressure": 101325,
                    "battery": 3000 + seq,
                }
                col.send([payload("env-node", values, 7, seq)])
            col.send([payload("minimal", {"value": seq * 10}, 8, seq)])
            if seq != 30:  # one lost reading: no gap for that
                col.send([payload("minimal", {"value": seq}, 9, seq)])
            time.sleep(0.004)
        wait_for(lambda: _count(col.db) == len(SEQS) + 119, 10, "the readings stored")
    finally:
        assert col.stop() == 0
    yield col.db


def _count(path: Path) -> int:
    try:
        reader = open_reader(path)
    except StoreError:
        return 0  # not created yet
    try:
        return reader.count()
    finally:
        reader.close()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h = struct.unpack(">II", data[16:24])
    return w, h


def test_png_has_one_panel_per_field(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "all.png"
    rc, err = plot(capsys, "--db", str(db), "-o", str(out))
    assert rc == 0, err
    # env-node's four fields and minimal's one: 80 + 240 px per panel, 1000 px wide.
    assert png_size(out) == (1000, 80 + 240 * 5)  # value: devices 8 and 9 share a panel
    # A reading is counted once, however many of its fields' panels it is a point on:
    # device 7's 50 readings are 200 points, devices 8 and 9's 119 readings 119 more.
    assert "5 panels, 169 readings (319 points)" in err, err


def test_figure_data_is_the_signal_broken_at_the_hole(db: Path) -> None:
    reader = open_reader(db)
    try:
        panels = load_panels(reader, None, ["temperature", "value"], None, None)
    finally:
        reader.close()
    fig = figure(panels)
    temp_ax, value_ax = fig.axes[:2]
    assert temp_ax.get_ylabel() == "temperature [degC]"
    assert value_ax.get_ylabel() == "value"
    (line,) = temp_ax.get_lines()
    y = list(line.get_ydata())  # type: ignore[arg-type]
    assert len(y) == len(SEQS) + 1
    gap = [i for i, v in enumerate(y) if math.isnan(v)]
    assert gap == [SEQS.index(HOLE.start - 1) + 1]
    assert [v for v in y if not math.isnan(v)] == [temperature(s) for s in SEQS]
    vline, _ = value_ax.get_lines()  # devices 8 and 9, in device order
    assert not any(math.isnan(v) for v in vline.get_ydata())  # type: ignore[attr-defined]
    assert list(vline.get_ydata()) == [s * 10.0 for s in range(60)]  # type: ignore[arg-type]


def series(device: int, times: list[float], seqs: list[int], epochs: list[int]) -> Series:
    return Series(device, times, [float(q) for q in seqs], seqs, epochs)


def breaks(panel: Panel) -> dict[int, list[float]]:
    """Each device's line as drawn: the x (unix seconds) of the NaN between its runs."""
    (ax,) = figure([panel]).axes
    out = {}
    for line in ax.get_lines():
        x = np.asarray(line.get_xdata(), dtype="datetime64[us]").astype(np.int64) / 1e6
        y = np.asarray(line.get_ydata(), dtype=np.float64)
        out[int(str(line.get_gid()).rsplit("-", 1)[1])] = x[np.isnan(y)].tolist()
    return out


def test_a_silence_breaks_the_line_though_seqs_run_on() -> None:
    """A gap in time is a hole as a gap in seq is: 3 minutes of silence after a clean stop
    (seqs contiguous across it) breaks a 1 s line; bursts, a lost reading, a quick restart
    do not."""
    t0 = 1.7e9
    once = [t0 + q for q in range(30)] + [t0 + 29 + 180 + q for q in range(30)]  # seq 0..59
    # simulate's chunks at 2 kHz: 50 readings stamped together every 25 ms, median step 0.
    bursts = [t0 + (q // 50) * 0.025 for q in range(500)]
    lost = [q for q in range(60) if q != 30]  # one reading lost: 2 s, no hole
    panel = Panel(
        FieldInfo("value", "value"),
        ["minimal"],
        {
            1: series(1, once, list(range(60)), [5] * 60),
            2: series(2, bursts, list(range(500)), [5] * 500),
            3: series(3, [t0 + q for q in lost], lost, [5] * 59),
            # restarted (seq from 0, a new epoch) after 2 s, then after 3 minutes
            4: series(
                4,
                [t0 + q for q in range(20)]
                + [t0 + 21 + q for q in range(20)]
                + [t0 + 220 + q for q in range(20)],
                [*range(20), *range(20), *range(20)],
                [5] * 20 + [6] * 20 + [7] * 20,
            ),
            # the silence most of the span: the median step is still 1 s
            5: series(5, [t0 + q + 3600 * (q > 4) for q in range(10)], [*range(10)], [5] * 10),
        },
    )
    got = breaks(panel)
    assert got == {
        1: [t0 + 29 + 180 / 2],
        2: [],
        3: [],
        4: [t0 + (40 + 220) / 2],
        5: [t0 + 4 + 3601 / 2],
    }


def fleet(name: str, devices: range) -> Panel:
    """A panel of these devices, three readings each."""
    t0 = 1.7e9
    return Panel(
        FieldInfo(name, name),
        ["minimal"],
        {d: series(d, [t0, t0 + 1, t0 + 2], [0, 1, 2], [1] * 3) for d in devices},
    )


def test_every_device_on_a_panel_has_its_own_colour() -> None:
    """40 devices on one panel, 15 of them on another: 40 colours (matplotlib's cycle has 10),
    each device the same in both panels, and the first 10 matplotlib's own."""
    from matplotlib.colors import to_rgb

    fig = figure([fleet("a", range(1, 41)), fleet("b", range(31, 46))])
    colour = [
        {line.get_gid(): to_rgb(line.get_color()) for line in ax.get_lines()} for ax in fig.axes
    ]
    a, b = colour
    assert len(set(a.values())) == 40 and len(set(b.values())) == 15
    for dev in range(31, 41):
        assert a[f"precast-a-device-{dev}"] == b[f"precast-b-device-{dev}"]
    assert [a[f"precast-a-device-{d}"] for d in range(1, 11)] == [
        to_rgb(f"C{i}") for i in range(10)
    ]
    assert len(set(a.values()) | set(b.values())) == 45


def test_a_legend_at_any_device_count() -> None:
    """Beside each panel: every device up to 36 (three columns of 12), then '+N more'; as
    many columns as fit the figure, which long device numbers make fewer."""
    fig = figure([fleet("a", range(1, 21)), fleet("b", range(1, 41)), fleet("c", range(1, 2))])
    long = figure([fleet("d", range(134217734, 134217774))])
    legends = [ax.get_legend() for ax in [*fig.axes, *long.axes]]
    assert all(legends)
    texts = [[t.get_text() for t in leg.get_texts()] for leg in legends]
    assert texts[0] == [str(d) for d in range(1, 21)]
    assert texts[1] == [*(str(d) for d in range(1, 36)), "+5 more"]
    assert texts[2] == ["1"]
    assert texts[3] == [*(str(d) for d in range(134217734, 134217757)), "+17 more"]
    titles = [leg.get_title().get_text() for leg in legends]
    assert titles == ["20 devices", "40 devices", "1 device", "40 devices"]
    for ax, leg, shown in zip([*fig.axes, *long.axes], legends, [20, 35, 1, 23], strict=True):
        handles = leg.legend_handles[:shown]  # type: ignore[attr-defined]
        assert [h.get_color() for h in handles] == [ln.get_color() for ln in ax.get_lines()[:shown]]
        right = leg.get_window_extent(ax.figure.canvas.get_renderer()).x1  # type: ignore[attr-defined]
        assert ax.get_window_extent().x1 < right <= ax.figure.bbox.x1  # type: ignore[union-attr]


def test_svg_paths_break_at_the_hole_and_axes_carry_units(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "t.svg"
    r = precast(
        "plot", "--db", str(db), "--field", "temperature", "battery", "value", "-o", str(out)
    )
    assert r.returncode == 0, r.stderr
    svg = out.read_text()

    def moves(gid: str) -> int:
        m = re.search(rf'<g id="{gid}">\s*<path d="([^"]*)"', svg)
        assert m, gid
        return len(re.findall(r"M ", m.group(1)))

    assert moves("precast-temperature-device-7") == 2  # two runs of line: the hole between
    assert moves("precast-battery-device-7") == 2
    assert "temperature [degC]" in svg and "battery [mV]" in svg and "time (UTC)" in svg
    assert moves("precast-value-device-8") == 1
    assert moves("precast-value-device-9") == 1  # one lost reading is no hole
    assert "precast-humidity-device-7" not in svg  # --field kept to the fields asked for


def plot(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`precast plot` through the entry point in this process (matplotlib loads once)."""
    rc = precast_main(["plot", *args])
    return rc, capsys.readouterr().err


def test_device_filter_and_empty_range(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "d.svg"
    rc, err = plot(capsys, "--db", str(db), "--device", "8", "-o", str(out))
    assert rc == 0, err
    svg = out.read_text()
    assert "precast-value-device-8" in svg and "device-7" not in svg and "device-9" not in svg
    args = ["--db", str(db), "--since", "1h", "--until", "2001-01-01T00:00:00", "-o", str(out)]
    rc, err = plot(capsys, *args)
    assert rc == 1
    assert err.strip().count("\n") == 0 and "no readings" in err, err
    rc, err = plot(capsys, "--db", str(db), "--field", "nope", "-o", str(out))
    assert rc == 2 and "no field 'nope'" in err and "Traceback" not in err
    rc, err = plot(capsys, "--db", str(db), "-o", str(tmp_path / "x.jpg"))
    assert rc == 2 and ".png or .svg" in err
    rc, err = plot(capsys, "--db", str(tmp_path / "none.db"), "-o", str(out))
    assert rc == 2 and "no such database" in err
    # --since counts back from --until: the last 20 ms of the readings hold fewer of them.
    conn = sqlite3.connect(db)
    last = conn.execute("SELECT max(received_at) FROM readings").fetchone()[0]
    conn.close()
    rc, err = plot(capsys, "--db", str(db), "--since", "0.02", "--until", last, "-o", str(out))
    assert rc == 0, err
    n = int(re.search(r"(\d+) readings", err).group(1))  # type: ignore[union-attr]
    assert 0 < n < len(SEQS) + 119


def test_durations_and_times() -> None:
    import argparse

    from precast.view.plot import parse_duration, parse_time

    assert parse_duration("90") == parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400 and parse_duration("2d") == 172800
    assert parse_duration("0.5m") == 30
    for bad in ("", "h", "1x", "1h 2m", "-5", "0", "5m3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
    assert parse_time("2026-01-02T03:04:05Z") == parse_time("2026-01-02T03:04:05") == 1767323045
    assert parse_time("2026-01-02T04:04:05+01:00") == 1767323045
    assert abs(parse_time("now") - time.time()) < 5
    with pytest.raises(argparse.ArgumentTypeError):
        parse_time("yesterday")


@pytest.mark.parametrize("command", [["plot", "-o", "never-written.png"], ["top", "--once"]])
def test_a_postgresql_url_is_never_shown_with_its_password(
    command: list[str], tmp_path: Path
) -> None:
    """plot and top read a PostgreSQL URL (tests/view/test_view_postgres.py); one they cannot
    reach is one line naming the server, without the password."""
    url = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/precast"
    r = precast(*command, "--db", url)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "s3cr3t-pw" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert "127.0.0.1" in r.stdout + r.stderr  # the refusal still names the server
