-- Vocabularies and unseen ids ("min_count", since 0.3.0): built by pepnet_train from the data query,
-- stored with the version as int64 tensors vocab.feature.{i} / vocab.persona.{j}; ids seen fewer than
-- min_count times and ids never seen share the out-of-vocabulary row, NULL keeps the missing row
\set VERBOSITY terse
SET client_min_messages = warning;

-- items 0..39 seen 50 times each, items 1001..1005 once; users u0..u49 40 times each (NULL every
-- 17th row), rare1..rare5 once; two domains
CREATE TABLE vocab_ev AS
SELECT g AS id, g % 2 AS domain, (g % 40)::bigint AS item,
       CASE WHEN g % 17 = 0 THEN NULL ELSE 'u' || (g % 50) END AS usr,
       (g % 40 < 15) <> (g % 50 < 10) AS click
FROM generate_series(1, 2000) g
UNION ALL
SELECT 3000 + g, 0, 1000 + g, 'rare' || g, true FROM generate_series(1, 5) g;
\set vcfg '{"domains": 2, "features": [{"name": "item", "buckets": 30, "min_count": 2}], "persona": [{"name": "usr", "buckets": 100, "min_count": 3}], "emb_dim": 4, "hidden": [8]}'

-- the int64 ids of a tensor of a safetensors blob (little-endian I64)
CREATE FUNCTION vocab_ids(w bytea, t text) RETURNS bigint[] LANGUAGE sql AS $$
  WITH h AS (SELECT (get_byte(w, 0) + get_byte(w, 1) * 256 + get_byte(w, 2) * 65536)::bigint AS n),
       o AS (SELECT (hdr->t->'data_offsets'->>0)::bigint AS b, (hdr->t->'data_offsets'->>1)::bigint AS e, n
             FROM h, LATERAL (SELECT convert_from(substring(w FROM 9 FOR n::int), 'UTF8')::jsonb AS hdr) j)
  SELECT coalesce(array_agg(v ORDER BY i), '{}')
  FROM o, generate_series(0, (e - b) / 8 - 1) i,
       LATERAL (SELECT sum(get_byte(w, (8 + n + b + i * 8 + k)::int)::numeric * 256::numeric ^ k) AS u
                FROM generate_series(0, 7) k) x,
       LATERAL (SELECT (CASE WHEN u >= 2::numeric ^ 63 THEN u - 2::numeric ^ 64 ELSE u END)::bigint AS v) y
$$;
-- a tensor's entry of a blob's header
CREATE FUNCTION vocab_entry(w bytea, t text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT convert_from(substring(w FROM 9 FOR (get_byte(w, 0) + get_byte(w, 1) * 256 + get_byte(w, 2) * 65536)), 'UTF8')::jsonb->t
$$;

-- errors: min_count not an integer >= 1, on a field with "hash": false, in the arrays form, and
-- pepnet_create (a vocabulary comes from data)
SET client_min_messages = notice;
DO $$ BEGIN PERFORM pepnet._train_check('vocab_bad', '{"domains": 1, "inputs": "columns", "features": [{"name": "item", "buckets": 8, "min_count": 0}]}', 1, 0.01, 64);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END $$;
DO $$ BEGIN PERFORM pepnet._train_check('vocab_bad', '{"domains": 1, "inputs": "columns", "features": [{"name": "item", "buckets": 8, "min_count": 1.5}]}', 1, 0.01, 64);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END $$;
DO $$ BEGIN PERFORM pepnet._train_check('vocab_bad', '{"domains": 1, "inputs": "columns", "features": [{"name": "item", "buckets": 8, "hash": false, "min_count": 2}]}', 1, 0.01, 64);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END $$;
DO $$ BEGIN PERFORM pepnet._train_check('vocab_bad', '{"domains": 1, "inputs": "arrays", "features": [{"name": "item", "buckets": 8, "min_count": 2}]}', 1, 0.01, 64);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END $$;
DO $$ BEGIN PERFORM pepnet_create('vocab_bad', '{"domains": 1, "inputs": "columns", "persona": [{"name": "u", "buckets": 8, "min_count": 2}], "features": [{"name": "item", "buckets": 8}]}', 1);
EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END $$;
SELECT count(*) AS no_bad_version FROM pepnet.models WHERE name = 'vocab_bad';
SET client_min_messages = warning;

-- pepnet_check_data with the config checks the ids of a min_count field without a vocabulary
SELECT sum(rows) AS rows FROM pepnet_check_data('SELECT * FROM vocab_ev', config => :'vcfg') WHERE domain IS NULL;

CALL pepnet_train('vocab_a', 'SELECT * FROM vocab_ev', :'vcfg', epochs => 2, seed => 1, batch_size => 64, lr => 0.02,
                  progress_interval => 0);
-- the stored buckets are V + 1: item keeps 29 of its 40 ids (buckets 30 at most; equal counts: the
-- smaller ids), usr its 50 users seen 3 times or more (the 5 rare ones are out)
SELECT version, config->'features'->0->'buckets' AS item_buckets, config->'features'->0->'min_count' AS item_min_count,
       config->'persona'->0->'buckets' AS usr_buckets, config->'persona'->0->'min_count' AS usr_min_count
FROM pepnet.models WHERE name = 'vocab_a' ORDER BY version;
-- the vocabularies in the weights: int64 tensors of V ids, ascending, after every float tensor
SELECT vocab_entry(pepnet_export('vocab_a'), 'vocab.feature.0') - 'data_offsets' AS item_vocab,
       vocab_entry(pepnet_export('vocab_a'), 'vocab.persona.0') - 'data_offsets' AS usr_vocab,
       vocab_entry(pepnet_export('vocab_a'), 'emb.feature.0')->'shape' AS item_table,
       vocab_entry(pepnet_export('vocab_a'), 'emb.persona.0')->'shape' AS usr_table;
SELECT vocab_ids(pepnet_export('vocab_a'), 'vocab.feature.0') = ARRAY(SELECT generate_series(0, 28)::bigint) AS item_ids_0_to_28;
SELECT array_length(vocab_ids(pepnet_export('vocab_a'), 'vocab.persona.0'), 1) AS usr_ids,
       vocab_ids(pepnet_export('vocab_a'), 'vocab.persona.0') = ARRAY(SELECT DISTINCT unnest(vocab_ids(pepnet_export('vocab_a'), 'vocab.persona.0')) ORDER BY 1) AS ascending_unique;

-- scoring: two unseen items (and a rare one, seen once) score as the OOV row; a seen item does not;
-- an unseen user, a rare one and a seen one likewise; NULL uses the missing row, not the OOV row
CREATE TABLE vocab_s AS
SELECT k, pepnet_predict('vocab_a', c) AS p
FROM (VALUES ('unseen_a', 1, 777777::bigint, 'u3'), ('unseen_b', 1, -5, 'u3'), ('rare', 1, 1002, 'u3'),
             ('seen_29', 1, 29, 'u3'), ('seen_3', 1, 3, 'u3'), ('null', 1, NULL, 'u3'),
             ('user_unseen_a', 0, 4, 'nobody'), ('user_unseen_b', 0, 4, 'ghost'), ('user_rare', 0, 4, 'rare2'),
             ('user_seen', 0, 4, 'u7'), ('user_null', 0, 4, NULL)) v(k, domain, item, usr),
     LATERAL (SELECT v.domain, v.item, v.usr) c;
SELECT (SELECT p FROM vocab_s WHERE k = 'unseen_a') = (SELECT p FROM vocab_s WHERE k = 'unseen_b') AS unseen_same,
       (SELECT p FROM vocab_s WHERE k = 'rare') = (SELECT p FROM vocab_s WHERE k = 'unseen_a') AS rare_is_oov,
       (SELECT p FROM vocab_s WHERE k = 'seen_29') = (SELECT p FROM vocab_s WHERE k = 'unseen_a') AS over_buckets_is_oov,
       (SELECT p FROM vocab_s WHERE k = 'seen_3') <> (SELECT p FROM vocab_s WHERE k = 'unseen_a') AS seen_differs,
       (SELECT p FROM vocab_s WHERE k = 'null') <> (SELECT p FROM vocab_s WHERE k = 'unseen_a') AS null_not_oov;
SELECT (SELECT p FROM vocab_s WHERE k = 'user_unseen_a') = (SELECT p FROM vocab_s WHERE k = 'user_unseen_b') AS user_unseen_same,
       (SELECT p FROM vocab_s WHERE k = 'user_rare') = (SELECT p FROM vocab_s WHERE k = 'user_unseen_a') AS user_rare_is_oov,
       (SELECT p FROM vocab_s WHERE k = 'user_seen') <> (SELECT p FROM vocab_s WHERE k = 'user_unseen_a') AS user_seen_differs,
       (SELECT p FROM vocab_s WHERE k = 'user_null') <> (SELECT p FROM vocab_s WHERE k = 'user_unseen_a') AS user_null_not_oov;
-- the vectorized form agrees with pepnet_predict
SELECT max(abs(s.score - v.p)) < 1e-6 AS score_rows_agree
FROM vocab_s v JOIN (SELECT (to_jsonb(s.candidate)->>'k') AS k, s.score
                     FROM pepnet_score_rows('vocab_a', ARRAY(
                       SELECT c FROM (VALUES ('unseen_a', 1, 777777::bigint, 'u3'), ('rare', 1, 1002, 'u3'),
                                             ('seen_3', 1, 3, 'u3'), ('null', 1, NULL, 'u3')) c(k, domain, item, usr))) s) s
  ON s.k = v.k;

-- pepnet_score_query and pepnet_evaluate read the same rows through the vocabularies
SELECT count(*) FILTER (WHERE abs(q.score - v.p) < 1e-6) AS score_query_same, count(*) AS rows
FROM pepnet_score_query('vocab_a', 'SELECT k, domain, item, usr FROM (VALUES (''unseen_a'', 1, 777777::bigint, ''u3''), (''rare'', 1, 1002, ''u3''),
                                     (''seen_3'', 1, 3, ''u3''), (''null'', 1, NULL, ''u3''), (''user_unseen_a'', 0, 4, ''nobody'')) c(k, domain, item, usr)')
     AS q(k text, domain int, item bigint, usr text, score float8, scores float8[])
JOIN vocab_s v USING (k);
SELECT domain, rows, auc > 0.6 AS learned FROM pepnet_evaluate('vocab_a', 'SELECT * FROM vocab_ev') WHERE domain IS NULL;

-- continued training keeps the vocabulary: new frequent ids (items 500..509) go to the OOV row
CREATE TABLE vocab_more AS
SELECT g AS id, g % 2 AS domain, (500 + g % 10)::bigint AS item, 'u' || (g % 50) AS usr, g % 3 = 0 AS click
FROM generate_series(1, 600) g;
CALL pepnet_train('vocab_a', 'SELECT * FROM vocab_more', epochs => 1, batch_size => 64, lr => 0.02, progress_interval => 0);
SELECT version, parent, (metrics->>'resumed_steps')::int > 0 AS adam_resumed,
       config = (SELECT config FROM pepnet.models WHERE name = 'vocab_a' AND version = 2) AS same_config,
       vocab_ids(pepnet_export('vocab_a@3'), 'vocab.feature.0') = vocab_ids(pepnet_export('vocab_a@2'), 'vocab.feature.0') AS same_item_vocab,
       vocab_ids(pepnet_export('vocab_a@3'), 'vocab.persona.0') = vocab_ids(pepnet_export('vocab_a@2'), 'vocab.persona.0') AS same_usr_vocab
FROM pepnet.models WHERE name = 'vocab_a' AND version = 3;
SELECT pepnet_predict('vocab_a@3', c) = pepnet_predict('vocab_a@3', d) AS new_ids_are_oov
FROM (SELECT 1 AS domain, 505::bigint AS item, 'u3' AS usr) c, (SELECT 1 AS domain, 123456::bigint AS item, 'u3' AS usr) d;

-- export / import: bit for bit, the same scores, verify true
SELECT pepnet_import('vocab_b', (SELECT config FROM pepnet.models WHERE name = 'vocab_a' AND version = 2),
                     pepnet_export('vocab_a@2')) AS imported;
SELECT pepnet_export('vocab_b') = pepnet_export('vocab_a@2') AS bit_for_bit, pepnet_verify('vocab_b') AS verified,
       pepnet_verify('vocab_a@2') AS verified_trained;
SELECT count(*) FILTER (WHERE pepnet_predict('vocab_b', c) = v.p) AS same_scores, count(*) AS candidates
FROM vocab_s v, LATERAL (SELECT (CASE WHEN v.k LIKE 'user%' THEN 0 ELSE 1 END) AS domain,
                                CASE v.k WHEN 'unseen_a' THEN 777777 WHEN 'unseen_b' THEN -5 WHEN 'rare' THEN 1002
                                         WHEN 'seen_29' THEN 29 WHEN 'seen_3' THEN 3 WHEN 'null' THEN NULL ELSE 4 END::bigint AS item,
                                CASE v.k WHEN 'user_unseen_a' THEN 'nobody' WHEN 'user_unseen_b' THEN 'ghost'
                                         WHEN 'user_rare' THEN 'rare2' WHEN 'user_seen' THEN 'u7' WHEN 'user_null' THEN NULL
                                         ELSE 'u3' END AS usr) c;

-- stored in chunks of 100 bytes (the vocabularies cross chunk boundaries): the same bytes and scores;
-- training with Adam's moments in such chunks resumes from them (the moments have no vocabulary)
SET pepnet.chunk_size = 100;
SELECT pepnet_import('vocab_ch', (SELECT config FROM pepnet.models WHERE name = 'vocab_a' AND version = 2),
                     pepnet_export('vocab_a@2')) AS imported;
SELECT pepnet_export('vocab_ch') = pepnet_export('vocab_a@2') AS chunked_same, pepnet_verify('vocab_ch') AS verified,
       (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'vocab_ch') > 20 AS many_chunks;
SELECT count(*) FILTER (WHERE pepnet_predict('vocab_ch', c) = pepnet_predict('vocab_b', c)) AS same_scores
FROM (VALUES (1, 777777::bigint, 'u3'), (1, 3, 'nobody'), (0, NULL, NULL), (0, 1002, 'rare1')) c(domain, item, usr);
CALL pepnet_train('vocab_ch2', 'SELECT * FROM vocab_ev', :'vcfg', epochs => 1, seed => 1, batch_size => 64, lr => 0.02,
                  progress_interval => 0);
CALL pepnet_train('vocab_ch2', 'SELECT * FROM vocab_ev', epochs => 1, batch_size => 64, lr => 0.02, progress_interval => 0);
SELECT version, (metrics->>'resumed_steps')::int > 0 AS adam_resumed,
       vocab_ids(pepnet_export('vocab_ch2@2'), 'vocab.feature.0') = vocab_ids(pepnet_export('vocab_a@1'), 'vocab.feature.0') AS same_vocab
FROM pepnet.models WHERE name = 'vocab_ch2' ORDER BY version;
RESET pepnet.chunk_size;

-- import refuses a vocabulary that is missing, not I64, of another shape, or not ascending and unique (22P03)
SET client_min_messages = notice;
DO $$
DECLARE
  cfg jsonb := (SELECT config FROM pepnet.models WHERE name = 'vocab_a' AND version = 2);
  w bytea := pepnet_export('vocab_a@2');
  hl int := get_byte(w, 0) + get_byte(w, 1) * 256 + get_byte(w, 2) * 65536;
  hdr text := convert_from(substring(w FROM 9 FOR hl), 'UTF8');
  b bigint := ((hdr::jsonb)->'vocab.feature.0'->'data_offsets'->>0)::bigint;
  bad bytea;
  plain jsonb;
BEGIN
  -- vocabularies the config does not have (no min_count), and weights without them for a config with them
  plain := jsonb_set(jsonb_set(cfg, '{features,0}', (cfg->'features'->0) - 'min_count'), '{persona,0}', (cfg->'persona'->0) - 'min_count');
  BEGIN PERFORM pepnet_import('vocab_bad', plain, w);
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END;
  PERFORM pepnet_create('vocab_plain', plain, 1);
  BEGIN PERFORM pepnet_import('vocab_bad', cfg, pepnet_export('vocab_plain'));
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END;
  -- dtype F32 in place of I64 (same length of header)
  bad := overlay(w PLACING convert_to(replace(hdr, '"vocab.feature.0":{"dtype":"I64"', '"vocab.feature.0":{"dtype":"F32"'), 'UTF8') FROM 9);
  BEGIN PERFORM pepnet_import('vocab_bad', cfg, bad);
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END;
  -- another size: the config says 31 rows (30 ids; the table's shape is checked first)
  BEGIN PERFORM pepnet_import('vocab_bad', jsonb_set(cfg, '{features,0,buckets}', '31'), w);
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END;
  -- ids 0 and 1 swapped: not ascending
  bad := overlay(overlay(w PLACING substring(w FROM (9 + hl + b + 8)::int FOR 8) FROM (9 + hl + b)::int)
                 PLACING substring(w FROM (9 + hl + b)::int FOR 8) FROM (9 + hl + b + 8)::int);
  BEGIN PERFORM pepnet_import('vocab_bad', cfg, bad);
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END;
  -- id 1 made 0: not unique
  bad := overlay(w PLACING substring(w FROM (9 + hl + b)::int FOR 8) FROM (9 + hl + b + 8)::int);
  BEGIN PERFORM pepnet_import('vocab_bad', cfg, bad);
  EXCEPTION WHEN OTHERS THEN RAISE NOTICE '% %', SQLSTATE, SQLERRM; END;
END $$;
SET client_min_messages = warning;
SELECT count(*) AS bad_versions FROM pepnet.models WHERE name = 'vocab_bad';
DELETE FROM pepnet.models WHERE name = 'vocab_bad';

-- a vocabulary with no id seen min_count times: V = 0, only the OOV and the missing row
CALL pepnet_train('vocab_c', 'SELECT * FROM vocab_ev', '{"domains": 2, "features": [{"name": "item", "buckets": 30, "min_count": 1000}], "emb_dim": 4, "hidden": [8]}',
                  epochs => 1, seed => 1, batch_size => 64, lr => 0.02, progress_interval => 0);
SELECT config->'features'->0->'buckets' AS buckets, vocab_entry(pepnet_export('vocab_c'), 'vocab.feature.0') - 'data_offsets' AS vocab
FROM pepnet.models WHERE name = 'vocab_c';
SELECT count(DISTINCT pepnet_predict('vocab_c', c)) AS one_score
FROM (SELECT 1 AS domain, g::bigint AS item FROM generate_series(1, 5) g) c;

-- a version bundle (pepnet_export_version / pepnet_import_version, scale-out) carries the vocabulary
CREATE TABLE vocab_bundle AS SELECT pepnet_export_version('vocab_c@1') AS b, pepnet_export('vocab_c@1') AS w;
DELETE FROM pepnet.models WHERE name = 'vocab_c';
SELECT pepnet_import_version(b) AS version FROM vocab_bundle;
SELECT pepnet_export('vocab_c@1') = w AS same_weights, pepnet_verify('vocab_c@1') AS verified FROM vocab_bundle;

-- a multi-valued field with a vocabulary: each element of each row's array is one id counted;
-- 'a' is in 3 rows, 'b' in 2, 'c' and 'd' in 1: min_count 2 keeps a and b (V = 2, buckets 3)
CREATE TABLE vocab_tags (domain int, tags text[], click int);
INSERT INTO vocab_tags VALUES (0, '{a,b}', 1), (1, '{a,NULL,c}', 0), (0, '{a,b,d}', 1), (1, NULL, 0), (0, '{}', 1);
CALL pepnet_train('vocab_t', 'SELECT * FROM vocab_tags',
                  '{"inputs": "columns", "domains": 2, "features": [{"name": "tags", "buckets": 30, "pooling": "mean", "min_count": 2}], "emb_dim": 4, "hidden": [8]}',
                  epochs => 1, seed => 1, batch_size => 8, progress_interval => 0);
SELECT config->'features'->0->'buckets' AS buckets, config->'features'->0->'min_count' AS min_count
FROM pepnet.models WHERE name = 'vocab_t';
-- unseen tags and rare ones pool the OOV row: {'c'} = {'zz'} = {'zz', 'c'}; {'a'} is another row
SELECT count(DISTINCT round(pepnet_predict('vocab_t', c)::numeric, 7)) AS oov_scores
FROM (VALUES (0, ARRAY['c']), (0, ARRAY['zz']), (0, ARRAY['zz', 'c'])) c(domain, tags);
SELECT pepnet_predict('vocab_t', c1) <> pepnet_predict('vocab_t', c2) AS seen_differs
FROM (SELECT 0 AS domain, ARRAY['a'] AS tags) c1, (SELECT 0 AS domain, ARRAY['zz'] AS tags) c2;
