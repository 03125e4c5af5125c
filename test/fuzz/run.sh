#!/usr/bin/env bash
# test/fuzz/run.sh [seconds]: build the libFuzzer targets of the core under
# AddressSanitizer (+ LeakSanitizer) and UndefinedBehaviorSanitizer, replay
# the reproducers of fixed bugs (test/fuzz/repro/<target>/*), then fuzz each
# target for the given time (default 60 s), one after the other, in one
# process each.  Prints "ok - ..." / "not ok - ..." per step and a closing
# "N passed, M failed"; exits 1 when anything failed.
#
# Needs Debian's clang and libclang-rt-14-dev (test/deps.sh installs them).
# Everything it writes goes to test/fuzz/build/: the binaries, a scratch copy
# of the seed corpus per target (the repository corpus is only read) and the
# crash artifacts (build/artifacts/<target>/crash-*, replay one with
# test/fuzz/build/fuzz_<target> FILE).  FUZZ_SEED=N fixes libFuzzer's seed;
# CC overrides the compiler; FUZZ_CFLAGS adds compiler flags (for triage,
# e.g. FUZZ_CFLAGS=-fno-sanitize=nonnull-attribute to look past a known bug);
# FUZZ_CORE_DIR fuzzes a (patched) copy of src/core instead.
set -uo pipefail
cd "$(dirname "$0")/../.."

SECS=${1:-60}
case "$SECS" in
	'' | *[!0-9]*) echo "usage: $0 [seconds]" >&2; exit 2 ;;
esac
CC=${CC:-clang}
FUZZ=test/fuzz
OUT=$FUZZ/build
TARGETS="safetensors config"
CORE_DIR=${FUZZ_CORE_DIR:-src/core}
CORE="$CORE_DIR/alloc.c $CORE_DIR/json.c $CORE_DIR/config.c $CORE_DIR/model.c"
# the layer plan a model is made with (plan.c, since 0.3.0); a copy of an older core has none
[ -f "$CORE_DIR/plan.c" ] && CORE="$CORE $CORE_DIR/plan.c"
CFLAGS="-g -O1 -std=gnu99 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -Wall -Wextra -Wno-unused-parameter -I$CORE_DIR ${FUZZ_CFLAGS:-}"
# -max_len: a valid blob of the fixed configs is <= 6 KB, so 64 KB leaves room
FLAGS="-max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1"
[ -n "${FUZZ_SEED:-}" ] && FLAGS="$FLAGS -seed=$FUZZ_SEED"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

PASS=0
FAIL=0
ok() { echo "ok - $*"; PASS=$((PASS + 1)); }
notok() { echo "not ok - $*"; FAIL=$((FAIL + 1)); }
# the useful lines of a crash log: the report, the harness's message and
# the stack frames outside libFuzzer and libc
show() {
	grep -E 'Running:|ERROR|SUMMARY|runtime error|^fuzz_[a-z]+:|^allocation|canonical JSON:|config differs|^detail:|^    #[0-9]+ ' "$1" |
		grep -vE ' in (fuzzer::|__sanitizer|__interceptor|raise|abort|__pthread|__libc|_start|main )|libc\.so' |
		cut -c1-400 | head -40
}

mkdir -p "$OUT"
for t in $TARGETS; do
	bin=$OUT/fuzz_$t
	log=$OUT/fuzz_$t.build.log
	# shellcheck disable=SC2086
	if $CC $CFLAGS -o "$bin" "$FUZZ/fuzz_$t.c" $CORE -lm >"$log" 2>&1; then
		ok "build fuzz_$t"
	else
		notok "build fuzz_$t (see $log; test/deps.sh installs clang and libclang-rt-14-dev)"
		cat "$log"
		rm -f "$bin"
	fi
done

for t in $TARGETS; do
	bin=$OUT/fuzz_$t
	[ -x "$bin" ] || continue

	# reproducers of bugs found earlier: each must now run clean
	if [ -d "$FUZZ/repro/$t" ] && [ -n "$(ls -A "$FUZZ/repro/$t")" ]; then
		n=0
		bad=""
		for f in "$FUZZ"/repro/"$t"/*; do
			n=$((n + 1))
			log=$OUT/fuzz_$t.repro-$(basename "$f").log
			# shellcheck disable=SC2086
			if ! "$bin" $FLAGS "$f" >"$log" 2>&1; then
				bad="$bad $(basename "$f")"
				show "$log"
			fi
		done
		if [ -z "$bad" ]; then
			ok "fuzz_$t: $n reproducers of fixed bugs replayed, no crash"
		else
			notok "fuzz_$t: reproducers still crashing:$bad (logs $OUT/fuzz_$t.repro-*.log)"
		fi
	fi

	# fuzz from a scratch copy of the seeds
	work=$OUT/work/$t
	art=$OUT/artifacts/$t
	log=$OUT/fuzz_$t.log
	rm -rf "$work"
	mkdir -p "$work" "$art"
	cp "$FUZZ"/corpus/"$t"/* "$work"/
	dict=""
	[ -f "$FUZZ/$t.dict" ] && dict="-dict=$FUZZ/$t.dict"
	# shellcheck disable=SC2086
	"$bin" $FLAGS $dict -max_total_time="$SECS" -artifact_prefix="$art/" "$work" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
	[ -z "$runs" ] && runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
	[ -z "$runs" ] && runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
	if [ "$rc" = 0 ] && ! grep -qE '^==[0-9]+==ERROR|runtime error:' "$log"; then
		ok "fuzz_$t: ${runs:-?} runs, no crash ($(( ${runs:-0} / (SECS > 0 ? SECS : 1) )) runs/s)"
	else
		crash=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //')
		notok "fuzz_$t: crash after ${runs:-?} runs (exit $rc), reproducer ${crash:-none written}, log $log"
		show "$log"
	fi
done

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
