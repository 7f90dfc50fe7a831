"""Fixtures and hooks only; the constants and runners are in kit.py.

The skip policy (issue 16): a test skips only for what `make test` cannot fix, and pytest's
-ra summary lists every skip with its reason. With CI=true a skip whose reason is not on
kit.SKIP_ALLOWED is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kit
import pytest
from hypothesis import settings
from kit import SKIP_ALLOWED, VethPair, netns_available, skip_allowed

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


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process below root, from /proc (zombies left out)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        out.append((pid, cmd.strip()))
        todo += children.get(pid, [])
    return out


@pytest.fixture(scope="session", autouse=True)
def no_process_left() -> Iterator[None]:
    """Fails the run (as an error of its last test) when a process a test started outlives
    every test's teardown. This process is made a subreaper first, so a daemon that
    detaches (a double fork) stays below it and is found too. Each xdist worker checks its
    own."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)
    yield
    deadline = time.monotonic() + 5  # a process told to stop may take a moment
    while (left := _descendants(os.getpid())) and time.monotonic() < deadline:
        time.sleep(0.1)
    if left:
        for pid, _ in left:  # reported, then ended: never running an hour later
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(
            "processes the tests started are still running after every teardown:\n"
            + "\n".join(f"  pid {pid}: {cmd}" for pid, cmd in left),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL cluster of the session's own (tests/pg_server.py), removed afterwards."""
    from pg_server import PgServer, pg_bin

    if pg_bin() is None:
        if os.geteuid() == 0:
            pytest.fail("PostgreSQL is missing: run `sh tools/sysdeps.sh` (make test does)")
        pytest.skip("needs PostgreSQL (Debian package postgresql); make test installs it as root")
    server = PgServer()
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: Any, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the session's server; its URL (with the password)."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[:55].lower()
    url: str = pg_server.create_db(name)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The collector's --db for each backend: an SQLite path, then a PostgreSQL URL."""
    if request.param == "sqlite":
        return tmp_path / "precast.db"
    url: str = request.getfixturevalue("pg_url")
    return url


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


@pytest.fixture(params=kit.PORTS)
def mp_port(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test's MicroPython on each unix port in turn: mp64, then mp32 (kit.PORTS).

    Every test that runs MicroPython takes it (kit.micropython() fails without it); the
    summary counts the firmware tests run on each port (pytest_terminal_summary)."""
    request.node.user_properties.append(("mp_port", request.param))
    kit.use_port(request.param)
    try:
        yield request.param
    finally:
        kit.use_port(None)


@pytest.fixture
def micropython_board(mp_port: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The plugin's virtual board, on this test's port (mp_port)."""
    from precast.pytest_plugin import MicropythonBoard

    work = tmp_path_factory.mktemp("board")
    board = MicropythonBoard(work / "root", work, micropython=kit.micropython())
    try:
        yield board
    finally:
        board.stop()


def _skip_reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        return str(lr[2])
    return str(lr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or not _in_ci() or hasattr(report, "wasxfail"):
        return
    reason = _skip_reason(report)
    if skip_allowed(reason) is None:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI (CI=true) for a reason not on kit.SKIP_ALLOWED: {reason}\n"
            f"allowed: {sorted(SKIP_ALLOWED)}"
        )


def _port_counts(stats: dict[str, list[Any]]) -> dict[str, dict[str, int]]:
    """Per port (mp_port), how many firmware tests ended in each outcome."""
    outcome: dict[str, tuple[str, str]] = {}  # nodeid -> (port, the test's outcome)
    for key in ("passed", "failed", "skipped", "error", "xfailed", "xpassed"):
        for rep in stats.get(key, []):
            port = dict(getattr(rep, "user_properties", ())).get("mp_port")
            if port is None or (key == "passed" and rep.when != "call"):
                continue
            if rep.nodeid not in outcome or key in ("failed", "error"):
                outcome[rep.nodeid] = (port, key)
    counts: dict[str, dict[str, int]] = {p: {} for p in kit.PORTS}
    for port, key in outcome.values():
        counts[port][key] = counts[port].get(key, 0) + 1
    return counts


def pytest_terminal_summary(terminalreporter: Any) -> None:
    counts = _port_counts(terminalreporter.stats)
    if any(counts.values()):
        terminalreporter.section("firmware tests on each MicroPython unix port")
        for port, by in counts.items():
            what = ", ".join(f"{n} {k}" for k, n in sorted(by.items())) or "none"
            terminalreporter.line(f"{port}: {sum(by.values())} run: {what}")
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    tr = terminalreporter
    tr.section("skips and why make test cannot fix them")
    for rep in skipped:
        reason = _skip_reason(rep)
        why = skip_allowed(reason) or "NOT on kit.SKIP_ALLOWED: a failure with CI=true"
        tr.line(f"{rep.nodeid}: {reason} ({why})")
