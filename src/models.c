/*
 * models.c
 *		Model versions as rows of pepnet.models: create from a seed, import
 *		and export safetensors, look up references, load weights.
 *
 * Every query is schema-qualified, operators included, so that a hostile
 * search_path cannot redirect it.
 */
#include "pepnet.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(pepnet_create);
PG_FUNCTION_INFO_V1(pepnet_import);
PG_FUNCTION_INFO_V1(pepnet_export);

/* Parse a jsonb config with pepnet.max_model_size; raises on error */
static void
parse_config(Jsonb *jb, PnConfig *cfg)
{
	char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	PnError		err = {0};

	if (pn_config_parse(text, strlen(text), pepnet_max_model_bytes(), cfg, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	pfree(text);
}

/* Serialize a model as a safetensors bytea */
static bytea *
model_to_bytea(const PnModel *m)
{
	size_t		n = pn_safetensors_size(m);
	bytea	   *b;

	if (n > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model weights of %zu bytes exceed the 1 GB limit of a bytea value", n)));
	b = (bytea *) palloc(n + VARHDRSZ);
	SET_VARSIZE(b, n + VARHDRSZ);
	pn_safetensors_write(m, (uint8_t *) VARDATA(b));
	return b;
}

/*
 * Insert a new version of name and return its number (max + 1), serialized
 * per name by an advisory lock so concurrent writers do not collide.
 */
int32
pepnet_insert_version(const char *name, const char *config_json, bytea *weights,
					  const char *metrics_json, int32 parent)
{
	Oid			argtypes[5] = {TEXTOID, TEXTOID, BYTEAOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', parent > 0 ? ' ' : 'n'};
	int32		version;
	bool		isnull;

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(config_json);
	values[2] = PointerGetDatum(weights);
	values[3] = CStringGetTextDatum(metrics_json ? metrics_json : "{}");
	values[4] = Int32GetDatum(parent);

	SPI_connect();
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock(1885695342, pg_catalog.hashtext($1))",
							  1, argtypes, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "pepnet: could not lock model \"%s\"", name);
	if (SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, metrics, parent) "
							  "SELECT $1, COALESCE(pg_catalog.max(m.version), 0) OPERATOR(pg_catalog.+) 1, "
							  "$2::pg_catalog.jsonb, $3, $4::pg_catalog.jsonb, $5 "
							  "FROM pepnet.models m WHERE m.name OPERATOR(pg_catalog.=) $1 RETURNING version",
							  5, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
		SPI_processed != 1)
		elog(ERROR, "pepnet: could not insert a version of model \"%s\"", name);
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return version;
}

/* Store a model built from cfg as a new version of name */
static int32
store_new(const char *name, PnModel *m)
{
	char	   *cj = pn_config_to_json(&m->cfg);
	bytea	   *blob;

	if (cj == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	blob = model_to_bytea(m);
	return pepnet_insert_version(name, cj, blob, NULL, 0);
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

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model name");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("config");
	if (PG_ARGISNULL(2))
		pepnet_null_arg(what3);
	*name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	pepnet_check_name(*name);
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
	PnModel    *m = model_from_args(fcinfo, "seed", &name);
	int32		version;

	pn_model_init(m, (uint64) (int64) PG_GETARG_INT32(2));
	version = store_new(name, m);
	pn_model_free(m);
	PG_RETURN_INT32(version);
}

/* pepnet_import(name, config, weights): a new version from a safetensors blob */
Datum
pepnet_import(PG_FUNCTION_ARGS)
{
	char	   *name;
	PnModel    *m = model_from_args(fcinfo, "weights", &name);
	bytea	   *blob = PG_GETARG_BYTEA_PP(2);
	PnError		err = {0};
	int32		version;

	if (pn_safetensors_read(m, (const uint8_t *) VARDATA_ANY(blob), VARSIZE_ANY_EXHDR(blob), &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_BINARY_REPRESENTATION);
	version = store_new(name, m);
	pn_model_free(m);
	PG_RETURN_INT32(version);
}

/* Whether a safetensors blob has PN running statistics but no pn.num_batches_tracked (0.1.0) */
static bool
blob_lacks_count(bytea *b)
{
	const char *p = VARDATA_ANY(b);
	size_t		len = VARSIZE_ANY_EXHDR(b);
	uint64		hlen = 0;
	int			i;

	if (len < 8)
		return false;
	for (i = 7; i >= 0; i--)
		hlen = (hlen << 8) | (unsigned char) p[i];
	if (hlen > len - 8)
		return false;
	return memmem(p + 8, hlen, "\"pn.running_mean\"", 17) != NULL &&
		memmem(p + 8, hlen, "\"pn.num_batches_tracked\"", 24) == NULL;
}

/* pepnet_export(model): the version's weights as stored (0.1.0 blobs completed) */
Datum
pepnet_export(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	bool		isnull;
	bytea	   *result;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	values[0] = Int64GetDatum(ref.id);
	SPI_connect();
	if (SPI_execute_with_args("SELECT weights FROM pepnet.models WHERE id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref.name, ref.version)));
	{
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		MemoryContext spi = MemoryContextSwitchTo(caller);

		result = DatumGetByteaPCopy(d);
		MemoryContextSwitchTo(spi);
	}
	SPI_finish();
	if (blob_lacks_count(result))
	{
		/* stored by 0.1.0: export MODEL.md 0.2's full tensor set (the count is 0) */
		char		name[NAMEDATALEN];
		int32		version;
		PnModel    *m = pepnet_load_model(ref.id, name, &version);

		if (m->nabsent > 0)
			result = model_to_bytea(m);
	}
	PG_RETURN_BYTEA_P(result);
}

/* A plan kept for the life of the backend (replanned by the plan cache as needed) */
static SPIPlanPtr
kept_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "pepnet: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*slot = p;
	}
	return *slot;
}

/*
 * Look up name (version 0: the deployed one, else the latest) in the
 * models table with the current snapshot.  Raises an error that names
 * what is missing.
 */
void
pepnet_lookup_ref(const char *name, int32 version, PepnetRef *out)
{
	static SPIPlanPtr by_version = NULL,
				by_name = NULL,
				latest = NULL;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		isnull;
	int			rc;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	SPI_connect();
	if (version > 0)
		rc = SPI_execute_plan(kept_plan(&by_version,
										"SELECT id, version, xmin FROM pepnet.models "
										"WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
										2, argtypes),
							  values, NULL, true, 1);
	else
		rc = SPI_execute_plan(kept_plan(&by_name,
										"SELECT m.id, m.version, m.xmin FROM pepnet.models m "
										"WHERE m.name OPERATOR(pg_catalog.=) $1 AND m.version OPERATOR(pg_catalog.=) COALESCE("
										"(SELECT d.version FROM pepnet.deployments d WHERE d.name OPERATOR(pg_catalog.=) $1), "
										"(SELECT pg_catalog.max(x.version) FROM pepnet.models x WHERE x.name OPERATOR(pg_catalog.=) $1))",
										1, argtypes),
							  values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "pepnet: could not look up model \"%s\"", name);
	if (SPI_processed == 0)
	{
		if (version > 0 &&
			SPI_execute_plan(kept_plan(&latest,
									   "SELECT pg_catalog.max(version) FROM pepnet.models WHERE name OPERATOR(pg_catalog.=) $1",
									   1, argtypes),
							 values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			Datum		lv = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("model \"%s\" has no version %d", name, version),
						 errdetail("Its latest version is %d.", DatumGetInt32(lv))));
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name),
				 errhint("Create it with pepnet_create, pepnet_import or pepnet_train; see pepnet.models.")));
	}
	out->id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	out->version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	out->xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	strlcpy(out->name, name, NAMEDATALEN);
	SPI_finish();
}

/*
 * Load the version with this id: config and weights, checked again as
 * they are read (stored weights that fail are corrupt: XX001).  The model
 * is allocated in the caller's memory context.
 */
PnModel *
pepnet_load_model(int64 id, char *name, int32 *version)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	bool		isnull;
	char	   *cfgtext;
	bytea	   *blob;
	PnConfig	cfg;
	PnModel    *m;
	PnError		err = {0};

	values[0] = Int64GetDatum(id);
	SPI_connect();
	if (SPI_execute_with_args("SELECT name, version, config::pg_catalog.text, weights FROM pepnet.models "
							  "WHERE id OPERATOR(pg_catalog.=) $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pepnet: could not read model %lld", (long long) id);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model version with id %lld no longer exists", (long long) id)));
	strlcpy(name, TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)), NAMEDATALEN);
	*version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	cfgtext = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

	/*
	 * The weights are detoasted into the caller's context and the model's
	 * tensors point into them: one copy of the weights, not two.
	 */
	MemoryContextSwitchTo(caller);
	blob = DatumGetByteaPCopy(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	if (pn_config_parse(cfgtext, strlen(cfgtext), pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
	{
		pn_setdetail(&err, "The stored config of model \"%s\" version %d is not valid.", name, *version);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	if (pn_model_layout(&cfg, &m, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	pn_config_free(&cfg);
	if (pn_safetensors_read(m, (const uint8_t *) VARDATA_ANY(blob), VARSIZE_ANY_EXHDR(blob), &err) != PN_OK)
	{
		pn_setdetail(&err, "The stored weights of model \"%s\" version %d are corrupt.", name, *version);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	SPI_finish();
	return m;
}
