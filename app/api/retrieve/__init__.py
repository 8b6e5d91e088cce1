"""``POST /v1/retrieve``: router, serving and protocol (wire models)."""
