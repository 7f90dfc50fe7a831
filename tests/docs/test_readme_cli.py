"""README's claims about send, simulate, build and bridge, each judged where the frames land.

The judges: a UDP socket this test holds, the codec with and without the right key, scapy on
pcap files and on tcpdump's capture at the far end of a veth pair, termios on the pty the
bridge opened, and the MicroPython unix port running what build wrote.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
from firmware_kit import UdpSink, build, counts
from kit import (
    KEY,
    TEMPLATES,
    VethPair,
    need,
    precast,
    precast_cmd,
    read_line,
    run_bundle,
    run_script,
)
from kit import wait_for as wait
from precast import Codec, encode
from precast.wire.codec import Reading, Rejected
from precast.wire.constants import PAYLOAD_OFFSET
from precast.wire.layout import load_layouts
from precast.wire.slip import encode as slip
from sender_kit import Capture, pair, template_to

POWER = TEMPLATES / "power-meter.toml"
POWER_VALUES = ["energy=1", "power=2.5", "voltage=230", "power_factor=0.5"]


@pytest.fixture
def sink() -> Iterator[UdpSink]:
    s = UdpSink()
    try:
        yield s
    finally:
        s.close()


# ---- send ------------------------------------------------------------------------------------


def test_send_key_from_the_cli(sink: UdpSink) -> None:
    r = precast(
        "send",
        str(POWER),
        "--device",
        "9",
        "--key",
        KEY.hex(),
        "--count",
        "3",
        "--udp",
        sink.collector,
        *POWER_VALUES,
    )
    assert r.returncode == 0, r.stderr
    got = sink.drain()
    layouts = load_layouts([POWER])
    right = [Codec(layouts, key=KEY).decode(d) for d in got]
    assert [(x.device, x.seq) for x in right if isinstance(x, Reading)] == [(9, 0), (9, 1), (9, 2)]
    wrong = [Codec(layouts, key=bytes(16)).decode(d) for d in got]
    assert all(isinstance(x, Rejected) and x.reason == "mic" for x in wrong)


def test_send_count_0_runs_until_ctrl_c(sink: UdpSink) -> None:
    p = subprocess.Popen(
        precast_cmd(
            "send",
            str(TEMPLATES / "minimal.toml"),
            "--device",
            "4",
            "--count",
            "0",
            "--rate",
            "500",
            "--no-progress",
            "--udp",
            sink.collector,
            "value=1",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    got: list[bytes] = []
    try:
        sink.sock.settimeout(30)
        while len(got) < 300:  # more than --count's default, and still going
            got.append(sink.sock.recv(2048))
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    got += sink.drain()
    assert p.returncode == 130, err  # interrupted, as a shell reports Ctrl-C
    assert "Traceback" not in err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"sent {len(got)} frames in "), (summary, len(got))
    seqs = [int.from_bytes(d[8:12], "big") for d in got]
    assert seqs == list(range(len(got)))


# ---- simulate --------------------------------------------------------------------------------


def test_simulate_leaves_mic_templates_out_without_a_key_and_counts_from_device_base(
    tmp_path: Path,
) -> None:
    from scapy.utils import rdpcap

    out = tmp_path / "f.pcap"
    r = precast(
        "simulate",
        "--templates",
        str(TEMPLATES),
        "--devices",
        "6",
        "--device-base",
        "100",
        "--rate",
        "600",
        "--duration",
        "0.2",
        "--pcap",
        str(out),
        "--no-progress",
    )
    assert r.returncode == 0, r.stderr
    assert "leaving out power-meter" in r.stderr, r.stderr
    frames = [bytes(p) for p in rdpcap(str(out))]
    codec = Codec(load_layouts([TEMPLATES]))
    readings = [codec.decode(f) for f in frames]
    assert readings and all(isinstance(x, Reading) for x in readings)
    names = {x.layout.template.name for x in readings if isinstance(x, Reading)}
    assert names == {"env-node", "minimal"}
    devices = {x.device for x in readings if isinstance(x, Reading)}
    assert devices == set(range(100, 106))


# ---- build -----------------------------------------------------------------------------------


def test_build_template_by_name_or_id_from_a_directory(tmp_path: Path) -> None:
    ref = tmp_path / "file"
    build(ref, TEMPLATES / "env-node.toml", "--device", "3")
    for pick in ("env-node", "1"):
        out = tmp_path / pick
        build(out, TEMPLATES, "--template", pick, "--device", "3")
        assert (out / "precast_template.py").read_text() == (
            ref / "precast_template.py"
        ).read_text()
    r = precast("build", str(TEMPLATES), "--out", str(tmp_path / "x"), "--device", "3")
    assert r.returncode == 2 and "--template" in r.stderr  # a directory of several: which one?


@pytest.mark.usefixtures("mp_port")
def test_build_serial_baud_reaches_the_firmware(tmp_path: Path) -> None:
    out = tmp_path / "b"
    tty = tmp_path / "tty"
    tty.write_bytes(b"")
    build(
        out,
        TEMPLATES / "minimal.toml",
        "--device",
        "2",
        "--transport",
        "serial",
        "--serial-port",
        str(tty),
        "--serial-baud",
        "57600",
    )
    script = (
        "import precast_config as cfg, precast_template as tpl\n"
        "from precast_fw.transport_serial import Transport\n"
        "t = Transport(tpl, cfg)\n"
        "print('baud', t._baud)\n"
        "t.close()\n"
    )
    r = run_bundle(out, script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "baud 57600" in r.stdout


def _sim_values(tmp_path: Path, sink: UdpSink, name: str, seed: str) -> list[tuple[object, ...]]:
    out = tmp_path / name
    build(
        out,
        TEMPLATES / "env-node.toml",
        "--device",
        "8",
        "--count",
        "5",
        "--interval-ms",
        "0",
        "--collector",
        sink.collector,
        "--seed",
        seed,
    )
    r = run_bundle(out)
    assert r.returncode == 0 and counts(r.stdout)["sent"] == 5, r.stdout + r.stderr
    codec = Codec(load_layouts([TEMPLATES / "env-node.toml"]))
    got = [codec.decode(d) for d in sink.drain()]
    return [tuple(x.raw) for x in got if isinstance(x, Reading)]


@pytest.mark.usefixtures("mp_port")
def test_build_seed_picks_the_simulated_readings(tmp_path: Path, sink: UdpSink) -> None:
    a = _sim_values(tmp_path, sink, "a", "1")
    b = _sim_values(tmp_path, sink, "b", "1")
    c = _sim_values(tmp_path, sink, "c", "2")
    assert len(a) == len(b) == len(c) == 5
    assert a == b  # the same seed: the same readings
    assert a != c  # another seed: others


# ---- bridge ----------------------------------------------------------------------------------


def test_bridge_idle_ends_a_quiet_run() -> None:
    r = precast("bridge", "--serial", "loop://", "--idle", "0.5", "--udp", "127.0.0.1:9")
    assert r.returncode == 0, r.stderr
    assert "serial: 0 SLIP frames" in r.stdout


@pytest.fixture
def ptys(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    need("socat", "socat")
    a, b = tmp_path / "board", tmp_path / "host"
    p = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(lambda: a.exists() and b.exists(), 20, "the pty pair")
        yield a, b
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_bridge_baud_sets_the_line_and_sigterm_stops_it(ptys: tuple[Path, Path]) -> None:
    _, host = ptys
    p = subprocess.Popen(
        precast_cmd(
            "bridge",
            "--serial",
            str(host),
            "--baud",
            "57600",
            "--udp",
            "127.0.0.1:9",
            "--templates",
            str(TEMPLATES),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stderr is not None
        read_line(p.stderr, "precast bridge: reading")
        with open(host, "rb") as tty:  # the same tty: its termios is the line's
            attrs = termios.tcgetattr(tty.fileno())
        assert attrs[4] == attrs[5] == termios.B57600, attrs[4:6]
    finally:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    assert f"from {host} at 57600 baud" in out, out


@pytest.fixture
def veth() -> Iterator[VethPair]:
    yield from pair()


def test_bridge_iface_puts_whole_frames_on_the_wire(
    ptys: tuple[Path, Path], veth: VethPair, tmp_path: Path
) -> None:
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    board, host = ptys
    tpl = template_to(tmp_path, veth, "env-node.toml")
    lay = load_layouts([tpl])[0]
    frames = [
        encode(lay, {"temperature": s, "humidity": 40, "pressure": 1e5, "battery": 3000}, 6, s)
        for s in range(5)
    ]
    cap = Capture(veth, tmp_path / "b.pcap")
    p = subprocess.Popen(
        precast_cmd(
            "bridge",
            "--serial",
            str(host),
            "--templates",
            str(tpl),
            "--iface",
            veth.outer,
            "--count",
            "5",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stderr is not None
        read_line(p.stderr, "precast bridge: reading")
        with open(board, "wb") as tty:
            tty.write(b"".join(slip(f[PAYLOAD_OFFSET:]) for f in frames))
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, out
    wire = [f for _, f in cap.stop()]
    assert wire == frames  # the template's whole frame, byte for byte the encoder's
    for f in wire:  # and scapy agrees with its checksums
        pkt = Ether(f)
        ours = pkt[IP].chksum, pkt[UDP].chksum
        del pkt[IP].chksum, pkt[UDP].chksum
        again = Ether(bytes(pkt))
        assert (again[IP].chksum, again[UDP].chksum) == ours


# ---- firmware: --seq-file '', and what robust.py does with EAGAIN and ENOMEM ----------------


@pytest.mark.usefixtures("mp_port")
def test_build_empty_seq_file_starts_every_boot_at_0(tmp_path: Path, sink: UdpSink) -> None:
    out = tmp_path / "b"
    build(
        out,
        TEMPLATES / "minimal.toml",
        "--device",
        "3",
        "--count",
        "3",
        "--interval-ms",
        "0",
        "--collector",
        sink.collector,
        "--seq-file",
        "",
    )
    before = set(out.iterdir())
    codec = Codec(load_layouts([TEMPLATES / "minimal.toml"]))
    for _ in range(2):
        r = run_bundle(out)
        assert r.returncode == 0, r.stdout + r.stderr
        got = [codec.decode(d) for d in sink.drain()]
        assert [x.seq for x in got if isinstance(x, Reading)] == [0, 1, 2]
    assert set(out.iterdir()) == before  # no seq file written


FAILING = r"""
import precast_config as cfg, precast_template as tpl
from precast_fw import app
from precast_fw.transport_udp import Transport

class Failing:
    # The first two send attempts raise OSError(ERR), as full WiFi buffers do.
    def __init__(self, inner):
        self.inner = inner
        self.attempt = 0
        self.FRAME = inner.FRAME
    def send(self, mv):
        self.attempt += 1
        if self.attempt <= 2:
            raise OSError(ERR)
        self.inner.send(mv)
    def reopen(self):
        self.inner.reopen()
    def close(self):
        self.inner.close()

print(app.run(tpl, cfg, transport=Failing(Transport(tpl, cfg))))
"""


@pytest.mark.usefixtures("mp_port")
@pytest.mark.parametrize("err", ["EAGAIN", "ENOMEM"])
def test_firmware_retries_eagain_and_enomem(tmp_path: Path, sink: UdpSink, err: str) -> None:
    out = tmp_path / "b"
    build(
        out,
        TEMPLATES / "minimal.toml",
        "--device",
        "3",
        "--count",
        "10",
        "--interval-ms",
        "0",
        "--collector",
        sink.collector,
    )
    num = getattr(errno, err)
    r = run_bundle(out, f"ERR = {num}\n" + FAILING)
    assert r.returncode == 0, r.stdout + r.stderr
    c = counts(r.stdout)
    assert (c["readings"], c["sent"], c["failed"], c["dropped"]) == (10, 10, 2, 0), c
    codec = Codec(load_layouts([TEMPLATES / "minimal.toml"]))
    got = [codec.decode(d) for d in sink.drain()]
    assert [x.seq for x in got if isinstance(x, Reading)] == list(range(10))  # all arrived


BACKOFF = r"""
import errno, json, time
from precast_fw.robust import Robust

class Down:
    # Every send fails (ENOBUFS); the time of each attempt is kept.
    FRAME = False
    def __init__(self):
        self.at = []
    def send(self, mv):
        self.at.append(time.ticks_us())
        raise OSError(errno.ENOBUFS)
    def reopen(self):
        pass
    def close(self):
        pass

t = Down()
r = Robust(t, retries=4, backoff_ms=20, max_backoff_ms=100)
ok = r.send(memoryview(bytearray(4)))
gaps = [time.ticks_diff(b, a) / 1000 for a, b in zip(t.at, t.at[1:])]
print(json.dumps({"ok": ok, "gaps": gaps, "failed": r.failed, "dropped": r.dropped}))
"""


@pytest.mark.usefixtures("mp_port")
def test_firmware_backoff_doubles_up_to_its_cap() -> None:
    """robust.py's waits between retries, measured on the unix port: 20, 40, 80, then the
    100 ms cap. A sleep is hardly ever shorter than asked, so the lower bounds hold on any
    machine; a constant wait would need a stall of 60 ms to pass the third. (That the cap holds the
    fourth at 100 rather than 160 is not asserted: a loaded machine can stretch any sleep.)"""
    r = run_script(BACKOFF)
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    assert doc["ok"] is False and doc["failed"] == 5 and doc["dropped"] == 1, doc
    gaps = doc["gaps"]
    assert len(gaps) == 4
    for got, least in zip(gaps, (20, 40, 80, 100), strict=True):
        # The unix port's sleep_ms may wake a little early (19.55 ms seen for 20); a constant
        # wait still fails the second gap by far.
        assert got >= least * 0.9, gaps
