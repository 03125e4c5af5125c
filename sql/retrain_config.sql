-- pepnet_train with config => '"name@v"' (a stored version's config, fresh weights): the z-score
-- statistics of its dense fields come from the new data query, as for a config given in full;
-- continued training (no config) keeps the version's
\set VERBOSITY terse
SET client_min_messages = warning;

-- data A and data B: the dense column x of B is ~10x larger (another mean and std after log1p)
CREATE TABLE rc_a AS
SELECT g % 2 AS domain, (g % 13)::bigint AS item, (g % 97)::float8 AS x, (g % 3 = 0) AS click
FROM generate_series(1, 600) g;
CREATE TABLE rc_b AS
SELECT g % 2 AS domain, (g % 13)::bigint AS item, (10 * (g % 89) + 5)::float8 AS x, (g % 5 = 0) AS click
FROM generate_series(1, 500) g;

-- the statistics training computes: of ln(1 + x) over the query's rows (population std)
CREATE FUNCTION rc_stats(t regclass, OUT mean float8, OUT std float8) LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SELECT avg(ln(1 + x)), stddev_pop(ln(1 + x)) FROM %s', t) INTO mean, std;
END $$;
-- is a stored version's dense field 0 within 1e-6 (relative) of a table's statistics?
CREATE FUNCTION rc_matches(v int, t regclass) RETURNS boolean LANGUAGE sql AS $$
	SELECT abs((m.config->'dense'->0->>'mean')::float8 - s.mean) <= 1e-6 * abs(s.mean)
	   AND abs((m.config->'dense'->0->>'std')::float8 - s.std) <= 1e-6 * s.std
	FROM pepnet.models m, rc_stats(t) s WHERE m.name = 'rc_m' AND m.version = v
$$;
SELECT (SELECT mean FROM rc_stats('rc_a')) <> (SELECT mean FROM rc_stats('rc_b')) AS means_differ;

\set rcfg '{"domains": 2, "features": [{"name": "item", "buckets": 16}], "dense": [{"name": "x", "log1p": true, "normalize": "zscore"}], "emb_dim": 4, "hidden": [8]}'
-- version 1: the config in full on A
CALL pepnet_train('rc_m', 'SELECT * FROM rc_a', :'rcfg', seed => 1, batch_size => 64, progress_interval => 0);
-- version 2: version 1's config on B, fresh weights: B's statistics
CALL pepnet_train('rc_m', 'SELECT * FROM rc_b', '"rc_m@1"', seed => 1, batch_size => 64, progress_interval => 0);
-- version 3: continued from version 1 on B: A's statistics kept
CALL pepnet_train('rc_m@1', 'SELECT * FROM rc_b', seed => 1, batch_size => 64, progress_interval => 0);
-- version 4: the config in full on B, the reference's equal
CALL pepnet_train('rc_m', 'SELECT * FROM rc_b', :'rcfg', seed => 1, batch_size => 64, progress_interval => 0);
-- versions 5, 6: a grid naming version 1 takes B's statistics too
CALL pepnet_train('rc_m', 'SELECT * FROM rc_b', '["rc_m@1", {"config": "rc_m@3", "seed": 2}]', seed => 1, batch_size => 64, progress_interval => 0);

SELECT version, parent, rc_matches(version, 'rc_a') AS stats_of_a, rc_matches(version, 'rc_b') AS stats_of_b
FROM pepnet.models WHERE name = 'rc_m' ORDER BY version;
-- the reference's version has what the full config has (statistics, and the rest of the config)
SELECT (SELECT config FROM pepnet.models WHERE name = 'rc_m' AND version = 2)
     = (SELECT config FROM pepnet.models WHERE name = 'rc_m' AND version = 4) AS same_config_as_full;
-- and its weights: the same seed, the same config, the same data
SELECT (SELECT pepnet_export('rc_m@2')) = (SELECT pepnet_export('rc_m@4')) AS same_weights_as_full;
-- the id kind stays with the reference: an id column of the other kind is refused (42804)
CALL pepnet_train('rc_m', 'SELECT domain, item::text AS item, x, click FROM rc_b', '"rc_m@1"', progress_interval => 0);
SELECT max(version) AS last_version FROM pepnet.models WHERE name = 'rc_m';

-- pepnet_check_data with config => '"name@v"' reads the data as pepnet_train with that config
-- would, with the statistics of its query; model => 'name@v' with the stored ones.  A version
-- trained on tiny values (std 5e-38): B's values over its std leave float32
CREATE TABLE rc_tiny AS
SELECT g % 2 AS domain, (g % 13)::bigint AS item, CASE WHEN g % 2 = 0 THEN 0 ELSE 1e-37 END::float8 AS x, (g % 3 = 0) AS click
FROM generate_series(1, 200) g;
CALL pepnet_train('rc_t', 'SELECT * FROM rc_tiny', '{"domains": 2, "features": [{"name": "item", "buckets": 16}], "dense": [{"name": "x", "normalize": "zscore"}], "emb_dim": 4, "hidden": [4]}',
                  seed => 1, batch_size => 64, progress_interval => 0);
SELECT (config->'dense'->0->>'std')::float8 < 1e-37 AS tiny_std FROM pepnet.models WHERE name = 'rc_t' AND version = 1;
SELECT sum(rows) AS rows FROM pepnet_check_data('SELECT * FROM rc_b', model => 'rc_t@1') WHERE domain IS NULL;
SELECT sum(rows) AS rows FROM pepnet_check_data('SELECT * FROM rc_b', config => '"rc_t@1"') WHERE domain IS NULL;
CALL pepnet_train('rc_t', 'SELECT * FROM rc_b', '"rc_t@1"', seed => 1, batch_size => 64, progress_interval => 0);
SELECT version, abs((config->'dense'->0->>'mean')::float8 - (SELECT avg(x) FROM rc_b)) <= 1e-6 * (SELECT avg(x) FROM rc_b) AS mean_of_b
FROM pepnet.models WHERE name = 'rc_t' ORDER BY version;
-- continued training on B keeps the tiny std: B's rows are refused as the check said
CALL pepnet_train('rc_t@1', 'SELECT * FROM rc_b', seed => 1, batch_size => 64, progress_interval => 0);
