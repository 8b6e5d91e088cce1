"""The Reasoner (SIM-RAG): a short plain answer per round, and a new search query when asked.

The answer is plain text from a plain prompt: a small model answers better in its own words
than inside a JSON object or after worked examples, and the critic reads the call's
log-probabilities and the passages instead of a self-reported flag. A comparison ("X or Y?")
is answered with the candidate the reply names first. The query rewrite stays structured, so
the pipeline reads a field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.core.prompt import NO_EVIDENCE, comparison
from critic.features import is_refusal
from llm import Completion, Generator, TextSink
from retrieval.calibration_set import normalize_answer
from retrieval.types import ScoredChunk

#: The plainest prompt, no worked examples and no way out: a 135M model answers right more often
#: so than with a refusal clause and examples (docs/quality.md). Abstaining is the critic's call.
_ANSWER_SYSTEM = "Answer the question using the context. Reply with a short answer only."
#: An answer ends at its line.
_STOP = ("\n",)


def one_string_schema(key: str, min_length: int, max_length: int) -> dict[str, Any]:
    """The schema of a reply that is one bounded string (what ``Reasoner._rewrite`` reads)."""
    spec = {"type": "string", "minLength": min_length, "maxLength": max_length}
    return {"type": "object", "properties": {key: spec}, "required": [key]}


QUERY_SCHEMA = one_string_schema("query", 2, 80)

# A small model cannot plan a search, but it can copy a name: multi-hop questions hide their
# second-hop entity ("the author of X") and the first passages usually name it. Asked as a
# follow-up turn of the round's answer conversation (see ``Reasoner.next_query``). No worked
# example: a 135M model copied the example's name as its query.
_QUERY_FOLLOWUP = (
    "The passages do not answer the question yet. The question asks about someone or something "
    "it does not name, such as the author of a book. Find that name in the passages and reply "
    'as JSON with "query" set to it, or to a short search query for the missing fact. Do not '
    "repeat a query already tried: {tried}"
)
STANDALONE_SCHEMA = one_string_schema("question", 3, 300)
_STANDALONE_SYSTEM = (
    "Rewrite the user's last question so it can be understood without the conversation: "
    "replace words like he, she, it, they or that with the names they stand for. Reply as "
    'JSON with "question".'
)
#: Turns of history the standalone rewrite sees (the newest ones), each cut to this many chars.
_HISTORY_TURNS, _HISTORY_CHARS = 6, 400


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
    mean_logprob: float
    usage: TokenUsage
    #: The reply hit the token budget; the answer was cut back to its last whole word.
    truncated: bool = False
    #: The answer was chosen between the two things a comparison question names.
    choice: bool = False
    #: The reply as generated (the next query is asked as a follow-up to it).
    reply: str = ""

    @property
    def tokens(self) -> int:
        """Tokens of the reply (the critic's answer-length signal)."""
        return self.usage.completion


@dataclass(frozen=True, slots=True)
class Rewrite:
    """A rewritten question or the next round's search query (empty: nothing new to search)."""

    query: str
    usage: TokenUsage


def context_text(passages: Sequence[ScoredChunk], chars: int | None = None) -> str:
    return (
        "\n".join(f"[{i}] {p.title}: {p.text[:chars]}" for i, p in enumerate(passages, 1))
        or NO_EVIDENCE
    )


def _answer_messages(question: str, passages: Sequence[ScoredChunk]) -> list[dict[str, str]]:
    user = f"Context:\n{context_text(passages)}\n\nQuestion: {question}"
    return [{"role": "system", "content": _ANSWER_SYSTEM}, {"role": "user", "content": user}]


#: Words a reply wraps its answer in ("The answer is: …") besides the question's own words.
_WRAPPING = frozenset(
    [
        "the",
        "a",
        "an",
        "answer",
        "answers",
        "is",
        "was",
        "are",
        "were",
        "to",
        "this",
        "that",
        "question",
        "passage",
        "passages",
        "it",
        "its",
    ]
)
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]])[.!?](?:\s|$)")


def plain_answer(reply: str, question: str) -> str:
    """The answer inside a reply: a small model restates the question before answering ("The
    capital of Somaliland is Hargeisa."), so leading words of the question (and of "the answer
    is") go, and so does everything after the first sentence. A reply that is all restatement
    ("Question: How often are laptops replaced", "Zealand" for a question on New Zealand's
    mountain) answers nothing: the empty string, which the loop never accepts."""
    asked = {_stem(w) for w in [*normalize_answer(question).split(), *_WRAPPING, ""]}
    words = reply.split()
    start = 0
    while start < len(words) and _stem(normalize_answer(words[start])) in asked:
        start += 1
    rest = " ".join(words[start:])
    end = _SENTENCE_END.search(rest)
    return (rest[: end.start()] if end else rest).strip(" ,;:-")


def _stem(word: str) -> str:
    """``word`` without a plural or possessive s ("zealands" from "Zealand's" is "zealand")."""
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def chosen_one(reply: str, pair: tuple[str, str]) -> str | None:
    """Which of a comparison's two candidates the reply names first, by the words only that
    candidate has ("Babe Ruth's career spanned more seasons" names Babe Ruth's, not Kareem
    Abdul-Jabbar's); None when it names neither. A small model reasons better in a sentence
    ("X covers a larger area than Y") than when made to pick one of two names."""
    words = normalize_answer(reply).split()
    own = [set(normalize_answer(c).split()) for c in pair]
    marks = [own[0] - own[1], own[1] - own[0]]
    first = [next((i for i, w in enumerate(words) if w in m), len(words)) for m in marks]
    if first[0] == first[1]:
        return None
    return pair[0] if first[0] < first[1] else pair[1]


def whole_words(text: str) -> str:
    """``text`` cut back to its last whole word (a reply that ran into the token budget)."""
    head, space, _ = text.rstrip().rpartition(" ")
    return (head if space else text).rstrip(" ,;:-(")


class Reasoner:
    """Wraps the generator with the loop's calls: the answer, the rewritten query, and the
    standalone question of a chat."""

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
        """This round's answer; with ``on_answer`` its text is streamed as decoded.

        A line of plain text, cut back to a whole word if it ran into the token budget (and
        flagged, so the critic sees it) and stripped of a restated question; for a comparison,
        the one of the two things compared that the reply names first.
        """
        completion = await self.generator.complete(
            _answer_messages(question, passages),
            max_tokens=self._max_tokens,
            temperature=self._temperature,
            request_id=request_id,
            stop=_STOP,
            logprobs=True,
            on_text=on_answer,
        )
        truncated = completion.finish_reason == "length"
        text = completion.text.strip()
        pair = comparison(question)
        chosen = chosen_one(text, pair) if pair is not None else None
        if chosen is None:
            text = plain_answer(whole_words(text) if truncated else text, question)
        return Reasoning(
            answer=chosen or text,
            mean_logprob=completion.mean_logprob or 0.0,
            usage=_usage(completion),
            truncated=truncated,
            choice=chosen is not None,
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
        """A new search query: the model's, else this round's answer (for a bridge question it
        often names the hidden entity); an empty ``query`` when neither is new, so the loop
        stops instead of searching again for what it has searched.

        Not new: a query already tried (or the question), a refusal, or words the passages do
        not hold (the model was asked for a name found there; a 135M model otherwise copies
        its instructions, such as the JSON key, as the query).
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
        rewrite = await self._rewrite(messages, QUERY_SCHEMA, 40, "", request_id)
        seen = {normalize_answer(t) for t in (*tried, question)}
        where = " ".join(f" {normalize_answer(f'{p.title} {p.text}')} " for p in passages)
        for candidate in (rewrite.query, reasoning.answer):
            norm = normalize_answer(candidate)
            if norm and norm not in seen and f" {norm} " in where and not is_refusal(candidate):
                return Rewrite(candidate, rewrite.usage)
        return Rewrite("", rewrite.usage)

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
