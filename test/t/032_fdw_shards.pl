# test/t/032_fdw_shards.pl: a coordinator and two shards with postgres_fdw.
#
# The candidate table is hash-partitioned by id into two foreign partitions, one on each shard;
# the coordinator also keeps the same rows in a local table as the single-node reference.  The
# versions are made on the coordinator and copied to the shards as bundles (shard 1 through psql,
# shard 2 pulling them through a foreign table over the coordinator), keeping number and
# fingerprint.  Asserts: the copies are identical (fingerprint, parent, metrics); scoring with a
# pinned reference is shipped (EXPLAIN VERBOSE shows pepnet_predict inside Remote SQL) for a
# filtered query, a top-k query and per-shard aggregates, and gives exactly the single node's
# results; per-domain AUC and logloss combined from per-shard aggregates equal pepnet_evaluate on
# one node; the version is the coordinator's pin whatever each shard has deployed; a version number
# that means other weights on a shard is refused there (scoring and copying), never renumbered.
# A named model: pepnet_predict(pepnet_pinned, candidate record) over a foreign table is not shipped
# (postgres_fdw ships no whole-row reference) and scores on the coordinator as on one node; views on
# the shards that score with the pin are, the filter and top-k on their score running on the shards
# with the single node's results, and a shard whose version has other weights refuses.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $db = 'postgres';
my %n;
for my $name (qw(coord shard1 shard2))
{
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', "fsync = off\njit = off\ncluster_name = '$name'\n");
	$node->start;
	$node->safe_psql($db, 'CREATE EXTENSION pepnet; CREATE EXTENSION postgres_fdw;');
	$n{$name} = $node;
}
my ($coord, $s1, $s2) = @n{qw(coord shard1 shard2)};
sub sq { my ($node, $sql) = @_; return $node->safe_psql($db, $sql); }

# psql's error output of $sql on $node (with the SQLSTATE); '' if it succeeded
sub err_of
{
	my ($node, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return $rc == 0 ? '' : $err;
}

# versions 1 and 2 on the coordinator, version 2 deployed
my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 500}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 100}], "emb_dim": 4, "hidden": [16, 8]}';
sq($coord, "SELECT pepnet_create('ctr', '$CFG', 1), pepnet_create('ctr', '$CFG', 2), pepnet_deploy('ctr', 2);
            UPDATE pepnet.models SET metrics = '{\"note\": \"v2\"}', parent = 1 WHERE name = 'ctr' AND version = 2;");

# --- copying versions: shard 1 through psql, shard 2 through postgres_fdw -----------------------
for my $v (1, 2)
{
	my $bundle = sq($coord, "SELECT pepnet_export_version('ctr\@$v')");
	is(sq($s1, "SELECT pepnet_import_version('$bundle')"), $v, "shard1: bundle of version $v imported as version $v");
}
my ($ch, $cp) = ($coord->host, $coord->port);
sq($coord, "CREATE VIEW pepnet_bundles AS SELECT name, version, pepnet_export_version(name || '\@' || version) AS bundle FROM pepnet.models");
sq($s2, "CREATE SERVER registry FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '$ch', port '$cp', dbname '$db');
         CREATE USER MAPPING FOR CURRENT_USER SERVER registry;
         CREATE FOREIGN TABLE registry_bundles (name text, version int, bundle bytea) SERVER registry OPTIONS (table_name 'pepnet_bundles');");
is(sq($s2, "SELECT string_agg(pepnet_import_version(bundle)::text, ',' ORDER BY version) FROM registry_bundles WHERE name = 'ctr'"),
	'1,2', 'shard2: versions pulled through postgres_fdw keep their numbers');
my $rows = "SELECT name, version, parent, metrics, encode(fingerprint, 'hex') FROM pepnet.models ORDER BY 1, 2";
my $want = sq($coord, $rows);
is(sq($s1, $rows), $want, 'shard1 holds the same versions: number, parent, metrics, fingerprint');
is(sq($s2, $rows), $want, 'shard2 holds the same versions: number, parent, metrics, fingerprint');
sq($_, "SELECT pepnet_deploy('ctr', 2)") for ($s1, $s2);

# --- the sharded candidate table --------------------------------------------------------------
my @servers;
for my $i (1, 2)
{
	my $s = $n{"shard$i"};
	my ($h, $p) = ($s->host, $s->port);
	sq($s, "CREATE TABLE cands_p$i (id bigint PRIMARY KEY, domain int, persona bigint[], features bigint[], label bool)");
	sq($coord, "CREATE SERVER shard$i FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '$h', port '$p', dbname '$db', extensions 'pepnet', fdw_tuple_cost '0.1');
	            CREATE USER MAPPING FOR CURRENT_USER SERVER shard$i;");
}
sq($coord, q{
	CREATE TABLE cands (id bigint, domain int, persona bigint[], features bigint[], label bool) PARTITION BY HASH (id);
	CREATE FOREIGN TABLE cands_p1 PARTITION OF cands FOR VALUES WITH (modulus 2, remainder 0) SERVER shard1;
	CREATE FOREIGN TABLE cands_p2 PARTITION OF cands FOR VALUES WITH (modulus 2, remainder 1) SERVER shard2;
	CREATE TABLE cands_local AS
	SELECT i::bigint AS id, i % 3 AS domain, ARRAY[i % 17]::bigint[] AS persona,
	       ARRAY[(i * 7919) % 1000, i % 24]::bigint[] AS features, (hashint4(i) % 3 = 0) AS label
	FROM generate_series(1, 600) i;
	INSERT INTO cands SELECT * FROM cands_local;
});
sq($_, 'ANALYZE') for ($s1, $s2);
sq($coord, 'ANALYZE cands, cands_local');
ok(sq($s1, 'SELECT count(*) FROM cands_p1') > 200 && sq($s2, 'SELECT count(*) FROM cands_p2') > 200,
	'the rows are spread over both shards');

my $pin = sq($coord, "SELECT pepnet_pin('ctr')");
like($pin, qr/^ctr\@2#[0-9a-f]{64}$/, "pepnet_pin('ctr') pins the deployed version 2 with its fingerprint");
my $P = "pepnet_predict('ctr\@2'::pepnet_pinned, domain, persona, features)";

# scores computed on each shard directly equal the single node's (text and pinned references)
my $local = sq($coord, "SELECT string_agg(id || ':' || pepnet_predict('ctr\@2', domain, persona, features), ',' ORDER BY id) FROM cands_local");
my $local_pinned = sq($coord, "SELECT string_agg(id || ':' || $P, ',' ORDER BY id) FROM cands_local");
is($local_pinned, $local, 'coordinator: the pinned reference scores as the text reference');
my $on_shards = join(',', map {
	sq($n{"shard$_"}, "SELECT string_agg(id || ':' || pepnet_predict('$pin'::pepnet_pinned, domain, persona, features), ',' ORDER BY id) FROM cands_p$_")
} (1, 2));
my %want = map { split /:/ } split /,/, $local;
my %got = map { split /:/ } split /,/, $on_shards;
is_deeply(\%got, \%want, 'each shard scores its candidates exactly as the single node');

# --- 1. filtered: the WHERE clause with the score runs on the shards --------------------------
my $t = sq($coord, "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY $P) FROM cands_local WHERE domain = 1");
my $filt = "SELECT string_agg(id::text, ',' ORDER BY id) FROM %s WHERE domain = 1 AND $P > $t";
my $plan = sq($coord, 'EXPLAIN (VERBOSE, COSTS OFF) ' . sprintf($filt, 'cands'));
my @remote = ($plan =~ /Remote SQL: (.*)/g);
is(scalar(@remote), 2, 'filtered: one remote query per shard');
is(scalar(grep { /WHERE .*public\.pepnet_predict\('ctr\@2#[0-9a-f]{64}'::public\.pepnet_pinned, domain, persona, features/ } @remote),
	2, 'filtered: EXPLAIN VERBOSE shows pepnet_predict with the pinned version inside each Remote SQL')
	or diag($plan);
is(sq($coord, sprintf($filt, 'cands')), sq($coord, sprintf($filt, 'cands_local')), 'filtered: the same candidates as on one node');

# --- 2. top-k: each shard sorts by score, the coordinator merges ------------------------------
my $topk = "SELECT string_agg(id || ':' || s, ',' ORDER BY s DESC, id) FROM (SELECT id, $P AS s FROM %s WHERE domain = 2 ORDER BY s DESC LIMIT 10) q";
$plan = sq($coord, "SET enable_sort = off; EXPLAIN (VERBOSE, COSTS OFF) " . sprintf($topk, 'cands'));
@remote = ($plan =~ /Remote SQL: (.*)/g);
is(scalar(grep { /ORDER BY public\.pepnet_predict\('ctr\@2#[0-9a-f]{64}'::public\.pepnet_pinned/ } @remote),
	2, 'top-k: EXPLAIN VERBOSE shows the shards ordering by pepnet_predict in Remote SQL')
	or diag($plan);
like($plan, qr/Merge Append/, 'top-k: the coordinator merges the shards\' sorted streams');
is(sq($coord, "SET enable_sort = off; " . sprintf($topk, 'cands')), sq($coord, sprintf($topk, 'cands_local')),
	'top-k: the same 10 candidates and scores as on one node');

# --- 3. aggregates: per shard, combined on the coordinator ------------------------------------
# (the aggregates of one grouping see the rows in one order: the arrays line up)
my $agg1 = "SELECT domain, array_agg($P) AS scores, array_agg(label) AS labels FROM %s GROUP BY domain";
$plan = sq($coord, 'EXPLAIN (VERBOSE, COSTS OFF) ' . sprintf($agg1, 'cands_p1'));
like($plan, qr/Relations: Aggregate on \(public\.cands_p1\)/, 'aggregate: the grouping runs on the shard');
like($plan, qr/Remote SQL: SELECT domain, array_agg\(public\.pepnet_predict\(/, 'aggregate: EXPLAIN VERBOSE shows pepnet_predict inside the remote aggregate');
# exact AUC (ties count half) and logloss per domain from the shards' score arrays
my $metrics = qq{
	WITH per_shard AS (%s UNION ALL %s),
	s AS (SELECT domain, unnest(scores) AS p, unnest(labels) AS y FROM per_shard),
	r AS (SELECT domain, p, y, rank() OVER (PARTITION BY domain ORDER BY p) + (count(*) OVER (PARTITION BY domain, p) - 1) / 2.0 AS rnk FROM s)
	SELECT string_agg(format('%%s:%%s:%%s:%%s', domain, n, auc, logloss), ',' ORDER BY domain)
	FROM (SELECT domain, count(*) AS n,
	             (sum(rnk) FILTER (WHERE y) - count(*) FILTER (WHERE y) * (count(*) FILTER (WHERE y) + 1) / 2.0)
	               / (count(*) FILTER (WHERE y) * count(*) FILTER (WHERE NOT y)) AS auc,
	             avg(CASE WHEN y THEN -ln(p) ELSE -ln(1 - p) END) AS logloss
	      FROM r GROUP BY domain) m};
my $combined = sq($coord, sprintf($metrics, sprintf($agg1, 'cands_p1'), sprintf($agg1, 'cands_p2')));
my $single = sq($coord, q{SELECT string_agg(format('%s:%s:%s:%s', domain, rows, auc, logloss), ',' ORDER BY domain)
	FROM pepnet_evaluate('ctr@2', 'SELECT domain, persona, features, label FROM cands_local') WHERE domain IS NOT NULL});
# pepnet_evaluate scores in blocks (GEMM), pepnet_predict one by one (GEMV): equal to float rounding
my @c = map { [ split /:/ ] } split /,/, $combined;
my @e = map { [ split /:/ ] } split /,/, $single;
is(scalar(@c), 3, 'three domains combined from the shards');
my @off = grep {
	my ($x, $y) = ($c[$_], $e[$_]);
	!$y || $x->[0] != $y->[0] || $x->[1] != $y->[1] || abs($x->[2] - $y->[2]) > 1e-6 || abs($x->[3] - $y->[3]) > 1e-6
} 0 .. $#c;
ok(@c == @e && !@off, 'per-domain rows, AUC and logloss combined from the shards equal pepnet_evaluate on one node')
	or diag("combined $combined\nsingle   $single");

# --- 4. batch scoring: an UPDATE of the partitioned table runs as one UPDATE on each shard ----
sq($s1, 'ALTER TABLE cands_p1 ADD COLUMN score float8');
sq($s2, 'ALTER TABLE cands_p2 ADD COLUMN score float8');
sq($coord, 'ALTER TABLE cands ADD COLUMN score float8; ALTER TABLE cands_local ADD COLUMN score float8');
my $upd = "UPDATE %s SET score = $P";
$plan = sq($coord, 'EXPLAIN (VERBOSE, COSTS OFF) ' . sprintf($upd, 'cands'));
@remote = ($plan =~ /Remote SQL: (.*)/g);
is(scalar(grep { /^UPDATE public\.cands_p\d SET score = public\.pepnet_predict\('ctr\@2#[0-9a-f]{64}'::public\.pepnet_pinned/ } @remote),
	2, 'batch: EXPLAIN VERBOSE shows each shard running the UPDATE with pepnet_predict (Foreign Update)')
	or diag($plan);
sq($coord, sprintf($upd, 'cands') . '; ' . sprintf($upd, 'cands_local'));
is(sq($coord, "SELECT string_agg(id || ':' || score, ',' ORDER BY id) FROM cands"),
	sq($coord, "SELECT string_agg(id || ':' || score, ',' ORDER BY id) FROM cands_local"), 'batch: the scores stored on the shards equal one node\'s');

# --- one version per statement: the coordinator's pin, whatever the shards deploy -------------
sq($s2, "SELECT pepnet_deploy('ctr', 1)");
my $v2 = sq($coord, "SELECT string_agg(id::text, ',' ORDER BY id) FROM cands_local WHERE domain = 0 AND $P > $t");
my $v1 = sq($coord, "SELECT string_agg(id::text, ',' ORDER BY id) FROM cands_local WHERE domain = 0 AND pepnet_predict('ctr\@1'::pepnet_pinned, domain, persona, features) > $t");
isnt($v1, $v2, 'versions 1 and 2 select other candidates (the next check can fail)');
is(sq($coord, "SELECT string_agg(id::text, ',' ORDER BY id) FROM cands WHERE domain = 0 AND $P > $t"), $v2,
	'a shard with another version deployed still scores the pinned version 2');
# a pin as a parameter (prepared statement, plpgsql variable) is shipped as well
is(sq($coord, "PREPARE q(pepnet_pinned) AS SELECT string_agg(id::text, ',' ORDER BY id) FROM cands WHERE domain = 0 AND pepnet_predict(\$1, domain, persona, features) > $t;
               EXECUTE q(pepnet_pin('ctr\@1'))"), $v1, 'a pinned parameter selects version 1 on the shards');

# --- a version number that means other weights on a shard is refused --------------------------
sq($s1, "SELECT pepnet_create('ctr', '$CFG', 3)");    # shard1's own version 3
sq($coord, "SELECT pepnet_create('ctr', '$CFG', 4)"); # the coordinator's version 3: other weights
my $err = err_of($coord, "SELECT count(*) FROM cands_p1 WHERE pepnet_predict('ctr\@3'::pepnet_pinned, domain, persona, features) > 0.5");
like($err, qr/55000: model "ctr" version 3 on this node \("shard1"\) is not the pinned version/, 'shard1 refuses to score a version 3 with another fingerprint');
$err = err_of($coord, "SELECT count(*) FROM cands_p2 WHERE pepnet_predict('ctr\@3'::pepnet_pinned, domain, persona, features) > 0.5");
like($err, qr/42704: model "ctr" has no version 3/, 'shard2 without version 3 says so');
my $b3 = sq($coord, "SELECT pepnet_export_version('ctr\@3')");
like(err_of($s1, "SELECT pepnet_import_version('$b3')"), qr/23505: model "ctr" version 3 already exists on this node \("shard1"\) with other config or weights/,
	'copying the coordinator\'s version 3 to shard1 is refused, not renumbered');
is(sq($s1, "SELECT count(*) FROM pepnet.models WHERE name = 'ctr'"), 3, 'shard1 still has three versions');
is(sq($s2, "SELECT pepnet_import_version(bundle) FROM registry_bundles WHERE name = 'ctr' AND version = 3"), 3,
	'shard2 takes version 3 as version 3');
is(sq($coord, "SELECT count(*) FROM cands_p2 WHERE pepnet_predict('ctr\@3'::pepnet_pinned, domain, persona, features) >= 0"),
	sq($s2, 'SELECT count(*) FROM cands_p2'), 'shard2 now scores the coordinator\'s version 3');

# --- a named model ("inputs": "columns"): the pinned by-name form --------------------------------
# postgres_fdw (PostgreSQL 15) ships no whole-row reference: its type is the table's row type (not
# built-in, not an extension's), and it would reach the shard as an anonymous ROW(...) without
# column names.  pepnet_predict(pepnet_pinned, candidate record) over a foreign table therefore
# runs on the coordinator; shard-side scoring goes through a view on each shard that scores with
# the pin, the coordinator's filter, sort and aggregate on its score column being shipped.
my $NCFG = '{"inputs": "columns", "domains": 3, "features": [{"name": "item", "buckets": 500}, {"name": "cat", "buckets": 40}], "persona": [{"name": "user_id", "buckets": 100}], "emb_dim": 4, "hidden": [16, 8]}';
sq($coord, "SELECT pepnet_create('nm', '$NCFG', 11), pepnet_create('nm', '$NCFG', 12)");
my $nb = sq($coord, "SELECT pepnet_export_version('nm\@1')");
is(sq($s1, "SELECT pepnet_import_version('$nb')"), 1, 'named: shard1 imports version 1 of the named model');
is(sq($s2, "SELECT pepnet_import_version(bundle) FROM registry_bundles WHERE name = 'nm' AND version = 1"), 1,
	'named: shard2 pulls version 1 of the named model');
my $npin = sq($coord, "SELECT pepnet_pin('nm\@1')");
for my $i (1, 2)
{
	my $s = $n{"shard$i"};
	sq($s, "CREATE TABLE ncands_p$i (id bigint PRIMARY KEY, domain int, item bigint, cat text, user_id bigint);
	        CREATE VIEW ncands_scored_p$i AS SELECT c.*, pepnet_predict('$npin'::pepnet_pinned, c) AS score FROM ncands_p$i c;");
}
sq($coord, q{
	CREATE TABLE ncands_load (id bigint, domain int, item bigint, cat text, user_id bigint) PARTITION BY HASH (id);
	CREATE FOREIGN TABLE ncands_load_p1 PARTITION OF ncands_load FOR VALUES WITH (modulus 2, remainder 0)
		SERVER shard1 OPTIONS (table_name 'ncands_p1');
	CREATE FOREIGN TABLE ncands_load_p2 PARTITION OF ncands_load FOR VALUES WITH (modulus 2, remainder 1)
		SERVER shard2 OPTIONS (table_name 'ncands_p2');
	CREATE TABLE ncands (id bigint, domain int, item bigint, cat text, user_id bigint, score float8) PARTITION BY HASH (id);
	CREATE FOREIGN TABLE ncands_p1 PARTITION OF ncands FOR VALUES WITH (modulus 2, remainder 0)
		SERVER shard1 OPTIONS (table_name 'ncands_scored_p1');
	CREATE FOREIGN TABLE ncands_p2 PARTITION OF ncands FOR VALUES WITH (modulus 2, remainder 1)
		SERVER shard2 OPTIONS (table_name 'ncands_scored_p2');
	CREATE TABLE ncands_local AS
	SELECT i::bigint AS id, i % 3 AS domain, ((i * 7919) % 1000)::bigint AS item, 'cat-' || (i % 37) AS cat,
	       (i % 17)::bigint AS user_id
	FROM generate_series(1, 600) i;
	INSERT INTO ncands_load SELECT * FROM ncands_local;
});
sq($_, 'ANALYZE') for ($s1, $s2);
sq($coord, 'ANALYZE ncands, ncands_local');
my $NP = "pepnet_predict('nm\@1'::pepnet_pinned, c)";
my $nlocal = sq($coord, "SELECT string_agg(id || ':' || pepnet_predict('nm\@1', c), ',' ORDER BY id) FROM ncands_local c");
is(sq($coord, "SELECT string_agg(id || ':' || $NP, ',' ORDER BY id) FROM ncands_local c"), $nlocal,
	'named: the pinned by-name form scores as the text form on the coordinator');
is(sq($coord, "SELECT string_agg(id || ':' || score, ',' ORDER BY id) FROM ncands"), $nlocal,
	'named: the shards\' views score every candidate exactly as the single node');

# the call over a foreign table: computed on the coordinator (not in Remote SQL), the same scores
my $nt = sq($coord, "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY $NP) FROM ncands_local c WHERE domain = 1");
my $nfilt = "SELECT string_agg(id::text, ',' ORDER BY id) FROM %s c WHERE domain = 1 AND $NP > $nt";
$plan = sq($coord, 'EXPLAIN (VERBOSE, COSTS OFF) ' . sprintf($nfilt, 'ncands_load'));
@remote = ($plan =~ /Remote SQL: (.*)/g);
ok(@remote == 2 && !grep({ /pepnet_predict/ } @remote) && (() = $plan =~ /Filter: .*pepnet_predict\('nm\@1#[0-9a-f]{64}'::pepnet_pinned, \(c_\d\.\*\)/g) == 2,
	'named: postgres_fdw does not ship a whole-row argument: the coordinator scores the fetched rows')
	or diag($plan);
my $nwant = sq($coord, sprintf($nfilt, 'ncands_local'));
is(sq($coord, sprintf($nfilt, 'ncands_load')), $nwant, 'named: and selects the single node\'s candidates');

# through the shards' views: the filter on the score runs on the shards
my $vfilt = "SELECT string_agg(id::text, ',' ORDER BY id) FROM ncands WHERE domain = 1 AND score > $nt";
$plan = sq($coord, "EXPLAIN (VERBOSE, COSTS OFF) $vfilt");
@remote = ($plan =~ /Remote SQL: (.*)/g);
is(scalar(grep { /FROM public\.ncands_scored_p\d WHERE .*\(score > / } @remote), 2,
	'named: the filter on the views\' score is in each Remote SQL') or diag($plan);
like(sq($s1, "EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM ncands_scored_p1 WHERE domain = 1 AND score > $nt"),
	qr/pepnet_predict\('nm\@1#[0-9a-f]{64}'::pepnet_pinned, c\.\*\)/, 'named: the shard scores with the pinned by-name form');
is(sq($coord, $vfilt), $nwant, 'named: filtered on the shards, the single node\'s candidates');

# top-k: each shard sorts by its view's score, the coordinator merges
my $ntopk = "SELECT string_agg(id || ':' || s, ',' ORDER BY s DESC, id) FROM (SELECT id, %s AS s FROM %s WHERE domain = 2 ORDER BY s DESC LIMIT 10) q";
$plan = sq($coord, "SET enable_sort = off; EXPLAIN (VERBOSE, COSTS OFF) " . sprintf($ntopk, 'score', 'ncands'));
@remote = ($plan =~ /Remote SQL: (.*)/g);
is(scalar(grep { /ORDER BY score DESC/ } @remote), 2, 'named top-k: each shard orders by its score') or diag($plan);
is(sq($coord, "SET enable_sort = off; " . sprintf($ntopk, 'score', 'ncands')), sq($coord, sprintf($ntopk, $NP, 'ncands_local c')),
	'named top-k: the same 10 candidates and scores as on one node');

# a shard whose version of the pinned number has other weights refuses (55000), through the coordinator
sq($s1, "SELECT pepnet_create('nm', '$NCFG', 13)");    # shard1's own version 2
my $npin2 = sq($coord, "SELECT pepnet_pin('nm\@2')");   # the coordinator's version 2: other weights
sq($s1, "CREATE OR REPLACE VIEW ncands_scored_p1 AS SELECT c.*, pepnet_predict('$npin2'::pepnet_pinned, c) AS score FROM ncands_p1 c");
like(err_of($coord, "SELECT count(*) FROM ncands WHERE score > 0.5"),
	qr/55000: model "nm" version 2 on this node \("shard1"\) is not the pinned version/,
	'named: shard1 refuses to score the pinned version 2 with other weights, and the coordinator says so');
$err = err_of($coord, "SELECT count(*) FROM ncands_local c WHERE pepnet_predict('nm\@1'::pepnet_pinned, 1, NULL, '{1, 2}') > 0");
like($err, qr/22023: model "nm" version 1 takes rows by name, not arrays/, 'named: the arrays form refuses the named version');

# --- training over the shards: reproducible with an ORDER BY ---------------------------------
# (async foreign scans deliver the shards' rows in varying order, and the seeded shuffle permutes
# rows in arrival order: the data query needs an ORDER BY on a unique key to be reproducible)
sq($coord, "ALTER SERVER shard$_ OPTIONS (ADD async_capable 'true')") for (1, 2);
my $train = "CALL pepnet_train('%s', 'SELECT domain, persona, features, label FROM %s ORDER BY id', config => '$CFG', epochs => 2, batch_size => 64, seed => 5)";
sq($coord, sprintf($train, 'sharded', 'cands')) for (1, 2);
sq($coord, sprintf($train, 'single', 'cands_local'));
my $fps = sq($coord, "SELECT string_agg(name || '\@' || version || ':' || encode(fingerprint, 'hex'), ',' ORDER BY name, version)
                      FROM pepnet.models WHERE name IN ('sharded', 'single')");
my %fp = map { split /:/ } split /,/, $fps;
is(scalar(keys %fp), 6, 'two trainings over the shards and one on one node, two epochs each');
ok($fp{'sharded@2'} ne $fp{'sharded@1'}, 'the second epoch changed the weights (the next checks can fail)');
is($fp{'sharded@3'} . $fp{'sharded@4'}, $fp{'sharded@1'} . $fp{'sharded@2'}, 'training twice over the shards with ORDER BY gives the same weights');
is($fp{'single@1'} . $fp{'single@2'}, $fp{'sharded@1'} . $fp{'sharded@2'}, 'and the same weights as training on one node');

$_->stop for values %n;
done_testing();
