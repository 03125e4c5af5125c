/*
 * infer.c
 *		Inference of STAR-PEPNet: per-domain fused matrices (STAR fusion, PN
 *		folded into the first tower layer, domain parts of the first EPNet and
 *		aux layers as biases), per-request persona parts of the PPNet gates,
 *		and the forward pass of pepnet_predict (one candidate: GEMVs).  The
 *		batched forward of pepnet_score is engine.c's; the unfused reference
 *		forward the tests compare against is test/unit/ref_forward.c.
 *
 * Shapes: n candidates, n0 input width, k emb_dim, T tasks, h_l hidden
 * widths, he EPNet hidden, ha aux hidden.  Matrices are row-major [out, in].
 */
#include "pncore.h"
#include "pninternal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct PnWork
{
	int			nmax;
	float	   *x0;				/* [n, n0] embeddings and dense */
	float	   *x;				/* [n, n0] EPNet output */
	float	   *eh;				/* [n, he] EPNet hidden */
	float	   *a;				/* [n, T*hmax] tower activations */
	float	   *b;				/* [n, T*hmax] next layer */
	float	   *gh;				/* [n, T*hmax] gate hidden */
	float	   *g;				/* [n, T*hmax] gate */
	float	   *ah;				/* [n, ha] aux hidden */
	float	   *logit;			/* [n, T] */
	float	   *tmp;			/* [n] */
};

/* Release a domain cache */
void
pn_domain_free(PnDomainCache *dc)
{
	int			i;

	if (dc == NULL)
		return;
	pn_free(dc->ep_bias);
	pn_free(dc->aux_bias);
	pn_free(dc->w1);
	pn_free(dc->b1);
	if (dc->w && dc->b)
		for (i = 0; i < dc->nw; i++)
		{
			pn_free(dc->w[i]);
			pn_free(dc->b[i]);
		}
	pn_free(dc->w);
	pn_free(dc->b);
	pn_free(dc);
}

/* y[r] = b[r] + sum_c W[r, coloff + c] v[c] for r < rows, W with leading dimension ld (one sgemv) */
static void
partial_bias(const float *W, int ld, int coloff, int rows, int cols, const float *v,
			 const float *b, float *y)
{
	if (b)
		memcpy(y, b, sizeof(float) * rows);
	else
		memset(y, 0, sizeof(float) * rows);
	if (cols > 0)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, W + coloff, ld, v, 1, 1.0f, y, 1);
}

/*
 * The dv parts of the first EPNet and aux layers as domain biases:
 * ep_bias [he] = ep_b1 + W1[:, :k] dv, aux_bias [ha] = aux_b1 + Wa1[:, :k] dv
 * (dv [k] the domain's embedding); false when out of memory.
 */
static bool
domain_dv_biases(const PnModel *m, const float *dv, PnDomainCache *dc)
{
	const PnConfig *c = &m->cfg;
	int			k = c->emb_dim,
				n0 = c->n0;

	if (c->epnet)
	{
		dc->ep_bias = pn_alloc(sizeof(float) * c->epnet_hidden);
		if (!dc->ep_bias)
			return false;
		partial_bias(PN_T(m, m->t_ep_w1), k + n0, 0, c->epnet_hidden, k, dv, PN_T(m, m->t_ep_b1), dc->ep_bias);
		dc->bytes += sizeof(float) * c->epnet_hidden;
	}
	if (c->aux)
	{
		dc->aux_bias = pn_alloc(sizeof(float) * c->aux_hidden);
		if (!dc->aux_bias)
			return false;
		partial_bias(PN_T(m, m->t_aux_w1), k + n0, 0, c->aux_hidden, k, dv, PN_T(m, m->t_aux_b1), dc->aux_bias);
		dc->bytes += sizeof(float) * c->aux_hidden;
	}
	return true;
}

/*
 * PN at inference of domain d: xn = scale ⊙ x + shift, scale, shift [n0]
 * from the running statistics (identity without PN)
 */
static void
partnorm_fold(const PnModel *m, int d, double *scale, double *shift)
{
	const PnConfig *c = &m->cfg;
	int			n0 = c->n0,
				i;

	for (i = 0; i < n0; i++)
	{
		if (c->pn)
		{
			double		g = (double) PN_T(m, m->t_pn_gamma)[i] * PN_T(m, m->t_pn_dgamma)[(size_t) d * n0 + i];
			double		bt = (double) PN_T(m, m->t_pn_beta)[i] + PN_T(m, m->t_pn_dbeta)[(size_t) d * n0 + i];
			double		var = PN_T(m, m->t_pn_rvar)[(size_t) d * n0 + i];
			double		mu = PN_T(m, m->t_pn_rmean)[(size_t) d * n0 + i];

			if (var < 0)
				var = 0;
			scale[i] = g / sqrt(var + PN_PARTNORM_EPS);
			shift[i] = bt - scale[i] * mu;
		}
		else
		{
			scale[i] = 1.0;
			shift[i] = 0.0;
		}
	}
}

/*
 * Task t's first tower layer of domain d, STAR-fused with PN folded in:
 * rows [h, n0] of dc->w1 = (W ⊙ W_d) diag(scale), dc->b1 [h] = b + b_d +
 * (W ⊙ W_d) shift (+ ln w_d when it is the output layer)
 */
static void
star_fuse_first(const PnModel *m, int d, int t, const double *scale, const double *shift, PnDomainCache *dc)
{
	const PnConfig *c = &m->cfg;
	int			n0 = c->n0,
				L = c->nhidden,
				h1 = c->hidden[0],
				h = L >= 1 ? c->hidden[0] : 1,	/* 1 when the first layer is the output layer */
				x = PN_TW(c, t, 1),
				i,
				j;
	const float *W = PN_T(m, m->t_tw_w[x]);
	const float *B = PN_T(m, m->t_tw_b[x]);
	const float *Wd = c->star ? PN_T(m, m->t_tw_dw[x]) + (size_t) d * h * n0 : NULL;
	const float *Bd = c->star ? PN_T(m, m->t_tw_db[x]) + (size_t) d * h : NULL;

	for (j = 0; j < h; j++)
	{
		double		bias = (double) B[j] + (Bd ? Bd[j] : 0.0);
		float	   *row = dc->w1 + ((size_t) t * h1 + j) * n0;

		for (i = 0; i < n0; i++)
		{
			double		wf = (double) W[(size_t) j * n0 + i] * (Wd ? Wd[(size_t) j * n0 + i] : 1.0);

			row[i] = (float) (wf * scale[i]);
			bias += wf * shift[i];
		}
		/* negative down-sampling folded into the output bias: logit + ln w_d */
		if (L == 0 && c->neg_rate)
			bias += log((double) c->neg_rate[d]);
		dc->b1[t * h1 + j] = (float) bias;
	}
}

/*
 * Task t's tower layer l >= 2 (width h, input width prev) of domain d,
 * STAR-fused: dc->w[x] [h, prev] = W ⊙ W_d, dc->b[x] [h] = b + b_d (+ ln w_d
 * when it is the output layer); false when out of memory.
 */
static bool
star_fuse_layer(const PnModel *m, int d, int t, int l, int h, int prev, PnDomainCache *dc)
{
	const PnConfig *c = &m->cfg;
	int			x = PN_TW(c, t, l),
				j;
	const float *W = PN_T(m, m->t_tw_w[x]);
	const float *B = PN_T(m, m->t_tw_b[x]);
	const float *Wd = c->star ? PN_T(m, m->t_tw_dw[x]) + (size_t) d * h * prev : NULL;
	const float *Bd = c->star ? PN_T(m, m->t_tw_db[x]) + (size_t) d * h : NULL;
	float	   *fw = pn_alloc(sizeof(float) * (size_t) h * prev);
	float	   *fb = pn_alloc(sizeof(float) * h);

	dc->w[x] = fw;
	dc->b[x] = fb;
	if (!fw || !fb)
		return false;
	for (j = 0; j < h * prev; j++)
		fw[j] = Wd ? W[j] * Wd[j] : W[j];
	for (j = 0; j < h; j++)
		fb[j] = Bd ? B[j] + Bd[j] : B[j];
	/* negative down-sampling folded into the output bias: logit + ln w_d */
	if (l == c->nhidden + 1 && c->neg_rate)
		fb[0] = (float) ((double) fb[0] + log((double) c->neg_rate[d]));
	dc->bytes += sizeof(float) * ((size_t) h * prev + h);
	return true;
}

/*
 * Build the per-domain cache: fused W* = W ⊙ W_d and b* = b + b_d of every
 * tower layer, PN (running statistics) folded into each task's first layer,
 * and the dv parts of the first EPNet and aux layers as biases.
 */
int
pn_domain_build(const PnModel *m, int d, PnDomainCache **out, PnError *err)
{
	const PnConfig *c = &m->cfg;
	int			k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				L = c->nhidden,
				h1 = c->hidden[0],
				t,
				l;
	PnDomainCache *dc;
	double	   *scale = NULL,
			   *shift = NULL;

	*out = NULL;
	if (d < 0 || d >= c->domains)
		return pn_seterr(err, PN_EINPUT, "domain %d is out of range for a model of %d domains", d, c->domains);
	dc = pn_alloc0(sizeof(PnDomainCache));
	if (!dc)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	dc->domain = d;
	dc->nw = T * (L + 1);
	dc->w = pn_alloc0(sizeof(float *) * dc->nw);
	dc->b = pn_alloc0(sizeof(float *) * dc->nw);
	dc->w1 = pn_alloc(sizeof(float) * (size_t) T * h1 * n0);
	dc->b1 = pn_alloc(sizeof(float) * (size_t) T * h1);
	scale = pn_alloc(sizeof(double) * n0);
	shift = pn_alloc(sizeof(double) * n0);
	if (!dc->w || !dc->b || !dc->w1 || !dc->b1 || !scale || !shift)
		goto oom;
	dc->bytes = sizeof(float) * ((size_t) T * h1 * n0 + (size_t) T * h1);

	if (!domain_dv_biases(m, PN_T(m, m->t_emb_dom) + (size_t) d * k, dc))
		goto oom;
	partnorm_fold(m, d, scale, shift);
	for (t = 0; t < T; t++)
	{
		int			prev = c->hidden[0];

		star_fuse_first(m, d, t, scale, shift, dc);
		for (l = 2; l <= L + 1; l++)
		{
			int			h = l <= L ? c->hidden[l - 1] : 1;

			if (!star_fuse_layer(m, d, t, l, h, prev, dc))
				goto oom;
			prev = h;
		}
	}
	pn_free(scale);
	pn_free(shift);
	*out = dc;
	return PN_OK;

oom:
	pn_free(scale);
	pn_free(shift);
	pn_domain_free(dc);
	return pn_seterr(err, PN_ENOMEM, "out of memory building the cache of domain %d", d);
}

/* Release a persona */
void
pn_persona_free(PnPersona *p)
{
	int			l;

	if (p == NULL)
		return;
	pn_free(p->pv);
	for (l = 0; l < PN_MAX_LAYERS; l++)
		pn_free(p->gbias[l]);
	pn_free(p);
}

/*
 * Look up the persona embeddings pv [P*k] and, with PPNet, the persona part
 * of every gate's first layer: gbias_l = W1_l[:, :P*k] pv + b1_l.
 */
int
pn_persona_build(const PnModel *m, const int64_t *persona, PnPersona **out, PnError *err)
{
	const PnConfig *c = &m->cfg;
	int			k = c->emb_dim,
				i,
				l;
	PnPersona  *p;

	*out = NULL;
	p = pn_alloc0(sizeof(PnPersona));
	if (!p)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	p->pv = pn_alloc(sizeof(float) * (c->pk + 1));
	if (!p->pv)
		goto oom;
	for (i = 0; i < c->npers; i++)
	{
		int64_t		s = pn_slot_checked(&c->pers[i], i, persona[i], "persona", err);

		if (s < 0)
		{
			pn_persona_free(p);
			return PN_EINPUT;
		}
		memcpy(p->pv + i * k, PN_T(m, m->t_emb_pers[i]) + s * k, sizeof(float) * k);
	}
	if (c->ppnet)
		for (l = 0; l < c->nhidden; l++)
		{
			int			g = c->ntasks * c->hidden[l];

			p->gbias[l] = pn_alloc(sizeof(float) * g);
			if (!p->gbias[l])
				goto oom;
			partial_bias(PN_T(m, m->t_pp_w1[l]), c->pk + c->n0, 0, g, c->pk, p->pv,
						 PN_T(m, m->t_pp_b1[l]), p->gbias[l]);
		}
	*out = p;
	return PN_OK;
oom:
	pn_persona_free(p);
	return pn_seterr(err, PN_ENOMEM, "out of memory");
}

/* Release a workspace */
void
pn_work_free(PnWork *w)
{
	if (w == NULL)
		return;
	pn_free(w->x0);
	pn_free(w->x);
	pn_free(w->eh);
	pn_free(w->a);
	pn_free(w->b);
	pn_free(w->gh);
	pn_free(w->g);
	pn_free(w->ah);
	pn_free(w->logit);
	pn_free(w->tmp);
	pn_free(w);
}

/* Workspace for blocks of up to nmax candidates; NULL when out of memory */
PnWork *
pn_work_new(const PnModel *m, int nmax)
{
	const PnConfig *c = &m->cfg;
	size_t		n = nmax,
				wide = (size_t) c->ntasks * pn_max_hidden(c);
	PnWork	   *w = pn_alloc0(sizeof(PnWork));

	if (!w)
		return NULL;
	w->nmax = nmax;
	w->x0 = pn_alloc(sizeof(float) * n * c->n0);
	w->x = pn_alloc(sizeof(float) * n * c->n0);
	w->eh = pn_alloc(sizeof(float) * n * c->epnet_hidden);
	w->a = pn_alloc(sizeof(float) * n * wide);
	w->b = pn_alloc(sizeof(float) * n * wide);
	w->gh = pn_alloc(sizeof(float) * n * wide);
	w->g = pn_alloc(sizeof(float) * n * wide);
	w->ah = pn_alloc(sizeof(float) * n * c->aux_hidden);
	w->logit = pn_alloc(sizeof(float) * n * c->ntasks);
	w->tmp = pn_alloc(sizeof(float) * n);
	if (!w->x0 || !w->x || !w->eh || !w->a || !w->b || !w->gh || !w->g || !w->ah || !w->logit || !w->tmp)
	{
		pn_work_free(w);
		return NULL;
	}
	return w;
}

/*
 * C [n, out] += A [n, in] W [out, in]^T: one GEMM, or a GEMV for a single
 * candidate (pepnet_predict), where OpenBLAS's sgemv is several times
 * faster than an sgemm with one row.
 */
static void
linear_acc(int n, int out, int in, const float *A, int lda, const float *W, int ldw, float *C, int ldc)
{
	if (n == 1)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, ldw, A, 1, 1.0f, C, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, A, lda, W, ldw, 1.0f, C, ldc);
}


/*
 * Gather x0 [n, n0]: the embedding rows of each feature field, then dense.
 * Fails on an out-of-range id of a non-hashed field.
 */
int
pn_gather_x0(const PnModel *m, int n, const int64_t *features, const float *dense, float *x0, PnError *err)
{
	const PnConfig *c = &m->cfg;
	int			k = c->emb_dim,
				F = c->nfeat,
				r,
				i;

	for (r = 0; r < n; r++)
	{
		float	   *row = x0 + (size_t) r * c->n0;

		for (i = 0; i < F; i++)
		{
			int64_t		id = features[(size_t) r * F + i];
			int64_t		s = pn_slot_checked(&c->feat[i], i, id, "feature", err);

			if (s < 0)
			{
				err->row = r;
				return PN_EINPUT;
			}
			memcpy(row + i * k, PN_T(m, m->t_emb_feat[i]) + s * k, sizeof(float) * k);
		}
		if (c->dense)
			memcpy(row + F * k, dense + (size_t) r * c->dense, sizeof(float) * c->dense);
	}
	return PN_OK;
}

/* gate [n, g] = gamma * sigmoid(W2 relu(W1x x + gbias) + b2) of PPNet layer l (0-based) */
static void
ppnet_gate(const PnModel *m, const PnPersona *pp, PnWork *w, int n, int l)
{
	const PnConfig *c = &m->cfg;
	int			g = c->ntasks * c->hidden[l],
				ld = c->pk + c->n0;

	pn_fill_rows(w->gh, n, g, pp->gbias[l]);
	linear_acc(n, g, c->n0, w->x, c->n0, PN_T(m, m->t_pp_w1[l]) + c->pk, ld, w->gh, g);
	pn_relu(w->gh, (size_t) n * g);
	pn_fill_rows(w->g, n, g, PN_T(m, m->t_pp_b2[l]));
	linear_acc(n, g, g, w->gh, g, PN_T(m, m->t_pp_w2[l]), g, w->g, g);
	pn_sigmoid_scale(w->g, (size_t) n * g, c->gamma);
}

/*
 * Vectorized forward pass of n candidates of one request (one domain, one
 * persona).  features [n, F], dense [n, Nd], out [n, T] probabilities.
 */
/* The logits [n, T] of the last pn_score with this workspace */
const float *
pn_work_logits(const PnWork *w)
{
	return w->logit;
}

int
pn_score(const PnModel *m, const PnDomainCache *dc, const PnPersona *pp, PnWork *w,
		 int n, const int64_t *features, const float *dense, double *out, PnError *err)
{
	const PnConfig *c = &m->cfg;
	int			n0 = c->n0,
				k = c->emb_dim,
				T = c->ntasks,
				L = c->nhidden,
				t,
				l,
				rc;
	size_t		i;
	float	   *a,
			   *b;

	if (n <= 0)
		return PN_OK;
	if (n > w->nmax)
		return pn_seterr(err, PN_EINPUT, "block of %d candidates exceeds the workspace of %d", n, w->nmax);
	if ((rc = pn_gather_x0(m, n, features, dense, w->x0, err)) != PN_OK)
		return rc;

	/* EPNet: x = gamma * sigmoid(W2 relu(W1 [dv; x0] + b1) + b2) ⊙ x0 */
	if (c->epnet)
	{
		int			he = c->epnet_hidden;

		pn_fill_rows(w->eh, n, he, dc->ep_bias);
		linear_acc(n, he, n0, w->x0, n0, PN_T(m, m->t_ep_w1) + k, k + n0, w->eh, he);
		pn_relu(w->eh, (size_t) n * he);
		pn_fill_rows(w->x, n, n0, PN_T(m, m->t_ep_b2));
		linear_acc(n, n0, he, w->eh, he, PN_T(m, m->t_ep_w2), he, w->x, n0);
		pn_sigmoid_scale(w->x, (size_t) n * n0, c->gamma);
		for (i = 0; i < (size_t) n * n0; i++)
			w->x[i] *= w->x0[i];
	}
	else
		memcpy(w->x, w->x0, sizeof(float) * (size_t) n * n0);

	/* first layer of every task at once, PN folded in: a [n, T*h1] */
	a = w->a;
	b = w->b;
	{
		int			g = T * c->hidden[0];

		pn_fill_rows(a, n, g, dc->b1);
		linear_acc(n, g, n0, w->x, n0, dc->w1, n0, a, g);
		pn_relu(a, (size_t) n * g);
		if (c->ppnet)
		{
			ppnet_gate(m, pp, w, n, 0);
			for (i = 0; i < (size_t) n * g; i++)
				a[i] *= w->g[i];
		}
	}
	/* hidden layers 2..L, per task on its column block */
	for (l = 2; l <= L; l++)
	{
		int			hp = c->hidden[l - 2],
					h = c->hidden[l - 1];

		for (t = 0; t < T; t++)
		{
			int			x = PN_TW(c, t, l);
			int			r;

			for (r = 0; r < n; r++)
				memcpy(b + (size_t) r * T * h + t * h, dc->b[x], sizeof(float) * h);
			linear_acc(n, h, hp, a + t * hp, T * hp, dc->w[x], hp, b + t * h, T * h);
		}
		pn_relu(b, (size_t) n * T * h);
		if (c->ppnet)
		{
			ppnet_gate(m, pp, w, n, l - 1);
			for (i = 0; i < (size_t) n * T * h; i++)
				b[i] *= w->g[i];
		}
		{
			float	   *s = a;

			a = b;
			b = s;
		}
	}
	/* output layer: logit_t = w*_t . a_L + c*_t */
	{
		int			hL = c->hidden[L - 1];

		for (t = 0; t < T; t++)
		{
			int			x = PN_TW(c, t, L + 1);
			int			r;

			cblas_sgemv(CblasRowMajor, CblasNoTrans, n, hL, 1.0f, a + t * hL, T * hL,
						dc->w[x], 1, 0.0f, w->tmp, 1);
			for (r = 0; r < n; r++)
				w->logit[(size_t) r * T + t] = w->tmp[r] + dc->b[x][0];
		}
	}
	/* aux: logit += V2 relu(V1 [dv; x0] + e1) + e2 */
	if (c->aux)
	{
		int			ha = c->aux_hidden;
		int			r;

		pn_fill_rows(w->ah, n, ha, dc->aux_bias);
		linear_acc(n, ha, n0, w->x0, n0, PN_T(m, m->t_aux_w1) + k, k + n0, w->ah, ha);
		pn_relu(w->ah, (size_t) n * ha);
		for (r = 0; r < n; r++)
			for (t = 0; t < T; t++)
				w->logit[(size_t) r * T + t] += PN_T(m, m->t_aux_b2)[t];
		linear_acc(n, T, ha, w->ah, ha, PN_T(m, m->t_aux_w2), ha, w->logit, T);
	}
	for (i = 0; i < (size_t) n * T; i++)
	{
		if (isnan(w->logit[i]))
		{
			pn_seterr(err, PN_EINPUT, "score overflowed float32");
			pn_setdetail(err, "The dense values are too large in magnitude; scale dense features to a sensible range.");
			err->row = (int64_t) (i / T);
			return PN_EINPUT;
		}
		out[i] = pn_sigmoidd(w->logit[i]);
	}
	return PN_OK;
}
