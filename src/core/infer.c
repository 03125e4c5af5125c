/*
 * infer.c
 *		Inference of STAR-PEPNet: per-domain fused matrices (STAR fusion, PN
 *		folded into the first tower layer, domain parts of the first EPNet and
 *		aux layers as biases), per-request persona parts of the PPNet gates,
 *		and the forward pass of pepnet_predict (one candidate: GEMVs), each
 *		executing the model's layer plan (plan.c: x0's segments, the layers
 *		in order, the workspace widths).  The batched forward of
 *		pepnet_score is engine.c's; the unfused reference forward the tests
 *		compare against is test/unit/ref_forward.c.
 *
 * Shapes: n candidates, n0 input width, k emb_dim, T tasks, h_l hidden
 * widths, he EPNet hidden, ha aux hidden.  Matrices are row-major [out, in].
 */
#include "pncore.h"
#include "pninternal.h"

#include <cblas.h>
#include <immintrin.h>
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
 * The dv parts of the plan's layers that read [dv ; x0] (the first EPNet
 * and aux layers) as domain biases: ep_bias [he] = ep_b1 + W1[:, :k] dv,
 * aux_bias [ha] = aux_b1 + Wa1[:, :k] dv (dv [k] the domain's embedding),
 * into dc's arrays (allocated by pn_domain_arrays' sizes)
 */
static void
domain_dv_biases(const PnModel *m, const float *dv, PnDomainCache *dc)
{
	const PnPlan *p = m->plan;
	int			li;

	for (li = 0; li < p->nlayers; li++)
	{
		const PnLayer *ly = &p->layers[li];

		if (ly->pre != PN_ACT_DV)
			continue;
		partial_bias(PN_T(m, ly->w), ly->ldw, 0, ly->nout, ly->npre, dv, PN_T(m, ly->b),
					 ly->part == PN_PART_EPNET ? dc->ep_bias : dc->aux_bias);
	}
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
 * Task t's first tower layer ly (the output layer when L = 0) of domain d,
 * STAR-fused with PN folded in: rows [h, n0] of dc->w1 = (W ⊙ W_d)
 * diag(scale), dc->b1 [h] = b + b_d + (W ⊙ W_d) shift (+ ln w_d when it is
 * the output layer)
 */
static void
star_fuse_first(const PnModel *m, int d, const PnLayer *ly, const double *scale, const double *shift,
				PnDomainCache *dc)
{
	const PnConfig *c = &m->cfg;
	int			n0 = ly->nin,
				h = ly->nout,
				t = ly->task,
				i,
				j;
	const float *W = PN_T(m, ly->w);
	const float *B = PN_T(m, ly->b);
	const float *Wd = ly->dw >= 0 ? PN_T(m, ly->dw) + (size_t) d * h * n0 : NULL;
	const float *Bd = ly->db >= 0 ? PN_T(m, ly->db) + (size_t) d * h : NULL;

	for (j = 0; j < h; j++)
	{
		double		bias = (double) B[j] + (Bd ? Bd[j] : 0.0);
		float	   *row = dc->w1 + ((size_t) t * h + j) * n0;

		for (i = 0; i < n0; i++)
		{
			double		wf = (double) W[(size_t) j * n0 + i] * (Wd ? Wd[(size_t) j * n0 + i] : 1.0);

			row[i] = (float) (wf * scale[i]);
			bias += wf * shift[i];
		}
		/* negative down-sampling folded into the output bias: logit + ln w_d */
		if (ly->part == PN_PART_OUTPUT && c->neg_rate)
			bias += log((double) c->neg_rate[d]);
		dc->b1[t * h + j] = (float) bias;
	}
}

/*
 * Task t's tower layer ly (l >= 2, width h, input width prev) of domain d,
 * STAR-fused: dc->w[x] [h, prev] = W ⊙ W_d, dc->b[x] [h] = b + b_d (+ ln w_d
 * when it is the output layer)
 */
static void
star_fuse_layer(const PnModel *m, int d, const PnLayer *ly, PnDomainCache *dc)
{
	const PnConfig *c = &m->cfg;
	int			h = ly->nout,
				prev = ly->nin,
				x = PN_TW(c, ly->task, ly->layer),
				j;
	const float *W = PN_T(m, ly->w);
	const float *B = PN_T(m, ly->b);
	const float *Wd = ly->dw >= 0 ? PN_T(m, ly->dw) + (size_t) d * h * prev : NULL;
	const float *Bd = ly->db >= 0 ? PN_T(m, ly->db) + (size_t) d * h : NULL;
	float	   *fw = dc->w[x];
	float	   *fb = dc->b[x];

	for (j = 0; j < h * prev; j++)
		fw[j] = Wd ? W[j] * Wd[j] : W[j];
	for (j = 0; j < h; j++)
		fb[j] = Bd ? B[j] + Bd[j] : B[j];
	/* negative down-sampling folded into the output bias: logit + ln w_d */
	if (ly->part == PN_PART_OUTPUT && c->neg_rate)
		fb[0] = (float) ((double) fb[0] + log((double) c->neg_rate[d]));
}

/*
 * The float arrays of a domain cache of model m, each sized by the plan's
 * layers, in one order: ep_bias and aux_bias (the outputs of the layers
 * that read [dv ; x0], when the model has them), w1 and b1 (every task's
 * first tower layer: [T * h1, n0] and [T * h1]), then task by task its
 * layers l >= 2 (w[x] [h, prev] and b[x] [h], x = PN_TW(t, l)).  floats[i]
 * receives array i's floats and, with dc (its w and b allocated, nw
 * pointers each), slot[i] the address of dc's pointer to it.  Returns the
 * number of arrays, at most PN_DOMAIN_MAX_ARRAYS(&m->cfg).
 */
int
pn_domain_arrays(const PnModel *m, PnDomainCache *dc, float ***slot, size_t *floats)
{
	const PnPlan *p = m->plan;
	const PnConfig *c = &m->cfg;
	size_t		w1 = 0,
				b1 = 0;
	int			n = 0,
				li,
				t,
				l;

#define PUT(SLOT, N) \
	do { \
		if (dc) slot[n] = (SLOT); \
		floats[n++] = (size_t) (N); \
	} while (0)

	for (li = 0; li < p->nlayers; li++)
	{
		const PnLayer *ly = &p->layers[li];

		if (ly->pre == PN_ACT_DV)
			PUT(dc ? (ly->part == PN_PART_EPNET ? &dc->ep_bias : &dc->aux_bias) : NULL, ly->nout);
		else if ((ly->part == PN_PART_TOWER || ly->part == PN_PART_OUTPUT) && ly->layer == 1)
		{
			w1 += (size_t) ly->nout * ly->nin;
			b1 += (size_t) ly->nout;
		}
	}
	PUT(dc ? &dc->w1 : NULL, w1);
	PUT(dc ? &dc->b1 : NULL, b1);
	for (t = 0; t < c->ntasks; t++)
		for (l = 2; l <= c->nhidden + 1; l++)
		{
			const PnLayer *ly = &p->layers[pn_plan_find(p, l <= c->nhidden ? PN_PART_TOWER : PN_PART_OUTPUT, 0, t, l)];
			int			x = PN_TW(c, t, l);

			PUT(dc ? &dc->w[x] : NULL, (size_t) ly->nout * ly->nin);
			PUT(dc ? &dc->b[x] : NULL, ly->nout);
		}
#undef PUT
	return n;
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
				narrays,
				i,
				l;
	PnDomainCache *dc;
	double	   *scale = NULL,
			   *shift = NULL;
	float	 ***slot = NULL;
	size_t	   *floats = NULL;

	*out = NULL;
	if (d < 0 || d >= c->domains)
		return pn_seterr(err, PN_EINPUT, "domain %d is out of range for a model of %d domains", d, c->domains);
	dc = pn_alloc0(sizeof(PnDomainCache));
	if (!dc)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	dc->domain = d;
	dc->nw = c->ntasks * (c->nhidden + 1);
	dc->w = pn_alloc0(sizeof(float *) * dc->nw);
	dc->b = pn_alloc0(sizeof(float *) * dc->nw);
	scale = pn_alloc(sizeof(double) * n0);
	shift = pn_alloc(sizeof(double) * n0);
	slot = pn_alloc(sizeof(float **) * PN_DOMAIN_MAX_ARRAYS(c));
	floats = pn_alloc(sizeof(size_t) * PN_DOMAIN_MAX_ARRAYS(c));
	if (!dc->w || !dc->b || !scale || !shift || !slot || !floats)
		goto oom;
	/* the arrays, sized by the plan (pn_domain_arrays: the shared cache lays them out the same) */
	narrays = pn_domain_arrays(m, dc, slot, floats);
	for (i = 0; i < narrays; i++)
	{
		*slot[i] = pn_alloc(sizeof(float) * (floats[i] > 0 ? floats[i] : 1));
		if (!*slot[i])
			goto oom;
		dc->bytes += sizeof(float) * floats[i];
	}

	domain_dv_biases(m, PN_T(m, m->t_emb_dom) + (size_t) d * k, dc);
	partnorm_fold(m, d, scale, shift);
	/* every tower and output layer of the plan: the first of each task with PN folded in */
	for (l = 0; l < m->plan->nlayers; l++)
	{
		const PnLayer *ly = &m->plan->layers[l];

		if (ly->part != PN_PART_TOWER && ly->part != PN_PART_OUTPUT)
			continue;
		if (ly->layer == 1)
			star_fuse_first(m, d, ly, scale, shift, dc);
		else
			star_fuse_layer(m, d, ly, dc);
	}
	pn_free(scale);
	pn_free(shift);
	pn_free(slot);
	pn_free(floats);
	*out = dc;
	return PN_OK;

oom:
	pn_free(scale);
	pn_free(shift);
	pn_free(slot);
	pn_free(floats);
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
	return pn_persona_build_bags(m, persona, NULL, out, err);
}

int
pn_persona_build_bags(const PnModel *m, const int64_t *persona, const PnBag *pbag, PnPersona **out,
					  PnError *err)
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
	for (i = 0; i < m->plan->npvseg; i++)
	{
		const PnSeg *sg = &m->plan->pvseg[i];
		const PnField *f = &c->pers[sg->field];
		int64_t		s;

		if (sg->kind == PN_SEG_BAG)
		{
			/* a multi-valued persona field: pooled once per request */
			if (pbag == NULL)
			{
				pn_persona_free(p);
				return pn_seterr(err, PN_EINPUT, "persona field \"%s\" is multi-valued, but no bags were given",
								 f->name);
			}
			if (pn_bag_pool(f, sg->field, "persona", PN_T(m, sg->table), k, &pbag[sg->field], 0,
							p->pv + sg->off, err) != PN_OK)
			{
				pn_persona_free(p);
				return PN_EINPUT;
			}
			continue;
		}
		s = pn_slot_checked(f, sg->field, persona[sg->field], "persona", err);
		if (s < 0)
		{
			pn_persona_free(p);
			return PN_EINPUT;
		}
		memcpy(p->pv + sg->off, PN_T(m, sg->table) + s * k, sizeof(float) * k);
	}
	/* the pv parts of the plan's layers that read [pv ; x] (the PPNet gates' first layers) */
	for (l = 0; l < m->plan->nlayers; l++)
	{
		const PnLayer *ly = &m->plan->layers[l];

		if (ly->pre != PN_ACT_PV)
			continue;
		p->gbias[ly->layer] = pn_alloc(sizeof(float) * ly->nout);
		if (!p->gbias[ly->layer])
			goto oom;
		partial_bias(PN_T(m, ly->w), ly->ldw, 0, ly->nout, ly->npre, p->pv, PN_T(m, ly->b), p->gbias[ly->layer]);
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

/* floats of n rows of activation a in the plan's size table (at least one) */
static size_t
act_floats(const PnModel *m, PnAct a, size_t n)
{
	size_t		w = m->plan->width[a];

	return n * (w > 0 ? w : 1);
}

/* Workspace for blocks of up to nmax candidates (widths: the plan's size table); NULL when out of memory */
PnWork *
pn_work_new(const PnModel *m, int nmax)
{
	size_t		n = nmax;
	PnWork	   *w = pn_alloc0(sizeof(PnWork));

	if (!w)
		return NULL;
	w->nmax = nmax;
	w->x0 = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_X0, n));
	w->x = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_X, n));
	w->eh = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_EH, n));
	w->a = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_A, n));
	w->b = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_A, n));
	w->gh = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_GH, n));
	w->g = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_G, n));
	w->ah = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_AH, n));
	w->logit = pn_alloc(sizeof(float) * act_floats(m, PN_ACT_LOGIT, n));
	w->tmp = pn_alloc(sizeof(float) * n);
	if (!w->x0 || !w->x || !w->eh || !w->a || !w->b || !w->gh || !w->g || !w->ah || !w->logit || !w->tmp)
	{
		pn_work_free(w);
		return NULL;
	}
	return w;
}


/*
 * Row-wise GEMM: C [M, N] += A [M, K] W [N, K]^T (row strides lda, ldw,
 * ldc), each element summed in an order that depends on K only: eight
 * partial sums over k = l (mod 8) by fused multiply-adds for k < K & ~7,
 * then ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)), then the tail
 * k >= K & ~7 by fused multiply-adds, then added to C.  Which rows and
 * columns share a register block, M, and a row's position therefore leave
 * its bits unchanged (OpenBLAS's sgemm and sgemv do not: their kernels sum
 * a row in an order that depends on M and on the row's place in the block,
 * see test_rowwise_gemm in test/unit/test_core.c).  AVX2 + FMA kernels of
 * 4 x 3 and 1 x 8 elements where the CPU has them; elsewhere fmaf in the
 * same order (the same bits, slowly).
 */
#define PN_HSUM8(p) ((((p)[0] + (p)[4]) + ((p)[2] + (p)[6])) + (((p)[1] + (p)[5]) + ((p)[3] + (p)[7])))

static void
gemm_rows_portable(int M, int N, int K, const float *A, int lda, const float *W, int ldw, float *C, int ldc)
{
	int			K8 = K & ~7,
				r,
				j,
				k,
				l;

	for (r = 0; r < M; r++)
		for (j = 0; j < N; j++)
		{
			const float *a = A + (size_t) r * lda,
					   *w = W + (size_t) j * ldw;
			float		p[8] = {0},
						s;

			for (k = 0; k < K8; k += 8)
				for (l = 0; l < 8; l++)
					p[l] = fmaf(a[k + l], w[k + l], p[l]);
			s = PN_HSUM8(p);
			for (k = K8; k < K; k++)
				s = fmaf(a[k], w[k], s);
			C[(size_t) r * ldc + j] += s;
		}
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PN_AVX2 __attribute__((target("avx2,fma")))
/* keep a loaded vector in its register (GCC would reload it as an FMA memory operand per use) */
#define PN_REG(v) __asm__("" : "+x"(v))

/* the horizontal sum of PN_HSUM8, then the tail, then into *c */
static inline PN_AVX2 void
finish_avx2(__m256 acc, const float *a, const float *w, int K8, int K, float *c)
{
	__m128		lo = _mm256_castps256_ps128(acc),
				hi = _mm256_extractf128_ps(acc, 1),
				q = _mm_add_ps(lo, hi);	/* p0+p4, p1+p5, p2+p6, p3+p7 */
	__m128		h = _mm_add_ps(q, _mm_movehl_ps(q, q));	/* (p0+p4)+(p2+p6), (p1+p5)+(p3+p7) */
	__m128		s = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
	int			k;

	for (k = K8; k < K; k++)
		s = _mm_fmadd_ss(_mm_set_ss(a[k]), _mm_set_ss(w[k]), s);
	*c += _mm_cvtss_f32(s);
}

static PN_AVX2 void
gemm_rows_avx2(int M, int N, int K, const float *A, int lda, const float *W, int ldw, float *C, int ldc)
{
	int			K8 = K & ~7,
				M4 = M & ~3,
				RB = (int) ((16384 / ((size_t) K * sizeof(float))) & ~(size_t) 3),
				r0,
				r,
				j,
				k;

	/*
	 * Blocks of 4 rows x 3 columns (12 accumulators, 7 loads per 12 FMAs),
	 * over panels of RB rows (about 16 kB of A, kept in L1 while the
	 * columns pass)
	 */
	if (RB < 4)
		RB = 4;
	for (r0 = 0; r0 < M4; r0 += RB)
	{
	int			rend = r0 + RB < M4 ? r0 + RB : M4;

	for (j = 0; j + 3 <= N; j += 3)
	{
		const float *w0 = W + (size_t) j * ldw,
				   *w1 = w0 + ldw,
				   *w2 = w1 + ldw;

		for (r = r0; r < rend; r += 4)
		{
			const float *a0 = A + (size_t) r * lda,
					   *a1 = a0 + lda,
					   *a2 = a1 + lda,
					   *a3 = a2 + lda;
			__m256		c00 = _mm256_setzero_ps(),
						c01 = _mm256_setzero_ps(),
						c02 = _mm256_setzero_ps(),
						c10 = _mm256_setzero_ps(),
						c11 = _mm256_setzero_ps(),
						c12 = _mm256_setzero_ps(),
						c20 = _mm256_setzero_ps(),
						c21 = _mm256_setzero_ps(),
						c22 = _mm256_setzero_ps(),
						c30 = _mm256_setzero_ps(),
						c31 = _mm256_setzero_ps(),
						c32 = _mm256_setzero_ps();
			float	   *c = C + (size_t) r * ldc + j;

			for (k = 0; k < K8; k += 8)
			{
				__m256		v0 = _mm256_loadu_ps(w0 + k),
							v1 = _mm256_loadu_ps(w1 + k),
							v2 = _mm256_loadu_ps(w2 + k),
							x;

				PN_REG(v0);
				PN_REG(v1);
				PN_REG(v2);
				x = _mm256_loadu_ps(a0 + k);
				PN_REG(x);
				c00 = _mm256_fmadd_ps(x, v0, c00);
				c01 = _mm256_fmadd_ps(x, v1, c01);
				c02 = _mm256_fmadd_ps(x, v2, c02);
				x = _mm256_loadu_ps(a1 + k);
				PN_REG(x);
				c10 = _mm256_fmadd_ps(x, v0, c10);
				c11 = _mm256_fmadd_ps(x, v1, c11);
				c12 = _mm256_fmadd_ps(x, v2, c12);
				x = _mm256_loadu_ps(a2 + k);
				PN_REG(x);
				c20 = _mm256_fmadd_ps(x, v0, c20);
				c21 = _mm256_fmadd_ps(x, v1, c21);
				c22 = _mm256_fmadd_ps(x, v2, c22);
				x = _mm256_loadu_ps(a3 + k);
				PN_REG(x);
				c30 = _mm256_fmadd_ps(x, v0, c30);
				c31 = _mm256_fmadd_ps(x, v1, c31);
				c32 = _mm256_fmadd_ps(x, v2, c32);
			}
			finish_avx2(c00, a0, w0, K8, K, c);
			finish_avx2(c01, a0, w1, K8, K, c + 1);
			finish_avx2(c02, a0, w2, K8, K, c + 2);
			finish_avx2(c10, a1, w0, K8, K, c + ldc);
			finish_avx2(c11, a1, w1, K8, K, c + ldc + 1);
			finish_avx2(c12, a1, w2, K8, K, c + ldc + 2);
			finish_avx2(c20, a2, w0, K8, K, c + 2 * (size_t) ldc);
			finish_avx2(c21, a2, w1, K8, K, c + 2 * (size_t) ldc + 1);
			finish_avx2(c22, a2, w2, K8, K, c + 2 * (size_t) ldc + 2);
			finish_avx2(c30, a3, w0, K8, K, c + 3 * (size_t) ldc);
			finish_avx2(c31, a3, w1, K8, K, c + 3 * (size_t) ldc + 1);
			finish_avx2(c32, a3, w2, K8, K, c + 3 * (size_t) ldc + 2);
		}
	}
	/* the last N mod 3 columns, 4 rows at a time */
	for (; j < N; j++)
		for (r = r0; r < rend; r += 4)
		{
			const float *w0 = W + (size_t) j * ldw;
			__m256		c0 = _mm256_setzero_ps(),
						c1 = _mm256_setzero_ps(),
						c2 = _mm256_setzero_ps(),
						c3 = _mm256_setzero_ps();
			const float *a0 = A + (size_t) r * lda;

			for (k = 0; k < K8; k += 8)
			{
				__m256		v0 = _mm256_loadu_ps(w0 + k);

				c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + k), v0, c0);
				c1 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + lda + k), v0, c1);
				c2 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + 2 * (size_t) lda + k), v0, c2);
				c3 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + 3 * (size_t) lda + k), v0, c3);
			}
			finish_avx2(c0, a0, w0, K8, K, C + (size_t) r * ldc + j);
			finish_avx2(c1, a0 + lda, w0, K8, K, C + (size_t) (r + 1) * ldc + j);
			finish_avx2(c2, a0 + 2 * (size_t) lda, w0, K8, K, C + (size_t) (r + 2) * ldc + j);
			finish_avx2(c3, a0 + 3 * (size_t) lda, w0, K8, K, C + (size_t) (r + 3) * ldc + j);
		}
	}
	/* the last M mod 4 rows: 8 columns at a time, then one */
	for (r = M4; r < M; r++)
	{
		const float *a0 = A + (size_t) r * lda;
		float	   *c = C + (size_t) r * ldc;

		for (j = 0; j + 8 <= N; j += 8)
		{
			const float *w0 = W + (size_t) j * ldw;
			__m256		c0 = _mm256_setzero_ps(),
						c1 = _mm256_setzero_ps(),
						c2 = _mm256_setzero_ps(),
						c3 = _mm256_setzero_ps(),
						c4 = _mm256_setzero_ps(),
						c5 = _mm256_setzero_ps(),
						c6 = _mm256_setzero_ps(),
						c7 = _mm256_setzero_ps();

			for (k = 0; k < K8; k += 8)
			{
				__m256		x = _mm256_loadu_ps(a0 + k);

				c0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + k), c0);
				c1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + ldw + k), c1);
				c2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + 2 * (size_t) ldw + k), c2);
				c3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + 3 * (size_t) ldw + k), c3);
				c4 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + 4 * (size_t) ldw + k), c4);
				c5 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + 5 * (size_t) ldw + k), c5);
				c6 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + 6 * (size_t) ldw + k), c6);
				c7 = _mm256_fmadd_ps(x, _mm256_loadu_ps(w0 + 7 * (size_t) ldw + k), c7);
			}
			finish_avx2(c0, a0, w0, K8, K, c + j);
			finish_avx2(c1, a0, w0 + ldw, K8, K, c + j + 1);
			finish_avx2(c2, a0, w0 + 2 * (size_t) ldw, K8, K, c + j + 2);
			finish_avx2(c3, a0, w0 + 3 * (size_t) ldw, K8, K, c + j + 3);
			finish_avx2(c4, a0, w0 + 4 * (size_t) ldw, K8, K, c + j + 4);
			finish_avx2(c5, a0, w0 + 5 * (size_t) ldw, K8, K, c + j + 5);
			finish_avx2(c6, a0, w0 + 6 * (size_t) ldw, K8, K, c + j + 6);
			finish_avx2(c7, a0, w0 + 7 * (size_t) ldw, K8, K, c + j + 7);
		}
		for (; j < N; j++)
		{
			const float *w0 = W + (size_t) j * ldw;
			__m256		c0 = _mm256_setzero_ps();

			for (k = 0; k < K8; k += 8)
				c0 = _mm256_fmadd_ps(_mm256_loadu_ps(a0 + k), _mm256_loadu_ps(w0 + k), c0);
			finish_avx2(c0, a0, w0, K8, K, c + j);
		}
	}
}
#endif

/* y [n] *= x [n] */
static void
mul(float *y, const float *x, size_t n)
{
	size_t		i;

	for (i = 0; i < n; i++)
		y[i] *= x[i];
}

/*
 * A layer's post-op on its output y [n, nout] (relu or gamma * sigmoid),
 * then what it multiplies: EPNet's gate times x0 (in y), a PPNet gate
 * times the towers' layer (tower *= y)
 */
static void
post_op(const PnModel *m, const PnWork *w, const PnLayer *ly, int n, float *y, float *tower)
{
	size_t		cnt = (size_t) n * ly->nout;

	if (ly->post == PN_POST_RELU)
		pn_relu(y, cnt);
	else if (ly->post == PN_POST_GATE)
		pn_sigmoid_scale(y, cnt, m->cfg.gamma);
	if (ly->mul == PN_MUL_X0)
		mul(y, w->x0, cnt);
	else if (ly->mul == PN_MUL_TOWER)
		mul(tower, y, cnt);
}

/* Whether pn_gemm_rows runs its AVX2 + FMA kernels on this CPU */
bool
pn_gemm_rows_avx2(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	static int	have = -1;

	if (have < 0)
	{
		__builtin_cpu_init();
		have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	}
	return have;
#else
	return false;
#endif
}

void
pn_gemm_rows(int M, int N, int K, const float *A, int lda, const float *W, int ldw, float *C, int ldc)
{
	if (M <= 0 || N <= 0)
		return;
#if defined(__x86_64__) && defined(__GNUC__)
	if (pn_gemm_rows_avx2())
	{
		gemm_rows_avx2(M, N, K, A, lda, W, ldw, C, ldc);
		return;
	}
#endif
	gemm_rows_portable(M, N, K, A, lda, W, ldw, C, ldc);
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
 * Gather x0 [n, n0] by the plan's input segments: the embedding row of each
 * single-id feature field, the pooled bag of each multi-valued one, the
 * dense values (the domain_input tail is pn_x0_domain's).
 * Fails on an out-of-range id of a non-hashed field.
 */
int
pn_gather_x0(const PnModel *m, int n, const int64_t *features, const PnBag *fbag, const float *dense,
			 float *x0, PnError *err)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *p = m->plan;
	int			k = c->emb_dim,
				F = c->nfeat,
				r,
				i;

	for (r = 0; r < n; r++)
	{
		float	   *row = x0 + (size_t) r * c->n0;

		for (i = 0; i < p->nx0seg; i++)
		{
			const PnSeg *sg = &p->x0seg[i];
			const PnField *f;
			int64_t		s;

			switch (sg->kind)
			{
				case PN_SEG_ID:
					f = &c->feat[sg->field];
					s = pn_slot_checked(f, sg->field, features[(size_t) r * F + sg->field], "feature", err);
					if (s < 0)
					{
						err->row = r;
						return PN_EINPUT;
					}
					memcpy(row + sg->off, PN_T(m, sg->table) + s * k, sizeof(float) * k);
					break;
				case PN_SEG_BAG:
					/* a multi-valued field: its bag pooled (bag.c) */
					f = &c->feat[sg->field];
					if (fbag == NULL)
						return pn_seterr(err, PN_EINPUT, "feature field \"%s\" is multi-valued, but no bags were given",
										 f->name);
					if (pn_bag_pool(f, sg->field, "feature", PN_T(m, sg->table), k, &fbag[sg->field], r,
									row + sg->off, err) != PN_OK)
					{
						err->row = r;
						return PN_EINPUT;
					}
					break;
				case PN_SEG_DENSE:
					memcpy(row + sg->off, dense + (size_t) r * sg->width, sizeof(float) * sg->width);
					break;
				default:
					break;		/* PN_SEG_DOMAIN: pn_x0_domain */
			}
		}
	}
	return PN_OK;
}

/*
 * With "domain_input": the plan's domain segment of every row of x0 [n, n0]
 * (its last k columns) is the domain's embedding dv (docs/model.md step 1);
 * nothing without it.
 */
void
pn_x0_domain(const PnModel *m, int domain, int n, float *x0)
{
	const PnPlan *p = m->plan;
	const PnSeg *sg = p->nx0seg > 0 ? &p->x0seg[p->nx0seg - 1] : NULL;
	const float *dv;
	int			r;

	if (sg == NULL || sg->kind != PN_SEG_DOMAIN)
		return;
	dv = PN_T(m, sg->table) + (size_t) domain * sg->width;
	for (r = 0; r < n; r++)
		memcpy(x0 + (size_t) r * m->cfg.n0 + sg->off, dv, sizeof(float) * sg->width);
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
	return pn_score_bags(m, dc, pp, w, n, features, NULL, dense, out, err);
}

int
pn_score_bags(const PnModel *m, const PnDomainCache *dc, const PnPersona *pp, PnWork *w,
			  int n, const int64_t *features, const PnBag *fbag, const float *dense, double *out,
			  PnError *err)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *p = m->plan;
	int			n0 = c->n0,
				T = c->ntasks,
				li,
				rc;
	size_t		i;
	float	   *a = w->a,
			   *b = w->b;

	if (n <= 0)
		return PN_OK;
	if (n > w->nmax)
		return pn_seterr(err, PN_EINPUT, "block of %d candidates exceeds the workspace of %d", n, w->nmax);
	if ((rc = pn_gather_x0(m, n, features, fbag, dense, w->x0, err)) != PN_OK)
		return rc;
	pn_x0_domain(m, dc->domain, n, w->x0);
	/* without EPNet, x = x0 */
	if (!c->epnet)
		memcpy(w->x, w->x0, sizeof(float) * (size_t) n * n0);

	/*
	 * The plan's layers in order.  The dv and pv prefixes of the first
	 * EPNet, aux and gate layers are the domain's and persona's biases; STAR
	 * fusion and PN are the domain's fused matrices (dc); the first tower
	 * layers of every task read x together: one matmul of dc->w1.
	 */
	for (li = 0; li < p->nlayers; li++)
	{
		const PnLayer *ly = &p->layers[li];
		int			g = ly->nout;

		switch (ly->part)
		{
			case PN_PART_EPNET:
				if (ly->step == 1)
				{
					/* eh = relu(W1 [dv; x0] + b1) */
					pn_fill_rows(w->eh, n, g, dc->ep_bias);
					linear_acc(n, g, ly->nin, w->x0, n0, PN_T(m, ly->w) + ly->npre, ly->ldw, w->eh, g);
					post_op(m, w, ly, n, w->eh, NULL);
				}
				else
				{
					/* x = gamma * sigmoid(W2 eh + b2) ⊙ x0 */
					pn_fill_rows(w->x, n, g, PN_T(m, ly->b));
					linear_acc(n, g, ly->nin, w->eh, ly->nin, PN_T(m, ly->w), ly->ldw, w->x, g);
					post_op(m, w, ly, n, w->x, NULL);
				}
				break;
			case PN_PART_TOWER:
				if (ly->layer == 1)
				{
					/* every task's first layer at once, PN folded in: a [n, T*h1] */
					int			tg = T * g;

					if (ly->task != 0)
						break;
					pn_fill_rows(a, n, tg, dc->b1);
					linear_acc(n, tg, ly->nin, w->x, n0, dc->w1, ly->nin, a, tg);
					pn_relu(a, (size_t) n * tg);
				}
				else
				{
					/* task t's layer l on its column block of a, into b */
					int			hp = ly->nin,
								x = PN_TW(c, ly->task, ly->layer),
								r;

					for (r = 0; r < n; r++)
						memcpy(b + (size_t) r * T * g + ly->task * g, dc->b[x], sizeof(float) * g);
					linear_acc(n, g, hp, a + ly->task * hp, T * hp, dc->w[x], hp, b + ly->task * g, T * g);
					if (ly->task == T - 1)
					{
						float	   *s = a;

						pn_relu(b, (size_t) n * T * g);
						a = b;
						b = s;
					}
				}
				break;
			case PN_PART_PPNET:
				if (ly->step == 1)
				{
					/* gh = relu(W1 [pv; x] + b1), the pv part is the persona's bias */
					pn_fill_rows(w->gh, n, g, pp->gbias[ly->layer]);
					linear_acc(n, g, ly->nin, w->x, n0, PN_T(m, ly->w) + ly->npre, ly->ldw, w->gh, g);
					post_op(m, w, ly, n, w->gh, NULL);
				}
				else
				{
					/* g = gamma * sigmoid(W2 gh + b2), times every task's tower layer */
					pn_fill_rows(w->g, n, g, PN_T(m, ly->b));
					linear_acc(n, g, ly->nin, w->gh, ly->nin, PN_T(m, ly->w), ly->ldw, w->g, g);
					post_op(m, w, ly, n, w->g, a);
				}
				break;
			case PN_PART_OUTPUT:
				{
					/* logit_t = w*_t . a_L + c*_t */
					int			hL = ly->nin,
								x = PN_TW(c, ly->task, ly->layer),
								r;

					cblas_sgemv(CblasRowMajor, CblasNoTrans, n, hL, 1.0f, a + ly->task * hL, T * hL,
								dc->w[x], 1, 0.0f, w->tmp, 1);
					for (r = 0; r < n; r++)
						w->logit[(size_t) r * T + ly->task] = w->tmp[r] + dc->b[x][0];
				}
				break;
			case PN_PART_AUX:
				if (ly->step == 1)
				{
					/* ah = relu(V1 [dv; x0] + e1) */
					pn_fill_rows(w->ah, n, g, dc->aux_bias);
					linear_acc(n, g, ly->nin, w->x0, n0, PN_T(m, ly->w) + ly->npre, ly->ldw, w->ah, g);
					post_op(m, w, ly, n, w->ah, NULL);
				}
				else
				{
					/* logit += V2 ah + e2 */
					int			r,
								t;

					for (r = 0; r < n; r++)
						for (t = 0; t < T; t++)
							w->logit[(size_t) r * T + t] += PN_T(m, ly->b)[t];
					linear_acc(n, g, ly->nin, w->ah, ly->nin, PN_T(m, ly->w), ly->ldw, w->logit, T);
				}
				break;
		}
	}
	for (i = 0; i < (size_t) n * T; i++)
	{
		if (isnan(w->logit[i]))
			return pn_overflow_error(&m->cfg, (int64_t) (i / T), err);
		out[i] = pn_sigmoidd(w->logit[i]);
	}
	return PN_OK;
}
