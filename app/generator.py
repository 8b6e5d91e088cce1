"""The vLLM client: a ``Generator`` protocol and ``VLLMGenerator`` over OpenAI-compatible servers.

Replicas are tried round-robin; a connection error or a 5xx moves on to the next one. The
whole call, failover included, is bounded by one deadline so a dead or hung worker gives a
clean 503/504, never a hang.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

#: Receives each piece of a streamed reply as it arrives.
TextSink = Callable[[str], Awaitable[None]]

#: Errors that say "this replica is not there": try the next one.
_FAILOVER = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)


class GeneratorError(Exception):
    """Base of the generator's errors."""


class GeneratorUnavailable(GeneratorError):
    """No replica accepted the request (refused, reset, 5xx)."""


class GeneratorTimeout(GeneratorError):
    """The generator did not finish within the configured deadline."""


class GeneratorRejected(GeneratorError):
    """A replica refused the request itself (4xx), e.g. a prompt over the model's length."""


_JSON_VALUE = {"boolean": "(true|false)", "integer": r"-?[0-9]{1,9}"}


def compact_json_pattern(schema: dict[str, Any]) -> str:
    """A regex for one compact JSON object of a flat schema, its keys in declared order.

    Why not ``response_format``: under a JSON-schema grammar SmolLM2 puts blank lines between
    every token, which triples the decoded tokens; a regex leaves it no whitespace to spend.
    Strings exclude quotes, backslashes and newlines, so the reply always parses.
    """
    parts = []
    for key, spec in schema["properties"].items():
        kind = spec.get("type")
        if kind == "string":
            low, high = spec.get("minLength", 0), spec.get("maxLength", 200)
            value = f'"[^"\\\\\\n]{{{low},{high}}}"'
        elif kind in _JSON_VALUE:
            value = _JSON_VALUE[kind]
        else:
            raise ValueError(f"compact_json_pattern: unsupported type {kind!r} for {key!r}")
        parts.append(f'"{re.escape(key)}": {value}')
    return r"\{" + ", ".join(parts) + r"\}"


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    mean_logprob: float | None = None


class Generator(Protocol):
    """An OpenAI-compatible chat model behind one or more URLs."""

    model: str

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        request_id: str | None = None,
        json_schema: dict[str, Any] | None = None,
        logprobs: bool = False,
        on_text: TextSink | None = None,
    ) -> Completion:
        """One chat completion; with ``json_schema`` (flat: strings, booleans, integers) the
        reply is one compact JSON object of it, with ``logprobs`` its mean token
        log-probability is reported, with ``on_text`` it is streamed and each piece of text is
        handed over as it arrives."""
        ...

    async def ping(self) -> None:
        """Raise ``GeneratorError`` unless some replica answers a tiny request."""
        ...

    async def aclose(self) -> None: ...


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
    ) -> None:
        if not urls:
            raise ValueError("at least one generator URL is required")
        self.model = model
        self._urls = [u.rstrip("/") for u in urls]
        self._next = itertools.cycle(range(len(self._urls)))
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
        logprobs: bool = False,
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
        if logprobs:
            body["logprobs"] = True
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
        return Completion(
            text=(choice["message"].get("content") or "").strip(),
            model=str(data.get("model") or self.model),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason"),
            mean_logprob=sum(t["logprob"] for t in tokens) / len(tokens) if tokens else None,
        )

    async def ping(self) -> None:
        await self._request("GET", "/models", None, None, deadline_s=min(self._deadline_s, 5.0))

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
    ) -> dict[str, Any]:
        """One request, failing over between replicas until one answers.

        A streamed reply fails over only before its first piece of text: once text went out,
        a broken stream is the caller's error (``GeneratorUnavailable``), not a silent retry.
        """
        headers = {"X-Request-ID": request_id} if request_id else {}
        failures: list[str] = []
        reader = _StreamReader(on_text) if on_text is not None else None
        try:
            async with asyncio.timeout(deadline_s):
                for _ in range(len(self._urls)):
                    url = self._urls[next(self._next)] + path
                    try:
                        async with self._client.stream(
                            method, url, json=body, headers=headers
                        ) as response:
                            if response.status_code >= 400:
                                await response.aread()
                                if response.status_code < 500:
                                    raise GeneratorRejected(
                                        f"generator refused the request: {response.text[:300]}"
                                    )
                                failures.append(f"{url}: HTTP {response.status_code}")
                                continue
                            if reader is not None:
                                return await reader.read(response)
                            result: dict[str, Any] = json.loads(await response.aread())
                            return result
                    except _FAILOVER as exc:
                        if reader is not None and reader.started:
                            raise GeneratorUnavailable(
                                f"{url}: the stream broke ({type(exc).__name__})"
                            ) from exc
                        failures.append(f"{url}: {type(exc).__name__}")
                        continue
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise GeneratorTimeout(f"generator did not answer within {deadline_s:g} s") from exc
        raise GeneratorUnavailable("no generator replica answered: " + "; ".join(failures))


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
        model, usage, finish = None, {}, None
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
