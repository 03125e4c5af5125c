/*
 * score.c
 *		pepnet_score (set-returning: the candidates of one request through
 *		the batched oneDNN engine, engine.c, in fixed tiles so that ties are
 *		bit-identical; the persona part kept per cached version while it
 *		repeats, cache.c), pepnet_predict (scalar, row by row, OpenBLAS GEMVs: the
 *		model is resolved once per statement and the persona part of the
 *		PPNet gates is reused across consecutive rows with the same persona),
 *		and the setting pepnet.precision.
 */
#include "pepnet.h"

#include <math.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/timestamp.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/guc.h"
#include "utils/memutils.h"

char	   *pepnet_default_model = NULL;
int			pepnet_precision = PN_FP32;

static const struct config_enum_entry precision_options[] = {
	{"fp32", PN_FP32, false},
	{"bf16", PN_BF16, false},
	{"int8", PN_INT8, false},
	{NULL, 0, false}
};

/* pepnet.model and pepnet.precision, defined from _PG_init */
void
pepnet_score_init(void)
{
	DefineCustomStringVariable("pepnet.model",
							   "Model reference used by the pepnet functions that take no model argument.",
							   "A model name ('ctr': its deployed version) or name@version ('ctr@7').",
							   &pepnet_default_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("pepnet.precision",
							 "Precision of batched scoring (pepnet_score, pepnet_score_query, pepnet_evaluate): fp32, bf16 or int8.",
							 "bf16 keeps a bf16 copy of the weights per cached version and multiplies in bf16 "
							 "with fp32 accumulation; it needs AVX512-BF16 or AMX (an ERROR otherwise). "
							 "int8 quantizes weights per output channel and inputs per candidate, exact int32 sums; "
							 "oneDNN's int8 matmuls with AVX512-VNNI or AMX, else pepnet's AVX2 kernel "
							 "(the same scores, about fp32's speed); an ERROR without AVX2.",
							 &pepnet_precision, PN_FP32, precision_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(pepnet_score);
PG_FUNCTION_INFO_V1(pepnet_score_default);
PG_FUNCTION_INFO_V1(pepnet_predict);

/* Validated inputs of one request */
typedef struct Request
{
	int			domain;
	int64	   *persona;		/* [P] */
	int			n;				/* candidates */
	int64	   *features;		/* [n, F] */
	float	   *dense;			/* [n, Nd] or NULL */
} Request;

/* The model text of the short overloads, from pepnet.model */
static const char *
default_model(void)
{
	if (pepnet_default_model == NULL || pepnet_default_model[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("no model given and pepnet.model is not set"),
				 errhint("SET pepnet.model = 'ctr' (or 'ctr@7'), or pass the model as the first argument.")));
	return pepnet_default_model;
}

/* Shape of an array argument, refusing NULL elements */
static void
array_shape(ArrayType *a, const char *what, int *ndim, int *dims)
{
	*ndim = ARR_NDIM(a);
	if (*ndim > 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s has %d dimensions, expected 1 (one candidate) or 2 (candidates x fields)", what, *ndim)));
	dims[0] = *ndim > 0 ? ARR_DIMS(a)[0] : 0;
	dims[1] = *ndim > 1 ? ARR_DIMS(a)[1] : 0;
	if (array_contains_nulls(a))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain NULL elements", what)));
}

/* The form of the version: arrays ("inputs": "arrays"), not rows by name */
static void
check_inputs(const PepnetEntry *e)
{
	if (e->model->cfg.inputs == PN_INPUTS_COLUMNS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model \"%s\" version %d takes rows by name, not arrays", e->name, e->version),
				 errdetail("Its config says \"inputs\": \"columns\": each field is read from the column of its name."),
				 errhint("Score it with pepnet_predict(model, row) or pepnet_score_rows(model, ARRAY(SELECT c FROM (...) c)).")));
}

/* The domain of a request: 0 to D - 1 */
static void
check_domain(const PepnetEntry *e, Datum domain, Request *r)
{
	const PnConfig *c = &e->model->cfg;
	int32		d = DatumGetInt32(domain);

	if (d < 0 || d >= c->domains)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("domain %d is out of range for model \"%s\" version %d", d, e->name, e->version),
				 errdetail("The model has %d domains: 0 to %d.", c->domains, c->domains - 1)));
	r->domain = d;
}

/* The persona of a request: one id per persona field, NULL only without persona fields */
static void
check_persona(const PepnetEntry *e, ArrayType *persona, Request *r)
{
	const PnConfig *c = &e->model->cfg;
	int			nd,
				dims[2];

	if (persona == NULL)
	{
		if (c->npers > 0)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("persona must not be NULL: model \"%s\" version %d has %d persona fields",
							e->name, e->version, c->npers),
					 errhint("Pass one id per persona field, in config order, as a 1-D bigint[].")));
		r->persona = NULL;
		return;
	}
	array_shape(persona, "persona", &nd, dims);
	if (nd == 2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("persona must be a 1-D array, got %d x %d", dims[0], dims[1]),
				 errhint("Pass one id per persona field, in config order, as a 1-D bigint[].")));
	if (!((nd == 1 && dims[0] == c->npers) || (nd == 0 && c->npers == 0)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("persona has %d elements, model \"%s\" version %d has %d persona fields",
						dims[0], e->name, e->version, c->npers),
				 errhint("Pass one id per persona field, in config order, as a 1-D bigint[].")));
	r->persona = nd ? (int64 *) ARR_DATA_PTR(persona) : NULL;
}

/*
 * The features of a request: its candidates (r->n; -1 when the model has
 * no feature fields: the dense values say).  Returns the array's dimensions.
 */
static int
check_features(const PepnetEntry *e, ArrayType *features, Request *r)
{
	const PnConfig *c = &e->model->cfg;
	int			fnd,
				fdims[2];

	array_shape(features, "features", &fnd, fdims);
	if (c->nfeat > 0)
	{
		if (fnd == 0)
			r->n = 0;
		else if (fnd == 1 && fdims[0] == c->nfeat)
			r->n = 1;
		else if (fnd == 2 && fdims[1] == c->nfeat)
			r->n = fdims[0];
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("features has %d %s, model \"%s\" version %d has %d feature fields",
							fnd == 1 ? fdims[0] : fdims[1], fnd == 1 ? "elements" : "columns",
							e->name, e->version, c->nfeat),
					 errhint("Pass one candidate as a 1-D bigint[] of %d ids, or N candidates as an N x %d bigint[][].",
							 c->nfeat, c->nfeat)));
		r->features = r->n ? (int64 *) ARR_DATA_PTR(features) : NULL;
	}
	else
	{
		if (fnd != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("features must be empty: model \"%s\" version %d has no feature fields", e->name, e->version)));
		r->features = NULL;
		r->n = -1;				/* from dense */
	}
	return fnd;
}

/* The dense values of a request: shaped like features (fnd dimensions), finite */
static void
check_dense(const PepnetEntry *e, ArrayType *dense, int fnd, Request *r)
{
	const PnConfig *c = &e->model->cfg;
	int			nd,
				dims[2];
	size_t		i,
				total;

	r->dense = NULL;
	if (c->dense == 0)
	{
		if (dense != NULL && ARR_NDIM(dense) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dense given, but model \"%s\" version %d has no dense features", e->name, e->version)));
		if (r->n < 0)
			r->n = 0;
		return;
	}
	if (dense == NULL)
	{
		if (r->n == 0)
			return;
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("dense must not be NULL: model \"%s\" version %d has %d dense features", e->name, e->version, c->dense)));
	}
	array_shape(dense, "dense", &nd, dims);
	if (r->n < 0)
		r->n = nd == 0 ? 0 : nd == 1 ? 1 : dims[0];
	if (r->n == 0 && nd == 0)
		return;
	if (r->n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dense has values but features has no candidates")));
	if (!((nd == 1 && fnd <= 1 && r->n == 1 && dims[0] == c->dense) ||
		  (nd == 2 && fnd != 1 && dims[0] == r->n && dims[1] == c->dense)))
	{
		char	   *got = nd == 2 ? psprintf("%d x %d", dims[0], dims[1]) : psprintf("[%d]", dims[0]);
		char	   *want = fnd <= 1 && r->n == 1 ? psprintf("[%d]", c->dense) : psprintf("%d x %d", r->n, c->dense);

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("dense has shape %s, expected %s for model \"%s\" version %d", got, want, e->name, e->version),
				 errhint("Pass dense like features: 1-D for one candidate, N x %d for N candidates.", c->dense)));
	}
	r->dense = (float *) ARR_DATA_PTR(dense);
	total = (size_t) r->n * c->dense;
	for (i = 0; i < total; i++)
		if (!isfinite(r->dense[i]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("dense value %s of candidate %zu, feature %zu is not allowed",
							isnan(r->dense[i]) ? "NaN" : "infinity", i / c->dense + 1, i % c->dense + 1),
					 errhint("Replace missing or infinite dense values before scoring.")));
}

/*
 * Check the arguments of a request against the model's config, one rule
 * at a time: the input form, domain, persona, features, dense.  Errors
 * name the model version, what was given and what it needs.
 */
static void
check_request(const PepnetEntry *e, Datum domain, ArrayType *persona, ArrayType *features,
			  ArrayType *dense, Request *r)
{
	int			fnd;

	check_inputs(e);
	check_domain(e, domain, r);
	check_persona(e, persona, r);
	fnd = check_features(e, features, r);
	check_dense(e, dense, fnd, r);
}

/* Persona embeddings and gate biases of one request, raising on error */
static PnPersona *
build_persona(PepnetEntry *e, const int64 *persona)
{
	PnPersona  *pp;
	PnError		err = {0};

	if (pn_persona_build(e->model, persona, &pp, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	return pp;
}

/*
 * Score every candidate of a request with the batched engine (tiles of
 * PN_TILE rows, oneDNN); out [n, T].  Identical candidates get identical
 * scores wherever they stand.
 */
static void
score_request(PepnetEntry *e, PnDomainCache *dc, const PnPersona *pp, const Request *r, double *out)
{
	PnEngine   *eng = pepnet_cache_engine(e, pepnet_precision, dc);
	PnError		err = {0};

	if (pn_engine_score(eng, dc, pp, r->n, r->features, r->dense, out, pepnet_interrupt_check, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
}

/* One candidate with GEMVs (pepnet_predict); out [T] */
static void
score_one(PepnetEntry *e, PnDomainCache *dc, PnPersona *pp, const Request *r, double *out)
{
	PnError		err = {0};

	if (pn_score(e->model, dc, pp, e->work, 1, r->features, r->dense, out, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
}

/*
 * A float8[] of T elements whose data the caller fills: one allocation per
 * request, reused for every row (tuplestore_putvalues copies it).
 */
ArrayType *
scores_array(int T)
{
	Size		bytes = ARR_OVERHEAD_NONULLS(1) + sizeof(float8) * T;
	ArrayType  *a = palloc0(bytes);

	SET_VARSIZE(a, bytes);
	a->ndim = 1;
	a->dataoffset = 0;
	a->elemtype = FLOAT8OID;
	ARR_DIMS(a)[0] = T;
	ARR_LBOUND(a)[0] = 1;
	return a;
}

/* Shared body of both pepnet_score overloads; args start at argoff */
static Datum
score_common(FunctionCallInfo fcinfo, const char *ref, int argoff)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PepnetRef	pr;
	PepnetEntry *e;
	PnDomainCache *dc;
	const PnPersona *pp;
	Request		r;
	double	   *out;
	int			T,
				i;
	MemoryContext tmp,
				old;
	ArrayType  *arr;
	float8	   *arrdata;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (PG_ARGISNULL(argoff))
		pepnet_null_arg("domain");
	if (PG_ARGISNULL(argoff + 2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("features must not be NULL"),
				 errhint("Pass '{}' for a request without candidates (array_agg over no rows gives NULL: wrap it in COALESCE).")));

	pepnet_resolve(ref, &pr);
	e = pepnet_cache_get(&pr);
	check_request(e, PG_GETARG_DATUM(argoff),
				  PG_ARGISNULL(argoff + 1) ? NULL : PG_GETARG_ARRAYTYPE_P(argoff + 1),
				  PG_GETARG_ARRAYTYPE_P(argoff + 2),
				  PG_ARGISNULL(argoff + 3) ? NULL : PG_GETARG_ARRAYTYPE_P(argoff + 3), &r);

	/* the declared result type: no catalog lookup per call */
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (r.n == 0)
		return (Datum) 0;

	T = e->model->cfg.ntasks;
	tmp = AllocSetContextCreate(CurrentMemoryContext, "pepnet score", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	dc = pepnet_cache_domain(e, r.domain);
	pp = pepnet_cache_persona(e, r.persona);
	out = palloc_extended(sizeof(double) * (size_t) r.n * T, MCXT_ALLOC_HUGE);
	score_request(e, dc, pp, &r, out);
	arr = scores_array(T);
	arrdata = (float8 *) ARR_DATA_PTR(arr);
	MemoryContextSwitchTo(old);

	values[2] = PointerGetDatum(arr);
	for (i = 0; i < r.n; i++)
	{
		memcpy(arrdata, out + (size_t) i * T, sizeof(float8) * T);
		values[0] = Int32GetDatum(i + 1);
		values[1] = Float8GetDatum(out[(size_t) i * T]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		if ((i & 4095) == 4095)
			CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(tmp);
	return (Datum) 0;
}

/* pepnet_score(model, domain, persona, features, dense) */
Datum
pepnet_score(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	return score_common(fcinfo, text_to_cstring(PG_GETARG_TEXT_PP(0)), 1);
}

/* pepnet_score(domain, persona, features, dense): model from pepnet.model */
Datum
pepnet_score_default(PG_FUNCTION_ARGS)
{
	return score_common(fcinfo, default_model(), 0);
}

/*
 * Resolve a call site's reference once per statement (again only if its
 * text changes): true when it now names another version than before.
 */
bool
pepnet_predict_resolve(PredictRef *p, MemoryContext mcxt, const char *ref)
{
	PepnetRef	pr;
	bool		changed;

	if (p->ref != NULL && strcmp(p->ref, ref) == 0 && p->lxid == MyProc->lxid &&
		p->stmt_start == GetCurrentStatementStartTimestamp())
		return false;
	pepnet_resolve(ref, &pr);
	if (p->ref == NULL || strcmp(p->ref, ref) != 0)
	{
		if (p->ref)
			pfree(p->ref);
		p->ref = MemoryContextStrdup(mcxt, ref);
	}
	changed = pr.version != p->pr.version || pr.xmin != p->pr.xmin || strcmp(pr.name, p->pr.name) != 0;
	p->pr = pr;
	p->lxid = MyProc->lxid;
	p->stmt_start = GetCurrentStatementStartTimestamp();
	return changed;
}

/* What pepnet_predict keeps across the rows of one statement */
typedef struct PredictState
{
	PredictRef	ref;			/* the call site's reference */
	MemoryContext cxt;			/* persona of the previous row */
	PnPersona  *pp;
	int			npers;
	int64	   *persona;
	bool		have_persona;
} PredictState;

/* pepnet_predict(model, domain, persona, features, dense): first task's probability */
Datum
pepnet_predict(PG_FUNCTION_ARGS)
{
	PredictState *st = (PredictState *) fcinfo->flinfo->fn_extra;
	char	   *ref;
	PepnetEntry *e;
	PnDomainCache *dc;
	Request		r;
	double		out[PN_MAX_TASKS];

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("domain");
	if (PG_ARGISNULL(3))
		pepnet_null_arg("features");
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (st == NULL)
	{
		st = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(PredictState));
		st->cxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "pepnet predict", ALLOCSET_SMALL_SIZES);
		fcinfo->flinfo->fn_extra = st;
	}
	if (pepnet_predict_resolve(&st->ref, fcinfo->flinfo->fn_mcxt, ref))
	{
		/* another version: its persona parts differ */
		MemoryContextReset(st->cxt);
		st->have_persona = false;
	}
	e = pepnet_cache_get(&st->ref.pr);
	check_request(e, PG_GETARG_DATUM(1), PG_ARGISNULL(2) ? NULL : PG_GETARG_ARRAYTYPE_P(2), PG_GETARG_ARRAYTYPE_P(3),
				  PG_ARGISNULL(4) ? NULL : PG_GETARG_ARRAYTYPE_P(4), &r);
	if (r.n != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pepnet_predict scores one candidate, got %d", r.n),
				 errhint("Pass features as a 1-D bigint[]; use pepnet_score for many candidates.")));

	/* the persona part of the gates is reused while the persona repeats */
	if (!st->have_persona || (st->npers > 0 && memcmp(st->persona, r.persona, sizeof(int64) * st->npers) != 0))
	{
		MemoryContext old;

		MemoryContextReset(st->cxt);
		st->have_persona = false;
		old = MemoryContextSwitchTo(st->cxt);
		st->npers = e->model->cfg.npers;
		st->persona = palloc(sizeof(int64) * (st->npers + 1));
		if (st->npers)
			memcpy(st->persona, r.persona, sizeof(int64) * st->npers);
		st->pp = build_persona(e, r.persona);
		st->have_persona = true;
		MemoryContextSwitchTo(old);
	}
	dc = pepnet_cache_domain(e, r.domain);
	score_one(e, dc, st->pp, &r, out);
	PG_RETURN_FLOAT8(out[0]);
}
