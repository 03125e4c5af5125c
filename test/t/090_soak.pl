# test/t/090_soak.pl: a mixed soak with fault injection; nothing lost, nothing left behind.
#
# One cluster with pepnet preloaded and a shared cache smaller than the versions in use (loads,
# evictions and rebuilds all the time).  For PEPNET_SOAK_SECONDS (default 120: about 2.5 minutes in all) these run at once,
# each a loop of psql sessions that reconnects after any failure:
#  - 2 scorers: pepnet_predict and batched pepnet_score of random versions of m (the deployed one
#    too), and of the trained model t;
#  - a loader: pepnet_preload of two 24 MB versions in turn, half of them under a statement_timeout
#    short enough to cut the load;
#  - a trainer: CALL pepnet_train of t (continuing the latest version), sometimes under a
#    statement_timeout;
#  - a deployer: new versions of m, pepnet_deploy of m by number, of t by 'latest', 'best',
#    'previous';
#  - the fault injector (this script): every 0.3 to 1.2 s pg_cancel_backend or
#    pg_terminate_backend of a random busy backend, and one kill -9 of a backend at a third of
#    the time (the postmaster resets and everyone reconnects).
# An observer notes every committed version (name, number, fingerprint) as it appears.  At the
# end, asserts:
#  - no version lost: every version the observer saw exists, with the same fingerprint;
#  - pepnet_verify is true for every version;
#  - probe scores are bit-identical: the versions made before the soak score what they scored
#    before it, and every version scores the same through the shared cache as per backend;
#  - every kind of fault happened (cancels, statement timeouts, terminations, the crash);
#  - 0 bytes of shared memory left behind: after evicting every version but one small one, the
#    shared cache's DSA area (its own account, dsa_dump) holds no large block but that version's,
#    and nothing is left 'building' or pinned.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(time sleep);

my $SECONDS = $ENV{PEPNET_SOAK_SECONDS} || 120;

my $node = PostgreSQL::Test::Cluster->new('soak');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 40MB
dynamic_shared_memory_type = posix
max_connections = 40
shared_buffers = 128MB
fsync = off
jit = off
restart_after_crash = on
log_statement = none
CONF
$node->start;
my $db = 'postgres';
my $connstr = $node->connstr($db);

sub sq { return $node->safe_psql($db, @_); }

# a query that may fail (the server restarting): undef then
sub try_sq
{
	my ($sql) = @_;
	my ($rc, $out, $err);
	# (psql may exit before reading its input while the server restarts: a broken pipe)
	eval { ($rc, $out, $err) = $node->psql($db, $sql); };
	return !$@ && defined $rc && $rc == 0 ? $out : undef;
}

# wait until the server accepts queries again (after the crash restart)
sub wait_up
{
	my $t0 = time();
	sleep(0.2) until defined(try_sq('SELECT 1')) || time() > $t0 + 180;
	return defined(try_sq('SELECT 1'));
}

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 8, "hidden": [16]}';
# 375,000 x 16 floats: 24 MB; two of them do not fit in the 40 MB shared cache together
my $BIG = '{"domains": 2, "features": [{"name": "item", "buckets": 375000}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 16, "hidden": [16]}';
# about 0.9 MB: fills a 1 MB shared cache alone (the final eviction)
my $FILL = '{"domains": 1, "features": [{"name": "item", "buckets": 14000}], "persona": [{"name": "user", "buckets": 10}], "emb_dim": 16, "hidden": [4]}';
my $TRAIN = 'SELECT domain, persona, features, clicked AS label FROM imp WHERE i % 5 <> 0';
my $VALID = 'SELECT domain, persona, features, clicked AS label FROM imp WHERE i % 5 = 0';

my ($rc, $out, $err) = $node->psql($db, <<SQL);
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
SELECT pepnet_create('m', '$CFG', seed => s) FROM generate_series(1, 4) s;
SELECT pepnet_create('big', '$BIG', seed => s) FROM generate_series(1, 2) s;
SELECT pepnet_deploy('m', 1);
CREATE TABLE imp AS
SELECT i, i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 100]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 1000, i % 10]::bigint[] AS features,
       (abs(hashint4(i * 7 + 1)) % 100) < 5 + 10 * (i % 3) AS clicked
FROM generate_series(1, 6000) i;
CREATE TABLE req AS SELECT array_agg(ARRAY[100 + i, i % 10]::bigint[] ORDER BY i) AS feats FROM generate_series(1, 64) i;
-- the probe: fixed requests, scored per version
CREATE TABLE probe_req AS SELECT d AS domain, ARRAY[u]::bigint[] AS persona, ARRAY[u * 7, u % 10]::bigint[] AS features
FROM generate_series(0, 2) d, generate_series(1, 5) u;
CREATE FUNCTION probe(ref text) RETURNS text LANGUAGE sql AS \$\$
	SELECT string_agg(pepnet_predict(ref, LEAST(r.domain, (SELECT (config->>'domains')::int - 1 FROM pepnet.models
	                                                        WHERE name = split_part(ref, '\@', 1) AND version = split_part(ref, '\@', 2)::int)),
	                                 r.persona,
	                                 CASE WHEN ref LIKE 'm\@%' OR ref LIKE 't\@%' THEN r.features ELSE r.features[1:1] END)::text,
	                  ',' ORDER BY r.domain, r.persona[1])
	FROM probe_req r
\$\$;
SQL
is($rc, 0, 'setup: m@1..4, big@1..2 (24 MB each), training data') or BAIL_OUT("setup failed: $err");
($rc, $out, $err) = $node->psql($db,
	"SET client_min_messages = warning; CALL pepnet_train('t', '$TRAIN', '$CFG', validation => '$VALID', epochs => 1, batch_size => 256, progress_interval => 0)");
is($rc, 0, 'setup: t@1 trained') or BAIL_OUT("training failed: $err");

my @before = split /\n/, sq("SELECT name || '\@' || version FROM pepnet.models ORDER BY 1");
my %probe_before = map { $_ => sq("SELECT probe('$_')") } @before;

# ---- the workers: bash loops of psql sessions until the deadline
my $dir = PostgreSQL::Test::Utils::tempdir();
my $end = int(time()) + $SECONDS;

sub script
{
	my ($name, $gen) = @_;
	my $f = "$dir/$name.sh";
	open(my $fh, '>', $f) or die "cannot write $f: $!";
	print $fh "#!/bin/bash\n";
	print $fh "while [ \$(date +%s) -lt $end ]; do\n";
	print $fh "  { $gen\n  } > $dir/$name.sql\n";
	print $fh "  psql -X -q -At -d '$connstr' -v VERBOSITY=terse -f $dir/$name.sql >> $dir/$name.out 2>> $dir/$name.err || sleep 0.2\n";
	print $fh "done\n";
	close $fh;
	chmod 0755, $f;
	return $f;
}

# generators of each loop's SQL (bash: $RANDOM)
my %gen = (
	scorer => q{for k in $(seq 1 40); do v=$((RANDOM % 5)); d=$((RANDOM % 3)); if [ $v = 0 ]; then r=m; else r=m@$v; fi;
		echo "SELECT pepnet_predict('$r', $d, '{$RANDOM}'::bigint[], ARRAY[$RANDOM, $((RANDOM % 10))]::bigint[]);";
		echo "SELECT count(*) FROM pepnet_score('$r', $d, '{7}'::bigint[], (SELECT feats FROM req));";
		echo "SELECT pepnet_predict('t', $d, '{3}'::bigint[], ARRAY[$RANDOM, 1]::bigint[]);"; done},
	loader => q{for k in 1 2 3 4; do if [ $((RANDOM % 2)) = 0 ]; then echo "SET statement_timeout = '$((20 + RANDOM % 200))ms';"; else echo "RESET statement_timeout;"; fi;
		echo "SELECT pepnet_preload('big@$((k % 2 + 1))');"; echo "SELECT pepnet_predict('big@$((RANDOM % 2 + 1))', 1, '{5}'::bigint[], '{$RANDOM}'::bigint[]);"; done},
	trainer => q{if [ $((RANDOM % 3)) = 0 ]; then echo "SET statement_timeout = '$((100 + RANDOM % 900))ms';"; fi;
		echo "SET client_min_messages = warning;";
		echo "CALL pepnet_train('t', 'SELECT domain, persona, features, clicked AS label FROM imp WHERE i % 5 <> 0', NULL, validation => 'SELECT domain, persona, features, clicked AS label FROM imp WHERE i % 5 = 0', epochs => 1, batch_size => 256, progress_interval => 0);"},
	deployer => q{echo "SET client_min_messages = warning;";
		for k in 1 2 3 4 5; do echo "SELECT pepnet_deploy('m', (SELECT version FROM pepnet.models WHERE name = 'm' ORDER BY random() LIMIT 1));";
		echo "SELECT pepnet_deploy('t', (ARRAY['latest', 'best', 'previous'])[1 + $RANDOM % 3]);"; echo "SELECT pg_sleep(0.1);"; done;
		if [ $((RANDOM % 4)) = 0 ]; then echo "SELECT pepnet_create('m', (SELECT config FROM pepnet.models WHERE name = 'm' AND version = 1), $((RANDOM + 100)));"; fi},
);
my @workers;
for my $w (qw(scorer scorer2 loader trainer deployer))
{
	(my $kind = $w) =~ s/\d+$//;
	my $f = script($w, $gen{$kind});
	push @workers, IPC::Run::start([ 'bash', $f ], '>', '/dev/null', '2>', "$dir/$w.sh.err");
}

# ---- the fault injector and the observer
my %seen;		# name@version => fingerprint, as committed
my %faults = (cancel => 0, terminate => 0, kill9 => 0);
my $killed = 0;
my $start = time();

sub observe
{
	my $o = try_sq("SELECT name || '\@' || version || ' ' || encode(fingerprint, 'hex') FROM pepnet.models");
	return unless defined $o;
	for (split /\n/, $o)
	{
		my ($k, $fp) = split / /;
		$seen{$k} //= $fp;
	}
}

while (time() < $end)
{
	sleep(0.3 + rand(0.9));
	observe();
	my $pids = try_sq("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
		  . "AND backend_type = 'client backend' AND (query LIKE '%pepnet%' OR query LIKE 'CALL%')");
	next unless defined $pids && $pids ne '';
	my @p = split /\n/, $pids;
	my $pid = $p[ int(rand(@p)) ];
	if (!$killed && time() > $start + $SECONDS / 3)
	{
		# the backend may have ended since the query above (a loader reconnecting): count the
		# kill only when a process got the signal, else try another one on the next round
		next unless kill('KILL', $pid);
		$killed = 1;
		$faults{kill9}++;
		wait_up() or BAIL_OUT('the server did not come back after kill -9');
	}
	elsif (rand() < 0.6)
	{
		$faults{cancel}++ if defined try_sq("SELECT pg_cancel_backend($pid)");
	}
	else
	{
		$faults{terminate}++ if defined try_sq("SELECT pg_terminate_backend($pid)");
	}
}
$_->finish for @workers;
observe();

# what the workers did and met
my %met;
my $ok_lines = 0;
for my $w (qw(scorer scorer2 loader trainer deployer))
{
	my $e = -f "$dir/$w.err" ? slurp_file("$dir/$w.err") : '';
	$met{cancel} += () = $e =~ /canceling statement due to user request/g;
	$met{timeout} += () = $e =~ /canceling statement due to statement timeout/g;
	$met{terminate} += () = $e =~ /terminating connection due to administrator command/g;
	$met{crash} += () = $e =~ /terminating connection because of crash of another server process|server closed the connection unexpectedly/g;
	my @other = grep { !/canceling statement|terminating connection|server closed the connection|connection to server was lost|no connection to the server|the database system is (in recovery mode|not yet accepting|starting up)|Consistent recovery state|^\s*$|This probably means|before or while processing|connection to server .* failed|no previous deployment|nothing to roll back|has no previous|is being built|could not send data|deadlock detected|PL\/pgSQL function|SQL statement|pepnet_train cannot run|had been deployed|there is nothing|must be|has been deleted/ } split /\n/, $e;
	note("$w: unexpected messages:\n" . join("\n", @other[0 .. ($#other < 9 ? $#other : 9)])) if @other;
	$ok_lines += () = (-f "$dir/$w.out" ? slurp_file("$dir/$w.out") : '') =~ /\n/g;
}
note(sprintf("soak of %d s: %d results; injected %d cancels, %d terminations, %d kill -9; workers met %d cancels, %d statement timeouts, %d terminations, %d crash disconnects",
	$SECONDS, $ok_lines, $faults{cancel}, $faults{terminate}, $faults{kill9}, $met{cancel} // 0, $met{timeout} // 0, $met{terminate} // 0, $met{crash} // 0));
ok($ok_lines > 1000, "the workers got results ($ok_lines)");
ok(($met{cancel} // 0) > 0 && ($met{timeout} // 0) > 0 && ($met{terminate} // 0) > 0 && $faults{kill9} == 1,
	'every kind of fault happened: cancels, statement timeouts, terminations, a kill -9');
my $log = slurp_file($node->logfile);
like($log, qr/terminated by signal 9/, 'the postmaster saw the kill -9 and reset');
my $crashes = () = $log =~ /was terminated by signal|PANIC:/g;
is($crashes, 1, 'no crash but the kill -9 (server log)');

# ---- nothing lost
my %now = map { my ($k, $fp) = split / /; ($k => $fp) }
  split /\n/, sq("SELECT name || '\@' || version || ' ' || encode(fingerprint, 'hex') FROM pepnet.models");
my @lost = grep { !exists $now{$_} || $now{$_} ne $seen{$_} } sort keys %seen;
is(scalar(@lost), 0, sprintf('no version lost: all %d versions seen committed exist with their fingerprints', scalar(keys %seen)))
  or diag("lost: @lost");
ok(scalar(grep { /^t@/ } keys %now) > 1 && scalar(grep { /^m@/ } keys %now) >= 4, 'the soak trained versions of t and made versions of m');
is(sq("SELECT count(*) FILTER (WHERE NOT pepnet_verify(name || '\@' || version)) FROM pepnet.models"), '0',
	'pepnet_verify is true for every version');

# ---- probe scores bit-identical
my @changed = grep { sq("SELECT probe('$_')") ne $probe_before{$_} } @before;
is(scalar(@changed), 0, sprintf('the %d versions made before the soak score what they scored before it, bit for bit', scalar(@before)))
  or diag("changed: @changed");
my $PROBE_ALL = "SELECT name || '\@' || version || ' ' || probe(name || '\@' || version) FROM pepnet.models ORDER BY 1";
my %shared = map { split / /, $_, 2 } split /\n/, sq($PROBE_ALL);
sq("ALTER SYSTEM SET pepnet.shared_cache_size = 0; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT NOT enabled FROM pepnet_shared_cache_stats()');
my %private = map { split / /, $_, 2 } split /\n/, sq($PROBE_ALL);
my @differ = grep { !defined $private{$_} || $private{$_} ne $shared{$_} } sort keys %shared;
is(scalar(@differ), 0, sprintf('all %d versions score the same through the shared cache as per backend', scalar(keys %shared)))
  or diag("differ: @differ");

# ---- 0 bytes of shared memory left behind
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '1MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT enabled AND size_limit = 1048576 FROM pepnet_shared_cache_stats()');
# fill@1, then fill@2 (new versions, in no cache): each fills the cache alone, so the second
# evicts everything else
sq("SELECT pepnet_create('fill', '$FILL', seed => s) FROM generate_series(1, 2) s");
sq(q{SELECT pepnet_predict('fill@1', 0, '{1}'::bigint[], '{2}'::bigint[])});
sq(q{SELECT pepnet_predict('fill@2', 0, '{1}'::bigint[], '{2}'::bigint[])});
is(sq("SELECT string_agg(model || '\@' || version || ':' || state || ':' || pins, ',') FROM pepnet.shared_cache"), 'fill@2:ready:0',
	'after the soak and an eviction the shared cache holds fill@2 only, ready and unpinned');
my $residue = sq("SELECT bytes FROM pepnet.shared_cache");
is(sq('SELECT used FROM pepnet_shared_cache_stats()'), $residue, "pepnet_shared_cache_stats().used is fill\@2's bytes ($residue)");
my $logpos = -s $node->logfile;
sq('SELECT pepnet._shared_cache_dump()');
my $dump = substr(slurp_file($node->logfile), $logpos);
my ($large) = $dump =~ /pool for large object spans:\n((?:\s+(?:fullness class|span descriptor).*\n)*)/;
my $pages = 0;
my $spans = 0;
$pages += $1, $spans++ while defined $large && $large =~ /pages = (\d+)/g;
my $large_bytes = $pages * 4096;
note("DSA area after the soak: $spans large span(s) of $large_bytes bytes; fill\@2 holds $residue bytes");
ok($large_bytes <= $residue + 3 * 4096 && $large_bytes >= $residue - 3 * 8192,
	"0 bytes left behind: the DSA area's large blocks ($large_bytes bytes in $spans spans) are fill\@2's ($residue bytes)");
my ($total) = $dump =~ /\n\s+total_segment_size: (\d+)/;
note("DSA area segments: $total bytes (free pages stay mapped for the next load)");

$node->stop;
done_testing();
