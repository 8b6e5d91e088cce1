"""The critic's exception tree; ``app/errors.py`` maps it to HTTP statuses."""


class CriticError(Exception):
    """Base of the critic's errors."""


class CriticUnavailable(CriticError):
    """A remote critic (the critic worker, or the vLLM judge) did not answer: worth a retry."""

    retry_after = 5.0


class CriticWeightsError(CriticError):
    """Critic weights are missing or corrupt: the server must refuse to start."""
