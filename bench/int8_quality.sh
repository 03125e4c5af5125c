#!/usr/bin/env bash
# bench/int8_quality.sh: int8 scoring against fp32 (issue 18 item 3's goals: scores within 1e-2,
# test AUC within 1e-3) on
#   - the demo model: examples/demo.sh's config trained on examples/synth.sql's named data
#     (ROWS rows, EPOCHS epochs, its learning-rate schedule); every row of synth_test scored with
#     pepnet_score_query in fp32 and int8 (|dp| over both tasks), and pepnet_evaluate's test AUC
#     per domain and task in both precisions;
#   - the bench model: bench/bench-config.json (8 features, 3 persona fields, 2 tasks, hidden
#     [256, 128], emb_dim 16) with pepnet_create's random weights (seed 2); NCAND candidates of 4
#     domains and 500 personas scored in both precisions (|dp|), and the AUC of each precision
#     against labels drawn with P(1) = the fp32 score's percentile rank (a fixed hash): how much
#     int8 reorders what fp32 ranks.
# Builds and installs the extension into $PG_CONFIG's PostgreSQL, starts a throwaway cluster
# (PGTEST_DIR, PGTEST_PORT; stopped at the end unless one was running), a database pepnet_int8q.
#   PG_CONFIG=... PGTEST_PORT=... PGTEST_DIR=... bench/int8_quality.sh    # ROWS=200000 EPOCHS=2 NCAND=100000
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-200000}
EPOCHS=${EPOCHS:-2}
NCAND=${NCAND:-100000}
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-bench-int8q} PGTEST_PORT=${PGTEST_PORT:-54352}
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config)}
export PG_CONFIG
make -s >/dev/null && make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
started=$(bash test/pg.sh start)
case "$started" in
*"already running"*) ;;
*) trap 'bash test/pg.sh stop >/dev/null' EXIT ;;
esac
eval "$(bash test/pg.sh env)"
PSQL="psql -X -v ON_ERROR_STOP=1 -q"
$PSQL -d postgres -c "DROP DATABASE IF EXISTS pepnet_int8q" -c "CREATE DATABASE pepnet_int8q"
export PGDATABASE=pepnet_int8q
$PSQL -c "CREATE EXTENSION pepnet"
echo "# commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' (modified)'), $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "# $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'); $(grep -o -w -E 'avx2|avx512f|avx512_vnni|avx_vnni|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"

echo "== demo model: $ROWS rows of examples/synth.sql (columns), $EPOCHS epochs"
$PSQL -v rows="$ROWS" -v seed=1 -v form=columns -f examples/synth.sql
FEATURES='{"name": "item_id", "buckets": 20000}, {"name": "category", "buckets": 1000},
               {"name": "hour", "buckets": 24, "hash": false}, {"name": "device", "buckets": 4, "hash": false},
               {"name": "noise1", "buckets": 1000}, {"name": "noise2", "buckets": 64}'
CONFIG='{"inputs": "columns", "domains": 4,
  "features": ['"$FEATURES"'],
  "persona": [{"name": "user_id", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": false},
              {"name": "segment", "buckets": 20, "hash": false}],
  "dense": [{"name": "item_views", "log1p": true, "normalize": "zscore"}],
  "emb_dim": 16, "tasks": ["click", "buy"], "hidden": [128, 64]}'
STEPS=$(( (ROWS * 8 / 10 + 511) / 512 ))
SCHEDULE="{\"warmup_steps\": $(( STEPS / 6 )), \"decay\": \"cosine\", \"decay_steps\": $(( EPOCHS * STEPS - STEPS / 6 ))}"
$PSQL -c "CALL pepnet_train('demo', 'SELECT * FROM synth_train', '$CONFIG', validation => 'SELECT * FROM synth_valid',
  epochs => $EPOCHS, batch_size => 512, lr => 2e-3, lr_schedule => '$SCHEDULE', progress_interval => 0)"
COLS="id bigint, domain int, user_id uuid, age int, segment int, item_id bigint, category text, hour int, device int,
      noise1 bigint, noise2 bigint, item_views int, click int, buy int"
$PSQL <<SQL
SELECT count(*) AS test_rows FROM synth_test;
CREATE TABLE synth_test_id AS SELECT row_number() OVER () AS id, * FROM synth_test;
SET pepnet.precision = 'fp32';
CREATE TABLE d32 AS SELECT id, scores FROM pepnet_score_query('demo', 'SELECT * FROM synth_test_id ORDER BY id') AS t($COLS, score float8, scores float8[]);
CREATE TABLE e32 AS SELECT * FROM pepnet_evaluate('demo', 'SELECT * FROM synth_test');
SET pepnet.precision = 'int8';
CREATE TABLE d8 AS SELECT id, scores FROM pepnet_score_query('demo', 'SELECT * FROM synth_test_id ORDER BY id') AS t($COLS, score float8, scores float8[]);
CREATE TABLE e8 AS SELECT * FROM pepnet_evaluate('demo', 'SELECT * FROM synth_test');
\echo demo model, |dp| int8 - fp32 per task over every test row
SELECT t AS task, count(*) AS rows, max(abs(a.scores[t] - b.scores[t]))::numeric(10, 6) AS max_dp,
       avg(abs(a.scores[t] - b.scores[t]))::numeric(10, 7) AS mean_dp,
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY abs(a.scores[t] - b.scores[t])))::numeric(10, 6) AS p99_dp,
       count(*) FILTER (WHERE abs(a.scores[t] - b.scores[t]) >= 1e-2) AS rows_dp_ge_1e2
FROM d32 a JOIN d8 b USING (id), generate_series(1, 2) t GROUP BY t ORDER BY t;
\echo demo model, test AUC fp32 and int8 (pepnet_evaluate)
SELECT a.task, a.domain, a.rows, a.auc::numeric(8, 6) AS auc_fp32, b.auc::numeric(8, 6) AS auc_int8,
       (b.auc - a.auc)::numeric(9, 6) AS d_auc, (b.logloss - a.logloss)::numeric(9, 6) AS d_logloss
FROM e32 a JOIN e8 b ON a.task = b.task AND a.domain IS NOT DISTINCT FROM b.domain
ORDER BY a.task DESC, a.domain NULLS LAST;
SQL

echo "== bench model: bench/bench-config.json, pepnet_create seed 2, $NCAND candidates"
$PSQL -c "SELECT pepnet_create('bench', '$(tr -d '\n' < bench/bench-config.json)', 2)" >/dev/null
$PSQL <<SQL
CREATE TABLE bc AS
SELECT i AS id, i % 4 AS domain, ARRAY[(i / 200) % 500, (i / 200) % 8, (i / 200) % 100]::bigint[] AS persona,
       ARRAY[hashint8(i), i % 64, i % 24, hashint8(i * 3) % 1000, hashint8(i * 5) % 1000, hashint8(i * 7) % 1000,
             hashint8(i * 11) % 1000, hashint8(i * 13) % 1000]::bigint[] AS features
FROM generate_series(1, $NCAND) i;
SET pepnet.precision = 'fp32';
CREATE TABLE b32 AS SELECT id, scores FROM pepnet_score_query('bench', 'SELECT id, domain, persona, features FROM bc ORDER BY id')
  AS t(id int, score float8, scores float8[]);
-- labels drawn by a fixed hash with P(1) = the fp32 score's percentile rank (random weights give
-- scores in a narrow band: Bernoulli(p) would be noise)
CREATE TABLE bl AS SELECT c.*, ARRAY[(abs(hashint8(c.id)) % 1000000 < b.r1 * 1e6)::int,
                                     (abs(hashint8(-c.id)) % 1000000 < b.r2 * 1e6)::int]::real[] AS labels
FROM bc c JOIN (SELECT id, percent_rank() OVER (ORDER BY scores[1]) AS r1, percent_rank() OVER (ORDER BY scores[2]) AS r2 FROM b32) b USING (id);
CREATE TABLE be32 AS SELECT * FROM pepnet_evaluate('bench', 'SELECT domain, persona, features, labels FROM bl');
SET pepnet.precision = 'int8';
CREATE TABLE b8 AS SELECT id, scores FROM pepnet_score_query('bench', 'SELECT id, domain, persona, features FROM bc ORDER BY id')
  AS t(id int, score float8, scores float8[]);
CREATE TABLE be8 AS SELECT * FROM pepnet_evaluate('bench', 'SELECT domain, persona, features, labels FROM bl');
\echo bench model, |dp| int8 - fp32 per task
SELECT t AS task, count(*) AS rows, max(abs(a.scores[t] - b.scores[t]))::numeric(10, 6) AS max_dp,
       avg(abs(a.scores[t] - b.scores[t]))::numeric(10, 7) AS mean_dp,
       (percentile_cont(0.99) WITHIN GROUP (ORDER BY abs(a.scores[t] - b.scores[t])))::numeric(10, 6) AS p99_dp,
       count(*) FILTER (WHERE abs(a.scores[t] - b.scores[t]) >= 1e-2) AS rows_dp_ge_1e2
FROM b32 a JOIN b8 b USING (id), generate_series(1, 2) t GROUP BY t ORDER BY t;
\echo bench model, AUC against labels drawn from the fp32 ranks, fp32 and int8
SELECT a.task, a.domain, a.rows, a.auc::numeric(8, 6) AS auc_fp32, b.auc::numeric(8, 6) AS auc_int8,
       (b.auc - a.auc)::numeric(9, 6) AS d_auc
FROM be32 a JOIN be8 b ON a.task = b.task AND a.domain IS NOT DISTINCT FROM b.domain
ORDER BY a.task DESC, a.domain NULLS LAST;
SQL
