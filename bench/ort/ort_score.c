/*
 * ort_score.c
 *		The ONNX Runtime anchor of issue 18: scores request sets with the
 *		bench model's ONNX graphs (bench/ort/export_onnx.py) through ORT's C
 *		API, one thread, and reports the process's CPU time.
 *
 *	ort_score META MODEL_PREFIX PRECISION REQUESTS
 *
 * loads MODEL_PREFIX.PRECISION.d<D>.onnx for every domain (graph optimizations
 * on: ORT_ENABLE_ALL; intra- and inter-op threads 1, sequential execution),
 * reads the request sets of REQUESTS (export_onnx.write_requests), then
 * answers commands on stdin, one per line:
 *	run SET CALLS START	scores CALLS requests of set SET from request START
 *						(cycling) and prints "cpu_ns wall_ns checksum"
 *	dump SET FILE		writes every request's probabilities of set SET to
 *						FILE (float32, n x T per request, in order); prints "ok"
 * Each call hashes the request's raw ids into embedding rows (docs/model.md),
 * runs the domain's graph into a preallocated output tensor and reads the
 * first task's probabilities, as a client would.
 */
#include "ort_api.h"

typedef struct Req
{
	int			domain,
				n;
	int64_t    *persona,
			   *feats;
} Req;

typedef struct Set
{
	int			count;
	Req		   *reqs;
	/* per set (one n): buffers and the tensors over them */
	int64_t    *frows,
			   *prows;
	float	   *out;
	OrtValue   *vfeat,
			   *vpers,
			   *vout;
} Set;

static void
xread(FILE *f, void *p, size_t n)
{
	if (fread(p, 1, n, f) != n)
	{
		fprintf(stderr, "ort_score: short read of the requests file\n");
		exit(1);
	}
}

int
main(int argc, char **argv)
{
	int			F,
				P,
				T,
				D;
	Field	   *fields;
	OrtSession **sess;
	OrtMemoryInfo *mi;
	FILE	   *f;
	int			nsets;
	Set		   *sets;
	char		line[4096];

	if (argc != 5)
	{
		fprintf(stderr, "usage: ort_score META MODEL_PREFIX PRECISION REQUESTS\n");
		return 2;
	}
	ort_open();
	fields = read_meta(argv[1], &F, &P, &T, &D);
	sess = ort_sessions(argv[2], argv[3], D, &mi);

	f = fopen(argv[4], "rb");
	if (!f)
		return 1;
	xread(f, &nsets, 4);
	sets = calloc(nsets, sizeof(Set));
	for (int s = 0; s < nsets; s++)
	{
		Set		   *st = &sets[s];
		int			n = 0;
		int64_t		fshape[2],
					pshape[1],
					oshape[2];

		xread(f, &st->count, 4);
		st->reqs = calloc(st->count, sizeof(Req));
		for (int r = 0; r < st->count; r++)
		{
			Req		   *q = &st->reqs[r];
			int32_t		hd[2];

			xread(f, hd, 8);
			q->domain = hd[0];
			q->n = hd[1];
			q->persona = malloc(sizeof(int64_t) * (P ? P : 1));
			q->feats = malloc(sizeof(int64_t) * q->n * F);
			xread(f, q->persona, sizeof(int64_t) * P);
			xread(f, q->feats, sizeof(int64_t) * q->n * F);
			if (r > 0 && q->n != n)
			{
				fprintf(stderr, "ort_score: the requests of a set must have one size\n");
				return 1;
			}
			n = q->n;
		}
		st->frows = malloc(sizeof(int64_t) * n * F);
		st->prows = malloc(sizeof(int64_t) * (P ? P : 1));
		st->out = malloc(sizeof(float) * n * T);
		fshape[0] = n;
		fshape[1] = F;
		pshape[0] = P;
		oshape[0] = n;
		oshape[1] = T;
		st->vfeat = ort_tensor(mi, st->frows, sizeof(int64_t) * n * F, fshape, 2, ONNX_INT64);
		st->vpers = ort_tensor(mi, st->prows, sizeof(int64_t) * P, pshape, 1, ONNX_INT64);
		st->vout = ort_tensor(mi, st->out, sizeof(float) * n * T, oshape, 2, ONNX_FLOAT);
	}
	fclose(f);
	printf("ready\n");
	fflush(stdout);

	while (fgets(line, sizeof(line), stdin))
	{
		int			s,
					calls,
					start;
		char		path[4000];
		FILE	   *df = NULL;
		double		c0,
					w0,
					sink = 0;

		if (sscanf(line, "run %d %d %d", &s, &calls, &start) == 3)
			;
		else if (sscanf(line, "dump %d %3999s", &s, path) == 2)
		{
			df = fopen(path, "wb");
			calls = sets[s].count;
			start = 0;
		}
		else if (strncmp(line, "quit", 4) == 0)
			break;
		else
		{
			fprintf(stderr, "ort_score: unknown command %s", line);
			return 1;
		}
		if (s < 0 || s >= nsets)
			return 1;
		c0 = ns(CLOCK_PROCESS_CPUTIME_ID);
		w0 = ns(CLOCK_MONOTONIC);
		for (int i = 0; i < calls; i++)
		{
			Set		   *st = &sets[s];
			Req		   *q = &st->reqs[(start + i) % st->count];

			for (int r = 0; r < q->n; r++)
				for (int j = 0; j < F; j++)
					st->frows[r * F + j] = slot(q->feats[r * F + j], &fields[j]);
			for (int j = 0; j < P; j++)
				st->prows[j] = slot(q->persona[j], &fields[F + j]);
			ort_run(sess[q->domain], st->vfeat, st->vpers, st->vout);
			for (int r = 0; r < q->n; r++)
				sink += st->out[r * T];
			if (df)
				fwrite(st->out, sizeof(float), (size_t) q->n * T, df);
		}
		if (df)
		{
			fclose(df);
			printf("ok\n");
		}
		else
			printf("%.0f %.0f %g\n", ns(CLOCK_PROCESS_CPUTIME_ID) - c0, ns(CLOCK_MONOTONIC) - w0, sink);
		fflush(stdout);
	}
	return 0;
}
