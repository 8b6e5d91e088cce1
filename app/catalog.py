"""Collections as the routes see them, beyond one store call: an ingestion refused before its
job.

No HTTP here (the routes answer); the blocking methods are for a worker thread.
"""

from __future__ import annotations

from retrieval.errors import InvalidDocument
from retrieval.ingest import Ingestor
from retrieval.types import Document


class Catalog:
    """The lifecycle of the collections of one store.

    Args:
        max_documents: Documents one ingestion request may carry
            (``COVRAG_MAX_DOCUMENTS_PER_REQUEST``); the ingestor holds the per-document limit.
    """

    def __init__(self, ingestor: Ingestor, *, max_documents: int) -> None:
        self._ingestor = ingestor
        self._max_documents = max_documents

    def check_documents(self, name: str, docs: list[Document]) -> None:
        """Refuse now what the ingestion job would refuse (``InvalidDocument``), then create
        the collection: a bad request is a 422 and no job. Blocking (it chunks every text)."""
        if len(docs) > self._max_documents:
            raise InvalidDocument(
                f"{len(docs):,} documents in one request; the limit is {self._max_documents:,} "
                "(COVRAG_MAX_DOCUMENTS_PER_REQUEST): send them in several requests",
                "documents",
            )
        self._ingestor.validate(docs)
        self._ingestor.ensure_collection(name)
