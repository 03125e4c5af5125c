# test/t/048_vocab_shared_dump.pl: vocabularies ("min_count", docs/model.md "Vocabularies and
# unseen ids") in the shared model cache and through pg_dump / pg_restore.
#
# One cluster with pepnet preloaded.  Asserts:
#  - a version with vocabularies (an integer and a text field) is preloaded into the shared cache
#    and scored through it, in several sessions at once, by pepnet_score_rows and
#    pepnet_predict(model, row), seen, rare and unseen ids alike: exactly as backends with their own
#    copies score it (after a restart with pepnet.shared_cache_size = 0), and unseen ids as the
#    out-of-vocabulary row;
#  - pg_dump -Fc / pg_restore of the database (weights in chunks of 128 bytes) restores the version
#    bit for bit (pepnet_export, pepnet_verify) and its scores, and training continues from it with
#    the same vocabularies.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('vocab_shared');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 64MB
fsync = off
jit = off
CONF
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

sq(<<'SQL');
CREATE EXTENSION pepnet;
CREATE TABLE ev AS
SELECT g AS id, g % 2 AS domain, CASE WHEN g > 1900 THEN 5000 + g ELSE g % 45 END::bigint AS item,
       CASE WHEN g % 13 = 0 THEN NULL ELSE 'user' || (g % 70) || CASE WHEN g > 1800 THEN '-' || g ELSE '' END END AS usr,
       (g % 45 < 20) <> (g % 70 < 25) AS click
FROM generate_series(1, 2000) g;
-- candidates: seen ids, rare ones (seen once), unseen ones and NULLs
CREATE TABLE cand AS
SELECT k AS id, k % 2 AS domain,
       (ARRAY[3, 7, 5950, 99999, -1, NULL, 44])[1 + k % 7]::bigint AS item,
       (ARRAY['user3', 'user9', 'user1-1850', 'nobody', NULL, 'user60'])[1 + k % 6] AS usr
FROM generate_series(1, 84) k;
SQL
my $cfg = '{"domains": 2, "features": [{"name": "item", "buckets": 64, "min_count": 2}], '
  . '"persona": [{"name": "usr", "buckets": 200, "min_count": 2}], "emb_dim": 4, "hidden": [8]}';
$node->safe_psql($db, "SET pepnet.chunk_size = 128; CALL pepnet_train('vs', 'SELECT * FROM ev', '$cfg', epochs => 2, "
	. "batch_size => 32, lr => 0.02, seed => 3, progress_interval => 0)");
is(sq("SELECT config->'features'->0->>'buckets' || ',' || (config->'persona'->0->>'buckets') FROM pepnet.models WHERE name = 'vs' AND version = 2"),
	'46,71', 'the stored buckets are V + 1 (45 items, 70 users seen twice or more)');
ok(sq("SELECT count(*) FROM pepnet.model_chunks WHERE name = 'vs' AND version = 2") > 20, 'the version is stored in many chunks');

is(sq("SELECT pepnet_preload('vs')"), 't', 'the version is preloaded into the shared cache');
my $rows = "SELECT string_agg((s.candidate).id || ':' || s.score, ',') FROM pepnet_score_rows('vs', ARRAY(SELECT c FROM cand c ORDER BY id)) s";
my $pred = "SELECT string_agg(id || ':' || pepnet_predict('vs', c), ',' ORDER BY id) FROM cand c";
my $oov = "SELECT count(DISTINCT pepnet_predict('vs', c)) FROM (SELECT 1 AS domain, item, 'user3' AS usr FROM unnest(ARRAY[5950, 99999, -1]::bigint[]) item) c";
my @h;
for my $i (1 .. 3)
{
	for my $what ([ 'rows', $rows ], [ 'predict', $pred ], [ 'oov', $oov ])
	{
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $what->[1] ],
			'>', \$out, '2>', \$err, IPC::Run::timeout(180));
		push @h, [ $what->[0], $h, \$out, \$err ];
	}
}
my %shared;
for my $x (@h)
{
	$x->[1]->finish;
	my $out = ${ $x->[2] };
	chomp $out;
	$shared{ $x->[0] } //= $out;
	$shared{ $x->[0] } = 'differ between sessions' if $shared{ $x->[0] } ne $out;
	diag("$x->[0]: ${ $x->[3] }") if ${ $x->[3] } ne '';
}
ok(sq("SELECT hits FROM pepnet.shared_cache WHERE model = 'vs'") >= 9, 'the sessions used the shared copy');
ok(length($shared{rows}) > 500, 'every candidate scored through the shared cache');
is($shared{oov}, '1', 'through the shared cache a rare item and two unseen items score alike (the OOV row)');

# pg_dump / pg_restore
my $dump = $node->basedir . '/vocab.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr($db) ], 'pg_dump -Fc');
$node->safe_psql($db, 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ], 'pg_restore');
my $state = "SELECT version || ':' || md5(pepnet_export('vs\@' || version)) || ':' || pepnet_verify('vs\@' || version) "
  . "FROM pepnet.models WHERE name = 'vs' ORDER BY version";
is($node->safe_psql('restored', $state), sq($state), 'versions restored bit for bit, verified');
is($node->safe_psql('restored', $pred), $shared{predict}, 'scores after restore equal those through the shared cache');

# the same statements in backends with their own copies (no shared cache)
$node->append_conf('postgresql.conf', "pepnet.shared_cache_size = 0\n");
$node->restart;
is(sq("SELECT count(*) FROM pepnet.shared_cache"), '0', 'restarted without the shared cache');
is(sq($rows), $shared{rows}, 'pepnet_score_rows through the shared cache = own copy, bit for bit');
is(sq($pred), $shared{predict}, 'pepnet_predict(model, row) through the shared cache = own copy, bit for bit');

# training continues in the restored database with the stored vocabularies
$node->safe_psql('restored', "CALL pepnet_train('vs', 'SELECT * FROM ev', epochs => 1, batch_size => 32, lr => 0.02, progress_interval => 0)");
is($node->safe_psql('restored', "SELECT (metrics->>'resumed_steps')::int > 0, config = (SELECT config FROM pepnet.models WHERE name = 'vs' AND version = 2) "
		. "FROM pepnet.models WHERE name = 'vs' AND version = 3"), 't|t', 'continued training after restore resumes Adam, same config');
is($node->safe_psql('restored', "SELECT pepnet_export('vs\@3') <> pepnet_export('vs\@2') AND "
		. "substring(pepnet_export('vs\@3') FROM length(pepnet_export('vs\@3')) - 8 * 115 + 1) = substring(pepnet_export('vs\@2') FROM length(pepnet_export('vs\@2')) - 8 * 115 + 1)"),
	't', 'new weights, the same vocabulary bytes (the last 115 int64 of the blob)');

$node->stop;
done_testing();
