"""The one error of the worker tooling, shared by model preparation and process management."""


class WorkerError(RuntimeError):
    """A model could not be prepared or a worker did not become healthy."""
