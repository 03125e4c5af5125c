/* pepnet--0.1.0--0.2.0.sql: upgrade from 0.1.0 to 0.2.0.
 *
 * There is no pepnet--0.2.0.sql: CREATE EXTENSION pepnet runs pepnet--0.1.0.sql as shipped and
 * then this script (as contrib modules do), so a fresh 0.2.0 database and an upgraded one are
 * built by the same statements.  Every C symbol that pepnet--0.1.0.sql names must stay exported
 * by the library (CREATE FUNCTION checks it), even where this script replaces the function.
 *
 * Sections by topic; each keeps to its own objects.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.2.0'" to load this file. \quit

-- == registry: models, versions, deployments ==

-- == training and calibration ==

-- == scoring ==

-- == scaling out ==

-- Writers refuse at once on a hot standby or in a read-only transaction (25006), before any
-- work.  The C writers (pepnet_create, pepnet_import, pepnet_train via pepnet._train_begin,
-- pepnet_import_version) call the same check in C.
CREATE FUNCTION pepnet._require_writable(what text) RETURNS void
	AS 'MODULE_PATHNAME', 'pepnet_require_writable_sql' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL SAFE;

CREATE OR REPLACE FUNCTION pepnet_deploy(name text, version int) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	latest int;
BEGIN
	PERFORM pepnet._require_writable('pepnet_deploy');
	IF pepnet_deploy.name IS NULL OR pepnet_deploy.version IS NULL THEN
		RAISE EXCEPTION 'pepnet_deploy needs a model name and a version, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pepnet.models m
				   WHERE m.name = pepnet_deploy.name AND m.version = pepnet_deploy.version) THEN
		SELECT max(m.version) INTO latest FROM pepnet.models m WHERE m.name = pepnet_deploy.name;
		IF latest IS NULL THEN
			RAISE EXCEPTION 'model "%" does not exist', pepnet_deploy.name
				USING ERRCODE = 'undefined_object';
		END IF;
		RAISE EXCEPTION 'model "%" has no version %', pepnet_deploy.name, pepnet_deploy.version
			USING ERRCODE = 'undefined_object', DETAIL = format('Its latest version is %s.', latest);
	END IF;
	INSERT INTO pepnet.deployments AS d (name, version)
		VALUES (pepnet_deploy.name, pepnet_deploy.version)
		ON CONFLICT ON CONSTRAINT deployments_pkey DO UPDATE SET version = EXCLUDED.version, deployed_at = now();
END $$;

-- The fingerprint of a version: SHA-256 of its config (canonical jsonb text) and weights, a
-- stored generated column, so every node computes it for every row it holds (ADD COLUMN fills
-- the existing rows).  Equal fingerprints = the same version, on any node.
CREATE FUNCTION pepnet._fingerprint(config jsonb, weights bytea) RETURNS bytea
	AS 'MODULE_PATHNAME', 'pepnet_fingerprint_of' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
ALTER TABLE pepnet.models
	ADD COLUMN fingerprint bytea GENERATED ALWAYS AS (pepnet._fingerprint(config, weights)) STORED;
COMMENT ON COLUMN pepnet.models.fingerprint IS 'SHA-256 of config and weights: the same version on every node has the same fingerprint';

-- A version-pinned model reference: 'ctr@3' (fingerprint looked up on the node that parses it) or
-- 'ctr@3#<64 hex digits>'; output always the long form.  Not collatable, so postgres_fdw ships
-- expressions using it.
CREATE TYPE pepnet_pinned;
CREATE FUNCTION pepnet_pinned_in(cstring) RETURNS pepnet_pinned
	AS 'MODULE_PATHNAME', 'pepnet_pinned_in' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION pepnet_pinned_out(pepnet_pinned) RETURNS cstring
	AS 'MODULE_PATHNAME', 'pepnet_pinned_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE pepnet_pinned (
	INPUT = pepnet_pinned_in, OUTPUT = pepnet_pinned_out,
	INTERNALLENGTH = VARIABLE, ALIGNMENT = int4, STORAGE = plain
);
COMMENT ON TYPE pepnet_pinned IS 'pepnet: a model version pinned by name, number and fingerprint (''ctr@3#<hex>'')';

-- The version a reference names now ('ctr': deployed, else latest; 'ctr@3'), pinned.
CREATE FUNCTION pepnet_pin(model text) RETURNS pepnet_pinned
	AS 'MODULE_PATHNAME', 'pepnet_pin' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;

-- Scoring a pinned version: IMMUTABLE (its scores never change), so postgres_fdw can ship it to
-- shards; refuses on a node whose version has another fingerprint.
CREATE FUNCTION pepnet_predict(model pepnet_pinned, domain int, persona bigint[], features bigint[], dense real[] DEFAULT NULL)
	RETURNS float8
	AS 'MODULE_PATHNAME', 'pepnet_pinned_predict' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1000;

-- Copy a version between nodes keeping name, version, parent, metrics, created_at and
-- fingerprint: a bundle ('PEPNETV1', header length, JSON header, weights).
CREATE FUNCTION pepnet_export_version(model text) RETURNS bytea
	AS 'MODULE_PATHNAME', 'pepnet_export_version' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION pepnet_import_version(bundle bytea) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_import_version' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
