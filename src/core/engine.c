/*
 * engine.c
 *		The matmul engine of batched scoring: oneDNN matmul primitives for a
 *		fixed tile of PN_TILE candidates, created once per cached version and
 *		precision, with the elementwise parts fused as post-ops (bias, relu,
 *		the gate's gamma * sigmoid, the gate multiply).  Weights are packed
 *		once into the layout each primitive asks for (per version for the
 *		EPNet, PPNet and aux matrices, per domain for the fused STAR tower).
 *
 * Ties.  Every candidate of every request goes through the same primitives
 * with the same shapes: a request is cut into tiles of exactly PN_TILE rows,
 * the last one padded with zero rows.  A row's arithmetic (the order of its
 * sums) then depends neither on its position in the request nor on the
 * request's size nor on the other candidates, so identical candidates get
 * bit-identical scores.  pn_score (OpenBLAS GEMV, pepnet_predict) sums in
 * another order: it agrees with this path to float rounding only.
 *
 * The fallback.  Where oneDNN has no brgemm matmul (AVX2 CPUs: oneDNN 2.6
 * has it from AVX-512 on), requests are scored in blocks of up to
 * PN_FALLBACK_BLOCK rows by pepnet's own matmul, pn_gemm_panels (gemm.c):
 * weights packed once per version and domain into panels of 16 output
 * columns, the bias and the post-op (relu, or the gate's gamma * sigmoid
 * times its input) applied to each register block before it is stored,
 * and every element summed in an order that depends on the inner dimension
 * only.  So no padding is needed: a block of 1 row costs one row's work,
 * and a candidate's bits depend neither on its position nor on where the
 * request is cut into blocks.  The matmuls that read the same input (the
 * layer plan's layers grouped by input, pn_plan_readers) are one pass over
 * it with their weight rows concatenated (struct PnFallback): EPNet's and aux's first layers on x0, every task's tower
 * layer 1 and every PPNet gate's layer 1 on x (their domain and persona
 * parts as biases, the persona's assembled per request).  OpenBLAS could
 * not give the ties: with 0.3.21's Zen/Haswell kernels a row's sgemm
 * result depends on M and on its position (12-row panels whose two halves
 * sum differently, 4- and 8-row remainders, one-row GEMV another order
 * again), and the only row-uniform sgemm shapes found were M = 1..3, 4
 * and 8 (row-major operands) or 16 (operands swapped), each paying
 * OpenBLAS's per-call packing of every weight matrix (test_rowwise_gemm in
 * test/unit/test_core.c reports OpenBLAS's rows).  pn_gemm_panels runs at
 * about OpenBLAS's big square sgemm rate on these shapes, and its 1- to
 * 5-row kernels read each weight once per call (BENCHMARKS.md).
 *
 * int8 (PN_INT8, quant.c).  Always the fallback's dataflow (blocks, merged
 * matmuls) with every matmul but the x block (every tower's and every gate's
 * layer 1 on x, EPNet's output), the output layers and aux layer 2 in int8:
 * each input row quantized, the int32 sums from pepnet's own kernel
 * (pn_q8_gemm), or where oneDNN has an exact int8 brgemm (VNNI, AMX) from
 * its s8 x s8 -> s32 (u8 x s8 -> s32) matmuls over tiles of `tile` rows
 * padded with zero rows; then the one epilogue pn_q8_epilogue.  The inputs
 * nonnegative by construction (EPNet's and the gates' layer 2, the tower
 * layers >= 2: relu outputs, gated or not) are quantized to u8, the others
 * (x0) to s8 (quant.c).  The x block stays fp32, pn_gemm_panels on every
 * CPU and path: x is signed and a row's few large gated values set its int8
 * scale, which cost up to 2e-2 of a probability on a trained model
 * (BENCHMARKS.md "int8 scoring").  The output layers and aux layer 2 are
 * fp32 dot products (pn_dot) as in engine_tile.  So a candidate's bits are
 * the same on every CPU and path.
 *
 * Threads.  Debian's oneDNN runs on OpenMP; pn_dnnl_init (dnnl.c) pins it to one
 * thread.  Nothing here runs before the first batched score of a backend,
 * so a library preloaded into the postmaster initialises no oneDNN state.
 *
 * Shapes per tile (M = PN_TILE rows, row-major, n0 input width, he EPNet
 * hidden, h_l hidden widths, T tasks, ha aux hidden):
 *   ep1   eh [M, he]    = relu(x0 W1x^T + ep_bias_d)
 *   ep2   x  [M, n0]    = gamma * sigmoid(eh W2^T + b2) * x0
 *   tw1   a  [M, T h1]  = relu(x w1_d^T + b1_d)            (PN folded in)
 *   gate  g  [M, T h_l] = gamma * sigmoid(relu(x P1x^T + gbias) P2^T + pb2) * tower
 *   twl   b  [M, h_l] per task, on its column block: relu(a_t w_dt^T + b_dt)
 *   aux   ah [M, ha]    = relu(x0 V1x^T + aux_bias_d)
 * then per row: logit_t = w_out_t . a_L,t + c_t (+ V2_t . ah + e2_t).
 */
#include "pncore.h"
#include "pndnnl.h"
#include "pninternal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PN_FALLBACK_BLOCK 64	/* rows per block of the fallback */
/*
 * 1: every gate's layer 1 packed into each domain's x block with the towers'
 * layer 1, one pass over x; 0: the gates' part one copy per version (less
 * memory per domain), a second pass.  The same bits either way (each
 * element's sum is the same chain); through SQL on Zen 3 the two measured
 * the same within noise (BENCHMARKS.md).
 */
#ifndef PN_FALLBACK_X_PER_DOMAIN
#define PN_FALLBACK_X_PER_DOMAIN 1
#endif

/* one matmul with its post-ops */
typedef struct PnOp
{
	dnnl_primitive_t prim;
	dnnl_memory_t m_src,
				m_wei,
				m_bias,
				m_dst,
				m_src1,
				m_scratch;
	dnnl_exec_arg_t args[6];
	int			nargs;
	dnnl_memory_desc_t wmd;		/* packed weights layout */
	size_t		wbytes;
	int			K,
				N;
	bool		src_u8;			/* int8: a u8 source (else s8) */
	bool		mul_after;		/* the gate multiply could not be fused: done after */
	int			ldc;
	dnnl_data_type_t dst_dt;
} PnOp;

/*
 * The fallback's weights of a domain, packed for pn_gemm_panels: the
 * matmuls that read x merged into one (every task's tower layer 1, then
 * every PPNet gate's layer 1), the tower layers 2..L+1 per task, and the
 * domain's biases of the merged x0 matmul.
 */
typedef struct PnFallbackDomain
{
	void	   *xw;				/* [nxd, n0] packed */
	float	   *x0b;			/* [nx0]: ep_bias, aux_bias */
	void	   *tw[PN_MAX_TASKS * (PN_MAX_LAYERS + 1)];	/* PN_TW(t, l), l >= 2, packed (int8: not the output layer) */
	void	   *mem;			/* the one allocation of all of them */
} PnFallbackDomain;

/*
 * The fallback (no oneDNN brgemm): the version's weights packed once into
 * 16-column panels (gemm.c), matmuls that read the same input merged, and
 * a workspace of PN_FALLBACK_BLOCK rows.
 *
 *   x0 block  h0 [M, nx0] = relu(x0 [W1x; V1x]^T + [ep_bias_d; aux_bias_d])
 *   ep2       x  [M, n0]  = gamma * sigmoid(eh W2^T + b2) * x0   (eh: h0's first he columns)
 *   x block   xc [M, nx]  = relu(x [w1_d; P1x_0; ..; P1x_L-1]^T + [b1_d; gbias_0; ..])
 *   gate l    a_l = gamma * sigmoid(gh_l P2_l^T + pb2_l) * a_l   (gh_l: xc's columns of gate l, in place)
 *   tower l   a_l [M, T h_l] per task = relu(a_l-1,t w_dt^T + b_dt)
 *   output    o [M, T] per task = a_L,t w_out^T + c_t, oa [M, T] = ah V2^T + e2 (ah: h0's last ha columns)
 *   logit = o + oa
 */
typedef struct PnFallback
{
	int			nx0,			/* he + ha (the parts that exist) */
				ehoff,			/* EPNet's hidden: its first column in h0 */
				ahoff,			/* aux's hidden: its first column in h0 */
				nx,				/* T h_1 + (PPNet: sum of T h_l) */
				nxd,			/* the x block's rows packed per domain: nx, or T h_1 */
				goff[PN_MAX_LAYERS];	/* gate l's first column in xc */
	bool		q8;				/* int8 (quant.c): every matmul but the output layers and aux layer 2 */
	void	   *gw,				/* [nx - nxd, n0] packed: the rest of the x block */
			   *x0w,			/* [nx0, n0] packed */
			   *ep2,			/* [n0, he] packed */
			   *g2[PN_MAX_LAYERS],	/* [T h_l, T h_l] packed */
			   *aux2;			/* [T, ha] packed (fp32 only) */
	void	   *mem;
	PnQ8Work	qw;				/* int8: the quantized rows and the int32 sums of a block */
	/*
	 * int8 through oneDNN (CPUs with its int8 brgemm: AVX512-VNNI, AMX):
	 * s8 x s8 -> s32 (u8 x s8 -> s32 for the layers with nonnegative
	 * inputs) matmuls of `tile` rows, one per weight shape and source type, instead
	 * of pn_q8_gemm; the same quantizers and epilogue around them
	 */
	bool		dnn;
	bool		dnn_failed;		/* a matmul failed to run: the block is void */
	int			tile;
	int			nops;
	PnOp		ops[3 + 3 * PN_MAX_LAYERS + 1];
	int8_t	   *s8;				/* [tile, kmax] one tile's quantized rows */
	void	   *scratch;
	PnFallbackDomain **dom;		/* [D], packed by pn_engine_prepare_domain */
	/* workspace */
	float	   *x0,				/* [M, n0] */
			   *h0,				/* [M, nx0] */
			   *x,				/* [M, n0] */
			   *xc,				/* [M, nx] */
			   *t1,
			   *t2,				/* [M, T hmax] */
			   *bx,				/* [nx] the x block's biases of the request */
			   *o,
			   *oa;				/* [M, T] */
	void	   *wmem;
} PnFallback;

/* per domain: the fused tower weights packed for the primitives */
typedef struct PnPackedDomain
{
	void	   *w1;				/* tw1 */
	void	  **w;				/* [T*(L+1)], layers 2..L */
	bool	   *shared;			/* [1 + T*(L+1)]: w1, w[x] are the PnPackShare's (not freed) */
} PnPackedDomain;

struct PnEngine
{
	int			precision;
	int			tile;
	const PnModel *m;
	/*
	 * No brgemm matmul on this CPU (oneDNN 2.6 has it from AVX-512 on): its
	 * other matmul, gemm:jit, corrupted the heap under load (AVX2, see
	 * BENCHMARKS.md), so blocks of up to PN_FALLBACK_BLOCK rows go through
	 * pn_gemm_panels (see "The fallback" above).
	 */
	bool		fallback;
	PnFallback *fb;				/* its packed weights and workspace */
	PnOp		ep1,
				ep2,
				tw1,
				twl[PN_MAX_LAYERS],
				g1[PN_MAX_LAYERS],
				g2[PN_MAX_LAYERS],
				aux1;
	/* packed weights of the version */
	void	   *p_ep1,
			   *p_ep2,
			   *p_g1[PN_MAX_LAYERS],
			   *p_g2[PN_MAX_LAYERS],
			   *p_aux1;
	PnPackedDomain **dom;		/* [D], packed on first use */
	/* workspace of one tile */
	float	   *x0;				/* [M, n0] f32 */
	void	   *x0h;			/* [M, n0] in the compute type */
	void	   *x;				/* [M, n0] EPNet output */
	void	   *eh;				/* [M, he] */
	void	   *a,
			   *b,
			   *gh;				/* [M, T*hmax] */
	float	   *ah;				/* [M, ha] */
	void	   *ts;				/* [M, hmax] one task's columns, contiguous */
	void	   *td;				/* [M, hmax] one task's layer output, contiguous */
	float	   *logit;			/* [M, T] */
	void	   *scratch;
	size_t		scratch_bytes;
	void	   *allocs[64];		/* everything pn_alloc'd, freed together */
	int			nallocs;
};

static int	engine_domain(PnEngine *eng, const PnDomainCache *dc, const PnPackShare *share, PnPackedDomain **out,
						  PnError *err);
static void fallback_free(PnFallback *fb, int D);

bool
pn_engine_bf16_supported(void)
{
	dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();

	return ((int) isa & (int) dnnl_cpu_isa_avx512_core_bf16) == (int) dnnl_cpu_isa_avx512_core_bf16;
}

/*
 * Whether oneDNN runs exact int8 matmuls here (brgemm with VNNI or AMX:
 * int32 sums without saturation); elsewhere int8 scoring runs pepnet's own
 * int8 kernel (quant.c)
 */
bool
pn_engine_int8_supported(void)
{
	dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();

	return ((int) isa & (int) dnnl_cpu_isa_avx512_core_vnni) == (int) dnnl_cpu_isa_avx512_core_vnni;
}

const char *
pn_engine_isa(void)
{
	switch ((int) dnnl_get_effective_cpu_isa())
	{
		case dnnl_cpu_isa_sse41:
			return "sse41";
		case dnnl_cpu_isa_avx:
			return "avx";
		case dnnl_cpu_isa_avx2:
			return "avx2";
		case dnnl_cpu_isa_avx512_mic:
			return "avx512_mic";
		case dnnl_cpu_isa_avx512_core:
			return "avx512_core";
		case dnnl_cpu_isa_avx512_core_vnni:
			return "avx512_core_vnni";
		case dnnl_cpu_isa_avx512_core_bf16:
			return "avx512_core_bf16";
		case dnnl_cpu_isa_avx512_core_amx:
			return "avx512_core_amx";
		case dnnl_cpu_isa_avx2_vnni:
			return "avx2_vnni";
		default:
			return "other";
	}
}

/* 64-byte aligned allocation owned by the engine */
static void *
eng_alloc(PnEngine *eng, size_t bytes)
{
	char	   *p;
	uintptr_t	u;

	if (eng->nallocs >= (int) (sizeof(eng->allocs) / sizeof(eng->allocs[0])))
		return NULL;
	p = pn_alloc0(bytes + 64);
	if (!p)
		return NULL;
	eng->allocs[eng->nallocs++] = p;
	u = ((uintptr_t) p + 63) & ~(uintptr_t) 63;
	return (void *) u;
}

static void
op_free(PnOp *op)
{
	if (op->prim)
		dnnl_primitive_destroy(op->prim);
	if (op->m_src)
		dnnl_memory_destroy(op->m_src);
	if (op->m_wei)
		dnnl_memory_destroy(op->m_wei);
	if (op->m_bias)
		dnnl_memory_destroy(op->m_bias);
	if (op->m_dst)
		dnnl_memory_destroy(op->m_dst);
	if (op->m_src1)
		dnnl_memory_destroy(op->m_src1);
	if (op->m_scratch)
		dnnl_memory_destroy(op->m_scratch);
	memset(op, 0, sizeof(*op));
}

/* post-op kinds of an op */
#define PO_RELU 1
#define PO_GATE 2				/* gamma * sigmoid */
#define PO_MUL 4				/* times src1 [M, N] */

/*
 * Create a matmul [M, K] x [K, N] -> [M, N] (lda, ldc row strides) with a
 * bias and post-ops; src1 of the multiply has row stride ld1.  When the
 * multiply cannot be fused on this CPU, it is left to the caller
 * (op->mul_after).
 */
static int
op_create(PnEngine *eng, PnOp *op, int K, int N, int lda, int ldc, int ld1,
		  dnnl_data_type_t src_dt, dnnl_data_type_t dst_dt, dnnl_data_type_t src1_dt,
		  int po, float gamma, PnError *err)
{
	int			M = eng->tile;
	dnnl_memory_desc_t src_md,
				wei_md,
				bias_md,
				dst_md,
				src1_md;
	dnnl_matmul_desc_t md;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_status_t st = dnnl_unimplemented;
	int			attempt;
	dnnl_data_type_t wdt = src_dt;

	memset(op, 0, sizeof(*op));
	op->K = K;
	op->N = N;
	op->ldc = ldc;
	op->dst_dt = dst_dt;
	dnnl_memory_desc_init_by_strides(&src_md, 2, (dnnl_dims_t) {M, K}, src_dt, (dnnl_dims_t) {lda, 1});
	dnnl_memory_desc_init_by_tag(&wei_md, 2, (dnnl_dims_t) {K, N}, wdt, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&bias_md, 2, (dnnl_dims_t) {1, N}, dnnl_f32, dnnl_ab);
	dnnl_memory_desc_init_by_strides(&dst_md, 2, (dnnl_dims_t) {M, N}, dst_dt, (dnnl_dims_t) {ldc, 1});
	dnnl_memory_desc_init_by_strides(&src1_md, 2, (dnnl_dims_t) {M, N}, src1_dt, (dnnl_dims_t) {ld1, 1});
	if (dnnl_matmul_desc_init(&md, &src_md, &wei_md, &bias_md, &dst_md) != dnnl_success)
		return pn_seterr(err, PN_EENGINE, "oneDNN refused a matmul of %d x %d by %d x %d", M, K, K, N);

	/* first with the multiply fused, then without */
	for (attempt = 0; attempt < 2; attempt++)
	{
		dnnl_primitive_attr_t attr;
		dnnl_post_ops_t pops;

		if (attempt == 1 && !(po & PO_MUL))
			break;
		dnnl_primitive_attr_create(&attr);
		dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
		dnnl_post_ops_create(&pops);
		if (po & PO_RELU)
			dnnl_post_ops_append_eltwise(pops, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
		if (po & PO_GATE)
			dnnl_post_ops_append_eltwise(pops, gamma, dnnl_eltwise_logistic, 0.0f, 0.0f);
		if ((po & PO_MUL) && attempt == 0)
			dnnl_post_ops_append_binary(pops, dnnl_binary_mul, &src1_md);
		dnnl_primitive_attr_set_post_ops(attr, pops);
		st = dnnl_primitive_desc_create(&pd, &md, attr, pn_dnnl_engine, NULL);
		dnnl_post_ops_destroy(pops);
		dnnl_primitive_attr_destroy(attr);
		if (st == dnnl_success)
		{
			op->mul_after = (po & PO_MUL) && attempt == 1;
			break;
		}
	}
	if (st != dnnl_success)
		return pn_seterr(err, PN_EENGINE, "oneDNN has no matmul of %d x %d by %d x %d for this CPU (%s)",
						 M, K, K, N, pn_engine_isa());
	{
		const char *impl;

		if (!pn_dnnl_is_brgemm(pd, &impl))
		{
			dnnl_primitive_desc_destroy(pd);
			return pn_seterr(err, PN_EUNSUPPORTED, "oneDNN has no brgemm matmul on this CPU (%s; it chose %s)",
							 pn_engine_isa(), impl ? impl : "nothing");
		}
	}
	if (op->mul_after && (dst_dt != dnnl_f32 || src1_dt != dnnl_f32))
	{
		/* mul_rows multiplies floats only; bf16 CPUs fuse the multiply */
		dnnl_primitive_desc_destroy(pd);
		return pn_seterr(err, PN_EENGINE, "oneDNN cannot fuse the gate multiply in bf16 on this CPU (%s)",
						 pn_engine_isa());
	}

	op->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	op->wbytes = dnnl_memory_desc_get_size(&op->wmd);
	{
		const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
		size_t		sb = smd ? dnnl_memory_desc_get_size(smd) : 0;

		if (sb > eng->scratch_bytes)
			eng->scratch_bytes = sb;
		if (sb > 0 && dnnl_memory_create(&op->m_scratch, smd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success)
			goto fail;
	}
	st = dnnl_primitive_create(&op->prim, pd);
	dnnl_primitive_desc_destroy(pd);
	pd = NULL;
	if (st != dnnl_success)
		goto fail;
	if (dnnl_memory_create(&op->m_src, &src_md, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&op->m_wei, &op->wmd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&op->m_bias, &bias_md, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&op->m_dst, &dst_md, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success)
		goto fail;
	op->args[0] = (dnnl_exec_arg_t) {DNNL_ARG_SRC, op->m_src};
	op->args[1] = (dnnl_exec_arg_t) {DNNL_ARG_WEIGHTS, op->m_wei};
	op->args[2] = (dnnl_exec_arg_t) {DNNL_ARG_BIAS, op->m_bias};
	op->args[3] = (dnnl_exec_arg_t) {DNNL_ARG_DST, op->m_dst};
	op->nargs = 4;
	if (op->m_scratch)
		op->args[op->nargs++] = (dnnl_exec_arg_t) {DNNL_ARG_SCRATCHPAD, op->m_scratch};
	if ((po & PO_MUL) && !op->mul_after)
	{
		int			idx = ((po & PO_RELU) ? 1 : 0) + ((po & PO_GATE) ? 1 : 0);

		if (dnnl_memory_create(&op->m_src1, &src1_md, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success)
			goto fail;
		op->args[op->nargs++] = (dnnl_exec_arg_t) {DNNL_ARG_ATTR_MULTIPLE_POST_OP(idx) | DNNL_ARG_SRC_1, op->m_src1};
	}
	return PN_OK;
fail:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	op_free(op);
	return pn_seterr(err, PN_EENGINE, "could not create a oneDNN matmul of %d x %d by %d x %d", M, K, K, N);
}

/* Pack W [N, K] (row stride ldw, float) into op's weights layout at out */
static int
op_pack(PnOp *op, const float *W, int ldw, void *out, PnError *err)
{
	dnnl_memory_desc_t from_md;
	dnnl_primitive_desc_t rpd;
	dnnl_primitive_t r;
	dnnl_memory_t mf,
				mt;
	dnnl_status_t st;

	dnnl_memory_desc_init_by_strides(&from_md, 2, (dnnl_dims_t) {op->K, op->N}, dnnl_f32, (dnnl_dims_t) {1, ldw});
	if (dnnl_reorder_primitive_desc_create(&rpd, &from_md, pn_dnnl_engine, &op->wmd, pn_dnnl_engine, NULL) != dnnl_success)
		return pn_seterr(err, PN_EENGINE, "oneDNN cannot pack a %d x %d weight matrix", op->N, op->K);
	st = dnnl_primitive_create(&r, rpd);
	dnnl_primitive_desc_destroy(rpd);
	if (st != dnnl_success)
		return pn_seterr(err, PN_EENGINE, "oneDNN cannot pack a %d x %d weight matrix", op->N, op->K);
	dnnl_memory_create(&mf, &from_md, pn_dnnl_engine, (void *) W);
	dnnl_memory_create(&mt, &op->wmd, pn_dnnl_engine, out);
	{
		dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, mf}, {DNNL_ARG_TO, mt}};

		st = dnnl_primitive_execute(r, pn_dnnl_stream, 2, args);
		dnnl_stream_wait(pn_dnnl_stream);
	}
	dnnl_memory_destroy(mf);
	dnnl_memory_destroy(mt);
	dnnl_primitive_destroy(r);
	if (st != dnnl_success)
		return pn_seterr(err, PN_EENGINE, "oneDNN failed packing a %d x %d weight matrix", op->N, op->K);
	return PN_OK;
}

/* Allocate and pack (or use share's packed weights of key, see PnPackShare) */
static int
op_pack_new(PnEngine *eng, PnOp *op, const float *W, int ldw, const PnPackShare *share, const char *key,
			void **out, PnError *err)
{
	int			rc;

	if (share && (*out = (void *) share->lookup(share->arg, key, op->wbytes)) != NULL)
		return PN_OK;
	*out = eng_alloc(eng, op->wbytes);
	if (!*out)
		return pn_seterr(err, PN_ENOMEM, "out of memory packing weights");
	rc = op_pack(op, W, ldw, *out, err);
	if (rc == PN_OK && share)
		share->publish(share->arg, key, *out, op->wbytes);
	return rc;
}

/*
 * A domain's packed matrix: share's one of key (*raw = it, *shared =
 * true), else a new allocation *raw packed at PN_ALIGN64(*raw) and offered
 * to share (NULL: no sharing).
 */
static int
dom_pack(PnOp *op, const float *W, int ldw, const PnPackShare *share, const char *key, void **raw,
		 bool *shared, PnError *err)
{
	const void *p = share ? share->lookup(share->arg, key, op->wbytes) : NULL;
	int			rc;

	*shared = p != NULL;
	if (p)
	{
		*raw = (void *) p;		/* 64-byte aligned: PN_ALIGN64 leaves it */
		return PN_OK;
	}
	*raw = pn_alloc(op->wbytes + 64);
	if (!*raw)
		return pn_seterr(err, PN_ENOMEM, "out of memory packing weights");
	rc = op_pack(op, W, ldw, PN_ALIGN64(*raw), err);
	if (rc == PN_OK && share)
		share->publish(share->arg, key, PN_ALIGN64(*raw), op->wbytes);
	return rc;
}

/* Free a domain's packed matrices that are its own */
static void
dom_free(PnPackedDomain *pd, int nw)
{
	int			x;

	if (pd == NULL)
		return;
	if (!(pd->shared && pd->shared[0]))
		pn_free(pd->w1);
	if (pd->w)
		for (x = 0; x < nw; x++)
			if (!(pd->shared && pd->shared[1 + x]))
				pn_free(pd->w[x]);
	pn_free(pd->w);
	pn_free(pd->shared);
	pn_free(pd);
}

static int
op_run(PnOp *op, const void *src, const void *wei, const float *bias, void *dst, const void *src1, void *scratch)
{
	dnnl_memory_set_data_handle(op->m_src, (void *) src);
	dnnl_memory_set_data_handle(op->m_wei, (void *) wei);
	if (op->m_bias)
		dnnl_memory_set_data_handle(op->m_bias, (void *) bias);
	dnnl_memory_set_data_handle(op->m_dst, dst);
	if (op->m_src1)
		dnnl_memory_set_data_handle(op->m_src1, (void *) src1);
	if (op->m_scratch)
		dnnl_memory_set_data_handle(op->m_scratch, scratch);
	return dnnl_primitive_execute(op->prim, pn_dnnl_stream, op->nargs, op->args) == dnnl_success ? PN_OK : PN_EENGINE;
}

void
pn_engine_free(PnEngine *eng)
{
	int			i,
				l;

	if (eng == NULL)
		return;
	if (eng->fb)
		fallback_free(eng->fb, eng->m->cfg.domains);
	op_free(&eng->ep1);
	op_free(&eng->ep2);
	op_free(&eng->tw1);
	op_free(&eng->aux1);
	for (l = 0; l < PN_MAX_LAYERS; l++)
	{
		op_free(&eng->twl[l]);
		op_free(&eng->g1[l]);
		op_free(&eng->g2[l]);
	}
	if (eng->dom)
	{
		for (i = 0; i < eng->m->cfg.domains; i++)
			dom_free(eng->dom[i], eng->m->cfg.ntasks * (eng->m->cfg.nhidden + 1));
		pn_free(eng->dom);
	}
	for (i = 0; i < eng->nallocs; i++)
		pn_free(eng->allocs[i]);
	pn_free(eng);
}

/*
 * The engine of a version: primitives for tiles of `tile` rows in the
 * given precision (PN_FP32, PN_BF16), the version's weights packed.
 */
static int
engine_new_onednn(const PnModel *m, int precision, int tile, const PnPackShare *share, PnEngine **out,
				  PnError *err)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *pl = m->plan;
	int			n0 = pl->width[PN_ACT_X0],
				T = c->ntasks,
				L = c->nhidden,
				he = pl->width[PN_ACT_EH],
				ha = pl->width[PN_ACT_AH],
				hmax = pl->hmax,
				li,
				rc;
	dnnl_data_type_t cdt = precision == PN_BF16 ? dnnl_bf16 : dnnl_f32;
	size_t		es = precision == PN_BF16 ? 2 : 4;
	PnEngine   *eng;

	*out = NULL;
	if ((rc = pn_dnnl_init(err)) != PN_OK)
		return rc;
	if (precision == PN_BF16 && !pn_engine_bf16_supported())
		return pn_seterr(err, PN_EUNSUPPORTED, "this CPU has no bf16 instructions (oneDNN runs %s)", pn_engine_isa());
	eng = pn_alloc0(sizeof(PnEngine));
	if (!eng)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	eng->m = m;
	eng->precision = precision;
	eng->tile = tile;

	/* tile workspace */
	{
		size_t		M = tile,
					wide = (size_t) pl->wide;	/* the plan's size table */

		eng->x0 = eng_alloc(eng, 4 * M * n0);
		eng->x0h = precision == PN_BF16 ? eng_alloc(eng, es * M * n0) : (void *) eng->x0;
		eng->x = c->epnet ? eng_alloc(eng, 4 * M * n0) : eng->x0h;
		eng->eh = eng_alloc(eng, 4 * M * (he > 0 ? he : 1));
		eng->a = eng_alloc(eng, 4 * M * wide);
		eng->b = eng_alloc(eng, 4 * M * wide);
		eng->gh = eng_alloc(eng, 4 * M * wide);
		eng->ah = eng_alloc(eng, 4 * M * (ha > 0 ? ha : 1));
		eng->ts = eng_alloc(eng, 4 * M * hmax);
		eng->td = eng_alloc(eng, 4 * M * hmax);
		eng->logit = eng_alloc(eng, 4 * M * T);
		eng->dom = pn_alloc0(sizeof(PnPackedDomain *) * c->domains);
		if (!eng->x0 || !eng->x0h || !eng->x || !eng->eh || !eng->a || !eng->b || !eng->gh ||
			!eng->ah || !eng->ts || !eng->td || !eng->logit || !eng->dom)
		{
			pn_engine_free(eng);
			return pn_seterr(err, PN_ENOMEM, "out of memory for the scoring workspace");
		}
	}

#define TRY(call) do { if ((rc = (call)) != PN_OK) goto fail; } while (0)
	/*
	 * One primitive per layer of the plan (every task's tower layer 1 at
	 * once, one per tower layer l >= 2 shared by the tasks), the version's
	 * weights packed; the dv / pv prefixes are the domain's and persona's
	 * biases.  The output and aux layer 2 are dot products per row
	 * (engine_tile).
	 */
	for (li = 0; li < m->plan->nlayers; li++)
	{
		const PnLayer *ly = PN_LAYER(m, li);
		int			K = ly->nin,
					N = ly->nout;
		/* a layer feeding the output dots writes f32 */
		dnnl_data_type_t odt = (ly->layer == L - 1 && ly->part == PN_PART_PPNET) ? dnnl_f32 : cdt;
		char		key[16];

		switch (ly->part)
		{
			case PN_PART_EPNET:
				if (ly->step == 1)
				{
					TRY(op_create(eng, &eng->ep1, K, N, K, N, 0, cdt, cdt, dnnl_f32, PO_RELU, 1.0f, err));
					TRY(op_pack_new(eng, &eng->ep1, PN_T(m, ly->w) + ly->npre, ly->ldw, share, "ep1", &eng->p_ep1, err));
				}
				else
				{
					TRY(op_create(eng, &eng->ep2, K, N, K, N, N, cdt, cdt, dnnl_f32, PO_GATE | PO_MUL, c->gamma, err));
					TRY(op_pack_new(eng, &eng->ep2, PN_T(m, ly->w), ly->ldw, share, "ep2", &eng->p_ep2, err));
				}
				break;
			case PN_PART_TOWER:
				if (ly->task != 0)
					break;
				if (ly->layer == 1)
				{
					/* tower layer 1 of every task at once; its output feeds the gate (or the next layer) */
					int			g = T * N;
					dnnl_data_type_t tdt = (c->ppnet || L > 1) ? cdt : dnnl_f32;

					TRY(op_create(eng, &eng->tw1, K, g, K, g, 0, cdt, tdt, dnnl_f32, PO_RELU, 1.0f, err));
				}
				else
				{
					/*
					 * src and dst contiguous (copies of the task's columns): oneDNN 2.6's
					 * brgemm matmul takes no row strides; with them it falls back to its
					 * slower gemm path, whose first run JITs for 20 ms
					 */
					dnnl_data_type_t tdt = c->ppnet ? cdt : (ly->layer == L ? dnnl_f32 : cdt);

					TRY(op_create(eng, &eng->twl[ly->layer - 1], K, N, K, N, 0, cdt, tdt, dnnl_f32,
								  PO_RELU, 1.0f, err));
				}
				break;
			case PN_PART_PPNET:
				if (ly->step == 1)
				{
					TRY(op_create(eng, &eng->g1[ly->layer], K, N, K, N, 0, cdt, cdt, dnnl_f32, PO_RELU, 1.0f, err));
					snprintf(key, sizeof(key), "g1.%d", ly->layer);
					TRY(op_pack_new(eng, &eng->g1[ly->layer], PN_T(m, ly->w) + ly->npre, ly->ldw, share, key,
									&eng->p_g1[ly->layer], err));
				}
				else
				{
					TRY(op_create(eng, &eng->g2[ly->layer], K, N, K, N, N, cdt, odt, cdt, PO_GATE | PO_MUL, c->gamma, err));
					snprintf(key, sizeof(key), "g2.%d", ly->layer);
					TRY(op_pack_new(eng, &eng->g2[ly->layer], PN_T(m, ly->w), ly->ldw, share, key,
									&eng->p_g2[ly->layer], err));
				}
				break;
			case PN_PART_AUX:
				if (ly->step == 1)
				{
					TRY(op_create(eng, &eng->aux1, K, N, K, N, 0, cdt, dnnl_f32, dnnl_f32, PO_RELU, 1.0f, err));
					TRY(op_pack_new(eng, &eng->aux1, PN_T(m, ly->w) + ly->npre, ly->ldw, share, "aux1", &eng->p_aux1, err));
				}
				break;
			case PN_PART_OUTPUT:
				break;
		}
	}
#undef TRY
	if (eng->scratch_bytes > 0 && !(eng->scratch = eng_alloc(eng, eng->scratch_bytes)))
	{
		rc = pn_seterr(err, PN_ENOMEM, "out of memory for the oneDNN scratchpad");
		goto fail;
	}
	*out = eng;
	return PN_OK;
fail:
	pn_engine_free(eng);
	return rc;
}

static void
fallback_free(PnFallback *fb, int D)
{
	int			d;

	if (fb == NULL)
		return;
	if (fb->dom)
	{
		for (d = 0; d < D; d++)
			if (fb->dom[d])
			{
				pn_free(fb->dom[d]->mem);
				pn_free(fb->dom[d]);
			}
		pn_free(fb->dom);
	}
	pn_free(fb->mem);
	pn_free(fb->wmem);
	pn_free(fb->qw.qa);
	pn_free(fb->qw.sa);
	pn_free(fb->qw.acc);
	for (d = 0; d < fb->nops; d++)
		op_free(&fb->ops[d]);
	pn_free(fb->s8);
	pn_free(fb->scratch);
	pn_free(fb);
}

/* the fallback passes a layer's post-op to pn_gemm_panels as its epilogue */
typedef char pn_post_is_epi[(PN_POST_NONE == PN_EPI_NONE && PN_POST_RELU == PN_EPI_RELU &&
							 PN_POST_GATE == PN_EPI_GATE) ? 1 : -1];

/* bump allocation of 64-byte aligned floats from *p */
static float *
carve(char **p, size_t floats)
{
	float	   *r = (float *) *p;

	*p += (floats * sizeof(float) + 63) & ~(size_t) 63;
	return r;
}

/*
 * An int8 matmul of oneDNN: [tile, K] s8 (or u8) x [K, N] s8 -> [tile, N] s32, no
 * bias, no post-op (the bias and the post-op are pn_q8_epilogue's, so that
 * the sums stay exact integers), weights in the layout it asks for.  Only
 * where the sums are exact: a brgemm kernel on a CPU with VNNI or AMX
 * (vpdpbusd sums u8 x s8 products in int32 without saturating; oneDNN
 * shifts s8 sources to u8 and subtracts the weights' compensation, exact
 * in int32).  oneDNN 2.6's other int8 matmul on AVX2 and AVX-512 without
 * VNNI (gemm:jit, vpmaddubsw) saturates int16 pair sums of full-range
 * operands: never used.  Under pn_dnnl_any_impl (the unit tests) a brgemm
 * or else the reference implementation (ref_int8, exact below 2^24).
 */
static int
op_create_q8(PnOp *op, int tile, int K, int N, bool u8, size_t *scratch_bytes)
{
	dnnl_memory_desc_t src_md,
				wei_md,
				dst_md;
	dnnl_matmul_desc_t md;
	dnnl_primitive_desc_iterator_t it = NULL;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_attr_t attr;

	memset(op, 0, sizeof(*op));
	op->K = K;
	op->N = N;
	op->ldc = N;
	op->dst_dt = dnnl_s32;
	op->src_u8 = u8;
	dnnl_memory_desc_init_by_strides(&src_md, 2, (dnnl_dims_t) {tile, K}, u8 ? dnnl_u8 : dnnl_s8, (dnnl_dims_t) {K, 1});
	dnnl_memory_desc_init_by_tag(&wei_md, 2, (dnnl_dims_t) {K, N}, dnnl_s8, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_strides(&dst_md, 2, (dnnl_dims_t) {tile, N}, dnnl_s32, (dnnl_dims_t) {N, 1});
	if (dnnl_matmul_desc_init(&md, &src_md, &wei_md, NULL, &dst_md) != dnnl_success)
		return PN_EUNSUPPORTED;
	dnnl_primitive_attr_create(&attr);
	dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
	if (dnnl_primitive_desc_iterator_create(&it, &md, attr, pn_dnnl_engine, NULL) == dnnl_success)
	{
		do
		{
			const char *impl = NULL;
			dnnl_primitive_desc_t c = dnnl_primitive_desc_iterator_fetch(it);

			if (c == NULL)
				break;
			if (dnnl_primitive_desc_query(c, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
				(strncmp(impl, "brg", 3) == 0 ? pn_engine_int8_supported() || pn_dnnl_any_impl :
				 pn_dnnl_any_impl && strncmp(impl, "ref", 3) == 0))
			{
				pd = c;
				break;
			}
			dnnl_primitive_desc_destroy(c);
		} while (dnnl_primitive_desc_iterator_next(it) == dnnl_success);
		dnnl_primitive_desc_iterator_destroy(it);
	}
	dnnl_primitive_attr_destroy(attr);
	if (pd == NULL)
		return PN_EUNSUPPORTED;
	op->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	op->wbytes = dnnl_memory_desc_get_size(&op->wmd);
	{
		const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
		size_t		sb = smd ? dnnl_memory_desc_get_size(smd) : 0;

		if (sb > *scratch_bytes)
			*scratch_bytes = sb;
		if (sb > 0 && dnnl_memory_create(&op->m_scratch, smd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success)
			goto fail;
	}
	if (dnnl_primitive_create(&op->prim, pd) != dnnl_success)
		goto fail;
	dnnl_primitive_desc_destroy(pd);
	pd = NULL;
	if (dnnl_memory_create(&op->m_src, &src_md, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&op->m_wei, &op->wmd, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success ||
		dnnl_memory_create(&op->m_dst, &dst_md, pn_dnnl_engine, DNNL_MEMORY_NONE) != dnnl_success)
		goto fail;
	op->args[0] = (dnnl_exec_arg_t) {DNNL_ARG_SRC, op->m_src};
	op->args[1] = (dnnl_exec_arg_t) {DNNL_ARG_WEIGHTS, op->m_wei};
	op->args[2] = (dnnl_exec_arg_t) {DNNL_ARG_DST, op->m_dst};
	op->nargs = 3;
	if (op->m_scratch)
		op->args[op->nargs++] = (dnnl_exec_arg_t) {DNNL_ARG_SCRATCHPAD, op->m_scratch};
	return PN_OK;
fail:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	op_free(op);
	return PN_EUNSUPPORTED;
}

/* the oneDNN int8 matmul of shape [N, K] with a u8 (else s8) source */
static PnOp *
fb_op(PnFallback *fb, int N, int K, bool u8)
{
	int			i;

	for (i = 0; i < fb->nops; i++)
		if (fb->ops[i].N == N && fb->ops[i].K == K && fb->ops[i].src_u8 == u8)
			return &fb->ops[i];
	return NULL;
}

/* bytes of int8 weights packed for op: sw [N], then oneDNN's layout at the next 64 bytes */
static size_t
q8_dnn_bytes(const PnOp *op)
{
	return (((size_t) op->N * sizeof(float) + 63) & ~(size_t) 63) + op->wbytes;
}

/* W [N, K] quantized per channel and reordered into op's layout at out (64-byte aligned) */
static void
q8_dnn_pack(PnFallback *fb, PnOp *op, const float *W, int ldw, void *out)
{
	int			N = op->N,
				K = op->K;
	int8_t	   *q = pn_alloc((size_t) N * K + 1);
	dnnl_memory_desc_t from_md;
	dnnl_primitive_desc_t rpd;
	dnnl_primitive_t r = NULL;
	dnnl_memory_t mf = NULL,
				mt = NULL;
	bool		ok = false;

	if (q == NULL)
	{
		fb->dnn_failed = true;
		return;
	}
	pn_q8_rows8(N, K, W, ldw, false, q, K, (float *) out);
	/* q [N, K] row-major is the [K, N] matrix with strides (1, K) */
	dnnl_memory_desc_init_by_strides(&from_md, 2, (dnnl_dims_t) {K, N}, dnnl_s8, (dnnl_dims_t) {1, K});
	if (dnnl_reorder_primitive_desc_create(&rpd, &from_md, pn_dnnl_engine, &op->wmd, pn_dnnl_engine, NULL) == dnnl_success)
	{
		if (dnnl_primitive_create(&r, rpd) == dnnl_success &&
			dnnl_memory_create(&mf, &from_md, pn_dnnl_engine, q) == dnnl_success &&
			dnnl_memory_create(&mt, &op->wmd, pn_dnnl_engine,
							   (char *) out + (((size_t) N * sizeof(float) + 63) & ~(size_t) 63)) == dnnl_success)
		{
			dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, mf}, {DNNL_ARG_TO, mt}};

			ok = dnnl_primitive_execute(r, pn_dnnl_stream, 2, args) == dnnl_success;
			dnnl_stream_wait(pn_dnnl_stream);
		}
		dnnl_primitive_desc_destroy(rpd);
	}
	if (mf)
		dnnl_memory_destroy(mf);
	if (mt)
		dnnl_memory_destroy(mt);
	if (r)
		dnnl_primitive_destroy(r);
	pn_free(q);
	if (!ok)
		fb->dnn_failed = true;
}

/*
 * A layer through oneDNN's int8 matmul: M rows in tiles (the last padded
 * with zero rows, whose results are dropped), the rows quantized as
 * pn_q8_layer does, the shared epilogue
 */
static void
q8_dnn_layer(PnFallback *fb, PnOp *op, int M, const float *A, int lda, const void *W, const float *bias,
			 float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	int			N = op->N,
				K = op->K,
				r0;
	const void *wd = (const char *) W + (((size_t) N * sizeof(float) + 63) & ~(size_t) 63);

	for (r0 = 0; r0 < M; r0 += fb->tile)
	{
		int			mb = M - r0 < fb->tile ? M - r0 : fb->tile;

		pn_q8_rows8(mb, K, A + (size_t) r0 * lda, lda, op->src_u8, fb->s8, K, fb->qw.sa + r0);
		if (mb < fb->tile)
			memset(fb->s8 + (size_t) mb * K, 0, (size_t) (fb->tile - mb) * K);
		if (op_run(op, fb->s8, wd, NULL, fb->qw.acc + (size_t) r0 * N, NULL, fb->scratch) != PN_OK)
			fb->dnn_failed = true;
		dnnl_stream_wait(pn_dnnl_stream);
	}
	pn_q8_epilogue(M, N, fb->qw.acc, N, fb->qw.sa, (const float *) W, bias, C, ldc, epi, gamma, X, ldx);
}

/* the input of a fallback matmul in int8: signed, nonnegative (u8), or kept fp32 */
#define FB_S8 0
#define FB_U8 1
#define FB_F32 2

/*
 * bytes of W [N, K] packed for the fallback's matmul (fp32 panels or int8;
 * in: FB_S8 / FB_U8 / FB_F32 as for fb_gemm)
 */
static size_t
fb_wbytes(PnFallback *fb, int N, int K, int in)
{
	if (in == FB_F32 || !fb->q8)
		return 4 * pn_panels_floats(N, K) + 64;
	if (fb->dnn)
		return q8_dnn_bytes(fb_op(fb, N, K, in == FB_U8)) + 64;
	return pn_q8_bytes(N, K) + 64;
}

/* W [N, K] (row stride ldw) packed at *p (advanced) */
static void *
fb_pack(PnFallback *fb, char **p, int N, int K, int in, const float *W, int ldw)
{
	void	   *r = *p;

	if (in == FB_F32 || !fb->q8)
		pn_panels_pack(N, K, W, ldw, r);
	else if (fb->dnn)
		q8_dnn_pack(fb, fb_op(fb, N, K, in == FB_U8), W, ldw, r);
	else
		pn_q8_pack(N, K, W, ldw, r);
	*p += (fb_wbytes(fb, N, K, in) - 64 + 63) & ~(size_t) 63;
	return r;
}

/*
 * the fallback's matmul with its bias and post-op: pn_gemm_panels, or in
 * int8 pn_q8_layer / oneDNN's int8 matmul (in: FB_U8 the input is
 * nonnegative by the layer's kind, FB_S8 signed, FB_F32 the matmul stays
 * fp32 in int8 too: the x block, see "int8" above)
 */
static inline void
fb_gemm(PnFallback *fb, int M, int N, int K, const float *A, int lda, int in, const void *W, const float *bias,
		float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	if (in == FB_F32 || !fb->q8)
		pn_gemm_panels(M, N, K, A, lda, W, bias, C, ldc, epi, gamma, X, ldx);
	else if (fb->dnn)
		q8_dnn_layer(fb, fb_op(fb, N, K, in == FB_U8), M, A, lda, W, bias, C, ldc, epi, gamma, X, ldx);
	else
		pn_q8_layer(M, N, K, A, lda, in == FB_U8, W, bias, C, ldc, epi, gamma, X, ldx, &fb->qw);
}

/*
 * Copy the rows of the layers idx[0..n) of the plan (those that read one
 * input) one after another into tmp [sum nout, nin]: each layer's weight
 * columns past its prefix (the prefix is a bias of the domain or persona)
 */
static void
merged_rows(const PnModel *m, const int *idx, int n, float *tmp)
{
	size_t		row = 0;
	int			i,
				j;

	for (i = 0; i < n; i++)
	{
		const PnLayer *ly = PN_LAYER(m, idx[i]);

		for (j = 0; j < ly->nout; j++, row++)
			memcpy(tmp + row * ly->nin, PN_T(m, ly->w) + (size_t) j * ly->ldw + ly->npre, sizeof(float) * ly->nin);
	}
}

/*
 * The fallback's version-wide part: the x0 block (the plan's layers that
 * read x0: EPNet layer 1 and aux layer 1), the layers reading x that need
 * no domain (the gates' layer 1, when not packed per domain), EPNet layer
 * 2, the gates' layer 2 and aux layer 2 packed, and the workspace; NULL
 * when out of memory.
 */
static PnFallback *
fallback_new(const PnModel *m, bool q8, bool dnn, int tile)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *pl = m->plan;
	int			n0 = pl->width[PN_ACT_X0],
				T = c->ntasks,
				M = PN_FALLBACK_BLOCK,
				nr0,
				nrx,
				i;
	size_t		wide = (size_t) pl->wide,
				bytes = 64;
	PnFallback *fb = pn_alloc0(sizeof(PnFallback));
	char	   *p;
	float	   *tmp;
	int		   *r0 = pn_alloc(sizeof(int) * (pl->nlayers + 1)),
			   *rx = pn_alloc(sizeof(int) * (pl->nlayers + 1));

	if (fb == NULL || r0 == NULL || rx == NULL)
	{
		pn_free(fb);
		pn_free(r0);
		pn_free(rx);
		return NULL;
	}
	fb->q8 = q8;
	/* the merged matmuls: the layers that read x0; those that read xn (PN folded: x), then x */
	nr0 = pn_plan_readers(pl, PN_ACT_X0, 0, r0);
	nrx = pn_plan_readers(pl, PN_ACT_X, 0, rx);
	fb->nx0 = 0;
	for (i = 0; i < nr0; i++)
	{
		const PnLayer *ly = PN_LAYER(m, r0[i]);

		if (ly->part == PN_PART_EPNET)
			fb->ehoff = fb->nx0;
		else
			fb->ahoff = fb->nx0;
		fb->nx0 += ly->nout;
	}
	fb->nx = 0;
	for (i = 0; i < pl->nlayers; i++)
		if (pl->layers[i].in == PN_ACT_XN)
			fb->nx += pl->layers[i].nout;
	fb->nxd = fb->nx;			/* the towers' layer 1: per domain */
	for (i = 0; i < nrx; i++)
	{
		fb->goff[PN_LAYER(m, rx[i])->layer] = fb->nx;
		fb->nx += PN_LAYER(m, rx[i])->nout;
	}
	if (PN_FALLBACK_X_PER_DOMAIN)
		fb->nxd = fb->nx;
	fb->dom = pn_alloc0(sizeof(PnFallbackDomain *) * c->domains);
	if (q8 && dnn)
	{
		/* oneDNN's int8 matmuls, one per weight shape; the own kernel if it has none of one */
		int			shapes[3 + 3 * PN_MAX_LAYERS + 1][3],
					ns = 0,
					j;
		size_t		sb = 0;

		/* [N, K, u8]: s8 for the block on x0, u8 for the layers on relu outputs (the x block stays fp32) */
		shapes[ns][0] = fb->nx0, shapes[ns][1] = n0, shapes[ns++][2] = 0;
		for (i = 0; i < pl->nlayers; i++)
		{
			const PnLayer *ly = &pl->layers[i];

			if (ly->in == PN_ACT_EH || ly->in == PN_ACT_GH || (ly->in == PN_ACT_A && ly->part != PN_PART_OUTPUT))
				shapes[ns][0] = ly->nout, shapes[ns][1] = ly->nin, shapes[ns++][2] = 1;
		}
		fb->dnn = true;
		fb->tile = tile;
		for (j = 0; j < ns && fb->dnn; j++)
			if (shapes[j][0] > 0 && fb_op(fb, shapes[j][0], shapes[j][1], shapes[j][2]) == NULL)
			{
				if (op_create_q8(&fb->ops[fb->nops], tile, shapes[j][1], shapes[j][0], shapes[j][2], &sb) == PN_OK)
					fb->nops++;
				else
					fb->dnn = false;
			}
		if (fb->dnn)
		{
			fb->scratch = pn_alloc(sb + 64);
			fb->s8 = pn_alloc((size_t) tile * (wide + fb->nx + fb->nx0 + n0));
		}
		if (!fb->dnn || !fb->scratch || !fb->s8)
		{
			for (j = 0; j < fb->nops; j++)
				op_free(&fb->ops[j]);
			fb->nops = 0;
			pn_free(fb->scratch);
			pn_free(fb->s8);
			fb->scratch = NULL;
			fb->s8 = NULL;
			fb->dnn = false;
		}
	}
	/* the packed matrices */
	if (fb->nxd < fb->nx)
		bytes += fb_wbytes(fb, fb->nx - fb->nxd, n0, FB_F32);
	bytes += fb_wbytes(fb, fb->nx0 > 0 ? fb->nx0 : 1, n0, FB_S8);
	for (i = 0; i < pl->nlayers; i++)
	{
		const PnLayer *ly = &pl->layers[i];

		if (ly->in == PN_ACT_EH || ly->in == PN_ACT_GH || (ly->in == PN_ACT_AH && !q8))
			bytes += fb_wbytes(fb, ly->nout, ly->nin, FB_U8);
	}
	fb->mem = pn_alloc(bytes);
	tmp = pn_alloc(sizeof(float) * (size_t) (fb->nx0 > fb->nx ? fb->nx0 : fb->nx) * n0);
	if (!fb->dom || !fb->mem || !tmp)
	{
		pn_free(tmp);
		pn_free(r0);
		pn_free(rx);
		fallback_free(fb, c->domains);
		return NULL;
	}
	p = PN_ALIGN64(fb->mem);
	if (fb->nxd < fb->nx)
	{
		/* the gates' layer 1 on x, every layer's rows one after another */
		merged_rows(m, rx, nrx, tmp);
		fb->gw = fb_pack(fb, &p, fb->nx - fb->nxd, n0, FB_F32, tmp, n0);
	}
	if (fb->nx0 > 0)
	{
		/* [W1x; V1x]: the x0 columns of EPNet's and aux's first layers */
		merged_rows(m, r0, nr0, tmp);
		fb->x0w = fb_pack(fb, &p, fb->nx0, n0, FB_S8, tmp, n0);
	}
	pn_free(tmp);
	pn_free(r0);
	pn_free(rx);
	/* the second layers: EPNet's, the gates', aux's */
	for (i = 0; i < pl->nlayers; i++)
	{
		const PnLayer *ly = &pl->layers[i];
		void	   *pk;

		if (ly->in != PN_ACT_EH && ly->in != PN_ACT_GH && (ly->in != PN_ACT_AH || q8))
			continue;
		pk = fb_pack(fb, &p, ly->nout, ly->nin, FB_U8, PN_T(m, ly->w), ly->ldw);
		if (ly->part == PN_PART_EPNET)
			fb->ep2 = pk;
		else if (ly->part == PN_PART_PPNET)
			fb->g2[ly->layer] = pk;
		else
			fb->aux2 = pk;
	}
	/* workspace */
	bytes = 64 + 4 * ((size_t) M * n0 + (size_t) M * (fb->nx0 + 1) + (size_t) M * n0 + (size_t) M * fb->nx +
					  2 * (size_t) M * wide + fb->nx + 2 * (size_t) M * T) + 9 * 64;
	fb->wmem = pn_alloc(bytes);
	if (!fb->wmem)
	{
		fallback_free(fb, c->domains);
		return NULL;
	}
	p = PN_ALIGN64(fb->wmem);
	fb->x0 = carve(&p, (size_t) M * n0);
	fb->h0 = carve(&p, (size_t) M * (fb->nx0 + 1));
	fb->x = carve(&p, (size_t) M * n0);
	fb->xc = carve(&p, (size_t) M * fb->nx);
	fb->t1 = carve(&p, (size_t) M * wide);
	fb->t2 = carve(&p, (size_t) M * wide);
	fb->bx = carve(&p, fb->nx);
	fb->o = carve(&p, (size_t) M * T);
	fb->oa = carve(&p, (size_t) M * T);
	if (q8)
	{
		/* the widest input and output of a matmul */
		size_t		kmax = n0;

		kmax = kmax > (size_t) fb->nx0 ? kmax : (size_t) fb->nx0;
		kmax = kmax > (size_t) fb->nx ? kmax : (size_t) fb->nx;
		kmax = kmax > wide ? kmax : wide;
		fb->qw.qa = pn_alloc(sizeof(int16_t) * M * PN_Q8_KP(kmax));
		fb->qw.sa = pn_alloc(sizeof(float) * (M + tile));
		fb->qw.acc = pn_alloc(sizeof(int32_t) * (M + tile) * kmax);
		if (!fb->qw.qa || !fb->qw.sa || !fb->qw.acc)
		{
			fallback_free(fb, c->domains);
			return NULL;
		}
	}
	return fb;
}

/*
 * The fallback's part of domain dc: the x block [w1_d; P1x_0; ...] (the
 * fused tower layer 1 of every task, then every gate's layer 1 on x), the
 * tower layers 2..L+1 packed, the x0 block's biases; once per domain.
 */
static int
fallback_domain(const PnModel *m, PnFallback *fb, const PnDomainCache *dc, PnError *err)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *pl = m->plan;
	int			n0 = pl->width[PN_ACT_X0],
				nr0,
				nrx,
				i;
	size_t		bytes = 64,
				h1 = 0;
	PnFallbackDomain *fd;
	char	   *p;
	float	   *tmp;
	int		   *r0,
			   *rx;

	if (fb->dom[dc->domain])
		return PN_OK;
	fd = pn_alloc0(sizeof(PnFallbackDomain));
	r0 = pn_alloc(sizeof(int) * (pl->nlayers + 1));
	rx = pn_alloc(sizeof(int) * (pl->nlayers + 1));
	if (fd == NULL || r0 == NULL || rx == NULL)
	{
		pn_free(fd);
		pn_free(r0);
		pn_free(rx);
		return pn_seterr(err, PN_ENOMEM, "out of memory packing the weights of domain %d", dc->domain);
	}
	nr0 = pn_plan_readers(pl, PN_ACT_X0, 0, r0);
	nrx = pn_plan_readers(pl, PN_ACT_X, 0, rx);
	bytes += fb_wbytes(fb, fb->nxd, n0, FB_F32) + 4 * (size_t) (fb->nx0 + 1) + 64;
	for (i = 0; i < pl->nlayers; i++)
	{
		const PnLayer *ly = &pl->layers[i];

		if (ly->in == PN_ACT_A && !(fb->q8 && ly->part == PN_PART_OUTPUT))
			bytes += fb_wbytes(fb, ly->nout, ly->nin, FB_U8);
		else if (ly->in == PN_ACT_XN)
			h1 += ly->nout;
	}
	fd->mem = pn_alloc(bytes);
	tmp = pn_alloc(sizeof(float) * (size_t) fb->nxd * n0);
	if (!fd->mem || !tmp)
	{
		pn_free(tmp);
		pn_free(r0);
		pn_free(rx);
		pn_free(fd->mem);
		pn_free(fd);
		return pn_seterr(err, PN_ENOMEM, "out of memory packing the weights of domain %d", dc->domain);
	}
	p = PN_ALIGN64(fd->mem);
	/* the layers that read xn (PN and STAR folded into dc->w1), then those that read x */
	memcpy(tmp, dc->w1, sizeof(float) * h1 * n0);
	if (fb->nxd == fb->nx)
		merged_rows(m, rx, nrx, tmp + h1 * n0);
	fd->xw = fb_pack(fb, &p, fb->nxd, n0, FB_F32, tmp, n0);
	pn_free(tmp);
	/* the x0 block's biases: the dv parts of its layers */
	fd->x0b = carve(&p, fb->nx0 + 1);
	for (i = 0; i < nr0; i++)
	{
		const PnLayer *ly = PN_LAYER(m, r0[i]);

		if (ly->part == PN_PART_EPNET)
			memcpy(fd->x0b + fb->ehoff, dc->ep_bias, sizeof(float) * ly->nout);
		else
			memcpy(fd->x0b + fb->ahoff, dc->aux_bias, sizeof(float) * ly->nout);
	}
	pn_free(r0);
	pn_free(rx);
	/* the tower layers 2..L+1, STAR-fused (dc->w) */
	for (i = 0; i < pl->nlayers; i++)
	{
		const PnLayer *ly = &pl->layers[i];
		int			x;

		if (ly->in != PN_ACT_A || (fb->q8 && ly->part == PN_PART_OUTPUT))
			continue;
		x = PN_TW(c, ly->task, ly->layer);
		fd->tw[x] = fb_pack(fb, &p, ly->nout, ly->nin, FB_U8, dc->w[x], ly->nin);
	}
	if (fb->dnn_failed)
	{
		pn_free(fd->mem);
		pn_free(fd);
		return pn_seterr(err, PN_EENGINE, "oneDNN cannot pack int8 weights of domain %d", dc->domain);
	}
	fb->dom[dc->domain] = fd;
	return PN_OK;
}

/*
 * Logits [nb, T] of a block of nb <= PN_FALLBACK_BLOCK candidates whose x0
 * is in fb->x0: the plan's layers in order, those that read x0 one matmul
 * (the x0 block, at the first of them), those that read x (or xn, PN
 * folded) one matmul (the x block, at the first of them)
 */
static void
fallback_block(const PnModel *m, PnFallback *fb, const PnDomainCache *dc, const PnFallbackDomain *fd, int nb,
			   float *logit)
{
	const PnConfig *c = &m->cfg;
	const PnPlan *pl = m->plan;
	int			n0 = pl->width[PN_ACT_X0],
				T = c->ntasks,
				nx = fb->nx,
				li,
				r;
	const float *x = fb->x0;
	float	   *a = fb->xc,
			   *b;
	int			lda = nx;
	bool		x0done = false,
				xdone = false,
				aux = false;

	for (li = 0; li < pl->nlayers; li++)
	{
		const PnLayer *ly = &pl->layers[li];

		switch (ly->in)
		{
			case PN_ACT_X0:
				/* EPNet's and aux's layer 1 */
				if (!x0done)
					fb_gemm(fb, nb, fb->nx0, n0, fb->x0, n0, FB_S8, fb->x0w, fd->x0b, fb->h0, fb->nx0, PN_EPI_RELU, 0,
								   NULL, 0);
				x0done = true;
				break;
			case PN_ACT_EH:
				/* EPNet's layer 2: x = gate ⊙ x0 */
				fb_gemm(fb, nb, ly->nout, ly->nin, fb->h0 + fb->ehoff, fb->nx0, FB_U8, fb->ep2, PN_T(m, ly->b), fb->x, n0,
							   ly->post, c->gamma, fb->x0, n0);
				x = fb->x;
				break;
			case PN_ACT_XN:
			case PN_ACT_X:
				/* every task's tower layer 1 and every gate's layer 1: one pass over x */
				if (!xdone)
				{
					fb_gemm(fb, nb, fb->nxd, n0, x, n0, FB_F32, fd->xw, fb->bx, fb->xc, nx, PN_EPI_RELU, 0, NULL, 0);
					if (fb->nxd < nx)
						fb_gemm(fb, nb, nx - fb->nxd, n0, x, n0, FB_F32, fb->gw, fb->bx + fb->nxd, fb->xc + fb->nxd, nx,
									   PN_EPI_RELU, 0, NULL, 0);
				}
				xdone = true;
				break;
			case PN_ACT_A:
				{
					int			xi = PN_TW(c, ly->task, ly->layer),
								hp = ly->nin,
								h = ly->nout;

					if (ly->part == PN_PART_OUTPUT && fb->q8)
					{
						/* fp32 in int8 too: the dot product of the oneDNN tiles (engine_tile) */
						for (r = 0; r < nb; r++)
							fb->o[r * T + ly->task] = pn_dot(a + (size_t) r * lda + ly->task * hp, dc->w[xi], hp) + dc->b[xi][0];
						break;
					}
					if (ly->part == PN_PART_OUTPUT)
					{
						fb_gemm(fb, nb, 1, hp, a + ly->task * hp, lda, FB_U8, fd->tw[xi], dc->b[xi], fb->o + ly->task, T,
									   ly->post, 0, NULL, 0);
						break;
					}
					/* task t's tower layer l on its column block */
					b = a == fb->t1 ? fb->t2 : fb->t1;
					fb_gemm(fb, nb, h, hp, a + ly->task * hp, lda, FB_U8, fd->tw[xi], dc->b[xi], b + ly->task * h, T * h,
								   ly->post, 0, NULL, 0);
					if (ly->task == T - 1)
					{
						a = b;
						lda = T * h;
					}
				}
				break;
			case PN_ACT_GH:
				/* gate l's layer 2, times every task's tower layer l + 1 (in place) */
				fb_gemm(fb, nb, ly->nout, ly->nin, fb->xc + fb->goff[ly->layer], nx, FB_U8, fb->g2[ly->layer],
							   PN_T(m, ly->b), a, lda, ly->post, c->gamma, a, lda);
				break;
			case PN_ACT_AH:
				if (fb->q8)
				{
					/* fp32 in int8 too, as engine_tile */
					int			t;

					for (r = 0; r < nb; r++)
						for (t = 0; t < T; t++)
							fb->oa[r * T + t] = pn_dot(fb->h0 + (size_t) r * fb->nx0 + fb->ahoff,
													   PN_T(m, ly->w) + (size_t) t * ly->nin, ly->nin) + PN_T(m, ly->b)[t];
					aux = true;
					break;
				}
				fb_gemm(fb, nb, ly->nout, ly->nin, fb->h0 + fb->ahoff, fb->nx0, FB_U8, fb->aux2, PN_T(m, ly->b), fb->oa, T,
							   ly->post, 0, NULL, 0);
				aux = true;
				break;
			default:
				break;
		}
	}
	if (aux)
		for (r = 0; r < nb * T; r++)
			logit[r] = fb->o[r] + fb->oa[r];
	else
		memcpy(logit, fb->o, sizeof(float) * (size_t) nb * T);
}

/*
 * PN_ETOOBIG when an int8 matmul of m (EPNet's and aux's layer 1 on x0,
 * EPNet's and the gates' layer 2, the tower layers 2..L) has more than
 * PN_Q8_MAX_K inputs: its sums of K products of up to 255 x 127 would wrap
 * in int32.
 */
static int
q8_check_widths(const PnModel *m, PnError *err)
{
	const PnPlan *pl = m->plan;
	int			i;

	for (i = 0; i < pl->nlayers; i++)
	{
		const PnLayer *ly = &pl->layers[i];
		const char *what;

		if (ly->nin <= PN_Q8_MAX_K)
			continue;
		if (ly->in == PN_ACT_X0)
			what = ly->part == PN_PART_EPNET ? "EPNet's layer 1" : "aux's layer 1";
		else if (ly->in == PN_ACT_EH)
			what = "EPNet's layer 2";
		else if (ly->in == PN_ACT_GH)
			what = "a PPNet gate's layer 2";
		else if (ly->in == PN_ACT_A && ly->part != PN_PART_OUTPUT)
			what = "a tower layer";
		else
			continue;
		pn_seterr(err, PN_ETOOBIG, "int8 scoring takes matmuls of at most %d inputs; %s of this model has %d",
				  PN_Q8_MAX_K, what, ly->nin);
		pn_setdetail(err, "int8 sums the products of each matmul's inputs in int32, exact up to %d inputs; "
					 "score this model in fp32 (SET pepnet.precision = 'fp32').", PN_Q8_MAX_K);
		return PN_ETOOBIG;
	}
	return PN_OK;
}

/*
 * An engine of m at precision (PN_FP32, PN_BF16, PN_INT8) for tiles of
 * `tile` rows: oneDNN brgemm matmuls where this CPU has them, else (fp32,
 * int8) the fallback described at struct PnEngine; bf16 without them is
 * PN_EUNSUPPORTED.
 */
int
pn_engine_new(const PnModel *m, int precision, int tile, const PnPackShare *share, PnEngine **out,
			  PnError *err)
{
	int			rc;
	bool		dnn = false;
	PnEngine   *eng;

	if (precision == PN_INT8 && (rc = q8_check_widths(m, err)) != PN_OK)
		return rc;
	rc = precision == PN_INT8 ? PN_EUNSUPPORTED : engine_new_onednn(m, precision, tile, share, out, err);
	if (rc != PN_EUNSUPPORTED || precision == PN_BF16)
		return rc;
	eng = pn_alloc0(sizeof(PnEngine));
	if (eng == NULL)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	eng->m = m;
	eng->precision = precision;
	eng->tile = tile;
	eng->fallback = true;
	if (precision == PN_INT8 && (pn_engine_int8_supported() || pn_dnnl_any_impl) && !pn_q8_portable)
	{
		if ((rc = pn_dnnl_init(err)) != PN_OK)
		{
			pn_free(eng);
			return rc;
		}
		dnn = true;
	}
	eng->fb = fallback_new(m, precision == PN_INT8, dnn, tile);
	if (eng->fb == NULL)
	{
		pn_free(eng);
		return pn_seterr(err, PN_ENOMEM, "out of memory for the scoring workspace");
	}
	*out = eng;
	return PN_OK;
}

/*
 * Pack the fused tower weights of a domain for the primitives (once per
 * domain; allocations in the caller's long-lived context).
 */
int
pn_engine_prepare_domain(PnEngine *eng, const PnDomainCache *dc, const PnPackShare *share, PnError *err)
{
	PnPackedDomain *dummy;

	if (eng->fallback)
		return fallback_domain(eng->m, eng->fb, dc, err);
	return engine_domain(eng, dc, share, &dummy, err);
}

static int
engine_domain(PnEngine *eng, const PnDomainCache *dc, const PnPackShare *share, PnPackedDomain **out,
			  PnError *err)
{
	const PnConfig *c = &eng->m->cfg;
	int			T = c->ntasks,
				L = c->nhidden,
				n0 = eng->m->plan->width[PN_ACT_X0],
				li,
				rc;
	char		key[32];
	PnPackedDomain *pd = eng->dom[dc->domain];

	if (pd)
	{
		*out = pd;
		return PN_OK;
	}
	pd = pn_alloc0(sizeof(PnPackedDomain));
	if (!pd)
		return pn_seterr(err, PN_ENOMEM, "out of memory");
	pd->w = pn_alloc0(sizeof(void *) * T * (L + 1));
	pd->shared = pn_alloc0(sizeof(bool) * (1 + T * (L + 1)));
	if (!pd->w || !pd->shared)
		goto oom;
	snprintf(key, sizeof(key), "d%d.tw1", dc->domain);
	if ((rc = dom_pack(&eng->tw1, dc->w1, n0, share, key, &pd->w1, &pd->shared[0], err)) != PN_OK)
		goto fail;
	/* the plan's tower layers 2..L of every task (the output layers are dot products) */
	for (li = 0; li < eng->m->plan->nlayers; li++)
	{
		const PnLayer *ly = PN_LAYER(eng->m, li);
		int			x;
		PnOp	   *op;

		if (ly->part != PN_PART_TOWER || ly->layer < 2)
			continue;
		x = PN_TW(c, ly->task, ly->layer);
		op = &eng->twl[ly->layer - 1];
		snprintf(key, sizeof(key), "d%d.tw[%d]", dc->domain, x);
		if ((rc = dom_pack(op, dc->w[x], ly->nin, share, key, &pd->w[x], &pd->shared[1 + x], err)) != PN_OK)
			goto fail;
	}
	eng->dom[dc->domain] = pd;
	*out = pd;
	return PN_OK;
oom:
	rc = pn_seterr(err, PN_ENOMEM, "out of memory packing the weights of domain %d", dc->domain);
fail:
	dom_free(pd, T * (L + 1));
	return rc;
}

/* float -> bf16, round to nearest even (inputs are finite) */
static void
to_bf16(const float *src, uint16_t *dst, size_t n)
{
	size_t		i;

	for (i = 0; i < n; i++)
	{
		uint32_t	u;

		memcpy(&u, &src[i], 4);
		u += 0x7fff + ((u >> 16) & 1);
		dst[i] = (uint16_t) (u >> 16);
	}
}

/* dst[i] *= src[i] for the rare CPUs where oneDNN cannot fuse the gate multiply (f32 only) */
static void
mul_rows(float *dst, int lddst, const float *src, int ldsrc, int M, int N)
{
	int			r,
				i;

	for (r = 0; r < M; r++)
		for (i = 0; i < N; i++)
			dst[(size_t) r * lddst + i] *= src[(size_t) r * ldsrc + i];
}

#define RUN(op, s, w, bias, d, s1) do { \
	if (op_run(&(op), (s), (w), (bias), (d), (s1), eng->scratch) != PN_OK) \
		return pn_seterr(err, PN_EENGINE, "oneDNN failed to execute a matmul"); \
	if ((op).mul_after) \
		mul_rows((float *) (d), (op).N, (const float *) (s1), (op).N, eng->tile, (op).N); \
} while (0)

/*
 * One tile: x0 filled (M rows), logits [M, T] out.  The plan's layers in
 * order: every task's tower layer 1 is one primitive (at task 0's layer),
 * the output layers and aux layer 2 dot products per row in a fixed order.
 */
static int
engine_tile(PnEngine *eng, const PnDomainCache *dc, const PnPackedDomain *pd, const PnPersona *pp, PnError *err)
{
	const PnModel *m = eng->m;
	const PnConfig *c = &m->cfg;
	const PnPlan *pl = m->plan;
	int			M = eng->tile,
				n0 = pl->width[PN_ACT_X0],
				T = c->ntasks,
				L = c->nhidden,
				li,
				r;
	size_t		es = eng->precision == PN_BF16 ? 2 : 4;
	char	   *a = eng->a,
			   *b = eng->b;

	if (eng->precision == PN_BF16)
		to_bf16(eng->x0, eng->x0h, (size_t) M * n0);
	for (li = 0; li < pl->nlayers; li++)
	{
		const PnLayer *ly = PN_LAYER(m, li);

		switch (ly->part)
		{
			case PN_PART_EPNET:
				if (ly->step == 1)
					RUN(eng->ep1, eng->x0h, eng->p_ep1, dc->ep_bias, eng->eh, NULL);
				else
					RUN(eng->ep2, eng->eh, eng->p_ep2, PN_T(m, ly->b), eng->x, eng->x0);
				break;
			case PN_PART_TOWER:
				if (ly->layer == 1)
				{
					if (ly->task == 0)
						RUN(eng->tw1, eng->x, PN_ALIGN64(pd->w1), dc->b1, a, NULL);
				}
				else
				{
					/* task t's columns of a, contiguous, through layer l, into its columns of b */
					int			hp = ly->nin,
								h = ly->nout,
								t = ly->task,
								x = PN_TW(c, t, ly->layer);
					size_t		oes = (c->ppnet || ly->layer < L) ? es : 4;

					for (r = 0; r < M; r++)
						memcpy((char *) eng->ts + (size_t) r * hp * es, a + ((size_t) r * T * hp + (size_t) t * hp) * es, hp * es);
					RUN(eng->twl[ly->layer - 1], eng->ts, PN_ALIGN64(pd->w[x]), dc->b[x], eng->td, NULL);
					for (r = 0; r < M; r++)
						memcpy(b + ((size_t) r * T * h + (size_t) t * h) * oes, (char *) eng->td + (size_t) r * h * oes, h * oes);
					if (t == T - 1)
					{
						char	   *s = a;

						a = b;
						b = s;
					}
				}
				break;
			case PN_PART_PPNET:
				if (ly->step == 1)
					RUN(eng->g1[ly->layer], eng->x, eng->p_g1[ly->layer], pp->gbias[ly->layer], eng->gh, NULL);
				else
				{
					char	   *s = a;

					RUN(eng->g2[ly->layer], eng->gh, eng->p_g2[ly->layer], PN_T(m, ly->b), b, a);
					a = b;
					b = s;
				}
				break;
			case PN_PART_OUTPUT:
				{
					/* logit_t = w*_t . a_L,t + c*_t per row */
					int			hL = ly->nin,
								t = ly->task,
								x = PN_TW(c, t, ly->layer);
					const float *aL = (const float *) a;

					for (r = 0; r < M; r++)
						eng->logit[r * T + t] = pn_dot(aL + (size_t) r * T * hL + t * hL, dc->w[x], hL) + dc->b[x][0];
				}
				break;
			case PN_PART_AUX:
				if (ly->step == 1)
					RUN(eng->aux1, eng->x0h, eng->p_aux1, dc->aux_bias, eng->ah, NULL);
				else
				{
					int			ha = ly->nin,
								t;

					for (r = 0; r < M; r++)
						for (t = 0; t < T; t++)
							eng->logit[r * T + t] += pn_dot(eng->ah + (size_t) r * ha, PN_T(m, ly->w) + (size_t) t * ha, ha)
								+ PN_T(m, ly->b)[t];
				}
				break;
		}
	}
	return PN_OK;
}

/*
 * Score n candidates of one request (domain of dc, persona pp) in tiles:
 * features [n, F], dense [n, Nd], out [n, T] probabilities.  err->row is
 * the 0-based candidate of an error.
 */
/*
 * The bags of rows done.. of a block: view [F] of fbag with the offsets of
 * the multi-valued fields advanced by done; NULL when fbag is
 */
static const PnBag *
bag_view(const PnConfig *c, PnBag *view, const PnBag *fbag, int64_t done)
{
	int			i;

	if (fbag == NULL)
		return NULL;
	for (i = 0; i < c->nfeat; i++)
		if (c->feat[i].pooling != PN_POOL_NONE)
		{
			view[i] = fbag[i];
			view[i].off = fbag[i].off + done;
		}
	return view;
}

static int	engine_tiles(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
						 const int64_t *features, const PnBag *fbag, PnBag *view, const float *dense,
						 double *out, float *lout, void (*interrupt) (void), PnError *err);

/* the tiles of pn_engine_score; probabilities into out, or logits into lout when out is NULL */
static int
engine_score(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
			 const int64_t *features, const PnBag *fbag, const float *dense, double *out, float *lout,
			 void (*interrupt) (void), PnError *err)
{
	PnBag	   *view = NULL;
	int			rc;

	if (fbag != NULL && eng->m->cfg.bags)
	{
		view = pn_alloc(sizeof(PnBag) * (size_t) eng->m->cfg.nfeat);
		if (view == NULL)
			return pn_seterr(err, PN_ENOMEM, "out of memory");
	}
	rc = engine_tiles(eng, dc, pp, n, features, view ? fbag : NULL, view, dense, out, lout, interrupt, err);
	pn_free(view);
	return rc;
}

static int
engine_tiles(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
			 const int64_t *features, const PnBag *fbag, PnBag *view, const float *dense,
			 double *out, float *lout, void (*interrupt) (void), PnError *err)
{
	const PnModel *m = eng->m;
	const PnConfig *c = &m->cfg;
	int			M = eng->tile,
				T = c->ntasks,
				rc;
	int64_t		done;
	PnPackedDomain *pd;

	if (eng->fallback)
	{
		PnFallback *fb = eng->fb;
		PnFallbackDomain *fd = fb->dom[dc->domain];
		float		lg[PN_FALLBACK_BLOCK * PN_MAX_TASKS];
		int			l;

		if (fd == NULL)
			return pn_seterr(err, PN_EENGINE, "domain %d was not prepared for scoring", dc->domain);
		/*
		 * the x block's biases of this request: the domain's tower layer 1
		 * (the layers that read xn), the persona's gates (those that read x)
		 */
		for (l = 0; l < m->plan->nlayers; l++)
		{
			const PnLayer *ly = PN_LAYER(m, l);

			if (ly->in == PN_ACT_XN)
				memcpy(fb->bx + (size_t) ly->task * ly->nout, dc->b1 + (size_t) ly->task * ly->nout,
					   sizeof(float) * ly->nout);
			else if (ly->in == PN_ACT_X)
				memcpy(fb->bx + fb->goff[ly->layer], pp->gbias[ly->layer], sizeof(float) * ly->nout);
		}
		for (done = 0; done < n; done += PN_FALLBACK_BLOCK)
		{
			int			nb = (int) (n - done < PN_FALLBACK_BLOCK ? n - done : PN_FALLBACK_BLOCK),
						i;

			if (interrupt)
				interrupt();
			if ((rc = pn_gather_x0(m, nb, features ? features + done * c->nfeat : NULL,
								   bag_view(c, view, fbag, done), dense ? dense + done * c->dense : NULL,
								   fb->x0, err)) != PN_OK)
			{
				if (err->row >= 0)
					err->row += done;
				return rc;
			}
			pn_x0_domain(m, dc->domain, nb, fb->x0);
			fallback_block(m, fb, dc, fd, nb, lg);
			if (fb->dnn_failed)
				return pn_seterr(err, PN_EENGINE, "oneDNN failed to execute an int8 matmul");
			for (i = 0; i < nb * T; i++)
			{
				float		v = lg[i];

				if (isnan(v))
					return pn_overflow_error(c, done + i / T, err);
				if (out)
					out[(size_t) (done * T) + i] = pn_sigmoidd(v);
				else
					lout[(size_t) (done * T) + i] = v;
			}
		}
		return PN_OK;
	}
	pd = eng->dom[dc->domain];
	if (pd == NULL)
		return pn_seterr(err, PN_EENGINE, "domain %d was not prepared for scoring", dc->domain);
	for (done = 0; done < n; done += M)
	{
		int			nb = (int) (n - done < M ? n - done : M),
					i;

		if (interrupt)
			interrupt();
		if ((rc = pn_gather_x0(m, nb, features ? features + done * c->nfeat : NULL,
							   bag_view(c, view, fbag, done), dense ? dense + done * c->dense : NULL,
							   eng->x0, err)) != PN_OK)
		{
			if (err->row >= 0)
				err->row += done;
			return rc;
		}
		pn_x0_domain(m, dc->domain, nb, eng->x0);
		if (nb < M)
			memset(eng->x0 + (size_t) nb * c->n0, 0, sizeof(float) * (size_t) (M - nb) * c->n0);
		if ((rc = engine_tile(eng, dc, pd, pp, err)) != PN_OK)
			return rc;
		for (i = 0; i < nb * T; i++)
		{
			float		v = eng->logit[i];

			if (isnan(v))
				return pn_overflow_error(c, done + i / T, err);
			if (out)
				out[(size_t) (done * T) + i] = pn_sigmoidd(v);
			else
				lout[(size_t) (done * T) + i] = v;
		}
	}
	dnnl_stream_wait(pn_dnnl_stream);
	return PN_OK;
}

int
pn_engine_score(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
				const int64_t *features, const float *dense, double *out,
				void (*interrupt) (void), PnError *err)
{
	return engine_score(eng, dc, pp, n, features, NULL, dense, out, NULL, interrupt, err);
}

int
pn_engine_score_bags(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
					 const int64_t *features, const PnBag *fbag, const float *dense, double *out,
					 void (*interrupt) (void), PnError *err)
{
	return engine_score(eng, dc, pp, n, features, fbag, dense, out, NULL, interrupt, err);
}

int
pn_engine_logits_bags(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
					  const int64_t *features, const PnBag *fbag, const float *dense, float *logits,
					  void (*interrupt) (void), PnError *err)
{
	return engine_score(eng, dc, pp, n, features, fbag, dense, NULL, logits, interrupt, err);
}

int
pn_engine_logits(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
				 const int64_t *features, const float *dense, float *logits,
				 void (*interrupt) (void), PnError *err)
{
	return engine_score(eng, dc, pp, n, features, NULL, dense, NULL, logits, interrupt, err);
}

/* Whether the engine runs oneDNN matmuls (false: the row-wise fallback of a CPU without brgemm) */
bool
pn_engine_onednn(const PnEngine *eng)
{
	return !eng->fallback || eng->fb->dnn;
}

int
pn_engine_tile(const PnEngine *eng)
{
	return eng->tile;
}
