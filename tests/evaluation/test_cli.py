"""The evaluation commands keep their names and options under ``covrag``, and write where a
plain install can: ``--out``, or a folder under the data dir, never a checkout's path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.main import get_command

from app.cli.commands import cli
from app.config import Settings
from evaluation.outputs import default_out


def _commands() -> dict[str, Any]:
    """The commands as click sees them (typer's vendored click: typed ``Any`` here)."""
    group: Any = get_command(cli)
    eval_group = group.commands["eval"]
    return {
        "eval coverage": eval_group.commands["coverage"],
        "eval qa": eval_group.commands["qa"],
        "selfpractice": group.commands["selfpractice"],
    }


def test_the_commands_and_their_options_are_where_they_were() -> None:
    options = {name: {p.name for p in command.params} for name, command in _commands().items()}
    assert options == {
        "eval coverage": {
            "qa", "alphas", "splits", "collection", "cal_sizes", "kinds", "seed",
            "max_chunks", "search_k", "unanswerable", "out", "score",
        },
        "eval qa": {
            "qa", "modes", "collection", "top_k", "search", "rerank", "concurrency", "per_type",
            "out",
        },
        "selfpractice": {"qa", "out", "rounds", "collection", "concurrency"},
    }  # fmt: skip


def test_out_is_required_or_defaults_under_the_data_dir(tmp_path: Path) -> None:
    for name, command in _commands().items():
        (out,) = [p for p in command.params if p.name == "out"]
        assert out.required or out.default is None, name  # None: default_out(settings, …)
    settings = Settings(store={"data_dir": tmp_path})
    assert default_out(settings, "qa") == tmp_path.resolve() / "eval" / "qa"
