# test/t/003_memory.pl: backend memory stays flat under repeated scoring, evaluation and training.
#
# One backend (one psql session) warms up (every operation once: the model version, its domains,
# plans and catalog caches get built), then runs two identical rounds, each of 1,500 pepnet_score
# statements of 100 candidates (bare name and 'm@1', three domains, varying personas), a
# 100,000-row pepnet_predict statement, a LATERAL statement of 2,000 pepnet_score calls of 50
# candidates, 3 pepnet_evaluate and 2 short CALL pepnet_train runs: over the two rounds 3,000
# pepnet_score statements, 200,000 predict rows, 6 evaluations and 4 trainings.  Measured: the
# sum of pg_backend_memory_contexts.total_bytes (used_bytes inside a statement) and RssAnon (the
# backend's private memory, without the shared buffers it touched) from /proc/<pid>/status.
# Bounds:
#   - contexts after round 2 - after warm-up < 2 MB: the cached model is ~0.75 MB; a leak of
#     ~700 B per pepnet_score statement, of ~10 B per predict row or of ~0.5 MB per training
#     would exceed it; and round 2 - round 1 < 512 kB (a leak repeats each round);
#   - within one statement, used memory at predict row 100,000 - at row 10,000 < 1 MB (a
#     per-row leak of ~12 B); over LATERAL pepnet_score calls 200 to 2,000, growth beyond that
#     of the same statement with PostgreSQL's jsonb_each < 256 B per call (PostgreSQL itself keeps
#     a few hundred bytes per call of a set-returning function until the statement ends);
#   - RssAnon after round 2 - after warm-up < 20 MB (malloc'd memory outside contexts, e.g.
#     OpenBLAS or the core's buffers, leaking ~7 kB per pepnet_score statement would exceed it).
# If valgrind is installed: a memcheck of the core's unit tests (test/unit/test_core, built with
# `make test/unit/test_core` unless present): no invalid access and no definite or indirect leak.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('memory');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\nmax_parallel_workers_per_gather = 0\n");
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }
sub kb { return sprintf('%.0f kB', $_[0] / 1024); }

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 5000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 1000}, {"name": "seg", "buckets": 4, "hash": false}], "emb_dim": 8, "hidden": [64, 32]}';
my ($rc, $out, $err) = $node->psql($db, <<'SQL', extra_params => [ '-v', "cfg=$CFG" ]);
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
CREATE TABLE clicks AS
SELECT i, i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 40, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features,
       (abs(hashint4(i)) % 300) % 2 = 0 AS label
FROM generate_series(1, 4000) i;
SELECT pepnet_create('m', :'cfg', seed => 1);
SELECT pepnet_deploy('m', 1);
CREATE TABLE cands AS
SELECT i AS id, i % 3 AS domain, ARRAY[(i / 20) % 1000, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 5000, i % 10]::bigint[] AS features
FROM generate_series(1, 100000) i;
CREATE TABLE req100 AS SELECT array_agg(ARRAY[abs(hashint4(c)) % 5000, c % 10]::bigint[] ORDER BY c) AS feats FROM generate_series(1, 100) c;
CREATE TABLE reqs AS
SELECT r AS id, r % 3 AS domain, ARRAY[r % 1000, r % 4]::bigint[] AS persona,
       (SELECT array_agg(ARRAY[abs(hashint4(r * 50 + c)) % 5000, c % 10]::bigint[] ORDER BY c) FROM generate_series(1, 50) c) AS feats
FROM generate_series(1, 2000) r;
ANALYZE;
CREATE TABLE memlog (step text, ctx bigint, anon_kb bigint, rss_kb bigint);
CREATE FUNCTION ctx_bytes() RETURNS bigint LANGUAGE sql AS 'SELECT sum(total_bytes)::bigint FROM pg_backend_memory_contexts';
CREATE FUNCTION used_bytes() RETURNS bigint LANGUAGE sql AS 'SELECT sum(used_bytes)::bigint FROM pg_backend_memory_contexts';
CREATE FUNCTION mem(step text) RETURNS void LANGUAGE sql AS $$
  INSERT INTO memlog
  SELECT step, ctx_bytes(), (regexp_match(s, 'RssAnon:\s+(\d+) kB'))[1]::bigint, (regexp_match(s, 'VmRSS:\s+(\d+) kB'))[1]::bigint
  FROM pg_read_file('/proc/' || pg_backend_pid() || '/status') s;
$$;
SELECT mem('check');
SQL
is($rc, 0, 'setup: model, 100,000 candidates, 2,000 requests of 50; /proc/<pid>/status readable')
  or BAIL_OUT("setup failed (a superuser is needed to read /proc/<pid>/status): $err");

my $DATA = 'SELECT domain, persona, features, label FROM clicks';

# one round of work: N pepnet_score statements, then the rest, tagged TAG
sub round
{
	my ($n, $tag) = @_;
	my $s = '';
	for my $k (1 .. $n)
	{
		my $ref = $k % 2 == 0 ? 'm' : 'm@1';
		$s .= "SELECT count(*), sum(score) FROM pepnet_score('$ref', " . ($k % 3) . ", '{" . ($k % 1000) . ',' . ($k % 4)
		  . "}', (SELECT feats FROM req100));\n";
	}
	$s .= <<SQL;
-- 100,000 predict rows; used context memory sampled at rows 10,000 and 100,000 of the same statement
INSERT INTO memlog
SELECT '$tag predict\@' || u.id, u.c, NULL, NULL
FROM (SELECT sum(p) AS s, max(ctx) FILTER (WHERE id = 10000) AS c1, max(ctx) FILTER (WHERE id = 100000) AS c2
      FROM (SELECT id, pepnet_predict('m', domain, persona, features) AS p,
                   CASE WHEN id IN (10000, 100000) THEN (SELECT used_bytes() WHERE cands.id > 0) END AS ctx
            FROM cands) x) a,
     LATERAL (VALUES (10000, a.c1), (100000, a.c2)) u(id, c);
-- 2,000 pepnet_score calls of 50 candidates in one statement, sampled at calls 200 and 2,000; and
-- the same with jsonb_each, a set-returning function of PostgreSQL's, for the executor's own growth
INSERT INTO memlog
SELECT '$tag lateral\@' || id, max(ctx), NULL, NULL FROM (
  SELECT r.id, s.score, CASE WHEN r.id IN (200, 2000) AND s.idx = 1 THEN (SELECT used_bytes() WHERE r.id > 0) END AS ctx
  FROM reqs r, LATERAL pepnet_score('m', r.domain, r.persona, r.feats) s) x
WHERE ctx IS NOT NULL GROUP BY id;
INSERT INTO memlog
SELECT '$tag baseline\@' || id, max(ctx), NULL, NULL FROM (
  SELECT r.id, s.key, CASE WHEN r.id IN (200, 2000) AND s.key = 'a' THEN (SELECT used_bytes() WHERE r.id > 0) END AS ctx
  FROM reqs r, LATERAL jsonb_each(jsonb_build_object('a', r.id, 'b', r.domain)) s) x
WHERE ctx IS NOT NULL GROUP BY id;
SELECT count(*) FROM pepnet_evaluate('m', '$DATA');
SELECT count(*) FROM pepnet_evaluate('m\@1', '$DATA');
SELECT count(*) FROM pepnet_evaluate('m', '$DATA WHERE i % 2 = 0');
CALL pepnet_train('t', '$DATA', '$CFG', epochs => 1, batch_size => 256, progress_interval => 0);
CALL pepnet_train('t', '$DATA WHERE i <= 2000', epochs => 2, batch_size => 128, progress_interval => 0);
SQL
	return $s;
}

my $work = "SET client_min_messages = warning;\n"
  . round(60, 'warm')
  . "SELECT mem('warm');\n"
  . round(1500, 'r1')
  . "SELECT mem('round1');\n"
  . round(1500, 'r2')
  . "SELECT mem('round2');\n"
  . "SELECT 'cache', count(*), sum(bytes) FROM pepnet_cache();\n";
($rc, $out, $err) = $node->psql($db, $work, timeout => 300);
is($rc, 0,
	'one backend ran 3,060 pepnet_score statements, 3 x 2,000 LATERAL calls, 300,000 predict rows, 9 evaluations, 6 trainings')
  or BAIL_OUT("the workload failed: $err");
my ($cn, $cb) = $out =~ /^cache\|(\d+)\|(\d+)$/m;
note(sprintf('cache: %d version(s), %.0f kB', $cn // 0, ($cb // 0) / 1024));

sub v { my ($col, $step) = @_; return sq("SELECT $col FROM memlog WHERE step = '$step'"); }
my ($W, $R1, $R2) = (v('ctx', 'warm'), v('ctx', 'round1'), v('ctx', 'round2'));
my ($AW, $A1, $A2) = (v('anon_kb', 'warm'), v('anon_kb', 'round1'), v('anon_kb', 'round2'));
note('contexts: warm ' . kb($W) . ', round 1 ' . kb($R1) . ', round 2 ' . kb($R2)
	  . "; RssAnon: warm $AW kB, round 1 $A1 kB, round 2 $A2 kB; VmRSS round 2 " . v('rss_kb', 'round2') . ' kB');
cmp_ok($R2 - $W, '<', 2 * 1024 * 1024, 'context memory: round 2 - warm-up = ' . kb($R2 - $W) . ' < 2 MB');
cmp_ok($R2 - $R1, '<', 512 * 1024, 'context memory: round 2 - round 1 = ' . kb($R2 - $R1) . ' < 512 kB');
cmp_ok($A2 - $AW, '<', 20 * 1024, 'RssAnon: round 2 - warm-up = ' . ($A2 - $AW) . ' kB < 20 MB');
for my $tag (qw(warm r1 r2))
{
	my ($P1, $P2) = (v('ctx', "$tag predict\@10000"), v('ctx', "$tag predict\@100000"));
	my ($L1, $L2) = (v('ctx', "$tag lateral\@200"), v('ctx', "$tag lateral\@2000"));
	my ($B1, $B2) = (v('ctx', "$tag baseline\@200"), v('ctx', "$tag baseline\@2000"));
	ok($P1 ne '' && $P2 ne '' && $P2 - $P1 < 1024 * 1024,
		"within one statement ($tag): used memory at predict row 100,000 - at row 10,000 = " . ($P2 - $P1) . ' B < 1 MB');
	# PostgreSQL keeps a few hundred bytes per call of a set-returning function with OUT columns
	# until the statement ends (jsonb_each too); pepnet_score may add < 256 B per call to that
	ok( $L1 ne '' && $L2 ne '' && $B1 ne '' && $B2 ne '' && ($L2 - $L1) - ($B2 - $B1) < 1800 * 256,
		"within one statement ($tag): LATERAL pepnet_score calls 200 to 2,000 (50 candidates each) used "
		  . int(($L2 - $L1) / 1800) . ' B/call, jsonb_each ' . int(($B2 - $B1) / 1800) . ' B/call: excess < 256 B/call');
}
$node->stop;

# memcheck of the core's unit tests
SKIP:
{
	my $have_valgrind = system('command -v valgrind >/dev/null 2>&1') == 0;
	skip 'valgrind is not installed', 1 unless $have_valgrind;
	my $bin = 'test/unit/test_core';
	system('make', '-s', $bin) if !-x $bin || -w 'test/unit';
	if (!-x $bin)
	{
		fail("build $bin (make -s $bin)");
		last SKIP;
	}
	my ($vout, $verr) = ('', '');
	my $t0 = time;
	# PN_TEST_QUICK: the row-wise matmul's large shapes and the bench-width engine model are left
	# to the plain unit test run (minutes under valgrind); every code path still runs
	local $ENV{PN_TEST_QUICK} = 1;
	my $ok = IPC::Run::run(
		[ 'valgrind', '--error-exitcode=1', '--leak-check=full', '--errors-for-leak-kinds=definite,indirect', "./$bin" ],
		'>', \$vout, '2>', \$verr, IPC::Run::timeout(300));
	my $sum = join(' ', map { s/^==\d+== //r } grep { /ERROR SUMMARY|definitely lost|All heap blocks/ } split /\n/, $verr);
	ok($ok, 'valgrind memcheck of test/unit/test_core (' . (time - $t0) . " s): $sum")
	  or diag(join("\n", grep { /Invalid|uninitialised|definitely lost|at 0x|by 0x/ } split /\n/, $verr));
}

done_testing();
