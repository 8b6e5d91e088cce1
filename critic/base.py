"""The ``Critic`` protocol: P(the evidence so far suffices for a right answer)."""

from __future__ import annotations

from typing import Protocol

from critic.types import CriticInput


class Critic(Protocol):
    """Scores one round; higher means accept. Backends share ``tests/critic`` contract tests.

    ``score`` returns a probability in [0, 1]. It raises ``CriticUnavailable`` when a remote
    backend does not answer, so the pipeline can fall back or answer 503. ``tau`` is the accept
    threshold the backend was tuned for (``critic.train``), 0.5 when it has none.
    """

    name: str
    #: The accept threshold on ``score`` this critic was tuned for (see ``train-critic``).
    tau: float

    async def score(self, item: CriticInput) -> float: ...

    async def aclose(self) -> None: ...
