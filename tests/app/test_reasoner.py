"""The compact-JSON constraint the reasoner sends to vLLM, and the reasoner against the real
vLLM CPU worker."""

from __future__ import annotations

import json
import re

import pytest

from app.config import Settings
from app.core.prompt import comparison, supporting
from app.core.reasoner import (
    QUERY_SCHEMA,
    Reasoner,
    Reasoning,
    TokenUsage,
    chosen_one,
    plain_answer,
    whole_words,
)
from llm import Completion, VLLMGenerator, compact_json_pattern
from retrieval.types import ScoredChunk


def test_pattern_accepts_compact_json_of_the_schema() -> None:
    assert re.fullmatch(compact_json_pattern(QUERY_SCHEMA), json.dumps({"query": "Edmund Hillary"}))


@pytest.mark.parametrize(
    "text",
    [
        '{\n  "query": "Edmund Hillary"}',  # padding
        '{"query": "a"}',  # minLength 2
        '{"query": "a \\"b\\""}',  # escapes
        '{"query": "' + "x" * 81 + '"}',  # maxLength
        '{"other": "Edmund Hillary"}',
    ],
)
def test_pattern_rejects_anything_else(text: str) -> None:
    assert re.fullmatch(compact_json_pattern(QUERY_SCHEMA), text) is None


@pytest.mark.parametrize(
    ("question", "pair"),
    [
        (
            "Which was founded earlier, the University of Göttingen or Princeton University?",
            ("the University of Göttingen", "Princeton University"),
        ),
        ("Which is higher: Mont Blanc or K2?", ("Mont Blanc", "K2")),
        ("Which NASA center controls the Hubble Space Telescope?", None),
        ("Is tea or coffee older?", None),  # no stem before the pair: not read as one
    ],
)
def test_comparison_questions_name_their_two_candidates(
    question: str, pair: tuple[str, str] | None
) -> None:
    assert comparison(question) == pair


@pytest.mark.parametrize(
    ("reply", "chosen"),
    [
        ("The Central African Republic covers a larger area than Western Sahara.", "CAR"),
        ("The answer is: Western Sahara.", "WS"),
        ("Western Sahara is smaller than the Central African Republic.", "WS"),  # read as named
        ("I cannot answer from the given passages.", None),
    ],
)
def test_a_comparison_is_answered_with_the_candidate_named_first(
    reply: str, chosen: str | None
) -> None:
    pair = ("the Central African Republic", "Western Sahara")
    names = {"CAR": pair[0], "WS": pair[1], None: None}
    assert chosen_one(reply, pair) == names[chosen]


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("The capital of Somaliland is Hargeisa.", "Hargeisa"),
        ("The answer is: 3", "3"),
        ("Hargeisa. It lies in the north-west.", "Hargeisa"),
        ("the capital of Somaliland", ""),  # all restatement: no answer
        ("Question: What is the capital of Somaliland", ""),
        ("Somaliland's", ""),  # a possessive of a word asked about
    ],
)
def test_a_restated_question_is_stripped_from_the_answer(reply: str, answer: str) -> None:
    assert plain_answer(reply, "What is the capital of Somaliland?") == answer


def test_an_answer_cut_by_the_token_budget_keeps_whole_words() -> None:
    # the last word may be cut mid-way, so it goes, with the punctuation left dangling
    assert whole_words("EUR 70 for inter") == "EUR 70 for"
    assert whole_words("Goddard Space Flight Center, the") == "Goddard Space Flight Center"
    assert whole_words("Supercalifragilistic") == "Supercalifragilistic"


def test_cited_passages_are_the_ones_the_answer_was_taken_from() -> None:
    passages = [
        "Hubble Space Telescope The Goddard Space Flight Center (GSFC) controls the spacecraft.",
        "NASA NASA runs the Great Observatories program.",
        "Goddard Space Flight Center A NASA laboratory in Greenbelt, Maryland.",
    ]
    assert supporting("the Goddard Space Flight Center", passages) == {1, 3}
    assert supporting("Great Observatories", passages) == {2}
    assert supporting("Center Goddard Flight", passages) == {1, 3}  # reordered words
    assert supporting("Jet Propulsion Laboratory", passages) == set()
    assert supporting("", passages) == set()


def test_pattern_refuses_nested_schemas() -> None:
    with pytest.raises(ValueError, match="unsupported type 'array'"):
        compact_json_pattern({"properties": {"ids": {"type": "array"}}})


@pytest.mark.integration
@pytest.mark.anyio
async def test_reasoner_reads_fields_from_the_real_worker(generator_url: str) -> None:
    generator = VLLMGenerator([generator_url], model=Settings().generator.model, timeout_s=120)
    reasoner = Reasoner(generator, max_tokens=96, temperature=0.0)
    passage = ScoredChunk(
        id="c1",
        score=0.8,
        payload={
            "doc_id": "d1",
            "title": "Hubble Space Telescope",
            "text": "The Hubble Space Telescope is controlled by the Goddard Space Flight Center.",
        },
    )
    try:
        reasoning = await reasoner.answer("Which center controls Hubble?", [passage])
        rewrite = await reasoner.next_query(
            "Which center controls Hubble?", [passage], reasoning, ["Hubble"]
        )
    finally:
        await generator.aclose()
    assert "goddard" in reasoning.answer.lower()
    assert "\n" not in reasoning.answer and not reasoning.truncated and not reasoning.choice
    assert reasoning.mean_logprob < 0
    assert reasoning.tokens < 96  # a short answer ends well before the token budget
    # a new query found in the passage, or none: never one already tried, nor the question
    assert rewrite.query.lower() not in {"hubble", "which center controls hubble?"}
    assert rewrite.query.lower() in passage.text.lower() and len(rewrite.query) <= 80
    assert reasoning.usage.prompt > 0 and rewrite.usage.completion > 0


class ScriptedGenerator:
    """Fake generator (control flow only): replies with the scripted texts in order, as a real
    model cannot be steered into copying its instructions on cue; the real worker's rewrite is
    covered above and in test_loop.py."""

    model = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)

    async def complete(self, messages: list[dict[str, str]], **_: object) -> Completion:
        return Completion(self.replies.pop(0), self.model, 100, 5, "stop", -0.5)


HUBBLE = ScoredChunk(
    id="c1",
    score=0.8,
    payload={
        "doc_id": "d1",
        "title": "Hubble Space Telescope",
        "text": "The Hubble Space Telescope is named after astronomer Edwin Hubble.",
    },
)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "answer", "query"),
    [
        ('{"query": "Edwin Hubble"}', "NASA", "Edwin Hubble"),  # named in the passage: taken
        ('{"query": "query"}', "Edwin Hubble", "Edwin Hubble"),  # its key copied: the answer
        ('{"query": "John Smith"}', "NASA", ""),  # in no passage, and neither is the answer
        ('{"query": "Hubble Space Telescope"}', "Hubble", ""),  # both tried already
        ("{broken", "I cannot answer from the given passages.", ""),  # a refusal is no query
    ],
)
async def test_a_rewrite_that_brings_nothing_new_is_no_query(
    reply: str, answer: str, query: str
) -> None:
    reasoner = Reasoner(ScriptedGenerator([reply]), max_tokens=48, temperature=0.0)  # type: ignore[arg-type]
    said = Reasoning(answer=answer, mean_logprob=-0.3, usage=TokenUsage(10, 2), reply=answer)
    rewrite = await reasoner.next_query(
        "Who is the telescope named after?", [HUBBLE], said, ["Hubble Space Telescope", "Hubble"]
    )
    assert rewrite.query == query
    assert rewrite.usage == TokenUsage(100, 5)  # the call is paid for, whatever it brought
