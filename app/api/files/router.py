"""``POST /v1/collections/{name}/files``: the files people have (PDF, HTML, DOCX, Markdown,
text) into a collection, as a background job that parses and ingests them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.api.deps import JobsDep, PrincipalDep, ServicesDep, SettingsDep
from app.api.files import serving
from app.api.jobs.protocol import ACCEPTED, JobOut
from app.api.protocol import CollectionName
from retrieval.documents import supported_types

router = APIRouter(prefix="/v1/collections", tags=["collections"])


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
    services: ServicesDep,
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
    return await serving.add_files(
        name,
        files,
        metadata,
        response,
        services.ingestor,
        jobs,
        principal,
        settings.collections,
    )
