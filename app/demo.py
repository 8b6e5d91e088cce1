"""The demo `make run` serves: the Wikipedia corpus, its calibration set, the first question."""

from __future__ import annotations

from pathlib import Path

import typer

from app.config import Settings
from retrieval.calibration import CalibrationItem, load_qa
from retrieval.corpus import fetch_wiki, load_wiki
from retrieval.types import Document

#: The calibration part of the dev QA set over the demo corpus (data/qa/README.md).
DEMO_CALIBRATION = Path(__file__).resolve().parents[1] / "data" / "qa" / "calib.jsonl"
#: The question ``covrag serve`` and the README offer to try first.
QUICKSTART_QUESTION = "Melbourne is the capital of which Australian state?"


def demo_documents(settings: Settings) -> list[Document]:
    """The corpus, fetched once into the data dir's cache."""
    return load_wiki(fetch_wiki(settings.data_dir / "corpus"))


def demo_qa(name: str) -> list[CalibrationItem]:
    """The demo's calibration questions, saying so on stderr; none from an installed wheel,
    which has no data/ folder."""
    if not DEMO_CALIBRATION.is_file():
        typer.echo(f"{name} is not calibrated: no {DEMO_CALIBRATION} here", err=True)
        return []
    items = load_qa(DEMO_CALIBRATION).items
    typer.echo(f"calibrating {name} from {DEMO_CALIBRATION} ({len(items)} questions)", err=True)
    return items
