/*
 * batch.c
 *		pepnet_score_query(model, data): score every row a query returns.
 *
 * The data query names its columns like training's: domain int, persona
 * bigint[] (optional when the model has no persona fields), features
 * bigint[], dense real[] when the model has dense features.  Every other
 * column is a key, passed through in query order, followed by score float8
 * and scores float8[]; the caller's column definition list says their types:
 *
 *   SELECT * FROM pepnet_score_query('ctr', 'SELECT user_id, item_id, domain, persona, features FROM c')
 *     AS t(user_id bigint, item_id bigint, score float8, scores float8[]);
 *
 * A version of the named form ("inputs": "columns") reads its fields from
 * the columns of their names (features.c), and every column of the query
 * is a key, the fields' included.
 *
 * The query is read by training's reader (reader.c: a read-only cursor
 * with the caller's rights, the same column and row checks, messages and
 * SQLSTATEs, "data query row N" in the error context), in blocks of
 * BATCH_ROWS rows.  Within a block the rows are grouped by
 * (domain, persona) so that each group is one request of the batched engine
 * (GEMMs over tiles); results come out in the query's row order.  A
 * candidate's score is the one pepnet_score gives it (the same tiles).
 */
#include "reader.h"
#include "features.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"

PG_FUNCTION_INFO_V1(pepnet_score_query);

#define BATCH_ROWS 8192

/* the data query: the shared reader (reader.c) and the key columns passed through */
typedef struct BatchReader
{
	Reader		rd;				/* rd.ctx->row: 1-based row of the query being read */
	int			nkeys;
	int		   *keycol;			/* [nkeys] query columns passed through */
} BatchReader;

/* One block of decoded rows */
typedef struct Block
{
	int			n;
	int32	   *domain;			/* [n] */
	int64	   *persona;		/* [n, P] */
	int64	   *features;		/* [n, F] */
	float	   *dense;			/* [n, Nd] */
	Datum	   *keys;			/* [n, nkeys] */
	bool	   *keynulls;
	int		   *order;			/* rows sorted by (domain, persona) */
	int64	   *gfeat;			/* one group's features, contiguous */
	float	   *gdense;
	double	   *gout;			/* one group's scores [n, T] */
	double	   *out;			/* [n, T] in row order */
	RowBag	   *bags;			/* [n, F + P] multi-valued fields' ids, NULL when none */
	BagBlock	gbags;			/* one group's, as the core takes them */
} Block;

/*
 * Open the data query (a single read-only SELECT, the caller's rights) and
 * check its columns against the model and the result columns the caller
 * declared (keys, then score float8, scores float8[]).
 */
static void
batch_open(BatchReader *r, const char *query, const PnConfig *cfg, TupleDesc result)
{
	TupleDesc	td;
	Reader	   *rd = &r->rd;
	int			i,
				k;

	reader_open(rd, query, cfg, "data", true);
	td = rd->portal->tupDesc;

	/* key columns: the rest, in query order, must match the declared result */
	r->keycol = palloc(sizeof(int) * (td->natts + 1));
	r->nkeys = 0;
	for (i = 1; i <= td->natts; i++)
		if (!TupleDescAttr(td, i - 1)->attisdropped &&
			(rd->fb != NULL ||	/* the named form: every column passes through */
			 (i != rd->c_domain && i != rd->c_persona && i != rd->c_features && i != rd->c_dense)))
			r->keycol[r->nkeys++] = i;
	if (result->natts != r->nkeys + 2)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the column definition list has %d columns, expected %d: the data query's %d key columns, then score float8 and scores float8[]",
						result->natts, r->nkeys + 2, r->nkeys)));
	for (k = 0; k < r->nkeys; k++)
	{
		Oid			got = SPI_gettypeid(td, r->keycol[k]),
					want = TupleDescAttr(result, k)->atttypid;

		if (got != want)
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("key column \"%s\" of the data query has type %s, the column definition list says %s",
							NameStr(TupleDescAttr(td, r->keycol[k] - 1)->attname), format_type_be(got),
							format_type_be(want))));
	}
	if (TupleDescAttr(result, r->nkeys)->atttypid != FLOAT8OID ||
		TupleDescAttr(result, r->nkeys + 1)->atttypid != FLOAT8ARRAYOID)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the last two columns of the column definition list must be score float8, scores float8[]")));
}

/* Decode tuple into row i of the block: the model inputs (reader.c), then the keys */
static void
decode(BatchReader *r, const PnConfig *c, HeapTuple tup, TupleDesc td, Block *b, int i)
{
	bool		isnull;
	Datum		d;
	int			t;

	reader_decode_inputs(&r->rd, tup, td, b->domain + i, b->persona + (size_t) i * c->npers,
						 b->features + (size_t) i * c->nfeat, b->dense + (size_t) i * c->dense,
						 b->bags ? b->bags + (size_t) i * (c->nfeat + c->npers) : NULL);
	for (t = 0; t < r->nkeys; t++)
	{
		Form_pg_attribute a = TupleDescAttr(td, r->keycol[t] - 1);

		d = SPI_getbinval(tup, td, r->keycol[t], &isnull);
		b->keynulls[(size_t) i * r->nkeys + t] = isnull;
		b->keys[(size_t) i * r->nkeys + t] = isnull ? (Datum) 0 : datumCopy(d, a->attbyval, a->attlen);
	}
}

/* qsort by (domain, persona), then row: stable groups */
static const Block *sort_block;
static const PnConfig *sort_cfg;
static int	sort_npers;

/* the order of rows x and y by their multi-valued persona fields' bags */
static int
bags_cmp(const PnConfig *c, const Block *b, int x, int y)
{
	int			nf = c->nfeat + c->npers;

	if (b->bags == NULL)
		return 0;
	return features_bags_cmp_persona(c, b->bags + (size_t) x * nf, b->bags + (size_t) y * nf);
}

static int
row_cmp(const void *pa, const void *pb)
{
	int			a = *(const int *) pa,
				b = *(const int *) pb,
				i;

	if (sort_block->domain[a] != sort_block->domain[b])
		return sort_block->domain[a] < sort_block->domain[b] ? -1 : 1;
	for (i = 0; i < sort_npers; i++)
	{
		int64		x = sort_block->persona[(size_t) a * sort_npers + i],
					y = sort_block->persona[(size_t) b * sort_npers + i];

		if (x != y)
			return x < y ? -1 : 1;
	}
	i = bags_cmp(sort_cfg, sort_block, a, b);
	if (i != 0)
		return i;
	return a < b ? -1 : a > b;
}

static bool
same_group(const PnConfig *c, const Block *b, int npers, int x, int y)
{
	return b->domain[x] == b->domain[y] &&
		(npers == 0 || memcmp(b->persona + (size_t) x * npers, b->persona + (size_t) y * npers, sizeof(int64) * npers) == 0) &&
		bags_cmp(c, b, x, y) == 0;
}

/* Score the rows of a block, group by group; b->out [n, T] in row order */
static void
score_block(PepnetEntry *e, Block *b, BatchReader *r)
{
	const PnConfig *c = &e->model->cfg;
	int			F = c->nfeat,
				P = c->npers,
				Nd = c->dense,
				T = c->ntasks,
				start = 0,
				i;

	for (i = 0; i < b->n; i++)
		b->order[i] = i;
	sort_block = b;
	sort_cfg = c;
	sort_npers = P;
	qsort(b->order, b->n, sizeof(int), row_cmp);
	while (start < b->n)
	{
		int			end = start + 1,
					g,
					first = b->order[start];
		PnDomainCache *dc;
		PnPersona  *pp = NULL;
		PnEngine   *eng;
		PnError		err = {0};

		while (end < b->n && same_group(c, b, P, first, b->order[end]))
			end++;
		g = end - start;
		for (i = 0; i < g; i++)
		{
			int			row = b->order[start + i];

			memcpy(b->gfeat + (size_t) i * F, b->features + (size_t) row * F, sizeof(int64) * F);
			if (Nd)
				memcpy(b->gdense + (size_t) i * Nd, b->dense + (size_t) row * Nd, sizeof(float) * Nd);
		}
		dc = pepnet_cache_domain(e, b->domain[first]);
		eng = pepnet_cache_engine(e, pepnet_precision, dc);
		if (b->bags)
			features_bags_block(c, &b->gbags, b->bags, b->order + start, g);
		if (pn_persona_build_bags(e->model, P ? b->persona + (size_t) first * P : NULL, b->bags ? b->gbags.pbag : NULL,
								  &pp, &err) != PN_OK ||
			pn_engine_score_bags(eng, dc, pp, g, b->gfeat, b->bags ? b->gbags.fbag : NULL, Nd ? b->gdense : NULL,
								 b->gout, pepnet_interrupt_check, &err) != PN_OK)
		{
			if (err.row >= 0)
			{
				r->rd.ctx->row = r->rd.ctx->row - b->n + 1 + b->order[start + err.row];
				err.row = -1;
			}
			pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
		}
		pn_persona_free(pp);
		for (i = 0; i < g; i++)
			memcpy(b->out + (size_t) b->order[start + i] * T, b->gout + (size_t) i * T, sizeof(double) * T);
		start = end;
	}
}

/* pepnet_score_query(model text, data text) RETURNS SETOF record */
Datum
pepnet_score_query(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PepnetRef	pr;
	PepnetEntry *e;
	const PnConfig *c;
	char	   *query;
	BatchReader r;
	Block		b;
	ErrorContextCallback ecb;
	MemoryContext blockcxt,
				old;
	Datum	   *values;
	bool	   *nulls;
	ArrayType  *arr;
	int			T;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("data query");
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &pr);
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	e = pepnet_cache_get(&pr);
	c = &e->model->cfg;
	T = c->ntasks;

	memset(&r, 0, sizeof(r));
	pepnet_spi_connect();
	batch_open(&r, query, c, rsinfo->setDesc);

	/* block buffers, allocated once */
	memset(&b, 0, sizeof(b));
	b.domain = palloc(sizeof(int32) * BATCH_ROWS);
	b.persona = palloc(sizeof(int64) * BATCH_ROWS * (c->npers + 1));
	b.features = palloc(sizeof(int64) * BATCH_ROWS * (c->nfeat + 1));
	b.dense = palloc(sizeof(float) * BATCH_ROWS * (c->dense + 1));
	b.keys = palloc(sizeof(Datum) * BATCH_ROWS * (r.nkeys + 1));
	b.keynulls = palloc(sizeof(bool) * BATCH_ROWS * (r.nkeys + 1));
	b.order = palloc(sizeof(int) * BATCH_ROWS);
	b.gfeat = palloc(sizeof(int64) * BATCH_ROWS * (c->nfeat + 1));
	b.gdense = palloc(sizeof(float) * BATCH_ROWS * (c->dense + 1));
	b.gout = palloc(sizeof(double) * BATCH_ROWS * T);
	b.out = palloc(sizeof(double) * BATCH_ROWS * T);
	b.bags = features_bags_new(c, BATCH_ROWS);
	values = palloc(sizeof(Datum) * (r.nkeys + 2));
	nulls = palloc0(sizeof(bool) * (r.nkeys + 2));
	arr = scores_array(T);
	blockcxt = AllocSetContextCreate(CurrentMemoryContext, "pepnet score query block", ALLOCSET_DEFAULT_SIZES);

	ecb.callback = row_context_callback;
	ecb.arg = r.rd.ctx;
	ecb.previous = error_context_stack;
	error_context_stack = &ecb;

	for (;;)
	{
		int			i,
					k;
		int64		first_row = r.rd.ctx->row;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(r.rd.portal, true, BATCH_ROWS);
		if (SPI_processed == 0)
			break;
		MemoryContextReset(blockcxt);
		old = MemoryContextSwitchTo(blockcxt);
		b.n = (int) SPI_processed;
		for (i = 0; i < b.n; i++)
		{
			r.rd.ctx->row++;
			decode(&r, c, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &b, i);
		}
		MemoryContextSwitchTo(old);
		SPI_freetuptable(SPI_tuptable);
		score_block(e, &b, &r);
		r.rd.ctx->row = first_row + b.n;
		for (i = 0; i < b.n; i++)
		{
			for (k = 0; k < r.nkeys; k++)
			{
				values[k] = b.keys[(size_t) i * r.nkeys + k];
				nulls[k] = b.keynulls[(size_t) i * r.nkeys + k];
			}
			values[r.nkeys] = Float8GetDatum(b.out[(size_t) i * T]);
			memcpy(ARR_DATA_PTR(arr), b.out + (size_t) i * T, sizeof(float8) * T);
			values[r.nkeys + 1] = PointerGetDatum(arr);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	error_context_stack = ecb.previous;
	SPI_cursor_close(r.rd.portal);
	SPI_finish();
	return (Datum) 0;
}
