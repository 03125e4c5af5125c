/*
 * qgemm_rate.c
 *		Single-thread rate of the int8 matmul (bench/qgemm/qgemm.c: per-row
 *		activation quantization + pn_qgemm_rows) against the fp32 row-wise
 *		matmul the engine's fallback runs (pn_gemm_rows), at the bench model's
 *		scoring shapes, side by side in one process (CPU time of this thread,
 *		median of 7 runs of >= 30 ms each, the two interleaved).
 *
 *		bench/qgemm/run.sh        # builds, checks (test_qgemm.c), then one JSON object per line
 */
#include "pncore.h"
#include "pninternal.h"
#include "pnquant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
cmp(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

int
main(void)
{
	/* (N, K): tower layer 1 of 2 tasks merged, tower layer 2, EPNet layer 1, one tower layer 1 */
	static const int shapes[][2] = {{512, 128}, {128, 256}, {128, 144}, {256, 128}};
	static const int Ms[] = {1, 10, 64};
	PnError		err;

	for (size_t s = 0; s < sizeof(shapes) / sizeof(*shapes); s++)
		for (size_t mi = 0; mi < sizeof(Ms) / sizeof(*Ms); mi++)
		{
			int			N = shapes[s][0],
						K = shapes[s][1],
						M = Ms[mi],
						Kp = PN_QGEMM_KP(K);
			float	   *A = malloc(sizeof(float) * M * K),
					   *W = malloc(sizeof(float) * N * K),
					   *C = calloc((size_t) M * N, sizeof(float));
			int16_t    *qa = malloc(sizeof(int16_t) * M * Kp);
			float	   *sa = malloc(sizeof(float) * M);
			PnQWeights	qw;
			double		tf[7],
						tq[7],
						flop = 2.0 * M * N * K;
			long		reps;

			for (int i = 0; i < M * K; i++)
				A[i] = (float) rand() / RAND_MAX;
			for (int i = 0; i < N * K; i++)
				W[i] = (float) rand() / RAND_MAX - 0.5f;
			if (pn_qweights_init(&qw, W, N, K, K, &err) != PN_OK)
				return 1;
			reps = (long) (3e8 / flop) + 1;
			for (int r = 0; r < 7; r++)
			{
				double		t0 = now();

				for (long i = 0; i < reps; i++)
					pn_gemm_rows(M, N, K, A, K, W, K, C, N);
				tf[r] = now() - t0;
				t0 = now();
				for (long i = 0; i < reps; i++)
				{
					pn_quantize_rows(M, K, A, K, Kp, qa, sa);
					pn_qgemm_rows(M, qa, sa, &qw, C, N);
				}
				tq[r] = now() - t0;
			}
			qsort(tf, 7, sizeof(double), cmp);
			qsort(tq, 7, sizeof(double), cmp);
			printf("{\"M\": %d, \"N\": %d, \"K\": %d, \"fp32_gflops\": %.1f, \"int8_gflops\": %.1f, \"int8_over_fp32\": %.2f}\n",
				   M, N, K, flop * reps / tf[3] / 1e9, flop * reps / tq[3] / 1e9, tf[3] / tq[3]);
			pn_qweights_free(&qw);
			free(A);
			free(W);
			free(C);
			free(qa);
			free(sa);
		}
	return 0;
}
