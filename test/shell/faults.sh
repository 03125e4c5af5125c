#!/usr/bin/env bash
# test/shell/faults.sh: training and scoring under kill -9, cancel and statement_timeout.
#
# (a) SIGKILL of a backend in CALL pepnet_train after two epochs committed: the server
#     recovers, every version committed before is intact (md5 of the weights, pepnet_export equal
#     to the stored weights, the same scores) and no partial version is visible (versions
#     consecutive, each with its metrics).
# (b) pg_cancel_backend in the middle of a training: it stops within 2 s, finished epochs' versions
#     stay, and the same session trains again (continuing, and from a config).
# (c) statement_timeout = 1s on a long CALL pepnet_train: SQLSTATE 57014 within 3 s of the start.
# (d) statement_timeout and cancel during a 50,000-candidate pepnet_score of a big model (hidden
#     [512, 256], 4 tasks): both stop within 2 s of firing and the session keeps scoring correctly.
# (e) pepnet_cache() in a fresh session works, and the server log shows no crash other than the
#     kill -9 of (a) (no other "terminated by signal", no PANIC or failed assertion).
#
# Needs PGHOST/PGPORT/PGUSER of a cluster this suite may crash-restart (test/run_all.sh's, whose
# log is $PGHOST/server.log); ends with "N passed, M failed".
set -uo pipefail
# shellcheck source=test/shell/common.bash
. "$(dirname "$0")/common.bash"
suite_init faults
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
SERVER_LOG=${SERVER_LOG:-${PGHOST:-/nonexistent}/server.log}
LOG_START=0
[ -f "$SERVER_LOG" ] && LOG_START=$(stat -c %s "$SERVER_LOG")

now() { date +%s.%N; }
# a < b for decimals
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# the pid of the active backend of application $1 (empty if none within 10 s)
backend_pid() {
	local pid
	for _ in $(seq 1 100); do
		pid=$(q -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1' AND state = 'active' ${2:-} LIMIT 1")
		[ -n "$pid" ] && { echo "$pid"; return; }
		sleep 0.1
	done
}
# wait until model $1 has at least $2 versions (at most $3 s); prints the count
wait_versions() {
	local n=0
	for _ in $(seq 1 $(($3 * 20))); do
		n=$(q -c "SELECT count(*) FROM pepnet.models WHERE name = '$1'" 2>/dev/null || echo 0)
		[ "${n:-0}" -ge "$2" ] && break
		sleep 0.05
	done
	echo "$n"
}
# the versions of $1 are 1..n, each the child of the one before, with its epoch's metrics
VERSIONS_OK_SQL="SELECT count(*) = max(version) AND bool_and(metrics ? 'train_loss' AND metrics ? 'rows' AND metrics ? 'seconds')
                        AND bool_and(version = 1 OR parent = version - 1)
                 FROM pepnet.models WHERE name = "

dropdb --if-exists "$PGDATABASE" >/dev/null 2>&1
if ! createdb "$PGDATABASE"; then notok "createdb $PGDATABASE"; finish; fi
q -c "ALTER DATABASE $PGDATABASE SET jit = off" >/dev/null

CFG='{"domains": 4, "features": [{"name": "item", "buckets": 20000}, {"name": "cat", "buckets": 100}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": false}], "emb_dim": 16, "hidden": [64, 32]}'
BIGCFG='{"domains": 1, "features": [{"name": "item", "buckets": 10000}, {"name": "cat", "buckets": 1000}, {"name": "brand", "buckets": 5000}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 10000}, {"name": "age", "buckets": 8, "hash": false}], "emb_dim": 32, "tasks": ["click", "like", "buy", "share"], "hidden": [512, 256]}'
DATA="SELECT domain, persona, features, label FROM ev"
SMALL="SELECT domain, persona, features, label FROM ev WHERE i <= 3000"

# 60,000 rows: about 1-2 s per epoch
if q -v cfg="$CFG" -v bigcfg="$BIGCFG" >"$WORK/setup.out" 2>&1 <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
CREATE TABLE ev AS
SELECT i, i % 4 AS domain, ARRAY[abs(hashint4(-i)) % 5000, i % 8]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 20000, abs(hashint4(i * 7)) % 100, i % 24]::bigint[] AS features,
       (abs(hashint4(i)) % 20000) % 3 = 0 AS label
FROM generate_series(1, 60000) i;
CREATE TABLE bigreq AS
SELECT array_agg(ARRAY[i, i % 1000, i % 5000, i % 24]::bigint[] ORDER BY i) AS feats FROM generate_series(1, 50000) i;
SELECT pepnet_create('big', :'bigcfg', seed => 5);
SQL
then ok "setup: 60,000 training rows, a big model (hidden [512, 256], 4 tasks), 50,000 candidates"
else notok "setup"; cat "$WORK/setup.out"; finish; fi

# ---------------------------------------------------------------- (a) kill -9 during training
SCORES_SQL="SELECT version, md5(weights), metrics->>'train_loss',
                   (SELECT string_agg(s.score::text || ':' || s.scores::text, ',' ORDER BY s.idx)
                    FROM pepnet_score('k@' || version, 1, '{5,3}', '{{1,2,3},{4,5,6},{7,8,9}}') s)
            FROM pepnet.models WHERE name = 'k' ORDER BY version"
PGAPPNAME=faults_train psql -X -q -At -v cfg="$CFG" \
	-c "CALL pepnet_train('k', '$DATA', '$CFG', epochs => 8, batch_size => 256, seed => 3, progress_interval => 0)" \
	>"$WORK/train_k.out" 2>&1 &
TRAIN=$!
KPID=$(backend_pid faults_train "AND query LIKE 'CALL pepnet_train%'")
N=$(wait_versions k 2 60)
q -c "$SCORES_SQL" >"$WORK/before.txt" 2>&1
NBEFORE=$(wc -l <"$WORK/before.txt")
sleep 0.4	# into the next epoch
if [ -n "$KPID" ] && [ "${N:-0}" -ge 2 ] && kill -0 "$TRAIN" 2>/dev/null; then
	kill -9 "$KPID"
	ok "killed (SIGKILL) training backend $KPID after $NBEFORE committed version(s)"
else
	notok "could not kill the training in time (pid '$KPID', versions '$N')"; cat "$WORK/train_k.out"
fi
wait "$TRAIN"
TK=$(now)
RECOVERED=""
for _ in $(seq 1 120); do
	if "$PGBIN/pg_isready" -q && q -c "SELECT 1" >/dev/null 2>&1; then RECOVERED=1; break; fi
	sleep 0.5
done
if [ -n "$RECOVERED" ]; then
	ok "server recovered in $(awk -v a="$(now)" -v b="$TK" 'BEGIN { printf "%.1f", a - b }') s"
else
	notok "server not ready 60 s after the kill"; finish
fi
grep -q 'server closed the connection\|terminat\|connection to server' "$WORK/train_k.out" \
	|| echo "# training client said: $(head -3 "$WORK/train_k.out")"
q -c "$SCORES_SQL" >"$WORK/after.txt" 2>&1
NAFTER=$(wc -l <"$WORK/after.txt")
check "versions committed before the kill are unchanged: md5 of weights, train_loss, scores ($NBEFORE of $NAFTER)" \
	test "$NBEFORE" -ge 2 -a "$(head -n "$NBEFORE" "$WORK/after.txt")" = "$(cat "$WORK/before.txt")"
check "no partial version: $NAFTER versions, consecutive, each with its metrics, training unfinished (< 8)" \
	test "$(q -c "$VERSIONS_OK_SQL 'k'")" = t -a "$NAFTER" -lt 8
check "pepnet_export equals the stored weights of every version" \
	test "$(q -c "SELECT bool_and(pepnet_export('k@' || version) = weights) FROM pepnet.models WHERE name = 'k'")" = t
q -c "SET client_min_messages = warning" -c "CALL pepnet_train('k', '$SMALL', epochs => 1, progress_interval => 0)" >"$WORK/k_again.out" 2>&1
check "training continues from the last version after the crash" \
	test "$(q -c "SELECT parent FROM pepnet.models WHERE name = 'k' AND version = $((NAFTER + 1))")" = "$NAFTER"

# ---------------------------------------------------------------- (b) cancel during training
PGAPPNAME=faults_cancel psql -X -q -At >"$WORK/cancel.out" 2>&1 <<SQL &
SET client_min_messages = warning;
CALL pepnet_train('c', '$DATA', '$CFG', epochs => 10, batch_size => 256, seed => 4, progress_interval => 0);
\echo cancelled|:SQLSTATE
SELECT 'after_cancel', extract(epoch FROM clock_timestamp());
SELECT 'versions', count(*) FROM pepnet.models WHERE name = 'c';
CALL pepnet_train('c', '$SMALL', epochs => 1, progress_interval => 0);
\echo continued|:SQLSTATE
CALL pepnet_train('c2', '$SMALL', '$CFG', epochs => 1, progress_interval => 0);
\echo fresh|:SQLSTATE
SELECT 'scores', count(*) FROM pepnet_score('c', 1, '{5,3}', '{{1,2,3},{4,5,6}}');
SQL
CANCEL=$!
CPID=$(backend_pid faults_cancel "AND query LIKE 'CALL pepnet_train%'")
N=$(wait_versions c 1 60)
sleep 0.5	# into the next epoch
TC=$(q -c "SELECT extract(epoch FROM clock_timestamp()), pg_cancel_backend(${CPID:-0})" | cut -d'|' -f1)
wait "$CANCEL"
NC=$(sed -nE 's/^versions\|([0-9]+)$/\1/p' "$WORK/cancel.out")
TA=$(sed -nE 's/^after_cancel\|(.*)$/\1/p' "$WORK/cancel.out")
LAT=$(awk -v a="${TA:-0}" -v b="${TC:-0}" 'BEGIN { printf "%.2f", a - b }')
check "cancel stops the training with 57014" grep -qx 'cancelled|57014' "$WORK/cancel.out"
check "cancel took effect within 2 s ($LAT s)" lt "$LAT" 2
check "finished epochs stay: $NC version(s) of 10, consecutive, with metrics" \
	test "${NC:-0}" -ge 1 -a "${NC:-10}" -lt 10 -a "$(q -c "$VERSIONS_OK_SQL 'c' AND version <= ${NC:-0}")" = t
check "the same session trains again: continuing (a version whose parent is $NC) and from a config" \
	test "$(grep -c '^continued|00000$\|^fresh|00000$\|^scores|2$' "$WORK/cancel.out")" = 3 -a \
	     "$(q -c "SELECT parent FROM pepnet.models WHERE name = 'c' AND version = $((${NC:-0} + 1))")" = "$NC"
grep -q '^scores|2$' "$WORK/cancel.out" || cat "$WORK/cancel.out"

# ---------------------------------------------------------------- (c) statement_timeout on training
q >"$WORK/timeout.out" 2>&1 <<SQL
SET client_min_messages = warning;
\set ON_ERROR_STOP 0
SET statement_timeout = '1s';
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
CALL pepnet_train('t', '$DATA', '$CFG', epochs => 10, batch_size => 256, progress_interval => 0);
\echo timeout|:SQLSTATE
SELECT 'elapsed', round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2);
RESET statement_timeout;
SELECT 'versions', count(*) FROM pepnet.models WHERE name = 't';
CALL pepnet_train('t', '$SMALL', '$CFG', epochs => 1, progress_interval => 0);
\echo again|:SQLSTATE
SQL
EL=$(sed -nE 's/^elapsed\|(.*)$/\1/p' "$WORK/timeout.out")
NT=$(sed -nE 's/^versions\|(.*)$/\1/p' "$WORK/timeout.out")
check "statement_timeout = 1s stops CALL pepnet_train with 57014" grep -qx 'timeout|57014' "$WORK/timeout.out"
check "... within 3 s of the start (${EL:-?} s)" lt "${EL:-99}" 3
check "... leaving only whole versions (${NT:-?}), and the session trains again" \
	test "$(q -c "SELECT coalesce(bool_and(metrics ? 'train_loss'), true) FROM pepnet.models WHERE name = 't'")" = t -a \
	     "$(grep -c '^again|00000$' "$WORK/timeout.out")" = 1
grep -q '^again|00000$' "$WORK/timeout.out" || cat "$WORK/timeout.out"

# ---------------------------------------------------------------- (d) timeout and cancel while scoring
REF100="SELECT 'ref', count(*), sum(s.score), md5(string_agg(s.scores::text, ',' ORDER BY s.idx))
        FROM pepnet_score('big', 0, '{1,2}', (SELECT feats[1:100] FROM bigreq)) s"
q -c "$REF100" >"$WORK/ref100.out" 2>&1
PGAPPNAME=faults_score psql -X -q -At >"$WORK/score.out" 2>&1 <<SQL &
SELECT 'warm', count(*) FROM pepnet_score('big', 0, '{1,2}', '{{1,2,3,4}}');
SET statement_timeout = '1s';
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
SELECT count(*) FROM pepnet_score('big', 0, '{1,2}', (SELECT feats FROM bigreq));
\echo timeout|:SQLSTATE
SELECT 'elapsed', round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2);
RESET statement_timeout;
SELECT count(*) FROM pepnet_score('big', 0, '{1,2}', (SELECT feats FROM bigreq)) /* cancel me */;
\echo cancelled|:SQLSTATE
SELECT 'after_cancel', extract(epoch FROM clock_timestamp());
$REF100;
SQL
SCORE=$!
SPID=$(backend_pid faults_score "AND query LIKE '%cancel me%'")
sleep 1
TC=$(q -c "SELECT extract(epoch FROM clock_timestamp()), pg_cancel_backend(${SPID:-0})" | cut -d'|' -f1)
wait "$SCORE"
EL=$(sed -nE 's/^elapsed\|(.*)$/\1/p' "$WORK/score.out")
TA=$(sed -nE 's/^after_cancel\|(.*)$/\1/p' "$WORK/score.out")
LAT=$(awk -v a="${TA:-0}" -v b="${TC:-0}" 'BEGIN { printf "%.2f", a - b }')
check "statement_timeout = 1s stops a 50,000-candidate pepnet_score with 57014" grep -qx 'timeout|57014' "$WORK/score.out"
check "... within 2 s of firing (${EL:-?} s from the start)" lt "${EL:-99}" 3
check "cancel stops a 50,000-candidate pepnet_score with 57014" grep -qx 'cancelled|57014' "$WORK/score.out"
check "... within 2 s (${LAT} s)" lt "$LAT" 2
check "the session keeps scoring, with the same results as a fresh session" \
	test -s "$WORK/ref100.out" -a "$(grep '^ref|' "$WORK/score.out")" = "$(cat "$WORK/ref100.out")"
grep -q '^ref|100|' "$WORK/score.out" || cat "$WORK/score.out"

# ---------------------------------------------------------------- (e) afterwards
check "pepnet_cache() in a fresh session: empty, then lists the version it loaded" \
	test "$(q -c "SELECT count(*) FROM pepnet_cache()" \
	          -c "SELECT count(*) FROM pepnet_score('k', 0, '{5,3}', '{{1,2,3}}')" \
	          -c "SELECT model || '@' || version || ':' || domains FROM pepnet_cache()" | tr '\n' ' ')" = "0 1 k@$((NAFTER + 1)):1 "
if [ -f "$SERVER_LOG" ]; then
	tail -c +$((LOG_START + 1)) "$SERVER_LOG" >"$WORK/log.txt"
	SIGS=$(grep -E 'terminated by signal|was terminated by exception' "$WORK/log.txt")
	OTHER=$(echo "$SIGS" | grep -v "PID $KPID) was terminated by signal 9" | grep -v '^$')
	check "server log: the kill -9 of backend $KPID is there" grep -q "PID $KPID) was terminated by signal 9" "$WORK/log.txt"
	if [ -z "$OTHER" ] && ! grep -qE 'PANIC|TRAP:|terminated by signal (6|11)' "$WORK/log.txt"; then
		ok "server log: no other crash (no other terminated process, no PANIC, no failed assertion)"
	else
		notok "server log shows another crash:"; echo "$OTHER" | head -5
		grep -E 'PANIC|TRAP:' "$WORK/log.txt" | head -5
	fi
else
	ok "# SKIP server log checks: no log at $SERVER_LOG (set SERVER_LOG)"
fi
finish
