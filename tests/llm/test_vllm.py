"""``VLLMGenerator`` against the real vLLM CPU worker: the first token's top log-probabilities
that the llm-judge critic reads its verdict from."""

from __future__ import annotations

import pytest

from llm import VLLMGenerator

MESSAGES = [{"role": "user", "content": "Is Paris the capital of France? Answer yes or no."}]


@pytest.mark.integration
@pytest.mark.anyio
async def test_top_logprobs_of_the_first_token(generator_url: str) -> None:
    generator = VLLMGenerator([generator_url], model="SmolLM2-135M-Instruct", timeout_s=120)
    try:
        asked = await generator.complete(MESSAGES, max_tokens=1, temperature=0.0, top_logprobs=5)
        plain = await generator.complete(MESSAGES, max_tokens=1, temperature=0.0)
    finally:
        await generator.aclose()
    top = asked.first_token_top_logprobs
    assert 1 <= len(top) <= 5
    assert all(logprob <= 0.0 for _, logprob in top)
    assert [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
    assert top[0][0].strip() == asked.text  # greedy: the reply is the likeliest token
    assert asked.mean_logprob == pytest.approx(top[0][1])
    assert plain.first_token_top_logprobs == () and plain.mean_logprob is None
