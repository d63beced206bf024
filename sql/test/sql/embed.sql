-- embed(), embed_batch(), models; run by tests/pg/test_regress.py (FASTEMBED_EXT_MINILM names the model folder)
CREATE EXTENSION fastembed_ext CASCADE;
\set SHOW_CONTEXT never
\getenv minilm_path FASTEMBED_EXT_MINILM
SELECT name, dim, similarity, max_seq_length FROM fastembed_ext.register_model('minilm', :'minilm_path');
SELECT name, dim, similarity FROM fastembed_ext.models;

SELECT vector_dims(embed('hello world', 'minilm'));
SELECT round(vector_norm(embed('hello world', 'minilm'))::numeric, 4) AS norm;
SELECT embed(NULL, 'minilm') IS NULL AS null_in_null_out;
SELECT embed('same text', 'minilm') = embed('same text', 'minilm') AS deterministic;

-- the default model comes from a setting
SET fastembed_ext.default_model = 'minilm';
SELECT embed('default model') = embed('default model', 'minilm') AS uses_default;
RESET fastembed_ext.default_model;
\set VERBOSITY default
SELECT embed('no default');

-- one forward pass over an array; NULL elements stay NULL
SELECT cardinality(v), v[2] IS NULL AS second_null, (v[1] <-> embed('one', 'minilm')) < 1e-5 AS first_equal,
       (v[3] <-> embed('three', 'minilm')) < 1e-5 AS third_equal
FROM embed_batch(ARRAY['one', NULL, 'three'], 'minilm') v;

-- semantic order
SELECT s FROM unnest(ARRAY['The stock market fell sharply.', 'A man is eating a meal.', 'A cat sleeps.']) s
ORDER BY embed(s, 'minilm') <=> embed('Someone is having dinner.', 'minilm');

-- unknown model: ERROR naming it, with a hint
SELECT embed('x', 'no_such_model');
