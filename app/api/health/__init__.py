"""Liveness and readiness: router, serving and protocol (wire models)."""
