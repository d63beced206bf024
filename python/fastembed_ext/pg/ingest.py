"""``fastembed-ext ingest``: embed a file's texts in this process and write them with binary COPY.

Safe to rerun and all-or-nothing:

* every record is read and checked before anything is embedded or written; a bad record (not a
  JSON object, no text field, a NUL byte PostgreSQL cannot store, a duplicate id, a vector of the
  wrong width) is named by its line, and either stops the run before any work or, with
  ``rejects=``, goes to a reject file while the rest is ingested;
* the table is created, filled and its model recorded in one transaction;
* with ``id_field`` rows are upserted by that field, so a second run replaces instead of adding;
  without it, a table that already has rows is refused unless ``append=True``;
* records that already carry a vector (``fastembed-ext encode``'s JSON lines) are written as they
  are;
* the model is recorded (``attach_embedding(..., mode => 'manual')``), so ``search`` and
  ``create_embedding_index`` use the same one, and a second ingest with another model is refused.

The vectors equal what ``embed(text, model)`` gives inside the server: the same engine loads the
same bundle, pinned to the fingerprint the database registered.
"""

from __future__ import annotations

import csv
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

import fastembed_ext

from .client import connect, error_text
from .errors import PgError

BATCH = 256  # texts per encode call (the engine batches further by its own token budget)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_SHOWN_REJECTS = 5


@dataclass
class Record:
    line: int
    fields: dict[str, str | None]
    vector: list[float] | None = None


@dataclass
class Reject:
    line: int
    reason: str
    raw: str


@dataclass
class IngestReport:
    table: str = ""
    created: bool = False
    rows: int = 0
    embedded: int = 0
    rejected: list[Reject] = field(default_factory=list)
    model: str | None = None
    unrecorded: bool = False  # the model could not be recorded (not the table's owner)
    server_embedded: bool = False  # an attached table: its trigger embedded the rows


def _raw_records(path: Path, column: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, raw text, parsed value or an error string) of each record of the file."""
    suffix = path.suffix.lower()
    try:
        f = open(path, encoding="utf-8", newline="")
    except OSError as exc:
        raise PgError(f"{path}: {exc.strerror or exc}") from None
    with f:
        try:
            if suffix in (".jsonl", ".ndjson"):
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            yield n, line.rstrip("\n"), json.loads(line)
                        except json.JSONDecodeError as exc:
                            yield n, line.rstrip("\n"), f"not valid JSON ({exc.msg} at column {exc.colno})"
            elif suffix == ".csv":
                reader = csv.DictReader(f)
                if column not in (reader.fieldnames or []):
                    raise PgError(f"{path}: no {column!r} column in the CSV header {reader.fieldnames}")
                for row in reader:
                    yield reader.line_num, ",".join(v or "" for v in row.values()), row
            else:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        yield n, line.rstrip("\n"), {column: line.rstrip("\n").rstrip("\r")}
        except UnicodeDecodeError as exc:
            raise PgError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _check(raw: Any, column: str, vector_column: str, id_field: str | None) -> tuple[dict, list | None] | str:
    """The record's text fields and vector, or why it cannot be stored."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, dict):
        return f"expected a JSON object, got {type(raw).__name__}"
    if column not in raw:
        return f"no {column!r} field"
    if raw[column] is not None and not isinstance(raw[column], str):
        return f"field {column!r} is {type(raw[column]).__name__}, not a string"
    vector = raw.get(vector_column)
    if vector is not None and not (
        isinstance(vector, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector)
    ):
        return f"field {vector_column!r} is not a list of finite numbers"
    if id_field is not None and raw.get(id_field) in (None, ""):
        return f"no {id_field!r} (the --id-field)"
    fields: dict[str, str | None] = {}
    for key, value in raw.items():
        if key == vector_column:
            continue
        text = None if value is None else value if isinstance(value, str) else json.dumps(value)
        if text is not None and "\x00" in text:
            return f"field {key!r} holds a NUL byte, which PostgreSQL text cannot store"
        fields[key] = text
    return fields, vector


def read_records(
    path: str | Path, column: str, *, vector_column: str = "embedding", id_field: str | None = None,
) -> tuple[list[Record], list[Reject]]:
    """Every record of ``path`` (.jsonl, .csv, or text with one document per line), checked."""
    path = Path(path)
    records: list[Record] = []
    rejects: list[Reject] = []
    seen_ids: dict[str, int] = {}
    for line, raw_text, parsed in _raw_records(path, column):
        checked = _check(parsed, column, vector_column, id_field)
        if isinstance(checked, str):
            rejects.append(Reject(line, checked, raw_text))
            continue
        fields, vector = checked
        if id_field is not None:
            key = fields[id_field]
            if key in seen_ids:
                rejects.append(Reject(line, f"{id_field} {key!r} already on line {seen_ids[key]}", raw_text))
                continue
            seen_ids[key] = line
        records.append(Record(line, fields, vector))
    return records, rejects


def _copy_row(values: list[bytes | None]) -> bytes:
    parts = [struct.pack(">h", len(values))]
    for v in values:
        if v is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(struct.pack(">i", len(v)))
            parts.append(v)
    return b"".join(parts)


def vector_binary(v: np.ndarray, kind: str = "vector") -> bytes:
    """pgvector's binary form: int16 dim, int16 unused, dim big-endian float32 (halfvec: float16)."""
    dtype = ">f2" if kind == "halfvec" else ">f4"
    return struct.pack(">hh", v.shape[0], 0) + np.asarray(v).astype(dtype).tobytes()


def _relation(conn: psycopg.Connection, table: str) -> int | None:
    row = conn.execute("SELECT pg_catalog.to_regclass(%s)::oid", (table,)).fetchone()
    return row[0] if row else None


def _qualified(conn: psycopg.Connection, oid: int) -> sql.Composable:
    nsp, rel = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,)
    ).fetchone()
    return sql.Identifier(nsp, rel)


def _model(conn: psycopg.Connection, model: str | None) -> dict[str, Any]:
    if model is not None and "/" in model:
        raise PgError(f"--model {model!r}: ingest records the model by its registered name; an admin "
                      f"registers the bundle with SELECT fastembed_ext.register_model('name', '{model}')")
    row = conn.execute(
        "SELECT name, path, fingerprint, dim FROM fastembed_ext.models WHERE "
        + ("name = %s" if model else "is_default"), (model,) if model else ()
    ).fetchone()
    if row is None:
        names = [r[0] for r in conn.execute("SELECT name FROM fastembed_ext.models ORDER BY 1")]
        if model is None:
            raise PgError("no --model given and the database has no default model "
                          f"(registered: {', '.join(names) or 'none'})")
        raise PgError(f"unknown model {model!r}; registered: {', '.join(names) or 'none'}")
    return dict(zip(("name", "path", "fingerprint", "dim"), row))


def ingest(
    dsn: str,
    path: str | Path,
    table: str,
    column: str,
    *,
    model: str | None = None,
    vector_column: str = "embedding",
    id_field: str | None = None,
    append: bool = False,
    rejects: str | Path | None = None,
    threads: int | None = None,
    batch_size: int = BATCH,
    progress: bool = True,
    log=print,
) -> IngestReport:
    """Embed every record of ``path`` and write it into ``table`` (created when absent, with a
    key, ``column`` and the file's other fields as text, and ``vector_column``)."""
    records, bad = read_records(path, column, vector_column=vector_column, id_field=id_field)
    if bad and rejects is None:
        shown = "; ".join(f"line {r.line}: {r.reason}" for r in bad[:_SHOWN_REJECTS])
        more = f" (and {len(bad) - _SHOWN_REJECTS} more)" if len(bad) > _SHOWN_REJECTS else ""
        raise PgError(f"{path}: {len(bad)} bad record(s), nothing ingested: {shown}{more}. "
                      "Fix them, or pass --rejects FILE to ingest the rest and write them there")
    if not records:
        raise PgError(f"{path} holds no records to ingest")
    fields = [column] + sorted({k for r in records for k in r.fields} - {column})
    report = IngestReport(rejected=bad)
    try:
        with connect(dsn) as conn:
            _ingest(conn, report, records, table, column, fields, model, vector_column, id_field,
                    append, threads, batch_size, progress)
    except psycopg.Error as exc:
        raise PgError(error_text(exc, one_line=True)) from None
    if bad:
        with open(rejects, "w", encoding="utf-8") as out:
            for r in bad:
                out.write(json.dumps({"line": r.line, "reason": r.reason, "record": r.raw}, ensure_ascii=False) + "\n")
        log(f"rejected {len(bad)} record(s), written to {rejects}")
    if report.unrecorded:
        log(f"note: the model was not recorded for {report.table}.{vector_column}: only the table's "
            "owner records it (search will need --model)")
    if report.created:
        log(f"created table {report.table} ({', '.join(fields)}, {vector_column})")
    verb = "upserted" if id_field else "ingested"
    how = ("embedded by the table's trigger" if report.server_embedded else
           f"{report.embedded} embedded here, {report.rows - report.embedded} with vectors given")
    log(f"{verb} {report.rows} rows into {report.table} with model {report.model} ({how})")
    return report


def _ingest(conn, report, records, table, column, fields, model, vector_column, id_field, append,
            threads, batch_size, progress) -> None:
    m = _model(conn, model)
    report.model = m["name"]
    oid = _relation(conn, table)
    if oid is None:
        parts = conn.execute("SELECT pg_catalog.parse_ident(%s)", (table,)).fetchone()[0]
        name = sql.Identifier(*parts)
        cols = [sql.SQL("{} text PRIMARY KEY").format(sql.Identifier(id_field)) if id_field
                else sql.SQL("id bigserial PRIMARY KEY")]
        cols += [sql.SQL("{} text").format(sql.Identifier(f)) for f in fields if f != id_field]
        cols.append(sql.SQL("{} vector({})").format(sql.Identifier(vector_column), sql.Literal(m["dim"])))
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(name, sql.SQL(", ").join(cols)))
        oid = _relation(conn, table)
        report.created = True
    qualified = _qualified(conn, oid)
    report.table = conn.execute("SELECT %s::oid::regclass::text", (oid,)).fetchone()[0]
    kinds = dict(conn.execute(
        "SELECT a.attname, t.typname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t "
        "ON t.oid = a.atttypid WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped", (oid,)
    ).fetchall())
    missing = [c for c in [*fields, vector_column] if c not in kinds]
    if missing:
        raise PgError(f"table {report.table} has no column(s) {', '.join(missing)} for the file's fields")
    dims = conn.execute("SELECT atttypmod FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attname = %s",
                        (oid, vector_column)).fetchone()[0]
    if dims > 0 and dims != m["dim"]:
        raise PgError(f"model {m['name']!r} makes {m['dim']}-dimensional vectors but "
                      f"{report.table}.{vector_column} is {kinds[vector_column]}({dims})")
    recorded = conn.execute("SELECT model, mode FROM fastembed_ext.attachments WHERE tbl = %s::oid::regclass "
                            "AND vector_column = %s", (oid, vector_column)).fetchone()
    if recorded and recorded[0] != m["name"]:
        raise PgError(f"{report.table}.{vector_column} holds vectors of model {recorded[0]!r}; ingesting "
                      f"with {m['name']!r} would mix two models in one column")
    if not report.created and not id_field and not append:
        if conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(qualified)).fetchone()[0]:
            raise PgError(f"{report.table} already has rows: pass --id-field to upsert by a field, or "
                          "--append to add these rows to them")
    for r in records:
        if r.vector is not None and len(r.vector) != m["dim"]:
            raise PgError(f"line {r.line}: its {vector_column} has {len(r.vector)} numbers, the "
                          f"model {m['name']!r} makes {m['dim']}")

    if not recorded:  # first, so that a table it cannot be recorded for fails before any work
        try:
            with conn.transaction():
                conn.execute(
                    "SELECT fastembed_ext.attach_embedding(%s::oid::regclass, %s, %s, %s, %s, mode => 'manual')",
                    (oid, column, vector_column, m["name"], id_field))
        except psycopg.errors.InsufficientPrivilege:
            report.unrecorded = True  # only the table's owner records its model
    # an attached table embeds the rows itself as they are written
    server_embeds = recorded is not None and recorded[1] == "sync"
    encoder = None if server_embeds else fastembed_ext.Encoder(m["path"], threads=threads, fingerprint=m["fingerprint"])
    target = qualified
    if id_field:
        conn.execute(sql.SQL("CREATE TEMP TABLE fastembed_ext_ingest (LIKE {}) ON COMMIT DROP").format(qualified))
        target = sql.Identifier("fastembed_ext_ingest")
    copy_cols = sql.SQL(", ").join(sql.Identifier(c) for c in [*fields, vector_column])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(records), desc=f"Ingesting into {report.table}", unit="doc")
    with conn.cursor() as cur, cur.copy(
        sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, copy_cols)
    ) as cp:
        cp.write(_COPY_HEADER)
        for start in range(0, len(records), batch_size):
            batch = records[start : start + batch_size]
            todo = [i for i, r in enumerate(batch)
                    if encoder is not None and r.vector is None and r.fields.get(column) is not None]
            vectors = encoder.encode([batch[i].fields[column] for i in todo]) if todo else []
            computed = dict(zip(todo, vectors))
            report.embedded += len(todo)
            out = []
            for i, r in enumerate(batch):
                vals: list[bytes | None] = [None if r.fields.get(f) is None else r.fields[f].encode() for f in fields]
                vector = computed.get(i) if r.vector is None else np.asarray(r.vector, np.float32)
                vals.append(None if vector is None else vector_binary(vector, kinds[vector_column]))
                out.append(_copy_row(vals))
            cp.write(b"".join(out))
            if bar is not None:
                bar.update(len(batch))
        cp.write(_COPY_TRAILER)
    if bar is not None:
        bar.close()
    if id_field:
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in [*fields, vector_column] if c != id_field
        )
        conn.execute(sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM fastembed_ext_ingest "
                             "ON CONFLICT ({k}) DO UPDATE SET {u}").format(
            t=qualified, c=copy_cols, k=sql.Identifier(id_field), u=updates))
    report.rows = len(records)
    report.server_embedded = server_embeds
    conn.commit()
