/*
 * pepnet--0.2.0--0.3.0.sql: ALTER EXTENSION pepnet UPDATE from 0.2.0 to 0.3.0.
 *
 * Also the tail of CREATE EXTENSION's 0.3.0 script (sql/pepnet--0.3.0.sql is the preamble, the
 * 0.1.0 script and both upgrades), so a fresh 0.3.0 database and an upgraded one are the same.
 * Stored versions keep their weights, configs and scores bit for bit.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.3.0'" to load this file. \quit

-- == restore: every dump/restore mode, backups of every release, pinned scores ==

/*
 * Rows load in any order.  pg_dump writes the rows of pepnet's tables (pg_extension_config_dump)
 * and pg_restore loads them into the tables that CREATE EXTENSION has just made, constraints
 * included; pg_restore -j N loads them at the same time in N sessions, each in its own
 * transaction, so a foreign key among them rejected chunks, Adam state or deployments whose
 * version had not arrived yet (even a deferred one: it is checked at each session's commit), and
 * pg_restore went on without those rows.  No foreign key is left among pepnet's tables; triggers
 * keep the same guarantees for every write but a load (COPY into the table, which is how
 * pg_restore, psql restoring a plain dump and pg_dumpall's script load rows; such rows are taken
 * as dumped, as the numbering and history triggers already take them):
 *  - deleting a version deletes its chunks and Adam state, and deleting Adam state its chunks,
 *    as the owner (as ON DELETE CASCADE did), after the version guard has refused deleting a
 *    deployed version; TRUNCATE of pepnet.models (pepnet.allow_drop) empties the tables that
 *    depend on it, as TRUNCATE ... CASCADE did;
 *  - a deployment or Adam state of a version that does not exist, and Adam moments of a version
 *    without Adam state, are refused (23503, as by the foreign keys; 42704 for pepnet_deploy,
 *    as it documents, when the version is deleted while it deploys it), the referenced row locked
 *    FOR KEY SHARE as a foreign key locks it, so that a concurrent DELETE of the version waits
 *    for the deploy and is then refused by the version guard, or the deploy waits for the
 *    DELETE and is then refused; chunks of a version that does not exist are refused by the
 *    chunk guard (src/chunks.c).
 * In logical replication's apply worker (session_replication_role = replica) none of these fire,
 * as foreign keys were not checked there: the publisher's cascades arrive as rows of their own.
 * pepnet keeps no sequence: version numbers (pepnet.model_names) and the deploy history's seq
 * are rows of its tables and come back with them, so numbering continues after any restore.
 */
ALTER TABLE pepnet.deployments DROP CONSTRAINT deployments_name_version_fkey;
ALTER TABLE pepnet.optimizer_state DROP CONSTRAINT optimizer_state_name_version_fkey;
ALTER TABLE pepnet.model_chunks DROP CONSTRAINT model_chunks_name_version_fkey;
ALTER TABLE pepnet.optimizer_chunks DROP CONSTRAINT optimizer_chunks_name_version_fkey;

-- pepnet_copy_into (src/models.c): is the statement being run COPY pepnet.<table> ... (a load)?
CREATE FUNCTION pepnet._copy_into(tbl text) RETURNS boolean
	AS 'MODULE_PATHNAME', 'pepnet_copy_into_sql' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;

-- what depends on a version goes with it (AFTER DELETE / AFTER TRUNCATE of pepnet.models and pepnet.optimizer_state)
CREATE FUNCTION pepnet._models_cascade() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_TABLE_SCHEMA <> 'pepnet' OR TG_TABLE_NAME NOT IN ('models', 'optimizer_state') THEN
		RAISE EXCEPTION 'pepnet._models_cascade serves pepnet.models and pepnet.optimizer_state only' USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF TG_OP = 'TRUNCATE' THEN
		-- (tables emptied by the same TRUNCATE statement are left alone: they are in use by it)
		IF TG_TABLE_NAME = 'models' THEN
			IF EXISTS (SELECT FROM pepnet.deployments) THEN TRUNCATE pepnet.deployments; END IF;
			IF EXISTS (SELECT FROM pepnet.model_chunks) THEN TRUNCATE pepnet.model_chunks; END IF;
			IF EXISTS (SELECT FROM pepnet.optimizer_state) THEN TRUNCATE pepnet.optimizer_state; END IF;
		END IF;
		IF EXISTS (SELECT FROM pepnet.optimizer_chunks) THEN TRUNCATE pepnet.optimizer_chunks; END IF;
		RETURN NULL;
	END IF;
	IF TG_TABLE_NAME = 'models' THEN
		DELETE FROM pepnet.model_chunks c WHERE c.name = OLD.name AND c.version = OLD.version;
		DELETE FROM pepnet.optimizer_state o WHERE o.name = OLD.name AND o.version = OLD.version;
	ELSE
		DELETE FROM pepnet.optimizer_chunks c WHERE c.name = OLD.name AND c.version = OLD.version;
	END IF;
	RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION pepnet._models_cascade() FROM PUBLIC;
CREATE TRIGGER models_cascade AFTER DELETE ON pepnet.models
	FOR EACH ROW EXECUTE FUNCTION pepnet._models_cascade();
CREATE TRIGGER models_cascade_truncate AFTER TRUNCATE ON pepnet.models
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._models_cascade();
CREATE TRIGGER optimizer_state_cascade AFTER DELETE ON pepnet.optimizer_state
	FOR EACH ROW EXECUTE FUNCTION pepnet._models_cascade();
CREATE TRIGGER optimizer_state_cascade_truncate AFTER TRUNCATE ON pepnet.optimizer_state
	FOR EACH STATEMENT EXECUTE FUNCTION pepnet._models_cascade();

-- a deployment or Adam state needs its version, Adam moments their Adam state (except in a load)
CREATE FUNCTION pepnet._version_exists() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_TABLE_SCHEMA <> 'pepnet' OR TG_TABLE_NAME NOT IN ('deployments', 'optimizer_state', 'optimizer_chunks') THEN
		RAISE EXCEPTION 'pepnet._version_exists serves pepnet.deployments, pepnet.optimizer_state and pepnet.optimizer_chunks only'
			USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name AND NEW.version IS NOT DISTINCT FROM OLD.version THEN
		RETURN NEW;
	END IF;
	IF TG_OP = 'INSERT' AND pepnet._copy_into(TG_TABLE_NAME) THEN
		RETURN NEW;
	END IF;
	IF TG_TABLE_NAME = 'optimizer_chunks' THEN
		PERFORM FROM pepnet.optimizer_state o WHERE o.name = NEW.name AND o.version = NEW.version FOR KEY SHARE;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'model "%" version % has no Adam state: its moments cannot be stored without it', NEW.name, NEW.version
				USING ERRCODE = 'foreign_key_violation',
					  HINT = 'pepnet_train writes Adam state and its moments together.';
		END IF;
		RETURN NEW;
	END IF;
	PERFORM FROM pepnet.models m WHERE m.name = NEW.name AND m.version = NEW.version FOR KEY SHARE;
	IF NOT FOUND AND TG_TABLE_NAME = 'deployments' AND current_setting('pepnet.deploy_strategy', true) <> '' THEN
		-- pepnet_deploy (pepnet._deploy sets the strategy) lost a race with a DELETE of the version: its documented 42704
		RAISE EXCEPTION 'model "%" has no version %', NEW.name, NEW.version
			USING ERRCODE = 'undefined_object',
				  DETAIL = 'The version was deleted while it was being deployed.';
	END IF;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'model "%" has no version %', NEW.name, NEW.version
			USING ERRCODE = 'foreign_key_violation',
				  DETAIL = format('A row of pepnet.%s needs its version in pepnet.models.', TG_TABLE_NAME),
				  HINT = 'See pepnet.models for the versions that exist.';
	END IF;
	RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION pepnet._version_exists() FROM PUBLIC;
CREATE TRIGGER deployments_version_exists BEFORE INSERT OR UPDATE ON pepnet.deployments
	FOR EACH ROW EXECUTE FUNCTION pepnet._version_exists();
CREATE TRIGGER optimizer_state_version_exists BEFORE INSERT OR UPDATE ON pepnet.optimizer_state
	FOR EACH ROW EXECUTE FUNCTION pepnet._version_exists();
CREATE TRIGGER optimizer_chunks_state_exists BEFORE INSERT OR UPDATE ON pepnet.optimizer_chunks
	FOR EACH ROW EXECUTE FUNCTION pepnet._version_exists();

/*
 * Backups taken under 0.1.0 restore as they are.  Their COPY of pepnet.models names 0.1.0's
 * surrogate key id (dropped by 0.2.0); a nullable column of that name takes it, so that a plain
 * pg_restore (or psql) of a 0.1.0 backup into a database where CREATE EXTENSION makes 0.3.0 loads
 * every version (weights inline, as 0.1.0 stored them, which pepnet reads as it reads chunks; the
 * fingerprint computed from them on insert, the value ALTER EXTENSION UPDATE would give) and
 * every deployment.  pepnet ignores the column: NULL for every version stored since 0.2.0, the
 * 0.1.0 value for versions restored from a 0.1.0 backup.  Backups taken under 0.2.0 have 0.3.0's
 * layout and restore as they are.
 */
ALTER TABLE pepnet.models ADD COLUMN id bigint;
COMMENT ON COLUMN pepnet.models.id IS 'not used by pepnet: takes the id column of backups taken under 0.1.0 (NULL since 0.2.0)';

/*
 * The pinned pepnet_predict (both forms: arrays and, since the section "pinned references: scoring
 * by name" below, a row by name) stays IMMUTABLE (postgres_fdw ships only IMMUTABLE functions; README,
 * Sharded candidates) and so may be evaluated once while planning.  src/scaleout.c marks every plan
 * into which it was folded as depending on the role and on pepnet.models, so that a cached plan
 * is planned again, and the privileges checked again, when another role runs it or after a
 * GRANT, REVOKE or policy change on pepnet.models.
 *
 * A STORED generated column, an index expression or predicate, or a CHECK constraint that calls
 * it makes the user's table depend on pepnet's rows, which pg_restore loads in no particular order
 * (the table came back empty: "model does not exist"), and on versions that may be deleted later:
 * refused when created, with what to use instead.
 */
CREATE FUNCTION pepnet._pinned_dependants(rel oid) RETURNS TABLE (what text)
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	WITH f AS (
		SELECT p.oid FROM pg_proc p JOIN pg_depend e ON e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'
		JOIN pg_extension x ON x.oid = e.refobjid AND x.extname = 'pepnet'
		WHERE p.prosrc IN ('pepnet_pinned_predict', 'pepnet_pinned_predict_row'))
	SELECT format('generated column %s of table %s', quote_ident(a.attname), ad.adrelid::regclass)
	FROM pg_depend d JOIN f ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
	JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
	JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
	WHERE rel IS NULL OR ad.adrelid = rel
	UNION ALL
	SELECT format('index %s on table %s', i.indexrelid::regclass, i.indrelid::regclass)
	FROM pg_depend d JOIN f ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
	JOIN pg_index i ON d.classid = 'pg_class'::regclass AND i.indexrelid = d.objid
	WHERE rel IS NULL OR i.indexrelid = rel OR i.indrelid = rel
	UNION ALL
	SELECT format('constraint %s on %s', quote_ident(c.conname),
				  CASE WHEN c.conrelid <> 0 THEN 'table ' || c.conrelid::regclass::text ELSE 'domain ' || c.contypid::regtype::text END)
	FROM pg_depend d JOIN f ON d.refclassid = 'pg_proc'::regclass AND d.refobjid = f.oid
	JOIN pg_constraint c ON d.classid = 'pg_constraint'::regclass AND c.oid = d.objid
	WHERE rel IS NULL OR c.conrelid = rel OR c.contypid = rel
$$;

-- (SECURITY DEFINER: it runs for every role's DDL, also of roles without USAGE on schema pepnet)
CREATE FUNCTION pepnet._pinned_guard() RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	bad text;
BEGIN
	SELECT string_agg(p.what, ', ') INTO bad
	FROM pg_event_trigger_ddl_commands() c, LATERAL pepnet._pinned_dependants(c.objid) p
	WHERE c.classid IN ('pg_class'::regclass, 'pg_type'::regclass);
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'pepnet_predict(pepnet_pinned, ...) cannot be used in a stored generated column, an index or a constraint: %', bad
			USING ERRCODE = 'feature_not_supported',
				  DETAIL = 'Such a value depends on pepnet''s rows, which dump/restore loads in no set order, and on versions that may be deleted; the table would not restore.',
				  HINT = 'Fill a plain column with UPDATE ... SET score = pepnet_predict(...), use a materialized view over the scores, or score at query time.';
	END IF;
END $$;
REVOKE ALL ON FUNCTION pepnet._pinned_guard() FROM PUBLIC;
CREATE EVENT TRIGGER pepnet_pinned_guard ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'CREATE INDEX', 'CREATE DOMAIN', 'ALTER DOMAIN')
	EXECUTE FUNCTION pepnet._pinned_guard();

-- Existing ones (made under 0.2.0) stay, with a warning: each would not restore.
DO $$
DECLARE
	bad text;
BEGIN
	SELECT string_agg(what, ', ') INTO bad FROM pepnet._pinned_dependants(NULL);
	IF bad IS NOT NULL THEN
		RAISE WARNING 'pepnet_predict(pepnet_pinned, ...) is used by %: such tables do not restore from a dump', bad
			USING DETAIL = 'pg_restore loads a table''s rows before or alongside pepnet''s versions; rows whose expression fails are lost. pepnet 0.3.0 refuses new ones.',
				  HINT = 'Replace each by a plain column filled with UPDATE, a materialized view, or scoring at query time (docs/api.md, Backup and restore).';
	END IF;
END $$;

-- == workflow: recorded evaluations, runs and their comparison, deploy 'best' by evaluation ==

/*
 * pepnet_evaluate(model, data, record): pepnet_evaluate's rows, and the same figures stored in the
 * evaluated version's metrics under metrics->'evaluations'->record (the shape of pepnet_train's
 * 'validation', plus the query and when), so that any version (imported, created, trained by an
 * older release) joins pepnet.runs and pepnet_deploy(..., 'best', evaluation => record), with
 * data_hash, the identity of the evaluated rows as in pepnet_train's validation (by which 'best'
 * tells comparable figures).  Only metrics change: config, weights and fingerprint stay (the
 * version guard allows metrics).  Needs UPDATE on pepnet.models.
 */

-- pepnet_evaluate's rows and the data_hash of the rows evaluated (src/evaluate.c: a ninth column)
CREATE FUNCTION pepnet._evaluate_rows(model text, data text)
	RETURNS TABLE (domain int, task text, rows bigint, auc float8, logloss float8,
	               mean_p float8, actual float8, pcoc float8, data_hash text)
	AS 'MODULE_PATHNAME', 'pepnet_evaluate' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

CREATE FUNCTION pepnet._record_evaluation(name text, version int, record text, data text, res jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	first_task text;
	fig jsonb;
BEGIN
	SELECT COALESCE(m.config -> 'tasks' ->> 0, 'click') INTO first_task
	FROM pepnet.models m WHERE m.name = _record_evaluation.name AND m.version = _record_evaluation.version;
	-- the shape of pepnet_train's validation metrics: the first task's figures over all domains,
	-- then per task and per domain; data_hash (each row carries it) once, as in validation
	SELECT COALESCE((SELECT r - 'domain' - 'task' - 'data_hash' FROM jsonb_array_elements(res) r
					 WHERE r ->> 'task' = first_task AND jsonb_typeof(r -> 'domain') = 'null'), '{}')
		   || jsonb_build_object('tasks', jsonb_object_agg(t.task, t.fig), 'query', _record_evaluation.data,
								 'evaluated_at', now())
		   || COALESCE((SELECT jsonb_build_object('data_hash', r -> 'data_hash') FROM jsonb_array_elements(res) r
						WHERE jsonb_typeof(r -> 'data_hash') = 'string' LIMIT 1), '{}')
	INTO fig
	FROM (SELECT o.value ->> 'task' AS task,
				 (o.value - 'domain' - 'task' - 'data_hash')
				 || jsonb_build_object('domains', COALESCE((SELECT jsonb_object_agg(d.value ->> 'domain', d.value - 'domain' - 'task' - 'data_hash')
															FROM jsonb_array_elements(res) d
															WHERE d.value ->> 'task' = o.value ->> 'task'
															  AND jsonb_typeof(d.value -> 'domain') <> 'null'), '{}')) AS fig
		  FROM jsonb_array_elements(res) o WHERE jsonb_typeof(o.value -> 'domain') = 'null') t;
	UPDATE pepnet.models m
	SET metrics = m.metrics || jsonb_build_object('evaluations',
		CASE WHEN jsonb_typeof(m.metrics -> 'evaluations') = 'object' THEN m.metrics -> 'evaluations' ELSE '{}' END
		|| jsonb_build_object(record, fig))
	WHERE m.name = _record_evaluation.name AND m.version = _record_evaluation.version;
END $$;

-- (no SET search_path: the data query runs with the caller's, as pepnet_evaluate's; names qualified)
CREATE FUNCTION pepnet_evaluate(model text, data text, record text)
	RETURNS TABLE (domain int, task text, rows bigint, auc float8, logloss float8,
	               mean_p float8, actual float8, pcoc float8)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE AS $$
DECLARE
	pin text[];
	res jsonb;
BEGIN
	PERFORM pepnet._require_writable('pepnet_evaluate');
	IF record IS NULL THEN
		RAISE EXCEPTION 'pepnet_evaluate''s record needs an evaluation name, not NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF record OPERATOR(pg_catalog.!~) '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,62}$' THEN
		RAISE EXCEPTION 'evaluation name "%" is not valid', record
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the evaluation with 1 to 63 letters, digits, _ . : or -, e.g. ''holdout_june''.';
	END IF;
	-- pepnet.runs's source of pepnet_train's validation figures
	IF pg_catalog.lower(record) OPERATOR(pg_catalog.=) 'validation' THEN
		RAISE EXCEPTION 'evaluation name "%" is reserved', record
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = 'pepnet.runs shows pepnet_train''s validation figures as source ''validation''; an evaluation of that name would mix with them.',
				  HINT = 'Name the evaluation otherwise, e.g. ''holdout'' or ''validation_june''.';
	END IF;
	IF NOT pg_catalog.has_table_privilege('pepnet.models', 'UPDATE') THEN
		RAISE EXCEPTION 'permission denied to record an evaluation: it needs UPDATE on pepnet.models'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Call pepnet_evaluate(model, data) without record, or GRANT UPDATE ON pepnet.models.';
	END IF;
	-- the version the reference names now, evaluated and recorded as that version
	pin := pg_catalog.regexp_match(@extschema@.pepnet_pin(model)::text, '^(.*)@([0-9]+)#[0-9a-f]+$');
	SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e)) INTO res
	FROM pepnet._evaluate_rows(pin[1] OPERATOR(pg_catalog.||) '@' OPERATOR(pg_catalog.||) pin[2], data) e;
	PERFORM pepnet._record_evaluation(pin[1], pin[2]::int, record, data, res);
	RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(res) AS x(domain int, task text, rows bigint, auc float8,
		logloss float8, mean_p float8, actual float8, pcoc float8);
END $$;

-- the parts of a config switched on, as model.md names them ('star+pn+epnet+ppnet+aux'; 'mlp' for none)
CREATE FUNCTION pepnet._config_parts(config jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT COALESCE(string_agg(p, '+' ORDER BY o), 'mlp')
	FROM unnest(ARRAY['star', 'pn', 'epnet', 'ppnet', 'aux']) WITH ORDINALITY AS u(p, o)
	WHERE COALESCE(config ->> p, 'true') <> 'false'
$$;

/*
 * pepnet.runs: one row per (version, metric source, task, domain) of every version with metrics:
 * source 'validation' (pepnet_train's validation query) or the name of a recorded evaluation;
 * domain NULL = all domains.  Ready for ORDER BY, e.g.
 *   SELECT version, parts, hidden, lr, auc FROM pepnet.runs
 *   WHERE model = 'ctr' AND domain IS NULL ORDER BY auc DESC;
 * security_invoker: a role sees the runs of the versions it may read in pepnet.models.
 */
CREATE VIEW pepnet.runs WITH (security_invoker = true) AS
SELECT m.name AS model, m.version, m.parent, m.created_at,
	   pepnet._config_parts(m.config) AS parts,
	   (SELECT string_agg(h, 'x') FROM jsonb_array_elements_text(m.config -> 'hidden') h) AS hidden,
	   (m.config ->> 'emb_dim')::int AS emb_dim,
	   CASE WHEN jsonb_typeof(m.metrics -> 'lr') = 'number' THEN (m.metrics ->> 'lr')::float8 END AS lr,
	   CASE WHEN jsonb_typeof(m.metrics -> 'batch_size') = 'number' THEN (m.metrics ->> 'batch_size')::int END AS batch_size,
	   CASE WHEN jsonb_typeof(m.metrics -> 'lineage_epoch') = 'number' THEN (m.metrics ->> 'lineage_epoch')::int END AS epoch,
	   CASE WHEN jsonb_typeof(m.metrics -> 'train_loss') = 'number' THEN (m.metrics ->> 'train_loss')::float8 END AS train_loss,
	   s.source, s.query, t.key AS task, g.domain,
	   (g.fig ->> 'rows')::bigint AS rows,
	   round((g.fig ->> 'actual')::float8 * (g.fig ->> 'rows')::float8)::bigint AS positives,
	   (g.fig ->> 'auc')::float8 AS auc,
	   (g.fig ->> 'logloss')::float8 AS logloss,
	   (g.fig ->> 'pcoc')::float8 AS pcoc
FROM pepnet.models m
CROSS JOIN LATERAL (
	SELECT 'validation' AS source, m.metrics ->> 'validation_query' AS query, m.metrics -> 'validation' AS fig
	WHERE jsonb_typeof(m.metrics -> 'validation') = 'object'
	UNION ALL
	SELECT e.key, e.value ->> 'query', e.value
	FROM jsonb_each(CASE WHEN jsonb_typeof(m.metrics -> 'evaluations') = 'object' THEN m.metrics -> 'evaluations' ELSE '{}' END) e
	WHERE jsonb_typeof(e.value) = 'object') s
CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(s.fig -> 'tasks') = 'object' THEN s.fig -> 'tasks' ELSE '{}' END) t
CROSS JOIN LATERAL (
	SELECT NULL::int AS domain, t.value AS fig
	UNION ALL
	SELECT d.key::int, d.value
	FROM jsonb_each(CASE WHEN jsonb_typeof(t.value -> 'domains') = 'object' THEN t.value -> 'domains' ELSE '{}' END) d
	WHERE d.key ~ '^[0-9]{1,9}$') g;
COMMENT ON VIEW pepnet.runs IS 'pepnet: validation and recorded evaluation figures of every version, per task and domain';
GRANT SELECT ON pepnet.runs TO PUBLIC;

/*
 * The deploy history records the figure a 'best' deploy chose by (metric, e.g.
 * 'auc:click = 0.8123 (validation)'); NULL for other strategies.  pepnet._deploy passes it after
 * the strategy label ('best|<metric>'); rows restored by COPY keep what they bring.
 */
ALTER TABLE pepnet.deploy_history ADD COLUMN metric text;
CREATE FUNCTION pepnet._deploy_history_metric() RETURNS trigger
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF strpos(NEW.strategy, '|') > 0 THEN
		NEW.metric := NULLIF(substr(NEW.strategy, strpos(NEW.strategy, '|') + 1), '');
		NEW.strategy := split_part(NEW.strategy, '|', 1);
	END IF;
	RETURN NEW;
END $$;
CREATE TRIGGER deploy_history_metric BEFORE INSERT ON pepnet.deploy_history
	FOR EACH ROW EXECUTE FUNCTION pepnet._deploy_history_metric();

-- The checks both pepnet_deploy forms make of a model name and the caller's rights, before any
-- read: 63 characters at most, a name and not a 'name@version' reference (the hint shows the call
-- with the version given as version_hint), the deployer grants (the error names them).
CREATE FUNCTION pepnet._deploy_check(name text, version_hint text) RETURNS void
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF char_length(_deploy_check.name) > 63 THEN
		RAISE EXCEPTION 'model name "%" is longer than 63 characters', left(_deploy_check.name, 20) || '...'
			USING ERRCODE = 'name_too_long';
	END IF;
	IF strpos(_deploy_check.name, '@') > 0 THEN
		RAISE EXCEPTION 'pepnet_deploy takes a model name, not the reference "%"', _deploy_check.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = format('Name the version separately: pepnet_deploy(%L, %s).', split_part(_deploy_check.name, '@', 1),
								_deploy_check.version_hint);
	END IF;
	IF NOT (has_schema_privilege('pepnet', 'USAGE') AND has_table_privilege('pepnet.models', 'SELECT')
			AND has_table_privilege('pepnet.deployments', 'SELECT') AND has_table_privilege('pepnet.deployments', 'INSERT')
			AND has_table_privilege('pepnet.deployments', 'UPDATE')) THEN
		RAISE EXCEPTION 'permission denied to deploy model "%"', _deploy_check.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'pepnet_deploy needs USAGE on schema pepnet, SELECT on pepnet.models and SELECT, INSERT, UPDATE on pepnet.deployments.',
				  HINT = 'Deploy as a role with the deployer grants, or GRANT SELECT, INSERT, UPDATE ON pepnet.deployments.';
	END IF;
END $$;

/*
 * pepnet_deploy(name, strategy, metric, evaluation): one function for every strategy.  'best'
 * ranks by pepnet_train's validation figures (metrics->'validation'), or, with evaluation, by a
 * recorded evaluation (metrics->'evaluations'->evaluation, pepnet_evaluate(..., record)); only
 * versions with that figure compete.  Figures are comparable only on the same data: the
 * candidates are the versions measured as the newest version with the figure was (the same
 * query, number of rows and actual rate of the first task, and the same data_hash of the rows
 * where both have one: validations and evaluations recorded since 0.3.0); the others are skipped
 * and named in a NOTICE.  The figure a 'best' deploy chose by goes to pepnet.deploy_history.metric.
 * A name longer than 63 characters is 42622, its message shortened.
 */
DROP FUNCTION pepnet_deploy(text, text, text);
CREATE FUNCTION pepnet_deploy(name text, strategy text, metric text DEFAULT 'logloss', evaluation text DEFAULT NULL) RETURNS int
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	v int;
	cur int;
	s text := lower(btrim(pepnet_deploy.strategy));
	mname text;
	task text;
	fig float8;
	newest int;
	skipped text;
	src text := CASE WHEN pepnet_deploy.evaluation IS NULL THEN 'validation' ELSE format('evaluation "%s"', pepnet_deploy.evaluation) END;
BEGIN
	PERFORM pepnet._require_writable('pepnet_deploy');
	IF pepnet_deploy.name IS NULL OR pepnet_deploy.strategy IS NULL THEN
		RAISE EXCEPTION 'pepnet_deploy needs a model name and a version, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF pepnet_deploy.evaluation IS NOT NULL AND s <> 'best' THEN
		RAISE EXCEPTION 'deploy strategy ''%'' takes no evaluation', pepnet_deploy.strategy
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'An evaluation name chooses the figures of strategy ''best''.';
	END IF;
	PERFORM pepnet._deploy_check(pepnet_deploy.name, COALESCE(NULLIF(split_part(pepnet_deploy.name, '@', 2), ''), 'version'));
	IF s ~ '^[0-9]{1,9}$' THEN
		-- a version by number (as pepnet_deploy(name, version))
		v := s::int;
		IF NOT EXISTS (SELECT 1 FROM pepnet.models m WHERE m.name = pepnet_deploy.name AND m.version = v) THEN
			SELECT max(m.version) INTO cur FROM pepnet.models m WHERE m.name = pepnet_deploy.name;
			IF cur IS NULL THEN
				RAISE EXCEPTION 'model "%" does not exist', pepnet_deploy.name
					USING ERRCODE = 'undefined_object';
			END IF;
			RAISE EXCEPTION 'model "%" has no version %', pepnet_deploy.name, v
				USING ERRCODE = 'undefined_object', DETAIL = format('Its latest version is %s.', cur);
		END IF;
		PERFORM pepnet._deploy(pepnet_deploy.name, v, 'version');
		RETURN v;
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
		-- the versions with the figure, the newest of them, those measured on its data ranked
		WITH f AS (
			SELECT m.version,
				   CASE WHEN task IS NULL THEN sf.f -> mname ELSE sf.f -> 'tasks' -> task -> mname END AS fig,
				   CASE WHEN pepnet_deploy.evaluation IS NULL THEN m.metrics -> 'validation_query' ELSE sf.f -> 'query' END AS q,
				   sf.f -> 'rows' AS r, sf.f -> 'actual' AS a, sf.f -> 'data_hash' AS h
			FROM pepnet.models m,
				 LATERAL (SELECT CASE WHEN pepnet_deploy.evaluation IS NULL THEN m.metrics -> 'validation'
									  ELSE m.metrics -> 'evaluations' -> pepnet_deploy.evaluation END AS f) sf
			WHERE m.name = pepnet_deploy.name),
		n AS (SELECT f.* FROM f WHERE jsonb_typeof(f.fig) = 'number' ORDER BY f.version DESC LIMIT 1),
		c AS (SELECT f.version, f.fig::text::float8 AS fig,
					 ROW(f.q, f.r, f.a) IS NOT DISTINCT FROM ROW(n.q, n.r, n.a) AND (f.h IS NULL OR n.h IS NULL OR f.h = n.h) AS same
			  FROM f, n WHERE jsonb_typeof(f.fig) = 'number')
		SELECT (SELECT n.version FROM n),
			   (SELECT string_agg(c.version::text, ', ' ORDER BY c.version) FROM c WHERE NOT c.same),
			   b.version, b.fig
		INTO newest, skipped, v, fig
		FROM (SELECT 1) one
		LEFT JOIN (SELECT c.version, c.fig FROM c WHERE c.same
				   ORDER BY CASE mname WHEN 'auc' THEN -c.fig
									   WHEN 'pcoc' THEN CASE WHEN c.fig > 0 THEN abs(ln(c.fig)) ELSE 'Infinity' END  -- |ln PCOC|, as pepnet_train's selection
									   ELSE c.fig END,
							c.version DESC
				   LIMIT 1) b ON true;
		IF skipped IS NOT NULL THEN
			IF pepnet_deploy.evaluation IS NULL THEN
				RAISE NOTICE 'deploy strategy ''best'' of model "%" compared only the versions validated on the same data as version %; skipped versions validated on other data: %',
					pepnet_deploy.name, newest, skipped
					USING DETAIL = 'Validation figures are comparable only on the same data: the same validation query (metrics->''validation_query''), number of rows and actual rate (metrics->''validation''), and, for versions trained since 0.3.0, the same rows (metrics->''validation''->''data_hash'').',
						  HINT = 'To compare them all, score each candidate on one query with pepnet_evaluate and deploy the best by number.';
			ELSE
				RAISE NOTICE 'deploy strategy ''best'' of model "%" compared only the versions whose evaluation "%" was measured on the same data as version %''s; skipped versions evaluated on other data: %',
					pepnet_deploy.name, pepnet_deploy.evaluation, newest, skipped
					USING DETAIL = format('Evaluation figures are comparable only on the same data: the same query, number of rows and actual rate (metrics->''evaluations''->%L), and, for evaluations recorded since 0.3.0, the same rows (its data_hash).', pepnet_deploy.evaluation),
						  HINT = format('Record evaluation %L of each candidate on one query with pepnet_evaluate(model, data, record => %L).',
										pepnet_deploy.evaluation, pepnet_deploy.evaluation);
			END IF;
		END IF;
		IF v IS NULL THEN
			IF pepnet_deploy.evaluation IS NOT NULL THEN
				RAISE EXCEPTION 'no version of model "%" has an evaluation "%" with a %', pepnet_deploy.name,
					pepnet_deploy.evaluation, mname || CASE WHEN task IS NULL THEN '' ELSE format(' of task "%s"', task) END
					USING ERRCODE = 'object_not_in_prerequisite_state',
						  HINT = format('Record one with pepnet_evaluate(%L, data, record => %L); see pepnet.runs.',
										pepnet_deploy.name || '@<version>', pepnet_deploy.evaluation);
			END IF;
			RAISE EXCEPTION 'no version of model "%" has a validation %', pepnet_deploy.name,
				mname || CASE WHEN task IS NULL THEN '' ELSE format(' of task "%s"', task) END
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'Train with a validation query (CALL pepnet_train(..., validation => ...)), or deploy a version by number.';
		END IF;
		-- recorded in pepnet.deploy_history.metric
		s := 'best|' || pepnet._deploy_figure(metric, fig, src);
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
 * pepnet_train's config may be a JSON string naming a stored version ('"ctr@10"'): that version's
 * config, trained from fresh weights (config NULL with name 'ctr@10' continues its weights).
 */
CREATE FUNCTION pepnet._config_of(model text) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pin text[] := regexp_match(@extschema@.pepnet_pin(model)::text, '^(.*)@([0-9]+)#[0-9a-f]+$');
BEGIN
	RETURN (SELECT m.config FROM pepnet.models m WHERE m.name = pin[1] AND m.version = pin[2]::int);
END $$;

/*
 * A figure a deploy chose by, as pepnet.deploy_history.metric records it (one format for
 * pepnet_deploy's 'best', pepnet_train's deploy => true and a grid's): the metric as the caller
 * named it, the figure rounded to 4 decimals, its source: 'auc:click = 0.8123 (validation)',
 * 'logloss = 0.4107 (evaluation "holdout")'.
 */
CREATE FUNCTION pepnet._deploy_figure(metric text, fig float8, source text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT format('%s = %s (%s)', metric, COALESCE(round(fig::numeric, 4)::text, 'NULL'), source)
$$;

/*
 * What pepnet._train_begin checks of a config (its errors, the model's size, the rights to store
 * versions), the trainer made and freed at once; unlike _train_begin callable in a subtransaction,
 * so that a grid names the run whose config fails.
 */
CREATE FUNCTION pepnet._train_check(name text, config jsonb, seed int, lr float8, batch_size int) RETURNS void
	AS 'MODULE_PATHNAME', 'pepnet_train_check' LANGUAGE C VOLATILE PARALLEL UNSAFE;

/*
 * Runs: pepnet_train's config may be a JSON array, a grid of runs trained one after another under
 * name, each from fresh weights: its elements are configs, stored versions' references (JSON
 * strings, "ctr@3": its config), or objects {"config": <config or reference>, "lr": x,
 * "batch_size": n, "seed": s, "epochs": e} overriding the call's arguments for that run (no other
 * keys).  Every element, override and config is checked before the first run trains; errors name
 * the run ('run 2 of the grid: ...').  A NOTICE names each run's versions; deploy => true deploys
 * the grid's best version by selection.  pepnet._train_grid runs it (a CALL of pepnet_train per
 * run, each committing its epochs).
 */
CREATE PROCEDURE pepnet._train_grid(name text, data text, config jsonb, validation text,
	epochs int, batch_size int, lr float8, seed int, shuffle_buffer int, deploy boolean, patience int,
	progress_interval float8, selection text, lr_schedule jsonb, negative_rate float8[])
LANGUAGE plpgsql AS $$
DECLARE
	best_v int;
	best_fig float8;
	metric text;
	base text := pg_catalog.split_part(name, '@', 1);
	run jsonb;
	runs int;
	first_v int;
	last_v int;
	grid_from int;
	grid_task text;
	cfg jsonb;
	ov jsonb;   -- a run's overrides (an element with "config")
	cfgs jsonb[];
	k text;
	ints text[] := ARRAY['batch_size', 'seed', 'epochs'];
	e_state text;
	e_msg text;
	e_detail text;
	e_hint text;
BEGIN
	-- a grid: one run per element, each a CALL of its own (commits per epoch as usual)
	runs := pg_catalog.jsonb_array_length(config);
	IF runs OPERATOR(pg_catalog.=) 0 OR runs OPERATOR(pg_catalog.>) 1000 THEN
		RAISE EXCEPTION 'a grid of configs must be a JSON array of 1 to 1000 elements, got %', runs
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Each element is a config, a stored version''s reference as a JSON string ("ctr@3": its config), or {"config": <config or reference>, "lr": 0.01, "batch_size": 256, "seed": 1, "epochs": 2}.';
	END IF;
	IF pg_catalog.strpos(name, '@') OPERATOR(pg_catalog.>) 0 THEN
		RAISE EXCEPTION 'a grid of configs trains fresh versions of a model name, not of the reference "%"', name
			USING ERRCODE = 'invalid_parameter_value', HINT = pg_catalog.format('Use the name %L.', base);
	END IF;
	IF deploy AND validation IS NULL THEN
		RAISE EXCEPTION 'deploy => true with a grid of configs needs a validation query to choose the best run'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- every run's element, arguments and config checked before the first one trains (a trainer is
	-- made and freed for each config: the config's own errors, the rights to store versions)
	FOR i IN 0 .. runs OPERATOR(pg_catalog.-) 1 LOOP
		run := config OPERATOR(pg_catalog.->) i;
		IF pg_catalog.jsonb_typeof(run) OPERATOR(pg_catalog.=) 'null' THEN
			RAISE EXCEPTION 'run % of the grid: the element is null', i OPERATOR(pg_catalog.+) 1
				USING ERRCODE = 'null_value_not_allowed', DETAIL = 'No run was trained.',
					  HINT = 'Each element is a config, a stored version''s reference ("ctr@3") or {"config": ..., "lr": ...}.';
		END IF;
		IF pg_catalog.jsonb_typeof(run) NOT IN ('object', 'string') THEN
			RAISE EXCEPTION 'run % of the grid: an element must be an object or a string, got %', i OPERATOR(pg_catalog.+) 1,
				pg_catalog.left(run::text, 200)
				USING ERRCODE = 'invalid_parameter_value', DETAIL = 'No run was trained.',
					  HINT = 'Each element is a config, a stored version''s reference as a JSON string ("ctr@3": its config), or {"config": <config or reference>, "lr": 0.01, "batch_size": 256, "seed": 1, "epochs": 2}.';
		END IF;
		IF run OPERATOR(pg_catalog.?) 'config' THEN
			-- an element with overrides: only the overrides and its config, each not null, integers whole
			SELECT j.key INTO k FROM pg_catalog.jsonb_object_keys(run) j(key)
			WHERE j.key NOT IN ('config', 'lr', 'batch_size', 'seed', 'epochs') ORDER BY 1 LIMIT 1;
			IF k IS NOT NULL THEN
				RAISE EXCEPTION 'run % of the grid: unknown key "%"', i OPERATOR(pg_catalog.+) 1, k
					USING ERRCODE = 'invalid_parameter_value', DETAIL = 'No run was trained.',
						  HINT = 'An element with "config" takes the keys config, lr, batch_size, seed and epochs.';
			END IF;
			SELECT j.key INTO k FROM pg_catalog.jsonb_each(run) j WHERE pg_catalog.jsonb_typeof(j.value) OPERATOR(pg_catalog.=) 'null' ORDER BY 1 LIMIT 1;
			IF k IS NOT NULL THEN
				RAISE EXCEPTION 'run % of the grid: "%" is null', i OPERATOR(pg_catalog.+) 1, k
					USING ERRCODE = 'null_value_not_allowed', DETAIL = 'No run was trained.',
						  HINT = 'Leave the key out to use the call''s argument.';
			END IF;
			IF pg_catalog.jsonb_typeof(run OPERATOR(pg_catalog.->) 'config') NOT IN ('object', 'string') THEN
				RAISE EXCEPTION 'run % of the grid: "config" must be a config (an object) or a stored version''s reference (a string), got %',
					i OPERATOR(pg_catalog.+) 1, pg_catalog.left((run OPERATOR(pg_catalog.->) 'config')::text, 200)
					USING ERRCODE = 'invalid_parameter_value', DETAIL = 'No run was trained.';
			END IF;
			SELECT j.key INTO k FROM pg_catalog.jsonb_each(run) j
			WHERE (j.key OPERATOR(pg_catalog.=) 'lr' AND pg_catalog.jsonb_typeof(j.value) OPERATOR(pg_catalog.<>) 'number')
			   OR (j.key OPERATOR(pg_catalog.=) ANY (ints) AND NOT (pg_catalog.jsonb_typeof(j.value) OPERATOR(pg_catalog.=) 'number'
					AND j.value::text OPERATOR(pg_catalog.~) '^-?[0-9]{1,9}$'))
			ORDER BY 1 LIMIT 1;
			IF k IS NOT NULL THEN
				RAISE EXCEPTION 'run % of the grid: "%" must be %, got %', i OPERATOR(pg_catalog.+) 1, k,
					CASE WHEN k OPERATOR(pg_catalog.=) 'lr' THEN 'a number' ELSE 'an integer' END,
					pg_catalog.left((run OPERATOR(pg_catalog.->) k)::text, 100)
					USING ERRCODE = 'invalid_parameter_value', DETAIL = 'No run was trained.';
			END IF;
			cfg := run OPERATOR(pg_catalog.->) 'config';
			ov := run;
		ELSE
			cfg := run;
			ov := '{}';
		END IF;
		IF NOT COALESCE((ov OPERATOR(pg_catalog.->>) 'lr')::float8, lr) OPERATOR(pg_catalog.>) 0
		   OR COALESCE((ov OPERATOR(pg_catalog.->>) 'lr')::float8, lr) OPERATOR(pg_catalog.>) 10
		   OR COALESCE((ov OPERATOR(pg_catalog.->>) 'batch_size')::int, batch_size) NOT BETWEEN 1 AND 65536
		   OR COALESCE((ov OPERATOR(pg_catalog.->>) 'epochs')::int, epochs) NOT BETWEEN 1 AND 100000 THEN
			RAISE EXCEPTION 'run % of the grid: lr must be in (0, 10], batch_size 1 to 65536 and epochs 1 to 100000', i OPERATOR(pg_catalog.+) 1
				USING ERRCODE = 'invalid_parameter_value', DETAIL = 'No run was trained.';
		END IF;
		BEGIN
			IF pg_catalog.jsonb_typeof(cfg) OPERATOR(pg_catalog.=) 'string' THEN
				cfg := pepnet._config_of(cfg OPERATOR(pg_catalog.#>>) '{}');
			END IF;
			PERFORM pepnet._train_check(base, cfg, 0, 1e-3, 1);
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS e_state = RETURNED_SQLSTATE, e_msg = MESSAGE_TEXT, e_detail = PG_EXCEPTION_DETAIL,
									e_hint = PG_EXCEPTION_HINT;
			e_detail := COALESCE(NULLIF(e_detail, '') OPERATOR(pg_catalog.||) ' ', '') OPERATOR(pg_catalog.||) 'No run was trained.';
			IF COALESCE(e_hint, '') OPERATOR(pg_catalog.=) '' THEN
				RAISE EXCEPTION 'run % of the grid: %', i OPERATOR(pg_catalog.+) 1, e_msg USING ERRCODE = e_state, DETAIL = e_detail;
			END IF;
			RAISE EXCEPTION 'run % of the grid: %', i OPERATOR(pg_catalog.+) 1, e_msg
				USING ERRCODE = e_state, DETAIL = e_detail, HINT = e_hint;
		END;
		cfgs := cfgs OPERATOR(pg_catalog.||) cfg;   -- the resolved config, for the run's NOTICE
	END LOOP;
	SELECT n.last_version INTO grid_from FROM pepnet.model_names n WHERE n.name OPERATOR(pg_catalog.=) base;
	grid_from := COALESCE(grid_from, 0);
	FOR i IN 0 .. runs OPERATOR(pg_catalog.-) 1 LOOP
		run := config OPERATOR(pg_catalog.->) i;
		ov := CASE WHEN run OPERATOR(pg_catalog.?) 'config' THEN run ELSE '{}' END;
		SELECT n.last_version INTO first_v FROM pepnet.model_names n WHERE n.name OPERATOR(pg_catalog.=) base;
		CALL @extschema@.pepnet_train(base, data,
			CASE WHEN run OPERATOR(pg_catalog.?) 'config' THEN run OPERATOR(pg_catalog.->) 'config' ELSE run END,
			validation,
			COALESCE((ov OPERATOR(pg_catalog.->>) 'epochs')::int, epochs),
			COALESCE((ov OPERATOR(pg_catalog.->>) 'batch_size')::int, batch_size),
			COALESCE((ov OPERATOR(pg_catalog.->>) 'lr')::float8, lr),
			COALESCE((ov OPERATOR(pg_catalog.->>) 'seed')::int, seed),
			shuffle_buffer, false, patience, progress_interval, selection, lr_schedule, negative_rate);
		SELECT n.last_version INTO last_v FROM pepnet.model_names n WHERE n.name OPERATOR(pg_catalog.=) base;
		cfg := cfgs[i OPERATOR(pg_catalog.+) 1];
		RAISE NOTICE 'pepnet_train "%": run % of % (%, hidden %, lr %): versions % to %', base, i OPERATOR(pg_catalog.+) 1, runs,
			pepnet._config_parts(cfg), COALESCE(cfg OPERATOR(pg_catalog.->>) 'hidden', '-'),
			COALESCE((ov OPERATOR(pg_catalog.->>) 'lr')::float8, lr),
			COALESCE(first_v, 0) OPERATOR(pg_catalog.+) 1, last_v;
	END LOOP;
	IF deploy THEN
		metric := COALESCE(NULLIF(pg_catalog.split_part(selection, ':', 1), ''), 'logloss');
		grid_task := NULLIF(pg_catalog.split_part(selection, ':', 2), '');
		SELECT r.version, CASE metric WHEN 'auc' THEN r.auc WHEN 'pcoc' THEN r.pcoc ELSE r.logloss END INTO best_v, best_fig
		FROM pepnet.runs r
		WHERE r.model OPERATOR(pg_catalog.=) base AND r.version OPERATOR(pg_catalog.>) grid_from
		  AND r.source OPERATOR(pg_catalog.=) 'validation' AND r.domain IS NULL
		  AND r.task OPERATOR(pg_catalog.=) COALESCE(grid_task, (SELECT COALESCE(m.config OPERATOR(pg_catalog.->) 'tasks' OPERATOR(pg_catalog.->>) 0, 'click')
														  FROM pepnet.models m WHERE m.name OPERATOR(pg_catalog.=) r.model AND m.version OPERATOR(pg_catalog.=) r.version))
		  AND CASE metric WHEN 'auc' THEN r.auc WHEN 'pcoc' THEN r.pcoc ELSE r.logloss END IS NOT NULL
		ORDER BY CASE metric WHEN 'auc' THEN -r.auc
							 WHEN 'pcoc' THEN CASE WHEN r.pcoc OPERATOR(pg_catalog.>) 0 THEN pg_catalog.abs(pg_catalog.ln(r.pcoc)) ELSE 'Infinity' END
							 ELSE r.logloss END, r.version DESC
		LIMIT 1;
		IF best_v IS NOT NULL THEN
			PERFORM pepnet._deploy(base, best_v, 'best|' OPERATOR(pg_catalog.||) pepnet._deploy_figure(COALESCE(selection, 'logloss'), best_fig, 'validation'));
			RAISE NOTICE 'pepnet_train "%": deployed version % (best validation % of the grid)', base, best_v, selection;
			COMMIT;
		END IF;
	END IF;
END $$;

-- pepnet_train: the 0.2.0 procedure with the grid (above) and the deploy history's metric
-- No SET search_path here: a procedure with SET cannot COMMIT, so every name is qualified.
CREATE OR REPLACE PROCEDURE pepnet_train(name text, data text, config jsonb DEFAULT NULL, validation text DEFAULT NULL,
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
	best_raw float8;   -- the best version's figure as measured (best: PCOC as |ln PCOC|)
	since_best int := 0;
	fig float8;
	better boolean;
	metric text;
	task text;
	base text := pg_catalog.split_part(name, '@', 1);
BEGIN PERFORM pepnet._chunk_size(); IF pg_catalog.jsonb_typeof(config) OPERATOR(pg_catalog.=) 'string' THEN config := pepnet._config_of(config OPERATOR(pg_catalog.#>>) '{}'); END IF; IF pg_catalog.jsonb_typeof(config) OPERATOR(pg_catalog.=) 'array' THEN CALL pepnet._train_grid(name, data, config, validation, epochs, batch_size, lr, seed, shuffle_buffer, deploy, patience, progress_interval, selection, lr_schedule, negative_rate); RETURN; END IF;  -- loads the library (its error hook hides this procedure's context lines), a stored version's config, a grid of runs (one line: line numbers stay those of 0.2.0)
	IF name IS NULL OR data IS NULL THEN
		RAISE EXCEPTION 'pepnet_train needs a model name and a data query, not NULL'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF epochs IS NULL OR batch_size IS NULL OR lr IS NULL OR seed IS NULL OR shuffle_buffer IS NULL OR deploy IS NULL THEN
		RAISE EXCEPTION 'pepnet_train''s % must not be NULL', CASE WHEN epochs IS NULL THEN 'epochs' WHEN batch_size IS NULL THEN 'batch_size'
			WHEN lr IS NULL THEN 'lr' WHEN seed IS NULL THEN 'seed' WHEN shuffle_buffer IS NULL THEN 'shuffle_buffer' ELSE 'deploy' END
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave the argument out for its default.';
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
			best_raw := (val OPERATOR(pg_catalog.->) 'tasks' OPERATOR(pg_catalog.->) task OPERATOR(pg_catalog.->>) metric)::float8;
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
		-- the deploy history records the selection figure (pepnet.deploy_history.metric)
		PERFORM pepnet._deploy(base, best_v, CASE WHEN validation IS NULL THEN 'version'
			ELSE 'best|' OPERATOR(pg_catalog.||) pepnet._deploy_figure(COALESCE(selection, 'logloss'), best_raw, 'validation') END);
		IF validation IS NULL THEN
			RAISE NOTICE 'pepnet_train "%": deployed version % (the last: no validation query to choose by)', base, best_v;
		ELSE
			RAISE NOTICE 'pepnet_train "%": deployed version % (best validation % of task "%")', base, best_v,
				COALESCE(metric, '-'), COALESCE(task, '-');
		END IF;
		COMMIT;
	END IF;
END $$;

-- == workflow: pruning optimizer state ==

/*
 * pepnet_prune_optimizer(name, keep_latest, versions): deletes the Adam state (pepnet.optimizer_state
 * and its pepnet.optimizer_chunks) of versions of name that will not be continued, and returns one
 * row per version pruned with the bytes of state deleted.  Policy: without versions, every version
 * with state except the keep_latest highest ones (default 1) and the deployed one; with versions,
 * exactly those (keep_latest is not applied).  Scoring never reads the state; training continued
 * from a pruned version starts Adam afresh (its metrics say resumed_steps 0).  Space comes back to the tables'
 * free space after VACUUM (to the operating system after VACUUM FULL).
 * Needs SELECT, DELETE on pepnet.optimizer_state.
 */
CREATE FUNCTION pepnet_prune_optimizer(name text, keep_latest int DEFAULT 1, versions int[] DEFAULT NULL)
	RETURNS TABLE (version int, bytes bigint)
LANGUAGE plpgsql VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM pepnet._require_writable('pepnet_prune_optimizer');
	IF pepnet_prune_optimizer.name IS NULL THEN
		RAISE EXCEPTION 'pepnet_prune_optimizer needs a model name, not NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	IF keep_latest IS NULL THEN
		RAISE EXCEPTION 'pepnet_prune_optimizer''s keep_latest must not be NULL' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'Leave it out for 1 (the highest version keeps its state), or give versions => ARRAY[...] to prune exactly those.';
	END IF;
	IF keep_latest < 0 THEN
		RAISE EXCEPTION 'keep_latest must be 0 or more versions, got %', keep_latest
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF array_position(versions, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'pepnet_prune_optimizer''s versions has a NULL element' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- the rights it needs, before any read (no internal statement in the error)
	IF NOT (has_schema_privilege('pepnet', 'USAGE') AND has_table_privilege('pepnet.models', 'SELECT')
			AND has_table_privilege('pepnet.optimizer_state', 'SELECT') AND has_table_privilege('pepnet.optimizer_state', 'DELETE')) THEN
		RAISE EXCEPTION 'permission denied to prune the optimizer state of model "%"', pepnet_prune_optimizer.name
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'pepnet_prune_optimizer needs USAGE on schema pepnet, SELECT on pepnet.models and SELECT, DELETE on pepnet.optimizer_state.',
				  HINT = 'Run it as the role that trains the model, or GRANT SELECT, DELETE ON pepnet.optimizer_state.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pepnet.models m WHERE m.name = pepnet_prune_optimizer.name) THEN
		RAISE EXCEPTION 'model "%" does not exist', pepnet_prune_optimizer.name
			USING ERRCODE = 'undefined_object';
	END IF;
	IF versions IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(versions) v WHERE NOT EXISTS (
			SELECT 1 FROM pepnet.models m WHERE m.name = pepnet_prune_optimizer.name AND m.version = v)) THEN
		RAISE EXCEPTION 'model "%" has no version %', pepnet_prune_optimizer.name,
			(SELECT v FROM unnest(versions) v WHERE NOT EXISTS (
				SELECT 1 FROM pepnet.models m WHERE m.name = pepnet_prune_optimizer.name AND m.version = v) LIMIT 1)
			USING ERRCODE = 'undefined_object';
	END IF;
	RETURN QUERY
	WITH doomed AS (
		SELECT o.version FROM pepnet.optimizer_state o
		WHERE o.name = pepnet_prune_optimizer.name
		  AND CASE WHEN versions IS NOT NULL THEN o.version = ANY (versions)
				   ELSE o.version NOT IN (SELECT k.version FROM pepnet.optimizer_state k
										  WHERE k.name = pepnet_prune_optimizer.name
										  ORDER BY k.version DESC LIMIT keep_latest)
						AND o.version IS DISTINCT FROM (SELECT d.version FROM pepnet.deployments d
														WHERE d.name = pepnet_prune_optimizer.name) END
		FOR UPDATE),
	sized AS (
		SELECT o.version, COALESCE(length(o.adam_m), 0)::bigint + COALESCE(length(o.adam_v), 0)
			   + COALESCE((SELECT sum(length(c.data)) FROM pepnet.optimizer_chunks c
						   WHERE c.name = o.name AND c.version = o.version), 0)::bigint AS bytes
		FROM pepnet.optimizer_state o JOIN doomed USING (version) WHERE o.name = pepnet_prune_optimizer.name),
	gone AS (
		DELETE FROM pepnet.optimizer_state o USING doomed
		WHERE o.name = pepnet_prune_optimizer.name AND o.version = doomed.version
		RETURNING o.version)
	SELECT s.version, s.bytes FROM sized s JOIN gone USING (version) ORDER BY 1;
END $$;

-- == workflow: checking data before training ==

/*
 * pepnet_check_data(data, config, model): reads every row of a data query as pepnet_train reads
 * it, against a config or a stored version, without training: a faulty row raises the error
 * training would (naming the row), before any work; else a summary per domain and task (domain
 * NULL: all domains) of rows, rows with a known label, positives and the actual rate, and
 * WARNINGs for unused columns, domains without rows and groups of one class.
 */
CREATE FUNCTION pepnet_check_data(data text, config jsonb DEFAULT NULL, model text DEFAULT NULL)
	RETURNS TABLE (domain int, task text, rows bigint, labeled bigint, positives bigint, actual float8)
	AS 'MODULE_PATHNAME', 'pepnet_check_data' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;

-- == workflow: training progress on every server ==

/*
 * A training backend's pg_stat_activity.query shows its progress on every server (src/progress.c):
 *   CALL pepnet_train -- "m": epoch 2 of 3, 4200 rows, loss 0.41234, 2100 rows/s
 *   <the statement>
 * pepnet.training_progress shows, besides the shared-memory rows (shared_preload_libraries =
 * 'pepnet'), the trainings it finds there: without preload every training the caller may see in
 * pg_stat_activity (its own role's, or all with pg_read_all_stats), with model, epoch, epochs,
 * rows_done, rows_per_s and loss; the columns only shared memory knows (parent, epoch_rows,
 * rows_total, validation figures, eta) NULL.  security_invoker: pg_stat_activity's visibility
 * rules are the caller's.
 */
CREATE OR REPLACE VIEW pepnet.training_progress WITH (security_invoker = true) AS
WITH shm AS (SELECT * FROM pepnet_training_progress())
SELECT * FROM shm
UNION ALL
SELECT a.pid, a.datid, p.m[1], NULL::int, p.m[2]::int, NULLIF(p.m[3], '?')::int, p.m[4]::bigint, NULL::bigint,
	   NULL::bigint, p.m[6]::float8, p.m[5]::float8, NULL::float8, NULL::float8, a.query_start, a.state_change,
	   NULL::timestamptz
FROM pg_catalog.pg_stat_activity a,
	 LATERAL (SELECT pg_catalog.regexp_match(a.query,
		'^CALL pepnet_train -- "([^\n]*)": epoch ([0-9]+) of ([0-9]+|\?), (?:([0-9]+) rows, loss ([^,\n]+), ([0-9.]+) rows/s)?') AS m) p
WHERE a.state = 'active' AND p.m IS NOT NULL AND a.pid NOT IN (SELECT shm.pid FROM shm);
COMMENT ON VIEW pepnet.training_progress IS 'pepnet: running trainings and their progress (all figures with shared_preload_libraries = ''pepnet'', else from pg_stat_activity)';

-- == fixes: verify, shared memory, 'best', SQLSTATEs, soak (issue 15 items 4, 5, 6, 8) ==
-- ('best' over comparable versions only is in pepnet_deploy(name, strategy, metric, evaluation)
-- above; a deploy losing a race with a DELETE of its version gets 42704 from the version guard)

/*
 * The soak test's account of shared memory: the shared cache's DSA area as the area itself sees
 * it (segments, free pages, live spans), written to the server log.
 */
CREATE FUNCTION pepnet._shared_cache_dump() RETURNS boolean
	AS 'MODULE_PATHNAME', 'pepnet_shared_cache_dump' LANGUAGE C VOLATILE CALLED ON NULL INPUT PARALLEL UNSAFE;
REVOKE ALL ON FUNCTION pepnet._shared_cache_dump() FROM PUBLIC;

/*
 * SQLSTATEs as docs/api.md gives them: pepnet_deploy of a name longer than 63 characters is
 * 42622 (as everywhere), its message shortened, instead of 42704 echoing the name.
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
	PERFORM pepnet._deploy_check(pepnet_deploy.name, pepnet_deploy.version::text);
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

-- == plans that stay sane: row estimates of the set-returning scorers ==

-- Planner support (SupportRequestRows) of both pepnet_score forms: when features is a constant
-- array (a literal, ARRAY[...] of constants, a custom plan's parameter value) the estimate is its
-- number of candidates (first dimension of a 2-D array, 1 for a 1-D array, 0 for '{}'); any other
-- features expression keeps the declared ROWS 100.
CREATE FUNCTION pepnet._score_support(internal) RETURNS internal
	AS 'MODULE_PATHNAME', 'pepnet_score_support' LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
ALTER FUNCTION pepnet_score(text, int, bigint[], bigint[], real[]) SUPPORT pepnet._score_support;
ALTER FUNCTION pepnet_score(int, bigint[], bigint[], real[]) SUPPORT pepnet._score_support;
-- pepnet_score_query: when the data query is a constant text, the estimate is the planner's row
-- estimate of that query (planned in a subtransaction; one that does not parse or plan keeps the
-- declared ROWS 1000 and fails at run time as before).
CREATE FUNCTION pepnet._score_query_support(internal) RETURNS internal
	AS 'MODULE_PATHNAME', 'pepnet_score_query_support' LANGUAGE C STRICT VOLATILE PARALLEL UNSAFE;
ALTER FUNCTION pepnet_score_query(text, text) SUPPORT pepnet._score_query_support;

-- == named inputs (issue 16): scoring by name ==

-- The first task's probability of one row of any query whose columns carry the version's fields
-- (config "inputs": "columns"), e.g. SELECT pepnet_predict('ctr', c) FROM (SELECT ...) c.  The
-- binding of the row type to the fields is made on the first row and kept for the statement.
CREATE FUNCTION pepnet_predict(model text, candidate record) RETURNS float8
	AS 'MODULE_PATHNAME', 'pepnet_predict_row' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1000;

-- An array of rows scored in one call (grouped by domain and persona into requests of the batched
-- engine, as pepnet_score's), each row returned as it came in, in array order:
--   SELECT (s.candidate).item_id, s.score
--   FROM pepnet_score_rows('ctr', ARRAY(SELECT c FROM candidates c WHERE c.user_id = 42)) s
--   ORDER BY s.score DESC LIMIT 20;
CREATE FUNCTION pepnet_score_rows(model text, candidates anyarray)
	RETURNS TABLE (candidate anyelement, score float8, scores float8[])
	AS 'MODULE_PATHNAME', 'pepnet_score_rows' LANGUAGE C STABLE CALLED ON NULL INPUT PARALLEL SAFE ROWS 100;

-- == pinned references: scoring by name ==

/*
 * pepnet_predict(pepnet_pinned, candidate record): the by-name form (config "inputs": "columns")
 * of the pinned pepnet_predict, with the guarantees of the arrays form: IMMUTABLE, not STRICT,
 * PARALLEL SAFE, COST 1000; this node's version must have the pin's fingerprint (55000); plans
 * into which it was folded depend on the role and on pepnet.models (src/scaleout.c); a version of
 * the arrays form is refused as by pepnet_predict(text, record) (22023).
 */
CREATE FUNCTION pepnet_predict(model pepnet_pinned, candidate record) RETURNS float8
	AS 'MODULE_PATHNAME', 'pepnet_pinned_predict_row' LANGUAGE C IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE COST 1000;


-- ---------------------------------------------------------------------------------------------
-- The shared-bottom baseline (issue 16, item 6): a config with "domain_input": true names it in
-- its parts, after the parts switched on ('mlp+domain_input' is the shared bottom), so that
-- pepnet.runs tells it from every part off ('mlp')
CREATE OR REPLACE FUNCTION pepnet._config_parts(config jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT COALESCE(string_agg(p, '+' ORDER BY o), 'mlp')
		|| CASE WHEN config ->> 'domain_input' = 'true' THEN '+domain_input' ELSE '' END
	FROM unnest(ARRAY['star', 'pn', 'epnet', 'ppnet', 'aux']) WITH ORDINALITY AS u(p, o)
	WHERE COALESCE(config ->> p, 'true') <> 'false'
$$;

-- ---------------------------------------------------------------------------------------------
-- A stored version's config given to pepnet_train ('"ctr@3"', alone or in a grid): a new config,
-- trained from fresh weights, so it takes from the new data what a new config takes from its data.
-- The z-score statistics ("mean", "std" of dense fields) are left out here and computed again from
-- the data query before the first step, as min_count fields' vocabularies are built again from it
-- (their stored "buckets", V + 1, stays their most rows).  A field's "id" kind stays: it is the
-- column's type, part of the feature spec, not a statistic of the rows (another kind is 42804).
CREATE OR REPLACE FUNCTION pepnet._config_of(model text) RETURNS jsonb
LANGUAGE plpgsql STABLE CALLED ON NULL INPUT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pin text[] := regexp_match(@extschema@.pepnet_pin(model)::text, '^(.*)@([0-9]+)#[0-9a-f]+$');
	cfg jsonb;
BEGIN
	SELECT m.config INTO cfg FROM pepnet.models m WHERE m.name = pin[1] AND m.version = pin[2]::int;
	IF jsonb_typeof(cfg -> 'dense') = 'array' THEN
		cfg := jsonb_set(cfg, '{dense}',
			(SELECT COALESCE(jsonb_agg(CASE WHEN jsonb_typeof(d.f) = 'object' THEN d.f - 'mean' - 'std' ELSE d.f END
									   ORDER BY d.o), '[]')
			 FROM jsonb_array_elements(cfg -> 'dense') WITH ORDINALITY AS d(f, o)));
	END IF;
	RETURN cfg;
END $$;
