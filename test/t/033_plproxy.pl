# test/t/033_plproxy.pl: batch scoring of a sharded table with PL/Proxy (RUN ON ALL).
#
# Two shards hold one half of the candidates each and a function score_batch(pepnet_pinned, domain)
# that scores their own rows; the coordinator's PL/Proxy function of the same signature runs it on
# every shard and returns the union.  Asserts: the union equals scoring all rows on one node; the
# pinned version travels with its fingerprint, so a shard whose version has other weights refuses
# (and the error reaches the caller); a version pinned on the coordinator is scored even where a
# shard deployed another one; a named model's top k per shard (pepnet_predict(pepnet_pinned, candidate
# record)) merges into one node's top k, and a shard whose version has other weights refuses.
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
	$node->safe_psql($db, 'CREATE EXTENSION pepnet');
	$n{$name} = $node;
}
my ($coord, $s1, $s2) = @n{qw(coord shard1 shard2)};
sub sq { my ($node, $sql) = @_; return $node->safe_psql($db, $sql); }

my $CFG = '{"domains": 2, "features": [{"name": "item", "buckets": 400}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 60}], "emb_dim": 4, "hidden": [16]}';
sq($coord, "SELECT pepnet_create('ctr', '$CFG', 1), pepnet_create('ctr', '$CFG', 2), pepnet_deploy('ctr', 2);
            CREATE TABLE cands AS
            SELECT i::bigint AS id, (i / 3) % 2 AS domain, ARRAY[i % 13]::bigint[] AS persona, ARRAY[(i * 37) % 400, i % 24]::bigint[] AS features
            FROM generate_series(1, 400) i;");
for my $i (1, 2)
{
	my $s = $n{"shard$i"};
	for my $v (1, 2)
	{
		my $bundle = sq($coord, "SELECT pepnet_export_version('ctr\@$v')");
		sq($s, "SELECT pepnet_import_version('$bundle')");
	}
	# each shard: its half of the candidates (PL/Proxy's partition i-1 of 2) and the scoring function
	my $rows = sq($coord, "SELECT string_agg(format('(%s,%s,%L,%L)', id, domain, persona, features), ',') FROM cands WHERE id % 2 = " . ($i - 1));
	sq($s, "CREATE TABLE cands (id bigint PRIMARY KEY, domain int, persona bigint[], features bigint[]);
	        INSERT INTO cands VALUES $rows;
	        CREATE FUNCTION score_batch(model pepnet_pinned, domain int, OUT id bigint, OUT score float8) RETURNS SETOF record
	        LANGUAGE sql STABLE AS \$\$ SELECT c.id, pepnet_predict(model, c.domain, c.persona, c.features) FROM cands c WHERE c.domain = score_batch.domain \$\$;");
}
my ($h1, $p1, $h2, $p2) = ($s1->host, $s1->port, $s2->host, $s2->port);
sq($coord, "CREATE EXTENSION plproxy;
            CREATE SERVER shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 'host=$h1 port=$p1 dbname=$db', p1 'host=$h2 port=$p2 dbname=$db');
            CREATE USER MAPPING FOR PUBLIC SERVER shards;
            CREATE FUNCTION score_batch(model pepnet_pinned, domain int, OUT id bigint, OUT score float8) RETURNS SETOF record
            LANGUAGE plproxy AS \$\$ CLUSTER 'shards'; RUN ON ALL; \$\$;");

my $want = sq($coord, "SELECT string_agg(id || ':' || pepnet_predict('ctr\@2', domain, persona, features), ',' ORDER BY id) FROM cands WHERE domain = 1");
my $got = sq($coord, "SELECT string_agg(id || ':' || score, ',' ORDER BY id) FROM score_batch(pepnet_pin('ctr'), 1)");
is($got, $want, 'RUN ON ALL: the union of the shards\' scores equals one node\'s');
is(sq($s1, "SELECT count(*) FROM cands WHERE domain = 1") + sq($s2, "SELECT count(*) FROM cands WHERE domain = 1"),
	scalar(split /,/, $got), 'every candidate was scored once, on its shard');

# the coordinator's pin decides, not each shard's deployment
sq($s1, "SELECT pepnet_deploy('ctr', 1)");
is(sq($coord, "SELECT string_agg(id || ':' || score, ',' ORDER BY id) FROM score_batch('ctr\@2', 1)"), $want,
	'a shard with version 1 deployed still scores the pinned version 2');
my $want1 = sq($coord, "SELECT string_agg(id || ':' || pepnet_predict('ctr\@1', domain, persona, features), ',' ORDER BY id) FROM cands WHERE domain = 1");
isnt($want1, $want, 'versions 1 and 2 score differently (the checks above can fail)');
is(sq($coord, "SELECT string_agg(id || ':' || score, ',' ORDER BY id) FROM score_batch('ctr\@1', 1)"), $want1,
	'pinning version 1 scores version 1 on every shard');

# a shard whose version 3 has other weights refuses, and the caller sees why
sq($coord, "SELECT pepnet_create('ctr', '$CFG', 3)");
sq($s1, "SELECT pepnet_import_version('" . sq($coord, "SELECT pepnet_export_version('ctr\@3')") . "')");
sq($s2, "SELECT pepnet_create('ctr', '$CFG', 4)");
my ($rc, $out, $err) = $coord->psql($db, "SELECT count(*) FROM score_batch('ctr\@3', 0)");
isnt($rc, 0, 'scoring a version 3 that shard2 holds with other weights fails');
like($err, qr/model "ctr" version 3 on this node \("shard2"\) is not the pinned version/, 'the error names the shard and the cause');

# a named model: each shard's top k by the pinned by-name form, merged on the coordinator
my $NCFG = '{"inputs": "columns", "domains": 2, "features": [{"name": "item", "buckets": 400}, {"name": "cat", "buckets": 30}], "persona": [{"name": "user_id", "buckets": 60}], "emb_dim": 4, "hidden": [16]}';
sq($coord, "SELECT pepnet_create('nm', '$NCFG', 21);
            CREATE TABLE ncands AS SELECT id, domain, features[1] AS item, 'cat-' || features[2] AS cat, persona[1] AS user_id FROM cands;");
for my $i (1, 2)
{
	my $s = $n{"shard$i"};
	sq($s, "SELECT pepnet_import_version('" . sq($coord, "SELECT pepnet_export_version('nm\@1')") . "')");
	sq($s, "CREATE TABLE ncands AS SELECT id, domain, features[1] AS item, 'cat-' || features[2] AS cat, persona[1] AS user_id FROM cands;
	        CREATE FUNCTION top_k(model pepnet_pinned, domain int, k int, OUT id bigint, OUT score float8) RETURNS SETOF record
	        LANGUAGE sql STABLE AS \$\$ SELECT c.id, pepnet_predict(model, c) AS s FROM ncands c WHERE c.domain = top_k.domain
	                                  ORDER BY s DESC, c.id LIMIT k \$\$;");
}
sq($coord, "CREATE FUNCTION top_k(model pepnet_pinned, domain int, k int, OUT id bigint, OUT score float8) RETURNS SETOF record
            LANGUAGE plproxy AS \$\$ CLUSTER 'shards'; RUN ON ALL; \$\$;");
my $ntop = "SELECT string_agg(id || ':' || score, ',' ORDER BY score DESC, id) FROM (SELECT * FROM %s ORDER BY score DESC, id LIMIT 8) t";
my $nwant = sq($coord, sprintf($ntop, "(SELECT id, pepnet_predict('nm\@1', c) AS score FROM ncands c WHERE domain = 1) l"));
is(sq($coord, sprintf($ntop, "top_k('nm\@1', 1, 8)")), $nwant, 'named: the shards\' top 8 merged equal one node\'s top 8');
is(scalar(split /,/, $nwant), 8, 'named: eight candidates');
sq($s2, "SELECT pepnet_create('nm', '$NCFG', 22)");      # shard2's own version 2
sq($coord, "SELECT pepnet_create('nm', '$NCFG', 23)");    # the coordinator's: other weights
# shard1 holds the coordinator's version 2 (so that shard2's refusal, not a missing version, is the
# error: RUN ON ALL reports whichever shard fails first)
sq($n{shard1}, "SELECT pepnet_import_version('" . sq($coord, "SELECT pepnet_export_version('nm\@2')") . "')");
($rc, $out, $err) = $coord->psql($db, "SELECT count(*) FROM top_k('nm\@2', 0, 3)");
like($err, qr/model "nm" version 2 on this node \("shard2"\) is not the pinned version/, 'named: a shard whose version has other weights refuses');

$_->stop for values %n;
done_testing();
