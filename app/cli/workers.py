"""``covrag worker vllm`` and ``covrag worker stop`` (registered in ``app.cli.commands``): the
local vLLM CPU workers of the ``workers`` package, imported when a command runs so the other
commands start without them."""

from __future__ import annotations

from typing import Annotated

import typer

from app.config import get_settings


def worker_vllm(
    embed: Annotated[
        bool, typer.Option(help="Serve the MiniLM embedder instead of the generator.")
    ] = False,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Prepare the model once, start a vLLM CPU server in the background, wait for /health."""
    from workers.errors import WorkerError
    from workers.models import prepare_embedding_model, prepare_generator_model
    from workers.vllm import launch_worker

    settings = get_settings()
    try:
        if embed:
            model_dir = prepare_embedding_model(settings.store.models_dir)
        else:
            model_dir = prepare_generator_model(
                settings.store.models_dir, settings.worker.python, settings.generator.model
            )
        handle = launch_worker(
            "embed" if embed else "generate",
            model_dir=model_dir,
            port=port or (settings.worker.embed_port if embed else settings.worker.port),
            vllm_python=settings.worker.python,
            logs_dir=settings.store.logs_dir,
            api_key=settings.generator.api_key,
            timeout_s=settings.worker.start_timeout_s,
        )
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"vLLM {'embedder' if embed else 'generator'} ready at {handle.url} (pid {handle.pid})"
    )
    typer.echo(f"log: {handle.log_path}")


def worker_stop(
    embed: Annotated[bool, typer.Option(help="Stop the embedder worker.")] = False,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Stop a worker started by ``covrag worker vllm``."""
    from workers.process import stop_worker
    from workers.vllm import WorkerKind, find_running

    settings = get_settings()
    kind: WorkerKind = "embed" if embed else "generate"
    handle = find_running(
        kind,
        port or (settings.worker.embed_port if embed else settings.worker.port),
        settings.store.logs_dir,
    )
    if handle is None:
        typer.echo("no such worker is running")
        return
    stop_worker(handle)
    typer.echo(f"stopped pid {handle.pid}")
