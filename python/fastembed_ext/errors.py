"""Exceptions raised by fastembed_ext. The native module raises these same classes."""


class FastembedExtError(Exception):
    """Base class of every error fastembed_ext raises on purpose."""


class ModelLoadError(FastembedExtError):
    """A model or bundle is missing, unreadable, corrupt or inconsistent."""


class BundleChangedError(ModelLoadError):
    """A bundle's files no longer give the content fingerprint it was pinned to."""


class UnsupportedModelError(FastembedExtError, ValueError):
    """The model uses an architecture, pooling or module this engine does not implement."""


class EncodeError(FastembedExtError):
    """Tokenisation or the forward pass failed on a batch."""


class ServerError(FastembedExtError):
    """An embedding server (`fastembed-ext serve`) could not be reached or refused a request.
    `status` is the HTTP status (None when the server could not be reached)."""

    def __init__(self, message: str, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


class TruncationWarning(UserWarning):
    """Some texts were longer than the model's max_seq_length: each was embedded from its beginning
    only (as sentence-transformers does). Raised once per `encode` call, with the count; filter it
    with ``warnings.simplefilter("ignore", fastembed_ext.TruncationWarning)``."""
