#!/usr/bin/env bash
# bench/quality.sh [quality|speed|all]: pepnet's training quality and speed against PyTorch,
# end to end on a fresh Debian 12 machine (as root or a user with sudo).
#
#   quality  for the synthetic data (examples/synth.sql, 200,000 rows, seed 1) and the real MIND
#            and Douban samples (bench/load_data.py), train the four configurations of docs/model.md
#            (shared MLP, STAR, PEPNet, STAR-PEPNet) with CALL pepnet_train and with
#            bench/train_torch.py, same epochs / batch 512 / lr 1e-3 / seed 0, and compare test
#            AUC and logloss per domain (pepnet_evaluate vs train_torch.py's exact AUC).
#            Writes bench/out/quality.md and bench/out/quality.json.
#   speed    training samples/s of CALL pepnet_train from a table (metrics->>'rows_per_s') against
#            train_torch.py (1 thread, data preloaded as tensors) on bench/bench-config.json with a
#            synthetic 100,000-row table, batch 512; RUNS times (default 3), median reported.
#            Writes bench/out/train_speed.md and bench/out/train_speed.json.
#   calibration  predicted vs actual rate (PCOC) and AUC per domain of the deployed version on the MIND
#            and Douban test tables, pepnet vs PyTorch (bench/quality_calibration.py: 5 epochs, batch 64,
#            lr 1e-3, 20 warm-up steps then cosine decay). Writes bench/out/calibration.md and .json.
#   baselines  docs/model.md's baselines on the synthetic data and the MIND and Douban samples:
#            all off, the shared bottom (all off + "domain_input") and STAR-PEPNet, CALL pepnet_train
#            only (bench/baselines.py: test AUC, logloss and PCOC overall and per domain).
#            Writes bench/out/baselines.md and .json.
#   all      quality and speed (the default).
#
# Environment: EPOCHS_SYNTH (2), EPOCHS_REAL (5), EPOCHS_SPEED (1), RUNS (3), QUIET_WAIT (60: seconds to
#              wait before each speed measurement for other processes to use < 0.3 CPU),
#              KEEP_CLUSTER=1 leaves the cluster running (PGTEST_DIR=/tmp/pepnet-quality, port 54389).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}
case "$MODE" in quality|speed|calibration|baselines|all) ;; *) echo "usage: $0 [quality|speed|calibration|baselines|all]" >&2; exit 2 ;; esac
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-quality} PGTEST_PORT=${PGTEST_PORT:-54389}
PY=/usr/bin/python3

bash test/deps.sh
make -s && make -s install
test/pg.sh start
[ "${KEEP_CLUSTER:-0}" = 1 ] || trap 'test/pg.sh stop' EXIT
eval "$(test/pg.sh env)"
PSQL="psql -X -v ON_ERROR_STOP=1 -q"

$PSQL -c "DROP DATABASE IF EXISTS pepnet_quality" -c "CREATE DATABASE pepnet_quality"
export PGDATABASE=pepnet_quality
$PSQL -c "CREATE EXTENSION pepnet"
mkdir -p bench/out

if [ "$MODE" = calibration ]; then
	$PY bench/load_data.py mind
	$PY bench/load_data.py douban
	$PY bench/quality_calibration.py --epochs 5 --batch-size 64 --lr 1e-3 --warmup-steps 20 --cosine --out bench/out
	echo "quality.sh calibration done: see bench/out/calibration.md"
	exit 0
fi
if [ "$MODE" = baselines ]; then
	$PSQL -v rows=200000 -v seed=1 -f examples/synth.sql
	$PY bench/load_data.py mind
	$PY bench/load_data.py douban
	$PY bench/baselines.py --only synth,mind,douban --epochs-synth "${EPOCHS_SYNTH:-2}" --epochs-real "${EPOCHS_REAL:-5}" --out bench/out
	echo "quality.sh baselines done: see bench/out/baselines.md"
	exit 0
fi
if [ "$MODE" != speed ]; then
	echo "== synthetic data: 200,000 rows, seed 1 (examples/synth.sql)"
	$PSQL -v rows=200000 -v seed=1 -f examples/synth.sql
	echo "== real samples: MIND (domain = Category) and Douban (domain = domain)"
	# writes bench/configs/{mind,douban}.json (deterministic: the same file every time)
	$PY bench/load_data.py mind
	$PY bench/load_data.py douban
	$PY bench/quality.py quality --epochs-synth "${EPOCHS_SYNTH:-2}" --epochs-real "${EPOCHS_REAL:-5}" \
		--out bench/out
fi
if [ "$MODE" != quality ]; then
	$PY bench/quality.py speed --epochs "${EPOCHS_SPEED:-1}" --runs "${RUNS:-3}" --quiet-wait "${QUIET_WAIT:-60}" --out bench/out
fi
echo "quality.sh $MODE done: see bench/out/"
