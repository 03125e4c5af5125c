#!/usr/bin/env bash
# examples/demo.sh: pepnet end to end on a fresh Debian 12 machine.
# Installs what it needs, builds and installs the extension, starts a throwaway
# PostgreSQL cluster, generates synthetic multi-domain click data, trains a
# STAR-PEPNet model with CALL pepnet_train (a version per epoch), deploys the
# best version, prints per-domain AUC of every version and scores candidates.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-200000}
EPOCHS=${EPOCHS:-3}
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-demo} PGTEST_PORT=${PGTEST_PORT:-54369}

bash test/deps.sh
make -s && make -s install
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

echo "== training (CALL pepnet_train, $EPOCHS epochs, a committed version per epoch)"
$PSQL -c "SET client_min_messages = notice" -c "CALL pepnet_train('demo',
  'SELECT domain, persona, features, labels FROM synth_train', '$CONFIG',
  validation => 'SELECT domain, persona, features, labels FROM synth_valid',
  epochs => $EPOCHS, batch_size => 512, lr => 2e-3, deploy => true, progress_interval => 5)"

echo "== versions"
$PSQL -c "SELECT version, parent, metrics->>'rows' AS rows, round((metrics->>'rows_per_s')::numeric) AS rows_per_s,
  round((metrics->>'train_loss')::numeric, 4) AS train_loss, round((metrics->'validation'->>'auc')::numeric, 4) AS valid_auc
  FROM pepnet.models WHERE name = 'demo' ORDER BY version"
$PSQL -c "SELECT * FROM pepnet.deployments"

echo "== test AUC per domain of every version (click task)"
$PSQL -c "SELECT 'demo@' || m.version AS model, e.domain, e.rows, round(e.auc::numeric, 4) AS auc, round(e.logloss::numeric, 4) AS logloss
  FROM pepnet.models m, pepnet_evaluate('demo@' || m.version, 'SELECT domain, persona, features, labels FROM synth_test') e
  WHERE m.name = 'demo' AND e.task = 'click' ORDER BY m.version, e.domain NULLS LAST"

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
