-- Training: CALL pepnet_train, versions per epoch with metrics, continuing, pepnet_evaluate, bad input
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- domain 0 clicks on even items, domain 1 on odd items, domain 2 when the user id is small
CREATE TABLE clicks AS
SELECT i, i % 3 AS domain, ARRAY[u, i % 4]::bigint[] AS persona,
       ARRAY[item, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0]::real[] AS dense,
       (CASE i % 3 WHEN 0 THEN item % 2 = 0
                   WHEN 1 THEN item % 2 = 1
                   ELSE u < 12 END) AS clicked
FROM generate_series(1, 6000) i, LATERAL (SELECT abs(hashint4(i)) % 300 AS item, abs(hashint4(-i)) % 40 AS u) h;
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "dense": 1, "emb_dim": 8, "hidden": [32, 16]}'

CALL pepnet_train('ctr', 'SELECT domain, persona, features, dense, clicked AS label FROM clicks WHERE i % 10 <> 0',
                  :'cfg', validation => 'SELECT domain, persona, features, dense, clicked AS label FROM clicks WHERE i % 10 = 0',
                  epochs => 3, batch_size => 128, lr => 0.01, seed => 1, progress_interval => 0);

-- one version per epoch, each the child of the one before, with metrics
SELECT version, parent, metrics->>'epoch' AS epoch, (metrics->>'rows')::int AS rows,
       metrics ? 'seconds' AND metrics ? 'rows_per_s' AND metrics ? 'train_loss' AS has_stats,
       (metrics->'validation'->'tasks'->'click'->'domains') ?& ARRAY['0', '1', '2'] AS per_domain
FROM pepnet.models WHERE name = 'ctr' ORDER BY version;

-- it learned: training loss falls and validation AUC is high
SELECT (SELECT (metrics->>'train_loss')::float8 FROM pepnet.models WHERE name = 'ctr' AND version = 3) <
       (SELECT (metrics->>'train_loss')::float8 FROM pepnet.models WHERE name = 'ctr' AND version = 1) AS loss_falls,
       (SELECT (metrics->'validation'->>'auc')::float8 FROM pepnet.models WHERE name = 'ctr' AND version = 3) > 0.8 AS auc_high;

-- pepnet_evaluate: a row per domain and task, and one for all domains; matches the stored validation metrics
SELECT domain, task, rows, auc > 0.7 AS good FROM pepnet_evaluate('ctr@3',
  'SELECT domain, persona, features, dense, clicked AS label FROM clicks WHERE i % 10 = 0') ORDER BY domain NULLS LAST;
SELECT abs(e.logloss - (m.metrics->'validation'->>'logloss')::float8) < 1e-5 AS same_logloss,
       abs(e.auc - (m.metrics->'validation'->>'auc')::float8) < 1e-5 AS same_auc
FROM pepnet_evaluate('ctr@3', 'SELECT domain, persona, features, dense, clicked AS label FROM clicks WHERE i % 10 = 0') e,
     pepnet.models m
WHERE e.domain IS NULL AND m.name = 'ctr' AND m.version = 3;

-- the trained model scores
SELECT count(*) AS scored FROM pepnet_score('ctr', 1, '{3, 1}', '{{1, 2}, {3, 4}}', '{{0.5}, {0.1}}');

-- without a config, training continues from the deployed version
SELECT pepnet_deploy('ctr', 2);
CALL pepnet_train('ctr', 'SELECT domain, persona, features, dense, clicked::int AS label FROM clicks', batch_size => 256, progress_interval => 0);
SELECT version, parent FROM pepnet.models WHERE name = 'ctr' AND version = 4;
-- ... or from the version named
CALL pepnet_train('ctr@1', 'SELECT domain, persona, features, dense, clicked::int::float8 AS label FROM clicks', progress_interval => 0, deploy => true);
SELECT version, parent FROM pepnet.models WHERE name = 'ctr' AND version = 5;
SELECT version FROM pepnet.deployments WHERE name = 'ctr';

-- two tasks with labels real[], NULL = unknown; early stopping never runs past epochs
CALL pepnet_train('mt', 'SELECT domain, persona, features, dense, ARRAY[clicked::int, CASE WHEN i % 7 = 0 THEN NULL ELSE (i % 2) END]::real[] AS labels FROM clicks',
                  '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4}], "dense": 1, "emb_dim": 4, "hidden": [8], "tasks": ["click", "buy"]}',
                  validation => 'SELECT domain, persona, features, dense, ARRAY[clicked::int, NULL]::real[] AS labels FROM clicks WHERE i < 600',
                  epochs => 2, patience => 1, progress_interval => 0);
SELECT count(*) BETWEEN 1 AND 2 AS versions FROM pepnet.models WHERE name = 'mt';
SELECT task, rows FROM pepnet_evaluate('mt', 'SELECT domain, persona, features, dense, ARRAY[clicked::int, CASE WHEN i % 7 = 0 THEN NULL ELSE (i % 2) END]::real[] AS labels FROM clicks')
WHERE domain IS NULL ORDER BY task;

-- bad input: clear errors before any work, nothing committed
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, clicked AS label FROM clicks', progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, clicked AS label FROM clicks', '{"domains": 3}');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain::text AS domain, persona, features, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona::int[] AS persona, features, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, clicked::text AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, clicked AS label, ARRAY[1]::real[] AS labels FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, 2 AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, ''NaN''::float8 AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain + 1 AS domain, persona, features, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona[1:1] AS persona, features, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, ARRAY[features[1], NULL] AS features, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, ARRAY[''NaN'']::real[] AS dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, ARRAY[features[1], 99] AS features, dense, clicked AS label FROM clicks', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT domain, persona, features, dense, clicked AS label FROM clicks WHERE false', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'DELETE FROM clicks RETURNING domain, persona, features, dense, clicked AS label', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELEKT 1', :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', epochs => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', batch_size => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', batch_size => 1000000);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', lr => -1);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', lr => 'NaN');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', shuffle_buffer => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', 'SELECT * FROM clicks', :'cfg', patience => 2);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('bad', NULL, :'cfg');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('mt', 'SELECT domain, persona, features, dense, clicked AS label FROM clicks');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS nothing_committed FROM pepnet.models WHERE name = 'bad';
SELECT * FROM pepnet_evaluate('nope', 'SELECT * FROM clicks');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('ctr', 'SELECT domain, persona, features, dense FROM clicks');
\echo :LAST_ERROR_SQLSTATE
-- the data query runs with the caller's rights and cannot write
CALL pepnet_train('bad', 'WITH d AS (DELETE FROM clicks RETURNING *) SELECT domain, persona, features, dense, clicked AS label FROM d', :'cfg');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS rows_kept FROM clicks;
