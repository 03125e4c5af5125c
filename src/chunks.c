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
 *		- the chunk guard trigger: chunks are immutable, written only with
 *		  their version's row (same transaction), deleted only with it;
 *		- Adam's moments of trained versions, chunked the same way in
 *		  pepnet.optimizer_chunks (written and read by training.c).
 *
 * Moving versions of any size in and out (rows, files) is transfer.c's, on
 * the streams of this file.
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
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
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
		elog(ERROR, "cache lookup failed for pepnet.models");
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

void
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

void
source_range(const WeightSource *s, uint64 off, size_t n, uint8 *out)
{
	if (s->m)
		pn_safetensors_write_range(s->m, s->prefix, s->plen, off, n, out);
	else
		memcpy(out, s->bytes + off, n);
}

/*
 * The fingerprint of config and weights: SHA-256 over the length of the
 * config's canonical jsonb text (8 bytes, big-endian), that text, and the
 * weights (as pepnet._fingerprint computes it for weights in one bytea).
 */
static void
source_fingerprint(const char *canon, const WeightSource *s, uint8 *out)
{
	pg_cryptohash_ctx *ctx = fp_begin(canon);

	if (s->m)
	{
		int			i;

		hash_slices(ctx, s->prefix, s->plen);
		for (i = 0; i < s->m->ntensors; i++)
			hash_slices(ctx, (const uint8 *) (s->m->data + s->m->tensors[i].offset),
						PN_TENSOR_BYTES(&s->m->tensors[i]));
	}
	else
		hash_slices(ctx, s->bytes, s->len);
	fp_end(ctx, out);
}

/*
 * Insert s in chunks of pepnet.chunk_size through plan, whose parameters
 * are the nkeys values (the version's key), then seq and data; as the owner
 * of pepnet.models (SPI connected).  moment: Adam's moment being stored
 * (for the message), 0 for weights.
 */
static void
insert_chunks(SPIPlanPtr plan, Datum *values, int nkeys, const WeightSource *s,
			  const char *name, int32 version, int moment)
{
	size_t		cs = (size_t) pepnet_chunk_size;
	bytea	   *buf = palloc(VARHDRSZ + Min((uint64) cs, s->len));
	uint64		off;
	int32		seq = 0;
	AsOwner		own;

	as_owner(&own);
	for (off = 0; off < s->len; off += cs, seq++)
	{
		size_t		n = (size_t) Min((uint64) cs, s->len - off);

		CHECK_FOR_INTERRUPTS();
		SET_VARSIZE(buf, VARHDRSZ + n);
		source_range(s, off, n, (uint8 *) VARDATA(buf));
		values[nkeys] = Int32GetDatum(seq);
		values[nkeys + 1] = PointerGetDatum(buf);
		if (SPI_execute_plan(plan, values, NULL, false, 0) != SPI_OK_INSERT)
		{
			if (moment)
				elog(ERROR, "could not store the optimizer state of model \"%s\" version %d", name, version);
			elog(ERROR, "could not store chunk %d of model \"%s\" version %d", seq, name, version);
		}
	}
	as_caller(&own);
	pfree(buf);
}

/* Insert the chunks of name@version from s, as the owner of pepnet.models (SPI connected) */
static void
write_chunks(const char *name, int32 version, const WeightSource *s)
{
	static SPIPlanPtr plan = NULL;
	Oid			argtypes[4] = {TEXTOID, INT4OID, INT4OID, BYTEAOID};
	Datum		values[4];
	size_t		cs = (size_t) pepnet_chunk_size;

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
			elog(ERROR, "could not prepare the chunk insert");
		SPI_keepplan(plan);
	}
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	insert_chunks(plan, values, 2, s, name, version, 0);
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
	pepnet_spi_connect();
	if (bundle_header)
	{
		if (SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, fingerprint, weights_size, metrics, created_at, parent) "
								  "SELECT $1, (h OPERATOR(pg_catalog.->>) 'version')::pg_catalog.int4, h OPERATOR(pg_catalog.->) 'config', NULL, $3, $4, "
								  "h OPERATOR(pg_catalog.->) 'metrics', "
								  "COALESCE((h OPERATOR(pg_catalog.->>) 'created_at')::pg_catalog.timestamptz, pg_catalog.now()), "
								  "(h OPERATOR(pg_catalog.->>) 'parent')::pg_catalog.int4 "
								  "FROM (SELECT $2::pg_catalog.jsonb AS h) s RETURNING version",
								  4, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
			elog(ERROR, "could not insert model \"%s\" version %d", name, version);
	}
	else if (SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, fingerprint, weights_size, metrics, parent) "
								   "VALUES ($1, NULL, $2::pg_catalog.jsonb, NULL, $3, $4, $5::pg_catalog.jsonb, $6) RETURNING version",
								   6, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not insert a version of model \"%s\"", name);
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
Portal
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
bool
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
		elog(ERROR, "could not read model \"%s\" version %d", name, version);
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

	pepnet_spi_connect();
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
uint64
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

	pepnet_spi_connect();
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
	pepnet_spi_connect();
	if (SPI_execute_with_args("SELECT xmin FROM pepnet.models WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up model \"%s\" version %d", name, version);
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

	source_init(&s, mm, NULL, 0);
	pepnet_spi_connect();
	if (plan == NULL)
	{
		plan = SPI_prepare("INSERT INTO pepnet.optimizer_chunks (name, version, moment, seq, data) VALUES ($1, $2, $3, $4, $5)",
						   5, argtypes);
		if (plan == NULL)
			elog(ERROR, "could not prepare the optimizer chunk insert");
		SPI_keepplan(plan);
	}
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	values[2] = Int16GetDatum((int16) moment);
	insert_chunks(plan, values, 3, &s, name, version, moment);
	SPI_finish();
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
	pepnet_spi_connect();
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
	pepnet_spi_connect();
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
