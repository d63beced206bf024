"""Bulk ingest: embed in this process, in batches, and write rows with binary COPY (psycopg 3).

The vectors equal what ``embed(text, model)`` gives inside the server: the same engine loads the
same model files (a registered name is looked up in the database's registry).
"""

from __future__ import annotations

import csv
import json
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

import fastembed_ext

from .errors import PgError

BATCH = 256  # texts per encode call (the engine batches further by its own token budget)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def read_records(path: Path, column: str) -> Iterator[dict[str, str | None]]:
    """Rows from a file: ``.jsonl`` (one object per line), ``.csv`` (with a header) or plain text
    (one document per non-empty line, into ``column``)."""
    suffix = path.suffix.lower()
    with open(path, encoding="utf-8", newline="") as f:
        if suffix in (".jsonl", ".ndjson"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    obj = json.loads(line)
                    if not isinstance(obj, dict) or column not in obj:
                        raise PgError(f"{path}:{n}: expected a JSON object with a {column!r} field")
                    yield {k: None if v is None else str(v) for k, v in obj.items()}
        elif suffix == ".csv":
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise PgError(f"{path}: no {column!r} column in the CSV header {reader.fieldnames}")
            yield from reader
        else:
            for line in f:
                if line.strip():
                    yield {column: line.rstrip("\n")}


def resolve_model(conn: psycopg.Connection, model: str | None) -> tuple[str, str]:
    """(name, path) of ``model``: a name registered in the database, a path, or the default."""
    if model is None:
        model = conn.execute("SELECT current_setting('fastembed_ext.default_model', true)").fetchone()[0]
        if not model:
            raise PgError("no --model given and the database has no fastembed_ext.default_model")
    if "/" in model or Path(model).exists():
        return model, model
    row = conn.execute("SELECT path FROM fastembed_ext.model_registry WHERE name = %s", (model,)).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM fastembed_ext.model_registry ORDER BY 1")]
        raise PgError(f"unknown model {model!r}; registered: {', '.join(names) or 'none'}")
    return model, row[0]


def _copy_row(values: list[bytes | None]) -> bytes:
    parts = [struct.pack(">h", len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(struct.pack(">i", len(v)))
            parts.append(v)
    return b"".join(parts)


def vector_binary(v: np.ndarray) -> bytes:
    """pgvector's binary form: int16 dim, int16 unused, dim big-endian float32."""
    return struct.pack(">hh", v.shape[0], 0) + v.astype(">f4", copy=False).tobytes()


def _batches(records: Iterable[dict], n: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for r in records:
        batch.append(r)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch


def ingest(
    dsn: str,
    path: str | Path,
    table: str,
    column: str,
    *,
    model: str | None = None,
    vector_column: str = "embedding",
    batch_size: int = BATCH,
    progress: bool = True,
    log=print,
) -> int:
    """Embed every record of ``path`` and COPY it into ``table`` (created when absent, with a
    bigserial key, ``column`` text, the file's other fields as text and ``vector_column``)."""
    path = Path(path)
    first = next(read_records(path, column), None)
    if first is None:
        raise PgError(f"{path} holds no records")
    fields = [column] + [k for k in first if k != column]
    with psycopg.connect(dsn) as conn:
        name, model_path = resolve_model(conn, model)
        enc = fastembed_ext.Encoder(model_path)
        exists = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None
        if not exists:
            cols = [sql.SQL("id bigserial PRIMARY KEY")]
            cols += [sql.SQL("{} text").format(sql.Identifier(f)) for f in fields]
            cols.append(sql.SQL("{} vector({})").format(sql.Identifier(vector_column), sql.Literal(enc.dim)))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(*table.split(".")), sql.SQL(", ").join(cols)))
            log(f"created table {table} ({', '.join(fields)}, {vector_column} vector({enc.dim}))")
        else:
            dims = conn.execute(
                "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
                (table, vector_column),
            ).fetchone()
            if dims is None:
                raise PgError(f"table {table} has no column {vector_column!r}")
            if dims[0] > 0 and dims[0] != enc.dim:
                raise PgError(f"model {name!r} makes {enc.dim}-dimensional vectors but {table}.{vector_column} is vector({dims[0]})")
        total = None
        if progress:
            total = sum(1 for _ in read_records(path, column))
        copy_cols = sql.SQL(", ").join(sql.Identifier(c) for c in [*fields, vector_column])
        stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(*table.split(".")), copy_cols)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=f"Ingesting into {table}", unit="doc")
        n = 0
        with conn.cursor() as cur, cur.copy(stmt) as cp:
            cp.write(_COPY_HEADER)
            for batch in _batches(read_records(path, column), batch_size):
                texts = [r.get(column) for r in batch]
                idx = [i for i, t in enumerate(texts) if t is not None]
                vecs = enc.encode([texts[i] for i in idx]) if idx else np.empty((0, enc.dim), np.float32)
                vec_of = dict(zip(idx, vecs))
                out = []
                for i, r in enumerate(batch):
                    vals: list[bytes | None] = [None if r.get(f) is None else r[f].encode() for f in fields]
                    vals.append(vector_binary(vec_of[i]) if i in vec_of else None)
                    out.append(_copy_row(vals))
                cp.write(b"".join(out))
                n += len(batch)
                if bar is not None:
                    bar.update(len(batch))
            cp.write(_COPY_TRAILER)
        if bar is not None:
            bar.close()
        conn.commit()
    log(f"ingested {n} rows into {table} with model {name}")
    return n
