#!/usr/bin/env bash
# test/shell/parallel.sh: pepnet_predict and pepnet_score in parallel query workers.
#
# 200,000 candidate rows (3 domains, runs of rows sharing a persona so that the per-statement
# persona reuse of pepnet_predict crosses worker chunk boundaries, 2 dense features) scored by a
# trained model through its bare name.  With parallel costs at zero, EXPLAIN VERBOSE must show a
# Parallel Seq Scan computing pepnet_predict(...) itself, EXPLAIN ANALYZE must show workers
# launched; the per-row results of the parallel run (with the leader participating, and with
# parallel_leader_participation = off, where every row is scored in a worker) must equal the
# serial run's exactly, as must count, sum(round(p * 1e9)) and (within rounding of the summation
# order) sum(p).  The same for pepnet_score on a LATERAL over 2,000 requests of 100 candidates.
#
# Needs PGHOST/PGPORT/PGUSER (test/run_all.sh sets them); ends with "N passed, M failed".
set -uo pipefail
# shellcheck source=test/shell/common.bash
. "$(dirname "$0")/common.bash"
suite_init parallel

PAR="SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
     SET min_parallel_table_scan_size = 0; SET max_parallel_workers = 8;"
# shellcheck disable=SC2034  # SER, PAR, NOLEADER are used as ${!mode}
SER="SET max_parallel_workers_per_gather = 0;"
NOLEADER="$PAR SET parallel_leader_participation = off;"

dropdb --if-exists "$PGDATABASE" >/dev/null 2>&1
if ! createdb "$PGDATABASE"; then notok "createdb $PGDATABASE"; finish; fi
q -c "ALTER DATABASE $PGDATABASE SET jit = off" >/dev/null

CFG='{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "dense": 2, "emb_dim": 8, "hidden": [32, 16]}'
if q -v cfg="$CFG" >"$WORK/setup.out" 2>&1 <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
CREATE TABLE clicks AS
SELECT i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 40, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0, (i % 7) / 7.0]::real[] AS dense,
       CASE i % 3 WHEN 0 THEN (abs(hashint4(i)) % 300) % 2 = 0 WHEN 1 THEN (abs(hashint4(i)) % 300) % 2 = 1
                  ELSE abs(hashint4(-i)) % 40 < 12 END AS label
FROM generate_series(1, 6000) i;
CALL pepnet_train('m', 'SELECT domain, persona, features, dense, label FROM clicks', :'cfg',
                  epochs => 2, batch_size => 128, lr => 0.01, seed => 1, progress_interval => 0);
SELECT pepnet_deploy('m', 2);
-- persona changes every 50 rows; the domain every row
CREATE TABLE cands AS
SELECT i AS id, i % 3 AS domain, ARRAY[(i / 50) % 97, (i / 50) % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 1000, i % 10]::bigint[] AS features,
       ARRAY[(i % 11) / 11.0, (i % 13) / 13.0]::real[] AS dense
FROM generate_series(1, 200000) i;
-- 2,000 requests of 100 candidates
CREATE TABLE reqs AS
SELECT r AS id, r % 3 AS domain, ARRAY[r % 97, r % 4]::bigint[] AS persona,
       (SELECT array_agg(ARRAY[abs(hashint4(r * 100 + c)) % 1000, c % 10]::bigint[] ORDER BY c) FROM generate_series(1, 100) c) AS feats,
       (SELECT array_agg(ARRAY[(c % 11) / 11.0, (r % 13) / 13.0]::real[] ORDER BY c) FROM generate_series(1, 100) c) AS dense
FROM generate_series(1, 2000) r;
ANALYZE cands;
ANALYZE reqs;
SQL
then ok "setup: a trained model (2 epochs, dense features) deployed, 200,000 candidates, 2,000 requests of 100"
else notok "setup"; cat "$WORK/setup.out"; finish; fi

PRED="SELECT id, pepnet_predict('m', domain, persona, features, dense) AS p FROM cands"
SCORE="SELECT r.id, s.idx, s.score, s.scores FROM reqs r, LATERAL pepnet_score('m', r.domain, r.persona, r.feats, r.dense) s"

# ---------------------------------------------------------------- pepnet_predict
q -c "$PAR" -c "EXPLAIN (VERBOSE, COSTS OFF) $PRED" >"$WORK/plan.txt" 2>&1
# the Output line that follows the Parallel Seq Scan node
SCAN_OUT=$(awk '/Parallel Seq Scan/ { f = 1; next } f && /Output:/ { print; exit }' "$WORK/plan.txt")
if grep -q 'Gather' "$WORK/plan.txt" && echo "$SCAN_OUT" | grep -q 'pepnet_predict('; then
	ok "EXPLAIN VERBOSE: Gather over a Parallel Seq Scan that computes pepnet_predict(...)"
else
	notok "EXPLAIN VERBOSE: no Parallel Seq Scan computing pepnet_predict"; cat "$WORK/plan.txt"
fi
for mode in PAR NOLEADER; do
	q -c "${!mode}" -c "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) $PRED" >"$WORK/analyze_$mode.txt" 2>&1
	LAUNCHED=$(sed -nE 's/.*Workers Launched: ([0-9]+).*/\1/p' "$WORK/analyze_$mode.txt" | head -1)
	WROWS=$(sed -nE 's/.*Worker [0-9]+: +actual rows=([0-9]+).*/\1/p' "$WORK/analyze_$mode.txt" | awk '{ s += $1 } END { print s + 0 }')
	check "EXPLAIN ANALYZE ($mode): ${LAUNCHED:-0} workers launched, scoring $WROWS of 200000 rows" \
		test "${LAUNCHED:-0}" -ge 1 -a "$WROWS" -gt 0
done
check "with the leader not participating, the workers score all 200000 rows" \
	test "$(sed -nE 's/.*Worker [0-9]+: +actual rows=([0-9]+).*/\1/p' "$WORK/analyze_NOLEADER.txt" | awk '{ s += $1 } END { print s + 0 }')" = 200000

for mode in SER PAR NOLEADER; do
	q -c "${!mode}" -c "$PRED" | sort -t'|' -k1,1n >"$WORK/pred_$mode.txt"
	q -c "${!mode}" -c "SELECT count(*), sum(round(p * 1e9)::bigint), sum(p) FROM ($PRED) x" >"$WORK/agg_$mode.txt"
done
check "serial run: 200000 rows, probabilities in (0, 1)" \
	test "$(wc -l <"$WORK/pred_SER.txt")" = 200000 -a \
	     "$(awk -F'|' '!($2 > 0 && $2 < 1) { n++ } END { print n + 0 }' "$WORK/pred_SER.txt")" = 0
for mode in PAR NOLEADER; do
	check "pepnet_predict per row ($mode): identical to the serial run" cmp -s "$WORK/pred_SER.txt" "$WORK/pred_$mode.txt"
	check "count and sum(round(p * 1e9)) ($mode) equal the serial run's: $(cut -d'|' -f1,2 "$WORK/agg_$mode.txt")" \
		test "$(cut -d'|' -f1,2 "$WORK/agg_SER.txt")" = "$(cut -d'|' -f1,2 "$WORK/agg_$mode.txt")"
	check "sum(p) ($mode) within 1e-6 of the serial run's" \
		awk -F'|' -v a="$(cut -d'|' -f3 "$WORK/agg_SER.txt")" '{ d = $3 - a; exit !(d < 1e-6 && d > -1e-6) }' "$WORK/agg_$mode.txt"
done

# ---------------------------------------------------------------- pepnet_score on a LATERAL
q -c "$PAR" -c "EXPLAIN (VERBOSE, COSTS OFF) $SCORE" >"$WORK/plan_score.txt" 2>&1
# below the Gather: a Parallel Seq Scan on reqs and the Function Scan on pepnet_score
if awk '/Gather/ { g = 1 } g && /Parallel Seq Scan on public.reqs/ { p = 1 } g && /Function Scan on public.pepnet_score/ { f = 1 }
        END { exit !(g && p && f) }' "$WORK/plan_score.txt"; then
	ok "EXPLAIN VERBOSE: pepnet_score's Function Scan runs below the Gather, per row of a Parallel Seq Scan"
else
	notok "EXPLAIN VERBOSE: pepnet_score not in the parallel part"; cat "$WORK/plan_score.txt"
fi
q -c "$NOLEADER" -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) $SCORE" >"$WORK/analyze_score.txt" 2>&1
LAUNCHED=$(sed -nE 's/.*Workers Launched: ([0-9]+).*/\1/p' "$WORK/analyze_score.txt" | head -1)
check "EXPLAIN ANALYZE (NOLEADER): ${LAUNCHED:-0} workers launched for pepnet_score" test "${LAUNCHED:-0}" -ge 1
for mode in SER PAR NOLEADER; do
	q -c "${!mode}" -c "$SCORE" | sort -t'|' -k1,1n -k2,2n >"$WORK/score_$mode.txt"
done
check "serial pepnet_score: 200000 rows" test "$(wc -l <"$WORK/score_SER.txt")" = 200000
for mode in PAR NOLEADER; do
	check "pepnet_score per row, all tasks ($mode): identical to the serial run" cmp -s "$WORK/score_SER.txt" "$WORK/score_$mode.txt"
done
check "pepnet_score and pepnet_predict agree (request 1, candidate 1)" \
	test "$(q -c "SELECT abs(s.score - pepnet_predict('m', r.domain, r.persona, r.feats[1:1][:], r.dense[1:1][:])) < 1e-6
	              FROM reqs r, pepnet_score('m', r.domain, r.persona, r.feats, r.dense) s WHERE r.id = 1 AND s.idx = 1" 2>&1)" = t
finish
