-- embed in a generated column, HNSW index, top-k search
\set SHOW_CONTEXT never
CREATE TABLE docs (id bigserial PRIMARY KEY, body text,
                   embedding vector(384) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED);
INSERT INTO docs (body) VALUES
    ('The cat sat on the mat.'),
    ('Quarterly revenue grew by ten percent.'),
    ('He plays the violin in an orchestra.'),
    ('Fresh bread from the bakery smells wonderful.'),
    (NULL);
SELECT id, vector_dims(embedding) FROM docs ORDER BY id;
-- the stored vectors themselves (first components)
SELECT id, round((embedding::real[])[1]::numeric, 4) AS x1, round((embedding::real[])[384]::numeric, 4) AS x384
FROM docs WHERE id <= 2 ORDER BY id;

SELECT fastembed_ext.create_embedding_index('docs', 'embedding');
SELECT indexdef FROM pg_indexes WHERE tablename = 'docs' AND indexname LIKE '%hnsw';

SET enable_seqscan = off;
SET plan_cache_mode = force_generic_plan;
PREPARE q(vector) AS SELECT id FROM docs ORDER BY embedding <=> $1 LIMIT 2;
EXPLAIN (COSTS OFF) EXECUTE q(embed('a kitten', 'minilm'));
DEALLOCATE q;
SELECT id FROM docs ORDER BY embedding <=> embed('a kitten', 'minilm') LIMIT 1;
RESET enable_seqscan;

SELECT key, round(score::numeric, 4) AS score FROM fastembed_ext.search('docs', 'embedding', 'music concert', 2);
SELECT kind, object FROM fastembed_ext.model_dependents('minilm');

-- a model whose dim differs from the column: ERROR, nothing stored
CREATE TABLE wrong (id int PRIMARY KEY, body text,
                    embedding vector(768) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED);
INSERT INTO wrong VALUES (1, 'a');
SELECT count(*) FROM wrong;
DROP TABLE wrong;
