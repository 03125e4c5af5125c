#!/usr/bin/env bash
# examples/demo.sh: pepnet end to end on a fresh Debian 12 machine.
# Installs what it needs, builds and installs the extension (into the PostgreSQL that PG_CONFIG,
# else the pg_config on PATH, names), starts a throwaway PostgreSQL cluster, generates synthetic
# multi-domain click data with named columns (examples/synth.sql, form=columns: a uuid user id, a
# text category, an integer item id, a heavy-tailed view count), trains a STAR-PEPNet model by
# column name with CALL pepnet_train (a version per epoch), deploys the best version, prints
# per-domain AUC and calibration (predicted vs actual click rate) of every version and scores
# candidates by name.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-200000}
EPOCHS=${EPOCHS:-2}
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-demo-$(id -un)} PGTEST_PORT=${PGTEST_PORT:-54369}

bash test/deps.sh
# make install writes into PostgreSQL's directories: through sudo unless they are writable
# (sudo resets PATH: name the pg_config explicitly)
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config)}
export PG_CONFIG
SUDO=""
[ -w "$("$PG_CONFIG" --pkglibdir)" ] && [ -w "$("$PG_CONFIG" --sharedir)/extension" ] || SUDO="sudo"
make -s && $SUDO make -s install PG_CONFIG="$PG_CONFIG"
# a throwaway cluster in $PGTEST_DIR, stopped at the end; one already running there is used and left running
started=$(test/pg.sh start)
echo "$started"
case "$started" in
*"already running"*) ;;
*) trap 'test/pg.sh stop' EXIT ;;
esac
eval "$(test/pg.sh env)"
PSQL="psql -X -v ON_ERROR_STOP=1 -q"

$PSQL -c "DROP DATABASE IF EXISTS pepnet_demo" -c "CREATE DATABASE pepnet_demo"
export PGDATABASE=pepnet_demo
$PSQL -c "CREATE EXTENSION pepnet"
echo "== generating $ROWS rows of synthetic multi-domain click data, columns by name"
$PSQL -v rows="$ROWS" -v seed=1 -v form=columns -f examples/synth.sql
$PSQL -c "SELECT * FROM synth_train LIMIT 3"

# The fields, each read from the column of its "name" (examples/synth.sql, form=columns): ids may
# be integers (item_id), text (category) or uuids (user_id), hashed by the server; "hash": false
# takes small integer ids as rows. The dense field item_views (a heavy-tailed count) is used as
# z-scored ln(1 + views): the mean and standard deviation come from the training data and are
# stored with the version. Labels are the columns named by "tasks".
FEATURES='{"name": "item_id", "buckets": 20000}, {"name": "category", "buckets": 1000},
               {"name": "hour", "buckets": 24, "hash": false}, {"name": "device", "buckets": 4, "hash": false},
               {"name": "noise1", "buckets": 1000}, {"name": "noise2", "buckets": 64}'
CONFIG='{"inputs": "columns", "domains": 4,
  "features": ['"$FEATURES"'],
  "persona": [{"name": "user_id", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": false},
              {"name": "segment", "buckets": 20, "hash": false}],
  "dense": [{"name": "item_views", "log1p": true, "normalize": "zscore"}],
  "emb_dim": 16, "tasks": ["click", "buy"], "hidden": [128, 64]}'

# learning rate: linear warm-up over the first sixth of an epoch, then cosine decay to 0 over the
# rest of the training (steps of 512 rows, about 80% of the rows train).  A decaying rate also lets
# PN's running statistics (an average over the last ~100 batches) catch up with the weights, which
# keeps the scores calibrated: with a constant 2e-3 the first epoch's version under-predicts by
# 10-25% per domain (PyTorch's implementation of MODEL.md likewise).
STEPS=$(( (ROWS * 8 / 10 + 511) / 512 ))
SCHEDULE="{\"warmup_steps\": $(( STEPS / 6 )), \"decay\": \"cosine\", \"decay_steps\": $(( EPOCHS * STEPS - STEPS / 6 ))}"
echo "== training by column name (CALL pepnet_train, $EPOCHS epochs, a committed version per epoch, lr schedule $SCHEDULE)"
$PSQL -c "SET client_min_messages = notice" -c "CALL pepnet_train('demo', 'SELECT * FROM synth_train', '$CONFIG',
  validation => 'SELECT * FROM synth_valid',
  epochs => $EPOCHS, batch_size => 512, lr => 2e-3, lr_schedule => '$SCHEDULE', deploy => true, progress_interval => 5)"

echo "== versions (validation AUC and PCOC of the click task; the dense field's statistics stored with the version)"
$PSQL -c "SELECT version, parent, metrics->>'rows' AS rows, round((metrics->>'rows_per_s')::numeric) AS rows_per_s,
  round((metrics->>'train_loss')::numeric, 4) AS train_loss, round((metrics->'validation'->>'auc')::numeric, 4) AS valid_auc,
  round((metrics->'validation'->>'pcoc')::numeric, 3) AS valid_pcoc, config->'dense'->0 AS dense_field
  FROM pepnet.models WHERE name = 'demo' ORDER BY version"
$PSQL -c "SELECT * FROM pepnet.deployments"

echo "== test AUC and calibration per domain of every version (click task): mean predicted click rate,"
echo "   actual click rate and their ratio (PCOC; 1 = calibrated)"
$PSQL -c "SELECT 'demo@' || m.version AS model, e.domain, e.rows, round(e.auc::numeric, 4) AS auc, round(e.logloss::numeric, 4) AS logloss,
  round(e.mean_p::numeric, 4) AS predicted, round(e.actual::numeric, 4) AS actual, round(e.pcoc::numeric, 3) AS pcoc
  FROM pepnet.models m, pepnet_evaluate('demo@' || m.version, 'SELECT * FROM synth_test') e
  WHERE m.name = 'demo' AND e.task = 'click' ORDER BY m.version, e.domain NULLS LAST"

echo "== the deployed version on the test data, every task: predicted vs actual rate per domain"
$PSQL -c "SELECT d.version AS deployed, e.task, e.domain, round(e.auc::numeric, 4) AS auc, round(e.mean_p::numeric, 4) AS predicted,
  round(e.actual::numeric, 4) AS actual, round(e.pcoc::numeric, 3) AS pcoc,
  CASE WHEN round(e.pcoc::numeric, 2) BETWEEN 0.9 AND 1.1 THEN 'calibrated' ELSE 'off by ' || round(e.pcoc::numeric, 2) || 'x' END AS verdict
  FROM pepnet.deployments d, pepnet_evaluate('demo', 'SELECT * FROM synth_test') e
  WHERE d.name = 'demo' ORDER BY e.task DESC, e.domain NULLS LAST"

echo "== scoring by name: top 10 of 1000 candidate items for user 42 in domain 2 at 8 pm (pepnet_score_rows)"
$PSQL -c "CREATE TEMP TABLE cands AS
SELECT 2 AS domain, u.user_id, u.age, u.segment, i.item_id, i.category, i.item_views, 20 AS hour, 1 AS device,
       1::bigint AS noise1, 1::bigint AS noise2
FROM (SELECT user_id, age, segment FROM synth_train WHERE user_id = md5('user42')::uuid LIMIT 1) u,
     (SELECT DISTINCT ON (item_id) item_id, category, item_views FROM synth_test ORDER BY item_id LIMIT 1000) i;
SELECT (s.candidate).item_id, (s.candidate).category, (s.candidate).item_views, round(s.score::numeric, 4) AS p_click,
       round(s.scores[2]::numeric, 4) AS p_buy
FROM pepnet_score_rows('demo', ARRAY(SELECT c FROM cands c)) s
ORDER BY s.score DESC LIMIT 10"
echo "== row by row: pepnet_predict(model, row) over a table"
$PSQL -c "SELECT domain, round(avg(pepnet_predict('demo', t))::numeric, 4) AS mean_p, round(avg(click), 4) AS ctr
  FROM synth_test t GROUP BY domain ORDER BY domain"
echo "demo done"
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null && { PYTHONPATH=python /usr/bin/python3 -P -m pepnet.plot demo -o demo-lineage.png || echo "lineage plot failed (the demo itself is done)"; } || echo "python3-matplotlib missing: no lineage plot"
