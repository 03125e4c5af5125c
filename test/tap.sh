#!/usr/bin/env bash
# test/tap.sh: the TAP suites (test/t/*.pl, PostgreSQL::Test::Cluster + Test::More) with prove;
# ends with one "N passed, M failed" line (N, M: test files).  As root they run as the
# unprivileged postgres user (initdb refuses root) in a scratch directory it owns.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PGXS_SRC=$(dirname "$(dirname "$(pg_config --pgxs)")")
BIN=$(pg_config --bindir)
WORK=$(mktemp -d /tmp/pepnet-tap.XXXXXX)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
run() {
	local cmd="cd '$WORK' && PATH='$BIN':\$PATH PERL5LIB='$PGXS_SRC/test/perl' PG_REGRESS=/bin/true \
TESTDIR='$WORK' TESTDATADIR='$WORK/data' TESTLOGDIR='$WORK/log' PEPNET_ROOT='$ROOT' prove $*"
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- bash -c "$cmd"; else bash -c "$cmd"; fi
}
pass=0; fail=0
for t in "$ROOT"/test/t/*.pl; do
	[ -e "$t" ] || continue
	if run -v "$t"; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "not ok - $(basename "$t")"; fi
done
rm -rf "$WORK"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
