"""The Python side of the extension, running inside PostgreSQL backends.

The SQL functions (sql/api.sql) call one `Backend` per backend, created by `connect` when
``fastembed_ext._load()`` first imports this package from the library directory of the
extension's version. Nothing here is used outside the server: the client side (install, ingest,
search, the local cluster) lives in the modules beside this package.
"""

from __future__ import annotations


def connect(plpy, version: str, library: str):
    """The backend's entry point, after checking that this package is the extension's version."""
    import fastembed_ext

    from .errors import fail
    from .session import Backend

    if fastembed_ext.__version__ != version:
        fail(
            f"the extension's functions are fastembed_ext {version}, but the Python library this "
            f"backend imported is {fastembed_ext.__version__}",
            sqlstate="55000",
            detail=f"Imported from {fastembed_ext.__file__}; version {version}'s library is {library}.",
            hint="If this backend used another version before an ALTER EXTENSION UPDATE, reconnect. "
            f"Otherwise run `fastembed-ext pg install` with fastembed_ext {version} on the server's "
            "machine, which puts its library there.",
        )
    return Backend()
