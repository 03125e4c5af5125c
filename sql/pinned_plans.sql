-- The pinned pepnet_predict is IMMUTABLE (postgres_fdw ships it to shards), so PostgreSQL may
-- evaluate it once while planning.  A plan into which it was folded depends on the role and on
-- pepnet.models: a cached plan (prepared statement, plpgsql) is planned again, and the privileges
-- and row-level security of pepnet.models checked again, when another role runs it or after a
-- GRANT, REVOKE or policy change.  What would make a table depend on pepnet's rows (a stored
-- generated column, an index, a constraint) is refused when created (since 0.3.0).
SET client_min_messages = warning;
SELECT pepnet_create('pp', '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "emb_dim": 4, "hidden": [8]}', 1) AS created;
SELECT provolatile AS pinned_volatility FROM pg_proc WHERE prosrc = 'pepnet_pinned_predict';
DROP ROLE IF EXISTS regress_pinned_reader;
CREATE ROLE regress_pinned_reader;
GRANT USAGE ON SCHEMA pepnet TO regress_pinned_reader;
RESET client_min_messages;

-- a statement prepared (and run: a generic plan, folded) by the owner, run after SET ROLE by a
-- role without SELECT on pepnet.models: planned again as that role, refused
PREPARE owner_stmt AS SELECT pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, '{3}') > 0 AS scored;
EXECUTE owner_stmt;
EXECUTE owner_stmt;
EXPLAIN (COSTS OFF, VERBOSE) EXECUTE owner_stmt;
SET ROLE regress_pinned_reader;
EXECUTE owner_stmt;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
EXECUTE owner_stmt;

-- plpgsql functions planned by the owner: a simple expression (RETURN) and a query (SELECT INTO)
CREATE FUNCTION pp_ret() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN RETURN pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, '{3}') > 0; END $$;
CREATE FUNCTION pp_into() RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE s float8;
BEGIN SELECT pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, '{3}') INTO s; RETURN s > 0; END $$;
SELECT pp_ret(), pp_into(), pp_ret(), pp_into();
SET ROLE regress_pinned_reader;
SELECT pp_ret();
\echo :LAST_ERROR_SQLSTATE
SELECT pp_into();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- prepared by the reader while it may read, run after REVOKE: refused
GRANT SELECT ON pepnet.models TO regress_pinned_reader;
SET ROLE regress_pinned_reader;
PREPARE reader_stmt AS SELECT pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, '{3}') > 0 AS scored;
EXECUTE reader_stmt;
EXECUTE reader_stmt;
SELECT pp_ret(), pp_into();
RESET ROLE;
REVOKE SELECT ON pepnet.models FROM regress_pinned_reader;
SET ROLE regress_pinned_reader;
EXECUTE reader_stmt;
\echo :LAST_ERROR_SQLSTATE
SELECT pp_ret();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- row-level security on pepnet.models: a policy that hides the version from the reader holds in
-- the owner's cached plan too
GRANT SELECT ON pepnet.models TO regress_pinned_reader;
CREATE POLICY regress_hide_pp ON pepnet.models FOR SELECT TO regress_pinned_reader USING (name <> 'pp');
CREATE POLICY regress_owner_all ON pepnet.models TO CURRENT_USER USING (true) WITH CHECK (true);
ALTER TABLE pepnet.models ENABLE ROW LEVEL SECURITY;
EXECUTE owner_stmt;
SET ROLE regress_pinned_reader;
EXECUTE owner_stmt;
\echo :LAST_ERROR_SQLSTATE
EXECUTE reader_stmt;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
ALTER TABLE pepnet.models DISABLE ROW LEVEL SECURITY;
DROP POLICY regress_hide_pp ON pepnet.models;
DROP POLICY regress_owner_all ON pepnet.models;
SET ROLE regress_pinned_reader;
EXECUTE reader_stmt;
RESET ROLE;

-- refused: what would make a table's rows depend on pepnet's (dump/restore, deleted versions)
CREATE TABLE pp_cands (i int, item bigint);
INSERT INTO pp_cands SELECT i, i % 50 FROM generate_series(1, 20) i;
CREATE TABLE pp_gen (item bigint, score float8 GENERATED ALWAYS AS (pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item])) STORED);
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE pp_cands ADD COLUMN score float8 GENERATED ALWAYS AS (pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item])) STORED;
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX pp_idx ON pp_cands ((pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item])));
\echo :LAST_ERROR_SQLSTATE
CREATE INDEX pp_partial ON pp_cands (i) WHERE pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item]) > 0.5;
\echo :LAST_ERROR_SQLSTATE
ALTER TABLE pp_cands ADD CONSTRAINT pp_check CHECK (pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item]) > 0);
\echo :LAST_ERROR_SQLSTATE
CREATE DOMAIN pp_item AS bigint CHECK (pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[VALUE]) > 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS left_behind FROM pg_class WHERE relname IN ('pp_gen', 'pp_idx', 'pp_partial');

-- what works: a plain column filled by UPDATE, a materialized view, scoring at query time
ALTER TABLE pp_cands ADD COLUMN score float8;
UPDATE pp_cands SET score = pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item]);
CREATE MATERIALIZED VIEW pp_scores AS
	SELECT i, pepnet_predict('pp@1'::pepnet_pinned, 0, NULL, ARRAY[item]) AS score FROM pp_cands;
CREATE INDEX pp_scores_score ON pp_scores (score);
SELECT count(*) AS rows, count(*) FILTER (WHERE c.score = s.score AND c.score = pepnet_predict('pp@1', 0, NULL, ARRAY[c.item])) AS equal
FROM pp_cands c JOIN pp_scores s USING (i);
-- unrelated DDL is not affected
CREATE TABLE pp_other (a int GENERATED ALWAYS AS (1) STORED);
CREATE INDEX ON pp_other ((a + 1));

DROP MATERIALIZED VIEW pp_scores;
DROP TABLE pp_cands, pp_other;
DROP FUNCTION pp_ret(), pp_into();
DEALLOCATE owner_stmt;
DEALLOCATE reader_stmt;
REVOKE ALL ON pepnet.models FROM regress_pinned_reader;
REVOKE ALL ON SCHEMA pepnet FROM regress_pinned_reader;
DROP ROLE regress_pinned_reader;

-- the guard runs for the DDL of roles without USAGE on schema pepnet, and lets it through
CREATE ROLE regress_pinned_outsider;
CREATE SCHEMA regress_outside AUTHORIZATION regress_pinned_outsider;
SET ROLE regress_pinned_outsider;
CREATE TABLE regress_outside.t (a int GENERATED ALWAYS AS (2) STORED);
CREATE INDEX ON regress_outside.t ((a * 2));
ALTER TABLE regress_outside.t ADD COLUMN b int;
RESET ROLE;
DROP SCHEMA regress_outside CASCADE;
DROP ROLE regress_pinned_outsider;
