"""``POST /v1/query``: router, serving and protocol (wire models)."""
