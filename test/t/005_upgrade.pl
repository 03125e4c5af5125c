# test/t/005_upgrade.pl: ALTER EXTENSION pepnet UPDATE from 0.1.0 and from 0.2.0 to the current
# version (0.3.0) keeps every stored version.
#
# Database "up": CREATE EXTENSION pepnet VERSION '0.1.0' (sql/pepnet--0.1.0.sql as shipped), then
# versions made by pepnet_create, pepnet_import and CALL pepnet_train (2 epochs, with validation),
# one deployed.  Recorded before the update: every version's stored row (config, md5 of weights,
# metrics, parent), its scores for a fixed request (all tasks, every domain, with dense features),
# what the bare name scores with, pepnet_evaluate, and its pepnet_export as tensors.  After
# ALTER EXTENSION pepnet UPDATE: extversion is 0.3.0; rows, scores, the bare name and
# pepnet_evaluate's five 0.1.0 columns are unchanged; every exported tensor is there with the
# same dtype, shape and bytes, except the tensors 0.2.0 adds (listed in %ADDED_IN_020), which
# are exported as stored, or as zeros where the stored weights lack them.  The library is the current one throughout
# (one is installed): 0.1.0's SQL must work with it until the update, training included.  The current version works on the upgraded
# database: new versions, training continued from an old version, deploy.  Database "up2": CREATE
# EXTENSION pepnet VERSION '0.2.0', versions trained (Adam state in chunks), created, imported,
# deployed and rolled back, one deleted, all in chunks; after ALTER EXTENSION pepnet UPDATE every
# table's rows, fingerprints, exports, scores and pepnet_verify are as before, and numbering,
# training and deploy history continue.  Database "fresh":
# CREATE EXTENSION pepnet (0.1.0 then the upgrade scripts); its catalog equals both upgraded ones':
# member objects, function signatures, results, volatility, strictness, parallel safety, settings
# and bodies, table columns, constraints, indexes, triggers, the dump configuration and grants.
#
# To extend for a new feature: add a check to "the current version works on an upgraded database" below.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

# tensors 0.2.0 exports that 0.1.0 did not have; for versions made by 0.1.0 they must be all zeros
my %ADDED_IN_020 = map { $_ => 1 } qw(pn.num_batches_tracked);

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
# chunks of 1000 bytes: the update migrates every stored version into many rows of pepnet.model_chunks
$node->append_conf('postgresql.conf', "fsync = off\njit = off\npepnet.chunk_size = 1000\n");
$node->start;

sub sq { my $db = shift; return $node->safe_psql($db, @_); }

$node->safe_psql('postgres', 'CREATE DATABASE up; CREATE DATABASE fresh;');

# ---------------------------------------------------------------- 0.1.0 with stored versions
my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 500}, {"name": "cat", "buckets": 10, "hash": false}], "persona": [{"name": "user", "buckets": 50}, {"name": "seg", "buckets": 4, "hash": false}], "dense": 1, "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [16, 8]}';
my $DATA = "SELECT domain, persona, features, dense, labels FROM ev WHERE i % 5 <> 0";
my $VALID = "SELECT domain, persona, features, dense, labels FROM ev WHERE i % 5 = 0";
my ($rc, $out, $err) = $node->psql('up', <<SQL);
SET client_min_messages = warning;
CREATE EXTENSION pepnet VERSION '0.1.0';
CREATE TABLE ev AS
SELECT i, i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 40, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0]::real[] AS dense,
       ARRAY[((abs(hashint4(i)) % 300) % 2)::real, CASE WHEN i % 7 = 0 THEN NULL ELSE (i % 3 = 0)::int::real END] AS labels
FROM generate_series(1, 3000) i;
SELECT pepnet_create('made', '$CFG', seed => 11);
SELECT pepnet_create('made', '$CFG', seed => 12);
SELECT pepnet_import('imported', '$CFG', pepnet_export('made\@2'));
SELECT pepnet_deploy('made', 1);
SQL
is($rc, 0, 'CREATE EXTENSION pepnet VERSION 0.1.0; versions created and imported, one deployed')
  or BAIL_OUT("setup failed: $err");

# weights as 0.1.0's library wrote them: without the tensors 0.2.0 adds
sub without_added
{
	my ($blob) = @_;
	my $n = unpack('Q<', substr($blob, 0, 8));
	my $header = decode_json(substr($blob, 8, $n));
	my $data = substr($blob, 8 + $n);
	my ($h, $d) = ({}, '');
	for my $name (sort { $header->{$a}{data_offsets}[0] <=> $header->{$b}{data_offsets}[0] }
		grep { $_ ne '__metadata__' && !$ADDED_IN_020{$_} } keys %$header)
	{
		my ($b, $e) = @{ $header->{$name}{data_offsets} };
		$h->{$name} = { dtype => $header->{$name}{dtype}, shape => $header->{$name}{shape},
			data_offsets => [ length($d), length($d) + $e - $b ] };
		$d .= substr($data, $b, $e - $b);
	}
	my $json = JSON::PP->new->canonical->encode($h);
	$json .= ' ' x ((8 - length($json) % 8) % 8);
	return pack('Q<', length($json)) . $json . $d;
}
my $legacy = without_added(pack('H*', sq('up', "SELECT encode(pepnet_export('made\@1'), 'hex')")));
($rc, $out, $err) = $node->psql('up',
	"SELECT pepnet_import('legacy', '$CFG', decode('" . unpack('H*', $legacy) . "', 'hex'))");
is($rc, 0, 'under 0.1.0: a version imported from weights without ' . join(', ', sort keys %ADDED_IN_020)
	  . ' (as 0.1.0 exported them)') or diag($err);
# the library is 0.2.0's from the moment it is installed: 0.1.0's SQL must keep working with it
# until ALTER EXTENSION UPDATE
($rc, $out, $err) = $node->psql('up', <<SQL);
SET client_min_messages = warning;
CALL pepnet_train('trained', '$DATA', '$CFG', validation => '$VALID',
                  epochs => 2, batch_size => 128, lr => 0.01, seed => 3, progress_interval => 0);
SQL
is($rc, 0, "CALL pepnet_train of 0.1.0's SQL with the installed library (before ALTER EXTENSION UPDATE): 2 epochs")
  or diag($err);
my $trained = sq('up', "SELECT count(*) FROM pepnet.models WHERE name = 'trained'") eq '2';
is(sq('up', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.1.0', 'installed as 0.1.0');

my $ROWS = "SELECT name, version, parent, config, md5(weights), metrics FROM pepnet.models ORDER BY name, version";
# after the update the weights are in chunks (weights NULL): the same query over their concatenation
my $ROWS_CHUNKED = "SELECT name, version, parent, config, (SELECT md5(string_agg(c.data, '' ORDER BY c.seq)) FROM pepnet.model_chunks c
                    WHERE c.name = m.name AND c.version = m.version), metrics FROM pepnet.models m ORDER BY name, version";
# the fingerprint by its definition: SHA-256 of the config text's length (8 bytes, big-endian), the text, the weights
my $FP_010 = "SELECT string_agg(name || '\@' || version || ' ' || encode(sha256(int8send(octet_length(config::text)::int8)
              || convert_to(config::text, 'UTF8') || weights), 'hex'), E'\n' ORDER BY name, version) FROM pepnet.models";
my $EXPORTS = "SELECT string_agg(name || '\@' || version || ' ' || md5(pepnet_export(name || '\@' || version)), E'\n' ORDER BY name, version) FROM pepnet.models";
# every version's scores of a fixed request in every domain (all tasks), and the bare names'
my $SCORES = <<'SQL';
SELECT m.name || '@' || m.version, d, s.idx, s.score, s.scores
FROM pepnet.models m, generate_series(0, 2) d,
     pepnet_score(m.name || '@' || m.version, d, '{7, 3}', '{{1, 2}, {250, 9}, {-5, 0}}', '{{0.5}, {0}, {-1}}') s
UNION ALL
SELECT n.name, 1, s.idx, s.score, s.scores
FROM (SELECT DISTINCT name FROM pepnet.models) n, pepnet_score(n.name, 1, '{7, 3}', '{{1, 2}, {250, 9}}', '{{0.5}, {0}}') s
ORDER BY 1, 2, 3
SQL
# evaluation of a version stored under 0.1.0 (the trained one if training worked there)
my $EVAL = "SELECT domain, task, rows, auc, logloss FROM pepnet_evaluate('" . ($trained ? 'trained@2' : 'made@1')
  . "', '$VALID') ORDER BY domain NULLS LAST, task";
my $VERSIONS = "SELECT name || '\@' || version FROM pepnet.models ORDER BY name, version";

my $rows_before = sq('up', $ROWS);
my $fp_before = sq('up', $FP_010);
my $exports_before = sq('up', $EXPORTS);
my $scores_before = sq('up', $SCORES);
my ($eval_rc, $eval_before, $eval_err) = $node->psql('up', $EVAL);
is($eval_rc, 0, "pepnet_evaluate of 0.1.0's SQL with the installed library") or diag($eval_err);
my @versions = split /\n/, sq('up', $VERSIONS);
is(scalar @versions, $trained ? 6 : 4, 'the versions stored under 0.1.0: ' . join(', ', @versions));

# a version's pepnet_export (or, with $stored, its stored weights) as {name => [dtype, shape, bytes]}
sub export_tensors
{
	my ($ref, $stored) = @_;
	my ($name, $version) = split /\@/, $ref;
	my $blob = pack('H*', sq('up', $stored
		  ? "SELECT encode(string_agg(data, '' ORDER BY seq), 'hex') FROM pepnet.model_chunks WHERE name = '$name' AND version = $version"
		  : "SELECT encode(pepnet_export('$ref'), 'hex')"));
	my $n = unpack('Q<', substr($blob, 0, 8));
	my $header = decode_json(substr($blob, 8, $n));
	my $data = substr($blob, 8 + $n);
	my %t;
	for my $name (keys %$header)
	{
		next if $name eq '__metadata__';
		my ($b, $e) = @{ $header->{$name}{data_offsets} };
		$t{$name} = [ $header->{$name}{dtype}, join('x', @{ $header->{$name}{shape} }), substr($data, $b, $e - $b) ];
	}
	return \%t;
}
my %export_before = map { $_ => export_tensors($_) } @versions;

# ---------------------------------------------------------------- the update
($rc, $out, $err) = $node->psql('up', 'ALTER EXTENSION pepnet UPDATE');
is($rc, 0, 'ALTER EXTENSION pepnet UPDATE') or diag($err);
is(sq('up', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', 'extversion is 0.3.0 after the update');

is(sq('up', $ROWS_CHUNKED), $rows_before, 'every stored version unchanged: name, version, parent, config, weights (md5 of its chunks), metrics');
is(sq('up', "SELECT count(*) FROM pepnet.models WHERE weights IS NOT NULL OR weights_size IS NULL"), '0',
	'the update moved every version\'s weights into chunks (weights NULL, weights_size set)');
is( sq(
		'up', "SELECT count(*) FROM pepnet.models m WHERE (SELECT count(*) FROM pepnet.model_chunks c WHERE c.name = m.name AND c.version = m.version)
		       <> (m.weights_size + 999) / 1000 OR m.weights_size <> (SELECT sum(length(c.data)) FROM pepnet.model_chunks c WHERE c.name = m.name AND c.version = m.version)"),
	'0', 'each version in chunks of pepnet.chunk_size (1000 bytes) adding up to weights_size');
cmp_ok(sq('up', "SELECT min(n) FROM (SELECT count(*) AS n FROM pepnet.model_chunks GROUP BY name, version) c"), '>', 10,
	'every migrated version spans more than 10 chunks');
is(sq('up', "SELECT string_agg(name || '\@' || version || ' ' || encode(fingerprint, 'hex'), E'\n' ORDER BY name, version) FROM pepnet.models"),
	$fp_before, 'fingerprints after the update = SHA-256 of config and weights as stored by 0.1.0 (pinned references keep matching)');
is(sq('up', $EXPORTS), $exports_before, 'pepnet_export of every version byte-identical before and after the update');
is( sq(
		'up', "SELECT count(*) FROM pepnet.models m
		       WHERE (SELECT string_agg(data, '' ORDER BY seq) FROM pepnet_export_chunks(m.name || '\@' || m.version)) <> pepnet_export(m.name || '\@' || m.version)"),
	'0', 'pepnet_export_chunks of every migrated version concatenates to its pepnet_export');
is(sq('up', $SCORES), $scores_before,
	'scores unchanged: every version, every domain, all tasks, and the bare names (deployed, else latest)');
is(sq('up', $EVAL), $eval_rc == 0 ? $eval_before : '(evaluate failed before the update)',
	"pepnet_evaluate's domain, task, rows, auc, logloss unchanged");

# a tensor 0.2.0 adds (named in %ADDED_IN_020, possibly with a prefix) is exported as stored, or
# as zeros where the stored weights lack it (written by 0.1.0's library); every other tensor is
# exported as before the update, and none is missing
sub added_in_020 { my $n = shift; return grep { $n eq $_ || $n =~ /(?:^|\.)\Q$_\E$/ } keys %ADDED_IN_020; }
for my $v (@versions)
{
	my ($old, $new, $stored) = ($export_before{$v}, export_tensors($v), export_tensors($v, 1));
	my @missing = grep { !exists $new->{$_} && !added_in_020($_) } sort keys %$old;
	my @kept = grep { !added_in_020($_) } sort keys %$new;
	my @changed = grep { !exists $old->{$_} || join('|', @{ $new->{$_} }) ne join('|', @{ $old->{$_} }) } @kept;
	my @added = grep { added_in_020($_) } sort keys %$new;
	my @nonzero = grep { !exists $stored->{$_} && $new->{$_}[2] =~ /[^\0]/ } @added;
	my @unlike_stored = grep { exists $stored->{$_} && join('|', @{ $new->{$_} }) ne join('|', @{ $stored->{$_} }) } @added;
	ok(!@missing && !@changed && !@nonzero && !@unlike_stored,
		"pepnet_export of $v: " . scalar(@kept) . ' tensors unchanged (dtype, shape, bytes)'
		  . (@added ? '; added by 0.2.0 (as stored, else zeros): ' . join(', ', @added) : ''))
	  or diag("missing: @missing; changed or new: @changed; added by 0.2.0, not stored and not zero: @nonzero; "
		  . "added by 0.2.0, not as stored: @unlike_stored");
}

# ---------------------------------------------------------------- the current version works on an upgraded database
# continue training a version stored under 0.1.0: the trained one, else the deployed made@1
my $cont = $trained ? 'trained' : 'made';
my $cont_from = $trained ? 2 : 1;
my $next = sq('up', "SELECT max(version) + 1 FROM pepnet.models WHERE name = '$cont'");
($rc, $out, $err) = $node->psql('up', <<SQL);
SET client_min_messages = warning;
SELECT pepnet_create('new_in_020', '$CFG', seed => 13);
CALL pepnet_train('$cont', '$DATA', epochs => 1, batch_size => 128, lr => 0.01, seed => 4, progress_interval => 0);
SELECT pepnet_deploy('$cont', $next);
SQL
is($rc, 0, "after the update: pepnet_create, CALL pepnet_train continuing $cont\@$cont_from, pepnet_deploy") or diag($err);
is(sq('up', "SELECT parent FROM pepnet.models WHERE name = '$cont' AND version = $next"),
	$cont_from, "training continued from $cont\@$cont_from, stored under 0.1.0");
is( sq(
		'up', "SELECT count(*) FROM pepnet_score('$cont', 0, '{7, 3}', '{{1, 2}}', '{{0.5}}') s,
		              pepnet_score('$cont\@$next', 0, '{7, 3}', '{{1, 2}}', '{{0.5}}') t WHERE s.score = t.score"),
	'1', 'the bare name scores with the version deployed after the update');
is( sq(
		'up', "SELECT array_to_string((array_agg(a.n || ' ' || format_type(a.t, NULL) ORDER BY a.k)
		                               FILTER (WHERE a.m = 't'))[1:5], ', ')
		       FROM pg_proc p, unnest(p.proallargtypes, p.proargmodes, p.proargnames) WITH ORDINALITY AS a(t, m, n, k)
		       WHERE p.proname = 'pepnet_evaluate' AND p.pronargs = 2"),
	'domain integer, task text, rows bigint, auc double precision, logloss double precision',
	"pepnet_evaluate's first five columns keep their names, types and order");

# ---------------------------------------------------------------- 0.2.0 -> 0.3.0
$node->safe_psql('postgres', 'CREATE DATABASE up2');
# the events table: the same rows as in "up"
($rc, $out, $err) = $node->psql('up2', <<SQL);
SET client_min_messages = warning;
CREATE EXTENSION pepnet VERSION '0.2.0';
CREATE TABLE ev AS
SELECT i, i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 40, i % 4]::bigint[] AS persona,
       ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0]::real[] AS dense,
       ARRAY[((abs(hashint4(i)) % 300) % 2)::real, CASE WHEN i % 7 = 0 THEN NULL ELSE (i % 3 = 0)::int::real END] AS labels
FROM generate_series(1, 3000) i;
CALL pepnet_train('trained', '$DATA', '$CFG', validation => '$VALID',
                  epochs => 3, batch_size => 128, lr => 0.01, seed => 3, progress_interval => 0, deploy => true);
SELECT pepnet_create('made', '$CFG', seed => 11);
SELECT pepnet_create('made', '$CFG', seed => 12);
SELECT pepnet_create('made', '$CFG', seed => 13);
DELETE FROM pepnet.models WHERE name = 'made' AND version = 3;
SELECT pepnet_import('imported', '$CFG', pepnet_export('made\@2'));
SELECT pepnet_deploy('made', 1);
SELECT pepnet_deploy('made', 2);
SELECT pepnet_deploy('made', 'previous');
SELECT pepnet_deploy('trained', 'latest');
SQL
is($rc, 0, "0.2.0: versions trained (3 epochs), created, imported, deployed and rolled back, one deleted") or diag($err);
is(sq('up2', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.2.0', 'up2 installed as 0.2.0');
# every table of pepnet, row for row (weights and moments by md5), and what the functions say of each version
my $STATE2 = <<'SQL';
SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', name, version, config, metrics, parent, created_at,
                         encode(fingerprint, 'hex'), weights_size, weights IS NULL), E'\n' ORDER BY name, version) FROM pepnet.models;
SELECT string_agg(format('%s|%s|%s|%s', name, version, seq, md5(data)), E'\n' ORDER BY name, version, seq) FROM pepnet.model_chunks;
SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, version, steps, epochs, adam_m IS NULL, adam_v IS NULL, created_at), E'\n' ORDER BY name, version) FROM pepnet.optimizer_state;
SELECT string_agg(format('%s|%s|%s|%s|%s', name, version, moment, seq, md5(data)), E'\n' ORDER BY name, version, moment, seq) FROM pepnet.optimizer_chunks;
SELECT string_agg(format('%s|%s|%s', name, version, deployed_at), E'\n' ORDER BY name) FROM pepnet.deployments;
SELECT string_agg(format('%s|%s|%s|%s|%s|%s|%s', name, seq, from_version, to_version, strategy, deployed_by, deployed_at), E'\n' ORDER BY name, seq) FROM pepnet.deploy_history;
SELECT string_agg(format('%s|%s', name, last_version), E'\n' ORDER BY name) FROM pepnet.model_names;
SELECT string_agg(name || '@' || version || ' ' || md5(pepnet_export(name || '@' || version)) || ' ' || md5(pepnet_export_version(name || '@' || version))
                  || ' ' || pepnet_verify(name || '@' || version), E'\n' ORDER BY name, version) FROM pepnet.models;
SQL
my $state2_before = sq('up2', $STATE2);
my $scores2_before = sq('up2', $SCORES);
cmp_ok(sq('up2', "SELECT min(n) FROM (SELECT count(*) AS n FROM pepnet.model_chunks GROUP BY name, version) c"), '>', 10,
	'0.2.0: every version spans more than 10 chunks');
is(sq('up2', "SELECT count(DISTINCT (name, version)) FROM pepnet.optimizer_chunks"), '3', "0.2.0: the 3 trained versions' Adam moments in chunks");
unlike($state2_before, qr/ f$/m, '0.2.0: pepnet_verify true for every version before the update');
($rc, $out, $err) = $node->psql('up2', 'ALTER EXTENSION pepnet UPDATE');
is($rc, 0, 'ALTER EXTENSION pepnet UPDATE from 0.2.0') or diag($err);
is(sq('up2', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', 'extversion is 0.3.0 after the update from 0.2.0');
is(sq('up2', $STATE2), $state2_before,
	'0.2.0 -> 0.3.0: versions, fingerprints, chunks, Adam state and moments, deployments, deploy history, high-water marks, exports, bundles unchanged; pepnet_verify true');
is(sq('up2', $SCORES), $scores2_before, '0.2.0 -> 0.3.0: scores of every version, domain and task, and of the bare names, unchanged');
my $next2 = sq('up2', "SELECT pepnet_create('made', '$CFG', seed => 14)");
is($next2, '4', 'numbering continues after the update (3 was deleted under 0.2.0 and is not reused)');
($rc, $out, $err) = $node->psql('up2', <<SQL);
SET client_min_messages = warning;
CALL pepnet_train('trained', '$DATA', epochs => 1, batch_size => 128, lr => 0.01, seed => 4, progress_interval => 0);
SELECT pepnet_deploy('made', 'latest');
SQL
is($rc, 0, 'after the update from 0.2.0: training continues from the deployed version, deploy') or diag($err);
is(sq('up2', "SELECT m.parent || ' ' || (o4.steps > o3.steps) FROM pepnet.models m, pepnet.optimizer_state o4, pepnet.optimizer_state o3
                WHERE m.name = 'trained' AND m.version = 4 AND o4.name = 'trained' AND o4.version = 4 AND o3.name = 'trained' AND o3.version = 3"),
	'3 true',
	"training continued from trained\@3 and resumed Adam's step count stored under 0.2.0");
is(sq('up2', "SELECT to_version || ' ' || strategy FROM pepnet.deploy_history WHERE name = 'made' ORDER BY seq DESC LIMIT 1"), '4 latest',
	'the deploy history continues after the update');

# ---------------------------------------------------------------- fresh 0.3.0 = upgraded 0.1.0 = upgraded 0.2.0
$node->safe_psql('fresh', 'CREATE EXTENSION pepnet');
is(sq('fresh', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', 'a fresh CREATE EXTENSION pepnet is 0.3.0');

# the extension's catalog, described by name (OIDs differ between the databases)
my $CATALOG = <<'SQL';
WITH members AS (
  SELECT classid, objid, objsubid FROM pg_depend
  WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
    AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pepnet'))
SELECT 'member: ' || pg_describe_object(classid, objid, objsubid) FROM members
UNION ALL
SELECT 'function: ' || p.oid::regprocedure || ' -> ' || pg_get_function_result(p.oid) || ' kind ' || p.prokind::text ||
       ' volatile ' || p.provolatile::text || ' strict ' || p.proisstrict || ' parallel ' || p.proparallel::text ||
       ' secdef ' || p.prosecdef || ' config ' || coalesce(p.proconfig::text, '-') || ' lang ' || l.lanname ||
       ' defaults ' || coalesce(pg_get_expr(p.proargdefaults, 0), '-') || ' body ' || md5(p.prosrc || coalesce(p.probin, '')) ||
       ' acl ' || coalesce(p.proacl::text, '-')
FROM members m JOIN pg_proc p ON m.classid = 'pg_proc'::regclass AND p.oid = m.objid JOIN pg_language l ON l.oid = p.prolang
UNION ALL
SELECT 'column: ' || c.oid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ||
       CASE WHEN a.attnotnull THEN ' not null' ELSE '' END || ' identity ' || a.attidentity::text ||
       ' default ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '-')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
UNION ALL
SELECT 'relation: ' || c.oid::regclass || ' kind ' || c.relkind::text || ' acl ' || coalesce(c.relacl::text, '-') ||
       ' options ' || coalesce(c.reloptions::text, '-')
FROM members m JOIN pg_class c ON m.classid = 'pg_class'::regclass AND c.oid = m.objid
UNION ALL
SELECT 'constraint: ' || co.conrelid::regclass || ' ' || co.conname || ' ' || pg_get_constraintdef(co.oid)
FROM members m JOIN pg_constraint co ON m.classid = 'pg_class'::regclass AND co.conrelid = m.objid
UNION ALL
SELECT 'index: ' || pg_get_indexdef(i.indexrelid)
FROM members m JOIN pg_index i ON m.classid = 'pg_class'::regclass AND i.indrelid = m.objid
UNION ALL
SELECT 'trigger: ' || pg_get_triggerdef(t.oid)
FROM members m JOIN pg_trigger t ON m.classid = 'pg_class'::regclass AND t.tgrelid = m.objid AND NOT t.tgisinternal
UNION ALL
SELECT 'dumped: ' || c::regclass || ' where ' || coalesce(w, '-')
FROM pg_extension e, unnest(e.extconfig, e.extcondition) u(c, w) WHERE e.extname = 'pepnet'
UNION ALL
SELECT 'schema: ' || n.nspname || ' acl ' || coalesce(n.nspacl::text, '-')
FROM members m JOIN pg_namespace n ON m.classid = 'pg_namespace'::regclass AND n.oid = m.objid
ORDER BY 1
SQL
my $cat_fresh = sq('fresh', $CATALOG);
my $cat_up = sq('up', $CATALOG);
my @members = grep { /^member: / } split /\n/, $cat_fresh;
cmp_ok(scalar @members, '>=', 15, 'the fresh catalog lists the extension\'s objects (' . scalar(@members) . ' members)');
if ($cat_up eq $cat_fresh)
{
	pass('upgraded 0.1.0 and fresh 0.3.0 have the same catalog: members, functions, columns, constraints, indexes, triggers, dump configuration, grants');
}
else
{
	my %f = map { $_ => 1 } split /\n/, $cat_fresh;
	my %u = map { $_ => 1 } split /\n/, $cat_up;
	fail('upgraded 0.1.0 and fresh 0.3.0 have the same catalog');
	diag("only fresh: $_") for grep { !$u{$_} } sort keys %f;
	diag("only upgraded: $_") for grep { !$f{$_} } sort keys %u;
}
my $cat_up2 = sq('up2', $CATALOG);
if ($cat_up2 eq $cat_fresh)
{
	pass('upgraded 0.2.0 and fresh 0.3.0 have the same catalog');
}
else
{
	my %f = map { $_ => 1 } split /\n/, $cat_fresh;
	my %u = map { $_ => 1 } split /\n/, $cat_up2;
	fail('upgraded 0.2.0 and fresh 0.3.0 have the same catalog');
	diag("only fresh: $_") for grep { !$u{$_} } sort keys %f;
	diag("only upgraded 0.2.0: $_") for grep { !$f{$_} } sort keys %u;
}

$node->stop;
done_testing();
