"""pytest fixtures for testing precast templates, firmware and collectors (a pytest11 plugin).

Installed with precast (entry point `precast`), so a test only names a fixture:

- `precast_templates`: the template files or directories the other fixtures use,
  `templates/` under pytest's rootdir by default. Override the fixture in a conftest.py or a
  test module to use your own.
- `precast_key`: the AES-128 key (bytes) of cmac templates, None by default; override it.
- `precast_collector`: a running `precast collect` on 127.0.0.1 and an ephemeral port with a
  temporary SQLite database. `.address` ("127.0.0.1:PORT") is what a sender or
  `deploy(collector=...)` takes; `.wait_for_readings(n, device=None)` waits until n readings
  are stored; `.readings(device=None)` returns them; `.stats()` is `precast stats --json`
  and `.device(n)` one device's counters from it.
- `sensor_fleet`: a function running `precast simulate` (K devices, with loss, dup, reorder
  and corrupt probabilities, and an outage=(START, SECONDS) whose readings each device keeps,
  up to backlog=N, and sends late as delayed frames) at the test's collector, or at
  `to="HOST:PORT"`; it returns a FleetRun with what was sent, which faults were injected and
  what the backlogs kept, sent late and dropped.
- `micropython_board`: a virtual board (`precast board`: the MicroPython unix port behind a
  TCP port) with a temporary filesystem. `.port` is the socket:// URL mpremote and
  `precast deploy` take, `.root` its files; `.deploy(template, device=N, **options)` runs
  `precast deploy` (options as build's flags: count=5 is --count 5), `.mpremote(*args)`
  the mpremote CLI. Skipped, with the reason, where the unix port is missing.

Fixtures only, no hooks: each starts real processes and stops them when the test ends.
The harnesses they hand out live in precast.harness (importable from here too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from precast.harness import FleetRun, MicropythonBoard, PrecastCollector, run_fleet

__all__ = ["FleetRun", "MicropythonBoard", "PrecastCollector", "run_fleet"]

# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture
def precast_templates(request: pytest.FixtureRequest) -> list[str]:
    """Template files or directories: rootdir/templates; override to use your own."""
    return [str(request.config.rootpath / "templates")]


@pytest.fixture
def precast_key() -> bytes | None:
    """The AES-128 key of cmac templates (None: no cmac templates)."""
    return None


@pytest.fixture
def precast_collector(
    precast_templates: list[str],
    precast_key: bytes | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PrecastCollector]:
    """A running collector on 127.0.0.1 and a free port, with a temporary database."""
    col = PrecastCollector(precast_templates, tmp_path_factory.mktemp("collector"), precast_key)
    try:
        yield col
    finally:
        col.stop()


@pytest.fixture
def sensor_fleet(
    request: pytest.FixtureRequest, precast_templates: list[str], precast_key: bytes | None
) -> Callable[..., FleetRun]:
    """A function running a simulated fleet (`precast simulate`), by default at the test's
    collector: sensor_fleet(devices=3, rate=1000, duration=1, loss=0.1, ...) -> FleetRun."""

    def run(
        to: str | None = None, templates: Sequence[str] | None = None, **knobs: Any
    ) -> FleetRun:
        if to is None:
            to = request.getfixturevalue("precast_collector").address
        knobs.setdefault("key", precast_key)
        return run_fleet(to, templates or precast_templates, **knobs)

    return run


@pytest.fixture
def micropython_board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MicropythonBoard]:
    """A virtual MicroPython board with a temporary filesystem (skipped without the port)."""
    from precast.boards.virtual import find_micropython
    from precast.errors import PrecastError

    try:
        find_micropython()
    except PrecastError as e:
        pytest.skip(f"no virtual board: {e}")
    work = tmp_path_factory.mktemp("board")
    board = MicropythonBoard(work / "root", work)
    try:
        yield board
    finally:
        board.stop()
