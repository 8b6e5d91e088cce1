"""Prometheus metrics. Each app owns a ``Metrics`` on its own registry, so two apps in one
process (tests, embedding) never share counters or collide on names."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from retrieval.drift import DriftWatches

#: Seconds, 1 ms to 60 s: a cached retrieval and a slow multi-round CPU generation on one scale.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
)
#: Pipeline stages timed per query (``generate`` = ``reason`` + ``rewrite``: every LLM call).
STAGES = ("embed", "search", "filter", "reason", "critic", "rewrite", "generate")
#: Methods kept as labels; anything else a client sends is "OTHER" (bounded series).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: A replica's circuit-breaker state as a gauge value.
REPLICA_STATES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


class Replica(Protocol):
    """What the replica collector reads of a generator replica's status."""

    @property
    def url(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def errors_total(self) -> dict[str, int]: ...


class _ReplicaCollector(Collector):
    """Reads the generator's replicas at scrape time, so nothing has to be kept in step; a
    generator without ``replicas()`` exports nothing."""

    def __init__(self) -> None:
        self.generator: object | None = None

    def collect(self) -> Iterator[Metric]:
        replicas: Callable[[], Sequence[Replica]] | None = getattr(self.generator, "replicas", None)
        if replicas is None:
            return
        errors = CounterMetricFamily(
            "covrag_generator_replica_errors",
            "Failed generator calls per replica and kind of error.",
            labels=("replica", "kind"),
        )
        state = GaugeMetricFamily(
            "covrag_generator_replica_state",
            "Circuit breaker per replica: 0 closed, 1 half_open, 2 open.",
            labels=("replica",),
        )
        for replica in replicas():
            state.add_metric((replica.url,), REPLICA_STATES[replica.state])
            for kind, count in replica.errors_total.items():
                errors.add_metric((replica.url, kind), count)
        yield errors
        yield state


class CacheCounts(Protocol):
    """What the cache collector reads of the query-embedding cache."""

    hits: int
    misses: int
    errors: int


class _CacheCollector(Collector):
    """The query-embedding cache's own counters (it runs in worker threads, below the app)
    and each cache's backend errors, read at scrape time."""

    def __init__(self) -> None:
        self.embeddings: CacheCounts | None = None
        self.answer_errors: Callable[[], int] | None = None

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "covrag_cache_errors",
            "Cache backend (Redis) errors by cache: each one bypassed the cache.",
            labels=("cache",),
        )
        if self.answer_errors is not None:
            errors.add_metric(("answer",), self.answer_errors())
        if self.embeddings is not None:
            lookups = CounterMetricFamily(
                "covrag_query_embedding_lookups",
                "Query-embedding cache lookups by result (hit: the question was not embedded).",
                labels=("result",),
            )
            lookups.add_metric(("hit",), self.embeddings.hits)
            lookups.add_metric(("miss",), self.embeddings.misses)
            yield lookups
            errors.add_metric(("query_embedding",), self.embeddings.errors)
        yield errors


class _DriftCollector(Collector):
    """Each collection's shift watch, read at scrape time."""

    def __init__(self) -> None:
        self.watches: DriftWatches | None = None

    def collect(self) -> Iterator[Metric]:
        families = {
            "flagged": GaugeMetricFamily(
                "covrag_drift_flagged",
                "1 once the shift watch found live questions unlike the calibration set.",
                labels=("collection",),
            ),
            "requests": GaugeMetricFamily(
                "covrag_drift_requests",
                "Live questions the shift watch has compared with the calibration set.",
                labels=("collection",),
            ),
            "p_value": GaugeMetricFamily(
                "covrag_drift_p_value",
                "The last tested block's smallest Kolmogorov-Smirnov p-value.",
                labels=("collection",),
            ),
            "live": GaugeMetricFamily(
                "covrag_none_cleared_share",
                "Share of live requests where no chunk cleared the threshold.",
                labels=("collection",),
            ),
            "predicted": GaugeMetricFamily(
                "covrag_none_cleared_predicted_share",
                "The share the calibration set predicts at the same thresholds.",
                labels=("collection",),
            ),
        }
        for name, watch in self.watches.watched() if self.watches is not None else []:
            status = watch.status()
            families["flagged"].add_metric((name,), float(status.drifted))
            families["requests"].add_metric((name,), status.requests)
            for key, value in (
                ("p_value", status.p_value),
                ("live", status.live_none_cleared),
                ("predicted", status.predicted_none_cleared),
            ):
                if value is not None:
                    families[key].add_metric((name,), value)
        yield from families.values()


class Metrics:
    """The app's metrics; ``render`` gives the text exposition format for ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "covrag_http_requests",
            "HTTP requests by route template, method and status.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self._duration = Histogram(
            "covrag_http_request_duration_seconds",
            "HTTP request time, to the last byte of the response.",
            ("route", "method"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "covrag_http_requests_in_flight",
            "API requests (/v1 routes) being served now: what the API autoscales on.",
            registry=self.registry,
        )
        self._stages = Histogram(
            "covrag_stage_duration_seconds",
            "Pipeline stage time per query, summed over its rounds.",
            ("stage",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._rounds = Histogram(
            "covrag_query_rounds",
            "Retrieval rounds per query.",
            buckets=(1, 2, 3, 4, 5),
            registry=self.registry,
        )
        self._abstentions = Counter(
            "covrag_abstentions", "Queries answered with an abstention.", registry=self.registry
        )
        self._cache = Counter(
            "covrag_cache_requests",
            "Cache lookups by cache and result (hit, miss).",
            ("cache", "result"),
            registry=self.registry,
        )
        self._dependency_up = Gauge(
            "covrag_dependency_up",
            "Last /readyz result per dependency: 1 ok, 0 failed (the probe runs every 10 s).",
            ("dependency",),
            registry=self.registry,
        )
        self._ready = Gauge(
            "covrag_ready",
            "Last /readyz verdict: 1 when every required check passed.",
            registry=self.registry,
        )
        #: Labelled children per (route, method, status): ``labels()`` takes a lock per call.
        self._http: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._replicas = _ReplicaCollector()
        self.registry.register(self._replicas)
        self._caches = _CacheCollector()
        self.registry.register(self._caches)
        self._drift = _DriftCollector()
        self.registry.register(self._drift)

    def watch_generator(self, generator: object) -> None:
        """Export ``generator.replicas()`` at scrape time (if it has that method)."""
        self._replicas.generator = generator

    def watch_caches(self, embeddings: CacheCounts, answer_errors: Callable[[], int]) -> None:
        """Export the query-embedding cache's counts and both caches' errors at scrape time."""
        self._caches.embeddings = embeddings
        self._caches.answer_errors = answer_errors

    def watch_drift(self, watches: DriftWatches) -> None:
        """Export each collection's shift watch at scrape time."""
        self._drift.watches = watches

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """On every request's path, so the labelled children are looked up once per label set."""
        key = (route, method if method in HTTP_METHODS else "OTHER", status)
        children = self._http.get(key)
        if children is None:
            children = self._http[key] = (
                self._requests.labels(route, key[1], str(status)),
                self._duration.labels(route, key[1]),
            )
        children[0].inc()
        children[1].observe(seconds)

    def request_started(self) -> None:
        self._in_flight.inc()

    def request_finished(self) -> None:
        self._in_flight.dec()

    def observe_query(self, timings_ms: Mapping[str, float], rounds: int, abstained: bool) -> None:
        """One answered query, streamed or not: its stage times in ms (summed over its
        rounds), its rounds and whether it abstained."""
        for stage in STAGES:
            if stage in timings_ms:
                self._stages.labels(stage).observe(timings_ms[stage] / 1000)
        self._rounds.observe(rounds)
        if abstained:
            self._abstentions.inc()

    def observe_readiness(self, up: dict[str, bool], required: list[str]) -> None:
        """One /readyz run: each dependency's state, and whether the required ones passed."""
        for name, ok in up.items():
            self._dependency_up.labels(name).set(1.0 if ok else 0.0)
        self._ready.set(1.0 if all(up[name] for name in required) else 0.0)

    def cache_result(self, cache: str, hit: bool) -> None:
        self._cache.labels(cache, "hit" if hit else "miss").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
