# Everything that makes a database pepnet's survives pg_dump -Fc / pg_restore into a fresh
# database: versions (bit for bit), deployments, deploy history, the never-reuse high-water
# marks, and the DROP EXTENSION guard; afterwards pepnet_create and CALL pepnet_train work and
# scores are equal.  Weights are stored in chunks of 256 bytes (pepnet.chunk_size), so every
# version spans many rows of pepnet.model_chunks: they come back row for row.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump');
$node->init;
$node->append_conf('postgresql.conf', "pepnet.chunk_size = 256\n");
$node->start;

my $cfg = '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "persona": [{"name": "u", "buckets": 8}], "emb_dim": 4, "hidden": [8]}';
my $data = q{SELECT i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, ((i * 7) % 3 = 0) AS label FROM generate_series(1, 400) i};
my $valid = q{SELECT i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, ((i * 7) % 3 = 0) AS label FROM generate_series(401, 600) i};
(my $data_q = $data) =~ s/'/''/g;
(my $valid_q = $valid) =~ s/'/''/g;

$node->safe_psql('postgres', 'CREATE EXTENSION pepnet');
$node->safe_psql('postgres',
	"CALL pepnet_train('m', '$data_q', config => '$cfg', validation => '$valid_q', epochs => 3, batch_size => 64, lr => 0.01, deploy => true, progress_interval => 0)");
$node->safe_psql('postgres', qq{
	SELECT pepnet_create('x', '$cfg', 1);
	SELECT pepnet_create('x', '$cfg', 2);
	SELECT pepnet_create('x', '$cfg', 3);
	DELETE FROM pepnet.models WHERE name = 'x' AND version = 3;
	SELECT pepnet_deploy('m', 1);
	SELECT pepnet_deploy('m', 'latest');
	SELECT pepnet_deploy('m', 'previous');
	SELECT pepnet_deploy('m', 'best');
	SELECT pepnet_deploy('x', 1);
});

# what must survive, as text
my $state = q{
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', name, version, md5(pepnet_export(name || '@' || version)), config, metrics, parent, created_at,
	                         encode(fingerprint, 'hex'), weights_size, weights IS NULL), E'\n' ORDER BY name, version) FROM pepnet.models;
	SELECT string_agg(format('%s|%s|%s|%s', name, version, seq, md5(data)), E'\n' ORDER BY name, version, seq) FROM pepnet.model_chunks;
	SELECT string_agg(format('%s|%s|%s|%s|%s', name, version, moment, seq, md5(data)), E'\n' ORDER BY name, version, moment, seq) FROM pepnet.optimizer_chunks;
	SELECT string_agg(format('%s|%s|%s', name, version, deployed_at), E'\n' ORDER BY name) FROM pepnet.deployments;
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, seq, from_version, to_version, strategy, deployed_by, deployed_at), E'\n' ORDER BY name, seq) FROM pepnet.deploy_history;
	SELECT string_agg(format('%s|%s', name, last_version), E'\n' ORDER BY name) FROM pepnet.model_names;
};
my $scores = q{SELECT string_agg(s.scores::text, ';' ORDER BY s.idx) FROM pepnet_score('m', 1, '{3}', ARRAY[[1], [2], [3], [40]]::bigint[]) s};
my $before = $node->safe_psql('postgres', $state);
my $scores_before = $node->safe_psql('postgres', $scores);
like($before, qr/\|previous\|/, 'history recorded before the dump') or diag $before;
cmp_ok($node->safe_psql('postgres', "SELECT min(n) FROM (SELECT count(*) AS n FROM pepnet.model_chunks GROUP BY name, version) c"), '>', 10,
	'every version spans more than 10 chunks of 256 bytes before the dump');
cmp_ok($node->safe_psql('postgres', "SELECT count(DISTINCT (name, version)) FROM pepnet.optimizer_chunks"), '>=', 3,
	'the trained versions\' Adam moments are in chunks before the dump');

my $dump = $node->basedir . '/pepnet.dump';
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('postgres') ], 'pg_dump -Fc');
$node->safe_psql('postgres', 'CREATE DATABASE restored');
$node->command_ok([ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored'), $dump ], 'pg_restore into a fresh database');

my $after = $node->safe_psql('restored', $state);
is($after, $before, 'versions (weights bit for bit, fingerprints, sizes), chunks of weights and of Adam\'s moments row for row, deployments, deploy history and high-water marks restored as they were');
is($node->safe_psql('restored', $scores), $scores_before, 'scores of the deployed version equal after restore');

# the next number is the same as it would have been without the dump: never a reused one
my $next_orig = $node->safe_psql('postgres', "SELECT pepnet_create('x', '$cfg', 9)");
my $next_rest = $node->safe_psql('restored', "SELECT pepnet_create('x', '$cfg', 9)");
is($next_rest, '4', 'pepnet_create after restore: version 4 (3 was deleted before the dump, never reused)');
is($next_rest, $next_orig, 'pepnet_create numbers alike in the original and the restored database');
is($node->safe_psql('restored', 'SELECT md5(pepnet_export(\'x@4\'))'),
	$node->safe_psql('postgres', 'SELECT md5(pepnet_export(\'x@4\'))'),
	'the new versions are equal');

# training continues from the deployed version after restore, in both databases alike
my $mmax = $node->safe_psql('restored', "SELECT max(version) FROM pepnet.models WHERE name = 'm'");
for my $db ('postgres', 'restored')
{
	$node->safe_psql($db, "CALL pepnet_train('m', '$data_q', epochs => 1, batch_size => 64, lr => 0.01, progress_interval => 0)");
}
is($node->safe_psql('restored', "SELECT max(version) FROM pepnet.models WHERE name = 'm'"), $mmax + 1,
	'CALL pepnet_train after restore stores the next version');
is($node->safe_psql('restored', "SELECT md5(pepnet_export('m\@' || ($mmax + 1)))"),
	$node->safe_psql('postgres', "SELECT md5(pepnet_export('m\@' || ($mmax + 1)))"),
	'continued training gives the same weights in the restored database');

# deploys after restore continue the history
$node->safe_psql('restored', "SELECT pepnet_deploy('m', 'previous')");
is($node->safe_psql('restored', "SELECT max(seq) FROM pepnet.deploy_history WHERE name = 'm'"),
	$node->safe_psql('postgres', "SELECT max(seq) + 1 FROM pepnet.deploy_history WHERE name = 'm'"),
	'the deploy history continues after restore');

# the chunk guard is part of the restored extension: restored chunks are immutable
my ($rc, $out, $err) = $node->psql('restored', "DELETE FROM pepnet.model_chunks WHERE name = 'x' AND version = 1 AND seq = 0");
like($err, qr/the chunks of model "x" version 1 cannot be deleted while the version exists/, 'restored chunks cannot be deleted apart from their version');

# the DROP EXTENSION guard is part of the restored extension
($rc, $out, $err) = $node->psql('restored', 'DROP EXTENSION pepnet');
isnt($rc, 0, 'DROP EXTENSION pepnet refused in the restored database');
like($err, qr/cannot drop extension pepnet: it would delete \d+ stored model versions/, '... with a message that says why');

$node->stop;
done_testing();
