"""The Reasoner (SIM-RAG): a structured answer per round, and a new search query when asked.

Both calls use vLLM's structured output, so the pipeline reads fields instead of parsing prose;
a reply cut off mid-JSON falls back to its raw text, flagged unsure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.generator import Completion, Generator, TextSink
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


def one_string_schema(key: str, min_length: int, max_length: int) -> dict[str, Any]:
    """The schema of a reply that is one bounded string (what ``Reasoner._rewrite`` reads)."""
    spec = {"type": "string", "minLength": min_length, "maxLength": max_length}
    return {"type": "object", "properties": {key: spec}, "required": [key]}


QUERY_SCHEMA = one_string_schema("query", 2, 80)

_ANSWER_SYSTEM = (
    "You answer questions using only the numbered passages. Reply as JSON with: "
    '"answer" (a short answer, a few words), "rationale" (one sentence naming the passage '
    'numbers you used, like [1]) and "unsure" (true if the passages do not clearly contain the '
    f'answer). If they do not contain it, answer "{REFUSAL}"'
)
# A 135M model cannot plan a search, but it can copy a name: multi-hop questions hide their
# second-hop entity ("the author of X") and the first passages usually name it. Asked as a
# follow-up turn of the round's answer conversation (see ``Reasoner.next_query``).
_QUERY_FOLLOWUP = (
    "The passages do not answer the question yet. The question asks about someone or something "
    'it does not name, like "the author of X". Find that name in the passages and reply as '
    'JSON with "query" set to it, or to a short search query for the missing fact.\n'
    'Example: question "When did the founder of Acme die?", passage "Acme was founded by John '
    'Smith." -> {{"query": "John Smith"}}\n'
    "Queries already tried: {tried}"
)
STANDALONE_SCHEMA = one_string_schema("question", 3, 300)
_STANDALONE_SYSTEM = (
    "Rewrite the user's last question so it can be understood without the conversation: "
    "replace words like he, she, it, they or that with the names they stand for. Reply as "
    'JSON with "question".'
)
#: Turns of history the standalone rewrite sees (the newest ones), each cut to this many chars.
_HISTORY_TURNS, _HISTORY_CHARS = 6, 400


class _AnswerField:
    """Passes on the characters of the reply's "answer" value as the JSON streams in.

    The compact-JSON constraint fixes the reply's opening and forbids escapes, so the value is
    everything after ``{"answer": "`` up to the next quote.
    """

    OPENING = '{"answer": "'

    def __init__(self, sink: TextSink) -> None:
        self._sink = sink
        self._reply = ""
        self._sent = 0
        self._closed = False

    async def feed(self, text: str) -> None:
        if self._closed:
            return
        self._reply += text
        if not self._reply.startswith(self.OPENING):
            return
        value = self._reply[len(self.OPENING) :]
        end = value.find('"')
        if end >= 0:
            value, self._closed = value[:end], True
        if len(value) > self._sent:
            await self._sink(value[self._sent :])
            self._sent = len(value)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens the generator read and wrote (reported as OpenAI-style usage)."""

    prompt: int = 0
    completion: int = 0

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(self.prompt + other.prompt, self.completion + other.completion)


def _usage(completion: Completion) -> TokenUsage:
    return TokenUsage(completion.prompt_tokens, completion.completion_tokens)


@dataclass(frozen=True, slots=True)
class Reasoning:
    """One round's answer and the signals of the call that produced it."""

    answer: str
    rationale: str
    unsure: bool
    mean_logprob: float
    usage: TokenUsage
    #: The reply as generated (the next query is asked as a follow-up to it).
    reply: str = ""

    @property
    def tokens(self) -> int:
        """Tokens of the reply (the critic's answer-length signal)."""
        return self.usage.completion


@dataclass(frozen=True, slots=True)
class Rewrite:
    """The next round's search query."""

    query: str
    usage: TokenUsage


def context_text(passages: Sequence[ScoredChunk], chars: int | None = None) -> str:
    return (
        "\n".join(f"[{i}] {p.title}: {p.text[:chars]}" for i, p in enumerate(passages, 1))
        or NO_EVIDENCE
    )


def _answer_messages(question: str, passages: Sequence[ScoredChunk]) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": _ANSWER_SYSTEM},
        {"role": "user", "content": f"Passages:\n{context_text(passages)}\n\nQuestion: {question}"},
    ]


class Reasoner:
    """Wraps the generator with the two structured calls of the loop."""

    def __init__(self, generator: Generator, *, max_tokens: int, temperature: float) -> None:
        self.generator = generator
        self._max_tokens = max_tokens
        self._temperature = temperature

    @property
    def deterministic(self) -> bool:
        """Greedy decoding: the same prompt gets the same reply, so it need not be asked twice."""
        return self._temperature == 0

    async def answer(
        self,
        question: str,
        passages: Sequence[ScoredChunk],
        request_id: str | None = None,
        on_answer: TextSink | None = None,
    ) -> Reasoning:
        """This round's answer; with ``on_answer`` the answer's text is streamed as decoded."""
        completion = await self.generator.complete(
            _answer_messages(question, passages),
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            request_id=request_id,
            json_schema=ANSWER_SCHEMA,
            logprobs=True,
            on_text=None if on_answer is None else _AnswerField(on_answer).feed,
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
            usage=_usage(completion),
            reply=completion.text,
        )

    async def next_query(
        self,
        question: str,
        passages: Sequence[ScoredChunk],
        reasoning: Reasoning,
        tried: Sequence[str],
        request_id: str | None = None,
    ) -> Rewrite:
        """A new search query; the question itself when the model gives nothing usable.

        Asked as a follow-up to ``reasoning``, the answer this round gave on ``passages``: the
        conversation opens token for token as that answer call did, so vLLM's prefix cache
        holds it and this call prefills only the reply and the follow-up — on a CPU, where
        prefill is most of a call, that is most of the call's cost saved.
        """
        messages = [
            *_answer_messages(question, passages),
            {"role": "assistant", "content": reasoning.reply},
            {"role": "user", "content": _QUERY_FOLLOWUP.format(tried="; ".join(tried))},
        ]
        return await self._rewrite(messages, QUERY_SCHEMA, 40, question, request_id)

    async def standalone_question(
        self, history: Sequence[tuple[str, str]], question: str, request_id: str | None = None
    ) -> Rewrite:
        """``question`` made self-contained using earlier (role, text) turns of a chat."""
        turns = "\n".join(
            f"{role}: {text[:_HISTORY_CHARS]}" for role, text in history[-_HISTORY_TURNS:]
        )
        user = f"Conversation:\n{turns}\n\nLast question: {question}"
        messages = [
            {"role": "system", "content": _STANDALONE_SYSTEM},
            {"role": "user", "content": user},
        ]
        return await self._rewrite(messages, STANDALONE_SCHEMA, 96, question, request_id)

    async def _rewrite(
        self,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        max_tokens: int,
        fallback: str,
        request_id: str | None,
    ) -> Rewrite:
        """One structured call whose schema has a single string field; ``fallback`` when the
        model gives nothing usable."""
        (key,) = schema["properties"]
        completion = await self.generator.complete(
            messages,
            max_tokens=max_tokens,
            temperature=self._temperature,
            request_id=request_id,
            json_schema=schema,
        )
        try:
            text = str(json.loads(completion.text)[key]).strip()
        except (ValueError, KeyError, TypeError):
            text = ""
        return Rewrite(text or fallback, _usage(completion))
