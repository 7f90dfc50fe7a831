"""mkdocs hooks: README.md is the site's front page.

README lives at the top of the checkout (GitHub shows it there) and links into docs/ as
`docs/PAGE.md`; on the site it is `index.md`, beside those pages, so its links lose the
`docs/` prefix. Nothing is copied into docs/: the page is made from README at each build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parents[2] / "README.md"


def on_files(files: Files, config: Any, **_: Any) -> Files:
    files.append(File.generated(config, "index.md", content=README.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    # docs/x.md -> x.md; the docs/ folder itself -> the site's index.
    markdown = re.sub(r"\]\(docs/\)", "](index.md)", markdown)
    return re.sub(r"\]\(docs/", "](", markdown)
