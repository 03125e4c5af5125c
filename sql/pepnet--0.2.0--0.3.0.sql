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
