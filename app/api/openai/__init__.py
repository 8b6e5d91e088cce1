"""The OpenAI-compatible façade: router, serving and protocol (wire models)."""
