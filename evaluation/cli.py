"""The evaluation commands of the ``covrag`` CLI: ``eval coverage``, ``eval qa`` and
``selfpractice``, added to the serving CLI by ``register`` (which ``app.cli.commands`` calls
when this package is installed)."""

from __future__ import annotations

import typer

from evaluation.cli_coverage import coverage
from evaluation.cli_qa import qa, selfpractice


def _group() -> None:
    """Offline evaluations of a collection against QA sets."""
    # A callback keeps each command a subcommand even while the group holds only one.


def register(cli: typer.Typer) -> None:
    """Add ``eval coverage``, ``eval qa`` and ``selfpractice`` to ``cli``."""
    eval_cli = typer.Typer(
        add_completion=False,
        no_args_is_help=True,
        help="Offline evaluations of a collection against QA sets.",
    )
    eval_cli.callback()(_group)
    eval_cli.command("coverage")(coverage)
    eval_cli.command("qa")(qa)
    cli.add_typer(eval_cli, name="eval")
    cli.command("selfpractice")(selfpractice)
