"""One router per resource; ``app.api.main`` mounts them."""
