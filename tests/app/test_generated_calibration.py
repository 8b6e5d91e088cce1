"""CONFLARE's generated calibration against the real vLLM CPU worker."""

from __future__ import annotations

import pytest

from app.calibration import usable, write_questions
from app.config import Settings
from app.services import build_services
from retrieval.calibration import calibrate
from retrieval.types import Document

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def test_usable_keeps_only_answerable_questions() -> None:
    passage = "The Eiffel Tower in Paris was completed in 1889."
    assert usable("When was the Eiffel Tower completed?", "1889", passage)
    assert not usable("When was the Eiffel Tower completed", "1889", passage)  # no question
    assert not usable("When was the Eiffel Tower completed?", "1901", passage)  # not stated
    assert not usable("Was it completed in 1889?", "1889", passage)  # gives itself away
    assert not usable("Why?", "1889", passage)  # too short


async def test_questions_written_from_sampled_chunks(
    generator_url: str, tmp_path_factory: pytest.TempPathFactory, wiki_sample: list[Document]
) -> None:
    settings = Settings(data_dir=tmp_path_factory.mktemp("gen"), generator_urls=[generator_url])
    services = build_services(settings)
    try:
        services.ingestor.ingest("wiki", wiki_sample[:12])
        p = services.pipeline
        items, skipped = await write_questions(p.store, p.generator, "wiki", 6, seed=3)
        again, _ = await write_questions(p.store, p.generator, "wiki", 6, seed=3)
        assert len(items) + skipped == 6
        assert [i.source_chunk_id for i in items] == [i.source_chunk_id for i in again]
        chunk_ids = set(p.store.list_ids("wiki"))
        payloads = p.store.get_payloads("wiki", [i.source_chunk_id for i in items])
        for item in items:
            assert item.source_chunk_id in chunk_ids
            assert usable(item.question, item.answers[0], payloads[item.source_chunk_id]["text"])
        if items:  # each generated question is scored against its own source chunk
            cal = calibrate(p.store, p.embedder, "wiki", items, source="gen", default_alpha=0.5)
            assert cal.n == len(items) and cal.misses == 0
    finally:
        await services.aclose()
