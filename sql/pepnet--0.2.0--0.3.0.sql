/*
 * pepnet--0.2.0--0.3.0.sql: ALTER EXTENSION pepnet UPDATE from 0.2.0 to 0.3.0.
 *
 * Also the tail of CREATE EXTENSION's 0.3.0 script (sql/pepnet--0.3.0.sql is the preamble, the
 * 0.1.0 script and both upgrades), so a fresh 0.3.0 database and an upgraded one are the same.
 * Stored versions keep their weights, configs and scores bit for bit.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.3.0'" to load this file. \quit

/*
 * Issue 15, SQLSTATEs as docs/api.md gives them: a deploy whose version is deleted by a
 * concurrent transaction between the deploy's check and its write gets 42704 (the version does
 * not exist), not the foreign key's 23503.
 */
CREATE OR REPLACE FUNCTION pepnet._deploy(name text, version int, strategy text) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM set_config('pepnet.deploy_strategy', _deploy.strategy, true);
	BEGIN
		INSERT INTO pepnet.deployments AS d (name, version)
			VALUES (_deploy.name, _deploy.version)
			ON CONFLICT ON CONSTRAINT deployments_pkey DO UPDATE SET version = EXCLUDED.version, deployed_at = now()
			WHERE d.version IS DISTINCT FROM EXCLUDED.version;
	EXCEPTION WHEN foreign_key_violation THEN
		RAISE EXCEPTION 'model "%" has no version %', _deploy.name, _deploy.version
			USING ERRCODE = 'undefined_object',
				  DETAIL = 'The version was deleted by a concurrent transaction while it was being deployed.',
				  HINT = 'Deploy another version; see pepnet.models.';
	END;
	PERFORM set_config('pepnet.deploy_strategy', '', true);
END $$;

/*
 * Issue 15, deploy strategy 'best' ranks only comparable versions: validation figures of versions
 * validated on different data (another validation query, or the same query over other rows) are
 * not compared; the versions validated as the newest one was are ranked, the others are named in
 * a NOTICE.
 */
CREATE OR REPLACE FUNCTION pepnet_deploy(name text, strategy text, metric text DEFAULT 'logloss') RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v int;
	cur int;
	s text := lower(btrim(pepnet_deploy.strategy));
	mname text;
	task text;
	newest int;
	nq jsonb;
	nr jsonb;
	na jsonb;
	nh jsonb;
	skipped text;
BEGIN
	PERFORM pepnet._require_writable('pepnet_deploy');
	IF pepnet_deploy.name IS NULL OR pepnet_deploy.strategy IS NULL THEN
		RAISE EXCEPTION 'pepnet_deploy needs a model name and a version, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF char_length(pepnet_deploy.name) > 63 THEN
		RAISE EXCEPTION 'model name "%" is longer than 63 characters', left(pepnet_deploy.name, 20) || '...'
			USING ERRCODE = 'name_too_long';
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
		/*
		 * Figures are comparable only on the same validation data: the candidates are the versions
		 * validated as the newest version with the metric was (same validation query, same number
		 * of rows, same actual rate of the first task, and the same data_hash of the rows where
		 * both have one: versions trained since 0.3.0); the others are skipped, with a NOTICE.
		 */
		SELECT x.version, x.q, x.r, x.a, x.h INTO newest, nq, nr, na, nh
		FROM (SELECT m.version,
					 CASE WHEN task IS NULL THEN m.metrics -> 'validation' -> mname
						  ELSE m.metrics -> 'validation' -> 'tasks' -> task -> mname END AS fig,
					 m.metrics -> 'validation_query' AS q, m.metrics -> 'validation' -> 'rows' AS r,
					 m.metrics -> 'validation' -> 'actual' AS a, m.metrics -> 'validation' -> 'data_hash' AS h
			  FROM pepnet.models m WHERE m.name = pepnet_deploy.name) x
		WHERE jsonb_typeof(x.fig) = 'number' ORDER BY x.version DESC LIMIT 1;
		SELECT string_agg(x.version::text, ', ' ORDER BY x.version) INTO skipped
		FROM (SELECT m.version,
					 CASE WHEN task IS NULL THEN m.metrics -> 'validation' -> mname
						  ELSE m.metrics -> 'validation' -> 'tasks' -> task -> mname END AS fig,
					 m.metrics -> 'validation_query' AS q, m.metrics -> 'validation' -> 'rows' AS r,
					 m.metrics -> 'validation' -> 'actual' AS a, m.metrics -> 'validation' -> 'data_hash' AS h
			  FROM pepnet.models m WHERE m.name = pepnet_deploy.name) x
		WHERE jsonb_typeof(x.fig) = 'number'
		  AND NOT (ROW(x.q, x.r, x.a) IS NOT DISTINCT FROM ROW(nq, nr, na) AND (x.h IS NULL OR nh IS NULL OR x.h = nh));
		SELECT x.version INTO v
		FROM (SELECT m.version,
					 CASE WHEN task IS NULL THEN m.metrics -> 'validation' -> mname
						  ELSE m.metrics -> 'validation' -> 'tasks' -> task -> mname END AS fig,
					 m.metrics -> 'validation_query' AS q, m.metrics -> 'validation' -> 'rows' AS r,
					 m.metrics -> 'validation' -> 'actual' AS a, m.metrics -> 'validation' -> 'data_hash' AS h
			  FROM pepnet.models m WHERE m.name = pepnet_deploy.name) x
		WHERE jsonb_typeof(x.fig) = 'number'
		  AND ROW(x.q, x.r, x.a) IS NOT DISTINCT FROM ROW(nq, nr, na) AND (x.h IS NULL OR nh IS NULL OR x.h = nh)
		ORDER BY CASE mname WHEN 'auc' THEN -(x.fig::text::float8)
							WHEN 'pcoc' THEN CASE WHEN x.fig::text::float8 > 0 THEN abs(ln(x.fig::text::float8)) ELSE 'Infinity' END  -- |ln PCOC|, as pepnet_train's selection
							ELSE x.fig::text::float8 END,
				 x.version DESC
		LIMIT 1;
		IF skipped IS NOT NULL THEN
			RAISE NOTICE 'deploy strategy ''best'' of model "%" compared only the versions validated on the same data as version %; skipped versions validated on other data: %',
				pepnet_deploy.name, newest, skipped
				USING DETAIL = 'Validation figures are comparable only on the same data: the same validation query (metrics->''validation_query''), number of rows and actual rate (metrics->''validation''), and, for versions trained since 0.3.0, the same rows (metrics->''validation''->''data_hash'').',
					  HINT = 'To compare them all, score each candidate on one query with pepnet_evaluate and deploy the best by number.';
		END IF;
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

/*
 * Issue 15, the soak test's account of shared memory: the shared cache's DSA area as the area
 * itself sees it (segments, free pages, live spans), written to the server log.
 */
CREATE FUNCTION pepnet._shared_cache_dump() RETURNS boolean
	AS 'MODULE_PATHNAME', 'pepnet_shared_cache_dump' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION pepnet._shared_cache_dump() FROM PUBLIC;

/*
 * Issue 15, SQLSTATEs as docs/api.md gives them: pepnet_deploy of a name longer than 63
 * characters is 42622 (as everywhere), its message shortened, instead of 42704 echoing the name.
 */
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
	IF char_length(pepnet_deploy.name) > 63 THEN
		RAISE EXCEPTION 'model name "%" is longer than 63 characters', left(pepnet_deploy.name, 20) || '...'
			USING ERRCODE = 'name_too_long';
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
