-- Scoring: vectorized pepnet_score, row-by-row pepnet_predict, shapes, extremes
\set cfg '{"domains": 4, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 30}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 1000}, {"name": "seg", "buckets": 10}], "dense": 2, "emb_dim": 4, "tasks": ["click", "buy", "like"], "hidden": [12, 6], "aux_hidden": 5}'
SELECT pepnet_create('s', :'cfg', 5) AS v;

-- one row per candidate, idx in input order, score = first task, scores = all tasks
SELECT idx, score = scores[1] AS first_task, array_length(scores, 1) AS tasks,
       bool_and(p > 0 AND p < 1) AS probabilities
FROM pepnet_score('s', 2, '{10, 3}', '{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}',
                  '{{0.5, 1}, {0, 0}, {-1, 2}}') , unnest(scores) p
GROUP BY idx, score, scores ORDER BY idx;

-- a 1-D candidate equals the same row of a 2-D call
SELECT (SELECT max(abs(x - y)) FROM unnest(a.scores, b.scores) u(x, y)) < 1e-6 AS one_equals_row
FROM pepnet_score('s', 2, '{10, 3}', '{4, 5, 6}', '{0, 0}') a,
     pepnet_score('s', 2, '{10, 3}', '{{1, 2, 3}, {4, 5, 6}, {7, 8, 9}}', '{{0.5, 1}, {0, 0}, {-1, 2}}') b
WHERE b.idx = 2;

-- domains and personas change the score
SELECT count(DISTINCT round(score::numeric, 9)) AS distinct_over_domains
FROM generate_series(0, 3) d, pepnet_score('s', d, '{10, 3}', '{4, 5, 6}', '{0, 0}');
SELECT count(DISTINCT round(score::numeric, 9)) AS distinct_over_personas
FROM generate_series(1, 5) u, pepnet_score('s', 1, ARRAY[u, 3]::bigint[], '{4, 5, 6}', '{0, 0}');

-- extreme valid ids: hashing is total over int8; large dense values saturate
SELECT count(*) AS scored, bool_and(score >= 0 AND score <= 1) AS valid
FROM pepnet_score('s', 0, ARRAY[-9223372036854775808, 9223372036854775807]::bigint[],
                  ARRAY[[-9223372036854775808, 0, 23], [9223372036854775807, -1, 0]]::bigint[],
                  '{{1e30, -1e30}, {0, 0}}');

-- pepnet_predict (one candidate, GEMVs) equals pepnet_score (tiles, oneDNN) to float rounding,
-- with personas repeating and changing row by row
CREATE TABLE cands AS
SELECT i, (i % 4) AS domain, ARRAY[(i / 7), i % 10]::bigint[] AS persona,
       ARRAY[i * 7919, i % 30, i % 24]::bigint[] AS features, ARRAY[i / 100.0, -i / 50.0]::real[] AS dense
FROM generate_series(1, 300) i;
SELECT count(*) AS rows,
       max(abs(pepnet_predict('s', c.domain, c.persona, c.features, c.dense) - s.score)) < 1e-6 AS predict_equals_score
FROM cands c, LATERAL pepnet_score('s', c.domain, c.persona, c.features, c.dense) s;

-- the setting pepnet.model serves the short overload
SET pepnet.model = 's@1';
SELECT a.scores = b.scores AS setting_used
FROM pepnet_score(1, '{10, 3}', '{4, 5, 6}', '{0, 0}') a, pepnet_score('s@1', 1, '{10, 3}', '{4, 5, 6}', '{0, 0}') b;
RESET pepnet.model;

-- a request with no candidates returns no rows
SELECT count(*) AS no_candidates FROM pepnet_score('s', 1, '{10, 3}', '{}', NULL);

-- 50,000 candidates in one call
SELECT count(*) AS scored, count(DISTINCT idx) AS distinct_idx, min(idx), max(idx),
       bool_and(score > 0 AND score < 1) AS valid
FROM pepnet_score('s', 3, '{10, 3}',
                  (SELECT array_agg(ARRAY[i, i % 30, i % 24]::bigint[] ORDER BY i) FROM generate_series(1, 50000) i),
                  (SELECT array_agg(ARRAY[0.1, 0.2]::real[]) FROM generate_series(1, 50000) i));

-- ranking in SQL: top candidates of a request
SELECT count(*) AS top FROM (
  SELECT c.i, s.score
  FROM pepnet_score('s', 2, '{10, 3}', (SELECT array_agg(features ORDER BY i) FROM cands),
                    (SELECT array_agg(dense ORDER BY i) FROM cands)) s
  JOIN cands c ON c.i = s.idx
  ORDER BY s.score DESC LIMIT 20) t;

-- a model without dense features or persona
SELECT pepnet_create('plain', '{"domains": 2, "features": [{"name": "a", "buckets": 100}], "emb_dim": 2, "hidden": [4], "epnet": false, "ppnet": false, "pn": false, "star": false, "aux": false}') AS v;
SELECT count(*) FROM pepnet_score('plain', 1, '{}', '{{1}, {2}}');
SELECT pepnet_predict('plain', 1, '{}', '{1}') = (SELECT score FROM pepnet_score('plain', 1, '{}', '{{1}, {2}}') WHERE idx = 1) AS same;

-- Ties: identical candidates get bit-identical scores wherever they stand and whatever the
-- request's size (every row takes the same kernel path: fixed tiles, the last one padded).
-- A model of the bench's widths (n0 = 128, hidden 256 and 128), so the GEMMs have several blocks.
SELECT pepnet_create('wide', '{"domains": 2, "features": [{"name": "f0", "buckets": 1000}, {"name": "f1", "buckets": 1000},
  {"name": "f2", "buckets": 1000}, {"name": "f3", "buckets": 1000}, {"name": "f4", "buckets": 1000}, {"name": "f5", "buckets": 1000},
  {"name": "f6", "buckets": 1000}, {"name": "f7", "buckets": 1000}], "persona": [{"name": "u", "buckets": 100}],
  "tasks": ["click", "buy"], "hidden": [256, 128]}', 3) AS v;
-- 600 identical candidates: one distinct score (and one distinct scores array)
SELECT count(*) AS candidates, count(DISTINCT score) AS distinct_scores, count(DISTINCT scores) AS distinct_arrays
FROM pepnet_score('wide', 1, '{7}', (SELECT array_agg(ARRAY[1, 2, 3, 4, 5, 6, 7, 8]::bigint[]) FROM generate_series(1, 600)));
-- the same candidate alone, and at every position of requests of 2 to 600 other candidates
CREATE TEMP TABLE alone AS
SELECT score, scores FROM pepnet_score('wide', 1, '{7}', '{1, 2, 3, 4, 5, 6, 7, 8}');
SELECT count(*) AS placements, bool_and(s.score = a.score AND s.scores = a.scores) AS bit_identical
FROM (VALUES (2), (31), (32), (33), (100), (257), (600)) n(size),
     LATERAL generate_series(1, n.size, greatest(n.size / 7, 1)) p(pos),
     LATERAL pepnet_score('wide', 1, '{7}',
       (SELECT array_agg(CASE WHEN i = p.pos THEN ARRAY[1, 2, 3, 4, 5, 6, 7, 8]
                              ELSE ARRAY[i, i * 3, i * 7, i + 1, i + 2, i * 11, -i, i * i] END::bigint[] ORDER BY i)
        FROM generate_series(1, n.size) i)) s,
     alone a
WHERE s.idx = p.pos;
-- pepnet_evaluate on 600 identical candidates with mixed labels: AUC exactly 0.5 (ties count half),
-- whatever the order the rows arrive in (its batches of rows score ties bit-identically too)
CREATE TEMP TABLE tie_rows AS
SELECT i, 1 AS domain, '{7}'::bigint[] AS persona, '{1, 2, 3, 4, 5, 6, 7, 8}'::bigint[] AS features,
       ARRAY[(i % 3 = 0)::int, (i % 5 = 0)::int]::real[] AS labels
FROM generate_series(1, 600) i;
SELECT o.ord, e.domain, e.task, e.rows, e.auc
FROM (VALUES ('i'), ('i DESC'), ('md5(i::text)')) o(ord),
     LATERAL pepnet_evaluate('wide', 'SELECT domain, persona, features, labels FROM tie_rows ORDER BY ' || o.ord) e
ORDER BY o.ord, e.task, e.domain NULLS LAST;
-- pepnet_predict agrees to float rounding (another summation order), not bit for bit
SELECT abs(pepnet_predict('wide', 1, '{7}', '{1, 2, 3, 4, 5, 6, 7, 8}') - a.score) < 1e-6 AS predict_close
FROM alone a;

-- a model without persona fields: persona NULL or omitted (named arguments) is accepted
SELECT count(*) AS persona_null FROM pepnet_score('plain', 1, NULL, '{{1}, {2}}');
SELECT count(*) AS persona_omitted FROM pepnet_score('plain', 1, features => '{{1}, {2}}');
SELECT pepnet_predict('plain', 1, NULL, '{1}') = pepnet_predict('plain', 1, features => '{1}') AS predict_persona_optional;
-- ... but not for a model with persona fields
SELECT count(*) FROM pepnet_score('s', 1, NULL, '{4, 5, 6}', '{0, 0}');

-- A version larger than pepnet.cache_size is used by the transaction that loads it and dropped
-- at its end; smaller versions stay cached between transactions
SELECT pepnet_cache_clear();
SET pepnet.cache_size = '1MB';
BEGIN;
SELECT count(*) AS scored FROM pepnet_score('wide', 0, '{7}', '{1, 2, 3, 4, 5, 6, 7, 8}');
SELECT model, bytes > 1024 * 1024 AS over_limit FROM pepnet_cache() ORDER BY model;
SELECT count(*) AS scored_again FROM pepnet_score('wide', 1, '{7}', '{1, 2, 3, 4, 5, 6, 7, 8}');
SELECT model, hits FROM pepnet_cache() ORDER BY model;
COMMIT;
SELECT count(*) AS cached_after_commit FROM pepnet_cache();
SELECT count(*) AS scored FROM pepnet_score('plain', 1, '{}', '{1}');
SELECT model, bytes <= 1024 * 1024 AS within_limit FROM pepnet_cache() ORDER BY model;
-- an aborted transaction drops it too
BEGIN;
SELECT count(*) AS scored FROM pepnet_score('wide', 0, '{7}', '{1, 2, 3, 4, 5, 6, 7, 8}');
ROLLBACK;
SELECT model FROM pepnet_cache() ORDER BY model;
RESET pepnet.cache_size;
