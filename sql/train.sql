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

-- == 0.2: PN running statistics with a warm start; versions stored by 0.1.0 keep working ==
-- a safetensors blob without pn.num_batches_tracked, as pepnet 0.1.0 wrote them
CREATE FUNCTION v01_blob(b bytea) RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
	hlen int := get_byte(b, 0) + 256 * get_byte(b, 1) + 65536 * get_byte(b, 2);
	h jsonb := convert_from(substring(b from 9 for hlen), 'UTF8')::jsonb;
	cnt jsonb := h->'pn.num_batches_tracked';
	s int := (cnt->'data_offsets'->>0)::int;
	e int := (cnt->'data_offsets'->>1)::int;
	nh jsonb := '{}';
	k text; v jsonb; o0 int; o1 int; ht bytea;
BEGIN
	FOR k, v IN SELECT * FROM jsonb_each(h - 'pn.num_batches_tracked') LOOP
		IF k <> '__metadata__' THEN
			o0 := (v->'data_offsets'->>0)::int; o1 := (v->'data_offsets'->>1)::int;
			IF o0 >= e THEN o0 := o0 - (e - s); o1 := o1 - (e - s); END IF;
			v := jsonb_set(v, '{data_offsets}', jsonb_build_array(o0, o1));
		END IF;
		nh := nh || jsonb_build_object(k, v);
	END LOOP;
	ht := convert_to(nh::text, 'UTF8');
	ht := ht || convert_to(repeat(' ', (8 - length(ht) % 8) % 8), 'UTF8');
	RETURN set_byte(set_byte('\x0000000000000000'::bytea, 0, length(ht) % 256), 1, length(ht) / 256)
	       || ht || substring(b from 9 + hlen for s) || substring(b from 9 + hlen + e);
END $$;
SELECT position('pn.num_batches_tracked' IN encode(pepnet_export('ctr@3'), 'escape')) > 0 AS exported_with_count,
       position('pn.num_batches_tracked' IN encode(v01_blob(pepnet_export('ctr@3')), 'escape')) = 0 AS v01_without;
-- a version as 0.1.0 stored it (row written directly), and the same blob imported
INSERT INTO pepnet.models (name, version, config, weights, parent)
SELECT 'old', 1, config, v01_blob(pepnet_export('ctr@3')), NULL FROM pepnet.models WHERE name = 'ctr' AND version = 3;
SELECT pepnet_import('old', (SELECT config FROM pepnet.models WHERE name = 'ctr' AND version = 3),
                     v01_blob(pepnet_export('ctr@3'))) AS imported;
-- both score exactly as the original (inference uses the running statistics only)
SELECT bool_and(a.score = o.score AND a.score = i.score) AS same_scores, count(*) AS candidates
FROM pepnet_score('ctr@3', 2, '{3, 1}', '{{1, 2}, {3, 4}, {5, 6}}', '{{0.5}, {0.1}, {0.9}}') a
JOIN pepnet_score('old@1', 2, '{3, 1}', '{{1, 2}, {3, 4}, {5, 6}}', '{{0.5}, {0.1}, {0.9}}') o USING (idx)
JOIN pepnet_score('old@2', 2, '{3, 1}', '{{1, 2}, {3, 4}, {5, 6}}', '{{0.5}, {0.1}, {0.9}}') i USING (idx);
-- ... and export docs/model.md 0.2's tensor set, the count 0 in every domain, identical for the two
CREATE FUNCTION f32(bits bigint) RETURNS float8 LANGUAGE sql AS $$
	SELECT CASE WHEN bits & 2147483647 = 0 THEN 0 ELSE (CASE WHEN bits >= 2147483648 THEN -1 ELSE 1 END)
	       * (1 + (bits & 8388607) / 8388608.0) * 2 ^ (((bits >> 23) & 255) - 127) END $$;
CREATE FUNCTION count_tensor(b bytea) RETURNS float8[] LANGUAGE sql AS $$
	WITH h AS (SELECT get_byte(b, 0) + 256 * get_byte(b, 1) AS n),
	     j AS (SELECT 8 + n + (convert_from(substring(b from 9 for n), 'UTF8')::jsonb
	                          #>> '{pn.num_batches_tracked,data_offsets,0}')::int AS o,
	                  (convert_from(substring(b from 9 for n), 'UTF8')::jsonb
	                          #>> '{pn.num_batches_tracked,shape,0}')::int AS d FROM h)
	SELECT array_agg(f32(get_byte(b, o + 4 * i) + 256 * get_byte(b, o + 4 * i + 1) + 65536 * get_byte(b, o + 4 * i + 2)
	                     + 16777216::bigint * get_byte(b, o + 4 * i + 3)) ORDER BY i)
	FROM j, generate_series(0, d - 1) i $$;
SELECT count_tensor(pepnet_export('old@1')) AS stored_by_010, count_tensor(pepnet_export('old@2')) AS imported_010,
       pepnet_export('old@1') = pepnet_export('old@2') AS same_export;
-- trained versions count the batches that moved each domain's statistics: 3 epochs of ceil(5400 / 128)
-- batches, each with at least 2 rows of every domain
SELECT count_tensor(pepnet_export('ctr@3')) = array_fill(3 * ceil(5400 / 128.0)::float8, ARRAY[3]) AS counted;
