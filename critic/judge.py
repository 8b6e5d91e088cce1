"""The baseline critic: ask the generator itself "enough evidence, and supported? yes or no".

One token is generated; P(sufficient) is the probability mass of yes-like first tokens against
no-like ones among the top log-probabilities vLLM returns, so the score is continuous and the
threshold τ can be tuned like any other critic's. It costs one extra LLM call per round.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from typing import Any

import httpx

from critic.errors import CriticUnavailable
from critic.types import CriticInput

QUESTION = (
    "Do the passages contain enough information to answer the question, and is the proposed "
    "answer supported? Answer yes or no."
)
_YES = frozenset({"yes", "y", "true"})
_NO = frozenset({"no", "n", "false"})
#: Top alternatives vLLM reports for the single generated token.
TOP_LOGPROBS = 10


def judge_messages(item: CriticInput, max_context_chars: int) -> list[dict[str, str]]:
    """The yes/no prompt; passages are cut to ``max_context_chars`` to fit the model."""
    context = "\n".join(f"[{i}] {p}" for i, p in enumerate(item.passages, 1))
    user = (
        f"Question: {item.question}\n\nPassages:\n{context[:max_context_chars] or '(none)'}\n\n"
        f"Proposed answer: {item.answer or '(empty)'}"
        f"\n\n{QUESTION}"
    )
    return [
        {"role": "system", "content": "You are a strict fact checker. Reply with one word."},
        {"role": "user", "content": user},
    ]


def yes_probability(top_logprobs: list[dict[str, Any]]) -> float:
    """Normalized mass of yes-like vs no-like tokens (case and spacing ignored); 0.5 if neither.

    0.5 says "no opinion", which a tuned τ then treats like any other borderline round.
    """
    mass = {True: 0.0, False: 0.0}
    for entry in top_logprobs:
        token = str(entry.get("token", "")).strip().lower()
        if token in _YES or token in _NO:
            mass[token in _YES] += math.exp(float(entry["logprob"]))
    total = mass[True] + mass[False]
    return mass[True] / total if total > 0 else 0.5


class LLMJudgeCritic:
    """P(yes) from an OpenAI-compatible vLLM server, replicas tried round-robin.

    Example:
        >>> judge = LLMJudgeCritic(["http://127.0.0.1:8100/v1"], "SmolLM2-135M-Instruct")
        >>> await judge.score(CriticInput(question="…", passages=["…"], answer="…"))

    Raises ``CriticUnavailable`` when no replica answers within ``timeout_s`` (all of them
    together) or the reply carries no log-probabilities.
    """

    name = "llm-judge"

    def __init__(
        self,
        base_urls: list[str],
        model: str,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        *,
        tau: float = 0.5,
        max_context_chars: int = 6000,
    ) -> None:
        if not base_urls:
            raise ValueError("the judge needs at least one generator URL")
        self._urls = [u.rstrip("/") + "/chat/completions" for u in base_urls]
        self._next = itertools.cycle(range(len(self._urls)))
        self._model = model
        self._timeout_s = timeout_s
        self._max_context_chars = max_context_chars
        self.tau = tau
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout_s, connect=2.0)
        )

    async def score(self, item: CriticInput) -> float:
        body = {
            "model": self._model,
            "messages": judge_messages(item, self._max_context_chars),
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        failures: list[str] = []
        try:
            async with asyncio.timeout(self._timeout_s):
                for _ in self._urls:
                    url = self._urls[next(self._next)]
                    try:
                        response = await self._client.post(url, json=body)
                        response.raise_for_status()
                        content = response.json()["choices"][0]["logprobs"]["content"]
                        return yes_probability(content[0]["top_logprobs"])
                    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
                        failures.append(f"{url}: {type(exc).__name__} {exc}".strip())
        except TimeoutError as exc:
            why = f"the judge got no answer within {self._timeout_s:g} s"
            raise CriticUnavailable(why) from exc
        raise CriticUnavailable("no generator replica judged: " + "; ".join(failures))

    async def aclose(self) -> None:
        await self._client.aclose()
