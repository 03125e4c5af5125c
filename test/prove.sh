#!/usr/bin/env bash
# test/prove.sh [FILE...]: run TAP tests (default test/t/*.pl) the way `make prove_installcheck`
# does (prove with PGXS's PostgreSQL::Test modules, the pg_config on PATH, TESTDIR for logs), but
# also as root: PostgreSQL refuses to run as root, so there the tests run as the unprivileged
# "postgres" user with a TESTDIR it owns.  Prints prove's verbose output and ends with one line
# "N passed, M failed" (N, M: assertions, skips not counted; a file that dies or misses its
# plan counts one failure).
# Node logs stay in $TESTDIR/tmp_check/log (printed at the end when something failed).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PG_CONFIG=${PG_CONFIG:-pg_config}
BINDIR=$("$PG_CONFIG" --bindir)
PGXS_DIR=$(dirname "$("$PG_CONFIG" --pgxs)")/../..
[ $# -gt 0 ] || set -- test/t/*.pl
TESTDIR=${TESTDIR:-$(mktemp -d /tmp/pepnet-tap.XXXXXX)}
mkdir -p "$TESTDIR/tmp_check"
RUN=()
if [ "$(id -u)" = 0 ]; then
	chown -R postgres: "$TESTDIR"
	RUN=(runuser -u postgres --)
fi
PASS=0
FAIL=0
for t in "$@"; do
	out=$(mktemp)
	"${RUN[@]}" env TESTDIR="$TESTDIR" PATH="$BINDIR:$PATH" PG_REGRESS="$PGXS_DIR/src/test/regress/pg_regress" \
		prove -v -I "$PGXS_DIR/src/test/perl" -I . "$t" >"$out" 2>&1
	rc=$?
	cat "$out"
	p=$(grep -E '^ok [0-9]+' "$out" | grep -vic '# skip')
	f=$(grep -E '^not ok [0-9]+' "$out" | grep -vc '# TODO')
	[ "$rc" != 0 ] && [ "$f" = 0 ] && { f=1; echo "not ok - $t: prove exited $rc without a failed assertion (died, or missed its plan)"; }
	PASS=$((PASS + p))
	FAIL=$((FAIL + f))
	rm -f "$out"
done
if [ "$FAIL" != 0 ]; then
	echo "# node logs: $TESTDIR/tmp_check/log"
	for l in "$TESTDIR"/tmp_check/log/*; do [ -f "$l" ] && { echo "# --- $l (tail)"; tail -15 "$l"; }; done
fi
echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
