"""fastembed_ext: sentence embeddings equal to sentence-transformers', from a Rust core.

    >>> import fastembed_ext
    >>> enc = fastembed_ext.Encoder("path/to/model")
    >>> enc.encode(["a sentence", "another"]).shape
    (2, 384)
"""

from ._native import __version__, num_threads, set_num_threads
from .encoder import Encoder
from .errors import (
    BundleChangedError,
    EncodeError,
    FastembedExtError,
    ModelLoadError,
    UnsupportedModelError,
)
from .export import export

__all__ = [
    "BundleChangedError",
    "EncodeError",
    "Encoder",
    "FastembedExtError",
    "ModelLoadError",
    "UnsupportedModelError",
    "__version__",
    "export",
    "num_threads",
    "set_num_threads",
]
