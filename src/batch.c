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
 *
 * A query of more than one block is scored in parallel workers (below,
 * pq_run): the leader reads and decodes, the workers score blocks, the
 * leader puts the rows out in order; the same blocks by the same code, so
 * the same scores.
 */
#include "reader.h"
#include "features.h"

#include <math.h>

#include "access/parallel.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "optimizer/clauses.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "storage/shm_toc.h"
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
	int64		first_row;		/* rows of the query before this block */
	int32	   *domain;			/* [n] */
	int64	   *persona;		/* [n, P] */
	int64	   *features;		/* [n, F] */
	float	   *dense;			/* [n, Nd] */
	Datum	   *keys;			/* [n, nkeys] */
	bool	   *keynulls;
	MemoryContext keycxt;		/* the keys' values */
	int		   *order;			/* rows sorted by (domain, persona) */
	int64	   *gfeat;			/* one group's features, contiguous */
	float	   *gdense;
	double	   *gout;			/* one group's scores [n, T] */
	double	   *out;			/* [n, T] in row order */
	RowBag	   *bags;			/* [n, F + P] multi-valued fields' ids, NULL when none */
	BagBlock	gbags;			/* one group's, as the core takes them */
	int			slot;			/* parallel: the worker scoring it, -1 the leader (scored) */
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

/*
 * Score the rows of a block, group by group; b->out [n, T] in row order.
 * A row's error names it in ctx (the query's row).
 */
static void
score_block(PepnetEntry *e, int precision, Block *b, RowContext *ctx)
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
		eng = pepnet_cache_engine(e, precision, dc);
		if (b->bags)
			features_bags_block(c, &b->gbags, b->bags, b->order + start, g);
		if (pn_persona_build_bags(e->model, P ? b->persona + (size_t) first * P : NULL, b->bags ? b->gbags.pbag : NULL,
								  &pp, &err) != PN_OK ||
			pn_engine_score_bags(eng, dc, pp, g, b->gfeat, b->bags ? b->gbags.fbag : NULL, Nd ? b->gdense : NULL,
								 b->gout, pepnet_interrupt_check, &err) != PN_OK)
		{
			if (err.row >= 0)
			{
				ctx->row = b->first_row + 1 + b->order[start + err.row];
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

/* Buffers for a block of up to BATCH_ROWS rows, allocated once */
static void
block_alloc(Block *b, const PnConfig *c, int nkeys)
{
	int			T = c->ntasks;

	memset(b, 0, sizeof(*b));
	b->domain = palloc(sizeof(int32) * BATCH_ROWS);
	b->persona = palloc(sizeof(int64) * BATCH_ROWS * (c->npers + 1));
	b->features = palloc(sizeof(int64) * BATCH_ROWS * (c->nfeat + 1));
	b->dense = palloc(sizeof(float) * BATCH_ROWS * (c->dense + 1));
	b->keys = palloc(sizeof(Datum) * BATCH_ROWS * (nkeys + 1));
	b->keynulls = palloc(sizeof(bool) * BATCH_ROWS * (nkeys + 1));
	b->order = palloc(sizeof(int) * BATCH_ROWS);
	b->gfeat = palloc(sizeof(int64) * BATCH_ROWS * (c->nfeat + 1));
	b->gdense = palloc(sizeof(float) * BATCH_ROWS * (c->dense + 1));
	b->gout = palloc(sizeof(double) * BATCH_ROWS * T);
	b->out = palloc(sizeof(double) * BATCH_ROWS * T);
	b->keycxt = AllocSetContextCreate(CurrentMemoryContext, "pepnet score query block", ALLOCSET_DEFAULT_SIZES);
	b->bags = features_bags_new(c, BATCH_ROWS);
}

/* The next block of the data query (its model inputs and keys); false at the end */
static bool
read_block(BatchReader *r, const PnConfig *c, Block *b)
{
	MemoryContext old;
	int			i;

	CHECK_FOR_INTERRUPTS();
	SPI_cursor_fetch(r->rd.portal, true, BATCH_ROWS);
	b->n = (int) SPI_processed;
	if (b->n == 0)
		return false;
	b->first_row = r->rd.ctx->row;
	MemoryContextReset(b->keycxt);
	old = MemoryContextSwitchTo(b->keycxt);
	for (i = 0; i < b->n; i++)
	{
		r->rd.ctx->row++;
		decode(r, c, SPI_tuptable->vals[i], SPI_tuptable->tupdesc, b, i);
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return true;
}

/* What the leader and every row need to put a block's rows into the result */
typedef struct Emitter
{
	ReturnSetInfo *rsinfo;
	int			nkeys;
	int			T;
	Datum	   *values;
	bool	   *nulls;
	ArrayType  *arr;
	ErrorContextCallback *outer_ecs;	/* the error context around the call */
} Emitter;

static void
emit_block(Emitter *em, const Block *b)
{
	int			i,
				k,
				T = em->T;

	for (i = 0; i < b->n; i++)
	{
		for (k = 0; k < em->nkeys; k++)
		{
			em->values[k] = b->keys[(size_t) i * em->nkeys + k];
			em->nulls[k] = b->keynulls[(size_t) i * em->nkeys + k];
		}
		em->values[em->nkeys] = Float8GetDatum(b->out[(size_t) i * T]);
		memcpy(ARR_DATA_PTR(em->arr), b->out + (size_t) i * T, sizeof(float8) * T);
		em->values[em->nkeys + 1] = PointerGetDatum(em->arr);
		tuplestore_putvalues(em->rsinfo->setResult, em->rsinfo->setDesc, em->values, em->nulls);
	}
}

/*
 * Parallel workers (PostgreSQL's, through a ParallelContext, as parallel
 * CREATE INDEX starts them).  The leader reads the data query and decodes
 * its rows, as the serial path does, and deals the blocks to the workers
 * (the least busy first) and, with parallel_leader_participation, scores
 * blocks itself while every worker has enough to do; a worker scores a
 * block's inputs and returns its scores [n, T]; the leader puts the rows
 * out in the query's order.  Each block is scored by the same code on
 * the same rows whoever scores it, so the scores are those of the serial
 * path bit for bit.  A worker scores exactly the version the leader
 * resolved (name, version and row xmin are passed), with the leader's
 * snapshot, settings and transaction (ParallelContext restores them).
 *
 * Each worker has an input queue (blocks of inputs) and an output queue
 * (scores).  At most PQ_DEPTH blocks per worker are outstanding, and its
 * output queue holds PQ_DEPTH blocks' scores, so a worker never waits on
 * the leader while the leader waits on it.
 */
#define PQ_DEPTH		2
#define PQ_KEY_HEADER	UINT64CONST(0x7065706E65740001)
#define PQ_KEY_QUEUES	UINT64CONST(0x7065706E65740002)

typedef struct PqHeader
{
	PepnetRef	ref;
	int			precision;
	int			npers,
				nfeat,
				dense,
				ntasks;
	Size		inq_size;		/* bytes of each worker's input queue */
	Size		outq_size;		/* and output queue, after it */
} PqHeader;

/* a block of inputs as sent: header, then domain, persona, features, dense */
typedef struct PqBlockMsg
{
	int64		first_row;
	int32		n;
	int32		pad;
} PqBlockMsg;

static Size
pq_inputs_bytes(const PqHeader *h, int n)
{
	return sizeof(PqBlockMsg) + (Size) n * (sizeof(int32) + sizeof(int64) * (h->npers + h->nfeat) + sizeof(float) * h->dense);
}

/* One message of a block's inputs to a worker */
static shm_mq_result
pq_send_block(shm_mq_handle *mqh, const PqHeader *h, const Block *b)
{
	PqBlockMsg	m;
	shm_mq_iovec iov[5];
	int			k = 0;

	m.first_row = b->first_row;
	m.n = b->n;
	m.pad = 0;
	iov[k].data = (const char *) &m;
	iov[k++].len = sizeof(m);
	iov[k].data = (const char *) b->domain;
	iov[k++].len = sizeof(int32) * b->n;
	if (h->npers)
	{
		iov[k].data = (const char *) b->persona;
		iov[k++].len = sizeof(int64) * (Size) b->n * h->npers;
	}
	if (h->nfeat)
	{
		iov[k].data = (const char *) b->features;
		iov[k++].len = sizeof(int64) * (Size) b->n * h->nfeat;
	}
	if (h->dense)
	{
		iov[k].data = (const char *) b->dense;
		iov[k++].len = sizeof(float) * (Size) b->n * h->dense;
	}
	return shm_mq_sendv(mqh, iov, k, false, true);
}

/* A worker's queues, in the DSM after the header */
static shm_mq *
pq_queue(char *base, const PqHeader *h, int worker, bool output)
{
	return (shm_mq *) (base + (Size) worker * (h->inq_size + h->outq_size) + (output ? h->inq_size : 0));
}

/*
 * The worker's side: score blocks until the leader detaches from the input
 * queue.  Errors (a row's, with the data query's row in the context) reach
 * the leader with their SQLSTATE through the ParallelContext.
 */
PGDLLEXPORT void pepnet_score_query_worker(dsm_segment *seg, shm_toc *toc);

void
pepnet_score_query_worker(dsm_segment *seg, shm_toc *toc)
{
	PqHeader   *h = shm_toc_lookup(toc, PQ_KEY_HEADER, false);
	char	   *queues = shm_toc_lookup(toc, PQ_KEY_QUEUES, false);
	shm_mq	   *inq = pq_queue(queues, h, ParallelWorkerNumber, false),
			   *outq = pq_queue(queues, h, ParallelWorkerNumber, true);
	shm_mq_handle *inh,
			   *outh;
	PepnetEntry *e;
	const PnConfig *c;
	Block		b;
	RowContext	rc = {"data", 0};
	ErrorContextCallback ecb;

	shm_mq_set_receiver(inq, MyProc);
	shm_mq_set_sender(outq, MyProc);
	inh = shm_mq_attach(inq, seg, NULL);
	outh = shm_mq_attach(outq, seg, NULL);

	e = pepnet_cache_get(&h->ref);
	c = &e->model->cfg;
	if (c->npers != h->npers || c->nfeat != h->nfeat || c->dense != h->dense || c->ntasks != h->ntasks)
		elog(ERROR, "model \"%s\" version %d has another shape in a parallel worker", h->ref.name, h->ref.version);
	block_alloc(&b, c, 0);

	ecb.callback = row_context_callback;
	ecb.arg = &rc;
	ecb.previous = error_context_stack;
	error_context_stack = &ecb;
	for (;;)
	{
		Size		len;
		void	   *data;
		const char *p;
		PqBlockMsg	m;
		shm_mq_iovec iov[2];

		if (shm_mq_receive(inh, &len, &data, false) != SHM_MQ_SUCCESS)
			break;				/* the leader is done */
		if (len < sizeof(PqBlockMsg))
			elog(ERROR, "malformed block message of %zu bytes", len);
		memcpy(&m, data, sizeof(m));
		if (m.n <= 0 || m.n > BATCH_ROWS || len != pq_inputs_bytes(h, m.n))
			elog(ERROR, "malformed block message of %zu bytes for %d rows", len, m.n);
		p = (const char *) data + sizeof(m);
		b.n = m.n;
		b.first_row = m.first_row;
		memcpy(b.domain, p, sizeof(int32) * b.n);
		p += sizeof(int32) * b.n;
		memcpy(b.persona, p, sizeof(int64) * (Size) b.n * c->npers);
		p += sizeof(int64) * (Size) b.n * c->npers;
		memcpy(b.features, p, sizeof(int64) * (Size) b.n * c->nfeat);
		p += sizeof(int64) * (Size) b.n * c->nfeat;
		memcpy(b.dense, p, sizeof(float) * (Size) b.n * c->dense);

		score_block(e, h->precision, &b, &rc);
		rc.row = 0;

		iov[0].data = (const char *) &m;
		iov[0].len = sizeof(m);
		iov[1].data = (const char *) b.out;
		iov[1].len = sizeof(double) * (Size) b.n * c->ntasks;
		if (shm_mq_sendv(outh, iov, 2, false, true) != SHM_MQ_SUCCESS)
			break;				/* the leader has gone (its error) */
	}
	error_context_stack = ecb.previous;
}

/*
 * The number of workers to ask for: max_parallel_workers_per_gather, when
 * the leader may start workers (not itself in parallel mode, not in a
 * single-user backend) and the data query may run in parallel mode (no
 * PARALLEL UNSAFE function: the leader reads it while its workers run).
 */
static int
pq_workers(BatchReader *r)
{
	ListCell   *lc;

	if (max_parallel_workers_per_gather <= 0 || IsInParallelMode() || !IsUnderPostmaster)
		return 0;
	foreach(lc, SPI_plan_get_plan_sources(r->rd.plan))
	{
		CachedPlanSource *src = (CachedPlanSource *) lfirst(lc);
		ListCell   *lq;

		foreach(lq, src->query_list)
			if (max_parallel_hazard(lfirst_node(Query, lq)) == PROPARALLEL_UNSAFE)
				return 0;
	}
	/* the shared memory is sized for the workers asked for: no more than could ever start */
	return Min(max_parallel_workers_per_gather, max_worker_processes);
}

/* A worker's queue has gone: its error if it raised one, else this */
static void pg_attribute_noreturn()
pq_worker_gone(ParallelContext *pcxt)
{
	WaitForParallelWorkersToFinish(pcxt);
	ereport(ERROR,
			(errcode(ERRCODE_INTERNAL_ERROR),
			 errmsg("a parallel worker of pepnet_score_query exited before it returned its scores")));
}

/*
 * Score the rest of the data query with nworkers workers, starting with
 * the block first (read, not scored).  Returns false, having done nothing,
 * when no worker could be started.
 */
static bool
pq_run(BatchReader *r, const PepnetRef *pr, PepnetEntry *e, Emitter *em, Block *first, int nworkers)
{
	const PnConfig *c = &e->model->cfg;
	ParallelContext *pcxt;
	ErrorContextCallback *saved_ecs = error_context_stack;
	PqHeader   *h;
	char	   *queues;
	shm_mq_handle **inh,
			  **outh;
	Size		inq,
				outq;
	Block	   *ring;
	int			nw,
				cap,
				head = 0,
				count = 0,
				i;
	int		   *outstanding;
	bool		more = true,
				have_first = true;

	/*
	 * An input queue of half a full block (64 kB to 4 MB: a larger block
	 * streams through it); an output queue that holds PQ_DEPTH blocks' scores
	 * with room to spare, so that a worker never waits to send them.
	 */
	{
		PqHeader	dims = {.npers = c->npers, .nfeat = c->nfeat, .dense = c->dense};

		inq = MAXALIGN(Min(Max(pq_inputs_bytes(&dims, BATCH_ROWS) / 2, (Size) 65536), (Size) 4 * 1024 * 1024));
	}
	outq = MAXALIGN((sizeof(PqBlockMsg) + sizeof(double) * (Size) BATCH_ROWS * c->ntasks + 2 * MAXIMUM_ALIGNOF) * (PQ_DEPTH + 1));

	EnterParallelMode();
	/* a worker's error is rethrown with the context of this call, not with the leader's row */
	error_context_stack = em->outer_ecs;
	pcxt = CreateParallelContext("$libdir/pepnet", "pepnet_score_query_worker", nworkers);
	error_context_stack = saved_ecs;
	shm_toc_estimate_chunk(&pcxt->estimator, sizeof(PqHeader));
	shm_toc_estimate_chunk(&pcxt->estimator, (inq + outq) * nworkers);
	shm_toc_estimate_keys(&pcxt->estimator, 2);
	InitializeParallelDSM(pcxt);
	if (pcxt->seg == NULL)
	{
		/* no dynamic shared memory: serially */
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return false;
	}
	h = shm_toc_allocate(pcxt->toc, sizeof(PqHeader));
	h->ref = *pr;
	h->precision = pepnet_precision;
	h->npers = c->npers;
	h->nfeat = c->nfeat;
	h->dense = c->dense;
	h->ntasks = c->ntasks;
	h->inq_size = inq;
	h->outq_size = outq;
	shm_toc_insert(pcxt->toc, PQ_KEY_HEADER, h);
	queues = shm_toc_allocate(pcxt->toc, (inq + outq) * nworkers);
	shm_toc_insert(pcxt->toc, PQ_KEY_QUEUES, queues);
	for (i = 0; i < nworkers; i++)
	{
		shm_mq_set_sender(shm_mq_create(pq_queue(queues, h, i, false), inq), MyProc);
		shm_mq_set_receiver(shm_mq_create(pq_queue(queues, h, i, true), outq), MyProc);
	}
	LaunchParallelWorkers(pcxt);
	nw = pcxt->nworkers_launched;
	if (nw == 0)
	{
		DestroyParallelContext(pcxt);
		ExitParallelMode();
		return false;
	}
	inh = palloc0(sizeof(shm_mq_handle *) * nw);
	outh = palloc0(sizeof(shm_mq_handle *) * nw);
	for (i = 0; i < nw; i++)
	{
		inh[i] = shm_mq_attach(pq_queue(queues, h, i, false), pcxt->seg, pcxt->worker[i].bgwhandle);
		outh[i] = shm_mq_attach(pq_queue(queues, h, i, true), pcxt->seg, pcxt->worker[i].bgwhandle);
	}

	/*
	 * Blocks in the query's order, up to PQ_DEPTH per worker and as many
	 * again scored by the leader: each block goes to the worker with the
	 * fewest outstanding; when all have PQ_DEPTH the leader, if it takes part,
	 * scores the block itself, else it waits for the oldest.  A worker returns
	 * its blocks in the order it got them, so the oldest block's scores are
	 * the next message of its worker.
	 */
	cap = PQ_DEPTH * (nw + 1);
	ring = palloc(sizeof(Block) * cap);
	ring[0] = *first;
	for (i = 1; i < cap; i++)
		block_alloc(&ring[i], c, em->nkeys);
	outstanding = palloc0(sizeof(int) * nw);

	for (;;)
	{
		int			w = -1;

		for (i = 0; i < nw; i++)
			if (outstanding[i] < PQ_DEPTH && (w < 0 || outstanding[i] < outstanding[w]))
				w = i;
		if (more && count < cap && (w >= 0 || parallel_leader_participation))
		{
			Block	   *b = &ring[(head + count) % cap];

			if (have_first)
				have_first = false; /* ring[0] is the block read before */
			else if (!read_block(r, c, b))
			{
				more = false;
				continue;
			}
			b->slot = w;
			if (w >= 0)
			{
				if (pq_send_block(inh[w], h, b) != SHM_MQ_SUCCESS)
					pq_worker_gone(pcxt);
				outstanding[w]++;
			}
			else
				score_block(e, pepnet_precision, b, r->rd.ctx);
			count++;
			continue;
		}
		if (count == 0)
			break;
		/* the oldest block: its scores, then its rows */
		{
			Block	   *b = &ring[head];

			if (b->slot >= 0)
			{
				Size		len;
				void	   *data;
				PqBlockMsg	m;

				if (shm_mq_receive(outh[b->slot], &len, &data, false) != SHM_MQ_SUCCESS)
					pq_worker_gone(pcxt);
				memcpy(&m, data, sizeof(m));
				if (m.n != b->n || m.first_row != b->first_row ||
					len != sizeof(m) + sizeof(double) * (Size) b->n * c->ntasks)
					elog(ERROR, "parallel worker %d returned scores of another block", b->slot);
				memcpy(b->out, (const char *) data + sizeof(m), sizeof(double) * (Size) b->n * c->ntasks);
				outstanding[b->slot]--;
			}
			emit_block(em, b);
			head = (head + 1) % cap;
			count--;
		}
	}

	for (i = 0; i < nw; i++)
		shm_mq_detach(inh[i]);
	WaitForParallelWorkersToFinish(pcxt);
	DestroyParallelContext(pcxt);
	ExitParallelMode();
	return true;
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
	Emitter		em;
	ErrorContextCallback ecb;
	int			nworkers;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("data query");
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &pr);
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	e = pepnet_cache_get(&pr);
	c = &e->model->cfg;

	memset(&r, 0, sizeof(r));
	pepnet_spi_connect();
	batch_open(&r, query, c, rsinfo->setDesc);

	block_alloc(&b, c, r.nkeys);
	em.rsinfo = rsinfo;
	em.nkeys = r.nkeys;
	em.T = c->ntasks;
	em.values = palloc(sizeof(Datum) * (r.nkeys + 2));
	em.nulls = palloc0(sizeof(bool) * (r.nkeys + 2));
	em.arr = scores_array(c->ntasks);
	em.outer_ecs = error_context_stack;

	ecb.callback = row_context_callback;
	ecb.arg = r.rd.ctx;
	ecb.previous = error_context_stack;
	error_context_stack = &ecb;

	/* more than one block: in parallel workers, when there may be some */
	if (read_block(&r, c, &b))
	{
		/* a model with multi-valued fields is scored serially (its blocks' bags are not sent to workers) */
		if (b.n < BATCH_ROWS || c->bags || (nworkers = pq_workers(&r)) == 0 || !pq_run(&r, &pr, e, &em, &b, nworkers))
		{
			do
			{
				score_block(e, pepnet_precision, &b, r.rd.ctx);
				r.rd.ctx->row = b.first_row + b.n;
				emit_block(&em, &b);
			} while (read_block(&r, c, &b));
		}
	}
	error_context_stack = ecb.previous;
	SPI_cursor_close(r.rd.portal);
	SPI_finish();
	return (Datum) 0;
}
