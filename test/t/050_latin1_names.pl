# test/t/050_latin1_names.pl: field names count bytes of UTF-8 in a database of another encoding.
#
# A config's names (feature, persona and dense fields, weights columns, "domain_column", tasks)
# have 1 to 63 bytes of UTF-8 (docs/model.md), the limit the Python package checks.  In a LATIN1
# database 'é' is one byte, two in UTF-8.  Asserts, in a LATIN1 database:
#  - a name of 40 'é' (40 LATIN1 bytes, 80 of UTF-8) is refused with 22023 by pepnet_train,
#    pepnet_create, pepnet_import, pepnet_check_data and a grid's check, for a feature, a persona
#    and a dense field, a weights column, "domain_column" and a task;
#  - a name of 31 'é' and one ASCII letter (63 bytes of UTF-8) is accepted: trained (with text ids
#    of non-ASCII text), exported and loaded by the Python package (pepnet.db.load_module), whose
#    config keeps the name and whose scores of the named batch equal pepnet_predict's; the package
#    refuses the 40 'é' name too;
#  - a UTF-8 database refuses that version's bundle (its header has LATIN1 bytes) with 22P03.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# the SQL below is written in UTF-8 (this file's bytes), converted by the server to LATIN1
$ENV{PGCLIENTENCODING} = 'UTF8';

my $node = PostgreSQL::Test::Cluster->new('latin1_names');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\n");
$node->start;
$node->safe_psql('postgres', "CREATE DATABASE lat ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
my $db = 'lat';
sub sq { return $node->safe_psql($db, @_); }

my $e = "\xc3\xa9";               # 'é' in UTF-8
my $long = $e x 40;               # 40 LATIN1 bytes, 80 of UTF-8
my $ok_f = ($e x 31) . 'f';       # 32 LATIN1 bytes, 63 of UTF-8
my $ok_d = ($e x 31) . 'd';
is(sq("SELECT getdatabaseencoding()"), 'LATIN1', 'the database is LATIN1');
is(sq("SELECT octet_length('$long'), octet_length(convert_to('$long', 'UTF8'))"), '40|80',
	'the long name has 40 bytes here, 80 in UTF-8');

sq(<<"SQL");
CREATE EXTENSION pepnet;
CREATE TABLE ev AS
SELECT g AS id, g % 2 AS domain, 'z${e}rich' || (g % 11) AS "$ok_f", (g % 13)::bigint AS "$long",
       (g % 7)::float8 AS "$ok_d", (g % 5)::float8 AS x, ARRAY[(g % 4)::bigint] AS tags,
       ARRAY[1.0::real] AS "w$long", g % 3 = 0 AS click, g % 3 = 0 AS "t$long", g % 2 AS "d$long"
FROM generate_series(1, 400) g;
SQL

# the refused configs: each puts the 40 'é' name in one place
my $feat_ok = qq({"name": "$ok_f", "buckets": 32});
my %bad = (
	'feature field' => qq({"inputs": "columns", "domains": 2, "features": [{"name": "$long", "buckets": 16}], "emb_dim": 4, "hidden": [4]}),
	'persona field' => qq({"inputs": "columns", "domains": 2, "features": [$feat_ok], "persona": [{"name": "$long", "buckets": 16}], "emb_dim": 4, "hidden": [4]}),
	'dense field' => qq({"inputs": "columns", "domains": 2, "features": [$feat_ok], "dense": [{"name": "$long"}], "emb_dim": 4, "hidden": [4]}),
	'weights column' => qq({"inputs": "columns", "domains": 2, "features": [{"name": "tags", "buckets": 8, "pooling": "mean", "weights": "w$long"}], "emb_dim": 4, "hidden": [4]}),
	'domain_column' => qq({"inputs": "columns", "domains": 2, "domain_column": "d$long", "features": [$feat_ok], "emb_dim": 4, "hidden": [4]}),
	'task' => qq({"inputs": "columns", "domains": 2, "tasks": ["t$long"], "features": [$feat_ok], "emb_dim": 4, "hidden": [4]}),
	'positional (arrays form) field' => qq({"inputs": "arrays", "domains": 2, "features": [{"name": "$long", "buckets": 16}], "emb_dim": 4, "hidden": [4]}));
my $verbose = "\\set VERBOSITY verbose\n";
for my $what (sort keys %bad)
{
	my $c = $bad{$what};
	my ($rc, $out, $err) = $node->psql($db, $verbose . "CALL pepnet_train('bad', 'SELECT * FROM ev', '$c', progress_interval => 0)");
	ok($rc != 0 && $err =~ /ERROR:  22023: config .* must have 1 to 63 bytes \(UTF-8\)/ && $err =~ /It has 8[01] bytes in UTF-8 \(4[01] in the database's encoding LATIN1\)/,
		"pepnet_train refuses a $what name of 80 bytes of UTF-8 (22023)") or diag($err);
	($rc, $out, $err) = $node->psql($db, $verbose . "SELECT pepnet_create('bad', '$c')");
	ok($rc != 0 && $err =~ /ERROR:  22023: config .* must have 1 to 63 bytes \(UTF-8\)/,
		"pepnet_create refuses it (22023)") or diag($err);
}
my ($rc, $out, $err) = $node->psql($db, $verbose . "SELECT * FROM pepnet_check_data('SELECT * FROM ev', '$bad{\"feature field\"}')");
ok($rc != 0 && $err =~ /ERROR:  22023: config "features"\[0\]\.name ".*" must have 1 to 63 bytes \(UTF-8\)/,
	'pepnet_check_data refuses it (22023)') or diag($err);
($rc, $out, $err) = $node->psql($db, $verbose . "CALL pepnet_train('bad', 'SELECT * FROM ev', '[$bad{\"dense field\"}]', progress_interval => 0)");
ok($rc != 0 && $err =~ /22023: run 1 of the grid: config "dense"\[0\]\.name/, 'a grid names the run (22023)') or diag($err);
is(sq("SELECT count(*) FROM pepnet.models WHERE name = 'bad'"), '0', 'no version was stored');

# the name of 63 bytes of UTF-8: trained, exported, imported, loaded by the Python package
my $cfg = qq({"domains": 2, "features": [{"name": "$ok_f", "buckets": 32}], "dense": [{"name": "$ok_d", "normalize": "zscore"}], "emb_dim": 4, "hidden": [8]});
sq("CALL pepnet_train('lat_ok', 'SELECT * FROM ev', '$cfg', epochs => 2, batch_size => 32, lr => 0.02, seed => 1, progress_interval => 0)");
is(sq("SELECT octet_length(convert_to(config->'features'->0->>'name', 'UTF8')) FROM pepnet.models WHERE name = 'lat_ok' AND version = 2"),
	'63', 'a name of 63 bytes of UTF-8 (32 here) is accepted and stored');
is(sq("SELECT pepnet_import('lat_copy', config, pepnet_export('lat_ok@2')) FROM pepnet.models WHERE name = 'lat_ok' AND version = 2"),
	'1', 'pepnet_import takes it back');
($rc, $out, $err) = $node->psql($db, $verbose . "SELECT pepnet_import('bad', '$bad{\"feature field\"}', pepnet_export('lat_ok@2'))");
ok($rc != 0 && $err =~ /ERROR:  22023: config "features"\[0\]\.name/, 'pepnet_import refuses the 80-byte name (22023)') or diag($err);

# a version bundle carries its header in this database's encoding: a UTF-8 database refuses one
# with LATIN1 bytes (22P03) instead of storing text that is not UTF-8
$node->safe_psql('postgres', "CREATE DATABASE u8 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
$node->safe_psql('u8', 'CREATE EXTENSION pepnet');
my $bundle = sq("SELECT encode(pepnet_export_version('lat_ok@2'), 'hex')");
($rc, $out, $err) = $node->psql('u8', $verbose . "SELECT pepnet_import_version(decode('$bundle', 'hex'))");
ok($rc != 0 && $err =~ /ERROR:  22P03: not a valid pepnet version bundle: its header is not valid text in this database's encoding UTF8/,
	'a UTF-8 database refuses a bundle of a LATIN1 database with non-ASCII names (22P03)') or diag($err);
is($node->safe_psql('u8', 'SELECT count(*) FROM pepnet.models'), '0', 'and stores nothing');

my $py = <<'PY';
import sys
import numpy as np
import psycopg2
import pepnet
from pepnet.config import ConfigError

conn = psycopg2.connect(sys.argv[1])
m = pepnet.db.load_module(conn, "lat_ok@2")
name = m.config.features[0]["name"]
print("name", len(name.encode("utf-8")), name == "\u00e9" * 31 + "f")
batch = pepnet.db.fetch(conn, "SELECT * FROM ev ORDER BY id", m.config.to_dict())
want = m.predict(batch).double().numpy()[:, 0]
with conn.cursor() as cur:
    cur.execute("SELECT pepnet_predict('lat_ok@2', c) FROM (SELECT * FROM ev ORDER BY id) c")
    got = np.array([r[0] for r in cur.fetchall()])
print("scores", len(got), float(np.max(np.abs(got - want))) <= 1e-5)
try:
    pepnet.StarPepNet({"inputs": "columns", "domains": 2, "features": [{"name": "\u00e9" * 40, "buckets": 4}], "emb_dim": 4, "hidden": [4]})
    print("refused False")
except ConfigError as e:
    print("refused True")
PY
{
	local $ENV{PYTHONPATH} = 'python';
	my ($pout, $perr) = ('', '');
	my $ok = PostgreSQL::Test::Utils::run_log([ '/usr/bin/python3', '-P', '-c', $py, $node->connstr($db) ], '>', \$pout, '2>', \$perr);
	ok($ok, 'the Python package loads the exported version') or diag($perr);
	like($pout, qr/^name 63 True$/m, 'its config keeps the name of 63 bytes of UTF-8');
	like($pout, qr/^scores 400 True$/m, 'its scores of the named batch (non-ASCII text ids) equal pepnet_predict\'s');
	like($pout, qr/^refused True$/m, 'the package refuses the 80-byte name as the server does');
}

$node->stop;
done_testing();
