/*
 * chunks.c
 *		Chunked weight storage: a version's weights (safetensors) as rows of
 *		pepnet.model_chunks (name, version, seq, data), each at most
 *		pepnet.chunk_size bytes, so that a model may exceed the 1 GB limit of
 *		one bytea value.
 *
 *		- writing: the fingerprint (SHA-256 of config and weights, the same
 *		  value as for weights in one bytea) is computed first from the
 *		  model's tensors; the version's row (weights NULL, fingerprint,
 *		  weights_size) is inserted with the caller's rights; its chunks are
 *		  then serialized one at a time straight from the tensors and
 *		  inserted;
 *		- reading: after the caller's SELECT of the version's row (grants and
 *		  row security of pepnet.models apply), the chunks are read through a
 *		  cursor one at a time into one buffer of the whole size (from an
 *		  allocator the caller gives, pepnet_stream_weights), which the
 *		  loaded model's tensors then point into: the weights exist once in
 *		  memory, plus one chunk;
 *		- chunks are read and written as the owner of pepnet.models: access is
 *		  decided on pepnet.models, roles need no grant on the chunk table;
 *		- moving versions of any size: pepnet_export_chunks (rows),
 *		  pepnet_import_chunks (from a query's rows), pepnet_import_file and
 *		  pepnet_export_file (server-side files, for members of
 *		  pg_read_server_files / pg_write_server_files);
 *		- the chunk guard trigger: chunks are immutable, written only with
 *		  their version's row (same transaction), deleted only with it;
 *		- Adam's moments of trained versions, chunked the same way in
 *		  pepnet.optimizer_chunks (written and read by training.c).
 *
 * Versions whose weights column is not NULL (0.1.0 rows before the upgrade
 * migrated them, or a direct INSERT) are read from that column as before.
 */
#include "pepnet.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/cryptohash.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(pepnet_chunk_size_bytes);
PG_FUNCTION_INFO_V1(pepnet_chunks_guard);
PG_FUNCTION_INFO_V1(pepnet_export_chunks);
PG_FUNCTION_INFO_V1(pepnet_import_chunks);
PG_FUNCTION_INFO_V1(pepnet_import_file);
PG_FUNCTION_INFO_V1(pepnet_export_file);

#define FP_LEN 32

int			pepnet_chunk_size = 64 * 1024 * 1024;

/* Settings of chunked storage; called by _PG_init */
void
pepnet_chunks_init(void)
{
	DefineCustomIntVariable("pepnet.chunk_size",
							"Size of the chunks (rows of pepnet.model_chunks) that new versions' weights are stored in.",
							"Weights larger than one chunk span several rows; a version may exceed the 1 GB limit of a bytea value. "
							"Reading does not depend on it: versions keep the chunks they were written with.",
							/* at most 256MB: pg_dump's COPY writes a chunk as hex text (2 bytes a byte),
							 * which must stay under PostgreSQL's 1 GB limit of one value */
							&pepnet_chunk_size, 64 * 1024 * 1024, 64, 256 * 1024 * 1024,
							PGC_USERSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
}

/* pepnet._chunk_size() RETURNS int: pepnet.chunk_size in bytes (for the upgrade script) */
Datum
pepnet_chunk_size_bytes(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(pepnet_chunk_size);
}

/* Whether the catalog has pepnet.model_chunks (false under the 0.1.0 schema) */
bool
pepnet_chunked_schema(void)
{
	Oid			ns = get_namespace_oid("pepnet", true);

	return OidIsValid(ns) && OidIsValid(get_relname_relid("model_chunks", ns));
}

/* The owner of pepnet.models, as whom chunks are read and written */
static Oid
models_owner(void)
{
	Oid			ns = get_namespace_oid("pepnet", false);
	Oid			rel = get_relname_relid("models", ns);
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(rel));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "pepnet: cache lookup failed for pepnet.models");
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/* Run as the owner of pepnet.models until as_caller(); an ERROR restores the caller (transaction abort) */
typedef struct AsOwner
{
	Oid			userid;
	int			sec;
} AsOwner;

static void
as_owner(AsOwner *s)
{
	GetUserIdAndSecContext(&s->userid, &s->sec);
	SetUserIdAndSecContext(models_owner(), s->sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
}

static void
as_caller(AsOwner *s)
{
	SetUserIdAndSecContext(s->userid, s->sec);
}

/* ---------------------------------------------------------------- */
/* sources of weights: a model's tensors or bytes                    */
/* ---------------------------------------------------------------- */

/* the weights being written: from a model (serialized piece by piece) or as given bytes */
typedef struct WeightSource
{
	const PnModel *m;
	uint8	   *prefix;			/* the model's length and header */
	size_t		plen;
	const uint8 *bytes;
	uint64		len;
} WeightSource;

static void
source_init(WeightSource *s, const PnModel *m, const uint8 *bytes, uint64 len)
{
	memset(s, 0, sizeof(*s));
	if (m)
	{
		s->m = m;
		s->plen = pn_safetensors_prefix(m, NULL);
		s->prefix = palloc(s->plen);
		pn_safetensors_prefix(m, s->prefix);
		s->len = pn_safetensors_size(m);
	}
	else
	{
		s->bytes = bytes;
		s->len = len;
	}
}

static void
source_range(const WeightSource *s, uint64 off, size_t n, uint8 *out)
{
	if (s->m)
		pn_safetensors_write_range(s->m, s->prefix, s->plen, off, n, out);
	else
		memcpy(out, s->bytes + off, n);
}

static void
hash_or_fail(pg_cryptohash_ctx *ctx, int rc)
{
	if (rc < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute a SHA-256 fingerprint: %s", pg_cryptohash_error(ctx))));
}

static void
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

/* The canonical text of a config (jsonb's output), palloc'd */
static char *
canonical_config(const char *config_json)
{
	Jsonb	   *jb = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(config_json)));

	return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
}

/*
 * The fingerprint of config and weights: SHA-256 over the length of the
 * config's canonical jsonb text (8 bytes, big-endian), that text, and the
 * weights (as pepnet._fingerprint computes it for weights in one bytea).
 */
static void
source_fingerprint(const char *canon, const WeightSource *s, uint8 *out)
{
	uint64		clen = pg_hton64((uint64) strlen(canon));
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	hash_or_fail(ctx, pg_cryptohash_init(ctx));
	hash_or_fail(ctx, pg_cryptohash_update(ctx, (const uint8 *) &clen, sizeof(clen)));
	hash_or_fail(ctx, pg_cryptohash_update(ctx, (const uint8 *) canon, strlen(canon)));
	if (s->m)
	{
		int			i;

		hash_or_fail(ctx, pg_cryptohash_update(ctx, s->prefix, s->plen));
		for (i = 0; i < s->m->ntensors; i++)
			hash_slices(ctx, (const uint8 *) (s->m->data + s->m->tensors[i].offset),
						(uint64) s->m->tensors[i].numel * 4);
	}
	else
		hash_slices(ctx, s->bytes, s->len);
	hash_or_fail(ctx, pg_cryptohash_final(ctx, out, FP_LEN));
	pg_cryptohash_free(ctx);
}

/* Insert the chunks of name@version from s, as the owner of pepnet.models (SPI connected) */
static void
write_chunks(const char *name, int32 version, const WeightSource *s)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[4] = {TEXTOID, INT4OID, INT4OID, BYTEAOID};
	Datum		values[4];
	size_t		cs = (size_t) pepnet_chunk_size;
	bytea	   *buf = palloc(VARHDRSZ + Min((uint64) cs, s->len));
	uint64		off;
	int32		seq = 0;
	AsOwner		own;

	if (s->len / cs >= (uint64) PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model weights of %llu bytes need too many chunks of %zu bytes", (unsigned long long) s->len, cs),
				 errhint("Raise pepnet.chunk_size.")));
	if (plan == NULL)
	{
		plan = SPI_prepare("INSERT INTO pepnet.model_chunks (name, version, seq, data) VALUES ($1, $2, $3, $4)",
						   4, argtypes);
		if (plan == NULL)
			elog(ERROR, "pepnet: could not prepare the chunk insert");
		SPI_keepplan(plan);
	}
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	as_owner(&own);
	for (off = 0; off < s->len; off += cs, seq++)
	{
		size_t		n = (size_t) Min((uint64) cs, s->len - off);

		CHECK_FOR_INTERRUPTS();
		SET_VARSIZE(buf, VARHDRSZ + n);
		source_range(s, off, n, (uint8 *) VARDATA(buf));
		values[2] = Int32GetDatum(seq);
		values[3] = PointerGetDatum(buf);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "pepnet: could not store chunk %d of model \"%s\" version %d", seq, name, version);
	}
	as_caller(&own);
	pfree(buf);
}

/*
 * Store config and weights (a model, or bytes as given) as a new version
 * of name: numbered by the trigger models_number when version is 0, else
 * with that number (pepnet_import_version, with its row's other columns
 * from the JSON header extra: metrics, created_at, parent).  Returns the
 * version; fp_out (if not NULL) receives its fingerprint.
 */
int32
pepnet_store_chunked(const char *name, int32 version, const char *config_json, const PnModel *m,
					 const uint8 *bytes, uint64 len, const char *metrics_json, int32 parent,
					 const char *bundle_header, uint8 *fp_out)
{
	WeightSource s;
	char	   *canon = canonical_config(config_json);
	uint8		fp[FP_LEN];
	bytea	   *fpb = palloc(VARHDRSZ + FP_LEN);
	Oid			argtypes[6] = {TEXTOID, TEXTOID, BYTEAOID, INT8OID, TEXTOID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', parent > 0 ? ' ' : 'n'};
	bool		isnull;
	int32		got;

	source_init(&s, m, bytes, len);
	source_fingerprint(canon, &s, fp);
	SET_VARSIZE(fpb, VARHDRSZ + FP_LEN);
	memcpy(VARDATA(fpb), fp, FP_LEN);
	if (fp_out)
		memcpy(fp_out, fp, FP_LEN);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(bundle_header ? bundle_header : canon);
	values[2] = PointerGetDatum(fpb);
	values[3] = Int64GetDatum((int64) s.len);
	values[4] = CStringGetTextDatum(metrics_json ? metrics_json : "{}");
	values[5] = Int32GetDatum(parent);
	SPI_connect();
	if (bundle_header)
	{
		if (SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, fingerprint, weights_size, metrics, created_at, parent) "
								  "SELECT $1, (h OPERATOR(pg_catalog.->>) 'version')::pg_catalog.int4, h OPERATOR(pg_catalog.->) 'config', NULL, $3, $4, "
								  "h OPERATOR(pg_catalog.->) 'metrics', "
								  "COALESCE((h OPERATOR(pg_catalog.->>) 'created_at')::pg_catalog.timestamptz, pg_catalog.now()), "
								  "(h OPERATOR(pg_catalog.->>) 'parent')::pg_catalog.int4 "
								  "FROM (SELECT $2::pg_catalog.jsonb AS h) s RETURNING version",
								  4, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
			elog(ERROR, "pepnet: could not insert model \"%s\" version %d", name, version);
	}
	else if (SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, fingerprint, weights_size, metrics, parent) "
								   "VALUES ($1, NULL, $2::pg_catalog.jsonb, NULL, $3, $4, $5::pg_catalog.jsonb, $6) RETURNING version",
								   6, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "pepnet: could not insert a version of model \"%s\"", name);
	got = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the new version of model \"%s\" got no number", name),
				 errhint("The trigger models_number on pepnet.models numbers versions; is it disabled?")));
	write_chunks(name, got, &s);
	SPI_finish();
	if (s.prefix)
		pfree(s.prefix);
	return got;
}

/* ---------------------------------------------------------------- */
/* reading                                                           */
/* ---------------------------------------------------------------- */

static void
corrupt(const char *name, int32 version, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("the stored weights of model \"%s\" version %d are corrupt: %s", name, version, what),
			 errdetail("Its weights are stored as rows of pepnet.model_chunks numbered from 0, of weights_size bytes in all (pepnet.models)."),
			 errhint("Restore the version's rows from a backup (pg_dump), or copy the version again from a node that has it (pepnet_export_version, pepnet_export_chunks).")));
}

/* Open a cursor over the chunks of name@version as the owner (SPI connected) */
static Portal
chunk_cursor(const char *name, int32 version)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	Portal		p;
	AsOwner		own;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	as_owner(&own);
	p = SPI_cursor_open_with_args(NULL,
								  "SELECT seq, data FROM pepnet.model_chunks "
								  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2 ORDER BY seq",
								  2, argtypes, values, NULL, true, CURSOR_OPT_NO_SCROLL);
	as_caller(&own);
	return p;
}

/*
 * Where the weights of name@version are, read with the caller's rights:
 * false if the version does not exist (or the caller's row security hides
 * it).  *inline_w: the weights column (detoasted into cxt) when not NULL,
 * else NULL and *len the stored weights_size.
 */
static bool
weights_where(const char *name, int32 version, MemoryContext cxt, bytea **inline_w, uint64 *len)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		chunked = pepnet_chunked_schema(),
				isnull;
	Datum		d;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	*inline_w = NULL;
	*len = 0;
	if (SPI_execute_with_args(chunked ?
							  "SELECT weights, weights_size FROM pepnet.models "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2" :
							  "SELECT weights, NULL::pg_catalog.int8 FROM pepnet.models "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pepnet: could not read model \"%s\" version %d", name, version);
	if (SPI_processed != 1)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		*inline_w = DatumGetByteaPCopy(d);
		*len = VARSIZE_ANY_EXHDR(*inline_w);
		MemoryContextSwitchTo(old);
		return true;
	}
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (isnull || DatumGetInt64(d) < 0)
		corrupt(name, version, "pepnet.models has neither its weights nor their size (weights_size)");
	*len = (uint64) DatumGetInt64(d);
	return true;
}

/*
 * The size in bytes of the stored weights of name@version (with the
 * caller's rights); raises 42704 if the version does not exist.
 */
uint64
pepnet_weights_size(const char *name, int32 version)
{
	bytea	   *w;
	uint64		len;
	MemoryContext cxt = CurrentMemoryContext;

	SPI_connect();
	if (!weights_where(name, version, cxt, &w, &len))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", name, version)));
	SPI_finish();
	if (w)
		pfree(w);
	return len;
}

/*
 * Stream the chunks of name@version, in order, to emit(arg, bytes, n), one
 * chunk at a time (SPI connected); len is the stored weights_size.  Raises
 * XX001 when a chunk is missing, empty or out of order, or the chunks do not
 * add up to len.  Returns len.
 */
typedef void (*EmitFn) (void *arg, const uint8 *p, size_t n);

static uint64
stream_chunks(const char *name, int32 version, uint64 len, EmitFn emit, void *arg)
{
	Portal		p = chunk_cursor(name, version);
	uint64		total = 0;
	int32		expect = 0;

	for (;;)
	{
		bool		isnull;
		int32		seq;
		bytea	   *c;
		size_t		clen;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(p, true, 1);
		if (SPI_processed == 0)
			break;
		seq = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (seq != expect)
		{
			char		what[96];

			snprintf(what, sizeof(what), "chunk %d is missing", expect);
			corrupt(name, version, what);
		}
		c = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		clen = isnull ? 0 : VARSIZE_ANY_EXHDR(c);
		if (isnull || clen == 0 || total + clen > len)
		{
			char		what[128];

			snprintf(what, sizeof(what), "chunk %d %s", seq, isnull || clen == 0 ? "is empty" : "goes beyond the stored weights_size");
			corrupt(name, version, what);
		}
		emit(arg, (const uint8 *) VARDATA_ANY(c), clen);
		total += clen;
		expect++;
		if ((Pointer) c != DatumGetPointer(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)))
			pfree(c);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(p);
	if (total != len)
	{
		char		what[160];

		snprintf(what, sizeof(what), "its %d chunk(s) hold %llu of %llu bytes: chunk %d is missing",
				 expect, (unsigned long long) total, (unsigned long long) len, expect);
		corrupt(name, version, what);
	}
	return total;
}

/* EmitFn of pepnet_stream_weights: append to a buffer */
typedef struct BufOut
{
	uint8	   *buf;
	uint64		pos;
} BufOut;

static void
emit_buf(void *arg, const uint8 *p, size_t n)
{
	BufOut	   *o = arg;

	memcpy(o->buf + o->pos, p, n);
	o->pos += n;
}

/*
 * Stream the stored weights (safetensors) of name@version into memory that
 * alloc(arg, len) provides once the size is known (len bytes, e.g. in the
 * caller's memory context or in shared memory), and return it.  Chunks are
 * read one at a time: the weights are in memory once, plus one chunk.
 * maxlen: larger stored weights are refused (XX001) before allocating.
 * Raises 42704 if the version does not exist, XX001 if its chunks are
 * missing, out of order or of the wrong total size.
 */
uint8 *
pepnet_stream_weights(const char *name, int32 version, uint64 maxlen,
					  PepnetWeightsAlloc alloc, void *arg, uint64 *len)
{
	MemoryContext caller = CurrentMemoryContext;
	bytea	   *w;
	uint8	   *buf;

	SPI_connect();
	if (!weights_where(name, version, caller, &w, len))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", name, version)));
	if (*len > maxlen)
	{
		char		what[160];

		snprintf(what, sizeof(what), "pepnet.models says %llu bytes, more than its config needs (at most %llu)",
				 (unsigned long long) *len, (unsigned long long) maxlen);
		corrupt(name, version, what);
	}
	{
		MemoryContext spi = MemoryContextSwitchTo(caller);

		buf = alloc(arg, *len);
		MemoryContextSwitchTo(spi);
	}
	if (w)
	{
		memcpy(buf, VARDATA_ANY(w), *len);
		pfree(w);
		SPI_finish();
		return buf;
	}
	{
		BufOut		o = {buf, 0};

		stream_chunks(name, version, *len, emit_buf, &o);
	}
	SPI_finish();
	return buf;
}

/* pepnet_read_weights's allocator: room bytes in front, in the current memory context */
static void *
alloc_with_room(void *arg, uint64 len)
{
	size_t		room = *(size_t *) arg;

	return (uint8 *) MemoryContextAllocHuge(CurrentMemoryContext, room + len + 1) + room;
}

/*
 * The stored weights of name@version (pepnet_stream_weights), in a new
 * buffer of room + *len bytes allocated in the caller's memory context and
 * filled from offset room (room: space for a varlena header or a bundle
 * header in front).
 */
uint8 *
pepnet_read_weights(const char *name, int32 version, size_t room, uint64 maxlen, uint64 *len)
{
	return pepnet_stream_weights(name, version, maxlen, alloc_with_room, &room, len) - room;
}

/* ---------------------------------------------------------------- */
/* the chunk guard                                                   */
/* ---------------------------------------------------------------- */

/*
 * pepnet._chunks_guard(): BEFORE ROW trigger on pepnet.model_chunks.  A
 * version's chunks are written with its row, in the transaction that
 * inserted it, and never change: UPDATE is refused, INSERT is refused for a
 * version committed before or missing, DELETE while the version's row
 * exists (chunks go with their version: pepnet._models_cascade deletes
 * them, after the version guard has refused deleting a deployed one).
 * COPY (pg_restore, in any order and in parallel with the versions) loads
 * chunks as they were dumped.  Enabled ALWAYS: in logical replication's apply worker
 * (session_replication_role = replica) it lets writes through but keeps the
 * chunks of a version whose replicated DELETE the version guard skipped.
 */
Datum
pepnet_chunks_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	row;
	char	   *name;
	int32		version;
	bool		isnull,
				exists = false;
	TransactionId xmin = InvalidTransactionId;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	AsOwner		own;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "pepnet._chunks_guard must be called as a BEFORE ROW trigger");
	desc = RelationGetDescr(td->tg_relation);
	row = td->tg_trigtuple;
	name = SPI_getvalue(row, desc, SPI_fnumber(desc, "name"));
	version = DatumGetInt32(heap_getattr(row, SPI_fnumber(desc, "version"), desc, &isnull));
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the chunks of model \"%s\" version %d are immutable", name ? name : "?", version),
				 errhint("Create a new version with pepnet_import, pepnet_create or pepnet_train.")));
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && pepnet_copy_into("model_chunks"))
		return PointerGetDatum(row);
	/* logical replication's apply worker (ENABLE ALWAYS): the publisher's guards have run */
	if (SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA && !TRIGGER_FIRED_BY_DELETE(td->tg_event))
		return PointerGetDatum(row);

	values[0] = CStringGetTextDatum(name ? name : "");
	values[1] = Int32GetDatum(version);
	as_owner(&own);
	SPI_connect();
	if (SPI_execute_with_args("SELECT xmin FROM pepnet.models WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "pepnet: could not look up model \"%s\" version %d", name, version);
	if (SPI_processed == 1)
	{
		exists = true;
		xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	as_caller(&own);

	if (TRIGGER_FIRED_BY_DELETE(td->tg_event))
	{
		/*
		 * A replicated DELETE of a version this node has deployed was skipped
		 * by the version guard (with a WARNING); its chunks, deleted on the
		 * publisher by the cascade, are kept with it.
		 */
		if (exists && SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA)
			return PointerGetDatum(NULL);
		if (exists)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("the chunks of model \"%s\" version %d cannot be deleted while the version exists", name, version),
					 errhint("Delete the version from pepnet.models (not deployed); its chunks go with it.")));
		return PointerGetDatum(row);
	}
	/* INSERT: only into a version inserted by this transaction */
	if (!exists)
		ereport(ERROR,
				(errcode(ERRCODE_FOREIGN_KEY_VIOLATION),
				 errmsg("model \"%s\" has no version %d: chunks cannot be stored without their version", name, version),
				 errdetail("A version's chunks are written in the transaction that inserts its row into pepnet.models, after the row."),
				 errhint("Create versions with pepnet_import, pepnet_import_chunks, pepnet_create or pepnet_train.")));
	if (!TransactionIdIsCurrentTransactionId(xmin))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" version %d is immutable: chunks cannot be added to it", name, version),
				 errdetail("A version's chunks are written in the transaction that inserts its row into pepnet.models."),
				 errhint("Create a new version with pepnet_import, pepnet_import_chunks, pepnet_create or pepnet_train.")));
	return PointerGetDatum(row);
}

/* ---------------------------------------------------------------- */
/* moving versions of any size                                       */
/* ---------------------------------------------------------------- */

/* Whether a safetensors header has PN running statistics but no pn.num_batches_tracked (0.1.0) */
static bool
head_lacks_count(const uint8 *p, size_t len)
{
	uint64		hlen = 0;
	int			i;

	if (len < 8)
		return false;
	for (i = 7; i >= 0; i--)
		hlen = (hlen << 8) | p[i];
	if (hlen > len - 8)
		return false;
	return memmem(p + 8, hlen, "\"pn.running_mean\"", 17) != NULL &&
		memmem(p + 8, hlen, "\"pn.num_batches_tracked\"", 24) == NULL;
}

/* The first bytes of the chunked weights of name@version: length and header (SPI connected) */
static uint8 *
chunked_head(const char *name, int32 version, size_t *hlen_out)
{
	Portal		p = chunk_cursor(name, version);
	size_t		want = 8,
				have = 0;
	uint8	   *head = palloc(8);

	while (have < want)
	{
		bool		isnull;
		bytea	   *c;
		size_t		clen,
					take;

		SPI_cursor_fetch(p, true, 1);
		if (SPI_processed == 0)
			break;
		c = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		if (isnull)
			break;
		clen = VARSIZE_ANY_EXHDR(c);
		take = Min(clen, want - have);
		memcpy(head + have, VARDATA_ANY(c), take);
		have += take;
		if (want == 8 && have == 8)
		{
			uint64		hl = 0;
			int			i;

			for (i = 7; i >= 0; i--)
				hl = (hl << 8) | head[i];
			if (hl > PN_MAX_HEADER)
				break;
			want = 8 + (size_t) hl;
			head = repalloc(head, want);
			if (clen > take)
			{
				size_t		more = Min(clen - take, want - have);

				memcpy(head + have, VARDATA_ANY(c) + take, more);
				have += more;
			}
		}
	}
	SPI_cursor_close(p);
	*hlen_out = have;
	return head;
}

/*
 * Stream the weights of a resolved reference as pepnet_export returns them
 * (the stored bytes; 0.1.0 blobs completed with pn.num_batches_tracked),
 * piece by piece: stored chunks as they are, anything else in pieces of
 * pepnet.chunk_size.  Returns the number of bytes.
 */
static uint64
export_stream(const PepnetRef *ref, EmitFn emit, void *arg)
{
	MemoryContext caller = CurrentMemoryContext;
	bytea	   *w;
	uint64		len,
				total = 0;
	bool		lacks;
	size_t		hl;
	uint8	   *head;

	SPI_connect();
	if (!weights_where(ref->name, ref->version, caller, &w, &len))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref->name, ref->version)));
	if (w)
		lacks = head_lacks_count((const uint8 *) VARDATA_ANY(w), VARSIZE_ANY_EXHDR(w));
	else
	{
		head = chunked_head(ref->name, ref->version, &hl);
		lacks = head_lacks_count(head, hl);
	}
	if (lacks)
	{
		/* stored by 0.1.0: docs/model.md 0.2's full tensor set (the count is 0) */
		char		name[PEPNET_NAMELEN];
		int32		version;
		PnModel    *m;
		WeightSource s;
		size_t		cs = (size_t) pepnet_chunk_size;
		uint8	   *buf;
		uint64		off;

		SPI_finish();
		m = pepnet_load_model(ref, name, &version);
		source_init(&s, m, NULL, 0);
		buf = palloc(Min((uint64) cs, s.len));
		for (off = 0; off < s.len; off += cs)
		{
			size_t		n = (size_t) Min((uint64) cs, s.len - off);

			CHECK_FOR_INTERRUPTS();
			source_range(&s, off, n, buf);
			emit(arg, buf, n);
		}
		return s.len;
	}
	if (w)
	{
		size_t		cs = (size_t) pepnet_chunk_size;
		uint64		off;

		SPI_finish();
		for (off = 0; off < len; off += cs)
			emit(arg, (const uint8 *) VARDATA_ANY(w) + off, (size_t) Min((uint64) cs, len - off));
		return len;
	}
	total = stream_chunks(ref->name, ref->version, len, emit, arg);
	SPI_finish();
	return total;
}

typedef struct RowsOut
{
	Tuplestorestate *ts;
	TupleDesc	desc;
	MemoryContext cxt;
	int32		seq;
} RowsOut;

static void
emit_row(void *arg, const uint8 *p, size_t n)
{
	RowsOut    *o = arg;
	MemoryContext old = MemoryContextSwitchTo(o->cxt);
	bytea	   *b = palloc(VARHDRSZ + n);
	Datum		values[2];
	bool		nulls[2] = {false, false};

	SET_VARSIZE(b, VARHDRSZ + n);
	memcpy(VARDATA(b), p, n);
	values[0] = Int32GetDatum(o->seq++);
	values[1] = PointerGetDatum(b);
	tuplestore_putvalues(o->ts, o->desc, values, nulls);
	pfree(b);
	MemoryContextSwitchTo(old);
}

/*
 * pepnet_export_chunks(model text) RETURNS TABLE (seq int, data bytea): the
 * weights pepnet_export returns, in pieces numbered from 0 (the stored
 * chunks), for versions of any size.  string_agg(data, '' ORDER BY seq) of
 * a version under 1 GB = pepnet_export(model).
 */
Datum
pepnet_export_chunks(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PepnetRef	ref;
	RowsOut		o;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	InitMaterializedSRF(fcinfo, 0);
	o.ts = rsinfo->setResult;
	o.desc = rsinfo->setDesc;
	o.cxt = CurrentMemoryContext;
	o.seq = 0;
	export_stream(&ref, emit_row, &o);
	return (Datum) 0;
}

typedef struct FileOut
{
	FILE	   *f;
	const char *path;
} FileOut;

static void
emit_file(void *arg, const uint8 *p, size_t n)
{
	FileOut    *o = arg;

	if (fwrite(p, 1, n, o->f) != n)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", o->path)));
}

static void
require_role(Oid role, const char *rolename, const char *what)
{
	if (!has_privs_of_role(GetUserId(), role))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for %s", what),
				 errdetail("Only roles with privileges of the \"%s\" role may %s.", rolename,
						   role == ROLE_PG_READ_SERVER_FILES ? "read files on the server" : "write files on the server"),
				 errhint("Use %s instead, which move a version through the connection.",
						 role == ROLE_PG_READ_SERVER_FILES ? "pepnet_import or pepnet_import_chunks" : "pepnet_export or pepnet_export_chunks")));
}

/*
 * pepnet_export_file(model text, path text) RETURNS bigint: write the
 * weights pepnet_export returns into a file on the server (created or replaced) (members of
 * pg_write_server_files); returns its size in bytes.
 */
Datum
pepnet_export_file(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	FileOut    *o = palloc0(sizeof(FileOut));	/* on the heap: read after a longjmp */
	volatile uint64 n = 0;
	char	   *path;
	char	   *tmp;

	require_role(ROLE_PG_WRITE_SERVER_FILES, "pg_write_server_files", "pepnet_export_file");
	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("file path");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	path = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!is_absolute_path(path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("file path \"%s\" is not absolute", path),
				 errhint("Give the file's full path on the database server.")));
	/*
	 * Written to a temporary file beside it and renamed over it once complete,
	 * so that a failed or cancelled export never leaves a truncated file
	 * behind, nor destroys the file that was there.
	 */
	tmp = psprintf("%s.pepnet-tmp.%d", path, MyProcPid);
	o->path = tmp;
	o->f = AllocateFile(tmp, PG_BINARY_W);
	if (o->f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", tmp)));
	PG_TRY();
	{
		n = export_stream(&ref, emit_file, o);
		if (FreeFile(o->f) != 0)
		{
			o->f = NULL;
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not write file \"%s\": %m", tmp)));
		}
		o->f = NULL;
		durable_rename(tmp, path, ERROR);
	}
	PG_CATCH();
	{
		if (o->f != NULL)
			FreeFile(o->f);
		unlink(tmp);
		PG_RE_THROW();
	}
	PG_END_TRY();
	PG_RETURN_INT64((int64) n);
}

/* The config argument parsed and its empty model layout; raises on error */
static PnModel *
import_layout(FunctionCallInfo fcinfo, const char *what3, char **name, uint64 *maxlen)
{
	Jsonb	   *jb;
	char	   *cfgtext;
	PnConfig	cfg;
	PnModel    *m;
	PnError		err = {0};
	int64		numel;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model name");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("config");
	if (PG_ARGISNULL(2))
		pepnet_null_arg(what3);
	*name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	pepnet_check_name(*name);
	/* the INSERT would be refused: say so before reading any weights */
	{
		Oid			models = get_relname_relid("models", get_namespace_oid("pepnet", false));

		if (pg_class_aclcheck(models, GetUserId(), ACL_INSERT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table models"),
					 errhint("Storing a version needs INSERT on pepnet.models (README, Roles and grants).")));
	}
	jb = PG_GETARG_JSONB_P(1);
	cfgtext = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	if (pn_config_parse(cfgtext, strlen(cfgtext), pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	numel = pn_config_numel(&cfg);
	if (pn_model_layout(&cfg, &m, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	pn_config_free(&cfg);
	*maxlen = 8 + (uint64) PN_MAX_HEADER + (uint64) numel * 4;
	return m;
}

/* Check blob against m (borrowing it) and store it as a new version of name */
static int32
import_blob(const char *name, PnModel *m, uint8 *blob, uint64 len)
{
	PnError		err = {0};
	char	   *cj;
	int32		version;

	if (pn_safetensors_read(m, blob, (size_t) len, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_BINARY_REPRESENTATION);
	cj = pn_config_to_json(&m->cfg);
	if (cj == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	version = pepnet_insert_version(name, cj, m, NULL, 0);
	pn_model_free(m);
	pfree(blob);
	return version;
}

static void
too_long(uint64 maxlen, const char *from)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("weights from %s are longer than the config allows (%llu bytes at most)", from, (unsigned long long) maxlen),
			 errhint("Pass the config the weights were exported with (pepnet.models.config).")));
}

/*
 * pepnet_import_chunks(name text, config jsonb, query text) RETURNS int: a
 * new version from weights (safetensors) given as the rows of a query whose
 * first column is bytea, in order (e.g. SELECT data FROM
 * pepnet_export_chunks(...) ORDER BY seq, or a foreign table of them): for
 * weights of any size, checked as pepnet_import checks them.
 */
Datum
pepnet_import_chunks(PG_FUNCTION_ARGS)
{
	char	   *name,
			   *query;
	uint64		maxlen,
				len = 0;
	uint8		head[8];
	uint8	   *blob = NULL;
	PnModel    *m;
	Portal		p;
	SPIPlanPtr	plan;
	MemoryContext caller = CurrentMemoryContext;

	pepnet_require_writable("pepnet_import_chunks");
	m = import_layout(fcinfo, "chunk query", &name, &maxlen);
	query = text_to_cstring(PG_GETARG_TEXT_PP(2));
	SPI_connect();
	plan = pepnet_prepare_select(query, "chunk",
								 "Give a SELECT whose first column is bytea, ordered, e.g. SELECT data FROM t ORDER BY seq.");
	p = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		bool		isnull;
		Datum		d;
		bytea	   *c;
		size_t		clen,
					off = 0;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(p, true, 1);
		if (SPI_processed == 0)
			break;
		if (SPI_tuptable->tupdesc->natts < 1 || TupleDescAttr(SPI_tuptable->tupdesc, 0)->atttypid != BYTEAOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("the first column of pepnet_import_chunks's chunk query must be bytea"),
					 errhint("Give a SELECT whose first column is bytea, ordered, e.g. SELECT data FROM t ORDER BY seq.")));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("the chunk query of pepnet_import_chunks returned NULL as chunk %llu", (unsigned long long) SPI_processed),
					 errhint("Every row must hold the next piece of the weights.")));
		c = DatumGetByteaPP(d);
		clen = VARSIZE_ANY_EXHDR(c);
		/* the first 8 bytes give the header length and so the largest size the config allows */
		while (len < 8 && off < clen)
			head[len++] = ((const uint8 *) VARDATA_ANY(c))[off++];
		if (len == 8 && blob == NULL)
		{
			uint64		hl = 0;
			int			i;

			for (i = 7; i >= 0; i--)
				hl = (hl << 8) | head[i];
			if (hl > PN_MAX_HEADER)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
						 errmsg("weights are not safetensors: header length %llu is too long", (unsigned long long) hl)));
			maxlen = Min(maxlen, 8 + hl + (maxlen - 8 - PN_MAX_HEADER));
			blob = MemoryContextAllocHuge(caller, maxlen + 1);
			memcpy(blob, head, 8);
		}
		if (clen - off > 0)
		{
			if (len + (clen - off) > maxlen)
				too_long(maxlen, "the chunk query");
			memcpy(blob + len, VARDATA_ANY(c) + off, clen - off);
			len += clen - off;
		}
		if ((Pointer) c != DatumGetPointer(d))
			pfree(c);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(p);
	SPI_finish();
	if (blob == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("weights are not safetensors: the chunk query returned %llu bytes, too short for a header", (unsigned long long) len),
				 errhint("Give a SELECT whose first column is bytea, ordered, e.g. SELECT data FROM t ORDER BY seq.")));
	PG_RETURN_INT32(import_blob(name, m, blob, len));
}

/*
 * pepnet_import_file(name text, config jsonb, path text) RETURNS int: a new
 * version from a safetensors file on the server (members of
 * pg_read_server_files), of any size.
 */
Datum
pepnet_import_file(PG_FUNCTION_ARGS)
{
	char	   *name,
			   *path;
	uint64		maxlen,
				len,
				got = 0;
	uint8	   *blob;
	PnModel    *m;
	FILE	   *f;
	struct stat st;

	pepnet_require_writable("pepnet_import_file");
	require_role(ROLE_PG_READ_SERVER_FILES, "pg_read_server_files", "pepnet_import_file");
	m = import_layout(fcinfo, "file path", &name, &maxlen);
	path = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!is_absolute_path(path))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("file path \"%s\" is not absolute", path),
				 errhint("Give the file's full path on the database server.")));
	f = AllocateFile(path, PG_BINARY_R);
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open file \"%s\" for reading: %m", path)));
	if (fstat(fileno(f), &st) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat file \"%s\": %m", path)));
	if (!S_ISREG(st.st_mode))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a regular file", path)));
	len = (uint64) st.st_size;
	if (len > maxlen)
		too_long(maxlen, psprintf("file \"%s\" (%llu bytes)", path, (unsigned long long) len));
	blob = MemoryContextAllocHuge(CurrentMemoryContext, len + 1);
	while (got < len)
	{
		size_t		n = (size_t) Min(len - got, (uint64) 16 * 1024 * 1024);

		CHECK_FOR_INTERRUPTS();
		if (fread(blob + got, 1, n, f) != n)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", path)));
		got += n;
	}
	FreeFile(f);
	PG_RETURN_INT32(import_blob(name, m, blob, len));
}

/* ---------------------------------------------------------------- */
/* Adam's moments in chunks (pepnet.optimizer_chunks)                */
/* ---------------------------------------------------------------- */

/* Whether the catalog has pepnet.optimizer_chunks */
bool
pepnet_optimizer_chunked(void)
{
	Oid			ns = get_namespace_oid("pepnet", true);

	return OidIsValid(ns) && OidIsValid(get_relname_relid("optimizer_chunks", ns));
}

/*
 * Store one of Adam's moments (moment 1 or 2: mm is the model's layout
 * over the moment array) of name@version as rows of pepnet.optimizer_chunks,
 * serialized chunk by chunk as safetensors, as the owner of pepnet.models;
 * the caller has inserted the version's row of pepnet.optimizer_state.
 */
void
pepnet_write_moment_chunks(const char *name, int32 version, int moment, const PnModel *mm)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[5] = {TEXTOID, INT4OID, INT2OID, INT4OID, BYTEAOID};
	Datum		values[5];
	WeightSource s;
	size_t		cs = (size_t) pepnet_chunk_size;
	bytea	   *buf;
	uint64		off;
	int32		seq = 0;
	AsOwner		own;

	source_init(&s, mm, NULL, 0);
	buf = palloc(VARHDRSZ + Min((uint64) cs, s.len));
	SPI_connect();
	if (plan == NULL)
	{
		plan = SPI_prepare("INSERT INTO pepnet.optimizer_chunks (name, version, moment, seq, data) VALUES ($1, $2, $3, $4, $5)",
						   5, argtypes);
		if (plan == NULL)
			elog(ERROR, "pepnet: could not prepare the optimizer chunk insert");
		SPI_keepplan(plan);
	}
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	values[2] = Int16GetDatum((int16) moment);
	as_owner(&own);
	for (off = 0; off < s.len; off += cs, seq++)
	{
		size_t		n = (size_t) Min((uint64) cs, s.len - off);

		CHECK_FOR_INTERRUPTS();
		SET_VARSIZE(buf, VARHDRSZ + n);
		source_range(&s, off, n, (uint8 *) VARDATA(buf));
		values[3] = Int32GetDatum(seq);
		values[4] = PointerGetDatum(buf);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "pepnet: could not store the optimizer state of model \"%s\" version %d", name, version);
	}
	as_caller(&own);
	SPI_finish();
	pfree(buf);
	pfree(s.prefix);
}

/*
 * Read one of Adam's moments of name@version from pepnet.optimizer_chunks
 * into mm's storage (the model's layout over the moment array), as the
 * owner of pepnet.models; the caller has read the version's row of
 * pepnet.optimizer_state.  False if the chunks are missing, of another
 * size or not the model's tensors (the caller then starts Adam afresh).
 */
bool
pepnet_read_moment_chunks(const char *name, int32 version, int moment, PnModel *mm)
{
	Oid			argtypes[3] = {TEXTOID, INT4OID, INT2OID};
	Datum		values[3];
	uint64		len = pn_safetensors_size(mm),
				pos = 0;
	int32		expect = 0;
	uint8	   *buf = MemoryContextAllocHuge(CurrentMemoryContext, len + 1);
	bool		ok = true;
	Portal		p;
	AsOwner		own;
	PnError		err = {0};

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	values[2] = Int16GetDatum((int16) moment);
	SPI_connect();
	as_owner(&own);
	p = SPI_cursor_open_with_args(NULL,
								  "SELECT seq, data FROM pepnet.optimizer_chunks WHERE name OPERATOR(pg_catalog.=) $1 "
								  "AND version OPERATOR(pg_catalog.=) $2 AND moment OPERATOR(pg_catalog.=) $3 ORDER BY seq",
								  3, argtypes, values, NULL, true, CURSOR_OPT_NO_SCROLL);
	as_caller(&own);
	while (ok)
	{
		bool		isnull;
		Datum		d;
		bytea	   *c;
		size_t		clen;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(p, true, 1);
		if (SPI_processed == 0)
			break;
		if (DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) != expect++)
		{
			ok = false;
			break;
		}
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		c = DatumGetByteaPP(d);
		clen = VARSIZE_ANY_EXHDR(c);
		if (pos + clen > len)
			ok = false;
		else
		{
			memcpy(buf + pos, VARDATA_ANY(c), clen);
			pos += clen;
		}
		if ((Pointer) c != DatumGetPointer(d))
			pfree(c);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(p);
	SPI_finish();
	ok = ok && pos == len && pn_safetensors_read(mm, buf, (size_t) len, &err) == PN_OK;
	pfree(buf);
	return ok;
}

/* ---------------------------------------------------------------- */
/* streaming into a model's own storage (the shared cache)          */
/* ---------------------------------------------------------------- */

/* the state of a scatter: the header gathered, then the tensors' spans */
typedef struct Scatter
{
	const char *name;
	int32		version;
	PnModel    *m;
	uint64		len;			/* bytes of the blob */
	uint64		pos;			/* bytes seen */
	uint8	   *head;			/* the first bytes until the plan is made */
	size_t		headlen,
				headneed;
	PnStSpan   *spans;
	int			nspans,
				k;				/* first span not yet complete */
	uint64		start;			/* where the data begins */
} Scatter;

static void
scatter_plan(Scatter *sc)
{
	PnError		err = {0};

	if (pn_safetensors_plan(sc->m, sc->head, sc->headlen, sc->len, &sc->spans, &sc->nspans, &sc->start, &err) != PN_OK)
	{
		pn_setdetail(&err, "The stored weights of model \"%s\" version %d are corrupt.", sc->name, sc->version);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
}

/* The next n bytes of the blob: into the header, then into the tensors they belong to */
static void
scatter_bytes(Scatter *sc, const uint8 *p, size_t n)
{
	while (n > 0 && sc->spans == NULL)
	{
		size_t		take = Min(n, sc->headneed - sc->headlen);

		memcpy(sc->head + sc->headlen, p, take);
		sc->headlen += take;
		sc->pos += take;
		p += take;
		n -= take;
		if (sc->headlen == 8 && sc->headneed == 8)
		{
			uint64		hl = 0;
			int			i;

			for (i = 7; i >= 0; i--)
				hl = (hl << 8) | sc->head[i];
			/* the plan refuses a header that does not fit: gather at most what there is */
			sc->headneed = (size_t) Min(8 + Min(hl, (uint64) PN_MAX_HEADER), sc->len);
			sc->head = repalloc(sc->head, sc->headneed + 1);
		}
		if (sc->headlen == sc->headneed)
			scatter_plan(sc);
	}
	while (n > 0)
	{
		uint64		d = sc->pos - sc->start;	/* offset into the data */
		size_t		take = n;

		while (sc->k < sc->nspans && sc->spans[sc->k].end <= d)
			sc->k++;
		if (sc->k < sc->nspans && sc->spans[sc->k].begin <= d)
		{
			const PnStSpan *sp = &sc->spans[sc->k];

			take = (size_t) Min((uint64) n, sp->end - d);
			memcpy((uint8 *) (sc->m->data + sc->m->tensors[sp->tensor].offset) + (d - sp->begin), p, take);
		}
		/* (bytes outside every span cannot occur: the plan checked that the spans cover the data) */
		sc->pos += take;
		p += take;
		n -= take;
	}
}

/* EmitFn of pepnet_scatter_weights */
static void
emit_scatter(void *arg, const uint8 *p, size_t n)
{
	scatter_bytes((Scatter *) arg, p, n);
}

/*
 * Stream the stored weights of name@version into m's own storage: m is the
 * version's layout (pepnet_load_layout) with m->data pointing at
 * m->total floats (e.g. in shared memory).  Chunks are read one at a time
 * and each tensor's bytes copied straight to its place: nothing of the
 * weights' size is allocated.  Checked as pepnet_load_model checks them
 * (XX001 for missing or corrupt chunks or safetensors).
 */
void
pepnet_scatter_weights(const char *name, int32 version, PnModel *m)
{
	MemoryContext caller = CurrentMemoryContext;
	Scatter		sc;
	bytea	   *w;
	PnError		err = {0};

	memset(&sc, 0, sizeof(sc));
	sc.name = name;
	sc.version = version;
	sc.m = m;
	sc.headneed = 8;
	SPI_connect();
	if (!weights_where(name, version, caller, &w, &sc.len))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", name, version)));
	if (sc.len < 8)
		corrupt(name, version, "the stored weights are too short for a safetensors header");
	sc.head = palloc(9);
	if (w)
	{
		scatter_bytes(&sc, (const uint8 *) VARDATA_ANY(w), sc.len);
		pfree(w);
	}
	else
		stream_chunks(name, version, sc.len, emit_scatter, &sc);
	if (sc.spans == NULL)
		scatter_plan(&sc);		/* a blob shorter than its header says: the plan's error */
	if (pn_safetensors_check(m, sc.spans, sc.nspans, &err) != PN_OK)
	{
		pn_setdetail(&err, "The stored weights of model \"%s\" version %d are corrupt.", name, version);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	/* the header and the spans go with SPI's memory */
	SPI_finish();
}

/* EmitFn of pepnet_verify: hash the bytes */
static void
emit_hash(void *arg, const uint8 *p, size_t n)
{
	hash_slices((pg_cryptohash_ctx *) arg, p, n);
}

/*
 * pepnet_verify(model text) RETURNS boolean: whether the version's stored
 * fingerprint is the SHA-256 of its stored config and weights, recomputed
 * here chunk by chunk.  The fingerprint column is written once, with the
 * version; rows copied by hand (INSERT ... SELECT of pepnet.models and
 * pepnet.model_chunks, e.g. through postgres_fdw) copy it without checking
 * it, so this is how to check such a copy.  Missing, empty or surplus
 * chunks raise XX001, as when the version is loaded.
 */
PG_FUNCTION_INFO_V1(pepnet_verify);

Datum
pepnet_verify(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	MemoryContext caller = CurrentMemoryContext;
	bytea	   *w;
	uint64		len,
				seen = 0;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		isnull;
	char	   *canon;
	uint8	   *stored = NULL;
	uint8		fp[FP_LEN];
	uint64		clen;
	pg_cryptohash_ctx *ctx;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	SPI_connect();
	values[0] = CStringGetTextDatum(ref.name);
	values[1] = Int32GetDatum(ref.version);
	if (SPI_execute_with_args("SELECT config::pg_catalog.text, fingerprint FROM pepnet.models "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref.name, ref.version)));
	{
		MemoryContext old = MemoryContextSwitchTo(caller);
		Datum		d;

		canon = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
		if (!isnull && VARSIZE_ANY_EXHDR(DatumGetByteaPP(d)) == FP_LEN)
		{
			/* 32 bytes of a hash: any of them may be 0x00 (no string copy) */
			stored = palloc(FP_LEN);
			memcpy(stored, VARDATA_ANY(DatumGetByteaPP(d)), FP_LEN);
		}
		MemoryContextSwitchTo(old);
	}
	if (!weights_where(ref.name, ref.version, caller, &w, &len))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref.name, ref.version)));
	ctx = pg_cryptohash_create(PG_SHA256);
	clen = pg_hton64((uint64) strlen(canon));
	hash_or_fail(ctx, pg_cryptohash_init(ctx));
	hash_or_fail(ctx, pg_cryptohash_update(ctx, (const uint8 *) &clen, sizeof(clen)));
	hash_or_fail(ctx, pg_cryptohash_update(ctx, (const uint8 *) canon, strlen(canon)));
	if (w)
	{
		hash_slices(ctx, (const uint8 *) VARDATA_ANY(w), VARSIZE_ANY_EXHDR(w));
		seen = len;
	}
	else
		seen = stream_chunks(ref.name, ref.version, len, emit_hash, ctx);
	hash_or_fail(ctx, pg_cryptohash_final(ctx, fp, FP_LEN));
	pg_cryptohash_free(ctx);
	SPI_finish();
	PG_RETURN_BOOL(stored != NULL && seen == len && memcmp(fp, stored, FP_LEN) == 0);
}
