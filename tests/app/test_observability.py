"""Metrics, request ids and JSON logs, read back the way an operator would: ``GET /metrics``
scraped after real requests, response headers, and the formatted log output."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.telemetry.logs import JsonFormatter
from app.telemetry.metrics import Metrics
from retrieval.types import Document

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

HUBBLE = "Which NASA center controls the Hubble Space Telescope?"
EIFFEL = "When was the Eiffel Tower completed?"
EIFFEL_DOC = Document(
    id="Eiffel Tower",
    title="Eiffel Tower",
    text="The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
)


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, route: str, method: str, status: int) -> float:
    labels = {"route": route, "method": method, "status": str(status)}
    return value(samples, "covrag_http_requests_total", **labels)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def access_log() -> Iterator[io.StringIO]:
    """What ``covrag serve`` would print for the access logger: JSON, formatted as emitted."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("covrag.access")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    client.get("/healthz")
    client.get("/healthz")
    client.get("/v1/collections/missing")  # 404 from the route
    client.get("/v1/nothing-here")  # 404: no route
    client.post("/v1/query", json={})  # 422
    client.post("/v1/collections/docs/documents", content=b"{}")  # 415 from the body guard
    samples = scrape(client)
    assert requests(samples, "/healthz", "GET", 200) == 2
    assert requests(samples, "/v1/collections/{name}", "GET", 404) == 1
    assert requests(samples, "unmatched", "GET", 404) == 1
    assert requests(samples, "/v1/query", "POST", 422) == 1
    assert requests(samples, "/v1/collections/{name}/documents", "POST", 415) == 1
    assert not any("missing" in dict(labels).get("route", "") for _, labels in samples)
    duration = "covrag_http_request_duration_seconds"
    assert value(samples, f"{duration}_count", route="/healthz", method="GET") == 2
    fastest = value(samples, f"{duration}_bucket", route="/healthz", method="GET", le="0.001")
    slowest = value(samples, f"{duration}_bucket", route="/healthz", method="GET", le="60.0")
    assert fastest <= slowest == 2
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_in_flight_gauge_counts_v1_requests_and_returns_to_zero(client: TestClient) -> None:
    """covrag_http_requests_in_flight is what the API autoscales on (KEDA, docs/deploy.md)."""
    client.get("/v1/collections/missing")  # 404
    client.post("/v1/query", json={})  # 422
    client.post("/v1/collections/docs/documents", content=b"{}")  # 415 from the body guard
    samples = scrape(client)
    assert ("covrag_http_requests_in_flight", frozenset()) in samples
    assert value(samples, "covrag_http_requests_in_flight") == 0
    m = Metrics()
    m.request_started()
    m.request_started()
    m.request_finished()
    assert b"covrag_http_requests_in_flight 1.0" in m.render()
    m.request_finished()


def test_request_id_is_echoed_or_minted_on_every_response(client: TestClient) -> None:
    given = {"X-Request-ID": "trace-7"}
    assert client.get("/healthz", headers=given).headers["X-Request-ID"] == "trace-7"
    for r in (
        client.get("/v1/nothing-here", headers=given),
        client.post("/v1/query", json={}, headers=given),
        client.post("/v1/collections/docs/documents", content=b"{}", headers=given),
    ):
        assert r.headers["X-Request-ID"] == "trace-7", r.status_code
        assert r.json()["request_id"] == "trace-7"
        assert r.headers.get_list("X-Request-ID") == ["trace-7"]  # one header, not two
    minted = client.post("/v1/query", json={})
    assert re.fullmatch(r"[0-9a-f]{32}", minted.headers["X-Request-ID"])
    assert minted.json()["request_id"] == minted.headers["X-Request-ID"]
    long = client.get("/healthz", headers={"X-Request-ID": "x" * 500})
    assert long.headers["X-Request-ID"] == "x" * 128


def test_access_log_is_one_json_line_per_request(
    client: TestClient, access_log: io.StringIO
) -> None:
    client.get("/v1/collections/missing", headers={"X-Request-ID": "log-1"})
    client.post("/v1/collections/docs/documents", content=b"{}", headers={"X-Request-ID": "log-2"})
    minted = client.get("/healthz").headers["X-Request-ID"]
    first, refused, health = (json.loads(line) for line in access_log.getvalue().splitlines())
    assert first["request_id"] == "log-1"
    assert (first["method"], first["route"], first["status"]) == (
        "GET",
        "/v1/collections/{name}",
        404,
    )
    assert first["logger"] == "covrag.access" and first["level"] == "INFO"
    assert first["duration_ms"] > 0 and first["ts"].endswith("+00:00")
    assert "/v1/collections/missing" in first["message"]
    assert (refused["request_id"], refused["status"]) == ("log-2", 415)
    assert refused["route"] == "/v1/collections/{name}/documents"
    assert health["request_id"] == minted


def test_json_formatter_outside_a_request() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        record = logging.LogRecord(
            "covrag.x", logging.ERROR, __file__, 1, "failed: %s", ("a",), None
        )
        record.exc_info = (type(exc), exc, exc.__traceback__)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed: a" and line["level"] == "ERROR"
    assert "request_id" not in line
    assert "ValueError: boom" in line["exc_info"]


def test_generator_replicas_are_exported_at_scrape_time(
    client: TestClient, settings: Settings
) -> None:
    """The fixture's generator URL is a closed port: the failure shows on its replica."""
    client.app.state.services.ingestor.ingest("docs", [EIFFEL_DOC])  # type: ignore[attr-defined]
    r = client.post("/v1/query", json={"question": EIFFEL, "collection": "docs"})
    assert r.status_code == 503, r.text
    (url,) = settings.generator.urls
    samples = scrape(client)
    assert value(samples, "covrag_generator_replica_state", replica=url) in (0.0, 1.0, 2.0)
    errors = sum(
        v
        for (name, labels), v in samples.items()
        if name == "covrag_generator_replica_errors_total" and dict(labels)["replica"] == url
    )
    assert errors >= 1
    assert requests(samples, "/v1/query", "POST", 503) == 1


def test_a_generator_without_replicas_still_scrapes(client: TestClient) -> None:
    client.app.state.metrics.watch_generator(object())  # type: ignore[attr-defined]
    samples = scrape(client)
    assert not [name for name, _ in samples if name.startswith("covrag_generator_replica")]


@pytest.fixture
def live(
    settings: Settings, generator_url: str, wiki_sample: list[Document]
) -> Iterator[TestClient]:
    """The app on the real vLLM worker, the wiki sample ingested in process."""
    app = create_app(settings.updated(generator={"urls": [generator_url]}))
    with TestClient(app) as c:
        app.state.services.ingestor.ingest("wiki", wiki_sample)
        yield c


@pytest.mark.integration
def test_queries_feed_stage_round_and_request_metrics(live: TestClient) -> None:
    plain = live.post("/v1/query", json={"question": HUBBLE, "top_k": 2})
    assert plain.status_code == 200, plain.text
    with live.stream(
        "POST",
        "/v1/query",
        json={"question": EIFFEL, "top_k": 2, "stream": True},
        headers={"X-Request-ID": "sse-1"},
    ) as streamed:
        body = streamed.read().decode()
    assert streamed.headers["X-Request-ID"] == "sse-1"
    assert "event: done" in body and '"request_id": "sse-1"' in body
    chat = {"model": "covrag", "messages": [{"role": "user", "content": "Where is Somaliland?"}]}
    assert live.post("/v1/chat/completions", json=chat).status_code == 200
    chat["messages"] = [{"role": "user", "content": "How high is Mount Everest?"}]
    with live.stream("POST", "/v1/chat/completions", json={**chat, "stream": True}) as chunks:
        assert chunks.read().decode().endswith("data: [DONE]\n\n")
    assert re.fullmatch(r"[0-9a-f]{32}", chunks.headers["X-Request-ID"])
    live.post("/v1/query", json={"question": HUBBLE, "collection": "missing"})
    live.post("/v1/chat/completions", json={"model": "covrag", "messages": []})

    samples = scrape(live)
    assert requests(samples, "/v1/query", "POST", 200) == 2
    assert requests(samples, "/v1/query", "POST", 404) == 1
    assert requests(samples, "/v1/chat/completions", "POST", 200) == 2
    assert requests(samples, "/v1/chat/completions", "POST", 422) == 1
    for stage in ("embed", "search", "filter", "reason", "generate"):
        assert value(samples, "covrag_stage_duration_seconds_count", stage=stage) == 4, stage
    assert value(samples, "covrag_stage_duration_seconds_sum", stage="generate") > 0
    assert value(samples, "covrag_query_rounds_count") == 4
    assert value(samples, "covrag_query_rounds_bucket", le="1.0") == 4  # no critic: one round
    assert value(samples, "covrag_abstentions_total") == 0
    took = value(
        samples, "covrag_http_request_duration_seconds_sum", route="/v1/query", method="POST"
    )
    assert took > 0


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    """The process's OpenTelemetry tracer provider (settable once), exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.mark.parametrize("otel", [False, True])
def test_opentelemetry_spans_only_when_turned_on(
    settings: Settings, spans: InMemorySpanExporter, otel: bool
) -> None:
    """``COVRAG_OTEL``: FastAPI's own spans go to a configured provider; off, nothing does."""
    spans.clear()
    with TestClient(create_app(settings.updated(server={"otel": otel}))) as c:
        assert c.get("/healthz").status_code == 200
    names = [span.name for span in spans.get_finished_spans()]
    assert ("GET /healthz" in names) is otel, names


def test_query_embedding_cache_is_exported(client: TestClient) -> None:
    """A repeated question is not embedded again, and ``/metrics`` says so."""
    client.app.state.services.ingestor.ingest("docs", [EIFFEL_DOC])  # type: ignore[attr-defined]
    for _ in range(2):
        r = client.post("/v1/retrieve", json={"question": EIFFEL, "collection": "docs"})
        assert r.status_code == 200, r.text
    samples = scrape(client)
    assert value(samples, "covrag_query_embedding_lookups_total", result="miss") == 1
    assert value(samples, "covrag_query_embedding_lookups_total", result="hit") == 1
    assert ("covrag_cache_errors_total", frozenset({("cache", "answer")})) in samples
    assert value(samples, "covrag_cache_errors_total", cache="query_embedding") == 0
