/*
 * evaluate.c
 *		Logits of labelled rows for evaluation (pepnet_evaluate, training's
 *		validation), computed by the scoring engine.
 *
 * The trainer's forward runs a batch as GEMMs whose rounding for one row can
 * depend on where the row stands in the call (which kernel takes which rows),
 * so two identical rows could get logits one ulp apart and exact AUC would
 * order ties by their position in the data.  The engine (engine.c) scores in
 * tiles of a fixed number of rows, padded, so a row's logits depend on its
 * inputs only; evaluating with it also judges exactly the scores that
 * pepnet_score serves (per-domain fusion, PN folded, negative down-sampling
 * in the output bias).
 *
 * Rows of a batch are grouped by (domain, persona): each group shares its
 * domain's fused parts (built on first use, kept for the evaluator's life)
 * and one persona gate computation, as a scoring request does.
 */
#include "pncore.h"
#include "pninternal.h"

#include <stdlib.h>
#include <string.h>

struct PnEvaluator
{
	const PnModel *m;
	PnEngine   *eng;
	PnDomainCache **dc;			/* [D], built on first use */
	/* one group's rows, gathered: capacity cap rows */
	int			cap;
	int		   *rows;			/* [cap] the rows' positions in the batch */
	int64_t    *feat;			/* [cap, F] */
	float	   *dense;			/* [cap, Nd] */
	float	   *logit;			/* [cap, T] */
	/* multi-valued fields: one group's feature bags gathered, a row's persona bags */
	PnBag	   *gbag;			/* [F] views into boff, brows, bw */
	PnBag	   *pview;			/* [P] */
	int64_t    *boff;			/* [F, cap + 1] */
	int64_t    *brows;			/* [bcap] */
	float	   *bw;				/* [bcap] */
	int64_t		bcap;
};

/* the batch being grouped (qsort has no context argument) */
static const PnBatch *sort_batch;
static int	sort_npers;

static const PnConfig *sort_cfg;

/* rows x and y by their multi-valued persona fields' bags: ids, then weights */
static int
cmp_pbags(const PnBatch *B, int x, int y)
{
	const PnConfig *c = sort_cfg;
	int			j;

	if (B->pbag == NULL)
		return 0;
	for (j = 0; j < c->npers; j++)
	{
		const PnBag *g = &B->pbag[j];
		int64_t		nx,
					ny,
					e;

		if (c->pers[j].pooling == PN_POOL_NONE)
			continue;
		nx = g->off[x + 1] - g->off[x];
		ny = g->off[y + 1] - g->off[y];
		if (nx != ny)
			return nx < ny ? -1 : 1;
		for (e = 0; e < nx; e++)
		{
			int64_t		u = g->rows[g->off[x] + e],
						v = g->rows[g->off[y] + e];

			if (u != v)
				return u < v ? -1 : 1;
		}
		for (e = 0; g->weights && e < nx; e++)
		{
			float		u = g->weights[g->off[x] + e],
						v = g->weights[g->off[y] + e];

			if (u != v)
				return u < v ? -1 : 1;
		}
	}
	return 0;
}

/* by domain, then persona ids and bags, then position: equal keys stay in input order */
static int
cmp_rows(const void *a, const void *b)
{
	int			x = *(const int *) a,
				y = *(const int *) b,
				j;
	const PnBatch *B = sort_batch;

	if (B->domain[x] != B->domain[y])
		return B->domain[x] < B->domain[y] ? -1 : 1;
	for (j = 0; j < sort_npers; j++)
	{
		int64_t		u = B->persona[(size_t) x * sort_npers + j],
					v = B->persona[(size_t) y * sort_npers + j];

		if (u != v)
			return u < v ? -1 : 1;
	}
	j = cmp_pbags(B, x, y);
	if (j != 0)
		return j;
	return (x > y) - (x < y);
}

static bool
same_group(const PnBatch *B, int P, int x, int y)
{
	return B->domain[x] == B->domain[y] &&
		(P == 0 || memcmp(B->persona + (size_t) x * P, B->persona + (size_t) y * P, sizeof(int64_t) * P) == 0) &&
		cmp_pbags(B, x, y) == 0;
}

/* An evaluator of model m (which must outlive it) at precision PN_FP32, PN_BF16 or PN_INT8 */
int
pn_evaluator_new(const PnModel *m, int precision, PnEvaluator **out, PnError *err)
{
	PnEvaluator *ev = pn_alloc0(sizeof(PnEvaluator));
	int			rc;

	*out = NULL;
	if (ev == NULL)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	ev->m = m;
	ev->dc = pn_alloc0(sizeof(PnDomainCache *) * (size_t) m->cfg.domains);
	if (ev->dc == NULL)
	{
		pn_evaluator_free(ev);
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	}
	if ((rc = pn_engine_new(m, precision, PN_TILE, NULL, &ev->eng, err)) != PN_OK)
	{
		pn_evaluator_free(ev);
		return rc;
	}
	*out = ev;
	return PN_OK;
}

void
pn_evaluator_free(PnEvaluator *ev)
{
	int			d;

	if (ev == NULL)
		return;
	if (ev->dc)
		for (d = 0; d < ev->m->cfg.domains; d++)
			pn_domain_free(ev->dc[d]);
	pn_free(ev->dc);
	pn_engine_free(ev->eng);
	pn_free(ev->rows);
	pn_free(ev->feat);
	pn_free(ev->dense);
	pn_free(ev->logit);
	pn_free(ev->gbag);
	pn_free(ev->pview);
	pn_free(ev->boff);
	pn_free(ev->brows);
	pn_free(ev->bw);
	pn_free(ev);
}

/* room for n rows of one group */
static int
reserve(PnEvaluator *ev, int n, PnError *err)
{
	const PnConfig *c = &ev->m->cfg;

	if (n <= ev->cap)
		return PN_OK;
	pn_free(ev->rows);
	pn_free(ev->feat);
	pn_free(ev->dense);
	pn_free(ev->logit);
	pn_free(ev->boff);
	ev->boff = NULL;
	if (c->bags)
	{
		ev->boff = pn_alloc(sizeof(int64_t) * (size_t) (n + 1) * (c->nfeat > 0 ? c->nfeat : 1));
		if (ev->gbag == NULL)
			ev->gbag = pn_alloc0(sizeof(PnBag) * (size_t) (c->nfeat > 0 ? c->nfeat : 1));
		if (ev->pview == NULL)
			ev->pview = pn_alloc0(sizeof(PnBag) * (size_t) (c->npers > 0 ? c->npers : 1));
		if (!ev->boff || !ev->gbag || !ev->pview)
			return pn_seterr(err, PN_ENOMEM, "out of memory");
	}
	ev->rows = pn_alloc(sizeof(int) * (size_t) n);
	ev->feat = pn_alloc(sizeof(int64_t) * (size_t) n * (c->nfeat > 0 ? c->nfeat : 1));
	ev->dense = pn_alloc(sizeof(float) * (size_t) n * (c->dense > 0 ? c->dense : 1));
	ev->logit = pn_alloc(sizeof(float) * (size_t) n * c->ntasks);
	ev->cap = n;
	if (!ev->rows || !ev->feat || !ev->dense || !ev->logit)
	{
		ev->cap = 0;
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	}
	return PN_OK;
}

/*
 * The bags of a group's g rows (ev->rows) of b's multi-valued feature
 * fields, gathered into ev->gbag
 */
static int
gather_bags(PnEvaluator *ev, const PnBatch *b, int g, PnError *err)
{
	const PnPlan *p = ev->m->plan;
	int64_t		need = 0,
				at = 0;
	int			i,
				j,
				r;

	/* the multi-valued fields: the plan's x0 segments of pooled bags */
	for (i = 0; i < p->nx0seg; i++)
		if (p->x0seg[i].kind == PN_SEG_BAG)
		{
			j = p->x0seg[i].field;
			for (r = 0; r < g; r++)
				need += b->fbag[j].off[ev->rows[r] + 1] - b->fbag[j].off[ev->rows[r]];
		}
	if (need > ev->bcap)
	{
		pn_free(ev->brows);
		pn_free(ev->bw);
		ev->brows = pn_alloc(sizeof(int64_t) * (size_t) need);
		ev->bw = pn_alloc(sizeof(float) * (size_t) need);
		ev->bcap = need;
		if (!ev->brows || !ev->bw)
		{
			ev->bcap = 0;
			return pn_seterr(err, PN_ENOMEM, "out of memory");
		}
	}
	for (i = 0; i < p->nx0seg; i++)
	{
		const PnBag *src;
		int64_t    *off;

		if (p->x0seg[i].kind != PN_SEG_BAG)
			continue;
		j = p->x0seg[i].field;
		src = &b->fbag[j];
		off = ev->boff + (size_t) j * (ev->cap + 1);
		ev->gbag[j].off = off;
		ev->gbag[j].rows = ev->brows;
		ev->gbag[j].weights = src->weights ? ev->bw : NULL;
		for (r = 0; r < g; r++)
		{
			int64_t		a = src->off[ev->rows[r]],
						len = src->off[ev->rows[r] + 1] - a;

			off[r] = at;
			memcpy(ev->brows + at, src->rows + a, sizeof(int64_t) * (size_t) len);
			if (src->weights)
				memcpy(ev->bw + at, src->weights + a, sizeof(float) * (size_t) len);
			at += len;
		}
		off[g] = at;
	}
	return PN_OK;
}

/*
 * Logits [n, T] of the rows of b, in b's order (b->labels is not read).
 * interrupt (may be NULL) is called per tile.  On an error about a row,
 * err->row is its position in b.
 */
int
pn_evaluator_logits(PnEvaluator *ev, const PnBatch *b, float *logits,
					void (*interrupt) (void), PnError *err)
{
	const PnModel *m = ev->m;
	const PnConfig *c = &m->cfg;
	int			P = c->npers,
				F = c->nfeat,
				Nd = c->dense,
				T = c->ntasks,
				i,
				rc = PN_OK;
	int		   *ord;

	if (b->n <= 0)
		return PN_OK;
	if ((rc = reserve(ev, b->n, err)) != PN_OK)
		return rc;
	ord = pn_alloc(sizeof(int) * (size_t) b->n);
	if (ord == NULL)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	for (i = 0; i < b->n; i++)
		ord[i] = i;
	if (c->bags && ((c->nfeat > 0 && b->fbag == NULL) || (c->npers > 0 && b->pbag == NULL)))
	{
		pn_free(ord);
		return pn_seterr(err, PN_EINPUT, "the model has multi-valued fields, but the batch has no bags");
	}
	sort_batch = b;
	sort_cfg = c;
	sort_npers = P;
	qsort(ord, b->n, sizeof(int), cmp_rows);
	sort_batch = NULL;

	for (i = 0; i < b->n;)
	{
		int			first = ord[i],
					d = b->domain[first],
					g = 0,
					k;
		PnPersona  *pp = NULL;

		if (d < 0 || d >= c->domains)
		{
			rc = pn_seterr(err, PN_EINPUT, "domain %d is out of range for a model of %d domains", d, c->domains);
			err->row = first;
			break;
		}
		while (i + g < b->n && same_group(b, P, first, ord[i + g]))
		{
			int			r = ord[i + g];

			ev->rows[g] = r;
			if (F > 0)
				memcpy(ev->feat + (size_t) g * F, b->features + (size_t) r * F, sizeof(int64_t) * F);
			if (Nd > 0)
				memcpy(ev->dense + (size_t) g * Nd, b->dense + (size_t) r * Nd, sizeof(float) * Nd);
			g++;
		}
		if (ev->dc[d] == NULL)
		{
			if ((rc = pn_domain_build(m, d, &ev->dc[d], err)) != PN_OK)
				break;
			if ((rc = pn_engine_prepare_domain(ev->eng, ev->dc[d], NULL, err)) != PN_OK)
				break;
		}
		if (c->bags)
		{
			/* the group's view of the persona's bags (the plan's pv segments of pooled bags) */
			for (k = 0; k < m->plan->npvseg; k++)
				if (m->plan->pvseg[k].kind == PN_SEG_BAG)
				{
					int			f = m->plan->pvseg[k].field;

					ev->pview[f] = b->pbag[f];
					ev->pview[f].off = b->pbag[f].off + first;
				}
			if ((rc = gather_bags(ev, b, g, err)) != PN_OK)
				break;
		}
		if ((rc = pn_persona_build_bags(m, P > 0 ? b->persona + (size_t) first * P : NULL,
										c->bags ? ev->pview : NULL, &pp, err)) != PN_OK)
		{
			err->row = first;
			break;
		}
		rc = pn_engine_logits_bags(ev->eng, ev->dc[d], pp, g, F > 0 ? ev->feat : NULL, c->bags ? ev->gbag : NULL,
								   Nd > 0 ? ev->dense : NULL, ev->logit, interrupt, err);
		pn_persona_free(pp);
		if (rc != PN_OK)
		{
			if (err->row >= 0 && err->row < g)
				err->row = ev->rows[err->row];
			break;
		}
		for (k = 0; k < g; k++)
			memcpy(logits + (size_t) ev->rows[k] * T, ev->logit + (size_t) k * T, sizeof(float) * T);
		i += g;
	}
	pn_free(ord);
	return rc;
}
