/*
 * gemm.c
 *		The matmul of the engine's row-wise fallback (engine.c, CPUs without
 *		oneDNN brgemm): C [M, N] = epi(bias + A [M, K] W [N, K]^T) with W
 *		packed once (per version or domain) into panels of 16 output columns,
 *		Wp [ceil(N / 16)][K][16] (the last panel's missing columns zero), and
 *		the post-op applied to each register block before it is stored:
 *		none, relu, or GateNU's gamma * sigmoid(.) times X [M, N].
 *
 * Order of summation.  Every element is bias + s_0 + s_1 + ... (left to
 * right), s_c the sum over the c-th chunk of PN_PANEL_KC inner indices
 * k, each chunk a chain of fused multiply-adds from 0 in k order.  That
 * depends on K alone: not on M, nor on which rows or columns share a
 * register block, nor on a row's position, so identical rows get
 * bit-identical results wherever they stand and however a request is cut
 * into blocks.  The chunks bound the rounding error as pairwise blocks do
 * (a chain of at most PN_PANEL_KC terms, then K / PN_PANEL_KC partial sums).
 *
 * Kernels (AVX2 + FMA): outer products of broadcast A elements and rows of
 * a panel (8 or 16 columns per vector pair), no horizontal sums.  Blocks of
 * 6 rows x 1 panel (12 accumulators) for the bulk; the M mod 6 rows that
 * remain in blocks of R rows x P panels with R * 2P accumulators (1 x 4,
 * 2 x 2, 3 x 2, 4 x 1, 5 x 1), so that a request of 1 to 5 candidates
 * streams each weight once and still has enough independent accumulators
 * for the FMA latency.  Panels outer, rows inner: a panel (16 K floats)
 * stays in L1 while every row block of the call passes it.  Elsewhere
 * fmaf in the same order (the same bits, slowly).
 */
#include "pncore.h"
#include "pninternal.h"
#include "vmath.h"
#include "sigmoid8.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define PN_PANEL 16				/* output columns per panel */
#define PN_PANEL_KC 64			/* inner indices per chunk of the sum */

size_t
pn_panels_floats(int N, int K)
{
	return (size_t) ((N + PN_PANEL - 1) / PN_PANEL) * PN_PANEL * K;
}

void
pn_panels_pack(int N, int K, const float *W, int ldw, float *Wp)
{
	int			p,
				k,
				j,
				np = (N + PN_PANEL - 1) / PN_PANEL;

	for (p = 0; p < np; p++)
		for (k = 0; k < K; k++)
		{
			float	   *d = Wp + ((size_t) p * K + k) * PN_PANEL;

			for (j = 0; j < PN_PANEL; j++)
			{
				int			col = p * PN_PANEL + j;

				d[j] = col < N ? W[(size_t) col * ldw + k] : 0.0f;
			}
		}
}

/* one element's post-op, scalar */
static inline float
epi1(float s, int epi, float gamma, float x)
{
	if (epi == PN_EPI_RELU)
		return s > 0.0f ? s : 0.0f;
	if (epi == PN_EPI_GATE)
	{
		pn_sigmoid_scale(&s, 1, gamma);
		return s * x;
	}
	return s;
}

static void
gemm_panels_portable(int M, int N, int K, const float *A, int lda, const float *Wp, const float *bias,
					 float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	int			r,
				j,
				k,
				kc;

	for (r = 0; r < M; r++)
		for (j = 0; j < N; j++)
		{
			const float *a = A + (size_t) r * lda,
					   *w = Wp + (size_t) (j / PN_PANEL) * K * PN_PANEL + j % PN_PANEL;
			float		t = bias[j];

			for (kc = 0; kc < K; kc += PN_PANEL_KC)
			{
				int			ke = kc + PN_PANEL_KC < K ? kc + PN_PANEL_KC : K;
				float		s = 0.0f;

				for (k = kc; k < ke; k++)
					s = fmaf(a[k], w[(size_t) k * PN_PANEL], s);
				t = t + s;
			}
			C[(size_t) r * ldc + j] = epi1(t, epi, gamma, X ? X[(size_t) r * ldx + j] : 0.0f);
		}
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PN_AVX2 __attribute__((target("avx2,fma")))
#define PN_INLINE __attribute__((always_inline)) inline

PN_DEFINE_SIGMOID8(sigmoid8, PN_AVX2)

/* lanes 0..n-1 set, n in 0..8 */
static PN_INLINE PN_AVX2 __m256i
lanes(int n)
{
	static const int32_t m[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

	return _mm256_loadu_si256((const __m256i *) (m + 8 - n));
}

static PN_INLINE PN_AVX2 __m256
load8(const float *p, int n)
{
	if (n <= 0)
		return _mm256_setzero_ps();
	return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lanes(n));
}

static PN_INLINE PN_AVX2 void
store8(float *p, __m256 v, int n)
{
	if (n >= 8)
		_mm256_storeu_ps(p, v);
	else
		_mm256_maskstore_ps(p, lanes(n), v);
}

/*
 * R rows x P panels at A, Wp (panel stride K * 16), columns j0.. of C
 * (ncol of them valid, <= 16 P); R and P are constants at each call
 */
static PN_INLINE PN_AVX2 void
kern(const int R, const int P, int K, const float *A, int lda, const float *Wp, const float *bias, int ncol,
	 float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	__m256		acc[6][8];
	float		tot[6][8 * 8] __attribute__((aligned(32)));
	size_t		ps = (size_t) K * PN_PANEL;
	int			r,
				v,
				k,
				kc;

	/* the totals start at the bias */
	for (v = 0; v < 2 * P; v++)
	{
		__m256		b = load8(bias + v * 8, ncol - v * 8);

		for (r = 0; r < R; r++)
			_mm256_store_ps(&tot[r][v * 8], b);
	}
	for (kc = 0; kc < K; kc += PN_PANEL_KC)
	{
		int			ke = kc + PN_PANEL_KC < K ? kc + PN_PANEL_KC : K;

		for (r = 0; r < R; r++)
			for (v = 0; v < 2 * P; v++)
				acc[r][v] = _mm256_setzero_ps();
		for (k = kc; k < ke; k++)
		{
			__m256		w[8];

			for (v = 0; v < 2 * P; v++)
				w[v] = _mm256_load_ps(Wp + (size_t) (v >> 1) * ps + (size_t) k * PN_PANEL + (v & 1) * 8);
			for (r = 0; r < R; r++)
			{
				__m256		a = _mm256_broadcast_ss(A + (size_t) r * lda + k);

				for (v = 0; v < 2 * P; v++)
					acc[r][v] = _mm256_fmadd_ps(a, w[v], acc[r][v]);
			}
		}
		for (r = 0; r < R; r++)
			for (v = 0; v < 2 * P; v++)
				_mm256_store_ps(&tot[r][v * 8], _mm256_add_ps(_mm256_load_ps(&tot[r][v * 8]), acc[r][v]));
	}
	/* the post-op, then the store */
	for (r = 0; r < R; r++)
		for (v = 0; v < 2 * P; v++)
		{
			int			n = ncol - v * 8;
			__m256		s;

			if (n <= 0)
				break;
			s = _mm256_load_ps(&tot[r][v * 8]);
			if (epi == PN_EPI_RELU)
				s = _mm256_max_ps(s, _mm256_setzero_ps());
			else if (epi == PN_EPI_GATE)
				s = _mm256_mul_ps(sigmoid8(s, _mm256_set1_ps(gamma)), load8(X + (size_t) r * ldx + v * 8, n));
			store8(C + (size_t) r * ldc + v * 8, s, n);
		}
}

#define KERN(R, P) kern(R, P, K, A + (size_t) (r) * lda, lda, Wp + (size_t) p * ps, bias + j0, \
						N - j0 < (P) * PN_PANEL ? N - j0 : (P) * PN_PANEL, C + (size_t) (r) * ldc + j0, ldc, epi, gamma, \
						X ? X + (size_t) (r) * ldx + j0 : NULL, ldx)

static PN_AVX2 void
gemm_panels_avx2(int M, int N, int K, const float *A, int lda, const float *Wp, const float *bias,
				 float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	int			np = (N + PN_PANEL - 1) / PN_PANEL,
				M6 = M - M % 6,
				tail = M - M6,
				tp = tail == 1 ? 4 : tail == 2 || tail == 3 ? 2 : 1,	/* panels per tail block */
				p0,
				p,
				r;
	size_t		ps = (size_t) K * PN_PANEL;

	for (p0 = 0; p0 < np; p0 += tp)
	{
		int			pe = p0 + tp < np ? p0 + tp : np;

		for (p = p0; p < pe; p++)
		{
			int			j0 = p * PN_PANEL;

			for (r = 0; r < M6; r += 6)
				KERN(6, 1);
		}
		if (tail == 0)
			continue;
		p = p0;
		r = M6;
		{
			int			j0 = p * PN_PANEL;

			switch (tail * 8 + (pe - p0))
			{
				case 1 * 8 + 4:
					KERN(1, 4);
					break;
				case 1 * 8 + 3:
					KERN(1, 3);
					break;
				case 1 * 8 + 2:
					KERN(1, 2);
					break;
				case 1 * 8 + 1:
					KERN(1, 1);
					break;
				case 2 * 8 + 2:
					KERN(2, 2);
					break;
				case 2 * 8 + 1:
					KERN(2, 1);
					break;
				case 3 * 8 + 2:
					KERN(3, 2);
					break;
				case 3 * 8 + 1:
					KERN(3, 1);
					break;
				case 4 * 8 + 1:
					KERN(4, 1);
					break;
				case 5 * 8 + 1:
					KERN(5, 1);
					break;
			}
		}
	}
}
#undef KERN
#endif

void
pn_gemm_panels(int M, int N, int K, const float *A, int lda, const float *Wp, const float *bias,
			   float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	if (M <= 0 || N <= 0)
		return;
#if defined(__x86_64__) && defined(__GNUC__)
	if (pn_gemm_rows_avx2())
	{
		gemm_panels_avx2(M, N, K, A, lda, Wp, bias, C, ldc, epi, gamma, X, ldx);
		return;
	}
#endif
	gemm_panels_portable(M, N, K, A, lda, Wp, bias, C, ldc, epi, gamma, X, ldx);
}
