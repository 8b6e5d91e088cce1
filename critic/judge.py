"""The baseline critic: ask the generator itself "enough evidence, and supported? yes or no".

One token is generated; P(sufficient) is the probability mass of yes-like first tokens against
no-like ones among the top log-probabilities vLLM returns, so the score is continuous and the
threshold τ can be tuned like any other critic's. It costs one extra LLM call per round, made
through the app's own ``llm.Generator``, so it shares the replicas' circuit breakers and the
admission limit with the answer calls instead of loading the worker behind their back.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from critic.errors import CriticUnavailable
from critic.types import CriticInput
from llm import Generator, GeneratorError

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


def yes_probability(top_logprobs: Sequence[tuple[str, float]]) -> float:
    """Normalized mass of yes-like vs no-like tokens (case and spacing ignored); 0.5 if neither.

    0.5 says "no opinion", which a tuned τ then treats like any other borderline round.
    """
    mass = {True: 0.0, False: 0.0}
    for token, logprob in top_logprobs:
        word = token.strip().lower()
        if word in _YES or word in _NO:
            mass[word in _YES] += math.exp(logprob)
    total = mass[True] + mass[False]
    return mass[True] / total if total > 0 else 0.5


class LLMJudgeCritic:
    """P(yes) from the generator (its replicas, breakers and admission limit).

    Example:
        >>> gen = VLLMGenerator(["http://127.0.0.1:8100/v1"], model="SmolLM2-135M-Instruct")
        >>> await LLMJudgeCritic(gen).score(CriticInput(question="…", passages=["…"], answer="…"))

    Raises ``CriticUnavailable`` when the generator fails (``GeneratorError``), does not answer
    within ``timeout_s`` (all replicas together), or its reply carries no log-probabilities.
    The generator belongs to the caller: ``aclose`` leaves it open.
    """

    name = "llm-judge"

    def __init__(
        self,
        generator: Generator,
        timeout_s: float = 10.0,
        *,
        tau: float = 0.5,
        max_context_chars: int = 6000,
    ) -> None:
        self._generator = generator
        self._timeout_s = timeout_s
        self._max_context_chars = max_context_chars
        self.tau = tau

    async def score(self, item: CriticInput) -> float:
        try:
            async with asyncio.timeout(self._timeout_s):
                completion = await self._generator.complete(
                    judge_messages(item, self._max_context_chars),
                    max_tokens=1,
                    temperature=0.0,
                    top_logprobs=TOP_LOGPROBS,
                )
        except TimeoutError as exc:
            why = f"the judge got no answer within {self._timeout_s:g} s"
            raise CriticUnavailable(why) from exc
        except GeneratorError as exc:
            raise CriticUnavailable(f"the generator did not judge: {exc}") from exc
        if not completion.first_token_top_logprobs:
            raise CriticUnavailable("the judge's reply carries no log-probabilities")
        return yes_probability(completion.first_token_top_logprobs)

    async def aclose(self) -> None:
        """Nothing to close: the generator is the caller's."""
