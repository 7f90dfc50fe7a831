"""The board layer on the real MicroPython unix port: seq across kills, sleep modes, WiFi, WDT.

main.py runs as built by `precast build` and sends to a UDP socket on
loopback; the host codec decodes what arrives. WiFi and the watchdog are
hardware this machine does not have: a fake `network` module (written into
the test's directory) and FakeWDT stand in for them.
"""

from __future__ import annotations

import itertools
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from firmware_kit import UdpSink, build, counts
from kit import FIRMWARE, TEMPLATES, TESTS, micropython, run_bundle, run_script
from precast.wire.codec import Codec, Reading
from precast.wire.layout import load_layouts

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

ENV = TEMPLATES / "env-node.toml"


def seqs(frames: list[bytes]) -> list[int]:
    codec = Codec(load_layouts([ENV]))
    out = []
    for f in frames:
        r = codec.decode(f)
        assert isinstance(r, Reading), r
        assert r.device == 5
        out.append(r.seq)
    return out


def stopped_runs(
    out: Path, sink: UdpSink, sig: int, delays: list[float], arrived: int = 0
) -> tuple[list[list[int]], list[str], list[str]]:
    """Run main.py in `out` once per delay, stopping it with `sig` after that long.

    With `arrived`, the delay starts once that many frames reached the sink (an event,
    not a guess at start-up time). The seqs that reached `sink` in each run, and each
    run's stderr and stdout.
    """
    per_run, errs, outs = [], [], []
    for delay in delays:
        p = subprocess.Popen(
            [micropython(), "main.py"],
            cwd=out,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first = []
        sink.sock.settimeout(30)
        while len(first) < arrived:
            first.append(sink.sock.recv(2048))
        time.sleep(delay)
        p.send_signal(sig)
        out_text, err = p.communicate(timeout=30)
        errs.append(err)
        outs.append(out_text)
        per_run.append(seqs(first + sink.drain(quiet=0.2)))
    return per_run, errs, outs


def test_killed_main_never_sends_a_seq_twice(tmp_path: Path) -> None:
    """Power loss, as SIGKILL at random moments: every seq that reaches the collector is new."""
    sink = UdpSink()
    try:
        out = tmp_path / "b"
        build(
            out,
            ENV,
            "--device",
            "5",
            "--collector",
            sink.collector,
            "--interval-ms",
            "1",
            "--seq-reserve",
            "50",
        )
        rnd = random.Random(5)
        # Each run is killed at a random moment once 40 of its frames arrived (every run
        # starts and sends, however slowly a loaded machine starts it).
        delays = [rnd.uniform(0, 0.1) for _ in range(6)]
        per_run, errs, _ = stopped_runs(out, sink, signal.SIGKILL, delays, arrived=40)
        assert not any(errs), errs
    finally:
        sink.close()
    everything = [s for run in per_run for s in run]
    assert len(everything) > 200
    assert len(set(everything)) == len(everything), "a seq went out twice"
    for a, b in itertools.pairwise(per_run):
        if a and b:
            assert b[0] > a[-1]  # a restart starts above every seq sent before
            assert b[0] - a[-1] <= 50 + 1  # and skips at most one reservation
    assert per_run[0][0] == 0


def test_a_clean_stop_keeps_the_exact_seq(tmp_path: Path) -> None:
    """Ctrl-C (as mpremote and deploy send it) or --count ending: the next run skips nothing."""
    sink = UdpSink()
    try:
        out = tmp_path / "b"
        build(
            out,
            ENV,
            "--device",
            "5",
            "--collector",
            sink.collector,
            "--interval-ms",
            "2",
            "--seq-reserve",
            "50",
        )
        # SIGINT: the unix port raises KeyboardInterrupt, as Ctrl-C on a board's REPL does.
        # Each run is stopped once 60 readings arrived: past the first reservation of 50.
        per_run, errs, outs = stopped_runs(out, sink, signal.SIGINT, [0.02] * 3, arrived=60)
    finally:
        sink.close()
    everything = [s for run in per_run for s in run]
    assert all(len(run) > 50 for run in per_run)  # each run crossed a reservation
    assert everything == list(range(len(everything)))  # no repeat, and no gap either
    # Ctrl-C ends as --count does: the counts line, no traceback, and the counts are true.
    for run, err, text in zip(per_run, errs, outs, strict=True):
        assert "Traceback" not in err + text, err + text
        c = counts(text)
        assert c["sent"] == len(run) and c["readings"] == len(run), (c, len(run))


def test_sleep_modes_on_the_unix_port(tmp_path: Path) -> None:
    """light and deep fall back to time.sleep_ms here; readings and seqs go on unbroken."""
    sink = UdpSink()
    try:
        for mode in ("light", "deep"):
            out = tmp_path / mode
            build(
                out,
                ENV,
                "--device",
                "5",
                "--collector",
                sink.collector,
                "--sleep",
                mode,
                "--interval-ms",
                "5",
                "--count",
                "20",
            )
            t0 = time.monotonic()
            r = run_bundle(out)
            assert r.returncode == 0, r.stderr
            assert time.monotonic() - t0 >= 19 * 0.005  # it did pace
            assert counts(r.stdout)["sent"] == 20
            assert seqs(sink.drain(quiet=0.2)) == list(range(20))
    finally:
        sink.close()


def test_board_hooks_allocate_nothing_under_heap_lock(tmp_path: Path) -> None:
    """--heap-lock with light sleep, the watchdog hook and a reservation every 3 readings."""
    sink = UdpSink()
    try:
        out = tmp_path / "b"
        build(
            out,
            ENV,
            "--device",
            "5",
            "--collector",
            sink.collector,
            "--heap-lock",
            "--sleep",
            "light",
            "--interval-ms",
            "1",
            "--count",
            "300",
            "--seq-reserve",
            "3",
        )
        r = run_bundle(out)
        assert r.returncode == 0, r.stdout + r.stderr
        assert counts(r.stdout)["sent"] == 300
        assert seqs(sink.drain(quiet=0.2)) == list(range(300))
        # 100 reservations, the last one [300, 303) written before seq 300 could go out
        slots = (out / "precast_seq").read_bytes()
        assert b"0000000300/0000000300\n" in slots
    finally:
        sink.close()


FAKE_NETWORK = '''
"""A stand-in for network.WLAN (ESP32 names): this machine has no WiFi radio."""
import os
STA_IF = 0
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_WRONG_PASSWORD = 2
STAT_NO_AP_FOUND = 3
STAT_CONNECT_FAIL = 4
STAT_GOT_IP = 5
MODE = os.getenv("FAKE_WIFI") or "ok"  # ok, badpass, never, second (the 2nd connect works)
CONNECTS = [0]  # connect() calls over every WLAN object
class WLAN:
    def __init__(self, i):
        self.polls = 0
        self.up = False
    def active(self, on=None):
        return True
    def isconnected(self):
        self.polls += 1
        ok = MODE == "ok" or (MODE == "second" and CONNECTS[0] >= 2)
        self.up = ok and self.polls > 3
        return self.up
    def connect(self, ssid, password):
        CONNECTS[0] += 1
        self.polls = 0
        print("fake: connect", ssid, len(password))
    def disconnect(self):
        print("fake: disconnect")
    def status(self):
        return STAT_WRONG_PASSWORD if MODE == "badpass" else STAT_CONNECTING
    def ifconfig(self):
        return ("10.9.8.7", "255.255.255.0", "10.9.8.1", "10.9.8.1")
'''

WIFI_SCRIPT = """
import sys
import precast_fw
from precast_fw import board
from drivers_fakes import FakeWDT
w = FakeWDT()
first = board.wifi_up(300, w)
print("held", "precast_fw.wifi" in sys.modules or hasattr(precast_fw, "wifi"))
print("again", board.wifi_up(300, w))  # a rejoin imports it once more
print("result", first, "feeds", w.feeds)
"""


def test_wifi_up_from_the_secrets_module(tmp_path: Path) -> None:
    (tmp_path / "network.py").write_text(FAKE_NETWORK)
    secret = "correct-horse"

    def run(mode: str) -> str:
        env = dict(os.environ, MICROPYPATH=f"{tmp_path}:{FIRMWARE}:{TESTS}", FAKE_WIFI=mode)
        r = subprocess.run(
            [micropython(), "-c", WIFI_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert secret not in r.stdout
        return r.stdout

    assert "no precast_secrets.py" in run("ok") and "result False" in run("ok")
    (tmp_path / "precast_secrets.py").write_text(f'WIFI_SSID = "lab"\nWIFI_PASSWORD = "{secret}"\n')
    ok = run("ok")
    assert "fake: connect lab 13" in ok and "up, address 10.9.8.7" in ok and "result True" in ok
    assert "held False" in ok and "again True" in ok  # wifi.py leaves RAM once up
    bad = run("badpass")
    assert "WiFi 'lab': wrong password" in bad and "result False" in bad
    never = run("never")
    assert "no connection after 300 ms" in never and "result False" in never
    assert "fake: disconnect" in never
    feeds = int(never.split()[-1])
    assert feeds >= 2  # the watchdog is fed while it waits


BOARD_SCRIPT = """
import time
from precast_fw import board, deepsleep
from drivers_fakes import FakeWDT, FakeRTC
from precast_fw.deepsleep import SeqStore
class Cfg:
    SLEEP = "deep"
    TRANSPORT = "udp"
print("wdt", board.watchdog(5000))  # None: the unix port has no machine.WDT
w = FakeWDT()
rtc = FakeRTC()
b = deepsleep.Board(Cfg, store=SeqStore("seq", reserve=10, rtc=rtc), wdt=w)
print("first", b.first_seq())
b.claim(1); b.claim(1)
print("feeds", w.feeds)
t0 = time.ticks_ms()
b.pause(30)  # deep: the seq into RTC memory, then (the unix stand-in) a wait and carry on
print("paused", time.ticks_diff(time.ticks_ms(), t0) >= 30, "rtc", rtc.writes, "feeds", w.feeds)
print("left", len(rtc.memory()))  # carried on, so the record is gone again
b.store.save_for_sleep()  # what pause() does on a board just before machine.deepsleep
b.close()
b = deepsleep.Board(Cfg, store=SeqStore("seq", reserve=10, rtc=rtc))
print("woke", b.first_seq())
"""


def test_board_feeds_the_watchdog_and_keeps_the_seq_over_deep_sleep(tmp_path: Path) -> None:
    out = run_script(BOARD_SCRIPT, cwd=tmp_path).stdout.split("\n")
    assert out[0] == "wdt None"
    assert out[1] == "first 0"
    assert out[2] == "feeds 2"
    assert out[3] == "paused True rtc 2 feeds 3"  # written, then cleared
    assert out[4] == "left 0"
    assert out[5] == "woke 2"


LATE_WIFI = """
from precast_fw import board
from precast_fw.robust import Robust
class Cfg:
    TRANSPORT = "udp"
b = board.setup(Cfg)  # the WiFi does not come up: a Board all the same, no reset
class Transport:
    FRAME = False
    def __init__(self):  # as a socket's connect without a network: no route
        if not b.wlan.isconnected():
            raise OSError(113)
    def send(self, mv):
        print("sent", bytes(mv))
    def close(self):
        pass
link = Robust(None, 3, 1, opener=Transport, frame=False, prepare=b.reconnect)
print("first", link.send(b"one"))
print("then", link.send(b"two"))
print("tries", b.network_tries, "failed", link.failed, "dropped", link.dropped,
      "reopened", link.reopened, "errno", link.last_errno)
"""


def test_a_board_without_wifi_keeps_trying(tmp_path: Path) -> None:
    """WiFi down at boot: no reset loop; each reopen rejoins first, until the network is up."""
    (tmp_path / "network.py").write_text(FAKE_NETWORK)
    (tmp_path / "precast_secrets.py").write_text(
        'WIFI_SSID = "lab"\nWIFI_PASSWORD = "pw"\nWIFI_TIMEOUT_MS = 200\n'
    )
    env = dict(os.environ, MICROPYPATH=f"{tmp_path}:{FIRMWARE}:{TESTS}", FAKE_WIFI="second")
    r = subprocess.run(
        [micropython(), "-c", LATE_WIFI],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "no network yet; the loop keeps trying" in out
    assert "cannot open the transport yet (errno 113)" in out
    assert out.count("fake: connect") == 2  # at boot, then once from the first reopen
    assert "sent b'one'" in out and "first True" in out  # the retries got it out
    assert "sent b'two'" in out and "then True" in out
    m = re.search(r"tries (\d+) failed (\d+) dropped 0 reopened 1 errno 107", out)
    assert m, out  # counted: WiFi tries, failed attempts; nothing given up, opened once
    assert int(m.group(1)) >= 1 and int(m.group(2)) >= 1
