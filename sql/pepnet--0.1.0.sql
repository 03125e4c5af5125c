/* pepnet--0.1.0.sql: STAR-PEPNet multi-domain CTR models in PostgreSQL */

\echo Use "CREATE EXTENSION pepnet" to load this file. \quit

CREATE SCHEMA pepnet;

-- One row per model version; config and weights never change once written.
CREATE TABLE pepnet.models (
	id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	name text NOT NULL,
	version int NOT NULL,
	config jsonb NOT NULL,
	weights bytea NOT NULL,
	metrics jsonb NOT NULL DEFAULT '{}',
	created_at timestamptz NOT NULL DEFAULT now(),
	parent int,
	PRIMARY KEY (name, version),
	CONSTRAINT models_name_check CHECK (name <> '' AND strpos(name, '@') = 0 AND length(name) < 64),
	CONSTRAINT models_version_check CHECK (version > 0)
);
-- weights are incompressible floats: store them out of line, uncompressed
ALTER TABLE pepnet.models ALTER COLUMN weights SET STORAGE EXTERNAL;
COMMENT ON TABLE pepnet.models IS 'pepnet model versions: config (jsonb), weights (safetensors bytea), metrics';

-- The deployed version of each model name.
CREATE TABLE pepnet.deployments (
	name text PRIMARY KEY,
	version int NOT NULL,
	deployed_at timestamptz NOT NULL DEFAULT now(),
	FOREIGN KEY (name, version) REFERENCES pepnet.models (name, version)
);
COMMENT ON TABLE pepnet.deployments IS 'pepnet: the version that a bare model name refers to';

SELECT pg_catalog.pg_extension_config_dump('pepnet.models', '');
SELECT pg_catalog.pg_extension_config_dump('pepnet.deployments', '');

-- Refuse changes to what identifies a version or what it computes.
CREATE FUNCTION pepnet._models_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		IF NEW.name IS DISTINCT FROM OLD.name OR NEW.version IS DISTINCT FROM OLD.version THEN
			RAISE EXCEPTION 'model versions cannot be renamed or renumbered'
				USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
		IF NEW.config IS DISTINCT FROM OLD.config OR NEW.weights IS DISTINCT FROM OLD.weights THEN
			RAISE EXCEPTION 'model "%" version % is immutable: its config and weights cannot change', OLD.name, OLD.version
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Create a new version with pepnet_import, pepnet_create or pepnet_train.';
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM pepnet.deployments d WHERE d.name = OLD.name AND d.version = OLD.version) THEN
		RAISE EXCEPTION 'model "%" version % is deployed and cannot be deleted', OLD.name, OLD.version
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Deploy another version first with pepnet_deploy, or DELETE FROM pepnet.deployments.';
	END IF;
	RETURN OLD;
END $$;

CREATE TRIGGER models_guard BEFORE UPDATE OR DELETE ON pepnet.models
	FOR EACH ROW EXECUTE FUNCTION pepnet._models_guard();

-- A new version with weights initialised from seed.
CREATE FUNCTION pepnet_create(name text, config jsonb, seed int DEFAULT 0) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_create' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- A new version from a safetensors blob, every tensor checked against the config.
CREATE FUNCTION pepnet_import(name text, config jsonb, weights bytea) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_import' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- The weights of a version as safetensors.
CREATE FUNCTION pepnet_export(model text) RETURNS bytea
	AS 'MODULE_PATHNAME', 'pepnet_export' LANGUAGE C STABLE PARALLEL SAFE;

-- Make version the one a bare name refers to, for every session once committed.
CREATE FUNCTION pepnet_deploy(name text, version int) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	latest int;
BEGIN
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

-- Score N candidates of one request; one row per candidate.
CREATE FUNCTION pepnet_score(model text, domain int, persona bigint[], features bigint[], dense real[] DEFAULT NULL)
	RETURNS TABLE (idx int, score float8, scores float8[])
	AS 'MODULE_PATHNAME', 'pepnet_score' LANGUAGE C STABLE PARALLEL SAFE ROWS 100;

-- Same, with the model from the setting pepnet.model.
CREATE FUNCTION pepnet_score(domain int, persona bigint[], features bigint[], dense real[] DEFAULT NULL)
	RETURNS TABLE (idx int, score float8, scores float8[])
	AS 'MODULE_PATHNAME', 'pepnet_score_default' LANGUAGE C STABLE PARALLEL SAFE ROWS 100;

-- Probability of the first task for one candidate, row by row.
CREATE FUNCTION pepnet_predict(model text, domain int, persona bigint[], features bigint[], dense real[] DEFAULT NULL)
	RETURNS float8
	AS 'MODULE_PATHNAME', 'pepnet_predict' LANGUAGE C STABLE PARALLEL SAFE COST 1000;

-- Model versions held by this backend's cache.
CREATE FUNCTION pepnet_cache()
	RETURNS TABLE (model text, version int, bytes bigint, domains int, hits bigint, built_at timestamptz)
	AS 'MODULE_PATHNAME', 'pepnet_cache' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Drop every model version from this backend's cache.
CREATE FUNCTION pepnet_cache_clear() RETURNS void
	AS 'MODULE_PATHNAME', 'pepnet_cache_clear' LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- Training internals, driven by pepnet_train below (one trainer per session).
CREATE FUNCTION pepnet._train_begin(name text, config jsonb, seed int, lr float8, batch_size int) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_train_begin' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION pepnet._train_epoch(data text, epoch int, shuffle_buffer int, seed int, progress_interval float8) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'pepnet_train_epoch' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION pepnet._train_eval(data text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'pepnet_train_eval' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION pepnet._train_save(metrics jsonb) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_train_save' LANGUAGE C VOLATILE PARALLEL UNSAFE;
CREATE FUNCTION pepnet._train_end() RETURNS void
	AS 'MODULE_PATHNAME', 'pepnet_train_end' LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Train a model from a query; each epoch commits a new version with its metrics.
-- No SET search_path here: a procedure with SET cannot COMMIT, so every name is qualified.
CREATE PROCEDURE pepnet_train(name text, data text, config jsonb DEFAULT NULL, validation text DEFAULT NULL,
	epochs int DEFAULT 1, batch_size int DEFAULT 512, lr float8 DEFAULT 1e-3, seed int DEFAULT 0,
	shuffle_buffer int DEFAULT 100000, deploy boolean DEFAULT false, patience int DEFAULT NULL,
	progress_interval float8 DEFAULT 10)
LANGUAGE plpgsql AS $$
DECLARE
	ep int;
	stats jsonb;
	val jsonb;
	v int;
	best_v int;
	best_loss float8;
	since_best int := 0;
	vloss float8;
	base text := pg_catalog.split_part(name, '@', 1);
BEGIN
	IF name IS NULL OR data IS NULL THEN
		RAISE EXCEPTION 'pepnet_train needs a model name and a data query, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF epochs IS NULL OR epochs OPERATOR(pg_catalog.<) 1 OR epochs OPERATOR(pg_catalog.>) 100000 THEN
		RAISE EXCEPTION 'epochs must be between 1 and 100000, got %', epochs USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF batch_size IS NULL OR batch_size OPERATOR(pg_catalog.<) 1 OR batch_size OPERATOR(pg_catalog.>) 65536 THEN
		RAISE EXCEPTION 'batch_size must be between 1 and 65536, got %', batch_size USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF lr IS NULL OR NOT (lr OPERATOR(pg_catalog.>) 0 AND lr OPERATOR(pg_catalog.<=) 10) THEN
		RAISE EXCEPTION 'lr must be a number in (0, 10], got %', lr USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF seed IS NULL THEN
		RAISE EXCEPTION 'seed must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF shuffle_buffer IS NULL OR shuffle_buffer OPERATOR(pg_catalog.<) 1 OR shuffle_buffer OPERATOR(pg_catalog.>) 10000000 THEN
		RAISE EXCEPTION 'shuffle_buffer must be between 1 (no shuffling) and 10000000 rows, got %', shuffle_buffer
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF patience IS NOT NULL AND (patience OPERATOR(pg_catalog.<) 1 OR validation IS NULL) THEN
		RAISE EXCEPTION 'patience must be at least 1 and needs a validation query'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	PERFORM pepnet._train_begin(name, config, seed, lr, batch_size);
	FOR ep IN 1 .. epochs LOOP
		stats := pepnet._train_epoch(data, ep, shuffle_buffer, seed, COALESCE(progress_interval, 0));
		stats := stats OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('lr', lr, 'batch_size', batch_size, 'seed', seed);
		IF validation IS NOT NULL THEN
			val := pepnet._train_eval(validation);
			stats := stats OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('validation', val);
			vloss := (val OPERATOR(pg_catalog.->>) 'logloss')::float8;
		END IF;
		v := pepnet._train_save(stats);
		RAISE NOTICE 'pepnet_train "%" epoch %: version %, % rows, train loss %, validation logloss %, auc %',
			base, ep, v, stats OPERATOR(pg_catalog.->>) 'rows',
			pg_catalog.round((stats OPERATOR(pg_catalog.->>) 'train_loss')::numeric, 5),
			COALESCE(pg_catalog.round(vloss::numeric, 5)::text, '-'),
			COALESCE(pg_catalog.round((val OPERATOR(pg_catalog.->>) 'auc')::numeric, 5)::text, '-');
		COMMIT;
		IF best_v IS NULL OR vloss IS NULL OR vloss OPERATOR(pg_catalog.<) best_loss THEN
			best_v := v;
			best_loss := vloss;
			since_best := 0;
		ELSE
			since_best := since_best OPERATOR(pg_catalog.+) 1;
			IF patience IS NOT NULL AND since_best OPERATOR(pg_catalog.>=) patience THEN
				RAISE NOTICE 'pepnet_train "%": validation logloss has not improved for % epochs, stopping', base, patience;
				EXIT;
			END IF;
		END IF;
	END LOOP;
	PERFORM pepnet._train_end();
	IF deploy THEN
		PERFORM @extschema@.pepnet_deploy(base, best_v);
		RAISE NOTICE 'pepnet_train "%": deployed version %', base, best_v;
		COMMIT;
	END IF;
END $$;

-- AUC and logloss of a model on a query, per domain and task; domain NULL = all domains.
CREATE FUNCTION pepnet_evaluate(model text, data text)
	RETURNS TABLE (domain int, task text, rows bigint, auc float8, logloss float8)
	AS 'MODULE_PATHNAME', 'pepnet_evaluate' LANGUAGE C VOLATILE PARALLEL UNSAFE;
