#!/usr/bin/env bash
# test/run_all.sh: the whole test suite on a fresh Debian 12 machine.
# Installs what it needs, builds and installs the extension, runs the C unit
# tests of the core, starts a throwaway PostgreSQL cluster, runs pg_regress,
# the PyTorch parity tests and the multi-session shell tests, and ends with
# one line "N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash test/deps.sh || { echo "0 passed, 1 failed"; exit 1; }

PASS=0
FAIL=0
PY=/usr/bin/python3
LOG=test/results/logs
mkdir -p "$LOG"

# add the closing "N passed, M failed" line of a suite's output to the totals
count() {
	local name=$1 out=$2 rc=$3 line p f
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
	if [ -z "$line" ]; then
		echo "not ok - $name: no result line (exit $rc), see $out"
		tail -20 "$out"
		FAIL=$((FAIL + 1))
		return
	fi
	p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
	f=$(echo "$line" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
	if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
	PASS=$((PASS + p))
	FAIL=$((FAIL + f))
	echo "== $name: $p passed, $f failed"
	[ "$f" != 0 ] && grep -E '^not ok' "$out" | head -40
}

# run one suite: name, command...
suite() {
	local name=$1; shift
	local out="$LOG/$name.log"
	"$@" >"$out" 2>&1
	count "$name" "$out" $?
}

echo "== build"
if ! make -s >"$LOG/build.log" 2>&1 || ! make -s install >>"$LOG/build.log" 2>&1; then
	cat "$LOG/build.log"; echo "0 passed, 1 failed"; exit 1
fi

suite unit make -s unittest
# libFuzzer + ASan/UBSan on the weight reader and the config parser, a bounded time each
suite fuzz bash test/fuzz/run.sh "${FUZZ_SECONDS:-60}"

test/pg.sh start || { echo "$PASS passed, $((FAIL + 1)) failed"; exit 1; }
eval "$(test/pg.sh env)"
trap 'test/pg.sh stop' EXIT

# pg_regress: one result per test file
regress() {
	local out rc ok bad
	out=$(make -s installcheck 2>&1)
	rc=$?
	echo "$out"
	ok=$(echo "$out" | grep -cE '^(ok|test) .* ok ' || true)
	bad=$(echo "$out" | grep -cE '\.\.\. FAILED|^not ok' || true)
	[ -f test/results/regression.diffs ] && head -150 test/results/regression.diffs
	[ "$rc" != 0 ] && [ "$bad" = 0 ] && bad=1
	echo "$ok passed, $bad failed"
	return $rc
}
suite regress regress

suite python_selfcheck $PY test/python/test_ref_selfcheck.py
suite python_parity $PY test/python/test_parity_score.py
for t in test/shell/*.sh; do
	[ -e "$t" ] || continue
	suite "shell_$(basename "$t" .sh)" bash "$t"
done
# TAP suites (test/t/*.pl: PostgreSQL::Test::Cluster + Test::More, clusters of their own)
suite tap bash test/tap.sh
for t in test/python/test_train_*.py; do
	[ -e "$t" ] || continue
	suite "python_$(basename "$t" .py)" $PY "$t"
done

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
