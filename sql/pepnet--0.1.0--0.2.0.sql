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
	PERFORM pepnet._train_begin(name, config, seed, lr, batch_size);
	-- every query column checked (and the validation query has rows) before the first epoch
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

-- == scaling out ==
