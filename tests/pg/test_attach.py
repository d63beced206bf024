"""attach_embedding(): embed on INSERT and on UPDATE of the text, batched per statement."""

from __future__ import annotations

import threading

import numpy as np
import psycopg
import pytest
from pg_helpers import assert_same_vectors

SENTENCES = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(
    ["cooking pasta", "football", "the stock market", "quantum physics", "gardening", "jazz music"] * 20
)]


def _vectors(conn, table: str) -> dict:
    return {k: (b, None if v is None else np.asarray(v, np.float32))
            for k, b, v in conn.execute(f"SELECT id, body, embedding::real[] FROM {table}")}


@pytest.fixture
def table(conn):
    conn.execute("DROP TABLE IF EXISTS att_docs")
    conn.execute("CREATE TABLE att_docs (id bigint PRIMARY KEY, body text, title text, embedding vector(384))")
    yield "att_docs"
    conn.execute("DROP TABLE IF EXISTS att_docs")


def test_attach_backfills_then_embeds_inserts_and_updates(conn, encoder, table):
    conn.execute("INSERT INTO att_docs (id, body) SELECT i, 'already here ' || i FROM generate_series(1, 10) i")
    conn.execute("INSERT INTO att_docs (id, body) VALUES (11, NULL)")
    n = conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')").fetchone()[0]
    assert n == 10
    # many rows in one statement
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO att_docs (id, body) SELECT 100 + i, s FROM unnest(%s::text[]) WITH ORDINALITY AS u(s, i)",
            (SENTENCES,),
        )
    rows = _vectors(conn, table)
    assert len(rows) == 11 + len(SENTENCES)
    bodies = [b for b, _ in rows.values() if b is not None]
    want = dict(zip(bodies, encoder.encode(bodies)))
    for body, vec in rows.values():
        if body is None:
            assert vec is None
        else:
            assert_same_vectors(vec, want[body], atol=1e-5)

    # UPDATE of the text re-embeds; UPDATE of another column leaves the vector alone
    before = rows[101][1]
    conn.execute("UPDATE att_docs SET title = 'x' WHERE id BETWEEN 100 AND 200")
    assert_same_vectors(_vectors(conn, table)[101][1], before, atol=0)
    conn.execute("UPDATE att_docs SET body = 'The weather is lovely today.' WHERE id IN (101, 102)")
    conn.execute("UPDATE att_docs SET body = NULL WHERE id = 103")
    rows = _vectors(conn, table)
    w = encoder.encode("The weather is lovely today.")
    assert_same_vectors(rows[101][1], w)
    assert_same_vectors(rows[102][1], w)
    assert rows[103][1] is None
    conn.execute("UPDATE att_docs SET body = 'Back again.' WHERE id = 11")
    assert_same_vectors(_vectors(conn, table)[11][1], encoder.encode("Back again."))

    # COPY goes through the same statement-level trigger
    with conn.cursor().copy("COPY att_docs (id, body) FROM STDIN") as cp:
        cp.write_row((900, "Copied in with COPY."))
    assert_same_vectors(_vectors(conn, table)[900][1], encoder.encode("Copied in with COPY."))

    att = conn.execute("SELECT source_column, key_column, model FROM fastembed_ext.attachments").fetchall()
    assert ("body", "id", "minilm") in att


def test_attach_is_idempotent_and_detach_stops(conn, table):
    for _ in range(2):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    trig = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass").fetchone()[0]
    assert trig == 2
    assert conn.execute("SELECT fastembed_ext.detach_embedding('att_docs', 'embedding')").fetchone() == (True,)
    assert conn.execute("SELECT fastembed_ext.detach_embedding('att_docs', 'embedding')").fetchone() == (False,)
    conn.execute("INSERT INTO att_docs (id, body) VALUES (1, 'not embedded')")
    assert conn.execute("SELECT embedding FROM att_docs").fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass").fetchone() == (0,)


def test_attach_dim_mismatch_changes_nothing(conn):
    conn.execute("DROP TABLE IF EXISTS att_wrong")
    conn.execute("CREATE TABLE att_wrong (id int PRIMARY KEY, body text, embedding vector(768))")
    conn.execute("INSERT INTO att_wrong VALUES (1, 'x', NULL)")
    with pytest.raises(psycopg.errors.DataException) as ei:
        conn.execute("SELECT fastembed_ext.attach_embedding('att_wrong', 'body', 'embedding', 'minilm')")
    assert "vector(768)" in ei.value.diag.message_primary and ei.value.diag.message_hint
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_wrong'::regclass").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM fastembed_ext.attachments WHERE table_oid = 'att_wrong'::regclass").fetchone() == (0,)


def test_attach_argument_errors(conn):
    conn.execute("DROP TABLE IF EXISTS att_bad")
    conn.execute("CREATE TABLE att_bad (body text, n int, embedding vector(384))")
    with pytest.raises(psycopg.errors.InvalidColumnReference):  # no primary key
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'body', 'embedding', 'minilm')")
    with pytest.raises(psycopg.errors.DatatypeMismatch):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'n', 'embedding', 'minilm', 'body')")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'nope', 'embedding', 'minilm', 'body')")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'body', 'embedding', 'nope', 'body')")


def test_trigger_failure_rolls_back_statement(conn, minilm_path, table):
    conn.execute("SELECT fastembed_ext.register_model('short_lived', %s)", (str(minilm_path),))
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'short_lived')")
    conn.execute("SELECT fastembed_ext.unregister_model('short_lived')")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("INSERT INTO att_docs (id, body) SELECT i, 'row ' || i FROM generate_series(1, 50) i")
    assert conn.execute("SELECT count(*) FROM att_docs").fetchone() == (0,)


def test_dropping_attached_table_forgets_it(conn, table):
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    oid = conn.execute("SELECT 'att_docs'::regclass::oid").fetchone()[0]
    conn.execute("DROP TABLE att_docs")
    assert conn.execute("SELECT count(*) FROM fastembed_ext.attachments WHERE table_oid = %s", (oid,)).fetchone() == (0,)


def test_concurrent_sessions_insert_and_query(dsn, conn, encoder, table):
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                for j in range(5):
                    base = 1000 * w + 10 * j
                    c.execute(
                        "INSERT INTO att_docs (id, body) SELECT %s + i, 'writer ' || %s || ' row ' || i "
                        "FROM generate_series(0, 4) i", (base, w))
                    c.execute("SELECT id FROM att_docs ORDER BY embedding <=> embed('writer row', 'minilm') LIMIT 3")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    rows = _vectors(conn, table)
    assert len(rows) == 4 * 5 * 5
    bodies = [b for b, _ in rows.values()]
    want = dict(zip(bodies, encoder.encode(bodies)))
    for body, vec in rows.values():
        assert vec is not None
        assert_same_vectors(vec, want[body], atol=1e-5)
