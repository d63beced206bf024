"""`fastembed-ext ingest` and `search` as a user runs them (a separate process), and table and
column names as SQL writes them: schema-qualified, mixed case, quoted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pg_helpers import assert_same_vectors
from test_cli import assert_one_line_error, run

DOCS = [f"document {i} is about {t}" for i, t in enumerate(["baking bread", "train travel", "tax law",
                                                          "tigers", "tea"] * 120)]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def workdir(tmp_path, conn):
    yield tmp_path
    conn.execute('DROP SCHEMA IF EXISTS "Ingest Space" CASCADE')
    conn.execute("DROP TABLE IF EXISTS ing_docs, ing_up, ing_vec, ing_att")


def test_a_bad_record_stops_the_run_before_any_work(dsn, conn, workdir):
    rows = [{"body": text} for text in DOCS]
    rows[598] = {"body": "a NUL byte \x00 in line 599, near the end"}
    src = _jsonl(workdir / "docs.jsonl", rows)
    result = run("ingest", str(src), "--table", "ing_docs", "--column", "body", "--no-progress", "--dsn", dsn)
    assert_one_line_error(result, 1, "1 bad record(s), nothing ingested", "line 599: field 'body' holds a NUL byte",
                          "--rejects FILE")
    assert conn.execute("SELECT to_regclass('ing_docs')").fetchone() == (None,)  # no table was created

    rejects = workdir / "rejects.jsonl"
    result = run("ingest", str(src), "--table", "ing_docs", "--column", "body", "--rejects", str(rejects),
                 "--no-progress", "--threads", "2", "--dsn", dsn)
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "rejected 1 record(s)" in out and "ingested 599 rows into ing_docs with model minilm" in out
    (reject,) = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert reject["line"] == 599 and "NUL" in reject["reason"]
    assert conn.execute("SELECT count(*), count(embedding) FROM ing_docs").fetchone() == (599, 599)
    # the model is recorded: search uses it, and another one is refused
    assert conn.execute("SELECT model, mode FROM fastembed_ext.attachments WHERE tbl = 'ing_docs'::regclass"
                        ).fetchone() == ("minilm", "manual")
    hits = run("search", "fresh loaves from the oven", "--table", "ing_docs", "-k", "3", "--dsn", dsn)
    assert hits.returncode == 0, hits.stderr.decode()
    assert all("baking bread" in line for line in hits.stdout.decode().splitlines())
    assert_one_line_error(run("search", "x", "--table", "ing_docs", "--model", "dot", "--dsn", dsn), 1,
                          'holds vectors of model "minilm", not "dot"', "Leave the model out")
    # a second run would add duplicates: refused unless asked for
    again = run("ingest", str(src), "--table", "ing_docs", "--column", "body", "--rejects", str(rejects),
                "--no-progress", "--dsn", dsn)
    assert_one_line_error(again, 1, "ing_docs already has rows", "--id-field", "--append")
    assert_one_line_error(run("ingest", str(src), "--table", "ing_docs", "--column", "body", "--model", "dot",
                              "--rejects", str(rejects), "--append", "--no-progress", "--dsn", dsn), 1,
                          "makes 32-dimensional vectors")


def test_upsert_by_id_field(dsn, conn, workdir, encoder):
    src = _jsonl(workdir / "a.jsonl", [{"id": f"k{i}", "body": f"first version {i}", "lang": "en"} for i in range(10)])
    for _ in range(2):
        result = run("ingest", str(src), "--table", "ing_up", "--column", "body", "--id-field", "id",
                     "--no-progress", "--dsn", dsn)
        assert result.returncode == 0, result.stderr.decode()
    assert conn.execute("SELECT count(*) FROM ing_up").fetchone() == (10,)
    _jsonl(src, [{"id": "k3", "body": "second version", "lang": "fr"}, {"id": "k99", "body": "new", "lang": "de"}])
    assert run("ingest", str(src), "--table", "ing_up", "--column", "body", "--id-field", "id",
               "--no-progress", "--dsn", dsn).returncode == 0
    rows = {k: (b, lang, v) for k, b, lang, v in conn.execute("SELECT id, body, lang, embedding::real[] FROM ing_up")}
    assert len(rows) == 11 and rows["k3"][:2] == ("second version", "fr")
    assert_same_vectors(rows["k3"][2], encoder.encode("second version"))
    # duplicate ids within one file are named, not silently collapsed
    _jsonl(src, [{"id": "a", "body": "x"}, {"id": "a", "body": "y"}])
    assert_one_line_error(run("ingest", str(src), "--table", "ing_up", "--column", "body", "--id-field", "id",
                              "--no-progress", "--dsn", dsn), 1, "line 2: id 'a' already on line 1")


def test_encode_output_is_ingested_as_it_is(dsn, conn, workdir, minilm_bundle_path):
    texts = ["vectors computed elsewhere", "are written without embedding again"]
    encoded = run("encode", "-m", minilm_bundle_path, *texts)
    assert encoded.returncode == 0, encoded.stderr.decode()
    src = workdir / "vectors.jsonl"
    src.write_bytes(encoded.stdout)
    result = run("ingest", str(src), "--table", "ing_vec", "--column", "text", "--model", "minilm",
                 "--no-progress", "--dsn", dsn)
    assert result.returncode == 0, result.stderr.decode()
    assert "(0 embedded here, 2 with vectors given)" in result.stdout.decode()
    want = [json.loads(line)["embedding"] for line in encoded.stdout.decode().splitlines()]
    got = [v for (v,) in conn.execute("SELECT embedding::real[] FROM ing_vec ORDER BY index::int")]
    assert np.array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


def test_an_attached_table_embeds_the_rows_itself(dsn, conn, workdir, encoder):
    conn.execute("CREATE TABLE ing_att (id bigserial PRIMARY KEY, body text, embedding vector(384))")
    conn.execute("SELECT fastembed_ext.attach_embedding('ing_att', 'body', 'embedding', 'minilm')")
    src = _jsonl(workdir / "att.jsonl", [{"body": text} for text in DOCS[:30]])
    result = run("ingest", str(src), "--table", "ing_att", "--column", "body", "--no-progress", "--dsn", dsn)
    assert result.returncode == 0, result.stderr.decode()
    assert "(embedded by the table's trigger)" in result.stdout.decode()
    rows = conn.execute("SELECT body, embedding::real[] FROM ing_att ORDER BY id").fetchall()
    assert np.abs(np.asarray([v for _, v in rows], np.float32) - encoder.encode(DOCS[:30])).max() < 1e-5


def test_errors_are_one_line(dsn, conn, workdir):
    src = _jsonl(workdir / "d.jsonl", [{"body": "x"}])
    conn.execute("CREATE TABLE ing_docs (id int PRIMARY KEY, body text, "
                 "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)")
    dead = "host=/nonexistent port=1 dbname=x"
    for command in (["ingest", str(src), "--table", "t", "--column", "body"], ["search", "q", "--table", "t"]):
        assert_one_line_error(run(*command, "--dsn", dead), 1, f"cannot connect to {dead}: ")
    assert_one_line_error(run("ingest", str(src), "--table", "t", "--column", "body", "--model", "nope",
                              "--dsn", dsn), 1, "unknown model 'nope'; registered: dot, minilm")
    assert_one_line_error(run("ingest", str(workdir / "missing.jsonl"), "--table", "t", "--column", "body",
                              "--dsn", dsn), 1, "No such file")
    assert_one_line_error(run("search", "q", "--table", "no_such_table", "--dsn", dsn), 1,
                          "relation no_such_table does not exist")
    assert_one_line_error(run("search", "q", "--table", "ing_docs", "-k", "5000", "--dsn", dsn), 1,
                          "k = 5000 is out of range", "between 1 and 1000")


def test_quoted_schema_and_mixed_case_names(dsn, conn, workdir, encoder):
    """The same names through the CLI and through every SQL helper."""
    table = '"Ingest Space"."My Docs"'
    src = _jsonl(workdir / "m.jsonl", [{"Body Text": text} for text in DOCS[:20]])
    result = run("ingest", str(src), "--table", table, "--column", "Body Text", "--vector-column", "Vec",
                 "--no-progress", "--dsn", dsn)
    assert result.returncode == 1  # the schema does not exist yet: said on one line
    conn.execute('CREATE SCHEMA "Ingest Space"')
    result = run("ingest", str(src), "--table", table, "--column", "Body Text", "--vector-column", "Vec",
                 "--no-progress", "--dsn", dsn)
    assert result.returncode == 0, result.stderr.decode()
    assert conn.execute(f'SELECT count("Vec") FROM {table}').fetchone() == (20,)
    idx = conn.execute("SELECT fastembed_ext.create_embedding_index(%s, 'Vec')", (table,)).fetchone()[0]
    assert idx == '"Ingest Space"."My Docs_Vec_hnsw"'
    hits = run("search", "tigers", "--table", table, "--vector-column", "Vec", "-k", "2", "--dsn", dsn)
    assert hits.returncode == 0, hits.stderr.decode()
    assert all("tigers" in line for line in hits.stdout.decode().splitlines())

    conn.execute('CREATE TABLE "Ingest Space"."Attached" ("Key" int PRIMARY KEY, "Body" text, "Vec" halfvec(384))')
    conn.execute("""INSERT INTO "Ingest Space"."Attached" VALUES (1, 'Mixed case works')""")
    assert conn.execute("""SELECT fastembed_ext.attach_embedding('"Ingest Space"."Attached"', 'Body', 'Vec', 'minilm')"""
                        ).fetchone() == (1,)
    conn.execute("""INSERT INTO "Ingest Space"."Attached" VALUES (2, 'So do quoted names')""")
    got = conn.execute("""SELECT "Vec"::vector::real[] FROM "Ingest Space"."Attached" WHERE "Key" = 2""").fetchone()[0]
    assert_same_vectors(got, encoder.encode("So do quoted names").astype(np.float16), atol=0)
    assert conn.execute("""SELECT key FROM fastembed_ext.search('"Ingest Space"."Attached"', 'Vec', 'quoting', 1)"""
                        ).fetchone() == ("2",)


def test_index_names_are_unique(conn):
    conn.execute("DROP TABLE IF EXISTS a_b, a, ing_" + "x" * 50)
    conn.execute("CREATE TABLE a_b (id int PRIMARY KEY, c vector(384))")
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, b_c vector(384))")
    long = "ing_" + "x" * 50
    conn.execute(f"CREATE TABLE {long} (id int PRIMARY KEY, {'v' * 40}_one vector(384), {'v' * 40}_two vector(384))")
    names = [
        conn.execute("SELECT fastembed_ext.create_embedding_index('a_b', 'c', 'minilm')").fetchone()[0],
        conn.execute("SELECT fastembed_ext.create_embedding_index('a', 'b_c', 'minilm')").fetchone()[0],
        conn.execute(f"SELECT fastembed_ext.create_embedding_index('{long}', '{'v' * 40}_one', 'minilm')").fetchone()[0],
        conn.execute(f"SELECT fastembed_ext.create_embedding_index('{long}', '{'v' * 40}_two', 'minilm')").fetchone()[0],
    ]
    assert names[:2] == ["a_b_c_hnsw", "a_b_c_hnsw_1"]
    assert len(set(names)) == 4 and all(len(n.encode()) <= 63 for n in names)
    tables = [r[0] for r in conn.execute(
        "SELECT indrelid::regclass::text FROM pg_index WHERE indexrelid = ANY(%s::regclass[]) ORDER BY indexrelid",
        (names,))]
    assert tables == ["a_b", "a", long, long]
    conn.execute(f"DROP TABLE a_b, a, {long}")
