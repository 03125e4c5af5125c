/*
 * train_gemm_rate.c
 *		Single-thread GFLOP/s of the GEMMs of one training step of the bench
 *		model (bench/bench-config.json, batch 512, tower segments of about 128
 *		rows per domain), forward (A W^T), weight gradient (dZ^T A) and input
 *		gradient (dZ W), for OpenBLAS (cblas_sgemm: train.c's towers), oneDNN's
 *		sgemm (dnnl_sgemm: not used, it corrupted the backend's heap now and
 *		then) and a oneDNN matmul primitive created for the exact shape
 *		(transposes through strides: train.c's fixed-shape GEMMs).  CPU time of
 *		this thread, 200 calls each, after one warm-up call.
 *
 *		cc -O2 -o /tmp/train_gemm_rate bench/train_gemm_rate.c -ldnnl -lgomp -lopenblas
 *		OPENBLAS_NUM_THREADS=1 /tmp/train_gemm_rate
 */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static dnnl_engine_t eng;
static dnnl_stream_t str;

/* a matmul primitive C [M,N] = op(A) op(B), row-major, transposes as strides */
static dnnl_primitive_t
matmul(char ta, char tb, int M, int N, int K, dnnl_memory_t *a, dnnl_memory_t *b, dnnl_memory_t *c)
{
	dnnl_memory_desc_t amd,
				bmd,
				cmd;
	dnnl_matmul_desc_t md;
	dnnl_primitive_desc_t pd;
	dnnl_primitive_t p;

	dnnl_memory_desc_init_by_strides(&amd, 2, (dnnl_dims_t) {M, K}, dnnl_f32,
									 ta == 'N' ? (dnnl_dims_t) {K, 1} : (dnnl_dims_t) {1, M});
	dnnl_memory_desc_init_by_strides(&bmd, 2, (dnnl_dims_t) {K, N}, dnnl_f32,
									 tb == 'N' ? (dnnl_dims_t) {N, 1} : (dnnl_dims_t) {1, K});
	dnnl_memory_desc_init_by_strides(&cmd, 2, (dnnl_dims_t) {M, N}, dnnl_f32, (dnnl_dims_t) {N, 1});
	if (dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd) != dnnl_success ||
		dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) != dnnl_success ||
		dnnl_primitive_create(&p, pd) != dnnl_success)
	{
		fprintf(stderr, "oneDNN refused a matmul\n");
		exit(1);
	}
	dnnl_primitive_desc_destroy(pd);
	dnnl_memory_create(a, &amd, eng, DNNL_MEMORY_NONE);
	dnnl_memory_create(b, &bmd, eng, DNNL_MEMORY_NONE);
	dnnl_memory_create(c, &cmd, eng, DNNL_MEMORY_NONE);
	return p;
}

int
main(void)
{
	struct
	{
		char		ta,
					tb;
		int			M,
					N,
					K;
		const char *what;
	}			S[] = {
		{'N', 'T', 512, 512, 176, "ppnet.1.w1 forward"},
		{'N', 'T', 512, 512, 512, "ppnet.1.w2 forward"},
		{'N', 'T', 128, 256, 128, "tower l1 forward (segment)"},
		{'N', 'T', 128, 128, 256, "tower l2 forward (segment)"},
		{'N', 'T', 512, 128, 144, "epnet.w1 forward"},
		{'T', 'N', 512, 512, 512, "ppnet.1.w2 weight grad"},
		{'T', 'N', 512, 176, 512, "ppnet.1.w1 weight grad"},
		{'T', 'N', 256, 128, 128, "tower l1 weight grad (segment)"},
		{'N', 'N', 512, 512, 512, "ppnet.1 input grad"},
		{'N', 'N', 128, 128, 256, "tower l2 input grad (segment)"},
		{'N', 'N', 512, 48, 512, "ppnet.1 persona grad"},
	};
	int			ns = sizeof(S) / sizeof(S[0]),
				s,
				r,
				i,
				reps = 200;
	float	   *A = malloc(sizeof(float) << 20),
			   *B = malloc(sizeof(float) << 20),
			   *C = malloc(sizeof(float) << 20);

	omp_set_num_threads(1);
	openblas_set_num_threads(1);
	dnnl_engine_create(&eng, dnnl_cpu, 0);
	dnnl_stream_create(&str, eng, dnnl_stream_default_flags);
	for (i = 0; i < (1 << 20); i++)
	{
		A[i] = (i % 7) * 0.1f;
		B[i] = (i % 5) * 0.1f;
	}
	printf("| GEMM | op | M | N | K | OpenBLAS GFLOP/s | dnnl_sgemm GFLOP/s | oneDNN matmul GFLOP/s |\n|---|---|---|---|---|---|---|---|\n");
	for (s = 0; s < ns; s++)
	{
		int			M = S[s].M,
					N = S[s].N,
					K = S[s].K;
		char		ta = S[s].ta,
					tb = S[s].tb;
		int			lda = ta == 'N' ? K : M,
					ldb = tb == 'N' ? N : K;
		double		fl = 2.0 * M * N * K * reps,
					t0,
					t1,
					t2,
					t3;
		dnnl_memory_t ma,
					mb,
					mc;
		dnnl_primitive_t p = matmul(ta, tb, M, N, K, &ma, &mb, &mc);
		dnnl_exec_arg_t args[3];

		dnnl_memory_set_data_handle(ma, A);
		dnnl_memory_set_data_handle(mb, B);
		dnnl_memory_set_data_handle(mc, C);
		args[0] = (dnnl_exec_arg_t) {DNNL_ARG_SRC, ma};
		args[1] = (dnnl_exec_arg_t) {DNNL_ARG_WEIGHTS, mb};
		args[2] = (dnnl_exec_arg_t) {DNNL_ARG_DST, mc};
		/* warm-up: JIT of the kernels */
		cblas_sgemm(CblasRowMajor, ta == 'N' ? CblasNoTrans : CblasTrans, tb == 'N' ? CblasNoTrans : CblasTrans,
					M, N, K, 1, A, lda, B, ldb, 0, C, N);
		dnnl_sgemm(ta, tb, M, N, K, 1, A, lda, B, ldb, 0, C, N);
		dnnl_primitive_execute(p, str, 3, args);
		t0 = now();
		for (r = 0; r < reps; r++)
			cblas_sgemm(CblasRowMajor, ta == 'N' ? CblasNoTrans : CblasTrans, tb == 'N' ? CblasNoTrans : CblasTrans,
						M, N, K, 1, A, lda, B, ldb, 0, C, N);
		t1 = now();
		for (r = 0; r < reps; r++)
			dnnl_sgemm(ta, tb, M, N, K, 1, A, lda, B, ldb, 0, C, N);
		t2 = now();
		for (r = 0; r < reps; r++)
			dnnl_primitive_execute(p, str, 3, args);
		t3 = now();
		printf("| %s | %c%c | %d | %d | %d | %.0f | %.0f | %.0f |\n", S[s].what, ta, tb, M, N, K,
			   fl / (t1 - t0) / 1e9, fl / (t2 - t1) / 1e9, fl / (t3 - t2) / 1e9);
		dnnl_primitive_destroy(p);
		dnnl_memory_destroy(ma);
		dnnl_memory_destroy(mb);
		dnnl_memory_destroy(mc);
	}
	free(A);
	free(B);
	free(C);
	return 0;
}
