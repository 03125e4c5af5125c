# test/t/006_package.pl: what PGXN and `make install` ship is consistent.
#
# META.json is valid PGXN metadata (name, version, license, provides, meta-spec) whose versions
# equal pepnet.control's default_version and the Makefile's EXTVERSION; LICENSE is the PostgreSQL
# License META.json names; the Makefile's DATA lists every sql/pepnet--*.sql script; the
# installed extension offers every released version (0.1.0, 0.2.0) and the default one, with an
# update path from each to it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $meta = eval { decode_json(PostgreSQL::Test::Utils::slurp_file('META.json')) };
ok($meta, 'META.json is valid JSON') or diag($@);
$meta //= {};
ok(($meta->{name} // '') eq 'pepnet' && ($meta->{'meta-spec'}{version} // '') eq '1.0.0'
	  && $meta->{abstract} && @{ $meta->{maintainer} // [] } && ($meta->{provides}{pepnet}{file} // '') ne '',
	'META.json has the PGXN meta-spec 1.0.0 keys: name, abstract, maintainer, provides');
ok(-f ($meta->{provides}{pepnet}{file} // '/nonexistent') && -f ($meta->{provides}{pepnet}{docfile} // '/nonexistent'),
	'the files META.json provides exist');

my ($default) = PostgreSQL::Test::Utils::slurp_file('pepnet.control') =~ /^default_version\s*=\s*'([^']+)'/m;
my $makefile = PostgreSQL::Test::Utils::slurp_file('Makefile');
my ($extversion) = $makefile =~ /^EXTVERSION\s*=\s*(\S+)/m;
is(join(' ', $meta->{version} // '-', $meta->{provides}{pepnet}{version} // '-', $extversion // '-'),
	join(' ', ($default) x 3), "META.json's versions and the Makefile's EXTVERSION equal default_version $default");

is($meta->{license} // '', 'postgresql', 'META.json names the PostgreSQL License');
like(PostgreSQL::Test::Utils::slurp_file('LICENSE'), qr/\APostgreSQL License\n.*Permission to use, copy, modify, and distribute this software/s,
	'LICENSE is the PostgreSQL License');

my ($data) = $makefile =~ /^DATA\s*=\s*(.*)$/m;
my ($built) = $makefile =~ /^DATA_built\s*=\s*(.*)$/m;
my %data = map { $_ => 1 } split ' ', join(' ', $data // '', $built // '');
my @scripts = sort glob('sql/pepnet--*.sql');
my @unlisted = grep { !$data{$_} } @scripts;
ok(@scripts >= 2 && !@unlisted, 'the Makefile installs every extension script (' . join(', ', @scripts) . ')')
  or diag('not in DATA or DATA_built: ' . join(', ', @unlisted));
ok($built && $built =~ /pepnet--\Q$default\E\.sql/, "CREATE EXTENSION's script for $default is generated (DATA_built): fresh and upgraded installs run the same statements");

my $node = PostgreSQL::Test::Cluster->new('package');
$node->init;
$node->start;
# every released version stays installable (CREATE EXTENSION pepnet VERSION, restores of old
# backups, upgrade tests), each with an update path to the default version through the others
my @released = ('0.1.0', '0.2.0');
is($node->safe_psql('postgres', "SELECT string_agg(version, ' ' ORDER BY version) FROM pg_available_extension_versions WHERE name = 'pepnet'"),
	join(' ', sort(@released, $default)), "installed: versions " . join(', ', @released) . " and $default");
for my $i (0 .. $#released)
{
	is($node->safe_psql('postgres', "SELECT path FROM pg_extension_update_paths('pepnet') WHERE source = '$released[$i]' AND target = '$default'"),
		join('--', @released[$i .. $#released], $default), "installed: an update path from $released[$i] to $default");
}
$node->stop;
done_testing();
