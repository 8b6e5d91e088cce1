"""Answer cache, API keys, rate limits and durable jobs — against real Redis and, without it,
the in-process equivalents behind the same interfaces; Redis killed mid-test for the faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.state.auth import (
    ApiKeySpec,
    Bucket,
    MemoryRateLimiter,
    RateLimited,
    RedisRateLimiter,
)
from app.state.cache import AnswerCache, Entry, MemoryAnswers, RedisAnswers
from app.state.jobs import Job, JobRegistry, RedisJobStore
from app.state.redis_pipe import PipelinedRedis
from retrieval.types import Document
from tests.app.jobs_helper import ingest, wait_job
from tests.app.test_observability import EIFFEL, EIFFEL_DOC, scrape, value
from tests.redis_server import RedisServer

QUESTION = {"question": "What is the capital of Somaliland?"}


def _docs(docs: list[Document]) -> dict[str, list[dict[str, str]]]:
    return {"documents": [{"id": d.id, "title": d.title, "text": d.text} for d in docs]}


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """The same settings on in-process state, or on the session's real Redis (own prefix)."""
    if request.param == "memory":
        return settings
    url = request.getfixturevalue("redis_url")
    return settings.updated(redis={"url": url, "prefix": f"t{uuid.uuid4().hex}:"})


# --- answer cache ------------------------------------------------------------------------


def test_answer_cache_hits_and_is_invalidated_by_writes(
    backend: Settings, generator_url: str, wiki_sample: list[Document]
) -> None:
    live = backend.updated(generator={"urls": [generator_url]})
    with TestClient(create_app(live)) as client:
        ingest(client, "wiki", _docs(wiki_sample[:6]))
        first = client.post("/v1/query", json=QUESTION)
        assert first.status_code == 200, first.text
        assert first.json()["cached"] is False
        # Same question up to case, spacing and the question mark: served from the cache.
        again = client.post("/v1/query", json={"question": "  what is the capital of SOMALILAND "})
        body = again.json()
        assert body["cached"] is True and body["answer"] == first.json()["answer"]
        assert body["request_id"] == again.headers["X-Request-ID"] != first.json()["request_id"]
        # Another alpha/top_k is another answer: not served from this entry.
        other = client.post("/v1/query", json={**QUESTION, "top_k": 2})
        assert other.json()["cached"] is False
        # Any write to the collection makes the old answers unreachable.
        ingest(client, "wiki", {"documents": [{"id": "new", "text": "Unrelated new text."}]})
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is False
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is True
        assert client.delete("/v1/collections/wiki/documents/new").status_code == 200
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is False


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_answer_cache_keys_versions_and_redis_outage(kind: str, tmp_path: Path) -> None:
    """The cache alone, quickly: what makes two questions one entry, what a write does, and a
    Redis outage — reads bypass, a missed invalidation is replayed before the next read."""
    server = RedisServer(tmp_path)
    server.start()

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(server.url, socket_timeout=0.5)
        pipe = PipelinedRedis.from_url(server.url, timeout_s=0.5)
        limiter = MemoryRateLimiter() if kind == "memory" else RedisRateLimiter(pipe)
        store = MemoryAnswers(limiter) if kind == "memory" else RedisAnswers(client, pipe)
        cache = AnswerCache(store, ttl_s=60)
        shape = {"alpha": 0.1}

        async def entry(question: str, collection: str = "c", **kw: float) -> Entry:
            found = await cache.lookup(collection, question, {**shape, **kw})
            assert found is not None
            return found

        first = await entry("Who wrote Hamlet?")
        assert first.value is None
        assert (await entry("  who WROTE hamlet ")).digest == first.digest
        assert (await entry("Who wrote Hamlet?", alpha=0.2)).digest != first.digest
        await cache.put(first, b'{"answer":"Shakespeare"}')
        assert (await entry("Who wrote Hamlet?", "d")).value is None
        hit = await entry("who wrote hamlet?")
        assert hit.value is not None
        assert json.loads(cache.respond(hit.value, 'id"1')) == {
            "answer": "Shakespeare",
            "request_id": 'id"1',
            "cached": True,
        }
        # With a bucket, the lookup takes the key's token first, from the limiter's buckets.
        bucket = Bucket(f"k-{kind}", rate_per_s=0.1, burst=2)
        assert await limiter.take(bucket) == 0  # token 1 of 2, by the limiter
        charged = await cache.lookup("c", "who wrote hamlet?", shape, bucket)  # token 2
        assert charged is not None and charged.value == hit.value
        with pytest.raises(RateLimited) as limited:
            await cache.lookup("c", "who wrote hamlet?", shape, bucket)
        assert 5 < limited.value.retry_after <= 10  # one token per 10 s
        assert await limiter.take(bucket) > 5  # the same bucket, still empty
        await cache.invalidate("c")
        fresh = await entry("Who wrote Hamlet?")
        assert fresh.version == first.version + 1 and fresh.value is None
        await cache.put(fresh, b"{}")
        if kind == "redis":
            server.stop()
            await cache.invalidate("c")  # missed: remembered
            assert await cache.lookup("c", "Who wrote Hamlet?", shape) is None  # bypassed
            assert cache.stats.errors >= 2
            server.start()  # an empty Redis: put back what it held before it died
            await client.set("covrag:cv:c", fresh.version)
            await client.set(f"covrag:ans:c:{fresh.version}:{fresh.digest}", b"{}")
            replayed = await entry("Who wrote Hamlet?")
            assert replayed.version == fresh.version + 1 and replayed.value is None
        await client.aclose()
        await pipe.aclose()

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_cache_off_when_ttl_is_zero(
    settings: Settings, generator_url: str, wiki_sample: list[Document]
) -> None:
    live = settings.updated(
        generator={"urls": [generator_url], "max_tokens": 8}, cache={"answer_ttl_s": 0}
    )
    with TestClient(create_app(live)) as client:
        ingest(client, "wiki", _docs(wiki_sample[:3]))
        for _ in range(2):
            assert client.post("/v1/query", json=QUESTION).json()["cached"] is False


# --- API keys and scoping ----------------------------------------------------------------

ADMIN = "admin-secret-key"
TEAM = "team-a-secret-key"


@pytest.fixture
def keyed(backend: Settings) -> Iterator[TestClient]:
    keys = [
        ApiKeySpec(name="admin", key=ADMIN),  # type: ignore[arg-type]
        ApiKeySpec(
            name="team-a",
            sha256=hashlib.sha256(TEAM.encode()).hexdigest(),
            collections=["team-a"],
        ),
    ]
    with TestClient(create_app(backend.updated(auth={"api_keys": keys}))) as client:
        yield client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_keys_are_required_and_checked(keyed: TestClient) -> None:
    for headers in ({}, _auth("wrong"), {"Authorization": "Basic abc"}):
        r = keyed.get("/v1/collections", headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "unauthorized" and r.json()["request_id"]
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert keyed.get("/v1/collections", headers=_auth(ADMIN)).status_code == 200
    assert keyed.get("/v1/collections", headers={"X-API-Key": TEAM}).status_code == 200
    assert keyed.get("/healthz").status_code == 200  # probes stay open


def test_a_key_sees_and_changes_only_its_collections(keyed: TestClient) -> None:
    doc = {"documents": [{"id": "a", "text": "Team A keeps its notes here."}]}
    keyed.headers.update(_auth(ADMIN))
    b_job = keyed.post("/v1/collections/team-b/documents", json=doc).json()["id"]
    assert wait_job(keyed, b_job)["status"] == "succeeded"
    keyed.headers.update(_auth(TEAM))
    ingest(keyed, "team-a", doc)
    r = keyed.post("/v1/collections/team-b/documents", json=doc)
    assert r.status_code == 403 and r.json()["error"]["type"] == "forbidden"
    assert [c["name"] for c in keyed.get("/v1/collections").json()["collections"]] == ["team-a"]
    assert keyed.get(f"/v1/jobs/{b_job}").status_code == 403
    assert keyed.get("/v1/collections/team-b").status_code == 403
    assert keyed.get("/v1/collections/team-b/calibration").status_code == 403
    assert keyed.delete("/v1/collections/team-b/documents/a").status_code == 403
    assert keyed.post("/v1/retrieve", json={**QUESTION, "collection": "team-b"}).status_code == 403
    assert keyed.post("/v1/query", json={**QUESTION, "collection": "team-b"}).status_code == 403
    chat = {"model": "covrag/team-b", "messages": [{"role": "user", "content": "Hi?"}]}
    assert keyed.post("/v1/chat/completions", json=chat).status_code == 403
    models = [m["id"] for m in keyed.get("/v1/models").json()["data"]]
    assert "covrag/team-a" in models and "covrag/team-b" not in models
    keyed.headers.update(_auth(ADMIN))
    names = {c["name"] for c in keyed.get("/v1/collections").json()["collections"]}
    assert names == {"team-a", "team-b"}
    assert keyed.get("/v1/collections/team-b").json()["documents"] == 1  # nothing was changed


# --- rate limits -------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(backend: Settings) -> None:
    spec = ApiKeySpec(name="slow", key=TEAM, rate_limit_per_minute=6, rate_limit_burst=2)  # type: ignore[arg-type]
    limited = backend.updated(auth={"api_keys": [spec]})
    with TestClient(create_app(limited), headers=_auth(TEAM)) as client:
        assert [client.get("/v1/collections").status_code for _ in range(2)] == [200, 200]
        r = client.get("/v1/collections")
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 10  # one token per 10 s


def test_cache_hits_below_the_router_keep_every_check(
    backend: Settings, generator_url: str, wiki_sample: list[Document]
) -> None:
    """Hits are answered by ``app.api.fastpath`` before routing: the same key, scope, limit and
    validation decisions as the route, one token per request (a miss is not charged twice),
    and the request still counted under its route."""
    keys = [
        ApiKeySpec(name="admin", key=ADMIN),  # type: ignore[arg-type]
        ApiKeySpec(
            name="team-a",
            key=TEAM,  # type: ignore[arg-type]
            collections=["team-a"],
            rate_limit_per_minute=6,
            rate_limit_burst=3,
        ),
        ApiKeySpec(name="team-b", key="team-b-key", collections=["team-b"]),  # type: ignore[arg-type]
    ]
    live = backend.updated(
        generator={"urls": [generator_url], "max_tokens": 16}, auth={"api_keys": keys}
    )
    asked = {**QUESTION, "collection": "team-a"}
    with TestClient(create_app(live)) as client:
        client.headers.update(_auth(ADMIN))
        ingest(client, "team-a", _docs(wiki_sample[:4]))
        del client.headers["Authorization"]  # from here on, each request names its key
        first = client.post("/v1/query", json=asked, headers=_auth(TEAM))  # miss: 1 token
        assert first.status_code == 200 and first.json()["cached"] is False, first.text
        for _ in range(2):  # hits: tokens 2 and 3 of the burst
            hit = client.post("/v1/query", json=asked, headers={"X-API-Key": TEAM})
            assert hit.status_code == 200 and hit.json()["cached"] is True, hit.text
            assert hit.json()["request_id"] == hit.headers["X-Request-ID"]
            assert hit.json()["answer"] == first.json()["answer"]
        scripts_run = _script_calls(backend)
        limited = client.post("/v1/query", json=asked, headers=_auth(TEAM))
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        if scripts_run is not None:  # one limiter decision (with the lookup), not a second
            assert _script_calls(backend) == scripts_run + 1
        for headers in ({}, _auth("wrong"), {"Authorization": f"Basic {TEAM}"}):
            refused = client.post("/v1/query", json=asked, headers=headers)
            assert refused.status_code == 401 and refused.json()["request_id"], refused.text
        other_team = client.post("/v1/query", json=asked, headers=_auth("team-b-key"))
        assert other_team.status_code == 403, other_team.text
        bogus = client.post("/v1/query", json={**asked, "bogus": 1}, headers=_auth(ADMIN))
        assert bogus.status_code == 422, bogus.text
        assert client.post("/v1/query", json=asked, headers=_auth(ADMIN)).json()["cached"] is True
        streamed = client.post("/v1/query", json={**asked, "stream": True}, headers=_auth(ADMIN))
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert "event: done" in streamed.text
        metrics = client.get("/metrics").text
        assert 'covrag_cache_requests_total{cache="answer",result="hit"} 3.0' in metrics
        counted = 'covrag_http_requests_total{method="POST",route="/v1/query",status="200"} 5.0'
        assert counted in metrics  # 1 miss, 3 hits, 1 stream


def _script_calls(settings: Settings) -> int | None:
    """Lua scripts Redis has run so far; None without Redis."""
    if settings.redis.url is None:
        return None
    stats = redis.Redis.from_url(settings.redis.url).info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def test_replicas_share_one_bucket_through_redis(settings: Settings, redis_url: str) -> None:
    spec = ApiKeySpec(name="shared", key=TEAM, rate_limit_per_minute=6, rate_limit_burst=2)  # type: ignore[arg-type]
    shared = settings.updated(
        auth={"api_keys": [spec]}, redis={"url": redis_url, "prefix": f"t{uuid.uuid4().hex}:"}
    )
    other = shared.updated(store={"data_dir": settings.store.data_dir.parent / "replica2"})
    with (
        TestClient(create_app(shared), headers=_auth(TEAM)) as one,
        TestClient(create_app(other), headers=_auth(TEAM)) as two,
    ):
        assert one.get("/v1/collections").status_code == 200
        assert two.get("/v1/collections").status_code == 200
        assert one.get("/v1/collections").status_code == 429
        assert two.get("/v1/collections").status_code == 429


def test_replicas_share_question_embeddings_through_redis(
    settings: Settings, redis_url: str
) -> None:
    """A question one replica embedded is a hit on the other: the vector is in Redis, TTL'd."""
    prefix = f"t{uuid.uuid4().hex}:"
    shared = settings.updated(redis={"url": redis_url, "prefix": prefix})
    other = shared.updated(store={"data_dir": settings.store.data_dir.parent / "replica2"})
    ask = {"question": EIFFEL, "collection": "docs"}
    with TestClient(create_app(shared)) as one, TestClient(create_app(other)) as two:
        for client in (one, two):
            client.app.state.services.ingestor.ingest("docs", [EIFFEL_DOC])  # type: ignore[attr-defined]
        first = one.post("/v1/retrieve", json=ask)
        assert first.status_code == 200, first.text
        with closing(redis.Redis.from_url(redis_url)) as r:
            deadline = time.monotonic() + 5  # the write is a task on one's loop, after the reply
            while not (stored := r.keys(f"{prefix}qe:*")) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(stored) == 1 and r.ttl(stored[0]) > 0
        second = two.post("/v1/retrieve", json=ask)
        assert second.status_code == 200, second.text
        assert second.json()["citations"] == first.json()["citations"]
        samples = scrape(two)
        assert value(samples, "covrag_query_embedding_lookups_total", result="hit") == 1
        assert value(samples, "covrag_query_embedding_lookups_total", result="miss") == 0


# --- Redis down --------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis this test may kill."""
    server = RedisServer(tmp_path / "redis")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("on_error", ["open", "closed"])
def test_redis_down_bypasses_the_cache_and_limits_per_setting(
    settings: Settings,
    own_redis: RedisServer,
    generator_url: str,
    wiki_sample: list[Document],
    on_error: str,
) -> None:
    spec = ApiKeySpec(name="k", key=TEAM, rate_limit_per_minute=6000)  # type: ignore[arg-type]
    s = settings.updated(
        generator={"urls": [generator_url], "max_tokens": 16},
        redis={"url": own_redis.url},
        auth={"api_keys": [spec], "rate_limit_on_error": on_error},
    )
    with TestClient(create_app(s), headers=_auth(TEAM)) as client:
        ingest(client, "wiki", _docs(wiki_sample[:4]))
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is False
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is True
        own_redis.stop()
        r = client.post("/v1/query", json=QUESTION)
        if on_error == "open":  # admitted unchecked; the cache is bypassed, the query answered
            assert r.status_code == 200, r.text
            assert r.json()["cached"] is False
            # A job cannot be stored: refused, not acknowledged and lost.
            r = client.post("/v1/collections/wiki/documents", json=_docs(wiki_sample[4:5]))
            assert r.status_code == 503 and r.json()["error"]["type"] == "redis_unavailable"
        else:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "rate_limiter_unavailable"
            assert int(r.headers["Retry-After"]) >= 1
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("failed")
        own_redis.start()  # same port, empty: Redis is back, so is everything
        assert client.get("/readyz").json()["checks"]["redis"] == "ok"
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is False
        assert client.post("/v1/query", json=QUESTION).json()["cached"] is True


# --- durable jobs ------------------------------------------------------------------------


def test_a_job_resumes_on_another_replica_after_a_graceful_stop(
    settings: Settings, redis_url: str, wiki_sample: list[Document]
) -> None:
    """Replica one stops (lifespan shutdown) mid-ingestion; replica two finishes the job."""
    s = settings.updated(redis={"url": redis_url, "prefix": f"t{uuid.uuid4().hex}:"})
    with TestClient(create_app(s)) as one:
        r = one.post("/v1/collections/wiki/documents", json=_docs(wiki_sample))
        assert r.status_code == 202
        job_id = r.json()["id"]
    with TestClient(create_app(s)) as two:
        job = wait_job(two, job_id)
        assert job["status"] == "succeeded", job
        assert job["attempts"] >= 1 and job["result"]["documents"] == len(wiki_sample)
        assert two.get("/v1/collections/wiki").json()["documents"] == len(wiki_sample)


def test_a_job_whose_runner_died_is_claimed_after_its_lease(redis_url: str) -> None:
    """A crash leaves a running job with a lease nobody renews: a sweep takes it over once the
    lease lapses; a job interrupted too often is reported failed, never left running."""

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        store = RedisJobStore(client, prefix=f"t{uuid.uuid4().hex}:")
        ran: list[str] = []

        async def body(job: Job) -> dict[str, object]:
            ran.append(job.id)
            return {"ok": True}

        orphan = Job(id=uuid.uuid4().hex, kind="k", collection="c", status="running", attempts=1)
        spent = Job(id=uuid.uuid4().hex, kind="k", collection="c", status="running", attempts=3)
        for job in (orphan, spent):
            await store.save(job)
        assert await store.lease(orphan.id, "the-dead-process", 0.3)  # still held…
        registry = JobRegistry(store, {"k": body}, lease_s=0.3, max_attempts=3)
        await registry.start(sweep=True)
        assert (await registry.get(orphan.id)).status == "running"  # …so not taken yet
        failed = await registry.get(spent.id)
        assert failed.status == "failed" and "interrupted 3 times" in (failed.error or "")
        for _ in range(50):
            await asyncio.sleep(0.1)
            if (await registry.get(orphan.id)).status == "succeeded":
                break
        done = await registry.get(orphan.id)
        assert done.status == "succeeded" and done.attempts == 2 and ran == [orphan.id]
        assert await store.unfinished() == []
        await registry.aclose()
        await client.aclose()

    asyncio.run(scenario())


def test_redis_password_is_escaped_into_the_url() -> None:
    """The chart passes the password apart (COVRAG_REDIS_PASSWORD): one with ``@:/%`` in it
    must reach Redis intact, not break the URL."""
    from redis.connection import parse_url

    s = Settings(redis={"url": "redis://covrag-redis:6379/0", "password": "p@ss:w/rd%"})
    parsed = parse_url(s.redis.url or "")
    assert (parsed["password"], parsed["host"], parsed["port"]) == (
        "p@ss:w/rd%",
        "covrag-redis",
        6379,
    )
