#!/usr/bin/env bash
# bench/ort.sh: pepnet against ONNX Runtime 1.30 (issue 18), end to end from a fresh clone.
#
# On Debian 12, as root: installs what is missing (bench/ort/deps.sh: python3-onnx, libpq-dev, npm
# and onnxruntime-node@1.30.0 into bench/ort/node_modules), builds and installs the extension into
# the PostgreSQL of $PG_CONFIG (default: the pg_config on PATH), starts a throwaway cluster
# ($PGTEST_DIR, default /tmp/pepnet-bench-ort, port $PGTEST_PORT, default 54350), exports the bench
# model to ONNX (bench/ort/export_onnx.py), builds bench/ort/ort_score.c and ort_pipeline.c, runs
# bench/ort/ort_bench.py, writes bench/out/ort.md (printed at the end) and ort.json, and stops the
# cluster.  About 10 minutes on an idle machine.
#
#   bench/ort.sh                    # the full run (table job over 200,000 rows)
#   bench/ort.sh --rows 1000000     # the table job over 1M rows
#   bench/ort.sh --quick            # a smoke test (numbers not meaningful)
#   bench/ort.sh --rows 1000000 --e2e-only   # the end-to-end jobs alone (ort_bench.py --help: options)
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="postgresql-15 postgresql-server-dev-15 libopenblas-dev libdnnl-dev build-essential"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || { echo "missing packages:$missing (run as root to install them)" >&2; exit 1; }
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi
bash bench/ort/deps.sh
export PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
export PATH="$("$PG_CONFIG" --bindir):$PATH"
make -s PG_CONFIG="$PG_CONFIG"
make -s install PG_CONFIG="$PG_CONFIG"
mkdir -p bench/ort/build bench/out
cc -O2 -Wall -o bench/ort/build/ort_score bench/ort/ort_score.c -ldl
cc -O2 -Wall -I"$("$PG_CONFIG" --includedir)" -o bench/ort/build/ort_pipeline bench/ort/ort_pipeline.c \
	-L"$("$PG_CONFIG" --libdir)" -lpq -ldl
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-bench-ort} PGTEST_PORT=${PGTEST_PORT:-54350}
cleanup() { test/pg.sh stop || true; }
trap cleanup EXIT
test/pg.sh start
eval "$(test/pg.sh env)"
/usr/bin/python3 bench/ort/ort_bench.py --build bench/ort/build --out bench/out "$@"
