"""The sender's parts on their own: batch patching, the token bucket, UDP, progress, errors."""

from __future__ import annotations

import os
import pty
import re
import select
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import BIN, KEY_HEX, TEMPLATES, VethPair, precast
from precast.errors import TransportError
from precast.send.batch import BatchPatcher
from precast.send.engine import TokenBucket, pump
from precast.send.fleet import Faults, Fleet, fleet_frames
from precast.send.transports import open_transport
from precast.send.transports.memory import MemoryTransport
from precast.wire.codec import encode_raw
from precast.wire.constants import PAYLOAD_OFFSET
from precast.wire.layout import load_layouts
from sender_kit import ENV_VALUES
from strategies import examples

LAYOUTS = load_layouts([TEMPLATES])
KEY = bytes.fromhex(KEY_HEX)


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, list[int], list[int], list[list[int | float]]]:
    i = draw(st.integers(0, len(LAYOUTS) - 1))
    n = draw(st.integers(1, 40))
    u32 = st.integers(0, 0xFFFFFFFF)
    devices = draw(st.lists(u32, min_size=n, max_size=n))
    seqs = draw(st.lists(u32, min_size=n, max_size=n))
    cols: list[list[int | float]] = []
    for s in LAYOUTS[i].fields:
        lo, hi = s.field.range
        el = (
            st.floats(width=32, allow_nan=False, allow_infinity=False)
            if lo is None
            else st.integers(lo, hi)
        )
        cols.append(draw(st.lists(el, min_size=n, max_size=n)))
    return i, devices, seqs, cols


@settings(max_examples=examples(60), deadline=None)
@given(batches())
def test_batch_patcher_makes_exactly_what_encode_makes(
    b: tuple[int, list[int], list[int], list[list[int | float]]],
) -> None:
    i, devices, seqs, cols = b
    lay = LAYOUTS[i]
    p = BatchPatcher(lay, KEY)
    out = p.empty(len(devices))
    dtype = [np.float32 if s.field.type == "f32" else np.int64 for s in lay.fields]
    p.patch(
        out,
        np.array(devices),
        np.array(seqs),
        [np.array(c, dtype=d) for c, d in zip(cols, dtype, strict=True)],
    )
    for r, (dev, seq) in enumerate(zip(devices, seqs, strict=True)):
        want = encode_raw(lay, [c[r] for c in cols], dev, seq, KEY)
        assert out[r].tobytes() == want
    # Scalars broadcast: one device, fixed values, seq varying (what `precast send` does).
    p.patch(out, devices[0], np.array(seqs), [c[0] for c in cols])
    for r, seq in enumerate(seqs):
        assert out[r].tobytes() == encode_raw(lay, [c[0] for c in cols], devices[0], seq, KEY)


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s
        self.slept += s


def test_token_bucket_holds_its_rate_and_catches_up_a_stall_only_so_far() -> None:
    c = FakeClock()
    b = TokenBucket(10_000, clock=c, sleep=c.sleep)
    sent = 0
    while sent < 20_000:
        sent += b.take(1_000)
    assert abs(c.t - 100.0 - 2.0) < 0.01  # 20,000 frames at 10,000/s: 2 s
    c.t += 5.0  # a 5 s stall: at most 0.1 s of tokens are waiting after it
    assert b.take(10**9) == 1_000


def test_pump_at_rate_zero_sends_everything_at_once() -> None:
    mem = MemoryTransport()
    stats = pump(mem, [np.zeros((5, 60), np.uint8), [b"x" * 60] * 3], rate=0)
    assert stats.sent == len(mem.frames) == 8 and stats.errors == 0
    assert re.fullmatch(r"sent 8 frames in [\d.]+ s: \d+ frames/s, 0 errors", stats.summary())


def test_fleet_devices_have_distinct_ids_macs_and_ips() -> None:
    fleet = Fleet(LAYOUTS, devices=9, device_base=500, key=KEY, seed=1)
    frames = [f.tobytes() for chunk in fleet_frames(fleet, Faults(), 1, 1.0, 64) for f in chunk]
    assert len(frames) == 9
    ids = {int.from_bytes(f[PAYLOAD_OFFSET + 4 : PAYLOAD_OFFSET + 8], "big") for f in frames}
    assert ids == set(range(500, 509))
    assert len({f[6:12] for f in frames}) == 9
    assert len({f[26:30] for f in frames}) == 9


def test_udp_sends_the_payload_alone() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    try:
        to = f"127.0.0.1:{rx.getsockname()[1]}"
        r = precast(
            "send",
            str(TEMPLATES / "env-node.toml"),
            "--device",
            "3",
            "--seq",
            "10",
            "--count",
            "3",
            "--udp",
            to,
            *ENV_VALUES,
        )
        assert r.returncode == 0, r.stderr
        got = [rx.recv(2048) for _ in range(3)]
    finally:
        rx.close()
    raws = [2150, 4025, 101325, 3000]  # ENV_VALUES in raw units
    lay = next(lay for lay in LAYOUTS if lay.template.name == "env-node")
    assert got == [encode_raw(lay, raws, 3, s)[PAYLOAD_OFFSET:] for s in (10, 11, 12)]
    assert r.stdout.splitlines()[-1].startswith("sent 3 frames in ")


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env_node = str(TEMPLATES / "env-node.toml")
    cases = [
        (["send", env_node, "--device", "1", "--udp", "nohostport", *ENV_VALUES], "HOST:PORT"),
        (
            [
                "send",
                str(TEMPLATES / "power-meter.toml"),
                "--device",
                "1",
                "--pcap",
                str(tmp_path / "x.pcap"),
                "energy=1",
                "power=1",
                "voltage=1",
                "power_factor=1",
            ],
            "--key",
        ),
        (
            [
                "send",
                env_node,
                "--device",
                "1",
                "--pcap",
                str(tmp_path / "x.pcap"),
                "temperature=900",
            ],
            "temperature",
        ),
        (
            [
                "simulate",
                "--devices",
                "3",
                "--rate",
                "10",
                "--loss",
                "0.7",
                "--dup",
                "0.7",
                "--pcap",
                str(tmp_path / "y.pcap"),
            ],
            "more than 1",
        ),
        (
            ["bridge", "--serial", str(tmp_path / "no-such-tty"), "--udp", "127.0.0.1:9"],
            "serial port",
        ),
    ]
    for args, word in cases:
        r = precast(*args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("precast: error: ") and word in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def _frames(n: int) -> list[bytes]:
    lay = LAYOUTS[0]
    return [encode_raw(lay, [0] * len(lay.fields), 7, s, KEY) for s in range(n)]


def test_transport_urls(tmp_path: Path) -> None:
    """Every URL form in the transports' docstring, each judged where its frames end up."""
    frames = _frames(5)
    mem = open_transport("memory://")
    assert mem.send_frames([b"abc"]) == 0
    assert mem.frames == [b"abc"]  # type: ignore[attr-defined]
    # udp://HOST:PORT: the payloads arrive at a socket, in order.
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    try:
        udp = open_transport(f"udp://127.0.0.1:{rx.getsockname()[1]}")
        assert udp.send_frames(frames) == 0
        udp.close()
        assert [rx.recv(2048) for _ in frames] == [f[PAYLOAD_OFFSET:] for f in frames]
    finally:
        rx.close()
    # pcap://PATH: scapy reads back the very frames.
    from scapy.utils import rdpcap

    path = tmp_path / "t.pcap"
    pc = open_transport(f"pcap://{path}")
    assert pc.send_frames(frames) == 0
    pc.close()
    assert [bytes(x) for x in rdpcap(str(path))] == frames
    with pytest.raises(TransportError, match="unknown transport"):
        open_transport("tcp://127.0.0.1:1")


@pytest.mark.parametrize("url", ["packet://{}", "packet://{}?ring=off"])
def test_packet_transport_urls(veth: VethPair, url: str) -> None:
    """packet://IFACE (TX ring) and ?ring=off: the interface's own counters see every frame."""
    frames = _frames(50)
    stats = Path(f"/sys/class/net/{veth.outer}/statistics")
    before = [int((stats / k).read_text()) for k in ("tx_packets", "tx_bytes")]
    t = open_transport(url.format(veth.outer))
    try:
        assert t.send_frames(frames) == 0
    finally:
        t.close()
    after = [int((stats / k).read_text()) for k in ("tx_packets", "tx_bytes")]
    assert after[0] - before[0] == len(frames)
    assert after[1] - before[1] == sum(len(f) for f in frames)


def _run_on_a_terminal(args: list[str]) -> str:
    """Run precast with stderr on a pty; everything it drew there."""
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [str(BIN / "precast"), *args],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "100", "TERM": "xterm"},
    )
    os.close(slave)
    drawn = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
        elif p.poll() is not None:
            break
    p.wait(timeout=30)
    os.close(master)
    return drawn.decode(errors="replace")


def test_progress_bar_on_a_terminal_for_runs_over_a_second(tmp_path: Path) -> None:
    base = [
        "send",
        str(TEMPLATES / "env-node.toml"),
        "--device",
        "1",
        "--pcap",
        str(tmp_path / "p.pcap"),
        *ENV_VALUES,
    ]
    long = _run_on_a_terminal([*base, "--count", "1600", "--rate", "1000"])
    assert "frames/s" in long and "/1600" in long
    # It ran over a second because it was paced: the frames' own times span the run (start-up,
    # slow on a loaded machine, is not in it).
    times = [t for t, _ in read_frames_with_times(tmp_path / "p.pcap")]
    bucket = TokenBucket(1000)
    assert len(times) == 1600
    assert times[-1] - times[0] >= (1600 - bucket.burst - bucket.quantum - 1) / 1000
    short = _run_on_a_terminal([*base, "--count", "300", "--rate", "1000"])
    assert "frames/s" not in short


def test_a_paced_fleet_spreads_each_devices_readings_over_time(tmp_path: Path) -> None:
    # 6 devices of 3 templates at 300 frames/s: each device sends every 20 ms, so in a
    # well-behaved stream no device falls silent for long (a collector would call it stale).
    out = tmp_path / "fleet.pcap"
    r = precast(
        "simulate",
        "--templates",
        str(TEMPLATES),
        "--key",
        KEY_HEX,
        "--devices",
        "6",
        "--rate",
        "300",
        "--duration",
        "2",
        "--pcap",
        str(out),
        "--seed",
        "1",
    )
    assert r.returncode == 0, r.stderr
    times: dict[int, list[float]] = {}
    for ts, frame in read_frames_with_times(out):
        device = int.from_bytes(frame[PAYLOAD_OFFSET + 4 : PAYLOAD_OFFSET + 8], "big")
        times.setdefault(device, []).append(ts)
    assert len(times) == 6 and all(len(t) == 100 for t in times.values())
    # Interleaved, judged by order (a loaded machine may stall the clock, not the order): between
    # two readings of one device, about 5 of the others; never a long run of the others.
    order = [
        int.from_bytes(f[PAYLOAD_OFFSET + 4 : PAYLOAD_OFFSET + 8], "big")
        for _, f in read_frames_with_times(out)
    ]
    last: dict[int, int] = {}
    worst = 0
    for i, d in enumerate(order):
        if d in last:
            worst = max(worst, i - last[d] - 1)
        last[d] = i
    assert worst <= 20, f"{worst} frames of other devices between two readings of one"
    shortest = min(t[-1] - t[0] for t in times.values())
    assert shortest > 1.6, f"a device sent all its readings within {shortest:.2f} s of 2 s"


def read_frames_with_times(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, frame) of each record of a microsecond pcap, read by scapy."""
    from scapy.utils import rdpcap

    return [(float(p.time), bytes(p)) for p in rdpcap(str(path))]


def test_templates_option_takes_several_paths_and_repeats(tmp_path: Path) -> None:
    # `--templates a b` and `--templates a --templates b` both mean a and b, as for collect.
    a, b = str(TEMPLATES / "minimal.toml"), str(TEMPLATES / "env-node.toml")
    for words in (["--templates", a, b], ["--templates", a, "--templates", b]):
        r = precast(
            "simulate",
            *words,
            "--devices",
            "2",
            "--rate",
            "100",
            "--duration",
            "0.05",
            "--pcap",
            str(tmp_path / "x.pcap"),
        )
        assert r.returncode == 0, r.stderr
        assert "(minimal x1, env-node x1)" in r.stdout, r.stdout
