-- Model versions: create, import, export, deploy, immutability, references, cache
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 20}], "persona": [{"name": "user", "buckets": 500}, {"name": "age", "buckets": 8, "hash": false}], "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [16, 8]}'

-- versions count from 1 per name
SELECT pepnet_create('m', :'cfg', 1) AS v1;
SELECT pepnet_create('m', :'cfg', 2) AS v2;
SELECT pepnet_create('other', :'cfg') AS other_v1;
SELECT name, version, parent, metrics, weights_size > 0 AS has_weights
FROM pepnet.models ORDER BY name, version;

-- the stored config has every default filled in
SELECT jsonb_pretty(config) FROM pepnet.models WHERE name = 'm' AND version = 1;

-- same seed, same weights; another seed, other weights
SELECT pepnet_create('m', :'cfg', 1) AS v3;
SELECT pepnet_export('m@1') = pepnet_export('m@3') AS same_seed_same_weights,
       pepnet_export('m@1') = pepnet_export('m@2') AS other_seed_same_weights;

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

-- == 0.2.0: the registry ==
\set SHOW_CONTEXT never
\set small '{"domains": 2, "features": [{"name": "a", "buckets": 10}], "emb_dim": 2, "hidden": [4]}'

-- version numbers are never reused: not after deleting the latest, nor after deleting all
SELECT pepnet_create('n', :'small', 1) AS v1, pepnet_create('n', :'small', 2) AS v2, pepnet_create('n', :'small', 3) AS v3;
DELETE FROM pepnet.models WHERE name = 'n' AND version = 3;
SELECT pepnet_create('n', :'small', 4) AS after_deleting_latest;
DELETE FROM pepnet.models WHERE name = 'n';
SELECT pepnet_create('n', :'small', 5) AS after_deleting_all;
SELECT pepnet_import('n', :'small', pepnet_export('n@5')) AS imported;
SELECT * FROM pepnet.model_names WHERE name = 'n';
-- an old reference to a deleted number stays an error, it never names other weights
SELECT pepnet_export('n@3');
\echo :LAST_ERROR_SQLSTATE
-- a version stored with its number (a copy from another node) keeps it and raises the mark
INSERT INTO pepnet.models (name, version, config, weights)
	SELECT name, 10, config, pepnet_export('n@5') FROM pepnet.models WHERE name = 'n' AND version = 5;
SELECT pepnet_create('n', :'small') AS after_explicit_10;
-- no surrogate id: a version is (name, version); the column id (since 0.3.0) only takes the ids of
-- backups taken under 0.1.0: NULL for every version stored since, and no key on it
SELECT count(*) AS id_values FROM pepnet.models WHERE id IS NOT NULL;
SELECT count(*) AS id_keys FROM information_schema.key_column_usage WHERE table_schema = 'pepnet' AND column_name = 'id';

-- names count characters, not bytes: 32 and 63 two-byte characters are valid names
SELECT pepnet_create(repeat('é', 32), :'small') AS e32, pepnet_create(repeat('é', 63), :'small') AS e63;
SELECT count(*) FROM pepnet_score(repeat('é', 63), 0, '{}', '{1}');
SELECT model = repeat('é', 63) AS cached_by_full_name FROM pepnet_cache() WHERE version = 1 AND model LIKE 'é%' AND length(model) = 63;
SELECT pepnet_create(repeat('é', 64), :'small');
SELECT * FROM pepnet_score(repeat('é', 64) || '@1', 0, '{}', '{1}');
-- messages cut long names on a character boundary: a GB18030 client gets the real error (not 22021)
SET client_encoding = 'GB18030';
SELECT pepnet_create(repeat('x', 19) || repeat(chr(233), 50), :'small');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score(repeat('x', 39) || repeat(chr(233), 30) || '@1', 0, '{}', '{1}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('k', ('{"domains": 1, "features": [{"name": "a", "buckets": 2}], "' || repeat('x', 59) || repeat(chr(233), 10) || '": 1}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('k', ('{"domains": 1, "features": [{"name": "' || repeat('x', 39) || repeat(chr(233), 30) || '", "buckets": 2}]}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
-- bytes of a crafted safetensors header that are not valid text are shown as '?', not sent raw
WITH h AS (SELECT convert_to('{"', 'UTF8') || '\xc3'::bytea || convert_to('x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 'UTF8') AS j),
     le AS (SELECT j, (SELECT decode(string_agg(lpad(to_hex((length(j)::bigint >> (8 * i)) & 255), 2, '0'), '' ORDER BY i), 'hex')
                       FROM generate_series(0, 7) i) AS n FROM h)
SELECT pepnet_import('bad', :'small', n || j || '\x00000000'::bytea) FROM le;
\echo :LAST_ERROR_SQLSTATE
RESET client_encoding;

-- deploy strategies; docs/api.md's pepnet_deploy(name, version) stays
SELECT pepnet_create('d', :'small', s) FROM generate_series(1, 4) s;
UPDATE pepnet.models SET metrics = jsonb_build_object('validation', jsonb_build_object('logloss', l, 'auc', a, 'pcoc', p,
	'tasks', jsonb_build_object('click', jsonb_build_object('logloss', l, 'auc', a, 'pcoc', p), 'buy', jsonb_build_object('auc', b))))
FROM (VALUES (1, 0.30, 0.70, 1.30, 0.61), (2, 0.25, 0.69, 0.80, 0.60), (3, 0.28, 0.75, 1.10, 0.59)) x(v, l, a, p, b)
WHERE name = 'd' AND version = x.v;
SELECT pepnet_deploy('d', 'latest') AS latest;
SELECT pepnet_deploy('d', 'best') AS best_logloss;
SELECT pepnet_deploy('d', 'best', 'pcoc') AS best_pcoc;
SELECT pepnet_deploy('d', 'best', 'auc:buy') AS best_auc_of_buy;
SELECT pepnet_deploy('d', 'best', 'auc') AS best_auc;
SELECT pepnet_deploy('d', 'previous') AS rolled_back;
SELECT pepnet_deploy('d', 'previous') AS rolled_back_again;
SELECT pepnet_deploy('d', 1);
SELECT pepnet_deploy('d', '2') AS by_number_text;
SELECT pepnet_deploy('d', 'best') AS same_again;
SELECT a.score = b.score AS bare_follows_strategy
FROM pepnet_score('d', 0, '{}', '{1}') a, pepnet_score('d@2', 0, '{}', '{1}') b;
-- direct DML on pepnet.deployments is recorded too
UPDATE pepnet.deployments SET version = 4 WHERE name = 'd';
DELETE FROM pepnet.deployments WHERE name = 'd';
-- the history: who, when, from, to, how
SELECT seq, from_version, to_version, strategy, deployed_by = current_user AS by_me,
       deployed_at <= now() AS at_known
FROM pepnet.deploy_history WHERE name = 'd' ORDER BY seq;
-- strategies that cannot apply say why
SELECT pepnet_deploy('d', 'previous');
SELECT pepnet_deploy('d', 'newest');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('d', 'best', 'accuracy');
SELECT pepnet_deploy('n', 'best');
SELECT pepnet_deploy('d', 'best', 'logloss:buy');
SELECT pepnet_deploy('nope', 'latest');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('d', NULL::text);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('d', 'previous');
SELECT pepnet_deploy('d', 2);
SELECT pepnet_deploy('d', 3);
DELETE FROM pepnet.models WHERE name = 'd' AND version = 2;
SELECT pepnet_deploy('d', 'previous');
-- deployers read the history but cannot write it themselves
CREATE ROLE regress_pepnet_hist;
GRANT USAGE ON SCHEMA pepnet TO regress_pepnet_hist;
GRANT SELECT ON pepnet.models, pepnet.deploy_history TO regress_pepnet_hist;
GRANT SELECT, INSERT, UPDATE ON pepnet.deployments TO regress_pepnet_hist;
SET ROLE regress_pepnet_hist;
SELECT pepnet_deploy('d', 'latest') AS deployer_latest;
SELECT pepnet_deploy('d', 'previous') AS deployer_rollback;
SELECT strategy, deployed_by FROM pepnet.deploy_history WHERE name = 'd' ORDER BY seq DESC LIMIT 2;
INSERT INTO pepnet.deploy_history (name, seq, from_version, to_version, strategy) VALUES ('d', 99, 1, 2, 'forged');
RESET ROLE;
REVOKE ALL ON pepnet.models, pepnet.deploy_history, pepnet.deployments FROM regress_pepnet_hist;
REVOKE ALL ON SCHEMA pepnet FROM regress_pepnet_hist;
DROP ROLE regress_pepnet_hist;

-- a read-only node (logical-replication subscriber): every write refused, scoring works
SET pepnet.read_only = on;
SELECT pepnet_create('ro', :'small');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_import('ro', :'small', pepnet_export('d@1'));
SELECT pepnet_import_version(pepnet_export_version('d@1'));
SELECT pepnet_deploy('d', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('d', 'latest');
CALL pepnet_train('d', 'SELECT 0 AS domain, ARRAY[]::bigint[] AS persona, ARRAY[1]::bigint[] AS features, 1 AS label');
\echo :LAST_ERROR_SQLSTATE
UPDATE pepnet.models SET metrics = '{}' WHERE name = 'd';
DELETE FROM pepnet.models WHERE name = 'd' AND version = 1;
INSERT INTO pepnet.model_names VALUES ('zz', 1);
TRUNCATE pepnet.deploy_history;
SELECT count(*) AS scored FROM pepnet_score('d', 0, '{}', '{1}');
RESET pepnet.read_only;
-- only a superuser can turn it off
CREATE ROLE regress_pepnet_ro;
SET ROLE regress_pepnet_ro;
SET pepnet.read_only = off;
RESET ROLE;
DROP ROLE regress_pepnet_ro;

-- what logical replication's apply worker does (session_replication_role = replica, no foreign keys):
-- a replicated DELETE of a deployed version is skipped, keeping the deployment working
SET session_replication_role = replica;
DELETE FROM pepnet.models WHERE name = 'd' AND version = 3;
SELECT count(*) AS kept FROM pepnet.models WHERE name = 'd' AND version = 3;
-- a deployment pointing at a version this node lacks gets an error that says so
INSERT INTO pepnet.deployments (name, version) VALUES ('n', 99);
RESET session_replication_role;
SELECT * FROM pepnet_score('n', 0, '{}', '{1}');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS by_number_still_works FROM pepnet_score('n@5', 0, '{}', '{1}');
DELETE FROM pepnet.deployments WHERE name = 'n';

-- DROP EXTENSION would delete every version: refused unless pepnet.allow_drop
DROP EXTENSION pepnet;
\echo :LAST_ERROR_SQLSTATE
BEGIN;
DROP SCHEMA public CASCADE;
ROLLBACK;
BEGIN;
SET LOCAL pepnet.allow_drop = on;
DROP EXTENSION pepnet;
SELECT count(*) AS pepnet_schemas FROM pg_namespace WHERE nspname = 'pepnet';
-- a schema named pepnet blocks CREATE EXTENSION: said clearly
CREATE SCHEMA pepnet;
CREATE EXTENSION pepnet;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
RESET client_min_messages;
SELECT count(*) > 0 AS versions_kept FROM pepnet.models;

-- a schema named pepnet blocks CREATE EXTENSION in a fresh session too (no pepnet code loaded yet):
-- the 0.2.0 script says so before anything else
SELECT current_database() AS regress_db \gset
CREATE DATABASE pepnet_schema_clash;
\c pepnet_schema_clash
CREATE SCHEMA pepnet;
CREATE EXTENSION pepnet;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS pepnet_installed FROM pg_extension WHERE extname = 'pepnet';
\c :regress_db
DROP DATABASE pepnet_schema_clash;

-- TRUNCATE would skip the guards (deployed versions) and the deploy history: refused unless
-- pepnet.allow_drop, as DROP EXTENSION is
SELECT count(*) > 0 AS have_versions FROM pepnet.models;
SET client_min_messages = warning;  -- (which tables CASCADE reaches)
TRUNCATE pepnet.deployments, pepnet.models CASCADE;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE pepnet.deploy_history;
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SET LOCAL pepnet.allow_drop = on;
TRUNCATE pepnet.deployments, pepnet.models CASCADE;
SELECT count(*) AS versions_left FROM pepnet.models;
ROLLBACK;
RESET client_min_messages;
SELECT count(*) > 0 AS versions_kept FROM pepnet.models;

-- pepnet_deploy: a reference where a name belongs, a NULL metric, an unknown task
SELECT pepnet_deploy('n@2', 2);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('n@2', 'latest');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('n', 'best', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('n', 'best', 'auc:nosuch');
\echo :LAST_ERROR_SQLSTATE

-- deploy 'best' by PCOC ranks by |ln PCOC| (a factor off either way counts the same), as
-- pepnet_train's selection does: 1.22 (|ln| 0.199) beats 0.8 (|ln| 0.223)
SELECT pepnet_create('pc', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}') AS pc1,
       pepnet_create('pc', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}') AS pc2;
UPDATE pepnet.models SET metrics = '{"validation": {"pcoc": 0.8}}' WHERE name = 'pc' AND version = 1;
UPDATE pepnet.models SET metrics = '{"validation": {"pcoc": 1.22}}' WHERE name = 'pc' AND version = 2;
SELECT pepnet_deploy('pc', 'best', 'pcoc') AS deployed_by_pcoc;
SELECT pepnet_deploy('pc', 'best', 'auc:');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('pc', 'best', 'auc:click:x');
\echo :LAST_ERROR_SQLSTATE

-- a name whose numbers are used up (a version stored with number 2147483647): a clear error
INSERT INTO pepnet.models (name, version, config, weights)
SELECT 'maxed', 2147483647, config, pepnet_export('pc@1') FROM pepnet.models WHERE name = 'pc' AND version = 1;
SELECT pepnet_create('maxed', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}');
\echo :LAST_ERROR_SQLSTATE
