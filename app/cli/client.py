"""The CLI's HTTP client of a covrag server: request bodies are the API's own request models,
answers are parsed into its response models, and every failure is one ``ClientError`` whose
text is the line to show."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel

from app.api.calibration.protocol import CalibrationRequest, CalibrationStatusOut
from app.api.collections.protocol import (
    CollectionDeletedOut,
    CollectionsOut,
    DocumentsIn,
    IndexRequest,
)
from app.api.jobs.protocol import JobOut
from app.api.protocol import ErrorOut
from app.api.query.protocol import QueryRequest

#: Job states after which a job never changes.
FINISHED = ("succeeded", "failed")


class ClientError(Exception):
    """A request that did not succeed; ``exit_code`` is the CLI's."""

    exit_code = 1


class ServerUnreachable(ClientError):
    """No server answers at the URL."""

    def __init__(self, url: str, hint: str) -> None:
        super().__init__(f"cannot reach the server at {url} — {hint}")


class ServerRefused(ClientError):
    """The server answered with an error: its message, in one line."""

    def __init__(self, response: httpx.Response) -> None:
        try:
            message = ErrorOut.model_validate_json(response.content).error.message
        except ValueError:  # not covrag's envelope: a proxy's page, say
            message = f"{response.request.url}: {response.text[:200]}"
        super().__init__(f"{' '.join(message.split())} (HTTP {response.status_code})")
        self.status = response.status_code
        self.exit_code = 2 if response.status_code < 500 else 1


class JobFailed(ClientError):
    def __init__(self, job: JobOut) -> None:
        super().__init__(f"job {job.id} ({job.kind} of {job.collection}) failed: {job.error}")


class CovragClient:
    """One server at ``url``, sending ``api_key`` if set.

    Args:
        timeout_s: per request; a query waits on the generator.
        hint: what to do when no server answers, as the unreachable error says it.
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        timeout_s: float,
        hint: str = "start it with `covrag serve`",
    ) -> None:
        headers = {} if api_key is None else {"Authorization": f"Bearer {api_key}"}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._hint = hint

    def __enter__(self) -> CovragClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    def query(self, body: QueryRequest) -> dict[str, Any]:
        answer: dict[str, Any] = self._call("POST", "/v1/query", body).json()
        return answer

    def collections(self) -> CollectionsOut:
        return CollectionsOut.model_validate_json(self._call("GET", "/v1/collections").content)

    def delete_collection(self, name: str) -> CollectionDeletedOut:
        response = self._call("DELETE", f"/v1/collections/{name}")
        return CollectionDeletedOut.model_validate_json(response.content)

    def ingest(self, name: str, body: DocumentsIn) -> JobOut:
        return self._job(self._call("POST", f"/v1/collections/{name}/documents", body))

    def calibrate(self, name: str, body: CalibrationRequest) -> JobOut:
        return self._job(self._call("POST", f"/v1/collections/{name}/calibration", body))

    def calibration(self, name: str) -> CalibrationStatusOut:
        response = self._call("GET", f"/v1/collections/{name}/calibration")
        return CalibrationStatusOut.model_validate_json(response.content)

    def index(self, name: str, body: IndexRequest) -> JobOut:
        return self._job(self._call("POST", f"/v1/collections/{name}/index", body))

    def job(self, job_id: str) -> JobOut:
        return self._job(self._call("GET", f"/v1/jobs/{job_id}"))

    def wait(self, job: JobOut, progress: Callable[[JobOut], None], poll_s: float = 0.5) -> JobOut:
        """Poll ``job`` until it finishes, passing each state to ``progress``.

        Raises:
            JobFailed: it finished failed.
        """
        progress(job)
        while job.status not in FINISHED:
            time.sleep(poll_s)
            job = self.job(job.id)
            progress(job)
        if job.status == "failed":
            raise JobFailed(job)
        return job

    def _call(self, method: str, path: str, body: BaseModel | None = None) -> httpx.Response:
        payload = None if body is None else body.model_dump(mode="json", exclude_none=True)
        try:
            response = self._http.request(method, path, json=payload)
        except httpx.ConnectError as exc:
            raise ServerUnreachable(str(self._http.base_url), self._hint) from exc
        except httpx.TransportError as exc:  # a timeout, a dropped connection
            raise ClientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise ServerRefused(response)
        return response

    @staticmethod
    def _job(response: httpx.Response) -> JobOut:
        return JobOut.model_validate_json(response.content)
