#!/usr/bin/env bash
# bench/chunks.sh: a model above 2 GB in chunked storage (pepnet.model_chunks): create, first
# score in a fresh session (load chunk by chunk + build), warm scoring, export in chunks; then,
# restarted with shared_preload_libraries = 'pepnet', the first score that builds the version into
# the shared cache (chunks streamed into shared memory) and the first score of another fresh
# session; time and memory of the backend doing each step (VmHWM, the peak resident set, counts
# the shared memory it touched; RssAnon is its private memory).
#
# As root on Debian 12 with the packages of test/deps.sh: builds and installs the extension,
# starts a throwaway cluster (/tmp/pepnet-bench-chunks, port 54351; BENCH_PGDIR, BENCH_PGPORT),
# raises pepnet.max_model_size and pepnet.cache_size to 4 GB, runs the steps, stops the cluster.
#   bench/chunks.sh                     # BUCKETS=9000000 (2.3 GB of weights), CHUNK=64MB
#   BUCKETS=1000000 CHUNK=8MB bench/chunks.sh
# Needs about 3x the weights in free memory (the creating backend holds the model while the
# server writes it) and 2x on disk (table and WAL).
set -euo pipefail
cd "$(dirname "$0")/.."
BUCKETS=${BUCKETS:-9000000}
CHUNK=${CHUNK:-64MB}
export PGTEST_DIR=${BENCH_PGDIR:-/tmp/pepnet-bench-chunks} PGTEST_PORT=${BENCH_PGPORT:-54351}
make -s >/dev/null && make -s install >/dev/null
bash test/pg.sh start >/dev/null
trap 'bash test/pg.sh stop >/dev/null' EXIT
eval "$(bash test/pg.sh env)"
psql -Xq -d postgres <<SQL
LOAD 'pepnet';
ALTER SYSTEM SET pepnet.max_model_size = '4GB';
ALTER SYSTEM SET pepnet.cache_size = '4GB';
ALTER SYSTEM SET pepnet.chunk_size = '$CHUNK';
SELECT pg_reload_conf();
SQL
psql -Xq -d postgres -c "LOAD 'pepnet'" -c "SHOW pepnet.chunk_size" -c "SHOW pepnet.max_model_size"
psql -Xq -d postgres -c "DROP DATABASE IF EXISTS bench_chunks" -c "CREATE DATABASE bench_chunks"
psql -Xq -d bench_chunks -c "CREATE EXTENSION pepnet"
echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)'); $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GB RAM; load $(cut -d' ' -f1-3 /proc/loadavg)"

CFG="{\"domains\": 3, \"features\": [{\"name\": \"item\", \"buckets\": $BUCKETS}, {\"name\": \"cat\", \"buckets\": 100, \"hash\": false}], \"persona\": [{\"name\": \"user\", \"buckets\": 100000}], \"dense\": 4, \"emb_dim\": 64, \"tasks\": [\"click\", \"buy\"], \"hidden\": [256, 128]}"
REQ="pepnet_score('big', 1, '{42}', (SELECT array_agg(ARRAY[i * 7919 % $BUCKETS, i % 100]) FROM generate_series(1, 200) i), (SELECT array_agg(ARRAY[0.5, 0.1, -0.2, 1]::real[]) FROM generate_series(1, 200)))"

# one psql session per step: \timing for the time, /proc/<backend>/status for the peak memory
step()
{
	local label=$1 sql=$2
	psql -X -q -d bench_chunks -v ON_ERROR_STOP=1 <<SQL
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND :pid
\echo == $label
\timing on
$sql
\timing off
\! awk '/VmHWM/ {h = \$2} /RssAnon/ {a = \$2} /RssShmem/ {s = \$2} END {printf "   backend memory: peak resident %.2f GB (VmHWM, with shared buffers touched); now private %.2f GB, shared %.2f GB\n", h / 1048576, a / 1048576, s / 1048576}' /proc/\$BACKEND/status
SQL
}

step "pepnet_create (init, fingerprint, write chunks)" "SELECT pepnet_create('big', '$CFG', 1) AS version;"
psql -X -q -d bench_chunks -c "SELECT pg_size_pretty(weights_size) AS weights, weights_size,
	(SELECT count(*) FROM pepnet.model_chunks c WHERE c.name = m.name) AS chunks,
	pg_size_pretty(pg_total_relation_size('pepnet.model_chunks')) AS chunk_table FROM pepnet.models m WHERE name = 'big'"
step "first score in a fresh session (load chunk by chunk, build domain 1), 200 candidates" \
	"SELECT count(*), round(avg(score)::numeric, 6) AS mean_score FROM $REQ s;
\\echo == warm scoring, 200 candidates, 5 times
SELECT count(*) FROM $REQ s;
SELECT count(*) FROM $REQ s;
SELECT count(*) FROM $REQ s;
SELECT count(*) FROM $REQ s;
SELECT count(*) FROM $REQ s;"
step "pepnet_export_chunks (streamed into a tuplestore, summed)" \
	"SELECT count(*) AS pieces, sum(length(data)) AS bytes FROM pepnet_export_chunks('big');"
step "pepnet_export refuses above 1 GB (before reading)" \
	"SELECT CASE WHEN length(pepnet_export('big')) > 0 THEN 'exported' END;" || true

# the shared cache: chunks streamed straight into shared memory by the building backend
psql -Xq -d postgres -c "LOAD 'pepnet'" -c "ALTER SYSTEM SET shared_preload_libraries = 'pepnet'" -c "ALTER SYSTEM SET pepnet.shared_cache_size = '4GB'"
if [ "$(id -u)" = 0 ]; then AS=(runuser -u postgres --); else AS=(); fi
"${AS[@]}" "$("${PG_CONFIG:-pg_config}" --bindir)/pg_ctl" -D "$PGTEST_DIR/data" -l "$PGTEST_DIR/server.log" -w restart >/dev/null
step "first score building the shared cache (chunks streamed into shared memory, domain 1), 200 candidates" \
	"SELECT count(*), round(avg(score)::numeric, 6) AS mean_score FROM $REQ s;"
step "first score of another fresh session (maps the shared copy), 200 candidates" \
	"SELECT count(*), round(avg(score)::numeric, 6) AS mean_score FROM $REQ s;
SELECT model, version, state, pg_size_pretty(bytes) AS bytes, domains FROM pepnet.shared_cache;"
