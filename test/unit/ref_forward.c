/*
 * ref_forward.c
 *		The unfused reference forward of one example in double precision,
 *		written literally from docs/model.md step by step (PN with running
 *		statistics).  Test-only code: the unit tests compare the library's
 *		fused forward passes (infer.c, engine.c) against it.
 */
#include "pncore.h"
#include "pninternal.h"
#include "plan.h"
#include "ref_forward.h"

#include <stdlib.h>
#include <string.h>

#define max_hidden pn_max_hidden
#define sigmoidd pn_sigmoidd

/* y[r] = b[r] + sum_c W[r, coloff + c] v[c], double precision */
static void
linear_d(const float *W, int ld, int coloff, int rows, int cols, const double *v,
		 const float *b, double *y)
{
	int			r,
				c;

	for (r = 0; r < rows; r++)
	{
		double		s = b ? b[r] : 0.0;

		for (c = 0; c < cols; c++)
			s += (double) W[(size_t) r * ld + coloff + c] * v[c];
		y[r] = s;
	}
}

/*
 * The reference keeps its own formulas (it is the independent check); it
 * only asserts that the layer plan the library's paths execute (plan.c)
 * agrees with it on shapes: every layer's weight is [out, prefix + in] of
 * the tensor it names, x0's segments are the fields' k columns in order,
 * then dense, then dv (domain_input).
 */
static int
plan_agrees(const PnModel *m, PnError *err)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *p = m->plan;
	int			i,
				off = 0;

	for (i = 0; i < p->nlayers; i++)
	{
		const PnLayer *ly = &p->layers[i];
		const PnTensor *w = &m->tensors[ly->w];

		if (w->ndim != 2 || w->shape[0] != ly->nout || w->shape[1] != ly->npre + ly->nin ||
			m->tensors[ly->b].shape[0] != ly->nout)
			return pn_seterr(err, PN_EFORMAT, "the plan's layer %d does not match tensor %s", i, w->name);
	}
	for (i = 0; i < p->nx0seg; i++)
	{
		const PnSeg *s = &p->x0seg[i];
		int			want = i < c->nfeat ? c->emb_dim : (s->kind == PN_SEG_DENSE ? c->dense : c->emb_dim);

		if (s->off != off || s->width != want || (i < c->nfeat && s->field != i))
			return pn_seterr(err, PN_EFORMAT, "the plan's x0 segment %d is not docs/model.md's", i);
		off += s->width;
	}
	if (off != c->n0)
		return pn_seterr(err, PN_EFORMAT, "the plan's x0 segments cover %d of %d columns", off, c->n0);
	return PN_OK;
}

/*
 * Reference forward of one example, unfused and in double precision,
 * following docs/model.md step by step (PN with running statistics).
 */
int
pn_forward_ref(const PnModel *m, int d, const int64_t *persona, const int64_t *features,
			   const float *dense, double *logits, PnError *err)
{
	const PnConfig *c = &m->cfg;
	int			k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				L = c->nhidden,
				hmax = max_hidden(c),
				he = c->epnet_hidden,
				ha = c->aux_hidden,
				i,
				j,
				t,
				l;
	size_t		wide = (size_t) T * hmax + k + n0 + c->pk + he + ha + 16;
	double	   *dv,
			   *x0,
			   *pv,
			   *x,
			   *xn,
			   *in,
			   *h1,
			   *gate,
			   *act,
			   *nxt;
	double	   *buf;
	double	  **gates;
	int			rc = PN_OK;

	if (d < 0 || d >= c->domains)
		return pn_seterr(err, PN_EINPUT, "domain %d is out of range for a model of %d domains", d, c->domains);
	if ((rc = plan_agrees(m, err)) != PN_OK)
		return rc;
	buf = pn_alloc(sizeof(double) * (k + 4 * (size_t) n0 + c->pk + 6 * wide + (size_t) L * T * hmax));
	gates = pn_alloc(sizeof(double *) * (L + 1));
	if (!buf || !gates)
	{
		pn_free(buf);
		pn_free(gates);
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	}
	dv = buf;
	x0 = dv + k;
	x = x0 + n0;
	xn = x + n0;
	pv = xn + n0;
	in = pv + c->pk;
	h1 = in + wide;
	gate = h1 + wide;
	act = gate + wide;
	nxt = act + wide;
	for (l = 0; l < L; l++)
		gates[l] = nxt + wide + (size_t) l * T * hmax;

	/* 1. inputs */
	for (i = 0; i < k; i++)
		dv[i] = PN_T(m, m->t_emb_dom)[(size_t) d * k + i];
	for (j = 0; j < c->nfeat; j++)
	{
		int64_t		s = pn_slot(&c->feat[j], j, features[j]);

		if (s < 0)
		{
			rc = pn_seterr(err, PN_EINPUT, "feature id %lld of field \"%s\" is out of range", (long long) features[j], c->feat[j].name);
			goto done;
		}
		for (i = 0; i < k; i++)
			x0[j * k + i] = PN_T(m, m->t_emb_feat[j])[s * k + i];
	}
	for (i = 0; i < c->dense; i++)
		x0[c->nfeat * k + i] = dense[i];
	if (c->domain_input)
		for (i = 0; i < k; i++)
			x0[c->nfeat * k + c->dense + i] = dv[i];
	for (j = 0; j < c->npers; j++)
	{
		int64_t		s = pn_slot(&c->pers[j], j, persona[j]);

		if (s < 0)
		{
			rc = pn_seterr(err, PN_EINPUT, "persona id %lld of field \"%s\" is out of range", (long long) persona[j], c->pers[j].name);
			goto done;
		}
		for (i = 0; i < k; i++)
			pv[j * k + i] = PN_T(m, m->t_emb_pers[j])[s * k + i];
	}

	/* 3. EPNet */
	if (c->epnet)
	{
		memcpy(in, dv, sizeof(double) * k);
		memcpy(in + k, x0, sizeof(double) * n0);
		linear_d(PN_T(m, m->t_ep_w1), k + n0, 0, he, k + n0, in, PN_T(m, m->t_ep_b1), h1);
		for (i = 0; i < he; i++)
			h1[i] = h1[i] > 0 ? h1[i] : 0;
		linear_d(PN_T(m, m->t_ep_w2), he, 0, n0, he, h1, PN_T(m, m->t_ep_b2), gate);
		for (i = 0; i < n0; i++)
			x[i] = c->gamma * sigmoidd(gate[i]) * x0[i];
	}
	else
		memcpy(x, x0, sizeof(double) * n0);

	/* 4. PN with running statistics */
	for (i = 0; i < n0; i++)
	{
		if (c->pn)
		{
			size_t		di = (size_t) d * n0 + i;
			double		g = (double) PN_T(m, m->t_pn_gamma)[i] * PN_T(m, m->t_pn_dgamma)[di];
			double		bt = (double) PN_T(m, m->t_pn_beta)[i] + PN_T(m, m->t_pn_dbeta)[di];

			xn[i] = g * (x[i] - PN_T(m, m->t_pn_rmean)[di]) / sqrt(PN_T(m, m->t_pn_rvar)[di] + PN_PARTNORM_EPS) + bt;
		}
		else
			xn[i] = x[i];
	}

	/* 6. PPNet gates from [pv ; x] */
	if (c->ppnet)
	{
		memcpy(in, pv, sizeof(double) * c->pk);
		memcpy(in + c->pk, x, sizeof(double) * n0);
		for (l = 0; l < L; l++)
		{
			int			g = T * c->hidden[l];

			linear_d(PN_T(m, m->t_pp_w1[l]), c->pk + n0, 0, g, c->pk + n0, in, PN_T(m, m->t_pp_b1[l]), h1);
			for (i = 0; i < g; i++)
				h1[i] = h1[i] > 0 ? h1[i] : 0;
			linear_d(PN_T(m, m->t_pp_w2[l]), g, 0, g, g, h1, PN_T(m, m->t_pp_b2[l]), gates[l]);
			for (i = 0; i < g; i++)
				gates[l][i] = c->gamma * sigmoidd(gates[l][i]);
		}
	}

	/* 5, 7. towers with STAR fusion */
	for (t = 0; t < T; t++)
	{
		int			prev = n0;

		memcpy(act, xn, sizeof(double) * n0);
		for (l = 1; l <= L + 1; l++)
		{
			int			h = l <= L ? c->hidden[l - 1] : 1;
			int			xi = PN_TW(c, t, l);
			const float *W = PN_T(m, m->t_tw_w[xi]);
			const float *B = PN_T(m, m->t_tw_b[xi]);

			for (j = 0; j < h; j++)
			{
				double		s = B[j];

				if (c->star)
					s += PN_T(m, m->t_tw_db[xi])[(size_t) d * h + j];
				for (i = 0; i < prev; i++)
				{
					double		wf = W[(size_t) j * prev + i];

					if (c->star)
						wf *= PN_T(m, m->t_tw_dw[xi])[((size_t) d * h + j) * prev + i];
					s += wf * act[i];
				}
				if (l <= L)
				{
					s = s > 0 ? s : 0;
					if (c->ppnet)
						s *= gates[l - 1][t * h + j];
				}
				nxt[j] = s;
			}
			memcpy(act, nxt, sizeof(double) * h);
			prev = h;
		}
		logits[t] = act[0];
	}

	/* 8. aux network on [dv ; x0] */
	if (c->aux)
	{
		double		o[PN_MAX_TASKS];

		memcpy(in, dv, sizeof(double) * k);
		memcpy(in + k, x0, sizeof(double) * n0);
		linear_d(PN_T(m, m->t_aux_w1), k + n0, 0, ha, k + n0, in, PN_T(m, m->t_aux_b1), h1);
		for (i = 0; i < ha; i++)
			h1[i] = h1[i] > 0 ? h1[i] : 0;
		linear_d(PN_T(m, m->t_aux_w2), ha, 0, T, ha, h1, PN_T(m, m->t_aux_b2), o);
		for (t = 0; t < T; t++)
			logits[t] += o[t];
	}
	/* negative down-sampling: p = q / (q + (1 - q) / w) is sigmoid(logit + ln w) */
	if (c->neg_rate)
		for (t = 0; t < T; t++)
			logits[t] += log((double) c->neg_rate[d]);
done:
	pn_free(buf);
	pn_free(gates);
	return rc;
}
