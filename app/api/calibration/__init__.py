"""Calibrating a collection: router, serving and protocol (wire models)."""
