"""Calibration questions made from documents, for the tests that calibrate a real store."""

from __future__ import annotations

from retrieval.calibration_set import CalibrationItem
from retrieval.types import Document


def first_sentence_items(docs: list[Document]) -> list[CalibrationItem]:
    """A question per document from its first sentence's words, the document its gold."""
    out = []
    for d in docs:
        words = d.text.split(".")[0].split()[:12]
        out.append(CalibrationItem(id=d.id, question=" ".join(words) + "?", gold_doc_ids=(d.id,)))
    return out
