"""``POST /v1/collections/{name}/files``: the files people have (PDF, HTML, DOCX, Markdown,
text) into a collection, as a background job that parses and ingests them."""

from __future__ import annotations

import json
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Response, UploadFile

from app.api.deps import IngestorDep, JobsDep, PrincipalDep, SettingsDep
from app.api.routes.jobs import ACCEPTED, accept
from app.config import Settings
from app.schemas import CollectionName, JobOut
from app.uploads import none_read, uploads_request
from retrieval.documents import check_file, supported_types
from retrieval.errors import FileRejected, InvalidDocument

router = APIRouter(prefix="/v1/collections", tags=["collections"])
#: Longest file name: it becomes the document id, as long as a document's id may be.
MAX_NAME = 512


@router.post("/{name}/files", **ACCEPTED)
async def add_files(
    name: CollectionName,
    files: Annotated[
        list[UploadFile],
        File(
            min_length=1,
            description=f"The files ({supported_types()}; by name, else content type); at "
            "most COVRAG_MAX_FILES_PER_REQUEST, each of at most COVRAG_MAX_FILE_BYTES bytes. "
            "A file's name is its document's id and source.",
        ),
    ],
    response: Response,
    ingestor: IngestorDep,
    jobs: JobsDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    metadata: Annotated[
        str | None, Form(description="A JSON object: the metadata of every file's document.")
    ] = None,
) -> JobOut:
    """Parse and ingest uploaded files as a background job: 202 with the job, also in
    ``Location`` (the collection is created on first use; an unchanged file is skipped).

    A file refused before the job (type, signature, size, empty) is named in the job's
    ``result.failed`` and messages while the others go in, as is one the job cannot parse
    (encrypted, no text layer, corrupt); when no file of the request can go in, its own 413,
    415 or 422 (or one 422 naming them all), and no job.
    """
    principal.check(name, "name")
    meta = _metadata(metadata)
    accepted, refused = await _checked(files, settings)
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
    files: list[UploadFile], settings: Settings
) -> tuple[list[tuple[str, str | None, bytes]], list[FileRejected]]:
    """(name, content type, bytes) of the files that may go in, and the refusal of each that
    may not. Raises ``InvalidDocument`` for what is wrong with the request itself: too many
    files, a file without a usable name, a name twice."""
    limit = settings.max_files_per_request
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
            check_file(data, filename, upload.content_type, max_bytes=settings.max_file_bytes)
        except FileRejected as exc:
            refused.append(exc)
        else:
            accepted.append((filename, upload.content_type, data))
    return accepted, refused
