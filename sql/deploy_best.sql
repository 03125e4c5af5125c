-- pepnet_deploy(name, 'best') ranks only versions validated (or, with evaluation => name, evaluated)
-- on the same data (issue 15): the figures of versions measured on another query, or on the same
-- query over other rows, are not comparable; such versions are skipped and named in a NOTICE
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pepnet;
SET client_min_messages = notice;
\set cfg '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "persona": [{"name": "u", "buckets": 8}], "emb_dim": 2, "hidden": [4]}'

-- the issue's case (figures as pepnet_train stores them): v1 validated on an easy day (logloss
-- 0.210), v2..v4 on a harder day; v4 is the best of the comparable ones
SELECT count(pepnet_create('db', :'cfg', s)) FROM generate_series(1, 4) s;
UPDATE pepnet.models SET metrics = jsonb_build_object('validation_query', q,
	'validation', jsonb_build_object('rows', r, 'actual', a, 'logloss', l, 'auc', u, 'pcoc', p,
		'tasks', jsonb_build_object('click', jsonb_build_object('rows', r, 'actual', a, 'logloss', l, 'auc', u, 'pcoc', p))))
FROM (VALUES (1, 'SELECT * FROM imp WHERE day = 1', 5000, 0.031, 0.210, 0.91, 1.00),
             (2, 'SELECT * FROM imp WHERE day = 4', 5000, 0.162, 0.501, 0.70, 0.95),
             (3, 'SELECT * FROM imp WHERE day = 4', 5000, 0.162, 0.490, 0.71, 1.20),
             (4, 'SELECT * FROM imp WHERE day = 4', 5000, 0.162, 0.487, 0.69, 1.02)) x(v, q, r, a, l, u, p)
WHERE name = 'db' AND version = x.v;
SELECT pepnet_deploy('db', 'best') AS best_logloss;
SELECT pepnet_deploy('db', 'best', 'auc') AS best_auc;
SELECT pepnet_deploy('db', 'best', 'pcoc') AS best_pcoc;
SELECT pepnet_deploy('db', 'best', 'logloss:click') AS best_logloss_of_click;
SELECT to_version, strategy FROM pepnet.deploy_history WHERE name = 'db' ORDER BY seq;

-- the same query over other rows (the table changed): not comparable either
SELECT pepnet_create('db', :'cfg', 5) AS v5;
UPDATE pepnet.models SET metrics = jsonb_set(jsonb_set(m4.metrics, '{validation,rows}', '5200'), '{validation,logloss}', '0.300')
FROM (SELECT metrics FROM pepnet.models WHERE name = 'db' AND version = 4) m4
WHERE name = 'db' AND version = 5;
SELECT pepnet_deploy('db', 'best') AS best_of_v5_alone;

-- all validated alike: all compared, no NOTICE
SELECT count(pepnet_create('dc', :'cfg', s)) FROM generate_series(1, 3) s;
UPDATE pepnet.models SET metrics = jsonb_build_object('validation_query', 'SELECT 1',
	'validation', jsonb_build_object('rows', 100, 'actual', 0.1, 'logloss', l))
FROM (VALUES (1, 0.3), (2, 0.2), (3, 0.25)) x(v, l) WHERE name = 'dc' AND version = x.v;
SELECT pepnet_deploy('dc', 'best') AS best_all_comparable;

-- trained for real: the first run validated on the easy rows (5% clicks), the second on all of them;
-- 'best' compares the versions validated as the newest one, names the others
CREATE TABLE dimp AS
SELECT i, i % 2 AS domain, ARRAY[abs(hashint4(-i)) % 8]::bigint[] AS persona, ARRAY[abs(hashint4(i)) % 50]::bigint[] AS features,
       (abs(hashint4(i * 7 + 1)) % 100) < CASE WHEN i % 3 = 0 THEN 40 ELSE 5 END AS clicked
FROM generate_series(1, 3000) i;
SET client_min_messages = warning;
CALL pepnet_train('dt', 'SELECT domain, persona, features, clicked AS label FROM dimp WHERE i % 4 <> 0', :'cfg',
                  validation => 'SELECT domain, persona, features, clicked AS label FROM dimp WHERE i % 4 = 0 AND i % 3 <> 0',
                  epochs => 2, batch_size => 128, progress_interval => 0);
CALL pepnet_train('dt', 'SELECT domain, persona, features, clicked AS label FROM dimp WHERE i % 4 <> 0', :'cfg',
                  validation => 'SELECT domain, persona, features, clicked AS label FROM dimp WHERE i % 4 = 0',
                  epochs => 2, batch_size => 128, progress_interval => 0);
SET client_min_messages = notice;
SELECT version, metrics->'validation'->>'rows' AS validation_rows FROM pepnet.models WHERE name = 'dt' ORDER BY version;
-- the deployed version is one of the second run (validated as the newest version was)
SELECT pepnet_deploy('dt', 'best') IN (3, 4) AS best_of_second_run;

-- the same query text, row count and click rate over a table reloaded with other rows (the next
-- day's impressions): validation's data_hash tells them apart
CREATE TABLE dval AS SELECT * FROM dimp WHERE i % 4 = 0;
SET client_min_messages = warning;
CALL pepnet_train('dh', 'SELECT domain, persona, features, clicked AS label FROM dimp WHERE i % 4 <> 0', :'cfg',
                  validation => 'SELECT domain, persona, features, clicked AS label FROM dval',
                  epochs => 2, batch_size => 128, progress_interval => 0);
-- the next day: the same labels, other items
UPDATE dval SET features = ARRAY[(features[1] + 17) % 50];
CALL pepnet_train('dh', 'SELECT domain, persona, features, clicked AS label FROM dimp WHERE i % 4 <> 0', :'cfg',
                  validation => 'SELECT domain, persona, features, clicked AS label FROM dval',
                  epochs => 1, batch_size => 128, progress_interval => 0);
SET client_min_messages = notice;
SELECT count(DISTINCT metrics->'validation_query') AS queries, count(DISTINCT metrics->'validation'->'rows') AS row_counts,
       count(DISTINCT metrics->'validation'->'actual') AS actual_rates, count(DISTINCT metrics->'validation'->'data_hash') AS data_hashes
FROM pepnet.models WHERE name = 'dh';
SELECT (SELECT metrics->'validation'->'data_hash' FROM pepnet.models WHERE name = 'dh' AND version = 1) =
       (SELECT metrics->'validation'->'data_hash' FROM pepnet.models WHERE name = 'dh' AND version = 2) AS same_rows_same_hash;
SELECT pepnet_deploy('dh', 'best') AS best_of_the_next_day;

-- 'best' by a recorded evaluation (evaluation => name) applies the same rule to the evaluation's
-- query, rows, actual rate and data_hash; the deploy history records the figure chosen by
UPDATE pepnet.models SET metrics = metrics || jsonb_build_object('evaluations', jsonb_build_object('e',
	jsonb_build_object('query', q, 'rows', 100, 'actual', 0.1, 'logloss', l)))
FROM (VALUES (1, 'SELECT 2', 0.1), (2, 'SELECT 1', 0.4), (3, 'SELECT 1', 0.35)) x(v, q, l) WHERE name = 'dc' AND version = x.v;
SELECT pepnet_deploy('dc', 'best', evaluation => 'e') AS best_evaluated_alike;
SELECT to_version, strategy, metric FROM pepnet.deploy_history WHERE name = 'dc' ORDER BY seq DESC LIMIT 1;
-- recorded by pepnet_evaluate: its data_hash is the one validation gives the same rows
SELECT count(*) AS rows_recorded FROM pepnet_evaluate('dh@3', 'SELECT domain, persona, features, clicked AS label FROM dval', record => 'hold');
SELECT (SELECT metrics->'evaluations'->'hold'->'data_hash' FROM pepnet.models WHERE name = 'dh' AND version = 3) =
       (SELECT metrics->'validation'->'data_hash' FROM pepnet.models WHERE name = 'dh' AND version = 3) AS evaluation_hash_is_validation_hash;
SELECT jsonb_typeof(metrics->'evaluations'->'hold'->'tasks'->'click'->'data_hash') IS NULL AS hash_once
FROM pepnet.models WHERE name = 'dh' AND version = 3;
-- versions 1 and 2 evaluated under the same name on the same query over other rows: skipped
UPDATE dval SET features = ARRAY[(features[1] + 17) % 50];
SELECT count(*) FROM pepnet_evaluate('dh@1', 'SELECT domain, persona, features, clicked AS label FROM dval', record => 'hold');
SELECT count(*) FROM pepnet_evaluate('dh@2', 'SELECT domain, persona, features, clicked AS label FROM dval', record => 'hold');
UPDATE dval SET features = ARRAY[(features[1] + 33) % 50];  -- back to the rows version 3 was evaluated on
SELECT pepnet_deploy('dh', 'best', evaluation => 'hold') AS best_of_v3_alone;
-- all three evaluated on the same rows: all compared, no NOTICE, the lowest logloss wins
SELECT count(*) FROM pepnet_evaluate('dh@1', 'SELECT domain, persona, features, clicked AS label FROM dval', record => 'hold');
SELECT count(*) FROM pepnet_evaluate('dh@2', 'SELECT domain, persona, features, clicked AS label FROM dval', record => 'hold');
SELECT count(DISTINCT metrics->'evaluations'->'hold'->'data_hash') AS hashes FROM pepnet.models WHERE name = 'dh';
SELECT pepnet_deploy('dh', 'best', evaluation => 'hold') =
       (SELECT version FROM pepnet.runs WHERE model = 'dh' AND source = 'hold' AND domain IS NULL AND task = 'click'
        ORDER BY logloss, version DESC LIMIT 1) AS best_of_all_three;
SELECT pepnet_deploy('dh', 'best', 'auc', evaluation => 'nosuch');
