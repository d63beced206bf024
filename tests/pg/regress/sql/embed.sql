-- embed(), embed_batch(), the registry; run by tests/pg/test_regress.py (FASTEMBED_EXT_MINILM names
-- a bundle of all-MiniLM-L6-v2)
CREATE EXTENSION fastembed_ext CASCADE;
\set SHOW_CONTEXT never
\getenv minilm_path FASTEMBED_EXT_MINILM
SELECT name, dim, similarity, max_seq_length, fingerprint LIKE 'blake3:%' AS pinned
FROM fastembed_ext.register_model('minilm', :'minilm_path');
SELECT name, dim, similarity, is_default FROM fastembed_ext.models;
SHOW fastembed_ext.threads;

-- the vector itself: its first components, as sentence-transformers computes them
SELECT i, round(x::numeric, 4) AS x
FROM unnest(embed('hello world', 'minilm')::real[]) WITH ORDINALITY AS u(x, i) WHERE i <= 4;
SELECT round(vector_norm(embed('hello world', 'minilm'))::numeric, 4) AS norm;
SELECT embed(NULL, 'minilm') IS NULL AS null_in_null_out;

-- the default model is the database's, set by an admin
\set VERBOSITY default
SELECT embed('no default');
SELECT fastembed_ext.set_default_model('minilm');
SELECT embed('default model') = embed('default model', 'minilm') AS uses_default;
SET fastembed_ext.default_model = 'other';
SELECT embed('a session setting does not change it');
RESET fastembed_ext.default_model;

-- one forward pass over an array; NULL elements stay NULL
SELECT cardinality(v), v[2] IS NULL AS second_null, (v[1] <-> embed('one', 'minilm')) < 1e-5 AS first_equal,
       (v[3] <-> embed('three', 'minilm')) < 1e-5 AS third_equal
FROM embed_batch(ARRAY['one', NULL, 'three'], 'minilm') v;

-- semantic order
SELECT s FROM unnest(ARRAY['The stock market fell sharply.', 'A man is eating a meal.', 'A cat sleeps.']) s
ORDER BY embed(s, 'minilm') <=> embed('Someone is having dinner.', 'minilm');

-- errors name the problem and say what to do
SELECT embed('x', 'no_such_model');
SELECT fastembed_ext.register_model('bad/name', :'minilm_path');
