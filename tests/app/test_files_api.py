"""``POST /v1/collections/{name}/files``: real files through the real app (MiniLM, Edge store),
retrieved with their page and source; every refusal names the file, and a bad file keeps no
other out; every documented limit holds."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from retrieval.types import Document
from tests import documents as files
from tests.app.jobs_helper import wait_job

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
Upload = tuple[str, tuple[str, bytes, str]]


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def guide(wiki_docs: list[Document]) -> bytes:
    return files.field_guide(wiki_docs)


def _upload(name: str, data: bytes, ctype: str = "application/octet-stream") -> Upload:
    return ("files", (name, data, ctype))


def _post(client: TestClient, uploads: list[Upload], **form: str) -> Any:
    return client.post("/v1/collections/docs/files", files=uploads, data=form)


def _job(client: TestClient, uploads: list[Upload], **form: str) -> dict[str, Any]:
    r = _post(client, uploads, **form)
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    assert r.json()["kind"] == "files"
    return wait_job(client, r.json()["id"])


def _nothing_stored(client: TestClient, settings: Settings) -> None:
    assert list((settings.store.data_dir / "jobs").glob("*.json")) == []
    assert client.get("/v1/collections/docs").status_code == 404


def test_pdf_docx_html_go_in_and_page_37_is_cited(client: TestClient, guide: bytes) -> None:
    uploads = [
        _upload("guide.pdf", guide, PDF),
        _upload("manual.docx", files.manual_docx(), DOCX),
        _upload("skerryvore.html", files.saved_web_page(), "text/html"),
    ]
    job = _job(client, uploads, metadata=json.dumps({"team": "ops"}))
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert (result["added"], result["chunks_written"], result["failed"]) == (3, 52, [])

    r = client.post(
        "/v1/retrieve",
        json={"question": "What is the highest mountain on Earth?", "collection": "docs"},
    )
    assert r.status_code == 200, r.text
    top = r.json()["citations"][0]
    assert (top["doc_id"], top["source"], top["page"]) == ("guide.pdf", "guide.pdf", 37)
    assert top["title"] == "Field guide" and "Everest" in top["text"]
    r = client.post(
        "/v1/retrieve",
        json={
            "question": "Which part number is the P-200 pump gasket?",
            "collection": "docs",
            "filters": {"team": "ops"},  # the upload's metadata, on every file
        },
    )
    top = r.json()["citations"][0]
    assert (top["source"], top["page"]) == ("manual.docx", None) and "GX-77" in top["text"]

    again = _job(client, uploads, metadata=json.dumps({"team": "ops"}))
    assert (again["result"]["unchanged"], again["result"]["chunks_written"]) == (3, 0)
    listed = client.get("/v1/collections/docs/documents").json()["documents"]
    assert {d["id"] for d in listed} == {"guide.pdf", "manual.docx", "skerryvore.html"}
    deleted = client.delete("/v1/collections/docs/documents/guide.pdf")
    assert deleted.json()["chunks_deleted"] == 50


def test_files_that_cannot_go_in_are_named_and_the_others_still_go_in(
    client: TestClient,
) -> None:
    locked = files.encrypted(files.pdf([("Secret", "Launch codes.")]), "pw")
    job = _job(
        client,
        [
            _upload("notes.md", b"# Notes\nThe pump needs oil every week.", "text/markdown"),
            _upload("locked.pdf", locked, PDF),
            _upload("scan.pdf", files.scanned_pdf(), PDF),
            _upload("sheet.xlsx", b"PK\x03\x04 a spreadsheet"),
        ],
    )
    assert job["status"] == "succeeded", job
    assert job["result"]["added"] == 1
    failed = {f["file"]: f["error"] for f in job["result"]["failed"]}
    assert failed.keys() == {"locked.pdf", "scan.pdf", "sheet.xlsx"}
    assert failed["locked.pdf"].startswith("locked.pdf: the PDF is encrypted")
    assert "no text layer" not in failed["scan.pdf"] and "has a text layer" in failed["scan.pdf"]
    assert "unsupported file type '.xlsx'" in failed["sheet.xlsx"]
    assert sorted(job["messages"]) == sorted(failed.values())


def test_a_job_whose_only_file_cannot_be_parsed_fails_naming_it(client: TestClient) -> None:
    locked = files.encrypted(files.pdf([("Secret", "Launch codes.")]), "pw")
    job = _job(client, [_upload("locked.pdf", locked, PDF)])
    assert job["status"] == "failed"
    assert job["error"].startswith("EncryptedFile: locked.pdf: the PDF is encrypted")


@pytest.mark.parametrize(
    ("uploads", "status", "type_", "message"),
    [
        (
            [_upload("sheet.xlsx", b"PK\x03\x04")],
            415,
            "unsupported_media_type",
            "sheet.xlsx: unsupported file type '.xlsx' (use .pdf,",
        ),
        (
            [_upload("fake.pdf", b"<html></html>", PDF)],
            415,
            "unsupported_media_type",
            "fake.pdf: named a PDF, but it does not start as one",
        ),
        ([_upload("empty.txt", b"")], 422, "invalid_document", "empty.txt: the file is empty"),
        (
            [_upload("a.exe", b"MZ"), _upload("b.bin", b"\x00")],
            422,
            "invalid_document",
            "none of the 2 files can be ingested: a.exe: unsupported",
        ),
        ([_upload("  ", b"x")], 422, "invalid_document", "files[0] needs a file name"),
        ([_upload("", b"x")], 422, "invalid_request", "files.0: "),  # a field, not a file
        (
            [_upload("a.txt", b"x"), _upload("a.txt", b"y")],
            422,
            "invalid_document",
            "file name 'a.txt' appears twice",
        ),
    ],
)
def test_a_request_with_no_file_that_can_go_in_is_refused_up_front(
    client: TestClient,
    settings: Settings,
    uploads: list[Upload],
    status: int,
    type_: str,
    message: str,
) -> None:
    r = _post(client, uploads)
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == type_ and message in r.json()["error"]["message"]
    _nothing_stored(client, settings)


def test_metadata_must_be_a_json_object(client: TestClient, settings: Settings) -> None:
    for bad in ("[1, 2]", "{not json"):
        r = _post(client, [_upload("a.txt", b"text")], metadata=bad)
        assert (r.status_code, r.json()["error"]["param"]) == (422, "metadata"), r.text
    _nothing_stored(client, settings)


def test_the_body_must_be_multipart_and_json_routes_stay_json(client: TestClient) -> None:
    r = client.post("/v1/collections/docs/files", json={"files": []})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]["message"]
    r = client.post("/v1/collections/docs/documents", files=[_upload("a.txt", b"x")])
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]


def test_every_documented_limit_holds_at_its_value(settings: Settings) -> None:
    limits = settings.collections
    assert (limits.max_files_per_request, limits.max_file_bytes) == (20, 10 * 1024 * 1024)
    small = settings.updated(
        collections={"max_files_per_request": 2, "max_file_bytes": 100},
        limits={"max_body_bytes": 4096},
    )
    with TestClient(create_app(small)) as client:
        at_limits = [_upload("a.txt", b"a" * 100), _upload("b.txt", b"b" * 100)]
        job = _job(client, at_limits)
        assert (job["status"], job["result"]["added"]) == ("succeeded", 2)

        three = [_upload(f"{n}.txt", b"x") for n in "cde"]
        r = _post(client, three)
        assert (r.status_code, r.json()["error"]["param"]) == (422, "files")
        assert "3 files in one request; the limit is 2 (COVRAG_MAX_FILES_PER_REQUEST)" in r.text

        r = _post(client, [_upload("big.txt", b"x" * 101)])
        assert r.status_code == 413, r.text
        error = r.json()["error"]
        assert error["message"] == (
            "big.txt: 101 bytes; the limit is 100 (COVRAG_MAX_FILE_BYTES)"
        ) and (error["type"], error["param"]) == ("payload_too_large", "files")
        over_one = _job(client, [_upload("ok.txt", b"fine"), _upload("big.txt", b"x" * 101)])
        assert over_one["result"]["added"] == 1
        assert over_one["result"]["failed"][0]["file"] == "big.txt"

        r = _post(client, [_upload("huge.txt", b"x" * 5000)])  # the whole body's limit
        assert r.status_code == 413 and "COVRAG_MAX_BODY_BYTES" in r.json()["error"]["message"]


def test_text_over_max_document_chars_is_a_failed_file(settings: Settings) -> None:
    small = settings.updated(collections={"max_document_chars": 50})
    with TestClient(create_app(small)) as client:
        job = _job(client, [_upload("ok.txt", b"short"), _upload("long.md", b"word " * 20)])
    assert job["result"]["added"] == 1
    assert job["result"]["failed"] == [
        {
            "file": "long.md",
            "error": "long.md: 100 characters of text; the limit is 50 (COVRAG_MAX_DOCUMENT_CHARS)",
        }
    ]


def test_json_documents_may_bring_their_own_pages_and_source(client: TestClient) -> None:
    """What `covrag ingest` sends for a PDF it parsed itself: page starts and the path."""
    text = "Tides are caused by the Moon.\n\nThe Sun also pulls on the oceans."
    doc = {"id": "tides", "text": text, "source": "notes/tides.pdf", "page_starts": [0, 31]}
    r = client.post("/v1/collections/docs/documents", json={"documents": [doc]})
    assert wait_job(client, r.json()["id"])["status"] == "succeeded"
    r = client.post(
        "/v1/retrieve",
        json={"question": "Does the Sun pull on the oceans?", "collection": "docs", "top_k": 1},
    )
    [top] = r.json()["citations"]
    assert (top["source"], top["page"], top["text"]) == (
        "notes/tides.pdf",
        2,
        "The Sun also pulls on the oceans.",
    )
    bad = {"documents": [{**doc, "id": "other", "page_starts": [0, 999]}]}
    r = client.post("/v1/collections/docs/documents", json=bad)
    error = r.json()["error"]
    assert (r.status_code, error["param"]) == (422, "documents[0]")
    assert "page starts must run from 0" in error["message"]
