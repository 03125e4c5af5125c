# test/t/047_parallel_batch.pl: pepnet_score_query in parallel workers, seen from other sessions.
#
# One cluster with pepnet preloaded (the workers take the version from the shared cache) and room
# for 8 workers.  60,000 rows (8 blocks of 8,192) scored by a deployed model:
#  - the serial job (max_parallel_workers_per_gather = 0) and the parallel job (2 workers; and
#    workers only) give the same rows in the same order with bit-identical scores, by CREATE TABLE
#    AS as a nightly job writes them;
#  - while a parallel job runs (its data query sleeps at row 50,000, after the workers started),
#    pg_stat_activity shows its parallel workers (leader_pid = the job's backend);
#  - a job cancelled there (pg_cancel_backend) fails with 57014 and leaves no worker behind; a
#    worker terminated there (pg_terminate_backend of the worker) makes the job fail with the
#    worker's SQLSTATE (57P01) and "parallel worker" in its context, not hang; no worker of either
#    job is left, and a parallel job afterwards gives the serial result;
#  - a job over a data query of the leader's temporary table runs in workers (they read no data
#    query) and equals the serial job;
#  - the leader's memory after 20 parallel jobs in one session is not more than after 10.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $node = PostgreSQL::Test::Cluster->new('parallel_batch');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 256MB
max_worker_processes = 8
max_parallel_workers = 8
fsync = off
jit = off
CONF
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

# a psql session in the background: start it, then finish it
sub bg
{
	my ($sql) = @_;
	my $r = { out => '', err => '' };
	$sql .= "\n";	# psql runs a line once it is complete
	$r->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db) ],
		'<', \$sql, '>', \$r->{out}, '2>', \$r->{err}, IPC::Run::timeout(180));
	return $r;
}

sub bg_finish
{
	my ($r) = @_;
	$r->{h}->finish;
	$r->{rc} = $r->{h}->result(0);
	chomp $r->{out};
	return $r;
}

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 30}], "persona": [{"name": "user", "buckets": 500}], "dense": 1, "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16]}';
my ($rc, $out, $err) = $node->psql($db, <<"SQL");
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
SELECT pepnet_create('m', '$CFG', 3);
SELECT pepnet_deploy('m', 1);
SELECT pepnet_preload('m');
CREATE TABLE cands AS
SELECT i AS id, i % 3 AS domain, ARRAY[(i / 90) % 500]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 5000, i % 30]::bigint[] AS features, ARRAY[(i % 17) / 17.0]::real[] AS dense
FROM generate_series(1, 60000) i;
SQL
is($rc, 0, 'setup: a deployed, preloaded model and 60,000 candidates') or BAIL_OUT("setup failed: $err");

my $DATA = 'SELECT id, domain, persona, features, dense FROM cands ORDER BY id';
# a data query that sleeps 4 s at row 50,000: the workers are running by then
# (computed above the sort: OFFSET 0 keeps the ordered subquery apart)
my $SLOW = "SELECT CASE WHEN id = 50000 THEN (SELECT 50000 FROM pg_sleep(4)) ELSE id END AS id, domain, persona, features, dense "
  . "FROM (SELECT * FROM cands ORDER BY id OFFSET 0) c";
my $JOB = "SELECT * FROM ROWS FROM (pepnet_score_query('m', %s) AS (id int, score float8, scores float8[])) WITH ORDINALITY AS t(id, score, scores, pos)";
sub job { my ($data) = @_; my $q = $data; $q =~ s/'/''/g; return sprintf($JOB, "'$q'"); }

my $SER = 'SET max_parallel_workers_per_gather = 0;';
my $PAR = 'SET max_parallel_workers_per_gather = 2;';
my $WORKERS = "$PAR SET parallel_leader_participation = off;";

sq("$SER CREATE TABLE s_serial AS " . job($DATA));
sq("$PAR CREATE TABLE s_par AS " . job($DATA));
sq("$WORKERS CREATE TABLE s_workers AS " . job($DATA));
sub same_as_serial
{
	my ($tbl) = @_;
	return sq("SELECT count(*) || ' ' || count(*) FILTER (WHERE p.pos = s.pos AND p.id = s.id AND p.score = s.score AND p.scores = s.scores AND p.pos = p.id)
	           FROM $tbl p FULL JOIN s_serial s ON s.pos = p.pos");
}
is(sq('SELECT count(*) FROM s_serial'), '60000', 'the serial job: 60000 rows');
is(same_as_serial('s_par'), '60000 60000', 'the parallel job (2 workers and the leader): the serial rows, order and scores');
is(same_as_serial('s_workers'), '60000 60000', 'the parallel job (workers only): the serial rows, order and scores');

# ---------------------------------------------------------------- workers seen in pg_stat_activity
my $job = bg("$PAR SELECT pg_backend_pid(); CREATE TABLE s_slow AS " . job($SLOW) . ";");
my $pid;
$job->{h}->pump until $job->{out} =~ /^(\d+)$/m || !$job->{h}->pumpable;
($pid) = $job->{out} =~ /^(\d+)$/m;
ok(defined $pid, 'the slow job runs') or BAIL_OUT("no pid: $job->{err}");
ok($node->poll_query_until($db, "SELECT count(*) = 2 FROM pg_stat_activity WHERE leader_pid = $pid AND backend_type = 'parallel worker'"),
	'pg_stat_activity shows the 2 parallel workers of the running job (leader_pid)');
bg_finish($job);
is($job->{rc}, 0, 'the slow parallel job completes') or diag($job->{err});
is(same_as_serial('s_slow'), '60000 60000', 'the slow parallel job: the serial rows, order and scores');

# ---------------------------------------------------------------- cancel and a terminated worker
for my $case ([ 'cancel', 'pg_cancel_backend(%LEADER%)', qr/57014/ ],
	[ 'terminated worker', 'pg_terminate_backend(%WORKER%)', qr/57P01.*parallel worker/s ])
{
	my ($what, $call, $expect) = @$case;
	my $r = bg("\\set VERBOSITY verbose\n$PAR SELECT pg_backend_pid(); SELECT count(*) FROM (" . job($SLOW) . ") x;");
	$r->{h}->pump until $r->{out} =~ /^(\d+)$/m || !$r->{h}->pumpable;
	my ($leader) = $r->{out} =~ /^(\d+)$/m;
	$node->poll_query_until($db,
		"SELECT count(*) = 2 FROM pg_stat_activity WHERE leader_pid = $leader AND backend_type = 'parallel worker'")
	  or diag("$what: workers not seen");
	my $worker = sq("SELECT min(pid) FROM pg_stat_activity WHERE leader_pid = $leader AND backend_type = 'parallel worker'");
	(my $c = $call) =~ s/%LEADER%/$leader/;
	$c =~ s/%WORKER%/$worker/;
	sq("SELECT $c");
	bg_finish($r);
	isnt($r->{rc}, 0, "$what: the job fails");
	like($r->{err}, $expect, "$what: with the expected SQLSTATE") or diag($r->{err});
	ok($node->poll_query_until($db, "SELECT count(*) = 0 FROM pg_stat_activity WHERE leader_pid = $leader"),
		"$what: no worker of the job is left");
}
is(sq("$PAR CREATE TABLE s_after AS " . job($DATA) . "; SELECT 1"), '1', 'a parallel job after those');
is(same_as_serial('s_after'), '60000 60000', 'and it gives the serial rows, order and scores');

# ---------------------------------------------------------------- a temporary table's rows
is( sq( "CREATE TEMP TABLE tc AS SELECT * FROM cands; $WORKERS
	     CREATE TABLE s_temp AS " . job('SELECT id, domain, persona, features, dense FROM tc ORDER BY id') . ';
	     SELECT 1'), '1', 'a job over a temporary table, workers only');
is(same_as_serial('s_temp'), '60000 60000', 'over the temporary table: the serial rows, order and scores');
ok(sq("SELECT hits > 0 FROM pepnet.shared_cache WHERE model = 'm'") eq 't', 'the version was served from the shared cache');

# ---------------------------------------------------------------- the leader's memory stays flat
{
	my $loop = "DO \$\$ BEGIN FOR i IN 1..10 LOOP PERFORM count(*) FROM ROWS FROM (pepnet_score_query('m', '$DATA')
	            AS (id int, score float8, scores float8[])) t; END LOOP; END \$\$;";
	my @mem = split /\n/, sq("$PAR $loop SELECT sum(total_bytes) FROM pg_backend_memory_contexts;
	                          $loop SELECT sum(total_bytes) FROM pg_backend_memory_contexts;");
	cmp_ok($mem[1], '<=', $mem[0], "the leader's memory after 20 parallel jobs ($mem[1] bytes) is not more than after 10 ($mem[0])");
}

$node->stop;
done_testing();
