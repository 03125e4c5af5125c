/*
 * core_score.c
 *		pepnet's numeric core alone, without PostgreSQL: the time of model
 *		load (copy of the weights, pn_model_layout + pn_safetensors_read in
 *		place, as src/models.c does), of pn_domain_build, of
 *		pn_persona_build and of pn_score for N candidates in blocks of
 *		PEPNET_BLOCK, exactly as score.c calls them.  With pepnet_score's
 *		server-side time this separates the model from the SQL overhead.
 *
 *		Build it with the flags the Makefile compiles src/core with (see
 *		`make -n -B src/core/infer.o`; bench/bench_score.py does this), e.g.
 *		from the repository root:
 *
 *			cc $(pg_config --cflags) -O3 -fno-math-errno -Isrc/core -o /tmp/core_score \
 *				bench/core_score.c src/core/*.c -ldnnl -lgomp -lopenblas -lm
 *
 *			/tmp/core_score config.json weights.safetensors block N...
 *
 *		(bench/bench_score.py writes the bench model's weights to a scratch
 *		directory and runs it.)
 *		Output: one JSON object per line.  Inputs are random ids (hashed, like
 *		the SQL benchmark's); timing is the median of 7 runs of >= 50 ms,
 *		in CPU time of this thread.
 */
#include "pncore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

static int
cmpd(const void *a, const void *b)
{
	double		x = *(const double *) a,
				y = *(const double *) b;

	return x < y ? -1 : x > y;
}

static char *
slurp(const char *path, size_t *len)
{
	FILE	   *f = fopen(path, "rb");
	char	   *buf;
	long		n;

	if (!f)
	{
		perror(path);
		exit(1);
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n + 1);
	if (!buf || fread(buf, 1, n, f) != (size_t) n)
	{
		fprintf(stderr, "cannot read %s\n", path);
		exit(1);
	}
	buf[n] = '\0';
	fclose(f);
	*len = n;
	return buf;
}

static void
die(const char *what, PnError *err)
{
	fprintf(stderr, "%s: %s %s\n", what, err->msg, err->detail);
	exit(1);
}

static uint64_t rng_state = 88172645463325252ULL;

static int64_t
rnd(int64_t bound)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (int64_t) (rng_state % (uint64_t) bound);
}

int
main(int argc, char **argv)
{
	char	   *cfgtext,
			   *blob;
	size_t		cfglen,
				bloblen;
	PnConfig	cfg;
	PnModel    *m = NULL;
	PnError		err = {0};
	PnDomainCache *dc = NULL;
	PnPersona  *pp = NULL;
	PnWork	   *w;
	int			block,
				a,
				r;
	double		t[7];

	if (argc < 5)
	{
		fprintf(stderr, "usage: %s config.json weights.safetensors block N...\n", argv[0]);
		return 2;
	}
	openblas_set_num_threads(1);
	cfgtext = slurp(argv[1], &cfglen);
	blob = slurp(argv[2], &bloblen);
	block = atoi(argv[3]);

	/* what first touching fresh memory costs here: mmap the size of the weights and write it */
	{
		double		best = 1e9;

		for (r = 0; r < 5; r++)
		{
			char	   *p = mmap(NULL, bloblen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			double		t0 = now();

			if (p == MAP_FAILED)
				break;
			memset(p, 0, bloblen);
			t[0] = now() - t0;
			if (t[0] < best)
				best = t[0];
			munmap(p, bloblen);
		}
		printf("{\"kind\":\"first_touch\",\"bytes\":%zu,\"ms\":%.3f,\"us_per_page\":%.3f}\n",
			   bloblen, best * 1e3, best * 1e6 / (bloblen / 4096.0));
	}

	/*
	 * Model load as pepnet_load_model does it: the weights are copied out of
	 * the table (here: from the file's buffer into fresh memory, as detoasting
	 * does), the config parsed, the tensors laid out and pointed into that
	 * copy (pn_model_layout + pn_safetensors_read, no second copy).
	 */
	{
		char	   *held = NULL;
		double		first = 0;

		for (r = 0; r < 7; r++)
		{
			double		t0 = now();

			if (m)
				pn_model_free(m);
			free(held);
			held = malloc(bloblen);
			if (!held)
			{
				fprintf(stderr, "out of memory\n");
				return 1;
			}
			memcpy(held, blob, bloblen);
			if (pn_config_parse(cfgtext, cfglen, (int64_t) 1 << 40, &cfg, &err) != PN_OK)
				die("config", &err);
			if (pn_model_layout(&cfg, &m, &err) != PN_OK)
				die("model", &err);
			pn_config_free(&cfg);
			if (pn_safetensors_read(m, (const uint8_t *) held, bloblen, &err) != PN_OK)
				die("weights", &err);
			t[r] = now() - t0;
			if (r == 0)
				first = t[0];
		}
		qsort(t, 7, sizeof(double), cmpd);
		printf("{\"kind\":\"load\",\"bytes\":%zu,\"first_ms\":%.3f,\"median_ms\":%.3f}\n", bloblen, first * 1e3, t[3] * 1e3);
	}

	for (r = 0; r < 7; r++)
	{
		double		t0 = now();

		if (dc)
			pn_domain_free(dc);
		if (pn_domain_build(m, r % m->cfg.domains, &dc, &err) != PN_OK)
			die("domain", &err);
		t[r] = now() - t0;
	}
	qsort(t, 7, sizeof(double), cmpd);
	printf("{\"kind\":\"domain_build\",\"median_ms\":%.3f}\n", t[3] * 1e3);
	pn_domain_free(dc);
	if (pn_domain_build(m, 1, &dc, &err) != PN_OK)
		die("domain", &err);

	{
		int64_t		persona[PN_MAX_FIELDS];
		int			i;

		for (r = 0; r < 7; r++)
		{
			double		t0 = now();
			int			k;

			for (k = 0; k < 100; k++)
			{
				for (i = 0; i < m->cfg.npers; i++)
					persona[i] = rnd(1000000);
				if (pp)
					pn_persona_free(pp);
				if (pn_persona_build(m, persona, &pp, &err) != PN_OK)
					die("persona", &err);
			}
			t[r] = (now() - t0) / 100;
		}
		qsort(t, 7, sizeof(double), cmpd);
		printf("{\"kind\":\"persona_build\",\"median_us\":%.3f}\n", t[3] * 1e6);
	}

	w = pn_work_new(m, block);
	for (a = 4; a < argc; a++)
	{
		int			n = atoi(argv[a]),
					F = m->cfg.nfeat,
					T = m->cfg.ntasks;
		int64_t    *feat = malloc(sizeof(int64_t) * (size_t) n * F);
		double	   *out = malloc(sizeof(double) * (size_t) n * T);
		long		reps = 1,
					k;
		size_t		i;

		for (i = 0; i < (size_t) n * F; i++)
			feat[i] = rnd(10 * m->cfg.feat[i % F].buckets);
		for (;;)
		{
			double		t0 = now();

			for (k = 0; k < reps; k++)
			{
				int			done;

				for (done = 0; done < n; done += block)
				{
					int			nb = n - done < block ? n - done : block;

					if (pn_score(m, dc, pp, w, nb, feat + (size_t) done * F, NULL, out + (size_t) done * T, &err) != PN_OK)
						die("score", &err);
				}
			}
			if (now() - t0 >= 0.05)
				break;
			reps *= 2;
		}
		for (r = 0; r < 7; r++)
		{
			double		t0 = now();

			for (k = 0; k < reps; k++)
			{
				int			done;

				for (done = 0; done < n; done += block)
				{
					int			nb = n - done < block ? n - done : block;

					pn_score(m, dc, pp, w, nb, feat + (size_t) done * F, NULL, out + (size_t) done * T, &err);
				}
			}
			t[r] = (now() - t0) / reps;
		}
		qsort(t, 7, sizeof(double), cmpd);
		printf("{\"kind\":\"score\",\"N\":%d,\"median_us\":%.3f,\"cand_per_s\":%.1f}\n", n, t[3] * 1e6, n / t[3]);
		fflush(stdout);
		free(feat);
		free(out);
	}
	return 0;
}
