# test/t/040_shared_cache.pl: the shared model cache (shared_preload_libraries = 'pepnet').
#
# One cluster with pepnet preloaded.  Asserts:
#  - 16 backends that score one version at once build it once (pepnet_shared_cache_stats().builds)
#    and all get the same score; the entry is unpinned once they are gone;
#  - scores through the shared cache equal the per-backend path (pepnet.shared_cache_size = 0)
#    bit for bit, for pepnet_score (batched engine) and pepnet_predict (GEMV);
#  - a version larger than pepnet.shared_cache_size is refused by pepnet_preload (false, NOTICE),
#    counted as a fallback, scored from the backend cache;
#  - least recently used versions are evicted, never one a transaction of another session pins;
#  - 6 pgbench clients scoring random versions through a cache that holds two of three: thousands
#    of evictions and rebuilds, every score equal to its version's own, no pin left;
#  - a build cancelled while another backend waits for it leaves no entry and the waiter builds it
#    (one build); a build whose backend is terminated (FATAL) leaves none either;
#  - kill -9 of a backend in the middle of a build: the postmaster restarts, the shared cache is
#    empty, and the version builds again; statement_timeout in a build leaves no entry;
#  - a role without grants cannot score a version that is in the shared cache, and loses access
#    at the next statement when SELECT is revoked.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('shared_cache');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 64MB
max_connections = 60
shared_buffers = 256MB
fsync = off
jit = off
restart_after_crash = on
CONF
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

# a psql running one command in the background
sub bg
{
	my ($sql, %opt) = @_;
	my $r = { out => '', err => '' };
	my @who = $opt{user} ? ('-U', $opt{user}) : ();
	$r->{h} = IPC::Run::start([ 'psql', '-X', '-At', @who, '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $sql ],
		'>', \$r->{out}, '2>', \$r->{err}, IPC::Run::timeout(180));
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

# an interactive psql session: send SQL, wait for a marker
sub session
{
	my (%opt) = @_;
	my $s = { in => '', out => '', err => '' };
	my @who = $opt{user} ? ('-U', $opt{user}) : ();
	$s->{t} = IPC::Run::timeout(180);
	$s->{h} = IPC::Run::start([ 'psql', '-X', '-At', @who, '-d', $node->connstr($db) ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, $s->{t});
	return $s;
}
my $marker = 0;

sub say
{
	my ($s, $sql) = @_;
	$marker++;
	$s->{out} = '';
	$s->{err} = '';
	$s->{in} .= "$sql\n\\echo MARK$marker\n";
	$s->{h}->pump until $s->{out} =~ /MARK$marker/;
	(my $o = $s->{out}) =~ s/MARK$marker\n?//;
	chomp $o;
	return $o;
}

sub stat_of { return sq("SELECT $_[0] FROM pepnet_shared_cache_stats()"); }

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "emb_dim": 8, "hidden": [32, 16]}';
my $MID = '{"domains": 3, "features": [{"name": "item", "buckets": 6000}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 16, "hidden": [32, 16]}';
# 2,000,000 x 16 floats: a 128 MB version, which takes a few hundred ms to build
my $BIG = '{"domains": 3, "features": [{"name": "item", "buckets": 2000000}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 16, "hidden": [32, 16]}';

my ($rc, $out, $err) = $node->psql($db, <<SQL);
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
SELECT pepnet_create('m', '$CFG', seed => 1);
SELECT pepnet_create('m', '$CFG', seed => 2);
SELECT pepnet_create('mid', '$MID', seed => 1);
SELECT pepnet_create('mid', '$MID', seed => 2);
SELECT pepnet_create('mid', '$MID', seed => 3);
SELECT pepnet_create('big', '$BIG', seed => 1);
CREATE TABLE req AS SELECT array_agg(ARRAY[100 + i, i % 10]::bigint[] ORDER BY i) AS feats FROM generate_series(1, 200) i;
-- the pid of the backend building a version, as soon as the shared cache shows it
CREATE FUNCTION wait_builder(m text) RETURNS int LANGUAGE plpgsql AS \$\$
DECLARE p int; t0 timestamptz := clock_timestamp();
BEGIN
	LOOP
		SELECT builder_pid INTO p FROM pepnet.shared_cache WHERE model = m AND state = 'building';
		IF p IS NOT NULL THEN RETURN p; END IF;
		IF clock_timestamp() - t0 > interval '60 s' THEN RAISE EXCEPTION 'no build of % seen', m; END IF;
		PERFORM pg_sleep(0.002);
	END LOOP;
END \$\$;
SQL
is($rc, 0, 'setup: versions m@1, m@2, mid@1..3, big@1 (128 MB)') or BAIL_OUT("setup failed: $err");
is(stat_of('enabled') . '/' . stat_of('builds') . '/' . stat_of('versions'), 't/0/0', 'shared cache on and empty');

# ---- 1. many backends, one build
my $PRED = q{SELECT pepnet_predict('m@1', 0, '{7,3}'::bigint[], '{11,2}'::bigint[])};
my @clients = map { bg($PRED) } 1 .. 16;
bg_finish($_) for @clients;
is(scalar(grep { $_->{rc} == 0 } @clients), 16, '16 concurrent backends scored m@1');
my %seen = map { $_->{out} => 1 } @clients;
is(scalar(keys %seen), 1, 'all 16 got the same score');
is(stat_of('builds'), '1', 'm@1 was built into the shared cache once');
is(sq("SELECT state || '/' || (hits >= 16) || '/' || pins || '/' || domains FROM pepnet.shared_cache WHERE model = 'm' AND version = 1"),
	'ready/true/0/1', 'm@1: ready, 16 hits, unpinned after the transactions ended, domain 0 fused');

# ---- 2. bit for bit against the per-backend path
my $SCORES = <<'SQL';
INSERT INTO %s
SELECT 'score', d, s.idx, s.score FROM generate_series(0, 2) d,
       LATERAL pepnet_score('m@1', d, '{7,3}'::bigint[], (SELECT feats FROM req)) s
UNION ALL
SELECT 'predict', d, i, pepnet_predict('m@1', d, '{9,1}'::bigint[], ARRAY[200 + i, i %% 10]::bigint[])
FROM generate_series(0, 2) d, generate_series(1, 50) i;
SQL
sq("CREATE TABLE s_shared (fn text, d int, i int, score float8); CREATE TABLE s_private (LIKE s_shared); CREATE TABLE s_shared2 (LIKE s_shared)");
sq(sprintf($SCORES, 's_shared'));
# a second backend: the engine's packed weights the first one published, used in place
my $packed_before = sq("SELECT bytes FROM pepnet.shared_cache WHERE model = 'm' AND version = 1");
sq(sprintf($SCORES, 's_shared2'));
is(sq("SELECT bytes FROM pepnet.shared_cache WHERE model = 'm' AND version = 1"), $packed_before,
	'a second backend adds nothing to the shared entry (it uses the published packed weights)');
is(sq("SELECT count(*) FROM s_shared a JOIN s_shared2 b USING (fn, d, i) WHERE a.score = b.score"), '750',
	'and scores bit-identically to the backend that packed them');
sq("ALTER SYSTEM SET pepnet.shared_cache_size = 0; SELECT pg_reload_conf()");
$node->poll_query_until($db, "SELECT NOT enabled FROM pepnet_shared_cache_stats()");
sq(sprintf($SCORES, 's_private'));
is(sq("SELECT count(*) FROM s_shared"), '750', '750 scores through the shared cache');
is(sq("SELECT count(*) FROM s_shared a JOIN s_private b USING (fn, d, i) WHERE a.score = b.score"), '750',
	'the shared cache and the backend cache give bit-identical scores (pepnet_score and pepnet_predict)');
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '64MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, "SELECT enabled FROM pepnet_shared_cache_stats()");

# ---- 3. a version larger than pepnet.shared_cache_size
my $fb = stat_of('fallbacks');
($rc, $out, $err) = $node->psql($db, "SELECT pepnet_preload('big')");
is($out, 'f', 'pepnet_preload of a 128 MB version with a 64 MB shared cache: false');
like($err, qr/cached by this backend only.*\n.*HINT:.*shared_cache_size/s, 'with a NOTICE naming pepnet.shared_cache_size');
is(stat_of('fallbacks'), $fb + 1, 'counted as a fallback');
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big'"), '0', 'no entry for it');
like(sq("SELECT pepnet_predict('big', 0, '{7}'::bigint[], '{11}'::bigint[])"), qr/^0\.\d+$/,
	'it is scored from the backend cache');
cmp_ok(stat_of('used'), '<=', 64 * 1024 * 1024, 'the shared cache stays within its size');

# ---- 4. LRU eviction never takes a pinned version
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '1MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, "SELECT size_limit = 1048576 FROM pepnet_shared_cache_stats()");
my $MIDP = q{pepnet_predict('mid@%d', 0, '{7}'::bigint[], '{11}'::bigint[]) IS NOT NULL};
sq(sprintf("SELECT $MIDP", 1));
sq(sprintf("SELECT $MIDP", 2));
my $A = session();
is(say($A, sprintf("BEGIN; SELECT $MIDP;", 2)), "BEGIN\nt", 'session A: a transaction scoring mid@2 (pinned)');
my $ev = stat_of('evictions');
sq(sprintf("SELECT $MIDP", 3));
is(sq("SELECT string_agg(version::text, ',' ORDER BY version) FROM pepnet.shared_cache WHERE model = 'mid'"), '2,3',
	'mid@3 evicted the least recently used unpinned version (mid@1)');
cmp_ok(stat_of('evictions'), '>', $ev, 'evictions counted');
sq(sprintf("SELECT $MIDP", 1));
is(sq("SELECT string_agg(version || ':' || pins, ',' ORDER BY version) FROM pepnet.shared_cache WHERE model = 'mid'"), '1:0,2:1',
	'mid@1 again: mid@3 evicted, mid@2 kept (pinned by session A)');
cmp_ok(stat_of('used'), '<=', 1024 * 1024, 'within 1 MB');
say($A, "COMMIT;");
is(sq("SELECT pins FROM pepnet.shared_cache WHERE model = 'mid' AND version = 2"), '0', 'unpinned at COMMIT');
$A->{in} .= "\\q\n";
$A->{h}->finish;

# eviction under load: 6 clients score random versions of mid (each score checked against the
# version's own), while the 1 MB cache holds two of the three: entries are evicted and rebuilt
# all the time, and no backend may ever score from freed or another version's memory
sq(q{CREATE TABLE expect AS SELECT v, pepnet_predict('mid@' || v, 0, '{7}'::bigint[], '{11}'::bigint[]) AS s FROM generate_series(1, 3) v;
CREATE FUNCTION must(ok boolean) RETURNS int LANGUAGE plpgsql AS $$
BEGIN
	IF ok IS NOT TRUE THEN RAISE EXCEPTION 'wrong score under eviction'; END IF;
	RETURN 1;
END $$});
my $script = PostgreSQL::Test::Utils::tempdir . '/evict.sql';
open(my $fh, '>', $script) or die;
print $fh q{\set v random(1, 3)
SELECT must(pepnet_predict('mid@' || :v, 0, '{7}'::bigint[], '{11}'::bigint[]) = (SELECT s FROM expect WHERE v = :v)
            AND (SELECT count(*) FROM pepnet_score('mid@' || :v, 1, '{7}'::bigint[], '{{11},{12}}'::bigint[])) = 2);
};
close $fh;
$ev = stat_of('evictions');
my ($pgb_out, $pgb_err) = ('', '');
my $ok = IPC::Run::run([ 'pgbench', '-n', '-c', '6', '-j', '6', '-T', '5', '-f', $script, '-d', $node->connstr($db) ],
	'>', \$pgb_out, '2>', \$pgb_err);
ok($ok && $pgb_out =~ /number of transactions actually processed: (\d+)/ && $1 > 0, "6 clients scored random versions under a 1 MB shared cache") or diag($pgb_err);
unlike($pgb_out . $pgb_err, qr/wrong score|ERROR|abort/i, 'every score equal to its version\'s own');
cmp_ok(stat_of('evictions'), '>', $ev + 10, 'while versions were evicted and rebuilt (' . (stat_of('evictions') - $ev) . ' evictions)');
cmp_ok(stat_of('used'), '<=', 1024 * 1024, 'still within 1 MB');
is(sq("SELECT sum(pins) FROM pepnet.shared_cache"), '0', 'no pin left behind');

# ---- 5. a cancelled build, with a waiter; a terminated build
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '512MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, "SELECT size_limit = 512 * 1048576 FROM pepnet_shared_cache_stats()");
my $builds = stat_of('builds');
my $B = bg("SELECT pepnet_preload('big')");
my $bpid = sq("SELECT wait_builder('big')");
my $W = bg("SELECT pepnet_predict('big', 0, '{7}'::bigint[], '{11}'::bigint[])");
ok($node->poll_query_until($db, "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%pepnet_predict(''big''%'"),
	'a second backend waits for the build (wait event Extension)');
sq("SELECT pg_cancel_backend($bpid)");
bg_finish($B);
bg_finish($W);
like($B->{err}, qr/canceling statement due to user request/, 'the builder was cancelled');
like($W->{out}, qr/^0\.\d+$/, 'the waiter then built the version itself and scored');
is(stat_of('builds'), $builds + 1, 'one build in all');
is(sq("SELECT state FROM pepnet.shared_cache WHERE model = 'big'"), 'ready', 'big: ready');
is(sq("SELECT (SELECT sum(bytes) FROM pepnet.shared_cache) = used FROM pepnet_shared_cache_stats()"), 't',
	'the bytes of the entries add up to the bytes in use (nothing of the cancelled build left)');

# the same version, now shared, is the same for every backend
is(bg_finish(bg("SELECT pepnet_predict('big', 0, '{7}'::bigint[], '{11}'::bigint[])"))->{out}, $W->{out},
	'another backend gets the same score from the shared copy');

# a build whose backend is terminated (FATAL): the exit frees the claim
sq("SELECT pepnet_create('big', '$BIG', seed => 2)");
$B = bg(q{SELECT pepnet_preload('big@2')});
$bpid = sq("SELECT wait_builder('big')");
sq("SELECT pg_terminate_backend($bpid)");
bg_finish($B);
like($B->{err}, qr/terminating connection due to administrator command/, 'the builder of big@2 was terminated');
# the client sees the FATAL before the backend has run its exit callbacks: wait for its exit
ok($node->poll_query_until($db, "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $bpid"), 'the builder has exited');
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big' AND version = 2"), '0', 'no entry of big@2 left');
is(sq(q{SELECT pepnet_preload('big@2')}), 't', 'big@2 builds afterwards');

# ---- 6. kill -9 in the middle of a build
$node->restart;
is(stat_of('builds') . '/' . stat_of('versions'), '0/0', 'after a restart the shared cache is empty');
$B = bg("SELECT pepnet_preload('big')");
$bpid = sq("SELECT wait_builder('big')");
kill 'KILL', $bpid;
bg_finish($B);
isnt($B->{rc}, 0, 'the builder died');
ok($node->poll_query_until($db, "SELECT 1", '1'), 'the server is back after its crash restart');
like(slurp_file($node->logfile), qr/terminated by signal 9/, 'the postmaster saw the kill');
is(stat_of('versions') . '/' . stat_of('used'), '0/0', 'no half entry survived: the shared cache was reset');
is(sq("SELECT pepnet_preload('big')"), 't', 'big builds again');
is(sq("SELECT state || '/' || domains FROM pepnet.shared_cache WHERE model = 'big'"), 'ready/3',
	'preloaded with every domain');

# statement_timeout in the middle of a build (a 128 MB version takes 30 ms or more; resolving it well under 10 ms)
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big' AND version = 1"), '0', 'big@1 is not in the shared cache');
($rc, $out, $err) = $node->psql($db, "SET statement_timeout = '10ms'; SELECT pepnet_preload('big\@1')");
like($err, qr/canceling statement due to statement timeout/, 'statement_timeout stops the build of big@1');
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big' AND version = 1"), '0', 'no entry of big@1 left');
is(sq("SELECT (SELECT sum(bytes) FROM pepnet.shared_cache) = used FROM pepnet_shared_cache_stats()"), 't',
	'the bytes in use are those of the entries');

# ---- 7. grants are checked per statement, shared copy or not
sq("CREATE ROLE r LOGIN");
sq(q{SELECT pepnet_preload('m@1')});
($rc, $out, $err) = $node->psql($db, $PRED, extra_params => [ '-U', 'r' ]);
like($err, qr/permission denied/, 'a role without grants cannot score m@1, although it is in the shared cache');
sq("GRANT USAGE ON SCHEMA pepnet TO r; GRANT SELECT ON pepnet.models TO r");
my $R = session(user => 'r');
is(say($R, "$PRED;"), sq($PRED), 'with SELECT on pepnet.models it can, with the same score');
sq("REVOKE SELECT ON pepnet.models FROM r");
say($R, "$PRED;");
like($R->{err}, qr/permission denied/, 'after REVOKE, its next statement is refused (its backend holds the version)');
($rc, $out, $err) = $node->psql($db, "SELECT * FROM pepnet.shared_cache", extra_params => [ '-U', 'r' ]);
like($err, qr/permission denied for table pepnet.models/, 'nor may it list the shared cache');
$R->{in} .= "\\q\n";
$R->{h}->finish;

$node->stop;
done_testing();
