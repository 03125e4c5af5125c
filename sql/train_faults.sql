-- Training faults found early and safely (issue 7): transaction blocks, query columns before the
-- work, error context naming the query and row, non-finite training, unknown labels, models
-- without persona fields, trainer memory freed on abort
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE TABLE ev AS
SELECT i, i % 3 AS domain, ARRAY[i % 50]::bigint[] AS persona, ARRAY[i % 97, i % 7]::bigint[] AS features,
       ARRAY[(i % 11) / 11.0]::real[] AS dense, (hashint4(i) % 5 = 0) AS clicked
FROM generate_series(1, 3000) i;
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 7, "hash": false}], "persona": [{"name": "user", "buckets": 64}], "dense": 1, "emb_dim": 4, "hidden": [8]}'
\set q 'SELECT domain, persona, features, dense, clicked AS label FROM ev'

-- 1. inside a transaction block: refused at once, before any data is read (the data query would fail)
BEGIN;
CALL pepnet_train('tx', 'SELECT 1/0 AS domain', :'cfg');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'tx';

-- 2. validation query columns are checked before the first epoch (the data query here fails on its
--    first row, so its error would come first if any row were read): nothing is stored
\set qz 'SELECT domain, persona, features, dense, clicked AS label FROM ev WHERE 1 / (i - i) = 0'
CALL pepnet_train('v', :'qz', :'cfg', validation => 'SELECT domain, persona, features, dense FROM ev');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('v', :'qz', :'cfg', validation => 'SELECT domain, persona, features, dense, clicked::text AS label FROM ev');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('v', :'qz', :'cfg', validation => 'SELECT domain, persona::int[] AS persona, features, dense, clicked AS label FROM ev');
\echo :LAST_ERROR_SQLSTATE
-- an empty validation query would silently turn off selection and early stopping: an error
CALL pepnet_train('v', :'qz', :'cfg', validation => 'SELECT domain, persona, features, dense, clicked AS label FROM ev WHERE false');
\echo :LAST_ERROR_SQLSTATE
-- a data query's missing column is found before anything else too
CALL pepnet_train('v', 'SELECT domain, persona, features, clicked AS label FROM ev', :'cfg');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'v';

-- 3. data-row faults: one mechanism (an error context naming the query and the row), scoring's SQLSTATEs
\set VERBOSITY default
\set SHOW_CONTEXT errors
CALL pepnet_train('r', 'SELECT domain, persona, features, dense, clicked AS label FROM ev WHERE i < 100
  UNION ALL SELECT 0, ''{1}'', ARRAY[1, NULL], ''{0}'', true', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('r', 'SELECT domain, persona, features, CASE WHEN i = 1500 THEN ''{NaN}''::real[] ELSE dense END AS dense,
  clicked AS label FROM ev ORDER BY i', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('r', 'SELECT domain, persona, features, CASE WHEN i = 7 THEN ''{Infinity}''::real[] ELSE dense END AS dense,
  clicked AS label FROM ev ORDER BY i', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('r', 'SELECT CASE WHEN i = 42 THEN NULL ELSE domain END AS domain, persona, features, dense,
  clicked AS label FROM ev ORDER BY i', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('r', 'SELECT CASE WHEN i = 42 THEN 9 ELSE domain END AS domain, persona, features, dense,
  clicked AS label FROM ev ORDER BY i', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('r', 'SELECT domain, persona, features, dense, CASE WHEN i = 3 THEN 2 ELSE 0 END AS label
  FROM ev ORDER BY i', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('r', :'q', :'cfg', validation => 'SELECT domain, persona, features,
  CASE WHEN i = 5 THEN NULL ELSE dense END AS dense, clicked AS label FROM ev ORDER BY i', progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
-- the same in pepnet_evaluate
SELECT pepnet_create('e', :'cfg', 1) AS created;
SELECT * FROM pepnet_evaluate('e', 'SELECT domain, persona, features,
  CASE WHEN i = 9 THEN ''{NaN}''::real[] ELSE dense END AS dense, clicked AS label FROM ev ORDER BY i');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('e', 'SELECT domain, persona, features, dense, NULL::real AS label FROM ev');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS numeric_label_ok FROM pepnet_evaluate('e', 'SELECT domain, persona, features, dense, clicked::int::numeric AS label FROM ev');
-- a CALL where COMMIT is impossible (inside a function) is refused before reading data
CREATE FUNCTION train_in_function() RETURNS void LANGUAGE plpgsql AS $$
BEGIN CALL pepnet_train('fn', 'SELECT 1/0 AS domain'); END $$;
SELECT train_in_function();
\echo :LAST_ERROR_SQLSTATE

-- 4. never store a version that cannot be used: a dense value of 1e30 in the second epoch's data
--    stops training naming the row and the likely cause; the first epoch's version stays and loads
CREATE FUNCTION huge_after_first_pass() RETURNS boolean LANGUAGE sql AS
  $$ SELECT EXISTS (SELECT 1 FROM pepnet.models WHERE name = 'div') $$;
CALL pepnet_train('div', 'SELECT domain, persona, features,
  CASE WHEN i = 2000 AND huge_after_first_pass() THEN ''{1e30}''::real[] ELSE dense END AS dense,
  clicked AS label FROM ev ORDER BY i', :'cfg', epochs => 3, batch_size => 100, shuffle_buffer => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
\set SHOW_CONTEXT never
SELECT version, metrics->>'epoch' AS epoch FROM pepnet.models WHERE name = 'div' ORDER BY version;
SELECT count(*) AS scores_fine FROM pepnet_score('div', 1, '{1}', '{{1, 2}, {3, 4}}', '{{0.5}, {0.1}}') WHERE score BETWEEN 0 AND 1;
SELECT pepnet_import('div_copy', (SELECT config FROM pepnet.models WHERE name = 'div'), pepnet_export('div')) AS export_imports;
-- without PN the same row meets the towers directly: whatever is stored (here the row's logit
-- saturates on the right side and gives no gradient) loads and scores
\set nopn '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 7}], "persona": [{"name": "u", "buckets": 64}], "dense": 1, "emb_dim": 4, "hidden": [8], "pn": false, "epnet": false}'
CALL pepnet_train('div2', 'SELECT domain, persona, features, CASE WHEN i = 10 THEN ''{1e30}''::real[] ELSE dense END AS dense,
  clicked AS label FROM ev ORDER BY i', :'nopn', shuffle_buffer => 1, progress_interval => 0);
SELECT count(*) AS stored, bool_and(pepnet_predict('div2@' || version, 0, '{1}', '{1, 2}', '{0.5}') BETWEEN 0 AND 1) AS scores
FROM pepnet.models WHERE name = 'div2';

-- a learning rate of 10 on unscaled dense values diverges at once
\set wide '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 7}], "persona": [{"name": "u", "buckets": 64}], "dense": 1, "emb_dim": 4, "hidden": [64, 64], "pn": false}'
CALL pepnet_train('div3', 'SELECT domain, persona, features, ARRAY[dense[1] * 1e15]::real[] AS dense, clicked AS label FROM ev',
                  :'wide', lr => 10, epochs => 3, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'div3';

-- 5. data whose labels are all unknown: an error, as an empty data query is
CALL pepnet_train('unk', 'SELECT domain, persona, features, dense, NULL::real AS label FROM ev', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('unk', 'SELECT domain, persona, features, dense, ARRAY[NULL]::real[] AS labels FROM ev', :'cfg');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'unk';

-- 6. a model without persona fields needs no persona column (missing or NULL)
\set nop '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 7}], "dense": 1, "emb_dim": 4, "hidden": [8]}'
CALL pepnet_train('nop', 'SELECT domain, features, dense, clicked AS label FROM ev', :'nop',
                  validation => 'SELECT domain, NULL::bigint[] AS persona, features, dense, clicked AS label FROM ev WHERE i % 5 = 0',
                  progress_interval => 0);
SELECT version, (metrics->'validation'->>'rows')::int AS validation_rows FROM pepnet.models WHERE name = 'nop';
SELECT task, rows FROM pepnet_evaluate('nop', 'SELECT domain, features, dense, clicked AS label FROM ev') WHERE domain IS NULL;
-- ... but a model with persona fields does
CALL pepnet_train('nop2', 'SELECT domain, features, dense, clicked AS label FROM ev', :'cfg');
\echo :LAST_ERROR_SQLSTATE

-- 7. a failed epoch leaves no trainer behind (gradients and Adam state, ~3x the model)
\set big '{"domains": 3, "features": [{"name": "item", "buckets": 100000}, {"name": "cat", "buckets": 7}], "persona": [{"name": "u", "buckets": 8}], "dense": 1, "emb_dim": 16, "hidden": [8]}'
CALL pepnet_train('mem', 'SELECT domain, persona, features, CASE WHEN i = 2900 THEN ''{NaN}''::real[] ELSE dense END AS dense,
  clicked AS label FROM ev ORDER BY i', :'big', shuffle_buffer => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS trainer_contexts, COALESCE(sum(total_bytes), 0) AS bytes
FROM pg_backend_memory_contexts WHERE name = 'pepnet trainer';
-- and a cancelled one (statement_timeout) likewise
SET statement_timeout = '50ms';
CALL pepnet_train('mem', 'SELECT domain, persona, features, dense, clicked AS label FROM ev, pg_sleep(0.0001) s', :'big',
                  progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SELECT count(*) AS trainer_contexts FROM pg_backend_memory_contexts WHERE name = 'pepnet trainer';

-- a data query that locks rows (FOR UPDATE) is not a read-only SELECT: 22023 with what to fix
CALL pepnet_train('fu', 'SELECT 0 AS domain, ARRAY[1]::bigint[] AS persona, ARRAY[1]::bigint[] AS features, 1 AS label FROM pg_class LIMIT 1 FOR UPDATE',
                  '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "persona": [{"name": "u", "buckets": 2}]}');
\echo :LAST_ERROR_SQLSTATE
