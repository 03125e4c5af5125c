#!/usr/bin/env bash
# bench/shared_cache.sh: the shared model cache against the per-backend cache (issue 9): a fresh
# backend's first score, proportional set size of 32 scoring backends, throughput of 2 clients
# against 1 (bench/shared_cache.py says how).  Run after `make install`; starts a throwaway
# cluster with shared_preload_libraries = 'pepnet' (PGTEST_DIR=/tmp/pepnet-bench-shared,
# port BENCH_PORT, default 54349), writes bench/out/shared_cache.md and .json, stops the cluster.
#   bench/shared_cache.sh [--fresh 20] [--backends 32] [--seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(dirname "$(${PG_CONFIG:-pg_config} --bindir)/x"):$PATH"
export PGTEST_DIR=/tmp/pepnet-bench-shared PGTEST_PORT=${BENCH_PORT:-54349}
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
trap 'test/pg.sh stop || true' EXIT
test/pg.sh stop || true
test/pg.sh start
eval "$(test/pg.sh env)"
psql -XAqc "ALTER SYSTEM SET shared_preload_libraries = 'pepnet'" -c "ALTER SYSTEM SET max_connections = 80"
as_owner pg_ctl -D "$PGTEST_DIR/data" -w -l "$PGTEST_DIR/server.log" restart >/dev/null
mkdir -p bench/out
/usr/bin/python3 bench/shared_cache.py --json bench/out/shared_cache.json "$@" | tee bench/out/shared_cache.md
