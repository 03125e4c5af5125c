/*
 * reader.h
 *		The data-query reader (reader.c): a query opened as a cursor, its
 *		columns located by name and decoded into columnar rows, with the
 *		query's row named in the context of an error.  Used by training,
 *		evaluation and batch scoring (pepnet_score_query).
 *		Internal to the glue; the core's API is pncore.h.
 */
#ifndef PEPNET_READER_H
#define PEPNET_READER_H

#include "pepnet.h"

#include "executor/spi.h"

struct RowBag;

/* rows a reader fetches from its cursor at a time */
#define FETCH_ROWS 1000

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
	struct RowBag *bags;		/* [cap, F + P] multi-valued fields' ids (features.h), NULL when none */
} Rows;

/*
 * Error context of a data-row fault, as postgres_fdw's
 * conversion_error_callback: which query and which row (1-based), set
 * while a row is decoded or while a batch holding the row trains.
 */
typedef struct RowContext
{
	const char *what;			/* "data", "validation" */
	int64		row;			/* 0: no row to blame */
} RowContext;

/* a data query opened as a cursor, columns located by name */
typedef struct Reader
{
	Portal		portal;
	SPIPlanPtr	plan;			/* the cursor's plan (its queries: the parallel hazard) */
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
	bool		scoring;		/* pepnet_score_query's: no labels, row messages unprefixed */
	RowContext *ctx;
	/* the named form ("inputs": "columns"): its columns (features.c) and a row's values */
	struct FeatureBinding *fb;
	Datum	   *values;
	bool	   *nulls;
} Reader;

/* reader.c */
extern void row_context_callback(void *arg);
extern void rows_init(Rows *r, const PnConfig *c, int cap);
extern void rows_copy(Rows *dst, int di, const Rows *src, int si, const PnConfig *c);
extern void reader_open(Reader *r, const char *query, const PnConfig *cfg, const char *what, bool scoring);
extern void reader_check(const char *query, const PnConfig *cfg, const char *what, bool need_rows);
extern void reader_fill_ids(const char *query, PnConfig *cfg);
extern void reader_dense_stats(const char *query, PnConfig *cfg, int64 **vocab, int64 *nvocab);
extern TupleDesc reader_describe(const char *query, const char *what);
extern int	reader_fetch(Reader *r, Rows *dst, int max);
extern void reader_decode_inputs(Reader *r, HeapTuple tup, TupleDesc td, int32 *domain, int64 *persona,
								 int64 *features, float *dense, struct RowBag *bags);
extern void train_core_error(PnError *err, const char *what, const Rows *rows) pg_attribute_noreturn();

#endif							/* PEPNET_READER_H */
