"""fastembed_ext inside PostgreSQL: the extension's server code, installing it, the local
database, bulk ingest and search (psycopg 3).

The extension itself is ``sql/fastembed_ext--*.sql``; its PL/Python functions call
``fastembed_ext.pg.server``.
"""

from .errors import PgError

__all__ = ["PgError"]
