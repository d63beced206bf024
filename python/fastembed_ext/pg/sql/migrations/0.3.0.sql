-- 0.2.0 -> 0.3.0: embedding off the write path. An attachment in mode 'async' only queues the keys
-- of the rows written; workers (fastembed-ext worker) embed them. Frozen once released.

ALTER TABLE fastembed_ext.attachments DROP CONSTRAINT attachments_mode_check,
    ADD CONSTRAINT attachments_mode_check CHECK (mode IN ('sync', 'async', 'manual'));

-- An async attachment may also cut each text into token windows, each embedded into a row of its
-- chunk table (key, chunk, span, embedding): `chunking` is {"window": n, "overlap": n}.
ALTER TABLE fastembed_ext.attachments ADD COLUMN chunking jsonb, ADD COLUMN chunk_table regclass;

-- attach_embedding gains `chunking` (a new argument is a new signature).
DROP FUNCTION IF EXISTS fastembed_ext.attach_embedding(regclass, name, name, text, name, text);

-- Each async attachment gets its own queue and failed tables, owned by its table's owner
-- (sql/api.sql, "the queue of async attachments"); only this counter is shared.

-- Rows embedded by workers, one row per batch, for queue_status' rate; rows older than ten
-- minutes are pruned as new ones arrive.
CREATE TABLE fastembed_ext.completions (
    attachment integer NOT NULL,
    done_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    rows       integer NOT NULL
);

-- Members of this role may run the embedding workers: claim queued rows of every async
-- attachment, read their texts and write their vectors, through each attachment's own functions
-- (which run as the table's owner). It reads and writes nothing else.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'fastembed_ext_worker') THEN
        CREATE ROLE fastembed_ext_worker NOLOGIN;
    END IF;
END
$$;

-- @api

-- Every attachment's trigger function is rebuilt from the current template.
DO $$
DECLARE
    att integer;
BEGIN
    FOR att IN SELECT a.id FROM fastembed_ext.attachments a ORDER BY a.id LOOP
        PERFORM fastembed_ext._install_attachment(att);
    END LOOP;
END
$$;
