# pepnet's model registry published by logical replication to a read-only subscriber:
# versions, deployments, history and high-water marks arrive bit-identical; subscriber-side
# writes are refused (functions and direct DML); sessions on the subscriber follow deploys;
# a replicated DELETE of a version the subscriber has deployed cannot leave it broken (nor delete
# its chunks).  Weights are stored in chunks of 256 bytes: every version spans many rows of
# pepnet.model_chunks, which the publication includes.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $pub = PostgreSQL::Test::Cluster->new('registry');
$pub->init(allows_streaming => 'logical');
$pub->append_conf('postgresql.conf', "pepnet.chunk_size = 256\n");
$pub->start;
my $sub = PostgreSQL::Test::Cluster->new('replica');
$sub->init;
$sub->append_conf('postgresql.conf', "pepnet.read_only = on\n");
$sub->start;

my $cfg = '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "persona": [{"name": "u", "buckets": 8}], "emb_dim": 4, "hidden": [8]}';
my $data = q{SELECT i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, ((i * 7) % 3 = 0) AS label FROM generate_series(1, 300) i};
(my $data_q = $data) =~ s/'/''/g;

for my $n ($pub, $sub)
{
	$n->safe_psql('postgres', 'CREATE EXTENSION pepnet');
}
# versions made before the subscription arrive with the initial copy
$pub->safe_psql('postgres', qq{
	SELECT pepnet_create('m', '$cfg', 1);
	SELECT pepnet_create('m', '$cfg', 2);
	SELECT pepnet_deploy('m', 1);
});

# the publication README documents
$pub->safe_psql('postgres',
	'CREATE PUBLICATION pepnet_registry FOR TABLE pepnet.models, pepnet.model_chunks, pepnet.deployments, pepnet.deploy_history, pepnet.model_names');
my $connstr = $pub->connstr . ' dbname=postgres';
$sub->safe_psql('postgres', "CREATE SUBSCRIPTION pepnet_registry CONNECTION '$connstr' PUBLICATION pepnet_registry");
$sub->wait_for_subscription_sync($pub, 'pepnet_registry');

my $state = q{
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', name, version, md5(pepnet_export(name || '@' || version)), config, metrics, parent, created_at,
	                         encode(fingerprint, 'hex'), weights_size), E'\n' ORDER BY name, version) FROM pepnet.models;
	SELECT string_agg(format('%s|%s|%s|%s', name, version, seq, md5(data)), E'\n' ORDER BY name, version, seq) FROM pepnet.model_chunks;
	SELECT string_agg(format('%s|%s|%s', name, version, deployed_at), E'\n' ORDER BY name) FROM pepnet.deployments;
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, seq, from_version, to_version, strategy, deployed_by, deployed_at), E'\n' ORDER BY name, seq) FROM pepnet.deploy_history;
	SELECT string_agg(format('%s|%s', name, last_version), E'\n' ORDER BY name) FROM pepnet.model_names;
};
sub scores
{
	my ($node, $ref) = @_;
	return $node->safe_psql('postgres',
		"SELECT string_agg(s.scores::text, ';' ORDER BY s.idx) FROM pepnet_score('$ref', 1, '{3}', ARRAY[[1], [2], [40]]::bigint[]) s");
}

is($sub->safe_psql('postgres', $state), $pub->safe_psql('postgres', $state), 'initial copy: registry identical (chunks row for row)');
cmp_ok($sub->safe_psql('postgres', "SELECT count(*) FROM pepnet.model_chunks WHERE name = 'm' AND version = 1"), '>', 10,
	'version 1 arrived as more than 10 chunks of 256 bytes');

# a persistent subscriber session scores the deployed version
my $session = $sub->background_psql('postgres');
my $s1 = $session->query_safe("SELECT string_agg(s.scores::text, ';' ORDER BY s.idx) FROM pepnet_score('m', 1, '{3}', ARRAY[[1], [2], [40]]::bigint[]) s");
is($s1, scores($pub, 'm@1'), 'subscriber session scores the deployed version 1');

# new versions (trained), deploys by strategy and history travel
$pub->safe_psql('postgres',
	"CALL pepnet_train('m', '$data_q', epochs => 2, batch_size => 64, lr => 0.01, progress_interval => 0)");
$pub->safe_psql('postgres', "SELECT pepnet_deploy('m', 'latest')");
$pub->safe_psql('postgres', "DELETE FROM pepnet.models WHERE name = 'm' AND version = 2");
$pub->wait_for_catchup('pepnet_registry');
is($sub->safe_psql('postgres', $state), $pub->safe_psql('postgres', $state),
	'after training, a deploy and a delete on the publisher: versions, deployments, history and marks identical');
is($sub->safe_psql('postgres', "SELECT version FROM pepnet.deployments WHERE name = 'm'"), '4', 'the deploy arrived');
is(scores($sub, 'm'), scores($pub, 'm'), 'scores on the subscriber equal the publisher\'s');

my $s2 = $session->query_safe("SELECT string_agg(s.scores::text, ';' ORDER BY s.idx) FROM pepnet_score('m', 1, '{3}', ARRAY[[1], [2], [40]]::bigint[]) s");
is($s2, scores($pub, 'm@4'), 'the same subscriber session follows the deploy at its next statement');
isnt($s2, $s1, '... and the scores changed with the version');

# rollback on the publisher, followed by the subscriber session
$pub->safe_psql('postgres', "SELECT pepnet_deploy('m', 'previous')");
$pub->wait_for_catchup('pepnet_registry');
is($session->query_safe("SELECT version FROM pepnet.deployments WHERE name = 'm'"), '1', 'rollback arrived');
is($session->query_safe("SELECT string_agg(s.scores::text, ';' ORDER BY s.idx) FROM pepnet_score('m', 1, '{3}', ARRAY[[1], [2], [40]]::bigint[]) s"),
	$s1, 'the subscriber session scores version 1 again');
is($sub->safe_psql('postgres', "SELECT string_agg(format('%s>%s:%s', from_version, to_version, strategy), ' ' ORDER BY seq) FROM pepnet.deploy_history WHERE name = 'm'"),
	'>1:version 1>4:latest 4>1:previous', 'the subscriber holds the publisher\'s deploy history');

# subscriber-side writes are refused, before any work
my @writes = (
	[ "SELECT pepnet_create('m', '$cfg')", 'pepnet_create' ],
	[ "SELECT pepnet_import('m', '$cfg', pepnet_export('m\@1'))", 'pepnet_import' ],
	[ "SELECT pepnet_deploy('m', 3)", 'pepnet_deploy' ],
	[ "SELECT pepnet_deploy('m', 'latest')", 'pepnet_deploy by strategy' ],
	[ "CALL pepnet_train('m', '$data_q')", 'CALL pepnet_train' ],
	[ "INSERT INTO pepnet.models SELECT name, 99, config, weights FROM pepnet.models WHERE name = 'm' AND version = 1", 'INSERT INTO pepnet.models' ],
	[ "UPDATE pepnet.models SET metrics = '{}'", 'UPDATE pepnet.models' ],
	[ "DELETE FROM pepnet.models WHERE version = 3", 'DELETE FROM pepnet.models' ],
	[ "UPDATE pepnet.deployments SET version = 3", 'UPDATE pepnet.deployments' ],
	[ "DELETE FROM pepnet.deploy_history", 'DELETE FROM pepnet.deploy_history' ],
	[ "TRUNCATE pepnet.model_names", 'TRUNCATE pepnet.model_names' ],
	[ "DELETE FROM pepnet.model_chunks WHERE name = 'm' AND version = 1 AND seq = 0", 'DELETE FROM pepnet.model_chunks' ],
	[ "SELECT pepnet_import_chunks('m', '$cfg', 'SELECT data FROM pepnet_export_chunks(''m\@1'')')", 'pepnet_import_chunks' ]);
for my $w (@writes)
{
	my ($rc, $out, $err) = $sub->psql('postgres', "\\set VERBOSITY verbose\n" . $w->[0]);
	like($err, qr/ERROR:\s+25006: .*read-only on this node/, "subscriber refuses $w->[1]");
}
# an ordinary role cannot turn read-only mode off, not even by setting it before the library loads
$sub->safe_psql('postgres', 'CREATE ROLE reader LOGIN');
my ($rc, $out, $err) = $sub->psql('postgres', "SET pepnet.read_only = off;\nSELECT pepnet_create('r', '$cfg');",
	extra_params => [ '-U', 'reader' ]);
like($err, qr/pepnet_create is not allowed: pepnet is read-only on this node/, 'an ordinary role cannot turn read-only mode off');
($rc, $out, $err) = $sub->psql('postgres', "SELECT pepnet_cache_clear();\nSET pepnet.read_only = off;", extra_params => [ '-U', 'reader' ]);
like($err, qr/permission denied to set parameter "pepnet.read_only"/, '... also once the library is loaded');
is($sub->safe_psql('postgres', $state), $pub->safe_psql('postgres', $state), 'the refused writes changed nothing');

# the subscriber has deployed a version of its own (a superuser overriding read-only mode);
# a replicated DELETE of that version is skipped: the subscriber keeps serving, replication goes on
$pub->safe_psql('postgres', "SELECT pepnet_create('h', '$cfg', 5); SELECT pepnet_create('h', '$cfg', 6)");
$pub->wait_for_catchup('pepnet_registry');
$sub->safe_psql('postgres', "SET pepnet.read_only = off; SELECT pepnet_deploy('h', 1)");
my $h1 = scores($sub, 'h@1');
$pub->safe_psql('postgres', "DELETE FROM pepnet.models WHERE name = 'h' AND version = 1");
$pub->safe_psql('postgres', "SELECT pepnet_create('h', '$cfg', 7)");
$pub->wait_for_catchup('pepnet_registry');
is($sub->safe_psql('postgres', "SELECT string_agg(version::text, ',' ORDER BY version) FROM pepnet.models WHERE name = 'h'"),
	'1,2,3', 'the deployed version was kept, later versions still arrive');
is(scores($sub, 'h'), $h1, 'the subscriber still scores its deployed version');
is($sub->safe_psql('postgres', "SELECT count(*) FROM pepnet.model_chunks WHERE name = 'h' AND version = 1"),
	$sub->safe_psql('postgres', "SELECT count(*) FROM pepnet.model_chunks WHERE name = 'h' AND version = 2"),
	'... with all its chunks: the replicated DELETEs of its chunks were skipped too');
is($pub->safe_psql('postgres', "SELECT count(*) FROM pepnet.model_chunks WHERE name = 'h' AND version = 1"), '0',
	'(on the publisher the chunks went with the version)');
ok($sub->wait_for_log(qr/kept model "h" version 1: it is deployed on this node/), 'the apply worker logged a WARNING');

# a node that receives only some versions (a row filter) but every deployment: scoring a bare
# name deployed at a version the node lacks says so, and pinned references keep working
$pub->safe_psql('postgres', qq{
	CREATE PUBLICATION pepnet_recent FOR TABLE pepnet.models WHERE (version > 1), pepnet.model_chunks WHERE (version > 1), pepnet.deployments;
	SELECT pepnet_create('f', '$cfg', 1);
	SELECT pepnet_create('f', '$cfg', 2);
	SELECT pepnet_deploy('f', 1);
});
$sub->safe_psql('postgres', 'CREATE DATABASE partial');
$sub->safe_psql('partial', 'CREATE EXTENSION pepnet');
$sub->safe_psql('partial', "CREATE SUBSCRIPTION pepnet_recent CONNECTION '$connstr' PUBLICATION pepnet_recent");
$sub->wait_for_subscription_sync($pub, 'pepnet_recent');
($rc, $out, $err) = $sub->psql('partial', "\\set VERBOSITY verbose\nSELECT * FROM pepnet_score('f', 1, '{3}', '{1}')");
like($err, qr/42704: model "f" is deployed at version 1, which does not exist on this node/,
	'a deployment of a version the node lacks: a clear error, not "does not exist"');
is($sub->safe_psql('partial', "SELECT count(*) FROM pepnet_score('f\@2', 1, '{3}', '{1}')"), '1', 'f@2 still scores there');

# versions carry no node-local identity: every node numbers alike, nothing collides
is($sub->safe_psql('postgres', "SELECT count(*) FROM pg_sequences WHERE schemaname = 'pepnet'"), '0', 'no sequences in schema pepnet');

$session->quit;
$sub->stop;
$pub->stop;
done_testing();
