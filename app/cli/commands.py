"""The ``covrag`` command line: serve; ask, ingest, calibrate, index, collections and jobs
through a running server (or, for the first four, in process with ``--local``); worker;
train-critic; train-reranker. ``eval`` and ``selfpractice`` come from the ``evaluation``
package when it is installed (``add_evaluation``)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperGroup
from typer.exceptions import TyperException

from app.api.calibration.protocol import CalibrationRequest, to_qa_in
from app.api.calibration.serving import default_alpha as calibration_alpha
from app.api.collections.protocol import IndexRequest
from app.api.query.protocol import QueryRequest
from app.api.query.serving import to_params
from app.cli import local as cli_local
from app.cli import remote as cli_remote
from app.cli.client import ClientError
from app.cli.critic import train_critic, worker_critic
from app.cli.demo import demo_documents, first_try
from app.cli.local import NoLocalData
from app.cli.remote import collections_cli, jobs, server
from app.cli.rerank import train_reranker
from app.cli.workers import worker_stop, worker_vllm
from app.config import get_settings
from app.services import check_critic
from app.state.auth import KeyRing
from app.state.datalock import DataDirHeld, claim, release
from app.telemetry.logs import configure_logging
from critic.errors import CriticWeightsError
from retrieval.calibration_set import load_qa
from retrieval.corpus import load_files
from retrieval.errors import RetrievalError
from retrieval.hybrid import SearchMode


class _OneLineErrors(TyperGroup):
    """Every error ends as one line on stderr saying what went wrong, with exit code 2 when
    the request was refused (fix it and retry) and 1 otherwise; ``--debug`` lets the
    exception through, with its traceback."""

    # The group is only ever handed a typer.Context; the base types it as typer's vendored,
    # private click Context, which this narrows.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"covrag: {_one_line(exc)}", err=True)
            raise typer.Exit(_exit_code(exc)) from None


#: Errors that refuse the request as given (exit 2); a server's 4xx is one too.
_REFUSALS = (DataDirHeld, NoLocalData, RetrievalError, CriticWeightsError, ValueError, OSError)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    text = " ".join(str(exc).split())
    if isinstance(exc, (ClientError, *_REFUSALS)):
        return text
    return f"{type(exc).__name__}: {text} (--debug shows the traceback)"


def _exit_code(exc: Exception) -> int:
    if isinstance(exc, ClientError):
        return exc.exit_code
    return 2 if isinstance(exc, _REFUSALS) else 1


cli = typer.Typer(
    cls=_OneLineErrors,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # --debug must not print API keys held in locals
    rich_markup_mode=None,  # docstrings rewrapped, as click does
)
worker_cli = typer.Typer(no_args_is_help=True, help="Local vLLM CPU workers.")
cli.add_typer(worker_cli, name="worker")
cli.add_typer(collections_cli, name="collections")
cli.command()(jobs)
cli.command("train-critic")(train_critic)
cli.command("train-reranker")(train_reranker)
worker_cli.command("critic")(worker_critic)
worker_cli.command("vllm")(worker_vllm)
worker_cli.command("stop")(worker_stop)


def add_evaluation(group: typer.Typer) -> None:
    """Add ``eval …`` and ``selfpractice`` from the ``evaluation`` package, if it is installed.

    The offline tools import the serving packages, never the reverse: this guarded import is
    the one place the serving code names them (``tests/test_layering.py`` holds it to that).
    Without the package (the API image leaves it out) the commands are simply absent; a
    package that is there but fails to import raises.
    """
    try:
        from evaluation.cli import register
    except ModuleNotFoundError as exc:
        if exc.name != "evaluation":
            raise
    else:
        register(group)


add_evaluation(cli)


@cli.callback()
def root(
    url: Annotated[
        str | None,
        typer.Option(help="The server to talk to; default COVRAG_URL (http://127.0.0.1:8080)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show an error's traceback.")] = False,
) -> None:
    """covrag: RAG that knows when it has enough evidence.

    ask, ingest, calibrate, index, collections and jobs talk to the server at COVRAG_URL,
    sending COVRAG_API_KEY. With --local, ask, ingest, calibrate and index work in process
    on the data dir instead: COVRAG_DATA_DIR, default ./.covrag (resolved against the folder
    covrag starts in); refused while a server holds it.
    """


#: The option of the commands that can also work in process.
Local = Annotated[
    bool,
    typer.Option(
        "--local",
        help="In process on COVRAG_DATA_DIR instead of through the server; refused while a "
        "server holds that data dir.",
    ),
]


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the HTTP API (uvicorn), holding the data dir: a lock file in it names this
    process and its URL until it stops."""
    import uvicorn

    from app.main import create_app

    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = get_settings().updated(server=updates)
    url = f"http://{settings.server.host}:{settings.server.port}"
    try:
        check_critic(settings.critic)
        KeyRing.load(settings.auth.api_keys, settings.auth.api_keys_file)
        claim(settings.store.data_dir, url)
    except (CriticWeightsError, OSError, ValueError, DataDirHeld) as exc:
        typer.echo(f"covrag: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    # uvicorn drains on SIGTERM, then raises it again to the handler it found: let that one
    # exit through `finally` (status 143, as if killed) so the lock goes with the server.
    signal.signal(signal.SIGTERM, lambda sig, _: sys.exit(128 + sig))
    try:
        typer.echo(f"covrag API on {url}  (docs: /docs)")
        typer.echo(first_try(settings, url))
        configure_logging(settings.server.log_level, json=settings.server.log_format == "json")
        uvicorn.run(
            create_app(settings),
            host=settings.server.host,
            port=settings.server.port,
            log_config=None,  # uvicorn's loggers go through configure_logging's handler too
            access_log=False,  # the request middleware logs each request, with its id and route
            # SIGTERM drains requests; uvicorn types this int but hands it to asyncio.timeout
            timeout_graceful_shutdown=settings.server.shutdown_grace_s,  # type: ignore[arg-type]
        )
    finally:
        release(settings.store.data_dir)


@cli.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="PDF, HTML, DOCX, Markdown, text or .jsonl files."),
    ] = None,
    demo: Annotated[bool, typer.Option(help="Ingest the demo Wikipedia corpus.")] = False,
    collection: Annotated[str | None, typer.Option(help="Target collection.")] = None,
    local: Local = False,
) -> None:
    """Ingest documents (unchanged ones are skipped) and print the report as JSON.

    A file is one document (id and source: its path; a PDF's chunks keep their page), a
    .jsonl file one per line.

    Through the server: a job per 500 documents, followed with a progress bar. With --demo,
    also calibrate from the demo QA set unless a fresh calibration exists.
    """
    settings = get_settings()
    if demo == bool(files):
        raise typer.BadParameter("give files or --demo (not both)")
    if local:
        cli_local.check_local(settings, creates=True)
    name = collection or settings.collections.default
    docs = demo_documents(settings) if demo else list(load_files(files or []))
    if local:
        report = cli_local.ingest(settings, name, docs, demo)
    else:
        with server(ctx) as client:
            report = cli_remote.ingest(client, name, docs, demo)
    typer.echo(json.dumps(report))


@cli.command()
def index(
    ctx: typer.Context,
    collection: Annotated[str, typer.Argument(help="The collection to index.")],
    timeout: Annotated[
        float | None,
        typer.Option(
            min=1, help="Stop the build after this many seconds; the collection stays as it was."
        ),
    ] = None,
    local: Local = False,
) -> None:
    """Build a collection's HNSW index (Edge; a Qdrant server indexes by itself) and print
    the report as JSON."""
    settings = get_settings()
    if local:
        cli_local.check_local(settings)
        report = cli_local.index(settings, collection, timeout)
    else:
        with server(ctx) as client:
            report = cli_remote.index(client, collection, IndexRequest(timeout_s=timeout))
    typer.echo(json.dumps(report))


@cli.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: Annotated[str | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    alpha: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    search: Annotated[
        SearchMode | None,
        typer.Option(help="dense, or hybrid: also BM25 keywords. Default COVRAG_SEARCH."),
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="Calibration group whose own threshold applies.")
    ] = None,
    rerank: Annotated[
        bool | None,
        typer.Option(help="Order the candidates by the trained reranker. Default COVRAG_RERANK."),
    ] = None,
    local: Local = False,
) -> None:
    """Ask one question and print the JSON answer."""
    settings = get_settings()
    body = QueryRequest(
        question=question,
        collection=collection,
        top_k=top_k,
        alpha=alpha,
        search=search,
        group=group,
        rerank=rerank,
    )
    if local:
        cli_local.check_local(settings)
        answer = asyncio.run(cli_local.ask(settings, to_params(body, settings)))
    else:
        with server(ctx) as client:
            answer = client.query(body)
    typer.echo(json.dumps(answer, indent=2))


@cli.command()
def calibrate(
    ctx: typer.Context,
    collection: Annotated[str | None, typer.Option(help="Collection to calibrate.")] = None,
    from_qa: Annotated[
        Path | None,
        typer.Option(help="QA JSONL: {id, question, answers[], gold_titles[]?|gold_doc_ids[]?}."),
    ] = None,
    generate: Annotated[
        int | None, typer.Option(min=1, help="Generate questions from N random chunks.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the chunk sample.")] = 0,
    default_alpha: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
    replace_smaller: Annotated[
        bool,
        typer.Option(help="Allow replacing a calibration by one under half its size."),
    ] = False,
    local: Local = False,
) -> None:
    """Calibrate the conformal threshold of a collection and print a summary as JSON.

    A default alpha below 1/(n+1) is refused, a much smaller calibration needs
    --replace-smaller, the replaced one stays restorable.
    """
    settings = get_settings()
    if (from_qa is None) == (generate is None):
        raise typer.BadParameter("give exactly one of --from-qa or --generate")
    name = collection or settings.collections.default
    qa = None if from_qa is None else load_qa(from_qa)
    for error in [] if qa is None else qa.errors:
        typer.echo(f"skipped malformed line {error}", err=True)
    if local:
        cli_local.check_local(settings)
        alpha = calibration_alpha(default_alpha, settings)
        if from_qa is not None and qa is not None:
            result = cli_local.calibrate_qa(
                settings, name, qa.items, from_qa, alpha, replace_smaller
            )
        else:
            assert generate is not None
            result = asyncio.run(
                cli_local.generate_calibration(
                    settings, name, generate, seed, alpha, replace_smaller
                )
            )
    else:
        body = CalibrationRequest(
            qa=None if qa is None else to_qa_in(qa.items),
            generate=generate,
            seed=seed,
            default_alpha=default_alpha,
            replace_smaller=replace_smaller,
        )
        with server(ctx) as client:
            result = cli_remote.calibrate(client, name, body)
    typer.echo(json.dumps(result))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
