"""Worker tooling, a deployable of its own beside the API: the local vLLM CPU worker (model
preparation, process management) and the critic worker's HTTP server."""
