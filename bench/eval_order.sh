#!/usr/bin/env bash
# bench/eval_order.sh: pepnet_evaluate over the same rows unsorted (random order) and sorted by
# (domain, persona), interleaved, backend CPU time of each call (issue 17: the engine, not the
# user, groups rows). Debian 12 as root or with sudo: deps, build, install into $PG_CONFIG's
# PostgreSQL, a throwaway cluster on port ${PGTEST_PORT:-54351}, examples/synth.sql (ROWS rows,
# default 200000), one epoch of training, then ROUNDS (default 5) rounds of both orders.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-200000}
ROUNDS=${ROUNDS:-5}
export PGTEST_PORT=${PGTEST_PORT:-54351} PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-bench-evalorder}
bash test/deps.sh >/dev/null
PG_CONFIG=${PG_CONFIG:-pg_config}
SUDO=""; [ -w "$("$PG_CONFIG" --pkglibdir)" ] || SUDO=sudo
make -s && $SUDO make -s install PG_CONFIG="$PG_CONFIG" >/dev/null
PG_CONFIG=$PG_CONFIG test/pg.sh start >/dev/null
trap 'PG_CONFIG=$PG_CONFIG test/pg.sh stop' EXIT
eval "$(PG_CONFIG=$PG_CONFIG test/pg.sh env)"
dropdb --if-exists evalorder >/dev/null 2>&1; createdb evalorder
export PGDATABASE=evalorder
psql -q -c "CREATE EXTENSION pepnet" >/dev/null
psql -q -v rows="$ROWS" -v seed=3 -f examples/synth.sql >/dev/null
psql -q >/dev/null <<'SQL'
CALL pepnet_train('eo', 'SELECT domain, persona, features, labels FROM synth_train',
  config => '{"domains": 4, "features": [{"name": "item", "buckets": 20000}, {"name": "cat", "buckets": 64, "hash": false},
              {"name": "hour", "buckets": 24, "hash": false}, {"name": "device", "buckets": 4, "hash": false},
              {"name": "n1", "buckets": 1000}, {"name": "n2", "buckets": 50}],
              "persona": [{"name": "user", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": false},
                          {"name": "seg", "buckets": 20, "hash": false}],
              "tasks": ["click", "buy"], "hidden": [128, 64]}', epochs => 1, progress_interval => 0);
CREATE TABLE eo_unsorted AS SELECT * FROM synth_train ORDER BY hashint8(persona[1] * 7919 + features[1]);
CREATE TABLE eo_sorted AS SELECT * FROM synth_train ORDER BY domain, persona;
SQL
N=$(psql -Atc "SELECT count(*) FROM eo_sorted")
# backend CPU seconds of one statement: /proc/<pid>/stat utime + stime, before and after
cpu_of() {
	psql -qAt <<SQL
SELECT pg_backend_pid() AS pid \gset
CREATE TEMP TABLE t0 AS SELECT split_part(pg_read_file('/proc/' || :pid || '/stat'), ' ', 14)::bigint
  + split_part(pg_read_file('/proc/' || :pid || '/stat'), ' ', 15)::bigint AS ticks;
SELECT count(*) FROM pepnet_evaluate('eo', 'SELECT domain, persona, features, labels FROM $1') \g /dev/null
SELECT round((split_part(pg_read_file('/proc/' || :pid || '/stat'), ' ', 14)::bigint
  + split_part(pg_read_file('/proc/' || :pid || '/stat'), ' ', 15)::bigint - ticks) / 100.0, 2) FROM t0;
SQL
}
U=(); S=()
for r in $(seq "$ROUNDS"); do
	U+=("$(cpu_of eo_unsorted)"); S+=("$(cpu_of eo_sorted)")
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mu=$(med "${U[@]}"); ms=$(med "${S[@]}")
echo "pepnet_evaluate over $N rows, backend CPU s per call, $ROUNDS interleaved rounds"
echo "unsorted: ${U[*]} (median $mu)"
echo "sorted by (domain, persona): ${S[*]} (median $ms)"
awk -v u="$mu" -v s="$ms" 'BEGIN { printf "unsorted / sorted = %.2f\n", u / s }'
echo "commit $(git rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
