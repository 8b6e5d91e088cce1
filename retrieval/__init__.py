"""Retrieval: embedders, vector stores, chunking, ingestion (and, later, conformal calibration).

Nothing here imports ``app`` or FastAPI: the HTTP layer depends on retrieval, never the reverse.
"""
