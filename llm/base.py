"""The ``Generator`` protocol every chat-model backend implements, and its value types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

#: Receives each piece of a streamed reply as it arrives.
TextSink = Callable[[str], Awaitable[None]]

BreakerState = Literal["closed", "open", "half_open"]
#: How a replica failed, as counted in ``ReplicaStatus.errors_total``.
FailureKind = Literal["connect", "reset", "http_5xx", "timeout"]


@dataclass(frozen=True, slots=True)
class Completion:
    """One chat completion."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    mean_logprob: float | None = None
    #: The first generated token's most likely alternatives as (token, log-probability), best
    #: first; empty unless ``top_logprobs`` was asked for.
    first_token_top_logprobs: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica as the metrics see it."""

    url: str
    state: BreakerState
    consecutive_failures: int
    errors_total: dict[str, int]


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
        stop: Sequence[str] | None = None,
        logprobs: bool = False,
        top_logprobs: int = 0,
        on_text: TextSink | None = None,
    ) -> Completion:
        """One chat completion; with ``json_schema`` (flat: strings, booleans, integers) the
        reply is one compact JSON object of it; ``stop`` ends the reply at the first of its
        strings; with ``logprobs`` its mean token log-probability is reported, with
        ``top_logprobs`` > 0 also the first token's that many likeliest alternatives (a yes/no
        judge reads its verdict's probability there); with ``on_text`` it is streamed and each
        piece of text is handed over as it arrives."""
        ...

    async def ping(self) -> None:
        """Raise ``GeneratorError`` unless some replica answers a tiny request."""
        ...

    def fail_fast(self) -> None:
        """Raise ``GeneratorUnavailable`` (with ``retry_after``) at once when no replica would
        take a call now, so a query fails before it spends time on retrieval."""
        ...

    def replicas(self) -> list[ReplicaStatus]:
        """Each replica's circuit breaker, for metrics."""
        ...

    async def aclose(self) -> None: ...
