-- The shared-bottom baseline (since 0.3.0): "domain_input": true appends the domain embedding to
-- the model's input, x0 = [features ; dense ; dv] (docs/model.md "The forward pass", "Baselines")
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;

\set off '"epnet": false, "ppnet": false, "pn": false, "star": false, "aux": false'
\set base '"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 5, "hash": false}], "dense": 1, "emb_dim": 4, "hidden": [8]'

-- 1. config errors (22023), nothing stored
SELECT pepnet_create('baseline_bad', ('{' || :'base' || ', "domain_input": 1}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('baseline_bad', ('{' || :'base' || ', "domain_input": "yes"}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('baseline_bad', ('{' || :'base' || ', "domain_input": null}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('baseline_bad', ('{' || :'base' || ', "domain_inputs": true}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
-- PN (on by default) and domain_input exclude each other: dv is constant within a domain
\set VERBOSITY default
SELECT pepnet_create('baseline_bad', ('{' || :'base' || ', "epnet": false, "domain_input": true}')::jsonb);
\set VERBOSITY terse
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS none_stored FROM pepnet.models WHERE name = 'baseline_bad';

-- 2. a 0.2 config keeps its canonical stored config (no "domain_input" key), and "domain_input":
--    false is the same config: the same stored config, weights and fingerprint
SELECT pepnet_create('baseline_plain', ('{' || :'base' || ', ' || :'off' || '}')::jsonb, 5);
SELECT pepnet_create('baseline_false', ('{' || :'base' || ', ' || :'off' || ', "domain_input": false}')::jsonb, 5);
SELECT pepnet_create('baseline_on', ('{' || :'base' || ', ' || :'off' || ', "domain_input": true}')::jsonb, 5);
SELECT config = '{"inputs": "arrays", "domains": 3, "features": [{"name": "item", "buckets": 200, "hash": true},
                  {"name": "cat", "buckets": 5, "hash": false}], "persona": [], "dense": 1, "emb_dim": 4,
                  "tasks": ["click"], "hidden": [8], "gamma": 2, "epnet": false, "epnet_hidden": 9, "ppnet": false,
                  "pn": false, "star": false, "aux": false, "aux_hidden": 32, "l2": 0}'::jsonb AS canonical_02,
       config ? 'domain_input' AS has_key
FROM pepnet.models WHERE name = 'baseline_plain';
SELECT a.config = b.config AS same_config, pepnet_export('baseline_plain') = pepnet_export('baseline_false') AS same_weights,
       a.fingerprint = b.fingerprint AS same_fingerprint
FROM pepnet.models a, pepnet.models b WHERE a.name = 'baseline_plain' AND b.name = 'baseline_false';
-- on: stored, n0 = F*k + Nd + k = 13 (epnet_hidden's default and the first layer's width), the
-- first 9 rows of the weights' init stream unchanged
SELECT config->'domain_input' AS domain_input, config->'epnet_hidden' AS n0,
       config - 'domain_input' - 'epnet_hidden' = (SELECT config - 'epnet_hidden' FROM pepnet.models WHERE name = 'baseline_plain') AS rest_same
FROM pepnet.models WHERE name = 'baseline_on';
SELECT substring(h FROM '"tower\.0\.1\.w":\{"dtype":"F32","shape":\[[0-9]+,[0-9]+\]') AS first_layer,
       substring(h FROM '"emb\.domain":\{"dtype":"F32","shape":\[[0-9]+,[0-9]+\]') AS domain_table
FROM (SELECT convert_from(substring(b FROM 9 FOR get_byte(b, 0) + 256 * get_byte(b, 1)), 'UTF8') AS h
      FROM (SELECT pepnet_export('baseline_on') AS b) x) y;

-- 3. the stored config round trip: export and import with the stored config give the same
--    config, weights, fingerprint and scores
SELECT pepnet_import('baseline_copy', (SELECT config FROM pepnet.models WHERE name = 'baseline_on'),
                     pepnet_export('baseline_on'));
SELECT a.config = b.config AS same_config, a.fingerprint = b.fingerprint AS same_fingerprint,
       b.config->'domain_input' AS domain_input
FROM pepnet.models a, pepnet.models b WHERE a.name = 'baseline_on' AND b.name = 'baseline_copy';
-- importing the weights with the config without domain_input is refused: its tensors are narrower
SELECT pepnet_import('baseline_narrow', (SELECT config - 'domain_input' FROM pepnet.models WHERE name = 'baseline_on'),
                     pepnet_export('baseline_on'));
\echo :LAST_ERROR_SQLSTATE

-- 4. the same features in every domain: an all-off model without domain_input scores them equally,
--    with it differently; pepnet_score (batched engine) and pepnet_predict (one row) agree
SELECT m AS model, count(DISTINCT s.score) AS distinct_scores_over_3_domains
FROM unnest(ARRAY['baseline_plain', 'baseline_on', 'baseline_copy']) m,
     generate_series(0, 2) d, LATERAL pepnet_score(m, d, '{}', '{{17, 3}}', '{{0.5}}') s
GROUP BY m ORDER BY m;
SELECT m AS model, max(abs(s.score - pepnet_predict(m, d, '{}', ARRAY[f, f % 5]::bigint[], '{0.25}'))) < 1e-6 AS score_equals_predict
FROM unnest(ARRAY['baseline_plain', 'baseline_on']) m, generate_series(0, 2) d, generate_series(1, 40) f,
     LATERAL pepnet_score(m, d, '{}', ARRAY[[f, f % 5]]::bigint[], '{{0.25}}') s
GROUP BY m ORDER BY m;

-- the named form takes the key too: scoring a row by name (pepnet_predict(model, row)) tells the
-- domains apart with it and not without
SELECT pepnet_create('baseline_named', ('{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 200}], '
                                       '"dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8], ' || :'off' || '}')::jsonb, 5);
SELECT pepnet_create('baseline_named_di', ('{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 200}], '
                                          '"dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8], ' || :'off' || ', "domain_input": true}')::jsonb, 5);
SELECT m AS model, (SELECT config->'domain_input' FROM pepnet.models WHERE name = m) AS domain_input,
       count(DISTINCT pepnet_predict(m, c)) AS distinct_scores_over_3_domains
FROM unnest(ARRAY['baseline_named', 'baseline_named_di']) m,
     LATERAL (SELECT d AS domain, 'book'::text AS item, 2.5::float8 AS price FROM generate_series(0, 2) d) c
GROUP BY m ORDER BY m;

-- 5. training on data whose click rate differs by domain (5% / 20% / 50%, the features independent of
--    the domain): the shared-bottom model is calibrated per domain; the all-off one predicts about
--    the mixed rate everywhere (PCOC ~5 in domain 0, ~0.5 in domain 2; domain 1 is near the mix)
CREATE TABLE baseline_imp AS
SELECT i, i % 3 AS domain, '{}'::bigint[] AS persona, ARRAY[item, item % 5]::bigint[] AS features,
       ARRAY[(item % 10) / 10.0]::real[] AS dense,
       (abs(hashint4(i * 7 + 1)) % 1000) < (ARRAY[50, 200, 500])[i % 3 + 1] * (CASE WHEN item % 2 = 0 THEN 1.4 ELSE 0.6 END) AS clicked
FROM generate_series(1, 24000) i, LATERAL (SELECT abs(hashint4(i)) % 200 AS item) x;
\set train 'SELECT domain, persona, features, dense, clicked AS label FROM baseline_imp WHERE i % 4 <> 0'
\set valid 'SELECT domain, persona, features, dense, clicked AS label FROM baseline_imp WHERE i % 4 = 0'
CALL pepnet_train('baseline_mlp', :'train', ('{' || :'base' || ', ' || :'off' || '}')::jsonb,
                  epochs => 3, batch_size => 256, lr => 0.01, seed => 3, progress_interval => 0);
CALL pepnet_train('baseline_sb', :'train', ('{' || :'base' || ', ' || :'off' || ', "domain_input": true}')::jsonb,
                  epochs => 3, batch_size => 256, lr => 0.01, seed => 3, progress_interval => 0);
SELECT s.domain, s.pcoc BETWEEN 0.85 AND 1.15 AS shared_bottom_calibrated,
       abs(ln(m.pcoc)) > 0.4 AS all_off_miscalibrated,
       abs(ln(m.pcoc)) - abs(ln(s.pcoc)) > 0.3 AS clear_margin
FROM pepnet_evaluate('baseline_sb', :'valid') s JOIN pepnet_evaluate('baseline_mlp', :'valid') m USING (domain)
WHERE s.domain IS NOT NULL ORDER BY s.domain;
-- overall the shared bottom's AUC is higher: it tells the domains apart
SELECT s.auc - m.auc > 0.05 AS overall_auc_gain
FROM pepnet_evaluate('baseline_sb', :'valid') s, pepnet_evaluate('baseline_mlp', :'valid') m
WHERE s.domain IS NULL AND m.domain IS NULL;
-- the parts that pepnet.runs shows tell the shared bottom from every part off
SELECT name, pepnet._config_parts(config) AS parts FROM pepnet.models
WHERE name IN ('baseline_mlp', 'baseline_sb') AND version = 1 ORDER BY name;
-- every version keeps "domain_input"
SELECT version, config->'domain_input' AS domain_input FROM pepnet.models WHERE name = 'baseline_sb' ORDER BY version;

DROP TABLE baseline_imp;
DELETE FROM pepnet.models WHERE name LIKE 'baseline\_%';
