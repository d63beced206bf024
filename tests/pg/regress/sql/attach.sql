-- embed on insert/update for an existing table, batched per statement
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(384));
INSERT INTO notes SELECT i, 'existing note ' || i FROM generate_series(1, 5) i;
SELECT fastembed_ext.attach_embedding('notes', 'body', 'embedding', 'minilm') AS backfilled;
INSERT INTO notes (id, body) SELECT i, 'new note ' || i FROM generate_series(6, 40) i;
INSERT INTO notes (id, body) VALUES (41, NULL);
SELECT count(*) AS null_vectors FROM notes WHERE embedding IS NULL;
-- the stored vectors equal the ones embed() gives, component by component
SELECT id, round((embedding::real[])[1]::numeric, 4) AS x1 FROM notes WHERE id IN (1, 6) ORDER BY id;
SELECT round((embed('new note 6', 'minilm')::real[])[1]::numeric, 4) AS x1;
UPDATE notes SET body = 'changed' WHERE id <= 3;
SELECT count(DISTINCT embedding::text) AS distinct_vectors, count(*) FROM notes WHERE id <= 3;
SELECT round((embedding::real[])[1]::numeric, 4) AS x1 FROM notes WHERE id = 1;
SELECT round((embed('changed', 'minilm')::real[])[1]::numeric, 4) AS x1;
SELECT tbl, source_column, key_column, model, mode FROM fastembed_ext.attachments;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'notes'::regclass ORDER BY 1;

-- a vector column of another width is refused before anything changes
CREATE TABLE notes768 (id int PRIMARY KEY, body text, embedding vector(768));
SELECT fastembed_ext.attach_embedding('notes768', 'body', 'embedding', 'minilm');

SELECT fastembed_ext.detach_embedding('notes', 'embedding');
INSERT INTO notes (id, body) VALUES (100, 'after detach');
SELECT embedding IS NULL AS not_embedded FROM notes WHERE id = 100;
SELECT count(*) FROM fastembed_ext.attachments;
DROP TABLE notes, notes768;
