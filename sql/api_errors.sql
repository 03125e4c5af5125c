-- SQLSTATEs as docs/api.md's error tables give them (issue 15): version bundles, pinned references
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pepnet;
RESET client_min_messages;
-- SQLSTATE and message of a statement's error (no CONTEXT lines in the output)
CREATE FUNCTION ae_error(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- the header of a bundle, and a bundle with another header (same weights)
CREATE FUNCTION ae_hlen(b bytea) RETURNS int LANGUAGE sql AS
$$ SELECT (get_byte(b, 8) << 24) | (get_byte(b, 9) << 16) | (get_byte(b, 10) << 8) | get_byte(b, 11) $$;
CREATE FUNCTION ae_header(b bytea) RETURNS jsonb LANGUAGE sql AS
$$ SELECT convert_from(substring(b FROM 13 FOR ae_hlen(b)), 'UTF8')::jsonb $$;
CREATE FUNCTION ae_rebundle(b bytea, h text) RETURNS bytea LANGUAGE sql AS
$$ SELECT substring(b FROM 1 FOR 8) || int4send(octet_length(convert_to(h, 'UTF8'))) || convert_to(h, 'UTF8')
          || substring(b FROM 13 + ae_hlen(b)) $$;
\set cfg '{"domains": 2, "features": [{"name": "item", "buckets": 20}], "persona": [{"name": "user", "buckets": 5}], "emb_dim": 2, "hidden": [2]}'
SELECT pepnet_create('ae', :'cfg', 1) AS v1, pepnet_create('ae', :'cfg', 2) AS v2;
CREATE TABLE ae_b AS SELECT pepnet_export_version('ae@1') AS b, ae_header(pepnet_export_version('ae@1')) AS h;

-- a bundle imported under its own name and number: a number taken by other weights is 23505
SELECT regexp_replace(ae_error(format('SELECT pepnet_import_version(%L::bytea)', ae_rebundle(b, jsonb_set(h, '{version}', '2')::text))),
                      'on port [0-9]+', 'on port N') AS error FROM ae_b;
-- the same version again: accepted, nothing written
SELECT pepnet_import_version(b) AS same_again FROM ae_b;

-- malformed headers: 22P03 naming the field, before anything is stored
SELECT f.what, ae_error(format('SELECT pepnet_import_version(%L::bytea)', ae_rebundle(b, f.h::text))) AS error
FROM ae_b, LATERAL (VALUES
	('version 1e20', jsonb_set(h, '{name}', '"ae_x"') || '{"version": 1e20}'),
	('version 1.5', jsonb_set(h, '{name}', '"ae_x"') || '{"version": 1.5}'),
	('version 0', jsonb_set(h, '{name}', '"ae_x"') || '{"version": 0}'),
	('version -3', jsonb_set(h, '{name}', '"ae_x"') || '{"version": -3}'),
	('version "3"', jsonb_set(h, '{name}', '"ae_x"') || '{"version": "3"}'),
	('version 2147483648', jsonb_set(h, '{name}', '"ae_x"') || '{"version": 2147483648}'),
	('no version', (jsonb_set(h, '{name}', '"ae_x"') - 'version')),
	('name 0', h || '{"name": 0}'),
	('name null', h || '{"name": null}'),
	('config a string', jsonb_set(h, '{name}', '"ae_x"') || '{"config": "x"}'),
	('metrics an array', jsonb_set(h, '{name}', '"ae_x"') || '{"metrics": []}'),
	('created_at not a date', jsonb_set(h, '{name}', '"ae_x"') || '{"created_at": "last tuesday"}'),
	('created_at out of range', jsonb_set(h, '{name}', '"ae_x"') || '{"created_at": "2020-13-45T00:00:00+00:00"}'),
	('created_at a number', jsonb_set(h, '{name}', '"ae_x"') || '{"created_at": 5}'),
	('parent 1.5', jsonb_set(h, '{name}', '"ae_x"') || '{"parent": 1.5}'),
	('parent "x"', jsonb_set(h, '{name}', '"ae_x"') || '{"parent": "x"}'),
	('fingerprint not hex', jsonb_set(h, '{name}', '"ae_x"') || jsonb_build_object('fingerprint', repeat('zz', 32)))
	) AS f(what, h) ORDER BY f.what;
SELECT f.what, ae_error(format('SELECT pepnet_import_version(%L::bytea)', ae_rebundle(b, f.h::text))) AS error
FROM ae_b, LATERAL (VALUES
	('not JSON', '{"name": "ae_x", '),
	('a JSON array', '[1, 2]'),
	('\u0000 in a string', replace((jsonb_set(h, '{name}', '"ae_x"') || '{"x": "a"}')::text, '"a"', '"\u0000"'))
	) AS f(what, h) ORDER BY f.what;
-- nothing was stored by any of them
SELECT count(*) AS stored FROM pepnet.models WHERE name IN ('ae_x', '0');
-- a valid header with a null parent and no created_at is imported
SELECT pepnet_import_version(ae_rebundle(b, ((jsonb_set(h, '{name}', '"ae_y"') || '{"parent": null}'::jsonb) - 'created_at')::text)) AS imported FROM ae_b;
SELECT m.parent IS NULL AS no_parent, m.created_at > now() - interval '1 hour' AS created_now, pepnet_verify('ae_y@1') AS verified,
       m.fingerprint = o.fingerprint AS same_fingerprint
FROM pepnet.models m, pepnet.models o WHERE m.name = 'ae_y' AND o.name = 'ae' AND o.version = 1;

-- pinned references: long input shortened in messages; a name longer than 63 characters is 42622
SELECT ae_error(format('SELECT %L::pepnet_pinned', repeat('x', 5000)));
SELECT length(ae_error(format('SELECT %L::pepnet_pinned', repeat('x', 5000)))) < 200 AS short_message;
SELECT ae_error(format('SELECT %L::pepnet_pinned', repeat('x', 5000) || '@1'));
SELECT ae_error(format('SELECT %L::pepnet_pinned', repeat('x', 64) || '@1'));
SELECT ae_error(format('SELECT %L::pepnet_pinned', 'ae@1#' || repeat('0', 5000)));
SELECT ae_error($$SELECT '@1'::pepnet_pinned$$);
-- names are counted in characters: a name of 30 three-byte characters (90 bytes) pins and scores
SELECT pepnet_create(repeat('模', 30), :'cfg', 3) AS mb_v1;
SELECT pepnet_predict((repeat('模', 30) || '@1')::pepnet_pinned, 0, '{1}', '{2}') = pepnet_predict(repeat('模', 30) || '@1', 0, '{1}', '{2}') AS pinned_scores_same;
SELECT pepnet_pin(repeat('模', 30))::text = repeat('模', 30) || '@1#' || encode(fingerprint, 'hex') AS pin_text
FROM pepnet.models WHERE name = repeat('模', 30);

-- pepnet_deploy of a name longer than 63 characters: 42622, the name shortened
SELECT ae_error(format('SELECT pepnet_deploy(%L, 1)', repeat('x', 5000)));
SELECT ae_error(format('SELECT pepnet_deploy(%L, %L)', repeat('x', 5000), 'latest'));
SELECT ae_error(format('SELECT pepnet_deploy(%L, 1)', repeat('模', 64)));
SELECT pepnet_deploy(repeat('模', 30), 1);
SELECT version AS deployed_30_chars FROM pepnet.deployments WHERE name = repeat('模', 30);
