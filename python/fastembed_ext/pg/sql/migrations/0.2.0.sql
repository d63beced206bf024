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

-- @api

-- Registered models become pinned registrations (sql/api.sql, "the model registry"); the
-- database's default model moves from ALTER DATABASE ... SET into the registry.
CREATE FUNCTION fastembed_ext._migrate_registry_0_2_0() RETURNS void
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $python$ migrate_registry_0_2_0() $python$;
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
