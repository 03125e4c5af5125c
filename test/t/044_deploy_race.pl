# test/t/044_deploy_race.pl: a deploy racing a DELETE of its version gets docs/api.md's SQLSTATE.
#
# A transaction deletes a version and holds its commit; a concurrent pepnet_deploy of that version
# (by number, and by 'latest') has checked that the version exists and waits on the deleted row in
# the version guard's FOR KEY SHARE (pepnet._version_exists, which replaced the foreign key).  Once
# the delete commits, the deploy fails with 42704 (the version does not exist), not 23503 as for
# direct DML, and the deployment is unchanged.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $node = PostgreSQL::Test::Cluster->new('deploy_race');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\n");
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

sub bg
{
	my ($sql) = @_;
	my $r = { out => '', err => '' };
	$r->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'VERBOSITY=verbose', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $sql ],
		'>', \$r->{out}, '2>', \$r->{err}, IPC::Run::timeout(120));
	return $r;
}

sub bg_finish
{
	my ($r) = @_;
	$r->{h}->finish;
	$r->{rc} = $r->{h}->result(0);
	return $r;
}

sub session
{
	my $s = { in => '', out => '', err => '' };
	$s->{h} = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr($db) ],
		'<', \$s->{in}, '>', \$s->{out}, '2>', \$s->{err}, IPC::Run::timeout(120));
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

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 20}], "persona": [{"name": "user", "buckets": 5}], "emb_dim": 2, "hidden": [2]}';
sq(qq{SET client_min_messages = warning; CREATE EXTENSION pepnet;
	SELECT pepnet_create('r', '$CFG', seed => s) FROM generate_series(1, 3) s; SELECT pepnet_deploy('r', 1);});

for my $case ([ 'by number', 2, q{SELECT pepnet_deploy('r', 2)} ], [ q{'latest'}, 3, q{SELECT pepnet_deploy('r', 'latest')} ])
{
	my ($what, $v, $sql) = @$case;
	my $del = session();
	say($del, "BEGIN; DELETE FROM pepnet.models WHERE name = 'r' AND version = $v; SELECT 1;");
	my $dep = bg($sql);
	ok($node->poll_query_until($db,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT pepnet_deploy%'"),
		"deploy $what of r\@$v waits for the transaction deleting it");
	say($del, 'COMMIT;');
	$del->{in} .= "\\q\n";
	$del->{h}->finish;
	bg_finish($dep);
	isnt($dep->{rc}, 0, "deploy $what of r\@$v fails once the delete commits");
	like($dep->{err}, qr/ERROR:  42704: model "r" has no version $v/, "deploy $what: 42704 (docs/api.md), not 23503")
	  or diag($dep->{err});
	is(sq("SELECT version FROM pepnet.deployments WHERE name = 'r'"), '1', "deploy $what: r\@1 is still deployed");
}
$node->stop;
done_testing();
