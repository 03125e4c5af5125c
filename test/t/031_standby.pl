# test/t/031_standby.pl: a primary and a streaming hot standby.
#
# Asserts: the standby scores exactly as the primary (text, pinned and set-returning forms) and
# serves export, evaluate and the cache; a deploy on the primary is followed by the standby's next
# statement after replay, while a statement already running keeps the version it started with;
# every writing function fails on the standby at once with 25006 and a hint naming the primary,
# before any of its work (the errors it would otherwise raise first, from its arguments or its data
# query, do not appear); the primary's read-only transactions refuse writers the same way.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;

my $db = 'postgres';
my $primary = PostgreSQL::Test::Cluster->new('primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', "fsync = off\njit = off\ncluster_name = 'primary'\n");
$primary->start;

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 300}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 40}], "emb_dim": 4, "hidden": [16, 8]}';
$primary->safe_psql($db, qq{
	CREATE EXTENSION pepnet;
	SELECT pepnet_create('m', '$CFG', 1), pepnet_create('m', '$CFG', 2), pepnet_deploy('m', 1);
	CREATE TABLE cands AS
	SELECT i AS id, i % 2 AS domain, ARRAY[i % 9]::bigint[] AS persona,
	       ARRAY[(i * 31) % 300, i % 24]::bigint[] AS features, (hashint4(i) % 2 = 0) AS label
	FROM generate_series(1, 200) i;
});
$primary->backup('b');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($primary, 'b', has_streaming => 1);
$standby->append_conf('postgresql.conf', "cluster_name = 'standby'\n");
$standby->start;
$primary->wait_for_catchup($standby);
is($standby->safe_psql($db, 'SELECT pg_is_in_recovery()'), 't', 'the standby is in recovery');

sub both { my ($sql) = @_; return ($primary->safe_psql($db, $sql), $standby->safe_psql($db, $sql)); }
my $byid = "SELECT string_agg(id || ':' || %s, ',' ORDER BY id) FROM cands";
my %q = (
	bare => sprintf($byid, "pepnet_predict('m', domain, persona, features)"),
	v1 => sprintf($byid, "pepnet_predict('m\@1', domain, persona, features)"),
	v2 => sprintf($byid, "pepnet_predict('m\@2', domain, persona, features)"),
	pinned => sprintf($byid, "pepnet_predict('m\@2'::pepnet_pinned, domain, persona, features)"),
	score => "SELECT string_agg(idx || ':' || score || ':' || scores::text, ',' ORDER BY idx)
	          FROM pepnet_score('m\@2', 1, '{5}', (SELECT array_agg(features ORDER BY id) FROM cands))",
	export => "SELECT md5(pepnet_export('m\@2'))",
	evaluate => "SELECT string_agg(concat_ws(':', domain, task, rows, auc, logloss), ',' ORDER BY domain NULLS FIRST)
	             FROM pepnet_evaluate('m\@2', 'SELECT domain, persona, features, label FROM cands')");
for my $k (sort keys %q)
{
	my ($p, $s) = both($q{$k});
	ok($p ne '', "$k: the primary answers");
	is($s, $p, "$k: the standby answers exactly as the primary");
}
my ($v1) = both($q{v1});
my ($state2) = both($q{v2});
isnt($v1, $state2, 'versions 1 and 2 score differently (the deploy checks can fail)');
is($standby->safe_psql($db, $q{bare}), $v1, 'standby: the bare name is the deployed version 1');
like($standby->safe_psql($db, "SELECT pepnet_predict('m\@2', 0, '{1}', '{1, 2}') > 0; SELECT string_agg(model || '\@' || version, ',') FROM pepnet_cache()"),
	qr/^t\nm\@2$/,
	'standby: pepnet_cache lists what this backend holds');

# --- a deploy on the primary: the running statement keeps its version, the next one follows ----
my $slow = "SELECT string_agg(id || ':' || pepnet_predict('m', domain, persona, features)
                              || CASE WHEN id = 1 THEN pg_sleep(4)::text ELSE '' END, ',' ORDER BY id)
            FROM (SELECT * FROM cands ORDER BY id) c";
my ($in, $out, $err) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-XAtq', '-d', $standby->connstr($db), '-c', $slow ],
	'<', \$in, '>', \$out, '2>', \$err);
$standby->poll_query_until($db, "SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
	or die 'the slow statement did not start';
$primary->safe_psql($db, "SELECT pepnet_deploy('m', 2)");
$primary->wait_for_catchup($standby);
is($standby->safe_psql($db, 'SELECT version FROM pepnet.deployments WHERE name = \'m\''), 2, 'the deploy is replayed on the standby');
ok($h->pumpable && $out eq '', 'the deploy was replayed while the standby statement was still running');
$h->finish;
chomp $out;
is($out, $v1, 'the running statement scored every row with the version deployed when it started');
is($standby->safe_psql($db, $q{bare}), $state2, 'the next statement on the standby uses the new deployment');

# --- writers on the standby: 25006 at once, before their own checks and work ------------------
sub fails_with
{
	my ($node, $sql, $what, $name) = @_;
	my ($rc, $o, $e) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	like($e, qr/ERROR:  25006: \Q$what\E cannot run on a hot standby.*HINT:  Run \Q$what\E on the primary/s, $name)
		or diag("rc $rc: $e");
}
fails_with($standby, "SELECT pepnet_create('x', '{\"domains\": -1}')", 'pepnet_create',
	'pepnet_create on the standby: 25006 (not the 22023 of its bad config)');
fails_with($standby, "SELECT pepnet_import('x', '$CFG', '\\x00')", 'pepnet_import',
	'pepnet_import on the standby: 25006 (not the 22P03 of its bad weights)');
fails_with($standby, "SELECT pepnet_deploy('nope', 9)", 'pepnet_deploy',
	'pepnet_deploy on the standby: 25006 (not the 42704 of an unknown model)');
fails_with($standby, "SELECT pepnet_import_version('\\x00')", 'pepnet_import_version',
	'pepnet_import_version on the standby: 25006 (not the 22P03 of a bad bundle)');
fails_with($standby, "CALL pepnet_train('m', 'SELECT 1/0 AS domain', config => '$CFG', epochs => 1000)", 'pepnet_train',
	'CALL pepnet_train on the standby: 25006 before its data query runs (no 22012)');
fails_with($standby, "CALL pepnet_train('m\@2', 'SELECT domain, persona, features, label FROM cands', epochs => 3)", 'pepnet_train',
	'CALL pepnet_train continuing a version on the standby: 25006');
is($standby->safe_psql($db, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'active'"), 1,
	'no writer left running on the standby');
is($primary->safe_psql($db, "SELECT count(*) FROM pepnet.models"), 2, 'nothing was written anywhere');

# --- the primary in a read-only transaction refuses the same way -----------------------------
my ($rc, $o, $e) = $primary->psql($db, "\\set VERBOSITY verbose\nBEGIN READ ONLY;\nSELECT pepnet_deploy('m', 1);");
like($e, qr/ERROR:  25006: pepnet_deploy cannot run in a read-only transaction/, 'primary: pepnet_deploy in a read-only transaction: 25006');
($rc, $o, $e) = $primary->psql($db, "\\set VERBOSITY verbose\nSET default_transaction_read_only = on;\nCALL pepnet_train('m', 'SELECT 1/0 AS domain', config => '$CFG');");
like($e, qr/ERROR:  25006: pepnet_train cannot run in a read-only transaction/, 'primary: CALL pepnet_train with default_transaction_read_only: 25006 before the data query');

# --- ALTER EXTENSION UPDATE from 0.1.0 (to the current 0.3.0) fills the fingerprints of existing versions
$primary->safe_psql($db, 'CREATE DATABASE old');
$primary->safe_psql('old', "CREATE EXTENSION pepnet VERSION '0.1.0'; SELECT pepnet_create('u', '$CFG', 3), pepnet_create('u', '$CFG', 4);");
# the fingerprint by its definition (SHA-256 of the config text's length, big-endian, the text and the weights), under 0.1.0
my $fp_010 = $primary->safe_psql('old', "SELECT string_agg(encode(sha256(int8send(octet_length(config::text)::int8) || convert_to(config::text, 'UTF8') || weights), 'hex'), ',' ORDER BY version) FROM pepnet.models");
$primary->safe_psql('old', "ALTER EXTENSION pepnet UPDATE");
is($primary->safe_psql('old', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', '0.1.0 updated to 0.3.0 on the primary');
is($primary->safe_psql('old', "SELECT string_agg(encode(fingerprint, 'hex'), ',' ORDER BY version) FROM pepnet.models"),
	$fp_010, 'the upgrade computed the fingerprint of every existing version (from the weights stored by 0.1.0)');
is($primary->safe_psql('old', "SELECT string_agg((fingerprint = pepnet._fingerprint(config, pepnet_export('u\@' || version)))::text, ',' ORDER BY version) FROM pepnet.models"),
	'true,true', '... which the chunked weights still give');
$primary->wait_for_catchup($standby);
is($standby->safe_psql('old', "SELECT pepnet_pin('u\@2')::text"), $primary->safe_psql('old', "SELECT pepnet_pin('u\@2')::text"),
	'the standby pins upgraded versions with the primary\'s fingerprints');


# --- ALTER EXTENSION UPDATE from 0.2.0 on the primary: the standby follows, versions and pins unchanged
$primary->safe_psql($db, 'CREATE DATABASE old2');
$primary->safe_psql('old2', "CREATE EXTENSION pepnet VERSION '0.2.0'; SELECT pepnet_create('u', '$CFG', 3), pepnet_create('u', '$CFG', 4); SELECT pepnet_deploy('u', 1);");
my $q2 = "SELECT string_agg(version || ' ' || encode(fingerprint, 'hex') || ' ' || pepnet_pin('u\@' || version)::text || ' '
          || pepnet_predict('u\@' || version, 0, '{1}', '{5, 3}'), ',' ORDER BY version) FROM pepnet.models";
my $state2 = $primary->safe_psql('old2', $q2);
$primary->safe_psql('old2', "ALTER EXTENSION pepnet UPDATE");
$primary->wait_for_catchup($standby);
is($standby->safe_psql('old2', "SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', 'the standby has the 0.2.0 database updated to 0.3.0');
is($standby->safe_psql('old2', $q2), $state2, 'the standby: fingerprints, pins and scores of the versions stored under 0.2.0 unchanged by the update');
is($standby->safe_psql('old2', "SELECT pepnet_predict('u\@2'::pepnet_pinned, 0, '{1}', '{5, 3}') = pepnet_predict('u\@2', 0, '{1}', '{5, 3}')"), 't',
	'the standby scores the pinned form of a 0.2.0 version after the update');

$standby->stop;
$primary->stop;
done_testing();
