"""Split documents into overlapping word windows with deterministic ids.

Ids are uuid5(doc id, chunk index): re-ingesting a document writes the same ids, so an unchanged
document changes nothing and a changed one overwrites its chunks in place.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

from retrieval.errors import InvalidDocument
from retrieval.types import Chunk, Document

_CHUNK_NAMESPACE = uuid.UUID("5b1d3c62-6f0e-4d8a-9a57-c0e7a3f0b2d1")
_WORD = re.compile(r"\S+")


def chunk_id(doc_id: str, chunk_index: int) -> str:
    """The stable point id of chunk ``chunk_index`` of ``doc_id``."""
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{doc_id}\x00{chunk_index}"))


def document_hash(doc: Document) -> str:
    """Content hash over everything that ends up in a chunk's payload."""
    blob = json.dumps(
        [doc.text, doc.title, doc.source, doc.metadata], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def chunk_document(doc: Document, *, words: int, overlap: int) -> list[Chunk]:
    """Cut ``doc`` into windows of ``words`` words, consecutive windows sharing ``overlap``.

    Offsets index ``doc.text``, so a citation can be located in the original document.

    Raises:
        InvalidDocument: empty id or text, or ``overlap >= words``.
    """
    if not doc.id.strip():
        raise InvalidDocument("document id must not be empty")
    if not doc.text.strip():
        raise InvalidDocument(f"document {doc.id!r} has no text")
    if overlap >= words:
        raise InvalidDocument(f"chunk overlap ({overlap}) must be below chunk size ({words})")
    spans = [m.span() for m in _WORD.finditer(doc.text)]
    step = words - overlap
    digest = document_hash(doc)
    title = doc.title or doc.id
    chunks: list[Chunk] = []
    start = 0
    while True:
        window = spans[start : start + words]
        begin, end = window[0][0], window[-1][1]
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
            )
        )
        if start + words >= len(spans):
            return chunks
        start += step


def embedding_text(chunk: Chunk) -> str:
    """What gets embedded: the title gives a lead summary's chunks their subject."""
    return f"{chunk.title}. {chunk.text}"
