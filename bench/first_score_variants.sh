#!/usr/bin/env bash
# bench/first_score_variants.sh: a fresh backend's first pepnet_score (N = 100) under deployment
# settings that need no code change: the default, shared_preload_libraries = 'pepnet' (the library
# and libopenblas are loaded once, in the postmaster), and the server started with
# GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (malloc asks for transparent huge pages: far fewer page
# faults when the weights are detoasted into fresh memory).  Run after bench/run.sh has built and
# installed the extension (or on a machine where it is installed); uses the same throwaway cluster
# (/tmp/pepnet-bench, port 54339) and writes bench/out/first_score.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/lib/postgresql/15/bin:$PATH"
export PGTEST_DIR=/tmp/pepnet-bench PGTEST_PORT=54339
trap 'test/pg.sh stop || true' EXIT
test/pg.sh start
eval "$(test/pg.sh env)"

as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
restart() { as_owner env "$@" pg_ctl -D "$PGTEST_DIR/data" -w -l "$PGTEST_DIR/server.log" restart >/dev/null; }
preload() { psql -XAqc "ALTER SYSTEM $1"; }

OUT=bench/out/first_score.md
mkdir -p bench/out
{
	echo "| server setting | first pepnet_score, ms | of which backend CPU | second call | LOAD 'pepnet' | reload after pepnet_cache_clear() |"
	echo "|---|---|---|---|---|---|"
	preload "RESET shared_preload_libraries"
	restart
	/usr/bin/python3 bench/bench_score.py --first-score-only "default" --out bench/out "$@"
	restart GLIBC_TUNABLES=glibc.malloc.hugetlb=1
	/usr/bin/python3 bench/bench_score.py --first-score-only "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" --out bench/out "$@"
	preload "SET shared_preload_libraries = 'pepnet'"
	restart
	/usr/bin/python3 bench/bench_score.py --first-score-only "shared_preload_libraries = 'pepnet'" --out bench/out "$@"
	restart GLIBC_TUNABLES=glibc.malloc.hugetlb=1
	/usr/bin/python3 bench/bench_score.py --first-score-only "both" --out bench/out "$@"
	preload "RESET shared_preload_libraries"
} 2>/dev/null | tee "$OUT"
echo "(median (p10-p90) of 20 fresh connections each; written to $OUT)"
