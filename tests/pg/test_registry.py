"""The model registry: names pinned to content, and no way to store two models' vectors in one
column by re-pointing a name, changing the default or setting a session variable."""

from __future__ import annotations

import shutil

import numpy as np
import psycopg
import pytest
from conftest import connect
from pg_helpers import assert_same_vectors

import fastembed_ext


@pytest.fixture
def spare(conn, library_root, minilm_bundle_path, dot_bundle_path):
    """Two bundles of different content in the models directory, and cleanup of what a test registers."""
    models = library_root / "models"
    copies = {"same": models / "spare-minilm", "other": models / "spare-dot"}
    for key, src in (("same", minilm_bundle_path), ("other", dot_bundle_path)):
        shutil.rmtree(copies[key], ignore_errors=True)
        shutil.copytree(src, copies[key])
    yield {k: str(v) for k, v in copies.items()}
    conn.execute("DROP MATERIALIZED VIEW IF EXISTS reg_mv")
    conn.execute("DROP TABLE IF EXISTS reg_gen, reg_default, reg_att, reg_any, reg_mixed")
    for name in ("m1", "m2"):
        conn.execute("SELECT fastembed_ext.unregister_model(%s)", (name,))
    conn.execute("SELECT fastembed_ext.set_default_model('minilm')")
    for path in copies.values():
        shutil.rmtree(path, ignore_errors=True)


def test_register_pins_the_fingerprint(conn, spare):
    row = conn.execute("SELECT name, dim, similarity, path, fingerprint, is_default "
                       "FROM fastembed_ext.register_model('m1', %s)", (spare["same"],)).fetchone()
    assert row == ("m1", 384, "cosine", spare["same"], fastembed_ext.Encoder(spare["same"]).fingerprint, False)
    # the registration is a function: pg_dump writes it before any table data
    assert conn.execute("SELECT fastembed_ext.\"model:m1\"() ->> 'fingerprint'").fetchone() == (row[4],)


def test_register_validates(conn, spare, minilm_path):
    cases = [
        (("a/b", spare["same"]), psycopg.errors.InvalidParameterValue, "invalid model name"),
        (("", spare["same"]), psycopg.errors.InvalidParameterValue, "invalid model name"),
        (("rel", "relative/path"), psycopg.errors.InvalidParameterValue, "is not absolute"),
        (("gone", "/nonexistent"), psycopg.errors.UndefinedFile, "does not exist"),
        (("ckpt", str(minilm_path)), psycopg.errors.InvalidParameterValue, "is not a fastembed_ext bundle"),
    ]
    for args, error, text in cases:
        with pytest.raises(error) as ei:
            conn.execute("SELECT fastembed_ext.register_model(%s, %s)", args)
        assert text in ei.value.diag.message_primary and ei.value.diag.message_hint
    assert "fastembed-ext export" in ei.value.diag.message_hint  # the checkpoint's hint
    names = {r[0] for r in conn.execute("SELECT name FROM fastembed_ext.models")}
    assert names.isdisjoint({"a/b", "", "rel", "gone", "ckpt"})


def test_repointing_is_refused_while_vectors_depend_on_it(conn, spare, encoder):
    conn.execute("SELECT fastembed_ext.register_model('m1', %s)", (spare["same"],))
    conn.execute("CREATE TABLE reg_gen (id int PRIMARY KEY, body text, "
                 "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'm1')) STORED)")
    conn.execute("INSERT INTO reg_gen VALUES (1, 'stored with m1')")
    with pytest.raises(psycopg.errors.ObjectInUse) as ei:
        conn.execute("SELECT fastembed_ext.register_model('m1', %s)", (spare["other"],))
    diag = ei.value.diag
    assert 'stored vectors depend on model "m1"' in diag.message_primary
    assert "generated column public.reg_gen.embedding" in diag.message_detail
    assert "another name" in diag.message_hint and "model_dependents('m1')" in diag.message_hint
    with pytest.raises(psycopg.errors.ObjectInUse):
        conn.execute("SELECT fastembed_ext.unregister_model('m1')")
    # the same content under another path is the same model: allowed
    moved = spare["same"] + "-moved"
    shutil.copytree(spare["same"], moved)
    try:
        assert conn.execute("SELECT path FROM fastembed_ext.register_model('m1', %s)", (moved,)).fetchone() == (moved,)
        conn.execute("INSERT INTO reg_gen VALUES (2, 'stored after the move')")
    finally:
        conn.execute("SELECT fastembed_ext.register_model('m1', %s)", (spare["same"],))
        shutil.rmtree(moved)
    rows = dict(conn.execute("SELECT id, embedding::real[] FROM reg_gen").fetchall())
    assert_same_vectors(rows[2], encoder.encode("stored after the move"))
    # without dependents, re-pointing is allowed
    conn.execute("DROP TABLE reg_gen")
    assert conn.execute("SELECT dim FROM fastembed_ext.register_model('m1', %s)", (spare["other"],)).fetchone() == (32,)


def test_dependents_are_listed(conn, spare):
    conn.execute("SELECT fastembed_ext.register_model('m1', %s)", (spare["same"],))
    conn.execute("CREATE TABLE reg_att (id int PRIMARY KEY, body text, embedding vector(384), "
                 "e2 vector(384) DEFAULT NULL)")
    conn.execute("SELECT fastembed_ext.attach_embedding('reg_att', 'body', 'embedding', 'm1')")
    conn.execute("CREATE INDEX reg_att_expr ON reg_att ((embed(body, 'm1') <=> embed('x', 'm1')))")
    conn.execute("CREATE TABLE reg_any (id int PRIMARY KEY, body text, model text, "
                 "embedding vector GENERATED ALWAYS AS (embed(body, model)) STORED)")
    conn.execute("CREATE MATERIALIZED VIEW reg_mv AS SELECT embed(body, 'm1') AS e FROM reg_att")
    got = conn.execute("SELECT kind, object, detail FROM fastembed_ext.model_dependents('m1')").fetchall()
    kinds = {(k, o) for k, o, _ in got}
    assert kinds == {
        ("attached column", "public.reg_att.embedding"),
        ("index", "public.reg_att_expr"),
        ("generated column", "public.reg_any.embedding"),
        ("materialized view", "public.reg_mv"),
    }
    assert [d for k, _, d in got if k == "generated column"] == [
        "its model is not a constant, so it may hold vectors of any model"]
    assert conn.execute("SELECT count(*) FROM fastembed_ext.model_dependents('dot') "
                        "WHERE kind <> 'generated column'").fetchone() == (0,)


def test_no_sequence_of_changes_mixes_models_in_a_column(conn, dsn, spare, encoder):
    """Every way 0.1.0 let a column hold two models' vectors, tried in turn; each either changes
    nothing or is refused, and every stored vector stays the original model's."""
    conn.execute("SELECT fastembed_ext.register_model('m1', %s)", (spare["same"],))
    conn.execute("CREATE TABLE reg_default (id serial PRIMARY KEY, body text, "
                 "embedding vector(384) GENERATED ALWAYS AS (embed(body)) STORED)")
    conn.execute("CREATE TABLE reg_gen (id serial PRIMARY KEY, body text, "
                 "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'm1')) STORED)")
    refusals = []

    def attempt(statement: str, *params) -> None:
        try:
            with connect(dsn) as c:
                c.execute(statement, params)
                for t in ("reg_default", "reg_gen"):
                    c.execute(f"INSERT INTO {t} (body) VALUES (%s)", (f"after: {statement}",))
        except psycopg.Error as exc:
            refusals.append((statement, exc.diag.sqlstate))

    attempt("SELECT 1")
    attempt("SET fastembed_ext.default_model = 'dot'")
    attempt("SELECT fastembed_ext.set_default_model('dot')")
    attempt("SELECT fastembed_ext.register_model('m1', %s)", spare["other"])
    attempt("SELECT fastembed_ext.register_model('minilm', %s)", spare["other"])
    attempt("SELECT fastembed_ext.unregister_model('m1')")
    attempt("SELECT fastembed_ext.set_default_model(NULL)")
    assert [s for _, s in refusals] == ["22023", "55006", "55006", "55006", "55006", "55006"]
    for t in ("reg_default", "reg_gen"):
        rows = conn.execute(f"SELECT body, embedding::real[] FROM {t}").fetchall()
        assert len(rows) == 1  # only the first attempt wrote
        want = encoder.encode([b for b, _ in rows])
        assert np.abs(np.asarray([v for _, v in rows], np.float32) - want).max() < 1e-5


def test_changed_bundle_is_refused_at_load(conn, dsn, spare):
    conn.execute("SELECT fastembed_ext.register_model('m2', %s)", (spare["same"],))
    with open(spare["same"] + "/fastembed_ext.json", "a") as f:
        f.write("\n")
    with connect(dsn) as c:
        with pytest.raises(psycopg.errors.DataCorrupted) as ei:
            c.execute("SELECT embed('x', 'm2')")
    diag = ei.value.diag
    assert diag.message_primary == 'fastembed_ext: model "m2" changed on disk since it was registered'
    assert "Put the registered files back" in diag.message_hint


def test_default_cannot_change_under_a_mixed_expression(conn, spare):
    """An expression that calls embed(text) next to a named model still pins the default."""
    conn.execute("CREATE TABLE reg_mixed (id int PRIMARY KEY, body text, "
                 "d float8 GENERATED ALWAYS AS (embed(body) <=> embed(body, 'minilm')) STORED)")
    with pytest.raises(psycopg.errors.ObjectInUse) as ei:
        conn.execute("SELECT fastembed_ext.set_default_model('dot')")
    assert "generated column public.reg_mixed.d" in ei.value.diag.message_detail
