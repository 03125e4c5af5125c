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
