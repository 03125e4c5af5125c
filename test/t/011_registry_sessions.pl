# The registry under concurrent sessions: two sessions storing versions of one name get distinct
# numbers (the second waits for the first's high-water row, no duplicate key), and concurrent
# deploys of one name leave a consistent history (each row's from_version is the previous row's
# to_version).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('sessions');
$node->init;
$node->start;
$node->safe_psql('postgres', 'CREATE EXTENSION pepnet');
my $cfg = '{"domains": 1, "features": [{"name": "a", "buckets": 4}], "emb_dim": 2, "hidden": [4]}';

my $a = $node->background_psql('postgres');
my $b = $node->background_psql('postgres');
my $b_pid = $b->query_safe('SELECT pg_backend_pid()');

sub wait_blocked
{
	my ($pid) = @_;
	return $node->poll_query_until('postgres',
		"SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid");
}

# a brand-new name, then an existing one: B waits for A, then gets the next number
for my $round (1, 2)
{
	$a->query_safe('BEGIN');
	my $va = $a->query_safe("SELECT pepnet_create('c', '$cfg', $round)");
	$b->query_until(qr/started/, "\\echo started\nSELECT 'got ' || pepnet_create('c', '$cfg', 10 + $round);\n");
	ok(wait_blocked($b_pid), "round $round: the second writer of the name waits for the first");
	$a->query_safe('COMMIT');
	my $out = $b->query_until(qr/got \d+/, '');
	my ($vb) = $out =~ /got (\d+)/;
	is($vb, $va + 1, "round $round: distinct consecutive numbers ($va, $vb)");
}
is($node->safe_psql('postgres', "SELECT string_agg(version::text, ',' ORDER BY version) FROM pepnet.models WHERE name = 'c'"),
	'1,2,3,4', 'four versions, no gaps, no duplicates');

# concurrent deploys: B's deploy waits for A's, and its history row starts where A's ended
$a->query_safe('BEGIN');
$a->query_safe("SELECT pepnet_deploy('c', 1)");
$b->query_until(qr/started/, "\\echo started\nSELECT 'deployed ' || pepnet_deploy('c', 'latest');\n");
ok(wait_blocked($b_pid), 'the second deploy of the name waits for the first');
$a->query_safe("SELECT pepnet_deploy('c', 2)");
$a->query_safe('COMMIT');
like($b->query_until(qr/deployed \d+/, ''), qr/deployed 4/, 'the waiting deploy then deploys the latest version');
is($node->safe_psql('postgres',
		"SELECT string_agg(format('%s:%s>%s:%s', seq, from_version, to_version, strategy), ' ' ORDER BY seq) FROM pepnet.deploy_history WHERE name = 'c'"),
	'1:>1:version 2:1>2:version 3:2>4:latest', 'the history is a consistent chain');
is($node->safe_psql('postgres', "SELECT version FROM pepnet.deployments WHERE name = 'c'"), '4', 'deployed: 4');

$a->quit;
$b->quit;
$node->stop;
done_testing();
