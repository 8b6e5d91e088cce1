"""Uploaded files as an ingestion job (kind ``files``).

The files travel base64-encoded in the job's stored request, as an ingestion job's documents
do, so a job an API restart interrupted reruns from it in any replica. Each file is parsed in
the job (a large PDF takes seconds); one that yields no document is named in the job's result
and messages while the others go in.
"""

from __future__ import annotations

import base64
from typing import Any

from pydantic import Base64Bytes, BaseModel, Field

from app.schemas import IngestOut
from retrieval.documents import parse_file
from retrieval.errors import FileRejected, FileTooLarge, InvalidDocument
from retrieval.types import Document


class UploadIn(BaseModel):
    """One file of a ``files`` job's request."""

    name: str
    content_type: str | None = None
    data: Base64Bytes


class FileErrorOut(BaseModel):
    file: str
    error: str = Field(description="Why the file yields no document; the message names it.")


def file_error(exc: FileRejected) -> FileErrorOut:
    return FileErrorOut(file=exc.file, error=str(exc))


class UploadsIn(BaseModel):
    """A ``files`` job's request: the files, the metadata every one of them gets, and the
    files of the upload that were refused before the job (reported with its result)."""

    files: list[UploadIn]
    metadata: dict[str, Any] = Field(default_factory=dict)
    refused: list[FileErrorOut] = Field(default_factory=list)


class FilesIngestOut(IngestOut):
    """A ``files`` job's result: the ingestion report of the files that were read."""

    failed: list[FileErrorOut] = Field(description="The files that were not ingested, and why.")


def uploads_request(
    files: list[tuple[str, str | None, bytes]],
    metadata: dict[str, Any],
    refused: list[FileRejected],
) -> dict[str, Any]:
    """The stored request of a ``files`` job: (name, content type, bytes) per file."""
    return {
        "files": [
            {"name": name, "content_type": ctype, "data": base64.b64encode(data).decode("ascii")}
            for name, ctype, data in files
        ],
        "metadata": metadata,
        "refused": [file_error(exc).model_dump() for exc in refused],
    }


def read_uploads(
    request: UploadsIn, *, max_bytes: int, max_chars: int
) -> tuple[list[Document], list[FileRejected]]:
    """The documents of the files that parse, and the error of each that does not (over
    ``max_chars`` characters of text included, which would otherwise fail the whole batch).
    Blocking: it parses every file."""
    docs: list[Document] = []
    failed: list[FileRejected] = []
    for upload in request.files:
        try:
            doc = parse_file(
                upload.data,
                upload.name,
                upload.content_type,
                max_bytes=max_bytes,
                metadata=request.metadata,
            )
            if len(doc.text) > max_chars:
                raise FileTooLarge(
                    upload.name,
                    f"{len(doc.text):,} characters of text; the limit is {max_chars:,} "
                    "(COVRAG_MAX_DOCUMENT_CHARS)",
                )
        except FileRejected as exc:
            failed.append(exc)
        else:
            docs.append(doc)
    return docs, failed


def none_read(failed: list[FileRejected]) -> InvalidDocument:
    """The error of an upload (or job) none of whose files can be read: the one file's own
    (its status: 413, 415 or 422), or one naming them all."""
    if len(failed) == 1:
        return failed[0]
    return InvalidDocument(
        f"none of the {len(failed)} files can be ingested: " + "; ".join(map(str, failed)),
        "files",
    )


def to_files_ingest_out(report: IngestOut, failed: list[FileErrorOut]) -> FilesIngestOut:
    return FilesIngestOut(**report.model_dump(), failed=failed)
