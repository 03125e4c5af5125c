# test/t/013_dump_restore_modes.pl: every way a DBA dumps and restores brings every version back
# bit for bit.
#
# The source database holds trained versions (Adam state), created, deleted and deployed ones, a
# deploy history, all in chunks of 256 bytes (many rows per version), a user table whose score
# column is filled by UPDATE, and a materialized view over pinned scores (what docs/api.md gives
# instead of generated columns).  Restored by:
#   - psql of a plain dump (-Fp); pg_restore of -Fc and of -Fd (dumped with -j 2), serially;
#   - pg_restore -j 2, 4 and 8 of -Fc and -Fd: 10 restores in all, cycling over the six forms
#     (PEPNET_RESTORE_REPEAT=N for more), each into a fresh database: with foreign keys among
#     pepnet's tables, chunks and Adam state arrived before their versions and were rejected;
#   - pg_restore --data-only into a database with only CREATE EXTENSION pepnet (-n pepnet), with
#     and without --disable-triggers, and after pg_restore --schema-only (serial and -j 4);
#   - pg_dumpall into a fresh cluster.
# Each restore: pg_restore reports nothing, every table of pepnet row for row (weights and Adam
# moments by md5 of each chunk), fingerprints, exports and bundles, pepnet_verify true, scores of
# every version, the user table and the materialized view as they were, and numbering continues
# (the next pepnet_create gets the number the source gives, never a deleted one).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $REPEAT = $ENV{PEPNET_RESTORE_REPEAT} || 10;

my $node = PostgreSQL::Test::Cluster->new('modes');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\npepnet.chunk_size = 256\nmax_connections = 40\n");
$node->start;

my $cfg = '{"domains": 2, "features": [{"name": "item", "buckets": 50}], "persona": [{"name": "u", "buckets": 8}], "emb_dim": 4, "hidden": [8]}';
my $data = q{SELECT i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, ((i * 7) % 3 = 0) AS label FROM generate_series(1, 300) i};
my $valid = q{SELECT i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, ((i * 7) % 3 = 0) AS label FROM generate_series(301, 400) i};
(my $data_q = $data) =~ s/'/''/g;
(my $valid_q = $valid) =~ s/'/''/g;

$node->safe_psql('postgres', 'CREATE DATABASE src');
$node->safe_psql('src', 'CREATE EXTENSION pepnet');
$node->safe_psql('src',
	"CALL pepnet_train('m', '$data_q', config => '$cfg', validation => '$valid_q', epochs => 2, batch_size => 64, lr => 0.02, deploy => true, progress_interval => 0)");
$node->safe_psql('src', qq{
	SELECT pepnet_create('x', '$cfg', 1);
	SELECT pepnet_create('x', '$cfg', 2);
	SELECT pepnet_create('x', '$cfg', 3);
	DELETE FROM pepnet.models WHERE name = 'x' AND version = 3;
	SELECT pepnet_deploy('x', 1);
	SELECT pepnet_deploy('x', 2);
	SELECT pepnet_deploy('x', 'previous');
	CREATE TABLE cands AS SELECT i, i % 2 AS domain, ARRAY[i % 8]::bigint[] AS persona, ARRAY[i % 50]::bigint[] AS features, NULL::float8 AS score
		FROM generate_series(1, 40) i;
	UPDATE cands SET score = pepnet_predict('m\@2'::pepnet_pinned, domain, persona, features);
	CREATE MATERIALIZED VIEW top_items AS
		SELECT c.i, pepnet_predict('x\@2'::pepnet_pinned, c.domain, c.persona, c.features) AS score FROM cands c;
});

# what must come back, as text
my $STATE = q{
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s|%s', name, version, config, metrics, parent, created_at,
	                         encode(fingerprint, 'hex'), weights_size, weights IS NULL, id), E'\n' ORDER BY name, version) FROM pepnet.models;
	SELECT string_agg(format('%s|%s|%s|%s', name, version, seq, md5(data)), E'\n' ORDER BY name, version, seq) FROM pepnet.model_chunks;
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, version, steps, epochs, md5(adam_m), md5(adam_v), created_at), E'\n' ORDER BY name, version) FROM pepnet.optimizer_state;
	SELECT string_agg(format('%s|%s|%s|%s|%s', name, version, moment, seq, md5(data)), E'\n' ORDER BY name, version, moment, seq) FROM pepnet.optimizer_chunks;
	SELECT string_agg(format('%s|%s|%s', name, version, deployed_at), E'\n' ORDER BY name) FROM pepnet.deployments;
	SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, seq, from_version, to_version, strategy, deployed_by, deployed_at), E'\n' ORDER BY name, seq) FROM pepnet.deploy_history;
	SELECT string_agg(format('%s|%s', name, last_version), E'\n' ORDER BY name) FROM pepnet.model_names;
	SELECT string_agg(format('%s@%s %s %s %s', name, version, md5(pepnet_export(name || '@' || version)),
	                         md5(pepnet_export_version(name || '@' || version)), pepnet_verify(name || '@' || version)), E'\n' ORDER BY name, version) FROM pepnet.models;
	SELECT string_agg(format('%s %s', m.name || '@' || m.version, s.scores), E'\n' ORDER BY m.name, m.version, s.idx)
		FROM pepnet.models m, pepnet_score(m.name || '@' || m.version, 1, '{3}', ARRAY[[1], [2], [40]]::bigint[]) s;
	SELECT string_agg(format('%s %s', n, s.score), E'\n' ORDER BY n, s.idx) FROM unnest(ARRAY['m', 'x']) n, pepnet_score(n, 0, '{5}', ARRAY[[7]]::bigint[]) s;
	SELECT string_agg(format('%s %s', i, score), ',' ORDER BY i) FROM cands;
	SELECT string_agg(format('%s %s', i, score), ',' ORDER BY i) FROM top_items;
};
my $before = $node->safe_psql('src', $STATE);
cmp_ok($node->safe_psql('src', "SELECT min(n) FROM (SELECT count(*) AS n FROM pepnet.model_chunks GROUP BY name, version) c"), '>', 10,
	'source: every version spans more than 10 chunks of 256 bytes');
is($node->safe_psql('src', "SELECT count(DISTINCT (name, version)) FROM pepnet.optimizer_chunks"), '2',
	'source: the 2 trained versions\' Adam moments in chunks');
{
	# (a fingerprint with a 0x00 byte made pepnet_verify false: issue 15's item 4, fixed on its own)
	my $zero = $node->safe_psql('src', "SELECT count(*) FROM pepnet.models WHERE position('\\x00'::bytea IN fingerprint) > 0 AND NOT pepnet_verify(name || '\@' || version)");
	local $TODO = $zero ? "$zero versions whose fingerprint has a 0x00 byte: pepnet_verify's fix is merged separately" : undef;
	is($node->safe_psql('src', "SELECT count(*) FROM pepnet.models WHERE NOT pepnet_verify(name || '\@' || version)"), '0',
		'source: pepnet_verify true for every version');
}
like($before, qr/\|previous\|/, 'source: a rollback in the deploy history');
my $next_src = $node->safe_psql('src', "BEGIN; SELECT pepnet_create('x', '$cfg', 9); ROLLBACK;");

my $dir = $node->basedir;
my $connstr = $node->connstr('src');
$node->command_ok([ 'pg_dump', '-Fp', '-f', "$dir/src.sql", '-d', $connstr ], 'pg_dump -Fp');
$node->command_ok([ 'pg_dump', '-Fc', '-f', "$dir/src.dump", '-d', $connstr ], 'pg_dump -Fc');
$node->command_ok([ 'pg_dump', '-Fd', '-j', '2', '-f', "$dir/src.dir", '-d', $connstr ], 'pg_dump -Fd -j 2');

my $ndb = 0;

# run a restore command into a new database; returns (database, stderr)
sub restore_into
{
	my ($prepare, @cmd) = @_;
	my $db = 'r' . ++$ndb;
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, $prepare) if $prepare;
	my ($stdout, $stderr) = run_command([ @cmd, '-d', $node->connstr($db) ]);
	return ($db, $stderr);
}

# compare a restored database with the source; drops it
sub check_restored
{
	my ($what, $db, $stderr, $then) = @_;
	is($stderr, '', "$what: no errors") or diag($stderr);
	$node->safe_psql($db, $then) if $then;
	my $after = $node->safe_psql($db, $STATE);
	ok($after eq $before, "$what: every version bit for bit (rows, chunks, Adam state, fingerprints, exports, bundles), pepnet_verify true, deployments, history, marks, scores, user table and materialized view")
	  or diag(summarize($after));
	is($node->safe_psql($db, "SELECT pepnet_create('x', '$cfg', 9)"), $next_src,
		"$what: numbering continues (next version $next_src, as in the source)");
	$node->safe_psql('postgres', "DROP DATABASE $db");
}

# the lines that differ from the source's, in a failed comparison
sub summarize
{
	my ($after) = @_;
	my %a = map { $_ => 1 } split /\n/, $after;
	my %b = map { $_ => 1 } split /\n/, $before;
	my @gone = grep { !$a{$_} } split /\n/, $before;
	my @new = grep { !$b{$_} } split /\n/, $after;
	return join("\n", scalar(@gone) . ' lines of the source missing or changed, ' . scalar(@new) . ' new; e.g.:',
		(map { "- " . substr($_, 0, 300) } @gone[0 .. ($#gone < 4 ? $#gone : 4)]),
		(map { "+ " . substr($_, 0, 300) } @new[0 .. ($#new < 4 ? $#new : 4)]));
}

# --- serial forms
check_restored('psql of pg_dump -Fp', restore_into(undef, 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-f', "$dir/src.sql"));
check_restored('pg_restore of -Fc', restore_into(undef, 'pg_restore', "$dir/src.dump"));
check_restored('pg_restore of -Fd', restore_into(undef, 'pg_restore', "$dir/src.dir"));

# --- parallel forms, $REPEAT restores cycling over -Fc/-Fd x -j 2/4/8
my @forms = ([ 'src.dump', 2 ], [ 'src.dir', 2 ], [ 'src.dump', 4 ], [ 'src.dir', 4 ], [ 'src.dump', 8 ], [ 'src.dir', 8 ]);
for my $k (0 .. $REPEAT - 1)
{
	my ($f, $j) = @{ $forms[ $k % @forms ] };
	my $fmt = $f =~ /dir/ ? '-Fd' : '-Fc';
	check_restored('pg_restore -j ' . $j . " of $fmt (" . ($k + 1) . " of $REPEAT)",
		restore_into(undef, 'pg_restore', '-j', $j, "$dir/$f"));
}

# --- data only: into a database with CREATE EXTENSION pepnet and the user's tables.  (pg_restore
# --schema-only refreshes materialized views, over the tables still empty, and --data-only does not:
# the DBA refreshes them after the load, as for any materialized view.)
my $refresh = 'REFRESH MATERIALIZED VIEW top_items';
my $schema = "$dir/schema.sql";
$node->command_ok([ 'pg_restore', '--schema-only', '-f', $schema, "$dir/src.dump" ], 'pg_restore --schema-only to a script');
my $schema_sql = slurp_file($schema);
check_restored('pg_restore --schema-only, then --data-only',
	restore_into($schema_sql, 'pg_restore', '--data-only', "$dir/src.dump"), $refresh);
check_restored('pg_restore --schema-only, then --data-only -j 4',
	restore_into($schema_sql, 'pg_restore', '--data-only', '-j', '4', "$dir/src.dir"), $refresh);
check_restored('pg_restore --schema-only, then --data-only --disable-triggers',
	restore_into($schema_sql, 'pg_restore', '--data-only', '--disable-triggers', "$dir/src.dump"), $refresh);

# pepnet's rows alone into a database where only CREATE EXTENSION pepnet ran: the registry comes
# back (the user table and materialized view are not part of it)
{
	my ($db, $stderr) = restore_into('CREATE EXTENSION pepnet', 'pg_restore', '--data-only', '-n', 'pepnet', '-j', '4', "$dir/src.dump");
	is($stderr, '', 'pg_restore --data-only -n pepnet -j 4 into CREATE EXTENSION pepnet: no errors') or diag($stderr);
	(my $registry = $before) =~ s/\n[^\n]*\n[^\n]*$//;    # without the user table and materialized view
	my $after = $node->safe_psql($db, $STATE =~ s/\n\tSELECT[^\n]*FROM cands;\n\tSELECT[^\n]*FROM top_items;\n/\n/r);
	is($after, $registry, 'pg_restore --data-only -n pepnet -j 4: every version, deployment, history row and mark as in the source; pepnet_verify true');
	is($node->safe_psql($db, "SELECT pepnet_create('x', '$cfg', 9)"), $next_src, 'pg_restore --data-only -n pepnet: numbering continues');
	$node->safe_psql('postgres', "DROP DATABASE $db");
}

# --- pg_dumpall into a fresh cluster
my $all = "$dir/all.sql";
$node->command_ok([ 'pg_dumpall', '-f', $all, '-d', $node->connstr('postgres') ], 'pg_dumpall');
my $other = PostgreSQL::Test::Cluster->new('dumpall_target');
$other->init;
$other->append_conf('postgresql.conf', "fsync = off\njit = off\npepnet.chunk_size = 256\n");
$other->start;
my ($stdout, $stderr) = run_command([ 'psql', '-X', '-q', '-f', $all, '-d', $other->connstr('postgres') ]);
$stderr =~ s/^.*role "\w+" already exists(\n|$)//mg;    # the bootstrap superuser exists in every cluster
is($stderr, '', 'pg_dumpall replayed by psql into a fresh cluster: no errors') or diag($stderr);
is($other->safe_psql('src', $STATE), $before, 'pg_dumpall: every version bit for bit, pepnet_verify true, deployments, history, marks, scores, user table and materialized view');
is($other->safe_psql('src', "SELECT pepnet_create('x', '$cfg', 9)"), $next_src, 'pg_dumpall: numbering continues');
$other->stop;

# --- what the restored extension still guards (normal writes, as before the foreign keys went)
$node->safe_psql('postgres', 'CREATE DATABASE guards');
$node->command_ok([ 'pg_restore', '-j', '4', '-d', $node->connstr('guards'), "$dir/src.dump" ], 'pg_restore -j 4 for the guard checks');
my ($rc, $out, $err) = $node->psql('guards', "INSERT INTO pepnet.deployments (name, version) VALUES ('x', 3)");
like($err, qr/model "x" has no version 3/, 'a deployment of a version that does not exist is refused');
($rc, $out, $err) = $node->psql('guards', "INSERT INTO pepnet.model_chunks VALUES ('nosuch', 1, 0, '\\x00')");
like($err, qr/model "nosuch" has no version 1: chunks cannot be stored without their version/, 'chunks without their version are refused');
($rc, $out, $err) = $node->psql('guards', "INSERT INTO pepnet.optimizer_state (name, version, steps, epochs) VALUES ('nosuch', 1, 1, 1)");
like($err, qr/model "nosuch" has no version 1/, 'Adam state without its version is refused');
($rc, $out, $err) = $node->psql('guards', "INSERT INTO pepnet.optimizer_chunks VALUES ('x', 1, 1, 0, '\\x00')");
like($err, qr/model "x" version 1 has no Adam state/, 'Adam moments without Adam state are refused');
my $dv = $node->safe_psql('guards', "SELECT version FROM pepnet.deployments WHERE name = 'm'");
my $ov = 3 - $dv;
($rc, $out, $err) = $node->psql('guards', "DELETE FROM pepnet.models WHERE name = 'm' AND version = $dv");
like($err, qr/is deployed and cannot be deleted/, 'a deployed version cannot be deleted');
$node->safe_psql('guards', "SELECT pepnet_deploy('m', $ov); DELETE FROM pepnet.models WHERE name = 'm' AND version = $dv");
is($node->safe_psql('guards', "SELECT (SELECT count(*) FROM pepnet.model_chunks WHERE name = 'm' AND version = $dv) || ' '
                                || (SELECT count(*) FROM pepnet.optimizer_state WHERE name = 'm' AND version = $dv) || ' '
                                || (SELECT count(*) FROM pepnet.optimizer_chunks WHERE name = 'm' AND version = $dv)"),
	'0 0 0', 'deleting a version deletes its chunks, Adam state and Adam moments (as the cascade did)');
is($node->safe_psql('guards', "SELECT count(*) FROM pepnet.model_chunks WHERE name = 'm' AND version = $ov"),
	$node->safe_psql('src', "SELECT count(*) FROM pepnet.model_chunks WHERE name = 'm' AND version = $ov"), '... and nothing of the other versions');
# a deploy racing a DELETE of its version, either first: never a deployment of a deleted version
$node->safe_psql('guards', "SELECT pepnet_create('race', '$cfg', 1), pepnet_create('race', '$cfg', 2), pepnet_create('race', '$cfg', 3); SELECT pepnet_deploy('race', 1);");
my $sa = $node->background_psql('guards', on_error_stop => 0);
$sa->query_safe('\\set VERBOSITY verbose');
my $sb = $node->background_psql('guards', on_error_stop => 0);
my %pid = (a => $sa->query_safe('SELECT pg_backend_pid()'), b => $sb->query_safe('SELECT pg_backend_pid()'));
sub waits_for_lock
{
	my ($p) = @_;
	return $node->poll_query_until('guards', "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $p");
}
$sa->query_safe('BEGIN');
$sa->query_safe("SELECT pepnet_deploy('race', 2)");
$sb->query_until(qr/started/, "\\echo started\nDELETE FROM pepnet.models WHERE name = 'race' AND version = 2;\n\\echo done\n");
ok(waits_for_lock($pid{b}), 'a DELETE of a version being deployed waits for the deploy');
$sa->query_safe('COMMIT');
$sb->query_until(qr/done/, '');
like($sb->{stderr}, qr/model "race" version 2 is deployed and cannot be deleted/, '... then is refused as deleting a deployed version');
$sb->{stderr} = '';
is($node->safe_psql('guards', "SELECT d.version || ' ' || EXISTS (SELECT FROM pepnet.models m WHERE m.name = d.name AND m.version = d.version) FROM pepnet.deployments d WHERE d.name = 'race'"),
	'2 true', 'race@2 deployed and kept');
$sb->query_safe('BEGIN');
$sb->query_safe("DELETE FROM pepnet.models WHERE name = 'race' AND version = 3");
$sa->query_until(qr/started/, "\\echo started\nSELECT pepnet_deploy('race', 3);\n\\echo done\n");
ok(waits_for_lock($pid{a}), 'a deploy of a version being deleted waits for the DELETE');
$sb->query_safe('COMMIT');
$sa->query_until(qr/done/, '');
like($sa->{stderr}, qr/ERROR:  42704: model "race" has no version 3/, '... then is refused: the version is gone (42704, as pepnet_deploy documents)');
$sa->{stderr} = '';
is($node->safe_psql('guards', "SELECT d.version || ' ' || (SELECT count(*) FROM pepnet.models m WHERE m.name = 'race' AND m.version = 3) FROM pepnet.deployments d WHERE d.name = 'race'"),
	'2 0', 'race@3 deleted, race@2 still deployed');
$sa->quit;
$sb->quit;

($rc, $out, $err) = $node->psql('guards', "TRUNCATE pepnet.models");
like($err, qr/TRUNCATE on pepnet.models is not allowed/, 'TRUNCATE pepnet.models refused without pepnet.allow_drop');
$node->safe_psql('guards', "SET pepnet.allow_drop = on; TRUNCATE pepnet.models");
is($node->safe_psql('guards', "SELECT (SELECT count(*) FROM pepnet.deployments) + (SELECT count(*) FROM pepnet.model_chunks)
                                + (SELECT count(*) FROM pepnet.optimizer_state) + (SELECT count(*) FROM pepnet.optimizer_chunks)"),
	'0', 'TRUNCATE pepnet.models with pepnet.allow_drop empties the tables that depend on it');

$node->stop;
done_testing();
