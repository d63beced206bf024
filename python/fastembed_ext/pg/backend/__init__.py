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
            f"the database's extension is fastembed_ext {version}, but this backend has already "
            f"loaded the Python library {fastembed_ext.__version__}",
            sqlstate="55000",
            detail=f"Loaded from {fastembed_ext.__file__}; the extension's library is {library}.",
            hint="Reconnect: a backend loads the library once. If the versions still differ, run "
            "`fastembed-ext pg install` with the package version the extension was updated to.",
        )
    return Backend()
