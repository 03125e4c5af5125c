/*
 * reader.c
 *		The data-query reader of training, evaluation and batch scoring:
 *		a query prepared with the caller's rights and refused unless it is
 *		one read-only SELECT, opened as a cursor; its columns located by
 *		name and checked against the model (domain, persona, features,
 *		dense, label or labels; a named version's columns by features.c);
 *		rows fetched and decoded into columnar
 *		arrays, each value checked, a fault naming its row in the error
 *		context ("data query row N").
 */
#include "reader.h"
#include "features.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"

/* errcontext of a RowContext: "data query row N" */
void
row_context_callback(void *arg)
{
	RowContext *rc = (RowContext *) arg;

	if (rc->row > 0)
		errcontext("%s query row %lld", rc->what, (long long) rc->row);
}

/* Allocate row arrays for cap rows */
void
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
	r->bags = features_bags_new(c, cap);
}

/* Copy row si of src to row di of dst */
void
rows_copy(Rows *dst, int di, const Rows *src, int si, const PnConfig *c)
{
	dst->rowno[di] = src->rowno[si];
	dst->domain[di] = src->domain[si];
	memcpy(dst->persona + (size_t) di * c->npers, src->persona + (size_t) si * c->npers, sizeof(int64) * c->npers);
	memcpy(dst->features + (size_t) di * c->nfeat, src->features + (size_t) si * c->nfeat, sizeof(int64) * c->nfeat);
	memcpy(dst->dense + (size_t) di * c->dense, src->dense + (size_t) si * c->dense, sizeof(float) * c->dense);
	memcpy(dst->labels + (size_t) di * c->ntasks, src->labels + (size_t) si * c->ntasks, sizeof(float) * c->ntasks);
	if (dst->bags)
		features_bags_copy(c, dst->bags + (size_t) di * (c->nfeat + c->npers),
						   src->bags + (size_t) si * (c->nfeat + c->npers));
}

/*
 * The hint of a missing label: the query's columns the arrays form does
 * not read (a misspelled "label" is one of them).
 */
static char *
unused_columns_hint(TupleDesc td)
{
	StringInfoData b;
	int			i,
				n = 0;

	initStringInfo(&b);
	for (i = 0; i < td->natts; i++)
	{
		const char *col = NameStr(TupleDescAttr(td, i)->attname);

		if (TupleDescAttr(td, i)->attisdropped || strcmp(col, "domain") == 0 || strcmp(col, "persona") == 0 ||
			strcmp(col, "features") == 0 || strcmp(col, "dense") == 0)
			continue;
		appendStringInfo(&b, "%s%s", n++ ? ", " : "", quote_identifier(col));
	}
	if (n == 0)
		return "Return the label as a column named label (one task) or labels real[] (one per task, in config order).";
	return psprintf("Return the label as a column named label (one task) or labels real[] (one per task, in config order); "
					"the query's other columns are %s.", b.data);
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
 * Prepare query (with the caller's rights), refusing anything but one
 * read-only SELECT (no data-modifying WITH, no FOR UPDATE, one statement)
 * with 22023 "<what> query must be a single read-only SELECT" and hint.
 * Also for other queries pepnet reads (pepnet_import_chunks).
 */
SPIPlanPtr
pepnet_prepare_select(const char *query, const char *what, const char *hint)
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
				readonly &= !((Query *) lfirst(lc))->hasModifyingCTE && ((Query *) lfirst(lc))->rowMarks == NIL;
		if (!readonly || !SPI_is_cursor_plan(plan))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s query must be a single read-only SELECT", what),
					 errhint("%s", hint)));
	}
	return plan;
}

/* Prepare a data query; the hint says what the query is for (scoring or not) */
static SPIPlanPtr
reader_prepare(const char *query, const char *what, bool scoring)
{
	return pepnet_prepare_select(query, what, scoring ?
								 "Give one SELECT (or VALUES or TABLE) that returns the rows to score; pepnet_score_query "
								 "never runs statements that write, EXPLAIN or more than one statement." :
								 "Give one SELECT (or VALUES or TABLE) that returns the training or evaluation rows; pepnet "
								 "never runs statements that write, EXPLAIN or more than one statement.");
}

/*
 * Locate and check the columns of a data query's result: domain int,
 * persona bigint[] (optional, or NULL, when the model has no persona
 * fields), features bigint[], optional dense real[], and label (real,
 * float8, int, bool, numeric) or labels real[].  A scoring reader
 * (pepnet_score_query) reads no labels: label columns are keys to it.
 */
static void
reader_columns(Reader *r, TupleDesc td, const PnConfig *cfg, const char *what, bool scoring)
{
	memset(r, 0, sizeof(*r));
	r->cfg = cfg;
	r->what = what;
	r->scoring = scoring;
	if (cfg->inputs == PN_INPUTS_COLUMNS)
	{
		/* the named form: each field from the column of its name (features.c) */
		char	   *q = psprintf("%s query", what);

		r->fb = features_bind(td, cfg, q, scoring ? NULL : q, !scoring);
		r->values = palloc(sizeof(Datum) * (td->natts + 1));
		r->nulls = palloc(sizeof(bool) * (td->natts + 1));
		return;
	}
	{
		char	   *q = psprintf("%s query", what);

		/* each column the arrays form reads, once (42702 when twice) */
		r->c_domain = features_column(td, "domain", q);
		r->c_persona = features_column(td, "persona", q);
		r->c_features = features_column(td, "features", q);
		r->c_dense = features_column(td, "dense", q);
		r->c_label = scoring ? 0 : features_column(td, "label", q);
		r->c_labels = scoring ? 0 : features_column(td, "labels", q);
	}
	if (!r->c_domain || (!r->c_persona && cfg->npers > 0) || !r->c_features)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s query lacks column \"%s\"", what,
						!r->c_domain ? "domain" : !r->c_features ? "features" : "persona"),
				 scoring ?
				 errhint("The query must return columns named domain int, persona bigint[] (when the model has persona fields), "
						 "features bigint[], dense real[] (when it has dense features), and any key columns to pass through.") :
				 errhint("The query must return columns named domain int, persona bigint[] (when the model has "
						 "persona fields), features bigint[], optionally dense real[], and label or labels real[].")));
	r->domain_type = SPI_gettypeid(td, r->c_domain);
	if (r->domain_type != INT4OID && r->domain_type != INT2OID && r->domain_type != INT8OID)
		expect_type(r, td, r->c_domain, "domain", INT4OID, "int");
	if (r->c_persona)
		expect_type(r, td, r->c_persona, "persona", INT8ARRAYOID, "bigint[]");
	expect_type(r, td, r->c_features, "features", INT8ARRAYOID, "bigint[]");
	if (r->c_dense && cfg->dense == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s query has a column \"dense\" but the model has no dense features", what),
				 errdetail("Its values would be ignored, as pepnet_score refuses them."),
				 errhint("Leave the column out of the query, or train a model whose config declares \"dense\": N.")));
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
	else if (!scoring)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s query lacks column \"label\" or \"labels\"", what),
				 errhint("%s", unused_columns_hint(td))));
}

/*
 * Open a data query as a read-only cursor and check its columns; scoring:
 * a query of pepnet_score_query (no labels, other columns are keys).
 */
void
reader_open(Reader *r, const char *query, const PnConfig *cfg, const char *what, bool scoring)
{
	SPIPlanPtr	plan = reader_prepare(query, what, scoring);
	Portal		portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	reader_columns(r, portal->tupDesc, cfg, what, scoring);
	r->portal = portal;
	r->plan = plan;
	r->ctx = palloc0(sizeof(RowContext));
	r->ctx->what = what;
}

/*
 * Check a query before any work: its columns from the plan's result
 * description (nothing runs), and, with need_rows, that it returns a row.
 */
void
reader_check(const char *query, const PnConfig *cfg, const char *what, bool need_rows)
{
	SPIPlanPtr	plan = reader_prepare(query, what, false);
	List	   *srcs = SPI_plan_get_plan_sources(plan);
	CachedPlanSource *src = (CachedPlanSource *) linitial(srcs);
	Reader		r;

	if (src->resultDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s query must be a single read-only SELECT", what)));
	reader_columns(&r, src->resultDesc, cfg, what, false);
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

/*
 * A named config's id kinds not yet fixed ("id" absent), from the data
 * query's columns (nothing runs): pepnet_train fixes them before any
 * training, so that its validation query is checked against them.
 */
void
reader_fill_ids(const char *query, PnConfig *cfg)
{
	SPIPlanPtr	plan;
	CachedPlanSource *src;

	if (cfg->inputs != PN_INPUTS_COLUMNS)
		return;
	plan = reader_prepare(query, "data", false);
	src = (CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan));
	if (src->resultDesc != NULL)
		features_fill_ids(features_bind(src->resultDesc, cfg, "data query", "data query", true), cfg);
	SPI_freeplan(plan);
}

/* one id of a vocabulary field and its count (reader_dense_stats) */
typedef struct VocabCount
{
	int64		id;
	int64		count;
} VocabCount;

/* count one id in a vocabulary field's table (features_field_ids' callback) */
static void
vocab_count(int64 id, void *arg)
{
	bool		found;
	VocabCount *e = hash_search((HTAB *) arg, &id, HASH_ENTER, &found);

	if (!found)
		e->count = 0;
	e->count++;
}

/* the most frequent first, ties by the smaller id */
static int
vocab_count_cmp(const void *a, const void *b)
{
	const VocabCount *x = a,
			   *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id ? 1 : 0;
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a,
				y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * A vocabulary field's vocabulary from its ids' counts: the ids seen at
 * least min_count times, at most buckets - 1 of them (the most frequent,
 * ties by the smaller id), ascending, palloc'd in the current context.
 */
static int64 *
vocab_select(HTAB *h, const PnField *f, int64 *nout)
{
	HASH_SEQ_STATUS seq;
	VocabCount *e,
			   *kept;
	int64		n = 0,
				i,
				cap = hash_get_num_entries(h),
				max = f->buckets - 1;
	int64	   *ids;

	kept = palloc_extended(sizeof(VocabCount) * (cap + 1), MCXT_ALLOC_HUGE);
	hash_seq_init(&seq, h);
	while ((e = hash_seq_search(&seq)) != NULL)
	{
		if ((n & 65535) == 0)
			CHECK_FOR_INTERRUPTS();
		if (e->count >= f->min_count)
			kept[n++] = *e;
	}
	if (n > max)
	{
		qsort(kept, n, sizeof(VocabCount), vocab_count_cmp);
		n = max;
	}
	CHECK_FOR_INTERRUPTS();
	ids = palloc_extended(sizeof(int64) * (n + 1), MCXT_ALLOC_HUGE);
	for (i = 0; i < n; i++)
		ids[i] = kept[i].id;
	qsort(ids, n, sizeof(int64), int64_cmp);
	pfree(kept);
	*nout = n;
	return ids;
}

/*
 * What pepnet_train computes from its data query before the first step, in
 * one read of it:
 * - the mean and population standard deviation of every z-scored dense
 *   field whose config has none, over the query's non-NULL values after the
 *   field's log1p and clip.  A standard deviation of 0 (or a field without
 *   values) is stored as 1.  The values are kept in cfg, so the version
 *   stores them.
 * - with vocab (not NULL): the vocabulary of every feature and persona
 *   field with "min_count" (vocab[g], nvocab[g] for field g, the F features
 *   then the P persona fields; NULL for the others): the ids seen at least
 *   min_count times, at most buckets - 1 of them, ascending (vocab_select).
 *   The counts live in hash tables of a memory context deleted at the end.
 */
void
reader_dense_stats(const char *query, PnConfig *cfg, int64 **vocab, int64 *nvocab)
{
	SPIPlanPtr	plan;
	CachedPlanSource *src;
	FeatureBinding *fb;
	Portal		portal;
	RowContext	rc;
	ErrorContextCallback cb;
	Datum	   *values;
	bool	   *nulls;
	double	   *mean,
			   *m2;
	int64	   *n,
				rowno = 0;
	int			Nd = cfg->dense,
				G = cfg->nfeat + cfg->npers,
				i;
	bool		need = false;
	HTAB	  **counts = NULL;
	MemoryContext vcxt = NULL;

	if (cfg->inputs != PN_INPUTS_COLUMNS)
		return;
	for (i = 0; i < Nd; i++)
		need |= cfg->dfield[i].zscore && !cfg->dfield[i].stats;
	if (vocab)
	{
		for (i = 0; i < G; i++)
		{
			const PnField *f = i < cfg->nfeat ? &cfg->feat[i] : &cfg->pers[i - cfg->nfeat];

			vocab[i] = NULL;
			nvocab[i] = 0;
			if (f->min_count > 0)
			{
				HASHCTL		ctl;

				if (counts == NULL)
				{
					vcxt = AllocSetContextCreate(CurrentMemoryContext, "pepnet vocabulary", ALLOCSET_DEFAULT_SIZES);
					counts = MemoryContextAllocZero(vcxt, sizeof(HTAB *) * G);
				}
				memset(&ctl, 0, sizeof(ctl));
				ctl.keysize = sizeof(int64);
				ctl.entrysize = sizeof(VocabCount);
				ctl.hcxt = vcxt;
				counts[i] = hash_create("pepnet vocabulary counts", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
				need = true;
			}
		}
	}
	if (!need)
		return;
	plan = reader_prepare(query, "data", false);
	src = (CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan));
	if (src->resultDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("data query must be a single read-only SELECT")));
	fb = features_bind(src->resultDesc, cfg, "data query", "data query", false);
	values = palloc(sizeof(Datum) * fb->natts);
	nulls = palloc(sizeof(bool) * fb->natts);
	mean = palloc0(sizeof(double) * (Nd + 1));
	m2 = palloc0(sizeof(double) * (Nd + 1));
	n = palloc0(sizeof(int64) * (Nd + 1));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	rc.what = "data";
	rc.row = 0;
	cb.callback = row_context_callback;
	cb.arg = &rc;
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	for (;;)
	{
		uint64		k;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (k = 0; k < SPI_processed; k++)
		{
			rc.row = ++rowno;
			heap_deform_tuple(SPI_tuptable->vals[k], SPI_tuptable->tupdesc, values, nulls);
			for (i = 0; i < Nd; i++)
			{
				float		v;
				double		d;

				if (!cfg->dfield[i].zscore || cfg->dfield[i].stats ||
					!features_dense_value(fb, i, values, nulls, &v))
					continue;
				/* Welford's update */
				d = v - mean[i];
				n[i]++;
				mean[i] += d / n[i];
				m2[i] += d * (v - mean[i]);
			}
			if (counts)
				for (i = 0; i < G; i++)
					if (counts[i] != NULL)	/* NULL ids use the missing row: not counted */
						features_field_ids(fb, i, values, nulls, vocab_count, counts[i]);
		}
		SPI_freetuptable(SPI_tuptable);
	}
	error_context_stack = cb.previous;
	SPI_cursor_close(portal);
	SPI_freeplan(plan);
	for (i = 0; i < Nd; i++)
	{
		PnField    *f = &cfg->dfield[i];
		float		sd;

		if (!f->zscore || f->stats)
			continue;
		sd = n[i] > 0 ? (float) sqrt(m2[i] / n[i]) : 0.0f;
		f->mean = (float) mean[i];
		f->std = sd >= FLT_MIN && isfinite(sd) ? sd : 1.0f;	/* 0 (or subnormal): 1 */
		f->stats = true;
	}
	if (counts)
	{
		for (i = 0; i < G; i++)
			if (counts[i])
				vocab[i] = vocab_select(counts[i], i < cfg->nfeat ? &cfg->feat[i] : &cfg->pers[i - cfg->nfeat],
										&nvocab[i]);
		MemoryContextDelete(vcxt);
	}
	pfree(values);
	pfree(nulls);
	pfree(mean);
	pfree(m2);
	pfree(n);
}

/*
 * The result columns of a data query (a copy in the current memory
 * context), from its plan: nothing runs.  pepnet_train reads the form of a
 * new config's inputs from it.
 */
TupleDesc
reader_describe(const char *query, const char *what)
{
	SPIPlanPtr	plan = reader_prepare(query, what, false);
	CachedPlanSource *src = (CachedPlanSource *) linitial(SPI_plan_get_plan_sources(plan));
	TupleDesc	td;

	if (src->resultDesc == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s query must be a single read-only SELECT", what)));
	td = CreateTupleDescCopy(src->resultDesc);
	SPI_freeplan(plan);
	return td;
}

/*
 * Error about a value of the current row (the row is named by the error
 * context): "data query: domain is NULL"; a scoring reader's messages lack
 * the prefix ("domain is NULL").
 */
static void row_error(Reader *r, int sqlstate, const char *fmt,...) pg_attribute_printf(3, 4);

static void
row_error(Reader *r, int sqlstate, const char *fmt,...)
{
	char		buf[1024];		/* room for any message: never cut inside a character */
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (r->scoring)
		ereport(ERROR,
				(errcode(sqlstate),
				 errmsg("%s", buf)));
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

/*
 * Decode and check the model inputs of one tuple: *domain, persona [P],
 * features [F], dense [Nd] (dense unused when the model has none).
 */
void
reader_decode_inputs(Reader *r, HeapTuple tup, TupleDesc td, int32 *domain, int64 *persona,
					 int64 *features, float *dense, RowBag *bags)
{
	const PnConfig *c = r->cfg;
	bool		isnull;
	Datum		d;
	int			t;

	if (r->fb)
	{
		heap_deform_tuple(tup, td, r->values, r->nulls);
		features_decode(r->fb, r->values, r->nulls, domain, persona, features, dense, NULL, bags);
		return;
	}
	d = SPI_getbinval(tup, td, r->c_domain, &isnull);
	if (isnull)
		row_error(r, ERRCODE_NULL_VALUE_NOT_ALLOWED, "domain is NULL");
	{
		Oid			dt = r->domain_type;
		int64		v = dt == INT2OID ? DatumGetInt16(d) : dt == INT8OID ? DatumGetInt64(d) : DatumGetInt32(d);

		if (v < 0 || v >= c->domains)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "domain %lld is out of range: the model has %d domains", (long long) v, c->domains);
		*domain = (int32) v;
	}
	if (r->c_persona)
		get_array(r, tup, td, r->c_persona, "persona", c->npers, sizeof(int64), persona);
	get_array(r, tup, td, r->c_features, "features", c->nfeat, sizeof(int64), features);
	for (t = 0; t < c->nfeat; t++)
	{
		int64		id = features[t];

		if (pn_slot(&c->feat[t], t, id) < 0)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "feature id " INT64_FORMAT " of field \"%s\" is outside [0, " INT64_FORMAT ")",
					  id, c->feat[t].name, (int64) c->feat[t].buckets);
	}
	for (t = 0; t < c->npers; t++)
	{
		int64		id = persona[t];

		if (pn_slot(&c->pers[t], t, id) < 0)
			row_error(r, ERRCODE_INVALID_PARAMETER_VALUE, "persona id " INT64_FORMAT " of field \"%s\" is outside [0, " INT64_FORMAT ")",
					  id, c->pers[t].name, (int64) c->pers[t].buckets);
	}
	if (c->dense)
	{
		get_array(r, tup, td, r->c_dense, "dense", c->dense, sizeof(float), dense);
		for (t = 0; t < c->dense; t++)
			if (!isfinite(dense[t]))
				row_error(r, ERRCODE_DATA_EXCEPTION, "dense value %d is %s", t + 1, isnan(dense[t]) ? "NaN" : "infinity");
	}
}

/* Decode one tuple into row i of dst: its inputs, then its labels (NaN = unknown) */
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
	if (r->fb)
	{
		heap_deform_tuple(tup, td, r->values, r->nulls);
		features_decode(r->fb, r->values, r->nulls, dst->domain + i, dst->persona + (size_t) i * c->npers,
						dst->features + (size_t) i * c->nfeat, dst->dense + (size_t) i * c->dense, lab,
						dst->bags ? dst->bags + (size_t) i * (c->nfeat + c->npers) : NULL);
		return;
	}
	reader_decode_inputs(r, tup, td, dst->domain + i, dst->persona + (size_t) i * c->npers,
						 dst->features + (size_t) i * c->nfeat, dst->dense + (size_t) i * c->dense, NULL);
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
int
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

/*
 * Raise a core error of training or evaluation with pepnet_sqlstate's code
 * (non-finite values 22P01, bad input 22023; malformed weights and engine
 * failures XX001); a row the core blames is named in the context as the
 * data query's row.
 */
void
train_core_error(PnError *err, const char *what, const Rows *rows)
{
	RowContext	rc;
	ErrorContextCallback cb;

	rc.what = what;
	rc.row = (rows && err->row >= 0 && err->row < rows->n) ? rows->rowno[err->row] : 0;
	cb.callback = row_context_callback;
	cb.arg = &rc;
	pepnet_report_rows(err, ERRCODE_DATA_CORRUPTED, ERRCODE_DATA_CORRUPTED,
					   err->code == PN_ENUMERIC ?
					   "The versions of earlier epochs are kept; nothing of this epoch was stored." : NULL,
					   &cb);
	pg_unreachable();
}
