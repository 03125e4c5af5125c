-- Scaling out: read-only guard, fingerprints, pinned references, version bundles
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pepnet;
RESET client_min_messages;
CREATE FUNCTION so_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN  -- messages name the node (cluster_name or port): not in the output
	RETURN regexp_replace(SQLSTATE || ': ' || SQLERRM, 'this node \([^)]*\)', 'this node (N)');
END $$;
\set cfg '{"domains": 2, "features": [{"name": "item", "buckets": 100}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 50}], "emb_dim": 4, "hidden": [8]}'
SELECT pepnet_create('so', :'cfg', 1) AS v1, pepnet_create('so', :'cfg', 2) AS v2, pepnet_create('so', :'cfg', 1) AS v3;

-- the fingerprint: SHA-256 of config and weights, the same for the same seed, stored per row
SELECT version, length(fingerprint) AS bytes, fingerprint = pepnet._fingerprint(config, pepnet_export(name || '@' || version)) AS recomputes
FROM pepnet.models WHERE name = 'so' ORDER BY version;
SELECT (SELECT fingerprint FROM pepnet.models WHERE name = 'so' AND version = 1) =
       (SELECT fingerprint FROM pepnet.models WHERE name = 'so' AND version = 3) AS same_seed_same_fp,
       (SELECT fingerprint FROM pepnet.models WHERE name = 'so' AND version = 1) =
       (SELECT fingerprint FROM pepnet.models WHERE name = 'so' AND version = 2) AS other_seed_same_fp,
       pepnet._fingerprint('{"a": 1}', '\x00') = pepnet._fingerprint('{"a": 2}', '\x00') AS config_counts,
       pepnet._fingerprint('{"a": 1}', '\x00') = pepnet._fingerprint('{"a": 1}', '\x01') AS weights_count;

-- pinned references: 'name@version' looks the fingerprint up; output is always the long form
SELECT 'so@2'::pepnet_pinned::text = 'so@2#' || encode(fingerprint, 'hex') AS short_form_resolves
FROM pepnet.models WHERE name = 'so' AND version = 2;
SELECT ('so@2#' || encode(fingerprint, 'hex'))::pepnet_pinned::text = 'so@2'::pepnet_pinned::text AS long_form_reads_back
FROM pepnet.models WHERE name = 'so' AND version = 2;
SELECT pepnet_pin('so@2')::text = 'so@2'::pepnet_pinned::text AS pin_versioned;
SELECT pepnet_deploy('so', 1);
SELECT pepnet_pin('so')::text = 'so@1'::pepnet_pinned::text AS pin_follows_deploy;
SELECT so_error($$SELECT 'so'::pepnet_pinned$$);
SELECT so_error($$SELECT 'so@'::pepnet_pinned$$);
SELECT so_error($$SELECT 'so@0'::pepnet_pinned$$);
SELECT so_error($$SELECT 'so@2x'::pepnet_pinned$$);
SELECT so_error($$SELECT 'so@99999999999'::pepnet_pinned$$);
SELECT so_error($$SELECT '@2'::pepnet_pinned$$);
SELECT so_error($$SELECT 'so@2#abc'::pepnet_pinned$$);
SELECT so_error($$SELECT ('so@2#' || repeat('g', 64))::pepnet_pinned$$);
SELECT so_error($$SELECT 'so@9'::pepnet_pinned$$);
SELECT so_error($$SELECT 'nope@1'::pepnet_pinned$$);
SELECT so_error($$SELECT pepnet_pin('nope')$$);
SELECT so_error($$SELECT pepnet_pin(NULL)$$);

-- the binary form (COPY BINARY, binary-format drivers) round-trips
CREATE TEMP TABLE so_pins AS SELECT 'so@2'::pepnet_pinned AS p;
CREATE TEMP TABLE so_pins2 (p pepnet_pinned);
\set binfile '/tmp/pepnet_scaleout_pins_' :PORT '.bin'
COPY so_pins TO :'binfile' (FORMAT binary);
COPY so_pins2 FROM :'binfile' (FORMAT binary);
\setenv SO_BINFILE :binfile
\! rm -f "$SO_BINFILE"
SELECT a.p::text = b.p::text AS binary_roundtrip FROM so_pins a, so_pins2 b;
-- shippable: IMMUTABLE, and no argument is collatable
SELECT p.oid::regprocedure, p.provolatile, p.proparallel,
       (SELECT bool_and(NOT t.typcollation <> 0) FROM unnest(p.proargtypes) a JOIN pg_type t ON t.oid = a) AS no_collatable_args
FROM pg_proc p WHERE p.proname = 'pepnet_predict' ORDER BY 1::text;
SELECT typname, typcollation = 0 AS not_collatable FROM pg_type WHERE typname = 'pepnet_pinned';

-- pinned scoring: the same scores as the text reference, through the same path
CREATE TABLE so_cands AS
SELECT i AS id, (i % 2) AS domain, ARRAY[i % 7]::bigint[] AS persona, ARRAY[i * 13, i % 24]::bigint[] AS features
FROM generate_series(1, 50) i;
SELECT count(*) AS candidates,
       count(*) FILTER (WHERE pepnet_predict('so@2'::pepnet_pinned, domain, persona, features) =
                              pepnet_predict('so@2', domain, persona, features)) AS equal_to_text_ref,
       count(*) FILTER (WHERE pepnet_predict('so@2'::pepnet_pinned, domain, persona, features) =
                              pepnet_predict('so@1', domain, persona, features)) AS equal_to_other_version
FROM so_cands;
-- in parallel workers too (PARALLEL SAFE): the same scores
SET force_parallel_mode = on; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
SELECT count(*) FILTER (WHERE pepnet_predict('so@2'::pepnet_pinned, domain, persona, features) =
                              pepnet_predict('so@2', domain, persona, features)) AS equal_in_workers
FROM so_cands;
RESET force_parallel_mode; RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
-- a pinned version with other weights here is refused, row by row or folded as a constant
SELECT so_error(format($$SELECT pepnet_predict(%L::pepnet_pinned, domain, persona, features) FROM so_cands$$,
       'so@2#' || (SELECT encode(fingerprint, 'hex') FROM pepnet.models WHERE name = 'so' AND version = 1)))
       LIKE '55000: model "so" version 2 on this node (%) is not the pinned version: other config or weights' AS wrong_fp_refused;
SELECT so_error(format($$SELECT pepnet_predict(%L::pepnet_pinned, 0, '{1}', '{1, 2}')$$,
       'so@2#' || repeat('0', 64))) LIKE '55000: %not the pinned version%' AS wrong_fp_refused_const;
SELECT so_error(format($$SELECT pepnet_predict(%L::pepnet_pinned, 0, '{1}', '{1, 2}')$$, 'so@7#' || repeat('0', 64)));
SELECT so_error($$SELECT pepnet_predict(NULL::pepnet_pinned, 0, '{1}', '{1, 2}')$$);
SELECT so_error($$SELECT pepnet_predict('so@2'::pepnet_pinned, 5, '{1}', '{1, 2}')$$);
-- a model without persona fields: persona omitted (named arguments) or NULL, as in the text form
SELECT pepnet_create('so_np', '{"domains": 2, "features": [{"name": "item", "buckets": 100}], "persona": [], "emb_dim": 4, "hidden": [8]}', 1) AS so_np;
SELECT pepnet_predict('so_np@1'::pepnet_pinned, 1, features => '{5}') = pepnet_predict('so_np@1', 1, NULL, '{5}') AS no_persona,
       pepnet_predict('so_np@1'::pepnet_pinned, 1, NULL, '{5}') = pepnet_predict('so_np@1', 1, features => '{5}') AS null_persona;
-- a text reference still picks the text overload (unknown literals prefer text)
SELECT pepnet_predict('so', 0, '{1}', '{1, 2}') = pepnet_predict('so@1', 0, '{1}', '{1, 2}') AS text_overload_kept;

-- version bundles: a version copied to a node that lacks it keeps its number, parent, metrics,
-- creation time and fingerprint (here the other node is another name: 'sz' has no versions)
UPDATE pepnet.models SET metrics = '{"note": "for the bundle"}', parent = 1 WHERE name = 'so' AND version = 3;
CREATE TEMP TABLE so_bundle AS SELECT pepnet_export_version('so@3') AS b;
SELECT substr(b, 1, 8) AS magic FROM so_bundle;
CREATE TEMP TABLE so_renamed AS
SELECT overlay(b placing convert_to('"name": "sz"', 'UTF8') from position(convert_to('"name": "so"', 'UTF8') in b)) AS b FROM so_bundle;
SELECT pepnet_import_version(b) AS imported FROM so_renamed;
SELECT m.version = o.version AS same_version, m.parent = o.parent AS same_parent,
       m.metrics = o.metrics AS same_metrics, m.created_at = o.created_at AS same_created_at,
       m.config = o.config AS same_config, pepnet_export('sz@3') = pepnet_export('so@3') AS same_weights,
       m.fingerprint = o.fingerprint AS same_fingerprint
FROM pepnet.models m, pepnet.models o
WHERE m.name = 'sz' AND m.version = 3 AND o.name = 'so' AND o.version = 3;
SELECT name, version, parent FROM pepnet.models WHERE name = 'sz';
-- importing a version that is here already changes nothing
SELECT pepnet_import_version(b) AS again FROM so_bundle;
SELECT so_error($$SELECT pepnet_import_version(pepnet_export_version('so@2'))$$);
SELECT count(*) AS versions_of_so FROM pepnet.models WHERE name = 'so';
-- a bundle for a number that means other weights here is refused: never renumbered
CREATE TEMP TABLE so_other AS
SELECT overlay(b placing convert_to('"version": 2', 'UTF8') from position(convert_to('"version": 3', 'UTF8') in b)) AS b FROM so_bundle;
SELECT so_error($$SELECT pepnet_import_version(b) FROM so_other$$) LIKE
       '23505: model "so" version 2 already exists on this node (%) with other config or weights' AS taken_number_refused;
-- bad bundles
SELECT so_error($$SELECT pepnet_import_version(NULL)$$);
SELECT so_error($$SELECT pepnet_import_version('\x00')$$);
SELECT so_error($$SELECT pepnet_import_version('\x5045504e45545631ffffffff')$$);
SELECT so_error($$SELECT pepnet_import_version('\x5045504e45545631000000027b7d')$$);
SELECT so_error($$SELECT pepnet_import_version('\x5045504e4554563100000002')$$);
SELECT so_error($$SELECT pepnet_import_version(substr(b, 1, length(b) - 4)) FROM so_other$$);
-- a changed weight byte: refused before anything is written
SELECT so_error($$SELECT pepnet_import_version(set_byte(b, length(b) - 1, (get_byte(b, length(b) - 1) + 1) % 256))
                  FROM so_renamed$$) LIKE '22P03: bundle of model "sz" version 3 does not match its fingerprint' AS changed_weights_refused;
SELECT so_error($$SELECT pepnet_import_version(overlay(b placing convert_to('"name": "sy"', 'UTF8')
                  from position(convert_to('"name": "sz"', 'UTF8') in b)) || '\x00'::bytea) FROM so_renamed$$)
       LIKE '22P03: bundle of model "sy" version 3 does not match its fingerprint' AS appended_byte_refused;
SELECT count(*) AS versions_of_sy FROM pepnet.models WHERE name = 'sy';
SELECT so_error($$SELECT pepnet_export_version('nope')$$);
SELECT so_error($$SELECT pepnet_export_version(NULL)$$);

-- every writer refuses at once in a read-only transaction (25006), saying where to run it
BEGIN READ ONLY;
SELECT so_error($$SELECT pepnet_create('so', '{}')$$);
SELECT so_error($$SELECT pepnet_import('so', '{}', '\x00')$$);
SELECT so_error($$SELECT pepnet_deploy('so', 2)$$);
SELECT so_error($$SELECT pepnet_import_version('\x00')$$);
SELECT so_error($$SELECT pepnet._train_begin('so', NULL, 0, 0.001, 512)$$);
-- readers work
SELECT pepnet_predict('so@2'::pepnet_pinned, 0, '{1}', '{1, 2}') = pepnet_predict('so@2', 0, '{1}', '{1, 2}') AS reads_work;
ROLLBACK;
-- and on a read-only node (pepnet.read_only, logical-replication subscribers), before any work
SET pepnet.read_only = on;
SELECT so_error($$SELECT pepnet_import_version('\x00')$$);
RESET pepnet.read_only;
SET default_transaction_read_only = on;
\set VERBOSITY terse
CALL pepnet_train('so', 'SELECT domain, persona, features, 1 AS label FROM so_cands', epochs => 1);
\set VERBOSITY default
RESET default_transaction_read_only;
SELECT count(*) AS versions_of_so FROM pepnet.models WHERE name = 'so';

DROP TABLE so_cands;
DROP FUNCTION so_error(text);
