# test/t/007_examples.pl: the documentation's SQL examples run, and examples/synth.sql is quiet.
#
# Every ```sql block of README.md and then of docs/api.md runs, in order, in one database (each
# block in its own psql session, ON_ERROR_STOP): no block may fail.  A block that cannot run
# there (multi-node setups, DROP EXTENSION) is marked in the document by the line
# "<!-- example not run by test/t/007_examples.pl: REASON -->" right above its fence, and is
# reported as skipped with that reason.  What the examples leave to
# the reader is provided here: the roles of the grants example (scorer, trainer, deployer) exist,
# the tables of the batch-scoring example (candidates, nightly_scores) hold a few rows,
# and the placeholder path '/path/to/ctr.safetensors' is replaced by a file holding the export
# of ctr@1 (written before the block that reads it).  Then examples/synth.sql (psql -f, small)
# runs in a fresh database without error, without any "does not exist, skipping" notice, and
# creates its three tables.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('examples');
$node->init;
$node->append_conf('postgresql.conf', "fsync = off\njit = off\n");
$node->start;
my $WORK = PostgreSQL::Test::Utils::tempdir;
$node->safe_psql('postgres', 'CREATE DATABASE readme; CREATE DATABASE synth; CREATE ROLE scorer; CREATE ROLE trainer; CREATE ROLE deployer;');
$node->safe_psql('readme', 'CREATE EXTENSION pepnet');
# the user's tables that the batch-scoring example reads and fills (model ctr of the first examples)
$node->safe_psql('readme', q{
CREATE TABLE candidates AS
SELECT u::bigint AS user_id, (1000 + i)::bigint AS item_id, (u % 3)::int AS domain, ARRAY[u, u % 8]::bigint[] AS persona,
       ARRAY[1000 + i, i % 500, i % 24]::bigint[] AS features
FROM generate_series(1, 20) u, generate_series(1, 50) i;
CREATE TABLE nightly_scores (user_id bigint, item_id bigint, p_click float8);
});
$node->safe_psql('synth', 'CREATE EXTENSION pepnet');

my @blocks;
for my $doc ('README.md', 'docs/api.md')
{
	my $text = PostgreSQL::Test::Utils::slurp_file($doc);
	my $n = 0;
	while ($text =~ /^(?:<!-- example not run by test\/t\/007_examples\.pl: (.*?) -->\n)?```sql\n(.*?)^```$/msg)
	{
		push @blocks, [ $doc, ++$n, $2, $1 ];
	}
}
cmp_ok(scalar(grep { $_->[0] eq 'README.md' } @blocks), '>=', 5, 'README.md has its SQL examples (' . scalar(@blocks) . ' blocks in all)');

my $file = "$WORK/ctr.safetensors";
for my $b (@blocks)
{
	my ($doc, $n, $sql, $not_run) = @$b;
	my ($first) = $sql =~ /^(?:--\s*)?(.*)$/m;
  SKIP:
	{
	skip("$doc SQL example $n ($first): $not_run", 1) if defined $not_run;
	my @parts = ($sql);
	# the statement reading the placeholder path runs once the file holds ctr@1's export
	my $at = index($sql, '/path/to/ctr.safetensors');
	if ($at >= 0)
	{
		my $cut = rindex($sql, ';', $at) + 1;
		@parts = (substr($sql, 0, $cut), substr($sql, $cut));
	}
	my ($rc, $out, $err) = (0, '', '');
	for my $part (@parts)
	{
		if ($part =~ m{/path/to/ctr\.safetensors})
		{
			my $hex = $node->safe_psql('readme', "SELECT encode(pepnet_export('ctr\@1'), 'hex')");
			open(my $fh, '>:raw', $file) or die "cannot write $file: $!";
			print $fh pack('H*', $hex);
			close $fh;
			$part =~ s{/path/to/ctr\.safetensors}{$file}g;
		}
		($rc, $out, $err) = $node->psql('readme', $part, on_error_stop => 1);
		last if $rc != 0 || $err =~ /ERROR/;
	}
	ok($rc == 0 && $err !~ /ERROR/, "$doc SQL example $n runs: $first") or diag("exit $rc\n$err");
	}
}

# the batch-scoring example filled the user's table: one probability per candidate
is($node->safe_psql('readme', 'SELECT count(*) FROM nightly_scores WHERE p_click > 0 AND p_click < 1'),
	'1000', 'the batch-scoring example scored every candidate into nightly_scores');

# examples/synth.sql: no notices about tables that do not exist yet
my ($out, $err) = ('', '');
my $rc = PostgreSQL::Test::Utils::run_log(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-v', 'rows=3000', '-v', 'seed=1', '-f', 'examples/synth.sql', '-d', $node->connstr('synth') ],
	'>', \$out, '2>', \$err);
ok($rc, 'examples/synth.sql runs in a fresh database') or diag($err);
unlike($err, qr/does not exist, skipping|NOTICE/, 'examples/synth.sql prints no notices on its first run');
is($node->safe_psql('synth', 'SELECT (SELECT count(*) FROM synth_train) + (SELECT count(*) FROM synth_valid) + (SELECT count(*) FROM synth_test)'),
	'3000', 'examples/synth.sql creates synth_train, synth_valid and synth_test (3000 rows together)');

$node->stop;
done_testing();
