"""The file upload's wire models: a ``files`` job's stored request (the files travel
base64-encoded in it, as an ingestion job's documents do, so a job an API restart interrupted
reruns from it in any replica) and its result."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import Base64Bytes, BaseModel, Field

from app.api.collections.protocol import IngestOut
from retrieval.errors import FileRejected


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
