"""``covrag train-critic`` (features) and ``worker critic --stop`` in process."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from app.cli.critic import train_critic, worker_critic
from app.config import get_settings
from critic.features import FeaturesCritic
from tests.conftest import free_port

# Registered as app.cli.commands registers them (there `worker critic`, under its `worker` group).
cli = typer.Typer()
cli.command("train-critic")(train_critic)
cli.command("worker-critic")(worker_critic)


@cli.callback()
def _group() -> None:
    """Keeps the commands subcommands."""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setenv("COVRAG_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_train_features_writes_loadable_weights_with_their_command(
    runner: CliRunner, tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    data = tmp_path / "practice.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "weights.json"
    args = ["train-critic", "--backend", "features", "--data", str(data), "--seed", "0"]
    args += ["--out", str(out)]

    result = runner.invoke(cli, args)

    assert result.exit_code == 0, result.output
    table = dict(line.split() for line in result.stdout.splitlines()[:-1])
    assert float(table["auroc"]) > 0.75
    assert {"accuracy", "ece", "tau", "expected_cost"} <= set(table)
    weights = json.loads(out.read_text())
    assert weights["command"] == shlex.join(["covrag", *args])
    assert weights["trained_on"].startswith(f"practice.jsonl: {len(rows)} rows, sha256 ")
    assert FeaturesCritic(out).tau == pytest.approx(float(table["tau"]), abs=1e-4)


def test_bad_rows_fail_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    data = tmp_path / "practice.jsonl"
    data.write_text('{"qid": "a"}\n')
    out = tmp_path / "weights.json"
    result = runner.invoke(cli, ["train-critic", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 2
    assert "skipped malformed line practice.jsonl:1: missing question" in result.stderr
    assert "at least two questions" in result.stderr
    assert not out.exists()


def test_stop_without_a_worker(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["worker-critic", "--stop", "--port", str(free_port())])
    assert result.exit_code == 0, result.output
    assert "no critic worker" in result.stdout


def test_a_worker_with_nothing_to_serve_is_refused(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["worker-critic", "--no-critic", "--port", str(free_port())])
    assert result.exit_code == 2
    assert "--no-critic leaves nothing to serve; add --reranker" in result.stderr
