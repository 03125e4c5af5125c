# test/t/045_shared_cache_interrupts.pl: interrupted shared-cache loads leave no shared memory behind.
#
# One cluster with pepnet preloaded (dynamic_shared_memory_type = posix: each DSM segment is a
# file /dev/shm/PostgreSQL.<handle>).  A 64 MB version is loaded into the shared cache while
# another session holds an ACCESS EXCLUSIVE lock on pepnet.model_chunks: the loader has claimed
# its entry and allocated the version's shared memory (a DSA segment of its own), then waits for
# the lock.  It is interrupted there, PEPNET_INTERRUPTS times (default 20) for each kind:
# pg_cancel_backend, statement_timeout, pg_terminate_backend (FATAL: the proc-exit path) and
# kill -9 of the loader (the postmaster resets shared memory).  Asserts after each kind:
#  - pepnet.shared_cache has no entry of the version, pepnet_shared_cache_stats().used is what
#    it was before (only the small version stays);
#  - the segments of the cluster's DSA area (files in /dev/shm whose DSA segment header names
#    the area's handle) are the ones there were before: 0 bytes left behind; after the kill -9
#    rounds no segment of an area from before a crash restart is left;
#  - and at the end the version loads, scores as the per-backend path does, bit for bit.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $N = $ENV{PEPNET_INTERRUPTS} || 20;

plan skip_all => 'needs POSIX shared memory files in /dev/shm' unless -d '/dev/shm';

my $node = PostgreSQL::Test::Cluster->new('shcache_interrupts');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 256MB
dynamic_shared_memory_type = posix
max_connections = 30
fsync = off
jit = off
restart_after_crash = on
max_parallel_workers_per_gather = 0
CONF
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

sub bg
{
	my ($sql) = @_;
	my $r = { out => '', err => '' };
	$r->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $sql ],
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
	my $s = { in => '', out => '', err => '' };
	$s->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr($db) ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, IPC::Run::timeout(180));
	return $s;
}
my $marker = 0;

sub say
{
	my ($s, $sql) = @_;
	$marker++;
	$s->{out} = '';
	$s->{in} .= "$sql\n\\echo MARK$marker\n";
	$s->{h}->pump until $s->{out} =~ /MARK$marker/;
	(my $o = $s->{out}) =~ s/MARK$marker\n?//;
	chomp $o;
	return $o;
}

sub close_session
{
	my ($s) = @_;
	$s->{in} .= "\\q\n";
	eval { $s->{h}->finish; };
	return;
}

# ---- the DSA area's segments, as files in /dev/shm
# A DSA segment starts with its header, whose first 4 bytes are
# DSA_SEGMENT_HEADER_MAGIC ^ area handle ^ segment index (dsa.c); segment 0's file is named
# after the area's handle.
use constant DSA_MAGIC => 0x0ce26608;

sub magic_of
{
	my ($handle) = @_;
	open(my $fh, '<:raw', "/dev/shm/PostgreSQL.$handle") or return undef;
	my $n = read($fh, my $b, 4);
	close $fh;
	return defined $n && $n == 4 ? unpack('V', $b) : undef;
}

# the handle of the DSA area a backend has attached: the segment it maps that is segment 0 of an area
sub area_handle
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/maps") or die "cannot read /proc/$pid/maps: $!";
	my %seen;
	while (<$fh>)
	{
		next unless m{/dev/shm/PostgreSQL\.(\d+)};
		next if $seen{$1}++;
		my $m = magic_of($1);
		return $1 + 0 if defined $m && ($m ^ DSA_MAGIC) == $1;
	}
	return undef;
}

# (segments, bytes) of the DSA area with this handle
sub area_segments
{
	my ($handle) = @_;
	my ($n, $bytes) = (0, 0);
	opendir(my $d, '/dev/shm') or die "cannot list /dev/shm: $!";
	for my $f (readdir $d)
	{
		next unless $f =~ /^PostgreSQL\.(\d+)$/;
		my $m = magic_of($1);
		next unless defined $m && (($m ^ DSA_MAGIC ^ $handle) & 0xffffffff) < 1024;
		$n++;
		$bytes += (-s "/dev/shm/$f") // 0;
	}
	closedir $d;
	return ($n, $bytes);
}

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 100}], "persona": [{"name": "user", "buckets": 10}], "emb_dim": 4, "hidden": [8]}';
# 1,000,000 x 16 floats: a 64 MB version, a DSA segment of its own in the shared cache
my $BIG = '{"domains": 2, "features": [{"name": "item", "buckets": 1000000}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 16, "hidden": [16]}';
my $PRED = q{SELECT pepnet_predict('big@1', 1, '{5}'::bigint[], '{123456}'::bigint[])};

my ($rc, $out, $err) = $node->psql($db, <<SQL);
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
SELECT pepnet_create('small', '$CFG', seed => 1);
SELECT pepnet_create('small', '$CFG', seed => 2);
SELECT pepnet_create('big', '$BIG', seed => 1);
SQL
is($rc, 0, 'setup: small@1 and big@1 (64 MB)') or BAIL_OUT("setup failed: $err");
sq("ALTER SYSTEM SET pepnet.shared_cache_size = 0; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT NOT enabled FROM pepnet_shared_cache_stats()');
my $private = sq($PRED);
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '256MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT enabled FROM pepnet_shared_cache_stats()');

# an observer that has attached the DSA area (the small version in the shared cache)
my $obs;
my ($handle, $base_n, $base_bytes, $base_used);

sub observe
{
	$obs = session();
	say($obs, q{SELECT pepnet_predict('small@1', 0, '{1}'::bigint[], '{2}'::bigint[]);});
	my $pid = say($obs, "SELECT pg_backend_pid();");
	return area_handle($pid);
}
$handle = observe();
ok(defined $handle, "the DSA area of the shared cache found in /dev/shm (handle $handle)")
  or BAIL_OUT('no DSA area found');
my ($fresh_n, $fresh_bytes) = area_segments($handle);
my $used_small1 = sq('SELECT used FROM pepnet_shared_cache_stats()');
note("a fresh area: $fresh_n segment(s), $fresh_bytes bytes; shared cache used $used_small1 bytes");

# a completed load maps a segment of its own; once evicted its pages are free in the area (PostgreSQL
# 15's dsa_free keeps the segment of a large allocation for the next one): the baseline
sq(q{SELECT pepnet_preload('big@1')});
my ($n1, $b1) = area_segments($handle);
ok($b1 >= $fresh_bytes + 60_000_000, "a load of big\@1 maps a segment of its own ($n1 segments, $b1 bytes)");
# a load of another version through a shared cache too small for both evicts big@1 (unpinned)
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '1MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT size_limit = 1048576 FROM pepnet_shared_cache_stats()');
sq(q{SELECT pepnet_predict('small@2', 0, '{1}'::bigint[], '{2}'::bigint[]);});
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '256MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT size_limit = 256 * 1048576 FROM pepnet_shared_cache_stats()');
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big'"), '0', 'big@1 evicted');
($base_n, $base_bytes) = area_segments($handle);
$base_used = sq('SELECT used FROM pepnet_shared_cache_stats()');
note("baseline: $base_n segment(s), $base_bytes bytes; shared cache used $base_used bytes");
# a second completed load reuses the free pages: the area does not grow
sq(q{SELECT pepnet_preload('big@1')});
my ($n3, $b3) = area_segments($handle);
is("$n3/$b3", "$base_n/$base_bytes", 'a second load of big@1 reuses the pages the first one freed');
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '1MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT size_limit = 1048576 FROM pepnet_shared_cache_stats()');
sq(q{SELECT pepnet_predict('small@2', 1, '{1}'::bigint[], '{2}'::bigint[]);});
sq("ALTER SYSTEM SET pepnet.shared_cache_size = '256MB'; SELECT pg_reload_conf()");
$node->poll_query_until($db, 'SELECT size_limit = 256 * 1048576 FROM pepnet_shared_cache_stats()');
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big'"), '0', 'big@1 evicted again');
$base_used = sq('SELECT used FROM pepnet_shared_cache_stats()');

my %expect = (
	cancel => qr/canceling statement due to user request/,
	timeout => qr/canceling statement due to statement timeout/,
	terminate => qr/terminating connection due to administrator command/,
	kill9 => qr/server closed the connection unexpectedly|connection to server was lost|terminat/,);

my @old_handles;
for my $kind (qw(cancel timeout terminate kill9))
{
	my $interrupted = 0;
	for my $round (1 .. $N)
	{
		my $blk = session();
		say($blk, 'BEGIN; LOCK TABLE pepnet.model_chunks IN ACCESS EXCLUSIVE MODE; SELECT 1;');
		my $ld = bg(($kind eq 'timeout' ? "SET statement_timeout = '1s'; " : '') . $PRED);
		# the loader has claimed big@1, allocated its shared memory and waits for the chunks' lock
		my $seen = $node->poll_query_until($db,
			"SELECT count(*) = 1 FROM pepnet.shared_cache c JOIN pg_stat_activity a ON a.pid = c.builder_pid "
			  . "WHERE c.model = 'big' AND c.state = 'building' AND c.bytes > 60000000 AND a.wait_event_type = 'Lock'");
		my $pid = sq("SELECT builder_pid FROM pepnet.shared_cache WHERE model = 'big' AND state = 'building'");
		if ($kind eq 'cancel') { sq("SELECT pg_cancel_backend($pid)"); }
		elsif ($kind eq 'terminate') { sq("SELECT pg_terminate_backend($pid)"); }
		elsif ($kind eq 'kill9')
		{
			my $h = area_handle($pid);
			push @old_handles, $h if defined $h;
			kill 'KILL', $pid;
		}
		bg_finish($ld);
		$interrupted++ if $seen && $pid && $ld->{rc} != 0 && $ld->{err} =~ $expect{$kind};
		diag("round $round of $kind: seen=$seen pid=$pid rc=$ld->{rc} err=$ld->{err}")
		  unless $seen && $ld->{rc} != 0 && $ld->{err} =~ $expect{$kind};
		if ($kind eq 'kill9')
		{
			eval { $blk->{h}->kill_kill; };
			# (psql may exit before reading its input while the server restarts: a broken pipe)
			my $up = 0;
			for (1 .. 600)
			{
				my ($rc) = eval { $node->psql($db, 'SELECT 1') };
				last if !$@ && defined $rc && $rc == 0 && ($up = 1);
				select(undef, undef, undef, 0.2);
			}
			$up or BAIL_OUT('the server did not come back after kill -9');
		}
		else
		{
			say($blk, 'COMMIT;');
			close_session($blk);
		}
	}
	is($interrupted, $N, "$kind: $N loads of big\@1 interrupted after its shared memory was allocated");
	if ($kind eq 'kill9')
	{
		close_session($obs);
		$handle = observe();
		ok(defined $handle, "kill9: the shared cache has a new DSA area after the crash restarts (handle $handle)");
		my @left = grep { my ($n) = area_segments($_); $n > 0 } @old_handles;
		is(scalar(@left), 0, 'kill9: no segment of a DSA area from before a crash restart is left');
	}
	is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = 'big'"), '0', "$kind: no entry of big\@1 left");
	is(sq('SELECT used FROM pepnet_shared_cache_stats()'), $kind eq 'kill9' ? $used_small1 : $base_used,
		"$kind: the shared cache uses what it used before (its small versions)");
	my ($n, $bytes) = area_segments($handle);
	my ($bn, $bb) = $kind eq 'kill9' ? ($fresh_n, $fresh_bytes) : ($base_n, $base_bytes);
	is($bytes - $bb, 0, "$kind: 0 bytes of DSA segments left behind ($n segments, $bytes bytes; before $bn, $bb)");
}

# the version still loads into the shared cache, and scores as the per-backend path
is(sq($PRED), $private, 'big@1 loads after all the interruptions and scores bit for bit as without the shared cache');
is(sq("SELECT state FROM pepnet.shared_cache WHERE model = 'big'"), 'ready', 'big@1 is in the shared cache');
close_session($obs);
$node->stop;
done_testing();
