"""The vLLM client: a ``Generator`` protocol and ``VLLMGenerator`` over OpenAI-compatible servers.

Replicas are tried round-robin; a connection error or a 5xx moves on to the next one. Each
replica has a circuit breaker, so a dead one is skipped instead of costing every request a
failed connect, and the call fails fast with a Retry-After once all are open. At most
``max_concurrency`` calls are in flight and ``max_queue`` wait for a slot: a burst beyond that
is refused at once (``GeneratorBusy``) rather than queued past the deadline on a CPU worker.
The whole call, waiting and failover included, is bounded by one deadline so a dead or hung
worker gives a clean 503/504, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llm.base import Completion, FailureKind, ReplicaStatus, TextSink
from llm.breaker import Admission, CircuitBreaker
from llm.errors import (
    GeneratorRejected,
    GeneratorTimeout,
    GeneratorUnavailable,
)
from llm.grammar import compact_json_pattern

#: Errors that say "this replica is not there": try the next one.
_FAILOVER = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
#: No replica answered and some breaker is still closed: try again after about this long.
_DOWN_RETRY_S = 2.0
#: ``ping`` is idempotent, so a replica restarting is retried rather than flapping readiness.
_PING_ATTEMPTS = 3
_PING_DEADLINE_S = 5.0
_PING_BACKOFF_S = 0.2


@dataclass(frozen=True, slots=True)
class _Replica:
    url: str
    breaker: CircuitBreaker


class VLLMGenerator:
    """Chat completions from vLLM servers through one shared ``httpx.AsyncClient``.

    Example:
        >>> gen = VLLMGenerator(["http://127.0.0.1:8100/v1"], model="SmolLM2-135M-Instruct")
        >>> await gen.complete([{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0)
    """

    def __init__(
        self,
        urls: list[str],
        *,
        model: str,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 2.0,
        max_concurrency: int = 8,
        max_queue: int = 64,
        breaker_failures: int = 3,
        breaker_cooldown_s: float = 10.0,
    ) -> None:
        if not urls:
            raise ValueError("at least one generator URL is required")
        self.model = model
        self._replicas = [
            _Replica(
                u.rstrip("/"),
                CircuitBreaker(failures=breaker_failures, cooldown_s=breaker_cooldown_s),
            )
            for u in urls
        ]
        self._next = itertools.cycle(range(len(self._replicas)))
        self._admission = Admission(max_concurrency, max_queue)
        self._deadline_s = timeout_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s)
        )

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        request_id: str | None = None,
        json_schema: dict[str, Any] | None = None,
        stop: Sequence[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        on_text: TextSink | None = None,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if json_schema is not None:  # vLLM >= 0.12 takes structured_outputs, not guided_*
            body["structured_outputs"] = {"regex": compact_json_pattern(json_schema)}
        if stop:
            body["stop"] = list(stop)
        if logprobs or top_logprobs:
            body["logprobs"] = True
        if top_logprobs:
            body["top_logprobs"] = top_logprobs
        if on_text is not None:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        data = await self._request(
            "POST",
            "/chat/completions",
            body,
            request_id,
            deadline_s=self._deadline_s,
            on_text=on_text,
        )
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        tokens = (choice.get("logprobs") or {}).get("content") or []
        top = (tokens[0].get("top_logprobs") or []) if tokens else []
        return Completion(
            text=(choice["message"].get("content") or "").strip(),
            model=str(data.get("model") or self.model),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
            mean_logprob=sum(t["logprob"] for t in tokens) / len(tokens) if tokens else None,
            first_token_top_logprobs=tuple((str(t["token"]), float(t["logprob"])) for t in top),
        )

    async def ping(self) -> None:
        """Retried with jittered backoff (it is idempotent) within one 5 s budget; not once all
        circuits are open, as nothing could answer before they half-open."""
        end = time.monotonic() + min(self._deadline_s, _PING_DEADLINE_S)
        for attempt in itertools.count(1):
            try:
                await self._request(
                    "GET", "/models", None, None, deadline_s=end - time.monotonic(), admit=False
                )
                return
            except GeneratorUnavailable:
                delay = _PING_BACKOFF_S * 2 ** (attempt - 1) * random.uniform(0.5, 1.0)
                if (
                    all(r.breaker.blocked for r in self._replicas)
                    or attempt == _PING_ATTEMPTS
                    or time.monotonic() + delay >= end
                ):
                    raise
                await asyncio.sleep(delay)

    def fail_fast(self) -> None:
        if all(r.breaker.blocked for r in self._replicas):
            raise self._unavailable([])

    def replicas(self) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(
                url=r.url,
                state=r.breaker.state,
                consecutive_failures=r.breaker.consecutive_failures,
                errors_total=dict(r.breaker.errors_total),
            )
            for r in self._replicas
        ]

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        request_id: str | None,
        *,
        deadline_s: float,
        on_text: TextSink | None = None,
        admit: bool = True,
    ) -> dict[str, Any]:
        """One request, failing over between replicas whose breakers let it through.

        ``admit``: take a concurrency slot first (generations do; the readiness ping must not
        queue behind them). Waiting for the slot counts against the deadline, and a streamed
        call keeps its slot until its stream ends or is cancelled.
        """
        headers = {"X-Request-ID": request_id} if request_id else {}
        failures: list[str] = []
        reader = _StreamReader(on_text) if on_text is not None else None
        self.fail_fast()
        slot = self._admission.slot() if admit else contextlib.nullcontext()
        try:
            async with asyncio.timeout(deadline_s) as deadline, slot:
                for replica in self._rotation():
                    call = _Call(replica, deadline, reader, failures)
                    result = await call.send(self._client, method, path, body, headers)
                    if result is not None:
                        return result
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise GeneratorTimeout(f"generator did not answer within {deadline_s:g} s") from exc
        raise self._unavailable(failures)

    def _rotation(self) -> list[_Replica]:
        """Every replica once, starting at the next in round-robin order."""
        first = next(self._next)
        return self._replicas[first:] + self._replicas[:first]

    def _unavailable(self, failures: list[str]) -> GeneratorUnavailable:
        """The error once no replica answered. It always carries a Retry-After: with every
        circuit open, when the first half-opens; else ``_DOWN_RETRY_S`` (a refused connect says
        nothing about when the worker is back), so clients back off instead of hammering."""
        why = "; ".join(failures) or "every replica's circuit breaker is open"
        retry_after = _DOWN_RETRY_S
        if all(r.breaker.blocked for r in self._replicas):
            retry_after = min(r.breaker.retry_after() for r in self._replicas)
        return GeneratorUnavailable(
            f"no generator replica answered: {why}", retry_after=retry_after
        )


def _failure_kind(exc: httpx.HTTPError) -> FailureKind:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timeout"
    return "connect" if isinstance(exc, httpx.ConnectError) else "reset"


@dataclass
class _Call:
    """One try at one replica, reporting its outcome to the replica's breaker."""

    replica: _Replica
    deadline: asyncio.Timeout
    reader: _StreamReader | None
    failures: list[str]

    async def send(
        self,
        client: httpx.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        headers: dict[str, str],
    ) -> dict[str, Any] | None:
        """The reply, or None to fail over (refused, reset, 5xx, or a skipped open breaker).

        A streamed reply fails over only before its first piece of text: once text went out,
        a broken stream is the caller's error (``GeneratorUnavailable``), not a silent retry.
        """
        breaker = self.replica.breaker
        trial = breaker.state != "closed"
        if not breaker.allow():
            return None
        url = self.replica.url + path
        try:
            async with client.stream(method, url, json=body, headers=headers) as response:
                if response.status_code >= 500:
                    await response.aread()
                    self._failed("http_5xx", f"HTTP {response.status_code}")
                    return None
                breaker.success()  # it answered, even if to refuse the request
                if response.status_code >= 400:
                    await response.aread()
                    raise GeneratorRejected(f"generator refused the request: {response.text[:300]}")
                if self.reader is not None:
                    return await self.reader.read(response)
                result: dict[str, Any] = json.loads(await response.aread())
                return result
        except _FAILOVER as exc:
            kind = _failure_kind(exc)
            if self.reader is not None and self.reader.started:
                breaker.failure(kind)
                raise GeneratorUnavailable(
                    f"{url}: the stream broke ({type(exc).__name__})"
                ) from exc
            self._failed(kind, type(exc).__name__)
            return None
        except httpx.TimeoutException:
            breaker.failure("timeout")
            raise
        except BaseException as exc:  # the deadline cancels us; anything else is no verdict
            if isinstance(exc, asyncio.CancelledError) and self.deadline.expired():
                breaker.failure("timeout")
            elif trial:
                breaker.abandon()
            raise

    def _failed(self, kind: FailureKind, why: str) -> None:
        self.replica.breaker.failure(kind)
        self.failures.append(f"{self.replica.url}: {why}")


@dataclass
class _StreamReader:
    """Reads vLLM's SSE chunks, passing text on as it comes, into the non-streamed reply shape."""

    on_text: TextSink
    parts: list[str] = field(default_factory=list)

    @property
    def started(self) -> bool:
        """Text has gone out to ``on_text``: too late to fail over."""
        return bool(self.parts)

    async def read(self, response: httpx.Response) -> dict[str, Any]:
        model, finish = None, None
        usage: dict[str, Any] = {}
        logprobs: list[dict[str, Any]] = []
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            model = chunk.get("model", model)
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                logprobs += (choice.get("logprobs") or {}).get("content") or []
                finish = choice.get("finish_reason") or finish
                text = (choice.get("delta") or {}).get("content")
                if text:
                    self.parts.append(text)
                    await self.on_text(text)
        message = {"content": "".join(self.parts)}
        choice = {"message": message, "finish_reason": finish, "logprobs": {"content": logprobs}}
        return {"model": model, "choices": [choice], "usage": usage}
