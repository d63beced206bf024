-- 0.3.0 -> 0.3.1: async queues hold keys in the key column's own type instead of text, which
-- takes a fifth off a bulk INSERT into an async-attached table; embed(text, model, prompt_name)
-- and embed_batch(texts, model, prompt_name) (api.sql). Frozen once released.

-- @api

-- Every attachment is rebuilt from the current template; _install_attachment converts each
-- queue's keys (pending jobs included) to the key column's type.
DO $$
DECLARE
    att integer;
BEGIN
    FOR att IN SELECT a.id FROM fastembed_ext.attachments a ORDER BY a.id LOOP
        PERFORM fastembed_ext._install_attachment(att);
    END LOOP;
END
$$;
