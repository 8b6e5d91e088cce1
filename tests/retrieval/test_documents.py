"""Real files → documents → chunks with pages, into both real stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.chunking import chunk_document
from retrieval.corpus import load_files
from retrieval.documents import check_file, parse_file
from retrieval.embed import Embedder
from retrieval.errors import (
    EncryptedFile,
    FileRejected,
    FileTooLarge,
    UnreadableFile,
    UnsupportedFileType,
)
from retrieval.ingest import Ingestor
from retrieval.store import VectorStore
from retrieval.types import Document
from tests import documents as files


@pytest.fixture(scope="module")
def guide(wiki_docs: list[Document]) -> bytes:
    return files.field_guide(wiki_docs)


def test_pdf_is_one_document_with_its_pages(guide: bytes) -> None:
    doc = parse_file(guide, "guide.pdf", "application/pdf", metadata={"team": "ops"})
    assert (doc.id, doc.source, doc.title, doc.metadata) == (
        "guide.pdf",
        "guide.pdf",
        "Field guide",
        {"team": "ops"},
    )
    assert len(doc.page_starts) == 50
    page = doc.text[doc.page_starts[files.ANSWER_PAGE - 1] : doc.page_starts[files.ANSWER_PAGE]]
    assert page.startswith(files.ANSWER_ARTICLE) and "highest mountain" in page
    chunks = chunk_document(doc, words=160, overlap=32)
    assert {c.page for c in chunks} == set(range(1, 51))
    on_answer_page = [c for c in chunks if c.page == files.ANSWER_PAGE]
    assert on_answer_page and all("Everest" in c.text for c in on_answer_page)
    assert all(c.payload()["page"] == c.page for c in chunks)


def test_a_chunk_never_spans_two_pages() -> None:
    long = " ".join(f"alpha{i}" for i in range(300))
    doc = parse_file(files.pdf([("One", long), ("Two", "beta gamma")]), "two.pdf")
    chunks = chunk_document(doc, words=100, overlap=20)
    assert [c.page for c in chunks] == [1, 1, 1, 1, 2]
    assert [c.chunk_index for c in chunks] == list(range(5))
    assert chunks[-1].text == "Two\nbeta gamma"
    for c in chunks:
        assert doc.text[c.char_start : c.char_end] == c.text


def test_html_keeps_the_article_and_drops_the_navigation() -> None:
    doc = parse_file(files.saved_web_page(), "skerryvore.html")
    assert doc.title == "Skerryvore lighthouse" and doc.page_starts == ()
    assert files.ARTICLE in doc.text
    for boilerplate in (*files.NAVIGATION, "cookies", "newsletter", "Copyright", "analytics"):
        assert boilerplate not in doc.text


def test_docx_keeps_body_and_tables_not_header_or_footer() -> None:
    doc = parse_file(files.manual_docx(), "manual.docx")
    assert doc.title == "P-200 pump service manual"
    assert "replace the gasket with part number GX-77" in doc.text
    assert "Valve | VX-12" in doc.text
    assert "do not distribute" not in doc.text and "Page footer" not in doc.text


def test_markdown_and_text() -> None:
    md = parse_file("\ufeff# Release notes\r\nAll fixed.\r\n".encode(), "notes.md")
    assert (md.title, md.text) == ("Release notes", "# Release notes\nAll fixed.\n")
    txt = parse_file(b"Plain words.", "notes/readme.txt")
    assert (txt.title, txt.id, txt.source) == ("readme", "notes/readme.txt", "notes/readme.txt")
    by_type = parse_file(b"# Heading\ntext", "upload", "text/markdown; charset=utf-8")
    assert by_type.title == "Heading"
    with pytest.raises(UnreadableFile, match=r"^latin\.txt: not UTF-8 text \(byte 3\)"):
        parse_file("café".encode("latin-1"), "latin.txt")


def test_an_encrypted_pdf_is_refused_by_name() -> None:
    locked = files.encrypted(files.pdf([("Secret", "The launch code is 0000.")]), "pw")
    with pytest.raises(EncryptedFile, match=r"^locked\.pdf: the PDF is encrypted") as caught:
        parse_file(locked, "locked.pdf")
    assert caught.value.file == "locked.pdf"
    # an owner password alone restricts editing, not reading: that one is read
    readable = files.encrypted(files.pdf([("Open", "Anyone may read this.")]), "")
    assert "Anyone may read this." in parse_file(readable, "open.pdf").text


def test_a_scanned_pdf_is_refused_by_name() -> None:
    with pytest.raises(UnreadableFile, match=r"^scan\.pdf: none of its 2 pages has a text"):
        parse_file(files.scanned_pdf(), "scan.pdf")


@pytest.mark.parametrize(
    ("name", "ctype", "data", "error", "message"),
    [
        ("sheet.xlsx", None, b"PK\x03\x04", UnsupportedFileType, "unsupported file type '.xlsx'"),
        ("blob", "application/octet-stream", b"x", UnsupportedFileType, "content type"),
        ("fake.pdf", None, b"<html>no pdf</html>", UnsupportedFileType, "does not start as one"),
        ("fake.docx", None, b"%PDF-1.4", UnsupportedFileType, "not a ZIP package"),
        ("empty.txt", None, b"", UnreadableFile, "the file is empty"),
        ("big.txt", None, b"x" * 101, FileTooLarge, "101 bytes; the limit is 100"),
        ("cut.pdf", None, b"%PDF-1.7\n1 0 obj\n<<", UnreadableFile, "not a readable pdf file"),
        ("broken.docx", None, b"PK\x03\x04garbage", UnreadableFile, "not a readable docx"),
    ],
)
def test_files_that_yield_no_document_are_named(
    name: str, ctype: str | None, data: bytes, error: type[FileRejected], message: str
) -> None:
    with pytest.raises(error, match=message) as caught:
        parse_file(data, name, ctype, max_bytes=100)
    assert str(caught.value).startswith(f"{name}: ") and caught.value.file == name


def test_check_file_decides_without_parsing() -> None:
    assert check_file(b"%PDF-1.4 then anything", "a.PDF") == "pdf"
    assert check_file(b"<p>x</p>", "page", "text/html") == "html"
    with pytest.raises(FileTooLarge, match="COVRAG_MAX_FILE_BYTES"):
        check_file(b"%PDF-" + b"x" * 100, "a.pdf", max_bytes=10)


def test_load_files_reads_every_type(tmp_path: Path) -> None:
    paths = {
        "manual.docx": files.manual_docx(),
        "page.htm": files.saved_web_page(),
        "two.pdf": files.pdf([("One", "first page"), ("Two", "second page")]),
        "notes.md": b"# Notes\nsome notes",
    }
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
    docs = list(load_files(sorted(tmp_path.iterdir())))
    assert [d.id for d in docs] == [str(tmp_path / n) for n in sorted(paths)]
    assert [len(d.page_starts) for d in docs] == [0, 0, 0, 2]
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(UnsupportedFileType, match=r"data\.csv: unsupported .*\.jsonl"):
        list(load_files([tmp_path / "data.csv"]))


def test_pages_are_stored_and_a_reupload_changes_nothing(
    guide: bytes, store: VectorStore, embedder: Embedder
) -> None:
    ingestor = Ingestor(store, embedder, chunk_words=160, chunk_overlap=32)
    first = ingestor.ingest("docs", [parse_file(guide, "guide.pdf")])
    assert (first.added, first.chunks_written) == (1, 50)
    again = ingestor.ingest("docs", [parse_file(guide, "guide.pdf")])
    assert (again.unchanged, again.chunks_written) == (1, 0)
    [hit] = store.search("docs", embedder.embed(["the highest mountain on Earth"])[0], limit=1)
    assert (hit.page, hit.source) == (files.ANSWER_PAGE, "guide.pdf")
