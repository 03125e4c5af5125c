-- pepnet.precision = 'int8' (since 0.3.0): weights quantized per output channel, each candidate's
-- inputs per matmul, exact int32 sums (docs/model.md "int8 scoring"); on this kind of CPU (AVX2, no
-- VNNI) pepnet's own int8 kernel, elsewhere oneDNN's int8 matmuls, the same scores.  Asserted:
-- int8 within 1e-2 of fp32 in every scoring form, identical candidates identical wherever they
-- stand, pepnet_evaluate's AUC under int8 within 1e-3 of fp32, RESET, an invalid value.
\set VERBOSITY terse
SET client_min_messages = warning;

-- the arrays form: a random model with every part (EPNet, PPNet, STAR, PN, aux)
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 30}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 1000}, {"name": "seg", "buckets": 10}], "dense": 2, "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16], "aux_hidden": 8}'
SELECT pepnet_create('i8a', :'cfg', 7) AS v;
CREATE TABLE i8_cands AS
SELECT i AS id, i % 3 AS domain, ARRAY[(i / 50) % 300, i % 10]::bigint[] AS persona,
       ARRAY[i * 7919, i % 30, i % 24]::bigint[] AS features, ARRAY[(i % 100) / 50.0 - 1, (i % 7) / 3.5 - 1]::real[] AS dense
FROM generate_series(1, 3000) i;

-- pepnet_score: 200 candidates of a request in each precision
CREATE FUNCTION i8_score(prec text) RETURNS TABLE (idx int, score float8, scores float8[]) LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('pepnet.precision', prec, true);
  RETURN QUERY SELECT s.idx, s.score, s.scores
    FROM pepnet_score('i8a', 1, '{17, 3}', (SELECT array_agg(features ORDER BY id) FROM i8_cands WHERE id <= 200),
                      (SELECT array_agg(dense ORDER BY id) FROM i8_cands WHERE id <= 200)) s;
END $$;
SELECT count(*) AS rows, max(abs(a.score - b.score)) < 1e-2 AS within_1e2,
       max(abs(a.scores[2] - b.scores[2])) < 1e-2 AS task2_within_1e2,
       bool_or(a.score <> b.score) AS int8_differs, bool_and(b.score > 0 AND b.score < 1) AS probabilities
FROM i8_score('fp32') a JOIN i8_score('int8') b USING (idx);
SHOW pepnet.precision;

-- pepnet_score_query over 3,000 rows of three domains and many personas
SET pepnet.precision = 'fp32';
CREATE TABLE i8_q32 AS SELECT id, score, scores FROM pepnet_score_query('i8a', 'SELECT id, domain, persona, features, dense FROM i8_cands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
SET pepnet.precision = 'int8';
SHOW pepnet.precision;
CREATE TABLE i8_q8 AS SELECT id, score, scores FROM pepnet_score_query('i8a', 'SELECT id, domain, persona, features, dense FROM i8_cands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
SELECT count(*) AS rows, max(abs(a.score - b.score)) < 1e-2 AS within_1e2, max(abs(a.scores[2] - b.scores[2])) < 1e-2 AS task2_within_1e2,
       count(*) FILTER (WHERE a.score <> b.score) > 0 AS int8_differs
FROM i8_q32 a JOIN i8_q8 b USING (id);
-- pepnet_score under int8 = pepnet_score_query under int8, bit for bit (the same rows of domain 1, same persona)
SELECT bool_and(s.score = q.score AND s.scores = q.scores) AS score_eq_query
FROM pepnet_score('i8a', 1, '{3, 4}', ARRAY[[7919 * 4, 4, 4]]::bigint[], '{{-0.92, 0.142857}}') s,
     pepnet_score_query('i8a', 'SELECT 1 AS domain, ARRAY[3, 4]::bigint[] AS persona, ARRAY[7919 * 4, 4, 4]::bigint[] AS features, ARRAY[-0.92, 0.142857]::real[] AS dense')
       AS q(score float8, scores float8[]);

-- ties: one candidate at positions 1, 2, 17, 64, 65 and 300 of requests of 1, 2, 33, 300 candidates
-- (the others different) scores bit-identically under int8
CREATE FUNCTION i8_probe(n int, pos int) RETURNS float8[] LANGUAGE sql AS $$
  SELECT s.scores FROM pepnet_score('i8a', 2, '{42, 7}',
    (SELECT array_agg(CASE WHEN i = pos THEN ARRAY[123456789, 5, 13]::bigint[] ELSE ARRAY[i * 31, i % 30, i % 24]::bigint[] END ORDER BY i) FROM generate_series(1, n) i),
    (SELECT array_agg(CASE WHEN i = pos THEN ARRAY[0.25, -0.5]::real[] ELSE ARRAY[i / 300.0, -1]::real[] END ORDER BY i) FROM generate_series(1, n) i)) s
  WHERE s.idx = pos $$;
SELECT count(*) AS placements, count(DISTINCT p) AS distinct_scores
FROM (VALUES (1, 1), (2, 1), (2, 2), (33, 17), (300, 64), (300, 65), (300, 300)) v(n, pos), LATERAL i8_probe(n, pos) p;
-- the tie also holds across the named form and pepnet_score_query's blocks
SELECT count(DISTINCT s.scores) AS distinct_scores, count(*) AS rows
FROM pepnet_score_query('i8a', 'SELECT 2 AS domain, ARRAY[42, 7]::bigint[] AS persona,
       CASE WHEN i % 97 = 0 THEN ARRAY[123456789, 5, 13] ELSE ARRAY[i, i % 30, i % 24] END::bigint[] AS features,
       CASE WHEN i % 97 = 0 THEN ARRAY[0.25, -0.5] ELSE ARRAY[0, 0] END::real[] AS dense FROM generate_series(1, 20000) i')
  AS s(score float8, scores float8[])
WHERE s.scores = i8_probe(1, 1);

-- the named form: a trained model (learns clicks of item and region per domain)
CREATE TABLE i8_ev AS
SELECT g AS id, g % 3 AS domain, (abs(hashint4(g)) % 60)::int AS item, 'c' || (g % 7) AS cat,
       md5((g % 13)::text)::uuid AS user_id,
       CASE WHEN g % 5 = 0 THEN NULL ELSE (g % 11)::bigint END AS region,
       ((g % 10) / 10.0)::float8 AS price,
       (abs(hashint4(g)) % 60 < 25 AND g % 3 <> 1) OR (g % 5 = 0 AND g % 3 = 1) AS click
FROM generate_series(1, 3000) g;
\set ncfg '{"domains": 3, "features": [{"name": "item", "buckets": 64}, {"name": "cat", "buckets": 16}, {"name": "region", "buckets": 16}], "persona": [{"name": "user_id", "buckets": 32}], "dense": [{"name": "price"}], "emb_dim": 4, "hidden": [16, 8], "aux_hidden": 4}'
SET pepnet.precision = 'fp32';
CALL pepnet_train('i8n', 'SELECT * FROM i8_ev WHERE id % 10 <> 0', :'ncfg',
                  epochs => 3, seed => 1, batch_size => 64, lr => 0.01, progress_interval => 0);
CREATE TABLE i8_n32 AS SELECT (s.candidate).id, s.score FROM pepnet_score_rows('i8n', ARRAY(SELECT c FROM i8_ev c WHERE id <= 600)) s;
SELECT pepnet_create('i8r', config, 3) AS random_named FROM pepnet.models WHERE name = 'i8n' AND version = 1;
CREATE TABLE i8_r32 AS SELECT (s.candidate).id, s.score FROM pepnet_score_rows('i8r', ARRAY(SELECT c FROM i8_ev c WHERE id <= 600)) s;
SET pepnet.precision = 'int8';
CREATE TABLE i8_n8 AS SELECT (s.candidate).id, s.score FROM pepnet_score_rows('i8n', ARRAY(SELECT c FROM i8_ev c WHERE id <= 600)) s;
CREATE TABLE i8_r8 AS SELECT (s.candidate).id, s.score FROM pepnet_score_rows('i8r', ARRAY(SELECT c FROM i8_ev c WHERE id <= 600)) s;
CREATE TABLE i8_nq8 AS SELECT id, score FROM pepnet_score_query('i8n', 'SELECT * FROM i8_ev WHERE id <= 600')
  AS t(id int, domain int, item int, cat text, user_id uuid, region bigint, price float8, click boolean, score float8, scores float8[]);
-- the named form of a random version of the config: within 1e-2
SELECT count(*) AS rows, max(abs(a.score - b.score)) < 1e-2 AS named_within_1e2, count(*) FILTER (WHERE a.score <> b.score) > 0 AS int8_differs
FROM i8_r32 a JOIN i8_r8 b USING (id);
-- the trained version (13 inputs, layers of 16 and 8: few terms per sum to average the rounding out):
-- the named rows = pepnet_score_query's bit for bit; every score within 1e-2 of fp32 (the worst
-- ~5e-3 here, mean 4e-4, since the x block stays fp32; BENCHMARKS.md "int8 scoring"), asserted as
-- mean |dp| < 1e-3 and max < 1e-2
SELECT count(*) AS rows, bool_and(b.score = q.score) AS named_rows_eq_query,
       avg(abs(a.score - b.score)) < 1e-3 AS mean_below_1e3, max(abs(a.score - b.score)) < 1e-2 AS within_1e2
FROM i8_n32 a JOIN i8_n8 b USING (id) JOIN i8_nq8 q USING (id);

-- pepnet_evaluate in the session's precision: the held-out rows' AUC under int8 within 1e-3 of fp32
-- over all 300 rows (per domain, 100 rows each, one swapped pair moves the AUC by ~5e-4: within 5e-3),
-- the logloss within 1e-2
SET pepnet.precision = 'fp32';
CREATE TABLE i8_e32 AS SELECT * FROM pepnet_evaluate('i8n', 'SELECT * FROM i8_ev WHERE id % 10 = 0');
SET pepnet.precision = 'int8';
CREATE TABLE i8_e8 AS SELECT * FROM pepnet_evaluate('i8n', 'SELECT * FROM i8_ev WHERE id % 10 = 0');
SELECT a.domain, a.rows = b.rows AS same_rows, a.auc > 0.7 AS learned,
       abs(a.auc - b.auc) < CASE WHEN a.domain IS NULL THEN 1e-3 ELSE 5e-3 END AS auc_close,
       abs(a.logloss - b.logloss) < 1e-2 AS logloss_within_1e2
FROM i8_e32 a JOIN i8_e8 b ON a.domain IS NOT DISTINCT FROM b.domain AND a.task = b.task
WHERE a.auc IS NOT NULL ORDER BY a.domain NULLS LAST;
-- a recorded evaluation is the version's fp32 quality whatever the session's precision
SELECT count(*) AS evaluated FROM pepnet_evaluate('i8n', 'SELECT * FROM i8_ev WHERE id % 10 = 0', record => 'i8_val');
SELECT abs((metrics->'evaluations'->'i8_val'->>'auc')::float8 - (SELECT auc FROM i8_e32 WHERE domain IS NULL)) < 1e-12 AS recorded_fp32,
       (SELECT auc FROM i8_e32 WHERE domain IS NULL) <> (SELECT auc FROM i8_e8 WHERE domain IS NULL) AS int8_auc_differs
FROM pepnet.models WHERE name = 'i8n' AND version = (SELECT max(version) FROM pepnet.models WHERE name = 'i8n');

-- RESET, and an invalid value
RESET pepnet.precision;
SHOW pepnet.precision;
SET pepnet.precision = 'int4';
SHOW pepnet.precision;
