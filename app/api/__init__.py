"""HTTP layer: thin routes over the pipeline and the ingestor."""
