"""Shared test helpers: paths, the CLI as a subprocess, and network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis profiles. In CI (CI=true) a fixed seed and no example database: a green
# gate stays green on the same code. `make fuzz` (HYPOTHESIS_PROFILE=fuzz): ten times
# the examples (strategies.examples scales explicit counts) and fresh random seeds; a
# failure it finds becomes an explicit example in the test.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile(
    "fuzz", max_examples=10 * settings.default.max_examples, derandomize=False, print_blob=True
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or ("ci" if os.environ.get("CI", "").lower() in ("true", "1") else "default")
)

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
BIN = Path(sys.executable).parent
KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"  # RFC 4493's example key


def precast(
    *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed `precast` console script, as a user would."""
    exe = BIN / "precast"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "precast.cli"]
    return subprocess.run(
        [*cmd, *args], input=input, capture_output=True, text=True, timeout=timeout, check=False
    )


def netns_available() -> str | None:
    """None when the tests may make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs `ip` (iproute2) to create network namespaces"
    return None


class VethPair:
    """A veth pair: `outer` in this namespace (no address), `inner` in namespace `ns`."""

    def __init__(self, prefix: str, inner_ip: str = "192.0.2.1/24") -> None:
        tag = f"{prefix}{os.getpid() % 100000}"
        self.ns = tag
        self.outer = f"{tag}o"
        self.inner = f"{tag}i"
        self.inner_ip = inner_ip.split("/")[0]
        ip = ["ip"]
        subprocess.run([*ip, "netns", "del", self.ns], capture_output=True, check=False)
        subprocess.run([*ip, "link", "del", self.outer], capture_output=True, check=False)
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.ns)
        run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner)
        run("ip", "link", "set", self.inner, "netns", self.ns)
        run("ip", "-n", self.ns, "addr", "add", inner_ip, "dev", self.inner)
        run("ip", "-n", self.ns, "link", "set", self.inner, "up")
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        run("ip", "link", "set", self.outer, "up")
        # IPv6 autoconf would put router solicitations on the wire: keep the link quiet.
        subprocess.run(
            ["sysctl", "-q", "-w", f"net.ipv6.conf.{self.outer}.disable_ipv6=1"],
            capture_output=True,
            check=False,
        )
        out = subprocess.run(
            ["ip", "-n", self.ns, "-br", "link", "show", self.inner],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        self.inner_mac = out[2]

    def exec(self, *cmd: str) -> list[str]:
        """A command line that runs `cmd` inside the namespace."""
        return ["ip", "netns", "exec", self.ns, *cmd]

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.outer], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, check=False)


@pytest.fixture
def veth() -> Iterator[VethPair]:
    """A fresh veth pair into a new network namespace, removed afterwards."""
    why = netns_available()
    if why:
        pytest.skip(why)
    pair = VethPair("pct")
    try:
        yield pair
    finally:
        pair.close()
