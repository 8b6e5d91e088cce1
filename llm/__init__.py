"""The LLM client: the ``Generator`` protocol, the vLLM backend, its breaker, admission limit
and structured-output grammar. Below ``app`` and ``critic``; knows nothing of either."""

from llm.base import BreakerState, Completion, FailureKind, Generator, ReplicaStatus, TextSink
from llm.breaker import Admission, CircuitBreaker
from llm.errors import (
    GeneratorBusy,
    GeneratorError,
    GeneratorRejected,
    GeneratorTimeout,
    GeneratorUnavailable,
)
from llm.grammar import compact_json_pattern
from llm.vllm import VLLMGenerator

__all__ = [
    "Admission",
    "BreakerState",
    "CircuitBreaker",
    "Completion",
    "FailureKind",
    "Generator",
    "GeneratorBusy",
    "GeneratorError",
    "GeneratorRejected",
    "GeneratorTimeout",
    "GeneratorUnavailable",
    "ReplicaStatus",
    "TextSink",
    "VLLMGenerator",
    "compact_json_pattern",
]
