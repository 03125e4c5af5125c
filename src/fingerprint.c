/*
 * fingerprint.c
 *		The fingerprint of a model version: SHA-256 over the length of its
 *		config's canonical jsonb text (8 bytes, big-endian), that text, and
 *		its weights (safetensors).  Stored in pepnet.models.fingerprint
 *		(the generated column pepnet._fingerprint for weights in one bytea,
 *		chunks.c for chunked weights), checked by pepnet_verify, the type
 *		pepnet_pinned and version bundles.
 *
 * Hashing goes in slices of 16 MB, so that a cancel is seen while hashing
 * a large model.
 */
#include "pepnet.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/snapmgr.h"

PG_FUNCTION_INFO_V1(pepnet_fingerprint_of);

static void
hash_or_fail(pg_cryptohash_ctx *ctx, int rc)
{
	if (rc < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 fingerprint: %s", pg_cryptohash_error(ctx))));
}

/* Hash n bytes at p (in slices: a cancel is seen) */
void
hash_slices(pg_cryptohash_ctx *ctx, const uint8 *p, uint64 n)
{
	while (n > 0)
	{
		size_t		k = (size_t) Min(n, (uint64) 16 * 1024 * 1024);

		CHECK_FOR_INTERRUPTS();
		hash_or_fail(ctx, pg_cryptohash_update(ctx, p, k));
		p += k;
		n -= k;
	}
}

/* A hash of a fingerprint, after the config's canonical text canon */
pg_cryptohash_ctx *
fp_begin(const char *canon)
{
	uint64		clen = pg_hton64((uint64) strlen(canon));
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	hash_or_fail(ctx, pg_cryptohash_init(ctx));
	hash_or_fail(ctx, pg_cryptohash_update(ctx, (const uint8 *) &clen, sizeof(clen)));
	hash_or_fail(ctx, pg_cryptohash_update(ctx, (const uint8 *) canon, strlen(canon)));
	return ctx;
}

/* The fingerprint (FP_LEN bytes) hashed by ctx, which is freed */
void
fp_end(pg_cryptohash_ctx *ctx, uint8 *out)
{
	hash_or_fail(ctx, pg_cryptohash_final(ctx, out, FP_LEN));
	pg_cryptohash_free(ctx);
}

/* The canonical text of a config (jsonb's output), palloc'd */
char *
canonical_config(const char *config_json)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(config_json)));

	return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
}

/* The fingerprint of a config and weights in one bytea */
void
fingerprint(Jsonb *config, bytea *weights, uint8 *out)
{
	char	   *cfg = JsonbToCString(NULL, &config->root, VARSIZE(config));
	pg_cryptohash_ctx *ctx = fp_begin(cfg);

	hash_slices(ctx, (const uint8 *) VARDATA_ANY(weights), VARSIZE_ANY_EXHDR(weights));
	fp_end(ctx, out);
	pfree(cfg);
}

/* pepnet._fingerprint(config jsonb, weights bytea) RETURNS bytea: the generated column */
Datum
pepnet_fingerprint_of(PG_FUNCTION_ARGS)
{
	bytea	   *out = palloc(VARHDRSZ + FP_LEN);

	SET_VARSIZE(out, VARHDRSZ + FP_LEN);
	fingerprint(PG_GETARG_JSONB_P(0), PG_GETARG_BYTEA_PP(1), (uint8 *) VARDATA(out));
	PG_RETURN_BYTEA_P(out);
}

/*
 * The stored fingerprint of name@version on this node; false if there is
 * no such version.  Runs with the caller's rights and the statement's
 * snapshot, or a fresh one where none is active (the type's input function
 * may run outside a statement's snapshot, e.g. for a utility command).
 */
bool
stored_fingerprint(const char *name, int32 version, uint8 *fp)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		isnull,
				found = false;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	pepnet_spi_connect();
	if (SPI_execute_with_args("SELECT fingerprint FROM pepnet.models "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, ActiveSnapshotSet(), 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the fingerprint of model \"%s\" version %d", name, version);
	if (SPI_processed == 1)
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		bytea	   *b = isnull ? NULL : DatumGetByteaPP(d);

		if (b == NULL || VARSIZE_ANY_EXHDR(b) != FP_LEN)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("model \"%s\" version %d has no valid fingerprint", name, version)));
		memcpy(fp, VARDATA_ANY(b), FP_LEN);
		found = true;
	}
	SPI_finish();
	return found;
}

/* A fingerprint in hex, palloc'd */
char *
fp_hex(const uint8 *fp)
{
	char	   *s = palloc(FP_HEX + 1);

	hex_encode((const char *) fp, FP_LEN, s);
	s[FP_HEX] = '\0';
	return s;
}
