"""The privilege model, action by action and role by role, as a team's roles use it.

fe_owner owns the tables; fe_writer may only INSERT (and SELECT) on them, fe_reader only SELECT;
fe_admin is a member of fastembed_ext_admin; fe_stranger owns nothing here. No role is a superuser.
Each case runs as that role and checks the outcome: rows read back, or the error's SQLSTATE and
the hint a user reads.
"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest
from conftest import connect
from pg_helpers import assert_same_vectors

OK = None
TABLES = ("r_att", "r_gen")


@pytest.fixture(scope="module")
def owned(roles, _session_conn):
    """Tables of fe_owner: r_att attached (sync) with an HNSW index, r_gen with a generated column."""
    with connect(roles["fe_owner"]) as c:
        for t in TABLES:
            c.execute(f"DROP TABLE IF EXISTS {t}")
        c.execute("CREATE TABLE r_att (id bigserial PRIMARY KEY, body text, embedding vector(384))")
        c.execute("INSERT INTO r_att (body) VALUES ('owned by fe_owner'), ('second row')")
        c.execute("SELECT fastembed_ext.attach_embedding('r_att', 'body', 'embedding', 'minilm')")
        c.execute("SELECT fastembed_ext.create_embedding_index('r_att', 'embedding')")
        c.execute("CREATE TABLE r_gen (id bigserial PRIMARY KEY, body text, "
                  "embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED)")
        for t in TABLES:
            c.execute(f"GRANT SELECT, INSERT ON {t} TO fe_writer")
            c.execute(f"GRANT USAGE ON SEQUENCE {t}_id_seq TO fe_writer")
            c.execute(f"GRANT SELECT ON {t} TO fe_reader, fe_stranger")
    yield
    with connect(roles["fe_owner"]) as c:
        for t in TABLES:
            c.execute(f"DROP TABLE IF EXISTS {t}")


def _insert_is_embedded(c, table: str, encoder) -> None:
    text = f"written by {c.info.user} into {table}"
    c.execute(f"INSERT INTO {table} (body) VALUES (%s)", (text,))
    vec = c.execute(f"SELECT embedding::real[] FROM {table} WHERE body = %s", (text,)).fetchone()[0]
    assert_same_vectors(np.asarray(vec, np.float32), encoder.encode(text))


def _search(c, table: str, encoder) -> None:
    hits = c.execute(f"SELECT key FROM fastembed_ext.search('{table}', 'embedding', 'owned', 1)").fetchall()
    assert hits == [("1",)]


# (action name, SQL or callable, {role: expected}); expected is OK, or (sqlstate, text in the hint)
ALL = ("fe_owner", "fe_writer", "fe_reader", "fe_admin", "fe_stranger")
ADMIN_ONLY = ("42501", "GRANT fastembed_ext_admin")
NOT_OWNER = ("42501", "Ask the owner of public.r_")

CASES = [
    ("embed with a registered model", "SELECT vector_dims(embed('x', 'minilm'))", dict.fromkeys(ALL, OK)),
    ("embed with the default model", "SELECT vector_dims(embed('x'))", dict.fromkeys(ALL, OK)),
    ("embed with a bundle path", "SELECT vector_dims(embed('x', %(bundle)s))",
     {**dict.fromkeys(ALL, ("42501", "register_model")), "fe_admin": OK}),
    ("register a model", "SELECT name FROM fastembed_ext.register_model('r_extra', %(bundle)s)",
     {**{r: ("42501", f"GRANT fastembed_ext_admin TO {r}") for r in ALL}, "fe_admin": OK}),
    ("set the default model", "SELECT fastembed_ext.set_default_model('minilm')",
     {**dict.fromkeys(ALL, ADMIN_ONLY), "fe_admin": OK}),
    ("unregister a model", "SELECT fastembed_ext.unregister_model('r_extra')",
     {**dict.fromkeys(ALL, ADMIN_ONLY), "fe_admin": OK}),
    ("call the admins' inner function directly", "SELECT fastembed_ext._register_model('x', %(bundle)s)",
     dict.fromkeys(("fe_owner", "fe_writer", "fe_reader", "fe_stranger"), ("42501", None))),
    ("insert into an attached table", lambda c, enc: _insert_is_embedded(c, "r_att", enc),
     {**dict.fromkeys(ALL, ("42501", None)), "fe_writer": OK, "fe_owner": OK}),
    ("insert into a generated-column table", lambda c, enc: _insert_is_embedded(c, "r_gen", enc),
     {**dict.fromkeys(ALL, ("42501", None)), "fe_writer": OK, "fe_owner": OK}),
    ("search an attached table", lambda c, enc: _search(c, "r_att", enc),
     {**dict.fromkeys(ALL, OK), "fe_admin": ("42501", None)}),
    ("attach someone else's table", "SELECT fastembed_ext.attach_embedding('r_gen', 'body', 'id', 'minilm')",
     dict.fromkeys(("fe_writer", "fe_reader", "fe_admin", "fe_stranger"), NOT_OWNER)),
    ("detach someone else's table", "SELECT fastembed_ext.detach_embedding('r_att', 'embedding')",
     dict.fromkeys(("fe_writer", "fe_reader", "fe_admin", "fe_stranger"), NOT_OWNER)),
    ("edit the attachments directly", "DELETE FROM fastembed_ext.attachments WHERE tbl = 'r_att'::regclass",
     dict.fromkeys(("fe_writer", "fe_reader", "fe_admin", "fe_stranger"), ("42501", "Only the owner of a table"))),
    ("index someone else's table", "SELECT fastembed_ext.create_embedding_index('r_gen', 'embedding')",
     dict.fromkeys(("fe_writer", "fe_reader", "fe_admin", "fe_stranger"), ("42501", None))),
    ("set fastembed_ext.threads past the CPUs", "SET fastembed_ext.threads = 64; SELECT embed('x', 'minilm')",
     dict.fromkeys(ALL, ("22023", "RESET fastembed_ext.threads"))),
]


def _params(case):
    name, _, expected = case
    return [pytest.param(case, role, id=f"{name} as {role}") for role in expected]


@pytest.mark.parametrize("case, role", [p for case in CASES for p in _params(case)])
def test_role_matrix(case, role, roles, owned, encoder, minilm_bundle_path, _session_conn):
    _, action, expected = case
    with connect(roles[role]) as c:
        run = (lambda: action(c, encoder)) if callable(action) else (
            lambda: [c.execute(part, {"bundle": minilm_bundle_path}) for part in action.split("; ")])
        if expected[role] is OK:
            run()
            return
        sqlstate, hint = expected[role]
        with pytest.raises(psycopg.Error) as ei:
            run()
        assert ei.value.diag.sqlstate == sqlstate, ei.value.diag.message_primary
        if hint is not None:
            assert hint in (ei.value.diag.message_hint or ""), ei.value.diag.message_hint


def test_owner_attaches_indexes_detaches_and_drops_its_tables(roles, encoder, _session_conn):
    """Everything a table owner does with its own table, ending with DROP TABLE (which 0.1.0's
    event trigger broke for every non-superuser)."""
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS r_own")
        c.execute("CREATE TABLE r_own (id int PRIMARY KEY, body text, extra text, embedding vector(384))")
        c.execute("INSERT INTO r_own VALUES (1, 'mine', 'x')")
        assert c.execute("SELECT fastembed_ext.attach_embedding('r_own', 'body', 'embedding', 'minilm')").fetchone() == (1,)
        c.execute("SELECT fastembed_ext.create_embedding_index('r_own', 'embedding')")
        c.execute("ALTER TABLE r_own DROP COLUMN extra")  # an unrelated column
        assert c.execute("SELECT fastembed_ext.detach_embedding('r_own', 'embedding')").fetchone() == (True,)
        c.execute("SELECT fastembed_ext.attach_embedding('r_own', 'body', 'embedding', 'minilm')")
        c.execute("DROP TABLE r_own")
        c.execute("CREATE TABLE r_own2 (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('r_own2', 'body', 'embedding', 'minilm')")
        c.execute("ALTER TABLE r_own2 DROP COLUMN body CASCADE")  # (its UPDATE OF triggers name it)
        c.execute("DROP TABLE r_own2")
    assert _session_conn.execute(
        "SELECT count(*) FROM fastembed_ext.attachments WHERE tbl::text LIKE 'r_own%'").fetchone() == (0,)


def test_writer_rows_are_written_with_the_owners_rights(roles, owned, _session_conn):
    """The vectors of an INSERT-only writer's rows are written by the owner's trigger function:
    the writer still may not UPDATE, and the function belongs to the owner."""
    owner = _session_conn.execute(
        "SELECT p.proowner::regrole::text, p.prosecdef FROM fastembed_ext.attachments a "
        "JOIN pg_proc p ON p.proname = '_embed_rows_' || a.id WHERE a.tbl = 'r_att'::regclass").fetchone()
    assert owner == ("fe_owner", True)
    with connect(roles["fe_writer"]) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("UPDATE r_att SET body = 'no'")


def test_changing_a_tables_owner_moves_its_trigger_function(roles, _session_conn):
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS r_moved")
        c.execute("CREATE TABLE r_moved (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("SELECT fastembed_ext.attach_embedding('r_moved', 'body', 'embedding', 'minilm')")
    _session_conn.execute("ALTER TABLE r_moved OWNER TO fe_stranger")
    owner = _session_conn.execute(
        "SELECT p.proowner::regrole::text FROM fastembed_ext.attachments a "
        "JOIN pg_proc p ON p.proname = '_embed_rows_' || a.id WHERE a.tbl = 'r_moved'::regclass").fetchone()
    assert owner == ("fe_stranger",)
    with connect(roles["fe_stranger"]) as c:
        c.execute("INSERT INTO r_moved VALUES (1, 'the new owner writes')")
        assert c.execute("SELECT embedding IS NOT NULL FROM r_moved").fetchone() == (True,)
        c.execute("DROP TABLE r_moved")


def test_the_loader_takes_only_a_version(roles, pg_root):
    """_load(version) must be callable by everyone (every function body calls it): it refuses
    anything but a version, so no role can point the server's imports at a directory of its own."""
    planted = pg_root / "planted" / "fastembed_ext"
    planted.mkdir(parents=True, exist_ok=True)
    (planted / "__init__.py").write_text("raise SystemExit('imported the planted package')\n")
    with connect(roles["fe_stranger"]) as c:
        for version in (str(planted.parent), "../../planted", "0.2.0/../../x", "0.2"):
            with pytest.raises(psycopg.errors.InvalidParameterValue) as ei:
                c.execute("SELECT fastembed_ext._load(%s)", (version,))
            assert "is not a fastembed_ext version" in ei.value.diag.message_primary
        assert c.execute("SELECT vector_dims(embed('x', 'minilm'))").fetchone() == (384,)


def test_attachment_rows_are_the_owners_own(roles, owned, _session_conn):
    """Nobody writes an attachment for a table that is not theirs, that does not exist yet, or
    with an id or author of their choosing; a row someone else wrote is never installed."""
    future = _session_conn.execute("SELECT max(oid::int8) + 50 FROM pg_class").fetchone()[0]
    with connect(roles["fe_stranger"]) as c:
        with pytest.raises(psycopg.errors.WrongObjectType):
            c.execute("INSERT INTO fastembed_ext.attachments (tbl, vector_column, source_column, key_column, model) "
                      "VALUES (%s::oid::regclass, 'v', 's', 'k', 'minilm')", (future,))
        c.execute("DROP TABLE IF EXISTS r_mine")
        c.execute("CREATE TABLE r_mine (id int PRIMARY KEY, body text, embedding vector(384))")
        row = c.execute("INSERT INTO fastembed_ext.attachments (id, tbl, vector_column, source_column, key_column, "
                        "model, attached_by) VALUES (999999, 'r_mine', 'embedding', 'body', 'id', 'minilm', 'fe_owner') "
                        "RETURNING id, attached_by").fetchone()
        assert row[0] != 999999 and row[1] == "fe_stranger"
        c.execute("DELETE FROM fastembed_ext.attachments WHERE id = %s", (row[0],))
        c.execute("DROP TABLE r_mine")
    # a row whose author does not own the table (as a dropped table's row could end up) is not installed
    _session_conn.execute("INSERT INTO fastembed_ext.attachments (id, tbl, vector_column, source_column, key_column, "
                          "model, attached_by) VALUES (888888, 'r_gen', 'embedding', 'body', 'id', 'minilm', 'fe_stranger')")
    try:
        with connect(roles["fe_stranger"]) as c, pytest.raises(psycopg.errors.InsufficientPrivilege) as ei:
            c.execute("SELECT fastembed_ext._install_attachment(888888)")
        assert "was not made by the owner of public.r_gen" in ei.value.diag.message_primary
    finally:
        _session_conn.execute("DELETE FROM fastembed_ext.attachments WHERE id = 888888")


def test_the_owners_triggers_do_not_resolve_names_in_the_writers_temp_schema(roles, owned, _session_conn):
    """The vector UPDATE runs the table's other triggers with the owner's rights, under the
    owner's search_path with pg_temp last: a writer's temporary table cannot capture their names."""
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS r_audit")
        c.execute("CREATE TABLE r_audit (id bigint, note text)")
        c.execute("""CREATE OR REPLACE FUNCTION r_audit_update() RETURNS trigger LANGUAGE plpgsql AS $$
                     BEGIN INSERT INTO r_audit VALUES (NEW.id, 'vector written'); RETURN NEW; END $$""")
        c.execute("CREATE TRIGGER r_audit AFTER UPDATE ON r_att FOR EACH ROW EXECUTE FUNCTION r_audit_update()")
    try:
        with connect(roles["fe_writer"]) as c:
            c.execute("CREATE TEMP TABLE r_audit (id bigint, note text)")
            c.execute("INSERT INTO r_att (body) VALUES ('audited row')")
            assert c.execute("SELECT count(*) FROM pg_temp.r_audit").fetchone() == (0,)
        assert _session_conn.execute("SELECT note FROM public.r_audit").fetchall() == [("vector written",)]
    finally:
        with connect(roles["fe_owner"]) as c:
            c.execute("DROP TRIGGER r_audit ON r_att")
            c.execute("DROP TABLE r_audit")
            c.execute("DROP FUNCTION r_audit_update()")


def test_tables_whose_triggers_would_miss_rows_are_refused(roles):
    with connect(roles["fe_owner"]) as c:
        c.execute("DROP TABLE IF EXISTS r_parted, r_parent CASCADE")
        c.execute("CREATE TABLE r_parted (id int, body text, embedding vector(384), PRIMARY KEY (id)) PARTITION BY RANGE (id)")
        c.execute("CREATE TABLE r_parent (id int PRIMARY KEY, body text, embedding vector(384))")
        c.execute("CREATE TABLE r_child (PRIMARY KEY (id)) INHERITS (r_parent)")
        c.execute("CREATE TEMP TABLE r_temp (id int PRIMARY KEY, body text, embedding vector(384))")
        for table, why in (("r_parted", "partitioned"), ("r_parent", "a parent of inheriting tables"),
                           ("r_temp", "temporary")):
            with pytest.raises(psycopg.errors.FeatureNotSupported) as ei:
                c.execute("SELECT fastembed_ext.attach_embedding(%s, 'body', 'embedding', 'minilm')", (table,))
            assert ei.value.diag.message_primary.endswith(f"cannot be attached: it is {why}")
            assert "Attach each partition or child table" in ei.value.diag.message_hint
        assert c.execute("SELECT fastembed_ext.attach_embedding('r_child', 'body', 'embedding', 'minilm')").fetchone() == (0,)
        c.execute("DROP TABLE r_parted, r_parent CASCADE")
