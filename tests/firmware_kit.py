"""Helpers for the firmware tests: build a bundle, run it on the MicroPython unix port, sink it.

Every firmware test runs the real unix port (`.venv/bin/micropython`) on a
bundle written by `precast build`'s own code (build_bundle), with options
parsed by the same argparse set the CLI uses.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from kit import VethPair
from precast.boards.build import FIRMWARE_DIR, add_build_arguments, build_bundle

COUNTS = re.compile(r"precast: readings (\d+) sent (\d+) failed (\d+) dropped (\d+) reopened (\d+)")


def build(out: Path, template: Path | str, *args: str, mem: bool = True) -> list[Path]:
    """`precast build TEMPLATE --out OUT ARGS...` through build_bundle; the files written.

    With `mem` the in-memory transport (for tests, never in a board's bundle) is added.
    """
    p = argparse.ArgumentParser()
    add_build_arguments(p)
    if "--collector" not in args:  # the tests' collector: the far end of conftest's veth pair
        args = (*args, "--collector", "192.0.2.1")
    opts = p.parse_args([str(template), "--out", str(out), *args])
    files = build_bundle(opts)
    if mem and "--mpy" not in args:
        shutil.copy(FIRMWARE_DIR / "transport_mem.py", out / "precast_fw")
    return files


def no_viper(bundle: Path) -> None:
    """Make the bundle's viper module fail to import, as on a port without a native emitter.

    checks.py then picks plain.py: the fallback runs through the same choice a board makes.
    """
    (bundle / "precast_fw" / "viper.py").write_text('raise ImportError("no viper (test)")\n')


def counts(stdout: str) -> dict[str, int]:
    """The counts line main.py prints at the end."""
    m = COUNTS.search(stdout)
    assert m, f"no counts line in {stdout!r}"
    keys = ("readings", "sent", "failed", "dropped", "reopened")
    return dict(zip(keys, map(int, m.groups()), strict=True))


class UdpSink:
    """A UDP socket on loopback with a receive buffer big enough for a burst (root forces it)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    @property
    def collector(self) -> str:
        return f"127.0.0.1:{self.port}"

    def drain(self, quiet: float = 0.3) -> list[bytes]:
        """Every datagram waiting, until none comes for `quiet` seconds."""
        out = []
        self.sock.settimeout(quiet)
        try:
            while True:
                out.append(self.sock.recv(2048))
        except TimeoutError:
            pass
        return out

    def close(self) -> None:
        self.sock.close()


RECEIVER = r"""
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
got = []
expect = int(sys.argv[3])
s.settimeout(float(sys.argv[2]))  # the longest wait for any one datagram
try:
    while len(got) < max(expect, 1):
        got.append(s.recv(2048).hex())
    # then whatever else is in flight (with `expect`: extras a sender should not have sent)
    s.settimeout(0.3 if expect else 0.5)
    while True:
        got.append(s.recv(2048).hex())
except socket.timeout:
    pass
print(json.dumps(got), flush=True)
"""


class NsReceiver:
    """A UDP socket in a namespace: the kernel there checks every frame's IPv4/UDP checksums.

    It reads until `expect` datagrams arrived (and a short quiet time after), or until none
    came for `first_timeout` seconds: senders may start late on a loaded machine. Without
    `expect`, until 0.5 s of quiet after the first datagram (one sender, running unpaused)."""

    def __init__(
        self, veth: VethPair, port: int, first_timeout: float = 30, *, expect: int | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            veth.exec(
                sys.executable, "-c", RECEIVER, str(port), str(first_timeout), str(expect or 0)
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", line

    def result(self, timeout: float = 120) -> list[bytes]:
        out, _ = self.proc.communicate(timeout=timeout)
        return [bytes.fromhex(h) for h in json.loads(out)]


def template_for(veth: VethPair, source: Path, out: Path) -> Path:
    """A copy of a template addressed to the namespace's end of the veth pair."""
    text = source.read_text()
    net = f'dst_mac = "{veth.inner_mac}"\ndst_ip = "{veth.inner_ip}"\n'
    if "[network]" in text:
        text = re.sub(r"(?m)^(dst_mac|dst_ip)\s*=.*\n", "", text)
        text = text.replace("[network]\n", "[network]\n" + net, 1)
    else:
        text = text.replace("[[field]]", "[network]\n" + net + "\n[[field]]", 1)
    out.write_text(text)
    return out
