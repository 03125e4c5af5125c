-- shared memory without shared_preload_libraries = 'pepnet' (how pg_regress runs): the shared
-- cache is off, its views are empty, pepnet_preload says why it cannot share, scoring works per
-- backend; the functions' bad input.  (With preload: test/t/040_shared_cache.pl, 041_training_progress.pl.)
SET client_min_messages = notice;
SELECT pepnet_create('sh', '{"domains": 2, "features": [{"name": "a", "buckets": 100}], "emb_dim": 4, "hidden": [8]}', 3) AS sh;
SELECT enabled, size_limit = pg_size_bytes(current_setting('pepnet.shared_cache_size')) AS size_limit_is_setting,
       used, versions, builds, evictions, fallbacks
FROM pepnet_shared_cache_stats();
SHOW pepnet.shared_cache_size;
SELECT pepnet_preload('sh');
SELECT model, version FROM pepnet_cache() WHERE model = 'sh';
SELECT count(*) AS shared_entries FROM pepnet.shared_cache;
SELECT count(*) AS trainings FROM pepnet.training_progress;
SELECT count(*) AS scored FROM pepnet_score('sh', 1, NULL, '{{1},{2}}');
-- bad input: the same errors as scoring
SELECT pepnet_preload(NULL);
SELECT pepnet_preload('');
SELECT pepnet_preload('sh@x');
SELECT pepnet_preload('sh@9');
SELECT pepnet_preload('nosuchmodel');
-- a setting of the server: not settable in a session
SET pepnet.shared_cache_size = '1MB';
-- the view of the shared cache needs SELECT on pepnet.models
CREATE ROLE sh_nobody;
GRANT USAGE ON SCHEMA pepnet TO sh_nobody;
SET ROLE sh_nobody;
SELECT count(*) FROM pepnet.shared_cache;
SELECT pepnet_preload('sh@1');
SELECT count(*) AS trainings_visible FROM pepnet.training_progress;
RESET ROLE;
REVOKE USAGE ON SCHEMA pepnet FROM sh_nobody;
DROP ROLE sh_nobody;
-- volatility, strictness and parallel safety as declared
SELECT proname, provolatile, proisstrict, proparallel FROM pg_proc
WHERE proname IN ('pepnet_preload', 'pepnet_shared_cache', 'pepnet_shared_cache_stats', 'pepnet_training_progress', '_progress_plan')
ORDER BY proname;
