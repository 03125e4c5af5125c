-- Pinned references for the named form (since 0.3.0): pepnet_predict(pepnet_pinned, candidate
-- record) scores as pepnet_predict(text, record), with the guarantees of the pinned arrays form:
-- IMMUTABLE, the fingerprint checked on this node, plans that folded it replanned for another role,
-- no stored generated column, index or constraint over it, the form of the version checked.
SET client_min_messages = warning;
CREATE FUNCTION pinned_named_err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN  -- messages name the node (cluster_name or port): not in the output
	RETURN regexp_replace(SQLSTATE || ': ' || SQLERRM, 'this node \([^)]*\)', 'this node (N)');
END $$;
SELECT pepnet_create('pinned_named_m', '{"inputs": "columns", "domains": 2, "features": [{"name": "item", "buckets": 50}, {"name": "cat", "buckets": 16}], "persona": [{"name": "user_id", "buckets": 20}], "dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8]}', s) AS created
FROM generate_series(1, 2) s;
SELECT pepnet_create('pinned_named_a', '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "emb_dim": 4, "hidden": [8]}', 1) AS created_arrays;
DROP ROLE IF EXISTS regress_pinned_named_reader;
CREATE ROLE regress_pinned_named_reader;
GRANT USAGE ON SCHEMA pepnet TO regress_pinned_named_reader;
RESET client_min_messages;

SELECT p.provolatile, p.proisstrict, p.proparallel, p.procost, pg_get_function_arguments(p.oid) AS args
FROM pg_proc p WHERE p.prosrc IN ('pepnet_pinned_predict', 'pepnet_pinned_predict_row') ORDER BY p.prosrc;

CREATE TABLE pinned_named_c AS
SELECT g AS id, g % 2 AS domain, g % 50 AS item, 'c' || (g % 7) AS cat, (g % 13)::bigint AS user_id,
       (g % 10) / 10.0 AS price
FROM generate_series(1, 200) g;

-- the same scores as the text form, for 'name@N' and the long form; other versions score otherwise
SELECT count(*) AS rows,
       bool_and(pepnet_predict('pinned_named_m@1'::pepnet_pinned, c) = pepnet_predict('pinned_named_m@1', c)) AS equal_text_form,
       bool_and(pepnet_predict(pepnet_pin('pinned_named_m@1'), c) = pepnet_predict('pinned_named_m@1', c)) AS equal_pin,
       bool_and(pepnet_predict(pepnet_pin('pinned_named_m@1')::text::pepnet_pinned, c) = pepnet_predict('pinned_named_m@1', c)) AS equal_long_form,
       bool_or(pepnet_predict('pinned_named_m@2'::pepnet_pinned, c) <> pepnet_predict('pinned_named_m@1', c)) AS versions_differ,
       count(DISTINCT pepnet_predict('pinned_named_m@1'::pepnet_pinned, c)) > 50 AS varied
FROM pinned_named_c c;
-- the deployed version changes nothing: the pin names its version
SELECT pepnet_deploy('pinned_named_m', 2);
SELECT bool_and(pepnet_predict('pinned_named_m@1'::pepnet_pinned, c) = pepnet_predict('pinned_named_m@1', c)) AS pin_holds,
       bool_and(pepnet_predict(pepnet_pin('pinned_named_m'), c) = pepnet_predict('pinned_named_m', c)) AS deployed_pinned
FROM pinned_named_c c;
-- a row of a subquery (an anonymous record), columns in any order, extra columns ignored
SELECT max(abs(pepnet_predict('pinned_named_m@1'::pepnet_pinned, s) - pepnet_predict('pinned_named_m@1', c))) = 0 AS reordered_same
FROM pinned_named_c c JOIN LATERAL (SELECT c.price, c.cat, now() AS extra, c.user_id, c.item, c.domain) s ON true;
-- a parameter of a prepared statement
PREPARE pinned_named_param(pepnet_pinned) AS
	SELECT count(*) FILTER (WHERE pepnet_predict($1, c) = pepnet_predict('pinned_named_m@1', c)) AS equal FROM pinned_named_c c;
EXECUTE pinned_named_param('pinned_named_m@1');
DEALLOCATE pinned_named_param;

-- errors: the fingerprint (55000), a missing version (42704), NULLs (22004), the form (22023)
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_m@1#$$ || repeat('ab', 32) || $$'::pepnet_pinned, c) FROM pinned_named_c c$$) AS wrong_fingerprint;
SELECT pinned_named_err($$SELECT pepnet_predict((SELECT pepnet_pin('pinned_named_m@2')::text FROM pinned_named_c LIMIT 1)::pepnet_pinned, c) FROM pinned_named_c c$$) LIKE 'no error' AS runtime_pin_ok;
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_m@9'::pepnet_pinned, c) FROM pinned_named_c c$$) AS no_such_version;
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_m@9#$$ || repeat('0', 64) || $$'::pepnet_pinned, c) FROM pinned_named_c c$$) AS gone_version;
SELECT pinned_named_err($$SELECT pepnet_predict(NULL::pepnet_pinned, c) FROM pinned_named_c c$$) AS null_model;
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_m@1'::pepnet_pinned, NULL::record)$$) AS null_row;
-- an arrays version given to the by-name form, and a named version to the arrays form: as the text forms
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_a@1'::pepnet_pinned, c) FROM pinned_named_c c$$) AS arrays_version_by_name,
       pinned_named_err($$SELECT pepnet_predict('pinned_named_a@1', c) FROM pinned_named_c c$$) AS text_form;
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_m@1'::pepnet_pinned, 0, '{1}', '{3, 4}', '{0.5}')$$) AS named_version_by_arrays,
       pinned_named_err($$SELECT pepnet_predict('pinned_named_m@1', 0, '{1}', '{3, 4}', '{0.5}')$$) AS text_form;
-- a missing column is the text form's error
SELECT pinned_named_err($$SELECT pepnet_predict('pinned_named_m@1'::pepnet_pinned, c) FROM (SELECT id, domain, item, user_id, price FROM pinned_named_c) c$$) AS missing_column;

-- a statement prepared (and run: a generic plan, folded) by the owner, run after SET ROLE by a role
-- without SELECT on pepnet.models: planned again as that role, refused
CREATE TYPE pinned_named_row AS (domain int, item int, cat text, user_id bigint, price numeric);
PREPARE pinned_named_owner AS
	SELECT pepnet_predict('pinned_named_m@1'::pepnet_pinned, '(1,3,c2,4,0.5)'::pinned_named_row) > 0 AS scored;
EXECUTE pinned_named_owner;
EXECUTE pinned_named_owner;
EXPLAIN (COSTS OFF, VERBOSE) EXECUTE pinned_named_owner;
SET ROLE regress_pinned_named_reader;
EXECUTE pinned_named_owner;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
EXECUTE pinned_named_owner;
-- prepared by the reader while it may read, run after REVOKE: refused
GRANT SELECT ON pepnet.models TO regress_pinned_named_reader;
SET ROLE regress_pinned_named_reader;
PREPARE pinned_named_reader AS
	SELECT pepnet_predict('pinned_named_m@1'::pepnet_pinned, '(1,3,c2,4,0.5)'::pinned_named_row) > 0 AS scored;
EXECUTE pinned_named_reader;
EXECUTE pinned_named_reader;
RESET ROLE;
REVOKE SELECT ON pepnet.models FROM regress_pinned_named_reader;
SET ROLE regress_pinned_named_reader;
EXECUTE pinned_named_reader;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- a plpgsql function planned by the owner, run by the reader
CREATE FUNCTION pinned_named_ret() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RETURN pepnet_predict('pinned_named_m@1'::pepnet_pinned, '(1,3,c2,4,0.5)'::pinned_named_row) > 0; END $$;
SELECT pinned_named_ret(), pinned_named_ret();
SET ROLE regress_pinned_named_reader;
SELECT pinned_named_ret();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- refused: what would make a table's rows depend on pepnet's (dump/restore, deleted versions)
CREATE TABLE pinned_named_gen (domain int, item int, cat text, user_id bigint, price numeric,
	score float8 GENERATED ALWAYS AS (pepnet_predict('pinned_named_m@1'::pepnet_pinned, ROW(domain, item, cat, user_id, price)::pinned_named_row)) STORED);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE pinned_named_t (domain int, item int, cat text, user_id bigint, price numeric);
ALTER TABLE pinned_named_t ADD COLUMN score float8 GENERATED ALWAYS AS (pepnet_predict('pinned_named_m@1'::pepnet_pinned, ROW(domain, item, cat, user_id, price)::pinned_named_row)) STORED;
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX pinned_named_idx ON pinned_named_t ((pepnet_predict('pinned_named_m@1'::pepnet_pinned, ROW(domain, item, cat, user_id, price)::pinned_named_row)));
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE pinned_named_t ADD CONSTRAINT pinned_named_check CHECK (pepnet_predict('pinned_named_m@1'::pepnet_pinned, ROW(domain, item, cat, user_id, price)::pinned_named_row) > 0);
\echo :LAST_ERROR_SQLSTATE
CREATE DOMAIN pinned_named_dom AS pinned_named_row CHECK (pepnet_predict('pinned_named_m@1'::pepnet_pinned, VALUE) > 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS left_behind FROM pg_class WHERE relname IN ('pinned_named_gen', 'pinned_named_idx');
SELECT count(*) AS left_behind FROM pg_type WHERE typname = 'pinned_named_dom';
-- what works: a plain column filled by UPDATE, a materialized view
ALTER TABLE pinned_named_c ADD COLUMN score float8;
UPDATE pinned_named_c c SET score = pepnet_predict('pinned_named_m@1'::pepnet_pinned, c);
CREATE MATERIALIZED VIEW pinned_named_mv AS
	SELECT id, pepnet_predict('pinned_named_m@1'::pepnet_pinned, c) AS score FROM pinned_named_c c;
SELECT count(*) AS rows, count(*) FILTER (WHERE c.score = m.score AND c.score = pepnet_predict('pinned_named_m@1', c)) AS equal
FROM pinned_named_c c JOIN pinned_named_mv m USING (id);

DROP MATERIALIZED VIEW pinned_named_mv;
DROP FUNCTION pinned_named_ret();
DEALLOCATE pinned_named_owner;
DEALLOCATE pinned_named_reader;
DROP TABLE pinned_named_c, pinned_named_t;
DROP TYPE pinned_named_row;
DROP FUNCTION pinned_named_err(text);
REVOKE ALL ON SCHEMA pepnet FROM regress_pinned_named_reader;
DROP ROLE regress_pinned_named_reader;
