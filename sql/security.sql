-- Roles, grants, the caller's rights and hostile search paths
\set VERBOSITY terse
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT pepnet_create('sec', '{"domains": 2, "features": [{"name": "item", "buckets": 100}], "persona": [{"name": "u", "buckets": 10}], "emb_dim": 4, "hidden": [8]}', 3) AS v;
CREATE TABLE private_events AS SELECT 0 AS domain, ARRAY[1]::bigint[] AS persona, ARRAY[i]::bigint[] AS features, (i % 2)::real AS label FROM generate_series(1, 100) i;

-- the documented grants for a role that scores
DROP ROLE IF EXISTS regress_pepnet_scorer;
CREATE ROLE regress_pepnet_scorer;
GRANT USAGE ON SCHEMA pepnet TO regress_pepnet_scorer;
GRANT SELECT ON pepnet.models, pepnet.deployments TO regress_pepnet_scorer;

SET ROLE regress_pepnet_scorer;
SELECT count(*) AS scored FROM pepnet_score('sec', 1, '{5}', '{{1}, {2}, {3}}');
SELECT pepnet_predict('sec', 0, '{5}', '{1}') > 0 AS predicted;
-- ... but cannot change or deploy models
SELECT pepnet_create('sec', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_import('sec', (SELECT config FROM pepnet.models WHERE name = 'sec'), pepnet_export('sec'));
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_deploy('sec', 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE pepnet.models SET metrics = '{}' WHERE name = 'sec';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM pepnet.models WHERE name = 'sec';
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('sec', 'SELECT 0 AS domain, ARRAY[1]::bigint[] AS persona, ARRAY[1]::bigint[] AS features, 1 AS label');
\echo :LAST_ERROR_SQLSTATE
-- training and evaluation queries run with the caller's rights
SELECT * FROM pepnet_evaluate('sec', 'SELECT * FROM private_events');
\echo :LAST_ERROR_SQLSTATE
-- the weights' chunks: read for it by pepnet's functions, but not by the role itself, nor written
SELECT count(*) AS chunk_rows FROM pepnet.model_chunks;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM pepnet.model_chunks WHERE name = 'sec';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) > 0 AS exported_in_chunks FROM pepnet_export_chunks('sec');
SELECT pepnet_import_chunks('sec', (SELECT config FROM pepnet.models WHERE name = 'sec'), 'SELECT data FROM pepnet_export_chunks(''sec'')');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- the documented grants for roles that train and that deploy
DROP ROLE IF EXISTS regress_pepnet_trainer;
DROP ROLE IF EXISTS regress_pepnet_deployer;
CREATE ROLE regress_pepnet_trainer;
CREATE ROLE regress_pepnet_deployer;
GRANT USAGE ON SCHEMA pepnet TO regress_pepnet_trainer, regress_pepnet_deployer;
GRANT SELECT, INSERT ON pepnet.models, pepnet.optimizer_state TO regress_pepnet_trainer;
GRANT SELECT ON pepnet.deployments TO regress_pepnet_trainer;
GRANT SELECT ON pepnet.models TO regress_pepnet_deployer;
GRANT SELECT, INSERT, UPDATE ON pepnet.deployments TO regress_pepnet_deployer;
SET ROLE regress_pepnet_trainer;
SELECT pepnet_create('sec', '{"domains": 2, "features": [{"name": "item", "buckets": 100}], "persona": [{"name": "u", "buckets": 10}], "emb_dim": 4, "hidden": [8]}', 4) AS trainer_created;
CALL pepnet_train('sec', 'SELECT 0 AS domain, ARRAY[1]::bigint[] AS persona, ARRAY[i]::bigint[] AS features, (i % 2) AS label FROM generate_series(1, 50) i', progress_interval => 0);
SELECT max(version) AS trained FROM pepnet.models WHERE name = 'sec';
SELECT pepnet_deploy('sec', 2);
\echo :LAST_ERROR_SQLSTATE
-- ... nor train with deploy => true: refused before any training, no version stored
CALL pepnet_train('sec', 'SELECT 0 AS domain, ARRAY[1]::bigint[] AS persona, ARRAY[i]::bigint[] AS features, (i % 2) AS label FROM generate_series(1, 50) i', progress_interval => 0, deploy => true);
\echo :LAST_ERROR_SQLSTATE
SELECT max(version) AS still_latest FROM pepnet.models WHERE name = 'sec';
RESET ROLE;
SET ROLE regress_pepnet_deployer;
SELECT pepnet_deploy('sec', 2);
SELECT pepnet_deploy('sec', 1);
SELECT version AS deployed FROM pepnet.deployments WHERE name = 'sec';
SELECT pepnet_create('sec', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- a role without the grants cannot score, even when this backend has the model cached
DROP ROLE IF EXISTS regress_pepnet_nobody;
CREATE ROLE regress_pepnet_nobody;
SET ROLE regress_pepnet_nobody;
SELECT count(*) FROM pepnet_score('sec', 1, '{5}', '{{1}, {2}}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('sec@1', 0, '{5}', '{1}');
\echo :LAST_ERROR_SQLSTATE
SELECT length(pepnet_export('sec@1'));
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- a hostile search_path cannot redirect pepnet's own queries
CREATE SCHEMA regress_evil;
CREATE FUNCTION regress_evil.max(int) RETURNS int LANGUAGE sql AS 'SELECT 999';
CREATE FUNCTION regress_evil.texteq_evil(text, text) RETURNS bool LANGUAGE sql AS 'SELECT true';
CREATE OPERATOR regress_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_evil.texteq_evil);
CREATE FUNCTION regress_evil.split_part(text, text, int) RETURNS text LANGUAGE sql AS 'SELECT ''hijacked''';
CREATE TABLE regress_evil.models (id int);
SELECT s.score AS honest FROM pepnet_score('sec', 1, '{5}', '{7}') s \gset
SET search_path = regress_evil, public, pg_catalog;
SELECT s.score = :honest AS same_score FROM pepnet_score('sec', 1, '{5}', '{7}') s;
SELECT pepnet_create('sec2', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}') AS created;
SELECT pepnet_deploy('sec2', 1);
CALL pepnet_train('sec2', 'SELECT 0 AS domain, ARRAY[]::bigint[] AS persona, ARRAY[1]::bigint[] AS features, 1 AS label', progress_interval => 0);
RESET search_path;
-- (queried after RESET: the hostile "=" would fool these queries, not pepnet's)
SELECT name, version FROM pepnet.deployments WHERE name = 'sec2';
SELECT name, version, parent FROM pepnet.models WHERE name = 'sec2' ORDER BY version;

DROP SCHEMA regress_evil CASCADE;
DROP TABLE private_events;
DROP OWNED BY regress_pepnet_scorer;
DROP ROLE regress_pepnet_scorer;
DROP ROLE regress_pepnet_nobody;
DROP OWNED BY regress_pepnet_trainer;
DROP OWNED BY regress_pepnet_deployer;
DROP ROLE regress_pepnet_trainer;
DROP ROLE regress_pepnet_deployer;
