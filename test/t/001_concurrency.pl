# test/t/001_concurrency.pl: scoring clients under concurrent version creation and deployment.
#
# Four pgbench clients score one fixed request through the bare name 'm' without pause.  Each
# statement calls pepnet_score ten times (a LATERAL rescanned per row, so the calls are spread over
# the statement) and pepnet_predict twenty times; every call's scores are mapped to the version
# that gives them (table vkey, filled from 'm@N' before a version can be deployed).  Meanwhile one
# session creates versions (pepnet_create with new seeds) and deploys versions, each in its own
# transaction, logging the server clock just before each deploy starts and just after its COMMIT
# returned.  Asserts: no client error; every statement used exactly one version (never a mix,
# never an unknown score); every statement that started after a deploy's COMMIT returned used that
# version or a later deploy's (no stale reference in any backend); every deploy was observed.
# Then two deterministic two-session checks (session B acts while A sleeps inside a statement): a
# statement that straddles a deploy must not leave its session on the old version, and two calls of
# one statement must agree when pepnet.models changes between them.
#
# Environment: CLIENTS (4), SECONDS_RUN (20), DEPLOYS (40).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $CLIENTS = $ENV{CLIENTS} || 4;
my $SECONDS_RUN = $ENV{SECONDS_RUN} || 20;
my $DEPLOYS = $ENV{DEPLOYS} || 40;

my $node = PostgreSQL::Test::Cluster->new('concurrency');
$node->init;
$node->append_conf('postgresql.conf', "max_connections = 40\nfsync = off\njit = off\n");
$node->start;
my $db = 'postgres';
my $WORK = PostgreSQL::Test::Utils::tempdir;

sub sq { return $node->safe_psql($db, @_); }

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "emb_dim": 8, "hidden": [32, 16]}';

# versions 1-3 from seeds, 4 trained, 5 imported
my ($rc, $out, $err) = $node->psql($db, <<'SQL', extra_params => [ '-v', "cfg=$CFG" ]);
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
-- the fixed request: domain 0, persona {7,3}, 203 candidates of which the first 3 identify the
-- version (s1-s3 through pepnet_score); s0 is pepnet_predict of candidate 1
CREATE TABLE req AS SELECT '{{11,2},{12,3},{13,4}}'::bigint[] || array_agg(ARRAY[100 + i, i % 10]::bigint[] ORDER BY i) AS feats
FROM generate_series(1, 200) i;
CREATE TABLE vkey (version int PRIMARY KEY, s0 float8, s1 float8, s2 float8, s3 float8);
CREATE FUNCTION reg(v int) RETURNS int LANGUAGE sql AS $$
  INSERT INTO vkey
  SELECT v, pepnet_predict('m@' || v, 0, '{7,3}', '{11,2}'),
         max(s.score) FILTER (WHERE s.idx = 1), max(s.score) FILTER (WHERE s.idx = 2), max(s.score) FILTER (WHERE s.idx = 3)
  FROM pepnet_score('m@' || v, 0, '{7,3}', (SELECT feats FROM req)) s;
  SELECT v;
$$;
CREATE TABLE obs (client int, ts float8, te float8, n int, nv int, vmin int, vmax int, bad int);
CREATE TABLE deploy_log (k int PRIMARY KEY, version int, t_begin float8, t_end float8);
CREATE TABLE clicks AS
SELECT i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 40, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features, (abs(hashint4(i)) % 300) % 2 = 0 AS label
FROM generate_series(1, 3000) i;
SELECT reg(pepnet_create('m', :'cfg', seed => 1));
SELECT reg(pepnet_create('m', :'cfg', seed => 2));
SELECT reg(pepnet_create('m', :'cfg', seed => 3));
CALL pepnet_train('m', 'SELECT domain, persona, features, label FROM clicks', :'cfg',
                  epochs => 1, lr => 0.05, seed => 4, progress_interval => 0);
SELECT reg(4);
SELECT pepnet_create('other', :'cfg', seed => 77);
SELECT reg(pepnet_import('m', :'cfg', pepnet_export('other@1')));
SELECT pepnet_deploy('m', 1);
INSERT INTO deploy_log VALUES (0, 1, 0, extract(epoch FROM clock_timestamp()));
ANALYZE;
SQL
is($rc, 0, 'setup: 5 versions of m (created, trained, imported), m@1 deployed')
  or BAIL_OUT("setup failed: $err");

# no two versions within 1e-6 on all three scores of the request
my $DISTINCT_SQL = "SELECT count(*) FROM vkey a JOIN vkey b ON a.version < b.version
                    WHERE greatest(abs(a.s1 - b.s1), abs(a.s2 - b.s2), abs(a.s3 - b.s3)) < 1e-6";
is(sq("$DISTINCT_SQL") . '/' . sq('SELECT count(*) FROM vkey'), '0/5',
	'the 5 versions give clearly different scores for the fixed request');

# calls: the version of each pepnet_score call (NULL: no known version); preds: pepnet_predict
# values, bad unless they are the predict score of the version of the calls
my $score_sql = <<'SQL';
WITH calls AS MATERIALIZED (
  SELECT (SELECT k.version FROM vkey k
          WHERE abs(k.s1 - c.s1) < 1e-8 AND abs(k.s2 - c.s2) < 1e-8 AND abs(k.s3 - c.s3) < 1e-8) AS ver
  FROM req r, generate_series(1, 10) g,
       LATERAL (SELECT max(s.score) FILTER (WHERE s.idx = 1) AS s1, max(s.score) FILTER (WHERE s.idx = 2) AS s2,
                       max(s.score) FILTER (WHERE s.idx = 3) AS s3
                FROM pepnet_score('m', 0, ARRAY[7 + 0 * g, 3]::bigint[], r.feats) s) c),
preds AS MATERIALIZED (
  SELECT pepnet_predict('m', 0, ARRAY[7, 3 + 0 * g]::bigint[], '{11,2}'::bigint[]) AS p FROM generate_series(1, 20) g)
SELECT extract(epoch FROM statement_timestamp()) AS ts,
       (SELECT count(*) FROM calls) + (SELECT count(*) FROM preds) AS n,
       (SELECT count(DISTINCT ver) FROM calls) AS nv,
       (SELECT coalesce(min(ver), -1) FROM calls) AS vmin, (SELECT coalesce(max(ver), -1) FROM calls) AS vmax,
       (SELECT count(*) FROM calls WHERE ver IS NULL) +
       (SELECT count(*) FROM preds WHERE NOT EXISTS (SELECT 1 FROM vkey k WHERE k.version = (SELECT min(ver) FROM calls)
                                                     AND abs(k.s0 - preds.p) < 1e-8)) AS bad \gset
INSERT INTO obs VALUES (:client_id, :ts, extract(epoch FROM statement_timestamp()), :n, :nv, :vmin, :vmax, :bad);
SQL
PostgreSQL::Test::Utils::append_to_file("$WORK/score.sql", $score_sql);

# the deployer: every third step creates a version (registered before it can be deployed), each step
# deploys a version other than the current one in its own transaction, then pauses
my $deployer = "SET client_min_messages = warning;\n";
for my $k (1 .. $DEPLOYS)
{
	if ($k % 3 == 0)
	{
		$deployer .= "SELECT reg(pepnet_create('m', :'cfg', seed => " . (100 + $k) . ")) AS v \\gset\n";
	}
	else
	{
		$deployer .= "SELECT version AS v FROM pepnet.models WHERE name = 'm' AND version <> (SELECT version FROM pepnet.deployments WHERE name = 'm') ORDER BY random() LIMIT 1 \\gset\n";
	}
	$deployer .= "INSERT INTO deploy_log VALUES ($k, :v, extract(epoch FROM clock_timestamp()));\n";
	$deployer .= "SELECT pepnet_deploy('m', :v);\n";
	$deployer .= "UPDATE deploy_log SET t_end = extract(epoch FROM clock_timestamp()) WHERE k = $k;\n";
	$deployer .= "SELECT pg_sleep(0.3);\n";
}

my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
	[
		'pgbench', '-n', '-f', "$WORK/score.sql", '-c', $CLIENTS, '-j', 2, '-T', $SECONDS_RUN,
		'-h', $node->host, '-p', $node->port, $db
	],
	'>', \$bench_out, '2>', \$bench_err,
	IPC::Run::timeout($SECONDS_RUN + 60));
sleep 1;
my ($dep_rc, $dep_out, $dep_err) =
  $node->psql($db, $deployer, extra_params => [ '-v', "cfg=$CFG" ], timeout => 60);
$bench->finish;
my $bench_rc = $bench->result;

is($dep_rc . '/' . sq("SELECT count(*) FROM deploy_log WHERE k > 0 AND t_end IS NOT NULL"),
	"0/$DEPLOYS", "deployer: $DEPLOYS deploys (and " . int($DEPLOYS / 3) . " new versions) without error")
  or diag($dep_err);
my ($TX) = $bench_out =~ /^number of transactions actually processed: (\d+)/m;
my ($FAILED) = $bench_out =~ /^number of failed transactions: (\d+)/m;
my $ERRS = () = $bench_err =~ /error|abort/gi;
ok($bench_rc == 0 && defined $TX && $TX > 0 && ($FAILED // 0) == 0 && $ERRS == 0,
	"pgbench: $CLIENTS clients, ${SECONDS_RUN} s, " . ($TX // '?') . " scoring statements, no client error")
  or diag("exit $bench_rc\n$bench_err\n$bench_out");
$TX //= -1;
is(sq($DISTINCT_SQL), '0',
	'all ' . sq('SELECT count(*) FROM vkey') . ' versions (with those created during the run) are told apart by their scores');
my $NOBS = sq('SELECT count(*) FROM obs');
is($NOBS . '/' . sq('SELECT count(*) FROM obs WHERE n <> 30'), "$TX/0",
	"every statement recorded (obs $NOBS = transactions $TX), each with 30 calls");

# never a mix of versions or a score of no known version within one statement
is(sq('SELECT count(*) FROM obs WHERE nv <> 1 OR bad <> 0'), '0',
	"all $NOBS statements used exactly one known version (10 pepnet_score + 20 pepnet_predict calls each)")
  or diag(sq(q{SELECT '#   client ' || client || ': pepnet_score calls used ' || nv || ' version(s), m@' || vmin || ' to m@' || vmax ||
	             ', ' || bad || ' call(s) (of 20 pepnet_predict) disagreed with m@' || vmin
	      FROM obs WHERE nv <> 1 OR bad <> 0 ORDER BY ts LIMIT 10}));

# a statement that started after deploy k's COMMIT returned sees version k, or that of a deploy
# that began before the statement ended
my $fresh = sq(<<'SQL');
CREATE TEMP VIEW judged AS
SELECT o.*, k0.k AS k0, k0.version AS expected,
       o.vmin = o.vmax AND o.vmin IN (SELECT d.version FROM deploy_log d WHERE d.k >= k0.k AND (d.k = k0.k OR d.t_begin < o.te)) AS fresh,
       NOT EXISTS (SELECT 1 FROM deploy_log d WHERE d.k > k0.k AND d.t_begin < o.te) AS quiet
FROM obs o CROSS JOIN LATERAL (SELECT k, version FROM deploy_log d WHERE d.t_end < o.ts ORDER BY k DESC LIMIT 1) k0;
SELECT count(*) FILTER (WHERE NOT fresh), count(*) FILTER (WHERE quiet), count(*),
       (SELECT count(*) FROM deploy_log d WHERE NOT EXISTS (SELECT 1 FROM judged j WHERE j.k0 = d.k AND j.quiet AND j.vmin = d.version)),
       (SELECT count(*) FROM (SELECT DISTINCT k0, client FROM judged WHERE NOT fresh) x)
FROM judged;
SELECT 'stale: client ' || client || ' after deploy ' || k0 || ' (m@' || expected || ') used m@' || vmin || ' in ' || count(*) ||
       ' statements, from ' || round(min(ts - (SELECT t_end FROM deploy_log WHERE k = k0))::numeric, 3) ||
       ' s to ' || round(max(ts - (SELECT t_end FROM deploy_log WHERE k = k0))::numeric, 3) || ' s after its COMMIT'
FROM judged WHERE NOT fresh GROUP BY k0, client, expected, vmin ORDER BY k0, client LIMIT 12;
SQL
my ($first, @stale_lines) = split /\n/, $fresh;
my ($STALE, $QUIET, $JUDGED, $UNSEEN, $EPISODES) = split /\|/, $first;
ok($STALE == 0 && $JUDGED > 0,
	"no stale reads: all $JUDGED statements started after a deploy's COMMIT used it or a newer one")
  or diag("stale reads: $STALE of $JUDGED statements ($EPISODES client-deploy pairs) used an older version than deployed at their start\n"
	  . join("\n", @stale_lines));
is($UNSEEN, '0', "every deploy was seen by statements that started after its COMMIT (unseen: $UNSEEN; quiet statements: $QUIET)");

# a fresh session sees the last deploy
my $LAST = sq('SELECT version FROM deploy_log ORDER BY k DESC LIMIT 1');
is( sq(  "SELECT abs(k.s1 - c.s1) < 1e-8 AND abs(k.s2 - c.s2) < 1e-8 AND abs(k.s3 - c.s3) < 1e-8
	     FROM vkey k, (SELECT max(s.score) FILTER (WHERE s.idx = 1) AS s1, max(s.score) FILTER (WHERE s.idx = 2) AS s2,
	                          max(s.score) FILTER (WHERE s.idx = 3) AS s3
	                   FROM pepnet_score('m', 0, '{7,3}', (SELECT feats FROM req)) s) c WHERE k.version = $LAST"),
	't', "a new session scores with the last deployed version $LAST");

# Deterministic: session A runs statements that sleep between calls (application_name 'straddle');
# session B acts while A is inside pg_sleep.  SCORE_M / PREDICT_M: the version that 'm' scored with.
my $SCORE_M = "(SELECT (SELECT k.version FROM vkey k WHERE abs(k.s1 - s.score) < 1e-8 ORDER BY abs(k.s1 - s.score) LIMIT 1)
          FROM pepnet_score('m', 0, '{7,3}', '{{11,2}}') s)";
my $PREDICT_M = "(SELECT k.version FROM vkey k, pepnet_predict('m', 0, '{7,3}', '{11,2}') p
            WHERE abs(k.s0 - p) < 1e-8 ORDER BY abs(k.s0 - p) LIMIT 1)";

# wait (at most 10 s) until A sleeps in pg_sleep(secs), then run B's SQL
sub when_a_sleeps
{
	my ($secs, $sql) = @_;
	for (1 .. 100)
	{
		last
		  if sq("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'straddle'
		        AND wait_event = 'PgSleep' AND query LIKE '%pg_sleep($secs)%'") eq '1';
		select(undef, undef, undef, 0.1);
	}
	sq($sql);
}
sq("SELECT pepnet_deploy('m', 1)");
my $straddle_sql = <<SQL;
SELECT 'warm', $SCORE_M, $PREDICT_M;
-- B deploys m\@2 during this statement
WITH s AS MATERIALIZED (SELECT pg_sleep(2.01)) SELECT 'straddling', $SCORE_M FROM s;
SELECT 'after', $SCORE_M;
SELECT 'after_predict', $PREDICT_M;
-- B creates a version (any change to pepnet.models) between the two calls of this statement
WITH a AS MATERIALIZED (SELECT $SCORE_M AS v),
     z AS MATERIALIZED (SELECT pg_sleep(2.02) FROM a),
     b AS MATERIALIZED (SELECT $SCORE_M AS v FROM z)
SELECT 'calls', a.v, b.v FROM a, b;
SQL
PostgreSQL::Test::Utils::append_to_file("$WORK/straddle.sql", $straddle_sql);
my $straddle_out = '';
# input from a file: IPC::Run feeds a scalar only while the caller pumps, and B must act meanwhile
my $sess_a = IPC::Run::start(
	[
		'psql', '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-f', "$WORK/straddle.sql",
		'-d', $node->connstr($db) . ' application_name=straddle'
	],
	'>', \$straddle_out, '2>&1', IPC::Run::timeout(30));
when_a_sleeps('2.01', "SELECT pepnet_deploy('m', 2)");
when_a_sleeps('2.02', "SELECT pepnet_create('m', '$CFG', seed => 999)");
$sess_a->finish;
like($straddle_out, qr/^straddling\|1$/m,
	'a statement that straddled a deploy used the version deployed when it started (1)')
  or diag("session A printed:\n$straddle_out");
ok($straddle_out =~ /^after\|2$/m && $straddle_out =~ /^after_predict\|2$/m,
	'the same session\'s next statements (pepnet_score, pepnet_predict) use the new deploy (2)')
  or diag("after a statement straddled the deploy of m\@2, the session's next statements: $straddle_out");
like($straddle_out, qr/^calls\|2\|2$/m,
	'two calls in one statement, a version created between them: one version, the deployed one');

$node->stop;
done_testing();
