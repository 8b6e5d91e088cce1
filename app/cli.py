"""The ``covrag`` command line: serve, ingest, index, ask, worker."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import httpx
import typer
from tqdm import tqdm

from app.auth import KeyRing
from app.calibration import calibrate_generated, calibration_summary
from app.cli_critic import train_critic, worker_critic
from app.cli_eval import eval_cli
from app.cli_qa import qa as qa_eval
from app.cli_qa import selfpractice
from app.config import Settings, get_settings
from app.generator import GeneratorError
from app.logs import configure_logging
from app.pipeline import QueryParams
from app.schemas import to_query_response
from app.services import (
    build_embedder,
    build_ingestor,
    build_services,
    build_store,
    check_critic,
    invalidate_answers,
)
from critic.errors import CriticWeightsError
from retrieval.calibration import CalibrationItem, load_qa
from retrieval.calibration import calibrate as run_calibration
from retrieval.corpus import fetch_wiki, load_files, load_wiki
from retrieval.embed import Embedder
from retrieval.errors import RetrievalError
from retrieval.retriever import Retriever
from retrieval.store import VectorStore
from retrieval.store.base import index_due

#: The calibration part of the dev QA set over the demo corpus (data/qa/README.md).
DEMO_CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "qa" / "calib.jsonl"
#: The question ``covrag serve`` and the README offer to try first.
QUICKSTART_QUESTION = "Melbourne is the capital of which Australian state?"

cli = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="covrag: RAG that knows when it has enough evidence.",
)
worker_cli = typer.Typer(no_args_is_help=True, help="Local vLLM CPU workers.")
cli.add_typer(worker_cli, name="worker")
cli.add_typer(eval_cli, name="eval")
cli.command("selfpractice")(selfpractice)
cli.command("train-critic")(train_critic)
worker_cli.command("critic")(worker_critic)
eval_cli.command("qa")(qa_eval)


def _example_curl(settings: Settings) -> str:
    body = json.dumps({"question": QUICKSTART_QUESTION})
    return (
        f"curl -s http://{settings.host}:{settings.port}/v1/query "
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from app.main import create_app

    updates = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = get_settings().model_copy(update=updates)
    try:
        check_critic(settings)
        KeyRing.load(settings.api_keys, settings.api_keys_file)
    except (CriticWeightsError, OSError, ValueError) as exc:
        typer.echo(f"covrag: refusing to start: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"covrag API on http://{settings.host}:{settings.port}  (docs: /docs)")
    typer.echo(f"try:\n  {_example_curl(settings)}\n")
    configure_logging(settings.log_level, json=settings.log_format == "json")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # uvicorn's loggers go through configure_logging's handler too
        access_log=False,  # the request middleware logs each request, with its id and route
        timeout_graceful_shutdown=settings.shutdown_grace_s,  # SIGTERM drains in-flight requests
    )


@cli.command()
def ingest(
    files: Annotated[list[Path] | None, typer.Argument(help=".txt, .md or .jsonl files.")] = None,
    demo: Annotated[bool, typer.Option(help="Ingest the demo Wikipedia corpus.")] = False,
    collection: Annotated[str | None, typer.Option(help="Target collection.")] = None,
) -> None:
    """Ingest documents in process (idempotent: unchanged documents are skipped)."""
    settings = get_settings()
    if demo == bool(files):
        raise typer.BadParameter("give files or --demo (not both)")
    name = collection or settings.default_collection
    docs = (
        load_wiki(fetch_wiki(settings.data_dir / "corpus"))
        if demo
        else list(load_files(files or []))
    )
    store = build_store(settings)
    try:
        embedder = build_embedder(settings)
        ingestor = build_ingestor(settings, store, embedder)
        with tqdm(unit="chunk", desc=f"ingest → {name}") as bar:

            def tick(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = ingestor.ingest(name, docs, progress=tick)
        due = settings.store == "edge" and index_due(
            store.get_collection(name),
            report.chunks_written,
            threshold=settings.index_threshold,
            reindex_fraction=settings.reindex_fraction,
        )
        if due:  # as the server does after an ingestion job
            typer.echo(f"indexing {name} (COVRAG_INDEX_THRESHOLD reached) ...", err=True)
            typer.echo(json.dumps(asdict(store.build_index(name))), err=True)
        if demo:
            _calibrate_demo(settings, store, embedder, name)
    except RetrievalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        store.close()
    asyncio.run(invalidate_answers(settings, name))
    typer.echo(json.dumps(asdict(report)))


def _calibrate_demo(settings: Settings, store: VectorStore, embedder: Embedder, name: str) -> None:
    """Calibrate the demo collection from the calibration part of the shipped dev QA set, unless
    it already has a calibration that is still fresh: the first query shows the product."""
    retriever = Retriever(store, embedder, stale_fraction=settings.stale_fraction)
    current, stale = retriever.calibration(name)
    if current is not None and not stale:
        return
    if not DEMO_CALIBRATION.is_file():  # an installed wheel has no data/ folder
        typer.echo(f"{name} is not calibrated: no {DEMO_CALIBRATION} here", err=True)
        return
    qa = load_qa(DEMO_CALIBRATION)
    typer.echo(f"calibrating {name} from {DEMO_CALIBRATION} ({len(qa.items)} questions)", err=True)
    alpha = settings.default_alpha
    result = _calibrate_qa(store, embedder, name, qa.items, DEMO_CALIBRATION, alpha)
    typer.echo(json.dumps(result), err=True)


@cli.command()
def index(
    collection: Annotated[str, typer.Argument(help="The collection to index.")],
    timeout: Annotated[
        float | None,
        typer.Option(
            min=1, help="Stop the build after this many seconds; the collection stays as it was."
        ),
    ] = None,
) -> None:
    """Build a collection's HNSW index in process (Edge; a Qdrant server indexes by itself).

    Not while `covrag serve` runs on the same data dir (the Edge store belongs to one
    process): there, POST /v1/collections/NAME/index. Prints the report as JSON.
    """
    settings = get_settings()
    store = build_store(settings)
    typer.echo(f"indexing {collection} (minutes at 100k chunks) ...", err=True)
    try:
        report = store.build_index(collection, timeout_s=timeout)
    except RetrievalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        store.close()
    typer.echo(json.dumps(asdict(report)))


@cli.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    url: Annotated[
        str | None, typer.Option(help="A running covrag API; default: in process.")
    ] = None,
    collection: Annotated[str | None, typer.Option()] = None,
    top_k: Annotated[int | None, typer.Option(min=1, max=100)] = None,
    alpha: Annotated[float | None, typer.Option(min=0.0, max=1.0)] = None,
) -> None:
    """Ask one question and print the JSON answer."""
    settings = get_settings()
    if url:
        body = {"question": question, "collection": collection, "top_k": top_k, "alpha": alpha}
        response = httpx.post(
            url.rstrip("/") + "/v1/query",
            json={k: v for k, v in body.items() if v is not None},
            timeout=settings.generator_timeout_s + 30,
        )
        typer.echo(json.dumps(response.json(), indent=2))
        raise typer.Exit(0 if response.is_success else 1)
    answer = asyncio.run(_ask_in_process(settings, question, collection, top_k, alpha))
    typer.echo(json.dumps(answer, indent=2))


async def _ask_in_process(
    settings: Settings,
    question: str,
    collection: str | None,
    top_k: int | None,
    alpha: float | None,
) -> dict[str, object]:
    services = build_services(settings)
    try:
        params = QueryParams(
            question=question,
            collection=collection or settings.default_collection,
            top_k=top_k,
            alpha=alpha,
        )
        outcome = await services.pipeline.query(params)
        return to_query_response(outcome, request_id="cli").model_dump()
    finally:
        await services.aclose()


@cli.command()
def calibrate(
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
) -> None:
    """Calibrate the conformal threshold of a collection (in process); the same rules as
    the API: a default alpha below 1/(n+1) is refused, a much smaller calibration needs
    --replace-smaller, the replaced one stays restorable."""
    settings = get_settings()
    if (from_qa is None) == (generate is None):
        raise typer.BadParameter("give exactly one of --from-qa or --generate")
    name = collection or settings.default_collection
    alpha = default_alpha or settings.default_alpha
    if from_qa is not None:
        qa = load_qa(from_qa)
        for error in qa.errors:
            typer.echo(f"skipped malformed line {error}", err=True)
        store = build_store(settings)
        try:
            result = _calibrate_qa(
                store, build_embedder(settings), name, qa.items, from_qa, alpha, replace_smaller
            )
        finally:
            store.close()
    else:
        assert generate is not None
        result = asyncio.run(
            _calibrate_generated(settings, name, generate, seed, alpha, replace_smaller)
        )
    asyncio.run(invalidate_answers(settings, name))
    typer.echo(json.dumps(result))


def _calibrate_qa(
    store: VectorStore,
    embedder: Embedder,
    name: str,
    items: list[CalibrationItem],
    path: Path,
    alpha: float,
    replace_smaller: bool = False,
) -> dict[str, object]:
    try:
        calibration = run_calibration(
            store,
            embedder,
            name,
            items,
            source=f"qa:{path.name}",
            default_alpha=alpha,
            replace_smaller=replace_smaller,
        )
    except (RetrievalError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    return calibration_summary(calibration)


async def _calibrate_generated(
    settings: Settings, name: str, n: int, seed: int, alpha: float, replace_smaller: bool
) -> dict[str, object]:
    services = build_services(settings)
    p = services.pipeline
    try:
        with tqdm(total=n, unit="q", desc="write questions") as bar:
            calibration, _ = await calibrate_generated(
                p.store,
                p.embedder,
                p.generator,
                name,
                n,
                seed=seed,
                default_alpha=alpha,
                replace_smaller=replace_smaller,
                progress=bar.update,
            )
    except (RetrievalError, GeneratorError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        await services.aclose()
    return calibration_summary(calibration)


@worker_cli.command("vllm")
def worker_vllm(
    embed: Annotated[
        bool, typer.Option(help="Serve the MiniLM embedder instead of the generator.")
    ] = False,
    port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
) -> None:
    """Prepare the model once, start a vLLM CPU server in the background, wait for /health."""
    from app.worker.vllm import (
        WorkerError,
        launch_worker,
        prepare_embedding_model,
        prepare_generator_model,
    )

    settings = get_settings()
    try:
        if embed:
            model_dir = prepare_embedding_model(settings.models_dir)
        else:
            model_dir = prepare_generator_model(
                settings.models_dir, settings.vllm_python, settings.generator_model
            )
        handle = launch_worker(
            "embed" if embed else "generate",
            model_dir=model_dir,
            port=port or (settings.vllm_embed_port if embed else settings.vllm_port),
            vllm_python=settings.vllm_python,
            logs_dir=settings.logs_dir,
            api_key=settings.generator_api_key,
            timeout_s=settings.vllm_start_timeout_s,
        )
    except WorkerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"vLLM {'embedder' if embed else 'generator'} ready at {handle.url} (pid {handle.pid})"
    )
    typer.echo(f"log: {handle.log_path}")


@worker_cli.command("stop")
def worker_stop(
    embed: Annotated[bool, typer.Option(help="Stop the embedder worker.")] = False,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Stop a worker started by ``covrag worker vllm``."""
    from app.worker.vllm import find_running, stop_worker

    settings = get_settings()
    kind = "embed" if embed else "generate"
    handle = find_running(
        kind, port or (settings.vllm_embed_port if embed else settings.vllm_port), settings.logs_dir
    )
    if handle is None:
        typer.echo("no such worker is running")
        return
    stop_worker(handle)
    typer.echo(f"stopped pid {handle.pid}")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
