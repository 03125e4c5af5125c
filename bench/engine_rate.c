/*
 * engine_rate.c
 *		The batched scoring core alone, without PostgreSQL: candidates per
 *		second of pn_engine_score (oneDNN, tiles of `tile` rows, or the AVX2
 *		fallback) in fp32, bf16 and int8 (oneDNN's int8 matmuls with VNNI or
 *		AMX, else pepnet's AVX2 int8 kernel) and of pn_score (OpenBLAS, one call per block of 256, the 0.1
 *		path) for N candidates of one request, all interleaved in one run;
 *		the largest |bf16 - fp32| and |int8 - fp32| score; and, for the tile choice, the rate
 *		at several tile sizes.  Random weights of the config (seed 2), random
 *		hashed ids.  CPU time of this thread, median of 7 runs of >= 50 ms.
 *
 *		cc -O3 -Isrc/core -o /tmp/engine_rate bench/engine_rate.c src/core/alloc.c src/core/json.c \
 *			src/core/config.c src/core/model.c src/core/infer.c src/core/dnnl.c src/core/engine.c \
 *			src/core/train.c src/core/gemm.c src/core/bag.c src/core/plan.c src/core/quant.c -ldnnl -lgomp -lopenblas -lm
 *		/tmp/engine_rate bench/bench-config.json [N...]
 *
 *		Output: one JSON object per line.
 */
#include "pncore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

extern void openblas_set_num_threads(int);

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

static void
die(const char *what, PnError *e)
{
	fprintf(stderr, "%s: %s\n", what, e->msg);
	exit(1);
}

static uint64_t rs = 88172645463325252ULL;
static int64_t
rnd(int64_t n)
{
	rs ^= rs << 13;
	rs ^= rs >> 7;
	rs ^= rs << 17;
	return (int64_t) (rs % (uint64_t) n);
}

typedef struct Ctx
{
	PnModel    *m;
	PnDomainCache *dc;
	PnPersona  *pp;
	PnEngine   *eng;
	PnWork	   *w;
	int			n;
	int64_t    *feat;
	double	   *out;
} Ctx;

static void
run_engine(Ctx *c)
{
	PnError		e = {0};

	if (pn_engine_score(c->eng, c->dc, c->pp, c->n, c->feat, NULL, c->out, NULL, &e) != PN_OK)
		die("engine", &e);
}

static void
run_blas(Ctx *c)
{
	PnError		e = {0};
	int			done,
				F = c->m->cfg.nfeat,
				T = c->m->cfg.ntasks;

	for (done = 0; done < c->n; done += 256)
	{
		int			nb = c->n - done < 256 ? c->n - done : 256;

		if (pn_score(c->m, c->dc, c->pp, c->w, nb, c->feat + (size_t) done * F, NULL, c->out + (size_t) done * T, &e) != PN_OK)
			die("pn_score", &e);
	}
}

/* median seconds per call */
static double
timeit(void (*fn) (Ctx *), Ctx *c)
{
	long		reps = 1,
				k;
	double		t[7];
	int			r;

	for (;;)
	{
		double		t0 = now();

		for (k = 0; k < reps; k++)
			fn(c);
		if (now() - t0 >= 0.05)
			break;
		reps *= 2;
	}
	for (r = 0; r < 7; r++)
	{
		double		t0 = now();

		for (k = 0; k < reps; k++)
			fn(c);
		t[r] = (now() - t0) / reps;
	}
	qsort(t, 7, sizeof(double), cmpd);
	return t[3];
}

int
main(int argc, char **argv)
{
	PnConfig	cfg;
	PnError		e = {0};
	PnModel    *m;
	PnDomainCache *dc;
	PnPersona  *pp;
	FILE	   *f;
	char		buf[1 << 16];
	size_t		len;
	int64_t		persona[PN_MAX_FIELDS];
	int			ns[16],
				nn = 0,
				i,
				tiles[] = {16, 32, 64, 128};
	int			maxn = 0;
	int64_t    *feat;
	double	   *o32,
			   *o16;
	PnEngine   *e32 = NULL,
			   *e16 = NULL,
			   *e8 = NULL;
	double	   *o8;
	bool		bf16 = pn_engine_bf16_supported();

	openblas_set_num_threads(1);
	if (argc < 2)
	{
		fprintf(stderr, "usage: engine_rate config.json [N...]\n");
		return 2;
	}
	f = fopen(argv[1], "r");
	if (!f)
		return 1;
	len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (pn_config_parse(buf, len, (int64_t) 1 << 32, &cfg, &e) != PN_OK)
		die("config", &e);
	if (pn_model_new(&cfg, &m, &e) != PN_OK)
		die("model", &e);
	pn_model_init(m, 2);
	if (pn_domain_build(m, 1, &dc, &e) != PN_OK)
		die("domain", &e);
	for (i = 0; i < cfg.npers; i++)
		persona[i] = rnd(1000000);
	if (pn_persona_build(m, persona, &pp, &e) != PN_OK)
		die("persona", &e);
	for (i = 2; i < argc && nn < 16; i++)
		ns[nn++] = atoi(argv[i]);
	if (nn == 0)
	{
		ns[nn++] = 10;
		ns[nn++] = 100;
		ns[nn++] = 1000;
	}
	for (i = 0; i < nn; i++)
		if (ns[i] > maxn)
			maxn = ns[i];
	feat = malloc(sizeof(int64_t) * (size_t) maxn * cfg.nfeat);
	o32 = malloc(sizeof(double) * (size_t) maxn * cfg.ntasks);
	o16 = malloc(sizeof(double) * (size_t) maxn * cfg.ntasks);
	o8 = malloc(sizeof(double) * (size_t) maxn * cfg.ntasks);
	for (i = 0; i < maxn * cfg.nfeat; i++)
		feat[i] = rnd(1000000);
	printf("{\"kind\":\"isa\",\"isa\":\"%s\",\"bf16\":%s}\n", pn_engine_isa(), bf16 ? "true" : "false");

	if (pn_engine_new(m, PN_FP32, PN_TILE, NULL, &e32, &e) != PN_OK || pn_engine_prepare_domain(e32, dc, NULL, &e) != PN_OK)
		die("engine fp32", &e);
	if (bf16 && (pn_engine_new(m, PN_BF16, PN_TILE, NULL, &e16, &e) != PN_OK || pn_engine_prepare_domain(e16, dc, NULL, &e) != PN_OK))
		die("engine bf16", &e);
	if (pn_engine_new(m, PN_INT8, PN_TILE, NULL, &e8, &e) != PN_OK || pn_engine_prepare_domain(e8, dc, NULL, &e) != PN_OK)
		die("engine int8", &e);
	{
		double		mx = 0;

		if (pn_engine_score(e32, dc, pp, maxn, feat, NULL, o32, NULL, &e) != PN_OK ||
			pn_engine_score(e8, dc, pp, maxn, feat, NULL, o8, NULL, &e) != PN_OK)
			die("score", &e);
		for (i = 0; i < maxn * cfg.ntasks; i++)
		{
			double		d = o32[i] > o8[i] ? o32[i] - o8[i] : o8[i] - o32[i];

			if (d > mx)
				mx = d;
		}
		printf("{\"kind\":\"int8_error\",\"N\":%d,\"path\":\"%s\",\"max_abs\":%.3g}\n", maxn,
			   pn_engine_onednn(e8) ? "oneDNN int8" : "AVX2 kernel", mx);
	}

	/* bf16 accuracy against fp32 */
	if (bf16)
	{
		double		mx = 0;

		if (pn_engine_score(e32, dc, pp, maxn, feat, NULL, o32, NULL, &e) != PN_OK ||
			pn_engine_score(e16, dc, pp, maxn, feat, NULL, o16, NULL, &e) != PN_OK)
			die("score", &e);
		for (i = 0; i < maxn * cfg.ntasks; i++)
		{
			double		d = o32[i] > o16[i] ? o32[i] - o16[i] : o16[i] - o32[i];

			if (d > mx)
				mx = d;
		}
		printf("{\"kind\":\"bf16_error\",\"N\":%d,\"max_abs\":%.3g}\n", maxn, mx);
	}

	for (i = 0; i < nn; i++)
	{
		Ctx			c = {m, dc, pp, e32, pn_work_new(m, 256), ns[i], feat, o32};
		double		tb,
					t32,
					t16 = 0,
					t8;

		tb = timeit(run_blas, &c);
		t32 = timeit(run_engine, &c);
		if (bf16)
		{
			c.eng = e16;
			c.out = o16;
			t16 = timeit(run_engine, &c);
		}
		c.eng = e8;
		c.out = o8;
		t8 = timeit(run_engine, &c);
		printf("{\"kind\":\"score\",\"N\":%d,\"openblas_cand_s\":%.0f,\"onednn_fp32_cand_s\":%.0f,\"onednn_bf16_cand_s\":%.0f,"
			   "\"int8_cand_s\":%.0f,\"int8_over_fp32\":%.2f}\n",
			   ns[i], ns[i] / tb, ns[i] / t32, bf16 ? ns[i] / t16 : 0.0, ns[i] / t8, t32 / t8);
		pn_work_free(c.w);
		fflush(stdout);
	}

	/* tile sizes: each N with each tile, fp32 (and bf16) */
	for (i = 0; i < (int) (sizeof(tiles) / sizeof(tiles[0])); i++)
	{
		int			p,
					j;

		for (p = 0; p < (bf16 ? 2 : 1); p++)
		{
			PnEngine   *eng;

			if (pn_engine_new(m, p, tiles[i], NULL, &eng, &e) != PN_OK || pn_engine_prepare_domain(eng, dc, NULL, &e) != PN_OK)
				die("engine", &e);
			for (j = 0; j < nn; j++)
			{
				Ctx			c = {m, dc, pp, eng, NULL, ns[j], feat, o32};
				double		t = timeit(run_engine, &c);

				printf("{\"kind\":\"tile\",\"tile\":%d,\"precision\":\"%s\",\"N\":%d,\"cand_s\":%.0f}\n",
					   tiles[i], p ? "bf16" : "fp32", ns[j], ns[j] / t);
			}
			pn_engine_free(eng);
			fflush(stdout);
		}
	}
	return 0;
}
