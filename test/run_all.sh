#!/usr/bin/env bash
# test/run_all.sh: the whole test suite on a fresh Debian 12 machine.
# Installs what it needs, builds (from clean: plain `make` must build the module) and installs
# the extension, runs the C unit tests of the core and the fuzzers, starts a throwaway
# PostgreSQL cluster, runs pg_regress and the PyTorch tests against it, runs the TAP tests
# (test/t/*.pl, each on its own clusters) and ends with one line "N passed, M failed".
# Runs as root or as a user with sudo (for apt-get and make install).
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

# make install writes into PostgreSQL's directories: sudo unless they are writable
# (sudo resets PATH: name the pg_config explicitly)
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config)}
export PG_CONFIG
SUDO=""
[ -w "$("$PG_CONFIG" --pkglibdir)" ] && [ -w "$("$PG_CONFIG" --sharedir)/extension" ] || SUDO="sudo"

echo "== build"
# plain `make` from clean must build the module: a rule placed before `include $(PGXS)` once
# became the default goal and plain make built one object file (`make install` hid it)
make -s clean >/dev/null 2>&1	# also removes test/results
mkdir -p "$LOG"
: >"$LOG/build.log"
if ! make -s >>"$LOG/build.log" 2>&1 || [ ! -f pepnet.so ]; then
	cat "$LOG/build.log"; echo "not ok - make clean && make leaves pepnet.so"; echo "0 passed, 1 failed"; exit 1
fi
echo "ok - make clean && make leaves pepnet.so"
PASS=$((PASS + 1))
if ! $SUDO make -s install PG_CONFIG="$PG_CONFIG" >>"$LOG/build.log" 2>&1; then
	cat "$LOG/build.log"; echo "$PASS passed, 1 failed"; exit 1
fi

suite unit make -s unittest
# the same unit tests with oneDNN matmuls of any implementation: on a CPU without brgemm kernels
# (AVX2) the engine's oneDNN tiles and the trainer's primitives, which the server uses on AVX-512
suite unit_any_matmul ./test/unit/test_core --any-matmul
# the glue's layering (docs/source-layout.md): no call cycle among src/*.c but the shared-memory hub
suite layering bash -c 'python3 test/layering.py && echo "1 passed, 0 failed" || { echo "not ok - a call cycle among src/*.c beyond the shared-memory hub"; echo "0 passed, 1 failed"; }'
# libFuzzer + ASan/UBSan on the weight reader and the config parser, a bounded time each
suite fuzz bash test/fuzz/run.sh "${FUZZ_SECONDS:-60}"

test/pg.sh start || { echo "$PASS passed, $((FAIL + 1)) failed"; exit 1; }
eval "$(test/pg.sh env)"
trap 'test/pg.sh stop' EXIT

# pg_regress: one result per test file
regress() {
	local out rc ok bad
	# TAP_TESTS= : the TAP tests run below, through test/prove.sh (also as root)
	out=$(make -s installcheck TAP_TESTS= 2>&1)
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
# the Python package python/pepnet (PyTorch module, safetensors, psycopg2 helpers, plot) against SQL
suite python_package $PY test/python/test_package.py
# pip install ./python in a virtual environment (offline, Debian's torch and numpy), then import pepnet
suite python_install $PY test/python/test_install.py
# the package's named form ("inputs": "columns"): text ids, missing rows, named batches (no database)
suite python_named $PY test/python/test_named.py
# the named form on both sides: scores by name in SQL against the package's predict, text ids in UTF8 and LATIN1
suite python_named_server $PY test/python/test_named_server.py
# the package's vocabularies (min_count): build_vocab, vocab_rows, the I64 buffers (no database)
suite python_vocab $PY test/python/test_vocab.py
# vocabularies (min_count) on both sides: build_vocab against pepnet_train's, scores of seen, rare and unseen ids
suite python_vocab_server $PY test/python/test_vocab_server.py
for t in test/python/test_train_*.py; do
	[ -e "$t" ] || continue
	suite "python_$(basename "$t" .py)" $PY "$t"
done

test/pg.sh stop
# TAP tests: multi-session, crash, upgrade and multi-node scenarios, each file on its own clusters
for t in test/t/*.pl; do
	[ -e "$t" ] || continue
	suite "tap_$(basename "$t" .pl)" bash test/prove.sh "$t"
done

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
