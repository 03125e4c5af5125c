# test/shell/common.bash: helpers shared by the shell suites (sourced, not a suite itself).
# suite_init NAME: database pepnet_t_NAME, a scratch directory, counters; the suite ends with finish.

# Set up the counters, the database name and a scratch directory for suite NAME
suite_init() {
	export PGDATABASE=pepnet_t_$1
	PASS=0
	FAIL=0
	T0=$(date +%s)
	WORK=$(mktemp -d "/tmp/pepnet-$1.XXXXXX")
}

ok() { echo "ok - $*"; PASS=$((PASS + 1)); }
notok() { echo "not ok - $*"; FAIL=$((FAIL + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else notok "$what"; fi; }
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

# Drop the database (unless KEEP is set), print the closing line and exit with the result
finish() {
	[ -n "${KEEP:-}" ] || dropdb --if-exists "$PGDATABASE" >/dev/null 2>&1 || true
	rm -rf "$WORK"
	echo "# $(($(date +%s) - T0)) s"
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" = 0 ] && exit 0 || exit 1
}
