#!/usr/bin/env bash
# bench/run.sh: pepnet's scoring benchmark (issue 2), end to end.
#
# On a fresh Debian 12 machine, as root: installs what is missing, builds and installs the
# extension, starts a throwaway cluster (/tmp/pepnet-bench, port 54339, so that it does not
# collide with the test cluster on 54329), runs bench/bench_score.py, writes bench/out/score.md
# (printed at the end) and bench/out/score.json, and stops the cluster.
#
#   bench/run.sh            # the full run (about 10 minutes)
#   bench/run.sh --quick    # a smoke test with few calls (numbers not meaningful)
#
# OPENBLAS_* variables in the environment are passed on unchanged (to the cluster and to the
# benchmark alike).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

PKGS="postgresql-15 postgresql-server-dev-15 libopenblas-dev libdnnl-dev python3-torch python3-numpy python3-psycopg2 build-essential"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages:$missing (run as root to install them)" >&2
		exit 1
	fi
	echo "== installing:$missing"
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y $missing
fi
# Debian's server binaries are not on PATH; pg.sh and the Makefile use pg_config
export PATH="/usr/lib/postgresql/15/bin:$PATH"
command -v perf >/dev/null || echo "note: perf is not installed (linux-perf); the benchmark does not need it"

echo "== building and installing the extension"
make -s
make -s install

export PGTEST_DIR=/tmp/pepnet-bench PGTEST_PORT=54339
cleanup() { test/pg.sh stop || true; }
trap cleanup EXIT
test/pg.sh start
eval "$(test/pg.sh env)"

WORK=$(mktemp -d /tmp/pepnet-bench-build.XXXXXX)
cc -O2 bench/sgemm_rate.c -lopenblas -o "$WORK/sgemm_rate"

echo "== machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')," \
	"load average $(cut -d' ' -f1-3 /proc/loadavg); OPENBLAS env: $(env | grep '^OPENBLAS_' | tr '\n' ' ')"
mkdir -p bench/out
/usr/bin/python3 bench/bench_score.py --out bench/out --work "$WORK" --sgemm-bin "$WORK/sgemm_rate" "$@"
rm -rf "$WORK"
echo "== results in $ROOT/bench/out/score.md and score.json"
