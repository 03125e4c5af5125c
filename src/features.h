/*
 * features.h
 *		The named form's binding of a model's fields to columns
 *		(features.c): columns located by name and type-checked from a
 *		TupleDesc before any row is read, then each row's values decoded
 *		into the core's inputs (domain, persona rows, feature rows, dense)
 *		and, for training and evaluation, labels.
 *		Internal to the glue; the core's API is pncore.h.
 */
#ifndef PEPNET_FEATURES_H
#define PEPNET_FEATURES_H

#include "pepnet.h"

#include "access/tupdesc.h"

/* one bound column: its attribute number (1-based; 0 = not read) and how to read it */
typedef struct FeatureCol
{
	int			att;
	Oid			type;			/* the column's base type; an array column's: its elements' */
	bool		array;			/* a multi-valued field's ids or weights: an array column */
	Oid			arraytype;		/* the array's base type */
	int16		elmlen;
	bool		elmbyval;
	char		elmalign;
} FeatureCol;

/*
 * One row's ids of a multi-valued field ("pooling"), decoded: embedding
 * rows and their weights (w NULL without a weights column), NULL elements
 * left out.  Storage grows in cxt and is reused row after row.
 */
typedef struct RowBag
{
	int32		n;
	int32		cap;
	int64	   *rows;
	float	   *w;
	MemoryContext cxt;
} RowBag;

/*
 * The bags of a block of rows as the core takes them (pncore.h's PnBag: a
 * CSR per multi-valued field), built from the rows' RowBags; the storage
 * grows in the memory context current at the first build and is reused.
 */
typedef struct BagBlock
{
	PnBag	   *fbag;			/* [F] */
	PnBag	   *pbag;			/* [P] */
	int64	   *off;			/* [F + P, rcap + 1] */
	int			rcap;
	int64	   *rows;			/* every field's ids, one after the other */
	float	   *w;
	int64		ecap;
} BagBlock;

/*
 * The columns of a query (or row type) bound to a named-form config:
 * col[] holds the F feature fields, then the P persona fields, the Nd
 * dense fields and (with labels) the T tasks' label columns.
 */
typedef struct FeatureBinding
{
	const PnConfig *cfg;
	const char *what;			/* "data query", "validation query", "candidate": bind errors */
	const char *prefix;			/* row errors' "data query: " prefix, NULL for none (scoring) */
	int			natts;			/* of the TupleDesc bound */
	FeatureCol	domain;
	FeatureCol *col;
	FeatureCol *wcol;			/* [F + P] the multi-valued fields' weights columns (att 0: none) */
	bool		labels;
	bool		utf8;			/* the database encoding is UTF-8: text ids need no conversion */
} FeatureBinding;

/* features.c */
extern bool features_has_column(TupleDesc td, const char *name);
extern int	features_column(TupleDesc td, const char *name, const char *what);
extern void features_fill_ids(const FeatureBinding *b, PnConfig *cfg);
extern bool features_reads(const FeatureBinding *b, int att);
extern FeatureBinding *features_bind(TupleDesc td, const PnConfig *cfg, const char *what, const char *prefix,
									 bool labels);
extern void features_decode(const FeatureBinding *b, const Datum *values, const bool *nulls, int32 *domain,
							int64 *persona, int64 *features, float *dense, float *labels, RowBag *bags);
extern RowBag *features_bags_new(const PnConfig *c, int nrows);
extern void features_bags_copy(const PnConfig *c, RowBag *dst, const RowBag *src);
extern int	features_bags_cmp_persona(const PnConfig *c, const RowBag *x, const RowBag *y);
extern void features_bags_block(const PnConfig *c, BagBlock *bb, const RowBag *bags, const int *order, int n);
extern uint64 features_bags_hash(const PnConfig *c, const RowBag *bags, uint64 h);
extern bool features_dense_value(const FeatureBinding *b, int i, const Datum *values, const bool *nulls,
								 float *out);
extern void features_field_ids(const FeatureBinding *b, int g, const Datum *values, const bool *nulls,
							   void (*fn) (int64 id, void *arg), void *arg);
extern int64 features_text_id(const char *s, int len, bool utf8);

#endif							/* PEPNET_FEATURES_H */
