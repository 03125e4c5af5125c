/*
 * score_rows.c
 *		Scoring by name (the named form, "inputs": "columns"):
 *		pepnet_predict(model, candidate record), one row of any query whose
 *		columns carry the version's fields, by GEMVs as pepnet_predict's
 *		arrays form; and pepnet_score_rows(model, candidates anyarray), an
 *		array of rows scored in one call, grouped by (domain, persona) into
 *		requests of the batched engine as pepnet_score's, each row returned
 *		as it came in with its scores.
 *
 * The binding of a row type (features.c: column numbers and types) is made
 * on its first row and kept in fn_extra, so later rows cost no lookups; a
 * row of another type, or another version of the model, binds again.
 */
#include "features.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

PG_FUNCTION_INFO_V1(pepnet_predict_row);
PG_FUNCTION_INFO_V1(pepnet_score_rows);

/* a row type bound to a model version's fields, kept across calls */
typedef struct RowBinding
{
	Oid			tuptype;		/* InvalidOid: none yet */
	int32		tuptypmod;
	TupleDesc	td;				/* a copy */
	FeatureBinding *fb;
	PepnetRef	bound;			/* the version the binding is for */
	Datum	   *values;
	bool	   *nulls;
} RowBinding;

/* The candidate-row binding of th's type for version e, made when it changes */
static RowBinding *
row_binding(RowBinding *rb, MemoryContext mcxt, PepnetEntry *e, HeapTupleHeader th)
{
	Oid			type = HeapTupleHeaderGetTypeId(th);
	int32		typmod = HeapTupleHeaderGetTypMod(th);

	if (rb->tuptype != type || rb->tuptypmod != typmod || rb->bound.version != e->version ||
		rb->bound.xmin != e->xmin || strcmp(rb->bound.name, e->name) != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(mcxt);
		TupleDesc	td = lookup_rowtype_tupdesc(type, typmod);

		/* the binding of another row type or version, or one that failed half made */
		rb->tuptype = InvalidOid;
		if (rb->td)
			FreeTupleDesc(rb->td);
		if (rb->fb)
		{
			pfree(rb->fb->col);
			pfree(rb->fb);
		}
		if (rb->values)
		{
			pfree(rb->values);
			pfree(rb->nulls);
		}
		rb->td = NULL;
		rb->fb = NULL;
		rb->values = NULL;
		rb->nulls = NULL;
		rb->td = CreateTupleDescCopy(td);
		ReleaseTupleDesc(td);
		rb->fb = features_bind(rb->td, &e->model->cfg, "candidate row", NULL, false);
		rb->values = palloc(sizeof(Datum) * (rb->td->natts + 1));
		rb->nulls = palloc(sizeof(bool) * (rb->td->natts + 1));
		strlcpy(rb->bound.name, e->name, PEPNET_NAMELEN);
		rb->bound.version = e->version;
		rb->bound.xmin = e->xmin;
		rb->tuptype = type;
		rb->tuptypmod = typmod;
		MemoryContextSwitchTo(old);
	}
	rb->fb->cfg = &e->model->cfg;	/* the entry may have been rebuilt since */
	return rb;
}

/* Decode one candidate row into the core's inputs */
static void
decode_row(RowBinding *rb, HeapTupleHeader th, int32 *domain, int64 *persona, int64 *features, float *dense,
		   RowBag *bags)
{
	HeapTupleData tuple;

	tuple.t_len = HeapTupleHeaderGetDatumLength(th);
	ItemPointerSetInvalid(&tuple.t_self);
	tuple.t_tableOid = InvalidOid;
	tuple.t_data = th;
	heap_deform_tuple(&tuple, rb->td, rb->values, rb->nulls);
	features_decode(rb->fb, rb->values, rb->nulls, domain, persona, features, dense, NULL, bags);
}

/* Refuse a version of the arrays form: it is scored with arrays */
static void
require_named(const PepnetEntry *e)
{
	if (e->model->cfg.inputs != PN_INPUTS_COLUMNS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model \"%s\" version %d takes arrays, not rows by name", e->name, e->version),
				 errdetail("Its config says \"inputs\": \"arrays\" (the positional form)."),
				 errhint("Score it with pepnet_score(model, domain, persona, features, dense) or pepnet_predict(model, domain, persona, features, dense).")));
}

/* What pepnet_predict(model, candidate) keeps across the rows of one statement */
typedef struct PredictRowState
{
	PredictRef	ref;			/* the call site's reference */
	RowBinding	rb;
	MemoryContext cxt;			/* persona of the previous row */
	PnPersona  *pp;
	int64	   *persona;		/* [P] rows of the previous row's persona */
	bool		have_persona;
	int64	   *ppersona;		/* this row's: [P], features [F], dense [Nd] */
	int64	   *features;
	float	   *dense;
	/* multi-valued fields (NULL when none): this row's and the previous persona's ids, the core's form */
	RowBag	   *bags;
	RowBag	   *pbags;
	BagBlock	bb;
} PredictRowState;

/*
 * pepnet_predict(model text, candidate record) RETURNS float8: the first
 * task's probability of one row whose columns carry the version's fields.
 */
Datum
pepnet_predict_row(PG_FUNCTION_ARGS)
{
	PredictRowState *st = (PredictRowState *) fcinfo->flinfo->fn_extra;
	MemoryContext mcxt = fcinfo->flinfo->fn_mcxt;
	char	   *ref;
	PepnetEntry *e;
	const PnConfig *c;
	PnDomainCache *dc;
	int32		domain;
	double		out[PN_MAX_TASKS];
	PnError		err = {0};

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("candidate row");
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (st == NULL)
	{
		st = MemoryContextAllocZero(mcxt, sizeof(PredictRowState));
		st->cxt = AllocSetContextCreate(mcxt, "pepnet predict row", ALLOCSET_SMALL_SIZES);
		fcinfo->flinfo->fn_extra = st;
	}
	if (pepnet_predict_resolve(&st->ref, mcxt, ref))
	{
		/* another version: its persona parts and buffers differ */
		MemoryContextReset(st->cxt);
		st->have_persona = false;
		st->ppersona = NULL;
		st->bags = NULL;
		st->pbags = NULL;
		memset(&st->bb, 0, sizeof(st->bb));
	}
	e = pepnet_cache_get(&st->ref.pr);
	require_named(e);
	c = &e->model->cfg;
	if (st->ppersona == NULL)
	{
		st->ppersona = MemoryContextAlloc(st->cxt, sizeof(int64) * (c->npers + 1));
		st->persona = MemoryContextAlloc(st->cxt, sizeof(int64) * (c->npers + 1));
		st->features = MemoryContextAlloc(st->cxt, sizeof(int64) * (c->nfeat + 1));
		st->dense = MemoryContextAlloc(st->cxt, sizeof(float) * (c->dense + 1));
		if (c->bags)
		{
			MemoryContext old = MemoryContextSwitchTo(st->cxt);

			st->bags = features_bags_new(c, 1);
			st->pbags = features_bags_new(c, 1);
			MemoryContextSwitchTo(old);
		}
	}
	{
		HeapTupleHeader th = PG_GETARG_HEAPTUPLEHEADER(1);

		decode_row(row_binding(&st->rb, mcxt, e, th), th, &domain, st->ppersona, st->features, st->dense, st->bags);
	}
	if (st->bags)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		features_bags_block(c, &st->bb, st->bags, NULL, 1);
		MemoryContextSwitchTo(old);
	}
	/* the persona part of the gates is reused while the persona repeats */
	if (!st->have_persona || (c->npers > 0 && memcmp(st->persona, st->ppersona, sizeof(int64) * c->npers) != 0) ||
		features_bags_cmp_persona(c, st->bags, st->pbags) != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		if (st->have_persona)
			pn_persona_free(st->pp);
		st->have_persona = false;
		if (pn_persona_build_bags(e->model, st->ppersona, st->bags ? st->bb.pbag : NULL, &st->pp, &err) != PN_OK)
			pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
		memcpy(st->persona, st->ppersona, sizeof(int64) * c->npers);
		if (st->bags)
			features_bags_copy(c, st->pbags, st->bags);
		st->have_persona = true;
		MemoryContextSwitchTo(old);
	}
	dc = pepnet_cache_domain(e, domain);
	if (pn_score_bags(e->model, dc, st->pp, e->work, 1, st->features, st->bags ? st->bb.fbag : NULL,
					  c->dense ? st->dense : NULL, out, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	PG_RETURN_FLOAT8(out[0]);
}

/* the candidate being decoded (1-based), for the error context */
static void
candidate_context(void *arg)
{
	int			i = *(int *) arg;

	if (i > 0)
		errcontext("candidate %d of the array", i);
}

/* rows of one pepnet_score_rows call, for the (domain, persona) sort */
static const int32 *sort_domain;
static const int64 *sort_persona;
static const RowBag *sort_bags;
static const PnConfig *sort_cfg;
static int	sort_npers;

/* the order of rows x and y by their multi-valued persona fields' bags (bags NULL: none) */
static int
bags_cmp(const PnConfig *c, const RowBag *bags, int x, int y)
{
	int			nf = c->nfeat + c->npers;

	if (bags == NULL)
		return 0;
	return features_bags_cmp_persona(c, bags + (size_t) x * nf, bags + (size_t) y * nf);
}

static int
group_cmp(const void *pa, const void *pb)
{
	int			a = *(const int *) pa,
				b = *(const int *) pb,
				i;

	if (sort_domain[a] != sort_domain[b])
		return sort_domain[a] < sort_domain[b] ? -1 : 1;
	for (i = 0; i < sort_npers; i++)
	{
		int64		x = sort_persona[(size_t) a * sort_npers + i],
					y = sort_persona[(size_t) b * sort_npers + i];

		if (x != y)
			return x < y ? -1 : 1;
	}
	i = bags_cmp(sort_cfg, sort_bags, a, b);
	if (i != 0)
		return i;
	return a < b ? -1 : a > b;
}

static bool
same_group(const PnConfig *c, const int32 *domain, const int64 *persona, const RowBag *bags, int P, int x, int y)
{
	return domain[x] == domain[y] &&
		(P == 0 || memcmp(persona + (size_t) x * P, persona + (size_t) y * P, sizeof(int64) * P) == 0) &&
		bags_cmp(c, bags, x, y) == 0;
}

/*
 * Score g rows of one (domain, persona) group with the batched engine; out
 * [g, T].  A row the engine blames is named in the error context: *cand is
 * set to its place in the array (order: the group's rows there, NULL for
 * 0..g-1).
 */
static void
score_group(PepnetEntry *e, int32 domain, const int64 *persona, int g, const int64 *features,
			const BagBlock *bb, const float *dense, double *out, const int *order, int *cand)
{
	PnDomainCache *dc = pepnet_cache_domain(e, domain);
	PnEngine   *eng = pepnet_cache_engine(e, pepnet_precision, dc);
	PnPersona  *pp = NULL;
	PnError		err = {0};

	if (pn_persona_build_bags(e->model, persona, bb ? bb->pbag : NULL, &pp, &err) != PN_OK ||
		pn_engine_score_bags(eng, dc, pp, g, features, bb ? bb->fbag : NULL, dense, out, pepnet_interrupt_check,
							 &err) != PN_OK)
	{
		if (err.row >= 0 && err.row < g)
			*cand = (order ? order[err.row] : (int) err.row) + 1;
		err.row = -1;
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	pn_persona_free(pp);
}

/* what pepnet_score_rows keeps across calls: the row type's binding */
typedef struct ScoreRowsState
{
	RowBinding	rb;
} ScoreRowsState;

/*
 * pepnet_score_rows(model text, candidates anyarray) RETURNS TABLE
 * (candidate anyelement, score float8, scores float8[]): every row of the
 * array scored, in array order, each returned as it came in.
 */
Datum
pepnet_score_rows(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ScoreRowsState *st = (ScoreRowsState *) fcinfo->flinfo->fn_extra;
	ArrayType  *arr;
	Oid			elemtype;
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;
	Datum	   *elems;
	bool	   *enulls;
	int			n,
				i,
				F,
				P,
				Nd,
				T,
				cand = 0;
	PepnetRef	pr;
	PepnetEntry *e;
	const PnConfig *c;
	int32	   *domain;
	int64	   *persona,
			   *features;
	float	   *dense;
	double	   *out;
	RowBag	   *bags;
	BagBlock	bb = {0};
	MemoryContext tmp,
				old;
	ErrorContextCallback ecb;
	ArrayType  *sarr;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("candidates must not be NULL"),
				 errhint("Pass '{}' for a request without candidates (ARRAY(SELECT ...) over no rows gives '{}'; "
						 "array_agg over no rows gives NULL: wrap it in COALESCE).")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	elemtype = ARR_ELEMTYPE(arr);
	if (!type_is_rowtype(elemtype))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("candidates must be an array of rows, got %s", format_type_be(get_array_type(elemtype))),
				 errhint("Pass ARRAY(SELECT c FROM (SELECT ...) c): one row per candidate, a column per field.")));
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &pr);
	e = pepnet_cache_get(&pr);
	require_named(e);
	c = &e->model->cfg;
	F = c->nfeat;
	P = c->npers;
	Nd = c->dense;
	T = c->ntasks;

	/* the declared result type: no catalog lookup per call */
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (ARR_NDIM(arr) == 0)
		return (Datum) 0;
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("candidates must be a 1-D array of rows, got %d dimensions", ARR_NDIM(arr))));
	if (st == NULL)
	{
		st = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(ScoreRowsState));
		fcinfo->flinfo->fn_extra = st;
	}

	tmp = AllocSetContextCreate(CurrentMemoryContext, "pepnet score rows", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	get_typlenbyvalalign(elemtype, &elmlen, &elmbyval, &elmalign);
	deconstruct_array(arr, elemtype, elmlen, elmbyval, elmalign, &elems, &enulls, &n);
	domain = palloc(sizeof(int32) * n);
	persona = palloc_extended(sizeof(int64) * ((size_t) n * P + 1), MCXT_ALLOC_HUGE);
	features = palloc_extended(sizeof(int64) * ((size_t) n * F + 1), MCXT_ALLOC_HUGE);
	dense = palloc_extended(sizeof(float) * ((size_t) n * Nd + 1), MCXT_ALLOC_HUGE);
	out = palloc_extended(sizeof(double) * (size_t) n * T, MCXT_ALLOC_HUGE);
	bags = features_bags_new(c, n);

	ecb.callback = candidate_context;
	ecb.arg = &cand;
	ecb.previous = error_context_stack;
	error_context_stack = &ecb;
	for (i = 0; i < n; i++)
	{
		HeapTupleHeader th;

		cand = i + 1;
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("candidate %d is NULL", i + 1)));
		th = DatumGetHeapTupleHeader(elems[i]);
		decode_row(row_binding(&st->rb, fcinfo->flinfo->fn_mcxt, e, th), th, domain + i,
				   persona + (size_t) i * P, features + (size_t) i * F, dense + (size_t) i * Nd,
				   bags ? bags + (size_t) i * (F + P) : NULL);
		if ((i & 1023) == 1023)
			CHECK_FOR_INTERRUPTS();
	}
	cand = 0;

	/* one request of the engine per (domain, persona): usually the whole array is one */
	for (i = 1; i < n; i++)
		if (!same_group(c, domain, persona, bags, P, 0, i))
			break;
	if (i == n)
	{
		if (bags)
			features_bags_block(c, &bb, bags, NULL, n);
		score_group(e, domain[0], P ? persona : NULL, n, features, bags ? &bb : NULL, Nd ? dense : NULL, out, NULL,
					&cand);
	}
	else
	{
		int		   *order = palloc(sizeof(int) * n);
		int64	   *gfeat = palloc_extended(sizeof(int64) * ((size_t) n * F + 1), MCXT_ALLOC_HUGE);
		float	   *gdense = palloc_extended(sizeof(float) * ((size_t) n * Nd + 1), MCXT_ALLOC_HUGE);
		double	   *gout = palloc_extended(sizeof(double) * (size_t) n * T, MCXT_ALLOC_HUGE);
		int			start = 0;

		for (i = 0; i < n; i++)
			order[i] = i;
		sort_domain = domain;
		sort_persona = persona;
		sort_bags = bags;
		sort_cfg = c;
		sort_npers = P;
		qsort(order, n, sizeof(int), group_cmp);
		while (start < n)
		{
			int			end = start + 1,
						first = order[start],
						g;

			while (end < n && same_group(c, domain, persona, bags, P, first, order[end]))
				end++;
			g = end - start;
			for (i = 0; i < g; i++)
			{
				int			row = order[start + i];

				memcpy(gfeat + (size_t) i * F, features + (size_t) row * F, sizeof(int64) * F);
				if (Nd)
					memcpy(gdense + (size_t) i * Nd, dense + (size_t) row * Nd, sizeof(float) * Nd);
			}
			if (bags)
				features_bags_block(c, &bb, bags, order + start, g);
			score_group(e, domain[first], P ? persona + (size_t) first * P : NULL, g, gfeat, bags ? &bb : NULL,
						Nd ? gdense : NULL, gout, order + start, &cand);
			for (i = 0; i < g; i++)
				memcpy(out + (size_t) order[start + i] * T, gout + (size_t) i * T, sizeof(double) * T);
			start = end;
		}
	}
	error_context_stack = ecb.previous;

	sarr = (ArrayType *) palloc0(ARR_OVERHEAD_NONULLS(1) + sizeof(float8) * T);
	SET_VARSIZE(sarr, ARR_OVERHEAD_NONULLS(1) + sizeof(float8) * T);
	sarr->ndim = 1;
	sarr->elemtype = FLOAT8OID;
	ARR_DIMS(sarr)[0] = T;
	ARR_LBOUND(sarr)[0] = 1;
	MemoryContextSwitchTo(old);
	values[2] = PointerGetDatum(sarr);
	for (i = 0; i < n; i++)
	{
		values[0] = elems[i];
		values[1] = Float8GetDatum(out[(size_t) i * T]);
		memcpy(ARR_DATA_PTR(sarr), out + (size_t) i * T, sizeof(float8) * T);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		if ((i & 4095) == 4095)
			CHECK_FOR_INTERRUPTS();
	}
	MemoryContextDelete(tmp);
	return (Datum) 0;
}
