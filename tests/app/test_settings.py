"""The settings tree keeps every ``COVRAG_*`` variable of the flat settings it replaced: each
still reaches its field, and a bad value is refused naming the variable."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Literal, Union, get_args, get_origin

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from app.cli.commands import cli
from app.config import Settings, Variable, get_settings, variables
from app.state.auth import ApiKeySpec
from tests.conftest import REPO

#: What deployments set (helm/, docker-compose.yml, .env files): none may go or change name.
VARIABLES = [
    "DATA_DIR",
    "STORE",
    "QDRANT_URL",
    "QDRANT_API_KEY",
    "QDRANT_LOCATION",
    "QDRANT_TIMEOUT_S",
    "QDRANT_SHARD_NUMBER",
    "QDRANT_REPLICATION_FACTOR",
    "QDRANT_WRITE_CONSISTENCY_FACTOR",
    "HNSW_M",
    "HNSW_EF_CONSTRUCT",
    "HNSW_EF",
    "INDEX_THRESHOLD",
    "REINDEX_FRACTION",
    "EMBEDDER",
    "EMBEDDER_URL",
    "EMBEDDER_MODEL",
    "EMBED_BATCH_SIZE",
    "EMBED_THREADS",
    "EMBEDDER_TIMEOUT_S",
    "EMBEDDER_RETRIES",
    "RERANKER_DIR",
    "RERANK",
    "RERANK_CANDIDATES",
    "RERANK_THREADS",
    "RERANKER_URL",
    "RERANKER_TIMEOUT_S",
    "GENERATOR_URLS",
    "GENERATOR_MODEL",
    "GENERATOR_API_KEY",
    "GENERATOR_TIMEOUT_S",
    "GENERATOR_CONNECT_TIMEOUT_S",
    "GENERATOR_MAX_CONCURRENCY",
    "GENERATOR_MAX_QUEUE",
    "GENERATOR_BREAKER_FAILURES",
    "GENERATOR_BREAKER_COOLDOWN_S",
    "MAX_TOKENS",
    "TEMPERATURE",
    "DEFAULT_COLLECTION",
    "CHUNK_WORDS",
    "CHUNK_OVERLAP",
    "UPSERT_BATCH_SIZE",
    "MAX_DOCUMENTS_PER_REQUEST",
    "MAX_DOCUMENT_CHARS",
    "MAX_FILES_PER_REQUEST",
    "MAX_FILE_BYTES",
    "DEFAULT_TOP_K",
    "MAX_CHUNKS",
    "SEARCH",
    "KEYWORD_HITS",
    "DEFAULT_ALPHA",
    "STALE_FRACTION",
    "MULTI_HOP_LINKS",
    "CONFORMAL_SCORE",
    "CONFORMAL_UNREACHABLE",
    "DRIFT_WINDOW",
    "DRIFT_FALSE_ALARM",
    "MAX_QUESTION_CHARS",
    "MAX_BODY_BYTES",
    "MAX_CONTEXT_CHARS",
    "REDIS_URL",
    "REDIS_PASSWORD",
    "REDIS_PREFIX",
    "REDIS_TIMEOUT_S",
    "ANSWER_CACHE_TTL_S",
    "CACHE_MAX_ENTRIES",
    "API_KEYS",
    "API_KEYS_FILE",
    "RATE_LIMIT_ON_ERROR",
    "JOB_LEASE_S",
    "JOB_MAX_ATTEMPTS",
    "READY_TIMEOUT_S",
    "REQUIRE_CALIBRATION",
    "READY_REQUIRES_WORKERS",
    "CRITIC",
    "CRITIC_WEIGHTS",
    "CRITIC_WORKER_URL",
    "CRITIC_TIMEOUT_S",
    "CRITIC_FALLBACK",
    "CRITIC_TAU",
    "MAX_ROUNDS",
    "ABSTAIN_ANSWER",
    "CRITIC_COST_WRONG_ACCEPT",
    "CRITIC_COST_FALSE_REJECT",
    "CRITIC_COST_ROUND",
    "CRITIC_ABSTAIN_UNANSWERABLE",
    "HOST",
    "PORT",
    "SHUTDOWN_GRACE_S",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "OTEL",
    "URL",
    "API_KEY",
    "VLLM_PYTHON",
    "VLLM_PORT",
    "VLLM_EMBED_PORT",
    "VLLM_START_TIMEOUT_S",
]
TREE = list(variables())
KEY = ApiKeySpec(name="t", sha256="0" * 64)


def _type(variable: Variable) -> object:
    """The field's type, without ``| None``."""
    annotation = variable.info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        (annotation,) = [a for a in get_args(annotation) if a is not type(None)]
    return annotation


def _sample(variable: Variable, tmp_path: Path) -> tuple[str, object]:
    """A value other than the default, as the environment spells it and as the field holds it."""
    kind, default = _type(variable), variable.info.default
    if get_origin(kind) is Literal:
        choice = next(c for c in get_args(kind) if c != default)
        return str(choice), choice
    if kind is bool:
        return "true", True
    if kind is int:
        number = default + 1 if isinstance(default, int) else 7
        return str(number), number
    if kind is float:
        half = default / 2 if default else 0.5
        return str(half), half
    if kind is Path:
        return str(tmp_path / "x"), tmp_path.resolve() / "x"
    if kind == list[str]:
        return "http://a/v1, http://b/v1", ["http://a/v1", "http://b/v1"]
    if kind == list[ApiKeySpec]:
        return json.dumps([KEY.model_dump()]), [KEY]
    assert kind is str, kind
    return "covrag-test", "covrag-test"


def _bad(variable: Variable) -> str | None:
    """A value the field refuses, or None for a free-text field."""
    kind = _type(variable)
    if kind is str or kind is Path:
        return None
    if kind == list[str]:
        return ","  # no URL at all
    if kind == list[ApiKeySpec]:
        return '[{"name": "no secret"}]'
    return "not-a-" + getattr(kind, "__name__", "choice")


@pytest.fixture(autouse=True)
def _no_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In an empty directory: a developer's ``.env`` must not decide these tests."""
    monkeypatch.chdir(tmp_path)


def test_the_tree_reads_exactly_the_variables_deployments_set() -> None:
    assert sorted(v.name for v in TREE) == sorted(f"COVRAG_{name}" for name in VARIABLES)


@pytest.mark.parametrize("variable", TREE, ids=lambda v: v.name)
def test_each_variable_reaches_its_field(
    variable: Variable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, value = _sample(variable, tmp_path)
    assert value != variable.info.default
    monkeypatch.setenv(variable.name, raw)
    assert getattr(getattr(Settings(), variable.group), variable.field) == value


@pytest.mark.parametrize("variable", [v for v in TREE if _bad(v) is not None], ids=lambda v: v.name)
def test_a_bad_value_is_refused_naming_its_variable(
    variable: Variable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable.name, _bad(variable) or "")
    with pytest.raises(ValidationError, match=variable.name):
        Settings()


def test_the_cli_names_a_bad_variable_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COVRAG_MAX_ROUNDS", "many")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["ask", "Why?", "--local"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert result.stderr.startswith("covrag: COVRAG_MAX_ROUNDS: Input should be a valid integer")


def test_env_file_lines_and_lower_case_names_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("COVRAG_CRITIC=off\nCOVRAG_GENERATOR_URLS=http://a/v1\n")
    monkeypatch.setenv("covrag_max_rounds", "2")
    settings = Settings()
    assert (settings.critic.kind, settings.critic.max_rounds) == ("off", 2)
    assert settings.generator.urls == ["http://a/v1"]


def test_fields_given_in_code_go_over_the_environment_and_a_typo_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COVRAG_CRITIC_TAU", "0.4")
    settings = Settings(critic={"kind": "off"})
    assert (settings.critic.kind, settings.critic.tau) == ("off", 0.4)
    with pytest.raises(ValidationError, match="critic has no setting knd"):
        Settings(critic={"knd": "off"})
    with pytest.raises(ValidationError, match="max_rounds"):
        Settings(max_rounds=2)  # the flat names are the environment's, not the code's


def test_updated_changes_what_it_names_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(critic={"kind": "off", "max_rounds": 2})
    monkeypatch.setenv("COVRAG_MAX_ROUNDS", "4")  # not read again: a variant keeps its origin's
    variant = settings.updated(critic={"tau": 0.3}, redis={"url": "redis://r:6379/0"})
    assert (variant.critic.kind, variant.critic.max_rounds, variant.critic.tau) == ("off", 2, 0.3)
    assert variant.redis.url == "redis://r:6379/0" and settings.redis.url is None
    with pytest.raises(ValidationError):
        settings.updated(critic={"tau": 2.0})
    with pytest.raises(ValueError, match="no settings group critc"):
        settings.updated(critc={"tau": 0.3})


def test_the_vllm_python_is_the_checkouts_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`covrag worker vllm` run from a folder of one's documents finds the checkout's vLLM
    virtualenv; an absolute path, or a relative one the checkout lacks, is kept as given."""
    monkeypatch.chdir(tmp_path)
    venv = REPO / ".venv-vllm" / "bin" / "python"
    assert venv.exists()  # scripts/setup.sh made it
    assert Settings().worker.python == venv
    assert Settings(worker={"python": "/opt/vllm/bin/python"}).worker.python == Path(
        "/opt/vllm/bin/python"
    )
    assert Settings(worker={"python": "venv/bin/python"}).worker.python == Path("venv/bin/python")
