-- The modelling workflow (0.3.0): recorded evaluations, pepnet.runs, grids of runs, deploy 'best'
-- by an evaluation and the metric it used, the divergence stop
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;

CREATE TABLE wf_clicks AS
SELECT i, i % 3 AS domain, ARRAY[u, i % 4]::bigint[] AS persona,
       ARRAY[item, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0]::real[] AS dense,
       (CASE i % 3 WHEN 0 THEN item % 2 = 0
                   WHEN 1 THEN item % 2 = 1
                   ELSE u < 12 END) AS clicked
FROM generate_series(1, 3000) i, LATERAL (SELECT abs(hashint4(i)) % 300 AS item, abs(hashint4(-i)) % 40 AS u) h;
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "dense": 1, "emb_dim": 8, "hidden": [32, 16]}'
\set train 'SELECT domain, persona, features, dense, clicked AS label FROM wf_clicks WHERE i % 10 <> 0'
\set holdout 'SELECT domain, persona, features, dense, clicked AS label FROM wf_clicks WHERE i % 10 = 0'

-- 1. a grid of three runs (configs, or {"config", "lr", ...}) under one name; deploy the best by AUC
CALL pepnet_train('g', :'train',
  jsonb_build_array(:'cfg'::jsonb,
                    :'cfg'::jsonb || '{"epnet": false, "ppnet": false}',
                    jsonb_build_object('config', :'cfg'::jsonb || '{"hidden": [8]}', 'lr', 0.003, 'epochs', 1)),
  validation => :'holdout', epochs => 2, batch_size => 128, lr => 0.01, progress_interval => 0,
  deploy => true, selection => 'auc');
-- one version per epoch of each run, each run from fresh weights
SELECT version, parent, pepnet._config_parts(config) AS parts, metrics->>'lr' AS lr, metrics->>'epoch' AS epoch
FROM pepnet.models WHERE name = 'g' ORDER BY version;

-- 2. pepnet.runs: one row per (version, source, task, domain); the overall row per version
SELECT version, parts, hidden, emb_dim, lr, batch_size, epoch, source, task, rows, positives,
       auc BETWEEN 0 AND 1 AS auc_ok, logloss > 0 AS logloss_ok, pcoc > 0 AS pcoc_ok
FROM pepnet.runs WHERE model = 'g' AND domain IS NULL ORDER BY version;
SELECT count(*) AS domain_rows, sum(rows) AS rows, sum(positives) AS positives
FROM pepnet.runs WHERE model = 'g' AND version = 1 AND domain IS NOT NULL;
-- the figures are the stored validation metrics
SELECT bool_and(r.auc = (m.metrics->'validation'->'tasks'->'click'->'domains'->(r.domain::text)->>'auc')::float8) AS same_auc
FROM pepnet.runs r JOIN pepnet.models m ON m.name = r.model AND m.version = r.version
WHERE r.model = 'g' AND r.domain IS NOT NULL;
-- the grid deployed its best validation AUC, and the history says by which figure
SELECT d.version = (SELECT version FROM pepnet.runs WHERE model = 'g' AND domain IS NULL ORDER BY auc DESC, version DESC LIMIT 1) AS best_deployed
FROM pepnet.deployments d WHERE d.name = 'g';
SELECT h.strategy, h.metric ~ '^auc = 0\.[0-9]{4} \(validation\)$' AS metric_format,
       split_part(split_part(h.metric, ' = ', 2), ' ', 1)::numeric = round(r.auc::numeric, 4) AS its_figure
FROM pepnet.deploy_history h JOIN pepnet.runs r ON r.model = h.name AND r.version = h.to_version AND r.domain IS NULL
WHERE h.name = 'g' ORDER BY h.seq;

-- 3. evaluate and record any version: a version without metrics (created, as an import would be)
SELECT pepnet_create('imp', :'cfg', 7) AS created;
SELECT fingerprint AS fp FROM pepnet.models WHERE name = 'imp' AND version = 1 \gset
SELECT domain, task, rows, auc IS NOT NULL AS has_auc FROM pepnet_evaluate('imp', :'holdout', record => 'holdout') ORDER BY domain NULLS LAST;
-- stored under metrics->'evaluations'->'holdout' with the query; equal to pepnet_evaluate's figures
SELECT jsonb_object_keys(metrics->'evaluations') AS evaluation, metrics->'evaluations'->'holdout'->>'query' = :'holdout' AS same_query,
       (metrics->'evaluations'->'holdout'->>'rows')::int AS rows
FROM pepnet.models WHERE name = 'imp';
SELECT abs(e.logloss - (m.metrics->'evaluations'->'holdout'->'tasks'->'click'->'domains'->(e.domain::text)->>'logloss')::float8) = 0 AS exact
FROM pepnet_evaluate('imp', :'holdout') e, pepnet.models m WHERE m.name = 'imp' AND e.domain IS NOT NULL ORDER BY e.domain;
-- config, weights and fingerprint unchanged
SELECT fingerprint = :'fp'::bytea AS same_fingerprint, pepnet_verify('imp@1') AS verified FROM pepnet.models WHERE name = 'imp';
-- a trained version gets one too, beside its validation; pepnet.runs shows both sources
SELECT count(*) AS rows FROM pepnet_evaluate('g@2', :'holdout', 'holdout');
SELECT model, version, source, rows FROM pepnet.runs WHERE domain IS NULL AND source = 'holdout' OR (model = 'g' AND version = 2 AND domain IS NULL)
ORDER BY model, version, source;
-- recording again replaces that evaluation only
SELECT count(*) FROM pepnet_evaluate('imp', 'SELECT domain, persona, features, dense, clicked AS label FROM wf_clicks WHERE i % 10 = 0 AND domain = 1', 'holdout');
SELECT (metrics->'evaluations'->'holdout'->>'rows')::int AS rows, metrics->'evaluations'->'holdout'->'tasks'->'click'->'domains' ?| ARRAY['0', '2'] AS old_domains
FROM pepnet.models WHERE name = 'imp';
SELECT count(*) FROM pepnet_evaluate('imp', :'holdout', 'holdout');

-- 4. deploy 'best' by a recorded evaluation: only versions with it compete (imp@1 and a second one)
SELECT pepnet_create('imp', :'cfg', 8) AS created;
SELECT count(*) FROM pepnet_evaluate('imp@2', :'holdout', 'holdout');
SELECT pepnet_deploy('imp', 'best', 'logloss', evaluation => 'holdout') =
       (SELECT version FROM pepnet.runs WHERE model = 'imp' AND source = 'holdout' AND domain IS NULL ORDER BY logloss, version DESC LIMIT 1) AS best_by_evaluation;
SELECT strategy, metric ~ '^logloss = [0-9.e-]+ \(evaluation "holdout"\)$' AS metric_recorded FROM pepnet.deploy_history WHERE name = 'imp' ORDER BY seq;
SELECT pepnet_deploy('imp', 'latest') AS latest;
SELECT strategy, metric FROM pepnet.deploy_history WHERE name = 'imp' ORDER BY seq DESC LIMIT 1;
-- 'best' without an evaluation: imp has no validation
SELECT pepnet_deploy('imp', 'best');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('imp', 'best', 'auc', evaluation => 'nosuch');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('imp', 'latest', evaluation => 'holdout');
\echo :LAST_ERROR_SQLSTATE

-- 5. bad input
SELECT * FROM pepnet_evaluate('imp', :'holdout', record => '');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('imp', :'holdout', record => NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('nope', :'holdout', record => 'x');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('imp', 'SELECT domain, persona, features FROM wf_clicks', record => 'x');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g2', :'train', '[]');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g2', :'train', '[1, 2]');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g2@1', :'train', jsonb_build_array(:'cfg'::jsonb));
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g2', :'train', jsonb_build_array(:'cfg'::jsonb), deploy => true);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'g2';
-- every run's config and arguments are checked before the first run trains
CALL pepnet_train('g3', :'train', jsonb_build_array(:'cfg'::jsonb, '{"domains": 3}'::jsonb, :'cfg'::jsonb), epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g3', :'train', jsonb_build_array(:'cfg'::jsonb, jsonb_build_object('config', :'cfg'::jsonb, 'lr', 0)), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g3', :'train', jsonb_build_array(:'cfg'::jsonb, '"nope@1"'::jsonb), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'g3';
-- a run that fails on its data stops the grid; the runs before it keep their versions
CALL pepnet_train('g3', :'train', jsonb_build_array(:'cfg'::jsonb, :'cfg'::jsonb || '{"domains": 2}'), epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS first_run_kept FROM pepnet.models WHERE name = 'g3';
-- a role without UPDATE on pepnet.models cannot record
CREATE ROLE regress_pepnet_wf;
GRANT USAGE ON SCHEMA pepnet TO regress_pepnet_wf;
GRANT SELECT ON pepnet.models, wf_clicks TO regress_pepnet_wf;
SET ROLE regress_pepnet_wf;
SELECT count(*) AS evaluated FROM pepnet_evaluate('imp@1', :'holdout');
SELECT count(*) FROM pepnet_evaluate('imp@1', :'holdout', 'mine');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) > 0 AS sees_runs FROM pepnet.runs WHERE model = 'imp';
RESET ROLE;
REVOKE ALL ON pepnet.models, wf_clicks FROM regress_pepnet_wf;
REVOKE ALL ON SCHEMA pepnet FROM regress_pepnet_wf;
DROP ROLE regress_pepnet_wf;

-- 6. the divergence stop: a loss that grows past pepnet.max_loss_growth times its start stops
--    training with 22P01 before the epoch's version is stored
SHOW pepnet.max_loss_growth;
-- (the message names the steps and both losses; shown as its SQLSTATE: the figures vary by CPU)
\set VERBOSITY sqlstate
CALL pepnet_train('wdiv', :'train', :'cfg', epochs => 3, batch_size => 16, lr => 3, progress_interval => 0);
\set VERBOSITY terse
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'wdiv';
-- the factor is a setting: with 0.5 an ordinary run stops once 20 steps' loss is not half the
-- first 20 steps'; with 0 nothing stops it
SET pepnet.max_loss_growth = 0.5;
\set VERBOSITY sqlstate
CALL pepnet_train('wdiv', :'train', :'cfg', epochs => 1, batch_size => 16, lr => 0.01, progress_interval => 0);
\set VERBOSITY terse
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'wdiv';
SET pepnet.max_loss_growth = 0;
CALL pepnet_train('wdiv', :'train', :'cfg', epochs => 1, batch_size => 16, lr => 0.01, progress_interval => 0);
SELECT count(*) AS stored FROM pepnet.models WHERE name = 'wdiv';
RESET pepnet.max_loss_growth;
-- an ordinary run is not stopped by the default
CALL pepnet_train('ok', :'train', :'cfg', epochs => 2, batch_size => 16, lr => 0.01, progress_interval => 0);
SELECT count(*) AS stored FROM pepnet.models WHERE name = 'ok';

-- 7. pruning optimizer state: keep the latest N and the deployed version's
CALL pepnet_train('pr', :'train', :'cfg', epochs => 4, batch_size => 256, progress_interval => 0);
SELECT pepnet_deploy('pr', 2);
-- (bytes: both moments, each the size of the weights)
SELECT version, bytes = (SELECT 2 * weights_size FROM pepnet.models m WHERE m.name = 'pr' AND m.version = p.version) AS sized
FROM pepnet_prune_optimizer('pr', keep_latest => 1) p;
SELECT version FROM pepnet.optimizer_state WHERE name = 'pr' ORDER BY 1;
SELECT count(*) AS chunks_left_of_pruned FROM pepnet.optimizer_chunks WHERE name = 'pr' AND version IN (1, 3);
-- pruned versions still score; nothing else changed
SELECT count(*) AS scored FROM pepnet_score('pr@1', 0, '{3, 1}', '{{1, 2}}', '{{0.5}}');
SELECT count(*) AS versions FROM pepnet.models WHERE name = 'pr';
-- again: nothing left to prune
SELECT count(*) AS pruned_again FROM pepnet_prune_optimizer('pr');
-- chosen versions, deployed or not
SELECT version FROM pepnet_prune_optimizer('pr', versions => ARRAY[2]);
-- continuing from a pruned version starts Adam afresh (resumed_steps 0)
CALL pepnet_train('pr@3', :'train', progress_interval => 0);
SELECT version, parent, (metrics->>'resumed_steps')::int AS resumed_steps FROM pepnet.models WHERE name = 'pr' AND version = 5;
-- bad input
SELECT * FROM pepnet_prune_optimizer(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_prune_optimizer('pr', keep_latest => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_prune_optimizer('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_prune_optimizer('pr', versions => ARRAY[1, 99]);
\echo :LAST_ERROR_SQLSTATE

-- 8. checking a data query before training: every row read as training reads it, no training
SELECT * FROM pepnet_check_data(:'train', config => :'cfg') ORDER BY task, domain NULLS LAST;
-- against a stored version; a config with a domain the data lacks, unused columns: warnings
SELECT domain, rows, positives FROM pepnet_check_data(:'holdout', model => 'imp@1') ORDER BY domain NULLS LAST;
SELECT domain, rows FROM pepnet_check_data('SELECT domain, persona, features, dense, clicked AS label, i AS lable FROM wf_clicks WHERE domain < 2',
  config => :'cfg') ORDER BY domain NULLS LAST;
SELECT domain, task, labeled, positives FROM pepnet_check_data('SELECT domain, persona, features, dense, ARRAY[clicked::int, CASE WHEN domain = 1 THEN 1 END]::real[] AS labels FROM wf_clicks',
  config => :'cfg'::jsonb || '{"tasks": ["click", "buy"]}') ORDER BY task, domain NULLS LAST;
-- a fault at the last of 200,000 rows is reported with its row, before any training (nothing stored)
CREATE TABLE many AS SELECT i, i % 3 AS domain, ARRAY[i % 100, i % 4]::bigint[] AS persona, ARRAY[i, i % 10]::bigint[] AS features,
  ARRAY[(i % 5) / 5.0]::real[] AS dense, i % 7 = 0 AS clicked FROM generate_series(1, 200000) i;
\set VERBOSITY default
\set SHOW_CONTEXT errors
SELECT * FROM pepnet_check_data('SELECT CASE WHEN i = 200000 THEN 3 ELSE domain END AS domain, persona, features, dense, clicked AS label FROM many ORDER BY i', :'cfg');
SELECT * FROM pepnet_check_data('SELECT domain, persona, features, CASE WHEN i = 200000 THEN ''{NaN}'' ELSE dense END AS dense, clicked AS label FROM many ORDER BY i', :'cfg');
SELECT * FROM pepnet_check_data('SELECT domain, persona, features, dense, CASE WHEN i = 200000 THEN 2 ELSE 0 END AS label FROM many ORDER BY i', :'cfg');
SELECT * FROM pepnet_check_data('SELECT domain, persona, CASE WHEN i = 200000 THEN ARRAY[i::bigint] ELSE features END AS features, dense, clicked AS label FROM many ORDER BY i', :'cfg');
\set VERBOSITY terse
\set SHOW_CONTEXT never
SELECT * FROM pepnet_check_data(:'train');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data(:'train', :'cfg', 'imp');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data(NULL, :'cfg');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('SELECT domain, persona, features, dense, clicked AS label FROM wf_clicks WHERE false', :'cfg');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data(:'train', '{"domains": 0}');
\echo :LAST_ERROR_SQLSTATE

-- 9. config as a stored version's reference (a JSON string): its config, fresh weights
CALL pepnet_train('again', :'train', '"g@3"', epochs => 1, batch_size => 256, seed => 5, progress_interval => 0);
SELECT a.config = g.config AS same_config, a.parent IS NULL AS fresh, pepnet._config_parts(a.config) AS parts
FROM pepnet.models a, pepnet.models g WHERE a.name = 'again' AND g.name = 'g' AND g.version = 3;
-- in a grid too
CALL pepnet_train('again', :'train', '["g@3", "imp@1"]', epochs => 1, batch_size => 256, progress_interval => 0);
SELECT version, pepnet._config_parts(config) AS parts FROM pepnet.models WHERE name = 'again' ORDER BY version;
CALL pepnet_train('again', :'train', '"nope@1"');
\echo :LAST_ERROR_SQLSTATE
-- without quotes it is not JSON (the error comes from jsonb's input, before pepnet_train runs)
CALL pepnet_train('again', :'train', 'g@3');
\echo :LAST_ERROR_SQLSTATE
-- inside a transaction block the hint names autocommit
\set VERBOSITY default
BEGIN;
CALL pepnet_train('tx', :'train', :'cfg');
ROLLBACK;
\set VERBOSITY terse

-- 10. grid elements, reserved names, NULL arguments, the figure a deploy chose by, clean errors
-- a grid element's keys: unknown ones refused (the first named), before any run trains
CALL pepnet_train('g4', :'train', jsonb_build_array(jsonb_build_object('config', :'cfg'::jsonb, 'epoch', 3, 'learning_rate', 0.01)), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g4', :'train', jsonb_build_array(:'cfg'::jsonb, jsonb_build_object('config', :'cfg'::jsonb, 'epochs', 1.5)), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g4', :'train', jsonb_build_array(jsonb_build_object('config', :'cfg'::jsonb, 'lr', '0.01')), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g4', :'train', jsonb_build_array(jsonb_build_object('config', :'cfg'::jsonb, 'lr', NULL)), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g4', :'train', jsonb_build_array(:'cfg'::jsonb, NULL), progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g4', :'train', '[{"config": 5}]', progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('g4', :'train', '[{"config": "nope@1", "lr": 0.01}]', progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'g4';
-- a stored version's reference as an element's config, with overrides; each run's NOTICE shows
-- the config it trains (the referenced version's parts and hidden sizes)
SET client_min_messages = notice;
CALL pepnet_train('g4', :'train', '[{"config": "g@5", "lr": 0.01, "epochs": 2}, "g@3"]', batch_size => 256, progress_interval => 0);
SET client_min_messages = warning;
SELECT m.version, m.metrics->>'lr' AS lr, m.config = g.config AS config_of_reference
FROM pepnet.models m JOIN pepnet.models g ON g.name = 'g' AND g.version = CASE WHEN m.version <= 2 THEN 5 ELSE 3 END
WHERE m.name = 'g4' ORDER BY m.version;
-- 'validation' is pepnet.runs's source of pepnet_train's validation figures: not an evaluation name
SELECT * FROM pepnet_evaluate('imp', :'holdout', record => 'validation');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('imp', :'holdout', record => 'Validation');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS validation_rows_of_imp FROM pepnet.runs WHERE model = 'imp' AND source = 'validation';
-- NULL arguments are 22004, naming the argument
SELECT * FROM pepnet_prune_optimizer('pr', keep_latest => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_prune_optimizer('pr', versions => ARRAY[NULL]::int[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_prune_optimizer('pr', versions => ARRAY[1, NULL]);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nul', :'train', :'cfg', epochs => NULL);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nul', :'train', :'cfg', lr => NULL);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nul', :'train', :'cfg', deploy => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data(:'train', config => NULL, model => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('g', 'best', NULL);
\echo :LAST_ERROR_SQLSTATE
-- the deploy history records every chosen figure alike: 'best', "metric = 0.1234 (source)"
CALL pepnet_train('fig', :'train', :'cfg', validation => :'holdout', epochs => 2, batch_size => 256, deploy => true,
  selection => 'auc:click', progress_interval => 0);
SELECT pepnet_deploy('fig', 'best', 'pcoc');
SELECT pepnet_deploy('imp', 'best', 'logloss', evaluation => 'holdout');
SELECT h.name, h.strategy,
       h.metric ~ '^(auc:click|pcoc|logloss) = [0-9]+\.[0-9]{4} \((validation|evaluation "holdout")\)$' AS metric_format,
       split_part(split_part(h.metric, ' = ', 2), ' ', 1)::numeric
         = round(CASE split_part(h.metric, ' ', 1) WHEN 'auc:click' THEN r.auc WHEN 'pcoc' THEN r.pcoc ELSE r.logloss END::numeric, 4) AS its_figure
FROM pepnet.deploy_history h
JOIN pepnet.runs r ON r.model = h.name AND r.version = h.to_version AND r.domain IS NULL
 AND r.source = CASE WHEN h.metric LIKE '%evaluation%' THEN 'holdout' ELSE 'validation' END
WHERE h.name IN ('fig', 'imp') AND h.metric IS NOT NULL ORDER BY h.name, h.seq;
-- a role without rights gets one clean error (no internal statement as context)
CREATE ROLE regress_pepnet_nr;
\set VERBOSITY default
\set SHOW_CONTEXT errors
SET ROLE regress_pepnet_nr;
SELECT * FROM pepnet_prune_optimizer('pr');
SELECT pepnet_deploy('g', '3');
SELECT pepnet_deploy('g', 3);
SELECT pepnet_deploy('g', 'best', 'auc');
RESET ROLE;
-- in a read-only transaction: what pepnet_prune_optimizer writes
BEGIN READ ONLY;
SELECT * FROM pepnet_prune_optimizer('pr');
ROLLBACK;
\set VERBOSITY terse
\set SHOW_CONTEXT never
DROP ROLE regress_pepnet_nr;
