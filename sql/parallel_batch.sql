-- pepnet_score_query in parallel workers (since 0.3.0): the leader reads the data query and deals
-- its blocks of 8,192 rows to max_parallel_workers_per_gather workers (and to itself with
-- parallel_leader_participation); the rows come out in the query's order with the serial path's
-- scores bit for bit.  (Workers need max_worker_processes room: test/pg.sh and pg_regress's
-- default of 8 give it.)
\set cfg '{"domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 30}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 1000}, {"name": "seg", "buckets": 10}], "dense": 2, "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16]}'
SELECT pepnet_create('pb', :'cfg', 5) AS v;

-- 50,000 rows (7 blocks, the last one partial), personas in runs that cross block boundaries
CREATE TABLE pb_cands AS
SELECT i AS id, 'k' || i AS tag, i % 3 AS domain, ARRAY[(i / 70) % 300, i % 10]::bigint[] AS persona,
       ARRAY[i * 7919, i % 30, i % 24]::bigint[] AS features, ARRAY[(i % 100) / 100.0, -(i % 7)]::real[] AS dense
FROM generate_series(1, 50000) i;

-- each way into a table of (position in the result, keys, scores)
CREATE FUNCTION pb_run(tbl text, query text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint;
BEGIN
  EXECUTE format('CREATE TABLE %I AS SELECT * FROM ROWS FROM (pepnet_score_query(''pb'', %L)
                  AS (id int, tag text, score float8, scores float8[])) WITH ORDINALITY AS t(id, tag, score, scores, pos)',
                 tbl, query);
  EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n;
  RETURN n;
END $$;
\set q 'SELECT id, tag, domain, persona, features, dense FROM pb_cands ORDER BY id'

SET max_parallel_workers_per_gather = 0;
SELECT pb_run('pb_serial', :'q') AS serial_rows;
SET max_parallel_workers_per_gather = 2;
SELECT pb_run('pb_par', :'q') AS parallel_rows;
SET parallel_leader_participation = off;
SELECT pb_run('pb_workers', :'q') AS workers_only_rows;
RESET parallel_leader_participation;
SET max_parallel_workers_per_gather = 7;
SELECT pb_run('pb_seven', :'q') AS seven_workers_rows;
SET max_parallel_workers = 0;
SELECT pb_run('pb_none', :'q') AS no_worker_started_rows;
RESET max_parallel_workers;
RESET max_parallel_workers_per_gather;

-- (no worker could start: max_parallel_workers = 0, the leader alone)
-- the same rows at the same positions with the same keys and bit-identical scores (all tasks)
SELECT w.tbl, count(*) AS rows,
       count(*) FILTER (WHERE p.pos = s.pos AND p.id = s.id AND p.tag = s.tag AND p.score = s.score AND p.scores = s.scores) AS identical,
       bool_and(p.pos = p.id) AS query_order
FROM (VALUES ('pb_par'), ('pb_workers'), ('pb_seven'), ('pb_none')) w(tbl),
     LATERAL (SELECT * FROM pb_par WHERE w.tbl = 'pb_par' UNION ALL SELECT * FROM pb_workers WHERE w.tbl = 'pb_workers'
              UNION ALL SELECT * FROM pb_seven WHERE w.tbl = 'pb_seven' UNION ALL SELECT * FROM pb_none WHERE w.tbl = 'pb_none') p
     FULL JOIN pb_serial s ON s.pos = p.pos
GROUP BY w.tbl ORDER BY w.tbl;
SELECT count(*) AS rows, count(DISTINCT id) AS ids, bool_and(pos = id) AS query_order FROM pb_serial;

-- an error of a row scored in a worker: its SQLSTATE, message and row, then "parallel worker"
-- (with parallel_leader_participation off every block is a worker's); the serial run says the same
\set bad 'SELECT id, tag, domain, persona, features, CASE WHEN id = 30000 THEN ARRAY[3e38, 3e38]::real[] ELSE dense END AS dense FROM pb_cands ORDER BY id'
CREATE FUNCTION pb_error(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; msg text; ctx text;
BEGIN
  PERFORM count(*) FROM pepnet_score_query('pb', query) AS t(id int, tag text, score float8, scores float8[]);
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, ctx = PG_EXCEPTION_CONTEXT;
  RETURN st || ': ' || msg || ' / ' || CASE WHEN ctx ~ 'parallel worker' THEN 'in a parallel worker' ELSE 'in the leader' END
         || ', ' || substring(ctx from 'data query row \d+');
END $$;
SET parallel_leader_participation = off;
SELECT pb_error(:'bad') AS worker_error;
SET max_parallel_workers_per_gather = 0;
SELECT pb_error(:'bad') AS serial_error;
RESET max_parallel_workers_per_gather;
RESET parallel_leader_participation;
-- a row error the leader finds while reading (an id out of range of "hour", not hashed)
SELECT pb_error('SELECT id, tag, domain, persona, CASE WHEN id = 20000 THEN ARRAY[1, 2, 99] ELSE features END AS features, dense FROM pb_cands ORDER BY id') AS read_error;

-- in INSERT ... SELECT (only the leader writes): the serial rows; a worker's error from there
CREATE TABLE pb_ins (id int, tag text, score float8, scores float8[]);
SET parallel_leader_participation = off;
INSERT INTO pb_ins SELECT * FROM pepnet_score_query('pb', :'q') AS t(id int, tag text, score float8, scores float8[]);
SELECT count(*) AS rows, bool_and(i.score = s.score AND i.scores = s.scores AND i.tag = s.tag) AS identical
FROM pb_ins i JOIN pb_serial s USING (id);
CREATE FUNCTION pb_insert_error(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE st text; ctx text;
BEGIN
  EXECUTE format('INSERT INTO pb_ins SELECT * FROM pepnet_score_query(''pb'', %L) AS t(id int, tag text, score float8, scores float8[])', query);
  RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, ctx = PG_EXCEPTION_CONTEXT;
  RETURN st || CASE WHEN ctx ~ 'parallel worker' THEN ' in a parallel worker' ELSE ' in the leader' END;
END $$;
SELECT pb_insert_error(:'bad') AS insert_worker_error;
RESET parallel_leader_participation;
SELECT count(*) AS rows_kept FROM pb_ins;

-- a data query calling a PARALLEL UNSAFE function is read in a serial run (nothing fails)
CREATE FUNCTION pb_unsafe(i int) RETURNS int LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE AS $$ BEGIN RETURN i; END $$;
SELECT count(*) AS rows, bool_and(p.score = s.score AND p.scores = s.scores AND p.id = s.id) AS identical
FROM ROWS FROM (pepnet_score_query('pb', 'SELECT pb_unsafe(id) AS id, tag, domain, persona, features, dense FROM pb_cands ORDER BY id')
       AS (id int, tag text, score float8, scores float8[])) WITH ORDINALITY AS p(id, tag, score, scores, pos)
JOIN pb_serial s USING (pos);

-- a version made in the same, uncommitted transaction: the workers see it (the leader's transaction)
BEGIN;
SELECT pepnet_create('pb_new', :'cfg', 6) AS v;
SET LOCAL parallel_leader_participation = off;
SELECT count(*) AS rows, count(DISTINCT score) > 1000 AS scored
FROM pepnet_score_query('pb_new', 'SELECT id, tag, domain, persona, features, dense FROM pb_cands') AS t(id int, tag text, score float8, scores float8[]);
ROLLBACK;

-- the named form ("inputs": "columns"): workers score what the leader decoded from the columns
SELECT pepnet_create('pbn', '{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 30}], "persona": [{"name": "user_id", "buckets": 100}], "dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8, 4]}', 2) AS v;
CREATE TABLE pbn_cands AS
SELECT i AS id, i % 3 AS domain, i * 31 AS item, 'c' || (i % 30) AS cat, (i / 40) % 100 AS user_id, (i % 9) / 9.0 AS price
FROM generate_series(1, 30000) i;
SET max_parallel_workers_per_gather = 0;
CREATE TABLE pbn_serial AS SELECT * FROM pepnet_score_query('pbn', 'SELECT id, domain, item, cat, user_id, price FROM pbn_cands ORDER BY id')
  AS t(id int, domain int, item int, cat text, user_id int, price numeric, score float8, scores float8[]);
RESET max_parallel_workers_per_gather;
SET parallel_leader_participation = off;
SELECT count(*) AS rows, count(*) FILTER (WHERE p.score = s.score AND p.scores = s.scores) AS identical
FROM ROWS FROM (pepnet_score_query('pbn', 'SELECT id, domain, item, cat, user_id, price FROM pbn_cands ORDER BY id')
       AS (id int, domain int, item int, cat text, user_id int, price numeric, score float8, scores float8[])) WITH ORDINALITY AS p
JOIN (SELECT row_number() OVER () AS ordinality, * FROM pbn_serial) s USING (ordinality);
RESET parallel_leader_participation;

-- a model with a multi-valued field is scored by the leader alone (its bags are not sent to
-- workers): the same scores as pepnet_score_rows, with workers allowed
SELECT pepnet_create('pbb', '{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "tags", "buckets": 50, "pooling": "mean"}], "emb_dim": 4, "hidden": [8]}', 2) AS v;
CREATE TABLE pbb_cands AS
SELECT i AS id, i % 3 AS domain, i * 31 AS item, ARRAY['t' || (i % 7), 't' || (i % 11)] AS tags
FROM generate_series(1, 20000) i;
SET max_parallel_workers_per_gather = 2;
SELECT count(*) AS rows, count(*) FILTER (WHERE q.score = s.score) AS identical
FROM pepnet_score_query('pbb', 'SELECT id, domain, item, tags FROM pbb_cands')
       AS q(id int, domain int, item int, tags text[], score float8, scores float8[])
JOIN (SELECT (s.candidate).id, s.score FROM pepnet_score_rows('pbb', ARRAY(SELECT c FROM pbb_cands c)) s) s USING (id);
RESET max_parallel_workers_per_gather;

-- pepnet_predict in CREATE TABLE AS: a Parallel Seq Scan computes it in the workers
SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0;
EXPLAIN (VERBOSE, COSTS OFF) CREATE TABLE pb_pred AS SELECT id, pepnet_predict('pb', domain, persona, features, dense) AS p FROM pb_cands;
-- run under EXPLAIN ANALYZE (which creates the table): the workers launched
CREATE FUNCTION pb_launched(stmt text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE line text; n int := 0;
BEGIN
  FOR line IN EXECUTE 'EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) ' || stmt LOOP
    n := greatest(n, coalesce(substring(line from 'Workers Launched: (\d+)')::int, 0));
  END LOOP;
  RETURN n > 0;
END $$;
SELECT pb_launched('CREATE TABLE pb_pred AS SELECT id, pepnet_predict(''pb'', domain, persona, features, dense) AS p FROM pb_cands') AS workers_launched;
SELECT pb_launched('CREATE TABLE pbn_pred AS SELECT id, pepnet_predict(''pbn'', c) AS p FROM pbn_cands c') AS workers_launched_named;
-- the pinned form (IMMUTABLE; each worker checks the fingerprint), and a bare name deployed
-- earlier in the same, uncommitted transaction: the workers score the version the leader sees
SELECT pb_launched('CREATE TABLE pb_pinned AS SELECT id, pepnet_predict(''pb@1''::pepnet_pinned, domain, persona, features, dense) AS p FROM pb_cands') AS workers_launched_pinned;
BEGIN;
SELECT pepnet_create('pb', :'cfg', 7) AS v2;
SELECT pepnet_deploy('pb', 2);
SELECT pb_launched('CREATE TABLE pb_deployed AS SELECT id, pepnet_predict(''pb'', domain, persona, features, dense) AS p FROM pb_cands') AS workers_launched_deployed;
SET LOCAL max_parallel_workers_per_gather = 0;
SELECT count(*) AS rows, bool_and(d.p = pepnet_predict('pb@2', c.domain, c.persona, c.features, c.dense)) AS version_2,
       bool_and(d.p <> pepnet_predict('pb@1', c.domain, c.persona, c.features, c.dense)) AS not_version_1
FROM pb_deployed d JOIN pb_cands c USING (id);
ROLLBACK;
-- pepnet_score_rows per request (an array of rows each) on a LATERAL below the Gather
CREATE TABLE pbn_reqs AS SELECT user_id, array_agg(c ORDER BY id) AS cands FROM pbn_cands c GROUP BY user_id;
SELECT pb_launched('CREATE TABLE pbn_rows_par AS SELECT (s.candidate).id, s.score, s.scores FROM pbn_reqs r, LATERAL pepnet_score_rows(''pbn'', r.cands) s') AS workers_launched_score_rows;
RESET parallel_setup_cost; RESET parallel_tuple_cost; RESET min_parallel_table_scan_size;
SET max_parallel_workers_per_gather = 0;
SELECT count(*) AS rows, count(*) FILTER (WHERE p.score = s.score AND p.scores = s.scores) AS identical
FROM pbn_rows_par p JOIN (SELECT (s.candidate).id, s.score, s.scores FROM pbn_reqs r, LATERAL pepnet_score_rows('pbn', r.cands) s) s USING (id);
SELECT count(*) AS rows, bool_and(p.p = s.p) AS equal_text_form FROM pb_pinned p JOIN pb_pred s USING (id);
SELECT count(*) AS rows, bool_and(p.p = pepnet_predict('pb', c.domain, c.persona, c.features, c.dense)) AS equal_serial,
       max(abs(p.p - s.score)) < 1e-6 AS close_to_batch
FROM pb_pred p JOIN pb_cands c USING (id) JOIN pb_serial s USING (id);
SELECT count(*) AS rows, bool_and(p.p = pepnet_predict('pbn', c)) AS equal_serial
FROM pbn_pred p JOIN pbn_cands c USING (id);
RESET max_parallel_workers_per_gather;
