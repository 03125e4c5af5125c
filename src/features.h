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
	Oid			type;			/* the column's base type */
} FeatureCol;

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
							int64 *persona, int64 *features, float *dense, float *labels);
extern bool features_dense_value(const FeatureBinding *b, int i, const Datum *values, const bool *nulls,
								 float *out);
extern bool features_field_id(const FeatureBinding *b, int g, const Datum *values, const bool *nulls, int64 *id);
extern int64 features_text_id(const char *s, int len, bool utf8);

#endif							/* PEPNET_FEATURES_H */
