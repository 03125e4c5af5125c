/*
 * training.c
 *		The C side of CALL pepnet_train and pepnet_evaluate: data queries
 *		streamed through SPI cursors (with the caller's rights, read-only),
 *		a seeded shuffle buffer, batches into the core's trainer, progress
 *		NOTICEs, exact AUC and logloss per domain and task.
 *
 * The plpgsql procedure pepnet_train drives these functions epoch by epoch
 * and COMMITs a version after each.  The trainer lives in a memory context
 * of its own under TopMemoryContext, so it survives those COMMITs; a backend
 * holds at most one, released by _train_end or the next _train_begin.
 */
#include "pepnet.h"
#include "pepshm.h"

#include <math.h>
#include <stdarg.h>
#include <time.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/numeric.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/acl.h"

PG_FUNCTION_INFO_V1(pepnet_train_begin);
PG_FUNCTION_INFO_V1(pepnet_train_epoch);
PG_FUNCTION_INFO_V1(pepnet_train_eval);
PG_FUNCTION_INFO_V1(pepnet_train_save);
PG_FUNCTION_INFO_V1(pepnet_train_end);
PG_FUNCTION_INFO_V1(pepnet_train_setup);
PG_FUNCTION_INFO_V1(pepnet_evaluate);

#define FETCH_ROWS 1000
#define EVAL_BATCH 1024

/* the backend's trainer */
typedef struct TrainState
{
	MemoryContext cxt;
	PnModel    *model;
	PnTrainer  *trainer;
	char		name[PEPNET_NAMELEN];
	int32		parent;			/* version trained from, 0 for none */
	int			batch_size;
	int			epochs_done;	/* in this call */
	int			epoch_base;		/* epochs of the lineage before this call (resumed) */
	/* learning-rate schedule (pepnet_train's lr_schedule) */
	double		base_lr;
	int64		warmup_steps;
	int			decay;			/* SCHED_* */
	int64		decay_steps;
	double		decay_gamma;
	double		min_lr;
	double		last_lr;
	/* negative down-sampling rate per domain (NULL: none) */
	float	   *neg_rate;
} TrainState;

#define SCHED_NONE 0
#define SCHED_COSINE 1
#define SCHED_STEP 2

static TrainState *train = NULL;

/* rows in columnar arrays */
typedef struct Rows
{
	int			cap;
	int			n;
	int64	   *rowno;			/* 1-based row of the query, for error context */
	int32	   *domain;
	int64	   *persona;
	int64	   *features;
	float	   *dense;
	float	   *labels;
} Rows;

/* a data query opened as a cursor, columns located by name */
typedef struct Reader
{
	Portal		portal;
	const PnConfig *cfg;
	const char *what;			/* "data", "validation" */
	int			c_domain,
				c_persona,
				c_features,
				c_dense,
				c_label,
				c_labels;
	Oid			label_type;
	Oid			domain_type;
	int64		rowno;
	struct RowContext *ctx;
} Reader;

/*
 * Error context of a data-row fault, as postgres_fdw's
 * conversion_error_callback: which query and which row (1-based), set
 * while a row is decoded or while a batch holding the row trains.
 */
struct RowContext
{
	const char *what;			/* "data", "validation" */
	int64		row;			/* 0: no row to blame */
};
typedef struct RowContext RowContext;

static void
row_context_callback(void *arg)
{
	RowContext *rc = (RowContext *) arg;

	if (rc->row > 0)
		errcontext("%s query row %lld", rc->what, (long long) rc->row);
}

/* Seconds since some fixed point */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Allocate row arrays for cap rows */
static void
rows_init(Rows *r, const PnConfig *c, int cap)
{
	r->cap = cap;
	r->n = 0;
	r->rowno = palloc_extended(sizeof(int64) * cap, MCXT_ALLOC_HUGE);
	r->domain = palloc_extended(sizeof(int32) * cap, MCXT_ALLOC_HUGE);
	r->persona = palloc_extended(sizeof(int64) * ((size_t) cap * c->npers + 1), MCXT_ALLOC_HUGE);
	r->features = palloc_extended(sizeof(int64) * ((size_t) cap * c->nfeat + 1), MCXT_ALLOC_HUGE);
	r->dense = palloc_extended(sizeof(float) * ((size_t) cap * c->dense + 1), MCXT_ALLOC_HUGE);
	r->labels = palloc_extended(sizeof(float) * (size_t) cap * c->ntasks, MCXT_ALLOC_HUGE);
}

/* Copy row si of src to row di of dst */
static void
rows_copy(Rows *dst, int di, const Rows *src, int si, const PnConfig *c)
{
	dst->rowno[di] = src->rowno[si];
	dst->domain[di] = src->domain[si];
	memcpy(dst->persona + (size_t) di * c->npers, src->persona + (size_t) si * c->npers, sizeof(int64) * c->npers);
	memcpy(dst->features + (size_t) di * c->nfeat, src->features + (size_t) si * c->nfeat, sizeof(int64) * c->nfeat);
	memcpy(dst->dense + (size_t) di * c->dense, src->dense + (size_t) si * c->dense, sizeof(float) * c->dense);
	memcpy(dst->labels + (size_t) di * c->ntasks, src->labels + (size_t) si * c->ntasks, sizeof(float) * c->ntasks);
}

/* Column number by name, 0 when absent */
static int
column(TupleDesc td, const char *name)
{
	int			i;

	for (i = 0; i < td->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(td, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			return i + 1;
	}
	return 0;
}

/* Refuse a column of the wrong type */
static void
expect_type(Reader *r, TupleDesc td, int col, const char *name, Oid want, const char *wantname)
{
	Oid			got = SPI_gettypeid(td, col);

	if (got != want)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s query column \"%s\" has type %s, expected %s", r->what, name,
						format_type_be(got), wantname),
				 errhint("Cast it in the query, e.g. %s::%s.", name, wantname)));
}

/*
 * Prepare a data query (the caller's rights), refusing anything but one
 * read-only SELECT.
 */
static SPIPlanPtr
reader_prepare(const char *query, const char *what)
{
	SPIPlanPtr	plan = SPI_prepare(query, 0, NULL);

	if (plan == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_SYNTAX_ERROR),
				 errmsg("%s query could not be prepared: %s", what, SPI_result_code_string(SPI_result))));
	{
		List	   *srcs = SPI_plan_get_plan_sources(plan);
		CachedPlanSource *src = list_length(srcs) == 1 ? (CachedPlanSource *) linitial(srcs) : NULL;
		bool		readonly = src != NULL && src->commandTag == CMDTAG_SELECT;
		ListCell   *lc;

		if (src)
			foreach(lc, src->query_list)
				readonly &= !((Query *) lfirst(lc))->hasModifyingCTE;
		if (!readonly || !SPI_is_cursor_plan(plan))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s query must be a single read-only SELECT", what),
					 errhint("pepnet reads training and evaluation data; it never runs statements that write.")));
	}
	return plan;
}

/*
 * Locate and check the columns of a data query's result: domain int,
 * persona bigint[] (optional, or NULL, when the model has no persona
 * fields), features bigint[], optional dense real[], and label (real,
 * float8, int, bool, numeric) or labels real[].
 */
static void
reader_columns(Reader *r, TupleDesc td, const PnConfig *cfg, const char *what, bool need_labels)
{
	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->what = what;
	r->c_domain = column(td, "domain");
	r->c_persona = column(td, "persona");
	r->c_features = column(td, "features");
	r->c_dense = column(td, "dense");
	r->c_label = column(td, "label");
	r->c_labels = column(td, "labels");
	if (!r->c_domain || (!r->c_persona && cfg->npers > 0) || !r->c_features)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s query lacks column \"%s\"", what,
						!r->c_domain ? "domain" : !r->c_features ? "features" : "persona"),
				 errhint("The query must return columns named domain int, persona bigint[] (when the model has "
						 "persona fields), features bigint[], optionally dense real[], and label or labels real[].")));
	r->domain_type = SPI_gettypeid(td, r->c_domain);
	if (r->domain_type != INT4OID && r->domain_type != INT2OID && r->domain_type != INT8OID)
		expect_type(r, td, r->c_domain, "domain", INT4OID, "int");
	if (r->c_persona)
		expect_type(r, td, r->c_persona, "persona", INT8ARRAYOID, "bigint[]");
	expect_type(r, td, r->c_features, "features", INT8ARRAYOID, "bigint[]");
	if (r->c_dense)
		expect_type(r, td, r->c_dense, "dense", FLOAT4ARRAYOID, "real[]");
	else if (cfg->dense > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s query lacks column \"dense\": the model has %d dense features", what, cfg->dense)));
	if (r->c_label && r->c_labels)
		ereport(ERROR,
				(errcode(ERRCODE_AMBIGUOUS_COLUMN),
				 errmsg("%s query has both \"label\" and \"labels\"; keep one", what)));
	if (r->c_label)
	{
		r->label_type = SPI_gettypeid(td, r->c_label);
		if (r->label_type != FLOAT4OID && r->label_type != FLOAT8OID && r->label_type != INT2OID &&
			r->label_type != INT4OID && r->label_type != INT8OID && r->label_type != BOOLOID &&
			r->label_type != NUMERICOID)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("%s query column \"label\" has type %s, expected real, float8, int, numeric or bool",
							what, format_type_be(r->label_type)),
					 errhint("Cast it in the query, e.g. label::real.")));
		if (cfg->ntasks != 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s query has one \"label\" but the model has %d tasks", what, cfg->ntasks),
					 errhint("Return \"labels\" real[] with one label per task, in config order (NULL = unknown).")));
	}
	else if (r->c_labels)
		expect_type(r, td, r->c_labels, "labels", FLOAT4ARRAYOID, "real[]");
	else if (need_labels)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s query lacks column \"label\" or \"labels\"", what)));
}

/* Open a data query as a read-only cursor and check its columns */
static void
reader_open(Reader *r, const char *query, const PnConfig *cfg, const char *what, bool need_labels)
{
	SPIPlanPtr	plan = reader_prepare(query, what);
	Portal		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	reader_columns(r, portal->tupDesc, cfg, what, need_labels);
	r->portal = portal;
	r->ctx = palloc0(sizeof(RowContext));
	r->ctx->what = what;
}

/*
 * Check a query before any work: its columns from the plan's result
 * description (nothing runs), and, with need_rows, that it returns a row.
 */
static void
reader_check(const char *query, const PnConfig *cfg, const char *what, bool need_rows)
{
	SPIPlanPtr	plan = reader_prepare(query, what);
	List	   *srcs = SPI_plan_get_plan_sources(plan);
	CachedPlanSource *src = (CachedPlanSource *) linitial(srcs);
	Reader		r;

	if (src->resultDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s query must be a single read-only SELECT", what)));
	reader_columns(&r, src->resultDesc, cfg, what, true);
	if (need_rows)
	{
		Portal		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

		SPI_cursor_fetch(portal, true, 1);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_NO_DATA_FOUND),
					 errmsg("%s query returned no rows", what),
					 errhint("Model selection (deploy) and early stopping (patience) need validation rows; "
							 "fix the query or leave validation NULL.")));
		SPI_freetuptable(SPI_tuptable);
		SPI_cursor_close(portal);
	}
	SPI_freeplan(plan);
}

/* Error about a value of the current row (the row is named by the error context) */
static void row_error(Reader *r, int sqlstate, const char *fmt,...) pg_attribute_printf(3, 4);

static void
row_error(Reader *r, int sqlstate, const char *fmt,...)
{
	char		buf[1024];		/* room for any message: never cut inside a character */
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	ereport(ERROR,
			(errcode(sqlstate),
			 errmsg("%s query: %s", r->what, buf)));
}

/* Copy a 1-D array column of n elements (no NULLs) into dst */
static void
get_array(Reader *r, HeapTuple tup, TupleDesc td, int col, const char *name, int n, size_t elsize, void *dst)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, td, col, &isnull);
	ArrayType  *a;
	int			len;

	if (isnull)
	{
		if (n == 0)
			return;
		row_error(r, ERRCODE_NULL_VALUE_NOT_ALLOWED, "%s is NULL", name);
	}
	a = DatumGetArrayTypeP(d);
	len = ARR_NDIM(a) == 0 ? 0 : ARR_NDIM(a) == 1 ? ARR_DIMS(a)[0] : -1;
	if (len != n)
	{
		if (len < 0)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "%s must be a 1-D array", name);
		row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "%s has %d elements, the model needs %d", name, len, n);
	}
	if (array_contains_nulls(a))
		row_error(r, ERRCODE_NULL_VALUE_NOT_ALLOWED, "%s contains NULL elements", name);
	if (n)
		memcpy(dst, ARR_DATA_PTR(a), elsize * n);
	if ((Pointer) a != DatumGetPointer(d))
		pfree(a);
}

/* Decode one tuple into row i of dst */
static void
decode(Reader *r, HeapTuple tup, TupleDesc td, Rows *dst, int i)
{
	const PnConfig *c = r->cfg;
	bool		isnull;
	Datum		d;
	int			t;
	float	   *lab = dst->labels + (size_t) i * c->ntasks;

	r->rowno++;
	dst->rowno[i] = r->rowno;
	d = SPI_getbinval(tup, td, r->c_domain, &isnull);
	if (isnull)
		row_error(r, ERRCODE_NULL_VALUE_NOT_ALLOWED, "domain is NULL");
	{
		Oid			dt = r->domain_type;
		int64		v = dt == INT2OID ? DatumGetInt16(d) : dt == INT8OID ? DatumGetInt64(d) : DatumGetInt32(d);

		if (v < 0 || v >= c->domains)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "domain %lld is out of range: the model has %d domains", (long long) v, c->domains);
		dst->domain[i] = (int32) v;
	}
	if (r->c_persona)
		get_array(r, tup, td, r->c_persona, "persona", c->npers, sizeof(int64), dst->persona + (size_t) i * c->npers);
	get_array(r, tup, td, r->c_features, "features", c->nfeat, sizeof(int64), dst->features + (size_t) i * c->nfeat);
	for (t = 0; t < c->nfeat; t++)
	{
		int64		id = dst->features[(size_t) i * c->nfeat + t];

		if (pn_slot(&c->feat[t], t, id) < 0)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "feature id " INT64_FORMAT " of field \"%s\" is outside [0, " INT64_FORMAT ")",
					  id, c->feat[t].name, (int64) c->feat[t].buckets);
	}
	for (t = 0; t < c->npers; t++)
	{
		int64		id = dst->persona[(size_t) i * c->npers + t];

		if (pn_slot(&c->pers[t], t, id) < 0)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "persona id " INT64_FORMAT " of field \"%s\" is outside [0, " INT64_FORMAT ")",
					  id, c->pers[t].name, (int64) c->pers[t].buckets);
	}
	if (c->dense)
	{
		float	   *dv = dst->dense + (size_t) i * c->dense;

		get_array(r, tup, td, r->c_dense, "dense", c->dense, sizeof(float), dv);
		for (t = 0; t < c->dense; t++)
			if (!isfinite(dv[t]))
				row_error(r, ERRCODE_DATA_EXCEPTION, "dense value %d is %s", t + 1, isnan(dv[t]) ? "NaN" : "infinity");
	}
	for (t = 0; t < c->ntasks; t++)
		lab[t] = NAN;
	if (r->c_label)
	{
		d = SPI_getbinval(tup, td, r->c_label, &isnull);
		if (!isnull)
		{
			double		y;

			switch (r->label_type)
			{
				case FLOAT4OID:
					y = DatumGetFloat4(d);
					break;
				case FLOAT8OID:
					y = DatumGetFloat8(d);
					break;
				case INT2OID:
					y = DatumGetInt16(d);
					break;
				case INT4OID:
					y = DatumGetInt32(d);
					break;
				case INT8OID:
					y = (double) DatumGetInt64(d);
					break;
				case BOOLOID:
					y = DatumGetBool(d) ? 1.0 : 0.0;
					break;
				default:
					y = DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
					break;
			}
			if (!isfinite(y))
				row_error(r, ERRCODE_DATA_EXCEPTION, "label is %s", isnan(y) ? "NaN" : "infinity");
			if (!(y >= 0.0 && y <= 1.0))
				row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "label %g is outside [0, 1]", y);
			lab[0] = (float) y;
		}
	}
	else if (r->c_labels)
	{
		d = SPI_getbinval(tup, td, r->c_labels, &isnull);
		if (!isnull)
		{
			ArrayType  *a = DatumGetArrayTypeP(d);
			Datum	   *el;
			bool	   *nulls;
			int			n;

			if (ARR_NDIM(a) > 1)
				row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "labels must be a 1-D array");
			deconstruct_array(a, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT, &el, &nulls, &n);
			if (n != c->ntasks)
				row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "labels has %d elements, the model has %d tasks", n, c->ntasks);
			for (t = 0; t < n; t++)
				if (!nulls[t])
				{
					float		y = DatumGetFloat4(el[t]);

					if (!isfinite(y))
						row_error(r, ERRCODE_DATA_EXCEPTION, "labels[%d] is %s", t + 1, isnan(y) ? "NaN" : "infinity");
					if (!(y >= 0.0f && y <= 1.0f))
						row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "labels[%d] = %g is outside [0, 1]", t + 1, y);
					lab[t] = y;
				}
			pfree(el);
			pfree(nulls);
		}
	}
}

/* Fetch up to FETCH_ROWS tuples into dst (appending); returns rows fetched */
static int
reader_fetch(Reader *r, Rows *dst, int max)
{
	int			i,
				got;

	ErrorContextCallback cb;

	SPI_cursor_fetch(r->portal, true, Min(FETCH_ROWS, max));
	got = (int) SPI_processed;
	cb.callback = row_context_callback;
	cb.arg = r->ctx;
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	for (i = 0; i < got; i++)
	{
		r->ctx->row = r->rowno + 1;
		decode(r, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, dst, dst->n + i);
	}
	error_context_stack = cb.previous;
	dst->n += got;
	SPI_freetuptable(SPI_tuptable);
	return got;
}

/* Raise a core error */
static void
core_error(PnError *err)
{
	pepnet_report(err, ERRCODE_DATA_CORRUPTED);
}

/* Free the backend's trainer */
static void
train_free(void)
{
	if (train)
	{
		MemoryContext cxt = train->cxt;

		train = NULL;
		pepnet_progress_end();	/* frees the progress slot (also on abort) */
		MemoryContextDelete(cxt);
	}
}

/*
 * The trainer outlives the COMMITs between epochs, but not an error: a
 * failed (aborted) transaction frees it (about 3x the model: gradients and
 * Adam's moments), so nothing stays behind until the next training.
 */
static void
train_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		train_free();
}

/* Register the abort callback once per backend */
static void
train_register_callback(void)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(train_xact_callback, NULL);
		registered = true;
	}
}

/*
 * Raise a core error of training or evaluation: non-finite values are
 * 22P01, bad input 22023; a row the core blames is named in the context
 * as the data query's row.
 */
static void
train_core_error(PnError *err, const char *what, const Rows *rows)
{
	RowContext	rc;
	ErrorContextCallback cb;
	int			code;

	rc.what = what;
	rc.row = (rows && err->row >= 0 && err->row < rows->n) ? rows->rowno[err->row] : 0;
	cb.callback = row_context_callback;
	cb.arg = &rc;
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	switch (err->code)
	{
		case PN_ENUMERIC:
			code = ERRCODE_FLOATING_POINT_EXCEPTION;
			break;
		case PN_EINPUT:
		case PN_ECONFIG:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		case PN_ETOOBIG:
			code = ERRCODE_PROGRAM_LIMIT_EXCEEDED;
			break;
		case PN_ENOMEM:
			code = ERRCODE_OUT_OF_MEMORY;
			break;
		default:
			code = ERRCODE_DATA_CORRUPTED;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("%s", err->msg),
			 err->detail[0] ? errdetail("%s", err->detail) : 0,
			 err->code == PN_ENUMERIC ?
			 errhint("The versions of earlier epochs are kept; nothing of this epoch was stored.") : 0));
}

/* The trainer, or an error when none is active */
static TrainState *
train_get(void)
{
	if (train == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no training in progress in this session"),
				 errhint("Use CALL pepnet_train(...).")));
	return train;
}

/*
 * pepnet._train_begin(name, config, seed, lr, batch_size): a model with
 * fresh weights from config, or (config NULL) the deployed / latest /
 * given version of name to continue from.
 */
Datum
pepnet_train_begin(PG_FUNCTION_ARGS)
{
	char	   *name;
	int32		seed = PG_GETARG_INT32(2);
	double		lr = PG_GETARG_FLOAT8(3);
	int32		bs = PG_GETARG_INT32(4);
	MemoryContext cxt,
				old;
	TrainState *st;
	PnError		err = {0};
	char	   *at;

	pepnet_require_writable("pepnet_train");	/* on a standby, before any work */
	/* before anything is read: training COMMITs a version per epoch */
	if (IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("pepnet_train cannot run inside a transaction block"),
				 errdetail("It commits a new version after each epoch."),
				 errhint("Run CALL pepnet_train(...) on its own, outside BEGIN ... COMMIT.")));
	if (!SPI_inside_nonatomic_context())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("pepnet_train cannot run where it cannot COMMIT"),
				 errdetail("It commits a new version after each epoch; a CALL from a function, or from a procedure "
						   "called that way, cannot."),
				 errhint("Run CALL pepnet_train(...) as a statement of its own, or from a procedure or DO block "
						 "that is itself called that way.")));
	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model name must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	train_register_callback();
	train_free();
	cxt = AllocSetContextCreate(TopMemoryContext, "pepnet trainer", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	st = palloc0(sizeof(TrainState));
	st->cxt = cxt;
	st->batch_size = bs;
	st->base_lr = st->last_lr = lr;
	PG_TRY();
	{
		if (!PG_ARGISNULL(1))
		{
			Jsonb	   *jb = PG_GETARG_JSONB_P(1);
			char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
			PnConfig	cfg;

			pepnet_check_name(name);
			if (pn_config_parse(text, strlen(text), pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
				pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
			if (pn_model_new(&cfg, &st->model, &err) != PN_OK)
				core_error(&err);
			pn_config_free(&cfg);
			pn_model_init(st->model, (uint64) (int64) seed);
			strlcpy(st->name, name, PEPNET_NAMELEN);
		}
		else
		{
			PepnetRef	ref;
			char		lname[PEPNET_NAMELEN];
			int32		v;

			pepnet_resolve(name, &ref);
			st->model = pepnet_load_model(&ref, lname, &v);
			strlcpy(st->name, ref.name, PEPNET_NAMELEN);
			st->parent = ref.version;
		}
		at = strchr(st->name, '@');
		if (at)
			*at = '\0';
		if (pn_trainer_new(st->model, bs, (float) lr, &st->trainer, &err) != PN_OK)
			core_error(&err);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	train = st;
	pepnet_progress_start(st->name, st->parent);
	PG_RETURN_INT32(st->parent);
}

/* what one epoch carries from batch to batch */
typedef struct Epoch
{
	TrainState *st;
	Rows		batch;
	int32		epoch;
	double		t0,
				last,
				progress,
				loss_sum,
				run_loss;
	int64		rows,
				steps,
				run_rows,
				labeled;		/* rows with at least one known label */
} Epoch;

/*
 * Learning rate of optimiser step `step` (1-based, counted over every
 * training of the lineage): linear warm-up over warmup_steps, then cosine
 * decay to min_lr over decay_steps, or times gamma every decay_steps.
 */
static double
schedule_lr(const TrainState *st, int64 step)
{
	double		lr = st->base_lr;
	int64		t;

	if (st->warmup_steps > 0 && step <= st->warmup_steps)
		return lr * (double) step / (double) st->warmup_steps;
	t = step - st->warmup_steps;
	if (st->decay == SCHED_COSINE)
	{
		double		f = (double) Min(t, st->decay_steps) / (double) st->decay_steps;

		lr = st->min_lr + (lr - st->min_lr) * 0.5 * (1.0 + cos(M_PI * f));
	}
	else if (st->decay == SCHED_STEP)
		lr *= pow(st->decay_gamma, (double) (t / st->decay_steps));
	return lr;
}

/* Train on the rows collected in the batch, with a progress NOTICE now and then */
static void
epoch_step(Epoch *ep)
{
	const PnConfig *c = &ep->st->model->cfg;
	PnBatch		b;
	PnError		err = {0};
	double		loss;

	if (ep->batch.n == 0)
		return;
	b.n = ep->batch.n;
	b.domain = ep->batch.domain;
	b.persona = ep->batch.persona;
	b.features = ep->batch.features;
	b.dense = c->dense ? ep->batch.dense : NULL;
	b.labels = ep->batch.labels;
	CHECK_FOR_INTERRUPTS();
	{
		int			i,
					t;

		for (i = 0; i < b.n; i++)
			for (t = 0; t < c->ntasks; t++)
				if (!isnan(b.labels[(size_t) i * c->ntasks + t]))
				{
					ep->labeled++;
					break;
				}
	}
	ep->st->last_lr = schedule_lr(ep->st, pn_trainer_steps(ep->st->trainer) + 1);
	pn_trainer_set_lr(ep->st->trainer, (float) ep->st->last_lr);
	if (pn_train_step(ep->st->trainer, &b, &loss, &err) != PN_OK)
		train_core_error(&err, "data", &ep->batch);
	ep->loss_sum += loss * b.n;
	ep->run_loss += loss * b.n;
	ep->run_rows += b.n;
	ep->rows += b.n;
	ep->steps++;
	ep->batch.n = 0;
	pepnet_progress_step(ep->epoch, ep->rows, ep->loss_sum / ep->rows);
	if (ep->progress > 0 && now_seconds() - ep->last >= ep->progress)
	{
		double		t = now_seconds();

		ereport(NOTICE,
				(errmsg("pepnet_train \"%s\" epoch %d: %lld rows, %.0f rows/s, loss %.5f",
						ep->st->name, ep->epoch, (long long) ep->rows, ep->rows / (t - ep->t0),
						ep->run_loss / ep->run_rows)));
		ep->last = t;
		ep->run_loss = 0;
		ep->run_rows = 0;
	}
}

/* Append row i of src to the batch, training when it is full */
static void
epoch_emit(Epoch *ep, const Rows *src, int i)
{
	rows_copy(&ep->batch, ep->batch.n++, src, i, &ep->st->model->cfg);
	if (ep->batch.n == ep->st->batch_size)
		epoch_step(ep);
}

/*
 * pepnet._train_epoch(data, epoch, shuffle_buffer, seed, progress_seconds):
 * one pass over the data query through a seeded shuffle buffer (rows leave
 * it in random order; 1 keeps the query's order); returns jsonb {epoch,
 * rows, steps, seconds, rows_per_s, train_loss}.
 */
Datum
pepnet_train_epoch(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		sbuf = Max(PG_GETARG_INT32(2), 1);
	int32		seed = PG_GETARG_INT32(3);
	const PnConfig *c = &st->model->cfg;
	Reader		r;
	Rows		in,
				buf;
	Epoch		ep;
	uint64		rng;
	StringInfoData out;
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "pepnet epoch", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	double		secs;

	memset(&ep, 0, sizeof(ep));
	ep.st = st;
	ep.epoch = PG_GETARG_INT32(1);
	ep.progress = PG_GETARG_FLOAT8(4);
	ep.t0 = ep.last = now_seconds();
	/* the shuffle of the lineage's n-th epoch, so that continued training repeats a longer one */
	rng = (uint64) (int64) seed * UINT64CONST(0xD1B54A32D192ED03) + (uint64) (st->epoch_base + ep.epoch);

	SPI_connect();
	old = MemoryContextSwitchTo(tmp);
	rows_init(&in, c, FETCH_ROWS);
	rows_init(&buf, c, sbuf);
	rows_init(&ep.batch, c, st->batch_size);
	reader_open(&r, query, c, "data", true);
	for (;;)
	{
		int			i;

		CHECK_FOR_INTERRUPTS();
		in.n = 0;
		if (reader_fetch(&r, &in, FETCH_ROWS) == 0)
			break;
		for (i = 0; i < in.n; i++)
		{
			int			j;

			if (buf.n < sbuf)
			{
				rows_copy(&buf, buf.n++, &in, i, c);
				continue;
			}
			/* a random row leaves the buffer; the incoming row takes its place */
			rng += UINT64CONST(0x9E3779B97F4A7C15);
			j = (int) (pn_splitmix64(rng) % (uint64) buf.n);
			epoch_emit(&ep, &buf, j);
			rows_copy(&buf, j, &in, i, c);
		}
	}
	/* drain the buffer in random order */
	while (buf.n > 0)
	{
		int			j;

		rng += UINT64CONST(0x9E3779B97F4A7C15);
		j = sbuf == 1 ? 0 : (int) (pn_splitmix64(rng) % (uint64) buf.n);
		epoch_emit(&ep, &buf, j);
		rows_copy(&buf, j, &buf, buf.n - 1, c);
		buf.n--;
	}
	epoch_step(&ep);
	SPI_cursor_close(r.portal);
	MemoryContextSwitchTo(old);
	SPI_finish();
	MemoryContextDelete(tmp);
	if (ep.rows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("data query returned no rows")));
	if (ep.labeled == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("data query returned %lld rows but every label is unknown (NULL)", (long long) ep.rows),
				 errhint("Training needs rows with a label 0 or 1 for at least one task; check the label column.")));
	st->epochs_done = ep.epoch;
	pepnet_progress_epoch_done(ep.epoch, ep.rows);
	secs = now_seconds() - ep.t0;
	initStringInfo(&out);
	appendStringInfo(&out, "{\"epoch\": %d, \"rows\": %lld, \"steps\": %lld, \"seconds\": %.3f, "
					 "\"rows_per_s\": %.1f, \"train_loss\": %.6f, \"labeled_rows\": %lld, "
					 "\"optimizer_steps\": %lld, \"lr_last\": %.9g, \"lineage_epoch\": %d}",
					 ep.epoch, (long long) ep.rows, (long long) ep.steps, secs, ep.rows / Max(secs, 1e-9),
					 ep.loss_sum / ep.rows, (long long) ep.labeled,
					 (long long) pn_trainer_steps(st->trainer), st->last_lr, st->epoch_base + ep.epoch);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}

/* one labeled prediction */
typedef struct Pred
{
	int32		domain;
	int32		task;
	float		logit;
	float		label;
} Pred;

/* order by task, domain, logit */
static int
pred_cmp_domain(const void *a, const void *b)
{
	const Pred *x = a,
			   *y = b;

	if (x->task != y->task)
		return x->task < y->task ? -1 : 1;
	if (x->domain != y->domain)
		return x->domain < y->domain ? -1 : 1;
	return x->logit < y->logit ? -1 : x->logit > y->logit;
}

/* order by task, logit */
static int
pred_cmp_task(const void *a, const void *b)
{
	const Pred *x = a,
			   *y = b;

	if (x->task != y->task)
		return x->task < y->task ? -1 : 1;
	return x->logit < y->logit ? -1 : x->logit > y->logit;
}

/*
 * Exact AUC (ties count half; a label >= 0.5 counts as positive), logloss
 * (soft labels as they are), mean predicted probability and mean label of
 * p[0..n) sorted by logit; auc NaN if one class.
 */
static void
group_metrics(const Pred *p, int64 n, double *auc, double *logloss, double *mean_p, double *rate)
{
	int64		i = 0,
				npos = 0;
	double		rank_pos = 0,
				ll = 0,
				pos_w = 0,
				sp = 0;

	while (i < n)
	{
		int64		j = i;
		int64		pos_here = 0;

		while (j < n && p[j].logit == p[i].logit)
		{
			if (p[j].label >= 0.5f)
				pos_here++;
			j++;
		}
		/* ranks i+1 .. j share the average (i + 1 + j) / 2 */
		rank_pos += pos_here * (i + 1 + j) / 2.0;
		npos += pos_here;
		i = j;
	}
	for (i = 0; i < n; i++)
	{
		double		z = p[i].logit,
					y = p[i].label;

		ll += (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))) - y * z;
		pos_w += y;
		sp += z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
	}
	*logloss = n ? ll / n : NAN;
	*mean_p = n ? sp / n : NAN;
	*rate = n ? pos_w / n : NAN;
	if (npos == 0 || npos == n)
		*auc = NAN;
	else
		*auc = (rank_pos - npos * (npos + 1) / 2.0) / ((double) npos * (n - npos));
}

/* one (domain, task) result; domain -1 = all domains */
typedef struct Metric
{
	int32		domain;
	int32		task;
	int64		rows;
	double		auc;
	double		logloss;
	double		mean_p;			/* mean predicted probability */
	double		rate;			/* mean label (actual rate) */
} Metric;

/* the engine's interrupt check, per tile */
static void
eval_interrupt(void)
{
	CHECK_FOR_INTERRUPTS();
}

/*
 * Score every row of a query with the model in batches (inference mode)
 * and compute the metrics per domain and task, and per task overall.
 */
static Metric *
evaluate(PnModel *m, const char *query, const char *what, int *nmetrics)
{
	const PnConfig *c = &m->cfg;
	PnEvaluator *ev;
	PnError		err = {0};
	Reader		r;
	Rows		rows;
	Pred	   *preds;
	int64		npred = 0,
				cap = 1 << 16,
				i;
	float	   *logits;
	Metric	   *ms;
	int			nm = 0,
				mcap = 64;
	bool		more = true;

	/* scored by the engine, as pepnet_score serves it (fp32): ties bit-identical, see evaluate.c */
	if (pn_evaluator_new(m, PN_FP32, &ev, &err) != PN_OK)
		core_error(&err);
	rows_init(&rows, c, EVAL_BATCH);
	logits = palloc(sizeof(float) * EVAL_BATCH * c->ntasks);
	preds = palloc_extended(sizeof(Pred) * cap, MCXT_ALLOC_HUGE);
	reader_open(&r, query, c, what, true);
	while (more)
	{
		PnBatch		b;

		CHECK_FOR_INTERRUPTS();
		rows.n = 0;
		while (rows.n < EVAL_BATCH)
			if (reader_fetch(&r, &rows, EVAL_BATCH - rows.n) == 0)
			{
				more = false;
				break;
			}
		if (rows.n == 0)
			break;
		b.n = rows.n;
		b.domain = rows.domain;
		b.persona = rows.persona;
		b.features = rows.features;
		b.dense = c->dense ? rows.dense : NULL;
		b.labels = NULL;
		if (pn_evaluator_logits(ev, &b, logits, eval_interrupt, &err) != PN_OK)
			train_core_error(&err, what, &rows);
		for (i = 0; i < (int64) rows.n * c->ntasks; i++)
		{
			float		y = rows.labels[i];

			if (isnan(y))
				continue;
			/* (negative down-sampling, logit + ln w, is in the engine's output bias) */
			if (npred == cap)
			{
				cap *= 2;
				preds = repalloc_huge(preds, sizeof(Pred) * cap);
			}
			preds[npred].domain = rows.domain[i / c->ntasks];
			preds[npred].task = (int32) (i % c->ntasks);
			preds[npred].logit = logits[i];
			preds[npred].label = y;
			npred++;
		}
	}
	SPI_cursor_close(r.portal);
	pn_evaluator_free(ev);
	if (npred == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s query returned no rows with a known label", what),
				 errhint("Evaluation needs rows with a label 0 or 1 for at least one task.")));

	ms = palloc(sizeof(Metric) * mcap);
	qsort(preds, npred, sizeof(Pred), pred_cmp_domain);
	for (i = 0; i < npred;)
	{
		int64		j = i;

		while (j < npred && preds[j].task == preds[i].task && preds[j].domain == preds[i].domain)
			j++;
		if (nm == mcap)
		{
			mcap *= 2;
			ms = repalloc(ms, sizeof(Metric) * mcap);
		}
		ms[nm].domain = preds[i].domain;
		ms[nm].task = preds[i].task;
		ms[nm].rows = j - i;
		group_metrics(preds + i, j - i, &ms[nm].auc, &ms[nm].logloss, &ms[nm].mean_p, &ms[nm].rate);
		nm++;
		i = j;
	}
	qsort(preds, npred, sizeof(Pred), pred_cmp_task);
	for (i = 0; i < npred;)
	{
		int64		j = i;

		while (j < npred && preds[j].task == preds[i].task)
			j++;
		if (nm == mcap)
		{
			mcap *= 2;
			ms = repalloc(ms, sizeof(Metric) * mcap);
		}
		ms[nm].domain = -1;
		ms[nm].task = preds[i].task;
		ms[nm].rows = j - i;
		group_metrics(preds + i, j - i, &ms[nm].auc, &ms[nm].logloss, &ms[nm].mean_p, &ms[nm].rate);
		nm++;
		i = j;
	}
	pfree(preds);
	*nmetrics = nm;
	return ms;
}

/* Append a double as JSON (null for NaN) */
static void
json_num(StringInfo s, double v)
{
	if (isnan(v) || isinf(v))
		appendStringInfoString(s, "null");
	else
		appendStringInfo(s, "%.6f", v);
}

/* Append a JSON string literal */
static void
json_str(StringInfo s, const char *v)
{
	escape_json(s, v);
}

/*
 * pepnet._train_eval(query): validation metrics of the trainer's model as
 * jsonb {rows, logloss, auc (first task), tasks: {name: {rows, logloss,
 * auc, domains: {d: {rows, logloss, auc}}}}}.
 */
/* Append one metric's figures as JSON members (no braces) */
static void
json_metric(StringInfo s, const Metric *m)
{
	appendStringInfo(s, "\"rows\": %lld, \"logloss\": ", (long long) m->rows);
	json_num(s, m->logloss);
	appendStringInfoString(s, ", \"auc\": ");
	json_num(s, m->auc);
	appendStringInfoString(s, ", \"mean_p\": ");
	json_num(s, m->mean_p);
	appendStringInfoString(s, ", \"actual\": ");
	json_num(s, m->rate);
	appendStringInfoString(s, ", \"pcoc\": ");
	json_num(s, m->rate > 0 ? m->mean_p / m->rate : NAN);
}

Datum
pepnet_train_eval(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	const PnConfig *c = &st->model->cfg;
	Metric	   *ms;
	int			nm,
				t,
				i;
	StringInfoData s;
	MemoryContext caller = CurrentMemoryContext;
	char	   *json;

	SPI_connect();
	ms = evaluate(st->model, query, "validation", &nm);
	initStringInfo(&s);
	appendStringInfoChar(&s, '{');
	for (i = 0; i < nm; i++)
		if (ms[i].domain < 0 && ms[i].task == 0)
		{
			pepnet_progress_validation(ms[i].logloss, ms[i].auc);
			json_metric(&s, &ms[i]);
			appendStringInfoString(&s, ", ");
		}
	appendStringInfoString(&s, "\"tasks\": {");
	for (t = 0; t < c->ntasks; t++)
	{
		bool		first = true;

		appendStringInfoString(&s, t ? ", " : "");
		json_str(&s, c->tasks[t]);
		appendStringInfoString(&s, ": {");
		for (i = 0; i < nm; i++)
			if (ms[i].domain < 0 && ms[i].task == t)
			{
				json_metric(&s, &ms[i]);
				appendStringInfoString(&s, ", ");
			}
		appendStringInfoString(&s, "\"domains\": {");
		for (i = 0; i < nm; i++)
			if (ms[i].domain >= 0 && ms[i].task == t)
			{
				appendStringInfo(&s, "%s\"%d\": {", first ? "" : ", ", ms[i].domain);
				json_metric(&s, &ms[i]);
				appendStringInfoChar(&s, '}');
				first = false;
			}
		appendStringInfoString(&s, "}}");
	}
	appendStringInfoString(&s, "}}");
	json = MemoryContextStrdup(caller, s.data);
	SPI_finish();
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(json)));
}

/* Adam's first (which = 1) or second (2) moments as a safetensors bytea, the model's tensor names */
static bytea *
moments_bytea(TrainState *st, int which)
{
	PnModel		mm = *st->model;
	size_t		n;
	bytea	   *b;

	mm.data = pn_trainer_moment(st->trainer, which);
	mm.borrowed = true;
	n = pn_safetensors_size(&mm);
	if (n > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("optimizer state of %zu bytes exceeds the 1 GB limit of a bytea value", n)));
	b = (bytea *) palloc(n + VARHDRSZ);
	SET_VARSIZE(b, n + VARHDRSZ);
	pn_safetensors_write(&mm, (uint8_t *) VARDATA(b));
	return b;
}

/*
 * pepnet.optimizer_state exists from extension version 0.2.0 on; a database
 * still at 0.1.0 (library updated, ALTER EXTENSION pepnet UPDATE not yet run)
 * trains as 0.1.0 did, without storing or resuming the optimiser.
 */
static bool
optimizer_table_exists(void)
{
	Oid			ns = get_namespace_oid("pepnet", true);

	return OidIsValid(ns) && OidIsValid(get_relname_relid("optimizer_state", ns));
}

/*
 * Store Adam's state (step count and moments) of a version just saved in
 * pepnet.optimizer_state, a table scoring never reads, so that training
 * continued from the version resumes the optimiser.
 */
static void
optimizer_save(TrainState *st, int32 version)
{
	Oid			argtypes[6] = {TEXTOID, INT4OID, INT8OID, BYTEAOID, BYTEAOID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', 'n', 'n', ' '};
	bool		chunked;

	if (!optimizer_table_exists())
		return;
	/* 0.2.0: the moments in chunks of pepnet.optimizer_chunks (chunks.c), any size */
	chunked = pepnet_optimizer_chunked();
	values[0] = CStringGetTextDatum(st->name);
	values[1] = Int32GetDatum(version);
	values[2] = Int64GetDatum(pn_trainer_steps(st->trainer));
	if (!chunked)
	{
		values[3] = PointerGetDatum(moments_bytea(st, 1));
		values[4] = PointerGetDatum(moments_bytea(st, 2));
		nulls[3] = nulls[4] = ' ';
	}
	values[5] = Int32GetDatum(st->epoch_base + st->epochs_done);
	SPI_connect();
	if (SPI_execute_with_args("INSERT INTO pepnet.optimizer_state (name, version, steps, adam_m, adam_v, epochs) "
							  "VALUES ($1, $2, $3, $4, $5, $6)", 6, argtypes, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "pepnet: could not store the optimizer state of \"%s\" version %d", st->name, version);
	SPI_finish();
	if (chunked)
	{
		int			which;

		for (which = 1; which <= 2; which++)
		{
			PnModel		mm = *st->model;

			mm.data = pn_trainer_moment(st->trainer, which);
			mm.borrowed = true;
			pepnet_write_moment_chunks(st->name, version, which, &mm);
		}
	}
	else
	{
		pfree(DatumGetPointer(values[3]));
		pfree(DatumGetPointer(values[4]));
	}
}

/* Read a moments blob into the trainer's moment array; false if it does not fit the model */
static bool
moments_read(TrainState *st, int which, bytea *b)
{
	PnModel		mm = *st->model;
	PnError		err = {0};

	mm.data = pn_trainer_moment(st->trainer, which);
	mm.borrowed = false;		/* copy into mm.data (mm is never freed) */
	return pn_safetensors_read(&mm, (const uint8_t *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), &err) == PN_OK;
}

/* Resume Adam from the state stored with the parent version; returns the steps resumed (0: fresh) */
static int64
optimizer_load(TrainState *st)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	int64		steps = 0;

	if (st->parent <= 0 || !optimizer_table_exists())
		return 0;
	values[0] = CStringGetTextDatum(st->name);
	values[1] = Int32GetDatum(st->parent);
	SPI_connect();
	if (SPI_execute_with_args("SELECT steps, adam_m, adam_v, epochs FROM pepnet.optimizer_state "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pepnet: could not read the optimizer state of \"%s\" version %d", st->name, st->parent);
	if (SPI_processed == 1)
	{
		bool		n1,
					n2,
					n3;
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		Datum		s = SPI_getbinval(tup, td, 1, &n1);
		Datum		m = SPI_getbinval(tup, td, 2, &n2);
		Datum		v = SPI_getbinval(tup, td, 3, &n3);

		bool		n4;
		Datum		e = SPI_getbinval(tup, td, 4, &n4);

		if (!n1 && n2 && n3 && pepnet_optimizer_chunked())
		{
			/* the moments in chunks (chunks.c), read into the trainer's moment arrays */
			PnModel		mm1 = *st->model,
						mm2 = *st->model;

			mm1.data = pn_trainer_moment(st->trainer, 1);
			mm1.borrowed = false;	/* copy into mm.data (mm is never freed) */
			mm2.data = pn_trainer_moment(st->trainer, 2);
			mm2.borrowed = false;
			n2 = n3 = !(pepnet_read_moment_chunks(st->name, st->parent, 1, &mm1) &&
						pepnet_read_moment_chunks(st->name, st->parent, 2, &mm2));
			m = v = (Datum) 0;
		}
		if (!n1 && !n2 && !n3 &&
			(m == (Datum) 0 ||
			 (moments_read(st, 1, DatumGetByteaPP(m)) && moments_read(st, 2, DatumGetByteaPP(v)))))
		{
			steps = DatumGetInt64(s);
			st->epoch_base = n4 ? 0 : DatumGetInt32(e);
		}
		else
		{
			/* unusable state: start Adam afresh rather than from half-read moments */
			size_t		bytes = sizeof(float) * (size_t) st->model->total;

			memset(pn_trainer_moment(st->trainer, 1), 0, bytes);
			memset(pn_trainer_moment(st->trainer, 2), 0, bytes);
			ereport(WARNING,
					(errmsg("the optimizer state of model \"%s\" version %d does not fit the model; Adam starts afresh",
							st->name, st->parent)));
		}
	}
	SPI_finish();
	pn_trainer_set_steps(st->trainer, steps);
	return steps;
}

/* A number member of a jsonb object, or def when absent */
static double
sched_num(Jsonb *jb, const char *key, double def, double lo, double hi)
{
	JsonbValue	k,
			   *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL || v->type == jbvNull)
		return def;
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule key \"%s\" must be a number", key)));
	{
		double		d = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric)));

		if (!(d >= lo && d <= hi))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lr_schedule key \"%s\" must be between %g and %g, got %g", key, lo, hi, d)));
		return d;
	}
}

/* Parse lr_schedule {"warmup_steps", "decay": "none"|"cosine"|"step", "decay_steps", "gamma", "min_lr"} */
static void
schedule_parse(TrainState *st, Jsonb *jb)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *decay = "none";

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule must be a JSON object"),
				 errhint("E.g. '{\"warmup_steps\": 500, \"decay\": \"cosine\", \"decay_steps\": 20000, \"min_lr\": 1e-5}'.")));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_KEY)
		{
			char	   *key = pnstrdup(v.val.string.val, v.val.string.len);

			if (strcmp(key, "warmup_steps") != 0 && strcmp(key, "decay") != 0 && strcmp(key, "decay_steps") != 0 &&
				strcmp(key, "gamma") != 0 && strcmp(key, "min_lr") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("lr_schedule has unknown key \"%s\"", key),
						 errhint("Known keys: warmup_steps, decay (none, cosine, step), decay_steps, gamma, min_lr.")));
			tok = JsonbIteratorNext(&it, &v, true);
			if (strcmp(key, "decay") == 0)
			{
				if (v.type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("lr_schedule \"decay\" must be \"none\", \"cosine\" or \"step\"")));
				decay = pnstrdup(v.val.string.val, v.val.string.len);
			}
		}
	st->warmup_steps = (int64) sched_num(jb, "warmup_steps", 0, 0, 1e12);
	st->decay_steps = (int64) sched_num(jb, "decay_steps", 0, 0, 1e12);
	st->decay_gamma = sched_num(jb, "gamma", 0.1, 1e-9, 1);
	st->min_lr = sched_num(jb, "min_lr", 0, 0, st->base_lr);
	if (strcmp(decay, "none") == 0)
		st->decay = SCHED_NONE;
	else if (strcmp(decay, "cosine") == 0)
		st->decay = SCHED_COSINE;
	else if (strcmp(decay, "step") == 0)
		st->decay = SCHED_STEP;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule \"decay\" must be \"none\", \"cosine\" or \"step\", got \"%s\"", decay)));
	if (st->decay != SCHED_NONE && st->decay_steps < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule with decay \"%s\" needs \"decay_steps\" of at least 1", decay),
				 errhint("cosine: steps after the warm-up to reach min_lr; step: steps between multiplications by gamma.")));
}

/*
 * pepnet._train_setup(data, validation, lr_schedule, negative_rate): after
 * _train_begin and before the first epoch: check the data and validation
 * queries (columns, types; the validation query must return rows), set
 * the learning-rate schedule and the negative down-sampling rate, and
 * resume Adam from the state stored with the version trained from.
 * Returns jsonb {resumed_steps}.
 */
Datum
pepnet_train_setup(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	PnConfig   *c = &st->model->cfg;
	int64		resumed;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("data query");
	/* the rights to store what training makes, before any work */
	{
		Oid			ns = get_namespace_oid("pepnet", false);
		Oid			models = get_relname_relid("models", ns);
		Oid			opt = get_relname_relid("optimizer_state", ns);
		AclResult	acl;

		if (!OidIsValid(models) || !OidIsValid(opt))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("pepnet's tables are missing"),
					 errhint("Run ALTER EXTENSION pepnet UPDATE.")));
		acl = pg_class_aclcheck(models, GetUserId(), ACL_INSERT);
		if (acl != ACLCHECK_OK)
			aclcheck_error(acl, OBJECT_TABLE, "models");
		acl = pg_class_aclcheck(opt, GetUserId(), ACL_INSERT | ACL_SELECT);
		if (acl != ACLCHECK_OK)
			aclcheck_error(acl, OBJECT_TABLE, "optimizer_state");
	}
	SPI_connect();
	reader_check(text_to_cstring(PG_GETARG_TEXT_PP(0)), c, "data", false);
	if (!PG_ARGISNULL(1))
		reader_check(text_to_cstring(PG_GETARG_TEXT_PP(1)), c, "validation", true);
	SPI_finish();
	if (!PG_ARGISNULL(2))
		schedule_parse(st, PG_GETARG_JSONB_P(2));
	if (!PG_ARGISNULL(3))
	{
		ArrayType  *a = PG_GETARG_ARRAYTYPE_P(3);
		Datum	   *el;
		bool	   *nulls;
		int			n,
					d;
		float	   *w;

		if (ARR_NDIM(a) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("negative_rate must be a 1-D array")));
		deconstruct_array(a, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &el, &nulls, &n);
		if (n != 1 && n != c->domains)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("negative_rate has %d elements: give one rate for every domain or %d, one per domain",
							n, c->domains)));
		w = MemoryContextAlloc(st->cxt, sizeof(float) * c->domains);
		for (d = 0; d < c->domains; d++)
		{
			double		v;

			if (nulls[n == 1 ? 0 : d])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("negative_rate must not contain NULL")));
			v = DatumGetFloat8(el[n == 1 ? 0 : d]);
			if (!(v > 0 && v <= 1))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("negative_rate must be in (0, 1], the share of negatives kept; got %g", v)));
			w[d] = (float) v;
		}
		if (c->neg_rate)
			pfree(c->neg_rate);
		c->neg_rate = w;
	}
	/* selection: "logloss" | "auc" | "pcoc", optionally ":task" (default the first task) */
	{
		char	   *sel = PG_ARGISNULL(4) ? pstrdup("logloss") : text_to_cstring(PG_GETARG_TEXT_PP(4));
		char	   *colon = strchr(sel, ':');
		const char *task = c->tasks[0];
		int			t;

		if (colon)
		{
			*colon = '\0';
			task = colon + 1;
			for (t = 0; t < c->ntasks; t++)
				if (strcmp(c->tasks[t], task) == 0)
					break;
			if (t == c->ntasks)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("selection names task \"%s\", which the model does not have", task),
						 errhint("The model's tasks are in its config; the first is \"%s\".", c->tasks[0])));
		}
		if (strcmp(sel, "logloss") != 0 && strcmp(sel, "auc") != 0 && strcmp(sel, "pcoc") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("selection must be logloss, auc or pcoc, optionally followed by :task, got \"%s\"",
							sel),
					 errhint("logloss: lowest wins; auc: highest wins; pcoc: closest to 1 wins.")));
		resumed = optimizer_load(st);
		{
			StringInfoData o;

			initStringInfo(&o);
			appendStringInfo(&o, "{\"resumed_steps\": %lld, \"selection\": {\"metric\": \"%s\", \"task\": ",
							 (long long) resumed, sel);
			json_str(&o, task);
			appendStringInfoString(&o, "}}");
			PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(o.data)));
		}
	}
}

/* pepnet._train_save(metrics): store the trainer's weights as a new version */
Datum
pepnet_train_save(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	Jsonb	   *metrics = PG_GETARG_JSONB_P(0);
	char	   *mj = JsonbToCString(NULL, &metrics->root, VARSIZE(metrics));
	char	   *cj;
	int32		version;

	int			x;

	/* never store what the loader would refuse (training checks each step; this is the last guard) */
	for (x = 0; x < st->model->ntensors; x++)
	{
		const float *p = PN_T(st->model, x);
		int64		q;

		for (q = 0; q < st->model->tensors[x].numel; q++)
			if (!isfinite(p[q]))
				ereport(ERROR,
						(errcode(ERRCODE_FLOATING_POINT_EXCEPTION),
						 errmsg("training diverged: tensor \"%s\" holds a non-finite value, the version is not stored",
								st->model->tensors[x].name),
						 errhint("Scale dense values or lower the learning rate; earlier epochs' versions are kept.")));
	}
	/* written in chunks from the model's tensors (chunks.c): any size */
	cj = pn_config_to_json(&st->model->cfg);
	if (cj == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	version = pepnet_insert_version(st->name, cj, st->model, mj, st->parent);
	st->parent = version;
	optimizer_save(st, version);
	PG_RETURN_INT32(version);
}

/* pepnet._train_end(): release the trainer */
Datum
pepnet_train_end(PG_FUNCTION_ARGS)
{
	train_free();
	PG_RETURN_VOID();
}

/* pepnet_evaluate(model, data): AUC and logloss per domain and task, and overall */
Datum
pepnet_evaluate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PepnetRef	ref;
	PnModel    *model;
	char		name[PEPNET_NAMELEN];
	int32		version;
	char	   *query;
	Metric	   *ms;
	int			nm,
				i;
	MemoryContext caller;

	if (PG_ARGISNULL(0))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("model reference must not be NULL")));
	if (PG_ARGISNULL(1))
		ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED), errmsg("data query must not be NULL")));
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	/* a private copy: the data query may itself use the backend cache */
	model = pepnet_load_model(&ref, name, &version);
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	InitMaterializedSRF(fcinfo, 0);
	caller = CurrentMemoryContext;
	SPI_connect();
	ms = evaluate(model, query, "data", &nm);
	MemoryContextSwitchTo(caller);
	for (i = 0; i < nm; i++)
	{
		Datum		values[8];
		bool		nulls[8] = {false, false, false, false, false, false, false, false};

		values[0] = Int32GetDatum(ms[i].domain);
		nulls[0] = ms[i].domain < 0;
		values[1] = CStringGetTextDatum(model->cfg.tasks[ms[i].task]);
		values[2] = Int64GetDatum(ms[i].rows);
		values[3] = Float8GetDatum(ms[i].auc);
		nulls[3] = isnan(ms[i].auc);
		values[4] = Float8GetDatum(ms[i].logloss);
		/* 0.2.0: calibration (the 0.1.0 declaration has the first five columns only) */
		values[5] = Float8GetDatum(ms[i].mean_p);
		values[6] = Float8GetDatum(ms[i].rate);
		values[7] = Float8GetDatum(ms[i].rate > 0 ? ms[i].mean_p / ms[i].rate : 0);
		nulls[7] = !(ms[i].rate > 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
