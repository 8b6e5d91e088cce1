"""The answer loop's values: a question's parameters, the loop's policy and limits, and what
each round and the whole query produced. Frozen dataclasses, converted to wire models at the
HTTP seam (``app.api``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from app.core.reasoner import Reasoning, TokenUsage
from critic.base import Critic
from critic.types import Signals
from retrieval.hybrid import SearchMode
from retrieval.types import FilterValue, Retrieval, ScoredChunk

Decision = Literal["accept", "search_again", "abstain", "continue"]
#: Where a round's search came from: the question; a document the context names (searched with
#: the question); or the model's rewrite.
QueryFrom = Literal["question", "link", "model"]


class InvalidQuery(ValueError):
    """A query the pipeline refuses; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class QueryParams:
    """One question, as the pipeline sees it. ``None`` fields take the defaults."""

    question: str
    collection: str
    top_k: int | None = None
    filters: dict[str, FilterValue] = field(default_factory=dict)
    alpha: float | None = None
    max_rounds: int | None = None
    conformal: bool = True
    #: Earlier (role, text) turns of a chat: the question is first made self-contained.
    history: tuple[tuple[str, str], ...] = ()
    #: The caller's calibration group; ``None``: the question's kind.
    group: str | None = None
    #: Dense search only, or with the keyword vectors (``retrieval.hybrid``).
    search: SearchMode = "dense"
    #: The reranker orders the candidates and its relevance is thresholded.
    rerank: bool = False


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """How many rounds, who judges them, and when to stop.

    ``critic=None`` accepts the first answer (single-round RAG). ``always_continue`` runs every
    round whatever the critic says (self-practice records each round's outcome). ``tau=None``
    uses the τ of whichever critic scored the round (its trained one; a fallback brings its own).
    """

    max_rounds: int
    critic: Critic | None
    tau: float | None = None
    always_continue: bool = False


@dataclass(frozen=True, slots=True)
class Citation:
    """A passage given to the generator; ``n`` is its number in the prompt."""

    n: int
    chunk: ScoredChunk
    cited: bool


@dataclass(frozen=True, slots=True)
class Round:
    """One retrieval round: what was searched, what it added, what the critic said."""

    index: int
    query: str
    query_from: QueryFrom
    retrieval: Retrieval
    added: list[str]
    evicted: list[str]
    context: list[ScoredChunk]
    reasoning: Reasoning
    signals: Signals
    critic_score: float | None
    decision: Decision
    timings_ms: dict[str, float]


@dataclass(frozen=True, slots=True)
class AnswerText:
    """A piece of round ``round``'s answer as vLLM decodes it (streaming)."""

    round: int
    text: str


#: What a streaming caller hears: answer text as it is decoded, then each round once judged.
PipelineEvent = AnswerText | Round
EventSink = Callable[[PipelineEvent], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """Everything a query response reports."""

    answer: str
    sufficient: bool
    abstained: bool
    citations: list[Citation]
    retrieval: Retrieval
    rounds: list[Round]
    candidate: Round | None
    timings_ms: dict[str, float]
    model: str
    llm_calls: int
    usage: TokenUsage
    warnings: list[str]
    critic: str | None = None
    tau: float | None = None


@dataclass(frozen=True, slots=True)
class PipelineLimits:
    """Bounds and defaults from settings the pipeline enforces."""

    max_question_chars: int
    max_context_chars: int
    default_top_k: int
    max_chunks: int
    max_rounds: int
    tau: float | None  # None: each critic's own
    abstain_answer: str
