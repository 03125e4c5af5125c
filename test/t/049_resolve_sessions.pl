# test/t/049_resolve_sessions.pl: what a model reference means, seen from a session that keeps
# prepared statements while other sessions deploy, create versions, and drop, re-create, rename or
# upgrade pepnet's tables.
#
# References are resolved per statement by index scans of the primary keys of pepnet.models and
# pepnet.deployments with the statement's snapshot (src/models.c), with the tables' OIDs cached per
# backend and dropped on invalidation (src/cache.c): each statement sees the deployments committed
# before its snapshot (REPEATABLE READ: the transaction's), a re-created extension is found again,
# a renamed table or schema gives the documented error, and a table whose primary key was dropped
# is read by the SQL form with the same results and errors.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('resolve_sessions');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\n");
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 20}], "persona": [{"name": "user", "buckets": 5}], "emb_dim": 2, "hidden": [3]}';
my $SCORE = q{SELECT round(score::numeric, 12) FROM pepnet_score(%s, 1, '{2}', '{3}')};

# versions 1..3 of r and 1..2 of q, each from another seed: a score names its version
sq(qq{SET client_min_messages = warning; CREATE EXTENSION pepnet;
	SELECT pepnet_create('r', '$CFG', seed => s) FROM generate_series(1, 3) s;
	SELECT pepnet_create('q', '$CFG', seed => 10 + s) FROM generate_series(1, 2) s;
	SELECT pepnet_deploy('r', 1);});

# the version whose score a result is (by its pinned reference 'name@N')
my %version_of;
sub learn
{
	my ($name, $v) = @_;
	my $s = sq(sprintf($SCORE, "'$name\@$v'"));
	$version_of{"$name:$s"} = $v;
	return $s;
}
learn('r', $_) for 1 .. 3;
learn('q', $_) for 1 .. 2;
is(scalar(keys %version_of), 5, 'the five versions score the candidate differently');

my $a = $node->background_psql($db, on_error_stop => 0);
$a->query_safe(sprintf("PREPARE s(text) AS $SCORE", '$1'));
$a->query_safe(q{PREPARE p(text) AS SELECT round(pepnet_predict($1, 1, '{2}', '{3}')::numeric, 12)});

sub used
{
	my ($name, $stmt) = @_;
	my $s = $a->query_safe("EXECUTE " . ($stmt // 's') . "('$name')");
	return $version_of{"$name:$s"} // "unknown score $s";
}

# pepnet_predict's score differs from pepnet_score's in the last bits: map it by its own values
for my $v (1 .. 3)
{
	my $s = sq(qq{SELECT round(pepnet_predict('r\@$v', 1, '{2}', '{3}')::numeric, 12)});
	$version_of{"r:p$s"} = $v;
}
sub used_predict
{
	my $s = $a->query_safe(q{EXECUTE p('r')});
	return $version_of{"r:p$s"} // "unknown score $s";
}

is(used('r'), 1, 'the deployed version r@1');
is(used_predict(), 1, 'pepnet_predict: the deployed version r@1');
is(used('q'), 2, 'q (not deployed): its latest version');

# a deploy committed by another session: the next statement of the session sees it
sq(q{SELECT pepnet_deploy('r', 2)});
is(used('r'), 2, 'a deploy by another session is seen by the next EXECUTE');
is(used_predict(), 2, 'pepnet_predict: a deploy by another session is seen by the next EXECUTE');

# a new latest version, and a deployment of q made and deleted
sq(qq{SELECT pepnet_create('q', '$CFG', seed => 13)});
learn('q', 3);
is(used('q'), 3, 'a version created by another session is the latest at the next statement');
sq(q{SELECT pepnet_deploy('q', 1)});
is(used('q'), 1, 'q deployed at 1 by another session');
sq(q{DELETE FROM pepnet.deployments WHERE name = 'q'});
is(used('q'), 3, 'the deployment deleted by another session: the latest again');

# READ COMMITTED transaction: each statement its own snapshot
$a->query_safe('BEGIN');
is(used('r'), 2, 'read committed: r@2');
sq(q{SELECT pepnet_deploy('r', 3)});
is(used('r'), 3, 'read committed: the next statement in the transaction sees the deploy');
$a->query_safe('COMMIT');

# REPEATABLE READ: the transaction's snapshot, whatever is deployed meanwhile
$a->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
is(used('r'), 3, 'repeatable read: r@3');
sq(q{SELECT pepnet_deploy('r', 1)});
is(used('r'), 3, 'repeatable read: the snapshot\'s deployment r@3 after another session deployed r@1');
is(used_predict(), 3, 'repeatable read: pepnet_predict too');
sq(qq{SELECT pepnet_create('q', '$CFG', seed => 14)});
is(used('q'), 3, 'repeatable read: the snapshot\'s latest version q@3 after q@4 was created');
$a->query_safe('COMMIT');
learn('q', 4);
is(used('r'), 1, 'after the transaction: r@1');
is(used('q'), 4, 'after the transaction: q@4');

# the SQL form where the primary keys are gone: the same versions and errors
sub errs
{
	my ($sql) = @_;
	$a->{stderr} = '';
	$a->query("\\set VERBOSITY verbose\n$sql");
	my $e = $a->{stderr};
	$a->{stderr} = '';
	$e =~ s/^psql:<stdin>:\d+: //mg;
	$e =~ s/^background_psql: QUERY_SEPARATOR.*\n//mg;
	return $e;
}
# a deployment of a version this node lacks (as logical replication can leave it: no triggers)
sq(q{SET session_replication_role = replica; INSERT INTO pepnet.deployments (name, version) VALUES ('gone', 7)});
my %fast = (
	deployed_missing => errs(q{EXECUTE s('gone')}),
	missing_version => errs(q{EXECUTE s('r@9')}),
	missing_name => errs(q{EXECUTE s('nope')}),
	missing_name_v => errs(q{EXECUTE s('nope@2')}));
like($fast{missing_version}, qr/ERROR:  42704: model "r" has no version 9.*\nDETAIL:  Its latest version is 3\./s,
	'r@9: 42704 naming the latest version');
like($fast{missing_name}, qr/ERROR:  42704: model "nope" does not exist/, 'an unknown name: 42704');
like($fast{deployed_missing}, qr/ERROR:  42704: model "gone" is deployed at version 7, which does not exist on this node/,
	'a deployment of a missing version: 42704');
sq(q{ALTER TABLE pepnet.models DROP CONSTRAINT models_pkey; ALTER TABLE pepnet.deployments DROP CONSTRAINT deployments_pkey});
is(used('r'), 1, 'without the primary keys: r@1 (the SQL form)');
is(used('q'), 4, 'without the primary keys: q@4');
sq(q{UPDATE pepnet.deployments SET version = 2 WHERE name = 'r'});
is(used('r'), 2, 'without the primary keys: a deployment changed by another session is seen by the next statement');
is(errs(q{EXECUTE s('r@9')}), $fast{missing_version}, 'without the primary keys: the same error for r@9');
is(errs(q{EXECUTE s('nope')}), $fast{missing_name}, 'without the primary keys: the same error for an unknown name');
is(errs(q{EXECUTE s('nope@2')}), $fast{missing_name_v}, 'without the primary keys: the same error for nope@2');
is(errs(q{EXECUTE s('gone')}), $fast{deployed_missing}, 'without the primary keys: the same error for a deployment of a missing version');
sq(q{SET session_replication_role = replica; DELETE FROM pepnet.deployments WHERE name = 'gone'});
sq(q{ALTER TABLE pepnet.models ADD PRIMARY KEY (name, version); ALTER TABLE pepnet.deployments ADD PRIMARY KEY (name)});
is(used('r'), 2, 'the primary keys back: r@2');

# a renamed table or schema: the documented error, and back
sq(q{ALTER TABLE pepnet.models RENAME TO models_away});
like(errs(q{EXECUTE s('r')}), qr/ERROR:  42P01: table pepnet.models does not exist/,
	'pepnet.models renamed by another session: 42P01');
sq(q{ALTER TABLE pepnet.models_away RENAME TO models});
is(used('r'), 2, 'renamed back: r@2');
sq(q{ALTER SCHEMA pepnet RENAME TO pepnet_away});
like(errs(q{EXECUTE s('r')}), qr/ERROR:  42P01: table pepnet.models does not exist/,
	'schema pepnet renamed by another session: 42P01');
sq(q{ALTER SCHEMA pepnet_away RENAME TO pepnet});
is(used('r'), 2, 'schema renamed back: r@2');

# DROP EXTENSION and CREATE EXTENSION by another session: versions start over
sq(qq{SET pepnet.allow_drop = on; SET client_min_messages = warning; DROP EXTENSION pepnet; CREATE EXTENSION pepnet;
	SELECT pepnet_create('r', '$CFG', seed => 3); SELECT pepnet_create('r', '$CFG', seed => 2);});
is(used('r'), 2, 'extension re-created by another session: r is its latest version, r@2 (seed 2)');
my $r1 = sq(sprintf($SCORE, q{'r@1'}));
is($a->query_safe(q{EXECUTE s('r@1')}), $r1, 'r@1 of the new extension (seed 3), not the cached one');

# ... and in the same session
$a->query_safe(qq{SET pepnet.allow_drop = on; SET client_min_messages = warning; DROP EXTENSION pepnet; CREATE EXTENSION pepnet;
	SELECT pepnet_create('r', '$CFG', seed => 1) IS NOT NULL});
is(used('r'), 1, 'extension re-created in the session: r@1 is seed 1 again');
$a->query_safe(qq{SELECT pepnet_create('r', '$CFG', seed => 2) IS NOT NULL});
is(used('r'), 2, 'and its next version is the latest');
$a->query_safe(q{SELECT pepnet_deploy('r', 1)});
is(used('r'), 1, 'deployed in the session: r@1');

# ALTER EXTENSION UPDATE by another session: a session holding prepared statements scores on
sq(qq{SET pepnet.allow_drop = on; SET client_min_messages = warning; DROP EXTENSION pepnet;
	CREATE EXTENSION pepnet VERSION '0.2.0'; SELECT pepnet_create('r', '$CFG', seed => 1); SELECT pepnet_create('r', '$CFG', seed => 3);});
is(used('r'), 3, 'extension 0.2.0: r@2 (seed 3) is the latest');
sq(q{ALTER EXTENSION pepnet UPDATE TO '0.3.0'});
is(used('r'), 3, 'after ALTER EXTENSION pepnet UPDATE by another session: the same version');
sq(q{SELECT pepnet_deploy('r', 1)});
is(used('r'), 1, 'after the update: a deploy is seen by the next statement');

$a->quit;
$node->stop;
done_testing();
