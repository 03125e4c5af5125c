/*
 * pepnet--0.2.0--0.3.0.sql: ALTER EXTENSION pepnet UPDATE from 0.2.0 to 0.3.0.
 *
 * Also the tail of CREATE EXTENSION's 0.3.0 script (sql/pepnet--0.3.0.sql is the preamble, the
 * 0.1.0 script and both upgrades), so a fresh 0.3.0 database and an upgraded one are the same.
 * Stored versions keep their weights, configs and scores bit for bit.
 */

\echo Use "ALTER EXTENSION pepnet UPDATE TO '0.3.0'" to load this file. \quit

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
