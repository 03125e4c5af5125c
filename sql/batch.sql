-- Batch scoring of a query: pepnet_score_query scores every row, keys passed through
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 30}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 1000}, {"name": "seg", "buckets": 10}], "dense": 2, "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16]}'
SELECT pepnet_create('b', :'cfg', 9) AS v;

-- 20,000 rows over 3 domains and 50 users, interleaved (groups span fetch blocks of 8192 rows)
CREATE TABLE bcands AS
SELECT i AS id, 'k' || i AS tag, i % 3 AS domain, ARRAY[i % 50, i % 10]::bigint[] AS persona,
       ARRAY[i * 7919, i % 30, i % 24]::bigint[] AS features, ARRAY[(i % 100) / 100.0, -(i % 7)]::real[] AS dense
FROM generate_series(1, 20000) i;

-- every row once, in query order, keys intact; scores equal pepnet_score's for the same request
-- bit for bit (the same tiles), and pepnet_predict's to float rounding
CREATE TABLE bscored AS
SELECT row_number() OVER () AS pos, * FROM pepnet_score_query('b',
  'SELECT id, tag, domain, persona, features, dense FROM bcands ORDER BY id')
  AS t(id int, tag text, score float8, scores float8[]);
SELECT count(*) AS rows, count(DISTINCT id) AS ids, bool_and(pos = id) AS query_order,
       bool_and(tag = 'k' || id) AS keys_intact, bool_and(score = scores[1]) AS first_task
FROM bscored;
SELECT count(*) AS compared, bool_and(s.score = p.score AND s.scores = p.scores) AS equals_pepnet_score
FROM bscored s JOIN bcands c USING (id),
     LATERAL pepnet_score('b', c.domain, c.persona, c.features, c.dense) p
WHERE s.id % 97 = 0;
SELECT max(abs(s.score - pepnet_predict('b', c.domain, c.persona, c.features, c.dense))) < 1e-6 AS close_to_predict
FROM bscored s JOIN bcands c USING (id) WHERE s.id % 13 = 0;

-- identical rows anywhere in the query: one distinct score
SELECT count(*) AS rows, count(DISTINCT score) AS distinct_scores
FROM pepnet_score_query('b', 'SELECT 1 AS domain, ''{3, 4}''::bigint[] AS persona, ''{5, 6, 7}''::bigint[] AS features,
                              ''{0.5, 1}''::real[] AS dense FROM generate_series(1, 1000)') AS t(score float8, scores float8[]);

-- INSERT ... SELECT, the nightly job
CREATE TABLE bnightly (id int, score float8);
INSERT INTO bnightly SELECT id, score FROM pepnet_score_query('b', 'SELECT id, domain, persona, features, dense FROM bcands')
  AS t(id int, score float8, scores float8[]);
SELECT count(*) FROM bnightly;

-- a model without persona fields: no persona column needed
SELECT pepnet_create('np', '{"domains": 2, "features": [{"name": "a", "buckets": 100}], "emb_dim": 4, "hidden": [8]}') AS v;
SELECT count(*) AS rows, bool_and(score > 0 AND score < 1) AS valid
FROM pepnet_score_query('np', 'SELECT i AS key, i % 2 AS domain, ARRAY[i]::bigint[] AS features FROM generate_series(1, 100) i')
  AS t(key int, score float8, scores float8[]);

-- columns named label and labels are keys here, whatever their type (scoring reads no labels,
-- training's reader would refuse a text label)
SELECT count(*) AS rows, bool_and(label = 'l' || id AND labels = ARRAY[id]) AS labels_are_keys
FROM pepnet_score_query('b', 'SELECT id, ''l'' || id AS label, ARRAY[id] AS labels, domain, persona, features, dense
                              FROM bcands WHERE id <= 100') AS t(id int, label text, labels int[], score float8, scores float8[]);

-- bad input: the same errors as training's data query, naming the row (SQLSTATEs as scoring:
-- 22004 NULL, 22023 out of range or wrong shape, 22000 NaN/infinite dense, 42703 missing column,
-- 42804 wrong type)
\set VERBOSITY default
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, persona, features FROM bcands') AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, features, dense FROM bcands') AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain::text, persona, features, dense FROM bcands') AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, persona, features, dense FROM bcands') AS t(id bigint, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, persona, features, dense FROM bcands') AS t(score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'DELETE FROM bcands RETURNING domain, persona, features, dense') AS t(score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, CASE WHEN id = 9000 THEN 3 ELSE domain END AS domain, persona, features, dense FROM bcands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, CASE WHEN id = 17 THEN NULL ELSE persona END AS persona, features, dense FROM bcands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, persona, CASE WHEN id = 8193 THEN ARRAY[1, 2, 24]::bigint[] ELSE features END AS features, dense FROM bcands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, persona, features, CASE WHEN id = 5 THEN ''{NaN, 0}''::real[] ELSE dense END AS dense FROM bcands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', 'SELECT id, domain, persona, features, CASE WHEN id = 12345 THEN ''{1}''::real[] ELSE dense END AS dense FROM bcands ORDER BY id')
  AS t(id int, score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('b', NULL) AS t(score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE

-- Whatever else runs in the same statement cannot free the version a statement is scoring with:
-- a data query that empties the cache or shrinks it while loading another version (it used to
-- crash the server: the batch scorer kept using the freed entry)
SELECT pepnet_create('pin', '{"domains": 3, "features": [{"name": "item", "buckets": 50000}, {"name": "cat", "buckets": 50}],
  "persona": [{"name": "user", "buckets": 100}], "hidden": [32, 16]}', seed => 1) AS v1,
       pepnet_create('pin', '{"domains": 3, "features": [{"name": "item", "buckets": 50000}, {"name": "cat", "buckets": 50}],
  "persona": [{"name": "user", "buckets": 100}], "hidden": [32, 16]}', seed => 2) AS v2;
CREATE TABLE pin_rows AS
SELECT i AS rn, i % 3 AS domain, ARRAY[i % 100]::bigint[] AS persona, ARRAY[i, i % 50]::bigint[] AS features
FROM generate_series(1, 20000) i;
CREATE TEMP TABLE pin_plain AS
SELECT rn, score FROM pepnet_score_query('pin@2', 'SELECT rn, domain, persona, features FROM pin_rows')
  AS t(rn int, score float8, scores float8[]);
SELECT count(*) AS scored, bool_and(t.score = p.score) AS same_scores
FROM pepnet_score_query('pin@2', 'SELECT rn, domain, persona, features FROM pin_rows
                                  WHERE rn <> 9000 OR pepnet_cache_clear() IS NULL')
  AS t(rn int, score float8, scores float8[]) JOIN pin_plain p USING (rn);
BEGIN;
SELECT count(*) AS scored, bool_and(t.score = p.score) AS same_scores
FROM pepnet_score_query('pin@2', 'SELECT rn, domain, persona, features FROM pin_rows
                                  WHERE rn % 5000 <> 0 OR (set_config(''pepnet.cache_size'', ''1MB'', true) IS NOT NULL
                                                         AND pepnet_predict(''pin@1'', 0, ''{1}'', ''{1, 2}'') > 2)')
  AS t(rn int, score float8, scores float8[]) JOIN pin_plain p USING (rn);
COMMIT;
-- once the statements are over, the cache keeps to its size again
SELECT count(*) AS cached_pin_versions FROM pepnet_cache() WHERE model = 'pin';
SELECT count(*) AS after_clear FROM (SELECT pepnet_cache_clear()) c, pepnet_cache();
DROP TABLE pin_rows;

-- a dense column for a model without dense features is refused (not silently ignored), in
-- batch scoring as in pepnet_score, and in training and evaluation data
SELECT count(*) FROM pepnet_score_query('pin@2', 'SELECT 0 AS domain, ''{1}''::bigint[] AS persona, ''{1, 2}''::bigint[] AS features, ''{1.0}''::real[] AS dense')
  AS t(score float8, scores float8[]);
\echo SQLSTATE :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('pin@2', 'SELECT 0 AS domain, ''{1}''::bigint[] AS persona, ''{1, 2}''::bigint[] AS features, ''{1.0}''::real[] AS dense, true AS label');
\echo SQLSTATE :LAST_ERROR_SQLSTATE
