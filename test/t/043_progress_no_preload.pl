# test/t/043_progress_no_preload.pl: training progress on a server without shared_preload_libraries.
#
# A training runs in the background (its data query slowed by pg_sleep every 200 rows: an epoch of
# 20,000 rows takes about two seconds), progress_interval => 1; a second session polls.  Asserts:
# the training backend's pg_stat_activity.query starts with a line naming model, epoch of epochs,
# rows, loss and rows/s; pepnet.training_progress shows model, epoch, epochs and rows from it, rows
# advancing between reads; a role without the trainer's privileges does not see the model, one
# with pg_read_all_stats does; the trainer receives NOTICE lines of progress; after the training
# is cancelled, or ends, the view is empty.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('plain');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\n");
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

sub bg
{
	my ($sql) = @_;
	my $r = { out => '', err => '' };
	$r->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $sql ],
		'>', \$r->{out}, '2>', \$r->{err}, IPC::Run::timeout(300));
	return $r;
}

sub bg_finish
{
	my ($r) = @_;
	$r->{h}->finish;
	$r->{rc} = $r->{h}->result(0);
	return $r;
}

my ($rc, $out, $err) = $node->psql($db, <<'SQL');
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
CREATE TABLE clicks AS
SELECT i, i % 2 AS domain, ARRAY[i % 100]::bigint[] AS persona, ARRAY[abs(hashint4(i)) % 1000]::bigint[] AS features,
       (abs(hashint4(i)) % 7 = 0) AS label
FROM generate_series(1, 20000) i;
CREATE FUNCTION slow(i int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	IF i % 200 = 0 THEN PERFORM pg_sleep(0.02); END IF;
	RETURN i;
END $$;
CREATE ROLE watcher LOGIN;
CREATE ROLE stats LOGIN IN ROLE pg_read_all_stats;
GRANT USAGE ON SCHEMA pepnet TO watcher, stats;
SQL
is($rc, 0, 'setup') or BAIL_OUT($err);
is(sq("SELECT current_setting('shared_preload_libraries')"), '', 'pepnet is not preloaded');

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 1000}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 8, "hidden": [16]}';
my $TRAIN = "CALL pepnet_train('m', 'SELECT domain, persona, features, label FROM clicks WHERE slow(i) > 0', '$CFG', "
  . "validation => 'SELECT domain, persona, features, label FROM clicks WHERE i %% 10 = 0', "
  . "epochs => %d, batch_size => 100, shuffle_buffer => 1, progress_interval => 1)";

# a long training, watched, then cancelled (so that it is still running for every check)
my $T = bg(sprintf($TRAIN, 50));
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM pepnet.training_progress WHERE model = 'm' AND rows_done > 0"),
	'the running training appears in pepnet.training_progress with rows done');
my $pid = sq("SELECT pid FROM pepnet.training_progress");
like(sq("SELECT split_part(query, E'\\n', 1) FROM pg_stat_activity WHERE pid = $pid"),
	qr/^CALL pepnet_train -- "m": epoch \d+ of 50, \d+ rows, loss \d+\.\d{5}, \d+ rows\/s$/,
	'pg_stat_activity.query names model, epoch of epochs, rows, loss and rate');
like(sq("SELECT split_part(query, E'\\n', 2) FROM pg_stat_activity WHERE pid = $pid"), qr/^CALL pepnet_train\('m'/,
	'and the statement on its second line');
is(sq("SELECT model || '/' || epochs || '/' || (loss > 0) || '/' || (rows_per_s > 0) || '/' || (started_at <= updated_at) FROM pepnet.training_progress"),
	'm/50/true/true/true', 'the view: model, epochs, loss, rate, times');
my ($e1, $r1) = split /\|/, sq("SELECT epoch, rows_done FROM pepnet.training_progress");
ok($node->poll_query_until($db, "SELECT epoch > $e1 OR rows_done > $r1 FROM pepnet.training_progress"),
	'rows advance between reads');
is($node->safe_psql($db, "SELECT count(*) FROM pepnet.training_progress WHERE model IS NOT NULL", extra_params => [ '-U', 'watcher' ]),
	'0', 'a role without the trainer\'s privileges does not see it');
is($node->safe_psql($db, "SELECT model FROM pepnet.training_progress", extra_params => [ '-U', 'stats' ]),
	'm', 'a role with pg_read_all_stats does');
# past the first epoch: its version is stored and progress NOTICEs (progress_interval 1 s) were sent
ok($node->poll_query_until($db, "SELECT count(*) > 0 FROM pepnet.models WHERE name = 'm'"), 'the first epoch was stored');
sq("SELECT pg_cancel_backend($pid)");
bg_finish($T);
like($T->{err}, qr/canceling statement/, 'then it was cancelled');
like($T->{err}, qr/NOTICE:  pepnet_train "m" epoch 1: \d+ rows, \d+ rows\/s, loss/, 'the trainer got progress NOTICEs');
ok($node->poll_query_until($db, "SELECT count(*) = 0 FROM pepnet.training_progress"), 'the view is empty after the cancel');

# a short training that finishes: gone from the view after it
$T = bg(sprintf($TRAIN, 1) =~ s/'\{"domains.*?\}'/NULL/r);
ok($node->poll_query_until($db, "SELECT count(*) = 1 FROM pepnet.training_progress WHERE rows_done > 0"),
	'a continued training is shown');
bg_finish($T);
is($T->{rc}, 0, 'it finished');
is(sq("SELECT count(*) FROM pepnet.training_progress"), '0', 'and the view is empty');

$node->stop;
done_testing();
