"""``POST /v1/collections/{name}/files``: uploaded files into a collection."""
