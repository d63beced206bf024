"""Tables: attaching a vector column to a text column, HNSW indexes, and top-k search.

A table argument arrives as a regclass, which PostgreSQL resolved with the caller's search_path
and quoting rules; it is turned into an OID once, and every statement names the table through
that OID (``oid::regclass`` prints the current, correctly quoted name), so schema-qualified,
mixed-case and renamed tables all work.
"""

from __future__ import annotations

from .errors import fail
from .models import resolve

# (no typing or expressions at import time: see errors.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .models import Model
    from .session import Backend

# Rows per forward pass when a backfill walks a table (the attach trigger uses the same number).
CHUNK_ROWS = 1024
VECTOR_TYPES = ("vector", "halfvec")
TEXT_TYPES = ("text", "varchar", "bpchar", "name")
# pgvector's bounds for HNSW, and the most rows a search returns (hnsw.ef_search's maximum).
HNSW_M = (2, 100)
HNSW_EF_CONSTRUCTION = (4, 1000)
HNSW_MAX_DIMS = {"vector": 2000, "halfvec": 4000}
SEARCH_K = (1, 1000)
# A chunked search reads this many best chunks per document it returns, then keeps each
# document's best: a document's chunks often crowd the top of the list.
CHUNKS_PER_HIT = 4
# At most this many texts per embed_batch() call: its vectors are built in memory at once.
BATCH_TEXTS = 65536
_BOUNDS = ("HNSW takes m from 2 to 100 and ef_construction from 4 to 1000 (at least 2 * m); a "
           "search returns 1 to 1000 rows (hnsw.ef_search's maximum).")


class Table:
    __slots__ = ("oid", "sql", "owner_ok")

    def __init__(self, oid: int, sql: str, owner_ok: bool) -> None:
        self.oid = oid
        self.sql = sql  # schema-qualified, quoted as needed
        self.owner_ok = owner_ok


def table(plpy, tbl: str | None, what: str = "a table") -> Table:
    if tbl is None:
        fail(f"{what} is required", sqlstate="22004", detail="The table argument is NULL.",
             hint="Pass the table, e.g. 'public.docs'.")
    row = plpy.execute(
        "SELECT c.oid, c.oid::pg_catalog.regclass::text AS q, c.relkind, "
        "pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE') AS owner_ok, "
        "pg_catalog.format('%I.%I', n.nspname, c.relname) AS sql "
        "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = " + plpy.quote_literal(tbl) + "::pg_catalog.regclass"
    )[0]
    if row["relkind"] not in ("r", "p"):
        kind = {"v": "view", "m": "materialized view", "i": "index", "S": "sequence", "f": "foreign table",
                "c": "composite type", "t": "TOAST table", "I": "partitioned index"}.get(row["relkind"], "relation")
        fail(f"{row['q']} is not a table", sqlstate="42809", detail=f"It is a {kind}.",
             hint="Attach, index and search ordinary or partitioned tables.")
    return Table(int(row["oid"]), row["sql"], bool(row["owner_ok"]))


def column(plpy, t: Table, name: str | None, role: str) -> dict[str, Any]:
    """Type name, base type, typmod and flags of column ``name``, or an error naming it."""
    if name is None:
        fail(f"the {role} column is required", sqlstate="22004", detail=f"The {role} column argument is NULL.",
             hint="Pass the column's name as it is stored, e.g. 'body'.")
    rows = plpy.execute(
        "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS typname, t.typname AS base, "
        "t.typname || CASE WHEN a.atttypmod > 0 THEN '(' || a.atttypmod || ')' ELSE '' END AS shown, "
        "a.atttypmod AS typmod, a.attgenerated <> '' AS generated, a.attnotnull AS notnull, "
        "a.attnum, pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS expr "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid "
        "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        f"WHERE a.attrelid = {t.oid} AND a.attname = {plpy.quote_literal(name)} "
        "AND a.attnum > 0 AND NOT a.attisdropped"
    )
    if not rows:
        names = [r["attname"] for r in plpy.execute(
            f"SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = {t.oid} AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum")]
        fail(f'column "{name}" of {t.sql} does not exist', sqlstate="42703",
             detail=f"Its columns: {', '.join(names)}.",
             hint="Column names are matched exactly, as stored (case included).")
    return dict(rows[0])


def vector_column(plpy, t: Table, name: str | None, *, need_dim: bool = False) -> dict[str, Any]:
    col = column(plpy, t, name, "vector")
    if col["base"] not in VECTOR_TYPES:
        fail(f'column "{name}" of {t.sql} is {col["shown"]}, not vector or halfvec', sqlstate="42804",
             detail="Embeddings are stored in pgvector's vector or halfvec type.",
             hint="Add a column of type vector(dim) or halfvec(dim) for the embeddings.")
    if need_dim and col["typmod"] <= 0:
        fail(f'column "{name}" of {t.sql} is {col["shown"]} without a dimension', sqlstate="42804",
             detail="An HNSW index needs a fixed number of dimensions.",
             hint=f"Declare it with the model's dimension, e.g. ALTER TABLE {t.sql} ALTER COLUMN "
             f"{name} TYPE {col['base']}(384).")
    return col


def check_dim(model: Model, enc, t: Table, name: str, col: dict[str, Any]) -> None:
    if col["typmod"] > 0 and col["typmod"] != enc.dim:
        fail(
            f'model "{model.name}" makes {enc.dim}-dimensional vectors but column "{name}" of '
            f"{t.sql} is {col['shown']}",
            sqlstate="22000",
            detail="pgvector stores vectors of exactly the column's width.",
            hint=f"Use a model with {col['typmod']} dimensions, or change the column to "
            f"{col['base']}({enc.dim}).",
        )


def _key_column(plpy, t: Table, key: str | None) -> str:
    """The column rows are matched by: the one given, or the single-column primary key. It must be
    NOT NULL and unique, or a stored vector could land on the wrong row."""
    unique = plpy.execute(
        "SELECT a.attname, i.indisprimary FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
        f"WHERE i.indrelid = {t.oid} AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL "
        "AND i.indexprs IS NULL AND i.indisvalid AND a.attnotnull"
    )
    names = {r["attname"] for r in unique}
    if key is None:
        primary = [r["attname"] for r in unique if r["indisprimary"]]
        if primary:
            return primary[0]
        fail(f"{t.sql} has no single-column primary key", sqlstate="42P10",
             detail="Vectors are written back to their rows by a unique, NOT NULL key.",
             hint="Pass key_column => '...' naming a NOT NULL column with a unique index, or add a "
             f"primary key: ALTER TABLE {t.sql} ADD COLUMN id bigserial PRIMARY KEY.")
    column(plpy, t, key, "key")
    if key not in names:
        fail(f'key column "{key}" of {t.sql} is not unique and NOT NULL', sqlstate="42P10",
             detail="Vectors are written back by key; with duplicate or NULL keys a row could get "
             "another row's vector, or none.",
             hint=f"Add a unique index and NOT NULL: ALTER TABLE {t.sql} ADD UNIQUE ({key}), ALTER "
             f"COLUMN {key} SET NOT NULL; or use the primary key.")
    return key


def attachment(plpy, t: Table, vector_name: str) -> dict[str, Any] | None:
    rows = plpy.execute(
        "SELECT * FROM fastembed_ext.attachments "
        f"WHERE tbl = {t.oid}::pg_catalog.oid::pg_catalog.regclass AND vector_column = {plpy.quote_literal(vector_name)}"
    )
    return dict(rows[0]) if rows else None


def column_model(plpy, t: Table, vector_name: str, col: dict[str, Any]) -> str | None:
    """The model that made the column's vectors, when the database knows it: its attachment, or
    the model a generated column's expression names. None when it cannot tell."""
    from . import expressions

    att = attachment(plpy, t, vector_name)
    if att is not None:
        return att["model"]
    if col["expr"]:
        models = {c.model for c in expressions.embed_calls(col["expr"])}
        if len(models) == 1 and expressions.ANY not in models:
            (model,) = models
            if model == expressions.DEFAULT:
                default = plpy.execute("SELECT fastembed_ext._model(NULL) ->> 'name' AS n")[0]["n"]
                return default
            return model
    return None


# --------------------------------------------------------------------------- attach / detach


def _embed_literals(backend: Backend, plpy, model: Model, enc, texts: list[str | None],
                    prompt_name: str | None = None) -> list[str | None]:
    if len(texts) > BATCH_TEXTS:
        fail(f"{len(texts)} texts in one call is more than {BATCH_TEXTS}", sqlstate="54000",
             detail="The vectors of one call are built in the backend's memory at once.",
             hint=f"Embed them in chunks of at most {BATCH_TEXTS}.")
    idx = [i for i, text in enumerate(texts) if text is not None]
    out: list[str | None] = [None] * len(texts)
    if idx:
        for i, literal in zip(idx, backend.literals(plpy, model, enc, [texts[i] for i in idx], prompt_name)):
            out[i] = literal
    return out


def _vector_schema(plpy) -> str:
    """The schema pgvector was created in, quoted: its operators and opclasses are named through it."""
    return plpy.quote_ident(plpy.execute(
        "SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n "
        "ON n.oid = e.extnamespace WHERE e.extname = 'vector'"
    )[0]["nspname"])


def _opclass(col: dict[str, Any], enc) -> str:
    """The HNSW operator class for a vector column and a model: cosine, or inner product."""
    return f"{col['base']}_{'cosine' if enc.similarity == 'cosine' else 'ip'}_ops"


def _fit_name(relname: str, vector_name: str, suffix: str) -> str:
    """``<table>_<column>_<suffix>``; when that passes PostgreSQL's 63 bytes, its first 54 bytes
    and a hash of both names instead."""
    name = f"{relname}_{vector_name}_{suffix}"
    if len(name.encode()) <= 63:
        return name
    import hashlib  # here, not at import: it loads OpenSSL, a few ms of every new backend

    digest = hashlib.sha1(f"{relname}\0{vector_name}".encode()).hexdigest()[:8]
    return name.encode()[: 63 - 9].decode(errors="ignore") + "_" + digest


def _chunking(plpy, chunking: str | None, mode: str, enc) -> dict[str, int | None] | None:
    """The checked `chunking` argument (jsonb, as text): {"window": tokens or null, "overlap": tokens}."""
    if chunking is None:
        return None
    import json

    try:
        spec = json.loads(chunking)
    except ValueError:
        spec = None
    hint = ("Pass chunking => fastembed_ext.token_windows(window_tokens, overlap), e.g. "
            "fastembed_ext.token_windows(200, 32); window_tokens NULL means all the model embeds whole.")
    if not isinstance(spec, dict) or set(spec) - {"window", "overlap"}:
        fail(f"chunking must be an object with the keys window and overlap, not {chunking}", sqlstate="22023",
             hint=hint)
    window, overlap = spec.get("window"), spec.get("overlap", 0)
    most = getattr(enc, "window_tokens", None)  # (a model on the embedding server: checked by the worker)
    if not (window is None or (isinstance(window, int) and 1 <= window <= (most or 1 << 20))) \
            or not (isinstance(overlap, int) and 0 <= overlap < (window or most or 1 << 20)):
        fail(f"chunking {chunking} is out of range", sqlstate="22023",
             detail=f"A window is 1 to {most or 'max_seq_length less the special'} tokens; the overlap is 0 or "
             "more tokens, and less than the window.", hint=hint)
    if mode != "async":
        fail("chunking needs mode => 'async'", sqlstate="22023",
             detail="The chunks of a text are embedded by the workers (fastembed-ext worker).",
             hint="Attach with mode => 'async', chunking => ...")
    return {"window": window, "overlap": overlap}


def _chunk_table(plpy, t: Table, vector_name: str, key_name: str, vcol: dict[str, Any], enc) -> str:
    """Creates (when missing) the table of a chunked attachment's chunks next to its table, with its
    HNSW index, owned by the caller (the table's owner); returns its regclass text."""
    info = plpy.execute(f"SELECT c.relname, n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        f"ON n.oid = c.relnamespace WHERE c.oid = {t.oid}")[0]
    name = _fit_name(info["relname"], vector_name, "chunks")
    qualified = f"{plpy.quote_ident(info['nspname'])}.{plpy.quote_ident(name)}"
    key_type = column(plpy, t, key_name, "key")["typname"]
    plpy.execute(
        f"CREATE TABLE IF NOT EXISTS {qualified} (key {key_type} NOT NULL, chunk integer NOT NULL, "
        f"span pg_catalog.int4range NOT NULL, embedding {vcol['typname']} NOT NULL, PRIMARY KEY (key, chunk))"
    )
    if vcol["typmod"] > 0 and vcol["typmod"] <= HNSW_MAX_DIMS[vcol["base"]]:
        index = _fit_name(name, "embedding", "hnsw")  # as create_embedding_index names it
        plpy.execute(f"CREATE INDEX IF NOT EXISTS {plpy.quote_ident(index)} ON {qualified} USING hnsw "
                     f"(embedding {_vector_schema(plpy)}.{_opclass(vcol, enc)})")
    return plpy.execute(f"SELECT {plpy.quote_literal(qualified)}::pg_catalog.regclass::text AS r")[0]["r"]


def attach(backend: Backend, plpy, tbl, source_name, vector_name, model_name, key_name, mode, chunking=None,
           fill=True) -> int:
    t = table(plpy, tbl)
    if mode not in ("sync", "async", "manual"):
        fail(f'unknown attach mode "{mode}"', sqlstate="22023", detail="The modes are 'sync', 'async' and 'manual'.",
             hint="mode => 'sync' embeds rows as they are written; 'async' queues them for workers "
             "(fastembed-ext worker); 'manual' only records the model of vectors written by the client "
             "(fastembed-ext ingest).")
    if not t.owner_ok:
        fail(f"permission denied to attach {t.sql}", sqlstate="42501",
             detail="Only the owner of a table (or a member of its owning role) attaches it.",
             hint=f"Ask the owner of {t.sql} to run attach_embedding.")
    src = column(plpy, t, source_name, "source")
    if src["base"] not in TEXT_TYPES:
        fail(f'source column "{source_name}" of {t.sql} is {src["shown"]}, not text', sqlstate="42804",
             detail="Only text is embedded.", hint="Attach a text, varchar or char column.")
    vcol = vector_column(plpy, t, vector_name)
    if vcol["generated"]:
        fail(f'column "{vector_name}" of {t.sql} is a generated column', sqlstate="42P16",
             detail="PostgreSQL computes its value; no trigger may write it.",
             hint="A generated column embeds by itself; attach a plain vector column.")
    key_name = _key_column(plpy, t, key_name)
    if model_name is not None and "/" in model_name:
        fail("an attachment needs a registered model, not a path", sqlstate="22023",
             detail="Attached vectors are pinned to the model that made them; a path is not.",
             hint=f"An admin registers the bundle: SELECT fastembed_ext.register_model('name', '{model_name}').")
    model, enc = resolve(backend, plpy, model_name)
    check_dim(model, enc, t, vector_name, vcol)
    chunks = _chunking(plpy, chunking, mode, enc)

    before = attachment(plpy, t, vector_name)
    if before is not None and before.get("chunk_table") is not None and chunks is None:
        # the chunks are derived data of the attachment: without chunking they go
        plpy.execute(f"DROP TABLE IF EXISTS {before['chunk_table']}")
    chunk_table = _chunk_table(plpy, t, vector_name, key_name, vcol, enc) if chunks else None
    # Keys still queued when an async attachment changes mode: their rows are embedded now instead.
    pending = _queued_keys(plpy, before["id"]) if before is not None and before["mode"] == "async" and mode != "async" else []
    # (the chunk columns are named only when they matter, so that this library still serves the
    # SQL of 0.2.0, whose attachments have none, until ALTER EXTENSION ... UPDATE)
    chunk_columns = chunks is not None or (before is not None and before.get("chunking") is not None)
    if chunk_columns:
        import json

        names, values = ", chunking, chunk_table", (
            f", {plpy.quote_nullable(json.dumps(chunks) if chunks else None)}::jsonb, "
            f"{plpy.quote_nullable(chunk_table)}::pg_catalog.regclass")
        updates = ", chunking = excluded.chunking, chunk_table = excluded.chunk_table"
    else:
        names = values = updates = ""
    row = plpy.execute(
        f"INSERT INTO fastembed_ext.attachments (tbl, vector_column, source_column, key_column, model, mode{names}) "
        f"VALUES ({t.oid}::pg_catalog.oid::pg_catalog.regclass, {plpy.quote_literal(vector_name)}, "
        f"{plpy.quote_literal(source_name)}, {plpy.quote_literal(key_name)}, "
        f"{plpy.quote_literal(model.name)}, {plpy.quote_literal(mode)}{values}) "
        "ON CONFLICT (tbl, vector_column) DO UPDATE SET source_column = excluded.source_column, "
        f"key_column = excluded.key_column, model = excluded.model, mode = excluded.mode{updates} RETURNING id"
    )[0]
    plpy.execute(f"SELECT fastembed_ext._install_attachment({int(row['id'])})")
    if mode == "manual":
        return 0
    if not fill:
        if mode == "sync":
            plpy.notice(f"fastembed_ext: {t.sql} is attached; its existing rows are not embedded yet",
                        hint=f"CALL fastembed_ext.backfill('{t.sql}', '{vector_name}'); it commits as it goes.")
        return 0
    # Re-attaching the same text to the same model fills only the rows that have no vector yet.
    only_missing = (before is not None and before["model"] == model.name and before["source_column"] == source_name
                    and (before.get("chunking") is None) == (chunks is None))
    if mode == "async":
        return _enqueue_backfill(plpy, t, int(row["id"]), source_name, vector_name, key_name, only_missing)
    return _backfill(backend, plpy, t, model, enc, source_name, vector_name, key_name, vcol, only_missing, pending)


def _queued_keys(plpy, attachment_id: int) -> list[str]:
    queue = f"fastembed_ext.{plpy.quote_ident(f'queue_{attachment_id}')}"
    if plpy.execute(f"SELECT pg_catalog.to_regclass({plpy.quote_literal(queue)}) IS NULL AS gone")[0]["gone"]:
        return []
    return [r["k"] for r in plpy.execute(f"SELECT DISTINCT pg_catalog.unnest(keys)::text AS k FROM {queue}")]


def _enqueue_backfill(plpy, t: Table, attachment_id: int, source_name, vector_name, key_name, only_missing: bool) -> int:
    """Queues the rows to embed, in jobs of 64 keys, for the workers: one statement that runs no
    model, so the table is locked only as long as a scan. Rows already queued are not queued twice,
    so attaching again resumes where the workers are. (Queued keys are compared as text, so that
    this also serves 0.3.0's queues, whose keys are text, until ALTER EXTENSION UPDATE.)"""
    k, s, v = (plpy.quote_ident(n) for n in (key_name, source_name, vector_name))
    queue = f"fastembed_ext.{plpy.quote_ident(f'queue_{attachment_id}')}"
    where = f"t.{s} IS NOT NULL" + (f" AND t.{v} IS NULL" if only_missing else "")
    queued = plpy.execute(
        f"WITH todo AS (SELECT t.{k} AS k FROM ONLY {t.sql} t WHERE {where} "
        f"  AND NOT EXISTS (SELECT FROM (SELECT pg_catalog.unnest(q.keys) AS k FROM {queue} q) q WHERE q.k::text = t.{k}::text)), "
        f"jobs AS (INSERT INTO {queue} (keys) SELECT a.k[i:i + 63] "
        f"  FROM (SELECT pg_catalog.array_agg(todo.k) AS k FROM todo) a, "
        f"       pg_catalog.generate_series(1, pg_catalog.cardinality(a.k), 64) AS i RETURNING 1) "
        "SELECT (SELECT pg_catalog.count(*) FROM todo) AS n, (SELECT pg_catalog.count(*) FROM jobs) AS jobs"
    )[0]
    if queued["n"]:
        plpy.execute(f"SELECT pg_catalog.pg_notify('fastembed_ext_queue', '{attachment_id}')")
        plpy.notice(f"fastembed_ext: queued {queued['n']} rows of {t.sql} for the embedding workers",
                    hint="Run `fastembed-ext worker --dsn ...` to embed them; "
                    "SELECT * FROM fastembed_ext.queue_status shows the backlog.")
    return int(queued["n"])


def _backfill(backend, plpy, t: Table, model: Model, enc, source_name, vector_name, key_name, vcol,
              only_missing: bool, pending: list[str] = ()) -> int:
    k, s, v = (plpy.quote_ident(n) for n in (key_name, source_name, vector_name))
    where = f"{s} IS NOT NULL" + (f" AND {v} IS NULL" if only_missing else "")
    if only_missing and pending:
        keys = "ARRAY[" + ",".join(plpy.quote_literal(key) for key in pending) + "]::text[]"
        where = f"{s} IS NOT NULL AND ({v} IS NULL OR {k}::text = ANY ({keys}))"
    total = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM ONLY {t.sql} WHERE {where}")[0]["n"]
    key_type = column(plpy, t, key_name, "key")["typname"]
    update = plpy.prepare(
        f"UPDATE ONLY {t.sql} AS t SET {v} = u.v::{vcol['typname']} "
        f"FROM ROWS FROM (pg_catalog.unnest($1::{key_type}[]), pg_catalog.unnest($2::text[])) AS u(k, v) "
        f"WHERE t.{k} = u.k",
        [f"{key_type}[]", "text[]"],
    )
    cursor = plpy.cursor(f"SELECT {k} AS k, {s}::text AS s FROM ONLY {t.sql} WHERE {where}")
    done = 0
    while True:
        rows = cursor.fetch(CHUNK_ROWS)
        if not rows:
            break
        vectors = _embed_literals(backend, plpy, model, enc, [r["s"] for r in rows])
        plpy.execute(update, [[r["k"] for r in rows], vectors])
        done += len(rows)
        if total > CHUNK_ROWS:
            plpy.notice(f"fastembed_ext: embedded {done} of {total} rows of {t.sql}")
    return done


def backfill(backend: Backend, plpy, tbl, vector_name, batch_rows) -> None:
    """CALL fastembed_ext.backfill(...): embeds the rows of a sync attachment that have no vector,
    `batch_rows` per forward pass, committing after each batch when the CALL is outside a
    transaction block, so that no lock is held longer than a batch and an interruption keeps what
    was done (calling it again resumes). Progress goes out as NOTICEs."""
    t = table(plpy, tbl)
    att = attachment(plpy, t, vector_name)
    if att is None or att["mode"] != "sync":
        fail(f'column "{vector_name}" of {t.sql} has no sync attachment', sqlstate="42704",
             hint="Attach it first: fastembed_ext.attach_embedding(..., backfill => false); async "
             "attachments are backfilled by their workers.")
    if not t.owner_ok:
        fail(f"permission denied to backfill {t.sql}", sqlstate="42501",
             detail="Only the owner of a table (or a member of its owning role) backfills it.",
             hint=f"Ask the owner of {t.sql} to run it.")
    if batch_rows is None or not 1 <= batch_rows <= BATCH_TEXTS:
        fail(f"batch_rows = {batch_rows} is out of range", sqlstate="22023",
             hint=f"batch_rows must be between 1 and {BATCH_TEXTS}.")
    model, enc = resolve(backend, plpy, att["model"])
    vcol = vector_column(plpy, t, vector_name)
    check_dim(model, enc, t, vector_name, vcol)
    k, s, v = (plpy.quote_ident(n) for n in (att["key_column"], att["source_column"], vector_name))
    key_type = column(plpy, t, att["key_column"], "key")["typname"]
    total = plpy.execute(f"SELECT pg_catalog.count(*) AS n FROM ONLY {t.sql} WHERE {s} IS NOT NULL AND {v} IS NULL")[0]["n"]
    done, last, commits = 0, None, True
    while True:
        after = "" if last is None else f" AND {k} > {plpy.quote_literal(last)}::{key_type}"
        rows = plpy.execute(
            f"SELECT {k} AS k, {k}::text AS kt, {s}::text AS s FROM ONLY {t.sql} "
            f"WHERE {s} IS NOT NULL AND {v} IS NULL{after} ORDER BY {k} LIMIT {int(batch_rows)}")
        if not rows:
            break
        vectors = _embed_literals(backend, plpy, model, enc, [r["s"] for r in rows])
        update = plpy.prepare(
            f"UPDATE ONLY {t.sql} AS t SET {v} = u.v::{vcol['typname']} "
            f"FROM ROWS FROM (pg_catalog.unnest($1::{key_type}[]), pg_catalog.unnest($2::text[])) AS u(k, v) "
            f"WHERE t.{k} = u.k", [f"{key_type}[]", "text[]"])
        plpy.execute(update, [[r["k"] for r in rows], vectors])
        done += len(rows)
        last = rows[-1]["kt"]
        if commits:
            try:
                plpy.commit()
            except plpy.SPIError:  # inside a transaction block (or a function): all at its end
                commits = False
                plpy.notice("fastembed_ext: backfill called inside a transaction block: its rows are "
                            "committed together at the block's end",
                            hint="CALL it outside a transaction block to commit after each batch.")
        plpy.notice(f"fastembed_ext: embedded {done} of {total} rows of {t.sql}")


def embed_attached(backend: Backend, plpy, attachment_id: int, texts: list[str | None]) -> list[str | None]:
    rows = plpy.execute(f"SELECT * FROM fastembed_ext.attachments WHERE id = {int(attachment_id)}")
    if not rows:
        fail(f"no attachment {attachment_id}", sqlstate="42704",
             detail="It was detached while a statement of its table was running.", hint="Run the statement again.")
    att = rows[0]
    t = table(plpy, att["tbl"])
    vcol = vector_column(plpy, t, att["vector_column"])
    model, enc = resolve(backend, plpy, att["model"])
    check_dim(model, enc, t, att["vector_column"], vcol)
    return _embed_literals(backend, plpy, model, enc, texts)


def detach(backend: Backend, plpy, tbl, vector_name) -> bool:
    t = table(plpy, tbl)
    att = attachment(plpy, t, vector_name)
    if att is None:
        return False
    if not t.owner_ok:
        fail(f"permission denied to detach {t.sql}", sqlstate="42501",
             detail="Only the owner of a table (or a member of its owning role) detaches it.",
             hint=f"Ask the owner of {t.sql} to run detach_embedding.")
    plpy.execute(f"SELECT fastembed_ext._uninstall_attachment({int(att['id'])}, {t.oid}::pg_catalog.oid::pg_catalog.regclass)")
    plpy.execute(f"SELECT fastembed_ext._drop_queue({int(att['id'])})")
    if att.get("chunk_table") is not None:  # derived data of the attachment
        plpy.execute(f"DROP TABLE IF EXISTS {att['chunk_table']}")
    plpy.execute(f"DELETE FROM fastembed_ext.attachments WHERE id = {int(att['id'])}")
    return True


# --------------------------------------------------------------------------- index and search


def _bounded(name: str, value: int | None, bounds: tuple[int, int]) -> int:
    if value is None:
        fail(f"{name} must not be NULL", sqlstate="22004", detail=f"NULL is not a value of {name}.",
             hint=f"Pass {name} between {bounds[0]} and {bounds[1]}, or leave it out for the default.")
    if not bounds[0] <= value <= bounds[1]:
        fail(f"{name} = {value} is out of range", sqlstate="22023", detail=_BOUNDS,
             hint=f"{name} must be between {bounds[0]} and {bounds[1]}.")
    return value


def _model_for(backend: Backend, plpy, t: Table, vector_name: str, col: dict[str, Any], model_name: str | None):
    made_by = column_model(plpy, t, vector_name, col)
    if model_name is not None and made_by is not None and model_name != made_by:
        fail(
            f'column "{vector_name}" of {t.sql} holds vectors of model "{made_by}", not "{model_name}"',
            sqlstate="22023",
            detail="Vectors of two models are not comparable.",
            hint=f"Leave the model out, or pass '{made_by}'.",
        )
    if model_name is None and made_by is None:
        fail(
            f'the database does not know which model made the vectors of column "{vector_name}" of {t.sql}',
            sqlstate="22023",
            detail="The column is neither attached (attach_embedding) nor generated by embed() with a constant model.",
            hint="Pass the model that made them (model => 'name'), or attach the column: "
            "attach_embedding(..., mode => 'manual') records it.",
        )
    return resolve(backend, plpy, model_name or made_by)


def _index_name(plpy, t: Table, vector_name: str) -> str:
    """``<table>_<column>_hnsw``, shortened with a hash to fit 63 bytes, numbered if taken."""
    relname = plpy.execute(f"SELECT relname, relnamespace FROM pg_catalog.pg_class WHERE oid = {t.oid}")[0]
    base = _fit_name(relname["relname"], vector_name, "hnsw")
    taken = {
        r["relname"]
        for r in plpy.execute(
            f"SELECT relname FROM pg_catalog.pg_class WHERE relnamespace = {int(relname['relnamespace'])} "
            f"AND relname LIKE {plpy.quote_literal(base[:50].replace('_', chr(92) + '_') + '%')}"
        )
    }
    name, n = base, 1
    while name in taken:
        suffix = f"_{n}"
        name = base.encode()[: 63 - len(suffix)].decode(errors="ignore") + suffix
        n += 1
    return name


def create_index(backend: Backend, plpy, tbl, vector_name, model_name, m, ef_construction) -> str:
    t = table(plpy, tbl)
    m = _bounded("m", m, HNSW_M)
    ef_construction = _bounded("ef_construction", ef_construction, HNSW_EF_CONSTRUCTION)
    if ef_construction < 2 * m:
        fail(f"ef_construction = {ef_construction} is less than 2 * m = {2 * m}", sqlstate="22023",
             detail=_BOUNDS, hint="pgvector needs ef_construction >= 2 * m.")
    col = vector_column(plpy, t, vector_name, need_dim=True)
    if col["typmod"] > HNSW_MAX_DIMS[col["base"]]:
        fail(f"an HNSW index holds {col['base']} of at most {HNSW_MAX_DIMS[col['base']]} dimensions",
             sqlstate="54000", detail=f"Column \"{vector_name}\" has {col['typmod']}.", hint="Use halfvec (up to 4000 dimensions), or a model with fewer dimensions.")
    model, enc = _model_for(backend, plpy, t, vector_name, col, model_name)
    check_dim(model, enc, t, vector_name, col)
    opclass = _opclass(col, enc)
    existing = plpy.execute(
        "SELECT i.indexrelid::pg_catalog.regclass::text AS name FROM pg_catalog.pg_index i "
        "JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid JOIN pg_catalog.pg_am am ON am.oid = ic.relam "
        "JOIN pg_catalog.pg_opclass oc ON oc.oid = i.indclass[0] "
        f"WHERE i.indrelid = {t.oid} AND am.amname = 'hnsw' AND i.indnatts = 1 AND i.indkey[0] = {int(col['attnum'])} "
        f"AND oc.opcname = {plpy.quote_literal(opclass)}"
    )
    if existing:
        return existing[0]["name"]
    name = _index_name(plpy, t, vector_name)
    plpy.execute(
        f"CREATE INDEX {plpy.quote_ident(name)} ON {t.sql} USING hnsw "
        f"({plpy.quote_ident(vector_name)} {_vector_schema(plpy)}.{opclass}) "
        f"WITH (m = {m}, ef_construction = {ef_construction})"
    )
    return plpy.execute(
        "SELECT c.oid::pg_catalog.regclass::text AS name FROM pg_catalog.pg_class c "
        f"WHERE c.relname = {plpy.quote_literal(name)} AND c.relnamespace = "
        f"(SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = {t.oid})"
    )[0]["name"]


def search(backend: Backend, plpy, tbl, vector_name, query, k, model_name) -> list[tuple[str, float]]:
    if query is None:
        return []
    t = table(plpy, tbl)
    k = _bounded("k", k, SEARCH_K)
    col = vector_column(plpy, t, vector_name)
    att = attachment(plpy, t, vector_name)
    key = att["key_column"] if att else None
    if key is None:
        primary = plpy.execute(
            "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
            f"ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] WHERE i.indrelid = {t.oid} "
            "AND i.indisprimary AND i.indnatts = 1"
        )
        if not primary:
            fail(f"{t.sql} has no single-column primary key to return", sqlstate="42P10",
                 detail="search returns each row's key.", hint="Give the table a primary key, or attach the column with key_column => '...'.")
        key = primary[0]["attname"]
    model, enc = _model_for(backend, plpy, t, vector_name, col, model_name)
    check_dim(model, enc, t, vector_name, col)
    vector_schema = _vector_schema(plpy)
    op = "<=>" if enc.similarity == "cosine" else "<#>"

    def score(v: str) -> str:  # larger is nearer, for either operator
        return (f"1 - ({v} OPERATOR({vector_schema}.<=>) $1)" if op == "<=>"
                else f"-({v} OPERATOR({vector_schema}.<#>) $1)")

    if att is not None and att.get("chunk_table") is not None:
        # A chunked attachment: the best chunks through their HNSW index, a few per document
        # wanted, then each document's best chunk.
        sql = (f"SELECT b.key::text AS key, pg_catalog.max(b.score)::float8 AS score FROM ("
               f"SELECT ch.key, ({score('ch.embedding')}) AS score FROM {att['chunk_table']} ch "
               f"ORDER BY ch.embedding OPERATOR({vector_schema}.{op}) $1 LIMIT $2 * {CHUNKS_PER_HIT}) b "
               "GROUP BY b.key ORDER BY 2 DESC LIMIT $2")
    else:
        c, kq = plpy.quote_ident(vector_name), plpy.quote_ident(key)
        sql = (f"SELECT t.{kq}::text AS key, ({score('t.' + c)})::float8 AS score FROM {t.sql} t "
               f"ORDER BY t.{c} OPERATOR({vector_schema}.{op}) $1 LIMIT $2")
    plan = plpy.prepare(sql, [col["typname"], "bigint"])
    (vector,) = backend.literals(plpy, model, enc, [query])
    return [(r["key"], r["score"]) for r in plpy.execute(plan, [vector, k])]
