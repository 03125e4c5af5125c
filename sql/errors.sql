-- Bad input: every case gets an ERROR with a fitting SQLSTATE and a message saying what to fix
CREATE FUNCTION expect_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
\set cfg '{"domains": 2, "features": [{"name": "item", "buckets": 100}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "age", "buckets": 8, "hash": false}], "dense": 1, "emb_dim": 2, "hidden": [4]}'
SELECT pepnet_create('e', :'cfg') AS v;

-- model references
SELECT expect_error($$SELECT * FROM pepnet_score('nope', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e@7', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e@0', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e@x', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e@', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('@1', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e@99999999999', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score(0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT pepnet_export('nope')$$);

-- NULLs
SELECT expect_error($$SELECT * FROM pepnet_score(NULL, 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', NULL, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, NULL, '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', NULL, '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 2}', NULL)$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{NULL}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, NULL}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 2}', '{NULL}')$$);
SELECT expect_error($$SELECT pepnet_predict('e', 0, '{1}', NULL, '{0}')$$);
SELECT expect_error($$SELECT pepnet_create(NULL, '{}')$$);
SELECT expect_error($$SELECT pepnet_create('x', NULL)$$);
SELECT expect_error($$SELECT pepnet_import('x', '{}', NULL)$$);
SELECT expect_error($$SELECT pepnet_deploy('e', NULL)$$);

-- domains
SELECT expect_error($$SELECT * FROM pepnet_score('e', 2, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', -1, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT pepnet_predict('e', 2147483647, '{1}', '{1, 2}', '{0}')$$);

-- shapes and lengths
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1, 2}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{{1}}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 2, 3}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{1, 2, 3}}', '{{0}}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{{1, 2}}}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{1, 2}, {3, 4}}', '{{0}}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{1, 2}, {3, 4}}', '{0, 0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 2}', '{0, 1}')$$);
SELECT expect_error($$SELECT pepnet_predict('e', 0, '{1}', '{{1, 2}, {3, 4}}', '{{0}, {1}}')$$);

-- non-hashed ids out of range
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 24}', '{0}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{1, 2}, {1, -1}}', '{{0}, {0}}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{8}', '{1, 2}', '{0}')$$);

-- NaN and infinities
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 2}', '{NaN}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{1, 2}, {1, 2}}', '{{0}, {Infinity}}')$$);
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{1, 2}', '{-Infinity}')$$);
-- finite values so large that float32 overflows inside the network
SELECT expect_error($$SELECT * FROM pepnet_score('e', 0, '{1}', '{{1, 2}, {1, 2}}', '{{0}, {3e38}}')$$);

-- names
SELECT expect_error($$SELECT pepnet_create('', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create('a@b', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create(repeat('x', 64), '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}')$$);

-- configs
SELECT expect_error($$SELECT pepnet_create('c', '[]')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 0, "features": [{"name": "a", "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": "3", "features": [{"name": "a", "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": "a"}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a"}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": -5}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2, "hashed": true}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "hiden": [8]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "hidden": [0]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "tasks": []}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "gamma": -1}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "epnet": "yes"}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1000000000, "features": [{"name": "a", "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2000000000}], "emb_dim": 1024}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "hidden": [65536, 65536]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [1, 2]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": 5, "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "persona": {}}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "tasks": [1]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "hidden": "256"}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "hidden": [1, 2, 3, 4, 5, 6, 7, 8, 9]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "dense": -1}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "emb_dim": 0}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1e100, "features": [{"name": "a", "buckets": 2}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 99999999999999999999}]}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "l2": -0.1}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "epnet_hidden": 0}')$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "aux_hidden": 100000}')$$);
SELECT expect_error($$SELECT pepnet_create('c', ('{"domains": 1, "features": [{"name": "a", "buckets": 2}], "tasks": ["' || repeat('t', 80) || '"]}')::jsonb)$$);
SELECT expect_error($$SELECT pepnet_create('c', (SELECT ('{"domains": 1, "features": [' || string_agg('{"name": "f' || i || '", "buckets": 2}', ',') || ']}')::jsonb FROM generate_series(1, 1025) i))$$);
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 2}]}', NULL)$$);
SET pepnet.max_model_size = '1MB';
SELECT expect_error($$SELECT pepnet_create('c', '{"domains": 1, "features": [{"name": "a", "buckets": 100000}]}')$$);
RESET pepnet.max_model_size;
SELECT count(*) AS nothing_created FROM pepnet.models WHERE name = 'c';

-- weights blobs
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'), '\x00')$$);
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'), '\xffffffffffffffff7b7d')$$);
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'), '\x02000000000000007b7d')$$);
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'), '\x03000000000000007b7d7d')$$);
-- truncated
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'),
                     substring(pepnet_export('e') from 1 for length(pepnet_export('e')) - 4))$$);
-- one byte too many
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'),
                     pepnet_export('e') || '\x00'::bytea)$$);
-- weights of another config
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config || '{"emb_dim": 3}' FROM pepnet.models WHERE name = 'e'), pepnet_export('e'))$$);
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config || '{"star": false}' FROM pepnet.models WHERE name = 'e'), pepnet_export('e'))$$);
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config || '{"aux": true, "aux_hidden": 3}' FROM pepnet.models WHERE name = 'e'), pepnet_export('e'))$$);
-- a NaN weight (the last 4 bytes are the last float)
SELECT expect_error($$SELECT pepnet_import('w', (SELECT config FROM pepnet.models WHERE name = 'e'),
                     overlay(pepnet_export('e') placing '\x0000c07f'::bytea from length(pepnet_export('e')) - 3))$$);
SELECT count(*) AS nothing_imported FROM pepnet.models WHERE name = 'w';

-- export, evaluate and predict arguments
SELECT expect_error($$SELECT pepnet_export(NULL)$$);
SELECT expect_error($$SELECT pepnet_export('')$$);
SELECT expect_error($$SELECT pepnet_export('e@1@2')$$);
SELECT expect_error($$SELECT pepnet_export(repeat('x', 100))$$);
SELECT expect_error($$SELECT * FROM pepnet_evaluate(NULL, 'SELECT 1')$$);
SELECT expect_error($$SELECT * FROM pepnet_evaluate('e', NULL)$$);
SELECT expect_error($$SELECT * FROM pepnet_evaluate('e', 'SELECT 1 AS x')$$);
SELECT expect_error($$SELECT pepnet_predict('e@-1', 0, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT pepnet_predict('e', NULL, '{1}', '{1, 2}', '{0}')$$);
SELECT expect_error($$SELECT pepnet_predict('e', 0, '{1}', '{}', '{0}')$$);

-- deployments
SELECT expect_error($$SELECT pepnet_deploy(NULL, 1)$$);
SELECT expect_error($$SELECT pepnet_deploy('nope', 1)$$);
SELECT expect_error($$SELECT pepnet_deploy('e', 5)$$);

-- a stored version over this session's pepnet.max_model_size: says which setting to raise
SET pepnet.max_model_size = '20MB';
SELECT pepnet_create('maxsize', '{"domains": 1, "features": [{"name": "a", "buckets": 200000}]}') AS v;
SET pepnet.max_model_size = '10MB';
SELECT pepnet_predict('maxsize', 0, NULL, '{1}');
\echo :LAST_ERROR_SQLSTATE
RESET pepnet.max_model_size;
SELECT pepnet_predict('maxsize', 0, NULL, '{1}') BETWEEN 0 AND 1 AS scores_again;
