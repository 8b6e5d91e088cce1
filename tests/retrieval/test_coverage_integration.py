"""Coverage on real data: calibrate on part of the dev QA set over real Wikipedia summaries
(every gold summary plus ~1,200 others, real MiniLM, real Qdrant Edge), test on the rest.

The held-out coverage must lie in a binomial band around 1−α: below it the guarantee fails,
far above it the threshold is not doing its job (e.g. it lets everything through).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.calibration_set import ItemScore, load_qa, score_items
from retrieval.conformal import conformal_quantile
from retrieval.embed import Embedder
from retrieval.ingest import Ingestor
from retrieval.store import EdgeStore
from retrieval.types import Document

DEV_QA = Path(__file__).resolve().parents[2] / "data" / "qa" / "dev.jsonl"


@pytest.fixture(scope="module")
def dev_scores(
    wiki_docs: list[Document], embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ItemScore]]:
    gold = {t for line in DEV_QA.read_text().splitlines() for t in json.loads(line)["gold_titles"]}
    docs = [d for d in wiki_docs if d.id in gold] + [d for d in wiki_docs[::8] if d.id not in gold]
    store = EdgeStore(tmp_path_factory.mktemp("coverage") / "edge")
    Ingestor(store, embedder, chunk_words=160, chunk_overlap=32).ingest("wiki", docs)
    qa = load_qa(DEV_QA)
    assert qa.errors == [] and len(qa.items) == 342
    yield score_items(store, embedder, "wiki", qa.items)
    store.close()


@pytest.mark.parametrize("alpha", [0.1, 0.2])
def test_held_out_coverage_is_within_a_binomial_band(
    dev_scores: list[ItemScore], alpha: float
) -> None:
    assert sum(s.missed for s in dev_scores) == 0
    scores = list(dev_scores)
    random.Random(7).shuffle(scores)
    cal, test = scores[:171], scores[171:]
    qhat = conformal_quantile(sorted(s.score for s in cal), alpha)
    coverage = sum(s.score <= qhat for s in test) / len(test)
    # variance of one split's coverage: test sampling plus the calibration draw (Beta law)
    sd = math.sqrt(alpha * (1 - alpha) * (1 / len(test) + 1 / (len(cal) + 2)))
    assert abs(coverage - (1 - alpha)) <= 3.5 * sd, (coverage, 1 - alpha, sd)


def test_malformed_qa_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"id": "a", "question": "Q?", "answers": ["x"]}\n'
        "not json\n"
        "\n"
        '{"id": "b", "question": "   ", "answers": ["x"]}\n'
        '{"id": "c", "question": "No gold?"}\n'
        '{"id": "d", "question": "Bridge?", "answers": ["y"], "gold_titles": ["A", "B"], '
        '"type": "bridge"}\n'
    )
    qa = load_qa(path)
    assert [i.id for i in qa.items] == ["a", "d"]
    assert qa.items[1].gold_doc_ids == ("B",)  # a bridge's answer sits in its last hop
    assert [e.split(":")[1] for e in qa.errors] == ["2", "4", "5"]
