/*
 * train.c
 *		Training of STAR-PEPNet: a batched forward pass that keeps its
 *		activations, the hand-written backward pass of every part of docs/model.md,
 *		masked multi-task BCE with L2, and the optimiser (Adam on dense
 *		parameters, lazy Adam with torch.optim.SparseAdam semantics on
 *		embedding rows).
 *
 * Rows of a batch are first sorted by domain (a counting sort), so that
 * each domain's fused STAR matrices W* = W ⊙ W_d are formed once per step
 * and used in one GEMM over that domain's rows.  Every array below is in
 * that sorted order.
 *
 * Shapes: n rows, n0 input width, k emb_dim, P*k persona width, T tasks,
 * h_l tower widths (h_0 = n0, h_(L+1) = 1), he / ha EPNet / aux hidden.
 * Matrices are row-major, weights [out, in].
 */
#include "pncore.h"
#include "vmath.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PN_EPS 1e-5f
#define PN_MOMENTUM 0.01f

typedef struct Seg
{
	int			domain;
	int			start;
	int			count;
	bool		batch_stats;	/* PN used this segment's own statistics */
} Seg;

struct PnTrainer
{
	PnModel    *m;
	int			bmax;
	float	   *grad;			/* [total] gradients, model layout */
	float	   *adam_m;			/* [total] first moments */
	float	   *adam_v;			/* [total] second moments */
	int64_t		step;
	float		lr;

	/* batch bookkeeping */
	int			n;
	int		   *order;			/* sorted row -> original row */
	int		   *dcount;			/* [D] scratch for the counting sort */
	Seg		   *segs;
	int			nseg;
	int64_t    *fslot;			/* [n, F] embedding rows */
	int64_t    *pslot;			/* [n, P] */
	int		   *dom;			/* [n] domain of each sorted row */
	float	   *labels;			/* [n, T] */
	int64_t    *uniq;			/* scratch for unique rows */
	int64_t    *touched;		/* [ntensors] offsets into touched_rows */
	int64_t    *touched_rows;	/* unique embedding rows touched per table */
	int		   *ntouched;

	/* activations */
	float	   *in_e;			/* [n, k+n0] = [dv ; x0] */
	float	   *eh;				/* [n, he] relu(W1 in_e + b1) */
	float	   *ge;				/* [n, n0] EPNet gate */
	float	   *x;				/* [n, n0] EPNet output */
	float	   *xhat;			/* [n, n0] normalised x */
	float	   *istd;			/* [n, n0] 1/sqrt(var + eps) used for the row */
	float	   *xn;				/* [n, n0] PN output */
	float	   *in_p;			/* [n, P*k + n0] = [pv ; x] */
	float	  **gh;				/* [L] [n, T*h_l] gate hidden */
	float	  **gg;				/* [L] [n, T*h_l] gate */
	float	  **r;				/* [T*L] [n, h_l] relu(z) */
	float	  **a;				/* [T*L] [n, h_l] gated output */
	float	   *ah;				/* [n, ha] aux hidden */
	float	   *logit;			/* [n, T] */
	float	   *fw;				/* fused weights of one (task, layer, domain) */
	double	   *pn_a,
			   *pn_b,
			   *pn_c,
			   *pn_d;			/* [n0] PN scratch */
	float	   *pn_mu,
			   *pn_is,
			   *pn_g,
			   *pn_bt;			/* [n0] PN scratch */
	/* gradient checks: stop-gradient inputs held at the values of one forward */
	bool		sg_frozen;
	float	   *sg_in_e;		/* [n, k+n0]: EPNet gate input, x0 part frozen */
	float	   *sg_x;			/* [n, n0]: PPNet gate input x frozen */
	float	   *fb;

	/* gradients of activations */
	float	   *dlogit;			/* [n, T] */
	float	   *da;				/* [n, hmax] */
	float	   *dz;				/* [n, hmax] */
	float	   *dprev;			/* [n, max(n0, hmax)] */
	float	   *dxn;			/* [n, n0] */
	float	   *dx;				/* [n, n0] */
	float	   *dx0;			/* [n, n0] */
	float	   *ddv;			/* [n, k] */
	float	   *dpv;			/* [n, P*k] */
	float	  **dgg;			/* [L] [n, T*h_l] gradient of the gate */
	float	   *dgh;			/* [n, max(T*h, he, ha)] */
	float	   *dwt;			/* [hmax * max(n0, hmax)] gradient of a fused matrix */
};

/* Numerically safe logistic function */
static inline float
sigm(float v)
{
	if (v >= 0)
		return 1.0f / (1.0f + expf(-v));
	else
	{
		float		e = expf(v);

		return e / (1.0f + e);
	}
}

/* C [M,N] = A [M,K] B[N,K]^T + beta C */
static void
mm_nt(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	if (M == 0 || N == 0)
		return;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* C [M,N] = A [M,K] B[K,N] + beta C */
static void
mm_nn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	if (M == 0 || N == 0)
		return;
	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* C [M,N] = A[K,M]^T B [K,N] + beta C (weight gradients: dW = dz^T a) */
static void
mm_tn(int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	if (M == 0 || N == 0)
		return;
	cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* Y [n, cols] (leading dimension ld) = bias broadcast */
static void
fill_rows(float *Y, int n, int cols, int ld, const float *bias)
{
	int			i;

	for (i = 0; i < n; i++)
		memcpy(Y + (size_t) i * ld, bias, sizeof(float) * cols);
}

/* db [cols] += column sums of dY [n, cols] */
static void
col_sums(const float *dY, int n, int cols, int ld, float *db)
{
	int			i,
				j;

	for (i = 0; i < n; i++)
		for (j = 0; j < cols; j++)
			db[j] += dY[(size_t) i * ld + j];
}

/* Widest tower layer */
static int
hmax_of(const PnConfig *c)
{
	int			i,
				h = 1;

	for (i = 0; i < c->nhidden; i++)
		if (c->hidden[i] > h)
			h = c->hidden[i];
	return h;
}

#define G(tr, idx) ((tr)->grad + (tr)->m->tensors[idx].offset)

/* Release a trainer (not its model) */
void
pn_trainer_free(PnTrainer *tr)
{
	int			i;
	const PnConfig *c;

	if (tr == NULL)
		return;
	c = &tr->m->cfg;
	pn_free(tr->grad);
	pn_free(tr->adam_m);
	pn_free(tr->adam_v);
	pn_free(tr->order);
	pn_free(tr->dcount);
	pn_free(tr->segs);
	pn_free(tr->fslot);
	pn_free(tr->pslot);
	pn_free(tr->dom);
	pn_free(tr->labels);
	pn_free(tr->uniq);
	pn_free(tr->touched);
	pn_free(tr->touched_rows);
	pn_free(tr->ntouched);
	pn_free(tr->in_e);
	pn_free(tr->eh);
	pn_free(tr->ge);
	pn_free(tr->x);
	pn_free(tr->xhat);
	pn_free(tr->istd);
	pn_free(tr->xn);
	pn_free(tr->in_p);
	for (i = 0; i < c->nhidden; i++)
	{
		if (tr->gh)
			pn_free(tr->gh[i]);
		if (tr->gg)
			pn_free(tr->gg[i]);
		if (tr->dgg)
			pn_free(tr->dgg[i]);
	}
	for (i = 0; i < c->ntasks * c->nhidden; i++)
	{
		if (tr->r)
			pn_free(tr->r[i]);
		if (tr->a)
			pn_free(tr->a[i]);
	}
	pn_free(tr->gh);
	pn_free(tr->gg);
	pn_free(tr->dgg);
	pn_free(tr->r);
	pn_free(tr->a);
	pn_free(tr->ah);
	pn_free(tr->logit);
	pn_free(tr->fw);
	pn_free(tr->fb);
	pn_free(tr->pn_a);
	pn_free(tr->pn_b);
	pn_free(tr->pn_c);
	pn_free(tr->pn_d);
	pn_free(tr->pn_mu);
	pn_free(tr->pn_is);
	pn_free(tr->pn_g);
	pn_free(tr->pn_bt);
	pn_free(tr->sg_in_e);
	pn_free(tr->sg_x);
	pn_free(tr->dlogit);
	pn_free(tr->da);
	pn_free(tr->dz);
	pn_free(tr->dprev);
	pn_free(tr->dxn);
	pn_free(tr->dx);
	pn_free(tr->dx0);
	pn_free(tr->ddv);
	pn_free(tr->dpv);
	pn_free(tr->dgh);
	pn_free(tr->dwt);
	pn_free(tr);
}

/* Allocate n floats (at least one) */
static float *
fa(size_t n, bool *ok)
{
	float	   *p = pn_alloc0(sizeof(float) * (n ? n : 1));

	if (!p)
		*ok = false;
	return p;
}

/*
 * A trainer for m with batches of up to bmax rows and learning rate lr;
 * lr = 0 makes an evaluator (no gradient or optimiser state).
 */
int
pn_trainer_new(PnModel *m, int bmax, float lr, PnTrainer **out, PnError *err)
{
	const PnConfig *c = &m->cfg;
	PnTrainer  *tr;
	bool		ok = true;
	size_t		n = bmax;
	int			k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				L = c->nhidden,
				hmax = hmax_of(c),
				wide,
				i,
				t;

	*out = NULL;
	tr = pn_alloc0(sizeof(PnTrainer));
	if (!tr)
		return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer");
	tr->m = m;
	tr->bmax = bmax;
	tr->lr = lr;
	wide = T * hmax;
	if (c->epnet_hidden > wide)
		wide = c->epnet_hidden;
	if (c->aux_hidden > wide)
		wide = c->aux_hidden;

	if (lr > 0)
	{
		tr->grad = fa(m->total, &ok);
		tr->adam_m = fa(m->total, &ok);
		tr->adam_v = fa(m->total, &ok);
	}
	tr->order = pn_alloc(sizeof(int) * n);
	tr->dcount = pn_alloc(sizeof(int) * (c->domains + 1));
	tr->segs = pn_alloc(sizeof(Seg) * (n + 1));
	tr->fslot = pn_alloc(sizeof(int64_t) * n * (c->nfeat + 1));
	tr->pslot = pn_alloc(sizeof(int64_t) * n * (c->npers + 1));
	tr->dom = pn_alloc(sizeof(int) * n);
	tr->labels = fa(n * T, &ok);
	tr->uniq = pn_alloc(sizeof(int64_t) * n);
	tr->touched = pn_alloc(sizeof(int64_t) * (m->ntensors + 1));
	tr->touched_rows = pn_alloc(sizeof(int64_t) * n * (c->nfeat + c->npers + 1));
	tr->ntouched = pn_alloc0(sizeof(int) * (m->ntensors + 1));
	if (!tr->order || !tr->dcount || !tr->segs || !tr->fslot || !tr->pslot || !tr->dom ||
		!tr->uniq || !tr->touched || !tr->touched_rows || !tr->ntouched)
		ok = false;
	tr->in_e = fa(n * (k + n0), &ok);
	tr->eh = fa(n * c->epnet_hidden, &ok);
	tr->ge = fa(n * n0, &ok);
	tr->x = fa(n * n0, &ok);
	tr->xhat = fa(n * n0, &ok);
	tr->istd = fa(n * n0, &ok);
	tr->xn = fa(n * n0, &ok);
	tr->in_p = fa(n * (c->pk + n0), &ok);
	tr->gh = pn_alloc0(sizeof(float *) * L);
	tr->gg = pn_alloc0(sizeof(float *) * L);
	tr->dgg = pn_alloc0(sizeof(float *) * L);
	tr->r = pn_alloc0(sizeof(float *) * T * L);
	tr->a = pn_alloc0(sizeof(float *) * T * L);
	if (!tr->gh || !tr->gg || !tr->dgg || !tr->r || !tr->a)
	{
		pn_trainer_free(tr);
		return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer");
	}
	for (i = 0; i < L; i++)
	{
		size_t		g = (size_t) T * c->hidden[i];

		if (c->ppnet)
		{
			tr->gh[i] = fa(n * g, &ok);
			tr->gg[i] = fa(n * g, &ok);
			tr->dgg[i] = fa(n * g, &ok);
		}
		for (t = 0; t < T; t++)
		{
			tr->r[t * L + i] = fa(n * c->hidden[i], &ok);
			tr->a[t * L + i] = fa(n * c->hidden[i], &ok);
		}
	}
	tr->ah = fa(n * c->aux_hidden, &ok);
	tr->logit = fa(n * T, &ok);
	tr->fw = fa((size_t) hmax * (n0 > hmax ? n0 : hmax), &ok);
	tr->fb = fa(hmax, &ok);
	tr->pn_a = pn_alloc(sizeof(double) * n0);
	tr->pn_b = pn_alloc(sizeof(double) * n0);
	tr->pn_c = pn_alloc(sizeof(double) * n0);
	tr->pn_d = pn_alloc(sizeof(double) * n0);
	if (!tr->pn_a || !tr->pn_b || !tr->pn_c || !tr->pn_d)
		ok = false;
	tr->pn_mu = fa(n0, &ok);
	tr->pn_is = fa(n0, &ok);
	tr->pn_g = fa(n0, &ok);
	tr->pn_bt = fa(n0, &ok);
	tr->dlogit = fa(n * T, &ok);
	tr->da = fa(n * hmax, &ok);
	tr->dz = fa(n * hmax, &ok);
	tr->dprev = fa(n * (n0 > hmax ? n0 : hmax), &ok);
	tr->dxn = fa(n * n0, &ok);
	tr->dx = fa(n * n0, &ok);
	tr->dx0 = fa(n * n0, &ok);
	tr->ddv = fa(n * k, &ok);
	tr->dpv = fa(n * (c->pk + 1), &ok);
	tr->dgh = fa(n * wide, &ok);
	tr->dwt = fa((size_t) hmax * (n0 > hmax ? n0 : hmax), &ok);
	if (!ok)
	{
		pn_trainer_free(tr);
		return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer (batch of %d rows)", bmax);
	}
	*out = tr;
	return PN_OK;
}

/*
 * For gradient checks: hold the inputs behind stop-gradients (EPNet's x0,
 * PPNet's x) at their values in the last forward pass, so that finite
 * differences measure the same function the backward pass differentiates.
 * The following calls must use the same batch.
 */
int
pn_trainer_freeze_sg(PnTrainer *tr, bool on)
{
	const PnConfig *c = &tr->m->cfg;
	size_t		ke = (size_t) c->emb_dim + c->n0;

	tr->sg_frozen = false;
	if (!on)
		return PN_OK;
	if (!tr->sg_in_e)
		tr->sg_in_e = pn_alloc(sizeof(float) * tr->bmax * ke);
	if (!tr->sg_x)
		tr->sg_x = pn_alloc(sizeof(float) * tr->bmax * c->n0);
	if (!tr->sg_in_e || !tr->sg_x)
		return PN_ENOMEM;
	memcpy(tr->sg_in_e, tr->in_e, sizeof(float) * tr->n * ke);
	memcpy(tr->sg_x, tr->x, sizeof(float) * tr->n * c->n0);
	tr->sg_frozen = true;
	return PN_OK;
}

/* The optimiser's step count */
int64_t
pn_trainer_steps(const PnTrainer *tr)
{
	return tr->step;
}

/* Resume the optimiser's step count */
void
pn_trainer_set_steps(PnTrainer *tr, int64_t steps)
{
	tr->step = steps;
}

/* Adam's first (1) or second (2) moments, model layout; NULL for an evaluator */
float *
pn_trainer_moment(PnTrainer *tr, int which)
{
	return which == 1 ? tr->adam_m : tr->adam_v;
}

/* Learning rate of the following steps */
void
pn_trainer_set_lr(PnTrainer *tr, float lr)
{
	tr->lr = lr;
}

/* The gradient array (model layout), for tests */
float *
pn_trainer_grad(PnTrainer *tr)
{
	return tr->grad;
}

/*
 * Sort the batch by domain, compute embedding slots, gather x0, dv, pv and
 * labels.  Fails on out-of-range domains, ids or labels.
 */
static int
prepare(PnTrainer *tr, const PnBatch *b, PnError *err)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = b->n,
				k = c->emb_dim,
				n0 = c->n0,
				F = c->nfeat,
				P = c->npers,
				T = c->ntasks,
				D = c->domains,
				i,
				j,
				d;

	if (n < 1 || n > tr->bmax)
		return pn_seterr(err, PN_EINPUT, "batch of %d rows, expected 1 to %d", n, tr->bmax);
	tr->n = n;
	for (i = 0; i < n; i++)
		if (b->domain[i] < 0 || b->domain[i] >= D)
		{
			pn_seterr(err, PN_EINPUT, "domain %d is out of range for a model of %d domains", b->domain[i], D);
			err->row = i;
			return PN_EINPUT;
		}
	/* counting sort by domain, stable */
	memset(tr->dcount, 0, sizeof(int) * (D + 1));
	for (i = 0; i < n; i++)
		tr->dcount[b->domain[i] + 1]++;
	for (d = 0; d < D; d++)
		tr->dcount[d + 1] += tr->dcount[d];
	tr->nseg = 0;
	for (d = 0; d < D; d++)
		if (tr->dcount[d + 1] > tr->dcount[d])
		{
			Seg		   *s = &tr->segs[tr->nseg++];

			s->domain = d;
			s->start = tr->dcount[d];
			s->count = tr->dcount[d + 1] - tr->dcount[d];
			s->batch_stats = false;
		}
	for (i = 0; i < n; i++)
		tr->order[tr->dcount[b->domain[i]]++] = i;

	for (i = 0; i < n; i++)
	{
		int			o = tr->order[i];
		float	   *ie = tr->in_e + (size_t) i * (k + n0);
		float	   *ip = tr->in_p + (size_t) i * (c->pk + n0);

		tr->dom[i] = b->domain[o];
		memcpy(ie, PN_T(m, m->t_emb_dom) + (size_t) tr->dom[i] * k, sizeof(float) * k);
		for (j = 0; j < F; j++)
		{
			int64_t		id = b->features[(size_t) o * F + j];
			int64_t		s = pn_slot(&c->feat[j], j, id);

			if (s < 0)
			{
				pn_seterr(err, PN_EINPUT, "feature id %lld of field \"%s\" is out of range", (long long) id, c->feat[j].name);
				pn_setdetail(err, "Field \"%s\" is not hashed: ids must be in [0, %lld).", c->feat[j].name, (long long) c->feat[j].buckets);
				err->row = o;
				return PN_EINPUT;
			}
			tr->fslot[(size_t) i * F + j] = s;
			memcpy(ie + k + j * k, PN_T(m, m->t_emb_feat[j]) + s * k, sizeof(float) * k);
		}
		for (j = 0; j < c->dense; j++)
		{
			float		v = b->dense[(size_t) o * c->dense + j];

			if (!isfinite(v))
			{
				pn_seterr(err, PN_EINPUT, "dense value %d is not finite", j + 1);
				err->row = o;
				return PN_EINPUT;
			}
			ie[k + F * k + j] = v;
		}
		for (j = 0; j < P; j++)
		{
			int64_t		id = b->persona[(size_t) o * P + j];
			int64_t		s = pn_slot(&c->pers[j], j, id);

			if (s < 0)
			{
				pn_seterr(err, PN_EINPUT, "persona id %lld of field \"%s\" is out of range", (long long) id, c->pers[j].name);
				pn_setdetail(err, "Field \"%s\" is not hashed: ids must be in [0, %lld).", c->pers[j].name, (long long) c->pers[j].buckets);
				err->row = o;
				return PN_EINPUT;
			}
			tr->pslot[(size_t) i * P + j] = s;
			memcpy(ip + j * k, PN_T(m, m->t_emb_pers[j]) + s * k, sizeof(float) * k);
		}
		if (b->labels)
			for (j = 0; j < T; j++)
			{
				float		y = b->labels[(size_t) o * T + j];

				if (!isnan(y) && !(y >= 0.0f && y <= 1.0f))
				{
					pn_seterr(err, PN_EINPUT, "label %g of task \"%s\" is outside [0, 1]", y, c->tasks[j]);
					err->row = o;
					return PN_EINPUT;
				}
				tr->labels[(size_t) i * T + j] = y;
			}
	}
	return PN_OK;
}

/* Fused W* = W ⊙ W_d[d] and b* = b + b_d[d] of tower (t, l) into tr->fw, tr->fb */
static void
fuse(PnTrainer *tr, int t, int l, int d, int h, int prev)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			x = PN_TW(c, t, l);
	const float *W = PN_T(m, m->t_tw_w[x]);
	const float *B = PN_T(m, m->t_tw_b[x]);
	size_t		i;

	if (c->star)
	{
		const float *Wd = PN_T(m, m->t_tw_dw[x]) + (size_t) d * h * prev;
		const float *Bd = PN_T(m, m->t_tw_db[x]) + (size_t) d * h;

		for (i = 0; i < (size_t) h * prev; i++)
			tr->fw[i] = W[i] * Wd[i];
		for (i = 0; i < (size_t) h; i++)
			tr->fb[i] = B[i] + Bd[i];
	}
	else
	{
		memcpy(tr->fw, W, sizeof(float) * h * prev);
		memcpy(tr->fb, B, sizeof(float) * h);
	}
}

/* Name input column j of x (a feature's embedding or a dense value) into buf */
static void
column_name(const PnConfig *c, int j, char *buf, size_t len)
{
	int			fk = c->nfeat * c->emb_dim;

	if (j >= fk)
		snprintf(buf, len, "dense value %d", j - fk + 1);
	else
		snprintf(buf, len, "embedding of feature \"%s\"", c->feat[j / c->emb_dim].name);
}

/*
 * PN's batch statistics of input column j in segment sg are not finite in
 * float32: name the row with the largest |x| there and the likely cause.
 */
static int
pn_stats_error(PnTrainer *tr, const Seg *sg, int j, PnError *err)
{
	const PnConfig *c = &tr->m->cfg;
	int			i,
				worst = sg->start;
	float		big = -1.0f;
	char		col[PN_MAX_NAME + 40];

	for (i = sg->start; i < sg->start + sg->count; i++)
	{
		float		v = fabsf(tr->x[(size_t) i * c->n0 + j]);

		if (!(v <= big))
		{
			big = v;
			worst = i;
		}
	}
	column_name(c, j, col, sizeof(col));
	pn_seterr(err, PN_ENUMERIC, "training diverged at step %lld: the Partitioned Normalization variance of the %s "
			  "in domain %d overflows float32 (a value of %g reaches it)",
			  (long long) tr->step + 1, col, sg->domain, (double) tr->x[(size_t) worst * c->n0 + j]);
	pn_setdetail(err, "Likely cause: unscaled dense values (scale them to about [-10, 10], e.g. log or z-score) "
				 "or a learning rate that is too high.");
	err->row = tr->order[worst];
	return PN_ENUMERIC;
}

/*
 * Forward pass over the prepared batch.  train: PN uses per-domain batch
 * statistics (and, with update_stats, moves the running statistics).
 * Leaves logits [n, T] in tr->logit (sorted order).
 */
static int
forward(PnTrainer *tr, bool train, bool update_stats, PnError *err)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				L = c->nhidden,
				he = c->epnet_hidden,
				ha = c->aux_hidden,
				ke = k + n0,
				kp = c->pk + n0,
				i,
				j,
				s,
				t,
				l;
	size_t		nn = (size_t) n * n0,
				q;
	float		gamma = c->gamma;

	/* EPNet: x = gamma * sigmoid(W2 relu(W1 [dv ; x0] + b1) + b2) ⊙ x0 */
	if (c->epnet)
	{
		const float *gin = tr->in_e;

		if (tr->sg_frozen)
		{
			/* live dv, frozen x0 */
			for (i = 0; i < n; i++)
				memcpy(tr->sg_in_e + (size_t) i * ke, tr->in_e + (size_t) i * ke, sizeof(float) * k);
			gin = tr->sg_in_e;
		}
		fill_rows(tr->eh, n, he, he, PN_T(m, m->t_ep_b1));
		mm_nt(n, he, ke, gin, ke, PN_T(m, m->t_ep_w1), ke, 1.0f, tr->eh, he);
		for (q = 0; q < (size_t) n * he; q++)
			tr->eh[q] = tr->eh[q] > 0 ? tr->eh[q] : 0;
		fill_rows(tr->ge, n, n0, n0, PN_T(m, m->t_ep_b2));
		mm_nt(n, n0, he, tr->eh, he, PN_T(m, m->t_ep_w2), he, 1.0f, tr->ge, n0);
		pn_sigmoid_scale(tr->ge, nn, gamma);
		for (i = 0; i < n; i++)
			for (j = 0; j < n0; j++)
			{
				q = (size_t) i * n0 + j;
				tr->x[q] = tr->ge[q] * tr->in_e[(size_t) i * ke + k + j];
			}
	}
	else
		for (i = 0; i < n; i++)
			memcpy(tr->x + (size_t) i * n0, tr->in_e + (size_t) i * ke + k, sizeof(float) * n0);

	/* Partitioned Normalization, per domain segment (row-major passes) */
	if (c->pn)
	{
		const float *gs = PN_T(m, m->t_pn_gamma),
				   *bs = PN_T(m, m->t_pn_beta);
		double	   *sum = tr->pn_a,
				   *sq = tr->pn_b;
		float	   *mu = tr->pn_mu,
				   *is = tr->pn_is,
				   *G = tr->pn_g,
				   *B = tr->pn_bt;

		for (s = 0; s < tr->nseg; s++)
		{
			Seg		   *sg = &tr->segs[s];
			int			d = sg->domain,
						end = sg->start + sg->count;
			float	   *rm = PN_T(m, m->t_pn_rmean) + (size_t) d * n0;
			float	   *rv = PN_T(m, m->t_pn_rvar) + (size_t) d * n0;
			float	   *cnt = PN_T(m, m->t_pn_count) + d;
			/* docs/model.md 0.2: warm-started average, a = max(0.01, 1 / (n_d + 1)) */
			float		a = fmaxf(PN_MOMENTUM, 1.0f / (*cnt + 1.0f));
			const float *gd = PN_T(m, m->t_pn_dgamma) + (size_t) d * n0;
			const float *bd = PN_T(m, m->t_pn_dbeta) + (size_t) d * n0;

			sg->batch_stats = train && sg->count >= 2;
			if (sg->batch_stats)
			{
				memset(sum, 0, sizeof(double) * n0);
				memset(sq, 0, sizeof(double) * n0);
				for (i = sg->start; i < end; i++)
				{
					const float *xr = tr->x + (size_t) i * n0;

					for (j = 0; j < n0; j++)
						sum[j] += xr[j];
				}
				for (j = 0; j < n0; j++)
					sum[j] /= sg->count;
				for (i = sg->start; i < end; i++)
				{
					const float *xr = tr->x + (size_t) i * n0;

					for (j = 0; j < n0; j++)
					{
						double		dd = xr[j] - sum[j];

						sq[j] += dd * dd;
					}
				}
			}
			for (j = 0; j < n0; j++)
			{
				double		var;

				if (sg->batch_stats)
				{
					var = sq[j] / sg->count;
					mu[j] = (float) sum[j];
					if (!isfinite(mu[j]) || !isfinite((float) var))
						return pn_stats_error(tr, sg, j, err);
					if (update_stats)
					{
						rm[j] = (1 - a) * rm[j] + a * (float) sum[j];
						rv[j] = (1 - a) * rv[j] + a * (float) var;
					}
				}
				else
				{
					mu[j] = rm[j];
					var = rv[j] > 0 ? rv[j] : 0;
				}
				is[j] = (float) (1.0 / sqrt(var + PN_EPS));
				G[j] = gs[j] * gd[j];
				B[j] = bs[j] + bd[j];
			}
			if (sg->batch_stats && update_stats)
				*cnt += 1.0f;
			for (i = sg->start; i < end; i++)
			{
				const float *xr = tr->x + (size_t) i * n0;
				float	   *xh = tr->xhat + (size_t) i * n0,
						   *xo = tr->xn + (size_t) i * n0,
						   *ir = tr->istd + (size_t) i * n0;

				for (j = 0; j < n0; j++)
				{
					xh[j] = (xr[j] - mu[j]) * is[j];
					ir[j] = is[j];
					xo[j] = G[j] * xh[j] + B[j];
				}
			}
		}
	}
	else
		memcpy(tr->xn, tr->x, sizeof(float) * nn);

	/* PPNet gates: g_l = gamma * sigmoid(W2 relu(W1 [pv ; x] + b1) + b2) */
	if (c->ppnet)
	{
		for (i = 0; i < n; i++)
			memcpy(tr->in_p + (size_t) i * kp + c->pk, (tr->sg_frozen ? tr->sg_x : tr->x) + (size_t) i * n0, sizeof(float) * n0);
		for (l = 0; l < L; l++)
		{
			int			g = T * c->hidden[l];

			fill_rows(tr->gh[l], n, g, g, PN_T(m, m->t_pp_b1[l]));
			mm_nt(n, g, kp, tr->in_p, kp, PN_T(m, m->t_pp_w1[l]), kp, 1.0f, tr->gh[l], g);
			for (q = 0; q < (size_t) n * g; q++)
				tr->gh[l][q] = tr->gh[l][q] > 0 ? tr->gh[l][q] : 0;
			fill_rows(tr->gg[l], n, g, g, PN_T(m, m->t_pp_b2[l]));
			mm_nt(n, g, g, tr->gh[l], g, PN_T(m, m->t_pp_w2[l]), g, 1.0f, tr->gg[l], g);
			pn_sigmoid_scale(tr->gg[l], (size_t) n * g, gamma);
		}
	}

	/* towers: a_l = g_l[t] ⊙ relu(W*_l a_(l-1) + b*_l), per domain segment */
	for (t = 0; t < T; t++)
	{
		for (l = 1; l <= L + 1; l++)
		{
			int			h = l <= L ? c->hidden[l - 1] : 1;
			int			prev = l == 1 ? n0 : c->hidden[l - 2];
			const float *in = l == 1 ? tr->xn : tr->a[t * L + l - 2];

			for (s = 0; s < tr->nseg; s++)
			{
				Seg		   *sg = &tr->segs[s];

				fuse(tr, t, l, sg->domain, h, prev);
				if (l <= L)
				{
					float	   *z = tr->r[t * L + l - 1] + (size_t) sg->start * h;

					fill_rows(z, sg->count, h, h, tr->fb);
					mm_nt(sg->count, h, prev, in + (size_t) sg->start * prev, prev, tr->fw, prev, 1.0f, z, h);
				}
				else
					for (i = sg->start; i < sg->start + sg->count; i++)
					{
						const float *ar = in + (size_t) i * prev;
						float		acc = tr->fb[0];

						for (j = 0; j < prev; j++)
							acc += tr->fw[j] * ar[j];
						tr->logit[(size_t) i * T + t] = acc;
					}
			}
			if (l <= L)
			{
				float	   *rr = tr->r[t * L + l - 1],
						   *aa = tr->a[t * L + l - 1];

				for (i = 0; i < n; i++)
					for (j = 0; j < h; j++)
					{
						q = (size_t) i * h + j;
						rr[q] = rr[q] > 0 ? rr[q] : 0;
						aa[q] = c->ppnet ? rr[q] * tr->gg[l - 1][(size_t) i * T * h + t * h + j] : rr[q];
					}
			}
		}
	}

	/* aux: logit += V2 relu(V1 [dv ; x0] + e1) + e2 */
	if (c->aux)
	{
		fill_rows(tr->ah, n, ha, ha, PN_T(m, m->t_aux_b1));
		mm_nt(n, ha, ke, tr->in_e, ke, PN_T(m, m->t_aux_w1), ke, 1.0f, tr->ah, ha);
		for (q = 0; q < (size_t) n * ha; q++)
			tr->ah[q] = tr->ah[q] > 0 ? tr->ah[q] : 0;
		for (i = 0; i < n; i++)
			for (t = 0; t < T; t++)
				tr->logit[(size_t) i * T + t] += PN_T(m, m->t_aux_b2)[t];
		mm_nt(n, T, ha, tr->ah, ha, PN_T(m, m->t_aux_w2), ha, 1.0f, tr->logit, T);
	}
	return PN_OK;
}

/* Masked BCE on logits, mean over rows, summed over tasks, plus L2; fills dlogit */
static double
loss_and_dlogit(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				T = c->ntasks,
				i;
	double		loss = 0.0;

	for (i = 0; i < n * T; i++)
	{
		float		z = tr->logit[i],
					y = tr->labels[i];

		if (isnan(y))
		{
			tr->dlogit[i] = 0.0f;
			continue;
		}
		/* softplus(z) - y z, stable */
		loss += (z > 0 ? z + log1p(exp(-(double) z)) : log1p(exp((double) z))) - (double) y * z;
		tr->dlogit[i] = (sigm(z) - y) / n;
	}
	loss /= n;
	if (c->l2 > 0)
	{
		int			x;

		for (x = 0; x < m->ntensors; x++)
			if (m->tensors[x].kind == PNT_WEIGHT)
			{
				const float *w = PN_T(m, x);
				double		s = 0;
				int64_t		q;

				for (q = 0; q < m->tensors[x].numel; q++)
					s += (double) w[q] * w[q];
				loss += c->l2 * s;
			}
	}
	return loss;
}

/* Zero the gradients of dense tensors and of the embedding rows last touched */
static void
zero_grads(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	int			x,
				i;

	for (x = 0; x < m->ntensors; x++)
	{
		PnTensor   *t = &m->tensors[x];

		if (t->kind != PNT_EMBED)
			memset(tr->grad + t->offset, 0, sizeof(float) * t->numel);
		else
		{
			int64_t		k = t->shape[1];

			for (i = 0; i < tr->ntouched[x]; i++)
				memset(tr->grad + t->offset + tr->touched_rows[tr->touched[x] + i] * k, 0, sizeof(float) * k);
			tr->ntouched[x] = 0;
		}
	}
}

/* int64 comparator for qsort */
static int
cmp_i64(const void *a, const void *b)
{
	int64_t		x = *(const int64_t *) a,
				y = *(const int64_t *) b;

	return x < y ? -1 : x > y;
}

/* Record the unique rows of table x used by the batch (rows[i * stride]) */
static void
record_rows(PnTrainer *tr, int x, const int64_t *rows, int stride, int64_t *pos)
{
	int			n = tr->n,
				i,
				u = 0;

	for (i = 0; i < n; i++)
		tr->uniq[i] = rows[(size_t) i * stride];
	qsort(tr->uniq, n, sizeof(int64_t), cmp_i64);
	tr->touched[x] = *pos;
	for (i = 0; i < n; i++)
		if (i == 0 || tr->uniq[i] != tr->uniq[i - 1])
			tr->touched_rows[*pos + u++] = tr->uniq[i];
	tr->ntouched[x] = u;
	*pos += u;
}

/* Backward pass of everything: gradients into tr->grad */
static void
backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				L = c->nhidden,
				he = c->epnet_hidden,
				ha = c->aux_hidden,
				ke = k + n0,
				kp = c->pk + n0,
				i,
				j,
				s,
				t,
				l,
				x;
	size_t		nn = (size_t) n * n0,
				q;
	float		gamma = c->gamma;
	int64_t		pos = 0;

	memset(tr->dxn, 0, sizeof(float) * nn);
	memset(tr->dx0, 0, sizeof(float) * nn);
	memset(tr->ddv, 0, sizeof(float) * (size_t) n * k);
	if (c->ppnet)
		for (l = 0; l < L; l++)
			memset(tr->dgg[l], 0, sizeof(float) * (size_t) n * T * c->hidden[l]);

	/* aux: dV2 = dlogit^T ah, dah = dlogit V2, dV1 = dah_pre^T [dv ; x0] */
	if (c->aux)
	{
		mm_tn(T, ha, n, tr->dlogit, T, tr->ah, ha, 1.0f, G(tr, m->t_aux_w2), ha);
		col_sums(tr->dlogit, n, T, T, G(tr, m->t_aux_b2));
		mm_nn(n, ha, T, tr->dlogit, T, PN_T(m, m->t_aux_w2), ha, 0.0f, tr->dgh, ha);
		for (q = 0; q < (size_t) n * ha; q++)
			if (tr->ah[q] <= 0)
				tr->dgh[q] = 0;
		mm_tn(ha, ke, n, tr->dgh, ha, tr->in_e, ke, 1.0f, G(tr, m->t_aux_w1), ke);
		col_sums(tr->dgh, n, ha, ha, G(tr, m->t_aux_b1));
		/* d [dv ; x0]: dv part and x0 part */
		mm_nn(n, k, ha, tr->dgh, ha, PN_T(m, m->t_aux_w1), ke, 1.0f, tr->ddv, k);
		mm_nn(n, n0, ha, tr->dgh, ha, PN_T(m, m->t_aux_w1) + k, ke, 1.0f, tr->dx0, n0);
	}

	/* towers, top down, per task */
	for (t = 0; t < T; t++)
	{
		for (l = L + 1; l >= 1; l--)
		{
			int			h = l <= L ? c->hidden[l - 1] : 1;
			int			prev = l == 1 ? n0 : c->hidden[l - 2];
			const float *in = l == 1 ? tr->xn : tr->a[t * L + l - 2];
			int			xi = PN_TW(c, t, l);
			float	   *gW = G(tr, m->t_tw_w[xi]),
					   *gB = G(tr, m->t_tw_b[xi]);
			float	   *dout = l == 1 ? tr->dxn : tr->dprev;
			float		dbeta = l == 1 ? 1.0f : 0.0f;	/* tasks add into dxn */

			/* dz [n, h]: gradient at the pre-activation of this layer */
			if (l == L + 1)
				for (i = 0; i < n; i++)
					tr->dz[i] = tr->dlogit[(size_t) i * T + t];
			else
			{
				const float *rr = tr->r[t * L + l - 1];

				for (i = 0; i < n; i++)
					for (j = 0; j < h; j++)
					{
						float		g;

						q = (size_t) i * h + j;
						g = c->ppnet ? tr->gg[l - 1][(size_t) i * T * h + t * h + j] : 1.0f;

						if (c->ppnet)
							tr->dgg[l - 1][(size_t) i * T * h + t * h + j] = tr->da[q] * rr[q];
						tr->dz[q] = rr[q] > 0 ? tr->da[q] * g : 0.0f;
					}
			}
			for (s = 0; s < tr->nseg; s++)
			{
				Seg		   *sg = &tr->segs[s];
				int			d = sg->domain;
				const float *dzs = tr->dz + (size_t) sg->start * h;
				const float *ins = in + (size_t) sg->start * prev;
				size_t		hp = (size_t) h * prev;

				fuse(tr, t, l, d, h, prev);
				/* dW* = dz^T a_prev over the segment */
				mm_tn(h, prev, sg->count, dzs, h, ins, prev, 0.0f, tr->dwt, prev);
				if (c->star)
				{
					const float *W = PN_T(m, m->t_tw_w[xi]);
					const float *Wd = PN_T(m, m->t_tw_dw[xi]) + (size_t) d * hp;
					float	   *gWd = G(tr, m->t_tw_dw[xi]) + (size_t) d * hp;
					float	   *gBd = G(tr, m->t_tw_db[xi]) + (size_t) d * h;

					for (q = 0; q < hp; q++)
					{
						gW[q] += tr->dwt[q] * Wd[q];
						gWd[q] += tr->dwt[q] * W[q];
					}
					col_sums(dzs, sg->count, h, h, gBd);
				}
				else
					for (q = 0; q < hp; q++)
						gW[q] += tr->dwt[q];
				col_sums(dzs, sg->count, h, h, gB);
				/* d a_prev = dz W* */
				mm_nn(sg->count, prev, h, dzs, h, tr->fw, prev, dbeta,
					  dout + (size_t) sg->start * prev, prev);
			}
			if (l > 1)
				memcpy(tr->da, tr->dprev, sizeof(float) * (size_t) n * prev);
		}
	}

	/* PPNet gates: dgg -> pre-sigmoid -> W2, b2 -> relu -> W1, b1 -> pv */
	if (c->ppnet)
	{
		memset(tr->dpv, 0, sizeof(float) * (size_t) n * c->pk);
		for (l = 0; l < L; l++)
		{
			int			g = T * c->hidden[l];
			float	   *dg = tr->dgg[l];

			for (q = 0; q < (size_t) n * g; q++)
			{
				float		gv = tr->gg[l][q];

				dg[q] *= gv * (1.0f - gv / gamma);
			}
			mm_tn(g, g, n, dg, g, tr->gh[l], g, 1.0f, G(tr, m->t_pp_w2[l]), g);
			col_sums(dg, n, g, g, G(tr, m->t_pp_b2[l]));
			mm_nn(n, g, g, dg, g, PN_T(m, m->t_pp_w2[l]), g, 0.0f, tr->dgh, g);
			for (q = 0; q < (size_t) n * g; q++)
				if (tr->gh[l][q] <= 0)
					tr->dgh[q] = 0;
			mm_tn(g, kp, n, tr->dgh, g, tr->in_p, kp, 1.0f, G(tr, m->t_pp_w1[l]), kp);
			col_sums(tr->dgh, n, g, g, G(tr, m->t_pp_b1[l]));
			/* only the pv part: x enters the gate through a stop-gradient */
			if (c->pk)
				mm_nn(n, c->pk, g, tr->dgh, g, PN_T(m, m->t_pp_w1[l]), kp, 1.0f, tr->dpv, c->pk);
		}
	}

	/* PN backward: dxn -> dx, gamma/beta gradients (row-major passes) */
	if (c->pn)
	{
		const float *gs = PN_T(m, m->t_pn_gamma);
		float	   *ggs = G(tr, m->t_pn_gamma),
				   *gbs = G(tr, m->t_pn_beta);
		double	   *dG = tr->pn_a,
				   *dB = tr->pn_b,
				   *mdh = tr->pn_c,
				   *mdhx = tr->pn_d;
		float	   *Gm = tr->pn_g;

		for (s = 0; s < tr->nseg; s++)
		{
			Seg		   *sg = &tr->segs[s];
			int			d = sg->domain,
						end = sg->start + sg->count;
			const float *gd = PN_T(m, m->t_pn_dgamma) + (size_t) d * n0;
			float	   *ggd = G(tr, m->t_pn_dgamma) + (size_t) d * n0;
			float	   *gbd = G(tr, m->t_pn_dbeta) + (size_t) d * n0;

			for (j = 0; j < n0; j++)
			{
				Gm[j] = gs[j] * gd[j];
				dG[j] = dB[j] = mdh[j] = mdhx[j] = 0;
			}
			for (i = sg->start; i < end; i++)
			{
				const float *g = tr->dxn + (size_t) i * n0,
						   *xh = tr->xhat + (size_t) i * n0;

				for (j = 0; j < n0; j++)
				{
					dG[j] += (double) g[j] * xh[j];
					dB[j] += g[j];
				}
			}
			for (j = 0; j < n0; j++)
			{
				ggs[j] += (float) (dG[j] * gd[j]);
				ggd[j] += (float) (dG[j] * gs[j]);
				gbs[j] += (float) dB[j];
				gbd[j] += (float) dB[j];
				/* with dh = dxn * G: mean(dh) = G mean(dxn), mean(dh xhat) = G mean(dxn xhat) */
				mdh[j] = Gm[j] * dB[j] / sg->count;
				mdhx[j] = Gm[j] * dG[j] / sg->count;
			}
			for (i = sg->start; i < end; i++)
			{
				const float *g = tr->dxn + (size_t) i * n0,
						   *xh = tr->xhat + (size_t) i * n0,
						   *ir = tr->istd + (size_t) i * n0;
				float	   *dxr = tr->dx + (size_t) i * n0;

				if (sg->batch_stats)
					for (j = 0; j < n0; j++)
						dxr[j] = (float) (ir[j] * (g[j] * Gm[j] - mdh[j] - xh[j] * mdhx[j]));
				else
					for (j = 0; j < n0; j++)
						dxr[j] = ir[j] * g[j] * Gm[j];
			}
		}
	}
	else
		memcpy(tr->dx, tr->dxn, sizeof(float) * nn);

	/* EPNet backward: x = ge ⊙ x0, the gate sees sg(x0) */
	if (c->epnet)
	{
		float	   *dgl = tr->dxn;		/* reuse: [n, n0] */

		for (i = 0; i < n; i++)
			for (j = 0; j < n0; j++)
			{
				float		x0,
							gv;

				q = (size_t) i * n0 + j;
				x0 = tr->in_e[(size_t) i * ke + k + j];
				gv = tr->ge[q];
				tr->dx0[q] += tr->dx[q] * gv;
				dgl[q] = tr->dx[q] * x0 * gv * (1.0f - gv / gamma);
			}
		mm_tn(n0, he, n, dgl, n0, tr->eh, he, 1.0f, G(tr, m->t_ep_w2), he);
		col_sums(dgl, n, n0, n0, G(tr, m->t_ep_b2));
		mm_nn(n, he, n0, dgl, n0, PN_T(m, m->t_ep_w2), he, 0.0f, tr->dgh, he);
		for (q = 0; q < (size_t) n * he; q++)
			if (tr->eh[q] <= 0)
				tr->dgh[q] = 0;
		mm_tn(he, ke, n, tr->dgh, he, tr->sg_frozen ? tr->sg_in_e : tr->in_e, ke, 1.0f, G(tr, m->t_ep_w1), ke);
		col_sums(tr->dgh, n, he, he, G(tr, m->t_ep_b1));
		mm_nn(n, k, he, tr->dgh, he, PN_T(m, m->t_ep_w1), ke, 1.0f, tr->ddv, k);
	}
	else
		for (q = 0; q < nn; q++)
			tr->dx0[q] += tr->dx[q];

	/* embeddings: scatter-add into the rows used (duplicates summed) */
	for (j = 0; j < c->nfeat; j++)
	{
		x = m->t_emb_feat[j];
		for (i = 0; i < n; i++)
		{
			float	   *gr = G(tr, x) + tr->fslot[(size_t) i * c->nfeat + j] * k;
			const float *src = tr->dx0 + (size_t) i * n0 + j * k;
			int			e;

			for (e = 0; e < k; e++)
				gr[e] += src[e];
		}
		record_rows(tr, x, tr->fslot + j, c->nfeat, &pos);
	}
	for (j = 0; c->ppnet && j < c->npers; j++)
	{
		x = m->t_emb_pers[j];
		for (i = 0; i < n; i++)
			{
				float	   *gr = G(tr, x) + tr->pslot[(size_t) i * c->npers + j] * k;
				const float *src = tr->dpv + (size_t) i * c->pk + j * k;
				int			e;

				for (e = 0; e < k; e++)
					gr[e] += src[e];
			}
		record_rows(tr, x, tr->pslot + j, c->npers, &pos);
	}
	if (c->epnet || c->aux)
	{
		x = m->t_emb_dom;
		for (i = 0; i < n; i++)
		{
			float	   *gr = G(tr, x) + (size_t) tr->dom[i] * k;
			int			e;

			for (e = 0; e < k; e++)
				gr[e] += tr->ddv[(size_t) i * k + e];
		}
		/* domain rows as int64 for record_rows */
		{
			int64_t    *tmp = tr->touched_rows + pos;	/* room: n entries */

			for (i = 0; i < n; i++)
				tmp[i] = tr->dom[i];
			record_rows(tr, x, tmp, 1, &pos);
		}
	}

	/* L2 on the shared weight matrices */
	if (c->l2 > 0)
		for (x = 0; x < m->ntensors; x++)
			if (m->tensors[x].kind == PNT_WEIGHT)
			{
				const float *w = PN_T(m, x);
				float	   *gw = G(tr, x);
				for (q = 0; q < (size_t) m->tensors[x].numel; q++)
					gw[q] += 2.0f * c->l2 * w[q];
			}
}

/*
 * Loss and gradients of one batch without an optimiser step (the
 * gradients of the previous call are cleared first).  update_stats moves
 * the PN running statistics.
 */
int
pn_train_grad(PnTrainer *tr, const PnBatch *b, bool update_stats, double *loss, PnError *err)
{
	int			rc;

	if (tr->grad == NULL)
		return pn_seterr(err, PN_EINPUT, "this trainer was made for evaluation only");
	zero_grads(tr);
	if ((rc = prepare(tr, b, err)) != PN_OK)
		return rc;
	if (!b->labels)
		return pn_seterr(err, PN_EINPUT, "training needs labels");
	if ((rc = forward(tr, true, update_stats, err)) != PN_OK)
		return rc;
	*loss = loss_and_dlogit(tr);
	backward(tr);
	return PN_OK;
}

/*
 * Adam on dense tensors, SparseAdam on the embedding rows of the last batch;
 * returns the index of a tensor that became non-finite, or -1.
 */
static int
apply(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const float b1 = 0.9f,
				b2 = 0.999f,
				eps = 1e-8f;
	double		bc1,
				bc2;
	float		lr = tr->lr;
	int			x,
				i,
				bad = -1;

	tr->step++;
	bc1 = 1.0 - pow(b1, (double) tr->step);
	bc2 = 1.0 - pow(b2, (double) tr->step);
	for (x = 0; x < m->ntensors; x++)
	{
		PnTensor   *t = &m->tensors[x];
		float	   *p = m->data + t->offset,
				   *g = tr->grad + t->offset,
				   *mm = tr->adam_m + t->offset,
				   *vv = tr->adam_v + t->offset;

		if (!t->trainable)
			continue;
		if (t->kind != PNT_EMBED)
		{
			/* torch.optim.Adam: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) */
			float		step = (float) (lr / bc1);
			float		sbc2 = (float) sqrt(bc2);
			int64_t		q;
			int			nf = 0;

			for (q = 0; q < t->numel; q++)
			{
				mm[q] = b1 * mm[q] + (1 - b1) * g[q];
				vv[q] = b2 * vv[q] + (1 - b2) * g[q] * g[q];
				p[q] -= step * mm[q] / (sqrtf(vv[q]) / sbc2 + eps);
				nf |= !(fabsf(p[q]) <= FLT_MAX) | !(vv[q] <= FLT_MAX);
			}
			if (nf && bad < 0)
				bad = x;
		}
		else
		{
			/* torch.optim.SparseAdam: rows of the batch only, lr*sqrt(bc2)/bc1 * m/(sqrt(v)+eps) */
			float		step = (float) (lr * sqrt(bc2) / bc1);
			int64_t		kk = t->shape[1];

			for (i = 0; i < tr->ntouched[x]; i++)
			{
				int64_t		off = tr->touched_rows[tr->touched[x] + i] * kk,
							e;

				for (e = off; e < off + kk; e++)
				{
					mm[e] = b1 * mm[e] + (1 - b1) * g[e];
					vv[e] = b2 * vv[e] + (1 - b2) * g[e] * g[e];
					p[e] -= step * mm[e] / (sqrtf(vv[e]) + eps);
					if ((!(fabsf(p[e]) <= FLT_MAX) || !(vv[e] <= FLT_MAX)) && bad < 0)
						bad = x;
				}
			}
		}
	}
	return bad;
}

/* Adam on dense tensors, SparseAdam on the embedding rows of the last batch */
void
pn_train_apply(PnTrainer *tr)
{
	(void) apply(tr);
}

/* One optimiser step on a batch; returns the batch loss */
int
pn_train_step(PnTrainer *tr, const PnBatch *b, double *loss, PnError *err)
{
	int			rc = pn_train_grad(tr, b, true, loss, err);

	if (rc != PN_OK)
		return rc;
	if (!isfinite(*loss))
	{
		int			i,
					T = tr->m->cfg.ntasks;

		pn_seterr(err, PN_ENUMERIC, "training diverged at step %lld: the loss is not finite",
				  (long long) tr->step + 1);
		pn_setdetail(err, "Likely cause: unscaled dense values (scale them to about [-10, 10]) "
					 "or a learning rate that is too high.");
		for (i = 0; i < tr->n * T; i++)
			if (!isfinite(tr->logit[i]))
			{
				err->row = tr->order[i / T];
				break;
			}
		return PN_ENUMERIC;
	}
	if ((rc = apply(tr)) >= 0)
	{
		pn_seterr(err, PN_ENUMERIC, "training diverged at step %lld: tensor \"%s\" or the square of its gradient "
				  "is no longer finite in float32", (long long) tr->step, tr->m->tensors[rc].name);
		pn_setdetail(err, "Likely cause: unscaled dense values (scale them to about [-10, 10]) or a learning rate that is too high (lr %g).",
					 (double) tr->lr);
		return PN_ENUMERIC;
	}
	return PN_OK;
}

/*
 * Logits [n, T] of a batch in input order, inference mode (PN running
 * statistics); labels are not needed.
 */
int
pn_train_predict(PnTrainer *tr, const PnBatch *b, float *logits, PnError *err)
{
	int			rc,
				i,
				T = tr->m->cfg.ntasks;
	PnBatch		nb = *b;

	nb.labels = NULL;
	if ((rc = prepare(tr, &nb, err)) != PN_OK)
		return rc;
	if ((rc = forward(tr, false, false, err)) != PN_OK)
		return rc;
	for (i = 0; i < tr->n; i++)
		memcpy(logits + (size_t) tr->order[i] * T, tr->logit + (size_t) i * T, sizeof(float) * T);
	return PN_OK;
}
