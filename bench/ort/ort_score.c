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
 *						(cycling) and prints "cpu_ns wall_ns"
 *	dump SET FILE		writes every request's probabilities of set SET to
 *						FILE (float32, n x T per request, in order); prints "ok"
 * Each call hashes the request's raw ids into embedding rows (docs/model.md),
 * runs the domain's graph into a preallocated output tensor and sums the
 * first task's probabilities (the scores are read, as a client would).
 *
 * The npm package onnxruntime-node ships libonnxruntime.so.1 without its C
 * header, so the few entry points used are declared here by their position
 * in OrtApi, which is append-only: the positions below are those of every
 * ORT release since API version 1 (onnxruntime_c_api.h), and GetApi is
 * asked for version 13, which ORT 1.30 serves.
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct OrtStatus OrtStatus;
typedef struct OrtEnv OrtEnv;
typedef struct OrtSession OrtSession;
typedef struct OrtSessionOptions OrtSessionOptions;
typedef struct OrtValue OrtValue;
typedef struct OrtMemoryInfo OrtMemoryInfo;

typedef struct OrtApiBase
{
	const void *(*GetApi) (uint32_t version);
	const char *(*GetVersionString) (void);
} OrtApiBase;

/* positions in struct OrtApi */
enum
{
	API_GetErrorMessage = 2,
	API_CreateEnv = 3,
	API_CreateSession = 7,
	API_Run = 9,
	API_CreateSessionOptions = 10,
	API_SetSessionExecutionMode = 13,
	API_SetSessionGraphOptimizationLevel = 23,
	API_SetIntraOpNumThreads = 24,
	API_SetInterOpNumThreads = 25,
	API_CreateTensorWithDataAsOrtValue = 49,
	API_CreateCpuMemoryInfo = 69
};

enum
{
	ORT_LOGGING_LEVEL_WARNING = 2,
	ORT_SEQUENTIAL = 0,
	ORT_ENABLE_ALL = 99,
	OrtArenaAllocator = 1,
	OrtMemTypeDefault = 0,
	ONNX_FLOAT = 1,
	ONNX_INT64 = 7
};

static void *const *api;

#define FN(idx, type) ((type) api[idx])

static void
check(OrtStatus *st, const char *what)
{
	if (st)
	{
		fprintf(stderr, "ort_score: %s: %s\n", what,
				FN(API_GetErrorMessage, const char *(*) (const OrtStatus *)) (st));
		exit(1);
	}
}

typedef struct Field
{
	uint64_t	buckets,
				offset,
				mult;
	int			hashed;
} Field;

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
	/* per set (one n): buffers and the tensors wrapping them */
	int64_t    *frows,
			   *prows;
	float	   *out;
	OrtValue   *vfeat,
			   *vpers,
			   *vout;
} Set;

static int	F,
			P,
			T,
			D;
static Field *fields;

static inline int64_t
slot(int64_t id, const Field *f)
{
	uint64_t	z;

	if (!f->hashed)
		return id + (int64_t) f->offset;
	z = (uint64_t) id + f->mult;
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	z ^= z >> 31;
	return (int64_t) (z % f->buckets + f->offset);
}

static double
ns(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

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
	const char *lib = getenv("ORT_LIB");
	void	   *h;
	const OrtApiBase *(*get_base) (void);
	const OrtApiBase *base;
	OrtEnv	   *env;
	OrtSessionOptions *so;
	OrtSession **sess;
	OrtMemoryInfo *mi;
	FILE	   *f;
	int			nsets;
	Set		   *sets;
	char		line[4096];
	const char *in_names[] = {"feat", "pers"};
	const char *out_names[] = {"p"};

	if (argc != 5)
	{
		fprintf(stderr, "usage: ort_score META MODEL_PREFIX PRECISION REQUESTS\n");
		return 2;
	}
	h = dlopen(lib ? lib : "libonnxruntime.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h)
	{
		fprintf(stderr, "ort_score: %s\n", dlerror());
		return 1;
	}
	get_base = (const OrtApiBase *(*) (void)) dlsym(h, "OrtGetApiBase");
	base = get_base();
	api = (void *const *) base->GetApi(13);
	if (!api)
	{
		fprintf(stderr, "ort_score: ORT %s does not serve API version 13\n", base->GetVersionString());
		return 1;
	}
	fprintf(stderr, "ort_score: ONNX Runtime %s\n", base->GetVersionString());

	/* hashing spec */
	f = fopen(argv[1], "r");
	if (!f || fscanf(f, "%d %d %d %d", &F, &P, &T, &D) != 4)
	{
		fprintf(stderr, "ort_score: cannot read %s\n", argv[1]);
		return 1;
	}
	fields = calloc(F + P, sizeof(Field));
	for (int i = 0; i < F + P; i++)
	{
		unsigned long long b,
					o,
					m;

		if (fscanf(f, "%llu %d %llu %llu", &b, &fields[i].hashed, &o, &m) != 4)
			return 1;
		fields[i].buckets = b;
		fields[i].offset = o;
		fields[i].mult = m;
	}
	fclose(f);

	check(FN(API_CreateEnv, OrtStatus *(*) (int, const char *, OrtEnv **)) (ORT_LOGGING_LEVEL_WARNING, "bench", &env),
		  "CreateEnv");
	check(FN(API_CreateSessionOptions, OrtStatus *(*) (OrtSessionOptions **)) (&so), "CreateSessionOptions");
	check(FN(API_SetIntraOpNumThreads, OrtStatus *(*) (OrtSessionOptions *, int)) (so, 1), "SetIntraOpNumThreads");
	check(FN(API_SetInterOpNumThreads, OrtStatus *(*) (OrtSessionOptions *, int)) (so, 1), "SetInterOpNumThreads");
	check(FN(API_SetSessionExecutionMode, OrtStatus *(*) (OrtSessionOptions *, int)) (so, ORT_SEQUENTIAL),
		  "SetSessionExecutionMode");
	check(FN(API_SetSessionGraphOptimizationLevel, OrtStatus *(*) (OrtSessionOptions *, int)) (so, ORT_ENABLE_ALL),
		  "SetSessionGraphOptimizationLevel");
	sess = calloc(D, sizeof(*sess));
	for (int d = 0; d < D; d++)
	{
		char		path[4096];

		snprintf(path, sizeof(path), "%s.%s.d%d.onnx", argv[2], argv[3], d);
		check(FN(API_CreateSession, OrtStatus *(*) (OrtEnv *, const char *, OrtSessionOptions *, OrtSession **))
			  (env, path, so, &sess[d]), path);
	}
	check(FN(API_CreateCpuMemoryInfo, OrtStatus *(*) (int, int, OrtMemoryInfo **)) (OrtArenaAllocator, OrtMemTypeDefault, &mi),
		  "CreateCpuMemoryInfo");

	/* request sets, and per set the tensors over reusable buffers */
	f = fopen(argv[4], "rb");
	if (!f)
		return 1;
	xread(f, &nsets, 4);
	sets = calloc(nsets, sizeof(Set));
	for (int s = 0; s < nsets; s++)
	{
		Set		   *st = &sets[s];
		int			maxn = 0;
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
			if (r > 0 && q->n != st->reqs[0].n)
			{
				fprintf(stderr, "ort_score: the requests of a set must have one size\n");
				return 1;
			}
			if (q->n > maxn)
				maxn = q->n;
		}
		st->frows = malloc(sizeof(int64_t) * maxn * F);
		st->prows = malloc(sizeof(int64_t) * (P ? P : 1));
		st->out = malloc(sizeof(float) * maxn * T);
		fshape[0] = maxn;
		fshape[1] = F;
		pshape[0] = P;
		oshape[0] = maxn;
		oshape[1] = T;
		check(FN(API_CreateTensorWithDataAsOrtValue,
				 OrtStatus *(*) (const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **))
			  (mi, st->frows, sizeof(int64_t) * maxn * F, fshape, 2, ONNX_INT64, &st->vfeat), "tensor feat");
		check(FN(API_CreateTensorWithDataAsOrtValue,
				 OrtStatus *(*) (const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **))
			  (mi, st->prows, sizeof(int64_t) * P, pshape, 1, ONNX_INT64, &st->vpers), "tensor pers");
		check(FN(API_CreateTensorWithDataAsOrtValue,
				 OrtStatus *(*) (const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **))
			  (mi, st->out, sizeof(float) * maxn * T, oshape, 2, ONNX_FLOAT, &st->vout), "tensor p");
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
		c0 = ns(CLOCK_PROCESS_CPUTIME_ID);
		w0 = ns(CLOCK_MONOTONIC);
		for (int i = 0; i < calls; i++)
		{
			Set		   *st = &sets[s];
			Req		   *q = &st->reqs[(start + i) % st->count];
			const OrtValue *ins[2] = {st->vfeat, st->vpers};
			OrtValue   *outs[1] = {st->vout};

			for (int r = 0; r < q->n; r++)
				for (int j = 0; j < F; j++)
					st->frows[r * F + j] = slot(q->feats[r * F + j], &fields[j]);
			for (int j = 0; j < P; j++)
				st->prows[j] = slot(q->persona[j], &fields[F + j]);
			check(FN(API_Run, OrtStatus *(*) (OrtSession *, const void *, const char *const *, const OrtValue *const *,
											  size_t, const char *const *, size_t, OrtValue **))
				  (sess[q->domain], NULL, in_names, ins, 2, out_names, 1, outs), "Run");
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
