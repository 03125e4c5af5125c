/*
 * features.c
 *		The named form ("inputs": "columns", docs/model.md "Named inputs"):
 *		a model's fields bound to the columns of a query or row type by name.
 *
 * features_bind locates and type-checks every column from a TupleDesc
 * before any row is read: ids int2/int4/int8 (the integer is the id) or
 * text/varchar/bpchar/uuid (a text id: pn_text_id of its UTF-8 bytes),
 * dense float4/float8/int2/int4/int8/numeric, the domain int2/int4/int8,
 * labels (training, evaluation) int/bool/float/numeric from the column of
 * each task's name.  Column order never matters; other columns are
 * ignored.  features_decode turns one row's values into the core's inputs:
 * each id resolved to its embedding row (a NULL id to the field's missing
 * row), so that the core never sees a named id, and each dense value
 * transformed by its field's log1p, clip and zscore (a NULL one of a
 * z-scored field imputed with the stored mean).  A multi-valued field
 * ("pooling") reads an array of ids (and its "weights" column): each row's
 * ids are decoded into a RowBag, and a block's RowBags become the core's
 * PnBag CSR (features_bags_block).
 */
#include "features.h"

#include <float.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/uuid.h"

#define ID_TYPES "int2, int4, int8, text, varchar, bpchar or uuid"
#define DENSE_TYPES "float4, float8, int2, int4, int8 or numeric"
#define LABEL_TYPES "int2, int4, int8, bool, float4, float8 or numeric"
#define DOMAIN_TYPES "int2, int4 or int8"
#define BAG_TYPES "int2[], int4[], int8[], text[], varchar[], bpchar[] or uuid[]"
#define WEIGHT_TYPES "real[] or float8[]"

/* Attribute number of a column by name, 0 when absent */
static int
find_column(TupleDesc td, const char *name)
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

/*
 * Attribute number of a column the model reads, 0 when absent; a name
 * that appears twice is 42702 (which one is meant is not known).  what
 * names the query or row in the error.  Also for the arrays form's
 * columns (reader.c).
 */
int
features_column(TupleDesc td, const char *name, const char *what)
{
	int			att = find_column(td, name),
				i;

	if (att == 0)
		return 0;
	for (i = att; i < td->natts; i++)
	{
		Form_pg_attribute a = TupleDescAttr(td, i);

		if (!a->attisdropped && strcmp(NameStr(a->attname), name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_AMBIGUOUS_COLUMN),
					 errmsg("%s column \"%s\" appears more than once (columns %d and %d)", what, name, att, i + 1),
					 errdetail("pepnet reads the column by its name, so which one is meant is not known."),
					 errhint("Return the column once: rename the other (e.g. SELECT ... AS %s) or leave it out.",
							 quote_identifier(psprintf("%s_2", name)))));
	}
	return att;
}

/* Whether a query's result (or a row type) has a column of that name */
bool
features_has_column(TupleDesc td, const char *name)
{
	return find_column(td, name) != 0;
}

/* Does the binding read column att (1-based)? */
bool
features_reads(const FeatureBinding *b, int att)
{
	const PnConfig *c = b->cfg;
	int			n = c->nfeat + c->npers + c->dense + (b->labels ? c->ntasks : 0),
				i;

	if (att == b->domain.att)
		return true;
	for (i = 0; i < n; i++)
		if (b->col[i].att == att)
			return true;
	for (i = 0; i < c->nfeat + c->npers; i++)
		if (b->wcol[i].att == att)
			return true;
	return false;
}

static bool
id_type(Oid t)
{
	return t == INT2OID || t == INT4OID || t == INT8OID || t == TEXTOID || t == VARCHAROID ||
		t == BPCHAROID || t == UUIDOID;
}

static bool
dense_type(Oid t)
{
	return t == FLOAT4OID || t == FLOAT8OID || t == INT2OID || t == INT4OID || t == INT8OID || t == NUMERICOID;
}

static bool
domain_type(Oid t)
{
	return t == INT2OID || t == INT4OID || t == INT8OID;
}

static bool
label_type(Oid t)
{
	return dense_type(t) || t == BOOLOID;
}

/*
 * Bind one column: 42703 when absent, 42804 when of another type; label
 * says what the column is for ("feature field \"item\"", "the domain"),
 * types the types accepted, cast the cast of the hint.
 */
static FeatureCol
bind_one(TupleDesc td, const char *what, const char *name, const char *label, bool (*ok) (Oid),
		 const char *types, const char *cast)
{
	FeatureCol	c = {0};
	Oid			t;

	c.att = features_column(td, name, what);
	if (c.att == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("%s lacks column \"%s\" (%s), expected of type %s", what, name, label, types),
				 errdetail("The model's config says \"inputs\": \"columns\": it reads %s from the column \"%s\".", label, name),
				 errhint("Return a column named \"%s\" (e.g. SELECT ... AS %s); column order does not matter.",
						 name, quote_identifier(name))));
	t = TupleDescAttr(td, c.att - 1)->atttypid;
	c.type = getBaseType(t);
	if (!ok(c.type))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s column \"%s\" (%s) has type %s, expected %s", what, name, label,
						format_type_be(t), types),
				 errhint("Cast it in the query, e.g. %s::%s.", quote_identifier(name), cast)));
	return c;
}

static bool
text_id_type(Oid t)
{
	return t == TEXTOID || t == VARCHAROID || t == BPCHAROID || t == UUIDOID;
}

/*
 * Bind an id field's column: of an id type, an integer column for a
 * field with "hash": false (its ids are rows themselves), and of the id
 * kind the version was trained with ("id", when the config has it).
 */
/* An array column's element type (base types) and how to read its elements */
static bool
array_of(FeatureCol *c, bool (*ok) (Oid))
{
	Oid			elem = get_element_type(c->type);

	if (!OidIsValid(elem) || !ok(getBaseType(elem)))
		return false;
	c->array = true;
	c->arraytype = c->type;
	c->type = getBaseType(elem);
	get_typlenbyvalalign(elem, &c->elmlen, &c->elmbyval, &c->elmalign);
	return true;
}

static bool
any_type(Oid t)
{
	return true;
}

static bool
weight_type(Oid t)
{
	return t == FLOAT4OID || t == FLOAT8OID;
}

/*
 * Bind a multi-valued field's column (an array of ids) and its weights
 * column (an array of real or float8), 42804 naming the field, the column,
 * its type and the types accepted.
 */
static FeatureCol
bind_bag(TupleDesc td, const char *what, const PnField *f, const char *label, FeatureCol *wc)
{
	FeatureCol	c = bind_one(td, what, f->name, label, any_type, BAG_TYPES, "bigint[]");
	Oid			t = TupleDescAttr(td, c.att - 1)->atttypid;

	if (!array_of(&c, id_type))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s column \"%s\" (%s) has type %s, expected %s", what, f->name, label, format_type_be(t), BAG_TYPES),
				 errdetail("The field has \"pooling\": \"%s\": its column is an array of ids.", f->pooling == PN_POOL_SUM ? "sum" : "mean"),
				 errhint("Return an array of ids, e.g. ARRAY[%s]::bigint[] or array_agg(...), or leave \"pooling\" out for one id per row.",
						 quote_identifier(f->name))));
	if (f->weights[0])
	{
		char	   *wl = psprintf("the weights of %s", label);
		Oid			wt;

		*wc = bind_one(td, what, f->weights, wl, any_type, WEIGHT_TYPES, "real[]");
		wt = TupleDescAttr(td, wc->att - 1)->atttypid;
		if (!array_of(wc, weight_type))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("%s column \"%s\" (%s) has type %s, expected %s", what, f->weights, wl, format_type_be(wt),
							WEIGHT_TYPES),
					 OidIsValid(get_element_type(getBaseType(wt))) ?
					 errhint("Cast it in the query, e.g. %s::real[].", quote_identifier(f->weights)) :
					 errhint("Return an array with one weight per id, e.g. ARRAY[%s]::real[] or array_agg(...).",
							 quote_identifier(f->weights))));
	}
	return c;
}

static FeatureCol
bind_field(TupleDesc td, const char *what, const PnField *f, const char *kind, FeatureCol *wc)
{
	char	   *label = psprintf("%s field \"%s\"", kind, f->name);
	FeatureCol	c;
	Oid			t;
	bool		text;

	if (f->pooling != PN_POOL_NONE)
		c = bind_bag(td, what, f, label, wc);
	else
	{
		int			att = features_column(td, f->name, what);

		/* an array for a field of one id: say how to make it multi-valued */
		if (att > 0 && OidIsValid(get_element_type(getBaseType(TupleDescAttr(td, att - 1)->atttypid))))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("%s column \"%s\" (%s) has type %s, expected %s", what, f->name, label,
							format_type_be(TupleDescAttr(td, att - 1)->atttypid), ID_TYPES),
					 errdetail("The field takes one id per row."),
					 errhint("For a multi-valued field (several ids per row) give the field \"pooling\": \"sum\" or \"mean\".")));
		c = bind_one(td, what, f->name, label, id_type, ID_TYPES, "bigint or ::text");
	}
	t = TupleDescAttr(td, c.att - 1)->atttypid;
	text = text_id_type(c.type);

	if (text && !f->hash)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s column \"%s\" (%s) has type %s, but the field has \"hash\": false and needs an integer column",
						what, f->name, label, format_type_be(t)),
				 errdetail("A field without hashing uses its integer ids as embedding rows [0, " INT64_FORMAT "); a text id is hashed.",
						   (int64) f->buckets),
				 errhint("Return the integer id%s (e.g. %s::bigint%s), or make the field \"hash\": true.",
						 c.array ? "s" : "", quote_identifier(f->name), c.array ? "[]" : "")));
	if (f->id != PN_ID_ANY && text != (f->id == PN_ID_TEXT))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("%s column \"%s\" (%s) has type %s, but the version was trained with %s ids for it",
						what, f->name, label, format_type_be(t), f->id == PN_ID_TEXT ? "text" : "integer"),
				 errdetail("The config says \"id\": \"%s\": an integer id and its text are different ids (another embedding row).",
						   f->id == PN_ID_TEXT ? "text" : "integer"),
				 errhint("Cast it in the query, e.g. %s::%s%s.", quote_identifier(f->name),
						 f->id == PN_ID_TEXT ? "text" : "bigint", c.array ? "[]" : "")));
	return c;
}

/*
 * The id kind of each field whose config has none ("id" absent), from the
 * bound columns: pepnet_train fixes it in the version it trains.
 */
void
features_fill_ids(const FeatureBinding *b, PnConfig *cfg)
{
	int			i;

	for (i = 0; i < cfg->nfeat; i++)
		if (cfg->feat[i].id == PN_ID_ANY)
			cfg->feat[i].id = text_id_type(b->col[i].type) ? PN_ID_TEXT : PN_ID_INTEGER;
	for (i = 0; i < cfg->npers; i++)
		if (cfg->pers[i].id == PN_ID_ANY)
			cfg->pers[i].id = text_id_type(b->col[cfg->nfeat + i].type) ? PN_ID_TEXT : PN_ID_INTEGER;
}

/*
 * Bind cfg's fields (and with labels, its tasks' label columns) to the
 * columns of td; what names the query in errors ("data query"), prefix
 * the row errors' prefix (NULL: none).  The binding is palloc'd in the
 * current memory context and holds no pointer into td.
 */
FeatureBinding *
features_bind(TupleDesc td, const PnConfig *cfg, const char *what, const char *prefix, bool labels)
{
	FeatureBinding *b = palloc0(sizeof(FeatureBinding));
	int			F = cfg->nfeat,
				P = cfg->npers,
				Nd = cfg->dense,
				T = cfg->ntasks,
				i;

	Assert(cfg->inputs == PN_INPUTS_COLUMNS);
	/* a query of the arrays form given to a named model: say so rather than "lacks column" */
	{
		int			fc = find_column(td, "features");
		bool		field = false;

		for (i = 0; i < F; i++)
			field |= strcmp(cfg->feat[i].name, "features") == 0;
		for (i = 0; i < P; i++)
			field |= strcmp(cfg->pers[i].name, "features") == 0;
		for (i = 0; i < Nd; i++)
			field |= strcmp(cfg->dfield[i].name, "features") == 0;
		if (fc && !field && TupleDescAttr(td, fc - 1)->atttypid == INT8ARRAYOID)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s has column \"features\" bigint[], the positional form, but the model's inputs are \"columns\"",
							what),
					 errdetail("The model's config says \"inputs\": \"columns\": each field is read from the column of its name."),
					 errhint("Return one column per field (\"%s\", ...), or use a model whose config says \"inputs\": \"arrays\".",
							 F ? cfg->feat[0].name : P ? cfg->pers[0].name : cfg->dfield[0].name)));
	}
	b->cfg = cfg;
	b->what = what;
	b->prefix = prefix;
	b->natts = td->natts;
	b->labels = labels;
	b->utf8 = GetDatabaseEncoding() == PG_UTF8;
	b->col = palloc0(sizeof(FeatureCol) * (F + P + Nd + T + 1));
	b->wcol = palloc0(sizeof(FeatureCol) * (F + P + 1));
	b->domain = bind_one(td, what, cfg->domain_column, "the domain", domain_type, DOMAIN_TYPES, "int");
	for (i = 0; i < F; i++)
		b->col[i] = bind_field(td, what, &cfg->feat[i], "feature", &b->wcol[i]);
	for (i = 0; i < P; i++)
		b->col[F + i] = bind_field(td, what, &cfg->pers[i], "persona", &b->wcol[F + i]);
	for (i = 0; i < Nd; i++)
		b->col[F + P + i] = bind_one(td, what, cfg->dfield[i].name, psprintf("dense field \"%s\"", cfg->dfield[i].name),
									 dense_type, DENSE_TYPES, "real");
	if (labels)
		for (i = 0; i < T; i++)
			b->col[F + P + Nd + i] = bind_one(td, what, cfg->tasks[i], psprintf("the label of task \"%s\"", cfg->tasks[i]),
											  label_type, LABEL_TYPES, "real");
	return b;
}

/* An error about a value of the current row (the caller's error context names the row) */
static void row_error(const FeatureBinding *b, int sqlstate, const char *fmt,...) pg_attribute_printf(3, 4);

static void
row_error(const FeatureBinding *b, int sqlstate, const char *fmt,...)
{
	char		buf[1024];
	va_list		ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (b->prefix)
		ereport(ERROR, (errcode(sqlstate), errmsg("%s: %s", b->prefix, buf)));
	ereport(ERROR, (errcode(sqlstate), errmsg("%s", buf)));
}

/*
 * The int64 id of a text in the server encoding: pn_text_id of its UTF-8
 * bytes (converted first unless the database is UTF-8).
 */
int64
features_text_id(const char *s, int len, bool utf8)
{
	char	   *u;
	int64		id;

	if (utf8 || len == 0)
		return pn_text_id(s, (size_t) len);
	u = pg_server_to_any(s, len, PG_UTF8);
	if (u == s)
		return pn_text_id(s, (size_t) len);
	id = pn_text_id(u, strlen(u));
	pfree(u);
	return id;
}

/* The int64 id of a non-NULL id column's value */
static int64
datum_id(const FeatureBinding *b, Oid type, Datum d)
{
	switch (type)
	{
		case INT2OID:
			return DatumGetInt16(d);
		case INT4OID:
			return DatumGetInt32(d);
		case INT8OID:
			return DatumGetInt64(d);
		case UUIDOID:
			{
				static const char hex[] = "0123456789abcdef";
				const unsigned char *u = DatumGetUUIDP(d)->data;
				char		buf[36];
				int			i,
							j = 0;

				/* the canonical text: lower-case hex, hyphens after bytes 4, 6, 8 and 10 */
				for (i = 0; i < UUID_LEN; i++)
				{
					if (i == 4 || i == 6 || i == 8 || i == 10)
						buf[j++] = '-';
					buf[j++] = hex[u[i] >> 4];
					buf[j++] = hex[u[i] & 15];
				}
				return pn_text_id(buf, 36);
			}
		default:
			{
				struct varlena *v = PG_DETOAST_DATUM_PACKED(d);
				char	   *s = VARDATA_ANY(v);
				int			len = VARSIZE_ANY_EXHDR(v);
				int64		id;

				if (type == BPCHAROID)
					len = bpchartruelen(s, len);
				id = features_text_id(s, len, b->utf8);
				if ((Pointer) v != DatumGetPointer(d))
					pfree(v);
				return id;
			}
	}
}

/* The embedding row of field f (index i, kind "feature"/"persona") for a value, NULL included */
static int64
field_row(const FeatureBinding *b, const PnField *f, int i, const char *kind, const FeatureCol *fc,
		  const Datum *values, const bool *nulls)
{
	int64		id,
				row;

	if (nulls[fc->att - 1])
	{
		if (!f->nullable)
			row_error(b, ERRCODE_NULL_VALUE_NOT_ALLOWED,
					  "%s field \"%s\" (column \"%s\") is NULL, and the field is not nullable", kind, f->name, f->name);
		return PN_MISSING_ROW(f);
	}
	id = datum_id(b, fc->type, values[fc->att - 1]);
	row = pn_field_row(f, i, id);
	if (row < 0 && f->min_count > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s field \"%s\" has no vocabulary", kind, f->name),
				 errdetail("A field with \"min_count\" maps ids to rows through the vocabulary pepnet_train builds from its data query."),
				 errhint("Train the model with its config first.")));
	if (row < 0)
		row_error(b, ERRCODE_INVALID_PARAMETER_VALUE, "%s id " INT64_FORMAT " of field \"%s\" is outside [0, " INT64_FORMAT ")",
				  kind, id, f->name, (int64) f->buckets);
	return row;
}

/* Room for n ids in a row's bag (weights too when w) */
static void
bag_reserve(RowBag *bag, int n, bool w)
{
	if (n > bag->cap)
	{
		int			cap = Max(n, Max(8, bag->cap * 2));

		bag->rows = bag->rows ? repalloc(bag->rows, sizeof(int64) * cap) :
			MemoryContextAlloc(bag->cxt, sizeof(int64) * cap);
		if (bag->w)
			bag->w = repalloc(bag->w, sizeof(float) * cap);
		bag->cap = cap;
	}
	if (w && bag->w == NULL && bag->cap > 0)
		bag->w = MemoryContextAlloc(bag->cxt, sizeof(float) * bag->cap);
}

/* Free an array detoasted from d */
static void
bag_free_copy(ArrayType *a, Datum d)
{
	if ((Pointer) a != DatumGetPointer(d))
		pfree(a);
}

/*
 * A multi-valued field's bag of one row: each non-NULL id of its array
 * column resolved to its row as a single id of the field, with its weight
 * (weights column) when the field has one.  A NULL array is the empty bag
 * (22004 when the field is not nullable), NULL elements are left out with
 * their weights; more than PN_MAX_BAG elements are 54000, weights of
 * another length, NULL for an id, negative or not finite are 22023/22004.
 */
static void
field_bag(const FeatureBinding *b, const PnField *f, int i, const char *kind, const FeatureCol *fc,
		  const FeatureCol *wc, const Datum *values, const bool *nulls, RowBag *bag)
{
	ArrayType  *a,
			   *wa = NULL;
	Datum	   *el,
			   *wel = NULL;
	bool	   *en,
			   *wen = NULL;
	int			n,
				wn = 0,
				j;

	bag->n = 0;
	if (nulls[fc->att - 1])
	{
		if (!f->nullable)
			row_error(b, ERRCODE_NULL_VALUE_NOT_ALLOWED,
					  "%s field \"%s\" (column \"%s\") is NULL, and the field is not nullable (an empty array is taken)",
					  kind, f->name, f->name);
		return;
	}
	a = DatumGetArrayTypeP(values[fc->att - 1]);
	if (ARR_NDIM(a) > 1)
		row_error(b, ERRCODE_INVALID_PARAMETER_VALUE, "%s field \"%s\" (column \"%s\") must be a 1-D array, got %d dimensions",
				  kind, f->name, f->name, ARR_NDIM(a));
	n = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a));
	if (n > PN_MAX_BAG)
		row_error(b, ERRCODE_PROGRAM_LIMIT_EXCEEDED, "%s field \"%s\" (column \"%s\") has %d ids, more than the limit of %d per row",
				  kind, f->name, f->name, n, PN_MAX_BAG);
	if (wc->att > 0)
	{
		if (!nulls[wc->att - 1])
		{
			wa = DatumGetArrayTypeP(values[wc->att - 1]);
			wn = ArrayGetNItems(ARR_NDIM(wa), ARR_DIMS(wa));
			if (ARR_NDIM(wa) > 1 || wn != n)
				row_error(b, ERRCODE_INVALID_PARAMETER_VALUE,
						  "weights of field \"%s\" (column \"%s\") have %d elements, but column \"%s\" has %d ids: one weight per id",
						  f->name, f->weights, wn, f->name, n);
		}
	}
	if (n == 0)
	{
		bag_free_copy(a, values[fc->att - 1]);
		if (wa)
			bag_free_copy(wa, values[wc->att - 1]);
		return;
	}
	deconstruct_array(a, ARR_ELEMTYPE(a), fc->elmlen, fc->elmbyval, fc->elmalign, &el, &en, &n);
	if (wa)
		deconstruct_array(wa, ARR_ELEMTYPE(wa), wc->elmlen, wc->elmbyval, wc->elmalign, &wel, &wen, &wn);
	bag_reserve(bag, n, wc->att > 0);
	for (j = 0; j < n; j++)
	{
		int64		id,
					row;

		if (en[j])
			continue;			/* a NULL element is left out, with its weight */
		if (wc->att > 0 && wa == NULL)
			row_error(b, ERRCODE_INVALID_PARAMETER_VALUE,
					  "weights of field \"%s\" (column \"%s\") are NULL, but column \"%s\" has ids", f->name,
					  f->weights, f->name);
		if (wel)
		{
			double		w;

			if (wen[j])
				row_error(b, ERRCODE_NULL_VALUE_NOT_ALLOWED, "weight %d of field \"%s\" (column \"%s\") is NULL, but its id is not",
						  j + 1, f->name, f->weights);
			w = wc->type == FLOAT4OID ? DatumGetFloat4(wel[j]) : DatumGetFloat8(wel[j]);
			if (!isfinite(w) || !(w >= 0))
				row_error(b, ERRCODE_INVALID_PARAMETER_VALUE,
						  "weight %d of field \"%s\" (column \"%s\") is %g: weights must be finite and >= 0",
						  j + 1, f->name, f->weights, w);
			/* weights are float32: within its range, 0 or normal (a mean divides by their sum) */
			if (!isfinite((float) w) || ((float) w > 0 && (float) w < FLT_MIN))
				row_error(b, ERRCODE_INVALID_PARAMETER_VALUE,
						  "weight %d of field \"%s\" (column \"%s\") is %g: a weight is 0 or between %g and %g (a float4's normal range)",
						  j + 1, f->name, f->weights, w, (double) FLT_MIN, (double) FLT_MAX);
			bag->w[bag->n] = (float) w;
		}
		id = datum_id(b, fc->type, el[j]);
		row = pn_field_row(f, i, id);
		if (row < 0)
			row_error(b, ERRCODE_INVALID_PARAMETER_VALUE, "%s id " INT64_FORMAT " of field \"%s\" is outside [0, " INT64_FORMAT ")",
					  kind, id, f->name, (int64) f->buckets);
		bag->rows[bag->n++] = row;
	}
	pfree(el);
	pfree(en);
	bag_free_copy(a, values[fc->att - 1]);
	if (wel)
	{
		pfree(wel);
		pfree(wen);
		bag_free_copy(wa, values[wc->att - 1]);
	}
}

/* The RowBags of nrows rows ([nrows, F + P]: each row's fields), NULL when c has no multi-valued field */
RowBag *
features_bags_new(const PnConfig *c, int nrows)
{
	RowBag	   *bags;
	size_t		i,
				n = (size_t) nrows * (c->nfeat + c->npers);

	if (!c->bags)
		return NULL;
	bags = palloc_extended(sizeof(RowBag) * (n + 1), MCXT_ALLOC_HUGE | MCXT_ALLOC_ZERO);
	for (i = 0; i < n; i++)
		bags[i].cxt = CurrentMemoryContext;
	return bags;
}

/* Copy one row's bags (its F + P RowBags) into dst's storage */
void
features_bags_copy(const PnConfig *c, RowBag *dst, const RowBag *src)
{
	int			i;

	if (dst == src)
		return;
	for (i = 0; i < c->nfeat + c->npers; i++)
	{
		bool		pooled = i < c->nfeat ? c->feat[i].pooling != PN_POOL_NONE : c->pers[i - c->nfeat].pooling != PN_POOL_NONE;

		if (!pooled)
			continue;
		bag_reserve(&dst[i], src[i].n, src[i].w != NULL);
		dst[i].n = src[i].n;
		if (src[i].n > 0)
		{
			memcpy(dst[i].rows, src[i].rows, sizeof(int64) * src[i].n);
			if (src[i].w)
				memcpy(dst[i].w, src[i].w, sizeof(float) * src[i].n);
		}
	}
}

/* Order of two rows' multi-valued persona bags (0: equal, the same persona) */
int
features_bags_cmp_persona(const PnConfig *c, const RowBag *x, const RowBag *y)
{
	int			i,
				j;

	if (x == NULL)
		return 0;
	for (i = c->nfeat; i < c->nfeat + c->npers; i++)
	{
		if (c->pers[i - c->nfeat].pooling == PN_POOL_NONE)
			continue;
		if (x[i].n != y[i].n)
			return x[i].n < y[i].n ? -1 : 1;
		for (j = 0; j < x[i].n; j++)
			if (x[i].rows[j] != y[i].rows[j])
				return x[i].rows[j] < y[i].rows[j] ? -1 : 1;
		for (j = 0; x[i].w && j < x[i].n; j++)
			if (x[i].w[j] != y[i].w[j])
				return x[i].w[j] < y[i].w[j] ? -1 : 1;
	}
	return 0;
}

/* h combined with a row's bags (the identity of validation rows) */
uint64
features_bags_hash(const PnConfig *c, const RowBag *bags, uint64 h)
{
	int			i;

	for (i = 0; bags && i < c->nfeat + c->npers; i++)
	{
		if (bags[i].n == 0)
			continue;
		h = hash_combine64(h, hash_bytes_extended((const unsigned char *) bags[i].rows, sizeof(int64) * bags[i].n, 5 + i));
		if (bags[i].w)
			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) bags[i].w, sizeof(float) * bags[i].n, 5 + i));
	}
	return h;
}

/*
 * The core's bags (bb->fbag, bb->pbag) of n rows whose RowBags are bags
 * [row, F + P], in the order order (NULL: 0..n-1)
 */
void
features_bags_block(const PnConfig *c, BagBlock *bb, const RowBag *bags, const int *order, int n)
{
	int			nf = c->nfeat + c->npers,
				i,
				r;
	int64		total = 0,
				at = 0;

	if (bb->fbag == NULL)
	{
		bb->fbag = palloc0(sizeof(PnBag) * (c->nfeat + 1));
		bb->pbag = palloc0(sizeof(PnBag) * (c->npers + 1));
	}
	if (n > bb->rcap)
	{
		if (bb->off)
			pfree(bb->off);
		bb->off = palloc_extended(sizeof(int64) * (size_t) (n + 1) * nf, MCXT_ALLOC_HUGE);
		bb->rcap = n;
	}
	for (r = 0; r < n; r++)
	{
		const RowBag *rb = bags + (size_t) (order ? order[r] : r) * nf;

		for (i = 0; i < nf; i++)
			total += rb[i].n;
	}
	if (total > bb->ecap || bb->rows == NULL)
	{
		int64		cap = Max(total, Max(64, bb->ecap * 2));

		if (bb->rows)
		{
			pfree(bb->rows);
			pfree(bb->w);
		}
		bb->rows = palloc_extended(sizeof(int64) * cap, MCXT_ALLOC_HUGE);
		bb->w = palloc_extended(sizeof(float) * cap, MCXT_ALLOC_HUGE);
		bb->ecap = cap;
	}
	for (i = 0; i < nf; i++)
	{
		const PnField *f = i < c->nfeat ? &c->feat[i] : &c->pers[i - c->nfeat];
		PnBag	   *pb = i < c->nfeat ? &bb->fbag[i] : &bb->pbag[i - c->nfeat];
		int64	   *off = bb->off + (size_t) i * (bb->rcap + 1);

		if (f->pooling == PN_POOL_NONE)
			continue;
		pb->off = off;
		pb->rows = bb->rows;
		pb->weights = f->weights[0] ? bb->w : NULL;
		for (r = 0; r < n; r++)
		{
			const RowBag *rb = bags + (size_t) (order ? order[r] : r) * nf + i;

			off[r] = at;
			if (rb->n > 0)
			{
				memcpy(bb->rows + at, rb->rows, sizeof(int64) * rb->n);
				if (rb->w)
					memcpy(bb->w + at, rb->w, sizeof(float) * rb->n);
				else if (f->weights[0])
				{
					int			j;

					for (j = 0; j < rb->n; j++)
						bb->w[at + j] = 1.0f;
				}
			}
			at += rb->n;
		}
		off[n] = at;
	}
}

/*
 * The int64 ids of field g (0..F-1 the features, F.. the persona fields) in
 * a row, each passed to fn: none when the column is NULL, its id for a
 * single-valued field, each non-NULL element's id for a multi-valued one.
 * These are the ids a vocabulary counts (reader.c): each is an id that
 * pn_field_row maps through the vocabulary.
 */
void
features_field_ids(const FeatureBinding *b, int g, const Datum *values, const bool *nulls,
				   void (*fn) (int64 id, void *arg), void *arg)
{
	const FeatureCol *fc = &b->col[g];
	const PnConfig *c = b->cfg;
	const PnField *f = g < c->nfeat ? &c->feat[g] : &c->pers[g - c->nfeat];
	ArrayType  *a;
	Datum	   *el;
	bool	   *en;
	int			n,
				j;

	if (nulls[fc->att - 1])
		return;
	if (f->pooling == PN_POOL_NONE)
	{
		fn(datum_id(b, fc->type, values[fc->att - 1]), arg);
		return;
	}
	a = DatumGetArrayTypeP(values[fc->att - 1]);
	deconstruct_array(a, ARR_ELEMTYPE(a), fc->elmlen, fc->elmbyval, fc->elmalign, &el, &en, &n);
	for (j = 0; j < n; j++)
		if (!en[j])
			fn(datum_id(b, fc->type, el[j]), arg);
	pfree(el);
	pfree(en);
	bag_free_copy(a, values[fc->att - 1]);
}

/* A numeric column's non-NULL value as a double */
static double
datum_number(Oid type, Datum d)
{
	switch (type)
	{
		case FLOAT4OID:
			return DatumGetFloat4(d);
		case FLOAT8OID:
			return DatumGetFloat8(d);
		case INT2OID:
			return DatumGetInt16(d);
		case INT4OID:
			return DatumGetInt32(d);
		case INT8OID:
			return (double) DatumGetInt64(d);
		case BOOLOID:
			return DatumGetBool(d) ? 1.0 : 0.0;
		default:
			return DatumGetFloat8(DirectFunctionCall1(numeric_float8, d));
	}
}

/*
 * Dense field i's value of a row after its "log1p" and "clip" (in that
 * order; "normalize" is the caller's): false when NULL.  Non-finite values
 * and, with log1p, values <= -1 are errors naming the field.
 */
bool
features_dense_value(const FeatureBinding *b, int i, const Datum *values, const bool *nulls, float *out)
{
	const PnConfig *c = b->cfg;
	const PnField *f = &c->dfield[i];
	const FeatureCol *fc = &b->col[c->nfeat + c->npers + i];
	double		x;
	float		v;

	if (nulls[fc->att - 1])
		return false;
	x = datum_number(fc->type, values[fc->att - 1]);
	v = (float) x;
	if (!isfinite(v))
		row_error(b, ERRCODE_DATA_EXCEPTION, "dense field \"%s\" is %s", f->name,
				  isnan(x) ? "NaN" : "infinity or beyond float4's range");
	if (f->log1p)
	{
		if (!(v > -1.0f))
			row_error(b, ERRCODE_INVALID_PARAMETER_VALUE, "dense field \"%s\" is %g, but its \"log1p\" needs values above -1",
					  f->name, (double) v);
		v = (float) log1p((double) v);
	}
	if (f->clip)
		v = v < f->clip_lo ? f->clip_lo : v > f->clip_hi ? f->clip_hi : v;
	*out = v;
	return true;
}

/*
 * Decode one row (values and nulls of the bound TupleDesc): *domain,
 * persona [P] and features [F] as embedding rows, dense [Nd], and with a
 * labels binding labels [T] (NaN = no label).
 */
void
features_decode(const FeatureBinding *b, const Datum *values, const bool *nulls, int32 *domain,
				int64 *persona, int64 *features, float *dense, float *labels, RowBag *bags)
{
	const PnConfig *c = b->cfg;
	int			F = c->nfeat,
				P = c->npers,
				Nd = c->dense,
				i;

	if (nulls[b->domain.att - 1])
		row_error(b, ERRCODE_NULL_VALUE_NOT_ALLOWED, "domain (column \"%s\") is NULL", c->domain_column);
	{
		Datum		d = values[b->domain.att - 1];
		Oid			dt = b->domain.type;
		int64		v = dt == INT2OID ? DatumGetInt16(d) : dt == INT8OID ? DatumGetInt64(d) : DatumGetInt32(d);

		if (v < 0 || v >= c->domains)
			row_error(b, ERRCODE_INVALID_PARAMETER_VALUE, "domain %lld is out of range: the model has %d domains",
					  (long long) v, c->domains);
		*domain = (int32) v;
	}
	for (i = 0; i < F; i++)
	{
		if (c->feat[i].pooling != PN_POOL_NONE)
		{
			field_bag(b, &c->feat[i], i, "feature", &b->col[i], &b->wcol[i], values, nulls, &bags[i]);
			features[i] = 0;	/* not read: the bag is */
			continue;
		}
		features[i] = field_row(b, &c->feat[i], i, "feature", &b->col[i], values, nulls);
	}
	for (i = 0; i < P; i++)
	{
		if (c->pers[i].pooling != PN_POOL_NONE)
		{
			field_bag(b, &c->pers[i], i, "persona", &b->col[F + i], &b->wcol[F + i], values, nulls, &bags[F + i]);
			persona[i] = 0;
			continue;
		}
		persona[i] = field_row(b, &c->pers[i], i, "persona", &b->col[F + i], values, nulls);
	}
	for (i = 0; i < Nd; i++)
	{
		const PnField *f = &c->dfield[i];

		if (f->zscore && !f->stats)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("dense field \"%s\" has \"normalize\": \"zscore\" but the version has no stored \"mean\" and \"std\"",
							f->name),
					 errdetail("pepnet_train computes them from its data query before the first step and stores them with the version."),
					 errhint("Train the version first, or give \"mean\" and \"std\" in the config.")));
		if (!features_dense_value(b, i, values, nulls, &dense[i]))
		{
			if (!f->zscore)
				row_error(b, ERRCODE_NULL_VALUE_NOT_ALLOWED, "dense field \"%s\" (column \"%s\") is NULL",
						  f->name, f->name);
			dense[i] = 0.0f;	/* imputed with the stored mean: (mean - mean) / std */
		}
		else if (f->zscore)
		{
			dense[i] = (dense[i] - f->mean) / f->std;
			if (!isfinite(dense[i]))
				row_error(b, ERRCODE_DATA_EXCEPTION,
						  "dense field \"%s\" is not finite in float4 after its \"zscore\" (mean %g, std %g)",
						  f->name, (double) f->mean, (double) f->std);
		}
	}
	if (b->labels)
		for (i = 0; i < c->ntasks; i++)
		{
			const FeatureCol *fc = &b->col[F + P + Nd + i];
			double		y;

			labels[i] = NAN;
			if (nulls[fc->att - 1])
				continue;
			y = datum_number(fc->type, values[fc->att - 1]);
			if (!isfinite(y))
				row_error(b, ERRCODE_DATA_EXCEPTION, "label of task \"%s\" is %s", c->tasks[i], isnan(y) ? "NaN" : "infinity");
			if (!(y >= 0.0 && y <= 1.0))
				row_error(b, ERRCODE_INVALID_PARAMETER_VALUE, "label %g of task \"%s\" is outside [0, 1]", y, c->tasks[i]);
			labels[i] = (float) y;
		}
}
