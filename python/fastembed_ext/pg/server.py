"""The Python side of the 0.1.0 SQL objects, kept as 0.1.0 shipped it (frozen; removed in 0.3.0).

A database still at extension version 0.1.0 imports this module from the user's environment. It
stays here so that such a database keeps working between `pip install -U fastembed_ext` and
`fastembed-ext pg install` (which runs ALTER EXTENSION fastembed_ext UPDATE); 0.2.0's SQL calls
`fastembed_ext.pg.backend` instead. Nothing else uses it: do not change it, and do not build on it.

Every entry point takes ``plpy`` (the PL/Python module of the calling backend) first and reports
problems with ``plpy.error(message, detail=..., hint=...)``, which aborts the statement. Each
backend loads a model once, on first use, and keeps it in ``_encoders`` for its lifetime.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

import fastembed_ext

from .vectors import vector_literal

# Versions of the SQL install script this module serves.
SQL_VERSIONS = ("0.1.0",)

# Rows embedded per forward-pass call when a trigger or a backfill walks many rows.
CHUNK_ROWS = 1024

_encoders: dict[str, fastembed_ext.Encoder] = {}
_plans: dict[Any, Any] = {}
_threads: int | None = None
# Tables whose vector column this backend is writing right now (the trigger must not re-fire).
_writing: set[int] = set()
# embed()'s last answer: (encoder, text, vector literal). A prepared statement's generic plan
# cannot fold embed($1) into a constant, so `ORDER BY embedding <=> embed($1) LIMIT k` calls it
# for the index scan and again for each of the k rows returned: k + 1 times with the same text.
_last_embed: tuple[fastembed_ext.Encoder, str, str] | None = None
# Forward-pass calls made by this backend (diagnostics and tests).
forward_passes = 0


def check_version(sql_version: str) -> tuple[str, None, str] | None:
    """Called once per backend by ``fastembed_ext._load()``: None when this module serves the
    extension's SQL version, else (message, detail, hint) of the error to raise."""
    if sql_version in SQL_VERSIONS:
        return None
    return (
        f"fastembed_ext: SQL objects are version {sql_version}, the Python package "
        f"{fastembed_ext.__version__} serves {', '.join(SQL_VERSIONS)}",
        None,
        "Run ALTER EXTENSION fastembed_ext UPDATE, or install the matching fastembed_ext package "
        "and run `fastembed-ext pg install` again.",
    )


def version() -> str:
    return fastembed_ext.__version__


# ---------------------------------------------------------------------------------------------
# models


def _plan(plpy, key: str, query: str, types: list[str]):
    plan = _plans.get(key)
    if plan is None:
        plan = _plans[key] = plpy.prepare(query, types)
    return plan


def _registered_names(plpy) -> list[str]:
    return [r["name"] for r in plpy.execute("SELECT name FROM fastembed_ext.model_registry ORDER BY 1")]


def _check_path_allowed(plpy, path: str) -> None:
    """Loading a model from a path runs its files in the server: superusers and members of
    pg_read_server_files only."""
    row = plpy.execute(
        "SELECT pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'member') AS ok"
    )[0]
    if not row["ok"]:
        plpy.error(
            f'fastembed_ext: permission denied to load a model from the path "{path}"',
            hint="Use a registered model name (see fastembed_ext.models), or ask a superuser to "
            "register this path with fastembed_ext.register_model(name, path).",
            sqlstate="42501",
        )


def _load(plpy, name: str, path: str) -> fastembed_ext.Encoder:
    enc = _encoders.get(path)
    if enc is not None:
        return enc
    try:
        enc = fastembed_ext.Encoder(path, threads=_threads)
    except (fastembed_ext.FastembedExtError, OSError, ValueError) as exc:
        where = path if name == path else f"{path} (model \"{name}\")"
        plpy.error(
            f"fastembed_ext: cannot load model {where}",
            detail=f"{type(exc).__name__}: {exc}",
            hint="The path must be a fastembed_ext bundle or a sentence-transformers folder that "
            "the server's operating-system user can read.",
            sqlstate="58000",
        )
    _encoders[path] = enc
    return enc


def _apply_threads(plpy, setting: str | None) -> None:
    global _threads
    if not setting:
        return
    try:
        n = int(setting)
        if n < 1:
            raise ValueError
    except ValueError:
        plpy.error(
            f'fastembed_ext: invalid value for fastembed_ext.threads: "{setting}"',
            hint="Set it to a positive integer, e.g. SET fastembed_ext.threads = 4.",
            sqlstate="22023",
        )
    if n != _threads:
        fastembed_ext.set_num_threads(n)
        _threads = n


def resolve(plpy, model: str | None) -> tuple[str, fastembed_ext.Encoder]:
    """The model's name and its loaded encoder; ``None`` means fastembed_ext.default_model."""
    plan = _plan(
        plpy,
        "resolve",
        """SELECT s.n AS name, r.path,
                  pg_catalog.current_setting('fastembed_ext.threads', true) AS threads
           FROM (SELECT coalesce($1, nullif(
                     pg_catalog.current_setting('fastembed_ext.default_model', true), '')) AS n) s
           LEFT JOIN fastembed_ext.model_registry r ON r.name = s.n""",
        ["text"],
    )
    row = plpy.execute(plan, [model])[0]
    _apply_threads(plpy, row["threads"])
    name = row["name"]
    if name is None:
        plpy.error(
            "fastembed_ext: no model given and fastembed_ext.default_model is not set",
            hint="Pass a model, e.g. embed(text, 'minilm'), or set a default: "
            "ALTER DATABASE ... SET fastembed_ext.default_model = 'minilm'.",
            sqlstate="22023",
        )
    if row["path"] is not None:
        return name, _load(plpy, name, row["path"])
    if "/" in name:  # a bundle or checkpoint path (registered names never contain '/')
        _check_path_allowed(plpy, name)
        return name, _load(plpy, name, name)
    known = _registered_names(plpy)
    plpy.error(
        f'fastembed_ext: unknown model "{name}"',
        detail="Registered models: " + (", ".join(known) if known else "none") + ".",
        hint="Register it with SELECT fastembed_ext.register_model('"
        + name
        + "', '/path/to/model'); or pass a bundle or sentence-transformers folder path.",
        sqlstate="42704",
    )
    raise AssertionError("unreachable")


def _encode(plpy, name: str, enc, texts: list[str]) -> np.ndarray:
    global forward_passes
    forward_passes += 1
    try:
        return enc.encode(texts)
    except fastembed_ext.FastembedExtError as exc:
        plpy.error(
            f'fastembed_ext: model "{name}" failed to embed {len(texts)} text(s)',
            detail=f"{type(exc).__name__}: {exc}",
            sqlstate="XX000",
        )
        raise


def embed(plpy, content: str, model: str | None) -> str:
    global _last_embed
    name, enc = resolve(plpy, model)
    last = _last_embed
    if last is not None and last[0] is enc and last[1] == content:
        return last[2]
    literal = vector_literal(_encode(plpy, name, enc, [content])[0])
    _last_embed = (enc, content, literal)
    return literal


def embed_batch(plpy, contents: list[str | None], model: str | None) -> list[str | None]:
    name, enc = resolve(plpy, model)
    idx = [i for i, t in enumerate(contents) if t is not None]
    out: list[str | None] = [None] * len(contents)
    if idx:
        vecs = _encode(plpy, name, enc, [contents[i] for i in idx])
        for i, v in zip(idx, vecs):
            out[i] = vector_literal(v)
    return out


def register_model(plpy, name: str, path: str) -> dict[str, Any]:
    if not name or "/" in name:
        plpy.error(
            f'fastembed_ext: invalid model name "{name}"',
            hint="A model name is a non-empty word without '/'; paths are given as the second argument.",
            sqlstate="22023",
        )
    if not os.path.isabs(path):
        plpy.error(
            f'fastembed_ext: model path "{path}" is not absolute',
            hint="Give the absolute path of a bundle or sentence-transformers folder on the server.",
            sqlstate="22023",
        )
    _check_path_allowed(plpy, path)
    _encoders.pop(path, None)
    enc = _load(plpy, name, path)
    row = {
        "name": name,
        "dim": enc.dim,
        "similarity": enc.similarity,
        "max_seq_length": enc.max_seq_length,
        "path": path,
    }
    plan = _plan(
        plpy,
        "register",
        """INSERT INTO fastembed_ext.model_registry (name, path, dim, similarity, max_seq_length)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (name) DO UPDATE SET path = excluded.path, dim = excluded.dim,
               similarity = excluded.similarity, max_seq_length = excluded.max_seq_length,
               registered_at = now()""",
        ["text", "text", "integer", "text", "integer"],
    )
    plpy.execute(plan, [name, path, enc.dim, enc.similarity, enc.max_seq_length])
    return row


# ---------------------------------------------------------------------------------------------
# tables


def _quote_table(plpy, relid: int) -> str:
    row = plpy.execute(
        f"SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        f"JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = {int(relid)}"
    )[0]
    return plpy.quote_ident(row["nspname"]) + "." + plpy.quote_ident(row["relname"])


def _relid(plpy, tbl: str) -> int:
    return plpy.execute(_plan(plpy, "relid", "SELECT $1::pg_catalog.regclass::pg_catalog.oid AS o", ["text"]), [tbl])[0]["o"]


def _column(plpy, relid: int, column: str) -> dict[str, Any]:
    """Type name (qualified where needed), base type and typmod of a column, or an ERROR."""
    rows = plpy.execute(
        _plan(
            plpy,
            "column",
            """SELECT pg_catalog.format_type(a.atttypid, NULL) AS typname, t.typname AS base,
                      a.atttypmod AS typmod, a.attgenerated <> '' AS generated,
                      tn.nspname AS typschema
               FROM pg_catalog.pg_attribute a
               JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
               WHERE a.attrelid = $1 AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped""",
            ["oid", "name"],
        ),
        [relid, column],
    )
    if not rows:
        plpy.error(
            f'fastembed_ext: column "{column}" of relation {_quote_table(plpy, relid)} does not exist',
            sqlstate="42703",
        )
    return dict(rows[0])


def _primary_key(plpy, relid: int) -> str | None:
    rows = plpy.execute(
        f"""SELECT a.attname FROM pg_catalog.pg_index i
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
            WHERE i.indrelid = {int(relid)} AND i.indisprimary"""
    )
    return rows[0]["attname"] if len(rows) == 1 else None


def _check_dim(plpy, name: str, enc, table: str, column: str, typmod: int) -> None:
    if typmod > 0 and typmod != enc.dim:
        plpy.error(
            f'fastembed_ext: model "{name}" makes {enc.dim}-dimensional vectors but column '
            f"{column} of {table} is vector({typmod})",
            hint=f"Use a model with {typmod} dimensions, or change the column to vector({enc.dim}).",
            sqlstate="22000",
        )


def _trigger_name(vector_column: str, event: str) -> str:
    name = f"fastembed_ext_{vector_column}_{event}"
    if len(name.encode()) > 63:
        h = hashlib.sha1(vector_column.encode()).hexdigest()[:8]
        name = f"fastembed_ext_{h}_{event}"
    return name


def _write_vectors(plpy, relid, table, key_column, vector_column, rows, name, enc) -> int:
    """Embed ``rows`` (dicts with k and s) and store them; NULL text gives a NULL vector."""
    key_t = _column(plpy, relid, key_column)["typname"]
    vec_t = _column(plpy, relid, vector_column)["typname"]
    plan = _plan(
        plpy,
        ("update", relid, key_column, vector_column, key_t, vec_t),
        f"""UPDATE {table} AS t SET {plpy.quote_ident(vector_column)} = u.v
            FROM unnest($1::{key_t}[], $2::{vec_t}[]) AS u(k, v)
            WHERE t.{plpy.quote_ident(key_column)} = u.k""",
        [f"{key_t}[]", f"{vec_t}[]"],
    )
    keys = [r["k"] for r in rows]
    texts = [r["s"] for r in rows]
    idx = [i for i, t in enumerate(texts) if t is not None]
    vecs: list[str | None] = [None] * len(rows)
    if idx:
        for i, v in zip(idx, _encode(plpy, name, enc, [texts[i] for i in idx])):
            vecs[i] = vector_literal(v)
    _writing.add(relid)
    try:
        plpy.execute(plan, [keys, vecs])
    finally:
        _writing.discard(relid)
    return len(idx)


def embed_rows(plpy, TD) -> None:
    """The statement-level AFTER INSERT / AFTER UPDATE trigger of an attached table."""
    relid = int(TD["relid"])
    if relid in _writing:  # our own UPDATE of the vector column
        return
    vector_column, source_column, key_column, model = TD["args"]
    table = _quote_table(plpy, relid)
    name, enc = resolve(plpy, model)
    vcol = _column(plpy, relid, vector_column)
    _check_dim(plpy, name, enc, table, vector_column, vcol["typmod"])
    k, s = plpy.quote_ident(key_column), plpy.quote_ident(source_column)
    if TD["event"] == "INSERT":
        query = f"SELECT n.{k} AS k, n.{s}::text AS s FROM fastembed_ext_new n WHERE n.{s} IS NOT NULL"
    else:  # only rows whose text changed (or whose key changed)
        query = (
            f"SELECT n.{k} AS k, n.{s}::text AS s FROM fastembed_ext_new n "
            f"LEFT JOIN fastembed_ext_old o ON o.{k} = n.{k} "
            f"WHERE o.{k} IS NULL OR n.{s} IS DISTINCT FROM o.{s}"
        )
    cursor = plpy.cursor(query)
    while True:
        rows = cursor.fetch(CHUNK_ROWS)
        if not rows:
            break
        _write_vectors(plpy, relid, table, key_column, vector_column, list(rows), name, enc)


def attach_embedding(plpy, tbl, source_column, vector_column, model, key_column) -> int:
    if tbl is None or source_column is None or vector_column is None:
        plpy.error("fastembed_ext: attach_embedding needs a table, a source column and a vector column",
                   sqlstate="22004")
    relid = _relid(plpy, tbl)
    table = _quote_table(plpy, relid)
    src = _column(plpy, relid, source_column)
    if src["base"] not in ("text", "varchar", "bpchar", "name"):
        plpy.error(
            f"fastembed_ext: source column {source_column} of {table} is {src['typname']}, not text",
            hint="Attach a text, varchar or char column.",
            sqlstate="42804",
        )
    vcol = _column(plpy, relid, vector_column)
    if vcol["base"] != "vector":
        plpy.error(
            f"fastembed_ext: column {vector_column} of {table} is {vcol['typname']}, not vector",
            hint="Add a column of type vector(dim) for the embeddings first.",
            sqlstate="42804",
        )
    if vcol["generated"]:
        plpy.error(f"fastembed_ext: column {vector_column} of {table} is a generated column",
                   hint="A generated column embeds by itself; attach a plain vector column.",
                   sqlstate="42P16")
    key_column = key_column or _primary_key(plpy, relid)
    if key_column is None:
        plpy.error(
            f"fastembed_ext: {table} has no single-column primary key",
            hint="Pass key_column => '...' naming a unique, not-null column.",
            sqlstate="42P10",
        )
    _column(plpy, relid, key_column)
    name, enc = resolve(plpy, model)
    _check_dim(plpy, name, enc, table, vector_column, vcol["typmod"])

    args = ", ".join(plpy.quote_literal(a) for a in (vector_column, source_column, key_column, name))
    for event, spec in (
        ("insert", "AFTER INSERT ON {t} REFERENCING NEW TABLE AS fastembed_ext_new"),
        ("update", "AFTER UPDATE ON {t} REFERENCING OLD TABLE AS fastembed_ext_old NEW TABLE AS fastembed_ext_new"),
    ):
        trig = plpy.quote_ident(_trigger_name(vector_column, event))
        plpy.execute(f"DROP TRIGGER IF EXISTS {trig} ON {table}")
        plpy.execute(
            f"CREATE TRIGGER {trig} {spec.format(t=table)} FOR EACH STATEMENT "
            f"EXECUTE FUNCTION fastembed_ext._embed_rows({args})"
        )
    plpy.execute(
        _plan(
            plpy,
            "attach",
            """INSERT INTO fastembed_ext.attachments
                   (table_oid, vector_column, source_column, key_column, model)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (table_oid, vector_column) DO UPDATE SET source_column = excluded.source_column,
                   key_column = excluded.key_column, model = excluded.model""",
            ["oid", "name", "name", "name", "text"],
        ),
        [relid, vector_column, source_column, key_column, name],
    )
    # backfill what is already there (the triggers above hold off concurrent writers until commit)
    k, s = plpy.quote_ident(key_column), plpy.quote_ident(source_column)
    cursor = plpy.cursor(f"SELECT {k} AS k, {s}::text AS s FROM {table} WHERE {s} IS NOT NULL")
    done = 0
    while True:
        rows = cursor.fetch(CHUNK_ROWS)
        if not rows:
            break
        done += _write_vectors(plpy, relid, table, key_column, vector_column, list(rows), name, enc)
    return done


def detach_embedding(plpy, tbl, vector_column) -> bool:
    relid = _relid(plpy, tbl)
    table = _quote_table(plpy, relid)
    for event in ("insert", "update"):
        trig = plpy.quote_ident(_trigger_name(vector_column, event))
        plpy.execute(f"DROP TRIGGER IF EXISTS {trig} ON {table}")
    rows = plpy.execute(
        _plan(
            plpy,
            "detach",
            "DELETE FROM fastembed_ext.attachments WHERE table_oid = $1 AND vector_column = $2 RETURNING 1",
            ["oid", "name"],
        ),
        [relid, vector_column],
    )
    return len(rows) > 0


# ---------------------------------------------------------------------------------------------
# index and search


def _attachment(plpy, relid: int, vector_column: str) -> dict[str, Any] | None:
    rows = plpy.execute(
        _plan(
            plpy,
            "attachment",
            "SELECT key_column, model FROM fastembed_ext.attachments WHERE table_oid = $1 AND vector_column = $2",
            ["oid", "name"],
        ),
        [relid, vector_column],
    )
    return dict(rows[0]) if rows else None


def _vector_schema(plpy) -> str:
    row = plpy.execute(
        "SELECT n.nspname FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    )[0]
    return plpy.quote_ident(row["nspname"])


def _model_for(plpy, relid: int, vector_column: str, model: str | None):
    if model is None:
        att = _attachment(plpy, relid, vector_column)
        model = att["model"] if att else None
    return resolve(plpy, model)


def create_embedding_index(plpy, tbl, vector_column, model, m, ef_construction) -> str:
    relid = _relid(plpy, tbl)
    table = _quote_table(plpy, relid)
    vcol = _column(plpy, relid, vector_column)
    if vcol["base"] != "vector" or vcol["typmod"] <= 0:
        plpy.error(
            f"fastembed_ext: column {vector_column} of {table} is {vcol['typname']}; an HNSW index "
            "needs vector(dim)",
            hint="Declare the column with its dimension, e.g. vector(384).",
            sqlstate="42804",
        )
    name, enc = _model_for(plpy, relid, vector_column, model)
    _check_dim(plpy, name, enc, table, vector_column, vcol["typmod"])
    opclass = {"cosine": "vector_cosine_ops", "dot": "vector_ip_ops"}[enc.similarity]
    relname = plpy.execute(f"SELECT relname, relnamespace::regnamespace::text AS nsp FROM pg_catalog.pg_class WHERE oid = {int(relid)}")[0]
    index = f"{relname['relname']}_{vector_column}_hnsw"[:63]
    plpy.execute(
        f"CREATE INDEX IF NOT EXISTS {plpy.quote_ident(index)} ON {table} USING hnsw "
        f"({plpy.quote_ident(vector_column)} {_vector_schema(plpy)}.{opclass}) "
        f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
    )
    return f"{relname['nsp']}.{plpy.quote_ident(index)}"


def search(plpy, tbl, vector_column, query, k, model) -> list[tuple[str, float]]:
    if tbl is None or vector_column is None or query is None:
        return []
    relid = _relid(plpy, tbl)
    table = _quote_table(plpy, relid)
    vcol = _column(plpy, relid, vector_column)
    att = _attachment(plpy, relid, vector_column)
    key_column = (att and att["key_column"]) or _primary_key(plpy, relid)
    if key_column is None:
        plpy.error(f"fastembed_ext: {table} has no single-column primary key to return",
                   hint="Give the table a primary key.", sqlstate="42P10")
    name, enc = _model_for(plpy, relid, vector_column, model)
    _check_dim(plpy, name, enc, table, vector_column, vcol["typmod"])
    vs = _vector_schema(plpy)
    col, key = plpy.quote_ident(vector_column), plpy.quote_ident(key_column)
    if enc.similarity == "cosine":
        op, score = f"OPERATOR({vs}.<=>)", f"1 - (t.{col} OPERATOR({vs}.<=>) $1)"
    else:
        op, score = f"OPERATOR({vs}.<#>)", f"-(t.{col} OPERATOR({vs}.<#>) $1)"
    plan = _plan(
        plpy,
        ("search", relid, vector_column, key_column, enc.similarity, vcol["typname"]),
        f"SELECT t.{key}::text AS key, ({score})::float8 AS score FROM {table} t "
        f"ORDER BY t.{col} {op} $1 LIMIT $2",
        [vcol["typname"], "bigint"],
    )
    qvec = vector_literal(_encode(plpy, name, enc, [query])[0])
    return [(r["key"], r["score"]) for r in plpy.execute(plan, [qvec, k if k is not None else 10])]
