# test/t/046_named_shared.pl: a version of the named form ("inputs": "columns") in the shared model
# cache (shared_preload_libraries = 'pepnet').
#
# One cluster with pepnet preloaded.  Asserts:
#  - a named version (text, uuid and NULL-bearing fields, dense columns) is preloaded into the
#    shared cache with its config, dense column names included;
#  - pepnet_score_rows, pepnet_predict(model, row) and pepnet_score_query score it through the
#    shared cache, in several sessions at once, exactly as backends with their own copies do
#    (after a restart with pepnet.shared_cache_size = 0);
#  - a session with the shared copy still binds the rows by the dense columns' names (a query
#    without them is 42703 naming them);
#  - versions with "domain_input": true (x0 one embedding wider: every part but PN, and the
#    shared-bottom baseline), whose shared domain caches are sized by the layer plan, score through
#    the shared cache bit for bit as in backends with their own copies.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('named_shared');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 64MB
fsync = off
jit = off
CONF
$node->start;
my $db = 'postgres';

sub sq { return $node->safe_psql($db, @_); }

sq(<<'SQL');
CREATE EXTENSION pepnet;
CREATE TABLE ev AS
SELECT g AS id, g % 3 AS domain, (g * 7919)::bigint AS item, 'c' || (g % 9) AS cat,
       ('00000000-0000-0000-0000-' || lpad(to_hex(g % 23), 12, '0'))::uuid AS user_id,
       CASE WHEN g % 4 = 0 THEN NULL ELSE g % 5 END AS region,
       (g % 10) * 0.1 AS price, g % 7 AS qty, g % 3 = 0 AS click
FROM generate_series(1, 800) g;
SQL
my $cfg = '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 16}, '
  . '{"name": "region", "buckets": 5, "hash": false}], "persona": [{"name": "user_id", "buckets": 40}], '
  . '"dense": [{"name": "price"}, {"name": "qty"}], "emb_dim": 4, "hidden": [8, 4]}';
sq("CALL pepnet_train('nm', 'SELECT * FROM ev', '$cfg', epochs => 2, batch_size => 32, lr => 0.01, seed => 2, progress_interval => 0)");
is(sq("SELECT config->>'inputs' FROM pepnet.models WHERE name = 'nm' AND version = 2"), 'columns', 'trained by name');

is(sq("SELECT pepnet_preload('nm')"), 't', 'the named version is preloaded into the shared cache');
is(sq("SELECT state FROM pepnet.shared_cache WHERE model = 'nm'"), 'ready', 'it is ready in the shared cache');

my $rows = "SELECT string_agg((s.candidate).id || ':' || s.score, ',') FROM pepnet_score_rows('nm', ARRAY(SELECT c FROM ev c ORDER BY id)) s";
my $pred = "SELECT string_agg(id || ':' || pepnet_predict('nm', c), ',' ORDER BY id) FROM (SELECT * FROM ev) c";
my $query = "SELECT string_agg(id || ':' || score, ',') FROM pepnet_score_query('nm', 'SELECT * FROM ev ORDER BY id') "
  . "AS t(id int, domain int, item bigint, cat text, user_id uuid, region int, price numeric, qty int, click boolean, score float8, scores float8[])";
# several sessions at once through the shared copy
my @h;
for my $i (1 .. 4)
{
	for my $what ([ 'rows', $rows ], [ 'predict', $pred ], [ 'query', $query ])
	{
		my ($out, $err) = ('', '');
		my $h = IPC::Run::start([ 'psql', '-X', '-At', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $what->[1] ],
			'>', \$out, '2>', \$err, IPC::Run::timeout(180));
		push @h, [ $what->[0], $h, \$out, \$err ];
	}
}
my %shared;
for my $x (@h)
{
	$x->[1]->finish;
	my $out = ${ $x->[2] };
	chomp $out;
	$shared{ $x->[0] } //= $out;
	$shared{ $x->[0] } = 'differ between sessions' if $shared{ $x->[0] } ne $out;
	diag("$x->[0]: ${ $x->[3] }") if ${ $x->[3] } ne '';
}
ok(sq("SELECT hits FROM pepnet.shared_cache WHERE model = 'nm'") >= 12, 'the sessions used the shared copy');

ok(length($shared{rows}) > 1000, 'every row scored through the shared cache');
is($shared{query}, $shared{rows}, 'pepnet_score_query and pepnet_score_rows agree through the shared cache');

my ($rc, $out, $err) = $node->psql($db, "SELECT pepnet_predict('nm', c) FROM (SELECT id, domain, item, cat, user_id, region, price FROM ev LIMIT 1) c");
ok($rc != 0 && $err =~ /lacks column "qty" \(dense field "qty"\)/, 'the shared copy keeps the dense columns\' names: a missing one is named')
  or diag($err);

# "domain_input": true, every part but PN on and the shared bottom (every part off): the shared
# domain caches (their sizes from the layer plan, n0 = F*k + Nd + k) score as the own copies do
my %di_cfg = (
	nmdi => '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 16}], '
	  . '"persona": [{"name": "user_id", "buckets": 40}], "dense": [{"name": "price"}, {"name": "qty"}], '
	  . '"emb_dim": 4, "hidden": [8, 4], "tasks": ["click", "buy"], "epnet_hidden": 6, "aux_hidden": 5, "pn": false, "domain_input": true}',
	nmsb => '{"domains": 3, "features": [{"name": "item", "buckets": 200}, {"name": "cat", "buckets": 16}], '
	  . '"dense": [{"name": "price"}, {"name": "qty"}], "emb_dim": 4, "hidden": [8, 4], '
	  . '"epnet": false, "ppnet": false, "pn": false, "star": false, "aux": false, "domain_input": true}');
my %di_shared;
for my $m (sort keys %di_cfg)
{
	my $data = $m eq 'nmdi' ? 'SELECT *, click AS buy FROM ev' : 'SELECT * FROM ev';
	sq("CALL pepnet_train('$m', '$data', '$di_cfg{$m}', epochs => 2, batch_size => 32, lr => 0.01, seed => 3, progress_interval => 0)");
	is(sq("SELECT pepnet_preload('$m')"), 't', "$m (domain_input) is preloaded into the shared cache");
	$di_shared{$m} = sq("SELECT string_agg(s.scores::text, ',' ORDER BY (s.candidate).id) FROM pepnet_score_rows('$m', ARRAY(SELECT c FROM ev c ORDER BY id)) s")
	  . '|' . sq("SELECT string_agg(pepnet_predict('$m', c)::text, ',' ORDER BY id) FROM ev c");
	ok(sq("SELECT hits > 0 AND domains = 3 FROM pepnet.shared_cache WHERE model = '$m'") eq 't',
		"$m: scored through the shared copy, its 3 domain caches shared");
}

# the same statements in backends with their own copies (no shared cache)
$node->append_conf('postgresql.conf', "pepnet.shared_cache_size = 0\n");
$node->restart;
is(sq("SELECT count(*) FROM pepnet.shared_cache"), '0', 'restarted without the shared cache');
is(sq($rows), $shared{rows}, 'pepnet_score_rows through the shared cache = own copy, bit for bit, 4 sessions');
is(sq($pred), $shared{predict}, 'pepnet_predict(model, row) through the shared cache = own copy, bit for bit, 4 sessions');
is(sq($query), $shared{query}, 'pepnet_score_query of a named query through the shared cache = own copy, 4 sessions');
for my $m (sort keys %di_cfg)
{
	my $own = sq("SELECT string_agg(s.scores::text, ',' ORDER BY (s.candidate).id) FROM pepnet_score_rows('$m', ARRAY(SELECT c FROM ev c ORDER BY id)) s")
	  . '|' . sq("SELECT string_agg(pepnet_predict('$m', c)::text, ',' ORDER BY id) FROM ev c");
	ok(length($own) > 1000, "$m: every row scored by the own copy");
	is($own, $di_shared{$m}, "$m (domain_input): scores through the shared cache = own copy, bit for bit");
}

$node->stop;
done_testing();
