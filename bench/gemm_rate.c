/*
 * gemm_rate.c
 *		Single-thread GFLOP/s of C [m, n] = A [m, k] W [n, k]^T at the shapes of
 *		the bench model's scoring forward, for OpenBLAS (cblas_sgemm, as 0.1
 *		called it, and cblas_sgemv for m = 1) and oneDNN matmul (fp32, and bf16
 *		in with fp32 accumulation), the oneDNN primitive created for the fixed
 *		m with the weights packed once in its preferred layout, as the scoring
 *		engine does.  CPU time of this thread, median of 7 runs of >= 30 ms.
 *
 *		cc -O2 -o /tmp/gemm_rate bench/gemm_rate.c -ldnnl -lgomp -lopenblas
 *		/tmp/gemm_rate            # one JSON object per line
 */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <oneapi/dnnl/dnnl.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
cmpd(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

typedef void (*Fn) (void *);

static double
timeit(Fn fn, void *arg)
{
	long		reps = 1,
				k;
	double		t[7];
	int			r;

	for (;;)
	{
		double		t0 = now();

		for (k = 0; k < reps; k++)
			fn(arg);
		if (now() - t0 >= 0.03)
			break;
		reps *= 2;
	}
	for (r = 0; r < 7; r++)
	{
		double		t0 = now();

		for (k = 0; k < reps; k++)
			fn(arg);
		t[r] = (now() - t0) / reps;
	}
	qsort(t, 7, sizeof(double), cmpd);
	return t[3];
}

typedef struct Job
{
	int			m,
				k,
				n;
	float	   *A,
			   *W,
			   *C;
	dnnl_primitive_t prim;
	dnnl_stream_t stream;
	dnnl_exec_arg_t args[3];
} Job;

static void
run_blas(void *p)
{
	Job		   *j = p;

	if (j->m == 1)
		cblas_sgemv(CblasRowMajor, CblasNoTrans, j->n, j->k, 1.0f, j->W, j->k, j->A, 1, 0.0f, j->C, 1);
	else
		cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->m, j->n, j->k, 1.0f, j->A, j->k, j->W, j->k,
					0.0f, j->C, j->n);
}

static void
run_dnnl(void *p)
{
	Job		   *j = p;

	dnnl_primitive_execute(j->prim, j->stream, 3, j->args);
}

/* oneDNN rate of one shape in data type dt (f32 or bf16 in, f32 out); 0 when unavailable */
static double
dnnl_rate(dnnl_engine_t eng, dnnl_stream_t st, int m, int k, int n, dnnl_data_type_t dt)
{
	dnnl_memory_desc_t a_md,
				w_md,
				c_md,
				wplain;
	dnnl_matmul_desc_t md;
	dnnl_primitive_desc_t pd;
	dnnl_memory_t ma,
				mw,
				mc,
				mwp;
	Job			j = {m, k, n};
	size_t		es = dt == dnnl_bf16 ? 2 : 4;
	void	   *a = calloc((size_t) m * k, es),
			   *w = NULL,
			   *c = calloc((size_t) m * n, 4);
	float	   *wf = malloc(sizeof(float) * k * n);
	double		t;
	int			i;

	for (i = 0; i < k * n; i++)
		wf[i] = (float) ((i * 37) % 101) / 101.0f - 0.5f;
	dnnl_memory_desc_init_by_tag(&a_md, 2, (dnnl_dims_t) {m, k}, dt, dnnl_ab);
	dnnl_memory_desc_init_by_tag(&w_md, 2, (dnnl_dims_t) {k, n}, dt, dnnl_format_tag_any);
	dnnl_memory_desc_init_by_tag(&c_md, 2, (dnnl_dims_t) {m, n}, dnnl_f32, dnnl_ab);
	if (dnnl_matmul_desc_init(&md, &a_md, &w_md, NULL, &c_md) != dnnl_success ||
		dnnl_primitive_desc_create(&pd, &md, NULL, eng, NULL) != dnnl_success)
		return 0;
	w_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
	w = aligned_alloc(64, (dnnl_memory_desc_get_size(&w_md) + 63) / 64 * 64);
	dnnl_primitive_create(&j.prim, pd);
	dnnl_primitive_desc_destroy(pd);
	/* pack W [n, k] row-major = [k, n] with strides {1, k} */
	dnnl_memory_desc_init_by_strides(&wplain, 2, (dnnl_dims_t) {k, n}, dnnl_f32, (dnnl_dims_t) {1, k});
	{
		dnnl_primitive_desc_t rpd;
		dnnl_primitive_t r;

		dnnl_reorder_primitive_desc_create(&rpd, &wplain, eng, &w_md, eng, NULL);
		dnnl_primitive_create(&r, rpd);
		dnnl_memory_create(&mwp, &wplain, eng, wf);
		dnnl_memory_create(&mw, &w_md, eng, w);
		{
			dnnl_exec_arg_t ra[2] = {{DNNL_ARG_FROM, mwp}, {DNNL_ARG_TO, mw}};

			dnnl_primitive_execute(r, st, 2, ra);
		}
		dnnl_primitive_destroy(r);
		dnnl_primitive_desc_destroy(rpd);
	}
	dnnl_memory_create(&ma, &a_md, eng, a);
	dnnl_memory_create(&mc, &c_md, eng, c);
	j.stream = st;
	j.args[0] = (dnnl_exec_arg_t) {DNNL_ARG_SRC, ma};
	j.args[1] = (dnnl_exec_arg_t) {DNNL_ARG_WEIGHTS, mw};
	j.args[2] = (dnnl_exec_arg_t) {DNNL_ARG_DST, mc};
	t = timeit(run_dnnl, &j);
	dnnl_primitive_destroy(j.prim);
	dnnl_memory_destroy(ma);
	dnnl_memory_destroy(mw);
	dnnl_memory_destroy(mwp);
	dnnl_memory_destroy(mc);
	free(a);
	free(w);
	free(c);
	free(wf);
	return 2.0 * m * k * n / t / 1e9;
}

int
main(void)
{
	/* (k, n, what) at the bench model: n0 = 128, hidden 256/128, T = 2, aux 32 */
	static const struct
	{
		int			k,
					n;
		const char *what;
	}			shapes[] = {
		{128, 128, "EPNet layer 1 and 2"},
		{128, 512, "tower layer 1 (both tasks), gate 1 layer 1"},
		{512, 512, "gate 1 layer 2"},
		{256, 128, "tower layer 2 (per task)"},
		{128, 256, "gate 2 layer 1"},
		{256, 256, "gate 2 layer 2"},
		{128, 32, "aux layer 1"},
	};
	int			ms[] = {1, 16, 100, 256, 1000};
	dnnl_engine_t eng;
	dnnl_stream_t st;
	size_t		s;
	unsigned	i;

	omp_set_num_threads(1);
	openblas_set_num_threads(1);
	dnnl_engine_create(&eng, dnnl_cpu, 0);
	dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
	for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
		for (i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
		{
			int			m = ms[i],
						k = shapes[s].k,
						n = shapes[s].n;
			Job			j = {m, k, n};
			double		blas;

			j.A = calloc((size_t) m * k, 4);
			j.W = malloc(sizeof(float) * k * n);
			j.C = calloc((size_t) m * n, 4);
			for (int q = 0; q < k * n; q++)
				j.W[q] = (float) ((q * 37) % 101) / 101.0f - 0.5f;
			blas = 2.0 * m * k * n / timeit(run_blas, &j) / 1e9;
			printf("{\"k\":%d,\"n\":%d,\"m\":%d,\"what\":\"%s\",\"openblas\":%.1f,\"onednn_fp32\":%.1f,\"onednn_bf16\":%.1f}\n",
				   k, n, m, shapes[s].what, blas, dnnl_rate(eng, st, m, k, n, dnnl_f32),
				   dnnl_rate(eng, st, m, k, n, dnnl_bf16));
			fflush(stdout);
			free(j.A);
			free(j.W);
			free(j.C);
		}
	return 0;
}
