/*
 * sgemm_rate.c
 *		Single-thread OpenBLAS sgemm rate of this machine, for the GEMM shapes
 *		that pepnet's forward pass (src/core/infer.c, pn_score) uses, and for
 *		a big square GEMM.  Build and run:
 *
 *			cc -O2 bench/sgemm_rate.c -lopenblas -o /tmp/sgemm_rate
 *			/tmp/sgemm_rate n0 he T h1 h2 pk ha block N...
 *
 *		(the model dimensions of the bench config; block = PEPNET_BLOCK of
 *		src/pepnet.h; N = candidates per call).  Without arguments it uses the
 *		dimensions of bench/bench-config.json and N = 1 10 100 1000.
 *
 *		Output: one JSON object per line, read by bench/bench_score.py:
 *		  {"kind":"gemm", "name":..., "m":..., "n":..., "k":..., "gflops":...}
 *		  {"kind":"model", "N":..., "flops":..., "us":..., "gflops":..., "cand_per_s":...}
 *		  {"kind":"gemv", ...}: for m = 1, the same product as one sgemv
 *		  {"kind":"model_gemv", "N":1, ...}: the N = 1 pass with sgemv for m = 1
 *		  (the big square one is a "gemm" line named "square")
 *		"model" runs every GEMM/GEMV of pn_score for N candidates (in blocks
 *		of `block`, with pepnet's transposes and leading dimensions) and
 *		nothing else: the time pepnet_score would need if it were pure BLAS.
 *
 *		The calls are the same as pepnet's: row-major C = A B^T, the weights
 *		B stored [out, in] (PyTorch layout).  Timing: the median of 7 runs,
 *		each repeating the call for at least 20 ms of this thread's CPU time.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void openblas_set_num_threads(int);

/*
 * CPU time of the calling thread: the work itself, unaffected by other jobs
 * on a shared host (wall time is not).  OpenBLAS runs on this thread only
 * (openblas_set_num_threads(1)), so nothing is missed.
 */
static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static float *
randbuf(size_t n)
{
	float	   *p = malloc(sizeof(float) * (n ? n : 1));
	size_t		i;
	unsigned	s = 12345;

	if (!p)
	{
		fprintf(stderr, "out of memory\n");
		exit(1);
	}
	for (i = 0; i < n; i++)
	{
		s = s * 1103515245u + 12345u;
		p[i] = ((s >> 9) & 0xffff) / 65536.0f - 0.5f;
	}
	return p;
}

static int
cmpd(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

/* seconds per call of fn(arg): median of 7 runs of >= 20 ms each */
static double
time_call(void (*fn) (void *), void *arg)
{
	double		t[7];
	int			r;
	long		reps = 1;

	fn(arg);					/* warm up */
	for (;;)
	{
		double		t0 = now();
		long		i;

		for (i = 0; i < reps; i++)
			fn(arg);
		if (now() - t0 >= 0.02)
			break;
		reps *= 2;
	}
	for (r = 0; r < 7; r++)
	{
		double		t0 = now();
		long		i;

		for (i = 0; i < reps; i++)
			fn(arg);
		t[r] = (now() - t0) / reps;
	}
	qsort(t, 7, sizeof(double), cmpd);
	return t[3];
}

/* one C[m, n] (ldc) = A[m, k] (lda) B[n, k]^T (ldb) + C */
typedef struct Gemm
{
	int			m,
				n,
				k,
				lda,
				ldb,
				ldc;
	float	   *A,
			   *B,
			   *C;
} Gemm;

static void
run_gemm(void *arg)
{
	Gemm	   *g = arg;

	cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, g->m, g->n, g->k, 1.0f,
				g->A, g->lda, g->B, g->ldb, 1.0f, g->C, g->ldc);
}

/* the same product for m == 1 as one sgemv: y[n] += B[n, k] a[k] */
static void
run_gemv(void *arg)
{
	Gemm	   *g = arg;

	cblas_sgemv(CblasRowMajor, CblasNoTrans, g->n, g->k, 1.0f, g->B, g->ldb, g->A, 1, 1.0f, g->C, 1);
}

static void
one_gemm(const char *name, int m, int n, int k)
{
	Gemm		g = {m, n, k, k, k, n, randbuf((size_t) m * k), randbuf((size_t) n * k), randbuf((size_t) m * n)};
	double		s = time_call(run_gemm, &g);

	printf("{\"kind\":\"gemm\",\"name\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"us\":%.3f,\"gflops\":%.3f}\n",
		   name, m, n, k, s * 1e6, 2.0 * m * n * k / s * 1e-9);
	if (m == 1)
	{
		s = time_call(run_gemv, &g);
		printf("{\"kind\":\"gemv\",\"name\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"us\":%.3f,\"gflops\":%.3f}\n",
			   name, m, n, k, s * 1e6, 2.0 * n * k / s * 1e-9);
	}
	fflush(stdout);
	free(g.A);
	free(g.B);
	free(g.C);
}

/* the model dimensions and buffers of the "model" pass */
typedef struct Model
{
	int			n0,
				he,
				T,
				h1,
				h2,
				pk,
				ha,
				block,
				N;
	float	   *ep_w1,
			   *ep_w2,
			   *tw1,
			   *tw2,
			   *tw3,
			   *pp1_w1,
			   *pp1_w2,
			   *pp2_w1,
			   *pp2_w2,
			   *aux_w1,
			   *aux_w2;
	float	   *x0,
			   *x,
			   *eh,
			   *a,
			   *b,
			   *gh,
			   *g,
			   *ah,
			   *logit,
			   *tmp;
} Model;

/*
 * C[n, out] (ldc) += A[n, in] (lda) W[out, in]^T (ldw), as pepnet calls it
 * (cblas_sgemm); with gemv and n == 1 the same product as one cblas_sgemv,
 * to show what a one-candidate path could run at.
 */
static void
mm(int gemv, int n, int out, int in, const float *A, int lda, const float *W, int ldw, float *C, int ldc)
{
	if (gemv && n == 1)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, W, ldw, A, 1, 1.0f, C, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f,
					A, lda, W, ldw, 1.0f, C, ldc);
}

/* every BLAS call of pn_score for N candidates, in blocks, nothing else */
static void
run_model_impl(Model *M, int gemv)
{
	int			done,
				t,
				k = 16;

	for (done = 0; done < M->N; done += M->block)
	{
		int			n = M->N - done < M->block ? M->N - done : M->block;
		int			g1 = M->T * M->h1,
					g2 = M->T * M->h2;

		/* EPNet */
		mm(gemv, n, M->he, M->n0, M->x0, M->n0, M->ep_w1 + k, k + M->n0, M->eh, M->he);
		mm(gemv, n, M->n0, M->he, M->eh, M->he, M->ep_w2, M->he, M->x, M->n0);
		/* tower layer 1, all tasks */
		mm(gemv, n, g1, M->n0, M->x, M->n0, M->tw1, M->n0, M->a, g1);
		/* PPNet gate 1 */
		mm(gemv, n, g1, M->n0, M->x, M->n0, M->pp1_w1 + M->pk, M->pk + M->n0, M->gh, g1);
		mm(gemv, n, g1, g1, M->gh, g1, M->pp1_w2, g1, M->g, g1);
		/* tower layer 2, per task on its column block */
		for (t = 0; t < M->T; t++)
			mm(gemv, n, M->h2, M->h1, M->a + t * M->h1, g1, M->tw2 + (size_t) t * M->h2 * M->h1, M->h1,
			   M->b + t * M->h2, g2);
		/* PPNet gate 2 */
		mm(gemv, n, g2, M->n0, M->x, M->n0, M->pp2_w1 + M->pk, M->pk + M->n0, M->gh, g2);
		mm(gemv, n, g2, g2, M->gh, g2, M->pp2_w2, g2, M->g, g2);
		/* output layer */
		for (t = 0; t < M->T; t++)
			cblas_sgemv(CblasRowMajor, CblasNoTrans, n, M->h2, 1.0f, M->b + t * M->h2, g2,
						M->tw3 + (size_t) t * M->h2, 1, 0.0f, M->tmp, 1);
		/* aux */
		mm(gemv, n, M->ha, M->n0, M->x0, M->n0, M->aux_w1 + k, k + M->n0, M->ah, M->ha);
		mm(gemv, n, M->T, M->ha, M->ah, M->ha, M->aux_w2, M->ha, M->logit, M->T);
	}
}

static void
run_model(void *arg)
{
	run_model_impl(arg, 0);
}

static void
run_model_gemv(void *arg)
{
	run_model_impl(arg, 1);
}

/* multiply-adds per candidate of the GEMMs above (= FLOPs / 2) */
static double
model_macs(const Model *M)
{
	double		g1 = (double) M->T * M->h1,
				g2 = (double) M->T * M->h2;

	return (double) M->n0 * M->he + (double) M->he * M->n0 + g1 * M->n0 + g1 * M->n0 + g1 * g1
		+ (double) M->T * M->h2 * M->h1 + g2 * M->n0 + g2 * g2 + (double) M->T * M->h2
		+ (double) M->ha * M->n0 + (double) M->T * M->ha;
}

int
main(int argc, char **argv)
{
	Model		M = {128, 128, 2, 256, 128, 48, 32, 256, 0};
	int			Ns[16] = {1, 10, 100, 1000},
				nN = 4,
				i;
	size_t		B;

	openblas_set_num_threads(1);
	if (argc > 1)
	{
		if (argc < 10)
		{
			fprintf(stderr, "usage: %s n0 he T h1 h2 pk ha block N...\n", argv[0]);
			return 2;
		}
		M.n0 = atoi(argv[1]);
		M.he = atoi(argv[2]);
		M.T = atoi(argv[3]);
		M.h1 = atoi(argv[4]);
		M.h2 = atoi(argv[5]);
		M.pk = atoi(argv[6]);
		M.ha = atoi(argv[7]);
		M.block = atoi(argv[8]);
		for (nN = 0, i = 9; i < argc && nN < 16; i++)
			Ns[nN++] = atoi(argv[i]);
	}

	/* the individual GEMM shapes of one block of m candidates */
	{
		int			ms[] = {1, 10, 100, 256};
		int			j;

		for (j = 0; j < 4; j++)
		{
			int			m = ms[j];

			one_gemm("epnet [m,n0]x[n0,he]", m, M.he, M.n0);
			one_gemm("tower1/ppnet1.w1 [m,n0]x[n0,T*h1]", m, M.T * M.h1, M.n0);
			one_gemm("ppnet1.w2 [m,T*h1]x[T*h1,T*h1]", m, M.T * M.h1, M.T * M.h1);
			one_gemm("tower2 [m,h1]x[h1,h2]", m, M.h2, M.h1);
			one_gemm("ppnet2.w2 [m,T*h2]x[T*h2,T*h2]", m, M.T * M.h2, M.T * M.h2);
		}
		one_gemm("tower1/ppnet1.w1 [m,n0]x[n0,T*h1]", 1000, M.T * M.h1, M.n0);
		one_gemm("ppnet1.w2 [m,T*h1]x[T*h1,T*h1]", 1000, M.T * M.h1, M.T * M.h1);
		one_gemm("tower2 [m,h1]x[h1,h2]", 1000, M.h2, M.h1);
	}

	/* the whole BLAS part of pn_score */
	B = M.block;
	M.ep_w1 = randbuf((size_t) M.he * (16 + M.n0));
	M.ep_w2 = randbuf((size_t) M.n0 * M.he);
	M.tw1 = randbuf((size_t) M.T * M.h1 * M.n0);
	M.tw2 = randbuf((size_t) M.T * M.h2 * M.h1);
	M.tw3 = randbuf((size_t) M.T * M.h2);
	M.pp1_w1 = randbuf((size_t) M.T * M.h1 * (M.pk + M.n0));
	M.pp1_w2 = randbuf((size_t) M.T * M.h1 * M.T * M.h1);
	M.pp2_w1 = randbuf((size_t) M.T * M.h2 * (M.pk + M.n0));
	M.pp2_w2 = randbuf((size_t) M.T * M.h2 * M.T * M.h2);
	M.aux_w1 = randbuf((size_t) M.ha * (16 + M.n0));
	M.aux_w2 = randbuf((size_t) M.T * M.ha);
	M.x0 = randbuf(B * M.n0);
	M.x = randbuf(B * M.n0);
	M.eh = randbuf(B * M.he);
	M.a = randbuf(B * M.T * M.h1);
	M.b = randbuf(B * M.T * M.h1);
	M.gh = randbuf(B * M.T * M.h1);
	M.g = randbuf(B * M.T * M.h1);
	M.ah = randbuf(B * M.ha);
	M.logit = randbuf(B * M.T);
	M.tmp = randbuf(B);
	for (i = 0; i < nN; i++)
	{
		double		s,
					flops;

		M.N = Ns[i];
		s = time_call(run_model, &M);
		flops = 2.0 * model_macs(&M) * M.N;
		printf("{\"kind\":\"model\",\"N\":%d,\"block\":%d,\"flops_per_cand\":%.0f,\"us\":%.3f,\"gflops\":%.3f,\"cand_per_s\":%.1f}\n",
			   M.N, M.block, 2.0 * model_macs(&M), s * 1e6, flops / s * 1e-9, M.N / s);
		if (M.N == 1)
		{
			s = time_call(run_model_gemv, &M);
			printf("{\"kind\":\"model_gemv\",\"N\":%d,\"block\":%d,\"flops_per_cand\":%.0f,\"us\":%.3f,\"gflops\":%.3f,\"cand_per_s\":%.1f}\n",
				   M.N, M.block, 2.0 * model_macs(&M), s * 1e6, flops / s * 1e-9, M.N / s);
		}
		fflush(stdout);
	}

	/* a big square GEMM: the machine's single-thread sgemm peak */
	{
		int			m = 2048;

		one_gemm("square", m, m, m);
	}
	return 0;
}
