/* pepnet--0.1.0--0.2.0.sql: upgrade from 0.1.0 to 0.2.0.
 *
 * CREATE EXTENSION pepnet runs pepnet--0.2.0.sql, which make generates from a short preamble
 * (pepnet--0.2.0.sql.in), pepnet--0.1.0.sql as shipped and this script, so a fresh 0.2.0
 * database and an upgraded one are built by the same statements.  Every C symbol that pepnet--0.1.0.sql names must stay exported
 * by the library (CREATE FUNCTION checks it), even where this script replaces the function.
 *
 * Sections by topic; each keeps to its own objects.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.2.0'" to load this file. \quit

-- == registry: models, versions, deployments ==

/*
 * Identities: a version is (name, version) and nothing else.  The 0.1.0 surrogate key models.id
 * (an identity column) restarted at 1 after pg_dump/pg_restore and collided between nodes of a
 * logical-replication setup; the backend cache now keys versions by (name, version) and row xmin.
 */
ALTER TABLE pepnet.models DROP COLUMN id;

/*
 * Version numbers are never reused: each name's high-water mark outlives deletes of its versions.
 * A table, so that it survives pg_dump/pg_restore and travels by logical replication.  The
 * trigger below numbers a version inserted without a number (pepnet_create, pepnet_import,
 * pepnet_train) max(last_version + 1, max(version) + 1).  A version inserted with its number
 * (pepnet_import_version copying a version between nodes, a direct INSERT) keeps it and raises
 * the mark.  Rows loaded by COPY (pg_restore) and by logical replication's apply worker (where
 * the trigger does not fire) are taken as they are: their marks come with them.
 * SECURITY DEFINER: roles that may insert versions need no grant on pepnet.model_names.
 */
CREATE TABLE pepnet.model_names (
	name text PRIMARY KEY,
	last_version int NOT NULL,
	CONSTRAINT model_names_last_version_check CHECK (last_version > 0)
);
COMMENT ON TABLE pepnet.model_names IS 'pepnet: the highest version number each model name has had (never reused)';
INSERT INTO pepnet.model_names (name, last_version)
	SELECT m.name, max(m.version) FROM pepnet.models m GROUP BY m.name;
SELECT pg_catalog.pg_extension_config_dump('pepnet.model_names', '');

CREATE FUNCTION pepnet._models_number() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_TABLE_SCHEMA <> 'pepnet' OR TG_TABLE_NAME <> 'models' THEN
		RAISE EXCEPTION 'pepnet._models_number numbers pepnet.models only' USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF current_query() ~* '^\s*COPY\s+("?pepnet"?\s*\.\s*)?"?models\M' THEN
		RETURN NEW;
	END IF;
	IF NEW.version IS NULL THEN
		IF EXISTS (SELECT 1 FROM pepnet.model_names n WHERE n.name = NEW.name AND n.last_version >= 2147483647) THEN
			RAISE EXCEPTION 'model "%" has used every version number up to 2147483647', NEW.name
				USING ERRCODE = 'program_limit_exceeded',
					  DETAIL = 'Version numbers are never reused; a version stored with the highest number (e.g. from a bundle) leaves none after it.',
					  HINT = 'Store new versions under another name.';
		END IF;
		INSERT INTO pepnet.model_names AS n (name, last_version)
			SELECT NEW.name, COALESCE(max(m.version), 0) + 1 FROM pepnet.models m WHERE m.name = NEW.name
			ON CONFLICT ON CONSTRAINT model_names_pkey
			DO UPDATE SET last_version = GREATEST(n.last_version + 1, EXCLUDED.last_version)
			RETURNING n.last_version INTO NEW.version;
		RETURN NEW;
	END IF;
	INSERT INTO pepnet.model_names AS n (name, last_version) VALUES (NEW.name, NEW.version)
		ON CONFLICT ON CONSTRAINT model_names_pkey
		DO UPDATE SET last_version = GREATEST(n.last_version, EXCLUDED.last_version);
	RETURN NEW;
END $$;

CREATE TRIGGER models_number BEFORE INSERT ON pepnet.models
	FOR EACH ROW EXECUTE FUNCTION pepnet._models_number();
REVOKE ALL ON FUNCTION pepnet._models_number() FROM PUBLIC;

/*
 * Deploy history: one row per change of a deployment (pepnet_deploy or direct DML on
 * pepnet.deployments), written by a trigger on pepnet.deployments that records the deploying role
 * and writes as the table's owner (as foreign-key triggers do): deployers need no grant on the
 * history and cannot write or forge it; they may be granted SELECT.  seq counts from 1 per name.
 * Rows loaded by COPY (pg_restore) and by logical replication bring their history with them.
 * from_version NULL: nothing was deployed; to_version NULL: the deployment was deleted.
 */
CREATE TABLE pepnet.deploy_history (
	name text NOT NULL,
	seq int NOT NULL,
	from_version int,
	to_version int,
	strategy text NOT NULL,
	deployed_by text NOT NULL DEFAULT CURRENT_USER,
	deployed_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (name, seq),
	CONSTRAINT deploy_history_seq_check CHECK (seq > 0)
);
COMMENT ON TABLE pepnet.deploy_history IS 'pepnet: who deployed which version of a model when, and what was deployed before';
SELECT pg_catalog.pg_extension_config_dump('pepnet.deploy_history', '');

CREATE FUNCTION pepnet._deploy_log() RETURNS trigger
	AS 'MODULE_PATHNAME', 'pepnet_deploy_log' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

CREATE TRIGGER deployments_log AFTER INSERT OR UPDATE OR DELETE ON pepnet.deployments
	FOR EACH ROW EXECUTE FUNCTION pepnet._deploy_log();

/*
 * The version guard fires in logical replication's apply worker too (ENABLE ALWAYS): there a
 * replicated DELETE of a version that this node has deployed is skipped with a WARNING rather than
 * leave the deployment pointing at nothing (foreign keys are not checked by the apply worker).
 */
CREATE OR REPLACE FUNCTION pepnet._models_guard() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
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
		IF current_setting('session_replication_role') = 'replica' THEN
			RAISE WARNING 'pepnet: kept model "%" version %: it is deployed on this node', OLD.name, OLD.version
				USING DETAIL = 'A replicated DELETE of a deployed version was skipped so that the deployment keeps working.',
					  HINT = 'Deploy another version on the publisher; then delete this version there again or here.';
			RETURN NULL;
		END IF;
		RAISE EXCEPTION 'model "%" version % is deployed and cannot be deleted', OLD.name, OLD.version
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Deploy another version first with pepnet_deploy, or DELETE FROM pepnet.deployments.';
	END IF;
	RETURN OLD;
END $$;
ALTER TABLE pepnet.models ENABLE ALWAYS TRIGGER models_guard;

/*
 * Read-only nodes (pepnet.read_only = on, e.g. logical-replication subscribers): every write to
 * pepnet's tables is refused, except by the logical-replication apply worker (which runs with
 * session_replication_role = replica, where this ordinary trigger does not fire).
 */
CREATE FUNCTION pepnet._read_only_guard() RETURNS trigger
	AS 'MODULE_PATHNAME', 'pepnet_read_only_guard' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE TRIGGER models_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pepnet.models
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._read_only_guard();
CREATE TRIGGER deployments_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pepnet.deployments
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._read_only_guard();
CREATE TRIGGER deploy_history_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pepnet.deploy_history
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._read_only_guard();
CREATE TRIGGER model_names_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pepnet.model_names
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._read_only_guard();

/*
 * DROP EXTENSION pepnet (and DROP SCHEMA ... CASCADE of its schema) would delete every stored
 * version: refused while versions exist, unless pepnet.allow_drop = on.
 */
CREATE FUNCTION pepnet._drop_guard() RETURNS event_trigger
	AS 'MODULE_PATHNAME', 'pepnet_drop_guard' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE EVENT TRIGGER pepnet_drop_guard ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA')
	EXECUTE FUNCTION pepnet._drop_guard();

-- Set a deployment and log it with its strategy (the deploy_history trigger reads the label).
CREATE FUNCTION pepnet._deploy(name text, version int, strategy text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM set_config('pepnet.deploy_strategy', _deploy.strategy, true);
	INSERT INTO pepnet.deployments AS d (name, version)
		VALUES (_deploy.name, _deploy.version)
		ON CONFLICT ON CONSTRAINT deployments_pkey DO UPDATE SET version = EXCLUDED.version, deployed_at = now()
		WHERE d.version IS DISTINCT FROM EXCLUDED.version;
	PERFORM set_config('pepnet.deploy_strategy', '', true);
END $$;

-- Make version the one a bare name refers to, for every session once committed (docs/api.md).
CREATE OR REPLACE FUNCTION pepnet_deploy(name text, version int) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	latest int;
BEGIN
	PERFORM pepnet._require_writable('pepnet_deploy');
	IF pepnet_deploy.name IS NULL OR pepnet_deploy.version IS NULL THEN
		RAISE EXCEPTION 'pepnet_deploy needs a model name and a version, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF strpos(pepnet_deploy.name, '@') > 0 THEN
		RAISE EXCEPTION 'pepnet_deploy takes a model name, not the reference "%"', pepnet_deploy.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Name the version separately: pepnet_deploy(%L, %s).', split_part(pepnet_deploy.name, '@', 1),
								pepnet_deploy.version);
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
	PERFORM pepnet._deploy(pepnet_deploy.name, pepnet_deploy.version, 'version');
END $$;

/*
 * Deploy by strategy; returns the version deployed.
 *   'latest'    the highest version
 *   'best'      the best validation metric in metrics->'validation', as pepnet_train's
 *               selection: 'logloss' (lowest wins, the default), 'auc' (highest), 'pcoc'
 *               (closest to 1), of the first task or of 'metric:task'; ties: the higher version
 *   'previous'  rollback: the version deployed before the current one (deploy_history);
 *               a second 'previous' goes back again to the one rolled back from
 *   '7'         a version number, as pepnet_deploy(name, 7)
 */
CREATE FUNCTION pepnet_deploy(name text, strategy text, metric text DEFAULT 'logloss') RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v int;
	cur int;
	s text := lower(btrim(pepnet_deploy.strategy));
	mname text;
	task text;
BEGIN
	PERFORM pepnet._require_writable('pepnet_deploy');
	IF pepnet_deploy.name IS NULL OR pepnet_deploy.strategy IS NULL THEN
		RAISE EXCEPTION 'pepnet_deploy needs a model name and a version, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF strpos(pepnet_deploy.name, '@') > 0 THEN
		RAISE EXCEPTION 'pepnet_deploy takes a model name, not the reference "%"', pepnet_deploy.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Name the version separately: pepnet_deploy(%L, %s).', split_part(pepnet_deploy.name, '@', 1),
								COALESCE(NULLIF(split_part(pepnet_deploy.name, '@', 2), ''), 'version'));
	END IF;
	IF s ~ '^[0-9]{1,9}$' THEN
		PERFORM @extschema@.pepnet_deploy(pepnet_deploy.name, s::int);
		RETURN s::int;
	END IF;
	IF s NOT IN ('latest', 'best', 'previous') THEN
		RAISE EXCEPTION 'unknown deploy strategy "%"', pepnet_deploy.strategy
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use ''latest'', ''best'' (best validation metric), ''previous'' (rollback) or a version number.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pepnet.models m WHERE m.name = pepnet_deploy.name) THEN
		RAISE EXCEPTION 'model "%" does not exist', pepnet_deploy.name
			USING ERRCODE = 'undefined_object',
				  HINT = 'Create it with pepnet_create, pepnet_import or pepnet_train; see pepnet.models.';
	END IF;
	SELECT d.version INTO cur FROM pepnet.deployments d WHERE d.name = pepnet_deploy.name FOR UPDATE;
	IF s = 'latest' THEN
		SELECT max(m.version) INTO v FROM pepnet.models m WHERE m.name = pepnet_deploy.name;
	ELSIF s = 'best' THEN
		IF metric IS NULL THEN
			RAISE EXCEPTION 'deploy strategy ''best'' needs a validation metric, not NULL'
				USING ERRCODE = 'null_value_not_allowed',
					  HINT = 'Use ''logloss'' (the default), ''auc'' or ''pcoc'', optionally followed by :task.';
		END IF;
		mname := split_part(metric, ':', 1);
		task := NULLIF(split_part(metric, ':', 2), '');
		IF metric ~ ':' AND (task IS NULL OR split_part(metric, ':', 3) <> '') THEN
			RAISE EXCEPTION 'validation metric "%" names no task, or more than one', metric
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Write metric:task, e.g. ''auc:click'', or the metric alone for the first task.';
		END IF;
		IF task IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pepnet.models m
											WHERE m.name = pepnet_deploy.name
											  AND (m.config -> 'tasks' ? task OR m.metrics -> 'validation' -> 'tasks' ? task)) THEN
			RAISE EXCEPTION 'model "%" has no task "%"', pepnet_deploy.name, task
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = format('Its tasks: %s.', (SELECT string_agg(DISTINCT t, ', ') FROM pepnet.models m,
													   jsonb_array_elements_text(m.config -> 'tasks') t
													   WHERE m.name = pepnet_deploy.name));
		END IF;
		IF mname NOT IN ('logloss', 'auc', 'pcoc') THEN
			RAISE EXCEPTION 'unknown validation metric "%" for deploy strategy ''best''', metric
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use ''logloss'' (lowest wins), ''auc'' (highest wins) or ''pcoc'' (closest to 1 wins), optionally followed by :task, as pepnet_train''s selection.';
		END IF;
		SELECT x.version INTO v
		FROM (SELECT m.version,
					 CASE WHEN task IS NULL THEN m.metrics -> 'validation' -> mname
						  ELSE m.metrics -> 'validation' -> 'tasks' -> task -> mname END AS fig
			  FROM pepnet.models m WHERE m.name = pepnet_deploy.name) x
		WHERE jsonb_typeof(x.fig) = 'number'
		ORDER BY CASE mname WHEN 'auc' THEN -(x.fig::text::float8)
							WHEN 'pcoc' THEN CASE WHEN x.fig::text::float8 > 0 THEN abs(ln(x.fig::text::float8)) ELSE 'Infinity' END  -- |ln PCOC|, as pepnet_train's selection
							ELSE x.fig::text::float8 END,
				 x.version DESC
		LIMIT 1;
		IF v IS NULL THEN
			RAISE EXCEPTION 'no version of model "%" has a validation %', pepnet_deploy.name,
				mname || CASE WHEN task IS NULL THEN '' ELSE format(' of task "%s"', task) END
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Train with a validation query (CALL pepnet_train(..., validation => ...)), or deploy a version by number.';
		END IF;
	ELSE
		IF cur IS NULL THEN
			RAISE EXCEPTION 'model "%" is not deployed: there is nothing to roll back', pepnet_deploy.name
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Deploy a version by number or with ''latest'' or ''best''.';
		END IF;
		SELECT h.from_version INTO v FROM pepnet.deploy_history h
		WHERE h.name = pepnet_deploy.name AND h.to_version = cur
		ORDER BY h.seq DESC LIMIT 1;
		IF v IS NULL THEN
			RAISE EXCEPTION 'model "%" has no previous deployment to roll back to', pepnet_deploy.name
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format('Version %s was deployed first; see pepnet.deploy_history.', cur),
					  HINT = 'Deploy a version by number.';
		END IF;
		IF NOT EXISTS (SELECT 1 FROM pepnet.models m WHERE m.name = pepnet_deploy.name AND m.version = v) THEN
			RAISE EXCEPTION 'cannot roll back model "%" to version %: it has been deleted', pepnet_deploy.name, v
				USING ERRCODE = 'undefined_object',
					  HINT = 'Deploy a version by number; see pepnet.models and pepnet.deploy_history.';
		END IF;
	END IF;
	PERFORM pepnet._deploy(pepnet_deploy.name, v, s);
	RETURN v;
END $$;

-- == training and calibration ==

-- Adam's state (step count, epochs of the lineage, first and second moments as safetensors with
-- the model's tensor names) of each version that pepnet_train stored, so that training continued from a version
-- resumes the optimiser.  Scoring never reads this table; it goes with its version.
CREATE TABLE pepnet.optimizer_state (
	name text NOT NULL,
	version int NOT NULL,
	steps bigint NOT NULL,
	epochs int NOT NULL,
	adam_m bytea NOT NULL,
	adam_v bytea NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (name, version),
	FOREIGN KEY (name, version) REFERENCES pepnet.models (name, version) ON DELETE CASCADE
);
ALTER TABLE pepnet.optimizer_state ALTER COLUMN adam_m SET STORAGE EXTERNAL;
ALTER TABLE pepnet.optimizer_state ALTER COLUMN adam_v SET STORAGE EXTERNAL;
COMMENT ON TABLE pepnet.optimizer_state IS 'pepnet: Adam state stored with each trained version (resumed by pepnet_train)';
SELECT pg_catalog.pg_extension_config_dump('pepnet.optimizer_state', '');

-- Checks the data and validation queries before any work, sets the learning-rate schedule, the
-- negative down-sampling rate and the selection figure, resumes Adam.
CREATE FUNCTION pepnet._train_setup(data text, validation text, lr_schedule jsonb, negative_rate float8[],
	selection text) RETURNS jsonb
	AS 'MODULE_PATHNAME', 'pepnet_train_setup' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- pepnet_train gains selection, lr_schedule and negative_rate (after the 0.1.0 arguments).
DROP PROCEDURE pepnet_train(text, text, jsonb, text, int, int, float8, int, int, boolean, int, float8);
-- No SET search_path here: a procedure with SET cannot COMMIT, so every name is qualified.
CREATE PROCEDURE pepnet_train(name text, data text, config jsonb DEFAULT NULL, validation text DEFAULT NULL,
	epochs int DEFAULT 1, batch_size int DEFAULT 512, lr float8 DEFAULT 1e-3, seed int DEFAULT 0,
	shuffle_buffer int DEFAULT 100000, deploy boolean DEFAULT false, patience int DEFAULT NULL,
	progress_interval float8 DEFAULT 10, selection text DEFAULT 'logloss', lr_schedule jsonb DEFAULT NULL,
	negative_rate float8[] DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
	ep int;
	stats jsonb;
	val jsonb;
	setup jsonb;
	v int;
	best_v int;
	best float8;
	since_best int := 0;
	fig float8;
	better boolean;
	metric text;
	task text;
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

	-- refuses a transaction block before anything else
	PERFORM pepnet._train_begin(name, config, seed, lr, batch_size); PERFORM pepnet._progress_plan(epochs);
	IF deploy AND NOT (pg_catalog.has_table_privilege('pepnet.deployments', 'INSERT') AND pg_catalog.has_table_privilege('pepnet.deployments', 'UPDATE')) THEN RAISE EXCEPTION 'permission denied to deploy model "%": deploy => true needs INSERT and UPDATE on pepnet.deployments', pg_catalog.split_part(name, '@', 1) USING ERRCODE = 'insufficient_privilege', HINT = 'Train without deploy => true and let a role with the deployer grants run pepnet_deploy, or GRANT INSERT, UPDATE ON pepnet.deployments.'; END IF;  -- checked before any work, like the rights to store versions; then every query column (and that the validation query has rows) before the first epoch
	setup := pepnet._train_setup(data, validation, lr_schedule, negative_rate, selection);
	metric := setup OPERATOR(pg_catalog.#>>) '{selection,metric}';
	task := setup OPERATOR(pg_catalog.#>>) '{selection,task}';
	FOR ep IN 1 .. epochs LOOP
		stats := pepnet._train_epoch(data, ep, shuffle_buffer, seed, COALESCE(progress_interval, 0));
		stats := stats OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('lr', lr, 'batch_size', batch_size,
			'seed', seed, 'data', data, 'shuffle_buffer', shuffle_buffer, 'lr_schedule', lr_schedule,
			'resumed_steps', setup OPERATOR(pg_catalog.->) 'resumed_steps', 'selection', setup OPERATOR(pg_catalog.->) 'selection');
		fig := NULL;
		IF validation IS NOT NULL THEN
			val := pepnet._train_eval(validation);
			stats := stats OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('validation', val, 'validation_query', validation);
			fig := (val OPERATOR(pg_catalog.->) 'tasks' OPERATOR(pg_catalog.->) task OPERATOR(pg_catalog.->>) metric)::float8;
			IF metric OPERATOR(pg_catalog.=) 'pcoc' THEN
				fig := pg_catalog.abs(pg_catalog.ln(fig));   -- distance from 1, in either direction
			END IF;
		END IF;
		v := pepnet._train_save(stats);
		RAISE NOTICE 'pepnet_train "%" epoch %: version %, % rows, train loss %, validation logloss %, auc %, pcoc %',
			base, ep, v, stats OPERATOR(pg_catalog.->>) 'rows',
			pg_catalog.round((stats OPERATOR(pg_catalog.->>) 'train_loss')::numeric, 5),
			COALESCE(pg_catalog.round((val OPERATOR(pg_catalog.->>) 'logloss')::numeric, 5)::text, '-'),
			COALESCE(pg_catalog.round((val OPERATOR(pg_catalog.->>) 'auc')::numeric, 5)::text, '-'),
			COALESCE(pg_catalog.round((val OPERATOR(pg_catalog.->>) 'pcoc')::numeric, 3)::text, '-');
		COMMIT;
		-- the selection figure: logloss lowest, auc highest, pcoc closest to 1 (NULL never wins)
		better := best_v IS NULL OR (fig IS NOT NULL AND (best IS NULL OR
			CASE WHEN metric OPERATOR(pg_catalog.=) 'auc' THEN fig OPERATOR(pg_catalog.>) best
			     ELSE fig OPERATOR(pg_catalog.<) best END));
		IF validation IS NULL OR better THEN
			best_v := v;
			best := fig;
			since_best := 0;
		ELSE
			since_best := since_best OPERATOR(pg_catalog.+) 1;
			IF patience IS NOT NULL AND since_best OPERATOR(pg_catalog.>=) patience THEN
				RAISE NOTICE 'pepnet_train "%": validation % of task "%" has not improved for % epochs, stopping',
					base, metric, task, patience;
				EXIT;
			END IF;
		END IF;
	END LOOP;
	PERFORM pepnet._train_end();
	IF deploy THEN
		PERFORM @extschema@.pepnet_deploy(base, best_v);
		RAISE NOTICE 'pepnet_train "%": deployed version % (best validation % of task "%")', base, best_v,
			COALESCE(metric, '-'), COALESCE(task, '-');
		COMMIT;
	END IF;
END $$;

-- pepnet_evaluate gains calibration columns after the five of 0.1.0: mean predicted probability,
-- actual rate (mean label) and their ratio PCOC (NULL where the actual rate is 0).
DROP FUNCTION pepnet_evaluate(text, text);
CREATE FUNCTION pepnet_evaluate(model text, data text)
	RETURNS TABLE (domain int, task text, rows bigint, auc float8, logloss float8,
	               mean_p float8, actual float8, pcoc float8)
	AS 'MODULE_PATHNAME', 'pepnet_evaluate' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- == scoring ==

-- persona may be NULL or omitted (named arguments) for a model without persona fields
CREATE OR REPLACE FUNCTION pepnet_score(model text, domain int, persona bigint[] DEFAULT NULL,
										features bigint[] DEFAULT NULL, dense real[] DEFAULT NULL)
	RETURNS TABLE (idx int, score float8, scores float8[])
	AS 'MODULE_PATHNAME', 'pepnet_score' LANGUAGE C STABLE PARALLEL SAFE ROWS 100;

CREATE OR REPLACE FUNCTION pepnet_predict(model text, domain int, persona bigint[] DEFAULT NULL,
										  features bigint[] DEFAULT NULL, dense real[] DEFAULT NULL)
	RETURNS float8
	AS 'MODULE_PATHNAME', 'pepnet_predict' LANGUAGE C STABLE PARALLEL SAFE COST 1000;

-- Score every row of a data query (columns domain, persona, features, dense as for training; every
-- other column is a key passed through), read through a cursor in blocks and scored per
-- (domain, persona) group with the batched engine.  Results: the keys, then score and scores;
-- the caller's column definition list names them, e.g.
--   SELECT * FROM pepnet_score_query('ctr', 'SELECT item, domain, persona, features FROM c')
--     AS t(item bigint, score float8, scores float8[]);
CREATE FUNCTION pepnet_score_query(model text, data text)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'pepnet_score_query' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE ROWS 1000;

-- == scaling out ==

-- Writers refuse at once on a hot standby or in a read-only transaction (25006), before any
-- work.  The C writers (pepnet_create, pepnet_import, pepnet_train via pepnet._train_begin,
-- pepnet_import_version) call the same check in C.
CREATE FUNCTION pepnet._require_writable(what text) RETURNS void
	AS 'MODULE_PATHNAME', 'pepnet_require_writable_sql' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL SAFE;

-- pepnet_deploy (both forms, registry section) calls pepnet._require_writable first.

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
CREATE FUNCTION pepnet_pinned_recv(internal) RETURNS pepnet_pinned
	AS 'MODULE_PATHNAME', 'pepnet_pinned_recv' LANGUAGE C STABLE STRICT PARALLEL SAFE;
CREATE FUNCTION pepnet_pinned_send(pepnet_pinned) RETURNS bytea
	AS 'MODULE_PATHNAME', 'pepnet_pinned_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE TYPE pepnet_pinned (
	INPUT = pepnet_pinned_in, OUTPUT = pepnet_pinned_out,
	RECEIVE = pepnet_pinned_recv, SEND = pepnet_pinned_send,
	INTERNALLENGTH = VARIABLE, ALIGNMENT = int4, STORAGE = plain
);
COMMENT ON TYPE pepnet_pinned IS 'pepnet: a model version pinned by name, number and fingerprint (''ctr@3#<hex>'')';

-- The version a reference names now ('ctr': deployed, else latest; 'ctr@3'), pinned.
CREATE FUNCTION pepnet_pin(model text) RETURNS pepnet_pinned
	AS 'MODULE_PATHNAME', 'pepnet_pin' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;

-- Scoring a pinned version: IMMUTABLE (its scores never change), so postgres_fdw can ship it to
-- shards; refuses on a node whose version has another fingerprint.
-- (arguments as the text form's: persona may be omitted for a model without persona fields)
CREATE FUNCTION pepnet_predict(model pepnet_pinned, domain int, persona bigint[] DEFAULT NULL,
							   features bigint[] DEFAULT NULL, dense real[] DEFAULT NULL)
	RETURNS float8
	AS 'MODULE_PATHNAME', 'pepnet_pinned_predict' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1000;

-- Copy a version between nodes keeping name, version, parent, metrics, created_at and
-- fingerprint: a bundle ('PEPNETV1', header length, JSON header, weights).
CREATE FUNCTION pepnet_export_version(model text) RETURNS bytea
	AS 'MODULE_PATHNAME', 'pepnet_export_version' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE;
CREATE FUNCTION pepnet_import_version(bundle bytea) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_import_version' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- == shared memory ==
-- With shared_preload_libraries = 'pepnet': one copy per server of each version in use (weights
-- and fused per-domain matrices) and the progress of running trainings.  Without preload the
-- functions below work and return no rows (pepnet_preload: false); scoring uses the backend cache.

-- Versions in the shared cache of this database: state 'building' or 'ready', bytes of shared
-- memory, domains whose fused matrices are shared, pins (transactions using it now), hits (pins
-- since built), built_at, last_used, the pid building it.
CREATE FUNCTION pepnet_shared_cache(OUT model text, OUT version int, OUT state text, OUT bytes bigint,
	OUT domains int, OUT pins int, OUT hits bigint, OUT built_at timestamptz, OUT last_used timestamptz,
	OUT builder_pid int)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'pepnet_shared_cache' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
CREATE VIEW pepnet.shared_cache AS SELECT * FROM pepnet_shared_cache();
COMMENT ON VIEW pepnet.shared_cache IS 'pepnet: model versions in the shared cache (shared_preload_libraries = ''pepnet'')';

-- Server-wide figures: whether the shared cache is on, its limit and use in bytes, versions held,
-- versions built into it, evicted, and versions or domains that did not fit (cached per backend).
CREATE FUNCTION pepnet_shared_cache_stats(OUT enabled boolean, OUT size_limit bigint, OUT used bigint,
	OUT versions int, OUT builds bigint, OUT evictions bigint, OUT fallbacks bigint)
	AS 'MODULE_PATHNAME', 'pepnet_shared_cache_stats' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;

-- Load a version ('ctr' = deployed, 'ctr@7') into the shared cache with every domain's fused
-- matrices, ahead of traffic; true when shared, false (NOTICE says why) when only this backend has it.
CREATE FUNCTION pepnet_preload(model text) RETURNS boolean
	AS 'MODULE_PATHNAME', 'pepnet_preload' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- Running trainings (CALL pepnet_train) of the server, one row each: backend pid, database,
-- model, version trained from, epoch of epochs, rows of this epoch done and of one epoch (known
-- after the first), rows over all epochs, rows/s of this epoch, mean training loss of this
-- epoch so far, validation logloss and AUC after the last epoch, started_at, updated_at, and an
-- ETA (from this epoch's rate, once an epoch's size is known).  Other roles' trainings show pid
-- and database only, unless the caller has pg_read_all_stats.
CREATE FUNCTION pepnet_training_progress(OUT pid int, OUT datid oid, OUT model text, OUT parent int,
	OUT epoch int, OUT epochs int, OUT rows_done bigint, OUT epoch_rows bigint, OUT rows_total bigint,
	OUT rows_per_s float8, OUT loss float8, OUT val_logloss float8, OUT val_auc float8,
	OUT started_at timestamptz, OUT updated_at timestamptz, OUT eta timestamptz)
	RETURNS SETOF record
	AS 'MODULE_PATHNAME', 'pepnet_training_progress' LANGUAGE C VOLATILE STRICT PARALLEL RESTRICTED;
CREATE VIEW pepnet.training_progress AS SELECT * FROM pepnet_training_progress();
COMMENT ON VIEW pepnet.training_progress IS 'pepnet: running trainings and their progress (shared_preload_libraries = ''pepnet'')';
GRANT SELECT ON pepnet.shared_cache, pepnet.training_progress TO PUBLIC;

CREATE FUNCTION pepnet._progress_plan(epochs int) RETURNS void
	AS 'MODULE_PATHNAME', 'pepnet_progress_plan_sql' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- == chunked storage ==

/*
 * A version's weights (safetensors) are stored as rows of pepnet.model_chunks, each at most
 * pepnet.chunk_size bytes (default 64 MB), so that a model may exceed the 1 GB of one bytea value.
 * pepnet.models.weights stays NULL for them (pepnet's functions still read a version whose
 * weights column is not NULL, e.g. inserted directly); weights_size gives the stored size.
 * Chunks are immutable: written in the transaction that inserts their version, deleted only
 * with it (ON DELETE CASCADE, after the version guard).  pepnet's functions read and write
 * them as the owner of pepnet.models, so a role's access is decided on pepnet.models alone.
 */
CREATE TABLE pepnet.model_chunks (
	name text NOT NULL,
	version int NOT NULL,
	seq int NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (name, version, seq),
	FOREIGN KEY (name, version) REFERENCES pepnet.models (name, version) ON DELETE CASCADE,
	CONSTRAINT model_chunks_seq_check CHECK (seq >= 0),
	CONSTRAINT model_chunks_data_check CHECK (length(data) > 0)
);
-- weights are incompressible floats: out of line, uncompressed
ALTER TABLE pepnet.model_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE pepnet.model_chunks IS 'pepnet: the weights (safetensors) of each version, in chunks numbered from 0';
SELECT pg_catalog.pg_extension_config_dump('pepnet.model_chunks', '');

-- pepnet.chunk_size in bytes
CREATE FUNCTION pepnet._chunk_size() RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_chunk_size_bytes' LANGUAGE C STABLE STRICT PARALLEL SAFE;

/*
 * The fingerprint becomes a plain column, computed by pepnet's writers while they write the
 * chunks (the same SHA-256 of config and weights as before: pinned references made before the
 * update still match), and by the trigger below for a row inserted with its weights in the
 * weights column.  It keeps its values (DROP EXPRESSION).
 */
ALTER TABLE pepnet.models ALTER COLUMN fingerprint DROP EXPRESSION;
ALTER TABLE pepnet.models ALTER COLUMN weights DROP NOT NULL;
ALTER TABLE pepnet.models ADD COLUMN weights_size bigint;
COMMENT ON COLUMN pepnet.models.weights IS 'safetensors weights stored inline (NULL: in pepnet.model_chunks)';
COMMENT ON COLUMN pepnet.models.weights_size IS 'bytes of the weights (safetensors), inline or in pepnet.model_chunks';

CREATE FUNCTION pepnet._models_fingerprint() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NEW.weights IS NOT NULL THEN
		NEW.fingerprint := pepnet._fingerprint(NEW.config, NEW.weights);
		NEW.weights_size := length(NEW.weights);
	ELSIF NEW.fingerprint IS NULL OR NEW.weights_size IS NULL THEN
		RAISE EXCEPTION 'model "%" version % has neither weights nor the fingerprint and weights_size of its chunks', NEW.name, NEW.version
			USING ERRCODE = 'not_null_violation',
				  HINT = 'Create versions with pepnet_create, pepnet_import or pepnet_import_chunks; a row copied from another node keeps its fingerprint and weights_size.';
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER models_fingerprint BEFORE INSERT ON pepnet.models
	FOR EACH ROW EXECUTE FUNCTION pepnet._models_fingerprint();

-- the version guard also keeps fingerprint and weights_size
CREATE OR REPLACE FUNCTION pepnet._models_guard() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_OP = 'UPDATE' THEN
		IF NEW.name IS DISTINCT FROM OLD.name OR NEW.version IS DISTINCT FROM OLD.version THEN
			RAISE EXCEPTION 'model versions cannot be renamed or renumbered'
				USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
		IF NEW.config IS DISTINCT FROM OLD.config OR NEW.weights IS DISTINCT FROM OLD.weights OR NEW.fingerprint IS DISTINCT FROM OLD.fingerprint OR NEW.weights_size IS DISTINCT FROM OLD.weights_size THEN
			RAISE EXCEPTION 'model "%" version % is immutable: its config and weights cannot change', OLD.name, OLD.version
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Create a new version with pepnet_import, pepnet_create or pepnet_train.';
		END IF;
		RETURN NEW;
	END IF;
	IF EXISTS (SELECT 1 FROM pepnet.deployments d WHERE d.name = OLD.name AND d.version = OLD.version) THEN
		IF current_setting('session_replication_role') = 'replica' THEN
			RAISE WARNING 'pepnet: kept model "%" version %: it is deployed on this node', OLD.name, OLD.version
				USING DETAIL = 'A replicated DELETE of a deployed version was skipped so that the deployment keeps working.',
					  HINT = 'Deploy another version on the publisher; then delete this version there again or here.';
			RETURN NULL;
		END IF;
		RAISE EXCEPTION 'model "%" version % is deployed and cannot be deleted', OLD.name, OLD.version
			USING ERRCODE = 'dependent_objects_still_exist',
				  HINT = 'Deploy another version first with pepnet_deploy, or DELETE FROM pepnet.deployments.';
	END IF;
	RETURN OLD;
END $$;

-- chunks: immutable, written with their version, deleted only with it (src/chunks.c)
CREATE FUNCTION pepnet._chunks_guard() RETURNS trigger
	AS 'MODULE_PATHNAME', 'pepnet_chunks_guard' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE TRIGGER model_chunks_guard BEFORE INSERT OR UPDATE OR DELETE ON pepnet.model_chunks
	FOR EACH ROW EXECUTE FUNCTION pepnet._chunks_guard();
CREATE TRIGGER model_chunks_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pepnet.model_chunks
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._read_only_guard();
-- (TRUNCATE of the chunk tables: refused by that trigger unless pepnet.allow_drop, as for the registry's tables)

/*
 * Migration: the weights of every stored version move into chunks of pepnet.chunk_size
 * (substring of an uncompressed out-of-line value reads only its slice); their bytes, and so
 * pepnet_export and the fingerprint, do not change.  The guards are off meanwhile (this is the
 * one update of weights the extension makes).
 */
ALTER TABLE pepnet.models DISABLE TRIGGER models_guard;
ALTER TABLE pepnet.models DISABLE TRIGGER models_read_only;
ALTER TABLE pepnet.model_chunks DISABLE TRIGGER model_chunks_guard;
ALTER TABLE pepnet.model_chunks DISABLE TRIGGER model_chunks_read_only;
INSERT INTO pepnet.model_chunks (name, version, seq, data)
	SELECT m.name, m.version, s.seq, substring(m.weights FROM (s.seq::bigint * c.size + 1)::int FOR c.size)
	FROM pepnet.models m, (SELECT pepnet._chunk_size() AS size) c,
		 LATERAL generate_series(0, (length(m.weights) - 1) / c.size) AS s(seq)
	WHERE m.weights IS NOT NULL AND length(m.weights) > 0;
UPDATE pepnet.models SET weights_size = length(weights), weights = NULL WHERE weights IS NOT NULL;
ALTER TABLE pepnet.models ENABLE ALWAYS TRIGGER models_guard;
ALTER TABLE pepnet.models ENABLE TRIGGER models_read_only;
-- in the apply worker too: the chunks of a deployed version whose replicated DELETE was skipped stay
ALTER TABLE pepnet.model_chunks ENABLE ALWAYS TRIGGER model_chunks_guard;
ALTER TABLE pepnet.model_chunks ENABLE TRIGGER model_chunks_read_only;

/*
 * Adam's moments of a trained version in chunks too (pepnet.optimizer_state.adam_m / adam_v NULL):
 * written by pepnet_train after the version's row of pepnet.optimizer_state, read when training
 * continues from it, deleted with it; as the owner of pepnet.models, like the weights' chunks.
 * (pepnet.optimizer_state is created empty by this script: nothing to migrate.)
 */
ALTER TABLE pepnet.optimizer_state ALTER COLUMN adam_m DROP NOT NULL;
ALTER TABLE pepnet.optimizer_state ALTER COLUMN adam_v DROP NOT NULL;
CREATE TABLE pepnet.optimizer_chunks (
	name text NOT NULL,
	version int NOT NULL,
	moment smallint NOT NULL,
	seq int NOT NULL,
	data bytea NOT NULL,
	PRIMARY KEY (name, version, moment, seq),
	FOREIGN KEY (name, version) REFERENCES pepnet.optimizer_state (name, version) ON DELETE CASCADE,
	CONSTRAINT optimizer_chunks_moment_check CHECK (moment IN (1, 2)),
	CONSTRAINT optimizer_chunks_seq_check CHECK (seq >= 0)
);
ALTER TABLE pepnet.optimizer_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
COMMENT ON TABLE pepnet.optimizer_chunks IS 'pepnet: Adam''s first (moment 1) and second (2) moments of each trained version, safetensors in chunks';
SELECT pg_catalog.pg_extension_config_dump('pepnet.optimizer_chunks', '');
CREATE TRIGGER optimizer_chunks_read_only BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON pepnet.optimizer_chunks
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._read_only_guard();

-- Moving versions of any size (docs/api.md): in chunks as rows, or through a server file.
CREATE FUNCTION pepnet_export_chunks(model text) RETURNS TABLE (seq int, data bytea)
	AS 'MODULE_PATHNAME', 'pepnet_export_chunks' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE ROWS 16;
CREATE FUNCTION pepnet_import_chunks(name text, config jsonb, query text) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_import_chunks' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
-- server files: the functions check pg_read_server_files / pg_write_server_files themselves
CREATE FUNCTION pepnet_import_file(name text, config jsonb, path text) RETURNS int
	AS 'MODULE_PATHNAME', 'pepnet_import_file' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
CREATE FUNCTION pepnet_export_file(model text, path text) RETURNS bigint
	AS 'MODULE_PATHNAME', 'pepnet_export_file' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- Whether a version's stored fingerprint matches its stored config and weights, recomputed chunk by
-- chunk: the check for versions whose rows were copied by hand (the fingerprint is copied, not
-- recomputed, by INSERT ... SELECT).
CREATE FUNCTION pepnet_verify(model text) RETURNS boolean
	AS 'MODULE_PATHNAME', 'pepnet_verify' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL RESTRICTED;
