"""The Python side of the extension, running inside PostgreSQL backends.

The SQL functions (sql/api.sql) call one `Backend` per backend, created by `connect` when
``fastembed_ext._load()`` first imports this package from the library directory of the
extension's version. Nothing here is used outside the server: the client side (install, ingest,
search, the local cluster) lives in the modules beside this package.
"""

from __future__ import annotations


def connect(plpy, version: str, library: str):
    """The backend's entry point, after checking that this package is the extension's version."""
    import os

    import fastembed_ext

    from .errors import fail
    from .session import Backend

    # The library says its version in its manifest, without loading the engine (which a backend
    # that embeds through the server never does); a package imported from elsewhere is asked.
    # The manifest is read as text when it says what is expected, as json otherwise (for the
    # error): every new backend would import json, and re with it, for this one value.
    # (os.path, not pathlib, for the same reason)
    package = os.path.dirname(os.path.realpath(fastembed_ext.__file__))
    manifest = os.path.join(os.path.dirname(package), "fastembed_ext.library.json")
    try:
        with open(manifest, encoding="utf-8") as f:
            text = f.read()
        if f'"version": "{version}"' in text:
            imported = version
        else:
            import json

            imported = json.loads(text)["version"]
    except (OSError, ValueError, KeyError, TypeError):
        imported = fastembed_ext.__version__
    if imported != version:
        fail(
            f"the extension's functions are fastembed_ext {version}, but the Python library this "
            f"backend imported is {imported}",
            sqlstate="55000",
            detail=f"Imported from {fastembed_ext.__file__}; version {version}'s library is {library}.",
            hint="If this backend used another version before an ALTER EXTENSION UPDATE, reconnect. "
            f"Otherwise run `fastembed-ext pg install` with fastembed_ext {version} on the server's "
            "machine, which puts its library there.",
        )
    return Backend(imported)
