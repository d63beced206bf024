\echo Use "CREATE EXTENSION fastembed_ext CASCADE" to load this file. \quit

-- ---- migration 0.1.0 ----
-- 0.1.0: the objects that hold state, exactly as the 0.1.0 install script created them (its
-- functions are not here: sql/api.sql replaces all of them). Frozen: never edit a migration that
-- has been released; add the next one instead.

CREATE SCHEMA fastembed_ext;

CREATE TABLE fastembed_ext.config (
    key   text PRIMARY KEY,
    value text NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('fastembed_ext.config', '');

CREATE TABLE fastembed_ext.model_registry (
    name           text PRIMARY KEY CHECK (name <> '' AND strpos(name, '/') = 0),
    path           text NOT NULL,
    dim            integer NOT NULL CHECK (dim > 0),
    similarity     text NOT NULL CHECK (similarity IN ('cosine', 'dot')),
    max_seq_length integer NOT NULL,
    registered_at  timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('fastembed_ext.model_registry', '');

CREATE TABLE fastembed_ext.attachments (
    table_oid     oid  NOT NULL,
    vector_column name NOT NULL,
    source_column name NOT NULL,
    key_column    name NOT NULL,
    model         text NOT NULL,
    PRIMARY KEY (table_oid, vector_column)
);

GRANT USAGE ON SCHEMA fastembed_ext TO PUBLIC;
GRANT SELECT ON fastembed_ext.config, fastembed_ext.model_registry, fastembed_ext.attachments TO PUBLIC;

-- ---- migration 0.2.0 ----
-- 0.1.0 -> 0.2.0: ordinary roles, pinned models, a registry and attachments that survive
-- pg_dump, and a versioned library. Frozen once released.

-- Loading a model runs its TorchScript in the server: only superusers and members of this role
-- register models, change the default model or embed with a model given by path. Roles are
-- cluster-wide, so a second database's CREATE EXTENSION finds it already there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fastembed_ext_admin') THEN
        CREATE ROLE fastembed_ext_admin NOLOGIN;
    END IF;
END
$$;

-- Backends run libtorch on one thread unless told otherwise; a database-level value makes
-- SHOW answer before any SET, and RESET return to it.
DO $$
BEGIN
    IF pg_catalog.current_setting('fastembed_ext.threads', true) IS NULL THEN
        EXECUTE pg_catalog.format('ALTER DATABASE %I SET fastembed_ext.threads = 1', pg_catalog.current_database());
        PERFORM pg_catalog.set_config('fastembed_ext.threads', '1', false);
    END IF;
END
$$;

-- 0.1.0's functions and event trigger that have no successor of the same signature.
DROP EVENT TRIGGER IF EXISTS fastembed_ext_forget_dropped;
DROP FUNCTION IF EXISTS fastembed_ext._forget_dropped();
DROP FUNCTION IF EXISTS fastembed_ext._system_python_path();
DROP FUNCTION IF EXISTS fastembed_ext._load();
DROP FUNCTION IF EXISTS fastembed_ext.register_model(text, text);
DROP FUNCTION IF EXISTS fastembed_ext.unregister_model(text);
DROP FUNCTION IF EXISTS fastembed_ext.attach_embedding(regclass, name, name, text, name);
DROP VIEW IF EXISTS fastembed_ext.models;

-- Vector columns the extension keeps in step with a text column: 'sync' ones by triggers
-- (attach_embedding), 'manual' ones only recorded (fastembed-ext ingest), so that search and
-- create_embedding_index use the model that made the vectors.
-- The table is a regclass: pg_dump writes it as a name and a restore resolves it to the new table;
-- renames follow it. Column renames are followed by an event trigger (sql/api.sql).
ALTER TABLE fastembed_ext.attachments RENAME TO attachments_0_1_0;
ALTER TABLE fastembed_ext.attachments_0_1_0 RENAME CONSTRAINT attachments_pkey TO attachments_0_1_0_pkey;
CREATE TABLE fastembed_ext.attachments (
    id            serial PRIMARY KEY,  -- the argument of the table's triggers
    tbl           regclass NOT NULL,
    vector_column name NOT NULL,
    source_column name NOT NULL,
    key_column    name NOT NULL,
    model         text NOT NULL,
    mode          text NOT NULL DEFAULT 'sync' CHECK (mode IN ('sync', 'manual')),
    attached_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    attached_by   name NOT NULL DEFAULT current_user,  -- set by the guard trigger, see sql/api.sql
    UNIQUE (tbl, vector_column)
);
INSERT INTO fastembed_ext.attachments (tbl, vector_column, source_column, key_column, model, attached_by)
SELECT a.table_oid::regclass, a.vector_column, a.source_column, a.key_column, a.model,
       (SELECT c.relowner::regrole::name FROM pg_catalog.pg_class c WHERE c.oid = a.table_oid)
FROM fastembed_ext.attachments_0_1_0 a
WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = a.table_oid)
ORDER BY a.table_oid, a.vector_column;
DROP TABLE fastembed_ext.attachments_0_1_0;
SELECT pg_catalog.pg_extension_config_dump('fastembed_ext.attachments', '');
SELECT pg_catalog.pg_extension_config_dump('fastembed_ext.attachments_id_seq', '');

-- Table owners attach their own tables: everyone may write rows, and a trigger (sql/api.sql) lets
-- each role write only rows of tables it owns (row-level security would make pg_dump fail for
-- non-superusers).
GRANT SELECT, INSERT, UPDATE, DELETE ON fastembed_ext.attachments TO PUBLIC;
GRANT USAGE ON SEQUENCE fastembed_ext.attachments_id_seq TO PUBLIC;


-- ---- api.sql ----
-- Everything that can be (re)created in place: functions, views, grants, triggers and event
-- triggers. Both the install script and every upgrade script end with this file.
--
-- A PL/Python body dollar-quoted with the tag "python" holds just a call, `name(args)`: the installer
-- (fastembed_ext/pg/scripts.py) expands it into the same few lines everywhere, which load the
-- library once per backend through fastembed_ext._load() and call `name(plpy, args)` on its
-- backend (fastembed_ext/pg/backend).

-- ------------------------------------------------------------------------------------------------
-- loading the Python library

-- Where the versioned Python libraries live: the cluster's configuration (postgresql.conf or
-- ALTER SYSTEM), never a session's SET, since the library runs as the server. NULL: the default.
CREATE OR REPLACE FUNCTION fastembed_ext._library_root() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT setting FROM pg_catalog.pg_file_settings
    WHERE name = 'fastembed_ext.library_root' AND error IS NULL
    ORDER BY seqno DESC LIMIT 1
$$;

-- The embedding server this database uses (fastembed-ext serve), as its owner or the cluster's
-- configuration says: a database setting (ALTER DATABASE ... SET fastembed_ext.server), else the
-- server's configuration files. Never a session's or a role's own SET: the server's vectors are
-- stored in everyone's tables. NULL or '': embed in the backend.
CREATE OR REPLACE FUNCTION fastembed_ext._server_setting() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT pg_catalog.substr(cfg, 22) FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) cfg
         WHERE s.setrole = 0 AND cfg LIKE 'fastembed\_ext.server=%' AND s.setdatabase =
               (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())),
        (SELECT f.setting FROM pg_catalog.pg_file_settings f
         WHERE f.name = 'fastembed_ext.server' AND f.error IS NULL ORDER BY f.seqno DESC LIMIT 1))
$$;

-- Loads the Python library of `version` (the version these functions were made for) into the
-- backend, once, and keeps its entry point in GD under "fastembed_ext <version>". It never raises:
-- a failure is kept as a stand-in that raises the reason on use (and is then forgotten, so the
-- next call tries again).
CREATE OR REPLACE FUNCTION fastembed_ext._load(version text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
import os
import sys


class fastembed_ext(plpy.Error):
    """PL/Python reports an error as "<class name>: <message>"; this name makes it read as ours."""


fastembed_ext.__module__ = "builtins"


def error(message, detail, hint, sqlstate):
    exc = fastembed_ext(message)
    exc.detail, exc.hint, exc.sqlstate = detail, hint, sqlstate
    return exc


class Unavailable:
    def __init__(self, exc):
        self.exc = exc

    def __getattr__(self, name):
        GD.pop(key, None)  # try again on the next call
        raise self.exc


key = "fastembed_ext " + version
if key in GD:
    return
# the version names a directory under the library root, and nothing else
if not all(part.isdigit() and part.isascii() for part in version.split(".")) or version.count(".") != 2:
    raise error(f'"{version}" is not a fastembed_ext version', None,
                "fastembed_ext._load() is called by the extension's own functions.", "22023")
try:
    root = plpy.execute("SELECT fastembed_ext._library_root() AS root")[0]["root"] or "/usr/local/lib/fastembed_ext"
except plpy.SPIError as exc:
    GD[key] = Unavailable(error("cannot read where the library is installed", str(exc),
                                "Reconnect, or ask a superuser to check the extension.", "55000"))
    return
library = os.path.join(root, version)
if library not in sys.path:
    sys.path.insert(0, library)
try:
    from fastembed_ext.pg import backend
    GD[key] = backend.connect(plpy, version, library)
except plpy.Error as exc:  # refused with its own reason
    GD[key] = Unavailable(exc)
except Exception as exc:
    GD[key] = Unavailable(error(
        f"cannot load the Python library of fastembed_ext {version}",
        f"{type(exc).__name__}: {exc} (library directory: {library})",
        "Run `fastembed-ext pg install --dsn ...` with fastembed_ext " + version + " on the database "
        "server's machine; it installs the library there. Another directory is chosen with the "
        "server setting fastembed_ext.library_root.",
        "58P01",
    ))
$$;

-- The version of the Python library serving this database.
CREATE OR REPLACE FUNCTION fastembed_ext.version() RETURNS text
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.version(plpy)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

-- ------------------------------------------------------------------------------------------------
-- the model registry
--
-- Each registered model is a function fastembed_ext."model:<name>"() returning its record, and the
-- default model is fastembed_ext.default_model(). Functions, not table rows, because pg_dump
-- restores functions before any table data, and a generated column calls embed() for every row it
-- restores; in a table the registry would arrive in the same section as those rows, and
-- pg_restore -j loads them in any order. A function is also replaced without a lock that waits
-- for running statements.

-- The record of model `name` (NULL: the database's default model), or NULL when there is none.
CREATE OR REPLACE FUNCTION fastembed_ext._model(name text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure;
    info jsonb;
BEGIN
    IF name IS NULL THEN
        IF pg_catalog.to_regprocedure('fastembed_ext.default_model()') IS NULL THEN
            RETURN NULL;
        END IF;
        EXECUTE 'SELECT fastembed_ext.default_model()' INTO name;
    END IF;
    IF pg_catalog.octet_length('model:' || name) > 63 THEN
        RETURN NULL;  -- longer names would be truncated onto a registered one
    END IF;
    fn := pg_catalog.to_regprocedure(pg_catalog.format('fastembed_ext.%I()', 'model:' || name));
    IF fn IS NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE pg_catalog.format('SELECT %s', fn) INTO info;
    RETURN info || pg_catalog.jsonb_build_object('name', name);
END
$$;

CREATE OR REPLACE FUNCTION fastembed_ext._models() RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn record;
    info jsonb;
    default_name text;
BEGIN
    IF pg_catalog.to_regprocedure('fastembed_ext.default_model()') IS NOT NULL THEN
        EXECUTE 'SELECT fastembed_ext.default_model()' INTO default_name;
    END IF;
    FOR fn IN
        SELECT p.oid::regprocedure AS sig, pg_catalog.substr(p.proname, 7) AS name
        FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'fastembed_ext'::regnamespace AND p.proname LIKE 'model:%' AND p.pronargs = 0
        ORDER BY p.proname
    LOOP
        EXECUTE pg_catalog.format('SELECT %s', fn.sig) INTO info;
        RETURN NEXT info || pg_catalog.jsonb_build_object(
            'name', fn.name, 'is_default', fn.name IS NOT DISTINCT FROM default_name);
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW fastembed_ext.models AS
    SELECT m ->> 'name' AS name,
           (m ->> 'dim')::integer AS dim,
           m ->> 'similarity' AS similarity,
           (m ->> 'max_seq_length')::integer AS max_seq_length,
           m ->> 'path' AS path,
           m ->> 'fingerprint' AS fingerprint,
           (m ->> 'is_default')::boolean AS is_default,
           (m ->> 'registered_at')::timestamptz AS registered_at
    FROM fastembed_ext._models() m;

-- Admin operations: a public wrapper tells everyone else why they may not (with a hint), and the
-- work runs as the extension's owner in a function only admins may execute.
CREATE OR REPLACE FUNCTION fastembed_ext._is_admin() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT r.rolsuper OR pg_catalog.pg_has_role(current_user, 'fastembed_ext_admin', 'USAGE')
    FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
$$;

CREATE OR REPLACE FUNCTION fastembed_ext._require_admin(action text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT fastembed_ext._is_admin() THEN
        RAISE EXCEPTION 'fastembed_ext: permission denied to %', action
            USING ERRCODE = '42501',
                  DETAIL = 'Loading a model runs its code in the server: only superusers and members '
                           'of fastembed_ext_admin manage models.',
                  HINT = pg_catalog.format('A superuser can allow it: GRANT fastembed_ext_admin TO %I;',
                                           current_user);
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION fastembed_ext._register_model(name text, path text)
RETURNS fastembed_ext.models
LANGUAGE plpython3u VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.register_model(plpy, name, path)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION fastembed_ext._unregister_model(name text) RETURNS boolean
LANGUAGE plpython3u VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.unregister_model(plpy, name)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION fastembed_ext._set_default_model(name text) RETURNS text
LANGUAGE plpython3u VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.set_default_model(plpy, name)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

REVOKE EXECUTE ON FUNCTION fastembed_ext._register_model(text, text),
    fastembed_ext._unregister_model(text), fastembed_ext._set_default_model(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fastembed_ext._register_model(text, text),
    fastembed_ext._unregister_model(text), fastembed_ext._set_default_model(text) TO fastembed_ext_admin;

-- Registers (or re-points) `name` to the bundle at `path`, pinned to its content.
CREATE OR REPLACE FUNCTION fastembed_ext.register_model(name text, path text)
RETURNS fastembed_ext.models
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fastembed_ext._require_admin('register models');
    RETURN fastembed_ext._register_model(name, path);
END
$$;

CREATE OR REPLACE FUNCTION fastembed_ext.unregister_model(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fastembed_ext._require_admin('unregister models');
    RETURN fastembed_ext._unregister_model(name);
END
$$;

-- Makes `name` the model of embed(text); NULL clears the default.
CREATE OR REPLACE FUNCTION fastembed_ext.set_default_model(name text) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM fastembed_ext._require_admin('change the default model');
    RETURN fastembed_ext._set_default_model(name);
END
$$;

-- What stores vectors of model `name`: generated columns, defaults and index expressions that
-- call embed() with it, and attached columns. Re-pointing or removing the model is refused
-- while this is not empty.
CREATE OR REPLACE FUNCTION fastembed_ext.model_dependents(name text)
RETURNS TABLE (kind text, object text, detail text)
LANGUAGE plpython3u STABLE STRICT SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.model_dependents(plpy, name)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

-- Makes a function created here a plain database object even when an extension script (an
-- upgrade) created it, so that pg_dump writes it out like any registration or attachment.
CREATE OR REPLACE FUNCTION fastembed_ext._disown(fn regprocedure) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_depend d
               WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = fn AND d.deptype = 'e') THEN
        EXECUTE pg_catalog.format('ALTER EXTENSION fastembed_ext DROP FUNCTION %s', fn);
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION fastembed_ext._disown(regprocedure) FROM PUBLIC;

-- ------------------------------------------------------------------------------------------------
-- embedding

-- IMMUTABLE because a name stays pinned to one bundle's content (registration refuses to re-point
-- a name that stored vectors depend on), and the default model likewise.
CREATE OR REPLACE FUNCTION embed(content text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.embed(plpy, content, None)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION embed(content text, model text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.embed(plpy, content, model)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION embed_batch(contents text[]) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.embed_batch(plpy, contents, None)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION embed_batch(contents text[], model text) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.embed_batch(plpy, contents, model)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

-- ------------------------------------------------------------------------------------------------
-- attached tables

CREATE OR REPLACE FUNCTION fastembed_ext.attach_embedding(
    tbl regclass, source_column name, vector_column name, model text DEFAULT NULL,
    key_column name DEFAULT NULL, mode text DEFAULT 'sync')
RETURNS bigint
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.attach_embedding(plpy, tbl, source_column, vector_column, model, key_column, mode)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION fastembed_ext.detach_embedding(tbl regclass, vector_column name)
RETURNS boolean
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.detach_embedding(plpy, tbl, vector_column)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

-- Each role writes only attachments of existing tables it owns (or whose owning role it is a
-- member of); the row records who wrote it, and only superusers (a restore) choose ids or writers.
CREATE OR REPLACE FUNCTION fastembed_ext._check_attachment_owner() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rel regclass;
    superuser boolean := (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user);
BEGIN
    IF TG_OP <> 'DELETE' AND NOT superuser THEN
        IF TG_OP = 'INSERT' THEN
            NEW.id := pg_catalog.nextval('fastembed_ext.attachments_id_seq');
        ELSIF NEW.id <> OLD.id THEN
            RAISE EXCEPTION 'fastembed_ext: an attachment''s id cannot change' USING ERRCODE = '42501',
                DETAIL = 'Its triggers name it.', HINT = 'Detach and attach again.';
        END IF;
        NEW.attached_by := current_user;
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = NEW.tbl AND c.relkind IN ('r', 'p')) THEN
            RAISE EXCEPTION 'fastembed_ext: % is not a table', NEW.tbl USING ERRCODE = '42809',
                DETAIL = 'Attachments name existing tables.', HINT = 'Use fastembed_ext.attach_embedding(...).';
        END IF;
    END IF;
    FOREACH rel IN ARRAY ARRAY[CASE WHEN TG_OP <> 'INSERT' THEN OLD.tbl END,
                               CASE WHEN TG_OP <> 'DELETE' THEN NEW.tbl END] LOOP
        CONTINUE WHEN rel IS NULL;
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = rel) THEN
            CONTINUE;  -- a dropped table's row (only a DELETE gets here for non-superusers)
        END IF;
        IF NOT pg_catalog.pg_has_role(current_user,
                (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = rel), 'USAGE') THEN
            RAISE EXCEPTION 'fastembed_ext: permission denied to attach or detach %', rel
                USING ERRCODE = '42501',
                      DETAIL = pg_catalog.format('Role %I does not own %s.', current_user, rel),
                      HINT = 'Only the owner of a table (or a member of its owning role) attaches and detaches it.';
        END IF;
    END LOOP;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END
$$;

-- The search_path the table owner's own sessions get (database and role settings, else the
-- built-in default), with the session's temporary schema last: the vector UPDATE below runs the
-- table's other triggers and expressions with the owner's rights, and must not resolve their
-- unqualified names in objects the writing role made.
CREATE OR REPLACE FUNCTION fastembed_ext._owner_search_path(owner oid) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(
        (SELECT pg_catalog.substr(cfg, 13) FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) cfg
         WHERE s.setrole = owner AND cfg LIKE 'search\_path=%' AND s.setdatabase IN (0, (
               SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()))
         ORDER BY s.setdatabase DESC LIMIT 1),  -- this database's setting before the role's own
        (SELECT pg_catalog.substr(cfg, 13) FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) cfg
         WHERE s.setrole = 0 AND cfg LIKE 'search\_path=%' AND s.setdatabase =
               (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())),
        (SELECT boot_val FROM pg_catalog.pg_settings WHERE name = 'search_path')
    ) || ', pg_temp'
$$;

-- The body of every attached table's trigger function. Each attachment gets its own copy of it,
-- fastembed_ext._embed_rows_<id>(), owned by the table's owner and SECURITY DEFINER: the vectors
-- are written with the owner's rights, so a role that may only INSERT can still insert, and no
-- other role's code (the table's own triggers, index expressions) ever runs with more rights than
-- the owner's. The argument is the attachment's id.
CREATE OR REPLACE FUNCTION fastembed_ext._embed_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att record;
    vector_type text;
    changed text;
    batch record;
BEGIN
    SELECT a.* INTO att FROM fastembed_ext.attachments a
    WHERE a.id = TG_ARGV[0]::integer AND a.tbl = TG_RELID;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fastembed_ext: trigger % on % belongs to no attachment of that table',
                TG_NAME, TG_RELID::regclass
            USING ERRCODE = '55000',
                  HINT = 'Attach the table again with fastembed_ext.attach_embedding(...), or drop the trigger.';
    END IF;
    IF att.mode <> 'sync' THEN
        RETURN NULL;
    END IF;
    SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO vector_type
    FROM pg_catalog.pg_attribute a
    WHERE a.attrelid = TG_RELID AND a.attname = att.vector_column AND NOT a.attisdropped;
    IF vector_type IS NULL THEN
        RAISE EXCEPTION 'fastembed_ext: column "%" of % does not exist', att.vector_column, TG_RELID::regclass
            USING ERRCODE = '42703', DETAIL = 'The attachment names it as its vector column.',
                  HINT = 'Detach the table (fastembed_ext.detach_embedding) and attach it again.';
    END IF;
    IF TG_OP = 'INSERT' THEN
        changed := pg_catalog.format(
            'SELECT n.%1$I AS k, n.%2$I::text AS s FROM fastembed_ext_new n WHERE n.%2$I IS NOT NULL',
            att.key_column, att.source_column);
    ELSE  -- rows whose text (or key) changed; the vector UPDATE below changes no text, so it stops here
        changed := pg_catalog.format(
            'SELECT n.%1$I AS k, n.%2$I::text AS s FROM fastembed_ext_new n '
            'LEFT JOIN fastembed_ext_old o ON o.%1$I = n.%1$I '
            'WHERE o.%1$I IS NULL OR n.%2$I IS DISTINCT FROM o.%2$I',
            att.key_column, att.source_column);
    END IF;
    PERFORM pg_catalog.set_config('search_path',
        fastembed_ext._owner_search_path((SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = TG_RELID)), true);
    -- one forward pass per 1024 rows
    FOR batch IN EXECUTE pg_catalog.format(
        'SELECT pg_catalog.array_agg(k) AS keys, pg_catalog.array_agg(s) AS texts '
        'FROM (SELECT k, s, (pg_catalog.row_number() OVER () - 1) / 1024 AS g FROM (%s) c) b GROUP BY g',
        changed)
    LOOP
        EXECUTE pg_catalog.format(
            'UPDATE ONLY %s AS t SET %I = u.v::%s '
            'FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest(fastembed_ext._embed_attached($2, $3))) AS u(k, v) '
            'WHERE t.%I = u.k',
            TG_RELID::regclass, att.vector_column, vector_type, att.key_column)
        USING batch.keys, att.id, batch.texts;
    END LOOP;
    RETURN NULL;
END
$$;

-- Vectors of `texts` with attachment `id`'s model, checked against its column's dimension.
CREATE OR REPLACE FUNCTION fastembed_ext._embed_attached(id integer, texts text[]) RETURNS vector[]
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.embed_attached(plpy, id, texts)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

-- (Re)creates attachment `id`'s trigger function, owned by the table's owner, and its triggers.
-- Anyone may call it: it only builds what the attachment row (written by the table's owner) says,
-- and does nothing when that is already in place.
CREATE OR REPLACE FUNCTION fastembed_ext._install_attachment(id integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att record;
    fn text := pg_catalog.format('fastembed_ext._embed_rows_%s()', id);
    body text := (SELECT p.prosrc FROM pg_catalog.pg_proc p
                  WHERE p.oid = 'fastembed_ext._embed_rows()'::regprocedure);
    trigger_base text;
BEGIN
    SELECT a.*, c.relowner AS owner, c.relkind, c.relpersistence, c.relhassubclass INTO att
    FROM fastembed_ext.attachments a JOIN pg_catalog.pg_class c ON c.oid = a.tbl
    WHERE a.id = _install_attachment.id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fastembed_ext: no attachment %', id USING ERRCODE = '42704';
    END IF;
    -- only what the table's owner asked for (a row left by a dropped table could name a new one)
    IF pg_catalog.to_regrole(att.attached_by) IS NULL
       OR NOT pg_catalog.pg_has_role(pg_catalog.to_regrole(att.attached_by), att.owner, 'USAGE') THEN
        RAISE EXCEPTION 'fastembed_ext: attachment % was not made by the owner of %', id, att.tbl
            USING ERRCODE = '42501', DETAIL = pg_catalog.format('It was made by %I.', att.attached_by),
                  HINT = 'The table''s owner attaches it again with fastembed_ext.attach_embedding(...).';
    END IF;
    IF att.mode = 'sync' AND (att.relkind <> 'r' OR att.relhassubclass OR att.relpersistence = 't') THEN
        RAISE EXCEPTION 'fastembed_ext: % cannot be attached: it is %', att.tbl,
                CASE WHEN att.relkind = 'p' THEN 'partitioned' WHEN att.relhassubclass THEN 'a parent of inheriting tables'
                     ELSE 'temporary' END
            USING ERRCODE = '0A000',
                  DETAIL = 'Its triggers would miss rows written to its partitions or children, or outlive it unseen.',
                  HINT = 'Attach each partition or child table instead.';
    END IF;
    IF att.mode = 'sync'
       AND EXISTS (SELECT FROM pg_catalog.pg_proc p
                   WHERE p.oid = pg_catalog.to_regprocedure(fn) AND p.proowner = att.owner AND p.prosrc = body)
       AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger t
            WHERE t.tgrelid = att.tbl AND t.tgfoid = pg_catalog.to_regprocedure(fn)) = 2 THEN
        RETURN;
    END IF;
    PERFORM fastembed_ext._uninstall_attachment(id, att.tbl);
    IF att.mode <> 'sync' THEN
        RETURN;
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE FUNCTION %s RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
        'SET search_path = pg_catalog, pg_temp AS %L', fn, body);
    PERFORM fastembed_ext._disown(fn::regprocedure);
    EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', fn, att.owner::regrole);
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    trigger_base := 'fastembed_ext_' || att.vector_column;
    IF pg_catalog.octet_length(trigger_base || '_insert') > 63 THEN
        trigger_base := 'fastembed_ext_' || pg_catalog.left(pg_catalog.md5(att.vector_column), 8);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS fastembed_ext_new '
        'FOR EACH STATEMENT EXECUTE FUNCTION fastembed_ext.%I(%L)',
        trigger_base || '_insert', att.tbl, '_embed_rows_' || id, id);
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS fastembed_ext_old '
        'NEW TABLE AS fastembed_ext_new FOR EACH STATEMENT EXECUTE FUNCTION fastembed_ext.%I(%L)',
        trigger_base || '_update', att.tbl, '_embed_rows_' || id, id);
END
$$;

-- Removes attachment `id`'s triggers and trigger function; the row itself is the caller's to delete.
CREATE OR REPLACE FUNCTION fastembed_ext._uninstall_attachment(id integer, tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure := pg_catalog.to_regprocedure(pg_catalog.format('fastembed_ext._embed_rows_%s()', id));
    old_trigger name;
BEGIN
    IF fn IS NULL THEN
        RETURN;
    END IF;
    FOR old_trigger IN
        SELECT t.tgname FROM pg_catalog.pg_trigger t WHERE t.tgrelid = tbl AND t.tgfoid = fn
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', old_trigger, tbl);
    END LOOP;
    EXECUTE pg_catalog.format('DROP FUNCTION %s', fn);
END
$$;

-- Dropping an attached table, or one of its columns that an attachment names, removes the
-- attachment with its triggers and trigger function. It runs as the extension's owner because
-- the role dropping the table may not own the attachment row (a superuser's DROP OWNED, say).
CREATE OR REPLACE FUNCTION fastembed_ext._on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone record;
BEGIN
    FOR gone IN
        SELECT DISTINCT a.id, a.tbl, d.objsubid <> 0 AS column_only
        FROM pg_catalog.pg_event_trigger_dropped_objects() d
        JOIN fastembed_ext.attachments a ON a.tbl::oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass
          AND (d.objsubid = 0 OR d.address_names[3] IN (a.vector_column, a.source_column, a.key_column))
    LOOP
        IF gone.column_only THEN
            PERFORM fastembed_ext._uninstall_attachment(gone.id, gone.tbl);
        ELSE
            EXECUTE pg_catalog.format('DROP FUNCTION IF EXISTS fastembed_ext._embed_rows_%s()', gone.id);
        END IF;
        DELETE FROM fastembed_ext.attachments WHERE id = gone.id;
    END LOOP;
END
$$;

-- After ALTER TABLE: an attachment follows a renamed column, and its trigger function follows
-- the table to a new owner.
CREATE OR REPLACE FUNCTION fastembed_ext._on_alter_table() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    att record;
    renamed name;
    fn regprocedure;
BEGIN
    FOR cmd IN
        SELECT DISTINCT c.objid, c.objsubid FROM pg_catalog.pg_event_trigger_ddl_commands() c
        WHERE c.classid = 'pg_catalog.pg_class'::regclass
    LOOP
        FOR att IN SELECT a.* FROM fastembed_ext.attachments a WHERE a.tbl::oid = cmd.objid LOOP
            -- a RENAME COLUMN reports the column; every name the row holds existed before it
            IF cmd.objsubid > 0 THEN
                SELECT a.attname INTO renamed FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = cmd.objid AND a.attnum = cmd.objsubid AND NOT a.attisdropped;
                UPDATE fastembed_ext.attachments a SET
                    source_column = CASE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_attribute x
                        WHERE x.attrelid = cmd.objid AND x.attname = a.source_column AND NOT x.attisdropped)
                        THEN renamed ELSE a.source_column END,
                    vector_column = CASE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_attribute x
                        WHERE x.attrelid = cmd.objid AND x.attname = a.vector_column AND NOT x.attisdropped)
                        THEN renamed ELSE a.vector_column END,
                    key_column = CASE WHEN NOT EXISTS (SELECT FROM pg_catalog.pg_attribute x
                        WHERE x.attrelid = cmd.objid AND x.attname = a.key_column AND NOT x.attisdropped)
                        THEN renamed ELSE a.key_column END
                WHERE a.id = att.id AND renamed IS NOT NULL;
            END IF;
            fn := pg_catalog.to_regprocedure(pg_catalog.format('fastembed_ext._embed_rows_%s()', att.id));
            IF fn IS NOT NULL AND (SELECT p.proowner FROM pg_catalog.pg_proc p WHERE p.oid = fn)
                    <> (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = cmd.objid) THEN
                EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', fn,
                    (SELECT c.relowner::regrole FROM pg_catalog.pg_class c WHERE c.oid = cmd.objid));
            END IF;
        END LOOP;
    END LOOP;
END
$$;

-- ------------------------------------------------------------------------------------------------
-- indexes and search

CREATE OR REPLACE FUNCTION fastembed_ext.create_embedding_index(
    tbl regclass, vector_column name, model text DEFAULT NULL,
    m integer DEFAULT 16, ef_construction integer DEFAULT 64)
RETURNS regclass
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.create_embedding_index(plpy, tbl, vector_column, model, m, ef_construction)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

CREATE OR REPLACE FUNCTION fastembed_ext.search(
    tbl regclass, vector_column name, query text, k integer DEFAULT 10, model text DEFAULT NULL)
RETURNS TABLE (key text, score double precision)
LANGUAGE plpython3u STABLE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.search(plpy, tbl, vector_column, query, k, model)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;

-- ------------------------------------------------------------------------------------------------
-- privileges, triggers and event triggers

GRANT USAGE ON SCHEMA fastembed_ext TO PUBLIC;
GRANT SELECT ON fastembed_ext.models TO PUBLIC;

DROP TRIGGER IF EXISTS attachments_owner_only ON fastembed_ext.attachments;
CREATE TRIGGER attachments_owner_only BEFORE INSERT OR UPDATE OR DELETE ON fastembed_ext.attachments
    FOR EACH ROW EXECUTE FUNCTION fastembed_ext._check_attachment_owner();

DROP EVENT TRIGGER IF EXISTS fastembed_ext_sql_drop;
CREATE EVENT TRIGGER fastembed_ext_sql_drop ON sql_drop
    EXECUTE FUNCTION fastembed_ext._on_sql_drop();
DROP EVENT TRIGGER IF EXISTS fastembed_ext_alter_table;
CREATE EVENT TRIGGER fastembed_ext_alter_table ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION fastembed_ext._on_alter_table();

-- ---- migration 0.2.0, after api.sql ----

-- Registered models become pinned registrations (sql/api.sql, "the model registry"); the
-- database's default model moves from ALTER DATABASE ... SET into the registry.
CREATE FUNCTION fastembed_ext._migrate_registry_0_2_0() RETURNS void
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
fe = GD.get("fastembed_ext 0.2.0") or plpy.execute("SELECT fastembed_ext._load('0.2.0')") and GD["fastembed_ext 0.2.0"]
try:
    return fe.migrate_registry_0_2_0(plpy)
except Exception as exc:
    raise exc.with_traceback(None) from None
$$;
DO $$
BEGIN
    -- (a fresh install has nothing to move, and needs no library to be created)
    IF EXISTS (SELECT FROM fastembed_ext.model_registry)
       OR EXISTS (SELECT FROM pg_catalog.pg_db_role_setting r, pg_catalog.unnest(r.setconfig) cfg
                  WHERE r.setrole = 0 AND cfg LIKE 'fastembed\_ext.default\_model=%'
                    AND r.setdatabase = (SELECT d.oid FROM pg_catalog.pg_database d
                                         WHERE d.datname = pg_catalog.current_database())) THEN
        PERFORM fastembed_ext._migrate_registry_0_2_0();
    END IF;
END
$$;
DROP FUNCTION fastembed_ext._migrate_registry_0_2_0();
-- (leaving the extension first takes them out of its list of configuration tables)
ALTER EXTENSION fastembed_ext DROP TABLE fastembed_ext.model_registry;
ALTER EXTENSION fastembed_ext DROP TABLE fastembed_ext.config;
DROP TABLE fastembed_ext.model_registry, fastembed_ext.config;

-- 0.1.0's triggers called the shared trigger function with the columns as arguments; each
-- attachment now has its own trigger function (sql/api.sql, "attached tables").
DO $$
DECLARE
    t record;
    att integer;
BEGIN
    FOR t IN SELECT tg.tgname, tg.tgrelid::regclass AS tbl FROM pg_catalog.pg_trigger tg
             WHERE tg.tgfoid = 'fastembed_ext._embed_rows()'::regprocedure LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tbl);
    END LOOP;
    FOR att IN SELECT a.id FROM fastembed_ext.attachments a ORDER BY a.id LOOP
        PERFORM fastembed_ext._install_attachment(att);
    END LOOP;
END
$$;
