/*
 * train.c
 *		Training of STAR-PEPNet: a batched forward pass that keeps its
 *		activations, the hand-written backward pass of every part of
 *		docs/model.md, masked multi-task BCE with L2, and the optimiser (Adam
 *		on dense parameters, lazy Adam with torch.optim.SparseAdam semantics
 *		on embedding rows).
 *
 * Layout (as llm.c's train_gpt2.c): one forward / backward pair of small
 * functions per part of the model, each with its shapes in a comment:
 *
 *		embed_forward		ids -> in_e = [dv ; x0], in_p = [pv ; .]
 *		epnet_forward		in_e -> x				(docs/model.md step 3)
 *		partnorm_forward	x -> xn					(step 4)
 *		ppnet_forward		in_p -> gates gg[l]		(step 6)
 *		tower_forward		xn, gg -> logit			(steps 5, 7), per task
 *		aux_forward			in_e -> logit +=		(step 8)
 *		loss_forward_backward	logit -> loss, dlogit
 *
 * and the backward functions in reverse, ending in embed_backward (the
 * scatter-add into the embedding rows).  forward() and backward() are
 * short chains of these calls.  Each part reads its shapes and tensors
 * from the model's layer plan (plan.c): embed_* its x0 / pv segments, the
 * others its layers (the towers' backward walks them in reverse).  Every
 * activation and activation-gradient buffer is listed, with its size from
 * the plan's size table, in one table (buffer_table), and carved out of
 * one allocation when the trainer is made.
 *
 * Rows of a batch are first sorted by domain (a counting sort), so that
 * each domain's fused STAR matrices W* = W ⊙ W_d are formed once per step
 * and used in one GEMM over that domain's rows.  Every array below is in
 * that sorted order.
 *
 * Shapes: n rows, n0 input width, k emb_dim, pk = P*k persona width, T
 * tasks, h_l tower widths (h_0 = n0, h_(L+1) = 1), he / ha EPNet / aux
 * hidden, ke = k + n0, kp = pk + n0, g_l = T*h_l.  Matrices are row-major,
 * weights [out, in].
 *
 * GEMMs: oneDNN matmul primitives for the fixed-shape ones of a full batch
 * (created once per trainer and shape, one OpenMP thread, never in the
 * postmaster), the towers' per-domain ones in tiles of 64 rows on such
 * primitives, the remainders on OpenBLAS (see gemm()).  The
 * elementwise loops are written on local restrict pointers so that the
 * compiler vectorizes them; none of them changes the order of a sum.
 */
#include "pncore.h"
#include "pndnnl.h"
#include "pninternal.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#define PN_MOMENTUM 0.01f

typedef struct PnPrims PnPrims;

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
	int64_t    *uniq;			/* scratch for unique rows */
	int64_t    *touched;		/* [ntensors] offsets into touched_rows */
	int64_t    *touched_rows;	/* unique embedding rows touched per table */
	int		   *ntouched;
	/* multi-valued fields: the batch's bags (read by the backward) and room for their rows */
	const PnBag *fbag,
			   *pbag;
	int64_t		uniq_cap,
				touched_cap;

	struct PnPrims *prims;		/* oneDNN matmuls of the fixed-shape GEMMs */

	/* all float buffers below live in one block (buffer_table) */
	void	   *block;

	/* activations */
	float	   *labels;			/* [n, T] */
	float	   *in_e;			/* [n, ke] = [dv ; x0] */
	float	   *eh;				/* [n, he] relu(W1 in_e + b1) */
	float	   *ge;				/* [n, n0] EPNet gate */
	float	   *x;				/* [n, n0] EPNet output */
	float	   *xhat;			/* [n, n0] normalised x */
	float	   *istd;			/* [n, n0] 1/sqrt(var + eps) used for the row */
	float	   *xn;				/* [n, n0] PN output */
	float	   *in_p;			/* [n, kp] = [pv ; x] */
	float	   *gh[PN_MAX_LAYERS];	/* [n, g_l] gate hidden */
	float	   *gg[PN_MAX_LAYERS];	/* [n, g_l] gate */
	float	   *r[PN_MAX_TASKS * PN_MAX_LAYERS];	/* [t*L+l] [n, h_l] relu(z) */
	float	   *a[PN_MAX_TASKS * PN_MAX_LAYERS];	/* [t*L+l] [n, h_l] gated output */
	float	   *ah;				/* [n, ha] aux hidden */
	float	   *logit;			/* [n, T] */
	float	   *fw;				/* [hmax, max(n0, hmax)] fused weights of one (task, layer, domain) */
	float	   *fb;				/* [hmax] fused bias */
	float	   *pn_mu,
			   *pn_is,
			   *pn_g,
			   *pn_bt;			/* [n0] PN scratch */
	double	   *pn_acc;			/* [4, n0] PN sums (separate allocation: doubles) */

	/* gradients of activations (not allocated for an evaluator) */
	float	   *dlogit;			/* [n, T] */
	float	   *da;				/* [n, hmax] */
	float	   *dz;				/* [n, hmax] */
	float	   *dprev;			/* [n, max(n0, hmax)] */
	float	   *dxn;			/* [n, n0] */
	float	   *dx;				/* [n, n0] */
	float	   *dx0;			/* [n, n0] */
	float	   *ddv;			/* [n, k] */
	float	   *dpv;			/* [n, pk + 1] */
	float	   *dgg[PN_MAX_LAYERS];	/* [n, g_l] gradient of the gate */
	float	   *dgh;			/* [n, max(g_max, he, ha)] */
	float	   *dwt;			/* [hmax, max(n0, hmax)] gradient of a fused matrix */

	/* gradient checks: stop-gradient inputs held at the values of one forward */
	bool		sg_frozen;
	float	   *sg_in_e;		/* [n, ke]: EPNet gate input, x0 part frozen */
	float	   *sg_x;			/* [n, n0]: PPNet gate input x frozen */
};

#define G(tr, idx) ((tr)->grad + (tr)->m->tensors[idx].offset)

/* ------------------------------------------------------------------ helpers */

/*
 * GEMMs.  The fixed-shape GEMMs of a full batch (EPNet, PPNet, aux: M or K
 * is the batch size, the rest fixed by the config) run on oneDNN matmul
 * primitives (brgemm on AVX-512, about twice OpenBLAS's rate at these
 * shapes: bench/train_gemm_rate.c), created once per trainer and shape on
 * the first full batch (in the backend that trains, never in the
 * postmaster) and kept with the trainer.  The towers' per-domain GEMMs (M =
 * the rows of one domain, a different count every step) run in tiles of
 * ROW_TILE rows on primitives too (gemm_rows); what is left (fewer rows than
 * a tile, the last short batch of an epoch, shapes oneDNN refuses) runs on
 * OpenBLAS.
 * (oneDNN's sgemm, which takes any shape, corrupted the backend's heap now
 * and then inside its own buffer handling; its matmul with a runtime M uses
 * the same code: neither is used.)
 */
#define MAX_PRIMS 64

typedef struct MmPrim
{
	char		ta,
				tb;
	int			M,
				N,
				K,
				lda,
				ldb,
				ldc;
	float		beta;
	bool		ok;				/* created; else OpenBLAS for this shape */
	dnnl_primitive_t prim;
	dnnl_memory_t a,
				b,
				c;
} MmPrim;

struct PnPrims
{
	int			n;
	MmPrim		p[MAX_PRIMS];
};

/* C [M,N] = op(A) op(B) + beta C on OpenBLAS (row-major); K = 0 leaves beta C */
static void
gemm_blas(char ta, char tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
		  float beta, float *C, int ldc)
{
	if (M == 0 || N == 0)
		return;
	if (K == 0)
	{
		int			i,
					j;

		for (i = 0; i < M; i++)
			for (j = 0; j < N; j++)
				C[(size_t) i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t) i * ldc + j];
		return;
	}
	cblas_sgemm(CblasRowMajor, ta == 'N' ? CblasNoTrans : CblasTrans, tb == 'N' ? CblasNoTrans : CblasTrans,
				M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* Create the matmul primitive of p's shape (beta 1: a sum post-op); false if oneDNN has none */
static bool
prim_create(MmPrim *p)
{
	dnnl_memory_desc_t amd,
				bmd,
				cmd;
	dnnl_matmul_desc_t md;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	bool		ok = false;

	if (pn_dnnl_init(NULL) != PN_OK)
		return false;
	dnnl_memory_desc_init_by_strides(&amd, 2, (dnnl_dims_t) {p->M, p->K}, dnnl_f32,
									 p->ta == 'N' ? (dnnl_dims_t) {p->lda, 1} : (dnnl_dims_t) {1, p->lda});
	dnnl_memory_desc_init_by_strides(&bmd, 2, (dnnl_dims_t) {p->K, p->N}, dnnl_f32,
									 p->tb == 'N' ? (dnnl_dims_t) {p->ldb, 1} : (dnnl_dims_t) {1, p->ldb});
	dnnl_memory_desc_init_by_strides(&cmd, 2, (dnnl_dims_t) {p->M, p->N}, dnnl_f32, (dnnl_dims_t) {p->ldc, 1});
	if (dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd) != dnnl_success ||
		dnnl_primitive_attr_create(&attr) != dnnl_success ||
		dnnl_post_ops_create(&po) != dnnl_success)
		goto done;
	if (p->beta != 0.0f && dnnl_post_ops_append_sum(po, p->beta) != dnnl_success)
		goto done;
	if (dnnl_primitive_attr_set_post_ops(attr, po) != dnnl_success ||
		dnnl_primitive_desc_create(&pd, &md, attr, pn_dnnl_engine, NULL) != dnnl_success)
		goto done;
	/* brgemm kernels only (pn_dnnl_is_brgemm): OpenBLAS otherwise */
	{
		const char *impl;

		if (!pn_dnnl_is_brgemm(pd, &impl))
			goto done;
	}
	if (dnnl_primitive_create(&p->prim, pd) != dnnl_success)
	{
		p->prim = NULL;
		goto done;
	}
	if (dnnl_memory_create(&p->a, &amd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&p->b, &bmd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&p->c, &cmd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success)
		goto done;
	ok = true;
done:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return ok;
}

/* Destroy a trainer's primitives */
static void
prims_free(PnPrims *ps)
{
	int			i;

	if (!ps)
		return;
	for (i = 0; i < ps->n; i++)
	{
		MmPrim	   *p = &ps->p[i];

		if (p->prim)
			dnnl_primitive_destroy(p->prim);
		if (p->a)
			dnnl_memory_destroy(p->a);
		if (p->b)
			dnnl_memory_destroy(p->b);
		if (p->c)
			dnnl_memory_destroy(p->c);
	}
	pn_free(ps);
}

/*
 * C [M,N] = op(A) op(B) + beta C (beta 0 or 1).  ps: the trainer's primitives
 * for a fixed-shape GEMM of a full batch, NULL for OpenBLAS.
 */
static void
gemm(PnPrims *ps, char ta, char tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
	 float beta, float *C, int ldc)
{
	MmPrim	   *p = NULL;
	int			i;

	if (ps && M > 0 && N > 0 && K > 0)
	{
		for (i = 0; i < ps->n; i++)
		{
			MmPrim	   *q = &ps->p[i];

			if (q->ta == ta && q->tb == tb && q->M == M && q->N == N && q->K == K &&
				q->lda == lda && q->ldb == ldb && q->ldc == ldc && q->beta == beta)
			{
				p = q;
				break;
			}
		}
		if (!p && ps->n < MAX_PRIMS)
		{
			p = &ps->p[ps->n++];
			memset(p, 0, sizeof(*p));
			p->ta = ta;
			p->tb = tb;
			p->M = M;
			p->N = N;
			p->K = K;
			p->lda = lda;
			p->ldb = ldb;
			p->ldc = ldc;
			p->beta = beta;
			p->ok = prim_create(p);
		}
	}
	if (p && p->ok)
	{
		dnnl_exec_arg_t args[3];

		dnnl_memory_set_data_handle(p->a, (void *) A);
		dnnl_memory_set_data_handle(p->b, (void *) B);
		dnnl_memory_set_data_handle(p->c, C);
		args[0] = (dnnl_exec_arg_t) {DNNL_ARG_SRC, p->a};
		args[1] = (dnnl_exec_arg_t) {DNNL_ARG_WEIGHTS, p->b};
		args[2] = (dnnl_exec_arg_t) {DNNL_ARG_DST, p->c};
		if (dnnl_primitive_execute(p->prim, pn_dnnl_stream, 3, args) == dnnl_success &&
			dnnl_stream_wait(pn_dnnl_stream) == dnnl_success)
			return;
		p->ok = false;			/* not again; this call on OpenBLAS (C is untouched on failure) */
	}
	gemm_blas(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* the primitives for this batch: a full batch's fixed-shape GEMMs only */
#define FIXED(tr) ((tr)->n == (tr)->bmax ? (tr)->prims : NULL)

/*
 * The towers' per-domain GEMMs, whose row count changes every step, on
 * primitives of a fixed shape: rows in tiles of ROW_TILE (for op(A) = A^T,
 * the K rows, accumulating), the remainder of fewer rows on OpenBLAS.
 */
#define ROW_TILE 64

static void
gemm_rows(PnTrainer *tr, char ta, char tb, int M, int N, int K, const float *A, int lda,
		  const float *B, int ldb, float beta, float *C, int ldc)
{
	int			r = 0;

	if (ta == 'N')
	{
		for (; r + ROW_TILE <= M; r += ROW_TILE)
			gemm(tr->prims, 'N', tb, ROW_TILE, N, K, A + (size_t) r * lda, lda, B, ldb, beta,
				 C + (size_t) r * ldc, ldc);
		if (r < M)
			gemm_blas('N', tb, M - r, N, K, A + (size_t) r * lda, lda, B, ldb, beta,
					  C + (size_t) r * ldc, ldc);
	}
	else
	{
		/* A [K, M] and B [K, N] (tb 'N') share their rows: C = sum over row tiles */
		for (; r + ROW_TILE <= K; r += ROW_TILE)
		{
			gemm(tr->prims, 'T', tb, M, N, ROW_TILE, A + (size_t) r * lda, lda, B + (size_t) r * ldb, ldb,
				 beta, C, ldc);
			beta = 1.0f;
		}
		if (r < K || K == 0)
			gemm_blas('T', tb, M, N, K - r, A + (size_t) r * lda, lda, B + (size_t) r * ldb, ldb,
					  beta, C, ldc);
	}
}

/* C [M,N] = A [M,K] B [N,K]^T + beta C (forward: activations times weights) */
static inline void
mm_nt(PnPrims *ps, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	gemm(ps, 'N', 'T', M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* C [M,N] = A [M,K] B [K,N] + beta C (input gradients: dA = dZ W) */
static inline void
mm_nn(PnPrims *ps, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	gemm(ps, 'N', 'N', M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* C [M,N] = A [K,M]^T B [K,N] + beta C (weight gradients: dW = dZ^T A) */
static inline void
mm_tn(PnPrims *ps, int M, int N, int K, const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	gemm(ps, 'T', 'N', M, N, K, A, lda, B, ldb, beta, C, ldc);
}

/* db [cols] += column sums of dY [n, cols] (row stride ld), rows in order */
static void
col_sums(const float *restrict dY, int n, int cols, int ld, float *restrict db)
{
	int			i,
				j;

	for (i = 0; i < n; i++)
	{
		const float *restrict row = dY + (size_t) i * ld;

		for (j = 0; j < cols; j++)
			db[j] += row[j];
	}
}

/* dY [cnt] = 0 where the relu's output Y was not positive */
static void
relu_backward(float *restrict dY, const float *restrict Y, size_t cnt)
{
	size_t		q;

	for (q = 0; q < cnt; q++)
		dY[q] = Y[q] <= 0 ? 0.0f : dY[q];
}

/*
 * GateNU's backward through gamma * sigmoid: dG [cnt] *= g (1 - g / gamma)
 * where g = gamma * sigmoid(.) is the gate's output.
 */
static void
gate_backward(float *restrict dG, const float *restrict g, size_t cnt, float gamma)
{
	size_t		q;

	for (q = 0; q < cnt; q++)
		dG[q] *= g[q] * (1.0f - g[q] / gamma);
}

/* ------------------------------------------------------------ buffer table */

/* one float buffer of the trainer: where its pointer lives and its size in floats */
typedef struct BufSpec
{
	float	  **p;
	size_t		n;
} BufSpec;

#define BUF(ptr, count) do { spec[nb].p = &(ptr); spec[nb].n = (count); nb++; } while (0)

/*
 * Every activation and activation-gradient buffer of a trainer for batches
 * of up to bmax rows, with its size; returns the number of entries (at most
 * 40 + 5 PN_MAX_LAYERS + 2 PN_MAX_TASKS PN_MAX_LAYERS).  An evaluator (no
 * gradients) gets no gradient buffers.
 */
static int
buffer_table(PnTrainer *tr, bool grads, BufSpec *spec)
{
	const PnModel *m = tr->m;
	const PnPlan *p = m->plan;
	size_t		n = tr->bmax;
	int			k = p->width[PN_ACT_DV],
				n0 = p->width[PN_ACT_X0],
				T = p->width[PN_ACT_LOGIT],
				L = m->cfg.nhidden,
				hmax = p->hmax,
				wmax = n0 > hmax ? n0 : hmax,
				wide = p->wide,
				nb = 0,
				l,
				t;

	/* the widths of the plan's size table and layers */
	if (p->width[PN_ACT_EH] > wide)
		wide = p->width[PN_ACT_EH];
	if (p->width[PN_ACT_AH] > wide)
		wide = p->width[PN_ACT_AH];

	BUF(tr->labels, n * T);
	BUF(tr->in_e, n * p->width[PN_ACT_IN_E]);
	BUF(tr->eh, n * p->width[PN_ACT_EH]);
	BUF(tr->ge, p->width[PN_ACT_EH] ? n * n0 : 0);
	BUF(tr->x, n * p->width[PN_ACT_X]);
	BUF(tr->xhat, n * n0);
	BUF(tr->istd, n * n0);
	BUF(tr->xn, n * p->width[PN_ACT_XN]);
	BUF(tr->in_p, n * p->width[PN_ACT_IN_P]);
	for (l = 0; l < L; l++)
	{
		int			g1 = pn_plan_find(p, PN_PART_PPNET, 1, -1, l),
					g2 = pn_plan_find(p, PN_PART_PPNET, 2, -1, l);

		BUF(tr->gh[l], g1 >= 0 ? n * p->layers[g1].nout : 0);
		BUF(tr->gg[l], g2 >= 0 ? n * p->layers[g2].nout : 0);
		BUF(tr->dgg[l], g2 >= 0 && grads ? n * p->layers[g2].nout : 0);
		for (t = 0; t < T; t++)
		{
			size_t		h = p->layers[pn_plan_find(p, PN_PART_TOWER, 0, t, l + 1)].nout;

			BUF(tr->r[t * L + l], n * h);
			BUF(tr->a[t * L + l], n * h);
		}
	}
	BUF(tr->ah, n * p->width[PN_ACT_AH]);
	BUF(tr->logit, n * T);
	BUF(tr->fw, (size_t) hmax * wmax);
	BUF(tr->fb, hmax);
	BUF(tr->pn_mu, n0);
	BUF(tr->pn_is, n0);
	BUF(tr->pn_g, n0);
	BUF(tr->pn_bt, n0);
	if (grads)
	{
		BUF(tr->dlogit, n * T);
		BUF(tr->da, n * hmax);
		BUF(tr->dz, n * hmax);
		BUF(tr->dprev, n * wmax);
		BUF(tr->dxn, n * n0);
		BUF(tr->dx, n * n0);
		BUF(tr->dx0, n * n0);
		BUF(tr->ddv, n * k);
		BUF(tr->dpv, n * (p->width[PN_ACT_PV] + 1));
		BUF(tr->dgh, n * wide);
		BUF(tr->dwt, (size_t) hmax * wmax);
	}
	return nb;
}

#undef BUF

/* Release a trainer (not its model) */
void
pn_trainer_free(PnTrainer *tr)
{
	if (tr == NULL)
		return;
	pn_free(tr->grad);
	pn_free(tr->adam_m);
	pn_free(tr->adam_v);
	pn_free(tr->order);
	pn_free(tr->dcount);
	pn_free(tr->segs);
	pn_free(tr->fslot);
	pn_free(tr->pslot);
	pn_free(tr->dom);
	pn_free(tr->uniq);
	pn_free(tr->touched);
	pn_free(tr->touched_rows);
	pn_free(tr->ntouched);
	pn_free(tr->block);
	pn_free(tr->pn_acc);
	prims_free(tr->prims);
	pn_free(tr->sg_in_e);
	pn_free(tr->sg_x);
	pn_free(tr);
}

/* Allocate n floats (at least one), zeroed */
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
	size_t		n = bmax,
				total = 0;
	BufSpec		spec[40 + 5 * PN_MAX_LAYERS + 2 * PN_MAX_TASKS * PN_MAX_LAYERS];
	int			nb,
				i;
	float	   *base;

	*out = NULL;
	pn_dnnl_pin_threads();
	tr = pn_alloc0(sizeof(PnTrainer));
	if (!tr)
		return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer");
	tr->m = m;
	tr->bmax = bmax;
	tr->lr = lr;

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
	tr->uniq = pn_alloc(sizeof(int64_t) * n);
	tr->uniq_cap = n;
	tr->touched = pn_alloc(sizeof(int64_t) * (m->ntensors + 1));
	tr->touched_rows = pn_alloc(sizeof(int64_t) * n * (c->nfeat + c->npers + 1));
	tr->touched_cap = (int64_t) n * (c->nfeat + c->npers + 1);
	tr->ntouched = pn_alloc0(sizeof(int) * (m->ntensors + 1));
	tr->pn_acc = pn_alloc(sizeof(double) * 4 * (c->n0 + 1));
	tr->prims = pn_alloc0(sizeof(PnPrims));
	if (!tr->order || !tr->dcount || !tr->segs || !tr->fslot || !tr->pslot || !tr->dom ||
		!tr->uniq || !tr->touched || !tr->touched_rows || !tr->ntouched || !tr->pn_acc || !tr->prims)
		ok = false;

	/* the buffers of the table, each 64-byte aligned, in one zeroed block */
	nb = buffer_table(tr, lr > 0, spec);
	for (i = 0; i < nb; i++)
		total += (spec[i].n + 15) & ~(size_t) 15;
	tr->block = pn_alloc0(sizeof(float) * total + 64);
	if (!tr->block || !ok)
	{
		pn_trainer_free(tr);
		return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer (batch of %d rows)", bmax);
	}
	base = PN_ALIGN64(tr->block);
	for (i = 0; i < nb; i++)
	{
		*spec[i].p = base;
		base += (spec[i].n + 15) & ~(size_t) 15;
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

/* ------------------------------------------------ shared by the parts */

/* Fused W* = W ⊙ W_d[d] and b* = b + b_d[d] of a tower or output layer of the plan into tr->fw, tr->fb */
static void
fuse(PnTrainer *tr, const PnLayer *ly, int d)
{
	PnModel    *m = tr->m;
	int			h = ly->nout,
				prev = ly->nin;
	const float *W = PN_T(m, ly->w);
	const float *B = PN_T(m, ly->b);
	size_t		i;

	if (ly->dw >= 0)
	{
		const float *Wd = PN_T(m, ly->dw) + (size_t) d * h * prev;
		const float *Bd = PN_T(m, ly->db) + (size_t) d * h;

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

	if (j >= fk + c->dense)
		snprintf(buf, len, "domain embedding (domain_input)");
	else if (j >= fk && c->dfield)
		snprintf(buf, len, "dense field \"%s\"", c->dfield[j - fk].name);
	else if (j >= fk)
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

/* Zero the gradients of dense tensors and of the embedding rows last touched */
static void
zero_grads(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	int			x,
				i;

	for (x = 0; x < PN_NFLOAT(m); x++)
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

/* Record the unique rows of multi-valued field f's table x used by the batch (its bag, empty rows) */
static void
record_bag_rows(PnTrainer *tr, int x, const PnField *f, const PnBag *bag, int64_t *pos)
{
	int64_t		nu = 0,
				u = 0,
				i,
				j;

	for (i = 0; i < tr->n; i++)
	{
		int			o = tr->order[i];

		if (pn_bag_scale(f, bag, o) == 0.0f)
			tr->uniq[nu++] = PN_MISSING_ROW(f);
		else
			for (j = bag->off[o]; j < bag->off[o + 1]; j++)
				tr->uniq[nu++] = bag->rows[j];
	}
	qsort(tr->uniq, nu, sizeof(int64_t), cmp_i64);
	tr->touched[x] = *pos;
	for (i = 0; i < nu; i++)
		if (i == 0 || tr->uniq[i] != tr->uniq[i - 1])
			tr->touched_rows[*pos + u++] = tr->uniq[i];
	tr->ntouched[x] = (int) u;
	*pos += u;
}

/*
 * Room for the rows of the batch's multi-valued fields in uniq and
 * touched_rows (the rows recorded so far are kept: pn_train_predict runs
 * between a step's backward and the next step's zero_grads).
 */
static int
bag_reserve(PnTrainer *tr, const PnBatch *b, PnError *err)
{
	const PnConfig *c = &tr->m->cfg;
	int64_t		most = 0,
				total = 0;
	int			j,
				i;

	for (j = 0; j < c->nfeat + c->npers; j++)
	{
		const PnField *f = j < c->nfeat ? &c->feat[j] : &c->pers[j - c->nfeat];
		const PnBag *bag = j < c->nfeat ? (b->fbag ? &b->fbag[j] : NULL) : (b->pbag ? &b->pbag[j - c->nfeat] : NULL);
		int64_t		e = 0;

		if (f->pooling == PN_POOL_NONE)
			continue;
		if (bag == NULL)
			return pn_seterr(err, PN_EINPUT, "%s field \"%s\" is multi-valued, but the batch has no bags",
							 j < c->nfeat ? "feature" : "persona", f->name);
		for (i = 0; i < b->n; i++)
		{
			if (bag->off[i + 1] < bag->off[i] || bag->off[i + 1] - bag->off[i] > PN_MAX_BAG)
			{
				pn_seterr(err, PN_EINPUT, "the bag of field \"%s\" has %lld ids, more than %d", f->name,
						  (long long) (bag->off[i + 1] - bag->off[i]), PN_MAX_BAG);
				err->row = i;
				return PN_EINPUT;
			}
			e += bag->off[i + 1] - bag->off[i];
		}
		total += e;
		most = e > most ? e : most;
	}
	if (most + tr->n > tr->uniq_cap)
	{
		int64_t    *u = pn_alloc(sizeof(int64_t) * (size_t) (most + tr->n));

		if (u == NULL)
			return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer");
		pn_free(tr->uniq);
		tr->uniq = u;
		tr->uniq_cap = most + tr->n;
	}
	if ((int64_t) tr->n * (c->nfeat + c->npers + 1) + total > tr->touched_cap)
	{
		int64_t		cap = (int64_t) tr->n * (c->nfeat + c->npers + 1) + total;
		int64_t    *t = pn_alloc(sizeof(int64_t) * (size_t) cap);

		if (t == NULL)
			return pn_seterr(err, PN_ENOMEM, "out of memory for the trainer");
		memcpy(t, tr->touched_rows, sizeof(int64_t) * (size_t) tr->touched_cap);
		pn_free(tr->touched_rows);
		tr->touched_rows = t;
		tr->touched_cap = cap;
	}
	return PN_OK;
}

/* ------------------------------------------------------------- embeddings */

/*
 * Sort the batch's n rows by domain (stable counting sort) into tr->order
 * and the segments of equal domain; fails on an out-of-range domain.
 */
static int
sort_batch(PnTrainer *tr, const PnBatch *b, PnError *err)
{
	int			n = b->n,
				D = tr->m->cfg.domains,
				i,
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
	return PN_OK;
}

/*
 * Embedding lookups and input checks, in sorted order (docs/model.md step 1):
 *   in_e [n, ke] = [dv ; x0],  x0 = [E_f0[slot] .. E_f(F-1)[slot], dense (, dv with domain_input)]
 *   in_p [n, kp] first pk columns = pv = [E_p0[slot] .. E_p(P-1)[slot]]
 *   labels [n, T]; fslot [n, F], pslot [n, P], dom [n] for the backward.
 * Fails on out-of-range ids, non-finite dense values, labels outside [0, 1].
 */
static int
embed_forward(PnTrainer *tr, const PnBatch *b, PnError *err)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	const PnPlan *p = m->plan;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				F = c->nfeat,
				P = c->npers,
				T = c->ntasks,
				i,
				j,
				rc;

	tr->fbag = b->fbag;
	tr->pbag = b->pbag;
	if (c->bags && (rc = bag_reserve(tr, b, err)) != PN_OK)
		return rc;
	for (i = 0; i < n; i++)
	{
		int			o = tr->order[i];
		float	   *ie = tr->in_e + (size_t) i * (k + n0);
		float	   *ip = tr->in_p + (size_t) i * (c->pk + n0);

		tr->dom[i] = b->domain[o];
		memcpy(ie, PN_T(m, m->t_emb_dom) + (size_t) tr->dom[i] * k, sizeof(float) * k);
		/* x0 = in_e[:, k:] by the plan's input segments */
		for (j = 0; j < p->nx0seg; j++)
		{
			const PnSeg *sg = &p->x0seg[j];
			float	   *x0 = ie + k + sg->off;
			int64_t		s;
			int			e;

			switch (sg->kind)
			{
				case PN_SEG_ID:
					s = pn_slot_checked(&c->feat[sg->field], sg->field, b->features[(size_t) o * F + sg->field],
										"feature", err);
					if (s < 0)
					{
						err->row = o;
						return PN_EINPUT;
					}
					tr->fslot[(size_t) i * F + sg->field] = s;
					memcpy(x0, PN_T(m, sg->table) + s * k, sizeof(float) * k);
					break;
				case PN_SEG_BAG:
					/* a multi-valued field: its bag pooled (bag.c); the backward scatters by the bag */
					if (pn_bag_pool(&c->feat[sg->field], sg->field, "feature", PN_T(m, sg->table), k,
									&b->fbag[sg->field], o, x0, err) != PN_OK)
					{
						err->row = o;
						return PN_EINPUT;
					}
					tr->fslot[(size_t) i * F + sg->field] = -1;
					break;
				case PN_SEG_DENSE:
					for (e = 0; e < sg->width; e++)
					{
						float		v = b->dense[(size_t) o * sg->width + e];

						if (!isfinite(v))
						{
							if (c->dfield)
								pn_seterr(err, PN_EINPUT, "dense field \"%s\" is not finite", c->dfield[e].name);
							else
								pn_seterr(err, PN_EINPUT, "dense value %d is not finite", e + 1);
							err->row = o;
							return PN_EINPUT;
						}
						x0[e] = v;
					}
					break;
				case PN_SEG_DOMAIN:
					/* domain_input: dv, also in_e's first k columns */
					memcpy(x0, ie, sizeof(float) * k);
					break;
			}
		}
		for (j = 0; j < p->npvseg; j++)
		{
			const PnSeg *sg = &p->pvseg[j];
			int64_t		s;

			if (sg->kind == PN_SEG_BAG)
			{
				if (pn_bag_pool(&c->pers[sg->field], sg->field, "persona", PN_T(m, sg->table), k,
								&b->pbag[sg->field], o, ip + sg->off, err) != PN_OK)
				{
					err->row = o;
					return PN_EINPUT;
				}
				tr->pslot[(size_t) i * P + sg->field] = -1;
				continue;
			}
			s = pn_slot_checked(&c->pers[sg->field], sg->field, b->persona[(size_t) o * P + sg->field], "persona", err);
			if (s < 0)
			{
				err->row = o;
				return PN_EINPUT;
			}
			tr->pslot[(size_t) i * P + sg->field] = s;
			memcpy(ip + sg->off, PN_T(m, sg->table) + s * k, sizeof(float) * k);
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

/*
 * Scatter-add of the input gradients into the embedding rows used (duplicates
 * summed), recording the rows touched for SparseAdam and zero_grads:
 *   dx0 [n, n0] (first F*k columns) -> emb.feature.j
 *   dpv [n, pk] -> emb.persona.j (PPNet only)
 *   ddv [n, k] -> emb.domain (EPNet or aux only), and with domain_input
 *   dx0's last k columns -> emb.domain
 */
/*
 * The backward of a multi-valued field's pooling: row i's gradient d [k]
 * (src + i * ld) goes to each id's row scaled by its weight times the
 * pooling's factor (w_j for sum, w_j / sum w for mean), or whole to the
 * empty row; the rows used are recorded.
 */
static void
bag_backward(PnTrainer *tr, int x, const PnField *f, const PnBag *bag, const float *src, int ld, int64_t *pos)
{
	int			k = tr->m->cfg.emb_dim,
				i,
				e;
	float	   *g = G(tr, x);

	for (i = 0; i < tr->n; i++)
	{
		int			o = tr->order[i];
		const float *restrict d = src + (size_t) i * ld;
		float		s = pn_bag_scale(f, bag, o);
		int64_t		j;

		if (s == 0.0f)
		{
			float	   *restrict gr = g + PN_MISSING_ROW(f) * k;

			for (e = 0; e < k; e++)
				gr[e] += d[e];
			continue;
		}
		for (j = bag->off[o]; j < bag->off[o + 1]; j++)
		{
			float	   *restrict gr = g + bag->rows[j] * k;
			float		w = (bag->weights ? bag->weights[j] : 1.0f) * s;

			for (e = 0; e < k; e++)
				gr[e] += w * d[e];
		}
	}
	record_bag_rows(tr, x, f, bag, pos);
}

static void
embed_backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	const PnPlan *p = m->plan;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				i,
				j,
				x;
	int64_t		pos = 0;

	/* dx0 [n, n0] by the plan's input segments into their fields' rows */
	for (j = 0; j < p->nx0seg; j++)
	{
		const PnSeg *sg = &p->x0seg[j];
		int			f = sg->field;

		x = sg->table;
		if (sg->kind == PN_SEG_BAG)
		{
			bag_backward(tr, x, &c->feat[f], &tr->fbag[f], tr->dx0 + sg->off, n0, &pos);
			continue;
		}
		if (sg->kind != PN_SEG_ID)
			continue;
		for (i = 0; i < n; i++)
		{
			float	   *restrict gr = G(tr, x) + tr->fslot[(size_t) i * c->nfeat + f] * k;
			const float *restrict src = tr->dx0 + (size_t) i * n0 + sg->off;
			int			e;

			for (e = 0; e < k; e++)
				gr[e] += src[e];
		}
		record_rows(tr, x, tr->fslot + f, c->nfeat, &pos);
	}
	for (j = 0; c->ppnet && j < p->npvseg; j++)
	{
		const PnSeg *sg = &p->pvseg[j];
		int			f = sg->field;

		x = sg->table;
		if (sg->kind == PN_SEG_BAG)
		{
			bag_backward(tr, x, &c->pers[f], &tr->pbag[f], tr->dpv + sg->off, c->pk, &pos);
			continue;
		}
		for (i = 0; i < n; i++)
		{
			float	   *restrict gr = G(tr, x) + tr->pslot[(size_t) i * c->npers + f] * k;
			const float *restrict src = tr->dpv + (size_t) i * c->pk + sg->off;
			int			e;

			for (e = 0; e < k; e++)
				gr[e] += src[e];
		}
		record_rows(tr, x, tr->pslot + f, c->npers, &pos);
	}
	if (c->epnet || c->aux || c->domain_input)
	{
		int64_t    *tmp = tr->touched_rows + pos;	/* room: n entries */

		x = m->t_emb_dom;
		for (i = 0; i < n; i++)
		{
			float	   *restrict gr = G(tr, x) + (size_t) tr->dom[i] * k;
			const float *restrict src = tr->ddv + (size_t) i * k;
			int			e;

			for (e = 0; e < k; e++)
				gr[e] += src[e];
		}
		/* domain_input: the gradient of x0's dv segment (its last) */
		for (i = 0; c->domain_input && i < n; i++)
		{
			float	   *restrict gr = G(tr, x) + (size_t) tr->dom[i] * k;
			const float *restrict src = tr->dx0 + (size_t) i * n0 + p->x0seg[p->nx0seg - 1].off;
			int			e;

			for (e = 0; e < k; e++)
				gr[e] += src[e];
		}
		/* domain rows as int64 for record_rows */
		for (i = 0; i < n; i++)
			tmp[i] = tr->dom[i];
		record_rows(tr, x, tmp, 1, &pos);
	}
}

/* ------------------------------------------------------------------ EPNet */

/*
 * EPNet (step 3): x = GateNU_e([dv ; sg(x0)]) ⊙ x0
 *   eh [n, he] = relu(in_e [n, ke] W1^T [ke, he] + b1)
 *   ge [n, n0] = gamma * sigmoid(eh W2^T [he, n0] + b2)
 *   x  [n, n0] = ge ⊙ x0, x0 = in_e[:, k:]
 * Without EPNet, x = x0.
 */
static void
epnet_forward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				ke = m->plan->width[PN_ACT_IN_E],
				he,
				i,
				j;
	const float *gin = tr->in_e;
	const PnLayer *ep1,
			   *ep2;

	if (!c->epnet)
	{
		for (i = 0; i < n; i++)
			memcpy(tr->x + (size_t) i * n0, tr->in_e + (size_t) i * ke + k, sizeof(float) * n0);
		return;
	}
	/* the plan's EPNet layers: [dv ; x0] -> eh, eh -> gate */
	ep1 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_EPNET, 1, -1, 0));
	ep2 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_EPNET, 2, -1, 0));
	he = ep1->nout;
	if (tr->sg_frozen)
	{
		/* gradient checks: live dv, frozen x0 */
		for (i = 0; i < n; i++)
			memcpy(tr->sg_in_e + (size_t) i * ke, tr->in_e + (size_t) i * ke, sizeof(float) * k);
		gin = tr->sg_in_e;
	}
	pn_fill_rows(tr->eh, n, he, PN_T(m, ep1->b));
	mm_nt(FIXED(tr), n, he, ep1->ldw, gin, ke, PN_T(m, ep1->w), ep1->ldw, 1.0f, tr->eh, he);
	pn_relu(tr->eh, (size_t) n * he);
	pn_fill_rows(tr->ge, n, ep2->nout, PN_T(m, ep2->b));
	mm_nt(FIXED(tr), n, ep2->nout, ep2->nin, tr->eh, he, PN_T(m, ep2->w), ep2->ldw, 1.0f, tr->ge, n0);
	pn_sigmoid_scale(tr->ge, (size_t) n * n0, c->gamma);
	for (i = 0; i < n; i++)
	{
		const float *restrict g = tr->ge + (size_t) i * n0,
				   *restrict x0 = tr->in_e + (size_t) i * ke + k;
		float	   *restrict xr = tr->x + (size_t) i * n0;

		for (j = 0; j < n0; j++)
			xr[j] = g[j] * x0[j];
	}
}

/*
 * EPNet backward: dx [n, n0] -> dx0 [n, n0] (+=, the x0 ⊙ path), the gate's
 * parameters, ddv [n, k] (+=); the gate sees sg(x0), so no dx0 through it.
 *   dgl [n, n0]  = dx ⊙ x0 ⊙ ge (1 - ge / gamma)		(gradient at the gate's logit)
 *   dW2 [n0, he] += dgl^T eh, db2 += colsum(dgl)
 *   dgh [n, he]  = (dgl W2) ⊙ [eh > 0]
 *   dW1 [he, ke] += dgh^T in_e, db1 += colsum(dgh), ddv += dgh W1[:, :k]
 * Without EPNet, dx0 += dx.
 */
static void
epnet_backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				he,
				ke,
				i,
				j;
	float		gamma = c->gamma;
	float	   *dgl = tr->dxn;	/* reuse: [n, n0], dxn is spent */
	const PnLayer *ep1,
			   *ep2;

	if (!c->epnet)
	{
		size_t		q,
					nn = (size_t) n * n0;
		float	   *restrict d0 = tr->dx0;
		const float *restrict dx = tr->dx;

		for (q = 0; q < nn; q++)
			d0[q] += dx[q];
		return;
	}
	/* the plan's EPNet layers, in reverse */
	ep2 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_EPNET, 2, -1, 0));
	ep1 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_EPNET, 1, -1, 0));
	he = ep2->nin;
	ke = ep1->ldw;
	for (i = 0; i < n; i++)
	{
		const float *restrict x0 = tr->in_e + (size_t) i * ke + k,
				   *restrict g = tr->ge + (size_t) i * n0,
				   *restrict dx = tr->dx + (size_t) i * n0;
		float	   *restrict d0 = tr->dx0 + (size_t) i * n0,
				   *restrict dl = dgl + (size_t) i * n0;

		for (j = 0; j < n0; j++)
		{
			d0[j] += dx[j] * g[j];
			dl[j] = dx[j] * x0[j] * g[j] * (1.0f - g[j] / gamma);
		}
	}
	mm_tn(FIXED(tr), n0, he, n, dgl, n0, tr->eh, he, 1.0f, G(tr, ep2->w), he);
	col_sums(dgl, n, n0, n0, G(tr, ep2->b));
	mm_nn(FIXED(tr), n, he, n0, dgl, n0, PN_T(m, ep2->w), he, 0.0f, tr->dgh, he);
	relu_backward(tr->dgh, tr->eh, (size_t) n * he);
	mm_tn(FIXED(tr), he, ke, n, tr->dgh, he, tr->sg_frozen ? tr->sg_in_e : tr->in_e, ke, 1.0f, G(tr, ep1->w), ke);
	col_sums(tr->dgh, n, he, he, G(tr, ep1->b));
	mm_nn(FIXED(tr), n, ep1->npre, he, tr->dgh, he, PN_T(m, ep1->w), ke, 1.0f, tr->ddv, k);
}

/* ------------------------------------------------ Partitioned Normalization */

/*
 * PN (step 4), per domain segment of s rows:
 *   xn [s, n0] = (gamma_s ⊙ gamma_d) ⊙ (x - mu) / sqrt(var + eps) + (beta_s + beta_d)
 * train: mu, var [n0] are the segment's batch statistics when it has >= 2
 * rows (batch_stats), else the running ones; update_stats moves the running
 * statistics with docs/model.md 0.2's warm-started average.  Keeps xhat
 * [n, n0] and istd [n, n0] for the backward.  Without PN, xn = x.
 */
static int
partnorm_forward(PnTrainer *tr, bool train, bool update_stats, PnError *err)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n0 = c->n0,
				i,
				j,
				s;
	const float *gs,
			   *bs;
	double	   *sum = tr->pn_acc,
			   *sq = tr->pn_acc + n0;
	float	   *mu = tr->pn_mu,
			   *is = tr->pn_is,
			   *G = tr->pn_g,
			   *B = tr->pn_bt;

	if (!c->pn)
	{
		memcpy(tr->xn, tr->x, sizeof(float) * tr->n * n0);
		return PN_OK;
	}
	gs = PN_T(m, m->t_pn_gamma);
	bs = PN_T(m, m->t_pn_beta);
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
				const float *restrict xr = tr->x + (size_t) i * n0;
				double	   *restrict sm = sum;

				for (j = 0; j < n0; j++)
					sm[j] += xr[j];
			}
			for (j = 0; j < n0; j++)
				sum[j] /= sg->count;
			for (i = sg->start; i < end; i++)
			{
				const float *restrict xr = tr->x + (size_t) i * n0;
				const double *restrict sm = sum;
				double	   *restrict sqr = sq;

				for (j = 0; j < n0; j++)
				{
					double		dd = xr[j] - sm[j];

					sqr[j] += dd * dd;
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
			is[j] = (float) (1.0 / sqrt(var + PN_PARTNORM_EPS));
			G[j] = gs[j] * gd[j];
			B[j] = bs[j] + bd[j];
		}
		if (sg->batch_stats && update_stats)
			*cnt += 1.0f;
		for (i = sg->start; i < end; i++)
		{
			const float *restrict xr = tr->x + (size_t) i * n0,
					   *restrict mur = mu,
					   *restrict isr = is,
					   *restrict Gr = G,
					   *restrict Br = B;
			float	   *restrict xh = tr->xhat + (size_t) i * n0,
					   *restrict xo = tr->xn + (size_t) i * n0,
					   *restrict ir = tr->istd + (size_t) i * n0;

			for (j = 0; j < n0; j++)
			{
				xh[j] = (xr[j] - mur[j]) * isr[j];
				ir[j] = isr[j];
				xo[j] = Gr[j] * xh[j] + Br[j];
			}
		}
	}
	return PN_OK;
}

/*
 * PN backward, per segment: dxn [n, n0] -> dx [n, n0]; gamma/beta gradients
 * (shared and the domain's).  With G = gamma_s ⊙ gamma_d and dh = dxn ⊙ G:
 *   batch statistics: dx = istd (dh - mean(dh) - xhat mean(dh xhat))
 *   running statistics: dx = istd dh
 */
static void
partnorm_backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n0 = c->n0,
				i,
				j,
				s;
	const float *gs;
	float	   *ggs,
			   *gbs;
	double	   *dG = tr->pn_acc,
			   *dB = tr->pn_acc + n0,
			   *mdh = tr->pn_acc + 2 * n0,
			   *mdhx = tr->pn_acc + 3 * n0;
	float	   *Gm = tr->pn_g;

	if (!c->pn)
	{
		memcpy(tr->dx, tr->dxn, sizeof(float) * tr->n * n0);
		return;
	}
	gs = PN_T(m, m->t_pn_gamma);
	ggs = G(tr, m->t_pn_gamma);
	gbs = G(tr, m->t_pn_beta);
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
			const float *restrict g = tr->dxn + (size_t) i * n0,
					   *restrict xh = tr->xhat + (size_t) i * n0;
			double	   *restrict dGr = dG,
					   *restrict dBr = dB;

			for (j = 0; j < n0; j++)
			{
				dGr[j] += (double) g[j] * xh[j];
				dBr[j] += g[j];
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
			const float *restrict g = tr->dxn + (size_t) i * n0,
					   *restrict xh = tr->xhat + (size_t) i * n0,
					   *restrict ir = tr->istd + (size_t) i * n0,
					   *restrict Gr = Gm;
			const double *restrict mh = mdh,
					   *restrict mhx = mdhx;
			float	   *restrict dxr = tr->dx + (size_t) i * n0;

			if (sg->batch_stats)
				for (j = 0; j < n0; j++)
					dxr[j] = (float) (ir[j] * (g[j] * Gr[j] - mh[j] - xh[j] * mhx[j]));
			else
				for (j = 0; j < n0; j++)
					dxr[j] = ir[j] * g[j] * Gr[j];
		}
	}
}

/* ------------------------------------------------------------------ PPNet */

/*
 * PPNet gates (step 6), per layer l:
 *   in_p [n, kp] = [pv ; sg(x)]
 *   gh_l [n, g_l] = relu(in_p W1_l^T [kp, g_l] + b1_l)
 *   gg_l [n, g_l] = gamma * sigmoid(gh_l W2_l^T [g_l, g_l] + b2_l)
 */
static void
ppnet_forward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				n0 = c->n0,
				kp = m->plan->width[PN_ACT_IN_P],
				i,
				li;
	const float *xs = tr->sg_frozen ? tr->sg_x : tr->x;

	if (!c->ppnet)
		return;
	for (i = 0; i < n; i++)
		memcpy(tr->in_p + (size_t) i * kp + m->plan->width[PN_ACT_PV], xs + (size_t) i * n0, sizeof(float) * n0);
	/* the plan's PPNet layers: [pv ; x] -> gh_l (step 1), gh_l -> gg_l (step 2) */
	for (li = 0; li < m->plan->nlayers; li++)
	{
		const PnLayer *ly = PN_LAYER(m, li);
		int			l = ly->layer,
					g = ly->nout;

		if (ly->part != PN_PART_PPNET)
			continue;
		if (ly->step == 1)
		{
			pn_fill_rows(tr->gh[l], n, g, PN_T(m, ly->b));
			mm_nt(FIXED(tr), n, g, ly->ldw, tr->in_p, kp, PN_T(m, ly->w), ly->ldw, 1.0f, tr->gh[l], g);
			pn_relu(tr->gh[l], (size_t) n * g);
		}
		else
		{
			pn_fill_rows(tr->gg[l], n, g, PN_T(m, ly->b));
			mm_nt(FIXED(tr), n, g, ly->nin, tr->gh[l], ly->nin, PN_T(m, ly->w), ly->ldw, 1.0f, tr->gg[l], g);
			pn_sigmoid_scale(tr->gg[l], (size_t) n * g, c->gamma);
		}
	}
}

/*
 * PPNet backward, per layer l: dgg_l [n, g_l] (filled by the towers) ->
 * parameters and dpv [n, pk]; x enters through a stop-gradient.
 *   dgg_l *= gg_l (1 - gg_l / gamma)
 *   dW2 [g, g] += dgg^T gh, db2 += colsum(dgg); dgh = (dgg W2) ⊙ [gh > 0]
 *   dW1 [g, kp] += dgh^T in_p, db1 += colsum(dgh); dpv += dgh W1[:, :pk]
 */
static void
ppnet_backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				kp = m->plan->width[PN_ACT_IN_P],
				pk = m->plan->width[PN_ACT_PV],
				li;

	if (!c->ppnet)
		return;
	memset(tr->dpv, 0, sizeof(float) * (size_t) n * pk);
	/* per gate, the plan's step 2 then step 1 (its layers, gate by gate, each pair in reverse) */
	for (li = 0; li < m->plan->nlayers; li++)
	{
		const PnLayer *l2 = PN_LAYER(m, li),
				   *l1;
		int			l = l2->layer,
					g = l2->nout;
		float	   *dg = tr->dgg[l];

		if (l2->part != PN_PART_PPNET || l2->step != 2)
			continue;
		l1 = PN_LAYER(m, li - 1);	/* step 1 of the same gate precedes it */
		gate_backward(dg, tr->gg[l], (size_t) n * g, c->gamma);
		mm_tn(FIXED(tr), g, l2->nin, n, dg, g, tr->gh[l], l2->nin, 1.0f, G(tr, l2->w), l2->ldw);
		col_sums(dg, n, g, g, G(tr, l2->b));
		mm_nn(FIXED(tr), n, l2->nin, g, dg, g, PN_T(m, l2->w), l2->ldw, 0.0f, tr->dgh, l2->nin);
		relu_backward(tr->dgh, tr->gh[l], (size_t) n * l1->nout);
		mm_tn(FIXED(tr), l1->nout, l1->ldw, n, tr->dgh, l1->nout, tr->in_p, kp, 1.0f, G(tr, l1->w), l1->ldw);
		col_sums(tr->dgh, n, l1->nout, l1->nout, G(tr, l1->b));
		if (l1->npre)
			mm_nn(FIXED(tr), n, l1->npre, l1->nout, tr->dgh, l1->nout, PN_T(m, l1->w), l1->ldw, 1.0f, tr->dpv, pk);
	}
}

/* ----------------------------------------------------------------- towers */

/*
 * Tower of task t (steps 5-7), per domain segment of s rows with the fused
 * W*_l = W_l ⊙ W_l,d [h_l, h_(l-1)], b*_l = b_l + b_l,d:
 *   r_l [s, h_l] = relu(a_(l-1) W*_l^T + b*_l),  a_0 = xn
 *   a_l [n, h_l] = gg_l[:, t h_l : (t+1) h_l] ⊙ r_l	(r_l without PPNet)
 *   logit [n, t] = a_L . w*_t + c*_t				(output layer, h = 1)
 */
static void
tower_forward(PnTrainer *tr, int t)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				T = c->ntasks,
				L = c->nhidden,
				i,
				j,
				s,
				li;

	/* the plan's layers of task t, in order: its tower layers 1..L, its output layer */
	for (li = 0; li < m->plan->nlayers; li++)
	{
		const PnLayer *ly = PN_LAYER(m, li);
		int			l = ly->layer,
					h = ly->nout,
					prev = ly->nin;
		const float *in;

		if (ly->task != t)
			continue;
		in = ly->in == PN_ACT_XN ? tr->xn : tr->a[t * L + ly->in_layer - 1];
		for (s = 0; s < tr->nseg; s++)
		{
			Seg		   *sg = &tr->segs[s];

			fuse(tr, ly, sg->domain);
			if (ly->part == PN_PART_TOWER)
			{
				float	   *z = tr->r[t * L + l - 1] + (size_t) sg->start * h;

				pn_fill_rows(z, sg->count, h, tr->fb);
				gemm_rows(tr, 'N', 'T', sg->count, h, prev, in + (size_t) sg->start * prev, prev, tr->fw, prev, 1.0f, z, h);
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
		if (ly->part == PN_PART_TOWER)
			for (i = 0; i < n; i++)
			{
				float	   *restrict rr = tr->r[t * L + l - 1] + (size_t) i * h,
						   *restrict aa = tr->a[t * L + l - 1] + (size_t) i * h;

				if (ly->gate >= 0)
				{
					/* times the task's columns of the gate (PPNet) */
					const float *restrict g = tr->gg[l - 1] + (size_t) i * T * h + t * h;

					for (j = 0; j < h; j++)
					{
						rr[j] = rr[j] > 0 ? rr[j] : 0;
						aa[j] = rr[j] * g[j];
					}
				}
				else
					for (j = 0; j < h; j++)
					{
						rr[j] = rr[j] > 0 ? rr[j] : 0;
						aa[j] = rr[j];
					}
			}
	}
}

/*
 * Tower backward of task t, top down: dlogit [n, T] -> dxn [n, n0] (+=,
 * tasks add), dgg_l [n, g_l] (task t's columns), the tower's parameters.
 * Per layer, with da [n, h] the gradient at a_l:
 *   dgg_l[:, t] = da ⊙ r_l;  dz [n, h] = da ⊙ g ⊙ [r_l > 0]
 *   per segment: dW* [h, prev] = dz^T a_(l-1); dW += dW* ⊙ W_d, dW_d += dW* ⊙ W
 *                db, db_d += colsum(dz); d a_(l-1) = dz W*
 */
static void
tower_backward(PnTrainer *tr, int t)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				T = c->ntasks,
				L = c->nhidden,
				i,
				j,
				s,
				li;

	/* the plan's layers of task t in reverse: its output layer, its tower layers L..1 */
	for (li = m->plan->nlayers - 1; li >= 0; li--)
	{
		const PnLayer *ly = PN_LAYER(m, li);
		int			l = ly->layer,
					h = ly->nout,
					prev = ly->nin;
		const float *in;
		float	   *gW,
				   *gB,
				   *dout;
		float		dbeta;

		if (ly->task != t)
			continue;
		in = ly->in == PN_ACT_XN ? tr->xn : tr->a[t * L + ly->in_layer - 1];
		gW = G(tr, ly->w);
		gB = G(tr, ly->b);
		dout = ly->in == PN_ACT_XN ? tr->dxn : tr->dprev;
		dbeta = ly->in == PN_ACT_XN ? 1.0f : 0.0f;	/* tasks add into dxn */

		/* dz [n, h]: gradient at the pre-activation of this layer */
		if (ly->part == PN_PART_OUTPUT)
			for (i = 0; i < n; i++)
				tr->dz[i] = tr->dlogit[(size_t) i * T + t];
		else
		{
			for (i = 0; i < n; i++)
			{
				const float *restrict rr = tr->r[t * L + l - 1] + (size_t) i * h,
						   *restrict da = tr->da + (size_t) i * h;
				float	   *restrict dz = tr->dz + (size_t) i * h;

				if (ly->gate >= 0)
				{
					const float *restrict g = tr->gg[l - 1] + (size_t) i * T * h + t * h;
					float	   *restrict dg = tr->dgg[l - 1] + (size_t) i * T * h + t * h;

					for (j = 0; j < h; j++)
					{
						float		v = da[j] * g[j];	/* branch-free: vectorizes */

						dg[j] = da[j] * rr[j];
						dz[j] = rr[j] > 0 ? v : 0.0f;
					}
				}
				else
					for (j = 0; j < h; j++)
					{
						float		v = da[j];

						dz[j] = rr[j] > 0 ? v : 0.0f;
					}
			}
		}
		for (s = 0; s < tr->nseg; s++)
		{
			Seg		   *sg = &tr->segs[s];
			int			d = sg->domain;
			const float *dzs = tr->dz + (size_t) sg->start * h;
			const float *ins = in + (size_t) sg->start * prev;
			size_t		hp = (size_t) h * prev,
						q;

			fuse(tr, ly, d);
			/* dW* = dz^T a_prev over the segment */
			gemm_rows(tr, 'T', 'N', h, prev, sg->count, dzs, h, ins, prev, 0.0f, tr->dwt, prev);
			if (ly->dw >= 0)
			{
				const float *restrict W = PN_T(m, ly->w);
				const float *restrict Wd = PN_T(m, ly->dw) + (size_t) d * hp;
				const float *restrict dwt = tr->dwt;
				float	   *restrict gWs = gW;
				float	   *restrict gWd = G(tr, ly->dw) + (size_t) d * hp;
				float	   *gBd = G(tr, ly->db) + (size_t) d * h;

				for (q = 0; q < hp; q++)
				{
					gWs[q] += dwt[q] * Wd[q];
					gWd[q] += dwt[q] * W[q];
				}
				col_sums(dzs, sg->count, h, h, gBd);
			}
			else
			{
				const float *restrict dwt = tr->dwt;
				float	   *restrict gWs = gW;

				for (q = 0; q < hp; q++)
					gWs[q] += dwt[q];
			}
			col_sums(dzs, sg->count, h, h, gB);
			/* d a_prev = dz W* */
			gemm_rows(tr, 'N', 'N', sg->count, prev, h, dzs, h, tr->fw, prev, dbeta,
				  dout + (size_t) sg->start * prev, prev);
		}
		if (ly->in != PN_ACT_XN)
			memcpy(tr->da, tr->dprev, sizeof(float) * (size_t) n * prev);
	}
}

/* -------------------------------------------------------------------- aux */

/*
 * Auxiliary network (step 8): logit [n, T] += V2 relu(V1 [dv ; x0] + e1) + e2
 *   ah [n, ha] = relu(in_e [n, ke] V1^T [ke, ha] + e1)
 *   logit [n, T] += e2 + ah V2^T [ha, T]
 */
static void
aux_forward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				T = c->ntasks,
				ha,
				ke = m->plan->width[PN_ACT_IN_E],
				i,
				t;
	const float *e2;
	const PnLayer *a1,
			   *a2;

	if (!c->aux)
		return;
	/* the plan's aux layers: [dv ; x0] -> ah, ah -> logit += */
	a1 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_AUX, 1, -1, 0));
	a2 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_AUX, 2, -1, 0));
	ha = a1->nout;
	e2 = PN_T(m, a2->b);
	pn_fill_rows(tr->ah, n, ha, PN_T(m, a1->b));
	mm_nt(FIXED(tr), n, ha, a1->ldw, tr->in_e, ke, PN_T(m, a1->w), a1->ldw, 1.0f, tr->ah, ha);
	pn_relu(tr->ah, (size_t) n * ha);
	for (i = 0; i < n; i++)
		for (t = 0; t < T; t++)
			tr->logit[(size_t) i * T + t] += e2[t];
	mm_nt(FIXED(tr), n, a2->nout, a2->nin, tr->ah, ha, PN_T(m, a2->w), a2->ldw, 1.0f, tr->logit, T);
}

/*
 * Aux backward: dlogit [n, T] -> V1, V2, e1, e2; ddv [n, k] (+=), dx0 [n, n0] (+=)
 *   dV2 [T, ha] += dlogit^T ah;  dah [n, ha] = (dlogit V2) ⊙ [ah > 0]
 *   dV1 [ha, ke] += dah^T in_e;  d[dv ; x0] += dah V1
 */
static void
aux_backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			n = tr->n,
				k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				ha,
				ke;
	const PnLayer *a1,
			   *a2;

	if (!c->aux)
		return;
	/* the plan's aux layers in reverse */
	a2 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_AUX, 2, -1, 0));
	a1 = PN_LAYER(m, pn_plan_find(m->plan, PN_PART_AUX, 1, -1, 0));
	ha = a2->nin;
	ke = a1->ldw;
	mm_tn(FIXED(tr), T, ha, n, tr->dlogit, T, tr->ah, ha, 1.0f, G(tr, a2->w), ha);
	col_sums(tr->dlogit, n, T, T, G(tr, a2->b));
	mm_nn(FIXED(tr), n, ha, T, tr->dlogit, T, PN_T(m, a2->w), ha, 0.0f, tr->dgh, ha);
	relu_backward(tr->dgh, tr->ah, (size_t) n * ha);
	mm_tn(FIXED(tr), ha, ke, n, tr->dgh, ha, tr->in_e, ke, 1.0f, G(tr, a1->w), ke);
	col_sums(tr->dgh, n, ha, ha, G(tr, a1->b));
	/* d [dv ; x0]: dv part and x0 part */
	mm_nn(FIXED(tr), n, a1->npre, ha, tr->dgh, ha, PN_T(m, a1->w), ke, 1.0f, tr->ddv, k);
	mm_nn(FIXED(tr), n, a1->nin, ha, tr->dgh, ha, PN_T(m, a1->w) + a1->npre, ke, 1.0f, tr->dx0, n0);
}

/* ------------------------------------------------------------------- loss */

/*
 * Masked BCE on logits [n, T], mean over rows, summed over tasks, plus L2
 * over the shared weight matrices; fills dlogit [n, T] (0 where masked).
 */
static double
loss_forward_backward(PnTrainer *tr)
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
		tr->dlogit[i] = ((float) pn_sigmoidd(z) - y) / n;
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

/* gradient of L2: dW += 2 l2 W over the shared weight matrices */
static void
l2_backward(PnTrainer *tr)
{
	PnModel    *m = tr->m;
	const PnConfig *c = &m->cfg;
	int			x;

	if (!(c->l2 > 0))
		return;
	for (x = 0; x < m->ntensors; x++)
		if (m->tensors[x].kind == PNT_WEIGHT)
		{
			const float *restrict w = PN_T(m, x);
			float	   *restrict gw = G(tr, x);
			size_t		q;

			for (q = 0; q < (size_t) m->tensors[x].numel; q++)
				gw[q] += 2.0f * c->l2 * w[q];
		}
}

/* ------------------------------------------------------ forward, backward */

/*
 * Forward pass over the prepared batch.  train: PN uses per-domain batch
 * statistics (and, with update_stats, moves the running statistics).
 * Leaves logits [n, T] in tr->logit (sorted order).
 */
static int
forward(PnTrainer *tr, bool train, bool update_stats, PnError *err)
{
	int			rc,
				t;

	epnet_forward(tr);
	if ((rc = partnorm_forward(tr, train, update_stats, err)) != PN_OK)
		return rc;
	ppnet_forward(tr);
	for (t = 0; t < tr->m->cfg.ntasks; t++)
		tower_forward(tr, t);
	aux_forward(tr);
	return PN_OK;
}

/* Backward pass of everything from dlogit: gradients into tr->grad */
static void
backward(PnTrainer *tr)
{
	const PnConfig *c = &tr->m->cfg;
	int			n = tr->n,
				t,
				l;

	memset(tr->dxn, 0, sizeof(float) * (size_t) n * c->n0);
	memset(tr->dx0, 0, sizeof(float) * (size_t) n * c->n0);
	memset(tr->ddv, 0, sizeof(float) * (size_t) n * c->emb_dim);
	if (c->ppnet)
		for (l = 0; l < c->nhidden; l++)
			memset(tr->dgg[l], 0, sizeof(float) * (size_t) n * c->ntasks * c->hidden[l]);

	aux_backward(tr);
	for (t = 0; t < c->ntasks; t++)
		tower_backward(tr, t);
	ppnet_backward(tr);
	partnorm_backward(tr);
	epnet_backward(tr);
	embed_backward(tr);
	l2_backward(tr);
}

/* Sort the batch by domain and look up its embeddings (checks the input) */
static int
prepare(PnTrainer *tr, const PnBatch *b, PnError *err)
{
	int			rc;

	if ((rc = sort_batch(tr, b, err)) != PN_OK)
		return rc;
	return embed_forward(tr, b, err);
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
	*loss = loss_forward_backward(tr);
	backward(tr);
	return PN_OK;
}

/* ------------------------------------------------------------- optimiser */

/* true when the float's exponent is all ones (inf or NaN); integer ops, so the loops vectorize */
static inline int
nonfinite_bits(float v)
{
	uint32_t	b;

	memcpy(&b, &v, sizeof(b));
	return (b & 0x7f800000u) == 0x7f800000u;
}

/*
 * torch.optim.Adam over cnt dense parameters (all of them every step, as
 * docs/model.md requires): p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps);
 * returns whether a parameter or second moment became non-finite.
 */
static int
adam_dense(float *restrict p, const float *restrict g, float *restrict mm, float *restrict vv,
		   int64_t cnt, float step, float sbc2)
{
	const float b1 = 0.9f,
				b2 = 0.999f,
				eps = 1e-8f;
	int64_t		q;
	int			nf = 0;

	for (q = 0; q < cnt; q++)
	{
		mm[q] = b1 * mm[q] + (1 - b1) * g[q];
		vv[q] = b2 * vv[q] + (1 - b2) * g[q] * g[q];
		p[q] -= step * mm[q] / (sqrtf(vv[q]) / sbc2 + eps);
		nf |= nonfinite_bits(p[q]) | nonfinite_bits(vv[q]);
	}
	return nf;
}

/*
 * torch.optim.SparseAdam on the rows of an embedding table [rows, kk] that
 * the batch used: lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps); returns whether a
 * value became non-finite.
 */
static int
adam_sparse(float *restrict p, const float *restrict g, float *restrict mm, float *restrict vv,
			const int64_t *rows, int nrows, int64_t kk, float step)
{
	const float b1 = 0.9f,
				b2 = 0.999f,
				eps = 1e-8f;
	int			i,
				nf = 0;

	for (i = 0; i < nrows; i++)
	{
		int64_t		off = rows[i] * kk,
					e;

		for (e = off; e < off + kk; e++)
		{
			mm[e] = b1 * mm[e] + (1 - b1) * g[e];
			vv[e] = b2 * vv[e] + (1 - b2) * g[e] * g[e];
			p[e] -= step * mm[e] / (sqrtf(vv[e]) + eps);
			nf |= nonfinite_bits(p[e]) | nonfinite_bits(vv[e]);
		}
	}
	return nf;
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
				b2 = 0.999f;
	double		bc1,
				bc2;
	float		lr = tr->lr;
	int			x,
				bad = -1;

	tr->step++;
	bc1 = 1.0 - pow(b1, (double) tr->step);
	bc2 = 1.0 - pow(b2, (double) tr->step);
	for (x = 0; x < PN_NFLOAT(m); x++)
	{
		PnTensor   *t = &m->tensors[x];
		int			nf;

		if (!t->trainable)
			continue;
		if (t->kind != PNT_EMBED)
			nf = adam_dense(m->data + t->offset, tr->grad + t->offset, tr->adam_m + t->offset,
							tr->adam_v + t->offset, t->numel, (float) (lr / bc1), (float) sqrt(bc2));
		else
			nf = adam_sparse(m->data + t->offset, tr->grad + t->offset, tr->adam_m + t->offset,
							 tr->adam_v + t->offset, tr->touched_rows + tr->touched[x], tr->ntouched[x],
							 t->shape[1], (float) (lr * sqrt(bc2) / bc1));
		if (nf && bad < 0)
			bad = x;
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
