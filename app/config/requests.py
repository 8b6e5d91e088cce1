"""Settings of what a request may do: collections and ingestion, query limits, calibration."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.config.group import Group
from retrieval.hybrid import SearchMode


class CollectionSettings(Group):
    """Collections and ingestion: which collection is meant by default, how documents are cut."""

    default: str = Field(
        "wiki",
        validation_alias="COVRAG_DEFAULT_COLLECTION",
        description="Collection used when none is named.",
    )
    chunk_words: int = Field(
        160,
        ge=8,
        le=2000,
        validation_alias="COVRAG_CHUNK_WORDS",
        description="Words per chunk window.",
    )
    chunk_overlap: int = Field(
        32,
        ge=0,
        validation_alias="COVRAG_CHUNK_OVERLAP",
        description="Words shared by consecutive windows.",
    )
    upsert_batch_size: int = Field(
        256,
        ge=1,
        validation_alias="COVRAG_UPSERT_BATCH_SIZE",
        description="Points per store upsert.",
    )
    max_documents_per_request: int = Field(
        1000,
        ge=1,
        validation_alias="COVRAG_MAX_DOCUMENTS_PER_REQUEST",
        description="Documents per POST.",
    )
    max_document_chars: int = Field(
        1_000_000,
        ge=1,
        validation_alias="COVRAG_MAX_DOCUMENT_CHARS",
        description="Characters per document.",
    )
    max_files_per_request: int = Field(
        20,
        ge=1,
        validation_alias="COVRAG_MAX_FILES_PER_REQUEST",
        description="Files per upload (POST /v1/collections/{name}/files).",
    )
    max_file_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1,
        validation_alias="COVRAG_MAX_FILE_BYTES",
        description="Largest uploaded file; the whole upload stays under COVRAG_MAX_BODY_BYTES.",
    )


class LimitSettings(Group):
    """What a request may carry, a question ask and a prompt hold."""

    default_top_k: int = Field(
        5,
        ge=1,
        le=100,
        validation_alias="COVRAG_DEFAULT_TOP_K",
        description="Passages for an uncalibrated collection (plain top-k).",
    )
    max_chunks: int = Field(
        10,
        ge=1,
        le=100,
        validation_alias="COVRAG_MAX_CHUNKS",
        description="Context budget in chunks behind the conformal threshold.",
    )
    default_search: SearchMode = Field(
        "dense",
        validation_alias="COVRAG_SEARCH",
        description="How a request without `search` searches: dense = the embeddings; "
        "hybrid = also Qdrant's BM25 keyword vectors (collections created since they exist).",
    )
    keyword_hits: int = Field(
        3,
        ge=1,
        le=20,
        validation_alias="COVRAG_KEYWORD_HITS",
        description="Hybrid search on a calibrated collection: the keyword hits that may "
        "join the chunks that cleared the threshold, within the budget.",
    )
    max_question_chars: int = Field(
        4000,
        ge=1,
        validation_alias="COVRAG_MAX_QUESTION_CHARS",
        description="Longest accepted question.",
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        validation_alias="COVRAG_MAX_BODY_BYTES",
        description="Largest request body; larger gets 413.",
    )
    max_context_chars: int = Field(
        6000,
        ge=200,
        validation_alias="COVRAG_MAX_CONTEXT_CHARS",
        description="Passage text per prompt; keeps it inside the model's 2,048 tokens.",
    )


class CalibrationSettings(Group):
    """Conformal calibration and the shift watch on live questions."""

    default_alpha: float = Field(
        0.1,
        gt=0,
        lt=1,
        validation_alias="COVRAG_DEFAULT_ALPHA",
        description="Default miss rate stored with a new calibration.",
    )
    stale_fraction: float = Field(
        0.1,
        gt=0,
        validation_alias="COVRAG_STALE_FRACTION",
        description="A calibration is stale after this fraction of chunks changed.",
    )
    multi_hop_links: bool = Field(
        False,
        validation_alias="COVRAG_MULTI_HOP_LINKS",
        description="A question that may be multi-hop also gets the calibrated number of "
        "documents its top passages name, and can then be guaranteed; off (default: the "
        "longer context cost the bundled 135M model right answers): round 0's passages "
        "only, unguaranteed.",
    )
    score: Literal["cosine", "relative"] = Field(
        "cosine",
        validation_alias="COVRAG_CONFORMAL_SCORE",
        description="The scale thresholds are on: the cosine, or (relative) for a question "
        "that can only be single-hop or a request with a group, a chunk's share of its top 10 "
        "dense hits: fewer chunks at the same coverage, docs/conformal.md. A calibration taken "
        "before the relative scale existed stays on the cosine.",
    )
    unreachable: Literal["budget", "error"] = Field(
        "budget",
        validation_alias="COVRAG_CONFORMAL_UNREACHABLE",
        description="When no finite threshold attains 1-alpha: pass the budget unguaranteed, "
        "or refuse with 422.",
    )
    drift_window: int = Field(
        100,
        ge=10,
        le=10_000,
        validation_alias="COVRAG_DRIFT_WINDOW",
        description="Shift watch: live questions per block compared with the calibration set.",
    )
    drift_false_alarm: float = Field(
        0.01,
        gt=0,
        lt=1,
        validation_alias="COVRAG_DRIFT_FALSE_ALARM",
        description="Shift watch: chance of any false alarm on traffic like the calibration set.",
    )
