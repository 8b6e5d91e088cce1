"""The compact-JSON constraint the reasoner sends to vLLM, and the reasoner against the real
vLLM CPU worker."""

from __future__ import annotations

import json
import re

import pytest

from app.config import Settings
from app.generator import VLLMGenerator, compact_json_pattern
from app.reasoner import ANSWER_SCHEMA, QUERY_SCHEMA, Reasoner
from retrieval.types import ScoredChunk


def test_pattern_accepts_compact_json_of_the_schema() -> None:
    pattern = compact_json_pattern(ANSWER_SCHEMA)
    good = {"answer": "GSFC", "unsure": False, "rationale": "Passage [1] says so."}
    assert re.fullmatch(pattern, json.dumps(good))
    assert re.fullmatch(compact_json_pattern(QUERY_SCHEMA), json.dumps({"query": "Edmund Hillary"}))


@pytest.mark.parametrize(
    "text",
    [
        '{\n  "answer": "GSFC", "unsure": false, "rationale": "r"}',  # padding
        '{"answer": "", "unsure": false, "rationale": "r"}',  # empty answer (minLength 1)
        '{"answer": "a \\"b\\"", "unsure": false, "rationale": "r"}',  # escapes
        '{"unsure": false, "answer": "a", "rationale": "r"}',  # key order
        '{"answer": "a", "unsure": maybe, "rationale": "r"}',
        '{"answer": "a", "unsure": false, "rationale": "' + "x" * 161 + '"}',  # maxLength
    ],
)
def test_pattern_rejects_anything_else(text: str) -> None:
    assert re.fullmatch(compact_json_pattern(ANSWER_SCHEMA), text) is None


def test_pattern_refuses_nested_schemas() -> None:
    with pytest.raises(ValueError, match="unsupported type 'array'"):
        compact_json_pattern({"properties": {"ids": {"type": "array"}}})


@pytest.mark.integration
@pytest.mark.anyio
async def test_reasoner_reads_fields_from_the_real_worker(generator_url: str) -> None:
    generator = VLLMGenerator([generator_url], model=Settings().generator_model, timeout_s=120)
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
    assert reasoning.answer and len(reasoning.answer) <= 100
    assert len(reasoning.rationale) <= 160
    assert reasoning.mean_logprob < 0
    assert reasoning.tokens < 96  # compact JSON finished before the token budget
    assert 2 <= len(rewrite.query) <= 80
    assert reasoning.usage.prompt > 0 and rewrite.usage.completion > 0
