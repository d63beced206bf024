"""Top-k search over a table's vector column, through the extension's ``fastembed_ext.search``
(the query is embedded by the server, with the model that made the stored vectors)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from .client import connect
from .errors import PgError


@dataclass
class Hit:
    key: str
    score: float
    text: str | None


def _text_column(conn: psycopg.Connection, oid: int, vector_column: str) -> str | None:
    """The attached text column, else the table's first text column."""
    row = conn.execute(
        "SELECT source_column FROM fastembed_ext.attachments WHERE tbl = %s::oid::regclass AND vector_column = %s",
        (oid, vector_column),
    ).fetchone()
    if row:
        return row[0]
    row = conn.execute(
        """SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0
           AND NOT attisdropped AND atttypid IN ('text'::regtype, 'varchar'::regtype) ORDER BY attnum LIMIT 1""",
        (oid,),
    ).fetchone()
    return row[0] if row else None


def search(
    dsn: str,
    query: str,
    table: str,
    k: int = 10,
    *,
    vector_column: str = "embedding",
    model: str | None = None,
    text_column: str | None = None,
    ef_search: int | None = None,
) -> list[Hit]:
    """``table`` is an SQL name as you would write it (``docs``, ``app."My Docs"``)."""
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_catalog.to_regclass(%s)::oid", (table,)).fetchone()
        if row is None or row[0] is None:
            raise PgError(f"relation {table} does not exist (names are SQL names: quote mixed case, "
                          'e.g. \'"MyDocs"\')')
        oid = row[0]
        if ef_search:
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
        hits = conn.execute(
            "SELECT key, score FROM fastembed_ext.search(%s::oid::regclass, %s, %s, %s, %s)",
            (oid, vector_column, query, k, model),
        ).fetchall()
        text_column = text_column or _text_column(conn, oid, vector_column)
        if not hits or text_column is None:
            return [Hit(key, score, None) for key, score in hits]
        key_column = conn.execute(
            """SELECT coalesce((SELECT key_column FROM fastembed_ext.attachments
                                WHERE tbl = %s::oid::regclass AND vector_column = %s),
                               (SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a
                                  ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                                WHERE i.indrelid = %s AND i.indisprimary AND i.indnatts = 1))""",
            (oid, vector_column, oid),
        ).fetchone()[0]
        nsp, rel = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,)
        ).fetchone()
        texts = dict(
            conn.execute(
                sql.SQL("SELECT {k}::text, {t} FROM {tbl} WHERE {k}::text = ANY(%s)").format(
                    k=sql.Identifier(key_column), t=sql.Identifier(text_column), tbl=sql.Identifier(nsp, rel)
                ),
                ([h[0] for h in hits],),
            ).fetchall()
        )
        return [Hit(key, score, texts.get(key)) for key, score in hits]
