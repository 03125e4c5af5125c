#!/usr/bin/env bash
# bench/scaleout.sh: pinned scoring and postgres_fdw shipping (bench/scaleout.py), end to end.
#
# As root on Debian 12 with the packages of test/deps.sh: builds and installs the extension,
# starts a throwaway cluster (/tmp/pepnet-bench-scaleout, port 54349; BENCH_PGDIR, BENCH_PGPORT) with databases co, s1, s2,
# runs bench/scaleout.py (ROWS candidates, REPS repetitions) and stops the cluster.
#   bench/scaleout.sh                 # ROWS=100000 REPS=5
#   ROWS=20000 REPS=3 bench/scaleout.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PGTEST_DIR=${BENCH_PGDIR:-/tmp/pepnet-bench-scaleout} PGTEST_PORT=${BENCH_PGPORT:-54349}
make -s >/dev/null && make -s install >/dev/null
bash test/pg.sh start >/dev/null
trap 'bash test/pg.sh stop' EXIT
eval "$(bash test/pg.sh env)"
for db in co s1 s2; do
	psql -Xq -c "CREATE DATABASE $db" -d postgres
	psql -Xq -c "CREATE EXTENSION pepnet" -d $db
done
psql -Xq -c "CREATE EXTENSION postgres_fdw" -d co
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
/usr/bin/python3 bench/scaleout.py
