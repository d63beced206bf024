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
