-- Named inputs ("inputs": "columns", since 0.3.0): training, evaluation and scoring by column name,
-- text ids, the missing row, the arrays form unchanged, and every error found before any row
\set VERBOSITY terse
SET client_min_messages = warning;

-- an int id, a text id, a uuid persona, an int field with NULLs, a dense column, the domain, a label
CREATE TABLE nm_ev AS
SELECT g AS id, g % 3 AS domain, (abs(hashint4(g)) % 60)::int AS item, 'c' || (g % 7) AS cat,
       md5((g % 13)::text)::uuid AS user_id,
       CASE WHEN g % 5 = 0 THEN NULL ELSE (g % 11)::bigint END AS region,
       ((g % 10) / 10.0)::float8 AS price,
       (abs(hashint4(g)) % 60 < 25 AND g % 3 <> 1) OR (g % 5 = 0 AND g % 3 = 1) AS click
FROM generate_series(1, 3000) g;
\set ncfg '{"domains": 3, "features": [{"name": "item", "buckets": 64}, {"name": "cat", "buckets": 16}, {"name": "region", "buckets": 16}], "persona": [{"name": "user_id", "buckets": 32}], "dense": [{"name": "price"}], "emb_dim": 4, "hidden": [8, 4]}'

-- a new config without "inputs" and a query without a column "features": the named form
CALL pepnet_train('nm', 'SELECT * FROM nm_ev WHERE id % 10 <> 0', :'ncfg',
                  validation => 'SELECT * FROM nm_ev WHERE id % 10 = 0',
                  epochs => 3, seed => 1, batch_size => 64, lr => 0.01, progress_interval => 0);
SELECT config->>'inputs' AS inputs, config->>'domain_column' AS domain_column, config->'dense' AS dense,
       config->'features'->2 AS region_field
FROM pepnet.models WHERE name = 'nm' AND version = 3;
-- it learned from the named columns (the missing row of "region" is what tells domain 1's clicks)
SELECT (metrics->'validation'->>'auc')::float8 > 0.85 AS auc_high FROM pepnet.models WHERE name = 'nm' AND version = 3;
SELECT domain, task, rows, auc > 0.8 AS auc_high FROM pepnet_evaluate('nm', 'SELECT * FROM nm_ev WHERE id % 10 = 0') ORDER BY domain;
-- the named validation's rows have a data_hash, the one an evaluation of the same query records
SELECT count(*) AS evaluated FROM pepnet_evaluate('nm@3', 'SELECT * FROM nm_ev WHERE id % 10 = 0', record => 'nm_val');
SELECT metrics->'validation'->>'data_hash' ~ '^[0-9a-f]{16}$' AS hashed,
       metrics->'validation'->>'data_hash' = metrics->'evaluations'->'nm_val'->>'data_hash' AS same_rows_same_hash
FROM pepnet.models WHERE name = 'nm' AND version = 3;
-- pepnet_check_data reads a named query as training does, against a config without "inputs" (the
-- form from the query) or the stored version; column id is the one the fields do not use
SELECT domain, task, rows, labeled, positives > 0 AND positives < rows AS both_classes
FROM pepnet_check_data('SELECT * FROM nm_ev WHERE id <= 300', config => :'ncfg') ORDER BY domain NULLS LAST;
SELECT count(*) AS groups, sum(rows) FILTER (WHERE domain IS NULL) AS all_rows
FROM pepnet_check_data('SELECT domain, item, cat, region, user_id, price, click FROM nm_ev WHERE id <= 300', model => 'nm@3');
-- continued by name (no config): Adam's moments of the named tables resume
CALL pepnet_train('nm', 'SELECT * FROM nm_ev WHERE id % 10 <> 0', epochs => 1, batch_size => 64, lr => 0.01,
                  progress_interval => 0);
SELECT version, parent, (metrics->>'resumed_steps')::int > 0 AS resumed, config = (SELECT config FROM pepnet.models WHERE name = 'nm' AND version = 3) AS same_config
FROM pepnet.models WHERE name = 'nm' AND version = 4;
-- the tables have the missing row: [buckets + 1, k]
SELECT length(pepnet_export('nm')) - length(pepnet_export('nm@1')) AS same_size,
       position('"emb.feature.0":{"dtype":"F32","shape":[65,4]' IN convert_from(substring(pepnet_export('nm') FROM 9 FOR 2000), 'UTF8')) > 0 AS item_65_rows,
       position('"emb.persona.0":{"dtype":"F32","shape":[33,4]' IN convert_from(substring(pepnet_export('nm') FROM 9 FOR 2000), 'UTF8')) > 0 AS user_33_rows;

-- one model, three ways to score by name: the same scores (predict by GEMVs: float32 rounding)
CREATE TABLE nm_s_rows AS
SELECT (s.candidate).id, s.score, s.scores FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM nm_ev c WHERE id <= 300)) s;
CREATE TABLE nm_s_query AS
SELECT id, score FROM pepnet_score_query('nm', 'SELECT * FROM nm_ev WHERE id <= 300')
  AS t(id int, domain int, item int, cat text, user_id uuid, region bigint, price float8, click boolean, score float8, scores float8[]);
CREATE TABLE nm_s_pred AS SELECT id, pepnet_predict('nm', c) AS score FROM (SELECT * FROM nm_ev WHERE id <= 300) c;
SELECT count(*) AS rows, bool_and(r.score = q.score) AS rows_eq_query,
       max(abs(r.score - p.score)) < 1e-6 AS predict_agrees, bool_and(r.scores = ARRAY[r.score]) AS scores_array,
       count(DISTINCT round(r.score::numeric, 6)) > 50 AS varied
FROM nm_s_rows r JOIN nm_s_query q USING (id) JOIN nm_s_pred p USING (id);
-- the array's order comes back, rows of several domains and users in one call
SELECT bool_and(id = ord) AS in_order FROM (SELECT id, row_number() OVER () AS ord FROM nm_s_rows) x;

-- column order and extra columns change nothing: the version's fields are bound by name (a row of
-- a subquery is an anonymous record: its fields by name through to_jsonb, or use a table's or view's
-- row type as above)
SELECT bool_and(a.score = b.score) AS reordered_same, count(*) AS rows
FROM (SELECT (to_jsonb(s.candidate)->>'id')::int AS id, s.score FROM pepnet_score_rows('nm', ARRAY(
        SELECT c FROM (SELECT price, 'x'::text AS extra, user_id, region, cat, 42 AS other, item, domain, id FROM nm_ev WHERE id <= 300) c)) s) a
JOIN nm_s_rows b USING (id);
SELECT max(abs(p.score - pepnet_predict('nm', c))) < 1e-12 AS predict_reordered
FROM (SELECT now() AS extra, region, price, cat, item, user_id, domain, id FROM nm_ev WHERE id <= 300) c JOIN nm_s_pred p USING (id);

-- a NULL id uses the missing row: it scores, unlike any known id of the field
SELECT count(DISTINCT s.score) = 1 AS null_rows_agree, bool_and(s.score > 0 AND s.score < 1) AS probabilities
FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM (SELECT 1 AS domain, 5 AS item, 'c1' AS cat, NULL::bigint AS region,
                                                        md5('1')::uuid AS user_id, 0.5 AS price FROM generate_series(1, 3)) c)) s;
SELECT pepnet_predict('nm', c) <> pepnet_predict('nm', d) AS null_is_its_own_row
FROM (SELECT 1 AS domain, 5 AS item, 'c1' AS cat, NULL::bigint AS region, md5('1')::uuid AS user_id, 0.5 AS price) c,
     (SELECT 1 AS domain, 5 AS item, 'c1' AS cat, 3::bigint AS region, md5('1')::uuid AS user_id, 0.5 AS price) d;
-- varchar, bpchar (trailing blanks dropped), int2 and a domain over text read as the same ids
CREATE DOMAIN nm_catname AS text;
SELECT pepnet_predict('nm', c) = pepnet_predict('nm', d) AS same_ids_other_types
FROM (SELECT 1 AS domain, 5 AS item, 'c1' AS cat, 3::bigint AS region, md5('1')::uuid AS user_id, 0.5 AS price) c,
     (SELECT 1::int2 AS domain, 5::int2 AS item, 'c1'::char(4) AS cat, 3 AS region, md5('1')::uuid AS user_id, 0.5::real AS price) d;
SELECT pepnet_predict('nm', c) = pepnet_predict('nm', d) AS varchar_and_domain_types
FROM (SELECT 1 AS domain, 5 AS item, 'c1'::varchar AS cat, 3::bigint AS region, md5('1')::uuid AS user_id, 0.5 AS price) c,
     (SELECT 1 AS domain, 5 AS item, 'c1'::nm_catname AS cat, 3::bigint AS region, md5('1')::uuid AS user_id, 0.5::numeric AS price) d;

-- equivalence with the arrays form: same seed, same weights but the missing rows; int columns give
-- the arrays form's ids; text ids are docs/model.md's pn_text_id ('' 'a' 'zürich' and a uuid's text)
\set acfg '{"domains": 2, "features": [{"name": "a", "buckets": 50}, {"name": "b", "buckets": 7, "hash": false}, {"name": "t", "buckets": 1000}], "persona": [{"name": "u", "buckets": 9}], "dense": 1, "emb_dim": 4, "hidden": [8, 4]}'
\set bcfg '{"inputs": "columns", "domains": 2, "features": [{"name": "a", "buckets": 50}, {"name": "b", "buckets": 7, "hash": false}, {"name": "t", "buckets": 1000}], "persona": [{"name": "u", "buckets": 9}], "dense": [{"name": "p"}], "emb_dim": 4, "hidden": [8, 4]}'
SELECT pepnet_create('nm_arr', :'acfg', 5) AS arr_v, pepnet_create('nm_nam', :'bcfg', 5) AS nam_v;
CREATE TABLE nm_eq AS
SELECT g, g % 2 AS domain, (g * 7919)::bigint AS a, (g % 7)::int AS b, (-g)::bigint AS u, (g % 4) * 0.25 AS p,
       t.txt, t.id AS t_id
FROM generate_series(1, 40) g,
     LATERAL (VALUES ('', 7640891576956012809), ('a', -2763434719279598279), ('zürich', -7350671518096820925),
                     ('123e4567-e89b-12d3-a456-426614174000', 8034182327392527262)) t(txt, id)
WHERE (g % 4) = (CASE t.txt WHEN '' THEN 0 WHEN 'a' THEN 1 WHEN 'zürich' THEN 2 ELSE 3 END);
SELECT count(*) AS rows, bool_and(n.score = a.score) AS bit_for_bit
FROM nm_eq e,
     LATERAL (SELECT score FROM pepnet_score('nm_arr', e.domain, ARRAY[e.u], ARRAY[e.a, e.b, e.t_id], ARRAY[e.p]::real[])) a,
     LATERAL (SELECT s.score FROM pepnet_score_rows('nm_nam', ARRAY(SELECT c FROM (SELECT e.domain, e.a, e.b, e.txt AS t, e.u, e.p) c)) s) n;
-- a uuid column hashes as its text
SELECT pepnet_predict('nm_nam', c) = pepnet_predict('nm_nam', d) AS uuid_is_its_text
FROM (SELECT 0 AS domain, 1 AS a, 2 AS b, '123e4567-e89b-12d3-a456-426614174000'::uuid AS t, 3 AS u, 0.5 AS p) c,
     (SELECT 0 AS domain, 1 AS a, 2 AS b, '123e4567-e89b-12d3-a456-426614174000' AS t, 3 AS u, 0.5 AS p) d;
-- trained the same way on the same rows (no NULLs), both forms learn the same weights
CALL pepnet_train('nm_arr_t', 'SELECT domain, ARRAY[u] AS persona, ARRAY[a, b, t_id] AS features, ARRAY[p]::real[] AS dense, g % 3 = 0 AS label FROM nm_eq ORDER BY g',
                  :'acfg', epochs => 2, batch_size => 16, seed => 3, shuffle_buffer => 8, progress_interval => 0);
CALL pepnet_train('nm_nam_t', 'SELECT domain, u, a, b, txt AS t, p, g % 3 = 0 AS click FROM nm_eq ORDER BY g',
                  :'bcfg', epochs => 2, batch_size => 16, seed => 3, shuffle_buffer => 8, progress_interval => 0);
SELECT bool_and(n.score = a.score) AS trained_alike, bool_or(a.score <> 0.5) AS moved
FROM nm_eq e,
     LATERAL (SELECT score FROM pepnet_score('nm_arr_t', e.domain, ARRAY[e.u], ARRAY[e.a, e.b, e.t_id], ARRAY[e.p]::real[])) a,
     LATERAL (SELECT s.score FROM pepnet_score_rows('nm_nam_t', ARRAY(SELECT c FROM (SELECT e.domain, e.a, e.b, e.txt AS t, e.u, e.p) c)) s) n;

-- an arrays-form version stored by 0.2 (its config without "inputs") scores as before, bit for bit
SELECT pepnet_create('nm_old', :'acfg', 9) AS old_v;
CREATE TABLE nm_old_scores AS SELECT idx, score FROM pepnet_score('nm_old', 1, '{4}', '{{1,2,3},{5,6,7}}', '{{0.5},{1}}');
ALTER TABLE pepnet.models DISABLE TRIGGER models_guard;	-- the guard off: make the stored config a 0.2 one
UPDATE pepnet.models SET config = config - 'inputs' WHERE name = 'nm_old';
ALTER TABLE pepnet.models ENABLE ALWAYS TRIGGER models_guard;
SELECT config ? 'inputs' AS has_inputs FROM pepnet.models WHERE name = 'nm_old';
SELECT bool_and(o.score = s.score) AS same_scores, count(*) AS rows
FROM nm_old_scores o JOIN pepnet_score('nm_old', 1, '{4}', '{{1,2,3},{5,6,7}}', '{{0.5},{1}}') s USING (idx);
SELECT pepnet_verify('nm_old') AS verified;

-- errors, found before any row is read
\set ON_ERROR_STOP 0
-- a missing column: 42703 naming the field, the column and the types expected
CALL pepnet_train('nm_bad', 'SELECT domain, item, cat, user_id, price, click FROM nm_ev', :'ncfg');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('nm', c) FROM (SELECT domain, item, cat, region, price FROM nm_ev LIMIT 1) c;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM (SELECT item, cat, region, user_id, price FROM nm_ev LIMIT 1) c));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('nm', 'SELECT domain, item, cat, region, user_id, price FROM nm_ev');
\echo :LAST_ERROR_SQLSTATE
-- a mistyped column: 42804
CALL pepnet_train('nm_bad', 'SELECT domain, item::float8 AS item, cat, region, user_id, price, click FROM nm_ev', :'ncfg');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM (SELECT domain, item, cat, region, user_id, price::text AS price FROM nm_ev LIMIT 1) c));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('nm', 'SELECT id, domain::numeric AS domain, item, cat, region, user_id, price FROM nm_ev')
  AS t(id int, domain numeric, item int, cat text, region bigint, user_id uuid, price float8, score float8, scores float8[]);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nm_bad', 'SELECT domain, item, cat, region, user_id, price, click::text AS click FROM nm_ev', :'ncfg');
\echo :LAST_ERROR_SQLSTATE
-- the form: an explicit "inputs" must match the query; each form's functions refuse the other's versions (22023)
CALL pepnet_train('nm_bad', 'SELECT * FROM nm_ev', '{"inputs": "arrays", "domains": 3, "features": [{"name": "item", "buckets": 64}]}');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nm_bad', 'SELECT domain, ARRAY[item]::bigint[] AS features, click AS label FROM nm_ev', '{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 64}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('nm', 'SELECT domain, ARRAY[item]::bigint[] AS features, click FROM nm_ev');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score('nm', 0, NULL, '{1,2,3}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('nm', 0, NULL, '{1,2,3}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('nm_old', c) FROM (SELECT 1 AS domain) c;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_rows('nm_arr', ARRAY(SELECT c FROM nm_eq c));
\echo :LAST_ERROR_SQLSTATE
-- a grid's configs without "inputs" are checked in the form they can have before the first run trains
CALL pepnet_train('nm_bad', 'SELECT * FROM nm_ev', jsonb_build_array(:'ncfg'::jsonb,
                  '{"domains": 3, "features": [{"name": "item", "buckets": 0}], "dense": [{"name": "price"}]}'::jsonb),
                  epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
-- named keys in an arrays config (22023)
SELECT pepnet_create('nm_bad', '{"domains": 1, "features": [{"name": "a", "buckets": 2, "nullable": false}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nm_bad', '{"domains": 1, "features": [{"name": "a", "buckets": 2}], "dense": [{"name": "p"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nm_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "click", "buckets": 2}]}');
\echo :LAST_ERROR_SQLSTATE
-- NULL in a field that is not nullable, a NULL dense value, a NULL domain: 22004 naming the row
\set VERBOSITY default
CALL pepnet_train('nm_bad', 'SELECT * FROM nm_ev ORDER BY id',
                  '{"domains": 3, "features": [{"name": "item", "buckets": 64}, {"name": "region", "buckets": 16, "nullable": false}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM (SELECT domain, item, cat, region, user_id, CASE WHEN id = 3 THEN NULL ELSE price END AS price FROM nm_ev WHERE id <= 5) c));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('nm', 'SELECT CASE WHEN id = 7 THEN NULL ELSE domain END AS domain, item, cat, region, user_id, price, click FROM nm_ev ORDER BY id');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_rows('nm', ARRAY[1, 2]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_rows('nm', NULL::nm_ev[]);
\echo :LAST_ERROR_SQLSTATE
\set ON_ERROR_STOP 1
-- nothing stored by the failed trainings
SELECT count(*) AS bad_versions FROM pepnet.models WHERE name = 'nm_bad';

-- one call site, rows of alternating types: a binding that failed is made again, never half used
CREATE FUNCTION nm_alternate() RETURNS text LANGUAGE plpgsql AS $$
DECLARE r record; x float8; i int; out text := '';
BEGIN
  FOR i IN 1..4 LOOP
    IF i % 2 = 1 THEN
      SELECT 1 AS domain INTO r;
    ELSE
      SELECT * INTO r FROM nm_ev WHERE id = i;
    END IF;
    BEGIN
      x := pepnet_predict('nm', r);
      out := out || CASE WHEN x = (SELECT score FROM nm_s_pred WHERE id = i) THEN 'scored ' ELSE 'wrong ' END;
    EXCEPTION WHEN undefined_column THEN
      out := out || 'refused ';
    END;
  END LOOP;
  RETURN out;
END $$;
SELECT nm_alternate();
DROP FUNCTION nm_alternate();

-- the id kind of each named field ("id": "integer" or "text"): filled in by pepnet_train from the data
-- query, kept in every later version, and at every bind a column of the other kind is 42804
SELECT config->'features'->0->>'id' AS item_id, config->'features'->1->>'id' AS cat_id,
       config->'features'->2->>'id' AS region_id, config->'persona'->0->>'id' AS user_id_id
FROM pepnet.models WHERE name = 'nm' AND version = 3;
SELECT count(*) AS versions, bool_and(config->'features'->0->>'id' = 'integer') AS all_integer
FROM pepnet.models WHERE name = 'nm' AND version >= 3;
\set ON_ERROR_STOP 0
\set VERBOSITY default
SELECT pepnet_predict('nm', c) FROM (SELECT domain, item::text AS item, cat, region, user_id, price FROM nm_ev WHERE id = 1) c;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT * FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM (SELECT domain, item::text AS item, cat, region, user_id, price FROM nm_ev WHERE id <= 3) c));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('nm', 'SELECT domain, item, cat, region::text AS region, user_id, price FROM nm_ev') AS t(domain int, item int, cat text, region text, user_id uuid, price float8, score float8, scores float8[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_evaluate('nm', 'SELECT domain, item, cat, region::text AS region, user_id, price, click FROM nm_ev');
-- a uuid column read as text is the same kind (its canonical text is the id)
SELECT count(*) AS groups FROM pepnet_evaluate('nm', 'SELECT domain, item, cat, region, user_id::text AS user_id, price, click FROM nm_ev');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('SELECT domain, item::text AS item, cat, region, user_id, price, click FROM nm_ev', model => 'nm');
\echo :LAST_ERROR_SQLSTATE
-- a text id column for an integer field: cat is text, so an int column is refused too
SELECT * FROM pepnet_check_data('SELECT domain, item, length(cat) AS cat, region, user_id, price, click FROM nm_ev', model => 'nm');
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nm', 'SELECT domain, item::text AS item, cat, region, user_id, price, click FROM nm_ev', epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
CALL pepnet_train('nm', 'SELECT * FROM nm_ev', validation => 'SELECT domain, item::varchar AS item, cat, region, user_id, price, click FROM nm_ev',
                  epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
-- explicit values are accepted and checked
CALL pepnet_train('nm_id', 'SELECT * FROM nm_ev', '{"domains": 3, "features": [{"name": "item", "buckets": 64, "id": "text"}], "emb_dim": 4, "hidden": [4]}',
                  epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nm_id', '{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 64, "id": "int"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nm_id', '{"domains": 3, "features": [{"name": "item", "buckets": 64, "id": "text"}]}');
\echo :LAST_ERROR_SQLSTATE
-- a new config's kinds are fixed from the data query before training: a validation query of the other
-- kind is refused before any epoch, nothing stored
CALL pepnet_train('nm_id4', 'SELECT * FROM nm_ev', '{"domains": 3, "features": [{"name": "item", "buckets": 64}], "emb_dim": 4, "hidden": [4]}',
                  validation => 'SELECT domain, item::text AS item, click FROM nm_ev', epochs => 1, progress_interval => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS nm_id4_versions FROM pepnet.models WHERE name = 'nm_id4';
\set ON_ERROR_STOP 1
-- a version without "id" (pepnet_create) accepts either kind; its first training fixes it
SELECT pepnet_create('nm_id', '{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 64}, {"name": "cat", "buckets": 16, "id": "text"}], "emb_dim": 4, "hidden": [4]}') AS created;
SELECT config->'features'->0 ? 'id' AS has_id, config->'features'->1->>'id' AS cat_id FROM pepnet.models WHERE name = 'nm_id' AND version = 1;
SELECT count(*) AS either_kind FROM (SELECT pepnet_predict('nm_id', c) FROM (SELECT domain, item, cat FROM nm_ev WHERE id <= 2) c
  UNION ALL SELECT pepnet_predict('nm_id', c) FROM (SELECT domain, item::text AS item, cat FROM nm_ev WHERE id <= 2) c) x;
CALL pepnet_train('nm_id', 'SELECT domain, item::text AS item, cat, click FROM nm_ev', epochs => 1, progress_interval => 0);
SELECT version, config->'features'->0->>'id' AS item_id FROM pepnet.models WHERE name = 'nm_id' ORDER BY version;
\set ON_ERROR_STOP 0
SELECT pepnet_predict('nm_id', c) FROM (SELECT domain, item, cat FROM nm_ev WHERE id = 1) c;
\echo :LAST_ERROR_SQLSTATE
-- a text column for a field with "hash": false is refused at bind time (its ids are rows)
\set VERBOSITY default
SELECT * FROM pepnet_check_data('SELECT domain, (id % 24)::text AS hour, click FROM nm_ev',
  config => '{"domains": 3, "features": [{"name": "hour", "buckets": 24, "hash": false}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
-- a column the model reads that appears twice is 42702, in every reader and scorer
SELECT pepnet_predict('nm_id', c) FROM (SELECT 1 AS domain, 5 AS item, 'x' AS cat, 77 AS item) c;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
SELECT * FROM pepnet_score_rows('nm_id', ARRAY(SELECT c FROM (SELECT 1 AS domain, '5' AS item, 'x' AS cat, 2 AS domain) c));
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('SELECT domain, item::text AS item, cat, click, click FROM nm_ev', model => 'nm_id');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_score_query('nm_id', 'SELECT domain, item::text AS item, cat, id AS cat FROM nm_ev') AS t(domain int, item text, cat text, cat2 int, score float8, scores float8[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('SELECT 0 AS domain, ARRAY[1::bigint] AS features, 1 AS label, ARRAY[2::bigint] AS features',
  config => '{"domains": 1, "features": [{"name": "a", "buckets": 4}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
-- columns not read may repeat
SELECT count(*) AS scored FROM (SELECT pepnet_predict('nm_id', c) FROM (SELECT 1 AS domain, '5' AS item, 'x' AS cat, 1 AS k, 2 AS k) c) x;
-- field names: 1 to 63 bytes (a column name's limit), hints quote identifiers
SELECT pepnet_create('nm_id2', jsonb_build_object('inputs', 'columns', 'domains', 1, 'features', jsonb_build_array(jsonb_build_object('name', repeat('é', 32), 'buckets', 2))));
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT * FROM pepnet_check_data('SELECT 0 AS domain, 1 AS click',
  config => '{"domains": 1, "features": [{"name": "a\"b", "buckets": 4}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('SELECT 0 AS domain, 1.5 AS "a""b", 1 AS click',
  config => '{"domains": 1, "features": [{"name": "a\"b", "buckets": 4}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
-- pepnet_check_data: a misspelled label names the query's other columns; a config without "inputs"
-- read as the arrays form because of a column "features" says so; a query that is no SELECT
SELECT * FROM pepnet_check_data('SELECT 0 AS domain, ARRAY[1::bigint] AS features, 1 AS lable',
  config => '{"domains": 1, "features": [{"name": "a", "buckets": 4}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('SELECT 0 AS domain, ARRAY[1::bigint] AS features, 1 AS click',
  config => '{"domains": 1, "features": [{"name": "a", "buckets": 4, "nullable": false}], "emb_dim": 4, "hidden": [4]}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('', config => :'ncfg');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pepnet_check_data('EXPLAIN SELECT 1', config => :'ncfg');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
\set ON_ERROR_STOP 1
-- a version reference as the config (a JSON string), as pepnet_train takes it
SELECT count(*) AS groups FROM pepnet_check_data('SELECT domain, item, cat, region, user_id, price, click FROM nm_ev WHERE id <= 300', config => '"nm@3"');
-- a stored arrays config made named: its "dense": 0 is no dense field
SELECT pepnet_create('nm_id3a', '{"domains": 1, "features": [{"name": "a", "buckets": 4}], "emb_dim": 4, "hidden": [4]}') AS created;
SELECT config->'dense' AS stored_dense FROM pepnet.models WHERE name = 'nm_id3a';
SELECT pepnet_create('nm_id3', (SELECT config || '{"inputs": "columns"}' FROM pepnet.models WHERE name = 'nm_id3a')) AS created;
SELECT config->>'inputs' AS inputs, config->'dense' AS dense FROM pepnet.models WHERE name = 'nm_id3';
DELETE FROM pepnet.optimizer_state WHERE name IN ('nm_id', 'nm_id3');
DELETE FROM pepnet.models WHERE name IN ('nm_id', 'nm_id2', 'nm_id3', 'nm_id3a');

-- leave the registry as it was
SELECT tgenabled AS guard_always FROM pg_trigger WHERE tgrelid = 'pepnet.models'::regclass AND tgname = 'models_guard';
DELETE FROM pepnet.optimizer_state WHERE name IN ('nm', 'nm_arr_t', 'nm_nam_t');
DELETE FROM pepnet.models WHERE name IN ('nm', 'nm_arr', 'nm_nam', 'nm_arr_t', 'nm_nam_t', 'nm_old');
SELECT count(*) AS left_behind FROM pepnet.models WHERE name IN ('nm', 'nm_arr', 'nm_nam', 'nm_arr_t', 'nm_nam_t', 'nm_old');
DROP TABLE nm_ev, nm_s_rows, nm_s_query, nm_s_pred, nm_eq, nm_old_scores;
DROP DOMAIN nm_catname;

-- Dense transforms (since 0.3.0): "log1p", "clip" and "normalize": "zscore" with the mean and std of the
-- training data stored in the version, NULL imputed with the mean, the same values in every reader
CREATE TABLE nd_ev AS
SELECT g AS id, g % 2 AS domain, (abs(hashint4(g)) % 30)::int AS item,
       CASE WHEN g % 17 = 0 THEN NULL ELSE exp((abs(hashint4(g + 7)) % 1000) / 125.0) END AS x,
       ((abs(hashint4(g + 3)) % 100) / 10.0)::real AS y,
       ((abs(hashint4(g + 7)) % 1000) > 500) <> (g % 7 = 0) AS click
FROM generate_series(1, 2000) g;
\set dcfg '{"domains": 2, "features": [{"name": "item", "buckets": 32}], "dense": [{"name": "x", "log1p": true, "normalize": "zscore"}, {"name": "y", "clip": [0, 5]}], "emb_dim": 4, "hidden": [8]}'
CALL pepnet_train('nd', 'SELECT * FROM nd_ev WHERE id % 10 <> 0', :'dcfg', epochs => 1, seed => 3,
                  batch_size => 64, lr => 0.01, progress_interval => 0);
SELECT jsonb_object_keys(config->'dense'->0) AS x_keys FROM pepnet.models WHERE name = 'nd' AND version = 1 ORDER BY 1;
SELECT config->'dense'->1 AS y_field FROM pepnet.models WHERE name = 'nd' AND version = 1;
-- the stored mean and std are those of ln(1 + x) over the training query's non-NULL values
SELECT abs((config->'dense'->0->>'mean')::float8 / s.m - 1) < 1e-5 AS mean_ok,
       abs((config->'dense'->0->>'std')::float8 / s.sd - 1) < 1e-5 AS std_ok
FROM pepnet.models, (SELECT avg(ln(1 + x)) AS m, stddev_pop(ln(1 + x)) AS sd FROM nd_ev WHERE id % 10 <> 0) s
WHERE name = 'nd' AND version = 1;
-- a NULL x scores as the row whose x is the stored mean (in log space); y is clipped to [0, 5]
SELECT abs(pepnet_predict('nd', c1) - pepnet_predict('nd', c2)) < 1e-6 AS null_is_mean,
       abs(pepnet_predict('nd', c1) - pepnet_predict('nd', c3)) > 1e-4 AS x_matters
FROM (SELECT 1 AS domain, 3 AS item, NULL::float8 AS x, 2.5::real AS y) c1,
     (SELECT 1 AS domain, 3 AS item, 2000.0 AS x, 2.5::real AS y) c3,
     (SELECT 1 AS domain, 3 AS item, exp((config->'dense'->0->>'mean')::float8) - 1 AS x, 2.5::real AS y
      FROM pepnet.models WHERE name = 'nd' AND version = 1) c2;
SELECT pepnet_predict('nd', c1) = pepnet_predict('nd', c2) AS clipped,
       pepnet_predict('nd', c1) <> pepnet_predict('nd', c3) AS not_constant
FROM (SELECT 0 AS domain, 3 AS item, 10.0 AS x, 100::real AS y) c1, (SELECT 0 AS domain, 3 AS item, 10.0 AS x, 5::real AS y) c2,
     (SELECT 0 AS domain, 3 AS item, 10.0 AS x, 1::real AS y) c3;
-- the same transformed values in pepnet_predict(model, row), pepnet_score_rows, pepnet_score_query and pepnet_evaluate
CREATE TABLE nd_pred AS SELECT id, domain, click, pepnet_predict('nd', c) AS p FROM (SELECT id, domain, item, x, y, click FROM nd_ev) c;
SELECT count(*) AS rows, max(abs(p.p - s.score)) < 1e-5 AS rows_agree
FROM nd_pred p JOIN (SELECT (s.candidate).id, s.score FROM pepnet_score_rows('nd', ARRAY(SELECT c FROM nd_ev c)) s) s USING (id);
SELECT count(*) AS rows, max(abs(p.p - q.score)) < 1e-5 AS query_agrees
FROM nd_pred p JOIN pepnet_score_query('nd', 'SELECT * FROM nd_ev')
     AS q(id int, domain int, item int, x numeric, y real, click bool, score float8, scores float8[]) USING (id);
SELECT e.domain, e.rows, abs(e.mean_p - a.mp) < 1e-5 AS evaluate_agrees
FROM pepnet_evaluate('nd', 'SELECT * FROM nd_ev') e
JOIN (SELECT domain, avg(p) AS mp FROM nd_pred GROUP BY domain) a USING (domain) ORDER BY e.domain;
SELECT count(*) AS checked FROM pepnet_check_data('SELECT domain, item, x, y, click FROM nd_ev', model => 'nd');
-- pepnet_check_data of a new config computes the statistics as pepnet_train would (NULLs pass)
SELECT count(*) AS checked_config FROM pepnet_check_data('SELECT domain, item, x, y, click FROM nd_ev', config => :'dcfg');
-- continued training keeps the stored statistics
CALL pepnet_train('nd', 'SELECT * FROM nd_ev WHERE id % 10 = 0', epochs => 1, seed => 3,
                  batch_size => 64, lr => 0.01, progress_interval => 0);
SELECT a.config->'dense' = b.config->'dense' AS stats_kept
FROM pepnet.models a, pepnet.models b WHERE a.name = 'nd' AND a.version = 1 AND b.name = 'nd' AND b.version = 2;
-- given statistics are kept as given and written back; a constant column's std is stored as 1
SELECT pepnet_create('nd_given', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "clip": [-2.5, 1e6], "normalize": "zscore", "mean": 1.5, "std": 0.25}], "emb_dim": 4, "hidden": [4]}') AS created;
SELECT config->'dense' AS given FROM pepnet.models WHERE name = 'nd_given';
CALL pepnet_train('nd_const', 'SELECT domain, item, 7.0 AS z, click FROM nd_ev',
                  '{"domains": 2, "features": [{"name": "item", "buckets": 32}], "dense": [{"name": "z", "normalize": "zscore"}], "emb_dim": 4, "hidden": [4]}',
                  epochs => 1, batch_size => 64, progress_interval => 0);
SELECT config->'dense' AS constant FROM pepnet.models WHERE name = 'nd_const';
\set ON_ERROR_STOP 0
\set VERBOSITY default
-- log1p refuses x <= -1, naming the field and the row
SELECT * FROM pepnet_check_data('SELECT domain, item, x, y, click FROM nd_ev UNION ALL SELECT 0, 1, -1, 0, true', model => 'nd');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_predict('nd', c) FROM (SELECT 0 AS domain, 1 AS item, -1.5 AS x, 0::real AS y) c;
\echo :LAST_ERROR_SQLSTATE
-- without zscore a NULL dense value is still 22004
SELECT pepnet_predict('nd', c) FROM (SELECT 0 AS domain, 1 AS item, 1.0 AS x, NULL::real AS y) c;
\echo :LAST_ERROR_SQLSTATE
-- a z-scored field without statistics cannot score yet
SELECT pepnet_create('nd_nostats', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "normalize": "zscore"}], "emb_dim": 4, "hidden": [4]}') AS created;
SELECT pepnet_predict('nd_nostats', c) FROM (SELECT 0 AS domain, 1 AS a, 1.0 AS x) c;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY terse
-- config errors: a bad clip, zscore in the arrays form, std <= 0, mean without zscore, an unknown key
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "clip": [5, 1]}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "clip": [0]}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "normalize": "zscore"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "normalize": "zscore", "mean": 0, "std": 0}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "normalize": "zscore", "mean": 0, "std": -1}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "mean": 0, "std": 1}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "normalize": "minmax"}]}');
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('nd_bad', '{"inputs": "columns", "domains": 1, "features": [{"name": "a", "buckets": 4}], "dense": [{"name": "x", "scale": 2}]}');
\echo :LAST_ERROR_SQLSTATE
\set ON_ERROR_STOP 1
DELETE FROM pepnet.optimizer_state WHERE name IN ('nd', 'nd_const');
DELETE FROM pepnet.models WHERE name IN ('nd', 'nd_given', 'nd_const', 'nd_nostats', 'nd_bad');
DROP TABLE nd_ev, nd_pred;

-- a z-score that leaves float4's range (a huge value over a small std) is an error naming the
-- field; a subnormal std is refused by the config
\set ON_ERROR_STOP 0
SELECT pepnet_create('named_zs0', '{"inputs": "columns", "domains": 1, "features": [{"name": "item", "buckets": 10}], "dense": [{"name": "price", "normalize": "zscore", "mean": 1, "std": 1e-40}], "emb_dim": 2, "hidden": [4]}') AS v;
\echo :LAST_ERROR_SQLSTATE
SELECT pepnet_create('named_zs', '{"inputs": "columns", "domains": 1, "features": [{"name": "item", "buckets": 10}], "dense": [{"name": "price", "normalize": "zscore", "mean": 1, "std": 1e-30}], "emb_dim": 2, "hidden": [4]}') AS v;
SELECT pepnet_predict('named_zs', c) FROM (SELECT 0 AS domain, 1 AS item, 1e10 AS price) c;
\echo :LAST_ERROR_SQLSTATE
\set ON_ERROR_STOP 1
DELETE FROM pepnet.models WHERE name = 'named_zs';
