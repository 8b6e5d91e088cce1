"""``covrag train-reranker`` (registered in ``app.cli.commands``): fine-tune the cross-encoder
reranker on a collection's own questions, in process (``retrieval.rerank_train``).

Questions come from QA files with gold documents (``--from-qa``), from the generator writing
one per random chunk (``--generate``, as generated calibration does), or both. The model goes
to COVRAG_RERANKER_DIR, where the server loads it at start; calibrate again afterwards, so the
calibration holds the reranker's scores and ``rerank`` requests get a threshold.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from app.cli.local import check_local
from app.config import Settings, get_settings
from app.core.calibration import write_questions
from app.services import build_embedder, build_generator, build_store
from retrieval.calibration_set import CalibrationItem, load_qa
from retrieval.embed.onnx import minilm_dir
from retrieval.rerank_train import fine_tune, training_groups
from retrieval.store import VectorStore


async def _generated(
    settings: Settings, store: VectorStore, collection: str, n: int, seed: int
) -> list[CalibrationItem]:
    generator = build_generator(settings.generator)
    try:
        items, rejected = await write_questions(store, generator, collection, n, seed=seed)
    finally:
        await generator.aclose()
    typer.echo(f"{len(items)} of {n} generated questions usable ({dict(rejected)})", err=True)
    return items


def train_reranker(
    collection: Annotated[str | None, typer.Option(help="Collection to train on.")] = None,
    from_qa: Annotated[
        list[Path] | None,
        typer.Option(exists=True, dir_okay=False, help="QA JSONL with gold documents (repeat)."),
    ] = None,
    generate: Annotated[
        int, typer.Option(min=0, help="Questions the generator writes from random chunks.")
    ] = 0,
    layers: Annotated[
        int, typer.Option(min=1, max=6, help="MiniLM layers kept: fewer are faster to serve.")
    ] = 2,
    epochs: Annotated[int, typer.Option(min=1, max=20)] = 3,
    negatives: Annotated[int, typer.Option(min=1, max=50, help="Hard negatives a question.")] = 7,
    seed: Annotated[int, typer.Option(help="Seed of the chunk sample and the training.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Model folder; default COVRAG_RERANKER_DIR.")
    ] = None,
) -> None:
    """Fine-tune the reranker (in process; no server may hold the data dir) and print what
    it was trained on as JSON."""
    settings = get_settings()
    check_local(settings)
    name = collection or settings.collections.default
    if not from_qa and not generate:
        raise typer.BadParameter("give --from-qa FILE, --generate N, or both")
    items: list[CalibrationItem] = []
    for path in from_qa or []:
        qa = load_qa(path)
        for error in qa.errors:
            typer.echo(f"skipped malformed line {error}", err=True)
        items += qa.items
    target = out or settings.reranker.model_dir(settings.store.models_dir)
    store = build_store(settings.store)
    try:
        if generate:
            items += asyncio.run(_generated(settings, store, name, generate, seed))
        groups = training_groups(
            store,
            build_embedder(settings.embedder),
            name,
            items,
            candidates=settings.reranker.candidates,
            negatives=negatives,
            seed=seed,
        )
        typer.echo(f"training on {len(groups)} of {len(items)} questions ...", err=True)
        info = fine_tune(
            groups,
            target,
            minilm_dir(),
            layers=layers,
            epochs=epochs,
            seed=seed,
            trained_on={
                "collection": name,
                "qa_files": [p.name for p in from_qa or []],
                "generated": generate,
            },
        )
    finally:
        store.close()
    typer.echo(
        f"next: (re)start the server, then calibrate {name} again, so that `rerank` requests "
        "have a threshold on this reranker's scores",
        err=True,
    )
    typer.echo(json.dumps({"model_dir": str(target), **info.trained_on, "layers": info.layers}))
