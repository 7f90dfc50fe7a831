"""The firmware's backlog ring on the unix ports: kept readings go out late, oldest first, as
the host codec's delayed frames, a full ring drops its oldest, and nothing is allocated.

The readings are kept and drained under micropython.heap_lock() (a warm-up first, as the
app does), with seqs across 2**30 and u32 fields above it: on the 32-bit port those are
heap objects the moment they become ints. Judge: codec.encode_raw with age_ms.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from firmware_kit import build, no_viper
from kit import KEY_HEX, micropython, run_bundle
from kit import TEMPLATES as TEMPLATES_DIR
from precast.wire.codec import encode_raw
from precast.wire.layout import load_layouts

pytestmark = pytest.mark.usefixtures("mp_port")

KEY = bytes.fromhex(KEY_HEX)
DEVICE = 0xDEADBEEF

SCRIPT = r"""
import json, time, binascii, micropython
import precast_template as tpl
import precast_template_late as late_tpl
from precast_fw import sender, backlog
with open("case.json") as f:
    c = json.load(f)
s = sender.Sender(tpl, KEY)
late = sender.Sender(late_tpl, KEY)
t = [1000]
def clock():
    return t[0]
L = len(late_tpl.FRAME)
out = bytearray(L * c["readings"])
pos = [0]
def send(mv):
    i = 0
    p = pos[0]
    while i < L:
        out[p + i] = mv[i]
        i += 1
    pos[0] = p + L
v = s.values
warm = backlog.Backlog(2, late, late_tpl.OFF_AGE, clock, time.ticks_diff)
warm.keep(s.frame)
warm.drain(send, late.frame_mv, 1)
pos[0] = 0
b = backlog.Backlog(c["n"], late, late_tpl.OFF_AGE, clock, time.ticks_diff)
s.seq = c["seq"]
rows = c["rows"]
step = c["step_ms"]
def run():
    r = 0
    while r < len(rows):
        row = rows[r]
        i = 0
        while i < tpl.FIELD_COUNT:
            v[i] = row[i]
            i += 1
        s.patch(v)
        b.keep(s.frame)
        t[0] += step
        r += 1
    while len(b):
        b.drain(send, late.frame_mv, c["limit"])
        t[0] += step
# in a function: a new global assigned under heap_lock would grow the module's dict
micropython.heap_lock()
try:
    run()
finally:
    micropython.heap_unlock()
print(b.counts())
k = 0
while k < pos[0]:
    print(binascii.hexlify(out[k:k + L]).decode())
    k += L
"""


@pytest.fixture
def port(mp_port: str) -> str:
    """The unix port this test runs on (conftest's mp_port: mp64, then mp32)."""
    return mp_port


def _port(which: str) -> str:
    return micropython()


def _template(tmp: Path, check: str) -> Path:
    types = ["u32", "i32", "u16", "i8"]
    fields = "".join(f'\n[[field]]\nname = "f{i}"\ntype = "{t}"\n' for i, t in enumerate(types))
    p = tmp / f"wide-{check}.toml"
    p.write_text(f'id = 77\nname = "wide"\ncheck = "{check}"\n{fields}')
    return p


@pytest.mark.parametrize("plain", [False, True], ids=["viper", "plain"])
@pytest.mark.parametrize("check", ["crc16", "cmac4"])
def test_the_ring_sends_what_it_kept_oldest_first_without_allocating(
    tmp_path: Path, port: str, plain: bool, check: str
) -> None:
    exe = _port(port)
    path = _template(tmp_path, check)
    lay = load_layouts([path])[0]
    out = tmp_path / "b"
    build(out, path, "--device", str(DEVICE), "--key", KEY_HEX)
    if plain:
        no_viper(out)
    n, readings, step, seq0 = 8, 13, 1000, 0x3FFFFFFA
    rows = [[0xFFFFFFFF - r, -(2**31) + r, 65535 - r, -128 + r] for r in range(readings)]
    case = {"n": n, "readings": readings, "seq": seq0, "rows": rows, "step_ms": step, "limit": 3}
    (out / "case.json").write_text(json.dumps(case))
    (out / "test_script.py").write_text(f"KEY = {KEY!r}\n" + SCRIPT)
    r = subprocess.run(
        [exe, "test_script.py"], cwd=out, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().split("\n")
    assert lines[0] == f"kept {readings} late {n} dropped {readings - n} waiting 0"
    frames = [bytes.fromhex(x) for x in lines[1:]]
    assert len(frames) == n
    # the newest n, oldest first; drained 3 a round, the clock a step on after each round
    kept = range(readings - n, readings)
    for j, (i, frame) in enumerate(zip(kept, frames, strict=True)):
        now = readings * step + (j // 3) * step  # ms after the first reading
        age = now - i * step
        seq = (seq0 + i) & 0xFFFFFFFF
        assert frame == encode_raw(lay, rows[i], DEVICE, seq, KEY, age), (i, seq, age)


MEM = r"""
import gc
from precast_fw import backlog
from precast_fw.sender import Sender
import precast_template_late as late_tpl
import precast_config as cfg
late = Sender(late_tpl, cfg.KEY)
gc.collect()
a = gc.mem_alloc()
b = backlog.Backlog(cfg.BACKLOG, late, late_tpl.OFF_AGE)
gc.collect()
print(cfg.BACKLOG, gc.mem_alloc() - a)
"""


@pytest.mark.parametrize("template", ["minimal.toml", "env-node.toml"])
def test_the_default_ring_takes_at_most_2_kib(tmp_path: Path, port: str, template: str) -> None:
    """The build's default --backlog, measured by the port's own allocator."""
    from kit import TEMPLATES

    exe = _port(port)
    out = tmp_path / "b"
    build(out, TEMPLATES / template, "--device", "7")
    (out / "test_script.py").write_text(MEM)
    r = subprocess.run(
        [exe, "test_script.py"], cwd=out, capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    n, used = map(int, r.stdout.split())
    fields_len = load_layouts([TEMPLATES / template])[0].template.fields_len
    assert n * (8 + fields_len) <= used <= 2048, (n, used)
    assert n >= 60  # and it is not sized down to nothing


def test_backlog_0_is_off(tmp_path: Path) -> None:
    build(tmp_path / "a", TEMPLATES_DIR / "env-node.toml", "--device", "7", "--backlog", "0")
    assert "BACKLOG = 0\n" in (tmp_path / "a" / "precast_config.py").read_text()
    build(tmp_path / "b", TEMPLATES_DIR / "env-node.toml", "--device", "7", "--backlog", "500")
    assert "BACKLOG = 500\n" in (tmp_path / "b" / "precast_config.py").read_text()


OUTAGE = r"""
import errno, time
import precast_config as cfg, precast_template as tpl
from precast_fw import app
from precast_fw.sensors.sim import Sensor
from precast_fw.transport_udp import Transport

from array import array

state = [0]  # readings taken so far
ticks = array("i", bytes(4 * (cfg.COUNT + 1)))  # when each was taken (ticks_ms)
sim = Sensor(tpl, cfg)
DOWN = OSError(errno.EHOSTUNREACH)  # made once: raising it allocates nothing

class Outage:
    # Readings DOWN_FROM..DOWN_TO (counting from 0) are taken while the link is down.
    def read(self, values):
        ticks[state[0]] = time.ticks_ms()
        state[0] += 1
        sim.read(values)

class Link:
    def __init__(self, inner):
        self.inner = inner
        self.FRAME = inner.FRAME
    def send(self, mv):
        if DOWN_FROM < state[0] <= DOWN_TO:
            raise DOWN
        self.inner.send(mv)
    def reopen(self):
        pass
    def close(self):
        self.inner.close()

counts = app.run(tpl, cfg, transport=Link(Transport(tpl, cfg)), sensor=Outage())
print(counts)
print("precast: backlog " + counts.backlog)
print("ticks", " ".join(str(time.ticks_diff(t, ticks[0])) for t in ticks[: cfg.COUNT]))
"""


@pytest.mark.parametrize("lock", [False, True], ids=["free", "heap_lock"])
def test_the_node_sends_an_outage_late_oldest_first(tmp_path: Path, port: str, lock: bool) -> None:
    """The app with --backlog through an outage of its link: every reading that fit the ring
    arrives once, the ones before them are lost at both ends, the ages are the interval's."""
    from firmware_kit import UdpSink
    from precast.wire.codec import Codec, Reading

    exe = _port(port)
    n, ring, interval, down_from, down_to = 60, 8, 20, 10, 30
    sink = UdpSink()
    try:
        template = TEMPLATES_DIR / "env-node.toml"
        extra = ["--heap-lock"] if lock else []
        build(
            tmp_path / "b", template, "--device", "3", "--collector", sink.collector,
            "--count", str(n), "--interval-ms", str(interval), "--backlog", str(ring), *extra,
        )  # fmt: skip
        with (tmp_path / "b" / "precast_config.py").open("a") as f:
            f.write(f"RETRIES = 0\nSEQ_FILE = None\nSEQ_START = {0x3FFFFFF0}\n")  # seqs over 2**30
        script = f"DOWN_FROM = {down_from}\nDOWN_TO = {down_to}\n" + OUTAGE
        (tmp_path / "b" / "test_script.py").write_text(script)
        r = subprocess.run(
            [exe, "test_script.py"], cwd=tmp_path / "b", capture_output=True, text=True,
            timeout=60, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        got = sink.drain()
    finally:
        sink.close()
    codec = Codec(load_layouts([template]))
    readings = [codec.decode(g) for g in got]
    assert all(isinstance(x, Reading) for x in readings), readings
    seqs = [x.seq - 0x3FFFFFF0 for x in readings if isinstance(x, Reading)]
    late = [
        (x.seq - 0x3FFFFFF0, x.age_ms) for x in readings if isinstance(x, Reading) and x.delayed
    ]
    outage = list(range(down_from, down_to))  # readings 11..30 (1-based) are seqs 10..29
    kept = outage[-ring:]  # a full ring dropped the oldest
    assert sorted(seqs) == sorted(set(seqs)), "a reading arrived twice"
    assert set(range(n)) - set(seqs) == set(outage[:-ring])  # lost: the ring's overflow
    assert [s for s, _ in late] == kept  # oldest first
    (taken,) = [line.split()[1:] for line in r.stdout.splitlines() if line.startswith("ticks")]
    at = [int(x) for x in taken]  # ms after the first reading, as the node's clock says
    for s, age in late:
        assert age is not None
        # taken at reading s, sent before reading down_to + k // 4 (4 a reading)
        sent_at = down_to + kept.index(s) // 4
        assert abs(age - (at[sent_at] - at[s])) <= 5, (s, age, at[sent_at] - at[s])
    assert f"backlog kept {len(outage)} late {ring} dropped {len(outage) - ring} waiting 0" in (
        r.stdout
    ), r.stdout


SLEEP = r"""
import time, os
import precast_template as tpl
import precast_template_late as late_tpl
import precast_config as cfg
from precast_fw import sender, backlog, deepsleep

s = sender.Sender(tpl, None)
late = sender.Sender(late_tpl, None)
ring = backlog.Backlog(8, late, late_tpl.OFF_AGE)
v = s.values
i = 0
while i < 5:
    v[0] = 100 + i
    s.patch(v)
    ring.keep(s.frame)
    time.sleep_ms(100)
    i += 1
b = deepsleep.Board(cfg)  # --sleep deep: the ring is kept in cfg.BACKLOG_FILE
b.keep_over_sleep(ring)
b.pause(200)  # deep: saved, then (the unix stand-in: no reboot) removed again
print("after pause", cfg.BACKLOG_FILE in os.listdir("."))
deepsleep.save(ring, cfg.BACKLOG_FILE, b.rtc)  # what pause() does just before machine.deepsleep
time.sleep_ms(300)  # the sleep
# the next boot: a new ring, its ticks and the RTC's time later
late2 = sender.Sender(late_tpl, None)
ring2 = backlog.Backlog(8, late2, late_tpl.OFF_AGE)
n = deepsleep.restore(ring2, cfg.BACKLOG_FILE, deepsleep.Board(cfg).rtc)
print("restored", n, cfg.BACKLOG_FILE in os.listdir("."))
out = []
def send(mv):
    out.append(bytes(mv))
ring2.drain(send, late2.frame_mv, 8)
import binascii
for f in out:
    print(binascii.hexlify(f).decode())
"""


def test_the_ring_crosses_deep_sleep_in_a_file_with_its_ages_going_on(tmp_path: Path) -> None:
    from precast.wire.codec import Codec, Reading

    out = tmp_path / "b"
    build(out, TEMPLATES_DIR / "minimal.toml", "--device", "5", "--sleep", "deep")
    assert "BACKLOG_FILE = 'precast_backlog'" in (out / "precast_config.py").read_text()
    r = run_bundle(out, SLEEP)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().split("\n")
    assert lines[0] == "after pause False" and lines[1] == "restored 5 False", lines
    codec = Codec(load_layouts([TEMPLATES_DIR / "minimal.toml"]))
    got = [codec.decode(bytes.fromhex(x)) for x in lines[2:]]
    assert all(isinstance(g, Reading) and g.delayed for g in got), got
    readings = [g for g in got if isinstance(g, Reading)]
    assert [g.raw[0] for g in readings] == [100, 101, 102, 103, 104]
    assert [g.seq for g in readings] == [0, 1, 2, 3, 4]
    # taken 100 ms apart; the last 100 ms before the pause, then 200 ms pause + 300 ms sleep
    for k, g in enumerate(readings):
        want = (4 - k) * 100 + 100 + 200 + 300
        assert g.age_ms is not None and abs(g.age_ms - want) <= 80, (k, g.age_ms, want)


@pytest.mark.parametrize("chip", ["w5500", "enc28j60"])
def test_the_raw_chips_send_the_precomputed_delayed_frame(tmp_path: Path, veth, chip: str) -> None:
    """The W5500 and ENC28J60 drivers (register-level models, tests/chips/) through a link
    that goes down for ten readings, under heap_lock: the kept ones leave as delayed frames,
    byte for byte the codec's, the kernel in the namespace judging every checksum."""
    from firmware_kit import template_for
    from precast.wire.codec import Codec, Reading
    from test_firmware_eth import Capture, bundle, counts_of, run_chip

    n = 120
    t = template_for(veth, TEMPLATES_DIR / "env-node.toml", tmp_path / "env-node.toml")
    layouts = load_layouts([t])
    cap = Capture(veth, layouts[0].template.network.dst_port)
    out = bundle(tmp_path, t, chip, "--count", str(n), "--heap-lock", "--backlog", "16")
    res = run_chip(out, chip, veth.outer, schedule=[(50, "link", False), (60, "link", True)])
    got = cap.result()
    assert got["csum_errors"] == 0
    codec = Codec(layouts, key=KEY)
    seqs, late = [], []
    for h in got["frames"]:  # type: ignore[attr-defined]
        f = bytes.fromhex(h)
        r = codec.decode(f)
        assert isinstance(r, Reading), r
        want = encode_raw(r.layout, r.raw, r.device, r.seq, KEY, r.age_ms)
        assert f[: len(want)] == want and not any(f[len(want) :])
        seqs.append(r.seq)
        if r.delayed:
            late.append(r.seq)
    assert sorted(seqs) == list(range(n)), "every reading once, the kept ones late"
    assert late and late == sorted(late) and set(late) <= set(range(50, 61)), late
    assert len(got["payloads"]) == n  # type: ignore[arg-type]
    assert counts_of(res)["readings"] == n


RTC_SLEEP = r"""
import os, time, binascii
import precast_template as tpl
import precast_template_late as late_tpl
from drivers_fakes import FakeRTC
from precast_fw import sender, backlog, deepsleep
from precast_fw.deepsleep import SeqStore

N, SIZE, GAP = %d, %d, %d
rtc = FakeRTC(SIZE)
store = SeqStore("seq", rtc=rtc)
s = sender.Sender(tpl, None)
s.seq = store.start()
late = sender.Sender(late_tpl, None)
ring = backlog.Backlog(N, late, late_tpl.OFF_AGE)
v = s.values
i = 0
while i < N:
    v[0] = i
    s.patch(v)
    store.claim(1)
    ring.keep(s.frame)
    time.sleep_ms(GAP)
    i += 1
# what Board.pause does just before machine.deepsleep: the seq's record, then the ring
store.save_for_sleep()
deepsleep.save(ring, "kept", rtc)
print("saved", "kept" in os.listdir("."), len(rtc.memory()))
time.sleep_ms(300)  # the sleep
# the next boot: the ring first (app.py), then the seq store, from the same RTC memory
late2 = sender.Sender(late_tpl, None)
ring2 = backlog.Backlog(N, late2, late_tpl.OFF_AGE)
restored = deepsleep.restore(ring2, "kept", rtc)
left = len(rtc.memory())
store2 = SeqStore("seq", rtc=rtc)
first = store2.start()
print("restored", restored, "kept" in os.listdir("."), left, store2.resumed, first)
out = []
def send(mv):
    out.append(bytes(mv))
ring2.drain(send, late2.frame_mv, N)
# a reset later in that run: nothing comes back from RTC memory or the flash
ring3 = backlog.Backlog(N, sender.Sender(late_tpl, None), late_tpl.OFF_AGE)
print("again", deepsleep.restore(ring3, "kept", rtc))
for f in out:
    print(binascii.hexlify(f).decode())
"""


@pytest.mark.parametrize(
    ("n", "size", "in_rtc"),
    [(5, 2048, 5), (250, 2048, 202), (5, 32, 0)],
    ids=["fits-esp32", "part-in-a-file", "rp2-32-bytes"],
)
def test_the_ring_crosses_deep_sleep_in_rtc_memory(
    tmp_path: Path, n: int, size: int, in_rtc: int
) -> None:
    """ESP32's RTC memory (a fake written from ports/esp32/machine_rtc.c: 2,048 bytes, more
    refused with ValueError): the newest readings that fit beside the seq store's record go
    there and no flash is written; the older rest go to the file; a port with 32 bytes (rp2)
    keeps only the seq's record there. At the next boot the ring is read back oldest first,
    with ages that went on through the sleep, RTC memory keeps the seq's record for the
    store, and a later reset brings nothing back."""
    from precast.wire.codec import Codec, Reading

    out = tmp_path / "b"
    build(out, TEMPLATES_DIR / "minimal.toml", "--device", "5", "--sleep", "deep")
    shutil.copy(Path(__file__).parents[1] / "drivers_fakes.py", out)
    gap = 10 if n < 100 else 1
    r = run_bundle(out, RTC_SLEEP % (n, size, gap))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().split("\n")
    slot = 4 + 4 + 2  # an age, the seq, minimal's one u16 field
    rtc_len = 16 + (10 + in_rtc * slot if in_rtc else 0)
    assert lines[0] == f"saved {in_rtc < n} {rtc_len}", lines[0]
    assert lines[1] == f"restored {n} False 16 True {n}", lines[1]
    assert lines[2] == "again 0", lines[2]
    codec = Codec(load_layouts([TEMPLATES_DIR / "minimal.toml"]))
    got = [codec.decode(bytes.fromhex(x)) for x in lines[3:]]
    readings = [g for g in got if isinstance(g, Reading) and g.delayed]
    assert len(readings) == n
    assert [g.seq for g in readings] == list(range(n))  # oldest first, file then RTC memory
    assert [g.raw[0] for g in readings] == list(range(n))
    ages = [g.age_ms or 0 for g in readings]
    assert ages == sorted(ages, reverse=True)  # older, older
    assert all(a >= 300 for a in ages)  # the sleep counted (the RTC's clock)
    assert ages[0] - ages[-1] >= (n - 1) * gap * 0.9, (ages[0], ages[-1])
