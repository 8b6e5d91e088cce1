"""``covrag train-critic`` and ``covrag worker critic`` (registered in ``app.cli.commands``).

``train-critic`` fits a critic on self-practice rows (``covrag selfpractice``), prints its
held-out metrics, and writes the features weights JSON (with the command that rebuilds it) or
the cross-encoder model folder. ``worker critic`` starts (or ``--stop``s) the critic worker that
serves that folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TypedDict

import httpx
import typer

from app.config import Settings, get_settings
from critic.errors import CriticError
from critic.features import DEFAULT_WEIGHTS
from critic.metrics import Costs, Metrics
from critic.train import load_rows, train_cross_encoder, train_features

#: Folder of the trained cross-encoder under the models dir (not committed: it is 90 MB).
CROSS_ENCODER_DIR = "critic-cross-encoder"


class _Run(TypedDict):
    """The training arguments both backends take."""

    seed: int
    costs: Costs
    abstain_unanswerable: float
    trained_on: str
    command: str


class Backend(StrEnum):
    features = "features"
    cross_encoder = "cross-encoder"


def default_model_dir(settings: Settings) -> Path:
    return settings.store.models_dir / CROSS_ENCODER_DIR


def metrics_table(metrics: Metrics) -> str:
    """The held-out metrics as an aligned two-column table."""
    rows = metrics.to_json()
    width = max(map(len, rows))
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows.items())


def _provenance(data: Path, rows: int) -> str:
    digest = hashlib.sha256(data.read_bytes()).hexdigest()[:16]
    return f"{data.name}: {rows} rows, sha256 {digest}"


def _write_json(path: Path, payload: dict[str, object]) -> None:
    """Write via a temp file and rename, so a crash never leaves half a weights file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def train_critic(
    data: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, help="Self-practice JSONL (covrag selfpractice)."
        ),
    ],
    backend: Annotated[Backend, typer.Option(help="Which critic to train.")] = Backend.features,
    seed: Annotated[int, typer.Option(help="Seed of the split, balancing and training.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Weights JSON (features; default: the packaged critic/weights/features.json) "
            "or model folder (cross-encoder; default: <data dir>/models/critic-cross-encoder)."
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs (cross-encoder only).")] = 3,
) -> None:
    """Train a critic on self-practice rows; print held-out AUROC, accuracy at τ, ECE and τ."""
    settings = get_settings()
    costs = Costs(
        wrong_accept=settings.critic.cost_wrong_accept,
        false_reject=settings.critic.cost_false_reject,
        round=settings.critic.cost_round,
    )
    argv = ["covrag", "train-critic", "--backend", backend.value, "--data", str(data)]
    argv += ["--seed", str(seed), *(["--out", str(out)] if out else [])]
    if backend is Backend.cross_encoder:
        argv += ["--epochs", str(epochs)]
    try:
        rows, errors = load_rows(data)
        for error in errors:
            typer.echo(f"skipped malformed line {error}", err=True)
        common = _Run(
            seed=seed,
            costs=costs,
            abstain_unanswerable=settings.critic.abstain_unanswerable,
            trained_on=_provenance(data, len(rows)),
            command=shlex.join(argv),
        )
        if backend is Backend.features:
            target = out or DEFAULT_WEIGHTS
            weights, metrics = train_features(rows, **common)
            _write_json(target, weights)
        else:
            target = out or default_model_dir(settings)
            metrics = train_cross_encoder(rows, out_dir=target, epochs=epochs, **common)
    except ImportError as exc:
        typer.echo(f"error: {exc}; install the extras: pip install -e '.[train,local]'", err=True)
        raise typer.Exit(2) from exc
    except (ValueError, CriticError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(metrics_table(metrics))
    typer.echo(f"{'weights' if backend is Backend.features else 'model'} → {target}")


def worker_critic(
    port: Annotated[
        int | None, typer.Option(help="Port (default: that of the critic_worker_url setting).")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="Trained cross-encoder (default: models/critic-…).")
    ] = None,
    critic: Annotated[
        bool, typer.Option(help="Serve the critic (--no-critic: the reranker alone).")
    ] = True,
    reranker: Annotated[
        bool, typer.Option(help="Serve the reranker too, on POST /rerank (COVRAG_RERANKER_URL).")
    ] = False,
    reranker_dir: Annotated[
        Path | None,
        typer.Option(help="Trained reranker (default: COVRAG_RERANKER_DIR); implies --reranker."),
    ] = None,
    stop: Annotated[bool, typer.Option(help="Stop the worker instead.")] = False,
) -> None:
    """Start the cross-encoder critic worker in the background and wait for /health."""
    from workers.critic_server import find_critic_worker, launch_critic_worker
    from workers.errors import WorkerError
    from workers.process import stop_worker

    settings = get_settings()
    port = port or httpx.URL(settings.critic.worker_url).port or 8102
    if stop:
        handle = find_critic_worker(port, settings.store.logs_dir)
        if handle is None:
            typer.echo("no critic worker of ours is running on that port")
            return
        stop_worker(handle)
        typer.echo(f"stopped pid {handle.pid}")
        return
    if reranker or reranker_dir is not None:
        reranker_dir = reranker_dir or settings.reranker.model_dir(settings.store.models_dir)
    if not critic and reranker_dir is None:
        typer.echo("error: --no-critic leaves nothing to serve; add --reranker", err=True)
        raise typer.Exit(2)
    try:
        handle = launch_critic_worker(
            (model_dir or default_model_dir(settings)) if critic else None,
            port,
            settings.store.logs_dir,
            reranker_dir=reranker_dir,
        )
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"critic worker ready at {handle.url} (pid {handle.pid})")
    typer.echo(f"log: {handle.log_path}")
