/*
 * config.c
 *		The model configuration: parsing with docs/model.md's defaults, validation
 *		and size limits checked before anything large is allocated.
 */
#include "pncore.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* the keys a config may have, in the order pn_config_to_json writes them */
static const char *const config_keys[] = {
	"inputs", "domains", "features", "persona", "domain_column", "dense",
	"emb_dim", "tasks", "hidden", "gamma", "epnet", "epnet_hidden", "ppnet",
	"pn", "star", "aux", "aux_hidden", "l2", "negative_rate", "domain_input", NULL
};

/* The named form's keys in an "arrays" config: an error naming the key */
static int
named_only(PnError *err, const char *key)
{
	pn_seterr(err, PN_ECONFIG, "config key %s belongs to the named form", key);
	pn_setdetail(err, "It needs \"inputs\": \"columns\" (fields bound to columns by name); this config's inputs are \"arrays\".");
	return PN_ECONFIG;
}

/* Read an integer member within [lo, hi]; absent keeps *out */
static int
get_int(const PnJson *obj, const char *key, int64_t lo, int64_t hi, int64_t *out, PnError *err)
{
	const PnJson *v = pn_json_get(obj, key);

	if (v == NULL)
		return PN_OK;
	if (v->type != PNJ_NUMBER || (!v->is_int && v->num != floor(v->num)))
		return pn_seterr(err, PN_ECONFIG, "config \"%s\" must be an integer", key);
	if (!v->is_int || v->ival < lo || v->ival > hi)
	{
		pn_seterr(err, PN_ECONFIG, "config \"%s\" is %.15g, out of range", key, v->is_int ? (double) v->ival : v->num);
		pn_setdetail(err, "\"%s\" must be between %lld and %lld.", key, (long long) lo, (long long) hi);
		return PN_ECONFIG;
	}
	*out = v->ival;
	return PN_OK;
}

/* Read a boolean member; absent keeps *out */
static int
get_bool(const PnJson *obj, const char *key, bool *out, PnError *err)
{
	const PnJson *v = pn_json_get(obj, key);

	if (v == NULL)
		return PN_OK;
	if (v->type != PNJ_BOOL)
		return pn_seterr(err, PN_ECONFIG, "config \"%s\" must be true or false", key);
	*out = v->boolean;
	return PN_OK;
}

/* Read a finite number member within [lo, hi]; absent keeps *out */
static int
get_num(const PnJson *obj, const char *key, double lo, double hi, float *out, PnError *err)
{
	const PnJson *v = pn_json_get(obj, key);

	if (v == NULL)
		return PN_OK;
	/* compared as float: the value stored (and written back out) is a float */
	if (v->type != PNJ_NUMBER || !((float) v->num >= (float) lo && (float) v->num <= (float) hi))
	{
		pn_seterr(err, PN_ECONFIG, "config \"%s\" must be a number between %g and %g", key, lo, hi);
		return PN_ECONFIG;
	}
	*out = (float) v->num;
	return PN_OK;
}

/* Copy a name, checking it is a non-empty string that fits */
static int
get_name(const PnJson *v, const char *what, char *out, PnError *err)
{
	size_t		n;

	if (v == NULL || v->type != PNJ_STRING)
		return pn_seterr(err, PN_ECONFIG, "config %s must be a string", what);
	n = strlen(v->str);
	if (n == 0 || n >= PN_MAX_NAME)
	{
		pn_seterr(err, PN_ECONFIG, "config %s \"%.*s\" must have 1 to %d bytes (UTF-8)", what, pn_utf8_prefix(v->str, 40), v->str, PN_MAX_NAME - 1);
		return PN_ECONFIG;
	}
	memcpy(out, v->str, n + 1);
	return PN_OK;
}

/*
 * A named field's "pooling" ("sum" or "mean": a multi-valued field, its
 * column an array of ids) and "weights" (the column of its per-id weights,
 * only with "pooling"); what names the field in errors.
 */
static int
get_pooling(const PnJson *e, const char *what, PnField *f, PnError *err)
{
	const PnJson *p = pn_json_get(e, "pooling"),
			   *w = pn_json_get(e, "weights");

	f->pooling = PN_POOL_NONE;
	f->weights[0] = '\0';
	if (p != NULL)
	{
		if (p->type == PNJ_STRING && strcmp(p->str, "sum") == 0)
			f->pooling = PN_POOL_SUM;
		else if (p->type == PNJ_STRING && strcmp(p->str, "mean") == 0)
			f->pooling = PN_POOL_MEAN;
		else
		{
			pn_seterr(err, PN_ECONFIG, "config %s.pooling must be \"sum\" or \"mean\"", what);
			pn_setdetail(err, "A field with \"pooling\" is multi-valued: its column is an array of ids whose embedding rows are "
						 "summed or averaged; leave \"pooling\" out for a field of one id per row.");
			return PN_ECONFIG;
		}
	}
	if (w != NULL)
	{
		char		wwhat[112];

		if (f->pooling == PN_POOL_NONE)
		{
			pn_seterr(err, PN_ECONFIG, "config %s has \"weights\" but no \"pooling\"", what);
			pn_setdetail(err, "\"weights\" names the column of the per-id weights of a multi-valued field (\"pooling\": \"sum\" or \"mean\").");
			return PN_ECONFIG;
		}
		snprintf(wwhat, sizeof(wwhat), "%s.weights", what);
		return get_name(w, wwhat, f->weights, err);
	}
	return PN_OK;
}

/* Parse an array of field objects {"name", "buckets", "hash"}, and "nullable" in the named form */
static int
get_fields(const PnJson *obj, const char *key, bool required, bool named, PnField **out, int *nout, PnError *err)
{
	const PnJson *arr = pn_json_get(obj, key);
	PnField    *f;
	int			i,
				j;

	*out = NULL;
	*nout = 0;
	if (arr == NULL)
	{
		if (required)
			return pn_seterr(err, PN_ECONFIG, "config needs \"%s\": an array of {\"name\": ..., \"buckets\": N}", key);
		return PN_OK;
	}
	if (arr->type != PNJ_ARRAY)
		return pn_seterr(err, PN_ECONFIG, "config \"%s\" must be an array of {\"name\": ..., \"buckets\": N}", key);
	if (arr->n > PN_MAX_FIELDS)
		return pn_seterr(err, PN_ETOOBIG, "config \"%s\" has %d fields, more than the limit of %d", key, arr->n, PN_MAX_FIELDS);
	f = pn_alloc0(sizeof(PnField) * (arr->n ? arr->n : 1));
	if (!f)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	for (i = 0; i < arr->n; i++)
	{
		const PnJson *e = arr->items[i];
		char		what[96];
		int64_t		b = 0;
		int			rc;

		snprintf(what, sizeof(what), "\"%s\"[%d]", key, i);
		if (e->type != PNJ_OBJECT)
		{
			pn_free(f);
			return pn_seterr(err, PN_ECONFIG, "config %s must be an object {\"name\": ..., \"buckets\": N}", what);
		}
		for (j = 0; j < e->n; j++)
			if (strcmp(e->items[j]->key, "name") && strcmp(e->items[j]->key, "buckets") &&
				strcmp(e->items[j]->key, "hash") && strcmp(e->items[j]->key, "nullable") &&
				strcmp(e->items[j]->key, "id") && strcmp(e->items[j]->key, "pooling") &&
				strcmp(e->items[j]->key, "weights") && strcmp(e->items[j]->key, "min_count"))
			{
				pn_free(f);
				pn_seterr(err, PN_ECONFIG, "config %s has unknown key \"%.*s\"", what, pn_utf8_prefix(e->items[j]->key, 40), e->items[j]->key);
				pn_setdetail(err, "A field takes \"name\", \"buckets\", \"hash\" and (named form) \"nullable\", \"id\", \"pooling\", \"weights\" and \"min_count\".");
				return PN_ECONFIG;
			}
		if (!named && (pn_json_get(e, "nullable") != NULL || pn_json_get(e, "id") != NULL ||
					   pn_json_get(e, "pooling") != NULL || pn_json_get(e, "weights") != NULL ||
					   pn_json_get(e, "min_count") != NULL))
		{
			pn_free(f);
			snprintf(what, sizeof(what), "\"%s\"[%d].%s", key, i,
					 pn_json_get(e, "id") != NULL ? "id" : pn_json_get(e, "nullable") != NULL ? "nullable" :
					 pn_json_get(e, "pooling") != NULL ? "pooling" : pn_json_get(e, "weights") != NULL ? "weights" : "min_count");
			return named_only(err, what);
		}
		if ((rc = get_pooling(e, what, &f[i], err)) != PN_OK)
		{
			pn_free(f);
			return rc;
		}
		{
			const PnJson *idv = pn_json_get(e, "id");

			f[i].id = PN_ID_ANY;
			if (idv != NULL)
			{
				if (idv->type == PNJ_STRING && strcmp(idv->str, "integer") == 0)
					f[i].id = PN_ID_INTEGER;
				else if (idv->type == PNJ_STRING && strcmp(idv->str, "text") == 0)
					f[i].id = PN_ID_TEXT;
				else
				{
					pn_free(f);
					pn_seterr(err, PN_ECONFIG, "config %s.id must be \"integer\" or \"text\"", what);
					pn_setdetail(err, "\"integer\": the field's column is int2, int4 or int8; \"text\": text, varchar, bpchar or uuid. "
								 "Left out, pepnet_train fills it in from the data query's column.");
					return PN_ECONFIG;
				}
			}
		}
		strcat(what, ".name");
		if ((rc = get_name(pn_json_get(e, "name"), what, f[i].name, err)) != PN_OK)
		{
			pn_free(f);
			return rc;
		}
		if (pn_json_get(e, "buckets") == NULL)
		{
			pn_seterr(err, PN_ECONFIG, "config field \"%s\" needs \"buckets\"", f[i].name);
			pn_free(f);
			return PN_ECONFIG;
		}
		if ((rc = get_int(e, "buckets", 1, PN_MAX_BUCKETS, &b, err)) != PN_OK)
		{
			pn_free(f);
			return rc;
		}
		f[i].buckets = b;
		f[i].hash = true;
		f[i].named = named;
		f[i].nullable = named;
		if ((rc = get_bool(e, "hash", &f[i].hash, err)) != PN_OK ||
			(rc = get_bool(e, "nullable", &f[i].nullable, err)) != PN_OK)
		{
			pn_free(f);
			return rc;
		}
		/* "min_count": k, a vocabulary of the ids seen at least k times (docs/model.md) */
		if (pn_json_get(e, "min_count") != NULL)
		{
			const PnJson *mc = pn_json_get(e, "min_count");

			if (mc->type != PNJ_NUMBER || !mc->is_int || mc->ival < 1 || mc->ival > INT32_MAX)
			{
				pn_seterr(err, PN_ECONFIG, "config field \"%s\": \"min_count\" must be an integer of at least 1", f[i].name);
				pn_setdetail(err, "The field's vocabulary holds the ids seen at least min_count times in the training data.");
				pn_free(f);
				return PN_ECONFIG;
			}
			if (!f[i].hash)
			{
				pn_seterr(err, PN_ECONFIG, "config field \"%s\": \"min_count\" needs a hashed field, not \"hash\": false", f[i].name);
				pn_setdetail(err, "A field with \"hash\": false takes its ids as rows; \"min_count\" maps ids to rows through a vocabulary.");
				pn_free(f);
				return PN_ECONFIG;
			}
			f[i].min_count = mc->ival;
		}
		for (j = 0; j < i; j++)
			if (strcmp(f[j].name, f[i].name) == 0)
			{
				pn_seterr(err, PN_ECONFIG, "config \"%s\" names field \"%s\" twice", key, f[i].name);
				pn_free(f);
				return PN_ECONFIG;
			}
	}
	*out = f;
	*nout = arr->n;
	return PN_OK;
}

/* Release what pn_config_parse allocated */
void
pn_config_free(PnConfig *cfg)
{
	pn_free(cfg->feat);
	pn_free(cfg->pers);
	pn_free(cfg->neg_rate);
	pn_free(cfg->dfield);
	cfg->feat = cfg->pers = NULL;
	cfg->neg_rate = NULL;
	cfg->dfield = NULL;
}

/* Saturating helpers for size arithmetic */
static int64_t
sat_mul(int64_t a, int64_t b)
{
	if (a < 0 || b < 0)
		return -1;
	if (a != 0 && b > INT64_MAX / a)
		return -1;
	return a * b;
}

static int64_t
sat_add(int64_t a, int64_t b)
{
	if (a < 0 || b < 0 || a > INT64_MAX - b)
		return -1;
	return a + b;
}

/* Number of floats every tensor of cfg needs together; -1 on overflow */
int64_t
pn_config_numel(const PnConfig *c)
{
	int64_t		k = c->emb_dim,
				n0 = c->n0,
				D = c->domains,
				T = c->ntasks,
				tot = 0;
	int			i,
				t,
				l;

	/* a vocabulary's int64 ids count as 2 floats each */
	for (i = 0; i < c->nfeat; i++)
		tot = sat_add(tot, sat_add(sat_mul(PN_FIELD_ROWS(&c->feat[i]), k),
								   c->feat[i].min_count > 0 ? 2 * (c->feat[i].buckets - 1) : 0));
	for (i = 0; i < c->npers; i++)
		tot = sat_add(tot, sat_add(sat_mul(PN_FIELD_ROWS(&c->pers[i]), k),
								   c->pers[i].min_count > 0 ? 2 * (c->pers[i].buckets - 1) : 0));
	tot = sat_add(tot, D * k);
	if (c->epnet)
	{
		int64_t		he = c->epnet_hidden;

		tot = sat_add(tot, sat_mul(he, k + n0) + he + n0 * he + n0);
	}
	if (c->pn)
		tot = sat_add(tot, 2 * n0 + 4 * D * n0 + D);	/* + pn.num_batches_tracked [D] */
	for (t = 0; t < T; t++)
	{
		int64_t		prev = n0;

		for (l = 1; l <= c->nhidden + 1; l++)
		{
			int64_t		h = l <= c->nhidden ? c->hidden[l - 1] : 1;
			int64_t		wl = sat_mul(h, prev);

			tot = sat_add(tot, sat_add(wl, h));
			if (c->star)
				tot = sat_add(tot, sat_mul(D, sat_add(wl, h)));
			prev = h;
		}
	}
	if (c->ppnet)
		for (l = 0; l < c->nhidden; l++)
		{
			int64_t		g = T * c->hidden[l];

			tot = sat_add(tot, sat_add(sat_mul(g, c->pk + n0), sat_mul(g, g)) + 2 * g);
		}
	if (c->aux)
	{
		int64_t		ha = c->aux_hidden;

		tot = sat_add(tot, sat_mul(ha, k + n0) + ha + T * ha + T);
	}
	return tot;
}

/* A finite number as a float (the value stored and written back) */
static bool
finite_float(const PnJson *v, float *out)
{
	if (v == NULL || v->type != PNJ_NUMBER || !isfinite((float) v->num))
		return false;
	*out = (float) v->num;
	return true;
}

/*
 * A named dense field's transforms: "log1p": true, "clip": [lo, hi],
 * "normalize": "zscore" with its "mean" and "std" (absent until training
 * computes them from the data query).
 */
static int
get_dense_transforms(const PnJson *e, PnField *f, PnError *err)
{
	const PnJson *v;
	int			rc;

	if ((rc = get_bool(e, "log1p", &f->log1p, err)) != PN_OK)
	{
		pn_seterr(err, PN_ECONFIG, "config dense field \"%s\": \"log1p\" must be true or false", f->name);
		return PN_ECONFIG;
	}
	if ((v = pn_json_get(e, "clip")) != NULL)
	{
		if (v->type != PNJ_ARRAY || v->n != 2 || !finite_float(v->items[0], &f->clip_lo) ||
			!finite_float(v->items[1], &f->clip_hi) || !(f->clip_lo < f->clip_hi))
		{
			pn_seterr(err, PN_ECONFIG, "config dense field \"%s\": \"clip\" must be [lo, hi], two finite numbers with lo < hi", f->name);
			pn_setdetail(err, "Values below lo become lo and values above hi become hi (after \"log1p\", before \"normalize\").");
			return PN_ECONFIG;
		}
		f->clip = true;
	}
	if ((v = pn_json_get(e, "normalize")) != NULL)
	{
		if (v->type != PNJ_STRING || strcmp(v->str, "zscore") != 0)
		{
			pn_seterr(err, PN_ECONFIG, "config dense field \"%s\": \"normalize\" must be \"zscore\"", f->name);
			pn_setdetail(err, "\"zscore\": (x - mean) / std with the mean and standard deviation of the training data.");
			return PN_ECONFIG;
		}
		f->zscore = true;
	}
	if (pn_json_get(e, "mean") != NULL || pn_json_get(e, "std") != NULL)
	{
		if (!f->zscore)
		{
			pn_seterr(err, PN_ECONFIG, "config dense field \"%s\" has \"mean\" or \"std\" without \"normalize\": \"zscore\"", f->name);
			pn_setdetail(err, "\"mean\" and \"std\" are the statistics of a z-scored field.");
			return PN_ECONFIG;
		}
		if (!finite_float(pn_json_get(e, "mean"), &f->mean) || !finite_float(pn_json_get(e, "std"), &f->std) ||
			!(f->std >= FLT_MIN))
		{
			pn_seterr(err, PN_ECONFIG, "config dense field \"%s\": \"mean\" and \"std\" must both be given, finite, with std >= %g (a normal float32)",
					  f->name, (double) FLT_MIN);
			pn_setdetail(err, "Leave both out and pepnet_train computes them from its data query.");
			return PN_ECONFIG;
		}
		f->stats = true;
	}
	return PN_OK;
}

/* The named form's "dense": an array of {"name": column} objects and their transforms */
static int
get_dense_columns(const PnJson *root, PnConfig *cfg, PnError *err)
{
	const PnJson *v = pn_json_get(root, "dense");
	int			i,
				j;

	cfg->dense = 0;
	/* "dense": 0, as a stored arrays config has it: no dense fields */
	if (v == NULL || (v->type == PNJ_ARRAY && v->n == 0) || (v->type == PNJ_NUMBER && v->num == 0))
		return PN_OK;
	if (v->type != PNJ_ARRAY)
	{
		pn_seterr(err, PN_ECONFIG, "config \"dense\" must be an array of {\"name\": column} objects in the named form");
		pn_setdetail(err, "With \"inputs\": \"columns\" each dense feature names its column, e.g. \"dense\": [{\"name\": \"price\"}].");
		return PN_ECONFIG;
	}
	if (v->n > PN_MAX_DENSE)
		return pn_seterr(err, PN_ETOOBIG, "config \"dense\" has %d columns, more than the limit of %d", v->n, PN_MAX_DENSE);
	cfg->dfield = pn_alloc0(sizeof(PnField) * v->n);
	if (!cfg->dfield)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	cfg->dense = v->n;
	for (i = 0; i < v->n; i++)
	{
		const PnJson *e = v->items[i];
		char		what[64];
		int			rc;

		snprintf(what, sizeof(what), "\"dense\"[%d]", i);
		if (e->type != PNJ_OBJECT)
			return pn_seterr(err, PN_ECONFIG, "config %s must be an object {\"name\": column}", what);
		for (j = 0; j < e->n; j++)
			if (strcmp(e->items[j]->key, "name") && strcmp(e->items[j]->key, "log1p") &&
				strcmp(e->items[j]->key, "clip") && strcmp(e->items[j]->key, "normalize") &&
				strcmp(e->items[j]->key, "mean") && strcmp(e->items[j]->key, "std"))
			{
				pn_seterr(err, PN_ECONFIG, "config %s has unknown key \"%.*s\"", what, pn_utf8_prefix(e->items[j]->key, 40), e->items[j]->key);
				pn_setdetail(err, "A dense field takes \"name\", \"log1p\", \"clip\", \"normalize\", \"mean\" and \"std\".");
				return PN_ECONFIG;
			}
		strcat(what, ".name");
		if ((rc = get_name(pn_json_get(e, "name"), what, cfg->dfield[i].name, err)) != PN_OK)
			return rc;
		cfg->dfield[i].named = true;
		if ((rc = get_dense_transforms(e, &cfg->dfield[i], err)) != PN_OK)
			return rc;
	}
	return PN_OK;
}

/*
 * The named form's column names: unique across features, persona and
 * dense, and neither the domain column nor a task's label column.
 */
static int
check_column_names(const PnConfig *cfg, PnError *err)
{
	int			n = cfg->nfeat + cfg->npers + cfg->dense,
				i,
				j,
				t;

	for (i = 0; i < n; i++)
	{
		const char *a = i < cfg->nfeat ? cfg->feat[i].name :
			i < cfg->nfeat + cfg->npers ? cfg->pers[i - cfg->nfeat].name :
			cfg->dfield[i - cfg->nfeat - cfg->npers].name;

		if (strcmp(a, cfg->domain_column) == 0)
		{
			pn_seterr(err, PN_ECONFIG, "config field \"%s\" is the domain column", a);
			pn_setdetail(err, "In the named form a field's name is its column; column \"%s\" holds the domain.", cfg->domain_column);
			return PN_ECONFIG;
		}
		for (t = 0; t < cfg->ntasks; t++)
			if (strcmp(a, cfg->tasks[t]) == 0)
			{
				pn_seterr(err, PN_ECONFIG, "config field \"%s\" is the label column of task \"%s\"", a, a);
				pn_setdetail(err, "In the named form a field's name is its column, and each task reads its labels from the column of its name.");
				return PN_ECONFIG;
			}
		for (j = 0; j < i; j++)
		{
			const char *b = j < cfg->nfeat ? cfg->feat[j].name :
				j < cfg->nfeat + cfg->npers ? cfg->pers[j - cfg->nfeat].name :
				cfg->dfield[j - cfg->nfeat - cfg->npers].name;

			if (strcmp(a, b) == 0)
			{
				pn_seterr(err, PN_ECONFIG, "config names column \"%s\" twice", a);
				pn_setdetail(err, "In the named form field names are column names, unique across features, persona and dense.");
				return PN_ECONFIG;
			}
		}
	}
	/* a weights column is read once, for one field, and is no other column */
	for (i = 0; i < cfg->nfeat + cfg->npers; i++)
	{
		const PnField *f = i < cfg->nfeat ? &cfg->feat[i] : &cfg->pers[i - cfg->nfeat];

		if (f->weights[0] == '\0')
			continue;
		for (j = 0; j < n + cfg->ntasks + 1 + i; j++)
		{
			const char *b = j < cfg->nfeat ? cfg->feat[j].name :
				j < cfg->nfeat + cfg->npers ? cfg->pers[j - cfg->nfeat].name :
				j < n ? cfg->dfield[j - cfg->nfeat - cfg->npers].name :
				j < n + cfg->ntasks ? cfg->tasks[j - n] :
				j == n + cfg->ntasks ? cfg->domain_column :
				(j - n - cfg->ntasks - 1 < cfg->nfeat ? cfg->feat[j - n - cfg->ntasks - 1].weights :
				 cfg->pers[j - n - cfg->ntasks - 1 - cfg->nfeat].weights);

			if (strcmp(f->weights, b) == 0)
			{
				pn_seterr(err, PN_ECONFIG, "config field \"%s\" has \"weights\": \"%s\", a column the model reads otherwise",
						  f->name, f->weights);
				pn_setdetail(err, "A multi-valued field's weights column holds only its weights: no field, label, domain or other weights column.");
				return PN_ECONFIG;
			}
		}
	}
	for (t = 0; t < cfg->ntasks; t++)
		if (strcmp(cfg->tasks[t], cfg->domain_column) == 0)
		{
			pn_seterr(err, PN_ECONFIG, "config task \"%s\" is the domain column", cfg->tasks[t]);
			pn_setdetail(err, "In the named form each task reads its labels from the column of its name.");
			return PN_ECONFIG;
		}
	return PN_OK;
}

/* Parse and validate a configuration; refuses models above max_bytes */
int
pn_config_parse(const char *text, size_t len, int64_t max_bytes, PnConfig *cfg, PnError *err)
{
	PnJson	   *root = NULL;
	const PnJson *v;
	int64_t		iv;
	int			rc,
				i;

	memset(cfg, 0, sizeof(*cfg));
	if ((rc = pn_json_parse(text, len, &root, err)) != PN_OK)
	{
		err->code = rc == PN_ENOMEM ? PN_ENOMEM : PN_ECONFIG;
		return err->code;
	}
	if (root->type != PNJ_OBJECT)
	{
		pn_json_free(root);
		return pn_seterr(err, PN_ECONFIG, "config must be a JSON object");
	}
	for (i = 0; i < root->n; i++)
	{
		int			j;
		bool		known = false;

		for (j = 0; config_keys[j]; j++)
			known |= strcmp(config_keys[j], root->items[i]->key) == 0;
		if (!known)
		{
			char		list[256] = "";

			for (j = 0; config_keys[j]; j++)
				snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", j ? ", " : "", config_keys[j]);
			pn_seterr(err, PN_ECONFIG, "config has unknown key \"%.*s\"", pn_utf8_prefix(root->items[i]->key, 60), root->items[i]->key);
			pn_setdetail(err, "Known keys: %s.", list);
			pn_json_free(root);
			return PN_ECONFIG;
		}
	}

	/* defaults of docs/model.md */
	cfg->emb_dim = 16;
	cfg->ntasks = 1;
	strcpy(cfg->tasks[0], "click");
	cfg->nhidden = 2;
	cfg->hidden[0] = 256;
	cfg->hidden[1] = 128;
	cfg->gamma = 2.0f;
	cfg->epnet = cfg->ppnet = cfg->pn = cfg->star = cfg->aux = true;
	cfg->aux_hidden = 32;
	cfg->l2 = 0.0f;

#define TRY(x) do { if ((rc = (x)) != PN_OK) goto fail; } while (0)
	if (pn_json_get(root, "domains") == NULL)
	{
		rc = pn_seterr(err, PN_ECONFIG, "config needs \"domains\": the number of domains");
		goto fail;
	}
	iv = 0;
	TRY(get_int(root, "domains", 1, PN_MAX_DOMAINS, &iv, err));
	cfg->domains = (int) iv;
	/* "inputs": "arrays" (absent: every 0.2 config) or "columns" */
	cfg->inputs = PN_INPUTS_ARRAYS;
	if ((v = pn_json_get(root, "inputs")) != NULL)
	{
		if (v->type == PNJ_STRING && strcmp(v->str, "columns") == 0)
			cfg->inputs = PN_INPUTS_COLUMNS;
		else if (!(v->type == PNJ_STRING && strcmp(v->str, "arrays") == 0))
		{
			rc = pn_seterr(err, PN_ECONFIG, "config \"inputs\" must be \"arrays\" or \"columns\"");
			pn_setdetail(err, "\"arrays\": the positional form (features bigint[], persona bigint[], dense real[]); "
						 "\"columns\": every field names a column of the query.");
			goto fail;
		}
	}
	TRY(get_fields(root, "features", true, cfg->inputs == PN_INPUTS_COLUMNS, &cfg->feat, &cfg->nfeat, err));
	TRY(get_fields(root, "persona", false, cfg->inputs == PN_INPUTS_COLUMNS, &cfg->pers, &cfg->npers, err));
	v = pn_json_get(root, "dense");
	if (cfg->inputs == PN_INPUTS_ARRAYS)
	{
		if (v != NULL && v->type == PNJ_ARRAY)
		{
			rc = named_only(err, "\"dense\" as an array of {\"name\": column} objects");
			goto fail;
		}
		if (pn_json_get(root, "domain_column") != NULL)
		{
			rc = named_only(err, "\"domain_column\"");
			goto fail;
		}
		iv = 0;
		TRY(get_int(root, "dense", 0, PN_MAX_DENSE, &iv, err));
		cfg->dense = (int) iv;
	}
	else
	{
		strcpy(cfg->domain_column, "domain");
		if ((v = pn_json_get(root, "domain_column")) != NULL)
			TRY(get_name(v, "\"domain_column\"", cfg->domain_column, err));
		TRY(get_dense_columns(root, cfg, err));
	}
	iv = cfg->emb_dim;
	TRY(get_int(root, "emb_dim", 1, PN_MAX_EMB_DIM, &iv, err));
	cfg->emb_dim = (int) iv;

	if ((v = pn_json_get(root, "tasks")) != NULL)
	{
		if (v->type != PNJ_ARRAY || v->n < 1 || v->n > PN_MAX_TASKS)
		{
			rc = pn_seterr(err, PN_ECONFIG, "config \"tasks\" must be an array of 1 to %d task names", PN_MAX_TASKS);
			goto fail;
		}
		cfg->ntasks = v->n;
		for (i = 0; i < v->n; i++)
		{
			int			j;

			TRY(get_name(v->items[i], "task name", cfg->tasks[i], err));
			for (j = 0; j < i; j++)
				if (strcmp(cfg->tasks[j], cfg->tasks[i]) == 0)
				{
					rc = pn_seterr(err, PN_ECONFIG, "config \"tasks\" names \"%s\" twice", cfg->tasks[i]);
					goto fail;
				}
		}
	}
	if ((v = pn_json_get(root, "hidden")) != NULL)
	{
		if (v->type != PNJ_ARRAY || v->n < 1 || v->n > PN_MAX_LAYERS)
		{
			rc = pn_seterr(err, PN_ECONFIG, "config \"hidden\" must be an array of 1 to %d layer widths", PN_MAX_LAYERS);
			goto fail;
		}
		cfg->nhidden = v->n;
		for (i = 0; i < v->n; i++)
		{
			if (v->items[i]->type != PNJ_NUMBER || !v->items[i]->is_int ||
				v->items[i]->ival < 1 || v->items[i]->ival > PN_MAX_WIDTH)
			{
				rc = pn_seterr(err, PN_ECONFIG, "config \"hidden\"[%d] must be an integer between 1 and %d", i, PN_MAX_WIDTH);
				goto fail;
			}
			cfg->hidden[i] = (int) v->items[i]->ival;
		}
	}
	TRY(get_num(root, "gamma", 1e-6, 1e6, &cfg->gamma, err));
	TRY(get_bool(root, "epnet", &cfg->epnet, err));
	TRY(get_bool(root, "ppnet", &cfg->ppnet, err));
	TRY(get_bool(root, "pn", &cfg->pn, err));
	TRY(get_bool(root, "star", &cfg->star, err));
	TRY(get_bool(root, "aux", &cfg->aux, err));
	TRY(get_bool(root, "domain_input", &cfg->domain_input, err));
	if (cfg->domain_input && cfg->pn)
	{
		/*
		 * dv is constant within a domain: PN's batch variance of its columns
		 * is 0 (centred away in training, its drift amplified by
		 * 1/sqrt(eps) by the running statistics at inference)
		 */
		rc = pn_seterr(err, PN_ECONFIG, "config \"domain_input\" needs \"pn\": false");
		pn_setdetail(err, "The domain embedding is the same for every row of a domain: PN's per-domain statistics would erase it "
					 "in training and amplify its drift at inference. The shared-bottom baseline: every part off and \"domain_input\": true.");
		goto fail;
	}
	iv = cfg->aux_hidden;
	TRY(get_int(root, "aux_hidden", 1, PN_MAX_WIDTH, &iv, err));
	cfg->aux_hidden = (int) iv;
	TRY(get_num(root, "l2", 0.0, 1e6, &cfg->l2, err));
	/* negative down-sampling rate: one number for every domain, or one per domain, in (0, 1] */
	v = pn_json_get(root, "negative_rate");
	if (v != NULL && v->type != PNJ_NULL)
	{
		int			n = v->type == PNJ_ARRAY ? v->n : 1;

		if ((v->type != PNJ_NUMBER && v->type != PNJ_ARRAY) || (n != 1 && n != cfg->domains))
		{
			rc = pn_seterr(err, PN_ECONFIG, "config \"negative_rate\" must be a number or an array of %d numbers "
						   "(one per domain) in (0, 1]", cfg->domains);
			goto fail;
		}
		cfg->neg_rate = pn_alloc(sizeof(float) * cfg->domains);
		if (!cfg->neg_rate)
		{
			rc = pn_seterr(err, PN_ENOMEM, "out of memory for the config");
			goto fail;
		}
		for (i = 0; i < cfg->domains; i++)
		{
			const PnJson *x = v->type == PNJ_ARRAY ? v->items[n == 1 ? 0 : i] : v;

			if (x->type != PNJ_NUMBER || !((float) x->num > 0.0f && (float) x->num <= 1.0f))
			{
				rc = pn_seterr(err, PN_ECONFIG, "config \"negative_rate\" must be in (0, 1]: the share of "
							   "negatives kept in the training data");
				goto fail;
			}
			cfg->neg_rate[i] = (float) x->num;
		}
	}

	if (cfg->inputs == PN_INPUTS_COLUMNS)
		TRY(check_column_names(cfg, err));
	cfg->n0 = cfg->nfeat * cfg->emb_dim + cfg->dense + (cfg->domain_input ? cfg->emb_dim : 0);
	cfg->pk = cfg->npers * cfg->emb_dim;
	cfg->bags = false;
	for (i = 0; i < cfg->nfeat + cfg->npers; i++)
		cfg->bags |= (i < cfg->nfeat ? cfg->feat[i].pooling : cfg->pers[i - cfg->nfeat].pooling) != PN_POOL_NONE;
	if (cfg->n0 < 1)
	{
		rc = pn_seterr(err, PN_ECONFIG, "config has no input: give at least one feature or dense > 0");
		goto fail;
	}
	if ((int64_t) cfg->n0 > PN_MAX_WIDTH * 4)
	{
		rc = pn_seterr(err, PN_ETOOBIG, "config input width %d (features * emb_dim + dense, + emb_dim with domain_input) exceeds the limit of %d", cfg->n0, PN_MAX_WIDTH * 4);
		goto fail;
	}
	cfg->epnet_hidden = cfg->n0;
	v = pn_json_get(root, "epnet_hidden");
	if (v != NULL && v->type != PNJ_NULL)
	{
		iv = 0;
		TRY(get_int(root, "epnet_hidden", 1, PN_MAX_WIDTH * 4, &iv, err));
		cfg->epnet_hidden = (int) iv;
	}
	{
		int64_t		numel = pn_config_numel(cfg);

		if (numel < 0 || (max_bytes > 0 && numel > max_bytes / 4))
		{
			pn_seterr(err, PN_ETOOBIG, "config needs %.0f MB of weights, more than the limit of %lld MB",
					  numel < 0 ? 1e18 : (double) numel * 4 / (1024.0 * 1024.0),
					  (long long) (max_bytes / (1024 * 1024)));
			pn_setdetail(err, "Lower buckets, emb_dim, hidden or domains, or raise pepnet.max_model_size.");
			rc = PN_ETOOBIG;
			goto fail;
		}
	}
	pn_json_free(root);
	return PN_OK;

fail:
	pn_json_free(root);
	pn_config_free(cfg);
	return rc;
#undef TRY
}

/* A growing string; oom is set when an allocation fails */
typedef struct Sbuf
{
	char	   *s;
	size_t		len,
				cap;
	bool		oom;
} Sbuf;

static void sb_add(Sbuf *b, const char *fmt,...)
#if defined(__GNUC__)
			__attribute__((format(printf, 2, 3)))
#endif
			;

/* Append formatted text to a growing string */
static void
sb_add(Sbuf *b, const char *fmt,...)
{
	va_list		ap;
	int			n;

	if (b->oom)
		return;
	for (;;)
	{
		va_start(ap, fmt);
		n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
		{
			b->oom = true;
			return;
		}
		if (b->len + n < b->cap)
		{
			b->len += n;
			return;
		}
		{
			size_t		ncap = (b->cap + n + 1) * 2;
			char	   *ns = pn_alloc(ncap);

			if (!ns)
			{
				b->oom = true;
				return;
			}
			memcpy(ns, b->s, b->len + 1);
			pn_free(b->s);
			b->s = ns;
			b->cap = ncap;
		}
	}
}

/* Write a JSON string literal (names are checked printable) */
static void
sb_str(Sbuf *b, const char *s)
{
	sb_add(b, "\"");
	for (; *s; s++)
	{
		if (*s == '"' || *s == '\\')
			sb_add(b, "\\%c", *s);
		else if ((unsigned char) *s < 0x20)
			sb_add(b, "\\u%04x", (unsigned char) *s);
		else
			sb_add(b, "%c", *s);
	}
	sb_add(b, "\"");
}

/* Write an array of fields ("nullable" in the named form) */
static void
sb_fields(Sbuf *b, const PnField *f, int n)
{
	int			i;

	sb_add(b, "[");
	for (i = 0; i < n; i++)
	{
		sb_add(b, "%s{\"name\": ", i ? ", " : "");
		sb_str(b, f[i].name);
		sb_add(b, ", \"buckets\": %lld, \"hash\": %s", (long long) f[i].buckets, f[i].hash ? "true" : "false");
		if (f[i].named)
			sb_add(b, ", \"nullable\": %s", f[i].nullable ? "true" : "false");
		if (f[i].named && f[i].id != PN_ID_ANY)
			sb_add(b, ", \"id\": \"%s\"", f[i].id == PN_ID_TEXT ? "text" : "integer");
		if (f[i].pooling != PN_POOL_NONE)
			sb_add(b, ", \"pooling\": \"%s\"", f[i].pooling == PN_POOL_SUM ? "sum" : "mean");
		if (f[i].weights[0])
		{
			sb_add(b, ", \"weights\": ");
			sb_str(b, f[i].weights);
		}
		if (f[i].min_count > 0)
			sb_add(b, ", \"min_count\": %lld", (long long) f[i].min_count);
		sb_add(b, "}");
	}
	sb_add(b, "]");
}

/* Shortest decimal form of a float that reads back as the same float */
static void
float_str(char *buf, size_t n, float v)
{
	int			p;

	for (p = 6; p < 9; p++)
	{
		snprintf(buf, n, "%.*g", p, (double) v);
		if (strtof(buf, NULL) == v)
			return;
	}
	snprintf(buf, n, "%.9g", (double) v);
}

/* The config with every default filled in, as JSON text */
char *
pn_config_to_json(const PnConfig *c)
{
	Sbuf		b = {NULL, 0, 0, false};
	int			i;

	b.cap = 256;
	b.s = pn_alloc(b.cap);
	if (!b.s)
		return NULL;
	b.s[0] = '\0';
	sb_add(&b, "{\"inputs\": \"%s\", \"domains\": %d, \"features\": ",
		   c->inputs == PN_INPUTS_COLUMNS ? "columns" : "arrays", c->domains);
	sb_fields(&b, c->feat, c->nfeat);
	sb_add(&b, ", \"persona\": ");
	sb_fields(&b, c->pers, c->npers);
	if (c->inputs == PN_INPUTS_COLUMNS)
	{
		sb_add(&b, ", \"domain_column\": ");
		sb_str(&b, c->domain_column);
		sb_add(&b, ", \"dense\": [");
		for (i = 0; i < c->dense; i++)
		{
			const PnField *f = &c->dfield[i];
			char		n1[32],
						n2[32];

			sb_add(&b, "%s{\"name\": ", i ? ", " : "");
			sb_str(&b, f->name);
			if (f->log1p)
				sb_add(&b, ", \"log1p\": true");
			if (f->clip)
			{
				float_str(n1, sizeof(n1), f->clip_lo);
				float_str(n2, sizeof(n2), f->clip_hi);
				sb_add(&b, ", \"clip\": [%s, %s]", n1, n2);
			}
			if (f->zscore)
				sb_add(&b, ", \"normalize\": \"zscore\"");
			if (f->stats)
			{
				float_str(n1, sizeof(n1), f->mean);
				float_str(n2, sizeof(n2), f->std);
				sb_add(&b, ", \"mean\": %s, \"std\": %s", n1, n2);
			}
			sb_add(&b, "}");
		}
		sb_add(&b, "], \"emb_dim\": %d, \"tasks\": [", c->emb_dim);
	}
	else
		sb_add(&b, ", \"dense\": %d, \"emb_dim\": %d, \"tasks\": [", c->dense, c->emb_dim);
	for (i = 0; i < c->ntasks; i++)
	{
		sb_add(&b, i ? ", " : "");
		sb_str(&b, c->tasks[i]);
	}
	sb_add(&b, "], \"hidden\": [");
	for (i = 0; i < c->nhidden; i++)
		sb_add(&b, "%s%d", i ? ", " : "", c->hidden[i]);
	sb_add(&b, "], \"gamma\": %.9g, \"epnet\": %s, \"epnet_hidden\": %d, \"ppnet\": %s, \"pn\": %s, "
		   "\"star\": %s, \"aux\": %s, \"aux_hidden\": %d, \"l2\": %.9g}",
		   c->gamma, c->epnet ? "true" : "false", c->epnet_hidden, c->ppnet ? "true" : "false",
		   c->pn ? "true" : "false", c->star ? "true" : "false", c->aux ? "true" : "false",
		   c->aux_hidden, c->l2);
	if (c->neg_rate)
	{
		bool		same = true;

		for (i = 1; i < c->domains; i++)
			same &= c->neg_rate[i] == c->neg_rate[0];
		b.len--;				/* reopen the object */
		char		num[32];

		if (same)
		{
			float_str(num, sizeof(num), c->neg_rate[0]);
			sb_add(&b, ", \"negative_rate\": %s}", num);
		}
		else
		{
			sb_add(&b, ", \"negative_rate\": [");
			for (i = 0; i < c->domains; i++)
			{
				float_str(num, sizeof(num), c->neg_rate[i]);
				sb_add(&b, "%s%s", i ? ", " : "", num);
			}
			sb_add(&b, "]}");
		}
	}
	/* written only when on, so that every config without it keeps its canonical text */
	if (c->domain_input)
	{
		b.len--;				/* reopen the object */
		sb_add(&b, ", \"domain_input\": true}");
	}
	if (b.oom)
	{
		pn_free(b.s);
		return NULL;
	}
	return b.s;
}
