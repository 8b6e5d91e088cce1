"""One round's pure steps: what it adds to the answer's context, the signals the critic
reads of it, and what the loop does next. Kept apart from the loop (``app.core.pipeline``),
which does the I/O."""

from __future__ import annotations

from app.core.reasoner import Reasoning
from app.core.types import Decision, LoopPolicy
from critic.types import Signals
from retrieval.types import Retrieval, ScoredChunk

#: Unseen chunks a rewritten query may bring in, displacing the weakest earlier ones.
LATER_ROUND_CHUNKS = 3


def extend_context(
    context: list[ScoredChunk],
    hits: list[ScoredChunk],
    later: bool,
    max_chars: int,
    dropped: set[str],
) -> tuple[list[str], list[str]]:
    """Add unseen chunks while the prompt budget allows; returns (added, evicted) ids.

    Round 0 fills the budget in score order. A later round exists to bring in what round 0
    lacked, so its best ``LATER_ROUND_CHUNKS`` unseen hits displace the weakest earlier
    chunks (never the question's own best one) instead of finding the budget spent. Evicted
    ids join ``dropped`` and never come back.
    """

    def cost(chunk: ScoredChunk) -> int:
        return len(chunk.text) + len(chunk.title) + 8

    seen = {c.id for c in context} | dropped
    fresh = [h for h in {h.id: h for h in hits}.values() if h.id not in seen]
    evicted: list[str] = []
    if later:
        fresh = fresh[:LATER_ROUND_CHUNKS]
        need = sum(cost(h) for h in fresh)
        while len(context) > 1 and sum(map(cost, context)) + need > max_chars:
            weakest = min(context[1:], key=lambda c: c.score)
            context.remove(weakest)
            evicted.append(weakest.id)
            dropped.add(weakest.id)
    used = sum(map(cost, context))
    added: list[str] = []
    for hit in fresh:
        if context and used + cost(hit) > max_chars:
            continue
        context.append(hit)
        added.append(hit.id)
        used += cost(hit)
    return added, evicted


def round_signals(
    retrieval: Retrieval, context: list[ScoredChunk], reasoning: Reasoning, index: int
) -> Signals:
    top = max((c.score for c in context), default=0.0)
    return Signals(
        top_similarity=top,
        margin=top - retrieval.cosine_threshold
        if retrieval.cosine_threshold is not None and context
        else 0.0,
        passed=len(context),
        none_cleared=retrieval.none_cleared,
        truncated=reasoning.truncated,
        choice=reasoning.choice,
        mean_logprob=reasoning.mean_logprob,
        answer_tokens=reasoning.tokens,
        round_index=index,
    )


def decide(
    policy: LoopPolicy, scored: tuple[float, float] | None, last: bool, refused: bool
) -> Decision:
    """What the loop does after a round. With a critic, an answer that declines (or is empty)
    is never accepted, whatever its score: it answers nothing."""
    if scored is None:
        return "continue" if policy.always_continue and not last else "accept"
    if policy.always_continue:
        return "continue"
    score, tau = scored
    if score >= tau and not refused:
        return "accept"
    return "abstain" if last else "search_again"
