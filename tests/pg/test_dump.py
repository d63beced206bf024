"""pg_dump | psql, and pg_dump -Fc | pg_restore -j 2, into fresh databases: every row, the same
vectors, the triggers attached, the registry and the default model intact.

The database has what makes a restore hard: generated embed() columns (recomputed as their rows
are restored) in a schema that sorts before fastembed_ext and in public, one through the default
model; an attached table in a third schema, with a dot-product model; HNSW indexes.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
from conftest import connect
from pg_helpers import assert_same_vectors

from fastembed_ext.pg import cluster
from fastembed_ext.pg.worker import WorkerOptions, run_worker

TABLES = ("app.gen", "public.gen_default", "zz.att")


def _snapshot(c) -> dict:
    return {
        "rows": {t: c.execute(f"SELECT id, body, embedding::real[] FROM {t} ORDER BY id").fetchall() for t in TABLES},
        "models": c.execute("SELECT name, dim, similarity, path, fingerprint, is_default FROM fastembed_ext.models "
                            "ORDER BY name").fetchall(),
        "attachments": c.execute("SELECT tbl::text, vector_column, source_column, key_column, model, mode "
                                 "FROM fastembed_ext.attachments ORDER BY 1").fetchall(),
        "indexes": c.execute("SELECT indexdef FROM pg_indexes WHERE indexdef LIKE '%hnsw%' ORDER BY 1").fetchall(),
    }


def _run(*args: str, **kw) -> None:
    env = dict(os.environ, PGUSER=cluster.server_user())
    result = subprocess.run([str(cluster.PG_BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, **kw)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dump_and_restore(new_database, pg_cluster, pg_root, minilm_bundle_path, dot_bundle_path, encoder, dot_encoder):
    src = new_database("fe_dump_src")
    with connect(src) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
        c.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm_bundle_path,))
        c.execute("SELECT fastembed_ext.register_model('dot', %s)", (dot_bundle_path,))
        c.execute("SELECT fastembed_ext.set_default_model('minilm')")
        c.execute("CREATE SCHEMA app")
        c.execute("CREATE SCHEMA zz")
        c.execute("CREATE TABLE app.gen (id serial PRIMARY KEY, body text, "
                  "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)")
        c.execute("CREATE TABLE public.gen_default (id serial PRIMARY KEY, body text, "
                  "embedding vector(384) GENERATED ALWAYS AS (embed(body)) STORED)")
        c.execute("CREATE TABLE zz.att (id int PRIMARY KEY, body text, embedding vector(32))")
        c.execute("SELECT fastembed_ext.attach_embedding('zz.att', 'body', 'embedding', 'dot')")
        for t in TABLES:
            column = "id, body" if t == "zz.att" else "body"
            values = "i, " if t == "zz.att" else ""
            c.execute(f"INSERT INTO {t} ({column}) SELECT {values}'{t} row ' || i FROM generate_series(1, 25) i")
        c.execute("SELECT fastembed_ext.create_embedding_index('app.gen', 'embedding')")
        c.execute("SELECT fastembed_ext.create_embedding_index('zz.att', 'embedding')")
        # an async, chunked attachment with work still queued: the dump carries the queue
        c.execute("CREATE TABLE zz.queued (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('zz.queued', 'body', 'embedding', 'minilm', "
                  "mode => 'async', chunking => fastembed_ext.token_windows(8, 2))")
        c.execute("INSERT INTO zz.queued SELECT i, 'a queued row, number ' || i || ', long enough for two windows' "
                  "FROM generate_series(1, 12) i")
        want = _snapshot(c)
    assert all(len(rows) == 25 for rows in want["rows"].values())

    host = ["-h", str(pg_cluster.socket_dir), "-p", str(pg_cluster.port)]
    plain, custom = pg_root / "fe.sql", pg_root / "fe.dump"
    _run("pg_dump", *host, "-f", str(plain), "fe_dump_src")
    _run("pg_dump", *host, "-Fc", "-f", str(custom), "fe_dump_src")
    restored = {"plain": new_database("fe_restore_plain"), "parallel": new_database("fe_restore_j2")}
    _run("psql", *host, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(plain), "fe_restore_plain")
    _run("pg_restore", *host, "-j", "2", "--exit-on-error", "-d", "fe_restore_j2", str(custom))

    for how, dsn in restored.items():
        with connect(dsn) as c:
            got = _snapshot(c)
            assert got == want, how
            # the triggers are attached, the generated columns and the default model work
            c.execute("INSERT INTO zz.att VALUES (100, 'written after the restore')")
            c.execute("INSERT INTO public.gen_default (body) VALUES ('written after the restore')")
            vec = c.execute("SELECT embedding::real[] FROM zz.att WHERE id = 100").fetchone()[0]
            assert_same_vectors(np.asarray(vec, np.float32), dot_encoder.encode("written after the restore"), atol=1e-5)
            vec = c.execute("SELECT embedding::real[] FROM public.gen_default WHERE id = 26").fetchone()[0]
            assert_same_vectors(np.asarray(vec, np.float32), encoder.encode("written after the restore"))
            c.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in c.execute(
                "EXPLAIN SELECT id FROM zz.att ORDER BY embedding <#> embed('row', 'dot') LIMIT 3"))
            assert "Index Scan using att_embedding_hnsw" in plan, how
            # the queue came along, and a worker drains it in the restored database
            assert c.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'zz.queued'::regclass"
                             ).fetchone() == (12,), how
        report = run_worker(WorkerOptions(dsn=dsn, once=True), log=lambda line: None)
        assert report.embedded == 12, how
        with connect(dsn) as c:
            rows = c.execute("SELECT body, embedding::real[] FROM zz.queued ORDER BY id").fetchall()
            assert_same_vectors(np.asarray([v for _, v in rows], np.float32), encoder.encode([b for b, _ in rows]),
                                atol=1e-5)
            assert c.execute("SELECT count(DISTINCT key), min(chunk), max(chunk) > 0 FROM zz.queued_embedding_chunks"
                             ).fetchone() == (12, 0, True), how


def test_drop_extension_names_what_goes_with_it(new_database, minilm_bundle_path):
    d = new_database("fe_drop")
    with connect(d) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
        c.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm_bundle_path,))
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('notes', 'body', 'embedding', 'minilm')")
        import psycopg

        with pytest.raises(psycopg.errors.DependentObjectsStillExist) as ei:
            c.execute("DROP EXTENSION fastembed_ext")
        detail = ei.value.diag.message_detail
        assert "trigger fastembed_ext_embedding_insert on table notes" in detail
        assert 'function fastembed_ext."model:minilm"()' in detail
        notices: list[str] = []
        c.add_notice_handler(lambda diag: notices.append(diag.message_detail or diag.message_primary))
        c.execute("DROP EXTENSION fastembed_ext CASCADE")
        assert any("trigger fastembed_ext_embedding_update on table notes" in n for n in notices)
        c.execute("INSERT INTO notes VALUES (1, 'the table stays, its vectors are no longer kept')")
