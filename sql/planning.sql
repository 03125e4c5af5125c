-- Row estimates of pepnet_score (planner support function, SupportRequestRows): the number of
-- candidates when features is known at plan time, so that joins over the scores get sane plans.
-- Only plans are looked at (EXPLAIN without ANALYZE): no model is needed.

CREATE FUNCTION plan_of(q text) RETURNS json LANGUAGE plpgsql AS $$
DECLARE j json;
BEGIN
	EXECUTE 'EXPLAIN (FORMAT JSON, COSTS ON) ' || q INTO j;
	RETURN j -> 0 -> 'Plan';
END $$;

-- every node of a plan, depth first
CREATE FUNCTION plan_nodes(p json) RETURNS SETOF json LANGUAGE sql AS $$
	WITH RECURSIVE n(node) AS (
		SELECT p
		UNION ALL
		SELECT c FROM n, json_array_elements(COALESCE(n.node -> 'Plans', '[]')) c)
	SELECT node FROM n
$$;

-- the estimate of the Function Scan on pepnet_score in the plan of q
CREATE FUNCTION score_rows(q text) RETURNS float8 LANGUAGE sql AS $$
	SELECT (node ->> 'Plan Rows')::float8 FROM plan_nodes(plan_of(q)) node
	WHERE node ->> 'Node Type' = 'Function Scan' AND node ->> 'Function Name' = 'pepnet_score'
$$;

-- a constant N x 8 features literal and the N ids that go with it
CREATE FUNCTION feats_lit(n int) RETURNS text LANGUAGE sql AS $$
	SELECT quote_literal('{' || string_agg('{' || i || ',1,2,3,4,5,6,7}', ',') || '}') || '::bigint[]'
	FROM generate_series(1, n) i
$$;
CREATE FUNCTION ids_lit(n int) RETURNS text LANGUAGE sql AS $$
	SELECT quote_literal('{' || string_agg((1000 + i)::text, ',') || '}') || '::bigint[]'
	FROM generate_series(1, n) i
$$;

-- constant features: the first dimension (2-D), 1 (1-D: one candidate), 0 rows for '{}' (the
-- planner shows at least 1)
SELECT score_rows($$SELECT * FROM pepnet_score('m', 0, '{1,2}', '{{1,2,3},{4,5,6},{7,8,9}}')$$) AS three;
SELECT score_rows('SELECT * FROM pepnet_score(''m'', 0, ''{1,2}'', ' || feats_lit(2500) || ')') AS n2500;
SELECT score_rows($$SELECT * FROM pepnet_score('m', 0, '{1,2}', '{1,2,3}')$$) AS one_candidate;
SELECT score_rows($$SELECT * FROM pepnet_score('m', 0, '{1,2}', '{}')$$) AS empty;
-- the short form (model from pepnet.model), named arguments, ARRAY[...] constructors
SELECT score_rows($$SELECT * FROM pepnet_score(0, '{1,2}', '{{1,2},{3,4},{5,6},{7,8}}')$$) AS short_form;
SELECT score_rows($$SELECT * FROM pepnet_score('m', 0, features => ARRAY[[1,2],[3,4]]::bigint[])$$) AS named;
SELECT score_rows($$SELECT * FROM generate_series(1, 3) g,
	LATERAL pepnet_score('m', 0, '{1,2}', ARRAY[[g, 1], [g, 2], [g, 3], [g, 4], [g, 5]]::bigint[])$$) AS array_rows;
-- a custom plan of a prepared statement sees the parameter's value
PREPARE q(bigint[]) AS SELECT * FROM pepnet_score('m', 0, '{1,2}', $1);
SET plan_cache_mode = force_custom_plan;
CREATE TEMP TABLE explained (j json);
DO $$ DECLARE j json; BEGIN
	EXECUTE 'EXPLAIN (FORMAT JSON) EXECUTE q(''{{1,2},{3,4},{5,6},{7,8},{9,10},{11,12}}'')' INTO j;
	INSERT INTO explained VALUES (j);
END $$;
SELECT (j -> 0 -> 'Plan' ->> 'Plan Rows')::int AS custom_plan FROM explained;
RESET plan_cache_mode;
DEALLOCATE q;
-- features not known at plan time: the declared ROWS 100
CREATE TEMP TABLE requests (features bigint[]);
SELECT score_rows($$SELECT * FROM requests r, LATERAL pepnet_score('m', 0, '{1,2}', r.features)$$) AS from_a_column;
SELECT score_rows($$SELECT * FROM pepnet_score('m', 0, '{1,2}', (SELECT array_agg(x) FROM generate_series(1, 5) x))$$) AS from_a_subquery;

-- The join of every score to its ids by position (issue 18: estimates 100 and 10 gave a nested
-- loop over 100,000 x 100,000 rows).  With 2,500 constant candidates on both sides the planner
-- knows the sizes and joins by hash.
CREATE FUNCTION join_plan(n int) RETURNS json LANGUAGE sql AS $$
	SELECT plan_of('SELECT u.id, s.score FROM pepnet_score(''m'', 0, ''{1,2}'', ' || feats_lit(n) || ') s '
				   'JOIN unnest(' || ids_lit(n) || ') WITH ORDINALITY u(id, ord) ON s.idx = u.ord '
				   'ORDER BY s.score DESC LIMIT 20')
$$;
SELECT count(*) AS joins, bool_and(node ->> 'Node Type' IN ('Hash Join', 'Merge Join')) AS hash_or_merge
FROM plan_nodes(join_plan(2500)) node WHERE node ->> 'Node Type' IN ('Hash Join', 'Merge Join', 'Nested Loop');
SELECT (node ->> 'Plan Rows')::int AS scan_rows, node ->> 'Function Name' AS function
FROM plan_nodes(join_plan(2500)) node WHERE node ->> 'Node Type' = 'Function Scan' ORDER BY 2;
-- the safe top-k form without a join: the id by subscript of idx (docs/api.md)
SELECT node ->> 'Node Type' AS node, (node ->> 'Plan Rows')::int AS plan_rows
FROM plan_nodes(plan_of('SELECT (' || ids_lit(2500) || ')[s.idx] AS id, s.score FROM pepnet_score(''m'', 0, ''{1,2}'', '
						|| feats_lit(2500) || ') s ORDER BY s.score DESC LIMIT 20')) node;

-- pepnet_score_query: the estimate of a constant data query is the planner's estimate of it
CREATE TABLE planning_cands AS SELECT i AS id, 1 AS domain, '{1,2}'::bigint[] AS persona, ARRAY[i, 1, 2]::bigint[] AS features
	FROM generate_series(1, 4321) i;
ANALYZE planning_cands;
CREATE FUNCTION query_rows(data text) RETURNS float8 LANGUAGE sql AS $$
	SELECT (node ->> 'Plan Rows')::float8
	FROM plan_nodes(plan_of(format('SELECT * FROM pepnet_score_query(%L, %L) AS t(id int, score float8, scores float8[])',
								   'm', data))) node
	WHERE node ->> 'Node Type' = 'Function Scan'
$$;
SELECT query_rows('SELECT id, domain, persona, features FROM planning_cands') AS whole_table,
	   query_rows('SELECT id, domain, persona, features FROM planning_cands WHERE id <= 100') AS where_clause,
	   query_rows('SELECT id, domain, persona, features FROM planning_cands LIMIT 20') AS limited;
-- a data query that does not parse or plan keeps the declared ROWS 1000, and planning goes on
-- (the call fails when it runs, as before)
SELECT query_rows('SELEC id FROM planning_cands') AS syntax_error, query_rows('SELECT * FROM no_such_table') AS no_table,
	   query_rows('SELECT 1 / 0 AS id') AS fails_when_folded, query_rows('DELETE FROM planning_cands') AS not_a_select;
SELECT count(*) AS rows_kept FROM planning_cands;
BEGIN;
SELECT query_rows('SELECT * FROM no_such_table') AS in_a_transaction;
SELECT count(*) AS transaction_still_usable FROM planning_cands;
COMMIT;
-- a role that may not read the table gets the declared 1000, not the table's statistics
CREATE ROLE regress_pepnet_planning;
GRANT USAGE ON SCHEMA public TO regress_pepnet_planning;
SET ROLE regress_pepnet_planning;
SELECT query_rows('SELECT id, domain, persona, features FROM planning_cands WHERE id <= 100') AS without_select_right;
RESET ROLE;
GRANT SELECT ON planning_cands TO regress_pepnet_planning;
SET ROLE regress_pepnet_planning;
SELECT query_rows('SELECT id, domain, persona, features FROM planning_cands WHERE id <= 100') AS with_select_right;
RESET ROLE;
REVOKE ALL ON planning_cands FROM regress_pepnet_planning;
REVOKE USAGE ON SCHEMA public FROM regress_pepnet_planning;
DROP ROLE regress_pepnet_planning;
-- the data query from a column: not known at plan time
CREATE TEMP TABLE jobs (data text);
SELECT (node ->> 'Plan Rows')::int AS from_a_column FROM plan_nodes(plan_of(
	'SELECT * FROM jobs, pepnet_score_query(''m'', jobs.data) AS t(id int, score float8, scores float8[])')) node
WHERE node ->> 'Node Type' = 'Function Scan';
-- a join to the scored rows on a key: sizes known on both sides, no nested loop
SELECT bool_and(node ->> 'Node Type' <> 'Nested Loop') AS no_nested_loop, count(*) FILTER (WHERE node ->> 'Node Type' IN ('Hash Join', 'Merge Join')) AS joins
FROM plan_nodes(plan_of('SELECT c.id, t.score FROM pepnet_score_query(''m'', ''SELECT id, domain, persona, features FROM planning_cands'') '
						'AS t(id int, score float8, scores float8[]) JOIN planning_cands c ON c.id = t.id ORDER BY t.score DESC LIMIT 20')) node;

-- the support functions are attached to the scorers and only to them
SELECT p.oid::regprocedure AS scorer, p.prosupport
FROM pg_proc p WHERE p.prosupport IN ('pepnet._score_support'::regproc, 'pepnet._score_query_support'::regproc)
ORDER BY 1::text;

DROP TABLE planning_cands;
DROP FUNCTION plan_of(text), plan_nodes(json), score_rows(text), feats_lit(int), ids_lit(int), join_plan(int),
	query_rows(text);
