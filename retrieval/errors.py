"""Retrieval's exception tree; ``app/errors.py`` maps each class to an HTTP status."""


class RetrievalError(Exception):
    """Base of every error raised by ``retrieval``."""


class CollectionNotFound(RetrievalError):
    """The named collection does not exist."""


class InvalidCollectionName(RetrievalError):
    """A collection name outside the safe alphabet."""


class CollectionExists(RetrievalError):
    """A collection of that name exists already."""


class EmbedderMismatch(RetrievalError):
    """Vectors or queries from another embedder (model or dimension) than the collection's."""


class InvalidDocument(RetrievalError):
    """A document that cannot be ingested (no text, bad id, over a limit); ``param`` names
    the request field at fault, when known."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class FileRejected(InvalidDocument):
    """A file that cannot become a document; ``file`` is its name, which starts the message."""

    def __init__(self, file: str, message: str) -> None:
        super().__init__(f"{file}: {message}", "files")
        self.file = file


class UnsupportedFileType(FileRejected):
    """Neither the file's name nor its content type is one covrag reads, or its bytes are not
    what its name says."""


class FileTooLarge(FileRejected):
    """A file over the size limit."""


class UnreadableFile(FileRejected):
    """A file of a known type that yields no text: corrupt, or a PDF without a text layer."""


class EncryptedFile(UnreadableFile):
    """A PDF that opens only with a password."""


class StoreUnavailable(RetrievalError):
    """The vector store did not answer: worth a retry (``retry_after`` s) once it is back."""

    retry_after = 5.0


class EmbedderUnavailable(RetrievalError):
    """The (remote) embedder did not answer: worth a retry."""

    retry_after = 5.0


class DocumentNotFound(RetrievalError):
    """No chunk of that document id is in the collection."""


class NotEnoughChunks(RetrievalError):
    """More generated calibration questions asked for than the collection has chunks."""

    param = "generate"


class CollectionBusy(RetrievalError):
    """A job (ingestion, calibration, index build) is under way on the collection."""


class CollectionEmpty(RetrievalError):
    """The operation needs chunks and the collection has none (e.g. calibration)."""


class NotCalibrated(RetrievalError):
    """A conformal request on a collection without a calibration."""


class KeywordsUnavailable(RetrievalError):
    """A hybrid search on a collection created before keyword vectors existed."""


class RerankerUnavailable(RetrievalError):
    """A reranked search when no reranker is trained, or a calibration taken without it."""


class RerankerDown(RetrievalError):
    """The reranker worker did not answer, or answered nonsense: worth a retry."""

    retry_after = 5.0


class AlphaOutOfRange(RetrievalError):
    """An α the collection's calibration cannot support."""

    param = "alpha"


class DefaultAlphaUnsupported(RetrievalError):
    """A calibration too small for its own ``default_alpha``: every query without α would fail."""

    param = "default_alpha"


class CalibrationShrinks(RetrievalError):
    """A calibration far smaller than the one it would replace, without ``replace_smaller``."""

    param = "replace_smaller"


class CalibrationVersionNotFound(RetrievalError):
    """No kept calibration of the collection has that version."""

    param = "version"


class IndexBuildRunning(RetrievalError):
    """An index build of that collection is running already."""


class IndexBuildFailed(StoreUnavailable):
    """An index build did not finish; the collection is unchanged and still served."""
