-- Model versions: create, import, export, deploy, immutability, references, cache
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 20}], "persona": [{"name": "user", "buckets": 500}, {"name": "age", "buckets": 8, "hash": false}], "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [16, 8]}'

-- versions count from 1 per name
SELECT pepnet_create('m', :'cfg', 1) AS v1;
SELECT pepnet_create('m', :'cfg', 2) AS v2;
SELECT pepnet_create('other', :'cfg') AS other_v1;
SELECT name, version, parent, metrics, length(weights) > 0 AS has_weights
FROM pepnet.models ORDER BY name, version;

-- the stored config has every default filled in
SELECT jsonb_pretty(config) FROM pepnet.models WHERE name = 'm' AND version = 1;

-- same seed, same weights; another seed, other weights
SELECT pepnet_create('m', :'cfg', 1) AS v3;
SELECT (SELECT weights FROM pepnet.models WHERE name = 'm' AND version = 1) =
       (SELECT weights FROM pepnet.models WHERE name = 'm' AND version = 3) AS same_seed_same_weights,
       (SELECT weights FROM pepnet.models WHERE name = 'm' AND version = 1) =
       (SELECT weights FROM pepnet.models WHERE name = 'm' AND version = 2) AS other_seed_same_weights;

-- export and import round-trip bit for bit
SELECT pepnet_import('copy', (SELECT config FROM pepnet.models WHERE name = 'm' AND version = 2), pepnet_export('m@2')) AS imported;
SELECT pepnet_export('copy@1') = pepnet_export('m@2') AS export_roundtrip;

-- a bare name means the latest version until one is deployed
SELECT a.score = b.score AS bare_is_latest
FROM pepnet_score('m', 1, '{7, 3}', '{11, 12}') a, pepnet_score('m@3', 1, '{7, 3}', '{11, 12}') b;
SELECT pepnet_deploy('m', 2);
SELECT name, version FROM pepnet.deployments;
SELECT a.score = b.score AS bare_is_deployed
FROM pepnet_score('m', 1, '{7, 3}', '{11, 12}') a, pepnet_score('m@2', 1, '{7, 3}', '{11, 12}') b;

-- deployment is transactional
BEGIN;
SELECT pepnet_deploy('m', 1);
SELECT a.score = b.score AS sees_own_deploy
FROM pepnet_score('m', 1, '{7, 3}', '{11, 12}') a, pepnet_score('m@1', 1, '{7, 3}', '{11, 12}') b;
ROLLBACK;
SELECT version FROM pepnet.deployments WHERE name = 'm';
SELECT a.score = b.score AS rollback_restores
FROM pepnet_score('m', 1, '{7, 3}', '{11, 12}') a, pepnet_score('m@2', 1, '{7, 3}', '{11, 12}') b;

-- versions are immutable; metrics may be annotated
UPDATE pepnet.models SET config = config || '{"l2": 1}' WHERE name = 'm' AND version = 1;
UPDATE pepnet.models SET weights = '\x00' WHERE name = 'm' AND version = 1;
UPDATE pepnet.models SET version = 9 WHERE name = 'm' AND version = 1;
UPDATE pepnet.models SET metrics = '{"note": "baseline"}' WHERE name = 'm' AND version = 1;
SELECT metrics FROM pepnet.models WHERE name = 'm' AND version = 1;

-- a deployed version cannot be deleted; others can
DELETE FROM pepnet.models WHERE name = 'm' AND version = 2;
DELETE FROM pepnet.models WHERE name = 'm' AND version = 3;
SELECT version FROM pepnet.models WHERE name = 'm' ORDER BY version;

-- the backend cache lists what this session scored
SELECT model, version, bytes > 0 AS has_bytes, domains, hits > 0 AS used
FROM pepnet_cache() ORDER BY model, version;
SELECT pepnet_cache_clear();
SELECT count(*) FROM pepnet_cache();

-- the cache is bounded: with 1 MB only the most recent version stays
SET pepnet.cache_size = '1MB';
SELECT pepnet_create('big', '{"domains": 2, "features": [{"name": "a", "buckets": 100000}], "emb_dim": 4, "hidden": [8]}') AS big;
SELECT count(*) FROM pepnet_score('big', 0, '{}', '{1}');
SELECT count(*) FROM pepnet_score('m@1', 0, '{1, 2}', '{1, 2}');
SELECT model, version FROM pepnet_cache();
RESET pepnet.cache_size;

-- settings
SHOW pepnet.cache_size;
SHOW pepnet.max_model_size;
