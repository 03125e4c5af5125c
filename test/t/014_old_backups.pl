# test/t/014_old_backups.pl: a backup taken under any released version (0.1.0, 0.2.0) restores under
# the current one by plain pg_restore (or psql for -Fp): the dump's CREATE EXTENSION pepnet makes
# the current version and the old rows load into it.
#
# Database "v010": CREATE EXTENSION pepnet VERSION '0.1.0', versions created, imported and trained
# by 0.1.0's SQL (with the installed library), one deployed.  Database "v020": CREATE EXTENSION
# pepnet VERSION '0.2.0', versions trained (Adam state in chunks), created, deleted, deployed and
# rolled back, in chunks of 256 bytes.  Each is dumped with pg_dump -Fc and -Fp and restored into a
# fresh database (-Fc serially and with -j 4); then pg_restore reports nothing, extversion is the
# current one, every version is there with the same config, metrics, parent, created_at, exports
# and scores, the fingerprint 0.1.0's rows would get from ALTER EXTENSION UPDATE (0.2.0's as
# stored), pepnet_verify true, every deployment (and 0.2.0's history, Adam state and marks), and
# numbering, training and deploys continue.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('old_backups');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\npepnet.chunk_size = 256\n");
$node->start;

my $cfg = '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "persona": [{"name": "u", "buckets": 8}], "emb_dim": 4, "hidden": [8]}';
my $data = q{SELECT i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, ((i * 7) % 3 = 0) AS label FROM generate_series(1, 300) i};
(my $data_q = $data) =~ s/'/''/g;
my $current = $node->safe_psql('postgres', "SELECT default_version FROM pg_available_extensions WHERE name = 'pepnet'");

$node->safe_psql('postgres', 'CREATE DATABASE v010; CREATE DATABASE v020;');
$node->safe_psql('v010', qq{
	SET client_min_messages = warning;
	CREATE EXTENSION pepnet VERSION '0.1.0';
	SELECT pepnet_create('made', '$cfg', 1);
	SELECT pepnet_create('made', '$cfg', 2);
	SELECT pepnet_import('imported', '$cfg', pepnet_export('made\@2'));
	CALL pepnet_train('trained', '$data_q', '$cfg', epochs => 2, batch_size => 64, lr => 0.02, progress_interval => 0);
	SELECT pepnet_deploy('made', 2);
	SELECT pepnet_deploy('trained', 1);
});
$node->safe_psql('v020', qq{
	SET client_min_messages = warning;
	CREATE EXTENSION pepnet VERSION '0.2.0';
	CALL pepnet_train('trained', '$data_q', config => '$cfg', epochs => 2, batch_size => 64, lr => 0.02, progress_interval => 0, deploy => true);
	SELECT pepnet_create('made', '$cfg', 1);
	SELECT pepnet_create('made', '$cfg', 2);
	SELECT pepnet_create('made', '$cfg', 3);
	DELETE FROM pepnet.models WHERE name = 'made' AND version = 3;
	SELECT pepnet_deploy('made', 1);
	SELECT pepnet_deploy('made', 2);
	SELECT pepnet_deploy('made', 'previous');
});
is($node->safe_psql('v010', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.1.0', 'v010 is at 0.1.0');
is($node->safe_psql('v020', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.2.0', 'v020 is at 0.2.0');
cmp_ok($node->safe_psql('v020', "SELECT count(*) FROM pepnet.optimizer_chunks"), '>', 4, 'v020: Adam moments in chunks');

# what every release's rows say of a version, and the current functions' view of it
my $ROWS = q{SELECT string_agg(format('%s|%s|%s|%s|%s|%s', name, version, config, metrics, parent, created_at), E'\n' ORDER BY name, version) FROM pepnet.models};
my $EXPORTS = q{SELECT string_agg(format('%s@%s %s', name, version, md5(pepnet_export(name || '@' || version))), E'\n' ORDER BY name, version) FROM pepnet.models};
my $SCORES = q{SELECT string_agg(format('%s@%s %s', m.name, m.version, s.scores), E'\n' ORDER BY m.name, m.version, s.idx)
	FROM pepnet.models m, pepnet_score(m.name || '@' || m.version, 1, '{3}', ARRAY[[1], [2], [40]]::bigint[]) s};
my $BARE = q{SELECT string_agg(format('%s %s', n, s.score), E'\n' ORDER BY n) FROM (SELECT DISTINCT name AS n FROM pepnet.models) d, pepnet_score(n, 0, '{5}', ARRAY[[7]]::bigint[]) s};
my $DEPLOYED = q{SELECT string_agg(format('%s|%s|%s', name, version, deployed_at), E'\n' ORDER BY name) FROM pepnet.deployments};
# the fingerprint by its definition (what ALTER EXTENSION UPDATE computes for 0.1.0's rows)
my $FP_010 = q{SELECT string_agg(format('%s@%s %s', name, version, encode(sha256(int8send(octet_length(config::text)::int8) || convert_to(config::text, 'UTF8') || weights), 'hex')), E'\n' ORDER BY name, version) FROM pepnet.models};
my $FP = q{SELECT string_agg(format('%s@%s %s', name, version, encode(fingerprint, 'hex')), E'\n' ORDER BY name, version) FROM pepnet.models};
my $VERIFY = q{SELECT string_agg(format('%s@%s %s', name, version, pepnet_verify(name || '@' || version)), E'\n' ORDER BY name, version) FROM pepnet.models};
# 0.2.0's tables besides models and deployments
my $MORE_020 = q{
	SELECT string_agg(format('%s|%s|%s|%s', name, version, seq, md5(data)), E'\n' ORDER BY name, version, seq) FROM pepnet.model_chunks;
	SELECT string_agg(format('%s|%s|%s|%s|%s', name, version, steps, epochs, created_at), E'\n' ORDER BY name, version) FROM pepnet.optimizer_state;
	SELECT string_agg(format('%s|%s|%s|%s|%s', name, version, moment, seq, md5(data)), E'\n' ORDER BY name, version, moment, seq) FROM pepnet.optimizer_chunks;
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, seq, from_version, to_version, strategy, deployed_by, deployed_at), E'\n' ORDER BY name, seq) FROM pepnet.deploy_history;
	SELECT string_agg(format('%s|%s', name, last_version), E'\n' ORDER BY name) FROM pepnet.model_names;
};

my %before;
for my $db ('v010', 'v020')
{
	$before{$db} = { map { $_->[0] => $node->safe_psql($db, $_->[1]) }
		  ([ rows => $ROWS ], [ exports => $EXPORTS ], [ scores => $SCORES ], [ bare => $BARE ], [ deployed => $DEPLOYED ]) };
}
$before{v010}{fp} = $node->safe_psql('v010', $FP_010);
$before{v020}{fp} = $node->safe_psql('v020', $FP);
$before{v020}{more} = $node->safe_psql('v020', $MORE_020);
my %verified = ('v010' => $node->safe_psql('v010', "SELECT string_agg(format('%s\@%s t', name, version), E'\n' ORDER BY name, version) FROM pepnet.models"));
$verified{v020} = $node->safe_psql('v020', "SELECT string_agg(format('%s\@%s t', name, version), E'\n' ORDER BY name, version) FROM pepnet.models");

my $dir = $node->basedir;
my $n = 0;
for my $db ('v010', 'v020')
{
	(my $rel = $db) =~ s/v0(\d)0/0.$1.0/;
	$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/$db.dump", '-d', $node->connstr($db) ], "pg_dump -Fc under $rel");
	$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dir/$db.sql", '-d', $node->connstr($db) ], "pg_dump -Fp under $rel");
	for my $how ([ 'pg_restore', "$dir/$db.dump" ], [ 'pg_restore', '-j', '4', "$dir/$db.dump" ],
		[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$dir/$db.sql" ])
	{
		my $what = "$rel backup, " . join(' ', map { m{/} ? (m{\.sql$} ? '(-Fp)' : '(-Fc)') : $_ } @$how);
		my $target = 'r' . ++$n;
		$node->safe_psql('postgres', "CREATE DATABASE $target");
		my ($stdout, $stderr) = run_command([ @$how, '-d', $node->connstr($target) ]);
		is($stderr, '', "$what: no errors") or diag($stderr);
		is($node->safe_psql($target, "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), $current, "$what: extension at $current");
		my %after = map { $_->[0] => $node->safe_psql($target, $_->[1]) }
		  ([ rows => $ROWS ], [ exports => $EXPORTS ], [ scores => $SCORES ], [ bare => $BARE ], [ deployed => $DEPLOYED ]);
		is_deeply(\%after, { map { $_ => $before{$db}{$_} } keys %after },
			"$what: every version (config, metrics, parent, created_at), export, score of every version and bare name, deployment as in $rel");
		is($node->safe_psql($target, $FP), $before{$db}{fp},
			"$what: fingerprints " . ($db eq 'v010' ? 'computed from the weights, as ALTER EXTENSION UPDATE would' : 'as stored'));
		{
			# (a fingerprint with a 0x00 byte made pepnet_verify false: issue 15's item 4, fixed on its own)
			my $zero = $node->safe_psql($target, "SELECT count(*) FROM pepnet.models WHERE position('\\x00'::bytea IN fingerprint) > 0 AND NOT pepnet_verify(name || '\@' || version)");
			local $TODO = $zero ? "$zero versions whose fingerprint has a 0x00 byte: pepnet_verify's fix is merged separately" : undef;
			is($node->safe_psql($target, $VERIFY), $verified{$db}, "$what: pepnet_verify true for every version");
		}
		is($node->safe_psql($target, $MORE_020), $before{v020}{more}, "$what: chunks, Adam state and moments, deploy history and marks as in 0.2.0")
		  if $db eq 'v020';
		my $next = $node->safe_psql($db, "BEGIN; SELECT pepnet_create('made', '$cfg', 9); ROLLBACK;");
		$next = 4 if $db eq 'v020';    # under 0.2.0 the deleted made@3 is never reused
		is($node->safe_psql($target, "SELECT pepnet_create('made', '$cfg', 9)"), $next, "$what: numbering continues (made\@$next)");
		my ($rc, $out, $err) = $node->psql($target, qq{
			SET client_min_messages = warning;
			CALL pepnet_train('trained', '$data_q', epochs => 1, batch_size => 64, lr => 0.01, progress_interval => 0);
			SELECT pepnet_deploy('trained', 'latest');
			SELECT parent || ' ' || (SELECT count(*) FROM pepnet.deployments WHERE name = 'trained' AND version = m.version)
			FROM pepnet.models m WHERE name = 'trained' ORDER BY version DESC LIMIT 1;
		}, on_error_stop => 1);
		like($out, qr/^[12] 1$/m, "$what: training continues from the restored version and deploys") or diag($err);
		$node->safe_psql('postgres', "DROP DATABASE $target");
	}
}

# --- a 0.2.0 table with a generated column over the pinned pepnet_predict (allowed by 0.2.0)
$node->safe_psql('postgres', 'CREATE DATABASE v020gen');
$node->safe_psql('v020gen', qq{
	SET client_min_messages = warning;
	CREATE EXTENSION pepnet VERSION '0.2.0';
	SELECT pepnet_create('made', '$cfg', 1);
	CREATE TABLE cands (i int, item bigint,
		score float8 GENERATED ALWAYS AS (pepnet_predict('made\@1'::pepnet_pinned, 0, '{1}', ARRAY[item])) STORED);
	INSERT INTO cands (i, item) SELECT i, i % 50 FROM generate_series(1, 500) i;
	CREATE INDEX cands_top ON cands ((pepnet_predict('made\@1'::pepnet_pinned, 1, '{1}', ARRAY[item])));
});
my $scores_gen = $node->safe_psql('v020gen', 'SELECT string_agg(i || \' \' || score, \',\' ORDER BY i) FROM cands');
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/v020gen.dump", '-d', $node->connstr('v020gen') ], 'pg_dump -Fc under 0.2.0 of a table with a generated column over pepnet_predict');
$node->safe_psql('postgres', 'CREATE DATABASE rgen');
my ($o, $e) = run_command([ 'pg_restore', '-d', $node->connstr('rgen'), "$dir/v020gen.dump" ]);
like($e, qr/pepnet_predict\(pepnet_pinned, \.\.\.\) cannot be used in a stored generated column, an index or a constraint: generated column score of table public\.cands/,
	'its restore under 0.3.0 fails loudly, naming the generated column') or diag($e);
like($e, qr/HINT:  Fill a plain column with UPDATE/, '... with a hint on what to use instead');
is($node->safe_psql('rgen', "SELECT count(*) FROM pepnet.models"), '1', '... and the registry is restored all the same');
# the procedure docs/api.md gives: the table with a plain column, its other columns from the backup, UPDATE
$node->safe_psql('rgen', 'CREATE TABLE cands (i int, item bigint, score float8)');
($o, $e) = run_command([ 'pg_restore', '--data-only', '-t', 'cands', '-d', $node->connstr('rgen'), "$dir/v020gen.dump" ]);
is($e, '', 'pg_restore --data-only -t cands into the table with a plain score column: no errors') or diag($e);
$node->safe_psql('rgen', "UPDATE cands SET score = pepnet_predict('made\@1'::pepnet_pinned, 0, '{1}', ARRAY[item])");
is($node->safe_psql('rgen', 'SELECT string_agg(i || \' \' || score, \',\' ORDER BY i) FROM cands'), $scores_gen,
	'the 500 rows back with the scores the generated column had');
# ALTER EXTENSION UPDATE of that database warns about the column and the index (they stay)
my ($rc, $out, $err) = $node->psql('v020gen', 'ALTER EXTENSION pepnet UPDATE');
is($rc, 0, 'ALTER EXTENSION pepnet UPDATE of a 0.2.0 database with such a column and index succeeds');
like($err, qr/WARNING:  pepnet_predict\(pepnet_pinned, \.\.\.\) is used by generated column score of table public\.cands, index public\.cands_top on table public\.cands: such tables do not restore from a dump/,
	'... with a WARNING naming the generated column and the index') or diag($err);
is($node->safe_psql('v020gen', 'SELECT count(*) FROM cands'), '500', '... which are kept');

$node->stop;
done_testing();
