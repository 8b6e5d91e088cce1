"""Split documents into overlapping word windows with deterministic ids.

Ids are uuid5(doc id, chunk index): re-ingesting a document writes the same ids, so an unchanged
document changes nothing and a changed one overwrites its chunks in place.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import uuid
from collections.abc import Iterator
from itertools import pairwise

from retrieval.errors import InvalidDocument
from retrieval.types import Chunk, Document

_CHUNK_NAMESPACE = uuid.UUID("5b1d3c62-6f0e-4d8a-9a57-c0e7a3f0b2d1")
_WORD = re.compile(r"\S+")


def chunk_id(doc_id: str, chunk_index: int) -> str:
    """The stable point id of chunk ``chunk_index`` of ``doc_id``."""
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{doc_id}\x00{chunk_index}"))


def document_hash(doc: Document) -> str:
    """Content hash over everything that ends up in a chunk's payload (page starts only when
    there are pages, so documents without them hash as they always did)."""
    parts: list[object] = [doc.text, doc.title, doc.source, doc.metadata]
    if doc.page_starts:
        parts.append(list(doc.page_starts))
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def chunk_document(doc: Document, *, words: int, overlap: int) -> list[Chunk]:
    """Cut ``doc`` into windows of ``words`` words, consecutive windows sharing ``overlap``;
    with ``page_starts``, page by page, so each chunk lies within one page and names it.

    Offsets index ``doc.text``, so a citation can be located in the original document.

    Raises:
        InvalidDocument: empty id or text, page starts that are not offsets of the text in
            order from 0, or ``overlap >= words``.
    """
    if not doc.id.strip():
        raise InvalidDocument("document id must not be empty")
    if not doc.text.strip():
        raise InvalidDocument(f"document {doc.id!r} has no text")
    if overlap >= words:
        raise InvalidDocument(f"chunk overlap ({overlap}) must be below chunk size ({words})")
    spans = [m.span() for m in _WORD.finditer(doc.text)]
    digest = document_hash(doc)
    title = doc.title or doc.id
    chunks: list[Chunk] = []
    for page, lo, hi in _segments(doc, [begin for begin, _ in spans]):
        for first, last in _windows(lo, hi, words, words - overlap):
            begin, end = spans[first][0], spans[last - 1][1]
            chunks.append(
                Chunk(
                    id=chunk_id(doc.id, len(chunks)),
                    doc_id=doc.id,
                    chunk_index=len(chunks),
                    text=doc.text[begin:end],
                    title=title,
                    source=doc.source,
                    char_start=begin,
                    char_end=end,
                    doc_hash=digest,
                    metadata=doc.metadata,
                    page=page,
                )
            )
    return chunks


def _segments(doc: Document, begins: list[int]) -> list[tuple[int | None, int, int]]:
    """(page number, first word, past the last word) of each page that has words; the whole
    text as one page-less segment when ``doc`` has no pages."""
    starts = doc.page_starts
    if not starts:
        return [(None, 0, len(begins))]
    in_order = all(a <= b for a, b in pairwise(starts))
    if starts[0] != 0 or not in_order or starts[-1] > len(doc.text):
        raise InvalidDocument(
            f"document {doc.id!r}: page starts must run from 0 upwards within its "
            f"{len(doc.text):,} characters"
        )
    bounds = [bisect.bisect_left(begins, s) for s in starts] + [len(begins)]
    return [(page, lo, hi) for page, (lo, hi) in enumerate(pairwise(bounds), 1) if lo < hi]


def _windows(lo: int, hi: int, words: int, step: int) -> Iterator[tuple[int, int]]:
    """Word index ranges of the windows over words ``lo`` to ``hi``; the last one ends at
    ``hi``."""
    start = lo
    while True:
        yield start, min(start + words, hi)
        if start + words >= hi:
            return
        start += step


def embedding_text(chunk: Chunk) -> str:
    """What gets embedded: the title gives a lead summary's chunks their subject."""
    return f"{chunk.title}. {chunk.text}"
