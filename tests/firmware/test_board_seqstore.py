"""The seq store on the MicroPython unix port: killed mid-run, a device never repeats a seq.

A real file on the real VM: runs are killed with SIGKILL at random moments
and started again; every seq any run printed (the stand-in for sending it)
must be new and larger than all before it. RTC memory, which this machine
does not have, is a fake that lives across the "reboots" of one process.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
from kit import FIRMWARE, TESTS, micropython, run_script

# Every test here runs MicroPython: on each unix port (conftest.py's mp_port).
pytestmark = pytest.mark.usefixtures("mp_port")

SENDER = """
import sys
from precast_fw.seqstore import SeqStore
s = SeqStore(sys.argv[1], reserve=int(sys.argv[2]))
seq = s.start()
print("start", seq)
while True:
    s.claim(1)
    if s.next_seq != seq + 1:
        print("mismatch", s.next_seq, seq)
        sys.exit(3)
    print(seq)  # sent
    seq += 1
"""


def run_and_kill(script: Path, path: Path, reserve: int, after: int) -> list[str]:
    """One run, SIGKILLed once it has printed `after` seqs (the kill lands wherever the loop is:
    it goes on printing while this reads)."""
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:{TESTS}:.frozen")
    p = subprocess.Popen(
        [micropython(), str(script), str(path), str(reserve)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout is not None
    head = []
    try:
        for _ in range(after + 1):  # "start N", then `after` seqs
            line = p.stdout.readline()
            if not line:
                break
            head.append(line)
    finally:
        p.send_signal(signal.SIGKILL)
    # The rest from the same buffered reader (communicate() would skip what it holds).
    out = "".join(head) + p.stdout.read()
    assert p.stderr is not None
    err = p.stderr.read()
    p.wait(timeout=30)
    p.stdout.close()
    p.stderr.close()
    assert "mismatch" not in out and not err, (out[-500:], err)
    return out.splitlines()


@pytest.mark.parametrize("reserve", [1, 7, 1000])
def test_killed_runs_never_repeat_a_seq(tmp_path: Path, reserve: int) -> None:
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    store = tmp_path / "precast_seq"
    rnd = random.Random(reserve)
    sent: list[int] = []
    starts = []
    lasts = []
    for _ in range(8):
        lines = run_and_kill(script, store, reserve, rnd.randint(15, 60))
        assert lines and lines[0].startswith("start "), lines[:3]
        starts.append(int(lines[0].split()[1]))
        # the last line may be cut by the kill: keep whole numbers only
        run = [int(x) for x in lines[1:] if x.isdigit()]
        if lines[-1].isdigit() and len(lines) > 1:
            run = run[:-1]
        sent += run
        lasts.append(run[-1] if run else starts[-1] - 1)
    assert len(starts) == 8 and len(sent) > 100
    assert all(b > a for a, b in itertools.pairwise(sent)), "a seq repeated or went back"
    assert starts[0] == 0
    # A restart skips at most one reservation (plus the seq being sent, and a line the kill cut).
    for last, start in zip(lasts, starts[1:], strict=False):
        assert last < start <= last + 1 + reserve + 2


SCRIPT = """
import json, micropython
from drivers_fakes import FakeRTC
from precast_fw.deepsleep import SeqStore
P = %r
out = {}
rtc = FakeRTC()
s = SeqStore(P, reserve=10, rtc=rtc)
out["first"] = s.start()
for i in range(13):
    s.claim(1)
out["next"] = s.next_seq
s.save_rtc()
flash = open(P, "rb").read()
s.close()
# deep-sleep wake: the seq comes from RTC memory, the flash is not touched
s = SeqStore(P, reserve=10, rtc=rtc)
out["woke"] = s.start()
out["resumed"] = s.resumed
out["rtc_after_read"] = len(rtc.memory())
s.claim(1)
out["flash_same"] = open(P, "rb").read() == flash
s.close()
# a reset without a deep sleep: no record, so the flash's reservation decides
s = SeqStore(P, reserve=10, rtc=rtc)
out["reset"] = s.start()
out["reset_resumed"] = s.resumed
# steady state, under heap_lock: 2000 takes write 200 reservations without allocating
micropython.heap_lock()
for i in range(2000):
    s.claim(1)
s.save_rtc()
micropython.heap_unlock()
out["after_lock"] = s.next_seq
s.close()
# a stale record (well formed, but its limit is no longer the flash's) is not trusted
import struct
from precast_fw.deepsleep import _check
rtc.memory(struct.pack(">4sIII", b"PCSQ", 5, 10, _check(5, 10)))
s = SeqStore(P, reserve=10, rtc=rtc)
out["stale"] = s.start()
s.close()
print(json.dumps(out))
"""


def test_deep_sleep_resume_and_reset(tmp_path: Path) -> None:
    out = json.loads(run_script(SCRIPT % str(tmp_path / "seq")).stdout)
    assert out["first"] == 0
    assert out["next"] == 13  # reservations [0, 10) then [10, 20)
    assert out["woke"] == 13 and out["resumed"] is True
    assert out["rtc_after_read"] == 0  # cleared as soon as read
    assert out["flash_same"] is True  # 13 < 20: no new reservation needed
    assert out["reset"] == 20 and out["reset_resumed"] is False  # skips 14..19
    assert out["after_lock"] == 2020
    assert out["stale"] == 2020


def test_torn_slots(tmp_path: Path) -> None:
    seq = tmp_path / "seq"
    script = f"""
from precast_fw.seqstore import SeqStore
s = SeqStore({str(seq)!r}, reserve=100)
print(s.start())
s.claim(1)
s.close()
"""
    assert run_script(script).stdout.split() == ["0"]
    data = seq.read_bytes()
    assert data[:22] == b"0000000100/0000000100\n"  # the first reservation, slot 0
    assert run_script(script).stdout.split() == ["100"]
    assert seq.read_bytes()[22:] == b"0000000200/0000000200\n"  # slot 1 next
    # a power loss tore slot 1's write: the older slot still bounds every sent seq
    seq.write_bytes(seq.read_bytes()[:22] + b"0000000200/00000\n\n\n\n\n\n")
    assert run_script(script).stdout.split() == ["100"]
    # both slots lost: start again at 0, and say so
    seq.write_bytes(b"x" * 44)
    r = run_script(script)
    assert r.stdout.split()[-1] == "0" and "unreadable" in r.stdout


def test_deep_sleep_without_rtc_memory_cuts_the_reservation(tmp_path: Path) -> None:
    """The unix port (like rp2) has no RTC memory: next_seq itself goes to the flash."""
    script = f"""
import micropython
from precast_fw.deepsleep import SeqStore
s = SeqStore({str(tmp_path / "seq")!r}, reserve=10)
print(s.rtc, s.start())
for i in range(3):
    s.claim(1)
micropython.heap_lock()
s.save_for_sleep()  # allocation-free: the loop may run under heap_lock
micropython.heap_unlock()
s.close()
s = SeqStore({str(tmp_path / "seq")!r}, reserve=10)
print(s.start())
"""
    assert run_script(script).stdout.split() == ["None", "0", "3"]


WRAP = """
import micropython
from precast_fw.deepsleep import SeqStore

class Rtc:  # an ESP32's RTC memory: written in place, as the real one copies
    def __init__(self):
        self.buf = bytearray(16)
        self.n = 0
    def memory(self, b=None):
        if b is None:
            return bytes(self.buf[:self.n])
        for i in range(len(b)):
            self.buf[i] = b[i]
        self.n = len(b)

rtc = Rtc()
s = SeqStore(%r, reserve=1000, rtc=rtc)
print(s.start())
micropython.heap_lock()
for i in range(2500):  # three reservations, across the 2**32 wrap
    s.claim(1)
s.save_rtc()
micropython.heap_unlock()
print(s.next_seq, s.limit)
s.close()
s = SeqStore(%r, reserve=1000, rtc=rtc)
print(s.start(), s.resumed)
s.close()
"""


@pytest.mark.parametrize("start", [2**30 - 700, 2**31 - 700, 2**32 - 1700, 10**10 + 5])
def test_limit_past_2_30_2_32_and_10_10_under_heap_lock(  # a limit is a point mod 2**32
    tmp_path: Path, start: int
) -> None:
    seq = tmp_path / "seq"
    seq.write_bytes(b"%010d/%010d\n" % (start % 2**32, start % 2**32) * 2)
    first = start % 2**32
    out = run_script(WRAP % (str(seq), str(seq))).stdout.split()
    nxt, limit = (first + 2500) % 2**32, (first + 3000) % 2**32
    assert out == [str(first), str(nxt), str(limit), str(nxt), "True"]
    # the file: ten digits a slot, the newer slot the one ahead on the circle
    data = seq.read_bytes()
    assert len(data) == 44 and b"%010d/%010d\n" % (limit, limit) in data
    # a boot without the RTC record takes the slot ahead, across the wrap
    r = run_script(
        f"from precast_fw.seqstore import SeqStore\nprint(SeqStore({str(seq)!r}).start())"
    )
    assert r.stdout.split() == [str(limit)]
