"""embed(), embed_batch(), settings and errors, against a real server."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
import pytest
from conftest import connect
from pg_helpers import assert_same_vectors, backend_notice, fetch_vector

import fastembed_ext

TEXTS = [
    "A man is playing a guitar on stage.",
    "The new movie is awesome",
    "PostgreSQL stores the vectors next to the rows they describe.",
    "",
    "Ünïcödé, emoji 🙂 and a rather long sentence " + "that keeps going " * 80,
]


def test_extension_objects(conn):
    row = conn.execute(
        "SELECT extversion, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE extname = 'fastembed_ext'"
    ).fetchone()
    assert row == (fastembed_ext.__version__, "public")
    deps = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    assert {"vector", "plpython3u", "fastembed_ext"} <= deps
    vol = dict(
        conn.execute(
            "SELECT p.oid::regprocedure::text, p.provolatile::text || p.proisstrict::text || p.proparallel::text "
            "FROM pg_proc p WHERE p.proname IN ('embed', 'embed_batch')"
        ).fetchall()
    )
    assert vol == {
        "embed(text)": "itrues",
        "embed(text,text)": "itrues",
        "embed_batch(text[])": "itrues",
        "embed_batch(text[],text)": "itrues",
        "embed(text,text,text)": "itrues",
        "embed_batch(text[],text,text)": "itrues",
    }


def test_models_view(conn, library_root, minilm_bundle_path, dot_bundle_path):
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT name, dim, similarity, max_seq_length, path, fingerprint, is_default FROM fastembed_ext.models")}
    # pg install exported both checkpoints into the library root's models/ and pinned them
    assert Path(minilm_bundle_path).parent == library_root / "models"
    assert rows["minilm"] == (384, "cosine", 256, minilm_bundle_path,
                              fastembed_ext.Encoder(minilm_bundle_path).fingerprint, True)
    assert rows["dot"] == (32, "dot", 250, dot_bundle_path, fastembed_ext.Encoder(dot_bundle_path).fingerprint, False)


@pytest.mark.parametrize("text", TEXTS)
def test_embed_equals_python(conn, encoder, text):
    got = fetch_vector(conn, "embed(%s, 'minilm')", (text,))
    assert_same_vectors(got, encoder.encode(text))


def test_dot_product_model_equals_python(conn, dot_encoder):
    text = "A dot-product model keeps the length of its vectors."
    got = fetch_vector(conn, "embed(%s, 'dot')", (text,))
    want = dot_encoder.encode(text)
    assert_same_vectors(got, want, atol=1e-5)
    assert abs(float(np.linalg.norm(got)) - 1.0) > 1e-2  # not normalised


def test_embed_default_model_is_the_databases(conn, encoder):
    """embed(text) follows the database's pinned default, never a session setting."""
    assert_same_vectors(fetch_vector(conn, "embed(%s)", (TEXTS[0],)), encoder.encode(TEXTS[0]))
    conn.execute("SET fastembed_ext.default_model = 'dot'")  # what 0.1.0 read
    with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
        conn.execute("SELECT embed('x')")
    diag = ei.value.diag
    assert "only the database's default model" in diag.message_primary
    assert '"dot"' in diag.message_detail and '"minilm"' in diag.message_detail
    assert "RESET fastembed_ext.default_model" in diag.message_hint
    conn.execute("SET fastembed_ext.default_model = 'minilm'")  # agreeing with it is harmless
    assert_same_vectors(fetch_vector(conn, "embed(%s)", (TEXTS[0],)), encoder.encode(TEXTS[0]))


def test_embed_by_path_is_for_admins(conn, encoder, minilm_bundle_path):
    got = fetch_vector(conn, "embed(%s, %s)", (TEXTS[1], minilm_bundle_path))
    assert_same_vectors(got, encoder.encode(TEXTS[1]))


def test_checkpoint_path_is_refused_with_the_export_command(conn, minilm_path, pg_cluster):
    before = sorted(os.listdir(pg_cluster.datadir))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
        conn.execute("SELECT embed('x', %s)", (str(minilm_path),))
    diag = ei.value.diag
    assert diag.message_primary == f'fastembed_ext: "{minilm_path}" is not a fastembed_ext bundle'
    assert f"fastembed-ext export {minilm_path} " in diag.message_hint
    assert "never exports a checkpoint" in diag.message_detail
    assert sorted(os.listdir(pg_cluster.datadir)) == before  # nothing written into the data directory


def test_null_in_null_out(conn):
    assert conn.execute("SELECT embed(NULL), embed(NULL, 'minilm'), embed('x', NULL)").fetchone() == (
        None,
        None,
        None,
    )


def test_embed_batch_equals_python(conn, encoder):
    texts = [TEXTS[0], None, TEXTS[1], TEXTS[4]]
    rows = conn.execute(
        "SELECT v::real[] FROM unnest(embed_batch(%s::text[], 'minilm')) WITH ORDINALITY AS u(v, i) ORDER BY i",
        (texts,),
    ).fetchall()
    assert len(rows) == 4 and rows[1][0] is None
    want = encoder.encode([TEXTS[0], TEXTS[1], TEXTS[4]])
    for got, w in zip([rows[0][0], rows[2][0], rows[3][0]], want):
        assert_same_vectors(got, w, atol=1e-5)
    assert conn.execute("SELECT embed_batch(NULL::text[]), cardinality(embed_batch('{}'::text[]))").fetchone() == (
        None,
        0,
    )


def test_vectors_are_normalised_and_semantic(conn):
    row = conn.execute(
        """SELECT vector_norm(embed('A man is eating food.', 'minilm')),
                  1 - (embed('A man is eating food.', 'minilm') <=> embed('A man is eating a meal.', 'minilm')),
                  1 - (embed('A man is eating food.', 'minilm') <=> embed('The stock market fell.', 'minilm'))"""
    ).fetchone()
    assert row[0] == pytest.approx(1.0, abs=1e-5)
    assert row[1] > 0.7 > row[2]


def test_unknown_model_error_names_it_with_hint(conn):
    with pytest.raises(psycopg.errors.UndefinedObject) as ei:
        conn.execute("SELECT embed('x', 'no_such_model')")
    diag = ei.value.diag
    assert '"no_such_model"' in diag.message_primary
    assert "register_model" in diag.message_hint
    assert "minilm" in diag.message_detail


def test_unreadable_path_errors(conn):
    with pytest.raises(psycopg.errors.UndefinedFile) as ei:
        conn.execute("SELECT embed('x', '/nonexistent/model')")
    assert "/nonexistent/model" in ei.value.diag.message_primary
    assert "operating-system user can read" in ei.value.diag.message_hint


def test_threads_default_bound_and_reset(dsn, encoder):
    """A new backend runs libtorch on 1 thread; SHOW works before any SET, RESET returns to 1,
    and the setting is bounded by the CPUs (anyone may set it)."""
    threads_in_backend = "DO $$ import fastembed_ext; plpy.notice(str(fastembed_ext.num_threads())) $$ LANGUAGE plpython3u"
    with connect(dsn) as c:
        assert c.execute("SHOW fastembed_ext.threads").fetchone() == ("1",)
        c.execute("SELECT embed('x', 'minilm')")
        assert backend_notice(c, threads_in_backend) == "1"
        c.execute("SET fastembed_ext.threads = 2")
        assert_same_vectors(fetch_vector(c, "embed(%s, 'minilm')", (TEXTS[2],)), encoder.encode(TEXTS[2]))
        assert backend_notice(c, threads_in_backend) == "2"
        c.execute("RESET fastembed_ext.threads")
        assert c.execute("SHOW fastembed_ext.threads").fetchone() == ("1",)
        c.execute("SELECT embed('y', 'minilm')")
        assert backend_notice(c, threads_in_backend) == "1"
        for bad in ("1000", "0", "many", "99999999999999999999999"):
            c.execute(f"SET fastembed_ext.threads = '{bad}'")
            with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
                c.execute("SELECT embed('x', 'minilm')")
            assert f'"{bad}"' in ei.value.diag.message_primary
            assert f"from 1 to {len(os.sched_getaffinity(0))}" in ei.value.diag.message_detail
            assert "RESET fastembed_ext.threads" in ei.value.diag.message_hint
        assert backend_notice(c, threads_in_backend) == "1"  # refused values never reached libtorch


def test_query_embedding_folded_once(conn):
    """IMMUTABLE: with constant arguments the planner computes the vector once, at plan time."""
    plan = conn.execute(
        "EXPLAIN (VERBOSE, COSTS OFF) SELECT embed('folded', 'minilm') FROM generate_series(1, 3)"
    ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "embed(" not in text and "'[" in text


def _forward_passes(conn) -> int:
    """The backend's forward-pass count, after one pass of its own (which loads the module)."""
    conn.execute("SELECT embed('load the module', 'minilm')")
    return int(backend_notice(
        conn, f"DO $$ plpy.notice(str(GD['fastembed_ext {fastembed_ext.__version__}'].forward_passes)) $$ "
        "LANGUAGE plpython3u"))


def test_generic_plan_embeds_the_query_once(conn, encoder):
    """A prepared statement's generic plan keeps embed($1) (it cannot fold it), and the executor
    calls it for the index scan and for each row returned: one forward pass serves them all."""
    conn.execute("DROP TABLE IF EXISTS prep_docs")
    conn.execute("CREATE TABLE prep_docs (id int PRIMARY KEY, embedding vector(384))")
    docs = [f"document number {i} about {topic}" for i, topic in enumerate(["cats", "tax", "rain"] * 4)]
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO prep_docs VALUES (%s, embed(%s, 'minilm'))", list(enumerate(docs)))
    conn.execute("SET plan_cache_mode = force_generic_plan")
    conn.execute(
        "PREPARE knn(text) AS SELECT id, embedding <=> embed($1, 'minilm') FROM prep_docs "
        "ORDER BY embedding <=> embed($1, 'minilm') LIMIT 5"
    )
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN (VERBOSE, COSTS OFF) EXECUTE knn('kittens')"))
    assert "embed($1" in plan  # not folded: evaluated at run time
    before = _forward_passes(conn)
    for query in ["kittens", "income tax", "kittens"]:
        got = conn.execute(sql.SQL("EXECUTE knn({})").format(sql.Literal(query))).fetchall()
        want = 1 - encoder.encode(docs) @ encoder.encode(query)  # cosine distance, unit vectors
        assert [i for i, _ in got] == list(np.argsort(want, kind="stable")[:5])
        assert np.allclose([d for _, d in got], np.sort(want)[:5], atol=1e-5)
    # one pass per query (and one in the helper); without the memo, one per row sorted
    assert _forward_passes(conn) - before == 3 + 1
    conn.execute("DEALLOCATE knn")
    conn.execute("RESET plan_cache_mode")


def test_generated_column_and_hnsw_search(conn, encoder):
    docs = [
        "The cat sat on the mat.",
        "A feline rested on a rug.",
        "Quarterly revenue grew by ten percent.",
        "The central bank raised interest rates.",
        "He plays the violin in an orchestra.",
        "Fresh bread from the bakery smells wonderful.",
    ] * 50  # enough rows for the planner to prefer the index
    conn.execute("DROP TABLE IF EXISTS gen_docs")
    conn.execute(
        "CREATE TABLE gen_docs (id bigserial PRIMARY KEY, body text, "
        "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)"
    )
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO gen_docs (body) VALUES (%s)", [(d,) for d in docs[:6]])
    conn.execute("INSERT INTO gen_docs (body) SELECT body FROM gen_docs CROSS JOIN generate_series(1, 49)")
    conn.execute("INSERT INTO gen_docs (body) VALUES (NULL)")
    rows = conn.execute("SELECT body, embedding::real[] FROM gen_docs WHERE id <= 7 ORDER BY id").fetchall()
    want = encoder.encode(docs[:6])
    for (body, got), w in zip(rows[:6], want):
        assert_same_vectors(got, w)
    assert conn.execute("SELECT embedding FROM gen_docs WHERE body IS NULL").fetchone() == (None,)

    idx = conn.execute("SELECT fastembed_ext.create_embedding_index('gen_docs', 'embedding')").fetchone()[0]
    assert idx == "gen_docs_embedding_hnsw"
    indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'gen_docs_embedding_hnsw'").fetchone()[0]
    assert "hnsw" in indexdef and "vector_cosine_ops" in indexdef
    # the model was read from the generated column's expression; calling again returns the same index
    assert conn.execute("SELECT fastembed_ext.create_embedding_index('gen_docs', 'embedding')").fetchone()[0] == idx
    conn.execute("ANALYZE gen_docs")
    q = "SELECT body FROM gen_docs ORDER BY embedding <=> embed('a kitten on a carpet', 'minilm') LIMIT 5"
    plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + q))
    assert "Index Scan using gen_docs_embedding_hnsw" in plan
    top = [r[0] for r in conn.execute(q)]
    assert set(top) <= {"The cat sat on the mat.", "A feline rested on a rug."}


def test_generated_column_dim_mismatch_stores_nothing(conn):
    conn.execute("DROP TABLE IF EXISTS gen_wrong")
    conn.execute(
        "CREATE TABLE gen_wrong (id int PRIMARY KEY, body text, "
        "embedding vector(768) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)"
    )
    with pytest.raises(psycopg.errors.DataException) as ei:
        conn.execute("INSERT INTO gen_wrong VALUES (1, 'a'), (2, 'b')")
    assert "768" in str(ei.value) and "384" in str(ei.value)
    assert conn.execute("SELECT count(*) FROM gen_wrong").fetchone() == (0,)


def test_failure_rolls_back_whole_statement(conn):
    conn.execute("DROP TABLE IF EXISTS gen_rb")
    conn.execute(
        "CREATE TABLE gen_rb (id int PRIMARY KEY, body text, model text, "
        "embedding vector(384) GENERATED ALWAYS AS (embed(body, model)) STORED)"
    )
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("INSERT INTO gen_rb VALUES (1, 'a', 'minilm'), (2, 'b', 'missing'), (3, 'c', 'minilm')")
    assert conn.execute("SELECT count(*) FROM gen_rb").fetchone() == (0,)
    conn.execute("DROP TABLE gen_rb")  # its model is per row, so it holds back every registry change


def test_search_returns_keys_and_scores(conn, encoder):
    conn.execute("DROP TABLE IF EXISTS s_docs")
    conn.execute(
        "CREATE TABLE s_docs (doc_id text PRIMARY KEY, body text, "
        "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)"
    )
    bodies = {"a": "Cats are small furry pets.", "b": "Stock prices dropped sharply.", "c": "Dogs love to play fetch."}
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO s_docs (doc_id, body) VALUES (%s, %s)", list(bodies.items()))
    got = conn.execute("SELECT key, score FROM fastembed_ext.search('s_docs', 'embedding', 'kittens', 2)").fetchall()
    q = encoder.encode("kittens")
    scores = {k: float(np.dot(encoder.encode(v), q)) for k, v in bodies.items()}
    want = sorted(scores, key=scores.get, reverse=True)[:2]
    assert [k for k, _ in got] == want
    for k, s in got:
        assert s == pytest.approx(scores[k], abs=1e-5)


def test_dot_product_table_index_and_scores(conn, dot_encoder):
    """A dot-product model gets vector_ip_ops and scores -(a <#> b) = a . b."""
    docs = {i: f"passage {i} about {t}" for i, t in enumerate(["tea", "trains", "taxes", "tigers"] * 3)}
    conn.execute("DROP TABLE IF EXISTS passages")
    conn.execute("CREATE TABLE passages (id int PRIMARY KEY, body text, embedding vector(32))")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO passages VALUES (%s, %s)", list(docs.items()))
    assert conn.execute("SELECT fastembed_ext.attach_embedding('passages', 'body', 'embedding', 'dot')").fetchone() == (12,)
    idx = conn.execute("SELECT fastembed_ext.create_embedding_index('passages', 'embedding')").fetchone()[0]
    assert "vector_ip_ops" in conn.execute("SELECT pg_get_indexdef(%s::regclass)", (idx,)).fetchone()[0]
    q = "which trains run at night"
    want = {i: float(v @ dot_encoder.encode(q)) for i, v in zip(docs, dot_encoder.encode(list(docs.values())))}
    got = conn.execute("SELECT key, score FROM fastembed_ext.search('passages', 'embedding', %s, 3)", (q,)).fetchall()
    assert [int(k) for k, _ in got] == sorted(want, key=want.get, reverse=True)[:3]
    for k, score in got:
        assert score == pytest.approx(want[int(k)], rel=1e-5, abs=1e-5)
    sql_scores = conn.execute(
        "SELECT id, -(embedding <#> embed(%s, 'dot')) FROM passages ORDER BY embedding <#> embed(%s, 'dot') LIMIT 3",
        (q, q)).fetchall()
    assert [(i, pytest.approx(want[i], rel=1e-5, abs=1e-5)) for i, _ in sql_scores] == sql_scores
    conn.execute("DROP TABLE passages")


@pytest.mark.parametrize(
    "query, sqlstate",
    [
        ("SELECT embed('x', 'no_such_model')", "42704"),
        ("SELECT embed('x', '/nonexistent/model')", "58P01"),
        ("SELECT fastembed_ext.create_embedding_index('pg_tables', 'x')", "42809"),
        ("SELECT fastembed_ext.search('s_docs', 'embedding', 'q', 0)", "22023"),
        ("SELECT fastembed_ext.create_embedding_index('s_docs', 'embedding', m => NULL)", "22004"),
        ("SELECT fastembed_ext.create_embedding_index('s_docs', 'embedding', m => 500)", "22023"),
        ("SELECT fastembed_ext.create_embedding_index('s_docs', 'embedding', ef_construction => 3)", "22023"),
        ("SELECT fastembed_ext.attach_embedding('s_docs', 'body', 'embedding', mode => 'later')", "22023"),
    ],
)
def test_errors_are_clean_with_sqlstate_and_hint(conn, query, sqlstate):
    conn.execute("CREATE TABLE IF NOT EXISTS s_docs (doc_id text PRIMARY KEY, body text, "
                 "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)")
    with pytest.raises(psycopg.Error) as ei:
        conn.execute(query)
    diag = ei.value.diag
    assert diag.sqlstate == sqlstate, diag.message_primary
    assert diag.message_primary.startswith("fastembed_ext: ")
    for noise in ("plpy.", "spiexceptions", "Error:", "Traceback"):
        assert noise not in diag.message_primary
    assert diag.message_hint


def test_a_truncated_text_raises_a_notice(conn):
    notices: list[tuple] = []

    def keep(diag) -> None:  # (a notice's fields are readable only during the call)
        notices.append((diag.message_primary, diag.message_hint))

    conn.add_notice_handler(keep)
    try:
        conn.execute("SELECT embed('a short text', 'minilm')")
        assert notices == []
        conn.execute("SELECT embed_batch(ARRAY[repeat('word ', 400), 'short', repeat('other ', 300)], 'minilm')")
    finally:
        conn.remove_notice_handler(keep)
    assert notices == [(
        'fastembed_ext: model "minilm": 2 of 3 text(s) were longer than this model\'s max_seq_length '
        "(256 tokens) and were embedded from their beginning only",
        "Split long documents into passages, and embed each passage.")]


def test_embed_with_a_prompt_name(conn, library_root, distilbert_256k, tmp_path):
    """embed(text, model, prompt_name) is encode(text, prompt_name=...); embed(text, model) uses
    the model's default prompt; an unknown name is an error that lists the model's prompts."""
    import fastembed_ext
    from model_factory import with_head

    prompts = {"query": "query: ", "passage": "passage: "}
    folder = with_head(distilbert_256k, tmp_path / "prompted", prompts=prompts, default_prompt_name="passage")
    bundle = fastembed_ext.export(folder, library_root / "models" / "prompted")
    enc = fastembed_ext.Encoder(bundle)
    conn.execute("SELECT fastembed_ext.register_model('prompted', %s)", (str(bundle),))
    try:
        text = "what is the capital of France"
        for args, kwargs in ((("prompted", "query"), {"prompt_name": "query"}), (("prompted",), {})):
            placeholders = ", ".join(["%s"] * (1 + len(args)))
            (got,) = conn.execute(f"SELECT embed({placeholders})::real[]", (text, *args)).fetchone()
            assert np.abs(np.asarray(got, np.float32) - enc.encode(text, **kwargs)).max() < 1e-6
        assert not np.allclose(enc.encode(text, prompt_name="query"), enc.encode(text), atol=1e-4)
        rows = conn.execute("SELECT v::real[] FROM unnest(embed_batch(ARRAY[%s, NULL], 'prompted', 'query')) v",
                            (text,)).fetchall()
        assert rows[1] == (None,)
        assert np.abs(np.asarray(rows[0][0], np.float32) - enc.encode(text, prompt_name="query")).max() < 1e-6
        with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
            conn.execute("SELECT embed('x', 'prompted', 'search')")
        assert ei.value.diag.message_primary == 'fastembed_ext: model "prompted" has no prompt named "search"'
        assert ei.value.diag.message_detail == "Its prompts: passage, query."
    finally:
        conn.execute("SELECT fastembed_ext.unregister_model('prompted')")
