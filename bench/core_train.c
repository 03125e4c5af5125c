/*
 * core_train.c
 *		pepnet's training core alone, without PostgreSQL: pn_train_step
 *		(forward, backward, Adam / SparseAdam) on random batches of a config,
 *		as src/training.c calls it.  With CALL pepnet_train's rows/s this
 *		separates the model's work from the SQL reader; under perf or
 *		callgrind it shows where a training step's time goes.
 *
 *		Build from the repository root with the Makefile's flags for src/core:
 *
 *			cc -O3 -fno-math-errno -fno-trapping-math -g -Isrc/core -o /tmp/core_train \
 *				bench/core_train.c src/core/alloc.c src/core/json.c src/core/config.c src/core/model.c \
 *				src/core/infer.c src/core/dnnl.c src/core/engine.c src/core/train.c src/core/gemm.c src/core/bag.c src/core/plan.c -ldnnl -lgomp -lopenblas -lm
 *
 *			/tmp/core_train bench/bench-config.json [batch 512] [steps 200] [seed 1]
 *
 *		Inputs: uniformly random ids (hashed), domains, 0/1 labels (CTR about
 *		0.2), dense values N(0, 1) if the config has any.  Output: one JSON
 *		object: steps, batch, CPU seconds of this thread (unaffected by other
 *		jobs on a shared host), samples per CPU second, ms per step, last loss.
 *		The first 5 steps (warm-up: page faults, kernel JIT) are not timed.
 */
#include "pncore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
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

/* xorshift64*: reproducible random numbers */
static uint64_t rs = 88172645463325252ULL;

static uint64_t
rnd(void)
{
	rs ^= rs >> 12;
	rs ^= rs << 25;
	rs ^= rs >> 27;
	return rs * 2685821657736338717ULL;
}

static float
unif(void)
{
	return (rnd() >> 40) / (float) (1 << 24);
}

int
main(int argc, char **argv)
{
	PnConfig	cfg;
	PnModel    *m;
	PnTrainer  *tr;
	PnError		err;
	size_t		len;
	char	   *text;
	int			B = argc > 2 ? atoi(argv[2]) : 512,
				steps = argc > 3 ? atoi(argv[3]) : 200,
				warm = 5,
				nb = 16,		/* distinct batches, cycled */
				i,
				j,
				s;
	int32_t    *dom;
	int64_t    *pers,
			   *feat;
	float	   *dense,
			   *lab;
	double		loss = 0,
				t0 = 0,
				secs;

	if (argc < 2)
	{
		fprintf(stderr, "usage: %s config.json [batch] [steps] [seed]\n", argv[0]);
		return 2;
	}
	if (argc > 4)
		rs ^= (uint64_t) atoll(argv[4]) * 0x9E3779B97F4A7C15ULL;
	memset(&err, 0, sizeof(err));
	text = slurp(argv[1], &len);
	if (pn_config_parse(text, len, (int64_t) 1 << 40, &cfg, &err) != PN_OK ||
		pn_model_new(&cfg, &m, &err) != PN_OK)
	{
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	pn_model_init(m, 0);
	if (pn_trainer_new(m, B, 1e-3f, &tr, &err) != PN_OK)
	{
		fprintf(stderr, "%s\n", err.msg);
		return 1;
	}
	dom = malloc(sizeof(int32_t) * B * nb);
	pers = malloc(sizeof(int64_t) * B * nb * (cfg.npers + 1));
	feat = malloc(sizeof(int64_t) * B * nb * (cfg.nfeat + 1));
	dense = malloc(sizeof(float) * B * nb * (cfg.dense + 1));
	lab = malloc(sizeof(float) * B * nb * cfg.ntasks);
	for (i = 0; i < B * nb; i++)
	{
		dom[i] = rnd() % cfg.domains;
		for (j = 0; j < cfg.npers; j++)
			pers[(size_t) i * cfg.npers + j] = cfg.pers[j].hash ? (int64_t) (rnd() >> 1) : (int64_t) (rnd() % cfg.pers[j].buckets);
		for (j = 0; j < cfg.nfeat; j++)
			feat[(size_t) i * cfg.nfeat + j] = cfg.feat[j].hash ? (int64_t) (rnd() >> 1) : (int64_t) (rnd() % cfg.feat[j].buckets);
		for (j = 0; j < cfg.dense; j++)
			dense[(size_t) i * cfg.dense + j] = unif() + unif() + unif() - 1.5f;
		for (j = 0; j < cfg.ntasks; j++)
			lab[(size_t) i * cfg.ntasks + j] = unif() < 0.2f ? 1.0f : 0.0f;
	}
	for (s = 0; s < warm + steps; s++)
	{
		int			o = (s % nb) * B;
		PnBatch		b = {B, dom + o, pers + (size_t) o * cfg.npers, feat + (size_t) o * cfg.nfeat,
		cfg.dense ? dense + (size_t) o * cfg.dense : NULL, lab + (size_t) o * cfg.ntasks};

		if (s == warm)
			t0 = cpu_now();
		if (pn_train_step(tr, &b, &loss, &err) != PN_OK)
		{
			fprintf(stderr, "step %d: %s\n", s, err.msg);
			return 1;
		}
	}
	secs = cpu_now() - t0;
	printf("{\"config\": \"%s\", \"batch\": %d, \"steps\": %d, \"cpu_seconds\": %.3f, "
		   "\"samples_per_cpu_s\": %.0f, \"ms_per_step\": %.3f, \"last_loss\": %.5f}\n",
		   argv[1], B, steps, secs, (double) B * steps / secs, 1e3 * secs / steps, loss);
	free(dom);
	free(pers);
	free(feat);
	free(dense);
	free(lab);
	free(text);
	pn_trainer_free(tr);
	pn_model_free(m);
	pn_config_free(&cfg);
	return 0;
}
