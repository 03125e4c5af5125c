/*
 * quant.c
 *		int8 scoring (pepnet.precision = 'int8'): the quantizers, the packed
 *		int8 weights of the engine's fallback, its int8 matmul with exact
 *		int32 sums, and the one epilogue shared by the fallback and the
 *		oneDNN int8 tiles (engine.c), so that both give the same bits.
 *
 * The arithmetic (docs/model.md "int8 scoring"):
 *   weights      per output channel n of W [N, K]: amax = max_k |W[n,k]|,
 *                sw[n] = amax / 127.0f,
 *                q[n,k] = clamp(rint(W[n,k] * (127.0f / amax)), -127, 127)
 *   activations  per row m of the matmul's input A [M, K] (each candidate
 *                separately, at each matmul), by the layer's kind (the
 *                plan's input, not the values):
 *                s8, a signed input (x0, x: EPNet's, aux's, the towers'
 *                and the gates' layer 1): the weights' rule, sa[m], qa[m,k]
 *                in [-127, 127];
 *                u8, an input nonnegative by construction (relu outputs,
 *                gated or not: EPNet's and the gates' layer 2, the tower
 *                layers >= 2): amax = max_k |A[m,k]|, sa[m] = amax / 255.0f,
 *                qa[m,k] = clamp(rint(A[m,k] * (255.0f / amax)), 0, 255)
 *                (a negative value, which these inputs never hold, clamps
 *                to 0): twice the resolution of s8
 *   a zero row (amax == 0, or so small that 127.0f / amax (255.0f / amax)
 *   overflows float: amax < 3.74e-37 (7.5e-37)) has scale 0 and every q 0
 *   acc[m,n] = sum_k qa[m,k] q[n,k]             exact, int32
 *                (K * 255 * 127 < 2^31: K <= PN_Q8_MAX_K)
 *   y[m,n]   = fmaf((float) acc[m,n], sa[m] * sw[n], bias[n])
 *   then the layer's post-op in float: none, relu, or GateNU's
 *   gamma * sigmoid(y) * X[m,n] (pn_sigmoid_scale, vmath.h).
 * rint rounds half to even (the default rounding mode).  The clamp follows
 * the x86 min/max rule (a NaN product becomes 127, or 255), so the scalar and the
 * AVX2 code agree on every input.  A row's result depends on its own inputs
 * only: identical candidates get identical bits wherever they stand, in
 * requests of any size and tiles of any height.
 *
 * The fallback's layout (CPUs without oneDNN's int8 brgemm): values in
 * int16 lanes (s8 and u8 inputs alike), input rows padded with zeros to
 * Kp = K rounded up to 16; AVX2's vpmaddwd multiplies 16 pairs into 8
 * int32 sums per instruction with no saturation (|qa| <= 255, |q| <= 127:
 * a pair's sum within 64,770), so the sums are exact for K <=
 * PN_Q8_MAX_K.  Packed weights (pn_q8_bytes): sw [N] floats, then the
 * values in panels of 8 output columns (pn_q8_pack).  Elsewhere portable C
 * gives the same bits.
 */
#include "pncore.h"
#include "pninternal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "sigmoid8.h"
#define PN_Q8_X86 1
#define PN_AVX2 __attribute__((target("avx2,fma")))
#endif

/* tests: the portable code even where AVX2 exists */
bool		pn_q8_portable = false;

static bool
use_avx2(void)
{
#ifdef PN_Q8_X86
	static int	have = -1;

	if (have < 0)
	{
		__builtin_cpu_init();
		have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
	}
	return have && !pn_q8_portable;
#else
	return false;
#endif
}

bool
pn_q8_avx2(void)
{
	return use_avx2();
}

/* the row's scale: sw (or sa); *inv = qmax / amax (qmax 127 or 255 for u8), 0 for a zero row */
float
pn_q8_scale(const float *x, int n, bool u8, float *inv)
{
	float		qmax = u8 ? 255.0f : 127.0f;
	float		m = 0.0f,
				r;
	int			i;

	for (i = 0; i < n; i++)
	{
		float		a = fabsf(x[i]);

		m = a > m ? a : m;
	}
	r = qmax / m;
	if (!(m > 0.0f) || !(r <= FLT_MAX))
	{
		*inv = 0.0f;
		return 0.0f;
	}
	*inv = r;
	return m / qmax;
}

/* one value: rint(v) clamped to [-127, 127] as vminps / vmaxps do (NaN -> 127) */
static inline int
q127(float v)
{
	v = v < 127.0f ? v : 127.0f;
	v = v > -127.0f ? v : -127.0f;
	return (int) nearbyintf(v);
}

/* one value: rint(v) clamped to [0, 255] the same way (NaN -> 255, negative -> 0) */
static inline int
q255(float v)
{
	v = v < 255.0f ? v : 255.0f;
	v = v > 0.0f ? v : 0.0f;
	return (int) nearbyintf(v);
}

#ifdef PN_Q8_X86
/* q[i] for i < n & ~15 (int16 lanes); returns n & ~15 */
static PN_AVX2 int
quantize16_avx2(const float *x, int n, float inv, bool u8, int16_t *q)
{
	__m256		vinv = _mm256_set1_ps(inv),
				hi = _mm256_set1_ps(u8 ? 255.0f : 127.0f),
				lo = _mm256_set1_ps(u8 ? 0.0f : -127.0f);
	int			i;

	for (i = 0; i + 16 <= n; i += 16)
	{
		__m256i		a = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv), hi), lo)),
					b = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vinv), hi), lo));

		/* packs interleaves 128-bit lanes: a0 b0 a1 b1 -> a0 a1 b0 b1 */
		_mm256_storeu_si256((__m256i *) (q + i), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), _MM_SHUFFLE(3, 1, 2, 0)));
	}
	return i;
}
#endif

/* one row of n values into q [Kp] int16 (zero padded); returns its scale */
static float
quantize_row16(const float *x, int n, int Kp, bool u8, int16_t *q)
{
	float		inv,
				s = pn_q8_scale(x, n, u8, &inv);
	int			i = 0;

	if (s == 0.0f)
	{
		memset(q, 0, sizeof(int16_t) * (size_t) Kp);
		return 0.0f;
	}
#ifdef PN_Q8_X86
	if (use_avx2())
		i = quantize16_avx2(x, n, inv, u8, q);
#endif
	if (u8)
		for (; i < n; i++)
			q[i] = (int16_t) q255(x[i] * inv);
	else
		for (; i < n; i++)
			q[i] = (int16_t) q127(x[i] * inv);
	for (; i < Kp; i++)
		q[i] = 0;
	return s;
}

void
pn_q8_rows16(int M, int K, const float *A, int lda, bool u8, int16_t *qa, float *sa)
{
	int			Kp = PN_Q8_KP(K),
				m;

	for (m = 0; m < M; m++)
		sa[m] = quantize_row16(A + (size_t) m * lda, K, Kp, u8, qa + (size_t) m * Kp);
}

/* rows into bytes: int8_t, or uint8_t for u8 (oneDNN's s8 and u8 sources) */
void
pn_q8_rows8(int M, int K, const float *A, int lda, bool u8, void *qv, int ldq, float *sa)
{
	int8_t	   *q = qv;
	int			m,
				i;

	for (m = 0; m < M; m++)
	{
		const float *x = A + (size_t) m * lda;
		int8_t	   *d = q + (size_t) m * ldq;
		float		inv;

		sa[m] = pn_q8_scale(x, K, u8, &inv);
		if (sa[m] == 0.0f)
			memset(d, 0, K);
		else if (u8)
			for (i = 0; i < K; i++)
				((uint8_t *) d)[i] = (uint8_t) q255(x[i] * inv);
		else
			for (i = 0; i < K; i++)
				d[i] = (int8_t) q127(x[i] * inv);
	}
}

/*
 * Packed weights: sw [N], then at the next 64 bytes the values in panels of
 * 8 output columns, each inner pair (k, k + 1) of the 8 columns one 32-byte
 * vector: q [ceil(N / 8)][K2][8][2] int16, K2 = ceil(K / 2), missing
 * columns and the odd K's last k zero.  vpmaddwd of a broadcast pair of a
 * row's values and one such vector gives 8 columns' partial sums, no
 * horizontal sums.
 */
#define PN_Q8_PANEL 8
#define PN_Q8_NP(N) (((N) + PN_Q8_PANEL - 1) / PN_Q8_PANEL)

size_t
pn_q8_bytes(int N, int K)
{
	return (((size_t) (N > 0 ? N : 1) * sizeof(float) + 63) & ~(size_t) 63) +
		sizeof(int16_t) * (size_t) PN_Q8_NP(N) * PN_Q8_PANEL * 2 * ((K + 1) / 2);
}

/* the parts of packed weights (out 64-byte aligned) */
static inline const int16_t *
q8_values(const void *wq, int N)
{
	return (const int16_t *) ((const char *) wq + (((size_t) (N > 0 ? N : 1) * sizeof(float) + 63) & ~(size_t) 63));
}

void
pn_q8_pack(int N, int K, const float *W, int ldw, void *out)
{
	float	   *sw = out;
	int16_t    *q = (int16_t *) q8_values(out, N),
			   *row = pn_alloc(sizeof(int16_t) * (size_t) PN_Q8_KP(K));
	int			K2 = (K + 1) / 2,
				n,
				j;

	memset(q, 0, sizeof(int16_t) * (size_t) PN_Q8_NP(N) * PN_Q8_PANEL * 2 * K2);
	for (n = 0; n < N; n++)
	{
		int16_t    *d = q + (size_t) (n / PN_Q8_PANEL) * K2 * PN_Q8_PANEL * 2 + (n % PN_Q8_PANEL) * 2;

		sw[n] = quantize_row16(W + (size_t) n * ldw, K, PN_Q8_KP(K), false, row);
		for (j = 0; j < K2; j++)
		{
			d[(size_t) j * PN_Q8_PANEL * 2] = row[2 * j];
			d[(size_t) j * PN_Q8_PANEL * 2 + 1] = row[2 * j + 1];
		}
	}
	pn_free(row);
}

const float *
pn_q8_sw(const void *wq)
{
	return wq;
}

/* ---- the int8 matmul: acc [M, N] = qa [M, Kp] q^T ---- */

static void
q8_gemm_portable(int M, int N, int K, const int16_t *qa, const int16_t *qw, int32_t *acc, int ldacc)
{
	int			K2 = (K + 1) / 2,
				Kp = PN_Q8_KP(K),
				m,
				n,
				j;

	for (m = 0; m < M; m++)
		for (n = 0; n < N; n++)
		{
			const int16_t *a = qa + (size_t) m * Kp,
					   *b = qw + (size_t) (n / PN_Q8_PANEL) * K2 * PN_Q8_PANEL * 2 + (n % PN_Q8_PANEL) * 2;
			int32_t		s = 0;

			for (j = 0; j < K2; j++)
				s += (int32_t) a[2 * j] * b[(size_t) j * PN_Q8_PANEL * 2] + (int32_t) a[2 * j + 1] * b[(size_t) j * PN_Q8_PANEL * 2 + 1];
			acc[(size_t) m * ldacc + n] = s;
		}
}

#ifdef PN_Q8_X86
#define PN_INLINE __attribute__((always_inline)) inline

/*
 * R rows x P panels (8 columns each) of acc from row a (row stride Kp) and
 * panel w (panel stride K2 * 16); ncol of the 8 P columns stored.  R and P
 * are constants at each call: R * P accumulators, P weight vectors, one
 * broadcast
 */
static PN_INLINE PN_AVX2 void
q8_kern(const int R, const int P, int K2, int Kp, const int16_t *a, const int16_t *w, int ncol, int32_t *acc,
		int ldacc)
{
	__m256i		c[4][3],
				v[3];
	int			r,
				p,
				j;
	size_t		ps = (size_t) K2 * PN_Q8_PANEL * 2;

	for (r = 0; r < R; r++)
		for (p = 0; p < P; p++)
			c[r][p] = _mm256_setzero_si256();
	for (j = 0; j < K2; j++)
	{
		for (p = 0; p < P; p++)
			v[p] = _mm256_load_si256((const __m256i *) (w + p * ps + (size_t) j * PN_Q8_PANEL * 2));
		for (r = 0; r < R; r++)
		{
			int32_t		pair;
			__m256i		b;

			memcpy(&pair, a + (size_t) r * Kp + 2 * j, sizeof(pair));
			b = _mm256_set1_epi32(pair);
			for (p = 0; p < P; p++)
				c[r][p] = _mm256_add_epi32(c[r][p], _mm256_madd_epi16(b, v[p]));
		}
	}
	for (r = 0; r < R; r++)
		for (p = 0; p < P; p++)
		{
			int32_t    *d = acc + (size_t) r * ldacc + p * PN_Q8_PANEL;
			int			n = ncol - p * PN_Q8_PANEL;

			if (n >= PN_Q8_PANEL)
				_mm256_storeu_si256((__m256i *) d, c[r][p]);
			else if (n > 0)
			{
				int32_t		t[PN_Q8_PANEL] __attribute__((aligned(32)));
				int			i;

				_mm256_store_si256((__m256i *) t, c[r][p]);
				for (i = 0; i < n && i < PN_Q8_PANEL; i++)
					d[i] = t[i];
			}
		}
}

#define Q8K(R, P) q8_kern(R, P, K2, Kp, qa + (size_t) m * Kp, qw + (size_t) p0 * ps, \
						  N - p0 * PN_Q8_PANEL < (P) * PN_Q8_PANEL ? N - p0 * PN_Q8_PANEL : (P) * PN_Q8_PANEL, \
						  acc + (size_t) m * ldacc + p0 * PN_Q8_PANEL, ldacc)

/* groups of 3 panels (24 columns) outer, blocks of 4 rows inner; integer sums: any order, the same result */
static PN_AVX2 void
q8_gemm_avx2(int M, int N, int K, const int16_t *qa, const int16_t *qw, int32_t *acc, int ldacc)
{
	int			K2 = (K + 1) / 2,
				Kp = PN_Q8_KP(K),
				np = PN_Q8_NP(N),
				M4 = M & ~3,
				p0,
				m;
	size_t		ps = (size_t) K2 * PN_Q8_PANEL * 2;

	for (p0 = 0; p0 < np; p0 += 3)
	{
		int			P = np - p0 < 3 ? np - p0 : 3;

		for (m = 0; m < M4; m += 4)
		{
			if (P == 3)
				Q8K(4, 3);
			else if (P == 2)
				Q8K(4, 2);
			else
				Q8K(4, 1);
		}
		for (; m < M; m++)
		{
			if (P == 3)
				Q8K(1, 3);
			else if (P == 2)
				Q8K(1, 2);
			else
				Q8K(1, 1);
		}
	}
}
#undef Q8K
#endif

void
pn_q8_gemm(int M, int N, int K, const int16_t *qa, const void *wq, int32_t *acc, int ldacc)
{
	if (M <= 0 || N <= 0)
		return;
#ifdef PN_Q8_X86
	if (use_avx2())
	{
		q8_gemm_avx2(M, N, K, qa, q8_values(wq, N), acc, ldacc);
		return;
	}
#endif
	q8_gemm_portable(M, N, K, qa, q8_values(wq, N), acc, ldacc);
}

/* ---- the epilogue ---- */

#define PN_Q8_CHUNK 256

#ifdef PN_Q8_X86
/* y[j] = fma((float) acc[j], sa * sw[j], bias[j]), j < n & ~7; returns n & ~7 */
static PN_AVX2 int
dequant_avx2(int n, const int32_t *acc, float sa, const float *sw, const float *bias, float *y)
{
	__m256		vsa = _mm256_set1_ps(sa);
	int			j;

	for (j = 0; j + 8 <= n; j += 8)
		_mm256_storeu_ps(y + j, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *) (acc + j))),
												_mm256_mul_ps(vsa, _mm256_loadu_ps(sw + j)), _mm256_loadu_ps(bias + j)));
	return j;
}
#endif

/*
 * The post-op of n values y of one row into c: relu, the gate (x the
 * row's input), or none.  Plain float operations without FMA: compiled for
 * AVX2 (post_avx2, 8 lanes) or not (SSE2), every element gets the same bits
 */
static inline __attribute__((always_inline)) void
post_row(int n, float *y, float *c, int epi, float gamma, const float *x)
{
	int			j;

	if (epi == PN_EPI_RELU)
		for (j = 0; j < n; j++)
			c[j] = y[j] > 0.0f ? y[j] : 0.0f;
	else if (epi == PN_EPI_GATE)
	{
		pn_sigmoid_scale(y, n, gamma);
		for (j = 0; j < n; j++)
			c[j] = y[j] * x[j];
	}
	else
		memcpy(c, y, sizeof(float) * n);
}

static void
post_portable(int n, float *y, float *c, int epi, float gamma, const float *x)
{
	post_row(n, y, c, epi, gamma, x);
}

#ifdef PN_Q8_X86
#define PN_AVX2_NOFMA __attribute__((target("avx2")))

/* compiled without FMA, so that nothing is contracted: the same bits as the scalar code */
PN_DEFINE_SIGMOID8(sigmoid8_exact, PN_AVX2_NOFMA)

static PN_AVX2_NOFMA void
post_avx2(int n, float *y, float *c, int epi, float gamma, const float *x)
{
	int			j = 0;

	if (epi == PN_EPI_GATE)
	{
		__m256		g = _mm256_set1_ps(gamma);

		for (; j + 8 <= n; j += 8)
			_mm256_storeu_ps(c + j, _mm256_mul_ps(sigmoid8_exact(_mm256_loadu_ps(y + j), g), _mm256_loadu_ps(x + j)));
	}
	else if (epi == PN_EPI_RELU)
		for (; j + 8 <= n; j += 8)
			_mm256_storeu_ps(c + j, _mm256_max_ps(_mm256_loadu_ps(y + j), _mm256_setzero_ps()));
	if (j < n)
		post_row(n - j, y + j, c + j, epi, gamma, x ? x + j : NULL);
}
#endif

void
pn_q8_epilogue(int M, int N, const int32_t *acc, int ldacc, const float *sa, const float *sw, const float *bias,
			   float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	float		y[PN_Q8_CHUNK];
	bool		avx2 = use_avx2();
	int			m,
				j0,
				j;

	for (m = 0; m < M; m++)
		for (j0 = 0; j0 < N; j0 += PN_Q8_CHUNK)
		{
			int			n = N - j0 < PN_Q8_CHUNK ? N - j0 : PN_Q8_CHUNK;
			const int32_t *a = acc + (size_t) m * ldacc + j0;
			float	   *c = C + (size_t) m * ldc + j0;
			const float *x = epi == PN_EPI_GATE ? X + (size_t) m * ldx + j0 : NULL;

			j = 0;
#ifdef PN_Q8_X86
			if (avx2)
				j = dequant_avx2(n, a, sa[m], sw + j0, bias + j0, y);
#endif
			for (; j < n; j++)
				y[j] = fmaf((float) a[j], sa[m] * sw[j0 + j], bias[j0 + j]);
#ifdef PN_Q8_X86
			if (avx2)
			{
				post_avx2(n, y, c, epi, gamma, x);
				continue;
			}
#endif
			post_portable(n, y, c, epi, gamma, x);
		}
}

/* ---- a whole layer of the fallback ---- */

void
pn_q8_layer(int M, int N, int K, const float *A, int lda, bool u8, const void *wq, const float *bias,
			float *C, int ldc, int epi, float gamma, const float *X, int ldx, PnQ8Work *ws)
{
	if (M <= 0 || N <= 0)
		return;
	pn_q8_rows16(M, K, A, lda, u8, ws->qa, ws->sa);
	pn_q8_gemm(M, N, K, ws->qa, wq, ws->acc, N);
	pn_q8_epilogue(M, N, ws->acc, N, ws->sa, pn_q8_sw(wq), bias, C, ldc, epi, gamma, X, ldx);
}
