/*
 * bag.c
 *		Multi-valued fields ("pooling", docs/model.md "Multi-valued fields"):
 *		the pooling of a bag of embedding rows, shared by every forward path
 *		(pn_gather_x0 of scoring and the engine's tiles, pn_persona_build,
 *		the trainer's embed_forward) and the factor its backward scatters
 *		with (train.c's embed_backward).
 */
#include "pncore.h"
#include "pninternal.h"

#include <math.h>
#include <string.h>

/*
 * The factor of each id's weight in row r's pooled value: 1 for sum,
 * 1 / sum w for mean; 0 when the row has no ids or total weight 0 (the
 * empty row is used).
 */
float
pn_bag_scale(const PnField *f, const PnBag *bag, int64_t r)
{
	int64_t		a = bag->off[r],
				b = bag->off[r + 1],
				j;
	double		sw = 0;

	if (b <= a)
		return 0.0f;
	if (bag->weights == NULL)
		sw = (double) (b - a);
	else
		for (j = a; j < b; j++)
			sw += bag->weights[j];
	if (!(sw > 0))
		return 0.0f;
	return f->pooling == PN_POOL_MEAN ? (float) (1.0 / sw) : 1.0f;
}

int
pn_bag_pool(const PnField *f, int i, const char *kind, const float *table, int k,
			const PnBag *bag, int64_t r, float *out, PnError *err)
{
	int64_t		a = bag->off[r],
				b = bag->off[r + 1],
				j;
	float		s = pn_bag_scale(f, bag, r);
	int			e;

	if (s == 0.0f)
	{
		memcpy(out, table + PN_MISSING_ROW(f) * k, sizeof(float) * k);
		return PN_OK;
	}
	memset(out, 0, sizeof(float) * k);
	for (j = a; j < b; j++)
	{
		int64_t		row = bag->rows[j];
		float		w = (bag->weights ? bag->weights[j] : 1.0f) * s;
		const float *src;

		if (row < 0 || row > PN_MISSING_ROW(f))
		{
			pn_seterr(err, PN_EINPUT, "%s row %lld of multi-valued field \"%s\" is out of range", kind, (long long) row, f->name);
			pn_setdetail(err, "Field \"%s\" has %lld rows and its empty row.", f->name, (long long) f->buckets);
			return PN_EINPUT;
		}
		src = table + row * k;
		for (e = 0; e < k; e++)
			out[e] += w * src[e];
	}
	return PN_OK;
}
