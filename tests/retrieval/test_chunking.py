"""Chunking: windows, overlap, offsets and deterministic ids."""

from __future__ import annotations

from itertools import pairwise

import pytest

from retrieval.chunking import chunk_document, chunk_id, document_hash
from retrieval.errors import InvalidDocument
from retrieval.types import Document


def _doc(n_words: int, **kw: object) -> Document:
    return Document(id="d", text=" ".join(f"w{i}" for i in range(n_words)), **kw)  # type: ignore[arg-type]


def test_short_document_is_one_chunk_with_offsets() -> None:
    doc = Document(id="d", text="  Hello   world.  ", title="T")
    (chunk,) = chunk_document(doc, words=10, overlap=2)
    assert chunk.text == "Hello   world."
    assert doc.text[chunk.char_start : chunk.char_end] == chunk.text
    assert (chunk.title, chunk.chunk_index, chunk.id) == ("T", 0, chunk_id("d", 0))


def test_windows_overlap_and_cover_every_word() -> None:
    doc = _doc(25)
    chunks = chunk_document(doc, words=10, overlap=3)
    words = [c.text.split() for c in chunks]
    assert [len(w) for w in words] == [10, 10, 10, 4]
    assert all(a[-3:] == b[:3] for a, b in pairwise(words))
    assert words[-1][-1] == "w24"
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text


def test_ids_and_hash_are_deterministic() -> None:
    a = chunk_document(_doc(30), words=10, overlap=0)
    b = chunk_document(_doc(30), words=10, overlap=0)
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == 3
    assert document_hash(_doc(30)) != document_hash(_doc(31))
    assert document_hash(_doc(30)) != document_hash(_doc(30, title="x"))


@pytest.mark.parametrize("doc", [Document(id="d", text="   "), Document(id=" ", text="x")])
def test_rejects_blank(doc: Document) -> None:
    with pytest.raises(InvalidDocument):
        chunk_document(doc, words=10, overlap=2)


def test_rejects_overlap_not_below_size() -> None:
    with pytest.raises(InvalidDocument):
        chunk_document(_doc(5), words=4, overlap=4)


def test_pages_cut_the_windows_and_number_the_chunks() -> None:
    # page 2 is blank (an image-only page): no chunk says it, and numbering goes on
    text = "a b c d e\n\n\n\nf g"
    doc = Document(id="d", text=text, page_starts=(0, 10, 11))
    chunks = chunk_document(doc, words=3, overlap=1)
    assert [(c.text, c.page) for c in chunks] == [("a b c", 1), ("c d e", 1), ("f g", 3)]
    assert [c.chunk_index for c in chunks] == [0, 1, 2]
    assert "page" not in chunk_document(_doc(3), words=3, overlap=1)[0].payload()


def test_pages_enter_the_hash_only_when_present() -> None:
    # the hash a document without pages had before pages existed: stored ones stay unchanged
    assert (
        document_hash(Document(id="d", text="x", title="T")) == "5a947d5b1610ade795540ab833e478d3"
    )
    paged = Document(id="d", text="x y", page_starts=(0, 2))
    assert document_hash(paged) != document_hash(Document(id="d", text="x y", page_starts=(0,)))


@pytest.mark.parametrize("starts", [(1,), (0, 5, 3), (0, 99)])
def test_rejects_page_starts_outside_the_text(starts: tuple[int, ...]) -> None:
    with pytest.raises(InvalidDocument, match="page starts"):
        chunk_document(Document(id="d", text="some words", page_starts=starts), words=3, overlap=1)
