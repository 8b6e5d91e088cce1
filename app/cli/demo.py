"""The demo `make run` serves: the Wikipedia corpus, its calibration set, the first question."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer

from app.config import Settings
from app.services import build_store
from retrieval.calibration_set import CalibrationItem, load_qa
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.errors import RetrievalError
from retrieval.store.base import VectorStore
from retrieval.types import Document

#: The calibration part of the dev QA set over the demo corpus (data/qa/README.md).
DEMO_CALIBRATION = Path(__file__).resolve().parents[2] / "data" / "qa" / "calib.jsonl"
#: The question ``covrag serve`` and the README offer to try first, and the demo article
#: (its id in the default collection) that answers it.
QUICKSTART_QUESTION = "Melbourne is the capital of which Australian state?"
QUICKSTART_DOC = "Melbourne"


def demo_documents(settings: Settings) -> list[Document]:
    """The corpus, fetched once into the data dir's cache."""
    return load_wiki(fetch_wiki(settings.store.data_dir / "corpus"))


def demo_qa(name: str) -> list[CalibrationItem]:
    """The demo's calibration questions, saying so on stderr; none from an installed wheel,
    which has no data/ folder."""
    if not DEMO_CALIBRATION.is_file():
        typer.echo(f"{name} is not calibrated: no {DEMO_CALIBRATION} here", err=True)
        return []
    items = load_qa(DEMO_CALIBRATION).items
    typer.echo(f"calibrating {name} from {DEMO_CALIBRATION} ({len(items)} questions)", err=True)
    return items


def first_query(store: VectorStore, default_collection: str) -> dict[str, str] | None:
    """The query body ``covrag serve`` offers to try, about what the store holds: the demo's
    question when the default collection holds the article answering it; else one about a
    document of the user's own collection (the default one when it has chunks, else the first
    that has, named in the body); ``None`` when no collection has any."""
    held = {c.name: c.chunks for c in store.list_collections() if c.chunks}
    if held.get(default_collection) and store.count(default_collection, {"doc_id": QUICKSTART_DOC}):
        return {"question": QUICKSTART_QUESTION}
    if not held:
        return None
    name = default_collection if default_collection in held else min(held)
    payloads, _ = store.scroll(name, limit=1)
    payload = next(iter(payloads.values()))
    title = str(payload.get("title") or payload["doc_id"])
    body = {"question": f"What does {title} say?"}
    return body if name == default_collection else {**body, "collection": name}


def first_try(settings: Settings, url: str) -> str:
    """What ``covrag serve`` suggests trying first, about what its store holds (the demo's
    question only when the demo corpus is there); opens the store briefly, before the app."""
    try:
        store = build_store(settings.store)
        try:
            body = first_query(store, settings.collections.default)
        finally:
            store.close()
    except RetrievalError:
        return ""  # the store's trouble is for /readyz to name, not the banner
    if body is None:
        return (
            "no collection holds documents yet: add some with "
            "`covrag ingest FILES --collection NAME` (or --demo), then ask them\n"
        )
    data = shlex.quote(json.dumps(body))  # a title may hold a quote
    curl = f"curl -s {url}/v1/query -H 'Content-Type: application/json' -d {data}"
    return f"try:\n  {curl}\n"
