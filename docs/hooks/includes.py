"""MkDocs hook: pages made of a file from outside `docs/`, so each text lives in one place.

A page holding the line `<!-- include: PATH -->` (PATH relative to the project root) gets that
file in its place. Relative links in the file are rewritten for the page: to a file under
`docs/`, to README.md, CONTRIBUTING.md or bench/README.md (which are pages of the site). Any
other relative link is left as it is, so the strict build reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->$", re.MULTILINE)
LINK = re.compile(r"(?P<head>!?\[[^\]]*\]\()(?P<target>[^)\s#]*)(?P<anchor>#[^)\s]*)?(?P<tail>[)\s])")
# Files outside docs/ that are pages of the site, by their path in the project.
PAGES = {"README.md": "index.md", "CONTRIBUTING.md": "development.md", "bench/README.md": "benchmarks.md"}


def rewrite(text: str, source: str, page: str) -> str:
    """Relative links of `source` (a project path) as seen from `page` (a path under docs/)."""

    def fix(match: re.Match[str]) -> str:
        target = match["target"]
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match[0]
        project_path = posixpath.normpath(posixpath.join(posixpath.dirname(source), target))
        if project_path in PAGES:
            docs_path = PAGES[project_path]
        elif project_path.startswith("docs/"):
            docs_path = project_path.removeprefix("docs/")
        else:
            return match[0]
        relative = posixpath.relpath(docs_path, posixpath.dirname(page) or ".")
        return f"{match['head']}{relative}{match['anchor'] or ''}{match['tail']}"

    return LINK.sub(fix, text)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    def include(match: re.Match[str]) -> str:
        source = match["path"]
        path = ROOT / source
        if not path.is_file():
            raise PluginError(f"{page.file.src_uri}: cannot include {source}: no such file")
        return rewrite(path.read_text(encoding="utf-8"), source, page.file.src_uri)

    return INCLUDE.sub(include, markdown)
