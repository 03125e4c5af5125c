/*
 * pepnet--0.2.0--0.3.0.sql: ALTER EXTENSION pepnet UPDATE from 0.2.0 to 0.3.0.
 *
 * Also the tail of CREATE EXTENSION's 0.3.0 script (sql/pepnet--0.3.0.sql is the preamble, the
 * 0.1.0 script and both upgrades), so a fresh 0.3.0 database and an upgraded one are the same.
 * Stored versions keep their weights, configs and scores bit for bit.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.3.0'" to load this file. \quit

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
