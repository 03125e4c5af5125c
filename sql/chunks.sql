-- Chunked weight storage: pepnet.model_chunks, pepnet.chunk_size, moving versions of any size
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pepnet;
RESET client_min_messages;
-- SQLSTATE and message of a statement's error (no CONTEXT lines in the output)
CREATE FUNCTION ch_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 50}], "dense": 2, "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [8, 4]}'

-- the setting: bytes, at least 64, at most 256 MB (pg_dump writes a chunk as hex text, which must
-- stay under the 1 GB value limit); default 64 MB
SELECT pepnet._chunk_size() AS default_bytes;
SHOW pepnet.chunk_size;
SELECT ch_error($$SET pepnet.chunk_size = 10$$);
SELECT ch_error($$SET pepnet.chunk_size = '1GB'$$);
SELECT ch_error($$SET pepnet.chunk_size = '512MB'$$);
SET pepnet.chunk_size = '256MB';
RESET pepnet.chunk_size;

-- the same model stored in one chunk (default size) and in many small chunks
SELECT pepnet_create('ch_one', :'cfg', 7) AS one_v1;
SET pepnet.chunk_size = 100;
SELECT pepnet_create('ch_many', :'cfg', 7) AS many_v1;
-- weights NULL, weights_size set, chunks of 100 bytes numbered 0..n-1 (the last one shorter)
SELECT m.name, m.weights IS NULL AS weights_null, m.weights_size = sum(length(c.data)) AS size_matches,
       count(*) AS chunks, count(*) = (m.weights_size + 99) / 100 AS chunk_count_expected,
       min(c.seq) = 0 AND max(c.seq) = count(*) - 1 AS numbered_from_0,
       count(*) FILTER (WHERE length(c.data) <> 100) AS short_chunks
FROM pepnet.models m JOIN pepnet.model_chunks c USING (name, version)
WHERE m.name IN ('ch_one', 'ch_many') GROUP BY m.name, m.version, m.weights, m.weights_size ORDER BY m.name;

-- round trip bit for bit: the stored chunks, pepnet_export and pepnet_export_chunks are the same bytes
SELECT pepnet_export('ch_many') = pepnet_export('ch_one') AS export_same,
       pepnet_export('ch_many') = (SELECT string_agg(data, '' ORDER BY seq) FROM pepnet.model_chunks WHERE name = 'ch_many') AS export_is_chunks,
       pepnet_export('ch_many') = (SELECT string_agg(data, '' ORDER BY seq) FROM pepnet_export_chunks('ch_many')) AS export_chunks_same,
       (SELECT count(*) FROM pepnet_export_chunks('ch_many')) = (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'ch_many') AS export_chunks_rows;
-- the fingerprint is the SHA-256 of config and weights as before (pinned references keep matching)
SELECT name, fingerprint = pepnet._fingerprint(config, pepnet_export(name)) AS fingerprint_recomputes
FROM pepnet.models WHERE name IN ('ch_one', 'ch_many') ORDER BY name;
SELECT (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_one') =
       (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_many') AS same_fingerprint_any_chunk_size;
-- a version spanning many chunks scores bit for bit as the one-chunk version, every domain, all tasks
SELECT d, count(*) AS candidates, bool_and(a.score = b.score AND a.scores = b.scores) AS same_scores
FROM generate_series(0, 2) d,
     LATERAL pepnet_score('ch_one', d, '{7}', '{{1, 2}, {150, 9}, {-5, 23}}', '{{0.5, 1}, {0, 0}, {-1, 2}}') a
     JOIN LATERAL pepnet_score('ch_many', d, '{7}', '{{1, 2}, {150, 9}, {-5, 23}}', '{{0.5, 1}, {0, 0}, {-1, 2}}') b USING (idx)
GROUP BY d ORDER BY d;
-- a version with its weights inline (a direct INSERT) is read as before, its fingerprint computed by the trigger
INSERT INTO pepnet.models (name, version, config, weights) SELECT 'ch_inline', 1, config, pepnet_export('ch_one') FROM pepnet.models WHERE name = 'ch_one';
SELECT weights IS NOT NULL AS inline, weights_size = length(weights) AS sized,
       fingerprint = (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_one') AS same_fingerprint,
       pepnet_predict('ch_inline', 1, '{7}', '{150, 9}', '{0, 0}') = pepnet_predict('ch_one', 1, '{7}', '{150, 9}', '{0, 0}') AS same_score,
       (SELECT string_agg(data, '' ORDER BY seq) FROM pepnet_export_chunks('ch_inline')) = pepnet_export('ch_one') AS export_chunks_inline
FROM pepnet.models WHERE name = 'ch_inline';
-- a chunked row without fingerprint or size is refused
SELECT ch_error($$INSERT INTO pepnet.models (name, version, config) SELECT 'ch_bare', 1, config FROM pepnet.models WHERE name = 'ch_one'$$);

-- moving versions of any size: import from a query's rows (any row boundaries), same bytes, same fingerprint
SET pepnet.chunk_size = 1000;
SELECT pepnet_import_chunks('ch_moved', :'cfg', $$SELECT data FROM pepnet_export_chunks('ch_many') ORDER BY seq$$) AS moved_v1;
SELECT pepnet_export('ch_moved') = pepnet_export('ch_many') AS same_bytes,
       (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_moved') = (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_many') AS same_fingerprint,
       (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'ch_moved') AS chunks_of_1000;
-- one byte per row: the header's length spans rows
CREATE TEMP TABLE bytes AS SELECT i, substring(pepnet_export('ch_many') FROM i FOR 1) AS b
FROM generate_series(1, length(pepnet_export('ch_many'))) i;
SELECT pepnet_import_chunks('ch_bytewise', :'cfg', 'SELECT b FROM bytes ORDER BY i') AS bytewise_v1;
SELECT pepnet_export('ch_bytewise') = pepnet_export('ch_many') AS bytewise_same;
-- errors, before any version is stored
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT 1')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT NULL::bytea')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT ''\x0102''::bytea')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT data FROM pepnet_export_chunks(''ch_many'') UNION ALL SELECT ''\x00''::bytea')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT data FROM pepnet_export_chunks(''ch_many'') WHERE seq <> 5 ORDER BY seq')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'not a query')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', NULL)$$);
SELECT count(*) AS no_bad_version FROM pepnet.models WHERE name = 'ch_bad';

-- server files: members of pg_write_server_files / pg_read_server_files only (superuser here)
SELECT current_setting('data_directory') || '/pepnet_chunks_regress.safetensors' AS path \gset
SELECT pepnet_export_file('ch_many', :'path') = length(pepnet_export('ch_many')) AS file_bytes;
SELECT pepnet_import_file('ch_filed', :'cfg', :'path') AS filed_v1;
SELECT pepnet_export('ch_filed') = pepnet_export('ch_many') AS file_round_trip;
SELECT ch_error($$SELECT pepnet_import_file('ch_filed', '$$ || :'cfg' || $$', 'relative.safetensors')$$);
SELECT ch_error($$SELECT pepnet_import_file('ch_filed', '$$ || :'cfg' || $$', '/nonexistent/x.safetensors')$$);
SELECT ch_error($$SELECT pepnet_import_file('ch_filed', '$$ || :'cfg' || $$', '$$ || current_setting('data_directory') || $$')$$) LIKE '42809: "%" is not a regular file' AS directory_refused;
CREATE ROLE chunks_plain;
GRANT USAGE ON SCHEMA pepnet TO chunks_plain;
GRANT SELECT, INSERT ON pepnet.models TO chunks_plain;
GRANT SELECT ON pepnet.deployments TO chunks_plain;
SET ROLE chunks_plain;
SELECT ch_error(format('SELECT pepnet_export_file(%L, %L)', 'ch_many', :'path'));
SELECT ch_error(format('SELECT pepnet_import_file(%L, %L, %L)', 'ch_filed', :'cfg', :'path'));
-- a role that reads pepnet.models scores and exports chunked versions without a grant on pepnet.model_chunks
SELECT ch_error('SELECT count(*) FROM pepnet.model_chunks');
SELECT pepnet_predict('ch_many', 1, '{7}', '{150, 9}', '{0, 0}') = pepnet_predict('ch_one', 1, '{7}', '{150, 9}', '{0, 0}') AS scores_without_chunk_grant,
       (SELECT count(*) FROM pepnet_export_chunks('ch_many')) > 1 AS exports_without_chunk_grant;
-- and writes chunks of the versions it may insert
SELECT pepnet_create('ch_by_plain', :'cfg', 1) AS plain_v1;
RESET ROLE;
SELECT count(*) > 0 AS plain_chunks FROM pepnet.model_chunks WHERE name = 'ch_by_plain';

-- chunks are immutable: written with their version, deleted only with it
SELECT ch_error($$UPDATE pepnet.model_chunks SET data = '\x00' WHERE name = 'ch_many' AND seq = 1$$);
SELECT ch_error($$DELETE FROM pepnet.model_chunks WHERE name = 'ch_many' AND seq = 1$$);
SELECT ch_error($$INSERT INTO pepnet.model_chunks VALUES ('ch_many', 1, 100000, '\x00')$$);
SELECT ch_error($$INSERT INTO pepnet.model_chunks VALUES ('nosuch', 1, 0, '\x00')$$) LIKE '23503:%' AS needs_its_version;
-- TRUNCATE would skip the guards: refused unless pepnet.allow_drop (as for the registry's tables)
SELECT ch_error($$TRUNCATE pepnet.model_chunks$$);
SELECT ch_error($$TRUNCATE pepnet.optimizer_chunks$$);
SELECT pepnet_deploy('ch_many', 1);
SELECT ch_error($$DELETE FROM pepnet.models WHERE name = 'ch_many'$$);
SELECT count(*) > 0 AS deployed_chunks_kept FROM pepnet.model_chunks WHERE name = 'ch_many';
DELETE FROM pepnet.models WHERE name = 'ch_moved';
SELECT count(*) AS deleted_with_version FROM pepnet.model_chunks WHERE name = 'ch_moved';
-- read-only nodes refuse writes to chunks too
SET pepnet.read_only = on;
SELECT ch_error($$DELETE FROM pepnet.model_chunks WHERE name = 'ch_bytewise'$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_ro', '$$ || :'cfg' || $$', 'SELECT data FROM pepnet_export_chunks(''ch_many'')')$$);
RESET pepnet.read_only;

-- as in logical replication's apply worker (session_replication_role = replica): a DELETE of the
-- chunks of a version that exists (its own replicated DELETE skipped as deployed) is skipped
SET session_replication_role = replica;
DELETE FROM pepnet.model_chunks WHERE name = 'ch_many';
RESET session_replication_role;
SELECT count(*) = (SELECT weights_size + 99 FROM pepnet.models WHERE name = 'ch_many') / 100 AS replica_delete_skipped
FROM pepnet.model_chunks WHERE name = 'ch_many';
-- missing or corrupt chunks (changed behind the guards): XX001, naming what is wrong
ALTER TABLE pepnet.model_chunks DISABLE TRIGGER model_chunks_guard;
SET session_replication_role = replica;
DELETE FROM pepnet.model_chunks WHERE name = 'ch_bytewise' AND seq = 3;
DELETE FROM pepnet.model_chunks WHERE name = 'ch_filed' AND seq = (SELECT max(seq) FROM pepnet.model_chunks WHERE name = 'ch_filed');
INSERT INTO pepnet.models (name, version, config, fingerprint, weights_size)
	SELECT 'ch_grown', 1, config, fingerprint, weights_size FROM pepnet.models WHERE name = 'ch_one';
INSERT INTO pepnet.model_chunks SELECT 'ch_grown', 1, seq, data FROM pepnet.model_chunks WHERE name = 'ch_one';
UPDATE pepnet.model_chunks SET data = data || '\x00'::bytea WHERE name = 'ch_grown' AND seq = 0;
INSERT INTO pepnet.models (name, version, config, fingerprint, weights_size)
	SELECT 'ch_flipped', 1, config, fingerprint, weights_size FROM pepnet.models WHERE name = 'ch_one';
INSERT INTO pepnet.model_chunks SELECT 'ch_flipped', 1, 0, overlay(data PLACING '\x0000c07f'::bytea FROM length(data) - 7) FROM pepnet.model_chunks WHERE name = 'ch_one';
RESET session_replication_role;
ALTER TABLE pepnet.model_chunks ENABLE ALWAYS TRIGGER model_chunks_guard;
SELECT pepnet_cache_clear();
SELECT ch_error($$SELECT pepnet_predict('ch_bytewise', 1, '{7}', '{150, 9}', '{0, 0}')$$);
SELECT ch_error($$SELECT pepnet_export('ch_bytewise')$$);
-- an export to a file that fails half way leaves the file that was there as it was (written to a
-- temporary file, renamed when complete) and no temporary file behind
SELECT pepnet_export_file('ch_many', :'path') > 0 AS good_file;
SELECT md5(pg_read_binary_file(:'path')) AS good_md5 \gset
SELECT ch_error(format('SELECT pepnet_export_file(%L, %L)', 'ch_bytewise', :'path')) LIKE 'XX001:%' AS export_failed;
SELECT md5(pg_read_binary_file(:'path')) = :'good_md5' AS file_unchanged;
SELECT count(*) AS temporary_files_left FROM pg_ls_dir(current_setting('data_directory')) f WHERE f LIKE 'pepnet_chunks_regress.safetensors.%';
SELECT ch_error($$SELECT count(*) FROM pepnet_export_chunks('ch_bytewise')$$);
SELECT ch_error($$SELECT pepnet_export_version('ch_bytewise')$$);
SELECT ch_error($$SELECT pepnet_predict('ch_filed', 1, '{7}', '{150, 9}', '{0, 0}')$$);
SELECT ch_error($$SELECT pepnet_predict('ch_grown', 1, '{7}', '{150, 9}', '{0, 0}')$$);
SELECT ch_error($$SELECT pepnet_predict('ch_flipped', 1, '{7}', '{150, 9}', '{0, 0}')$$);

-- Adam's moments are stored in chunks too: training continued from a version resumes them bit for
-- bit (two calls of one epoch = one call of two epochs, with 64-byte chunks)
SET pepnet.chunk_size = 64;
SET client_min_messages = warning;
CALL pepnet_train('ch_adam2', 'SELECT i % 3 AS domain, ARRAY[i % 50]::bigint[] AS persona, ARRAY[i % 200, i % 24]::bigint[] AS features, ARRAY[(i % 5) / 5.0, 1]::real[] AS dense, ARRAY[(i % 2)::real, (i % 3 = 0)::int::real] AS labels FROM generate_series(1, 600) i', :'cfg', epochs => 2, batch_size => 64, lr => 0.01, progress_interval => 0);
CALL pepnet_train('ch_adam1', 'SELECT i % 3 AS domain, ARRAY[i % 50]::bigint[] AS persona, ARRAY[i % 200, i % 24]::bigint[] AS features, ARRAY[(i % 5) / 5.0, 1]::real[] AS dense, ARRAY[(i % 2)::real, (i % 3 = 0)::int::real] AS labels FROM generate_series(1, 600) i', :'cfg', epochs => 1, batch_size => 64, lr => 0.01, progress_interval => 0);
CALL pepnet_train('ch_adam1', 'SELECT i % 3 AS domain, ARRAY[i % 50]::bigint[] AS persona, ARRAY[i % 200, i % 24]::bigint[] AS features, ARRAY[(i % 5) / 5.0, 1]::real[] AS dense, ARRAY[(i % 2)::real, (i % 3 = 0)::int::real] AS labels FROM generate_series(1, 600) i', epochs => 1, batch_size => 64, lr => 0.01, progress_interval => 0);
RESET client_min_messages;
SELECT o.name, o.version, o.adam_m IS NULL AND o.adam_v IS NULL AS moments_in_chunks,
       (SELECT count(*) FROM pepnet.optimizer_chunks c WHERE c.name = o.name AND c.version = o.version AND c.moment = 1) > 100 AS many_chunks,
       (SELECT sum(length(c.data)) FROM pepnet.optimizer_chunks c WHERE c.name = o.name AND c.version = o.version AND c.moment = 2) =
       (SELECT weights_size FROM pepnet.models m WHERE m.name = o.name AND m.version = o.version) AS moment_size_is_weights_size
FROM pepnet.optimizer_state o WHERE o.name IN ('ch_adam1', 'ch_adam2') ORDER BY 1, 2;
SELECT (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_adam1' AND version = 2) =
       (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_adam2' AND version = 2) AS resumed_bit_for_bit,
       (SELECT metrics->'resumed_steps' FROM pepnet.models WHERE name = 'ch_adam1' AND version = 2) AS resumed_steps;
-- with a moment chunk missing, Adam starts afresh with a WARNING (the weights are unaffected)
SET session_replication_role = replica;
DELETE FROM pepnet.optimizer_chunks WHERE name = 'ch_adam1' AND version = 2 AND moment = 2 AND seq = 3;
RESET session_replication_role;
SET client_min_messages = warning;
\set SHOW_CONTEXT never
CALL pepnet_train('ch_adam1', 'SELECT 0 AS domain, ARRAY[1]::bigint[] AS persona, ARRAY[1, 1]::bigint[] AS features, ARRAY[0, 1]::real[] AS dense, ARRAY[1, 0]::real[] AS labels', epochs => 1, progress_interval => 0);
\set SHOW_CONTEXT errors
RESET client_min_messages;
DELETE FROM pepnet.models WHERE name = 'ch_adam1' AND version = 1;
SELECT count(*) AS deleted_with_version FROM pepnet.optimizer_chunks WHERE name = 'ch_adam1' AND version = 1;

-- a cancel (statement_timeout) while writing thousands of chunks leaves no version and no chunk
SET pepnet.chunk_size = 64;
SET statement_timeout = '300ms';
\set SHOW_CONTEXT never
SELECT pepnet_create('ch_slow', '{"domains": 2, "features": [{"name": "item", "buckets": 500000}], "emb_dim": 8, "hidden": [8]}');
\set SHOW_CONTEXT errors
RESET statement_timeout;
SELECT (SELECT count(*) FROM pepnet.models WHERE name = 'ch_slow') AS versions, (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'ch_slow') AS chunks;

-- version bundles carry chunked versions (reassembled) and store them in chunks again
SELECT pepnet_export_version('ch_many') = pepnet_export_version('ch_many') AS bundle_stable,
       position(pepnet_export('ch_many') IN pepnet_export_version('ch_many')) > 0 AS bundle_has_weights;
SET pepnet.chunk_size = 64;
SELECT pepnet_import_version(overlay(b PLACING convert_to('"name": "ch_manx"', 'UTF8') FROM position(convert_to('"name": "ch_many"', 'UTF8') IN b) FOR 17)) AS bundle_imported
FROM (SELECT pepnet_export_version('ch_many') AS b) s;
SELECT pepnet_export('ch_manx@1') = pepnet_export('ch_many') AS bundle_same_bytes,
       (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_manx') = (SELECT fingerprint FROM pepnet.models WHERE name = 'ch_many') AS bundle_same_fingerprint,
       (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'ch_manx') > (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'ch_many') AS rechunked_at_64;
REVOKE ALL ON pepnet.models, pepnet.deployments FROM chunks_plain;
REVOKE ALL ON SCHEMA pepnet FROM chunks_plain;
DROP ROLE chunks_plain;

-- pepnet_verify recomputes the fingerprint from the stored rows: true for versions written by
-- pepnet, false for a hand copy whose chunks came from another version (same size, other weights)
SELECT pepnet_verify('ch_one') AS one_ok, pepnet_verify('ch_many') AS many_ok;
SELECT pepnet_create('ch_va', :'cfg', 1) AS va1, pepnet_create('ch_va', :'cfg', 2) AS va2;
BEGIN;
INSERT INTO pepnet.models (name, version, config, fingerprint, weights_size)
	SELECT 'ch_copy', 1, config, fingerprint, weights_size FROM pepnet.models WHERE name = 'ch_va' AND version = 1;
INSERT INTO pepnet.model_chunks SELECT 'ch_copy', 1, seq, data FROM pepnet.model_chunks WHERE name = 'ch_va' AND version = 2;
COMMIT;
SELECT c.fingerprint = v.fingerprint AS fingerprints_equal, pepnet_verify('ch_copy@1') AS copy_verified,
       pepnet_verify('ch_va@1') AS original_verified
FROM pepnet.models c, pepnet.models v WHERE c.name = 'ch_copy' AND v.name = 'ch_va' AND v.version = 1;
SELECT ch_error($$SELECT pepnet_verify(NULL)$$);

-- the chunk query of pepnet_import_chunks is a single read-only SELECT, as data queries are
CREATE TABLE ch_victim AS SELECT 1 AS x;
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'DELETE FROM ch_victim RETURNING ''\x00''::bytea')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'WITH d AS (DELETE FROM ch_victim RETURNING 1) SELECT ''\x00''::bytea FROM d')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT ''\x00''::bytea FROM ch_victim FOR UPDATE')$$);
SELECT ch_error($$SELECT pepnet_import_chunks('ch_bad', '$$ || :'cfg' || $$', 'SELECT 1; SELECT 2')$$);
SELECT count(*) AS victim_rows FROM ch_victim;
DROP TABLE ch_victim;
