"""ALTER EXTENSION fastembed_ext UPDATE from each earlier release, on a database it populated.

The releases' install scripts are frozen in tests/pg/data. Until the update, 0.1.0's SQL functions
import this package's `fastembed_ext.pg.server`, which still serves them; 0.2.0's load the library
of their own version, which `pg install` of 0.2.0 left in place (here: this library, recorded as
0.2.0), so a database keeps working between `pip install -U fastembed_ext` and the update.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import psycopg
import pytest
from conftest import connect
from psycopg import sql

import fastembed_ext
from fastembed_ext.pg import cluster, scripts
from fastembed_ext.pg.install import install

OLD = "0.1.0"
FROZEN = Path(__file__).with_name("data") / f"fastembed_ext--{OLD}.sql"
SHARE = Path(f"/usr/share/postgresql/{cluster.PG_MAJOR}/extension")


@pytest.fixture
def old_release(dsn):
    """0.1.0's install script in the server's extension directory, for this test only (`dsn` has
    written the control file and the upgrade script)."""
    target = SHARE / FROZEN.name
    shutil.copyfile(FROZEN, target)
    yield
    target.unlink()


def _create_at_0_1_0(dsn: str, library: Path, minilm_bundle: str) -> None:
    with connect(dsn) as c:
        c.execute(f"CREATE EXTENSION fastembed_ext VERSION '{OLD}' CASCADE")
        # 0.1.0's loader imports from the directories in its config table
        c.execute("INSERT INTO fastembed_ext.config VALUES ('python_path', %s)", (str(library),))
        c.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm_bundle,))


def _vectors(c, table: str) -> dict[str, np.ndarray]:
    return {b: np.asarray(v, np.float32) for b, v in c.execute(f"SELECT body, embedding::real[] FROM {table}")}


def _members(c) -> list[tuple]:
    """The extension's own objects, each with what defines it."""
    return c.execute(
        """SELECT pg_describe_object(d.classid, d.objid, d.objsubid),
                  CASE d.classid
                      WHEN 'pg_proc'::regclass THEN pg_get_functiondef(d.objid) || coalesce(p.proacl::text, '')
                      WHEN 'pg_class'::regclass THEN (
                          SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                            || coalesce(' default ' || pg_get_expr(ad.adbin, ad.adrelid), '')
                                            || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END, ', ' ORDER BY a.attnum)
                          FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                          WHERE a.attrelid = d.objid AND a.attnum > 0 AND NOT a.attisdropped)
                          || coalesce((SELECT relacl::text FROM pg_class WHERE oid = d.objid), '')
                      ELSE '' END
           FROM pg_depend d LEFT JOIN pg_proc p ON d.classid = 'pg_proc'::regclass AND p.oid = d.objid
           WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
             AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'fastembed_ext')
           ORDER BY 1"""
    ).fetchall()


def _shape(c) -> dict:
    return {
        "members": _members(c),
        "config tables": c.execute(
            "SELECT array(SELECT unnest(extconfig)::regclass::text ORDER BY 1) FROM pg_extension "
            "WHERE extname = 'fastembed_ext'").fetchone()[0],
        "constraints": c.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE connamespace = 'fastembed_ext'::regnamespace ORDER BY 1").fetchall(),
        "triggers": c.execute(
            "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'fastembed_ext.attachments'::regclass").fetchall(),
        "event triggers": c.execute("SELECT evtname, evtevent, evttags::text FROM pg_event_trigger ORDER BY 1").fetchall(),
        "threads": c.execute("SHOW fastembed_ext.threads").fetchone(),
    }


def test_update_from_0_1_0_keeps_rows_vectors_and_indexes(
    old_release, new_database, library_root, minilm_bundle_path, encoder
):
    old = new_database("fe_upgrade")
    _create_at_0_1_0(old, library_root / fastembed_ext.__version__, minilm_bundle_path)
    with connect(old) as c:
        c.execute("ALTER DATABASE fe_upgrade SET fastembed_ext.default_model = 'minilm'")
        c.execute("SET fastembed_ext.default_model = 'minilm'")
        c.execute("CREATE SCHEMA app")
        c.execute("CREATE TABLE app.gen (id serial PRIMARY KEY, body text, "
                  "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)")
        c.execute("CREATE TABLE gen_default (id serial PRIMARY KEY, body text, "
                  "embedding vector(384) GENERATED ALWAYS AS (embed(body)) STORED)")
        c.execute("CREATE TABLE att (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO att SELECT i, 'attached row ' || i FROM generate_series(1, 30) i")
        assert c.execute("SELECT fastembed_ext.attach_embedding('att', 'body', 'embedding', 'minilm')").fetchone() == (30,)
        c.execute("INSERT INTO att VALUES (31, 'inserted under 0.1.0')")
        for t in ("app.gen", "gen_default"):
            c.execute(f"INSERT INTO {t} (body) SELECT 'generated row ' || i FROM generate_series(1, 20) i")
        c.execute("CREATE INDEX att_hnsw ON att USING hnsw (embedding vector_cosine_ops)")
        before = {t: _vectors(c, t) for t in ("att", "app.gen", "gen_default")}
    assert len(before["att"]) == 31

    with connect(old) as c:  # a backend of its own, as `pg install` runs it
        c.execute("ALTER EXTENSION fastembed_ext UPDATE")

    with connect(old) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'fastembed_ext'").fetchone() == (
            fastembed_ext.__version__,)
        for t, vectors in before.items():
            after = _vectors(c, t)
            assert after.keys() == vectors.keys()
            assert all(np.array_equal(after[b], v) for b, v in vectors.items()), t
        # the registry and the default moved into 0.2.0's registry, pinned
        assert c.execute("SELECT name, path, fingerprint, is_default FROM fastembed_ext.models").fetchall() == [
            ("minilm", minilm_bundle_path, fastembed_ext.Encoder(minilm_bundle_path).fingerprint, True)]
        assert c.execute(
            "SELECT count(*) FROM pg_db_role_setting s, unnest(s.setconfig) cfg "
            "WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = 'fe_upgrade') "
            "AND cfg LIKE 'fastembed_ext.default_model=%'").fetchone() == (0,)
        # the attached table got 0.2.0's trigger function; writes still embed
        assert c.execute("SELECT tbl::text, source_column, key_column, model, mode FROM fastembed_ext.attachments"
                         ).fetchall() == [("att", "body", "id", "minilm", "sync")]
        assert {r[0] for r in c.execute("SELECT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
                                        "WHERE t.tgrelid = 'att'::regclass")} == {
            "_embed_rows_" + str(c.execute("SELECT id FROM fastembed_ext.attachments").fetchone()[0])}
        c.execute("INSERT INTO att VALUES (32, 'inserted under 0.2.0')")
        c.execute("UPDATE att SET body = 'updated under 0.2.0' WHERE id = 1")
        for t in ("app.gen", "gen_default"):
            c.execute(f"INSERT INTO {t} (body) VALUES ('generated under 0.2.0')")
        for t in ("att", "app.gen", "gen_default"):
            got = _vectors(c, t)
            bodies = sorted(got)
            want = encoder.encode(bodies)
            assert np.abs(np.stack([got[b] for b in bodies]) - want).max() < 1e-5, t
        c.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN SELECT id FROM att ORDER BY embedding <=> embed('attached', 'minilm') LIMIT 3"))
        assert "Index Scan using att_hnsw" in plan
        upgraded = _shape(c)

    fresh = new_database("fe_fresh")
    with connect(fresh) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
        assert _shape(c) == upgraded


def test_update_of_a_checkpoint_registration(old_release, new_database, library_root, minilm_bundle_path,
                                             minilm_path):
    """0.1.0 registered checkpoint folders; 0.2.0 loads only bundles. The bare update refuses with
    the way out, and `pg install` exports the checkpoint first and updates."""
    old = new_database("fe_upgrade_ckpt")
    _create_at_0_1_0(old, library_root / fastembed_ext.__version__, minilm_bundle_path)
    with connect(old) as c:
        c.execute("INSERT INTO fastembed_ext.model_registry (name, path, dim, similarity, max_seq_length) "
                  "VALUES ('ckpt', %s, 384, 'cosine', 256)", (str(minilm_path),))
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as ei:
            c.execute("ALTER EXTENSION fastembed_ext UPDATE")
        assert 'model "ckpt" is registered from' in ei.value.diag.message_primary
        assert "fastembed-ext pg install" in ei.value.diag.message_hint
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'fastembed_ext'").fetchone() == (OLD,)
    report = install(old, library_root=library_root, log=lambda *_: None)
    assert report.updated_from == OLD
    with connect(old) as c:
        path, = c.execute("SELECT path FROM fastembed_ext.models WHERE name = 'ckpt'").fetchone()
        assert Path(path).parent == library_root / "models" and Path(path, "fastembed_ext.json").is_file()
        assert c.execute("SELECT vector_dims(embed('x', 'ckpt'))").fetchone() == (384,)


def test_update_refuses_what_0_2_0_cannot_carry_over(old_release, new_database, library_root, minilm_bundle_path):
    """A 0.1.0 attachment to a model path, or a default that names no registered model, stops the
    update with what to do; nothing is silently dropped."""
    old = new_database("fe_upgrade_refused")
    _create_at_0_1_0(old, library_root / fastembed_ext.__version__, minilm_bundle_path)
    with connect(old) as c:
        c.execute("CREATE TABLE t (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('t', 'body', 'embedding', %s)", (minilm_bundle_path,))
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as ei:
            c.execute("ALTER EXTENSION fastembed_ext UPDATE")
        assert f'attached with model "{minilm_bundle_path}", which is not a registered name' in ei.value.diag.message_primary
        c.execute("SELECT fastembed_ext.detach_embedding('t', 'embedding')")
        c.execute("ALTER DATABASE fe_upgrade_refused SET fastembed_ext.default_model = 'nowhere'")
    with connect(old) as c:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as ei:
            c.execute("ALTER EXTENSION fastembed_ext UPDATE")
        assert ei.value.diag.message_primary.endswith('default model "nowhere" is not a registered name')
        c.execute("ALTER DATABASE fe_upgrade_refused SET fastembed_ext.default_model = 'minilm'")
    with connect(old) as c:
        c.execute("ALTER EXTENSION fastembed_ext UPDATE")
        assert c.execute("SELECT name FROM fastembed_ext.models WHERE is_default").fetchone() == ("minilm",)


def test_scripts_come_from_one_source():
    """The version is the package's; each script is migrations plus the one api.sql, its PL/Python
    bodies all the one generated body."""
    version = fastembed_ext.__version__
    files = scripts.extension_files()
    install_name, upgrade_name = f"fastembed_ext--{version}.sql", f"fastembed_ext--{OLD}--{version}.sql"
    assert set(files) == {"fastembed_ext.control", install_name, upgrade_name,
                          *(f"fastembed_ext--{old}--{version}.sql" for old in list(scripts.migrations())[1:-1])}
    assert files["fastembed_ext.control"].count("default_version") == 1
    assert f"default_version = '{version}'" in files["fastembed_ext.control"]
    api = (scripts.SOURCE_DIR / "api.sql").read_text()
    migrations = {v: p.read_text() for v, p in scripts.migrations().items()}
    assert list(migrations)[-1] == version
    for name, included in ((install_name, list(migrations)), (upgrade_name, list(migrations)[1:])):
        text = files[name]
        bodies = sum(src.count("$python$") // 2 for src in [api, *(migrations[v] for v in included)])
        assert bodies > 10 and "$python$" not in text
        assert text.count(f'GD.get("fastembed_ext {version}")') == bodies
        assert text.count("import sys") == 1  # the loader, once
    # no SQL source names the version: it comes from the package
    assert version not in api and version not in (scripts.SOURCE_DIR / "fastembed_ext.control").read_text()


@pytest.fixture
def library_root_setting(_session_conn, library_root):
    """Points the cluster's fastembed_ext.library_root elsewhere for one test, then back."""

    def point(root: Path) -> None:
        _session_conn.execute(sql.SQL("ALTER SYSTEM SET fastembed_ext.library_root = {}").format(sql.Literal(str(root))))

    yield point
    point(library_root)


def test_a_missing_or_mismatched_library_is_named(new_database, library_root_setting, library_root, pg_root):
    version = fastembed_ext.__version__
    d = new_database("fe_library")
    with connect(d) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
    empty = pg_root / "no-library"
    empty.mkdir(exist_ok=True)
    library_root_setting(empty)
    with connect(d) as c:  # a new backend finds no library for its version
        with pytest.raises(psycopg.errors.UndefinedFile) as ei:
            c.execute("SELECT fastembed_ext.version()")
    diag = ei.value.diag
    assert diag.message_primary == f"fastembed_ext: cannot load the Python library of fastembed_ext {version}"
    assert f"(library directory: {empty / version})" in diag.message_detail
    assert "fastembed-ext pg install" in diag.message_hint and "fastembed_ext.library_root" in diag.message_hint

    # a library of another version where this version's belongs
    other = pg_root / "other-library" / version / "fastembed_ext"
    shutil.rmtree(other.parent.parent, ignore_errors=True)
    shutil.copytree(library_root / version, other.parent, copy_function=os.link)  # hard links: quick
    manifest = other.parent / "fastembed_ext.library.json"
    recorded = json.loads(manifest.read_text())
    manifest.unlink()  # not written through: the link shares the real library's file
    manifest.write_text(json.dumps({**recorded, "version": "0.1.9"}))
    library_root_setting(other.parent.parent)
    with connect(d) as c:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as ei:
            c.execute("SELECT embed('x', 'minilm')")
    diag = ei.value.diag
    assert diag.message_primary == (f"fastembed_ext: the extension's functions are fastembed_ext {version}, but "
                                    "the Python library this backend imported is 0.1.9")
    assert str(other / "__init__.py") in diag.message_detail and "reconnect" in diag.message_hint


def test_only_the_clusters_configuration_says_where_the_library_is(roles, _session_conn, library_root, pg_root):
    """The library runs as the server: a session's SET of fastembed_ext.library_root is ignored,
    whether the cluster's configuration sets it or not. (Once removed from the configuration, the
    setting stays defined, empty, until the cluster restarts; a cluster that never had it skips
    reading the files in _load().)"""
    version = fastembed_ext.__version__
    planted = pg_root / "planted-library"
    package = planted / version / "fastembed_ext"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("raise RuntimeError('the planted library was imported')\n")
    for path in (planted, planted / version, package):
        path.chmod(0o755)
    (package / "__init__.py").chmod(0o644)
    root = "SELECT fastembed_ext._library_root()"
    with connect(roles["fe_reader"]) as c:  # a new backend: the library is not loaded yet
        c.execute("SELECT set_config('fastembed_ext.library_root', %s, false)", (str(planted),))
        assert c.execute(root).fetchone() == (str(library_root),)
        assert c.execute("SELECT fastembed_ext.version()").fetchone() == (version,)
    _session_conn.execute("ALTER SYSTEM RESET fastembed_ext.library_root")
    _session_conn.execute("SELECT pg_reload_conf()")
    try:
        with connect(roles["fe_reader"]) as c:
            assert c.execute(root).fetchone() == (None,)
            c.execute("SELECT set_config('fastembed_ext.library_root', %s, false)", (str(planted),))
            assert c.execute(root).fetchone() == (None,)
    finally:
        _session_conn.execute(sql.SQL("ALTER SYSTEM SET fastembed_ext.library_root = {}").format(
            sql.Literal(str(library_root))))
        _session_conn.execute("SELECT pg_reload_conf()")
        shutil.rmtree(planted)


PREVIOUS = "0.2.0"


def _frozen_release(version: str, library_root: Path):
    """`version`'s install script in the server's extension directory, and a library recorded as
    `version` (this one: it serves that release's SQL functions, whose names and arguments it keeps)."""
    target = SHARE / f"fastembed_ext--{version}.sql"
    shutil.copyfile(FROZEN.with_name(target.name), target)
    library = library_root / version
    shutil.rmtree(library, ignore_errors=True)
    shutil.copytree(library_root / fastembed_ext.__version__, library, copy_function=os.link)
    manifest = library / "fastembed_ext.library.json"
    recorded = json.loads(manifest.read_text())
    manifest.unlink()  # not written through: the link shares the real library's file
    manifest.write_text(json.dumps({**recorded, "version": version}))
    yield
    target.unlink()
    shutil.rmtree(library, ignore_errors=True)


@pytest.fixture
def previous_release(dsn, library_root):
    yield from _frozen_release(PREVIOUS, library_root)


@pytest.fixture
def release_0_3_0(dsn, library_root):
    yield from _frozen_release("0.3.0", library_root)


@pytest.fixture
def release_0_3_1(dsn, library_root):
    yield from _frozen_release("0.3.1", library_root)


def _database_at(new_database, version: str, name: str, minilm_bundle_path: str) -> tuple[str, str]:
    """A new database at `version` with MiniLM registered, where fe_owner may create tables:
    (its DSN, fe_owner's DSN)."""
    old = new_database(name)
    with connect(old) as c:
        c.execute(f"CREATE EXTENSION fastembed_ext VERSION '{version}' CASCADE")
        c.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm_bundle_path,))
        c.execute("GRANT CREATE ON SCHEMA public TO fe_owner")
    return old, old.replace(f"dbname={name}", f"dbname={name} user=fe_owner")


def _assert_like_a_fresh_install(new_database, upgraded_dsn: str, name: str) -> None:
    with connect(upgraded_dsn) as c:
        upgraded = _shape(c)
    with connect(new_database(name)) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
        assert _shape(c) == upgraded


def test_update_from_0_2_0_keeps_attachments_and_adds_async(previous_release, new_database, roles,
                                                            minilm_bundle_path, encoder):
    old = new_database("fe_upgrade_020")
    with connect(old) as c:
        c.execute(f"CREATE EXTENSION fastembed_ext VERSION '{PREVIOUS}' CASCADE")
        c.execute("SELECT fastembed_ext.register_model('minilm', %s)", (minilm_bundle_path,))
        c.execute("SELECT fastembed_ext.set_default_model('minilm')")
        c.execute("GRANT CREATE ON SCHEMA public TO fe_owner")
    with connect(old.replace("dbname=fe_upgrade_020", "dbname=fe_upgrade_020 user=fe_owner")) as c:
        c.execute("CREATE TABLE att (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO att SELECT i, 'attached row ' || i FROM generate_series(1, 30) i")
        assert c.execute("SELECT fastembed_ext.attach_embedding('att', 'body', 'embedding', 'minilm')").fetchone() == (30,)
        c.execute("CREATE TABLE gen (id serial PRIMARY KEY, body text, "
                  "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)")
        c.execute("INSERT INTO gen (body) SELECT 'generated row ' || i FROM generate_series(1, 20) i")
        c.execute("CREATE INDEX att_hnsw ON att USING hnsw (embedding vector_cosine_ops)")
        before = {t: _vectors(c, t) for t in ("att", "gen")}

    with connect(old) as c:
        c.execute("ALTER EXTENSION fastembed_ext UPDATE")

    with connect(old.replace("dbname=fe_upgrade_020", "dbname=fe_upgrade_020 user=fe_owner")) as c:
        assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'fastembed_ext'").fetchone() == (
            fastembed_ext.__version__,)
        for t, vectors in before.items():
            after = _vectors(c, t)
            assert after.keys() == vectors.keys() and all(np.array_equal(after[b], v) for b, v in vectors.items())
        c.execute("INSERT INTO att VALUES (31, 'inserted after the update')")
        c.execute("UPDATE att SET body = 'updated after the update' WHERE id = 1")
        got = _vectors(c, "att")
        bodies = sorted(got)
        assert np.abs(np.stack([got[b] for b in bodies]) - encoder.encode(bodies)).max() < 1e-5
        # the same table can now go async, and its writes queue
        c.execute("SELECT fastembed_ext.attach_embedding('att', 'body', 'embedding', 'minilm', mode => 'async')")
        c.execute("INSERT INTO att VALUES (32, 'queued')")
        assert c.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'att'::regclass").fetchone() == (1,)
        c.execute("SELECT fastembed_ext.attach_embedding('att', 'body', 'embedding', 'minilm')")
        assert c.execute("SELECT embedding IS NOT NULL FROM att WHERE id = 32").fetchone() == (True,)
        c.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN SELECT id FROM att ORDER BY embedding <=> embed('attached', 'minilm') LIMIT 3"))
        assert "Index Scan using att_hnsw" in plan
    with connect(old) as c:
        upgraded = _shape(c)
    fresh = new_database("fe_fresh_020")
    with connect(fresh) as c:
        c.execute("CREATE EXTENSION fastembed_ext CASCADE")
        assert _shape(c) == upgraded


def test_update_from_0_3_0_converts_pending_queues_to_the_key_type(release_0_3_0, new_database, roles,
                                                                  minilm_bundle_path, encoder):
    """0.3.0's queues hold keys as text; the update converts them, pending and retrying jobs and
    failed rows kept, to the key column's type, and a worker drains them into the right rows."""
    from fastembed_ext.pg.worker import WorkerOptions, run_worker

    old, owner = _database_at(new_database, "0.3.0", "fe_upgrade_030", minilm_bundle_path)
    with connect(owner) as c:
        c.execute("CREATE TABLE q (id bigint PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO q SELECT i, 'queued row ' || i FROM generate_series(1, 150) i")
        c.execute("SELECT fastembed_ext.attach_embedding('q', 'body', 'embedding', 'minilm', mode => 'async')")
        c.execute("INSERT INTO q SELECT i, 'inserted row ' || i FROM generate_series(151, 300) i")
        c.execute("UPDATE q SET body = 'updated row 5' WHERE id = 5")
        c.execute("CREATE TABLE s (code text PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('s', 'body', 'embedding', 'minilm', mode => 'async')")
        c.execute("INSERT INTO s VALUES ('a', 'text keyed a'), ('b', 'text keyed b')")
        att = c.execute("SELECT id FROM fastembed_ext.attachments WHERE tbl = 'q'::regclass").fetchone()[0]
        # a failed row, as 0.3.0's worker leaves one: out of its job, into the failed table
        c.execute(f"UPDATE fastembed_ext.queue_{att} SET keys = array_remove(keys, '9') WHERE '9' = ANY (keys)")
        c.execute(f"INSERT INTO fastembed_ext.failed_{att} (key, error, attempts) VALUES ('9', 'it failed', 5)")
        before = c.execute("SELECT tbl::text, backlog, failed FROM fastembed_ext.queue_status ORDER BY 1").fetchall()
        assert before == [("q", 300, 1), ("s", 2, 0)]

    with connect(old) as c:
        c.execute("ALTER EXTENSION fastembed_ext UPDATE")

    with connect(owner) as c:
        assert c.execute("SELECT tbl::text, backlog, failed FROM fastembed_ext.queue_status ORDER BY 1").fetchall() == before
        types = c.execute("SELECT c.relname, format_type(a.atttypid, a.atttypmod) FROM fastembed_ext.attachments x "
                          "JOIN pg_class c ON c.relname = 'queue_' || x.id JOIN pg_attribute a ON a.attrelid = c.oid "
                          "AND a.attname = 'keys' ORDER BY x.tbl::text").fetchall()
        assert [t for _, t in types] == ["bigint[]", "text[]"]
        assert c.execute("SELECT fastembed_ext.retry_failed('q', 'embedding')").fetchone() == (1,)
        c.execute("INSERT INTO q VALUES (301, 'inserted after the update')")
    report = run_worker(WorkerOptions(dsn=old, once=True), log=lambda line: None)
    assert report.embedded >= 303 and report.failed == 0  # a key queued twice may be embedded twice
    with connect(owner) as c:
        for t in ("q", "s"):
            got = _vectors(c, t)
            bodies = sorted(got)
            assert np.abs(np.stack([got[b] for b in bodies]) - encoder.encode(bodies)).max() < 1e-5
        assert c.execute("SELECT body FROM q WHERE id = 5").fetchone() == ("updated row 5",)
        assert c.execute("SELECT backlog, failed FROM fastembed_ext.queue_status WHERE tbl = 'q'::regclass").fetchone() == (0, 0)
        c.execute("DROP TABLE q, s")  # with their queues: the fresh database below has none
    with connect(old) as c:
        assert c.execute("SELECT array_agg(relname) FROM pg_class WHERE relnamespace = 'fastembed_ext'::regnamespace "
                         "AND relname ~ '^(queue|failed)_[0-9]+$'").fetchone() == (None,)
    _assert_like_a_fresh_install(new_database, old, "fe_fresh_030")


def test_update_from_0_3_1_rebuilds_async_triggers_that_notify_once_a_quarter_second(
        release_0_3_1, new_database, roles, minilm_bundle_path, encoder):
    """0.3.1's async triggers NOTIFY on every write; after the update each attachment's trigger
    sends one per session per quarter second, its pending jobs are kept, and a worker drains them."""
    from fastembed_ext.pg.worker import WorkerOptions, run_worker

    old, owner = _database_at(new_database, "0.3.1", "fe_upgrade_031", minilm_bundle_path)
    with connect(owner) as c:
        c.execute("CREATE TABLE q (id bigint PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('q', 'body', 'embedding', 'minilm', mode => 'async')")
        c.execute("INSERT INTO q SELECT i, 'queued row ' || i FROM generate_series(1, 100) i")
        c.execute("CREATE TABLE s (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO s VALUES (1, 'a synchronously attached row')")
        c.execute("SELECT fastembed_ext.attach_embedding('s', 'body', 'embedding', 'minilm')")
        assert c.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'q'::regclass").fetchone() == (100,)

    with connect(old) as c:
        c.execute("ALTER EXTENSION fastembed_ext UPDATE")

    with connect(owner) as listener, connect(owner) as c:
        listener.execute("LISTEN fastembed_ext_queue")
        for i in range(101, 121):
            c.execute("INSERT INTO q VALUES (%s, %s)", (i, f"inserted after the update {i}"))
        notified = sum(1 for _ in listener.notifies(timeout=0.3))
        assert 1 <= notified < 20
        assert c.execute("SELECT backlog FROM fastembed_ext.queue_status WHERE tbl = 'q'::regclass").fetchone() == (120,)
        c.execute("INSERT INTO s VALUES (2, 'inserted after the update')")
    report = run_worker(WorkerOptions(dsn=old, once=True), log=lambda line: None)
    assert report.embedded == 120 and report.failed == 0
    with connect(owner) as c:
        for t in ("q", "s"):
            got = _vectors(c, t)
            bodies = sorted(got)
            assert len(bodies) == (120 if t == "q" else 2)
            assert np.abs(np.stack([got[b] for b in bodies]) - encoder.encode(bodies)).max() < 1e-5
        c.execute("DROP TABLE q, s")
    _assert_like_a_fresh_install(new_database, old, "fe_fresh_031")
