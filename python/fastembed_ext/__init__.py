"""fastembed_ext: sentence embeddings equal to sentence-transformers', from a Rust core.

    >>> import fastembed_ext
    >>> enc = fastembed_ext.Encoder("path/to/model")
    >>> enc.encode(["a sentence", "another"]).shape
    (2, 384)

Importing the package loads the engine (libtorch, and the operators exported bundles call),
except inside a PostgreSQL backend: there it is loaded on first use, so that a backend which
embeds through `fastembed-ext serve` never loads libtorch at all.
"""

from __future__ import annotations

import sys

from .errors import (
    BundleChangedError,
    EncodeError,
    FastembedExtError,
    ModelLoadError,
    ServerError,
    TruncationWarning,
    UnsupportedModelError,
)

# (typing.TYPE_CHECKING without importing typing: a PostgreSQL backend imports this package on
# its first embed(), and typing alone would take longer than that embed())
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._native import __version__, num_threads, set_num_threads
    from .client import Client
    from .encoder import Encoder
    from .export import export
    from .precision import quantize_embeddings

# Attributes imported on first use (all of them, inside a backend; Client, everywhere).
_ENGINE = {
    "Client": ".client",
    "__version__": "._native",
    "num_threads": "._native",
    "set_num_threads": "._native",
    "Encoder": ".encoder",
    "export": ".export",
    "quantize_embeddings": ".precision",
}


def __getattr__(name: str) -> Any:
    module = _ENGINE.get(name)
    if module is None:
        raise AttributeError(f"module 'fastembed_ext' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def _inside_postgres() -> bool:
    return "plpy" in sys.modules  # PL/Python's module, present only in a backend


if not _inside_postgres():
    from ._native import __version__, num_threads, set_num_threads  # noqa: E402, F811
    from .encoder import Encoder  # noqa: E402, F811
    from .export import export  # noqa: E402, F811
    from .precision import quantize_embeddings  # noqa: E402, F811

__all__ = [
    "BundleChangedError",
    "Client",
    "EncodeError",
    "Encoder",
    "FastembedExtError",
    "ModelLoadError",
    "ServerError",
    "TruncationWarning",
    "UnsupportedModelError",
    "__version__",
    "export",
    "num_threads",
    "quantize_embeddings",
    "set_num_threads",
]
