"""The serial bridge: SLIP over pyserial's loop://, and the firmware's serial transport over a pty.

The firmware side is the real MicroPython unix port running the bundle
`precast build` writes, with cfg.TRANSPORT = "serial" on one end of a pty
pair that socat joins to the other end, where `precast bridge` reads.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import serial
from firmware_kit import build
from hypothesis import given
from hypothesis import strategies as st
from kit import BIN, TEMPLATES, micropython, need, read_line, run_bundle
from precast.send.bridge import Bridge
from precast.send.transports.memory import MemoryTransport
from precast.wire import slip
from precast.wire.codec import Codec, Reading, encode
from precast.wire.constants import PAYLOAD_OFFSET
from precast.wire.layout import load_layouts

BAD_ESCAPE = b"\xc0\x50\x10\xdb\x41\x00\x01\xc0"  # ESC then 'A': not a SLIP escape
SERIAL_LINE = re.compile(r"serial: (\d+) SLIP frames, (\d+) corrupt; refused: (.*)$", re.M)
SENT = re.compile(r"^sent (\d+) frames in [\d.]+ s: \d+ frames/s, (\d+) errors$", re.M)


@given(st.lists(st.binary(min_size=1, max_size=80), max_size=30), st.integers(1, 50))
def test_slip_round_trips_in_any_chunking(payloads: list[bytes], chunk: int) -> None:
    stream = b"".join(slip.encode(p) for p in payloads)
    d = slip.Decoder()
    got = []
    for i in range(0, len(stream), chunk):
        got += d.feed(stream[i : i + chunk])
    assert got == payloads
    assert d.corrupt == 0


def test_slip_counts_corrupt_frames_and_resyncs() -> None:
    d = slip.Decoder(max_len=16)
    good = slip.encode(b"\xc0\xdb ok")
    stream = BAD_ESCAPE + good + b"\xc0abc\xdb\xc0" + b"\x01" * 100 + good + good
    assert d.feed(stream) == [b"\xc0\xdb ok"] * 3
    # bad escape, trailing ESC, and 100 bytes in one frame (too long)
    assert d.corrupt == 3
    # A line that never ends a frame is dropped as it piles up, then the next END resyncs.
    assert d.feed(b"\x02" * 100) == []
    assert d.feed(b"\x02" * 100 + good) == [b"\xc0\xdb ok"]
    assert d.corrupt == 4


def test_bridge_through_loop_forwards_every_good_payload() -> None:
    layouts = load_layouts([TEMPLATES])
    key = bytes(range(16))
    frames = [
        encode(lay, dict.fromkeys((s.name for s in lay.fields), 1), 40 + lay.id, seq, key)
        for seq in range(150)
        for lay in layouts
    ]
    bad_crc = bytearray(frames[0][PAYLOAD_OFFSET:])
    bad_crc[-1] ^= 0xFF
    parts = [slip.encode(f[PAYLOAD_OFFSET:]) for f in frames]
    parts.insert(200, slip.encode(bad_crc))
    stream = BAD_ESCAPE + b"".join(parts) + BAD_ESCAPE
    port = serial.serial_for_url("loop://", timeout=0.05)
    # loop:// holds 4 KiB: write from another thread while the bridge reads.
    writer = threading.Thread(target=port.write, args=(stream,))
    writer.start()
    out = MemoryTransport()
    stats = Bridge(port, Codec(layouts, key=key), out).run(count=len(frames) + 3)
    writer.join()
    # Whole frames rebuilt from the template equal the encoder's, in order.
    assert out.frames == frames
    assert stats.corrupt == 2
    assert dict(stats.refused) == {"crc": 1}
    assert stats.sent == len(frames) and stats.errors == 0


@pytest.mark.usefixtures("mp_port")
def test_bridge_carries_the_firmware_serial_transport_over_a_pty(tmp_path: Path) -> None:
    need("socat", "socat")
    n = 400
    a, b = tmp_path / "board", tmp_path / "host"
    pty = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"], stderr=subprocess.DEVNULL
    )
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.bind(("127.0.0.1", 0))
    bridge: subprocess.Popen[str] | None = None
    try:
        for _ in range(100):
            if a.exists() and b.exists():
                break
            time.sleep(0.05)
        bundle = tmp_path / "bundle"
        build(
            bundle,
            TEMPLATES / "env-node.toml",
            "--device",
            "61",
            "--count",
            str(n),
            "--interval-ms",
            "0",
            "--transport",
            "serial",
            "--serial-port",
            str(a),
        )
        bridge = subprocess.Popen(
            [
                "precast",
                "bridge",
                "--serial",
                str(b),
                "--templates",
                str(TEMPLATES),
                "--udp",
                f"127.0.0.1:{sink.getsockname()[1]}",
                "--count",
                str(n + 3),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"},
        )
        assert bridge.stderr is not None
        read_line(bridge.stderr, "precast bridge: reading")  # the port is open: start the board
        script = (
            "import precast_config as cfg, precast_template as tpl\n"
            "from precast_fw import app\n"
            "from precast_fw.transport_serial import Transport\n"
            "app.main(tpl, cfg)\n"
            "t = Transport(tpl, cfg)\n"
            f"t.out.write({BAD_ESCAPE!r})\n"
            "t.send(memoryview(b'P\\x10\\x00\\x01' + bytes(20)))  # a payload with a bad CRC\n"
            f"t.out.write({BAD_ESCAPE!r})\n"
            "t.close()\n"
        )
        run = run_bundle(bundle, script)
        assert run.returncode == 0, run.stdout + run.stderr
        out, err = bridge.communicate(timeout=30)
        assert bridge.returncode == 0, err
        sink.settimeout(0.5)
        got = []
        try:
            while True:
                got.append(sink.recv(2048))
        except TimeoutError:
            pass
    finally:
        sink.close()
        if bridge is not None and bridge.poll() is None:
            bridge.kill()
            bridge.wait(timeout=10)
        pty.terminate()
        pty.wait(timeout=10)
    m, s = SERIAL_LINE.search(out), SENT.search(out)
    assert m and s, out
    assert m.group(1, 2, 3) == (str(n + 3), "2", "crc 1")
    assert s.group(1, 2) == (str(n), "0")
    codec = Codec(load_layouts([TEMPLATES]))
    readings = [codec.decode(d) for d in got]
    assert all(isinstance(r, Reading) for r in readings)
    assert [(r.device, r.seq) for r in readings if isinstance(r, Reading)] == [
        (61, i) for i in range(n)
    ]


MP_ALLOC = """
import sys
sys.path.insert(0, {fw!r})
import micropython
from precast_fw.transport_serial import Transport


class Tpl:
    PAYLOAD_LEN = {plen}


class Cfg:
    SERIAL_PORT = {out!r}


def run(t, payloads):
    for mv in payloads:
        t.send(mv)


t = Transport(Tpl, Cfg)
payloads = [memoryview(bytes.fromhex(h)) for h in {hexes!r}]
run(t, payloads)
micropython.heap_lock()
try:
    run(t, payloads)
finally:
    micropython.heap_unlock()
t.close()
print("done")
"""


@pytest.mark.usefixtures("mp_port")
def test_firmware_serial_transport_allocates_nothing_and_host_slip_reads_it(
    tmp_path: Path,
) -> None:
    mp = micropython()
    lay = load_layouts([TEMPLATES / "env-node.toml"])[0]
    # Payloads full of the bytes SLIP escapes, and plain ones.
    payloads = [bytes([0xC0, 0xDB] * (lay.payload_len // 2)), bytes(range(lay.payload_len))]
    payloads += [
        encode(lay, dict.fromkeys((s.name for s in lay.fields), 0), 3, s)[PAYLOAD_OFFSET:]
        for s in range(20)
    ]
    out = tmp_path / "uart.bin"
    script = tmp_path / "alloc.py"
    script.write_text(
        MP_ALLOC.format(
            fw=str(Path(__file__).resolve().parents[2] / "firmware"),
            plen=lay.payload_len,
            out=str(out),
            hexes=[p.hex() for p in payloads],
        )
    )
    r = subprocess.run([str(mp), str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
    d = slip.Decoder()
    assert d.feed(out.read_bytes()) == payloads * 2
    assert d.corrupt == 0
