"""The Reasoner (SIM-RAG): a structured answer per round, and a new search query when asked.

Both calls use vLLM's structured output, so the pipeline reads fields instead of parsing prose;
a reply cut off mid-JSON falls back to its raw text, flagged unsure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from app.generator import Generator
from app.prompt import NO_EVIDENCE, REFUSAL
from retrieval.types import ScoredChunk

# Bounded strings, and `unsure` before the rationale: a 135M model rambles, and a reply cut at
# max_tokens must still carry its answer and flag.
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "minLength": 1, "maxLength": 100},
        "unsure": {"type": "boolean"},
        "rationale": {"type": "string", "maxLength": 160},
    },
    "required": ["answer", "unsure", "rationale"],
}
_FIELD = re.compile(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)"')
QUERY_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 80}},
    "required": ["query"],
}

_ANSWER_SYSTEM = (
    "You answer questions using only the numbered passages. Reply as JSON with: "
    '"answer" (a short answer, a few words), "rationale" (one sentence naming the passage '
    'numbers you used, like [1]) and "unsure" (true if the passages do not clearly contain the '
    f'answer). If they do not contain it, answer "{REFUSAL}"'
)
# A 135M model cannot plan a search, but it can copy a name: multi-hop questions hide their
# second-hop entity ("the author of X") and the first passages usually name it.
_QUERY_SYSTEM = (
    "The passages do not answer the question yet. The question asks about someone or something "
    'it does not name, like "the author of X". Find that name in the passages and reply as '
    'JSON with "query" set to it, or to a short search query for the missing fact.\n'
    'Example: question "When did the founder of Acme die?", passage "Acme was founded by John '
    'Smith." -> {"query": "John Smith"}'
)
#: Characters of each passage the rewrite sees: the naming sentence is near the start.
_REWRITE_PASSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class Reasoning:
    """One round's answer and the signals of the call that produced it."""

    answer: str
    rationale: str
    unsure: bool
    mean_logprob: float
    tokens: int


def context_text(passages: Sequence[ScoredChunk], chars: int | None = None) -> str:
    return (
        "\n".join(f"[{i}] {p.title}: {p.text[:chars]}" for i, p in enumerate(passages, 1))
        or NO_EVIDENCE
    )


class Reasoner:
    """Wraps the generator with the two structured calls of the loop."""

    def __init__(self, generator: Generator, *, max_tokens: int, temperature: float) -> None:
        self.generator = generator
        self._max_tokens = max_tokens
        self._temperature = temperature

    async def answer(
        self, question: str, passages: Sequence[ScoredChunk], request_id: str | None = None
    ) -> Reasoning:
        completion = await self.generator.complete(
            [
                {"role": "system", "content": _ANSWER_SYSTEM},
                {
                    "role": "user",
                    "content": f"Passages:\n{context_text(passages)}\n\nQuestion: {question}",
                },
            ],
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            request_id=request_id,
            json_schema=ANSWER_SCHEMA,
            logprobs=True,
        )
        try:
            reply = json.loads(completion.text)
            answer, rationale = str(reply["answer"]).strip(), str(reply["rationale"]).strip()
            unsure = bool(reply["unsure"])
        except (ValueError, KeyError, TypeError):  # cut off mid-JSON: keep what came through
            found = _FIELD.search(completion.text)
            answer = found.group(1).strip() if found else completion.text.strip()
            rationale, unsure = "", True
        return Reasoning(
            answer=answer,
            rationale=rationale,
            unsure=unsure,
            mean_logprob=completion.mean_logprob or 0.0,
            tokens=completion.completion_tokens,
        )

    async def next_query(
        self,
        question: str,
        passages: Sequence[ScoredChunk],
        tried: Sequence[str],
        request_id: str | None = None,
    ) -> str:
        """A new search query; the question itself when the model gives nothing usable."""
        completion = await self.generator.complete(
            [
                {"role": "system", "content": _QUERY_SYSTEM},
                {
                    "role": "user",
                    "content": "Passages:\n"
                    f"{context_text(passages, _REWRITE_PASSAGE_CHARS)}\n\n"
                    f"Queries already tried: {'; '.join(tried)}\n\nQuestion: {question}",
                },
            ],
            max_tokens=40,
            temperature=self._temperature,
            request_id=request_id,
            json_schema=QUERY_SCHEMA,
        )
        try:
            query = str(json.loads(completion.text)["query"]).strip()
        except (ValueError, KeyError, TypeError):
            query = ""
        return query or question
