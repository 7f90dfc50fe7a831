"""The docs' pytest-plugin example, copied verbatim into a fresh directory and run by pytest
there, so the documentation cannot rot; and the plugin's skip where the unix port is missing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kit import DOCS

PAGE = DOCS / "testing.md"


def readme_example() -> str:
    """The first python block of the docs' "Testing with the pytest plugin" section."""
    section = PAGE.read_text().split("\n## ", 1)[0]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "no python example in README's plugin section"
    return m.group(1)


def _pytest(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(where)],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_readme_example_passes(tmp_path: Path) -> None:
    (tmp_path / "test_greenhouse.py").write_text(readme_example())
    r = _pytest(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"\b2 passed\b", r.stdout), r.stdout


def test_board_fixture_skips_without_the_unix_port(tmp_path: Path) -> None:
    (tmp_path / "test_no_port.py").write_text(
        "import precast.boards.virtual\n"
        "from precast.errors import PrecastError\n\n\n"
        "def _missing():\n"
        "    raise PrecastError('no micropython (unix port) next to python or on PATH')\n\n\n"
        "precast.boards.virtual.find_micropython = _missing\n\n\n"
        "def test_needs_a_board(micropython_board):\n"
        "    raise AssertionError('ran without a board')\n"
    )
    r = _pytest(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout
    assert "no virtual board: no micropython (unix port)" in r.stdout
