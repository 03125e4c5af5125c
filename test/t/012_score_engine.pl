# test/t/012_score_engine.pl: the oneDNN scoring engine across server setups.
#
# Node "preload" loads pepnet with shared_preload_libraries (the postmaster must start and stay a
# single thread: oneDNN and its OpenMP runtime are initialised in backends only, on their first
# batched score, and pinned to one thread there).  Node "avx2" runs with ONEDNN_MAX_CPU_ISA=AVX2 in
# the server's environment, as on a CPU without AVX-512.  Both create the same model from one seed
# and score the same 200 candidates.  Asserts: both nodes start and score; every backend that scored
# has one thread; the avx2 node uses AVX2 (it says so when bf16 is refused, 0A000) and its scores
# equal the preload node's within float rounding (1e-6) while identical candidates still get
# bit-identical scores; pepnet.precision = bf16, where the CPU has it, scores within 5e-3 of fp32,
# and the test AUC of a trained model (pepnet_score_query over held-out rows) within 1e-3 of fp32's.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $CFG = '{"domains": 4, "features": [{"name": "item", "buckets": 20000}, {"name": "cat", "buckets": 64}, '
  . '{"name": "hour", "buckets": 24}, {"name": "f3", "buckets": 1000}, {"name": "f4", "buckets": 1000}, '
  . '{"name": "f5", "buckets": 1000}, {"name": "f6", "buckets": 1000}, {"name": "f7", "buckets": 1000}], '
  . '"persona": [{"name": "user", "buckets": 50000}, {"name": "age", "buckets": 8}, {"name": "p2", "buckets": 100}], '
  . '"tasks": ["click", "buy"], "hidden": [256, 128]}';

# 200 candidates; candidates 1, 50 and 200 are identical
my $REQ = "(SELECT array_agg(CASE WHEN i IN (1, 50, 200) THEN ARRAY[5, 6, 7, 8, 9, 10, 11, 12] "
  . "ELSE ARRAY[i * 7919, i % 64, i % 24, i * 3, i * 5, i * 7, i * 11, i * 13] END::bigint[] ORDER BY i) "
  . "FROM generate_series(1, 200) i)";
my $SCORES = "SELECT string_agg(s.scores[1]::text || ',' || s.scores[2]::text, ';' ORDER BY s.idx) "
  . "FROM pepnet_score('bench', 2, '{42, 3, 17}', $REQ) s";

sub threads_of
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return -1;
	while (<$fh>) { return $1 if /^Threads:\s+(\d+)/; }
	return -1;
}

sub setup
{
	my ($node) = @_;
	$node->safe_psql('postgres', "CREATE EXTENSION pepnet");
	$node->safe_psql('postgres', "SELECT pepnet_create('bench', '$CFG', 2)");
}

sub parse_scores
{
	my ($text) = @_;
	return [ map { [ split /,/ ] } split /;/, $text ];
}

# --- preload node
my $pre = PostgreSQL::Test::Cluster->new('preload');
$pre->init;
$pre->append_conf('postgresql.conf', "shared_preload_libraries = 'pepnet'\nfsync = off\njit = off\n");
ok($pre->start(fail_ok => 1), 'server starts with shared_preload_libraries = pepnet');
setup($pre);

# one session: score, then report its pid and thread count from inside
my $out = $pre->safe_psql('postgres', $SCORES);
my ($pre_text) = split /\n/, $out;
my $pre_scores = parse_scores($pre_text);
is(scalar(@$pre_scores), 200, 'preload node scores 200 candidates');
open(my $pidf, '<', $pre->data_dir . '/postmaster.pid') or die "postmaster.pid: $!";
my $postmaster_pid = <$pidf>;
chomp $postmaster_pid;
close $pidf;
is(threads_of($postmaster_pid), 1, 'postmaster has one thread (no OpenMP/oneDNN threads)');

# a backend that scored is pinned to one thread: score and read its own thread count
my $bg = $pre->background_psql('postgres');
$bg->query_safe("SELECT count(*) FROM pepnet_score('bench', 1, '{1, 2, 3}', $REQ)");
my $bpid = $bg->query_safe("SELECT pg_backend_pid()");
chomp $bpid;
is(threads_of($bpid), 1, 'a backend that scored runs oneDNN on one thread');
$bg->quit;

# ties on this node
is($pre_scores->[0][0], $pre_scores->[49][0], 'identical candidates 1 and 50: bit-identical');
is($pre_scores->[0][1], $pre_scores->[199][1], 'identical candidates 1 and 200: bit-identical (task 2)');

# bf16 where the CPU has it
my ($rc, $bf, $err) = $pre->psql('postgres', "SET pepnet.precision = bf16; $SCORES");
if ($rc == 0)
{
	my $bfs = parse_scores($bf);
	my $max = 0;
	for my $i (0 .. $#$bfs)
	{
		for my $t (0, 1)
		{
			my $d = abs($bfs->[$i][$t] - $pre_scores->[$i][$t]);
			$max = $d if $d > $max;
		}
	}
	cmp_ok($max, '<', 5e-3, "bf16 scores within 5e-3 of fp32 (max $max)");
	isnt($bf, $pre_text, 'bf16 is another computation than fp32');

	# a trained model: test AUC in bf16 within 1e-3 of fp32 (AUC by ranks, ties counted half)
	$pre->safe_psql('postgres', q{
		SELECT setseed(0.5);
		CREATE TABLE ev AS
		SELECT i, i % 3 AS domain, ARRAY[i % 50]::bigint[] AS persona, ARRAY[i % 100, i % 7, (i / 7) % 13]::bigint[] AS features,
		       (random() < CASE WHEN i % 100 < 30 THEN 0.55 WHEN i % 7 = 0 THEN 0.3 ELSE 0.08 END)::int::real AS label
		FROM generate_series(1, 30000) i;
		CREATE FUNCTION test_auc(prec text) RETURNS float8 LANGUAGE plpgsql AS $f$
		DECLARE a float8;
		BEGIN
			PERFORM set_config('pepnet.precision', prec, true);
			WITH s AS (
				SELECT t.score, e.label FROM pepnet_score_query('ev',
					'SELECT i, domain, persona, features FROM ev WHERE (i / 100) % 5 = 0') AS t(i int, score float8, scores float8[])
				JOIN ev e USING (i)),
			r AS (SELECT label, rank() OVER (ORDER BY score) + (count(*) OVER (PARTITION BY score) - 1) / 2.0 AS rk FROM s),
			n AS (SELECT count(*) FILTER (WHERE label = 1) AS p, count(*) FILTER (WHERE label = 0) AS q FROM s)
			SELECT (sum(rk) FILTER (WHERE label = 1) - p * (p + 1) / 2.0) / (p * q) INTO a FROM r, n GROUP BY p, q;
			RETURN a;
		END $f$;
	});
	$pre->safe_psql('postgres', q{CALL pepnet_train('ev', 'SELECT domain, persona, features, label FROM ev WHERE (i / 100) % 5 <> 0',
		config => '{"domains": 3, "features": [{"name": "a", "buckets": 100, "hash": false}, {"name": "b", "buckets": 7, "hash": false},
		            {"name": "c", "buckets": 13, "hash": false}], "persona": [{"name": "u", "buckets": 50, "hash": false}],
		            "emb_dim": 8, "hidden": [32, 16]}', epochs => 2, batch_size => 256, lr => 0.01, progress_interval => 1000)});
	my ($auc32, $auc16) = split /\|/, $pre->safe_psql('postgres', "SELECT test_auc('fp32') || '|' || test_auc('bf16')");
	cmp_ok($auc32, '>', 0.6, "the trained model ranks held-out rows (fp32 AUC $auc32)");
	cmp_ok(abs($auc16 - $auc32), '<', 1e-3, "bf16 test AUC $auc16 within 1e-3 of fp32's");
}
else
{
	like($err, qr/bf16 needs a CPU/, 'bf16 refused on a CPU without bf16');
	pass('bf16 comparison skipped');
	pass('bf16 AUC comparison skipped');
	pass('bf16 AUC comparison skipped');
}

# --- AVX2 node
my $avx2 = PostgreSQL::Test::Cluster->new('avx2');
$avx2->init;
$avx2->append_conf('postgresql.conf', "fsync = off\njit = off\n");
{
	local $ENV{ONEDNN_MAX_CPU_ISA} = 'AVX2';
	local $ENV{MALLOC_CHECK_} = '3';		# glibc checks the heap on every free: corruption aborts at once
	$avx2->start;
}
setup($avx2);
($rc, $out, $err) = $avx2->psql('postgres', "SET pepnet.precision = bf16; $SCORES");
isnt($rc, 0, 'bf16 refused on the AVX2 node');
like($err, qr/runs this CPU as avx2/, 'the AVX2 node runs oneDNN as avx2');
my $avx2_scores = parse_scores($avx2->safe_psql('postgres', $SCORES));
is(scalar(@$avx2_scores), 200, 'AVX2 node scores 200 candidates');
my $max = 0;
for my $i (0 .. 199)
{
	for my $t (0, 1)
	{
		my $d = abs($avx2_scores->[$i][$t] - $pre_scores->[$i][$t]);
		$max = $d if $d > $max;
	}
}
cmp_ok($max, '<', 1e-6, "AVX2 scores equal the default node's within float rounding (max $max)");
is($avx2_scores->[0][0], $avx2_scores->[49][0], 'AVX2 node: identical candidates bit-identical');
is($avx2_scores->[0][0], $avx2_scores->[199][0], 'AVX2 node: identical candidates bit-identical (last tile)');

# Without AVX-512, oneDNN 2.6 has no brgemm matmul and its gemm:jit corrupted the backend's heap
# under load (glibc abort within seconds of 2 pgbench clients); the engine now scores such CPUs
# with pepnet_predict's GEMVs.  A bounded load on the AVX2 node must leave the server up.
my $stress = PostgreSQL::Test::Utils::tempdir() . '/stress.sql';
PostgreSQL::Test::Utils::append_to_file($stress,
	"SELECT count(*) FROM pepnet_score('bench', (random() * 3)::int, ARRAY[(random() * 1000)::bigint, 1, 2]::bigint[], "
	  . "(SELECT array_agg(ARRAY[i, i + 1, i + 2, i + 3, i + 4, i + 5, i + 6, i + 7]::bigint[]) "
	  . "FROM generate_series(1, (random() * 300)::int + 1) i));\n");
my ($prc, $pout, $perr) = (0, '', '');
IPC::Run::run([ 'pgbench', '-n', '-c', '2', '-t', '6000', '-f', $stress, '-h', $avx2->host, '-p', $avx2->port, 'postgres' ],
	'>', \$pout, '2>', \$perr);
$prc = $? >> 8;
is($prc, 0, 'AVX2 node: 12000 batched scores from 2 clients complete') or diag($perr);
unlike(PostgreSQL::Test::Utils::slurp_file($avx2->logfile), qr/terminated by signal|corrupted/,
	'AVX2 node: no backend died under the load');

$pre->stop;
$avx2->stop;
done_testing();
