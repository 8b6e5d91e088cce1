"""Background jobs: router, serving and protocol (wire models)."""
