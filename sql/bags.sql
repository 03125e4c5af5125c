-- Multi-valued fields ("pooling": "sum"/"mean", "weights", since 0.3.0): array columns of ids
-- pooled into one embedding; the empty row; the SQL entry points agree; errors before any row
\set VERBOSITY terse
SET client_min_messages = warning;

-- tags text[] (weighted mean; NULL arrays, empty arrays, NULL elements), hist bigint[] (sum),
-- likes int4[] a multi-valued persona field (sum); a click that tags 't1' and 's2' tell
CREATE TABLE bags_ev AS
SELECT g AS id, g % 2 AS domain, (g % 3)::int AS item, (g % 4)::int AS user_id,
       CASE WHEN g % 23 = 0 THEN NULL
            WHEN g % 19 = 0 THEN '{}'::text[]
            ELSE ARRAY['t' || (g % 5), 's' || ((g / 5) % 7)] || CASE WHEN g % 4 = 0 THEN ARRAY[NULL::text] ELSE '{}' END END AS tags,
       CASE WHEN g % 23 = 0 THEN NULL
            WHEN g % 19 = 0 THEN '{}'::real[]
            ELSE ARRAY[1 + (g % 3), 0.5]::real[] || CASE WHEN g % 4 = 0 THEN ARRAY[7::real] ELSE '{}' END END AS tw,
       ARRAY(SELECT k FROM generate_series(1, g % 4) k)::bigint[] AS hist,
       ARRAY[(g % 2), (g % 3)]::int4[] AS likes,
       ((g % 10) / 10.0)::float8 AS price,
       (g % 23 <> 0 AND g % 19 <> 0 AND ((g % 5) = 1 OR ((g / 5) % 7) = 2)) AS click
FROM generate_series(1, 3000) g;
\set bcfg '{"inputs": "columns", "domains": 2, "features": [{"name": "item", "buckets": 32}, {"name": "tags", "buckets": 64, "pooling": "mean", "weights": "tw"}, {"name": "hist", "buckets": 32, "pooling": "sum"}], "persona": [{"name": "user_id", "buckets": 16}, {"name": "likes", "buckets": 16, "pooling": "sum"}], "dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8, 4]}'

-- the untrained model, then trained: the loss falls, the clicks the tags tell are learned
SELECT pepnet_create('bags_m0', :'bcfg', 1) AS v0;
CALL pepnet_train('bags_m', 'SELECT * FROM bags_ev WHERE abs(hashint4(id)) % 7 <> 0', :'bcfg',
                  validation => 'SELECT * FROM bags_ev WHERE abs(hashint4(id)) % 7 = 0',
                  epochs => 3, seed => 1, batch_size => 64, lr => 0.02, progress_interval => 0);
SELECT config->'features'->1 AS tags_field, config->'features'->2 AS hist_field, config->'persona'->1 AS likes_field
FROM pepnet.models WHERE name = 'bags_m' AND version = 3;
SELECT t.logloss < u.logloss * 0.7 AS loss_fell, t.auc > 0.9 AS auc_high, t.rows
FROM pepnet_evaluate('bags_m', 'SELECT * FROM bags_ev WHERE abs(hashint4(id)) % 7 = 0') t
JOIN pepnet_evaluate('bags_m0', 'SELECT * FROM bags_ev WHERE abs(hashint4(id)) % 7 = 0') u USING (task)
WHERE t.domain IS NULL AND u.domain IS NULL;
SELECT domain, rows, auc > 0.9 AS auc_high FROM pepnet_evaluate('bags_m', 'SELECT * FROM bags_ev WHERE abs(hashint4(id)) % 7 = 0') ORDER BY domain;
-- pepnet_check_data reads the arrays as training does
SELECT count(*) AS groups, sum(rows) FILTER (WHERE domain IS NULL) AS all_rows
FROM pepnet_check_data('SELECT * FROM bags_ev WHERE id <= 300', model => 'bags_m');

-- the entry points agree: pepnet_score_rows, pepnet_predict(model, record) (by GEMVs: float32 rounding), pepnet_score_query
CREATE TABLE bags_s_rows AS
SELECT (s.candidate).id, s.score FROM pepnet_score_rows('bags_m', ARRAY(SELECT c FROM bags_ev c WHERE id <= 300)) s;
CREATE TABLE bags_s_query AS
SELECT id, score FROM pepnet_score_query('bags_m', 'SELECT id, domain, item, user_id, tags, tw, hist, likes, price FROM bags_ev WHERE id <= 300')
  AS t(id int, domain int, item int, user_id int, tags text[], tw real[], hist bigint[], likes int4[], price float8, score float8, scores float8[]);
CREATE TABLE bags_s_pred AS SELECT id, pepnet_predict('bags_m', c) AS score FROM (SELECT * FROM bags_ev WHERE id <= 300) c;
SELECT count(*) AS rows, bool_and(r.score = q.score) AS rows_eq_query, max(abs(r.score - p.score)) < 1e-5 AS predict_agrees,
       count(DISTINCT round(r.score::numeric, 6)) > 50 AS varied
FROM bags_s_rows r JOIN bags_s_query q USING (id) JOIN bags_s_pred p USING (id);

-- the empty row: a NULL array, an empty array, an array of NULLs and total weight 0 score alike,
-- and as the twin model (the same weights, "tags" single-valued) scores a NULL tag: its missing row
\set twin '{"inputs": "columns", "domains": 2, "features": [{"name": "item", "buckets": 32}, {"name": "tags", "buckets": 64}, {"name": "hist", "buckets": 32, "pooling": "sum"}], "persona": [{"name": "user_id", "buckets": 16}, {"name": "likes", "buckets": 16, "pooling": "sum"}], "dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8, 4]}'
SELECT pepnet_import('bags_twin', :'twin', pepnet_export('bags_m')) AS twin_v;
CREATE TABLE bags_empty AS
SELECT k, pepnet_predict('bags_m', c) AS score
FROM (VALUES (1, NULL::text[], NULL::real[]), (2, '{}', '{}'), (3, '{NULL}', '{5}'), (4, '{NULL,NULL}', NULL),
             (5, '{t1,s2}', '{0,0}')) v(k, tags, tw),
     LATERAL (SELECT 1 AS domain, 3 AS item, 2 AS user_id, v.tags, v.tw, '{4,5}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.5 AS price) c;
SELECT count(*) AS cases, count(DISTINCT score) AS one_score,
       max(abs(score - (SELECT pepnet_predict('bags_twin', c) FROM (SELECT 1 AS domain, 3 AS item, 2 AS user_id, NULL::text AS tags,
                                      '{4,5}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.5 AS price) c))) < 1e-6 AS twin_missing_row
FROM bags_empty;
-- a bag of one id is that id's row (sum, mean, any weight under mean); mean of {a, a} is a; a
-- weight 0 leaves an id out of a mean
SELECT abs(pepnet_predict('bags_m', b) - pepnet_predict('bags_twin', s)) < 1e-6 AS one_id_is_its_row,
       abs(pepnet_predict('bags_m', b2) - pepnet_predict('bags_twin', s)) < 1e-6 AS mean_of_twice,
       abs(pepnet_predict('bags_m', b3) - pepnet_predict('bags_twin', s)) < 1e-6 AS zero_weight_left_out,
       abs(pepnet_predict('bags_m', b4) - pepnet_predict('bags_twin', s)) < 1e-6 AS null_element_left_out
FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3}'::text[] AS tags, '{2.5}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1,2}'::int4[] AS likes, 0.1 AS price) b,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3,t3}'::text[] AS tags, '{1,3}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1,2}'::int4[] AS likes, 0.1 AS price) b2,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3,t5}'::text[] AS tags, '{2,0}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1,2}'::int4[] AS likes, 0.1 AS price) b3,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{NULL,t3}'::text[] AS tags, '{9,1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1,2}'::int4[] AS likes, 0.1 AS price) b4,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, 't3'::text AS tags, '{1}'::bigint[] AS hist, '{1,2}'::int4[] AS likes, 0.1 AS price) s;
-- sum against mean: sum of {a, a} is not a (twice the row), sum's order does not matter
SELECT abs(pepnet_predict('bags_m', x) - pepnet_predict('bags_m', y)) > 1e-6 AS sum_twice_differs,
       abs(pepnet_predict('bags_m', p) - pepnet_predict('bags_m', q)) < 1e-6 AS order_free
FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3}'::text[] AS tags, '{1}'::real[] AS tw, '{7}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) x,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3}'::text[] AS tags, '{1}'::real[] AS tw, '{7,7}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) y,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3}'::text[] AS tags, '{1}'::real[] AS tw, '{1,2,3,20}'::bigint[] AS hist, '{1,5}'::int4[] AS likes, 0.1 AS price) p,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t3}'::text[] AS tags, '{1}'::real[] AS tw, '{20,3,1,2}'::bigint[] AS hist, '{5,1}'::int4[] AS likes, 0.1 AS price) q;
-- weights: under mean only their ratios count; int2[]/int8[] and varchar[] columns read as the same ids
SELECT abs(pepnet_predict('bags_m', a) - pepnet_predict('bags_m', b)) < 1e-6 AS mean_scale_free,
       abs(pepnet_predict('bags_m', a) - pepnet_predict('bags_m', c)) > 1e-6 AS weights_count,
       pepnet_predict('bags_m', a) = pepnet_predict('bags_m', d) AS other_array_types
FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t4}'::text[] AS tags, '{1,3}'::real[] AS tw, '{1,2}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) a,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t4}'::text[] AS tags, '{2,6}'::float8[] AS tw, '{1,2}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) b,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t4}'::text[] AS tags, '{3,1}'::real[] AS tw, '{1,2}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t4}'::varchar[] AS tags, '{1,3}'::real[] AS tw, '{1,2}'::int2[] AS hist, '{1}'::int8[] AS likes, 0.1 AS price) d;
-- uuid[] elements hash as their canonical text, bpchar[] elements without trailing blanks
SELECT pepnet_predict('bags_m', a) = pepnet_predict('bags_m', b) AS uuid_is_its_text,
       pepnet_predict('bags_m', c) = pepnet_predict('bags_m', d) AS bpchar_trimmed,
       pepnet_predict('bags_m', a) <> pepnet_predict('bags_m', d) AS other_ids_differ
FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{123e4567-e89b-12d3-a456-426614174000}'::text[] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) a,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, ARRAY['123E4567-E89B-12D3-A456-426614174000'::uuid] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) b,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,s2}'::char(4)[] AS tags, '{1,3}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,s2}'::text[] AS tags, '{1,3}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) d;
-- rows of several persona bags in one pepnet_score_rows call: each scored with its own persona
SELECT bool_and(abs(s.score - pepnet_predict('bags_m', s.candidate)) < 1e-6) AS grouped_by_persona_bags, count(*) AS rows
FROM pepnet_score_rows('bags_m', ARRAY(SELECT c FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::real[] AS tw,
                                                             '{1}'::bigint[] AS hist, ARRAY[g % 3, g % 2]::int4[] AS likes, 0.1 AS price
                                                      FROM generate_series(1, 12) g) c)) s;

-- errors, found at bind time (before any row) and per row with the row named
-- a multi-valued field's column must be an array of ids
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, 't1'::text AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{1.5}'::numeric[] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- an array for a single-valued field: add "pooling"
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, '{3}'::int[] AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- the id kind is kept: integer ids for tags, trained as text, are refused
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{1}'::int[] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- the weights column: missing, of another type
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::int[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- in training: at bind time, before any row
CALL pepnet_train('bags_bad', 'SELECT domain, item, user_id, tags[1] AS tags, tw, hist, likes, price, click FROM bags_ev', :'bcfg');
\echo :LAST_ERROR_SQLSTATE
-- weights: one per id, finite and >= 0, NULL only with its id
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1,-1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1,NaN}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- the hints of array columns: an id kind cast to an array type, weights made an array
\set VERBOSITY default
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::real[] AS tw, '{1}'::text[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, 1::bigint AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\set VERBOSITY terse
-- weights are float32, 0 or normal: a subnormal weight (a mean would divide by it) and one beyond
-- float4's range are refused, naming the range
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1,1e-39}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1,1e300}'::float8[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- the smallest normal weight pools like any other: one id of weight 1.2e-38 is that id's row
SELECT pepnet_predict('bags_m', c1) = pepnet_predict('bags_m', c2) AS tiny_weight_is_the_id
FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1.2e-38}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c1,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c2;
-- a sum of weights beyond float4's range still pools (the mean's 1 / sum w is computed in float8)
SELECT abs(pepnet_predict('bags_m', c1) - pepnet_predict('bags_m', c2)) < 1e-6 AS huge_weights_pool
FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{2e38,2e38}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c1,
     (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1,1}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c2;
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, '{1,NULL}'::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1,t2}'::text[] AS tags, NULL::real[] AS tw, '{1}'::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
-- at most 10000 ids per row
SELECT pepnet_predict('bags_m', c) FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::real[] AS tw, ARRAY(SELECT generate_series(1, 10001))::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS ten_thousand_ok FROM pepnet_score_rows('bags_m', ARRAY(SELECT c FROM (SELECT 0 AS domain, 3 AS item, 2 AS user_id, '{t1}'::text[] AS tags, '{1}'::real[] AS tw, ARRAY(SELECT generate_series(1, 10000))::bigint[] AS hist, '{1}'::int4[] AS likes, 0.1 AS price) c));
-- a row of a data query is named (training's and scoring's)
\set VERBOSITY default
CALL pepnet_train('bags_bad2', 'SELECT domain, item, user_id, tags, CASE WHEN id = 5 THEN ''{1,-2}''::real[] ELSE tw END AS tw, hist, likes, price, click FROM bags_ev ORDER BY id',
                  :'bcfg', epochs => 1, shuffle_buffer => 1, progress_interval => 0);
SELECT count(*) FROM pepnet_score_query('bags_m', 'SELECT id, domain, item, user_id, tags, CASE WHEN id = 7 THEN ''{1,2,3,4}''::real[] ELSE tw END AS tw, hist, likes, price FROM bags_ev WHERE id <= 10')
  AS t(id int, domain int, item int, user_id int, tags text[], tw real[], hist bigint[], likes int4[], price float8, score float8, scores float8[]);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
-- "nullable": false refuses a NULL array and takes an empty one
\set nncfg '{"inputs": "columns", "domains": 2, "features": [{"name": "tags", "buckets": 64, "pooling": "sum", "nullable": false}], "emb_dim": 4, "hidden": [4]}'
SELECT pepnet_create('bags_nn', :'nncfg') AS nn_v;
SELECT pepnet_predict('bags_nn', c) > 0 AS empty_taken FROM (SELECT 0 AS domain, '{}'::text[] AS tags) c;
SELECT pepnet_predict('bags_nn', c) FROM (SELECT 0 AS domain, NULL::text[] AS tags) c;
\echo :LAST_ERROR_SQLSTATE
-- config errors
SELECT pepnet_create('bags_c1', '{"inputs": "columns", "domains": 2, "features": [{"name": "tags", "buckets": 8, "pooling": "max"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('bags_c2', '{"inputs": "columns", "domains": 2, "features": [{"name": "tags", "buckets": 8, "weights": "w"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('bags_c3', '{"domains": 2, "features": [{"name": "tags", "buckets": 8, "pooling": "sum"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('bags_c4', '{"inputs": "columns", "domains": 2, "features": [{"name": "tags", "buckets": 8, "pooling": "sum", "weights": "click"}]}');
\echo :LAST_ERROR_SQLSTATE
