# test/t/041_training_progress.pl: pepnet.training_progress from another session.
#
# A training runs in the background (data query slowed down by pg_sleep every 200 rows, so that
# an epoch takes about two seconds); a second session reads pepnet.training_progress.  Asserts:
# the running training is shown (its backend pid, model, epoch of epochs) with rows advancing
# between two reads; after the first epoch the size of an epoch, validation figures and an ETA
# appear; the slot is gone after the training ends, after it is cancelled, after its backend is
# terminated, and after its backend is killed with SIGKILL (crash restart); a role without the
# trainer's privileges sees the pid only.  On a second cluster without shared_preload_libraries
# the view shows the training from pg_stat_activity (043 tests that) and training works as before.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('progress');
$node->init;
$node->append_conf('postgresql.conf',
	"shared_preload_libraries = 'pepnet'\nfsync = off\njit = off\nrestart_after_crash = on\n");
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

sub bg
{
	my ($n, $sql) = @_;
	my $r = { out => '', err => '' };
	$r->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $n->connstr($db), '-c', $sql ],
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

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 1000}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 8, "hidden": [16]}';
my $SETUP = <<'SQL';
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
CREATE TABLE clicks AS
SELECT i, i % 2 AS domain, ARRAY[i % 100]::bigint[] AS persona, ARRAY[abs(hashint4(i)) % 1000]::bigint[] AS features,
       (abs(hashint4(i)) % 7 = 0) AS label
FROM generate_series(1, 20000) i;
-- 20 ms of sleep every 200 rows: an epoch of 20000 rows takes about 2 s
CREATE FUNCTION slow(i int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	IF i % 200 = 0 THEN PERFORM pg_sleep(0.02); END IF;
	RETURN i;
END $$;
SQL
my ($rc, $out, $err) = $node->psql($db, $SETUP);
is($rc, 0, 'setup') or BAIL_OUT($err);

my $TRAIN = "CALL pepnet_train('m', 'SELECT domain, persona, features, label FROM clicks WHERE slow(i) > 0', "
  . "%s, validation => 'SELECT domain, persona, features, label FROM clicks WHERE i %% 10 = 0', "
  . "epochs => %d, batch_size => 100, shuffle_buffer => 1, progress_interval => 0)";

sub wait_visible
{
	return $node->poll_query_until($db, "SELECT count(*) = 1 AND min(rows_done) > 0 FROM pepnet.training_progress WHERE model = 'm'");
}

sub wait_gone
{
	return $node->poll_query_until($db, "SELECT count(*) = 0 FROM pepnet.training_progress");
}

# ---- a training seen from another session
my $T = bg($node, sprintf($TRAIN, "'$CFG'", 3));
ok(wait_visible(), 'the running training appears in pepnet.training_progress');
my $pid = sq("SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL pepnet_train%'");
is(sq("SELECT pid = $pid AND epoch = 1 AND epochs = 3 AND parent IS NULL AND datid = (SELECT oid FROM pg_database WHERE datname = current_database()) FROM pepnet.training_progress"),
	't', 'with the trainer\'s pid, database, epoch 1 of 3');
my $r1 = sq("SELECT rows_total FROM pepnet.training_progress");
$node->poll_query_until($db, "SELECT rows_total > $r1 FROM pepnet.training_progress");
my $r2 = sq("SELECT rows_total FROM pepnet.training_progress");
cmp_ok($r2, '>', $r1, "rows advance between two reads ($r1, then $r2)");
is(sq("SELECT rows_per_s > 0 AND loss > 0 AND started_at <= updated_at AND updated_at <= now() FROM pepnet.training_progress"),
	't', 'rows/s, a loss, started_at and updated_at');
is(sq("SELECT epoch_rows IS NULL AND eta IS NULL AND val_logloss IS NULL FROM pepnet.training_progress"), 't',
	'during the first epoch: epoch size, ETA and validation unknown');
ok($node->poll_query_until($db, "SELECT epoch >= 2 AND rows_done > 0 FROM pepnet.training_progress"), 'epoch 2 starts');
is(sq("SELECT epoch_rows = 20000 AND val_logloss > 0 AND val_auc BETWEEN 0 AND 1 AND eta > now() AND rows_total > 20000 FROM pepnet.training_progress"),
	't', 'then: rows per epoch (20000), validation logloss and AUC of epoch 1, an ETA in the future');

# another role sees the pid only
sq("CREATE ROLE watcher LOGIN; GRANT USAGE ON SCHEMA pepnet TO watcher");
($rc, $out, $err) = $node->psql($db, "SELECT pid::text || '/' || coalesce(model, 'hidden') || '/' || coalesce(rows_done::text, 'hidden') FROM pepnet.training_progress",
	extra_params => [ '-U', 'watcher' ]);
is($out, "$pid/hidden/hidden", 'a role without the trainer\'s privileges sees the pid, not model or figures');

bg_finish($T);
is($T->{rc}, 0, 'the training finished');
ok(wait_gone(), 'its slot is gone after the training ended');
is(sq("SELECT count(*) FROM pepnet.models WHERE name = 'm'"), '3', 'three versions stored');

# ---- cancel
$T = bg($node, sprintf($TRAIN, 'NULL', 2));
ok(wait_visible(), 'a second training appears');
$pid = sq("SELECT pid FROM pepnet.training_progress");
is(sq("SELECT parent FROM pepnet.training_progress"), '3', 'it continues from version 3 (parent)');
sq("SELECT pg_cancel_backend($pid)");
bg_finish($T);
like($T->{err}, qr/canceling statement due to user request/, 'cancelled');
ok(wait_gone(), 'its slot is gone after the cancel');

# ---- terminate (FATAL: the exit frees the slot)
$T = bg($node, sprintf($TRAIN, "'$CFG'", 2));
ok(wait_visible(), 'a third training appears');
$pid = sq("SELECT pid FROM pepnet.training_progress");
sq("SELECT pg_terminate_backend($pid)");
bg_finish($T);
like($T->{err}, qr/terminating connection due to administrator command/, 'terminated');
ok(wait_gone(), 'its slot is gone after pg_terminate_backend');

# ---- SIGKILL: the postmaster restarts and re-creates shared memory
$T = bg($node, sprintf($TRAIN, "'$CFG'", 2));
ok(wait_visible(), 'a fourth training appears');
$pid = sq("SELECT pid FROM pepnet.training_progress");
kill 'KILL', $pid;
bg_finish($T);
isnt($T->{rc}, 0, 'the trainer was killed');
ok($node->poll_query_until($db, "SELECT 1", '1'), 'the server is back after its crash restart');
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'the postmaster saw the kill');
is(sq("SELECT count(*) FROM pepnet.training_progress"), '0', 'no slot survived the crash restart');
$T = bg($node, sprintf($TRAIN, "'$CFG'", 1));
ok(wait_visible(), 'a training after the restart is shown again');
bg_finish($T);
is($T->{rc}, 0, 'and finishes');
ok(wait_gone(), 'and its slot is released');
$node->stop;

# ---- without shared_preload_libraries
my $plain = PostgreSQL::Test::Cluster->new('plain');
$plain->init;
$plain->append_conf('postgresql.conf', "fsync = off\njit = off\n");
$plain->start;
($rc, $out, $err) = $plain->psql($db, $SETUP);
is($rc, 0, 'plain cluster: setup') or BAIL_OUT($err);
$T = bg($plain, sprintf($TRAIN, "'$CFG'", 1));
$plain->poll_query_until($db, "SELECT count(*) > 0 FROM pg_stat_activity WHERE query LIKE 'CALL pepnet_train%'");
ok($plain->poll_query_until($db, "SELECT count(*) = 1 FROM pepnet.training_progress WHERE model = 'm' AND epoch_rows IS NULL AND eta IS NULL"),
	'without preload the view shows the training from pg_stat_activity (test/t/043_progress_no_preload.pl)');
is($plain->safe_psql($db, "SELECT enabled::text || '/' || coalesce(builds::text, 'null') FROM pepnet_shared_cache_stats()"), 'false/null',
	'and the shared cache is off');
bg_finish($T);
is($T->{rc}, 0, 'training works without preload');
$plain->stop;
done_testing();
