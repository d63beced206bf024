-- 0.3.1 -> 0.3.2: an async attachment's trigger sends at most one NOTIFY per session per quarter
-- second (api.sql, _enqueue_body): a committing NOTIFY serialises every other notifying commit in
-- the cluster; _load() reads no configuration file when fastembed_ext.library_root is set nowhere.
-- Frozen once released.

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
