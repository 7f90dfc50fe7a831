"""The docs site builds with mkdocs in strict mode: every link and anchor resolves, every page
is in the navigation; and the judge is shown to watch (a broken anchor fails the build)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from kit import BIN, ROOT


def _build(root: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [str(BIN / "mkdocs"), "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_site_builds_strictly_and_readme_is_its_front_page(tmp_path: Path) -> None:
    run = _build(ROOT, tmp_path / "site")
    assert run.returncode == 0, run.stderr[-2000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "Documentation" in index and 'href="collector/' in index


def test_readme_fits_on_a_few_screens() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_a_broken_anchor_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "tree"
    copy.mkdir()
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copytree(ROOT / "tools" / "docs", copy / "tools" / "docs")
    page = copy / "docs" / "views.md"
    page.write_text(page.read_text() + "\nSee [nowhere](collector.md#no-such-heading).\n")
    run = _build(copy, tmp_path / "site")
    assert run.returncode != 0 and "no-such-heading" in run.stderr
