#!/usr/bin/env bash
# bench/run_engine.sh: the batched-scoring benchmark of issue 8, end to end.
#
# On Debian 12, as root: installs what is missing, builds and installs the extension, starts a
# throwaway cluster (/tmp/pepnet-bench-engine, port 54349), runs bench/bench_engine.py (builds
# bench/engine_rate.c and bench/gemm_rate.c), writes bench/out/engine.md (printed at the end) and
# bench/out/engine.json, and stops the cluster.  About 4 minutes on an idle machine.
#
#   bench/run_engine.sh            # the full run
#   bench/run_engine.sh --quick    # a smoke test (numbers not meaningful)
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="postgresql-15 postgresql-server-dev-15 libopenblas-dev libdnnl-dev python3-torch python3-numpy python3-psycopg2 build-essential"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	[ "$(id -u)" = 0 ] || { echo "missing packages:$missing (run as root to install them)" >&2; exit 1; }
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi
command -v pg_config >/dev/null || export PATH="/usr/lib/postgresql/15/bin:$PATH"
make -s
make -s install
export PGTEST_DIR=${PGTEST_DIR:-/tmp/pepnet-bench-engine} PGTEST_PORT=${PGTEST_PORT:-54349}
cleanup() { test/pg.sh stop || true; }
trap cleanup EXIT
test/pg.sh start
eval "$(test/pg.sh env)"
WORK=$(mktemp -d /tmp/pepnet-bench-engine.XXXXXX)
mkdir -p bench/out
/usr/bin/python3 bench/bench_engine.py --out bench/out --bin "$WORK" "$@"
rm -rf "$WORK"
