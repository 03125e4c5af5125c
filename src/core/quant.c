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
 *   activations  the same rule per row m of the matmul's input A [M, K]
 *                (each candidate separately, at each matmul): sa[m], qa[m,k]
 *   a zero row (amax == 0, or so small that 127.0f / amax overflows float:
 *   amax < 3.74e-37) has scale 0 and every q 0
 *   acc[m,n] = sum_k qa[m,k] q[n,k]             exact, int32
 *   y[m,n]   = fmaf((float) acc[m,n], sa[m] * sw[n], bias[n])
 *   then the layer's post-op in float: none, relu, or GateNU's
 *   gamma * sigmoid(y) * X[m,n] (pn_sigmoid_scale, vmath.h).
 * rint rounds half to even (the default rounding mode).  The clamp follows
 * the x86 min/max rule (a NaN product becomes 127), so the scalar and the
 * AVX2 code agree on every input.  A row's result depends on its own inputs
 * only: identical candidates get identical bits wherever they stand, in
 * requests of any size and tiles of any height.
 *
 * The fallback's layout (CPUs without oneDNN's int8 brgemm): values in
 * int16 lanes, rows padded with zeros to Kp = K rounded up to 16; AVX2's
 * vpmaddwd multiplies 16 pairs into 8 int32 sums per instruction with no
 * saturation (|q| <= 127), so the sums are exact for K <= PN_Q8_MAX_K.
 * Packed weights (pn_q8_bytes): sw [N] floats, then q [N, Kp] int16 at the
 * next 64-byte boundary.  Elsewhere portable C gives the same bits.
 */
#include "pncore.h"
#include "pninternal.h"

#include <float.h>
#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
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

/* the row's scale: sw (or sa); *inv = 127 / amax, 0 for a zero row */
float
pn_q8_scale(const float *x, int n, float *inv)
{
	float		m = 0.0f,
				r;
	int			i;

	for (i = 0; i < n; i++)
	{
		float		a = fabsf(x[i]);

		m = a > m ? a : m;
	}
	r = 127.0f / m;
	if (!(m > 0.0f) || !(r <= FLT_MAX))
	{
		*inv = 0.0f;
		return 0.0f;
	}
	*inv = r;
	return m / 127.0f;
}

/* one value: rint(v) clamped to [-127, 127] as vminps / vmaxps do (NaN -> 127) */
static inline int
q127(float v)
{
	v = v < 127.0f ? v : 127.0f;
	v = v > -127.0f ? v : -127.0f;
	return (int) nearbyintf(v);
}

#ifdef PN_Q8_X86
/* q[i] for i < n & ~15 (int16 lanes); returns n & ~15 */
static PN_AVX2 int
quantize16_avx2(const float *x, int n, float inv, int16_t *q)
{
	__m256		vinv = _mm256_set1_ps(inv),
				hi = _mm256_set1_ps(127.0f),
				lo = _mm256_set1_ps(-127.0f);
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
quantize_row16(const float *x, int n, int Kp, int16_t *q)
{
	float		inv,
				s = pn_q8_scale(x, n, &inv);
	int			i = 0;

	if (s == 0.0f)
	{
		memset(q, 0, sizeof(int16_t) * (size_t) Kp);
		return 0.0f;
	}
#ifdef PN_Q8_X86
	if (use_avx2())
		i = quantize16_avx2(x, n, inv, q);
#endif
	for (; i < n; i++)
		q[i] = (int16_t) q127(x[i] * inv);
	for (; i < Kp; i++)
		q[i] = 0;
	return s;
}

void
pn_q8_rows16(int M, int K, const float *A, int lda, int16_t *qa, float *sa)
{
	int			Kp = PN_Q8_KP(K),
				m;

	for (m = 0; m < M; m++)
		sa[m] = quantize_row16(A + (size_t) m * lda, K, Kp, qa + (size_t) m * Kp);
}

void
pn_q8_rows8(int M, int K, const float *A, int lda, int8_t *q, int ldq, float *sa)
{
	int			m,
				i;

	for (m = 0; m < M; m++)
	{
		const float *x = A + (size_t) m * lda;
		int8_t	   *d = q + (size_t) m * ldq;
		float		inv;

		sa[m] = pn_q8_scale(x, K, &inv);
		if (sa[m] == 0.0f)
			memset(d, 0, K);
		else
			for (i = 0; i < K; i++)
				d[i] = (int8_t) q127(x[i] * inv);
	}
}

size_t
pn_q8_bytes(int N, int K)
{
	return (((size_t) (N > 0 ? N : 1) * sizeof(float) + 63) & ~(size_t) 63) + sizeof(int16_t) * (size_t) N * PN_Q8_KP(K);
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
	int16_t    *q = (int16_t *) q8_values(out, N);

	pn_q8_rows16(N, K, W, ldw, q, sw);
}

const float *
pn_q8_sw(const void *wq)
{
	return wq;
}

/* ---- the int8 matmul: acc [M, N] = qa [M, Kp] q [N, Kp]^T ---- */

static void
q8_gemm_portable(int M, int N, int Kp, const int16_t *qa, const int16_t *qw, int32_t *acc, int ldacc)
{
	int			m,
				n,
				k;

	for (m = 0; m < M; m++)
		for (n = 0; n < N; n++)
		{
			const int16_t *a = qa + (size_t) m * Kp,
					   *b = qw + (size_t) n * Kp;
			int32_t		s = 0;

			for (k = 0; k < Kp; k++)
				s += (int32_t) a[k] * b[k];
			acc[(size_t) m * ldacc + n] = s;
		}
}

#ifdef PN_Q8_X86
static inline PN_AVX2 int32_t
hsum_epi32(__m256i v)
{
	__m128i		s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
	return _mm_cvtsi128_si32(s);
}

#define PN_ACC(c, r, j) (acc[(size_t) (m + (r)) * ldacc + n + (j)] = hsum_epi32(c))
#define PN_LD(p) _mm256_loadu_si256((const __m256i *) (p))

/*
 * Blocks of 4 rows x 2 columns: 8 accumulators, 6 loads per 8 vpmaddwd;
 * integer sums, so any order gives the same result
 */
static PN_AVX2 void
q8_gemm_avx2(int M, int N, int Kp, const int16_t *qa, const int16_t *qw, int32_t *acc, int ldacc)
{
	int			M4 = M & ~3,
				m,
				n,
				k;

	for (n = 0; n + 2 <= N; n += 2)
	{
		const int16_t *w0 = qw + (size_t) n * Kp,
				   *w1 = w0 + Kp;

		for (m = 0; m < M4; m += 4)
		{
			const int16_t *a0 = qa + (size_t) m * Kp,
					   *a1 = a0 + Kp,
					   *a2 = a1 + Kp,
					   *a3 = a2 + Kp;
			__m256i		c00 = _mm256_setzero_si256(),
						c01 = _mm256_setzero_si256(),
						c10 = _mm256_setzero_si256(),
						c11 = _mm256_setzero_si256(),
						c20 = _mm256_setzero_si256(),
						c21 = _mm256_setzero_si256(),
						c30 = _mm256_setzero_si256(),
						c31 = _mm256_setzero_si256();

			for (k = 0; k < Kp; k += 16)
			{
				__m256i		v0 = PN_LD(w0 + k),
							v1 = PN_LD(w1 + k),
							x;

				x = PN_LD(a0 + k);
				c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x, v0));
				c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x, v1));
				x = PN_LD(a1 + k);
				c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(x, v0));
				c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(x, v1));
				x = PN_LD(a2 + k);
				c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(x, v0));
				c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(x, v1));
				x = PN_LD(a3 + k);
				c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(x, v0));
				c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(x, v1));
			}
			PN_ACC(c00, 0, 0);
			PN_ACC(c01, 0, 1);
			PN_ACC(c10, 1, 0);
			PN_ACC(c11, 1, 1);
			PN_ACC(c20, 2, 0);
			PN_ACC(c21, 2, 1);
			PN_ACC(c30, 3, 0);
			PN_ACC(c31, 3, 1);
		}
		for (; m < M; m++)
		{
			const int16_t *a0 = qa + (size_t) m * Kp;
			__m256i		c00 = _mm256_setzero_si256(),
						c01 = _mm256_setzero_si256();

			for (k = 0; k < Kp; k += 16)
			{
				__m256i		x = PN_LD(a0 + k);

				c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x, PN_LD(w0 + k)));
				c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x, PN_LD(w1 + k)));
			}
			PN_ACC(c00, 0, 0);
			PN_ACC(c01, 0, 1);
		}
	}
	for (; n < N; n++)
	{
		const int16_t *w0 = qw + (size_t) n * Kp;

		for (m = 0; m < M; m++)
		{
			const int16_t *a0 = qa + (size_t) m * Kp;
			__m256i		c00 = _mm256_setzero_si256();

			for (k = 0; k < Kp; k += 16)
				c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(PN_LD(a0 + k), PN_LD(w0 + k)));
			PN_ACC(c00, 0, 0);
		}
	}
}
#undef PN_ACC
#undef PN_LD
#endif

void
pn_q8_gemm(int M, int N, int K, const int16_t *qa, const void *wq, int32_t *acc, int ldacc)
{
	int			Kp = PN_Q8_KP(K);

	if (M <= 0 || N <= 0)
		return;
#ifdef PN_Q8_X86
	if (use_avx2())
	{
		q8_gemm_avx2(M, N, Kp, qa, q8_values(wq, N), acc, ldacc);
		return;
	}
#endif
	q8_gemm_portable(M, N, Kp, qa, q8_values(wq, N), acc, ldacc);
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

void
pn_q8_epilogue(int M, int N, const int32_t *acc, int ldacc, const float *sa, const float *sw, const float *bias,
			   float *C, int ldc, int epi, float gamma, const float *X, int ldx)
{
	float		y[PN_Q8_CHUNK];
	int			m,
				j0,
				j;

	for (m = 0; m < M; m++)
		for (j0 = 0; j0 < N; j0 += PN_Q8_CHUNK)
		{
			int			n = N - j0 < PN_Q8_CHUNK ? N - j0 : PN_Q8_CHUNK;
			const int32_t *a = acc + (size_t) m * ldacc + j0;
			float	   *c = C + (size_t) m * ldc + j0;

			j = 0;
#ifdef PN_Q8_X86
			if (use_avx2())
				j = dequant_avx2(n, a, sa[m], sw + j0, bias + j0, y);
#endif
			for (; j < n; j++)
				y[j] = fmaf((float) a[j], sa[m] * sw[j0 + j], bias[j0 + j]);
			if (epi == PN_EPI_RELU)
				for (j = 0; j < n; j++)
					c[j] = y[j] > 0.0f ? y[j] : 0.0f;
			else if (epi == PN_EPI_GATE)
			{
				const float *x = X + (size_t) m * ldx + j0;

				pn_sigmoid_scale(y, n, gamma);
				for (j = 0; j < n; j++)
					c[j] = y[j] * x[j];
			}
			else
				memcpy(c, y, sizeof(float) * n);
		}
}

/* ---- a whole layer of the fallback ---- */

void
pn_q8_layer(int M, int N, int K, const float *A, int lda, const void *wq, const float *bias,
			float *C, int ldc, int epi, float gamma, const float *X, int ldx, PnQ8Work *ws)
{
	if (M <= 0 || N <= 0)
		return;
	pn_q8_rows16(M, K, A, lda, ws->qa, ws->sa);
	pn_q8_gemm(M, N, K, ws->qa, wq, ws->acc, N);
	pn_q8_epilogue(M, N, ws->acc, N, ws->sa, pn_q8_sw(wq), bias, C, ldc, epi, gamma, X, ldx);
}
