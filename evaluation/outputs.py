"""Where the evaluation commands write when no ``--out`` is given: under the data dir."""

from __future__ import annotations

from pathlib import Path

from app.config import Settings

#: The folder of the data dir that holds every evaluation's default output.
EVAL_DIR = "eval"


def default_out(settings: Settings, name: str) -> Path:
    """``<data dir>/eval/<name>``: beside the collections it evaluates, in any install (a
    checkout's ``bench/results/`` is only ever written when ``--out`` names it)."""
    return settings.store.data_dir / EVAL_DIR / name
