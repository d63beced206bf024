"""attach_embedding(): embed on INSERT and on UPDATE of the text, batched per statement; what
happens to an attachment when its table or columns are renamed or dropped."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import psycopg
import pytest
from conftest import connect
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

    # UPDATE of another column leaves the vector alone: a planted sentinel vector survives it,
    # which re-embedding the unchanged text would overwrite
    sentinel = "[" + ",".join(["0.5"] * 384) + "]"
    conn.execute("UPDATE att_docs SET embedding = %s WHERE id = 101", (sentinel,))
    conn.execute("UPDATE att_docs SET title = 'x' WHERE id BETWEEN 100 AND 200")
    assert_same_vectors(_vectors(conn, table)[101][1], np.full(384, 0.5), atol=0)
    # UPDATE of the text re-embeds
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

    att = conn.execute("SELECT source_column, key_column, model, mode FROM fastembed_ext.attachments "
                       "WHERE tbl = 'att_docs'::regclass").fetchall()
    assert att == [("body", "id", "minilm", "sync")]


def test_attach_is_idempotent_and_detach_stops(conn, table):
    for _ in range(2):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    trig = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass").fetchone()[0]
    assert trig == 3  # INSERT, and UPDATE of the text per row and per statement
    fn = conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_embed\\_rows\\_%'").fetchone()[0]
    assert conn.execute("SELECT fastembed_ext.detach_embedding('att_docs', 'embedding')").fetchone() == (True,)
    assert conn.execute("SELECT fastembed_ext.detach_embedding('att_docs', 'embedding')").fetchone() == (False,)
    conn.execute("INSERT INTO att_docs (id, body) VALUES (1, 'not embedded')")
    assert conn.execute("SELECT embedding FROM att_docs").fetchone() == (None,)
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass").fetchone() == (0,)
    # the attachment's trigger function went with it
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE '\\_embed\\_rows\\_%'").fetchone() == (fn - 1,)


def test_attach_dim_mismatch_changes_nothing(conn):
    conn.execute("DROP TABLE IF EXISTS att_wrong")
    conn.execute("CREATE TABLE att_wrong (id int PRIMARY KEY, body text, embedding vector(768))")
    conn.execute("INSERT INTO att_wrong VALUES (1, 'x', NULL)")
    with pytest.raises(psycopg.errors.DataException) as ei:
        conn.execute("SELECT fastembed_ext.attach_embedding('att_wrong', 'body', 'embedding', 'minilm')")
    assert "vector(768)" in ei.value.diag.message_primary and ei.value.diag.message_hint
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_wrong'::regclass").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM fastembed_ext.attachments WHERE tbl = 'att_wrong'::regclass").fetchone() == (0,)


def test_attach_argument_errors(conn):
    conn.execute("DROP TABLE IF EXISTS att_bad")
    conn.execute("CREATE TABLE att_bad (body text, n int, grp int, u int UNIQUE, embedding vector(384))")
    with pytest.raises(psycopg.errors.InvalidColumnReference) as ei:  # no primary key
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'body', 'embedding', 'minilm')")
    assert "ADD COLUMN id bigserial PRIMARY KEY" in ei.value.diag.message_hint
    with pytest.raises(psycopg.errors.DatatypeMismatch):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'n', 'embedding', 'minilm', 'body')")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'nope', 'embedding', 'minilm', 'body')")
    # a key that is not unique, or unique but NULL-able, would write vectors to the wrong rows
    for key in ("grp", "u"):
        with pytest.raises(psycopg.errors.InvalidColumnReference) as ei:
            conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'body', 'embedding', 'minilm', %s)", (key,))
        assert "is not unique and NOT NULL" in ei.value.diag.message_primary
        assert "ADD UNIQUE" in ei.value.diag.message_hint
    conn.execute("ALTER TABLE att_bad ALTER COLUMN u SET NOT NULL")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'body', 'embedding', 'nope', 'u')")
    conn.execute("INSERT INTO att_bad (body, u) VALUES ('keyed by u', 7)")
    assert conn.execute("SELECT fastembed_ext.attach_embedding('att_bad', 'body', 'embedding', 'minilm', 'u')").fetchone() == (1,)
    conn.execute("DROP TABLE att_bad")


def test_trigger_failure_rolls_back_statement(conn, dsn, minilm_bundle_path, library_root, table):
    """A registered bundle that changed on disk stops the statement: no row is half-written."""
    fragile = library_root / "models" / "fragile"
    shutil.rmtree(fragile, ignore_errors=True)
    shutil.copytree(minilm_bundle_path, fragile)
    try:
        conn.execute("SELECT fastembed_ext.register_model('fragile', %s)", (str(fragile),))
        conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'fragile')")
        with (fragile / "tokenizer.json").open("a") as f:
            f.write(" ")
        with connect(dsn) as c:  # a new backend loads the model and checks its fingerprint
            with pytest.raises(psycopg.errors.DataCorrupted) as ei:
                c.execute("INSERT INTO att_docs (id, body) SELECT i, 'row ' || i FROM generate_series(1, 50) i")
            assert 'model "fragile" changed on disk' in ei.value.diag.message_primary
            assert "differs from the pinned" in ei.value.diag.message_detail
        assert conn.execute("SELECT count(*) FROM att_docs").fetchone() == (0,)
    finally:
        conn.execute("SELECT fastembed_ext.detach_embedding('att_docs', 'embedding')")
        conn.execute("SELECT fastembed_ext.unregister_model('fragile')")
        shutil.rmtree(fragile, ignore_errors=True)


def test_dropping_attached_table_forgets_it(conn, table):
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    att_id = conn.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = 'att_docs'::regclass").fetchone()[0]
    conn.execute("DROP TABLE att_docs")
    assert conn.execute("SELECT count(*) FROM fastembed_ext.attachments WHERE id = %s", (att_id,)).fetchone() == (0,)
    assert conn.execute("SELECT to_regprocedure(%s)", (f"fastembed_ext._embed_rows_{att_id}()",)).fetchone() == (None,)


def test_renames_are_followed(dsn, conn, encoder, table):
    """The attachment follows RENAME TABLE and RENAME COLUMN, also in a session that already
    wrote to the table under its old names."""
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    with connect(dsn) as c:
        c.execute("INSERT INTO att_docs (id, body) VALUES (1, 'before the renames')")
        conn.execute("ALTER TABLE att_docs RENAME COLUMN body TO content")
        conn.execute("ALTER TABLE att_docs RENAME COLUMN embedding TO vec")
        conn.execute("ALTER TABLE att_docs RENAME TO att_renamed")
        c.execute("INSERT INTO att_renamed (id, content) VALUES (2, 'after the renames')")
        c.execute("UPDATE att_renamed SET content = 'changed after the renames' WHERE id = 1")
        rows = dict(c.execute("SELECT id, vec::real[] FROM att_renamed").fetchall())
    assert_same_vectors(rows[2], encoder.encode("after the renames"))
    assert_same_vectors(rows[1], encoder.encode("changed after the renames"))
    assert conn.execute("SELECT tbl::text, source_column, vector_column FROM fastembed_ext.attachments "
                        "WHERE tbl = 'att_renamed'::regclass").fetchone() == ("att_renamed", "content", "vec")
    conn.execute("ALTER TABLE att_renamed RENAME TO att_docs")


def test_dropping_the_source_column_detaches(conn, table):
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    # its UPDATE OF triggers name the column: PostgreSQL asks for CASCADE, naming them
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as ei:
        conn.execute("ALTER TABLE att_docs DROP COLUMN body")
    assert "trigger fastembed_ext_embedding_update on table att_docs depends on column body" in ei.value.diag.message_detail
    conn.execute("ALTER TABLE att_docs DROP COLUMN body CASCADE")
    assert conn.execute("SELECT count(*) FROM fastembed_ext.attachments WHERE tbl = 'att_docs'::regclass").fetchone() == (0,)
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass").fetchone() == (0,)
    conn.execute("INSERT INTO att_docs (id, title) VALUES (1, 'still writable')")  # no trigger left to fail


def test_reattach_fills_only_missing_vectors(conn, table):
    conn.execute("INSERT INTO att_docs (id, body) SELECT i, 'text ' || i FROM generate_series(1, 5) i")
    assert conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')").fetchone() == (5,)
    sentinel = "[" + ",".join(["0.25"] * 384) + "]"
    conn.execute("UPDATE att_docs SET embedding = %s WHERE id = 1", (sentinel,))
    conn.execute("UPDATE att_docs SET embedding = NULL WHERE id = 2")
    assert conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')").fetchone() == (1,)
    assert conn.execute("SELECT embedding = %s::vector FROM att_docs WHERE id = 1", (sentinel,)).fetchone() == (True,)
    assert conn.execute("SELECT count(*) FROM att_docs WHERE embedding IS NULL").fetchone() == (0,)


def test_manual_mode_records_the_model_without_triggers(conn, table):
    conn.execute("ALTER TABLE att_docs ALTER COLUMN embedding TYPE vector(32)")
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'dot', mode => 'manual')")
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass").fetchone() == (0,)
    conn.execute("INSERT INTO att_docs (id, body) VALUES (1, 'the client writes vectors itself')")
    assert conn.execute("SELECT embedding FROM att_docs").fetchone() == (None,)
    # search knows the column's model, and refuses another one
    with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
        conn.execute("SELECT * FROM fastembed_ext.search('att_docs', 'embedding', 'q', 3, 'minilm')")
    assert 'holds vectors of model "dot"' in ei.value.diag.message_primary


def test_halfvec_columns(conn, encoder):
    conn.execute("DROP TABLE IF EXISTS half_docs")
    conn.execute("CREATE TABLE half_docs (id int PRIMARY KEY, body text, embedding halfvec(384))")
    conn.execute("INSERT INTO half_docs VALUES (1, 'half precision halves the table'), (2, 'and the index')")
    assert conn.execute("SELECT fastembed_ext.attach_embedding('half_docs', 'body', 'embedding', 'minilm')").fetchone() == (2,)
    conn.execute("INSERT INTO half_docs VALUES (3, 'a kitten sleeps')")
    got = np.asarray(conn.execute("SELECT embedding::vector::real[] FROM half_docs WHERE id = 3").fetchone()[0])
    assert_same_vectors(got, encoder.encode("a kitten sleeps").astype(np.float16), atol=0)
    idx = conn.execute("SELECT fastembed_ext.create_embedding_index('half_docs', 'embedding')").fetchone()[0]
    assert "halfvec_cosine_ops" in conn.execute("SELECT pg_get_indexdef(%s::regclass)", (idx,)).fetchone()[0]
    top = conn.execute("SELECT key FROM fastembed_ext.search('half_docs', 'embedding', 'a cat napping', 1)").fetchone()
    assert top == ("3",)
    conn.execute("DROP TABLE half_docs")


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


def test_update_triggers_name_the_text_column(conn, table):
    conn.execute("SELECT fastembed_ext.attach_embedding('att_docs', 'body', 'embedding', 'minilm')")
    defs = sorted(r[0] for r in conn.execute(
        "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'att_docs'::regclass AND NOT tgisinternal"))
    assert [d.split(" ON ")[0].split(" ", 3)[3] for d in defs] == [
        "AFTER INSERT", "AFTER UPDATE OF body", "AFTER UPDATE OF body"]
    assert any("FOR EACH ROW WHEN ((old.body IS DISTINCT FROM new.body))" in d for d in defs)


def test_backfill_procedure_commits_as_it_goes(conn, roles, encoder):
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS big")
        c.execute("CREATE TABLE big (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO big SELECT i, 'backfilled row ' || i FROM generate_series(1, 2500) i")
        notices: list[tuple] = []
        c.add_notice_handler(lambda d: notices.append((d.message_primary, d.message_hint)))
        # attaching without the backfill is quick and holds its lock only that long
        assert c.execute("SELECT fastembed_ext.attach_embedding('big', 'body', 'embedding', 'minilm', "
                         "backfill => false)").fetchone() == (0,)
        assert notices[-1] == ("fastembed_ext: public.big is attached; its existing rows are not embedded yet",
                               "CALL fastembed_ext.backfill('public.big', 'embedding'); it commits as it goes.")
        before = c.execute("SELECT txid_current()").fetchone()[0]
        c.execute("CALL fastembed_ext.backfill('big', 'embedding', 1000)")
        # one transaction per batch (each took an id), and the progress
        assert c.execute("SELECT txid_current()").fetchone()[0] - before >= 4
        assert [n for n, _ in notices[-3:]] == [f"fastembed_ext: embedded {n} of 2500 rows of public.big"
                                                for n in (1000, 2000, 2500)]
        rows = c.execute("SELECT body, embedding::real[] FROM big ORDER BY id").fetchall()
        assert np.abs(np.asarray([v for _, v in rows], np.float32) - encoder.encode([b for b, _ in rows])).max() < 1e-5
        # inside a transaction block it says so, and everything commits at the block's end
        c.execute("UPDATE big SET embedding = NULL WHERE id <= 5")
        with c.transaction():
            c.execute("CALL fastembed_ext.backfill('big', 'embedding')")
        assert notices[-2][0].startswith("fastembed_ext: backfill called inside a transaction block")
        assert c.execute("SELECT count(*) FROM big WHERE embedding IS NULL").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            c.execute("CALL fastembed_ext.backfill('big', 'embedding', 0)")
    with connect(roles["fe_stranger"]) as s:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            s.execute("CALL fastembed_ext.backfill('big', 'embedding')")
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE big")
