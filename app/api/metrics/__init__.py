"""``GET /metrics``: its router."""
