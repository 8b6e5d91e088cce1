"""covrag's HTTP service: API, pipeline, generator client, CLI and workers."""
