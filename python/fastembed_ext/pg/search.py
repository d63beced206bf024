"""Top-k search over a table's vector column, through the extension's ``fastembed_ext.search``
(the query is embedded by the server, with the same model as the stored vectors)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass
class Hit:
    key: str
    score: float
    text: str | None


def _text_column(conn: psycopg.Connection, table: str, vector_column: str) -> str | None:
    row = conn.execute(
        "SELECT source_column FROM fastembed_ext.attachments WHERE table_oid = %s::regclass AND vector_column = %s",
        (table, vector_column),
    ).fetchone()
    if row:
        return row[0]
    row = conn.execute(
        """SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0
           AND NOT attisdropped AND atttypid IN ('text'::regtype, 'varchar'::regtype) ORDER BY attnum LIMIT 1""",
        (table,),
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
    with psycopg.connect(dsn, autocommit=True) as conn:
        if ef_search:
            conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(int(ef_search))))
        text_column = text_column or _text_column(conn, table, vector_column)
        hits = conn.execute(
            "SELECT key, score FROM fastembed_ext.search(%s, %s, %s, %s, %s)",
            (table, vector_column, query, k, model),
        ).fetchall()
        if not hits or text_column is None:
            return [Hit(key, score, None) for key, score in hits]
        key_column = conn.execute(
            """SELECT coalesce((SELECT key_column FROM fastembed_ext.attachments
                                WHERE table_oid = %s::regclass AND vector_column = %s),
                               (SELECT a.attname FROM pg_index i JOIN pg_attribute a
                                  ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                                WHERE i.indrelid = %s::regclass AND i.indisprimary LIMIT 1))""",
            (table, vector_column, table),
        ).fetchone()[0]
        texts = dict(
            conn.execute(
                sql.SQL("SELECT {k}::text, {t} FROM {tbl} WHERE {k}::text = ANY(%s)").format(
                    k=sql.Identifier(key_column), t=sql.Identifier(text_column),
                    tbl=sql.Identifier(*table.split(".")),
                ),
                ([h[0] for h in hits],),
            ).fetchall()
        )
        return [Hit(key, score, texts.get(key)) for key, score in hits]
