/*
 * transfer.c
 *		Moving model versions in and out of the registry: pepnet_create
 *		(from a seed), pepnet_import and pepnet_export (safetensors in one
 *		bytea), pepnet_export_chunks and pepnet_import_chunks (rows, for
 *		versions of any size), pepnet_export_file and pepnet_import_file
 *		(server-side files, for members of pg_write_server_files /
 *		pg_read_server_files), and pepnet_verify (the stored fingerprint
 *		recomputed from the stored config and weights).
 *
 * Versions are written through models.c (pepnet_store_model) or chunks.c
 * (pepnet_store_chunked) and read through chunks.c's streams, so that a
 * version's weights exist once in memory, plus one chunk.
 */
#include "pepnet.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(pepnet_create);
PG_FUNCTION_INFO_V1(pepnet_import);
PG_FUNCTION_INFO_V1(pepnet_export);
PG_FUNCTION_INFO_V1(pepnet_export_chunks);
PG_FUNCTION_INFO_V1(pepnet_import_chunks);
PG_FUNCTION_INFO_V1(pepnet_import_file);
PG_FUNCTION_INFO_V1(pepnet_export_file);

/* ---------------------------------------------------------------- */
/* versions in one bytea                                             */
/* ---------------------------------------------------------------- */

/* Parse a jsonb config with pepnet.max_model_size; raises on error */
static void
parse_config(Jsonb *jb, PnConfig *cfg)
{
	char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	PnError		err = {0};

	if (pepnet_config_parse(text, pepnet_max_model_bytes(), cfg, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	pfree(text);
}

/*
 * The first argument of pepnet_create, pepnet_import and the importers of
 * chunks and files, a valid model name; the config (second) and what3
 * (third) must not be NULL either.
 */
static char *
name_arg(FunctionCallInfo fcinfo, const char *what3)
{
	char	   *name;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model name");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("config");
	if (PG_ARGISNULL(2))
		pepnet_null_arg(what3);
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	pepnet_check_name(name);
	return name;
}

/*
 * The arguments pepnet_create and pepnet_import share: a valid name, a
 * valid config and a non-NULL third argument (what3); returns the zeroed
 * model of the config.
 */
static PnModel *
model_from_args(FunctionCallInfo fcinfo, const char *what3, char **name)
{
	PnConfig	cfg;
	PnModel    *m;
	PnError		err = {0};

	*name = name_arg(fcinfo, what3);
	parse_config(PG_GETARG_JSONB_P(1), &cfg);
	if (pn_model_new(&cfg, &m, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	pn_config_free(&cfg);
	return m;
}

/* pepnet_create(name, config, seed): a new version initialised from seed */
Datum
pepnet_create(PG_FUNCTION_ARGS)
{
	char	   *name;
	PnModel    *m;
	int32		version;

	pepnet_require_writable("pepnet_create");
	m = model_from_args(fcinfo, "seed", &name);
	/* a vocabulary comes from data: pepnet_train builds it, pepnet_import takes it */
	{
		int			g;

		for (g = 0; g < m->cfg.nfeat + m->cfg.npers; g++)
		{
			const PnField *f = g < m->cfg.nfeat ? &m->cfg.feat[g] : &m->cfg.pers[g - m->cfg.nfeat];

			if (f->min_count > 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("pepnet_create cannot make field \"%s\" with \"min_count\": its vocabulary is built from data", f->name),
						 errdetail("pepnet_train builds a min_count field's vocabulary from its data query before the first step; "
								   "pepnet_import takes it with the weights (tensor \"vocab.%s.%d\").",
								   g < m->cfg.nfeat ? "feature" : "persona", g < m->cfg.nfeat ? g : g - m->cfg.nfeat),
						 errhint("Train with the config: CALL pepnet_train('%s', data_query, config => ...).", name)));
		}
	}
	pn_model_init(m, (uint64) (int64) PG_GETARG_INT32(2));
	version = pepnet_store_model(name, m, NULL, 0);
	pn_model_free(m);
	PG_RETURN_INT32(version);
}

/* pepnet_import(name, config, weights): a new version from a safetensors blob */
Datum
pepnet_import(PG_FUNCTION_ARGS)
{
	char	   *name;
	PnModel    *m;
	bytea	   *blob;
	PnError		err = {0};
	int32		version;

	pepnet_require_writable("pepnet_import");
	m = model_from_args(fcinfo, "weights", &name);
	blob = PG_GETARG_BYTEA_PP(2);
	if (pn_safetensors_read(m, (const uint8_t *) VARDATA_ANY(blob), VARSIZE_ANY_EXHDR(blob), &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_BINARY_REPRESENTATION);
	version = pepnet_store_model(name, m, NULL, 0);
	pn_model_free(m);
	PG_RETURN_INT32(version);
}

/* pepnet_export(model): the version's weights as stored (0.1.0 blobs completed) */
Datum
pepnet_export(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	bytea	   *result;
	uint64		len;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	len = pepnet_weights_size(ref.name, ref.version);
	if (len > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" version %d has %llu bytes of weights, more than the 1 GB a bytea value holds",
						ref.name, ref.version, (unsigned long long) len),
				 errhint("Export it in chunks with pepnet_export_chunks('%s@%d'), or into a server file with pepnet_export_file.",
						 ref.name, ref.version)));
	/* the weights are read chunk by chunk straight into the result */
	result = (bytea *) pepnet_read_weights(ref.name, ref.version, VARHDRSZ, len, &len);
	SET_VARSIZE(result, VARHDRSZ + len);
	if (pn_safetensors_lacks_count((const uint8 *) VARDATA_ANY(result), VARSIZE_ANY_EXHDR(result)))
	{
		/* stored by 0.1.0: export docs/model.md 0.2's full tensor set (the count is 0) */
		char		name[NAMEDATALEN];
		int32		version;
		PnModel    *m = pepnet_load_model(&ref, name, &version);

		if (m->nabsent > 0)
			result = model_to_bytea(m);
	}
	PG_RETURN_BYTEA_P(result);
}

/* ---------------------------------------------------------------- */
/* versions of any size: rows and files                              */
/* ---------------------------------------------------------------- */

typedef struct RowsOut
{
	Tuplestorestate *ts;
	TupleDesc	desc;
	MemoryContext cxt;
	int32		seq;
} RowsOut;

typedef struct FileOut
{
	FILE	   *f;
	const char *path;
} FileOut;

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

	pepnet_spi_connect();
	if (!weights_where(ref->name, ref->version, caller, &w, &len))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref->name, ref->version)));
	if (w)
		lacks = pn_safetensors_lacks_count((const uint8 *) VARDATA_ANY(w), VARSIZE_ANY_EXHDR(w));
	else
	{
		head = chunked_head(ref->name, ref->version, &hl);
		lacks = pn_safetensors_lacks_count(head, hl);
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

	*name = name_arg(fcinfo, what3);
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
	if (pepnet_config_parse(cfgtext, pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
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
	pepnet_spi_connect();
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
	pg_cryptohash_ctx *ctx;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	pepnet_spi_connect();
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
	ctx = fp_begin(canon);
	if (w)
	{
		hash_slices(ctx, (const uint8 *) VARDATA_ANY(w), VARSIZE_ANY_EXHDR(w));
		seen = len;
	}
	else
		seen = stream_chunks(ref.name, ref.version, len, emit_hash, ctx);
	fp_end(ctx, fp);
	SPI_finish();
	PG_RETURN_BOOL(stored != NULL && seen == len && memcmp(fp, stored, FP_LEN) == 0);
}
