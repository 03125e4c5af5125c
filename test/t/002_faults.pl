# test/t/002_faults.pl: training and scoring under kill -9, cancel and statement_timeout.
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
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $node = PostgreSQL::Test::Cluster->new('faults');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\nrestart_after_crash = on\n");
$node->start;
my $db = 'postgres';
my $WORK = PostgreSQL::Test::Utils::tempdir;
my $log_start = -s $node->logfile;

sub sq { return $node->safe_psql($db, @_); }

# psql running FILE's SQL in the background as application APP; output into $$out
my $nfile = 0;
sub bg_psql
{
	my ($app, $sql, $out) = @_;
	my $file = "$WORK/bg" . (++$nfile) . '.sql';
	PostgreSQL::Test::Utils::append_to_file($file, $sql);
	return IPC::Run::start(
		[ 'psql', '-X', '-q', '-At', '-f', $file, '-d', $node->connstr($db) . " application_name=$app" ],
		'>', $out, '2>&1', IPC::Run::timeout(300));
}

# the pid of the active backend of application APP (undef if none within 10 s)
sub backend_pid
{
	my ($app, $cond) = @_;
	for (1 .. 100)
	{
		my $pid = sq("SELECT pid FROM pg_stat_activity WHERE application_name = '$app' AND state = 'active' $cond LIMIT 1");
		return $pid if $pid ne '';
		sleep 0.1;
	}
	return undef;
}

# wait until model NAME has at least N versions (at most S s); returns the count
sub wait_versions
{
	my ($name, $n, $s) = @_;
	my $c = 0;
	for (1 .. $s * 20)
	{
		my ($rc, $out) = $node->psql($db, "SELECT count(*) FROM pepnet.models WHERE name = '$name'");
		$c = $out if $rc == 0 && $out ne '';
		last if $c >= $n;
		sleep 0.05;
	}
	return $c;
}

# the versions of a name are 1..n, each the child of the one before, with its epoch's metrics
my $VERSIONS_OK_SQL = "SELECT count(*) = max(version) AND bool_and(metrics ? 'train_loss' AND metrics ? 'rows' AND metrics ? 'seconds')
                              AND bool_and(version = 1 OR parent = version - 1)
                       FROM pepnet.models WHERE name = ";

my $CFG = '{"domains": 4, "features": [{"name": "item", "buckets": 20000}, {"name": "cat", "buckets": 100}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": false}], "emb_dim": 16, "hidden": [64, 32]}';
my $BIGCFG = '{"domains": 1, "features": [{"name": "item", "buckets": 10000}, {"name": "cat", "buckets": 1000}, {"name": "brand", "buckets": 5000}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 10000}, {"name": "age", "buckets": 8, "hash": false}], "emb_dim": 32, "tasks": ["click", "like", "buy", "share"], "hidden": [512, 256]}';
my $DATA = 'SELECT domain, persona, features, label FROM ev';
my $SMALL = 'SELECT domain, persona, features, label FROM ev WHERE i <= 3000';

# 60,000 rows: about 1-2 s per epoch
my ($rc, $out, $err) = $node->psql($db, <<'SQL', extra_params => [ '-v', "bigcfg=$BIGCFG" ]);
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
is($rc, 0, 'setup: 60,000 training rows, a big model (hidden [512, 256], 4 tasks), 50,000 candidates')
  or BAIL_OUT("setup failed: $err");

# ---------------------------------------------------------------- (a) kill -9 during training
my $SCORES_SQL = "SELECT version, md5(pepnet_export('k\@' || version)), metrics->>'train_loss',
                         (SELECT string_agg(s.score::text || ':' || s.scores::text, ',' ORDER BY s.idx)
                          FROM pepnet_score('k\@' || version, 1, '{5,3}', '{{1,2,3},{4,5,6},{7,8,9}}') s)
                  FROM pepnet.models WHERE name = 'k' ORDER BY version";
my $train_out = '';
my $train = bg_psql('faults_train',
	"CALL pepnet_train('k', '$DATA', '$CFG', epochs => 8, batch_size => 256, seed => 3, progress_interval => 0);\n",
	\$train_out);
my $KPID = backend_pid('faults_train', "AND query LIKE 'CALL pepnet_train%'");
my $N = wait_versions('k', 2, 60);
my $before = sq($SCORES_SQL);
my @before = split /\n/, $before;
my $NBEFORE = scalar @before;
sleep 0.4;    # into the next epoch
if (defined $KPID && $N >= 2 && $train->pumpable)
{
	kill 'KILL', $KPID;
	pass("killed (SIGKILL) training backend $KPID after $NBEFORE committed version(s)");
}
else
{
	fail("could not kill the training in time (pid '" . ($KPID // '') . "', versions '$N')");
	diag($train_out);
}
$train->finish;
my $tk = time;
my $recovered = 0;
for (1 .. 120)
{
	my ($r) = $node->psql($db, 'SELECT 1');
	if ($r == 0) { $recovered = 1; last; }
	sleep 0.5;
}
ok($recovered, sprintf('server recovered in %.1f s', time - $tk)) or BAIL_OUT('server not ready 60 s after the kill');
note("training client said: $train_out");
my $after = sq($SCORES_SQL);
my @after = split /\n/, $after;
my $NAFTER = scalar @after;
ok($NBEFORE >= 2 && join("\n", @after[ 0 .. $NBEFORE - 1 ]) eq $before,
	"versions committed before the kill are unchanged: md5 of weights, train_loss, scores ($NBEFORE of $NAFTER)");
ok(sq("$VERSIONS_OK_SQL 'k'") eq 't' && $NAFTER < 8,
	"no partial version: $NAFTER versions, consecutive, each with its metrics, training unfinished (< 8)");
is(sq("SELECT bool_and(pepnet_export('k\@' || version) = (SELECT string_agg(c.data, '' ORDER BY c.seq) FROM pepnet.model_chunks c
	                                                           WHERE c.name = m.name AND c.version = m.version)
	                    AND length(pepnet_export('k\@' || version)) = m.weights_size)
	    FROM pepnet.models m WHERE name = 'k'"),
	't', 'pepnet_export equals the stored weights (chunks, weights_size) of every version');
$node->psql($db, "SET client_min_messages = warning; CALL pepnet_train('k', '$SMALL', epochs => 1, progress_interval => 0)");
is(sq("SELECT parent FROM pepnet.models WHERE name = 'k' AND version = " . ($NAFTER + 1)),
	$NAFTER, 'training continues from the last version after the crash');

# ---------------------------------------------------------------- (b) cancel during training
my $cancel_out = '';
my $cancel = bg_psql('faults_cancel', <<SQL, \$cancel_out);
SET client_min_messages = warning;
CALL pepnet_train('c', '$DATA', '$CFG', epochs => 10, batch_size => 256, seed => 4, progress_interval => 0);
\\echo cancelled|:SQLSTATE
SELECT 'after_cancel', extract(epoch FROM clock_timestamp());
SELECT 'versions', count(*) FROM pepnet.models WHERE name = 'c';
CALL pepnet_train('c', '$SMALL', epochs => 1, progress_interval => 0);
\\echo continued|:SQLSTATE
CALL pepnet_train('c2', '$SMALL', '$CFG', epochs => 1, progress_interval => 0);
\\echo fresh|:SQLSTATE
SELECT 'scores', count(*) FROM pepnet_score('c', 1, '{5,3}', '{{1,2,3},{4,5,6}}');
SQL
my $CPID = backend_pid('faults_cancel', "AND query LIKE 'CALL pepnet_train%'") // 0;
wait_versions('c', 1, 60);
sleep 0.5;    # into the next epoch
my ($TC) = split /\|/, sq("SELECT extract(epoch FROM clock_timestamp()), pg_cancel_backend($CPID)");
$cancel->finish;
my ($NC) = $cancel_out =~ /^versions\|(\d+)$/m;
my ($TA) = $cancel_out =~ /^after_cancel\|(.*)$/m;
$NC //= 0;
my $lat = ($TA // 0) - $TC;
like($cancel_out, qr/^cancelled\|57014$/m, 'cancel stops the training with 57014');
ok($lat < 2, sprintf('cancel took effect within 2 s (%.2f s)', $lat));
ok($NC >= 1 && $NC < 10 && sq("$VERSIONS_OK_SQL 'c' AND version <= $NC") eq 't',
	"finished epochs stay: $NC version(s) of 10, consecutive, with metrics");
ok( $cancel_out =~ /^continued\|00000$/m
	  && $cancel_out =~ /^fresh\|00000$/m
	  && $cancel_out =~ /^scores\|2$/m
	  && sq("SELECT parent FROM pepnet.models WHERE name = 'c' AND version = " . ($NC + 1)) eq $NC,
	"the same session trains again: continuing (a version whose parent is $NC) and from a config")
  or diag($cancel_out);

# ---------------------------------------------------------------- (c) statement_timeout on training
($rc, $out, $err) = $node->psql($db, <<SQL, on_error_stop => 0);
SET client_min_messages = warning;
SET statement_timeout = '1s';
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
CALL pepnet_train('t', '$DATA', '$CFG', epochs => 10, batch_size => 256, progress_interval => 0);
\\echo timeout|:SQLSTATE
SELECT 'elapsed', round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2);
RESET statement_timeout;
SELECT 'versions', count(*) FROM pepnet.models WHERE name = 't';
CALL pepnet_train('t', '$SMALL', '$CFG', epochs => 1, progress_interval => 0);
\\echo again|:SQLSTATE
SQL
my ($EL) = $out =~ /^elapsed\|(.*)$/m;
my ($NT) = $out =~ /^versions\|(.*)$/m;
like($out, qr/^timeout\|57014$/m, 'statement_timeout = 1s stops CALL pepnet_train with 57014');
ok(($EL // 99) < 3, '... within 3 s of the start (' . ($EL // '?') . ' s)');
ok( sq("SELECT coalesce(bool_and(metrics ? 'train_loss'), true) FROM pepnet.models WHERE name = 't'") eq 't'
	  && $out =~ /^again\|00000$/m,
	'... leaving only whole versions (' . ($NT // '?') . '), and the session trains again')
  or diag("$out\n$err");

# ---------------------------------------------------------------- (d) timeout and cancel while scoring
my $REF100 = "SELECT 'ref', count(*), sum(s.score), md5(string_agg(s.scores::text, ',' ORDER BY s.idx))
              FROM pepnet_score('big', 0, '{1,2}', (SELECT feats[1:100] FROM bigreq)) s";
my $ref100 = sq($REF100);
my $score_out = '';
my $score = bg_psql('faults_score', <<SQL, \$score_out);
SELECT 'warm', count(*) FROM pepnet_score('big', 0, '{1,2}', '{{1,2,3,4}}');
SET statement_timeout = '1s';
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
SELECT count(*) FROM pepnet_score('big', 0, '{1,2}', (SELECT feats FROM bigreq));
\\echo timeout|:SQLSTATE
SELECT 'elapsed', round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 2);
RESET statement_timeout;
SELECT count(*) FROM pepnet_score('big', 0, '{1,2}', (SELECT feats FROM bigreq)) /* cancel me */;
\\echo cancelled|:SQLSTATE
SELECT 'after_cancel', extract(epoch FROM clock_timestamp());
$REF100;
SQL
my $SPID = backend_pid('faults_score', "AND query LIKE '%cancel me%'") // 0;
sleep 1;
($TC) = split /\|/, sq("SELECT extract(epoch FROM clock_timestamp()), pg_cancel_backend($SPID)");
$score->finish;
($EL) = $score_out =~ /^elapsed\|(.*)$/m;
($TA) = $score_out =~ /^after_cancel\|(.*)$/m;
$lat = ($TA // 0) - $TC;
like($score_out, qr/^timeout\|57014$/m, 'statement_timeout = 1s stops a 50,000-candidate pepnet_score with 57014');
ok(($EL // 99) < 3, '... within 2 s of firing (' . ($EL // '?') . ' s from the start)');
like($score_out, qr/^cancelled\|57014$/m, 'cancel stops a 50,000-candidate pepnet_score with 57014');
ok($lat < 2, sprintf('... within 2 s (%.2f s)', $lat));
ok($ref100 ne '' && $score_out =~ /^\Q$ref100\E$/m,
	'the session keeps scoring, with the same results as a fresh session')
  or diag($score_out);

# ---------------------------------------------------------------- (e) afterwards
is( sq( "SELECT count(*) FROM pepnet_cache();
	     SELECT count(*) FROM pepnet_score('k', 0, '{5,3}', '{{1,2,3}}');
	     SELECT model || '\@' || version || ':' || domains FROM pepnet_cache()"),
	"0\n1\nk\@" . ($NAFTER + 1) . ':1',
	'pepnet_cache() in a fresh session: empty, then lists the version it loaded');
my $log = PostgreSQL::Test::Utils::slurp_file($node->logfile, $log_start);
like($log, qr/PID $KPID\) was terminated by signal 9/, "server log: the kill -9 of backend $KPID is there");
my @other = grep { !/PID $KPID\) was terminated by signal 9/ }
  ($log =~ /^.*(?:terminated by signal|was terminated by exception).*$/mg);
ok(!@other && $log !~ /PANIC|TRAP:|terminated by signal (?:6|11)/,
	'server log: no other crash (no other terminated process, no PANIC, no failed assertion)')
  or diag(join("\n", @other));

$node->stop;
done_testing();
