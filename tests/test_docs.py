"""The documentation stays true: the settings page is ``Settings``, the README a front door,
every relative link of the README and ``docs/`` reaches a file and a heading, and every
repository file they name in code exists."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: A markdown link's target: ``[text](target)``, not an image's alt text or inline code.
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_configuration_page_matches_settings() -> None:
    page = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "settings_table.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    assert (REPO / "docs" / "configuration.md").read_text() == page, (
        "docs/configuration.md is out of date: run scripts/settings_table.py --write"
    )


def test_readme_is_a_front_door() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def _anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", line.lstrip("#").strip())
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_relative_links_reach_a_file_and_a_heading() -> None:
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            if not path.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


#: A file of this repository named in inline code: ``app/core/pipeline.py``.
CODE_PATH = re.compile(
    r"`((?:app|retrieval|critic|llm|workers|evaluation|bench|scripts|tests|data|docker|helm)"
    r"/[\w./-]+\.(?:py|json|jsonl|md|yaml|sh))`"
)


def test_the_files_the_docs_name_exist() -> None:
    """Modules move; a page that names one by path must follow."""
    missing = [
        f"{page.name}: {path}"
        for page in PAGES
        for path in CODE_PATH.findall(page.read_text())
        if not (REPO / path).exists()
    ]
    assert missing == []
