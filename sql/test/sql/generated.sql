-- embed in a generated column, HNSW index, top-k search
SET fastembed_ext.default_model = 'minilm';
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
SELECT count(*) FROM docs WHERE embedding = embed(body, 'minilm');

SELECT fastembed_ext.create_embedding_index('docs', 'embedding');
SELECT indexdef FROM pg_indexes WHERE tablename = 'docs' AND indexname LIKE '%hnsw';

SET enable_seqscan = off;
SET plan_cache_mode = force_generic_plan;
PREPARE q(vector) AS SELECT id FROM docs ORDER BY embedding <=> $1 LIMIT 2;
EXPLAIN (COSTS OFF) EXECUTE q(embed('a kitten', 'minilm'));
DEALLOCATE q;
SELECT id FROM docs ORDER BY embedding <=> embed('a kitten', 'minilm') LIMIT 1;
RESET enable_seqscan;

SELECT key, score > 0 AS positive FROM fastembed_ext.search('docs', 'embedding', 'music concert', 1);

-- a model whose dim differs from the column: ERROR, nothing stored
CREATE TABLE wrong (id int PRIMARY KEY, body text,
                    embedding vector(768) GENERATED ALWAYS AS (embed(body, 'minilm')) STORED);
INSERT INTO wrong VALUES (1, 'a');
SELECT count(*) FROM wrong;
DROP TABLE wrong;
