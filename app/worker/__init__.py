"""Local model workers (vLLM CPU) started by `covrag worker`."""
