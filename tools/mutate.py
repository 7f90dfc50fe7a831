"""`make mutate`: break the code on purpose, one named way at a time, and see the tests notice.

Each mutant is a pattern in one source file (firmware or host) and what replaces it; the
script applies it to the working tree, runs the tests that should catch it, and puts the file
back (also on Ctrl-C or a crash). A mutant is *killed* when those tests fail; every mutant must
be killed. A pattern that no longer matches (the code moved on) is an error that names the
mutant and the file, not a silent pass.

    .venv/bin/python tools/mutate.py                 # every mutant; a Markdown table at the end
    .venv/bin/python tools/mutate.py --list          # names, files and tests
    .venv/bin/python tools/mutate.py --only fw-backoff-constant host-tracker-loss

Exit status 0 when every mutant run was killed, 1 when one survived, 2 on an error.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository
    pattern: str  # a regular expression (re.M)
    replacement: str | Callable[[re.Match[str]], str]
    tests: tuple[str, ...]  # pytest arguments
    what: str

    def apply(self, text: str) -> str:
        new, n = re.subn(self.pattern, self.replacement, text, flags=re.M)
        if n == 0:
            raise LookupError(
                f"mutant {self.name}: pattern {self.pattern!r} not found in {self.path} "
                "(the code changed: update the mutant in tools/mutate.py)"
            )
        return new


MUTANTS = [
    Mutant(
        "fw-viper-zero-csum",
        "firmware/precast_fw/viper.py",
        r"^(\s+)if c == 0:\n\s+c = 0xFFFF.*$",
        r"\1if c == 0:\n\1    pass",
        ("tests/firmware/test_firmware_frames.py",),
        "viper path: a computed UDP checksum of 0 goes out as 0, not 0xFFFF",
    ),
    Mutant(
        "fw-plain-zero-csum",
        "firmware/precast_fw/plain.py",
        r"^(\s+)if c == 0:\n\s+c = 0xFFFF.*$",
        r"\1if c == 0:\n\1    pass",
        ("tests/firmware/test_firmware_frames.py",),
        "plain path: a computed UDP checksum of 0 goes out as 0, not 0xFFFF",
    ),
    Mutant(
        "fw-backoff-constant",
        "firmware/precast_fw/robust.py",
        r"wait = min\(wait \* 2, self\.max_backoff_ms\)",
        "wait = min(wait, self.max_backoff_ms)",
        (
            "tests/firmware/test_firmware_robust.py",
            "tests/docs/test_readme_cli.py::test_firmware_backoff_doubles_up_to_its_cap",
        ),
        "robust.py waits the same after every failure instead of doubling",
    ),
    Mutant(
        "fw-w5500-no-command-wait",
        "firmware/precast_fw/transport_w5500.py",
        r"^(\s+)bound = self\._bound\n\s+bound\.start\(_CMD_US\)",
        r"\1return True",
        ("tests/firmware/test_firmware_eth.py::test_eth_10000_readings_heap_locked",),
        "W5500: a command is written without waiting for Sn_CR to read 0 (the ioLibrary wait)",
    ),
    Mutant(
        "fw-w5500-close-mid-send",
        "firmware/precast_fw/transport_w5500.py",
        r"if self\._pending and self\._finish\(\):",
        "if False:",
        ("tests/firmware/test_firmware_eth.py::test_eth_10000_readings_heap_locked",),
        "W5500: close() writes CLOSE without letting the pending SEND finish",
    ),
    Mutant(
        "fw-udp-send-nothing",
        "firmware/precast_fw/transport_udp.py",
        # the socket's send is bound once (self.send = s.send); the method is the fallback
        r"^(\s+)self\.send = s\.send\b(.*)$|^(\s+)self\.sock\.send\(mv\)$",
        lambda m: (
            (m.group(1) or m.group(3)) + ("self.send = lambda mv: None" if m.group(1) else "pass")
        ),
        ("tests/firmware/test_firmware_e2e.py", "tests/firmware/test_firmware_build.py"),
        "the UDP transport's send (the socket's, bound at open) does nothing",
    ),
    Mutant(
        "fw-packet-send-nothing",
        "firmware/precast_fw/transport_packet.py",
        # the socket's send is bound once (self.send = s.send); the method is the fallback
        r"^(\s+)self\.send = s\.send\b(.*)$|^(\s+)self\.sock\.send\(mv\)$",
        lambda m: (
            (m.group(1) or m.group(3)) + ("self.send = lambda mv: None" if m.group(1) else "pass")
        ),
        ("tests/firmware/test_firmware_alloc.py", "tests/firmware/test_firmware_e2e.py"),
        "the raw packet transport's send (the socket's, bound at open) does nothing",
    ),
    Mutant(
        "host-codec-crc-passes",
        "host/precast/wire/codec.py",
        r"elif crc16\(m\[:c\]\) != _U16\.unpack_from\(m, c\)\[0\]:",
        "elif False:",
        ("tests/wire/test_decode_bad.py", "tests/wire/test_codec.py"),
        "the codec accepts any CRC",
    ),
    Mutant(
        "host-validator-crc-passes",
        "host/precast/wire/validator.py",
        r"return \(CRC if crc16\(data\) else \"\"\), sp, v",
        'return "", sp, v',
        ("tests/wire/test_validator.py",),
        "the collector's fast path accepts any CRC",
    ),
    Mutant(
        "host-tracker-replay-accepted",
        "host/precast/collect/tracker.py",
        r"^(\s+)if d\.auth == AUTH_MIC:\n(\s+)d\.replays \+= 1",
        r"\1if False:\n\2d.replays += 1",
        ("tests/collect/test_collector_tracker.py", "tests/collect/test_collector_e2e.py"),
        "the tracker takes a MIC device's old seq as a reboot, not a replay",
    ),
    Mutant(
        "host-tracker-loss",
        "host/precast/collect/tracker.py",
        r"d\.lost \+= step - 1",
        "d.lost += 0",
        ("tests/collect/test_collector_tracker.py",),
        "the tracker counts no loss for skipped seqs",
    ),
    Mutant(
        "host-pacing-removed",
        "host/precast/send/engine.py",
        r"^(\s+)least = min\(want, self\.quantum\)$",
        r"\1return want\n\1least = min(want, self.quantum)",
        (
            "tests/send/test_sender_raw.py::test_rate_holds_over_a_whole_run",
            "tests/send/test_sender_units.py::test_progress_bar_on_a_terminal_for_runs_over_a_second",
        ),
        "the token bucket hands out every token at once: no pacing",
    ),
]


def run(m: Mutant, python: str) -> tuple[str, float, str]:
    """Apply m, run its tests, restore; (verdict, seconds, the tests' last line)."""
    path = ROOT / m.path
    original = path.read_text()
    mutated = m.apply(original)
    old = signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.monotonic()
    try:
        path.write_text(mutated)
        r = subprocess.run(
            [python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        path.write_text(original)
        signal.signal(signal.SIGTERM, old)
    took = time.monotonic() - t0
    lines = [x for x in r.stdout.strip().splitlines() if x.strip()]
    last = lines[-1] if lines else r.stderr.strip()[-200:]
    verdict = {0: "SURVIVED", 1: "killed"}.get(r.returncode, f"error ({r.returncode})")
    return verdict, took, last


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Apply named mutations to the firmware and the host code, one at a time, "
        "and run the tests that should catch each; every mutant must be killed.",
        epilog="example: python tools/mutate.py --only host-tracker-loss",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    p.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = p.parse_args(argv)
    chosen = MUTANTS
    if args.only:
        names = {m.name for m in MUTANTS}
        unknown = sorted(set(args.only) - names)
        if unknown:
            print(f"mutate: error: no mutant {', '.join(unknown)}", file=sys.stderr)
            return 2
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.path}: {m.what}\n    tests: {' '.join(m.tests)}")
        return 0
    # Every pattern first: a stale one is an error before anything runs.
    try:
        for m in chosen:
            m.apply((ROOT / m.path).read_text())
    except LookupError as e:
        print(f"mutate: error: {e}", file=sys.stderr)
        return 2
    rows = []
    for m in chosen:
        print(f"mutate: {m.name} ({m.what}) ...", file=sys.stderr, flush=True)
        verdict, took, last = run(m, sys.executable)
        print(f"mutate: {m.name}: {verdict} in {took:.0f} s: {last}", file=sys.stderr, flush=True)
        rows.append((m, verdict, took))
    print("| mutant | file | what it breaks | tests run | verdict | s |")
    print("|---|---|---|---|---|---|")
    for m, verdict, took in rows:
        tests = " ".join(t.removeprefix("tests/") for t in m.tests)
        print(f"| {m.name} | `{m.path}` | {m.what} | {tests} | {verdict} | {took:.0f} |")
    if any(v.startswith("error") for _, v, _ in rows):
        return 2
    return 1 if any(v == "SURVIVED" for _, v, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
