# Training across the upgrades to the current version (0.3.0): a database created at 0.1.0 trains
# with the current library (no optimizer_state table yet), its versions score identically after
# ALTER EXTENSION UPDATE, pepnet_evaluate gains the calibration columns, training continues from a
# 0.1.0-era version with a fresh Adam and stores the optimizer state from then on.  A database
# created at 0.2.0 trains (Adam state stored in chunks); after the update its versions score
# identically and training continues from one, resuming its Adam state.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->start;
my $db = 'postgres';
sub sql { return $node->safe_psql($db, $_[0]); }

sql("CREATE EXTENSION pepnet VERSION '0.1.0'");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.1.0', 'created at 0.1.0');
is(sql("SELECT to_regclass('pepnet.optimizer_state') IS NULL"), 't', 'no optimizer_state table at 0.1.0');

sql("CREATE TABLE ev AS SELECT i, i % 2 AS domain, ARRAY[i % 20]::bigint[] AS persona,
     ARRAY[i % 37]::bigint[] AS features, (i % 37) % 3 = 0 AS label FROM generate_series(1, 2000) i");
my $cfg = '{"domains": 2, "features": [{"name": "item", "buckets": 64}], "persona": [{"name": "u", "buckets": 32}], "emb_dim": 4, "hidden": [8]}';
my $data = 'SELECT domain, persona, features, label FROM ev';
sql("CALL pepnet_train('m', '$data', '$cfg', epochs => 2, lr => 0.01, progress_interval => 0)");
is(sql("SELECT count(*) FROM pepnet.models WHERE name = 'm'"), '2', '0.1.0 procedure trains with the 0.2 library');
my $cols = sql("SELECT count(*) FROM pepnet_evaluate('m', '$data')");
is($cols, '3', 'pepnet_evaluate of 0.1.0 returns its rows');
my $before = sql("SELECT string_agg(score::text, ',' ORDER BY idx) FROM pepnet_score('m', 1, '{3}', '{{1}, {2}, {5}}')");

sql("ALTER EXTENSION pepnet UPDATE");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', 'updated to 0.3.0');
is(sql("SELECT string_agg(score::text, ',' ORDER BY idx) FROM pepnet_score('m', 1, '{3}', '{{1}, {2}, {5}}')"),
	$before, 'versions trained before the update score identically');
is(sql("SELECT count(*) FROM pepnet_evaluate('m', '$data') WHERE pcoc > 0 AND mean_p > 0 AND actual > 0"), '3',
	'pepnet_evaluate gains mean_p, actual and pcoc');

# continue from the 0.1.0-era version: Adam starts afresh (no stored state), then is stored
sql("CALL pepnet_train('m', '$data', progress_interval => 0)");
is(sql("SELECT metrics->>'resumed_steps' FROM pepnet.models WHERE name = 'm' AND version = 3"), '0',
	'continuing from a version without optimizer state starts Adam afresh');
is(sql("SELECT steps > 0 FROM pepnet.optimizer_state WHERE name = 'm' AND version = 3"), 't',
	'the new version stores its optimizer state');
sql("CALL pepnet_train('m', '$data', progress_interval => 0)");
is(sql("SELECT (metrics->>'resumed_steps')::int = (SELECT steps FROM pepnet.optimizer_state WHERE name = 'm' AND version = 3)
      FROM pepnet.models WHERE name = 'm' AND version = 4"), 't', 'and the next training resumes it');

# a failed epoch names the data row, and the session keeps no trainer (freed on abort)
my ($ret, $out, $err) = $node->psql($db,
	"CALL pepnet_train('m', 'SELECT domain, persona, features, CASE WHEN i = 1500 THEN 2 ELSE 0 END AS label FROM ev ORDER BY i', progress_interval => 0);
	 SELECT count(*) FROM pg_backend_memory_contexts WHERE name = 'pepnet trainer'", on_error_stop => 0);
like($err, qr/data query row 1500/, 'a failed epoch names the row');
is($out, '0', 'and its session holds no trainer afterwards');

# 0.2.0 -> 0.3.0: trained under 0.2.0, training continues after the update resuming Adam
$node->safe_psql('postgres', 'CREATE DATABASE v020');
$db = 'v020';
sql("CREATE EXTENSION pepnet VERSION '0.2.0'");
sql("CREATE TABLE ev AS SELECT i, i % 2 AS domain, ARRAY[i % 20]::bigint[] AS persona,
     ARRAY[i % 37]::bigint[] AS features, (i % 37) % 3 = 0 AS label FROM generate_series(1, 2000) i");
sql("SET pepnet.chunk_size = 512; CALL pepnet_train('m', '$data', '$cfg', epochs => 2, lr => 0.01, progress_interval => 0)");
cmp_ok(sql("SELECT count(*) FROM pepnet.optimizer_chunks WHERE name = 'm' AND version = 2"), '>', 2, '0.2.0: Adam state of m\@2 stored in chunks');
$before = sql("SELECT string_agg(score::text, ',' ORDER BY idx) FROM pepnet_score('m', 1, '{3}', '{{1}, {2}, {5}}')");
my $steps2 = sql("SELECT steps FROM pepnet.optimizer_state WHERE name = 'm' AND version = 2");
sql("ALTER EXTENSION pepnet UPDATE");
is(sql("SELECT extversion FROM pg_extension WHERE extname = 'pepnet'"), '0.3.0', '0.2.0 updated to 0.3.0');
is(sql("SELECT string_agg(score::text, ',' ORDER BY idx) FROM pepnet_score('m', 1, '{3}', '{{1}, {2}, {5}}')"),
	$before, 'versions trained under 0.2.0 score identically after the update');
sql("CALL pepnet_train('m', '$data', progress_interval => 0)");
is(sql("SELECT parent || ' ' || (metrics->>'resumed_steps') FROM pepnet.models WHERE name = 'm' AND version = 3"), "2 $steps2",
	'training after the update continues from m\@2 and resumes the Adam state stored under 0.2.0');

$node->stop;
done_testing();
