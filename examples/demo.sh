#!/usr/bin/env bash
# examples/demo.sh: pepnet end to end on a fresh Debian 12 machine.
# Installs what it needs, builds and installs the extension, starts a throwaway
# PostgreSQL cluster, generates synthetic multi-domain click data, trains a
# STAR-PEPNet model with CALL pepnet_train (a version per epoch), deploys the
# best version, prints per-domain AUC and calibration (predicted vs actual click rate) of every
# version and scores candidates.
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
test/pg.sh start
trap 'test/pg.sh stop' EXIT
eval "$(test/pg.sh env)"
PSQL="psql -X -v ON_ERROR_STOP=1 -q"

$PSQL -c "DROP DATABASE IF EXISTS pepnet_demo" -c "CREATE DATABASE pepnet_demo"
export PGDATABASE=pepnet_demo
$PSQL -c "CREATE EXTENSION pepnet"
echo "== generating $ROWS rows of synthetic multi-domain click data"
$PSQL -v rows="$ROWS" -v seed=1 -f examples/synth.sql
$PSQL -c "SELECT domain, count(*) AS rows, round(avg(label)::numeric, 4) AS ctr FROM synth_train GROUP BY domain ORDER BY domain"

CONFIG='{"domains": 4,
  "features": [{"name": "item", "buckets": 20000}, {"name": "category", "buckets": 64, "hash": false},
               {"name": "hour", "buckets": 24, "hash": false}, {"name": "device", "buckets": 4, "hash": false},
               {"name": "noise1", "buckets": 1000}, {"name": "noise2", "buckets": 64}],
  "persona": [{"name": "user", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": false},
              {"name": "segment", "buckets": 20, "hash": false}],
  "emb_dim": 16, "tasks": ["click", "buy"], "hidden": [128, 64]}'

# learning rate: linear warm-up over the first sixth of an epoch, then cosine decay to 0 over the
# rest of the training (steps of 512 rows, about 80% of the rows train).  A decaying rate also lets
# PN's running statistics (an average over the last ~100 batches) catch up with the weights, which
# keeps the scores calibrated: with a constant 2e-3 the first epoch's version under-predicts by
# 10-25% per domain (PyTorch's implementation of MODEL.md likewise).
STEPS=$(( (ROWS * 8 / 10 + 511) / 512 ))
SCHEDULE="{\"warmup_steps\": $(( STEPS / 6 )), \"decay\": \"cosine\", \"decay_steps\": $(( EPOCHS * STEPS - STEPS / 6 ))}"
echo "== training (CALL pepnet_train, $EPOCHS epochs, a committed version per epoch, lr schedule $SCHEDULE)"
$PSQL -c "SET client_min_messages = notice" -c "CALL pepnet_train('demo',
  'SELECT domain, persona, features, labels FROM synth_train', '$CONFIG',
  validation => 'SELECT domain, persona, features, labels FROM synth_valid',
  epochs => $EPOCHS, batch_size => 512, lr => 2e-3, lr_schedule => '$SCHEDULE', deploy => true, progress_interval => 5)"

echo "== versions"
$PSQL -c "SELECT version, parent, metrics->>'rows' AS rows, round((metrics->>'rows_per_s')::numeric) AS rows_per_s,
  round((metrics->>'train_loss')::numeric, 4) AS train_loss, round((metrics->'validation'->>'auc')::numeric, 4) AS valid_auc
  FROM pepnet.models WHERE name = 'demo' ORDER BY version"
$PSQL -c "SELECT * FROM pepnet.deployments"

echo "== test AUC and calibration per domain of every version (click task): mean predicted click rate,"
echo "   actual click rate and their ratio (PCOC; 1 = calibrated)"
$PSQL -c "SELECT 'demo@' || m.version AS model, e.domain, e.rows, round(e.auc::numeric, 4) AS auc, round(e.logloss::numeric, 4) AS logloss,
  round(e.mean_p::numeric, 4) AS predicted, round(e.actual::numeric, 4) AS actual, round(e.pcoc::numeric, 3) AS pcoc
  FROM pepnet.models m, pepnet_evaluate('demo@' || m.version, 'SELECT domain, persona, features, labels FROM synth_test') e
  WHERE m.name = 'demo' AND e.task = 'click' ORDER BY m.version, e.domain NULLS LAST"

echo "== the deployed version on the test data, every task: predicted vs actual rate per domain"
$PSQL -c "SELECT d.version AS deployed, e.task, e.domain, round(e.auc::numeric, 4) AS auc, round(e.mean_p::numeric, 4) AS predicted,
  round(e.actual::numeric, 4) AS actual, round(e.pcoc::numeric, 3) AS pcoc,
  CASE WHEN e.pcoc BETWEEN 0.9 AND 1.1 THEN 'calibrated' ELSE 'off by ' || round(e.pcoc::numeric, 2) || 'x' END AS verdict
  FROM pepnet.deployments d, pepnet_evaluate('demo', 'SELECT domain, persona, features, labels FROM synth_test') e
  WHERE d.name = 'demo' ORDER BY e.task DESC, e.domain NULLS LAST"

echo "== scoring: top 10 of 1000 candidate items for user 42 in domain 2"
$PSQL -c "CREATE TEMP TABLE cands AS SELECT DISTINCT ON (features[1]) features FROM synth_test LIMIT 1000;
SELECT c.features[1] AS item, c.features[2] AS category, round(s.score::numeric, 4) AS p_click, round(s.scores[2]::numeric, 4) AS p_buy
FROM pepnet_score('demo', 2, ARRAY[42, 3, 7]::bigint[], (SELECT array_agg(features ORDER BY features) FROM cands)) s
JOIN (SELECT row_number() OVER (ORDER BY features) AS idx, features FROM cands) c ON c.idx = s.idx
ORDER BY s.score DESC LIMIT 10"
echo "== row by row: pepnet_predict over a table"
$PSQL -c "SELECT domain, round(avg(pepnet_predict('demo', domain, persona, features))::numeric, 4) AS mean_p, round(avg(label)::numeric, 4) AS ctr
  FROM synth_test GROUP BY domain ORDER BY domain"
echo "demo done"
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null && { PYTHONPATH=python /usr/bin/python3 -P -m pepnet.plot demo -o demo-lineage.png || echo "lineage plot failed (the demo itself is done)"; } || echo "python3-matplotlib missing: no lineage plot"
