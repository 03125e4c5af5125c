#!/usr/bin/env bash
# bench/int8_datasets.sh: int8 scoring against fp32 on trained models (issue 18 item 3's accuracy goal:
# scores within 1e-2 of fp32, test AUC within 1e-3), end to end on a fresh Debian 12 machine (as root
# or a user with sudo): deps, build, install into $PG_CONFIG (else the pg_config on PATH), a throwaway
# cluster, the demo's synthetic data and the real samples (bench/load_data.py), then
# bench/int8_datasets.py (its docstring says what is trained and compared). Writes
# bench/out/int8_datasets.md and .json.
#
# Environment: DATASETS (synth,aliccp,mind,douban), ROWS (200000: the synthetic rows), EPOCHS (2),
#              KEEP_CLUSTER=1 leaves the cluster running (PGTEST_DIR=/tmp/pepnet-int8d, port 54393).
set -euo pipefail
cd "$(dirname "$0")/.."
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-int8d} PGTEST_PORT=${PGTEST_PORT:-54393}
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config)}
export PG_CONFIG
PY=/usr/bin/python3
bash test/deps.sh
make -s && make -s install PG_CONFIG="$PG_CONFIG"
test/pg.sh start
[ "${KEEP_CLUSTER:-0}" = 1 ] || trap 'test/pg.sh stop' EXIT
eval "$(test/pg.sh env)"
psql -X -q -c "DROP DATABASE IF EXISTS pepnet_int8d" -c "CREATE DATABASE pepnet_int8d"
export PGDATABASE=pepnet_int8d
psql -X -q -c "CREATE EXTENSION pepnet"
DATASETS=${DATASETS:-synth,aliccp,mind,douban}
for ds in ${DATASETS//,/ }; do
	[ "$ds" = synth ] || $PY bench/load_data.py "$ds" >/dev/null
done
$PY bench/int8_datasets.py --datasets "$DATASETS" --rows "${ROWS:-200000}" --epochs "${EPOCHS:-2}"
