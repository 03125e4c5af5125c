# test/t/042_chunks_shared.pl: chunked weights streamed into the shared cache.
#
# One cluster with pepnet preloaded and pepnet.chunk_size = 100 bytes, so that every version spans
# hundreds of chunks whose boundaries fall inside the header and inside tensors.  The shared cache's
# builder streams the chunks straight into shared memory (chunks.c, pepnet_scatter_weights), the
# backend cache without it reads them into one private buffer (pepnet_read_weights).  Asserts:
#  - a version of many chunks, built into the shared cache, scores bit for bit as the per-backend
#    path (pepnet.shared_cache_size = 0) and as the same weights stored in one chunk;
#  - a version whose safetensors lists its tensors in another order than pepnet writes them
#    (copied in by pepnet_import_version, which stores a bundle's bytes as they are) lands in the
#    right places: its scores equal the canonical version's, shared and per backend;
#  - a missing or corrupt chunk fails the build with XX001 and leaves no entry in the shared cache.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;

my $node = PostgreSQL::Test::Cluster->new('chunks_shared');
$node->init;
$node->append_conf('postgresql.conf', <<'CONF');
shared_preload_libraries = 'pepnet'
pepnet.shared_cache_size = 64MB
pepnet.chunk_size = 100
fsync = off
jit = off
CONF
$node->start;
my $db = 'postgres';
sub sq { return $node->safe_psql($db, @_); }

my $CFG = '{"domains": 3, "features": [{"name": "item", "buckets": 300}, {"name": "hour", "buckets": 24, "hash": false}], "persona": [{"name": "user", "buckets": 40}], "dense": 2, "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [8, 4]}';
sq('CREATE EXTENSION pepnet');
sq("SELECT pepnet_create('many', '$CFG', 5)");
sq("SET pepnet.chunk_size = '64MB'; SELECT pepnet_create('one', '$CFG', 5)");
cmp_ok(sq("SELECT count(*) FROM pepnet.model_chunks WHERE name = 'many'"), '>', 100, 'version many spans more than 100 chunks');
is(sq("SELECT count(*) FROM pepnet.model_chunks WHERE name = 'one'"), '1', 'version one is one chunk');

# the same weights with the tensors in reverse order (header and data), as a bundle
my $blob = pack('H*', sq("SELECT encode(pepnet_export('one'), 'hex')"));
my $hl = unpack('Q<', substr($blob, 0, 8));
my $header = decode_json(substr($blob, 8, $hl));
my $data = substr($blob, 8 + $hl);
my ($h, $d) = ({}, '');
for my $name (sort { $header->{$b}{data_offsets}[0] <=> $header->{$a}{data_offsets}[0] } grep { $_ ne '__metadata__' } keys %$header)
{
	my ($b, $e) = @{ $header->{$name}{data_offsets} };
	$h->{$name} = { dtype => 'F32', shape => $header->{$name}{shape}, data_offsets => [ length($d), length($d) + $e - $b ] };
	$d .= substr($data, $b, $e - $b);
}
my $json = JSON::PP->new->encode($h);    # unpadded: the data starts unaligned
my $rev = pack('Q<', length($json)) . $json . $d;
isnt(unpack('H*', $rev), unpack('H*', $blob), 'the reordered blob differs from pepnet\'s');
sq(qq{
	CREATE TABLE rev AS SELECT decode('@{[unpack('H*', $rev)]}', 'hex') AS w, (SELECT config FROM pepnet.models WHERE name = 'one') AS config;
	SELECT pepnet_import_version('PEPNETV1'::bytea || int4send(length(convert_to(hd, 'UTF8'))) || convert_to(hd, 'UTF8') || w)
	FROM (SELECT w, jsonb_build_object('name', 'rev', 'version', 1, 'metrics', '{}'::jsonb, 'config', config,
	              'fingerprint', encode(sha256(int8send(octet_length(config::text)::int8) || convert_to(config::text, 'UTF8') || w), 'hex'))::text AS hd
	      FROM rev) b;
});
is(sq("SELECT pepnet_export('rev') = (SELECT w FROM rev)"), 't', 'version rev stores the reordered bytes as they are');
cmp_ok(sq("SELECT count(*) FROM pepnet.model_chunks WHERE name = 'rev'"), '>', 100, 'version rev spans more than 100 chunks');

my $SCORES = "SELECT string_agg(s.score::text || ':' || s.scores::text, ',' ORDER BY d, s.idx) FROM generate_series(0, 2) d,
	pepnet_score('%s', d, '{7}', '{{1, 2}, {150, 9}, {299, 23}}', '{{0.5, 1}, {0, 0}, {-1, 2}}') s";
my $PREDICT = "SELECT string_agg(pepnet_predict('%s', d, '{7}', '{150, 9}', '{0.5, -1}')::text, ',' ORDER BY d) FROM generate_series(0, 2) d";
my %shared;
for my $v ('many', 'one', 'rev')
{
	$shared{$v} = sq(sprintf($SCORES, $v)) . ' ' . sq(sprintf($PREDICT, $v));
}
is(sq("SELECT string_agg(model || '\@' || version || ':' || state, ' ' ORDER BY model) FROM pepnet.shared_cache"),
	'many@1:ready one@1:ready rev@1:ready', 'the three versions were built into the shared cache');
is($shared{many}, $shared{one}, 'shared cache: the version of 100-byte chunks scores bit for bit as the one-chunk version');
is($shared{rev}, $shared{one}, 'shared cache: the version with its tensors in another order scores as the canonical one');

# the per-backend path
sq("ALTER SYSTEM SET pepnet.shared_cache_size = 0; SELECT pg_reload_conf()");
$node->poll_query_until($db, "SELECT NOT enabled FROM pepnet_shared_cache_stats()") or die 'shared cache still on';
my %private;
for my $v ('many', 'one', 'rev')
{
	$private{$v} = sq(sprintf($SCORES, $v)) . ' ' . sq(sprintf($PREDICT, $v));
}
is($private{many}, $shared{many}, 'per backend: the version of 100-byte chunks scores as in the shared cache');
is($private{rev}, $shared{rev}, 'per backend: the reordered version scores as in the shared cache');
like($shared{one}, qr/^[0-9.e-]+:\{/, 'scores are numbers');
sq("ALTER SYSTEM RESET pepnet.shared_cache_size; SELECT pg_reload_conf()");
$node->poll_query_until($db, "SELECT enabled FROM pepnet_shared_cache_stats()") or die 'shared cache not back';

# a missing or corrupt chunk fails the build with XX001 and leaves no entry
sq(qq{
	SELECT pepnet_create('gap', '$CFG', 6);
	SELECT pepnet_create('nan', '$CFG', 6);
	ALTER TABLE pepnet.model_chunks DISABLE TRIGGER model_chunks_guard;
	DELETE FROM pepnet.model_chunks WHERE name = 'gap' AND seq = 40;
	UPDATE pepnet.model_chunks SET data = overlay(data PLACING '\\x0000c07f'::bytea FROM 41)
	WHERE name = 'nan' AND seq = (SELECT max(seq) - 2 FROM pepnet.model_chunks WHERE name = 'nan');
	ALTER TABLE pepnet.model_chunks ENABLE ALWAYS TRIGGER model_chunks_guard;
});
for my $case ([ 'gap', qr/XX001: the stored weights of model "gap" version 1 are corrupt: chunk 40 is missing/ ],
	[ 'nan', qr/XX001: tensor "[^"]+" holds a non-finite value/ ])
{
	my ($v, $re) = @$case;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n" . sprintf($PREDICT, $v));
	like($err, $re, "shared cache build of version $v: XX001");
	is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE model = '$v'"), '0', "... and no entry of $v is left");
	($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n" . sprintf($PREDICT, $v));
	like($err, $re, "... and the next statement fails the same way");
}
is(sq("SELECT count(*) FROM pepnet.shared_cache WHERE state <> 'ready'"), '0', 'no entry is left building');

$node->stop;
done_testing();
