# test/t/004_parallel.pl: pepnet_predict and pepnet_score in parallel query workers.
#
# 200,000 candidate rows (3 domains, runs of rows sharing a persona so that the per-statement
# persona reuse of pepnet_predict crosses worker chunk boundaries, 2 dense features) scored by a
# trained model through its bare name.  With parallel costs at zero, EXPLAIN VERBOSE must show a
# Parallel Seq Scan computing pepnet_predict(...) itself, EXPLAIN ANALYZE must show workers
# launched; the per-row results of the parallel run (with the leader participating, and with
# parallel_leader_participation = off, where every row is scored in a worker) must equal the
# serial run's exactly, as must count, sum(round(p * 1e9)) and (within rounding of the summation
# order) sum(p).  The same for pepnet_score on a LATERAL over 2,000 requests of 100 candidates.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('parallel');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\nmax_worker_processes = 8\n");
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

my %mode = (
	PAR => 'SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
	        SET min_parallel_table_scan_size = 0; SET max_parallel_workers = 8;',
	SER => 'SET max_parallel_workers_per_gather = 0;');
$mode{NOLEADER} = "$mode{PAR} SET parallel_leader_participation = off;";

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 100}, {"name": "seg", "buckets": 4, "hash": false}], "dense": 2, "emb_dim": 8, "hidden": [32, 16]}';
my ($rc, $out, $err) = $node->psql($db, <<'SQL', extra_params => [ '-v', "cfg=$CFG" ]);
SET client_min_messages = warning;
CREATE EXTENSION pepnet;
CREATE TABLE clicks AS
SELECT i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 40, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0, (i % 7) / 7.0]::real[] AS dense,
       CASE i % 3 WHEN 0 THEN (abs(hashint4(i)) % 300) % 2 = 0 WHEN 1 THEN (abs(hashint4(i)) % 300) % 2 = 1
                  ELSE abs(hashint4(-i)) % 40 < 12 END AS label
FROM generate_series(1, 6000) i;
CALL pepnet_train('m', 'SELECT domain, persona, features, dense, label FROM clicks', :'cfg',
                  epochs => 2, batch_size => 128, lr => 0.01, seed => 1, progress_interval => 0);
SELECT pepnet_deploy('m', 2);
-- persona changes every 50 rows; the domain every row
CREATE TABLE cands AS
SELECT i AS id, i % 3 AS domain, ARRAY[(i / 50) % 97, (i / 50) % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 1000, i % 10]::bigint[] AS features,
       ARRAY[(i % 11) / 11.0, (i % 13) / 13.0]::real[] AS dense
FROM generate_series(1, 200000) i;
-- 2,000 requests of 100 candidates
CREATE TABLE reqs AS
SELECT r AS id, r % 3 AS domain, ARRAY[r % 97, r % 4]::bigint[] AS persona,
       (SELECT array_agg(ARRAY[abs(hashint4(r * 100 + c)) % 1000, c % 10]::bigint[] ORDER BY c) FROM generate_series(1, 100) c) AS feats,
       (SELECT array_agg(ARRAY[(c % 11) / 11.0, (r % 13) / 13.0]::real[] ORDER BY c) FROM generate_series(1, 100) c) AS dense
FROM generate_series(1, 2000) r;
ANALYZE cands;
ANALYZE reqs;
SQL
is($rc, 0, 'setup: a trained model (2 epochs, dense features) deployed, 200,000 candidates, 2,000 requests of 100')
  or BAIL_OUT("setup failed: $err");

my $PRED = "SELECT id, pepnet_predict('m', domain, persona, features, dense) AS p FROM cands";
my $SCORE = "SELECT r.id, s.idx, s.score, s.scores FROM reqs r, LATERAL pepnet_score('m', r.domain, r.persona, r.feats, r.dense) s";

# rows of "a|b|..." sorted numerically by the first N fields
sub sorted_rows
{
	my ($text, $n) = @_;
	my @rows = map { [ $_, split /\|/ ] } split /\n/, $text;
	@rows = sort {
		my $c = 0;
		for my $i (1 .. $n) { $c = $a->[$i] <=> $b->[$i]; last if $c; }
		$c
	} @rows;
	return join("\n", map { $_->[0] } @rows);
}
# the sum of the actual rows of the worker lines of an EXPLAIN ANALYZE
sub worker_rows { my $s = 0; $s += $_ for ($_[0] =~ /Worker \d+: +actual rows=(\d+)/g); return $s; }

# ---------------------------------------------------------------- pepnet_predict
my $plan = sq("$mode{PAR} EXPLAIN (VERBOSE, COSTS OFF) $PRED");
# the Output line that follows the Parallel Seq Scan node
my ($scan_out) = $plan =~ /Parallel Seq Scan.*?\n\s*(Output:[^\n]*)/s;
ok($plan =~ /Gather/ && ($scan_out // '') =~ /pepnet_predict\(/,
	'EXPLAIN VERBOSE: Gather over a Parallel Seq Scan that computes pepnet_predict(...)')
  or diag($plan);
my %analyze;
for my $m (qw(PAR NOLEADER))
{
	$analyze{$m} = sq("$mode{$m} EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) $PRED");
	my ($launched) = $analyze{$m} =~ /Workers Launched: (\d+)/;
	my $wrows = worker_rows($analyze{$m});
	ok(($launched // 0) >= 1 && $wrows > 0,
		"EXPLAIN ANALYZE ($m): " . ($launched // 0) . " workers launched, scoring $wrows of 200000 rows");
}
is(worker_rows($analyze{NOLEADER}), 200000, 'with the leader not participating, the workers score all 200000 rows');

my (%pred, %agg);
for my $m (qw(SER PAR NOLEADER))
{
	$pred{$m} = sorted_rows(sq("$mode{$m} $PRED"), 1);
	$agg{$m} = [ split /\|/, sq("$mode{$m} SELECT count(*), sum(round(p * 1e9)::bigint), sum(p) FROM ($PRED) x") ];
}
my @ser = split /\n/, $pred{SER};
ok(@ser == 200000 && !grep({ my $p = (split /\|/)[1]; !($p > 0 && $p < 1) } @ser),
	'serial run: 200000 rows, probabilities in (0, 1)');
for my $m (qw(PAR NOLEADER))
{
	ok($pred{$m} eq $pred{SER}, "pepnet_predict per row ($m): identical to the serial run");
	is("$agg{$m}[0]|$agg{$m}[1]", "$agg{SER}[0]|$agg{SER}[1]",
		"count and sum(round(p * 1e9)) ($m) equal the serial run's: $agg{$m}[0]|$agg{$m}[1]");
	cmp_ok(abs($agg{$m}[2] - $agg{SER}[2]), '<', 1e-6, "sum(p) ($m) within 1e-6 of the serial run's");
}

# ---------------------------------------------------------------- pepnet_score on a LATERAL
my $plan_score = sq("$mode{PAR} EXPLAIN (VERBOSE, COSTS OFF) $SCORE");
# below the Gather: a Parallel Seq Scan on reqs and the Function Scan on pepnet_score
ok($plan_score =~ /Gather.*Parallel Seq Scan on public\.reqs/s && $plan_score =~ /Gather.*Function Scan on public\.pepnet_score/s,
	"EXPLAIN VERBOSE: pepnet_score's Function Scan runs below the Gather, per row of a Parallel Seq Scan")
  or diag($plan_score);
my $analyze_score = sq("$mode{NOLEADER} EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) $SCORE");
my ($launched) = $analyze_score =~ /Workers Launched: (\d+)/;
cmp_ok($launched // 0, '>=', 1, 'EXPLAIN ANALYZE (NOLEADER): ' . ($launched // 0) . ' workers launched for pepnet_score');
my %score;
$score{$_} = sorted_rows(sq("$mode{$_} $SCORE"), 2) for qw(SER PAR NOLEADER);
is(scalar(my @s = split /\n/, $score{SER}), 200000, 'serial pepnet_score: 200000 rows');
for my $m (qw(PAR NOLEADER))
{
	ok($score{$m} eq $score{SER}, "pepnet_score per row, all tasks ($m): identical to the serial run");
}
is( sq( "SELECT abs(s.score - pepnet_predict('m', r.domain, r.persona, r.feats[1:1][:], r.dense[1:1][:])) < 1e-6
	     FROM reqs r, pepnet_score('m', r.domain, r.persona, r.feats, r.dense) s WHERE r.id = 1 AND s.idx = 1"),
	't', 'pepnet_score and pepnet_predict agree (request 1, candidate 1)');

$node->stop;
done_testing();
