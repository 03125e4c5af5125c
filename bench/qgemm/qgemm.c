/*
 * qgemm.c
 *		An int8 matmul: per-output-channel weight quantization, per-row
 *		dynamic activation quantization, exact int32 sums (pnquant.h has the
 *		arithmetic and why it lives in bench/).
 *
 * Shapes: A [M, K] fp32 activations (row stride lda), qa [M, Kp] int16
 * lanes, sa [M]; W [N, K] fp32 weights, qw [N, Kp] int16 lanes, sw [N];
 * C [M, N] fp32 (row stride ldc).  Kp = K rounded up to 16.
 */
#include "pnquant.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* round to nearest, ties to even (the default rounding mode), clamped to [-127, 127] */
static inline int16_t
q127(float v)
{
	float		r = nearbyintf(v);

	if (r > 127.0f)
		r = 127.0f;
	if (r < -127.0f)
		r = -127.0f;
	return (int16_t) r;
}

static float
absmax(const float *x, int n)
{
	float		m = 0.0f;
	int			i;

	for (i = 0; i < n; i++)
	{
		float		a = fabsf(x[i]);

		m = a > m ? a : m;
	}
	return m;
}

#if defined(__x86_64__) && defined(__GNUC__)
/*
 * x[i] * inv rounded to nearest even (vcvtps2dq under the default MXCSR
 * rounding, as nearbyintf), clamped, for i < n & ~15; returns n & ~15
 */
__attribute__((target("avx2"))) static int
quantize_avx2(const float *x, int n, float inv, int16_t *q)
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

bool		pn_qgemm_avx2(void);

/* quantize one row of n values into q [Kp] (zero padded); returns its scale */
static float
quantize_row(const float *x, int n, int Kp, int16_t *q)
{
	float		m = absmax(x, n),
				s,
				inv;
	int			i;

	if (!(m > 0.0f))
	{
		memset(q, 0, sizeof(int16_t) * (size_t) Kp);
		return 0.0f;
	}
	s = m / 127.0f;
	inv = 127.0f / m;
	i = 0;
#if defined(__x86_64__) && defined(__GNUC__)
	if (pn_qgemm_avx2())
		i = quantize_avx2(x, n, inv, q);
#endif
	for (; i < n; i++)
		q[i] = q127(x[i] * inv);
	for (; i < Kp; i++)
		q[i] = 0;
	return s;
}

int
pn_qweights_init(PnQWeights *out, const float *W, int N, int K, int ldw, PnError *err)
{
	int			Kp = PN_QGEMM_KP(K),
				n;

	memset(out, 0, sizeof(*out));
	if (K > PN_QGEMM_MAX_K)
		return pn_seterr(err, PN_ETOOBIG, "a layer of %d inputs is too wide for int8 scoring", K);
	out->N = N;
	out->K = K;
	out->Kp = Kp;
	out->q = pn_alloc(sizeof(int16_t) * (size_t) N * Kp);
	out->scale = pn_alloc(sizeof(float) * (size_t) (N > 0 ? N : 1));
	if (!out->q || !out->scale)
	{
		pn_qweights_free(out);
		return pn_seterr(err, PN_ENOMEM, "out of memory quantizing weights [%d, %d]", N, K);
	}
	for (n = 0; n < N; n++)
		out->scale[n] = quantize_row(W + (size_t) n * ldw, K, Kp, out->q + (size_t) n * Kp);
	return PN_OK;
}

void
pn_qweights_free(PnQWeights *q)
{
	pn_free(q->q);
	pn_free(q->scale);
	q->q = NULL;
	q->scale = NULL;
}

void
pn_quantize_rows(int M, int K, const float *A, int lda, int Kp, int16_t *qa, float *sa)
{
	int			m;

	for (m = 0; m < M; m++)
		sa[m] = quantize_row(A + (size_t) m * lda, K, Kp, qa + (size_t) m * Kp);
}

static void
qgemm_portable(int M, const int16_t *qa, const float *sa, const PnQWeights *w, float *C, int ldc)
{
	int			Kp = w->Kp,
				m,
				n,
				k;

	for (m = 0; m < M; m++)
		for (n = 0; n < w->N; n++)
		{
			const int16_t *a = qa + (size_t) m * Kp,
					   *b = w->q + (size_t) n * Kp;
			int32_t		s = 0;

			for (k = 0; k < Kp; k++)
				s += (int32_t) a[k] * b[k];
			C[(size_t) m * ldc + n] += (float) s * (sa[m] * w->scale[n]);
		}
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PN_AVX2 __attribute__((target("avx2")))

static inline PN_AVX2 int32_t
hsum_epi32(__m256i v)
{
	__m128i		s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));

	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
	s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
	return _mm_cvtsi128_si32(s);
}

#define PN_DQ(acc, r, j) (C[(size_t) (m + (r)) * ldc + n + (j)] += (float) hsum_epi32(acc) * (sa[m + (r)] * w->scale[n + (j)]))

/* blocks of 4 rows x 2 columns: 8 accumulators, 6 loads per 8 vpmaddwd */
static PN_AVX2 void
qgemm_avx2(int M, const int16_t *qa, const float *sa, const PnQWeights *w, float *C, int ldc)
{
	int			Kp = w->Kp,
				N = w->N,
				M4 = M & ~3,
				m,
				n,
				k;

	for (n = 0; n + 2 <= N; n += 2)
	{
		const int16_t *w0 = w->q + (size_t) n * Kp,
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
				__m256i		v0 = _mm256_loadu_si256((const __m256i *) (w0 + k)),
							v1 = _mm256_loadu_si256((const __m256i *) (w1 + k)),
							x;

				x = _mm256_loadu_si256((const __m256i *) (a0 + k));
				c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x, v0));
				c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x, v1));
				x = _mm256_loadu_si256((const __m256i *) (a1 + k));
				c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(x, v0));
				c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(x, v1));
				x = _mm256_loadu_si256((const __m256i *) (a2 + k));
				c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(x, v0));
				c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(x, v1));
				x = _mm256_loadu_si256((const __m256i *) (a3 + k));
				c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(x, v0));
				c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(x, v1));
			}
			PN_DQ(c00, 0, 0);
			PN_DQ(c01, 0, 1);
			PN_DQ(c10, 1, 0);
			PN_DQ(c11, 1, 1);
			PN_DQ(c20, 2, 0);
			PN_DQ(c21, 2, 1);
			PN_DQ(c30, 3, 0);
			PN_DQ(c31, 3, 1);
		}
		for (; m < M; m++)
		{
			const int16_t *a0 = qa + (size_t) m * Kp;
			__m256i		c00 = _mm256_setzero_si256(),
						c01 = _mm256_setzero_si256();

			for (k = 0; k < Kp; k += 16)
			{
				__m256i		x = _mm256_loadu_si256((const __m256i *) (a0 + k));

				c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(x, _mm256_loadu_si256((const __m256i *) (w0 + k))));
				c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(x, _mm256_loadu_si256((const __m256i *) (w1 + k))));
			}
			PN_DQ(c00, 0, 0);
			PN_DQ(c01, 0, 1);
		}
	}
	for (; n < N; n++)
	{
		const int16_t *w0 = w->q + (size_t) n * Kp;

		for (m = 0; m < M; m++)
		{
			const int16_t *a0 = qa + (size_t) m * Kp;
			__m256i		c00 = _mm256_setzero_si256();

			for (k = 0; k < Kp; k += 16)
				c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *) (a0 + k)),
														 _mm256_loadu_si256((const __m256i *) (w0 + k))));
			PN_DQ(c00, 0, 0);
		}
	}
}
#endif

bool
pn_qgemm_avx2(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
	static int	have = -1;

	if (have < 0)
	{
		__builtin_cpu_init();
		have = __builtin_cpu_supports("avx2");
	}
	return have;
#else
	return false;
#endif
}

void
pn_qgemm_rows(int M, const int16_t *qa, const float *sa, const PnQWeights *w, float *C, int ldc)
{
	if (M <= 0 || w->N <= 0)
		return;
#if defined(__x86_64__) && defined(__GNUC__)
	if (pn_qgemm_avx2())
	{
		qgemm_avx2(M, qa, sa, w, C, ldc);
		return;
	}
#endif
	qgemm_portable(M, qa, sa, w, C, ldc);
}
