/*
 * test_qgemm.c
 *		Checks of the int8 matmul (qgemm.c, pnquant.h) run by run.sh before
 *		its rates are measured: the results against a direct computation of
 *		pnquant.h's formula, the same bits for a row wherever it stands, the
 *		error against fp32, the limits.
 */
#include "pnquant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int	nbad;				/* failed checks of the test running */

/* a failed check prints why; each test is one "ok"/"not ok" line (test_core.c's convention) */
#define CHECK(cond, ...) do { if (!(cond)) { nbad++; printf("  %s:%d: ", __FILE__, __LINE__); printf(__VA_ARGS__); printf("\n"); } } while (0)

static uint64_t rng = 88172645463325252ULL;

static float
frand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (float) ((double) (rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* pnquant.h's formula, written out: the scales, the rounding, the exact sum */
static void
direct(int M, int N, int K, const float *A, const float *W, float *C)
{
	for (int m = 0; m < M; m++)
	{
		float		am = 0;

		for (int k = 0; k < K; k++)
			am = fmaxf(am, fabsf(A[m * K + k]));
		for (int n = 0; n < N; n++)
		{
			float		wm = 0;
			int64_t		s = 0;

			for (int k = 0; k < K; k++)
				wm = fmaxf(wm, fabsf(W[n * K + k]));
			if (am > 0 && wm > 0)
				for (int k = 0; k < K; k++)
				{
					long		qa = lrintf(A[m * K + k] * (127.0f / am)),
								qw = lrintf(W[n * K + k] * (127.0f / wm));

					s += (int64_t) qa * qw;
				}
			C[m * N + n] += (float) (int32_t) s * ((am > 0 ? am / 127.0f : 0.0f) * (wm > 0 ? wm / 127.0f : 0.0f));
		}
	}
}

static void
run(int M, int N, int K, const float *A, const float *W, float *C)
{
	PnQWeights	qw;
	PnError		err;
	int			Kp = PN_QGEMM_KP(K);
	int16_t    *qa = malloc(sizeof(int16_t) * (size_t) (M > 0 ? M : 1) * Kp);
	float	   *sa = malloc(sizeof(float) * (size_t) (M > 0 ? M : 1));

	CHECK(pn_qweights_init(&qw, W, N, K, K, &err) == PN_OK, "init: %s", err.msg);
	CHECK(qw.Kp == Kp && Kp % 16 == 0 && Kp >= K, "Kp %d for K %d", qw.Kp, K);
	pn_quantize_rows(M, K, A, K, Kp, qa, sa);
	pn_qgemm_rows(M, qa, sa, &qw, C, N);
	pn_qweights_free(&qw);
	free(qa);
	free(sa);
}

/* every shape's blocks and tails: M % 4, N % 2, K % 16 */
static void
test_against_direct(void)
{
	static const int Ms[] = {1, 3, 4, 5, 17, 64};
	static const int Ns[] = {1, 2, 3, 8, 33};
	static const int Ks[] = {1, 7, 16, 31, 129, 528};

	for (size_t a = 0; a < sizeof(Ms) / sizeof(*Ms); a++)
		for (size_t b = 0; b < sizeof(Ns) / sizeof(*Ns); b++)
			for (size_t c = 0; c < sizeof(Ks) / sizeof(*Ks); c++)
			{
				int			M = Ms[a],
							N = Ns[b],
							K = Ks[c];
				float	   *A = malloc(sizeof(float) * M * K),
						   *W = malloc(sizeof(float) * N * K),
						   *C1 = calloc((size_t) M * N, sizeof(float)),
						   *C2 = calloc((size_t) M * N, sizeof(float));

				for (int i = 0; i < M * K; i++)
					A[i] = frand() * 3.0f;
				for (int i = 0; i < N * K; i++)
					W[i] = frand() * 0.1f;
				/* a zero row and a zero channel: scale 0, contributes 0 */
				if (M > 2)
					memset(A + K, 0, sizeof(float) * K);
				if (N > 2)
					memset(W + K, 0, sizeof(float) * K);
				for (int i = 0; i < M * N; i++)
					C1[i] = C2[i] = (float) i * 0.25f;	/* += into what is there */
				run(M, N, K, A, W, C1);
				direct(M, N, K, A, W, C2);
				CHECK(memcmp(C1, C2, sizeof(float) * M * N) == 0,
					  "M %d N %d K %d: not the formula's bits (avx2 %d)", M, N, K, (int) pn_qgemm_avx2());
				if (M > 2)
					for (int n = 0; n < N; n++)
						CHECK(C1[N + n] == (float) (N + n) * 0.25f, "zero row changed C");
				free(A);
				free(W);
				free(C1);
				free(C2);
			}
}

/* one row at every position of calls of every size gives the same bits */
static void
test_position(void)
{
	int			N = 37,
				K = 200,
				Mmax = 33;
	float	   *W = malloc(sizeof(float) * N * K),
			   *A = malloc(sizeof(float) * Mmax * K),
			   *C = malloc(sizeof(float) * Mmax * N),
			   *r0 = malloc(sizeof(float) * K),
				ref[37];

	for (int i = 0; i < N * K; i++)
		W[i] = frand();
	for (int i = 0; i < K; i++)
		r0[i] = frand();
	memset(ref, 0, sizeof(ref));
	run(1, N, K, r0, W, ref);
	for (int M = 1; M <= Mmax; M++)
		for (int p = 0; p < M; p++)
		{
			for (int i = 0; i < M * K; i++)
				A[i] = frand() * 5.0f;
			memcpy(A + p * K, r0, sizeof(float) * K);
			memset(C, 0, sizeof(float) * M * N);
			run(M, N, K, A, W, C);
			CHECK(memcmp(C + p * N, ref, sizeof(float) * N) == 0, "row at %d of %d: other bits", p, M);
		}
	free(W);
	free(A);
	free(C);
	free(r0);
}

/* against fp32: the error of the dequantized product is small next to its scale */
static void
test_error(void)
{
	int			M = 64,
				N = 256,
				K = 528;
	float	   *A = malloc(sizeof(float) * M * K),
			   *W = malloc(sizeof(float) * N * K),
			   *C = calloc((size_t) M * N, sizeof(float));
	double		se = 0,
				sr = 0;

	for (int i = 0; i < M * K; i++)
		A[i] = fmaxf(frand(), 0.0f) * 2.0f;	/* relu-like activations */
	for (int i = 0; i < N * K; i++)
		W[i] = frand() * 0.05f;
	run(M, N, K, A, W, C);
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++)
		{
			double		s = 0;

			for (int k = 0; k < K; k++)
				s += (double) A[m * K + k] * W[n * K + k];
			se += (C[m * N + n] - s) * (C[m * N + n] - s);
			sr += s * s;
		}
	CHECK(sqrt(se / sr) < 0.02, "relative RMS error %.4f of int8 against fp32", sqrt(se / sr));
	printf("  qgemm: relative RMS error against fp32 %.5f (M %d, N %d, K %d)\n", sqrt(se / sr), M, N, K);
	free(A);
	free(W);
	free(C);
}

static void
test_limits(void)
{
	PnQWeights	qw;
	PnError		err;
	float		w = 1.0f;

	memset(&err, 0, sizeof(err));
	CHECK(pn_qweights_init(&qw, &w, 1, PN_QGEMM_MAX_K + 1, PN_QGEMM_MAX_K + 1, &err) == PN_ETOOBIG,
		  "K over the limit not refused");
	CHECK(strstr(err.msg, "too wide") != NULL, "message: %s", err.msg);
	/* 127 * 127 * MAX_K fits an int32 */
	CHECK((int64_t) 127 * 127 * PN_QGEMM_MAX_K <= INT32_MAX, "PN_QGEMM_MAX_K overflows");
}

static void
one(void (*fn) (void), const char *what, int *pass, int *fail)
{
	nbad = 0;
	fn();
	printf("%s - qgemm: %s (AVX2 kernel %s)\n", nbad ? "not ok" : "ok", what, pn_qgemm_avx2() ? "on" : "off, portable C");
	if (nbad)
		(*fail)++;
	else
		(*pass)++;
}

int
main(void)
{
	int			p = 0,
				f = 0,
			   *pass = &p,
			   *fail = &f;

	one(test_against_direct, "the formula's bits for every block and tail of M, N, K (180 shapes), zero rows and channels", pass, fail);
	one(test_position, "a row's bits at every position of calls of 1..33 rows", pass, fail);
	one(test_error, "relative RMS error against fp32 under 2%", pass, fail);
	one(test_limits, "K over PN_QGEMM_MAX_K refused (PN_ETOOBIG); the int32 sum cannot overflow", pass, fail);
	printf("%d passed, %d failed\n", p, f);
	return f ? 1 : 0;
}
