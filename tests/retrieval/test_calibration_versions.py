"""The calibrations a collection keeps, on both backends: bounded, newest versions first."""

from __future__ import annotations

import pytest

from retrieval.calibration import KEPT_VERSIONS, calibrate, check_replacement, kept_calibrations
from retrieval.calibration_set import CalibrationItem
from retrieval.embed import Embedder
from retrieval.errors import DefaultAlphaUnsupported
from retrieval.ingest import Ingestor
from retrieval.store import VectorStore
from retrieval.types import Document


def test_only_the_newest_versions_are_kept(store: VectorStore, embedder: Embedder) -> None:
    doc = Document(id="tower", text="The Eiffel Tower in Paris was completed in 1889.")
    Ingestor(store, embedder, chunk_words=100, chunk_overlap=0).ingest("c", [doc])
    items = [CalibrationItem(id="q", question="When was the tower completed?", answers=("1889",))]
    for _ in range(KEPT_VERSIONS + 2):
        calibrate(store, embedder, "c", items, source="test", default_alpha=0.5)
    kept = kept_calibrations(store, "c")
    assert kept.current is not None and kept.current.version == KEPT_VERSIONS + 2
    assert [c.version for c in kept.earlier] == list(range(KEPT_VERSIONS + 1, 2, -1))


@pytest.mark.parametrize(
    ("alpha", "says"),
    [(0.01, "at least 99 questions"), (5e-324, "more questions than any calibration holds")],
)
def test_an_unsupported_default_alpha_says_what_would_support_it(alpha: float, says: str) -> None:
    """Any α the schema lets through gets its 422 message, a subnormal one too (1/α is
    infinite; the fuzz found it as a 500)."""
    with pytest.raises(DefaultAlphaUnsupported, match=says):
        check_replacement(None, 4, alpha, replace_smaller=False)
