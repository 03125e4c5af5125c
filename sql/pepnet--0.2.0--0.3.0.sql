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
 * The pinned pepnet_predict stays IMMUTABLE (postgres_fdw ships only IMMUTABLE functions; README,
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
		WHERE p.prosrc = 'pepnet_pinned_predict')
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
