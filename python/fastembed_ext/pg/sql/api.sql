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
-- (It reads the configuration files, a millisecond of a new backend's first call: _load() calls it
-- only when the setting is defined at all.)
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
    # Set nowhere, as usual (not even by this session): the default, without reading the files.
    # (A cluster that had it in its configuration since it started keeps it defined, empty.)
    root = None
    if not plpy.execute("SELECT pg_catalog.current_setting('fastembed_ext.library_root', true) IS NULL AS unset")[0]["unset"]:
        root = plpy.execute("SELECT fastembed_ext._library_root() AS root")[0]["root"]
    root = root or "/usr/local/lib/fastembed_ext"
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
AS $python$ version() $python$;

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
AS $python$ register_model(name, path) $python$;

CREATE OR REPLACE FUNCTION fastembed_ext._unregister_model(name text) RETURNS boolean
LANGUAGE plpython3u VOLATILE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $python$ unregister_model(name) $python$;

CREATE OR REPLACE FUNCTION fastembed_ext._set_default_model(name text) RETURNS text
LANGUAGE plpython3u VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $python$ set_default_model(name) $python$;

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
AS $python$ model_dependents(name) $python$;

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

-- The same for a table (and the sequence of its identity column).
CREATE OR REPLACE FUNCTION fastembed_ext._disown_table(rel regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    member record;
BEGIN
    FOR member IN
        SELECT d.objid, c.relkind FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'e'
          AND (d.objid = rel OR d.objid IN (SELECT s.objid FROM pg_catalog.pg_depend s
                                           WHERE s.refobjid = rel AND s.classid = 'pg_catalog.pg_class'::regclass
                                             AND s.deptype IN ('a', 'i')))
    LOOP
        EXECUTE pg_catalog.format('ALTER EXTENSION fastembed_ext DROP %s %s',
            CASE member.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, member.objid::regclass);
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION fastembed_ext._disown_table(regclass) FROM PUBLIC;

-- ------------------------------------------------------------------------------------------------
-- embedding

-- IMMUTABLE because a name stays pinned to one bundle's content (registration refuses to re-point
-- a name that stored vectors depend on), and the default model likewise.
CREATE OR REPLACE FUNCTION embed(content text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $python$ embed(content, None) $python$;

CREATE OR REPLACE FUNCTION embed(content text, model text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $python$ embed(content, model) $python$;

-- With one of the model's prompts (its config_sentence_transformers.json "prompts"), as
-- sentence-transformers' encode(text, prompt_name=...); the two-argument forms use the model's
-- default prompt, if it has one. Still IMMUTABLE: the prompt is part of the pinned bundle.
CREATE OR REPLACE FUNCTION embed(content text, model text, prompt_name text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $python$ embed(content, model, prompt_name) $python$;

CREATE OR REPLACE FUNCTION embed_batch(contents text[], model text, prompt_name text) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $python$ embed_batch(contents, model, prompt_name) $python$;

CREATE OR REPLACE FUNCTION embed_batch(contents text[]) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $python$ embed_batch(contents, None) $python$;

CREATE OR REPLACE FUNCTION embed_batch(contents text[], model text) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $python$ embed_batch(contents, model) $python$;

-- ------------------------------------------------------------------------------------------------
-- attached tables

CREATE OR REPLACE FUNCTION fastembed_ext.attach_embedding(
    tbl regclass, source_column name, vector_column name, model text DEFAULT NULL,
    key_column name DEFAULT NULL, mode text DEFAULT 'sync', chunking jsonb DEFAULT NULL,
    backfill boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $python$ attach_embedding(tbl, source_column, vector_column, model, key_column, mode, chunking, backfill) $python$;

-- Embeds the rows of a sync attachment that have no vector, committing after each batch when
-- CALLed outside a transaction block (attach with backfill => false first). No SET clause: a
-- procedure with one may not commit; every name in it is schema-qualified.
CREATE OR REPLACE PROCEDURE fastembed_ext.backfill(tbl regclass, vector_column name, batch_rows integer DEFAULT 1024)
LANGUAGE plpython3u
AS $python$ backfill(tbl, vector_column, batch_rows) $python$;

-- The `chunking` of attach_embedding: windows of `window` tokens (NULL: as many as the model
-- embeds whole) overlapping by `overlap` tokens.
CREATE OR REPLACE FUNCTION fastembed_ext.token_windows(window_tokens integer DEFAULT NULL, overlap integer DEFAULT 32)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.jsonb_build_object('window', window_tokens, 'overlap', overlap) $$;

CREATE OR REPLACE FUNCTION fastembed_ext.detach_embedding(tbl regclass, vector_column name)
RETURNS boolean
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $python$ detach_embedding(tbl, vector_column) $python$;

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
-- the owner's. The argument is the attachment's id. Three triggers call it:
--   * AFTER INSERT, per statement, with the new rows as a transition table: embeds them;
--   * AFTER UPDATE OF <text> per row, WHEN the text changed: notes the row's key in the backend
--     (fastembed_ext._note_changed);
--   * AFTER UPDATE OF <text> per statement (after the row triggers): embeds the rows noted.
-- (PostgreSQL allows no transition tables on triggers that name columns.) An UPDATE of any other
-- column, the vector UPDATE below included, fires none of them.
CREATE OR REPLACE FUNCTION fastembed_ext._embed_rows() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att record;
    vector_type text;
    key_type text;
    changed text;
    keys text[];
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
    IF TG_LEVEL = 'ROW' THEN
        EXECUTE pg_catalog.format('SELECT fastembed_ext._note_changed($1, ($2).%I::text)', att.key_column)
        USING att.id, NEW;
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
    ELSE  -- the rows whose text changed, as their row triggers noted them
        keys := fastembed_ext._take_changed(att.id);
        IF pg_catalog.cardinality(keys) = 0 THEN
            RETURN NULL;
        END IF;
        SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) INTO key_type
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = TG_RELID AND a.attname = att.key_column AND NOT a.attisdropped;
        changed := pg_catalog.format(
            'SELECT t.%1$I AS k, t.%2$I::text AS s FROM ONLY %3$s t WHERE t.%1$I = ANY (%4$L::%5$s[])',
            att.key_column, att.source_column, TG_RELID::regclass, keys, key_type);
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

-- The keys of rows whose text an UPDATE changed, kept in the backend until the statement's end
-- (a statement that fails leaves some behind: the next one embeds them again, from their text
-- as it is then, which is always right).
CREATE OR REPLACE FUNCTION fastembed_ext._note_changed(id integer, key text) RETURNS void
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $python$ note_changed(id, key) $python$;

CREATE OR REPLACE FUNCTION fastembed_ext._take_changed(id integer) RETURNS text[]
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $python$ take_changed(id) $python$;

-- The body of an async attachment's trigger function (fastembed_ext._embed_rows_<id>(), owned
-- and installed like the sync one above). It runs no model: it queues the keys of the rows
-- written, in jobs of at most 64 keys, and wakes the workers (LISTEN fastembed_ext_queue).
-- INSERT and COPY fire it once per statement; an UPDATE, for each row whose text changed (the
-- trigger's WHEN), so that other UPDATEs, the workers' own among them, cost nothing; a DELETE
-- (chunked attachments only) removes the rows' chunks. The attachment's names are written into
-- the body, so that its statements are planned once per backend: a single-row INSERT pays for
-- one more small INSERT, not for a lookup and a dynamic statement. A column rename rebuilds it.
-- A session sends at most one NOTIFY per quarter second (the slot of its last one is the session
-- setting fastembed_ext.notify_slot, kept only if that transaction commits): a committing NOTIFY
-- holds a lock that serialises every other notifying commit in the cluster, which cut the rows/s
-- of 8 concurrent durable writers to a third. A worker that was woken or found work in the last
-- 10 s keeps polling, so it finds the rows of the writes that sent none.
CREATE OR REPLACE FUNCTION fastembed_ext._enqueue_body(id integer, key_column name, source_column name)
RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
SELECT pg_catalog.format($body$
DECLARE
    slot text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fastembed_ext.%1$I (keys)
        SELECT a.k[i:i + 63]
        FROM (SELECT pg_catalog.array_agg(n.%2$I) AS k FROM fastembed_ext_new n WHERE n.%3$I IS NOT NULL) a,
             pg_catalog.generate_series(1, pg_catalog.cardinality(a.k), 64) AS i;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO fastembed_ext.%1$I (keys) VALUES (ARRAY[NEW.%2$I]);
    ELSE
        EXECUTE pg_catalog.format('DELETE FROM %%s c USING fastembed_ext_old o WHERE c.key = o.%%I',
            (SELECT a.chunk_table FROM fastembed_ext.attachments a WHERE a.id = %4$s), %2$L);
        RETURN NULL;
    END IF;
    slot := (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 4)::pg_catalog.int8::pg_catalog.text;
    IF pg_catalog.current_setting('fastembed_ext.notify_slot', true) IS DISTINCT FROM slot THEN
        PERFORM pg_catalog.pg_notify('fastembed_ext_queue', %4$L);
        PERFORM pg_catalog.set_config('fastembed_ext.notify_slot', slot, false);
    END IF;
    RETURN NULL;
END
$body$, 'queue_' || id, key_column, source_column, id)
$$;

-- ------------------------------------------------------------------------------------------------
-- the queue of async attachments
--
-- Each async attachment has a queue table, fastembed_ext.queue_<id> (jobs: up to 64 keys of rows
-- to embed; no index and no sequence, which would double what a single-row INSERT pays; a claimed
-- job is named by its ctid, which cannot change while the claim's lock holds it), and a failed
-- table, fastembed_ext.failed_<id>, both owned by the attached table's
-- owner, who alone reads them. Workers reach them through two functions of the attachment,
-- fastembed_ext._claim_<id>(n) and fastembed_ext._done_<id>(...), owned by the table's owner and
-- SECURITY DEFINER like its trigger function; members of fastembed_ext_worker may execute them, so
-- a worker needs no privilege on any table. A worker's claim and its vectors are one transaction:
-- if it dies, the transaction rolls back and the jobs are claimable again.

-- Attachment `id`, which must be async, with the types of its key and vector columns.
CREATE OR REPLACE FUNCTION fastembed_ext._async_attachment(id integer,
    OUT tbl regclass, OUT source_column name, OUT vector_column name, OUT key_column name,
    OUT key_type text, OUT vector_type text, OUT owner oid, OUT chunk_table regclass)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT a.tbl, a.source_column, a.vector_column, a.key_column, c.relowner, a.chunk_table,
           (SELECT pg_catalog.format_type(x.atttypid, x.atttypmod) FROM pg_catalog.pg_attribute x
            WHERE x.attrelid = a.tbl AND x.attname = a.key_column AND NOT x.attisdropped),
           (SELECT pg_catalog.format_type(x.atttypid, x.atttypmod) FROM pg_catalog.pg_attribute x
            WHERE x.attrelid = a.tbl AND x.attname = a.vector_column AND NOT x.attisdropped)
    INTO tbl, source_column, vector_column, key_column, owner, chunk_table, key_type, vector_type
    FROM fastembed_ext.attachments a JOIN pg_catalog.pg_class c ON c.oid = a.tbl
    WHERE a.id = _async_attachment.id AND a.mode = 'async';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'fastembed_ext: there is no async attachment %', id
            USING ERRCODE = '42704', DETAIL = 'It was detached, or attached again in another mode.',
                  HINT = 'Workers find the current attachments by themselves; nothing is lost.';
    END IF;
END
$$;

-- Claims the due jobs of attachment `id`'s queue, oldest first (a sort of the queue: it has no
-- index, and holds one row per 64 keys), until they hold `n` keys or
-- there are no more: they stay locked (FOR UPDATE SKIP LOCKED, so other workers take others)
-- until the caller's transaction ends. One row: the jobs, each key once with the text its row
-- holds now (NULL when the row is gone or its text is NULL), and the attempts made so far. No row
-- when nothing is due. Runs as the table's owner, through fastembed_ext._claim_<id>(n).
CREATE OR REPLACE FUNCTION fastembed_ext._attachment_claim(id integer, n integer)
RETURNS TABLE (jobs tid[], keys text[], contents text[], attempts integer[])
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att record := fastembed_ext._async_attachment(id);
    due refcursor;
    job record;
    taken tid[] := '{}';
    total integer := 0;
BEGIN
    IF n IS NULL OR n < 1 OR n > 65536 THEN
        RAISE EXCEPTION 'fastembed_ext: a claim takes 1 to 65536 keys, not %', n
            USING ERRCODE = '22023', HINT = 'Workers choose it from --batch-tokens.';
    END IF;
    -- an explicit cursor fetches (and locks) one job at a time
    OPEN due FOR EXECUTE pg_catalog.format(
        'SELECT q.ctid AS job, pg_catalog.cardinality(q.keys) AS size FROM fastembed_ext.%I q '
        'WHERE q.not_before <= pg_catalog.now() ORDER BY q.queued_at FOR UPDATE SKIP LOCKED', 'queue_' || id);
    LOOP
        FETCH due INTO job;
        EXIT WHEN NOT FOUND;
        taken := taken || job.job;
        total := total + job.size;
        EXIT WHEN total >= n;
    END LOOP;
    CLOSE due;
    IF total = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE pg_catalog.format(
        'WITH k AS (SELECT u.key, pg_catalog.max(q.attempts) AS attempts '
        '           FROM fastembed_ext.%1$I q, pg_catalog.unnest(q.keys) AS u(key) '
        '           WHERE q.ctid = ANY ($1) GROUP BY u.key) '
        'SELECT $1, pg_catalog.array_agg(k.key::text ORDER BY k.key), '
        '       pg_catalog.array_agg(t.%2$I::text ORDER BY k.key), pg_catalog.array_agg(k.attempts ORDER BY k.key) '
        'FROM k LEFT JOIN ONLY %3$s t ON t.%4$I = k.key::%5$s',
        'queue_' || id, att.source_column, att.tbl, att.key_column, att.key_type) USING taken;
END
$$;

-- Writes what a worker made of the jobs it claimed from attachment `id`, and takes the jobs off
-- the queue, in the caller's transaction:
--   * vectors[i] goes to the row of keys[i] only if the row still holds contents[i], the text the
--     vector was made from; a row whose text changed since the claim was queued again by that
--     change, and gets the vector of its newer text then (a NULL text gets a NULL vector);
--   * for a chunked attachment, the chunks of each row written are replaced by the rows of
--     chunk_keys (chunk_index, chunk_starts..chunk_ends in characters, chunk_vectors);
--   * failed_keys[i] (with errors[i], after failed_attempts[i] earlier attempts) goes back to the
--     queue with a delay of retry_seconds, doubled at each attempt (at most an hour), or, at its
--     max_attempts-th attempt, to the attachment's failed table with its error.
-- Returns the number of vectors written. Runs as the table's owner, through
-- fastembed_ext._done_<id>(...).
CREATE OR REPLACE FUNCTION fastembed_ext._attachment_done(
    id integer, jobs tid[], keys text[], contents text[], vectors text[],
    failed_keys text[], errors text[], failed_attempts integer[], max_attempts integer,
    retry_seconds double precision, chunk_keys text[], chunk_index integer[], chunk_starts integer[],
    chunk_ends integer[], chunk_vectors text[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att record := fastembed_ext._async_attachment(id);
    written text[] := '{}';
BEGIN
    jobs := coalesce(jobs, '{}'); keys := coalesce(keys, '{}'); contents := coalesce(contents, '{}');
    vectors := coalesce(vectors, '{}'); failed_keys := coalesce(failed_keys, '{}');
    errors := coalesce(errors, '{}'); failed_attempts := coalesce(failed_attempts, '{}');
    IF pg_catalog.cardinality(keys) <> pg_catalog.cardinality(contents)
       OR pg_catalog.cardinality(keys) <> pg_catalog.cardinality(vectors)
       OR pg_catalog.cardinality(failed_keys) <> pg_catalog.cardinality(errors)
       OR pg_catalog.cardinality(failed_keys) <> pg_catalog.cardinality(failed_attempts) THEN
        RAISE EXCEPTION 'fastembed_ext: the arrays of a finished batch differ in length'
            USING ERRCODE = '2202E', HINT = 'keys, contents and vectors go together, and so do failed_keys, errors and failed_attempts.';
    END IF;
    IF max_attempts IS NULL OR max_attempts < 1 OR max_attempts > 1000
       OR retry_seconds IS NULL OR NOT retry_seconds BETWEEN 0 AND 86400 THEN
        RAISE EXCEPTION 'fastembed_ext: max_attempts must be 1 to 1000 and retry_seconds 0 to 86400'
            USING ERRCODE = '22023', DETAIL = pg_catalog.format('They are %s and %s.', max_attempts, retry_seconds);
    END IF;
    IF att.vector_type IS NULL OR att.key_type IS NULL THEN
        RAISE EXCEPTION 'fastembed_ext: a column that attachment % names is gone from %', id, att.tbl
            USING ERRCODE = '42703', HINT = 'Detach the table (fastembed_ext.detach_embedding) and attach it again.';
    END IF;
    -- the UPDATE runs the table's other triggers with the owner's own search_path, as the sync trigger does
    PERFORM pg_catalog.set_config('search_path', fastembed_ext._owner_search_path(att.owner), true);
    IF pg_catalog.cardinality(keys) > 0 THEN
        EXECUTE pg_catalog.format(
            'WITH w AS (UPDATE ONLY %1$s AS t SET %2$I = u.v::%3$s '
            'FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS u(k, s, v) '
            'WHERE t.%4$I = u.k::%5$s AND t.%6$I::text IS NOT DISTINCT FROM u.s RETURNING u.k) '
            'SELECT coalesce(pg_catalog.array_agg(w.k), ''{}'') FROM w',
            att.tbl, att.vector_column, att.vector_type, att.key_column, att.key_type, att.source_column)
        INTO written USING keys, contents, vectors;
        IF att.chunk_table IS NOT NULL THEN
            EXECUTE pg_catalog.format('DELETE FROM %s c WHERE c.key = ANY ($1::%s[])', att.chunk_table, att.key_type)
            USING written;
            EXECUTE pg_catalog.format(
                'INSERT INTO %s (key, chunk, span, embedding) '
                'SELECT u.k::%s, u.i, pg_catalog.int4range(u.s, u.e), u.v::%s '
                'FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3), '
                '                pg_catalog.unnest($4), pg_catalog.unnest($5)) AS u(k, i, s, e, v) '
                'WHERE u.k = ANY ($6)', att.chunk_table, att.key_type, att.vector_type)
            USING coalesce(chunk_keys, '{}'), coalesce(chunk_index, '{}'), coalesce(chunk_starts, '{}'),
                  coalesce(chunk_ends, '{}'), coalesce(chunk_vectors, '{}'), written;
        END IF;
        EXECUTE pg_catalog.format('DELETE FROM fastembed_ext.%I f WHERE f.key = ANY ($1)', 'failed_' || id)
        USING keys;
    END IF;
    IF pg_catalog.cardinality(failed_keys) > 0 THEN
        EXECUTE pg_catalog.format(
            'INSERT INTO fastembed_ext.%I (keys, attempts, not_before, last_error) '
            'SELECT ARRAY[f.k::%s], f.a + 1, pg_catalog.now() + pg_catalog.make_interval(secs => '
            '    LEAST($5 * 2 ^ LEAST(f.a, 20), 3600)), f.e '
            'FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS f(k, e, a) '
            'WHERE f.a + 1 < $4', 'queue_' || id, att.key_type)
        USING failed_keys, errors, failed_attempts, max_attempts, retry_seconds;
        EXECUTE pg_catalog.format(
            'INSERT INTO fastembed_ext.%I AS x (key, error, attempts) '
            'SELECT f.k, f.e, f.a + 1 '
            'FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) AS f(k, e, a) '
            'WHERE f.a + 1 >= $4 '
            'ON CONFLICT (key) DO UPDATE SET error = excluded.error, attempts = excluded.attempts, '
            'failed_at = pg_catalog.now()', 'failed_' || id)
        USING failed_keys, errors, failed_attempts, max_attempts;
    END IF;
    EXECUTE pg_catalog.format('DELETE FROM fastembed_ext.%I q WHERE q.ctid = ANY ($1)', 'queue_' || id) USING jobs;
    IF pg_catalog.cardinality(written) > 0 THEN
        PERFORM fastembed_ext._record_completions(id, pg_catalog.cardinality(written));
    END IF;
    RETURN pg_catalog.cardinality(written);
END
$$;

-- Counts rows embedded by workers, for queue_status' rate (a figure only: anyone may add to it).
CREATE OR REPLACE FUNCTION fastembed_ext._record_completions(id integer, n integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO fastembed_ext.completions (attachment, rows) VALUES (id, n);
    IF pg_catalog.random() < 0.02 THEN
        DELETE FROM fastembed_ext.completions WHERE done_at < pg_catalog.now() - interval '10 minutes';
    END IF;
END
$$;

-- Per attachment: the keys waiting (backlog), how long the oldest has waited, how many wait for a
-- retry after a failure, how many failed for good, and the rows workers embedded in the last
-- minute. Counts only, like pg_stat_user_tables, so everyone may read it.
CREATE OR REPLACE FUNCTION fastembed_ext._queue_status()
RETURNS TABLE (tbl regclass, vector_column name, model text, mode text, backlog bigint,
               oldest_pending interval, retrying bigint, failed bigint, done_last_minute bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
    queue regclass;
    failures regclass;
BEGIN
    FOR a IN SELECT x.* FROM fastembed_ext.attachments x
             WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = x.tbl) ORDER BY x.id LOOP
        tbl := a.tbl; vector_column := a.vector_column; model := a.model; mode := a.mode;
        backlog := NULL; oldest_pending := NULL; retrying := NULL; failed := NULL;
        queue := (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname = 'queue_' || a.id AND c.relkind = 'r'
                  AND c.relnamespace = 'fastembed_ext'::regnamespace);
        failures := (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relname = 'failed_' || a.id AND c.relkind = 'r'
                     AND c.relnamespace = 'fastembed_ext'::regnamespace);
        IF a.mode = 'async' AND queue IS NOT NULL AND failures IS NOT NULL THEN
            EXECUTE pg_catalog.format(
                'SELECT coalesce(pg_catalog.sum(pg_catalog.cardinality(q.keys)), 0), '
                'pg_catalog.now() - pg_catalog.min(q.queued_at), pg_catalog.count(*) FILTER (WHERE q.attempts > 0) '
                'FROM %s q', queue) INTO backlog, oldest_pending, retrying;
            EXECUTE pg_catalog.format('SELECT pg_catalog.count(*) FROM %s', failures) INTO failed;
        END IF;
        done_last_minute := (SELECT coalesce(pg_catalog.sum(c.rows), 0) FROM fastembed_ext.completions c
                             WHERE c.attachment = a.id AND c.done_at > pg_catalog.now() - interval '1 minute');
        RETURN NEXT;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW fastembed_ext.queue_status AS SELECT * FROM fastembed_ext._queue_status();

-- The failed rows of the async attachments whose failed table the caller may read (its owner's).
CREATE OR REPLACE FUNCTION fastembed_ext._failures()
RETURNS TABLE (tbl regclass, vector_column name, key text, error text, attempts integer, failed_at timestamptz)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
    failures regclass;
BEGIN
    FOR a IN SELECT x.* FROM fastembed_ext.attachments x WHERE x.mode = 'async' ORDER BY x.id LOOP
        failures := pg_catalog.to_regclass(pg_catalog.format('fastembed_ext.%I', 'failed_' || a.id));
        CONTINUE WHEN failures IS NULL OR NOT pg_catalog.has_table_privilege(failures, 'SELECT');
        RETURN QUERY EXECUTE pg_catalog.format(
            'SELECT $1, $2, f.key, f.error, f.attempts, f.failed_at FROM %s f ORDER BY f.failed_at, f.key', failures)
            USING a.tbl, a.vector_column;
    END LOOP;
END
$$;

CREATE OR REPLACE VIEW fastembed_ext.failures AS SELECT * FROM fastembed_ext._failures();

-- Queues the failed rows of an async attachment again (its owner's call); returns how many.
CREATE OR REPLACE FUNCTION fastembed_ext.retry_failed(tbl regclass, vector_column name) RETURNS bigint
LANGUAGE plpgsql VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att_id integer := (SELECT a.id FROM fastembed_ext.attachments a
                       WHERE a.tbl = retry_failed.tbl AND a.vector_column = retry_failed.vector_column AND a.mode = 'async');
    moved bigint;
BEGIN
    IF att_id IS NULL THEN
        RAISE EXCEPTION 'fastembed_ext: column "%" of % has no async attachment', vector_column, tbl
            USING ERRCODE = '42704', HINT = 'Only async attachments (mode => ''async'') have a queue and failed rows.';
    END IF;
    IF NOT pg_catalog.pg_has_role(current_user, (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = tbl), 'USAGE') THEN
        RAISE EXCEPTION 'fastembed_ext: permission denied to retry the failed rows of %', tbl
            USING ERRCODE = '42501', HINT = 'Only the owner of the table (or a member of its owning role) does.';
    END IF;
    EXECUTE pg_catalog.format(
        'WITH f AS (DELETE FROM fastembed_ext.%1$I RETURNING key), '
        'q AS (INSERT INTO fastembed_ext.%2$I (keys) SELECT a.k[i:i + 63] '
        '      FROM (SELECT pg_catalog.array_agg(f.key::%3$s) AS k FROM f) a, '
        '           pg_catalog.generate_series(1, pg_catalog.cardinality(a.k), 64) AS i) '
        'SELECT pg_catalog.count(*) FROM f', 'failed_' || att_id, 'queue_' || att_id,
        (fastembed_ext._async_attachment(att_id)).key_type) INTO moved;
    IF moved > 0 THEN
        PERFORM pg_catalog.pg_notify('fastembed_ext_queue', att_id::text);
    END IF;
    RETURN moved;
END
$$;

-- Vectors of `texts` with attachment `id`'s model, checked against its column's dimension.
CREATE OR REPLACE FUNCTION fastembed_ext._embed_attached(id integer, texts text[]) RETURNS vector[]
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $python$ embed_attached(id, texts) $python$;

-- (Re)creates attachment `id`'s trigger function, owned by the table's owner, and its triggers;
-- for an async attachment also its queue and failed tables and the two functions workers call.
-- Anyone may call it: it only builds what the attachment row (written by the table's owner) says,
-- and does nothing when that is already in place.
CREATE OR REPLACE FUNCTION fastembed_ext._install_attachment(id integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    att record;
    fn text := pg_catalog.format('fastembed_ext._embed_rows_%s()', id);
    claim text := pg_catalog.format('fastembed_ext._claim_%s(integer)', id);
    done text := pg_catalog.format('fastembed_ext._done_%s(tid[], text[], text[], text[], text[], text[], '
                                   'integer[], integer, double precision, text[], integer[], integer[], '
                                   'integer[], text[])', id);
    queue text := pg_catalog.format('fastembed_ext.%I', 'queue_' || id);
    failed text := pg_catalog.format('fastembed_ext.%I', 'failed_' || id);
    body text;
    trigger_base text;
    source_attnum smallint;
    key_type text;
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
    IF att.mode <> 'manual' AND (att.relkind <> 'r' OR att.relhassubclass OR att.relpersistence = 't') THEN
        RAISE EXCEPTION 'fastembed_ext: % cannot be attached: it is %', att.tbl,
                CASE WHEN att.relkind = 'p' THEN 'partitioned' WHEN att.relhassubclass THEN 'a parent of inheriting tables'
                     ELSE 'temporary' END
            USING ERRCODE = '0A000',
                  DETAIL = 'Its triggers would miss rows written to its partitions or children, or outlive it unseen.',
                  HINT = 'Attach each partition or child table instead.';
    END IF;
    body := CASE att.mode
            WHEN 'async' THEN fastembed_ext._enqueue_body(id, att.key_column, att.source_column)
            ELSE (SELECT p.prosrc FROM pg_catalog.pg_proc p WHERE p.oid = 'fastembed_ext._embed_rows()'::regprocedure) END;
    source_attnum := (SELECT a.attnum FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = att.tbl AND a.attname = att.source_column AND NOT a.attisdropped);
    key_type := (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = att.tbl AND a.attname = att.key_column AND NOT a.attisdropped);
    IF att.mode <> 'manual'
       AND EXISTS (SELECT FROM pg_catalog.pg_proc p
                   WHERE p.oid = pg_catalog.to_regprocedure(fn) AND p.proowner = att.owner AND p.prosrc = body)
       AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_trigger t
            WHERE t.tgrelid = att.tbl AND t.tgfoid = pg_catalog.to_regprocedure(fn))
           = (CASE WHEN att.mode = 'sync' OR att.chunk_table IS NOT NULL THEN 3 ELSE 2 END)
       AND EXISTS (SELECT FROM pg_catalog.pg_trigger t
                   WHERE t.tgrelid = att.tbl AND t.tgfoid = pg_catalog.to_regprocedure(fn)
                     AND pg_catalog.array_length(t.tgattr::pg_catalog.int2[], 1) = 1 AND t.tgattr[0] = source_attnum)
       AND (att.mode = 'sync' OR (
            (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class c
             WHERE c.oid IN (pg_catalog.to_regclass(queue), pg_catalog.to_regclass(failed)) AND c.relowner = att.owner) = 2
            AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p
                 WHERE p.oid IN (pg_catalog.to_regprocedure(claim), pg_catalog.to_regprocedure(done))
                   AND p.proowner = att.owner) = 2
            AND (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = pg_catalog.to_regclass(queue) AND a.attname = 'keys') = key_type || '[]')) THEN
        RETURN;
    END IF;
    PERFORM fastembed_ext._uninstall_attachment(id, att.tbl);
    IF att.mode <> 'async' THEN
        PERFORM fastembed_ext._drop_queue(id);
    END IF;
    IF att.mode = 'manual' THEN
        RETURN;
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE FUNCTION %s RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER '
        'SET search_path = pg_catalog, pg_temp AS %L', fn, body);
    PERFORM fastembed_ext._disown(fn::regprocedure);
    EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', fn, att.owner::regrole);
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', fn);
    trigger_base := 'fastembed_ext_' || att.vector_column;
    IF pg_catalog.octet_length(trigger_base || '_updated') > 63 THEN
        trigger_base := 'fastembed_ext_' || pg_catalog.left(pg_catalog.md5(att.vector_column), 8);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS fastembed_ext_new '
        'FOR EACH STATEMENT EXECUTE FUNCTION fastembed_ext.%I(%L)',
        trigger_base || '_insert', att.tbl, '_embed_rows_' || id, id);
    IF att.mode = 'sync' THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %1$I AFTER UPDATE OF %2$I ON %3$s FOR EACH STATEMENT '
            'EXECUTE FUNCTION fastembed_ext.%4$I(%5$L)',
            trigger_base || '_updated', att.source_column, att.tbl, '_embed_rows_' || id, id);
    END IF;
    EXECUTE pg_catalog.format(
        'CREATE TRIGGER %1$I AFTER UPDATE OF %2$I ON %3$s FOR EACH ROW '
        'WHEN (OLD.%2$I IS DISTINCT FROM NEW.%2$I) EXECUTE FUNCTION fastembed_ext.%4$I(%5$L)',
        trigger_base || '_update', att.source_column, att.tbl, '_embed_rows_' || id, id);
    IF att.mode = 'sync' THEN
        RETURN;
    END IF;
    IF att.chunk_table IS NOT NULL THEN
        EXECUTE pg_catalog.format(
            'CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS fastembed_ext_old '
            'FOR EACH STATEMENT EXECUTE FUNCTION fastembed_ext.%I(%L)',
            trigger_base || '_delete', att.tbl, '_embed_rows_' || id, id);
    END IF;
    -- the queue and failed tables (kept when they exist: they hold pending work); the queue holds
    -- keys in the key column's own type, which the INSERT trigger aggregates as they are
    -- (converting each key to text cost a fifth of a 10,000-row INSERT)
    -- (not CREATE ... IF NOT EXISTS: inside ALTER EXTENSION UPDATE that refuses a table the
    -- extension does not own)
    IF pg_catalog.to_regclass(queue) IS NULL THEN
        EXECUTE pg_catalog.format(
            'CREATE TABLE %s (keys %s[] NOT NULL, attempts integer NOT NULL DEFAULT 0, '
            'not_before timestamptz NOT NULL DEFAULT pg_catalog.now(), '
            'queued_at timestamptz NOT NULL DEFAULT pg_catalog.now(), last_error text)', queue, key_type);
    END IF;
    IF (SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = queue::regclass AND a.attname = 'keys') <> key_type || '[]' THEN
        -- made by 0.3.0 (text keys), or the key column's type changed since
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN keys TYPE %s[] USING keys::text[]::%2$s[]',
                                  queue, key_type);
    END IF;
    IF pg_catalog.to_regclass(failed) IS NULL THEN
        EXECUTE pg_catalog.format(
            'CREATE TABLE %s (key text PRIMARY KEY, error text NOT NULL, attempts integer NOT NULL, '
            'failed_at timestamptz NOT NULL DEFAULT pg_catalog.now())', failed);
    END IF;
    PERFORM fastembed_ext._disown_table(queue::regclass);
    PERFORM fastembed_ext._disown_table(failed::regclass);
    EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO %s', queue, att.owner::regrole);
    EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO %s', failed, att.owner::regrole);
    -- what workers call, with the owner's rights
    EXECUTE pg_catalog.format(
        'CREATE FUNCTION fastembed_ext.%I(n integer) '
        'RETURNS TABLE (jobs tid[], keys text[], contents text[], attempts integer[]) '
        'LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp '
        'AS %L', '_claim_' || id, pg_catalog.format('SELECT * FROM fastembed_ext._attachment_claim(%s, n)', id));
    EXECUTE pg_catalog.format(
        'CREATE FUNCTION fastembed_ext.%I(jobs tid[], keys text[], contents text[], vectors text[], '
        'failed_keys text[], errors text[], failed_attempts integer[], max_attempts integer, '
        'retry_seconds double precision, chunk_keys text[], chunk_index integer[], chunk_starts integer[], '
        'chunk_ends integer[], chunk_vectors text[]) RETURNS integer '
        'LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
        '_done_' || id, pg_catalog.format(
            'SELECT fastembed_ext._attachment_done(%s, jobs, keys, contents, vectors, failed_keys, errors, '
            'failed_attempts, max_attempts, retry_seconds, chunk_keys, chunk_index, chunk_starts, chunk_ends, '
            'chunk_vectors)', id));
    PERFORM fastembed_ext._disown(claim::regprocedure);
    PERFORM fastembed_ext._disown(done::regprocedure);
    EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', claim, att.owner::regrole);
    EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', done, att.owner::regrole);
    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s, %s FROM PUBLIC', claim, done);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s, %s TO fastembed_ext_worker', claim, done);
END
$$;

-- Removes attachment `id`'s triggers, trigger function and worker functions; its queue is
-- _drop_queue's, and the row itself is the caller's to delete.
CREATE OR REPLACE FUNCTION fastembed_ext._uninstall_attachment(id integer, tbl regclass) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    fn regprocedure := pg_catalog.to_regprocedure(pg_catalog.format('fastembed_ext._embed_rows_%s()', id));
    old_trigger name;
    worker_fn regprocedure;
BEGIN
    FOR worker_fn IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'fastembed_ext'::regnamespace AND p.proname IN ('_claim_' || id, '_done_' || id)
    LOOP
        EXECUTE pg_catalog.format('DROP FUNCTION %s', worker_fn);
    END LOOP;
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

-- Drops attachment `id`'s queue and failed tables, with the work still pending in them.
CREATE OR REPLACE FUNCTION fastembed_ext._drop_queue(id integer) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE pg_catalog.format('DROP TABLE IF EXISTS fastembed_ext.%I, fastembed_ext.%I',
                              'queue_' || id, 'failed_' || id);
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
        -- (a dropped table's triggers are gone already; its functions, queue and chunks are not)
        PERFORM fastembed_ext._uninstall_attachment(gone.id, gone.tbl);
        PERFORM fastembed_ext._drop_queue(gone.id);
        IF (SELECT a.chunk_table FROM fastembed_ext.attachments a WHERE a.id = gone.id) IS NOT NULL THEN
            EXECUTE pg_catalog.format('DROP TABLE IF EXISTS %s',
                                      (SELECT a.chunk_table FROM fastembed_ext.attachments a WHERE a.id = gone.id));
        END IF;
        DELETE FROM fastembed_ext.attachments WHERE id = gone.id;
    END LOOP;
END
$$;

-- After ALTER TABLE: an attachment follows a renamed column, its queue the key column's type, and
-- its trigger function the table to a new owner.
CREATE OR REPLACE FUNCTION fastembed_ext._on_alter_table() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd record;
    att record;
    renamed name;
    fn regprocedure;
    rel regclass;
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
                IF att.mode = 'async' AND renamed IS NOT NULL THEN
                    PERFORM fastembed_ext._install_attachment(att.id);  -- its trigger names the columns
                END IF;
            END IF;
            -- an ALTER COLUMN ... TYPE of the key: the queue holds keys of its type
            IF att.mode = 'async'
               AND (SELECT pg_catalog.format_type(q.atttypid, q.atttypmod) FROM pg_catalog.pg_attribute q
                    WHERE q.attrelid = pg_catalog.to_regclass(pg_catalog.format('fastembed_ext.%I', 'queue_' || att.id))
                      AND q.attname = 'keys')
                   IS DISTINCT FROM
                   (SELECT pg_catalog.format_type(k.atttypid, k.atttypmod) || '[]' FROM pg_catalog.pg_attribute k
                    WHERE k.attrelid = cmd.objid AND NOT k.attisdropped
                      AND k.attname = (SELECT a.key_column FROM fastembed_ext.attachments a WHERE a.id = att.id)) THEN
                PERFORM fastembed_ext._install_attachment(att.id);
            END IF;
            FOR fn IN
                SELECT p.oid FROM pg_catalog.pg_proc p
                WHERE p.pronamespace = 'fastembed_ext'::regnamespace
                  AND p.proname IN ('_embed_rows_' || att.id, '_claim_' || att.id, '_done_' || att.id)
                  AND p.proowner <> (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = cmd.objid)
            LOOP
                EXECUTE pg_catalog.format('ALTER FUNCTION %s OWNER TO %s', fn,
                    (SELECT c.relowner::regrole FROM pg_catalog.pg_class c WHERE c.oid = cmd.objid));
            END LOOP;
            FOR rel IN
                SELECT c.oid FROM pg_catalog.pg_class c
                WHERE c.relnamespace = 'fastembed_ext'::regnamespace AND c.relkind = 'r'
                  AND c.relname IN ('queue_' || att.id, 'failed_' || att.id)
                  AND c.relowner <> (SELECT t.relowner FROM pg_catalog.pg_class t WHERE t.oid = cmd.objid)
            LOOP
                EXECUTE pg_catalog.format('ALTER TABLE %s OWNER TO %s', rel,
                    (SELECT c.relowner::regrole FROM pg_catalog.pg_class c WHERE c.oid = cmd.objid));
            END LOOP;
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
AS $python$ create_embedding_index(tbl, vector_column, model, m, ef_construction) $python$;

CREATE OR REPLACE FUNCTION fastembed_ext.search(
    tbl regclass, vector_column name, query text, k integer DEFAULT 10, model text DEFAULT NULL)
RETURNS TABLE (key text, score double precision)
LANGUAGE plpython3u STABLE SET search_path = pg_catalog, pg_temp
AS $python$ search(tbl, vector_column, query, k, model) $python$;

-- ------------------------------------------------------------------------------------------------
-- privileges, triggers and event triggers

GRANT USAGE ON SCHEMA fastembed_ext TO PUBLIC;
GRANT SELECT ON fastembed_ext.models TO PUBLIC;
GRANT SELECT ON fastembed_ext.queue_status, fastembed_ext.failures TO PUBLIC;

DROP TRIGGER IF EXISTS attachments_owner_only ON fastembed_ext.attachments;
CREATE TRIGGER attachments_owner_only BEFORE INSERT OR UPDATE OR DELETE ON fastembed_ext.attachments
    FOR EACH ROW EXECUTE FUNCTION fastembed_ext._check_attachment_owner();

DROP EVENT TRIGGER IF EXISTS fastembed_ext_sql_drop;
CREATE EVENT TRIGGER fastembed_ext_sql_drop ON sql_drop
    EXECUTE FUNCTION fastembed_ext._on_sql_drop();
DROP EVENT TRIGGER IF EXISTS fastembed_ext_alter_table;
CREATE EVENT TRIGGER fastembed_ext_alter_table ON ddl_command_end WHEN TAG IN ('ALTER TABLE')
    EXECUTE FUNCTION fastembed_ext._on_alter_table();
