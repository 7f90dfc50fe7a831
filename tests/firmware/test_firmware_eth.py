"""Raw Ethernet from a board: the W5500 and ENC28J60 drivers against register-level chip models.

No SPI Ethernet chip is on this machine, so each is a model written from
its datasheet (tests/chips/: SPI framing, the registers the drivers
touch, command and interrupt bits with their timing), run on the real
MicroPython unix port as the SPI bus and CS pin handed to
`Transport(tpl, cfg, spi=chip, cs=chip.cs)`. What a model's MAC would put
on the cable leaves through an AF_PACKET socket on a veth pair whose far
end is in a namespace the test makes. There the kernel judges every frame
(a plain UDP socket receives them, and UdpInCsumErrors in that
namespace's /proc/net/snmp does not grow, while one spoiled control frame
does), a packet socket captures each whole frame, and the host codec
decodes it and re-encodes it with `encode_raw`: byte for byte the same,
the seqs in order, for every shipped template and each check kind.
Faults the models inject (no chip, no link, a SEND or TXRTS that never
completes, TXABRT, a late collision, a full TX buffer) are counted,
retried and reopened on, never crash the loop and never repeat a seq.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from firmware_kit import build, template_for
from kit import KEY_HEX, ROOT, TEMPLATES, VethPair, run_bundle
from precast.wire.codec import Codec, Reading, encode_raw
from precast.wire.layout import load_layouts
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

KEY = bytes.fromhex(KEY_HEX)
CHIPS = ROOT / "tests" / "chips"
DRIVERS = ["w5500", "enc28j60"]
DEVICE = 21

CAPTURE = r"""
import json, select, socket, sys
iface, port = sys.argv[1], int(sys.argv[2])
def csum_errors():
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Udp:")]
    return int(lines[1][lines[0].index("InCsumErrors")])
raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
raw.bind((iface, 0))
raw.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
udp.bind(("0.0.0.0", port))
before = csum_errors()
print("ready", flush=True)
frames, payloads, wait, end = [], [], float(sys.argv[3]), None
while True:
    r, _, _ = select.select([raw, udp], [], [], wait)
    if not r:
        break
    if raw in r:
        data, addr = raw.recvfrom(2048)
        ihl = (data[14] & 15) * 4 if len(data) > 34 else 0
        dport = data[14 + ihl + 2 : 14 + ihl + 4]
        if data[23:24] == b"\x11" and dport == (port + 1).to_bytes(2, "big"):
            wait = 0.5  # the sentinel: everything sent before it is in; drain the UDP socket
        elif addr[2] != socket.PACKET_OUTGOING:
            frames.append(data.hex())
    if udp in r:
        payloads.append(udp.recv(2048).hex())
print(json.dumps({"frames": frames, "payloads": payloads,
                  "csum_errors": csum_errors() - before}), flush=True)
"""


class Capture:
    """In the namespace: whole frames from a packet socket, payloads from a UDP socket.

    It runs until the sentinel, a frame to port + 1 that `result` sends after everything
    else (a veth keeps order), has come and the UDP socket has been quiet for 0.5 s.
    """

    def __init__(self, veth: VethPair, port: int, first: float = 120) -> None:
        self.iface = veth.outer
        self.port = port
        self.dst_mac = veth.inner_mac
        self.dst_ip = veth.inner_ip
        self.proc = subprocess.Popen(
            veth.exec(sys.executable, "-c", CAPTURE, veth.inner, str(port), str(first)),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "ready"

    def result(self) -> dict[str, object]:
        sentinel = Ether(dst=self.dst_mac) / IP(src="192.0.2.99", dst=self.dst_ip)
        sentinel = sentinel / UDP(sport=9, dport=self.port + 1) / b"end"
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((self.iface, 0))
            s.send(bytes(sentinel))
        out, _ = self.proc.communicate(timeout=60)
        res: dict[str, object] = json.loads(out)
        return res


def bundle(tmp: Path, template: Path, chip: str, *args: str) -> Path:
    """`precast build --transport CHIP` for `template`, the chip models and runner copied in."""
    out = tmp / template.stem
    build(
        out,
        template,
        "--device",
        str(DEVICE),
        "--key",
        KEY_HEX,
        "--interval-ms",
        "0",
        "--transport",
        chip,
        "--watchdog-ms",
        "0",
        "--eth-reset",
        "none",  # the unix port has no pins; the models are reset over SPI
        "--backlog",
        "0",  # the driver's own counts and order: nothing kept to be sent late
        *args,
    )
    for f in CHIPS.glob("*.py"):
        shutil.copy(f, out)
    # The models' wire sends through the packet transport's sockaddr code: not in the bundle.
    shutil.copy(ROOT / "firmware" / "precast_fw" / "transport_packet.py", out / "precast_fw")
    return out


def run_chip(
    out: Path,
    chip: str,
    iface: str | None,
    start: list[tuple[str, object]] | None = None,
    schedule: list[tuple[int, str, object]] | None = None,
    reset_pin: bool = False,
) -> dict[str, object]:
    """Run tests/chips/run_eth.py in the bundle; its JSON line."""
    params = f"CHIP = {chip!r}\nIFACE = {iface!r}\nSTART = {start or []!r}\n"
    params += f"RESET_PIN = {reset_pin!r}\n"
    params += f"SCHEDULE = {schedule or []!r}\n"
    (out / "eth_params.py").write_text(params)
    r = run_bundle(out, (out / "run_eth.py").read_text(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    res: dict[str, object] = json.loads(r.stdout.strip().splitlines()[-1])
    return res


def counts_of(res: dict[str, object]) -> dict[str, int]:
    words = str(res["counts"]).split(" last_error ")[0].split()[1:]
    return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}


def spoil_and_send(iface: str, frame: bytes) -> None:
    """A control: the frame with its UDP checksum changed, out of `iface`."""
    bad = bytearray(frame)
    bad[40] ^= 0x5A
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((iface, 0))
        s.send(bytes(bad))


def _cmac4_template(tmp: Path) -> Path:
    p = tmp / "int-cmac4.toml"
    p.write_text(
        'id = 41\nname = "int-cmac4"\ncheck = "cmac4"\n[network]\nsrc_mac = "02:00:00:00:00:29"\n'
        '[[field]]\nname = "a"\ntype = "u32"\n[[field]]\nname = "b"\ntype = "i8"\n'
    )
    return p


@pytest.mark.parametrize("chip", DRIVERS)
def test_eth_frames_byte_for_byte_into_namespace(tmp_path: Path, veth: VethPair, chip: str) -> None:
    n = 120
    sources = [*sorted(TEMPLATES.glob("*.toml")), _cmac4_template(tmp_path)]
    templates = [template_for(veth, s, tmp_path / s.name) for s in sources]
    layouts = load_layouts(templates)
    checks = {lay.template.check for lay in layouts}
    assert checks == {"crc16", "cmac4", "cmac8"}
    port = layouts[0].template.network.dst_port
    assert all(lay.template.network.dst_port == port for lay in layouts)
    cap = Capture(veth, port)
    results = {}
    for t in templates:
        out = bundle(tmp_path / "b", t, chip, "--count", str(n))
        # W5500: the TX pointer starts just short of 0x10000, so early frames wrap both the
        # 16-bit pointer and the 16 KB buffer, which the chip maps and the driver must not split.
        start = [("start_ptr", 0xFFC0)] if chip == "w5500" else []
        results[t.stem] = run_chip(out, chip, veth.outer, start=start)
    # Once every driver frame is in: one frame with a spoiled checksum, which must count.
    first_frame = encode_raw(layouts[0], [0] * len(layouts[0].fields), DEVICE, 0, KEY)
    spoil_and_send(veth.outer, first_frame)
    got = cap.result()

    assert got["csum_errors"] == 1  # the control only: every driver frame's checksums held
    codec = Codec(layouts, key=KEY)
    frames = [bytes.fromhex(h) for h in got["frames"]]  # type: ignore[union-attr]
    by_id: dict[int, list[int]] = {}
    for f in frames[:-1]:  # the last is the spoiled control
        r = codec.decode(f)
        assert isinstance(r, Reading), r
        want = encode_raw(r.layout, r.raw, r.device, r.seq, KEY)
        assert f[: len(want)] == want
        assert len(f) == max(60, len(want))  # the minimum frame, padded with zeros
        assert not any(f[len(want) :])
        by_id.setdefault(r.template, []).append(r.seq)
    for lay in layouts:
        assert by_id[lay.template.id] == list(range(n)), lay.template.name
    assert len(got["payloads"]) == len(templates) * n  # type: ignore[arg-type]
    for name, res in results.items():
        c = counts_of(res)
        assert c["sent"] == n and c["failed"] == 0, (name, res)
        frames_out, shortest, _ = res["wire"]  # type: ignore[misc]
        assert frames_out == n
        if name == "minimal":  # 58 bytes from the template: 60 on the wire
            assert shortest == 60
        if chip == "enc28j60":  # the chip padded the minimal template's 58 bytes
            assert res["bad"] == 0 and res["early"] == 0 and res["misuse"] == 0
            assert res["no_txrst"] == 0 and res["duplex"] == 0 and res["rxen"] == 0
            assert res["macon3"] == 0x32
        else:  # the driver padded: MACRAW sends what it is given
            assert res["runts"] == 0 and res["bad_open"] == 0
            # Every command after Sn_CR read 0; the last SEND finished before the CLOSE.
            assert res["misuse"] == 0 and res["aborted"] == 0


@pytest.mark.parametrize("duplex", ["half", "full"])
def test_eth_enc28j60_mac_set_up(tmp_path: Path, duplex: str) -> None:
    """MAADR1..6 at bank 3 0x04 0x05 0x02 0x03 0x00 0x01 (DS39662E table 3-2); duplex both ends."""
    out = bundle(
        tmp_path, TEMPLATES / "power-meter.toml", "enc28j60", "--count", "3", "--eth-duplex", duplex
    )
    res = run_chip(out, "enc28j60", None)
    assert res["maadr"] == [0x02, 0, 0, 0, 0, 0x03]
    assert res["macon3"] == (0x33 if duplex == "full" else 0x32)
    assert res["duplex"] == 0 and res["bad"] == 0  # MACON3.FULDPX matches PHCON1.PDPXMD
    assert res["wire"][0] == 3  # type: ignore[index]


@pytest.mark.parametrize(
    ("chip", "start", "what"),
    [
        ("w5500", [("miso", 0x00)], "VERSIONR reads 0x00"),
        ("w5500", [("miso", 0xFF)], "VERSIONR reads 0xff"),
        ("w5500", [("version", 0x03)], "VERSIONR reads 0x03"),
        ("enc28j60", [("miso", 0xFF)], "ESTAT reads 0xff"),
        ("enc28j60", [("miso", 0x00)], "ESTAT reads 0x00"),
        ("enc28j60", [("clkrdy", False)], "no CLKRDY"),
    ],
)
def test_eth_no_chip_is_one_clear_oserror(
    tmp_path: Path, chip: str, start: list[tuple[str, object]], what: str
) -> None:
    out = bundle(tmp_path, TEMPLATES / "minimal.toml", chip, "--count", "3")
    res = run_chip(out, chip, None, start=start)
    errno, text = res["open_error"]  # type: ignore[misc]
    assert errno == 19  # ENODEV
    assert what in text and "no chip" in text and chip in text


def _seqs(got: dict[str, object], layouts: list) -> list[int]:  # type: ignore[type-arg]
    codec = Codec(layouts, key=KEY)
    out = []
    for h in got["frames"]:  # type: ignore[attr-defined]
        r = codec.decode(bytes.fromhex(h))
        assert isinstance(r, Reading), r
        out.append(r.seq)
    return out


W5500_FAULTS = [
    (50, "link", False),
    (60, "link", True),
    (100, "stall", True),
    (103, "stall", False),
    (150, "glitch", True),
    (200, "full", True),
    (203, "full", False),
    (300, "miso", 0xFF),
    (305, "miso", None),
    (350, "miso", 0x00),
    (353, "miso", None),
]
ENC_FAULTS = [
    (50, "link", False),
    (60, "link", True),
    (100, "stuck", True),
    (103, "stuck", False),
    (150, "abort", 2),
    (200, "late", 1),
    (300, "miso", 0xFF),
    (305, "miso", None),
    (330, "miso", 0x00),  # a chip that says nothing: no TXIF after a transmission
    (333, "miso", None),
    (350, "clkrdy", False),
    (350, "stuck", True),
    (353, "stuck", False),
    (353, "clkrdy", True),
]


@pytest.mark.parametrize("chip", DRIVERS)
def test_eth_faults_counted_retried_reopened(tmp_path: Path, veth: VethPair, chip: str) -> None:
    n = 400
    t = template_for(veth, TEMPLATES / "env-node.toml", tmp_path / "env-node.toml")
    layouts = load_layouts([t])
    cap = Capture(veth, layouts[0].template.network.dst_port)
    # Under heap_lock: the failure paths allocate nothing either (a reopen lifts the lock).
    out = bundle(tmp_path, t, chip, "--count", str(n), "--heap-lock")
    faults = W5500_FAULTS if chip == "w5500" else ENC_FAULTS
    res = run_chip(out, chip, veth.outer, schedule=faults)  # type: ignore[arg-type]
    got = cap.result()
    c = counts_of(res)
    seqs = _seqs(got, layouts)
    assert got["csum_errors"] == 0
    assert seqs == sorted(set(seqs))  # in order, never a seq twice
    assert c["readings"] == n and c["sent"] + c["dropped"] == n
    assert c["failed"] > 0 and c["dropped"] > 0 and c["reopened"] >= 3
    assert res["detail"] == res["driver"]  # what main.py prints under its counts line
    drv = str(res["driver"]).split()
    said = {drv[i]: int(drv[i + 1]) for i in range(1, len(drv), 2)}
    assert said["no-link"] > 0 and said["resets"] >= 4
    if chip == "w5500":
        assert said["send-timeouts"] > 0 and said["tx-full"] > 0
        # A frame the chip took without a SEND_OK may or may not have left.
        assert c["sent"] - said["unconfirmed"] <= len(seqs) <= c["sent"]
        assert res["misuse"] == 0 and res["aborted"] == 0
    else:
        assert said["tx-timeouts"] > 0 and said["aborts"] == 2 and said["late-collisions"] == 1
        assert said["silent"] > 0
        assert len(seqs) == c["sent"]  # the driver saw each frame leave before counting it
        assert res["no_txrst"] == 0
    # Readings outside the fault windows all went out.
    for lo, hi in ((0, 50), (61, 100), (110, 150), (210, 300), (360, n)):
        assert set(range(lo, hi)) <= set(seqs), (lo, hi)


@pytest.mark.parametrize("chip", DRIVERS)
def test_eth_10000_readings_heap_locked(tmp_path: Path, chip: str) -> None:
    n = 10_000
    out = bundle(tmp_path, TEMPLATES / "env-node.toml", chip, "--count", str(n), "--heap-lock")
    res = run_chip(out, chip, None)
    c = counts_of(res)
    assert c == {
        "readings": n,
        "sent": n,
        "failed": 0,
        "dropped": 0,
        "reopened": 0,
        "last_errno": 0,
    }
    assert res["wire"][0] == n  # type: ignore[index]
    assert res["misuse"] == 0
    if chip == "w5500":
        assert res["aborted"] == 0
    config = (out / "precast_config.py").read_text()
    assert "HEAP_LOCK = True" in config and f"TRANSPORT = {chip!r}" in config


# A script's bus to a bare W5500 model: tx(addr, ctl, data) writes, rd(addr, ctl) reads a byte.
W5500_BUS = r"""
from w5500_model import W5500
from wire import Wire
w = Wire(None)
c = W5500(w)
def tx(addr, ctl, data):
    c.cs(0); c.write(bytes((addr >> 8, addr & 255, ctl)) + bytes(data)); c.cs(1)
def rd(addr, ctl):
    a = bytearray(4); c.cs(0); c.write_readinto(bytes((addr >> 8, addr & 255, ctl, 0)), a); c.cs(1)
    return a[3]
"""


def test_eth_w5500_model_drops_a_runt(tmp_path: Path) -> None:
    """The control for the padding: a 58-byte MACRAW frame is a runt the model refuses."""
    out = bundle(tmp_path, TEMPLATES / "minimal.toml", "w5500", "--count", "1")
    script = r"""
def cmd(b):
    tx(0x01, 0x0C, [b])
    while rd(0x01, 0x08):
        pass
tx(0x00, 0x0C, [0x84]); cmd(0x01)
wr = 0
for n in (58, 60):
    tx(wr, 0x14, [0xAA] * n); wr += n; tx(0x24, 0x0C, [0, wr]); cmd(0x20)
    while not rd(0x02, 0x08) & 0x10:
        pass
    tx(0x02, 0x0C, [0x10])
print(c.runts, w.frames, w.shortest, c.misuse)
"""
    r = run_bundle(out, W5500_BUS + script)
    assert r.stdout.split() == ["1", "1", "60", "0"], r.stdout + r.stderr


@pytest.mark.parametrize("chip", DRIVERS)
def test_eth_reset_line_brings_a_silent_chip_back(tmp_path: Path, chip: str) -> None:
    """With the reset pin wired, every set-up pulses it; a chip gone silent comes back."""
    out = bundle(tmp_path, TEMPLATES / "env-node.toml", chip, "--count", "60")
    # MISO stuck low from reading 20 to 25: sends fail, reopens pulse the reset line.
    faults = [(20, "miso", 0x00), (25, "miso", None)]
    res = run_chip(out, chip, None, schedule=faults, reset_pin=True)  # type: ignore[arg-type]
    c = counts_of(res)
    drv = str(res["driver"]).split()
    resets = int(drv[drv.index("resets") + 1])  # set-ups that succeeded
    assert resets >= 2 and res["hard_resets"] > resets  # failed ones pulsed it too
    assert c["sent"] + c["dropped"] == 60 and c["sent"] >= 50


def test_eth_w5500_model_refuses_early_commands_and_cuts_a_send_short(tmp_path: Path) -> None:
    """The controls for the handshakes: what a driver must not do, the model counts."""
    out = bundle(tmp_path, TEMPLATES / "minimal.toml", "w5500", "--count", "1")
    script = r"""
tx(0x00, 0x0C, [0x84]); tx(0x01, 0x0C, [0x01])
tx(0x01, 0x0C, [0x01])  # before Sn_CR read 0: not taken
while rd(0x01, 0x08):
    pass
tx(0, 0x14, [0xAA] * 60); tx(0x24, 0x0C, [0, 60]); tx(0x01, 0x0C, [0x20])
while rd(0x01, 0x08):
    pass
tx(0x01, 0x0C, [0x10])  # CLOSE before SEND_OK: the frame is cut off
print(c.misuse, c.aborted, w.frames)
"""
    r = run_bundle(out, W5500_BUS + script)
    assert r.stdout.split() == ["1", "1", "0"], r.stdout + r.stderr


NO_CHIP = r"""
import time
import precast_config as cfg, precast_template as tpl
from precast_fw import app, board
from w5500_model import W5500
from wire import Wire
chip = W5500(Wire(None))
chip.miso = 0x00  # nothing on the bus: MISO pulled low
board.spi_bus = lambda cfg: (chip, chip.cs)  # where a board's machine.SPI would be
if TELL:
    cfg.TELL_MS = TELL
t0 = time.ticks_ms()
app.main(tpl, cfg)
print("elapsed", time.ticks_diff(time.ticks_ms(), t0))
"""
NO_CHIP_WORDS = (
    "w5500: VERSIONR reads 0x00, not 0x04: " + "no chip, or a wiring fault (MISO, CS, power)"
)


@pytest.mark.parametrize(("interval", "tell"), [(0, 0), (20, 100)])
def test_eth_a_transport_that_cannot_open_says_why(
    tmp_path: Path, interval: int, tell: int
) -> None:
    """The driver's words on the console when the cause is new, then at most once per TELL_MS."""
    out = bundle(tmp_path, TEMPLATES / "env-node.toml", "w5500", "--count", "40", "--heap-lock")
    cfg = out / "precast_config.py"
    cfg.write_text(cfg.read_text().replace("INTERVAL_MS = 0", f"INTERVAL_MS = {interval}"))
    r = run_bundle(out, f"TELL = {tell}\n" + NO_CHIP, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    told = [ln for ln in lines if ln.startswith("precast: cannot open")]
    want = f"precast: cannot open the transport yet (errno 19): {NO_CHIP_WORDS}; retrying"
    assert told and set(told) == {want}, r.stdout
    assert not [ln for ln in lines if "send failed" in ln]  # ENOTCONN after it: no new cause
    summary = next(ln for ln in lines if ln.startswith("precast: readings"))
    assert summary == (
        "precast: readings 40 sent 0 failed 160 dropped 40 reopened 0 last_errno 19 "
        f'last_error "{NO_CHIP_WORDS}"'
    )
    elapsed = int(lines[-1].split()[1])
    if tell == 0:  # a minute by default: once in a run this short
        assert len(told) == 1
    else:  # told again while it lasts, at most once per TELL_MS
        assert 2 <= len(told) <= elapsed // tell + 1, (len(told), elapsed)


def test_robust_tells_a_new_cause_under_heap_lock(tmp_path: Path) -> None:
    """Telling allocates nothing: new causes, the driver's words, under micropython.heap_lock."""
    out = bundle(tmp_path, TEMPLATES / "minimal.toml", "w5500", "--count", "1")
    script = r"""
import micropython
from precast_fw.robust import Robust
class T:
    def send(self, mv):
        pass
link = Robust(T(), tell_ms=60000)
said = "w5500: no link (PHYCFGR LNK clear)"
def faults():
    link.fault(105)
    link.fault(105)  # the same cause: not again within the minute
    link.fault(110)
    link.fault(100, said, True)
    link.fault(100)  # the same errno without words: the driver's words stay
    link.fault(107)  # after a failed reopen: its consequence
micropython.heap_lock()
try:
    faults()
finally:
    micropython.heap_unlock()
print("last", link.last_errno, link.last_error)
"""
    r = run_bundle(out, script)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "precast: send failed (errno 105): ENOBUFS; retrying",
        "precast: send failed (errno 110): ETIMEDOUT; retrying",
        "precast: cannot open the transport yet (errno 100): w5500: no link (PHYCFGR LNK clear); "
        "retrying",
        "last 107 ENOTCONN",
    ]
