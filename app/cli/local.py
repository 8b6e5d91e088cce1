"""The CLI's in-process work (``--local``): the store opened here, with the rules of the API.

Each function returns what the command prints as JSON; progress and notes go to stderr.
Refused while a server holds the data dir (``app.state.datalock``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from pathlib import Path

import typer
from tqdm import tqdm

from app.api.query.protocol import to_query_response
from app.cli.demo import DEMO_CALIBRATION, demo_qa
from app.config import Settings
from app.core.calibration import calibrate_generated, calibration_summary
from app.core.types import QueryParams
from app.services import (
    build_embedder,
    build_ingestor,
    build_services,
    build_store,
    invalidate_answers,
    reranking_of,
)
from app.state.datalock import check_free
from retrieval.calibration import calibrate as run_calibration
from retrieval.calibration import check_calibration
from retrieval.calibration_set import CalibrationItem
from retrieval.conformal import RelativeScale
from retrieval.embed import Embedder
from retrieval.links import LINK_FROM
from retrieval.rerank import Reranking
from retrieval.retriever import Retriever
from retrieval.store import VectorStore
from retrieval.store.base import index_due
from retrieval.types import Document


class NoLocalData(Exception):
    """The data dir does not exist: most likely covrag was started in another folder."""


def check_local(settings: Settings, *, creates: bool = False) -> None:
    """Refuse in-process work while a server holds the data dir, or on a data dir that does
    not exist unless the command ``creates`` it (so a wrong working directory is named, not
    silently filled).

    Raises:
        DataDirHeld: a live server holds it.
        NoLocalData: it does not exist.
    """
    check_free(settings.store.data_dir, "drop --local to work through it, or stop it first")
    if not creates and not settings.store.data_dir.is_dir():
        raise NoLocalData(
            f"no data dir at {settings.store.data_dir}: "
            "set COVRAG_DATA_DIR, or ingest with --local first"
        )


def ingest(settings: Settings, name: str, docs: list[Document], demo: bool) -> dict[str, object]:
    """Ingest ``docs``, index when due (as the server does after an ingestion job); for the
    ``demo``, calibrate from its QA set unless a fresh calibration grouped as queries are exists."""
    store = build_store(settings.store)
    try:
        embedder = build_embedder(settings.embedder)
        ingestor = build_ingestor(settings.collections, store, embedder)
        with tqdm(unit="chunk", desc=f"ingest → {name}") as bar:

            def tick(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = ingestor.ingest(name, docs, progress=tick)
        due = settings.store.kind == "edge" and index_due(
            store.get_collection(name),
            report.chunks_written,
            threshold=settings.store.index_threshold,
            reindex_fraction=settings.store.reindex_fraction,
        )
        if due:
            typer.echo(f"indexing {name} (COVRAG_INDEX_THRESHOLD reached) ...", err=True)
            typer.echo(json.dumps(asdict(store.build_index(name))), err=True)
        if demo:
            _calibrate_demo(settings, store, embedder, name)
    finally:
        store.close()
    asyncio.run(invalidate_answers(settings, name))
    return asdict(report)


def _calibrate_demo(settings: Settings, store: VectorStore, embedder: Embedder, name: str) -> None:
    retriever = Retriever(store, embedder, stale_fraction=settings.calibration.stale_fraction)
    current, stale = retriever.calibration(name)
    with reranking_of(settings) as rerank:
        if (
            current is not None
            and current.kinds_version == retriever.kinds.version
            and current.rerank_version == ("" if rerank is None else rerank.reranker.version)
            and current.link_from == LINK_FROM
            and current.relative_scale == RelativeScale()
            and not stale
        ):
            # fresh, grouped by this server's classifier, by its reranker, with its links and
            # its relative scale
            return
        items = demo_qa(name)
        if items:
            summary = _calibrate_qa(
                store,
                embedder,
                name,
                items,
                DEMO_CALIBRATION,
                settings.calibration.default_alpha,
                rerank=rerank,
            )
            typer.echo(json.dumps(summary), err=True)


def index(settings: Settings, name: str, timeout_s: float | None) -> dict[str, object]:
    store = build_store(settings.store)
    typer.echo(f"indexing {name} (minutes at 100k chunks) ...", err=True)
    try:
        return asdict(store.build_index(name, timeout_s=timeout_s))
    finally:
        store.close()


async def ask(settings: Settings, params: QueryParams) -> dict[str, object]:
    services = build_services(settings)
    try:
        outcome = await services.pipeline.query(params)
        return to_query_response(outcome, request_id="cli").model_dump()
    finally:
        await services.aclose()


def calibrate_qa(
    settings: Settings,
    name: str,
    items: list[CalibrationItem],
    path: Path,
    alpha: float,
    replace_smaller: bool,
) -> dict[str, object]:
    store = build_store(settings.store)
    try:
        with reranking_of(settings) as rerank:
            result = _calibrate_qa(
                store,
                build_embedder(settings.embedder),
                name,
                items,
                path,
                alpha,
                replace_smaller,
                rerank=rerank,
            )
    finally:
        store.close()
    asyncio.run(invalidate_answers(settings, name))
    return result


def _calibrate_qa(
    store: VectorStore,
    embedder: Embedder,
    name: str,
    items: list[CalibrationItem],
    path: Path,
    alpha: float,
    replace_smaller: bool = False,
    *,
    rerank: Reranking | None,
) -> dict[str, object]:
    calibration = run_calibration(
        store,
        embedder,
        name,
        items,
        source=f"qa:{path.name}",
        default_alpha=alpha,
        replace_smaller=replace_smaller,
        rerank=rerank,
    )
    return calibration_summary(calibration)


async def generate_calibration(
    settings: Settings, name: str, n: int, seed: int, alpha: float, replace_smaller: bool
) -> dict[str, object]:
    services = build_services(settings)
    try:
        # refused before the progress bar shows: nothing will be written
        check_calibration(
            services.store,
            name,
            n,
            default_alpha=alpha,
            replace_smaller=replace_smaller,
            sampled=True,
        )
        with tqdm(total=n, unit="q", desc="write questions") as bar:
            calibration, _ = await calibrate_generated(
                services.store,
                services.embedder,
                services.generator,
                name,
                n,
                seed=seed,
                default_alpha=alpha,
                replace_smaller=replace_smaller,
                progress=bar.update,
                rerank=services.retriever.reranking,
            )
    finally:
        await services.aclose()
    await invalidate_answers(settings, name)
    return calibration_summary(calibration)
