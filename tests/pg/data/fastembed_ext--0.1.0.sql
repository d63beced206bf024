-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION fastembed_ext" to load this file. \quit

-- embed() and embed_batch() live in the extension's schema (public unless told otherwise) so that
-- they can be called unqualified; everything else lives in the schema fastembed_ext.
CREATE SCHEMA fastembed_ext;

-- Where the server's PL/Python finds the Python package (written by `fastembed-ext pg install`),
-- and where it keeps models exported from checkpoints. Readable by all, writable by superusers.
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

CREATE VIEW fastembed_ext.models AS
    SELECT name, dim, similarity, max_seq_length, path FROM fastembed_ext.model_registry;

-- Tables with embedding attached by attach_embedding().
CREATE TABLE fastembed_ext.attachments (
    table_oid     oid  NOT NULL,
    vector_column name NOT NULL,
    source_column name NOT NULL,
    key_column    name NOT NULL,
    model         text NOT NULL,
    PRIMARY KEY (table_oid, vector_column)
);

GRANT USAGE ON SCHEMA fastembed_ext TO PUBLIC;
GRANT SELECT ON fastembed_ext.config, fastembed_ext.model_registry, fastembed_ext.models,
    fastembed_ext.attachments TO PUBLIC;

-- The cluster-wide import path (postgresql.conf or ALTER SYSTEM; see `pg install --system`).
-- pg_file_settings is for superusers, and a session's own SET must not count.
CREATE FUNCTION fastembed_ext._system_python_path() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT setting FROM pg_catalog.pg_file_settings
    WHERE name = 'fastembed_ext.python_path' AND error IS NULL
    ORDER BY seqno DESC LIMIT 1
$$;

-- Loads the Python package into this backend once (kept in GD), checking its version against
-- this script's. Every other function calls it on first use. A failure is kept as an object that
-- raises the error in the calling function (and is forgotten, so the next call tries again).
CREATE FUNCTION fastembed_ext._load() RETURNS text
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
if "fastembed_ext" not in GD:
    import os, site, sys
    cfg = {r["key"]: r["value"] for r in plpy.execute("SELECT key, value FROM fastembed_ext.config")}
    if "python_path" not in cfg:
        r = plpy.execute("SELECT fastembed_ext._system_python_path() AS p")
        if r[0]["p"]:
            cfg["python_path"] = r[0]["p"]
    # models exported from checkpoints are cached where the server may write: by default in
    # its data directory (the backend's working directory)
    os.environ["FASTEMBED_EXT_CACHE"] = cfg.get("cache_dir") or os.path.join(os.getcwd(), "fastembed_ext_cache")
    for d in filter(None, cfg.get("python_path", "").split(":")):
        if d not in sys.path:
            site.addsitedir(d)

    class Failed:
        def __init__(self, message, detail=None, hint=None):
            self.error = (message, detail, hint)

        def __getattr__(self, name):
            GD.pop("fastembed_ext", None)
            message, detail, hint = self.error
            plpy.error(message, detail=detail, hint=hint)

    try:
        from fastembed_ext.pg import server
    except ImportError as exc:
        GD["fastembed_ext"] = Failed(
            "fastembed_ext: the server cannot import the fastembed_ext Python package",
            f"{exc}; python_path = {cfg.get('python_path', '(not set)')!r}",
            "Run `fastembed-ext pg install --dsn ...` from the environment where the package is "
            "installed; its files must be readable by the server's user.")
        return None
    problem = server.check_version("0.1.0")
    GD["fastembed_ext"] = Failed(*problem) if problem else server
    if problem:
        return None
return GD["fastembed_ext"].version()
$$;

-- The Python package's version, as the server imports it.
CREATE FUNCTION fastembed_ext.version() RETURNS text
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.version()
$$;

CREATE FUNCTION embed(content text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.embed(plpy, content, None)
$$;

CREATE FUNCTION embed(content text, model text) RETURNS vector
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.embed(plpy, content, model)
$$;

CREATE FUNCTION embed_batch(contents text[]) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.embed_batch(plpy, contents, None)
$$;

CREATE FUNCTION embed_batch(contents text[], model text) RETURNS vector[]
LANGUAGE plpython3u IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.embed_batch(plpy, contents, model)
$$;

CREATE FUNCTION fastembed_ext.register_model(name text, path text)
RETURNS fastembed_ext.models
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.register_model(plpy, name, path)
$$;

CREATE FUNCTION fastembed_ext.unregister_model(name text) RETURNS boolean
LANGUAGE sql VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
    WITH d AS (DELETE FROM fastembed_ext.model_registry r WHERE r.name = unregister_model.name RETURNING 1)
    SELECT count(*) > 0 FROM d
$$;

REVOKE EXECUTE ON FUNCTION fastembed_ext.register_model(text, text),
    fastembed_ext.unregister_model(text) FROM PUBLIC;

-- Statement-level trigger behind attach_embedding(): one forward pass per batch of written rows.
CREATE FUNCTION fastembed_ext._embed_rows() RETURNS trigger
LANGUAGE plpython3u SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
srv.embed_rows(plpy, TD)
$$;

CREATE FUNCTION fastembed_ext.attach_embedding(
    tbl regclass, source_column name, vector_column name, model text DEFAULT NULL,
    key_column name DEFAULT NULL)
RETURNS bigint
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.attach_embedding(plpy, tbl, source_column, vector_column, model, key_column)
$$;

CREATE FUNCTION fastembed_ext.detach_embedding(tbl regclass, vector_column name)
RETURNS boolean
LANGUAGE plpython3u VOLATILE STRICT SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.detach_embedding(plpy, tbl, vector_column)
$$;

CREATE FUNCTION fastembed_ext.create_embedding_index(
    tbl regclass, vector_column name, model text DEFAULT NULL,
    m integer DEFAULT 16, ef_construction integer DEFAULT 64)
RETURNS regclass
LANGUAGE plpython3u VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.create_embedding_index(plpy, tbl, vector_column, model, m, ef_construction)
$$;

CREATE FUNCTION fastembed_ext.search(
    tbl regclass, vector_column name, query text, k integer DEFAULT 10, model text DEFAULT NULL)
RETURNS TABLE (key text, score double precision)
LANGUAGE plpython3u STABLE SET search_path = pg_catalog, pg_temp
AS $$
srv = GD.get("fastembed_ext") or plpy.execute("SELECT fastembed_ext._load()") and GD["fastembed_ext"]
return srv.search(plpy, tbl, vector_column, query, k, model)
$$;

-- Dropping an attached table or column leaves nothing dangling.
CREATE FUNCTION fastembed_ext._forget_dropped() RETURNS event_trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM fastembed_ext.attachments a
    USING pg_event_trigger_dropped_objects() d
    WHERE d.classid = 'pg_class'::regclass AND d.objid = a.table_oid
      AND (d.objsubid = 0
           OR d.address_names[3] IN (a.vector_column, a.source_column, a.key_column));
END
$$;

CREATE EVENT TRIGGER fastembed_ext_forget_dropped ON sql_drop
    EXECUTE FUNCTION fastembed_ext._forget_dropped();
