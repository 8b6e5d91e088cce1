"""The file upload: the checks before its job, and the ``files`` job's runner, which parses
each file (a large PDF takes seconds) and ingests those that yield a document; one that does
not is named in the job's result and messages while the others go in."""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import Response, UploadFile

from app.api.collections.protocol import to_ingest_out
from app.api.files.protocol import (
    FilesIngestOut,
    UploadsIn,
    file_error,
    uploads_request,
)
from app.api.jobs.protocol import JobOut
from app.api.jobs.serving import accept
from app.background import JobWork
from app.config import CollectionSettings
from app.state.auth import Principal
from app.state.jobs import Job, JobRegistry
from retrieval.documents import check_file, parse_file
from retrieval.errors import FileRejected, FileTooLarge, InvalidDocument
from retrieval.ingest import Ingestor
from retrieval.types import Document

#: Longest file name: it becomes the document id, as long as a document's id may be.
MAX_NAME = 512


async def add_files(
    name: str,
    files: list[UploadFile],
    metadata: str | None,
    response: Response,
    ingestor: Ingestor,
    jobs: JobRegistry,
    principal: Principal,
    limits: CollectionSettings,
) -> JobOut:
    principal.check(name, "name")
    meta = _metadata(metadata)
    accepted, refused = await _checked(files, limits)
    if not accepted:
        raise none_read(refused)
    await anyio.to_thread.run_sync(ingestor.ensure_collection, name)
    return await accept(jobs, response, "files", name, uploads_request(accepted, meta, refused))


def _metadata(raw: str | None) -> dict[str, Any]:
    """The ``metadata`` part: a JSON object; absent or ``null``, none."""
    try:
        value = None if raw is None else json.loads(raw)
    except ValueError as exc:
        raise InvalidDocument(f"metadata is not JSON: {exc}", "metadata") from exc
    if not isinstance(value, dict | None):
        raise InvalidDocument("metadata must be a JSON object", "metadata")
    return value or {}


async def _checked(
    files: list[UploadFile], limits: CollectionSettings
) -> tuple[list[tuple[str, str | None, bytes]], list[FileRejected]]:
    """(name, content type, bytes) of the files that may go in, and the refusal of each that
    may not. Raises ``InvalidDocument`` for what is wrong with the request itself: too many
    files, a file without a usable name, a name twice."""
    limit = limits.max_files_per_request
    if len(files) > limit:
        raise InvalidDocument(
            f"{len(files):,} files in one request; the limit is {limit:,} "
            "(COVRAG_MAX_FILES_PER_REQUEST): send them in several requests",
            "files",
        )
    seen: set[str] = set()
    for i, upload in enumerate(files):
        filename = upload.filename or ""
        if not filename.strip() or len(filename) > MAX_NAME:
            raise InvalidDocument(
                f"files[{i}] needs a file name of 1 to {MAX_NAME} characters "
                "(it becomes the document id)",
                f"files[{i}]",
            )
        if filename in seen:
            raise InvalidDocument(f"file name {filename!r} appears twice in one request", "files")
        seen.add(filename)
    accepted: list[tuple[str, str | None, bytes]] = []
    refused: list[FileRejected] = []
    for upload in files:
        filename, data = upload.filename or "", await upload.read()
        try:
            check_file(data, filename, upload.content_type, max_bytes=limits.max_file_bytes)
        except FileRejected as exc:
            refused.append(exc)
        else:
            accepted.append((filename, upload.content_type, data))
    return accepted, refused


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


async def run_files(work: JobWork, limits: CollectionSettings, job: Job) -> dict[str, Any]:
    """Parse the uploaded files, then ingest those that were read; each file that was not
    (refused up front, or here) is a message, and the job fails only when none was read."""
    request = UploadsIn.model_validate(job.request)
    docs, failed = await anyio.to_thread.run_sync(
        lambda: read_uploads(
            request, max_bytes=limits.max_file_bytes, max_chars=limits.max_document_chars
        )
    )
    failures = [*request.refused, *map(file_error, failed)]
    job.messages.extend(f.error for f in failures)
    if not docs:
        raise none_read(failed)
    report = to_ingest_out(job.collection, await work.ingest(job, docs))
    return FilesIngestOut(**report.model_dump(), failed=failures).model_dump()
