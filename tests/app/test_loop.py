"""The SIM-RAG loop's control flow against the real vLLM CPU worker and real retrieval.

The critic here is scripted (a fake, allowed for control flow): a real critic cannot be steered
into "reject, then accept". Everything else — retrieval, the reasoner, the next round's search —
is real. The collection holds documents the Hubble article names by title (Edwin Hubble,
Earth) and that Edwin Hubble's does (Milky Way, Sun), so a rejected round searches one next.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest

from app.config import Settings
from app.core.context import LATER_ROUND_CHUNKS
from app.core.pipeline import Pipeline
from app.core.reasoner import Reasoning
from app.core.types import LoopPolicy, QueryOutcome, QueryParams
from app.services import build_services
from critic.errors import CriticUnavailable
from critic.types import CriticInput
from retrieval.calibration_set import normalize_answer
from retrieval.types import Document

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


class ScriptedCritic:
    """Fake critic: returns the scripted scores in order (control-flow tests only)."""

    name = "scripted"
    tau = 0.5

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)
        self.seen: list[CriticInput] = []

    async def score(self, item: CriticInput) -> float:
        self.seen.append(item)
        return self.scores.pop(0)

    async def aclose(self) -> None:
        """Nothing to release."""


class DownCritic(ScriptedCritic):
    """Fake critic for failure injection: the critic worker is down."""

    name = "cross-encoder"

    async def score(self, item: CriticInput) -> float:
        raise CriticUnavailable("connection refused (injected)")


@pytest.fixture(scope="module")
def settings_live(generator_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        store={"data_dir": tmp_path_factory.mktemp("loop")},
        generator={"urls": [generator_url], "max_tokens": 64},
        critic={"kind": "off"},
    )


#: Documents the Hubble article and Edwin Hubble's name by title.
NAMED = {"Edwin Hubble", "Earth", "Milky Way", "Sun"}


@pytest.fixture
async def pipeline(
    settings_live: Settings, wiki_sample: list[Document], wiki_docs: list[Document]
) -> AsyncIterator[Pipeline]:
    services = build_services(settings_live)
    named = [d for d in wiki_docs if d.id in NAMED and d not in wiki_sample]
    services.ingestor.ingest("wiki", [*wiki_sample, *named])
    yield services.pipeline
    await services.aclose()


QUESTION = "Which NASA center controls the Hubble Space Telescope?"


def _params(**kw: object) -> QueryParams:
    return QueryParams(question=QUESTION, collection="wiki", top_k=2, **kw)  # type: ignore[arg-type]


def _expected_calls(out: QueryOutcome) -> int:
    """An answer per round that changed the context (a round that added and evicted nothing
    keeps the previous answer), and a call for each query the model rewrote (a linked
    document's round needs none)."""
    answered = [r for r in out.rounds if r.index == 0 or r.added or r.evicted]
    for r in out.rounds:
        if r not in answered:
            assert r.reasoning is out.rounds[r.index - 1].reasoning
            assert "reason" not in r.timings_ms
    return len(answered) + sum(r.query_from == "model" for r in out.rounds)


async def test_accept_at_round_zero(pipeline: Pipeline) -> None:
    critic = ScriptedCritic([0.9])
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=3, critic=critic, tau=0.5))
    assert [r.decision for r in out.rounds] == ["accept"]
    assert out.llm_calls == 1 and not out.abstained and out.candidate is None
    assert out.answer == out.rounds[0].reasoning.answer and out.answer
    assert critic.seen[0].question == QUESTION and critic.seen[0].passages


async def test_reject_then_accept_searches_again(pipeline: Pipeline) -> None:
    critic = ScriptedCritic([0.1, 0.8])
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=3, critic=critic, tau=0.5))
    assert [r.decision for r in out.rounds] == ["search_again", "accept"]
    assert out.llm_calls == _expected_calls(out)  # answer, answer (if anything new)
    assert (out.rounds[0].query, out.rounds[0].query_from) == (QUESTION, "question")
    # the second hop: a document the first passages name, searched with the question
    assert out.rounds[1].query_from == "link"
    assert out.rounds[1].query in " ".join(c.text for c in out.rounds[0].context)
    assert {c.title for c in out.rounds[1].retrieval.hits} == {out.rounds[1].query}
    assert out.rounds[1].signals.round_index == 1
    assert not out.abstained


async def test_exhaustion_abstains_with_the_best_candidate(pipeline: Pipeline) -> None:
    critic = ScriptedCritic([0.2, 0.4, 0.3])
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=3, critic=critic, tau=0.5))
    assert [r.decision for r in out.rounds] == ["search_again", "search_again", "abstain"]
    assert len({r.query for r in out.rounds}) == 3  # no search repeats one already tried
    assert out.abstained and not out.sufficient
    assert out.answer == "I don't have enough evidence to answer that."
    assert out.candidate is out.rounds[1] and out.candidate.critic_score == 0.4
    assert out.llm_calls == _expected_calls(out)


async def test_an_answer_that_answers_nothing_is_never_accepted(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real model's reply is replaced by the empty answer a restated question leaves
    # (plain_answer): a reply a real model cannot be steered into on purpose.
    answer = pipeline.reasoner.answer

    async def restated(*args: Any, **kwargs: Any) -> Reasoning:
        return replace(await answer(*args, **kwargs), answer="")

    monkeypatch.setattr(pipeline.reasoner, "answer", restated)
    critic = ScriptedCritic([0.9, 0.9])
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=2, critic=critic, tau=0.5))
    assert [r.decision for r in out.rounds] == ["search_again", "abstain"]
    assert out.abstained and not out.sufficient


async def test_max_rounds_bounds_the_loop(pipeline: Pipeline) -> None:
    critic = ScriptedCritic([0.1])
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=1, critic=critic, tau=0.5))
    assert [r.decision for r in out.rounds] == ["abstain"] and out.llm_calls == 1
    params = QueryParams(question=QUESTION, collection="wiki", max_rounds=2)
    policy = pipeline.default_policy(params)
    assert policy.max_rounds == 2


async def test_rounds_add_only_unseen_chunks(pipeline: Pipeline) -> None:
    critic = ScriptedCritic([0.0, 0.0, 0.0])
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=3, critic=critic, tau=0.5))
    added = [cid for r in out.rounds for cid in r.added]
    assert len(added) == len(set(added))  # no chunk enters twice
    evicted = [cid for r in out.rounds for cid in r.evicted]
    final = [c.id for c in out.rounds[-1].context]
    assert final == [cid for cid in added if cid not in evicted]
    for before, after in pairwise(out.rounds):  # a round keeps the earlier context, minus what
        kept = [c.id for c in before.context if c.id not in after.evicted]  # it displaced
        assert [c.id for c in after.context] == kept + after.added
        assert len(after.added) <= LATER_ROUND_CHUNKS
        assert before.context[0].id == after.context[0].id  # the question's best chunk stays


async def test_a_round_that_adds_nothing_keeps_the_answer_without_an_llm_call(
    pipeline: Pipeline,
) -> None:
    """Searching one document only: no other document can be linked, so the model rewrites the
    query; round 1 then finds nothing round 0 did not already add, so its prompt would be
    round 0's; greedy decoding would repeat the answer, so it is not asked. A rewrite with
    nothing new in it (a query tried, or words the passages lack) ends the loop instead."""
    critic = ScriptedCritic([0.1, 0.2])
    params = _params(filters={"doc_id": "Hubble Space Telescope"})
    out = await pipeline.run(params, LoopPolicy(max_rounds=2, critic=critic, tau=0.5))
    assert out.llm_calls == 2  # the answer and the rewrite; not a second answer
    if len(out.rounds) == 1:  # the rewrite brought nothing new: the loop stopped
        assert [r.decision for r in out.rounds] == ["abstain"]
        return
    assert [r.decision for r in out.rounds] == ["search_again", "abstain"]
    assert out.rounds[1].query_from == "model"
    # the rewrite is a phrase of the passages round 0 read, by the reasoner's own normalising
    read = " ".join(normalize_answer(f"{c.title} {c.text}") for c in out.rounds[0].context)
    assert normalize_answer(out.rounds[1].query) in read
    assert out.rounds[0].added and not out.rounds[1].added and not out.rounds[1].evicted
    assert out.rounds[1].reasoning is out.rounds[0].reasoning
    assert "reason" not in out.rounds[1].timings_ms and "reason" in out.rounds[0].timings_ms
    assert critic.seen[1].answer == critic.seen[0].answer  # the critic still judged round 1


async def test_without_a_critic_the_first_answer_stands(pipeline: Pipeline) -> None:
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=3, critic=None, tau=0.5))
    assert [r.decision for r in out.rounds] == ["accept"] and out.rounds[0].critic_score is None


async def test_critic_down_falls_back_or_fails(pipeline: Pipeline) -> None:
    fallback = ScriptedCritic([0.9])
    pipeline.fallback = fallback
    out = await pipeline.run(_params(), LoopPolicy(max_rounds=2, critic=DownCritic([]), tau=0.5))
    assert out.warnings and "unavailable" in out.warnings[0]
    assert out.rounds[0].critic_score == 0.9
    pipeline.fallback = None
    with pytest.raises(CriticUnavailable):
        await pipeline.run(_params(), LoopPolicy(max_rounds=2, critic=DownCritic([]), tau=0.5))
