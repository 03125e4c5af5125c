/*
 * qgemm_rate.c
 *		Single-thread rate of the int8 layer of the engine's fallback
 *		(src/core/quant.c pn_q8_layer: per-row activation quantization, the
 *		int8 matmul, the shared epilogue) against the fp32 layer it replaces
 *		(src/core/gemm.c pn_gemm_panels), both with bias and relu, at the
 *		bench model's scoring shapes, side by side in one process (CPU time of
 *		this thread, median of 7 runs of >= 30 ms each, the two interleaved).
 *		The int8 arithmetic's checks are unit tests (test/unit/test_core.c).
 *
 *		bench/qgemm/run.sh        # builds, then one JSON object per line
 */
#include "pncore.h"
#include "pninternal.h"

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
	for (size_t s = 0; s < sizeof(shapes) / sizeof(*shapes); s++)
		for (size_t mi = 0; mi < sizeof(Ms) / sizeof(*Ms); mi++)
		{
			int			N = shapes[s][0],
						K = shapes[s][1],
						M = Ms[mi];
			float	   *A = malloc(sizeof(float) * M * K),
					   *W = malloc(sizeof(float) * N * K),
					   *bias = calloc((size_t) N, sizeof(float)),
					   *C = calloc((size_t) M * N, sizeof(float)),
					   *Wp = aligned_alloc(64, sizeof(float) * pn_panels_floats(N, K));
			void	   *wq = aligned_alloc(64, (pn_q8_bytes(N, K) + 63) & ~(size_t) 63);
			PnQ8Work	ws;
			double		tf[7],
						tq[7],
						flop = 2.0 * M * N * K;
			long		reps;

			ws.qa = malloc(sizeof(int16_t) * M * PN_Q8_KP(K));
			ws.sa = malloc(sizeof(float) * M);
			ws.acc = malloc(sizeof(int32_t) * M * N);
			for (int i = 0; i < M * K; i++)
				A[i] = (float) rand() / RAND_MAX;
			for (int i = 0; i < N * K; i++)
				W[i] = (float) rand() / RAND_MAX - 0.5f;
			pn_panels_pack(N, K, W, K, Wp);
			pn_q8_pack(N, K, W, K, wq);
			reps = (long) (3e8 / flop) + 1;
			for (int r = 0; r < 7; r++)
			{
				double		t0 = now();

				for (long i = 0; i < reps; i++)
					pn_gemm_panels(M, N, K, A, K, Wp, bias, C, N, PN_EPI_RELU, 0, NULL, 0);
				tf[r] = now() - t0;
				t0 = now();
				for (long i = 0; i < reps; i++)
					pn_q8_layer(M, N, K, A, K, false, wq, bias, C, N, PN_EPI_RELU, 0, NULL, 0, &ws);
				tq[r] = now() - t0;
			}
			qsort(tf, 7, sizeof(double), cmp);
			qsort(tq, 7, sizeof(double), cmp);
			printf("{\"M\": %d, \"N\": %d, \"K\": %d, \"fp32_gflops\": %.1f, \"int8_gflops\": %.1f, \"int8_over_fp32\": %.2f}\n",
				   M, N, K, flop * reps / tf[3] / 1e9, flop * reps / tq[3] / 1e9, tf[3] / tq[3]);
			free(A), free(W), free(bias), free(C), free(Wp), free(wq);
			free(ws.qa), free(ws.sa), free(ws.acc);
		}
	return 0;
}
