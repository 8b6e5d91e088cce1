"""The documents a passage names: the second hop of a multi-hop question, and its guarantee.

A bridge question ("the inventor of dynamite's birthplace") has its answer in a document the
first hop's passage names ("… invented by Alfred Nobel"). Ranking the named documents by the
question's own embedding finds which one it asks about, with no LLM call and whatever the
documents are, as long as their titles are names.

The **link rank** of a question is a fixed function of it (given the collection), so split
conformal applies to it as to a similarity: take the top ``LINK_FROM`` dense hits; the rank is
0 when every document the answer needs is among theirs, else the position of the worst one
among the documents those hits name (``linked_docs``, best first), ∞ when one is never named.
With k̂ the conformal quantile of the ranks of a calibration's multi-hop questions, the top
``LINK_FROM`` hits plus the best chunk of each of the first k̂ linked documents hold a new
multi-hop question's last hop with probability ≥ 1−α (docs/conformal.md, "Multi-hop").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

from retrieval.store.base import VectorStore
from retrieval.types import FilterValue, ScoredChunk

#: A run of capitalised words, joined by the small words names carry ("Bay of Bengal").
_NAME = re.compile(
    r"[A-Z][\w'’.-]*(?:\s+(?:(?:of|the|and|de|la|le|von|van|der|du|del|da)\s+)*[A-Z][\w'’.-]*)*"
)
_SENTENCE = re.compile(r"(?<=[a-z0-9)\]])\.\s+")
#: Names of one context looked up as titles, at most (each is one filtered search).
MAX_NAMES = 40
#: The dense hits whose documents a link rank starts from (and whose names it follows).
LINK_FROM = 5


def named(texts: Sequence[str]) -> list[str]:
    """Candidate titles the texts name, first mention first: each run of capitalised words,
    and without a leading "The" too."""
    names: dict[str, None] = {}
    for text in texts:
        for found in (m for sentence in _SENTENCE.split(text) for m in _NAME.finditer(sentence)):
            name = found.group(0).rstrip(".'’-")
            names[name] = None
            if name.startswith("The "):
                names[name[4:]] = None
    return list(names)[:MAX_NAMES]


def linked_docs(
    store: VectorStore,
    collection: str,
    vector: Sequence[float],
    passages: Sequence[ScoredChunk],
    filters: Mapping[str, FilterValue] | None = None,
) -> list[ScoredChunk]:
    """The documents the passages name by title (and that are not among them), each as its
    chunk most similar to ``vector``, best first. Blocking."""
    if filters and "title" in filters:  # the caller chose the document: nothing to link to
        return []
    have = {p.title for p in passages}
    found: list[ScoredChunk] = []
    for name in named([p.text for p in passages]):
        if name in have:
            continue
        found += store.search(
            collection, vector, limit=1, filters={**(filters or {}), "title": name}
        )
    return sorted(found, key=lambda h: h.score, reverse=True)


def link_rank(
    store: VectorStore, collection: str, vector: Sequence[float], docs: Sequence[str]
) -> float:
    """The question's link rank (module docstring) for ``docs``, the documents its answer
    needs (a multi-hop question's last hop); ∞ without any (nothing shows it covered)."""
    if not docs:
        return math.inf
    top = store.search(collection, list(vector), limit=LINK_FROM)
    have = {h.doc_id for h in top}
    if all(d in have for d in docs):
        return 0.0
    order = [h.doc_id for h in linked_docs(store, collection, vector, top)]
    ranks = [0 if d in have else order.index(d) + 1 if d in order else math.inf for d in docs]
    return float(max(ranks))


def with_links(
    store: VectorStore, collection: str, vector: Sequence[float], links: int
) -> list[ScoredChunk]:
    """What a link rank of at most ``links`` promises: the top ``LINK_FROM`` hits, then the
    best chunk of each of the first ``links`` documents they name (unfiltered, as the ranks
    were calibrated)."""
    top = store.search(collection, list(vector), limit=LINK_FROM)
    return [*top, *linked_docs(store, collection, vector, top)[:links]]
