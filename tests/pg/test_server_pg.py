"""PostgreSQL with fastembed_ext.server set: embed(), embed_batch(), generated and attached
columns go through a real `fastembed-ext serve` process, the backend loads no model, and an
unreachable, restarted or wrong server is an SQL error with a hint, never a hang."""

from __future__ import annotations

import http.server
import json
import socketserver
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from conftest import connect
from psycopg import sql
from pg_helpers import backend_notice

import fastembed_ext

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_process import ServerProcess, free_port  # noqa: E402

ATOL = 1e-5  # see tests/test_server.py


def _vec(c, query: str, params=()) -> np.ndarray:
    return np.asarray(c.execute(f"SELECT ({query})::real[]", params).fetchone()[0], np.float32)


@pytest.fixture(scope="module")
def served(pg_root, minilm_bundle_path, dot_bundle_path):
    s = ServerProcess([("minilm", Path(minilm_bundle_path)), ("dot", Path(dot_bundle_path))],
                      pg_root / "embedding-server.sock").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def srv_db(_session_conn, pg_cluster, served, minilm_bundle_path, dot_bundle_path):
    """A database whose embeddings come from the server."""
    _session_conn.execute("DROP DATABASE IF EXISTS fe_srv WITH (FORCE)")
    _session_conn.execute("CREATE DATABASE fe_srv")
    dsn = pg_cluster.dsn("fe_srv")
    with connect(dsn) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
        c.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm_bundle_path,))
        c.execute("SELECT fastembed_ext.register_model('dot', %s)", (dot_bundle_path,))
        c.execute("SELECT fastembed_ext.set_default_model('minilm')")
        c.execute(f"ALTER DATABASE fe_srv SET fastembed_ext.server = '{served.url}'")
    yield dsn
    _session_conn.execute("DROP DATABASE fe_srv WITH (FORCE)")


def test_vectors_through_the_server_equal_the_engines(srv_db, encoder, dot_encoder):
    texts = ["A man is playing a guitar.", "", "Ünïcödé 🙂 " + "and more words " * 60]
    with connect(srv_db) as c:
        for t in texts:
            np.testing.assert_allclose(_vec(c, "embed(%s)", (t,)), encoder.encode(t), rtol=0, atol=ATOL)
        np.testing.assert_allclose(_vec(c, "embed(%s, 'dot')", (texts[0],)), dot_encoder.encode(texts[0]), rtol=0, atol=ATOL)
        rows = c.execute("SELECT v::real[] FROM unnest(embed_batch(%s::text[], 'minilm')) v", ([texts[0], None, texts[2]],)).fetchall()
        assert rows[1] == (None,)
        np.testing.assert_allclose(np.asarray([rows[0][0], rows[2][0]], np.float32),
                                   encoder.encode([texts[0], texts[2]]), rtol=0, atol=ATOL)
        c.execute("CREATE TABLE s_att (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO s_att SELECT i, 'row ' || i FROM generate_series(1, 1500) i")
        assert c.execute("SELECT fastembed_ext.attach_embedding('s_att', 'body', 'embedding', 'minilm')").fetchone() == (1500,)
        c.execute("INSERT INTO s_att VALUES (2000, 'inserted through the trigger')")
        c.execute("CREATE TABLE s_gen (id int PRIMARY KEY, body text, "
                  "embedding vector(32) GENERATED ALWAYS AS (embed(body, 'dot')) STORED)")
        c.execute("INSERT INTO s_gen VALUES (1, 'generated through the server')")
        got = dict(c.execute("SELECT body, embedding::real[] FROM s_att WHERE id IN (7, 2000)").fetchall())
        np.testing.assert_allclose(np.asarray(list(got.values()), np.float32), encoder.encode(list(got)), rtol=0, atol=ATOL)
        np.testing.assert_allclose(_vec(c, "SELECT embedding FROM s_gen"), dot_encoder.encode("generated through the server"),
                                   rtol=0, atol=ATOL)
        hits = c.execute("SELECT key FROM fastembed_ext.search('s_att', 'embedding', 'row 77', 1)").fetchall()
        assert hits == [("77",)]
        # the backend loaded neither the engine nor numpy
        loaded = backend_notice(c, "DO $$ import sys; plpy.notice(' '.join(sorted(m for m in sys.modules if m.split('.')[0] "
                                   "in ('torch', 'numpy') or m == 'fastembed_ext._native'))) $$ LANGUAGE plpython3u")
        assert loaded == ""


# What a new connection's first embed() may not import: the engine, numpy, and the standard
# library's modules that would each cost it milliseconds (the figure is bench_server.py's first call).
_HEAVY = ("fastembed_ext._native", "numpy", "torch", "typing", "json", "re", "socket", "selectors",
          "threading", "functools", "collections", "enum", "warnings", "pathlib", "fastembed_ext.client",
          "fastembed_ext.pg.backend.tables")


def test_a_new_connections_first_embed_imports_little(srv_db):
    with connect(srv_db) as c:
        c.execute("DO $$ import sys; GD['modules before'] = set(sys.modules) $$ LANGUAGE plpython3u")
        vector = _vec(c, "embed('the first call of a new connection')")
        assert vector.shape == (384,)
        added = backend_notice(c, "DO $$ import sys; plpy.notice(' '.join(sorted("
                                  f"m for m in {_HEAVY!r} if m in sys.modules and m not in GD['modules before']))) $$ "
                                  "LANGUAGE plpython3u")
    assert added == ""


def test_generic_plan_asks_the_server_once_per_query(srv_db, encoder):
    """A prepared statement's generic plan calls embed($1) for the index scan and for each row
    returned; through the server as in the backend, one request serves them all."""
    with connect(srv_db) as c:
        c.execute("CREATE TEMP TABLE prep_docs (id int PRIMARY KEY, embedding vector(384))")
        docs = [f"document number {i} about {topic}" for i, topic in enumerate(["cats", "tax", "rain"] * 3)]
        c.cursor().executemany("INSERT INTO prep_docs VALUES (%s, embed(%s))", list(enumerate(docs)))
        c.execute("SET plan_cache_mode = force_generic_plan")
        c.execute("PREPARE knn(text) AS SELECT id, embedding <=> embed($1) FROM prep_docs "
                  "ORDER BY embedding <=> embed($1) LIMIT 5")
        passes = (f"DO $$ plpy.notice(str(GD['fastembed_ext {fastembed_ext.__version__}'].forward_passes)) $$ "
                  "LANGUAGE plpython3u")
        before = int(backend_notice(c, passes))
        for query in ["kittens", "income tax", "kittens"]:
            got = c.execute(sql.SQL("EXECUTE knn({})").format(sql.Literal(query))).fetchall()
            want = 1 - encoder.encode(docs) @ encoder.encode(query)
            assert [i for i, _ in got] == list(np.argsort(want, kind="stable")[:5])
            assert np.allclose([d for _, d in got], np.sort(want)[:5], atol=ATOL)
        # one request per query; without the memo, one per row as well
        assert int(backend_notice(c, passes)) - before == 3


def test_a_session_cannot_choose_the_server(srv_db, _session_conn, served):
    with connect(srv_db) as c:
        c.execute("SET fastembed_ext.server = 'http://127.0.0.1:9'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            c.execute("SELECT embed('x')")
        assert "only a database or cluster setting is used" in ei.value.diag.message_primary
        c.execute("RESET fastembed_ext.server")
        assert c.execute("SELECT vector_dims(embed('x'))").fetchone() == (384,)
        # the backend checks the database's setting once, then only when the session's value
        # changes: a SET after embedding is refused as well
        c.execute("SET fastembed_ext.server = 'http://127.0.0.1:9'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT embed('y')")
        c.execute("RESET fastembed_ext.server")
        assert c.execute("SELECT vector_dims(embed('y'))").fetchone() == (384,)
        # a database setting changed meanwhile is for new sessions, as PostgreSQL's own are
        _session_conn.execute("ALTER DATABASE fe_srv SET fastembed_ext.server = 'http://127.0.0.1:9'")
        try:
            assert c.execute("SELECT vector_dims(embed('z'))").fetchone() == (384,)
            with connect(srv_db) as new:
                with pytest.raises(psycopg.errors.ConnectionFailure) as ei:
                    new.execute("SELECT embed('z')")
                assert ei.value.diag.message_primary == "fastembed_ext: cannot reach the embedding server at http://127.0.0.1:9"
        finally:
            _session_conn.execute(f"ALTER DATABASE fe_srv SET fastembed_ext.server = '{served.url}'")


def test_an_invalid_server_setting_is_named(srv_db, _session_conn, served):
    try:
        for bad, why in (("ftp://example.org", "use unix:/path/to/server.sock or http://host:port"),
                         ("http://localhost:embedder", "with a port from 1 to 65535"),
                         ("http://[::1:8080", "an IPv6 address is written [address]:port")):
            _session_conn.execute(f"ALTER DATABASE fe_srv SET fastembed_ext.server = '{bad}'")
            with connect(srv_db) as c:
                with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
                    c.execute("SELECT embed('x')")
                c.execute("SELECT 1")  # the connection stays usable
            assert ei.value.diag.message_primary == f'fastembed_ext: invalid value for fastembed_ext.server: "{bad}"'
            assert why in ei.value.diag.message_detail
            assert ei.value.diag.message_hint == "Use unix:/path/to/server.sock or http://host:port."
    finally:
        _session_conn.execute(f"ALTER DATABASE fe_srv SET fastembed_ext.server = '{served.url}'")


def test_unreachable_and_restarted_server(srv_db, served):
    """Killed mid-query: a clean error, and the connection stays usable; started again: the
    same connection embeds again, without reconnecting."""
    with connect(srv_db) as c:
        before = c.execute("SELECT embed('before the kill')::text").fetchone()[0]
        failure: dict = {}

        def long_query() -> None:
            try:
                with connect(srv_db) as other:
                    other.execute("SELECT embed_batch(array_agg('long text number ' || i || repeat(' word', 60)), 'minilm') "
                                  "FROM generate_series(1, 4000) i")
            except psycopg.Error as exc:
                failure["error"] = exc

        t = threading.Thread(target=long_query)
        t.start()
        time.sleep(1.5)
        served.kill()
        t.join()
        diag = failure["error"].diag
        assert diag.sqlstate == "08006"
        assert diag.message_primary == f"fastembed_ext: cannot reach the embedding server at {served.url}"
        assert "fastembed-ext serve --model minilm=" in diag.message_hint and "fastembed_ext.server_timeout" in diag.message_hint
        with pytest.raises(psycopg.errors.ConnectionFailure):
            c.execute("SELECT embed('while it is down')")
        assert c.execute("SELECT 1").fetchone() == (1,)  # the session is fine
        served.start()
        assert c.execute("SELECT embed('before the kill')::text").fetchone()[0] == before


class _WrongServer(http.server.BaseHTTPRequestHandler):
    """Answers every embedding with another bundle's fingerprint, after `delay` seconds."""

    delay = 0.0

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        length = int(self.headers["Content-Length"])
        texts = json.loads(self.rfile.read(length))["inputs"]
        time.sleep(self.delay)
        body = "".join("[" + ",".join(["0.5"] * 384) + "]\n" for _ in texts).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-fastembed-fingerprint", "blake3:" + "f" * 64)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def wrong_server():
    port = free_port()
    httpd = socketserver.ThreadingTCPServer(("127.0.0.1", port), _WrongServer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()
    _WrongServer.delay = 0.0


def test_wrong_or_slow_servers_are_refused(srv_db, wrong_server, _session_conn, served):
    _session_conn.execute(f"ALTER DATABASE fe_srv SET fastembed_ext.server = '{wrong_server}'")
    try:
        with connect(srv_db) as c:
            with pytest.raises(psycopg.errors.DataCorrupted) as ei:
                c.execute("SELECT embed('x', 'minilm')")
            assert "answered with another bundle than model \"minilm\"" in ei.value.diag.message_primary
            _WrongServer.delay = 2.0
            c.execute("SET fastembed_ext.server_timeout = 300")
            started = time.monotonic()
            with pytest.raises(psycopg.errors.ConnectionFailure) as ei:
                c.execute("SELECT embed('y', 'minilm')")
            assert time.monotonic() - started < 1.5  # bounded by the setting, not the server
            assert "did not answer within 0.3 s" in ei.value.diag.message_detail
            c.execute("SET fastembed_ext.server_timeout = 5")
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                c.execute("SELECT embed('z', 'minilm')")
    finally:
        _session_conn.execute(f"ALTER DATABASE fe_srv SET fastembed_ext.server = '{served.url}'")


def test_a_model_the_server_does_not_serve(srv_db, _session_conn, library_root, minilm_bundle_path):
    import shutil

    extra = library_root / "models" / "not-served"
    shutil.rmtree(extra, ignore_errors=True)
    shutil.copytree(minilm_bundle_path, extra)
    with open(extra / "fastembed_ext.json", "a") as f:
        f.write("\n")  # other bytes: another fingerprint
    try:
        with connect(srv_db) as c:
            c.execute("SELECT fastembed_ext.register_model('other', %s)", (str(extra),))
            with pytest.raises(psycopg.errors.UndefinedObject) as ei:
                c.execute("SELECT embed('x', 'other')")
            assert 'does not serve model "other"' in ei.value.diag.message_primary
            assert f"--model other={extra}" in ei.value.diag.message_hint
            c.execute("SELECT fastembed_ext.unregister_model('other')")
    finally:
        shutil.rmtree(extra, ignore_errors=True)
