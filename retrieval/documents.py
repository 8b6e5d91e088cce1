"""Files people have → documents: PDF (text per page), HTML (main text), DOCX, Markdown, text.

A file becomes one ``Document`` whose id and source are the file's name, so a new version of a
file replaces the old one and an identical one changes nothing (``Ingestor`` skips it by its
content hash). A PDF keeps its pages: ``page_starts`` marks where each begins, and its chunks
carry their page number. Every library here parses in process; none fetches anything.

``check_file`` decides what can be decided without parsing (size, type, signature), so an
upload can be refused before it is accepted; ``parse_file`` does the rest. Both raise a
``FileRejected`` whose message starts with the file's name. Each parser is imported when a file
of its type is read: trafilatura alone would add about a second to every ``covrag`` command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from itertools import accumulate
from pathlib import PurePath
from typing import Any, Literal, NamedTuple

from retrieval.errors import (
    EncryptedFile,
    FileRejected,
    FileTooLarge,
    UnreadableFile,
    UnsupportedFileType,
)
from retrieval.types import Document

Kind = Literal["pdf", "html", "docx", "markdown", "text"]

#: File name suffixes, decisive when present: a client's content type is often generic.
SUFFIXES: Mapping[str, Kind] = {
    ".pdf": "pdf",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".docx": "docx",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
}
#: Content types, for a name without a known suffix.
CONTENT_TYPES: Mapping[str, Kind] = {
    "application/pdf": "pdf",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
#: What separates two pages' text in a PDF's document.
PAGE_BREAK = "\n\n"


class _Extracted(NamedTuple):
    text: str
    title: str | None = None
    page_starts: tuple[int, ...] = ()


def supported_types(*extra: str) -> str:
    """The suffixes covrag reads (plus ``extra``), for messages."""
    return ", ".join([*SUFFIXES, *extra])


def file_kind(name: str, content_type: str | None = None) -> Kind:
    """The file's type from its name's suffix, else from its content type.

    Raises:
        UnsupportedFileType: neither is one covrag reads.
    """
    suffix = PurePath(name).suffix.lower()
    media = (content_type or "").split(";")[0].strip().lower()
    kind = SUFFIXES.get(suffix) or CONTENT_TYPES.get(media)
    if kind is None:
        what = f"file type {suffix!r}" if suffix else f"content type {media or 'none'!r}"
        raise UnsupportedFileType(name, f"unsupported {what} (use {supported_types()})")
    return kind


def check_file(
    data: bytes, name: str, content_type: str | None = None, *, max_bytes: int | None = None
) -> Kind:
    """The file's type, once its size and (for PDF and DOCX) its leading bytes agree.

    Raises:
        FileTooLarge: over ``max_bytes``.
        UnsupportedFileType: an unknown type, or bytes that are not what the name says.
        UnreadableFile: an empty file.
    """
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLarge(
            name, f"{len(data):,} bytes; the limit is {max_bytes:,} (COVRAG_MAX_FILE_BYTES)"
        )
    kind = file_kind(name, content_type)
    if not data:
        raise UnreadableFile(name, "the file is empty")
    if kind == "pdf" and b"%PDF-" not in data[:1024]:
        raise UnsupportedFileType(name, "named a PDF, but it does not start as one (%PDF-)")
    if kind == "docx" and not data.startswith(b"PK\x03\x04"):
        raise UnsupportedFileType(name, "named a DOCX, but it is not a ZIP package")
    return kind


def parse_file(
    data: bytes,
    name: str,
    content_type: str | None = None,
    *,
    max_bytes: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Document:
    """The file as one document: id and source ``name``, title from the file (its metadata or
    first heading) or else the name's stem, ``metadata`` as given.

    Raises:
        FileRejected: any reason the file yields no document, the file named (see the
            subclasses: too large, unsupported, encrypted, no text, corrupt).
    """
    kind = check_file(data, name, content_type, max_bytes=max_bytes)
    try:
        extracted = _READERS[kind](data, name)
    except FileRejected:
        raise
    except Exception as exc:  # a malformed file fails deep inside its parser, in many ways
        raise UnreadableFile(
            name, f"not a readable {kind} file ({type(exc).__name__}: {exc})"
        ) from exc
    if not extracted.text.strip():
        raise UnreadableFile(name, f"no text found in this {kind} file")
    return Document(
        id=name,
        text=extracted.text,
        title=extracted.title or PurePath(name).stem or name,
        source=name,
        metadata=dict(metadata or {}),
        page_starts=extracted.page_starts,
    )


def _pdf(data: bytes, name: str) -> _Extracted:
    """Each page's text layer, in page order; page numbers are 1-based page positions."""
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    reader = PdfReader(BytesIO(data))
    if reader.is_encrypted:
        try:  # an owner password alone still lets anyone read (RC4; AES needs cryptography)
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except (DependencyError, FileNotDecryptedError):
            opened = False
        if not opened:
            raise EncryptedFile(
                name, "the PDF is encrypted; upload a copy that opens without a password"
            )
    pages = [(page.extract_text() or "").replace("\x00", "").strip() for page in reader.pages]
    if not any(pages):
        raise UnreadableFile(
            name,
            f"none of its {len(pages)} pages has a text layer (a scanned PDF?); "
            "covrag does not OCR",
        )
    starts = accumulate((len(p) + len(PAGE_BREAK) for p in pages[:-1]), initial=0)
    title = reader.metadata.title if reader.metadata is not None else None
    return _Extracted(PAGE_BREAK.join(pages), (title or "").strip() or None, tuple(starts))


def _html(data: bytes, name: str) -> _Extracted:
    """The page's main text (trafilatura drops navigation, headers, footers, comments)."""
    import trafilatura

    page = trafilatura.bare_extraction(
        data, with_metadata=True, include_comments=False, include_tables=True
    )
    if page is None or isinstance(page, dict):
        return _Extracted("")
    return _Extracted(page.text or "", page.title)


def _docx(data: bytes, name: str) -> _Extracted:
    """Body paragraphs and table rows in document order (headers and footers are left out);
    the title from the core properties, else the first heading."""
    import docx
    from docx.text.paragraph import Paragraph

    document = docx.Document(BytesIO(data))
    blocks: list[str] = []
    heading: str | None = None
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            blocks.append(item.text)
            style = item.style.name if item.style is not None else ""
            if heading is None and item.text.strip() and style.startswith(("Title", "Heading")):
                heading = item.text.strip()
        else:
            blocks.extend(" | ".join(cell.text for cell in row.cells) for row in item.rows)
    text = "\n".join(b.strip() for b in blocks if b.strip())
    return _Extracted(text, document.core_properties.title or heading)


def _text(data: bytes, name: str) -> _Extracted:
    """UTF-8 text (a BOM dropped, line ends made ``\\n``) as it is; Markdown is not rendered,
    its first ``# `` heading is the title."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(name, f"not UTF-8 text (byte {exc.start})") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    heading = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), None)
    return _Extracted(text, heading)


_READERS: Mapping[Kind, Callable[[bytes, str], _Extracted]] = {
    "pdf": _pdf,
    "html": _html,
    "docx": _docx,
    "markdown": _text,
    "text": _text,
}
