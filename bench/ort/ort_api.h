/*
 * ort_api.h
 *		The few ONNX Runtime C API entry points the bench programs use, and
 *		docs/model.md's id hashing.
 *
 * The npm package onnxruntime-node ships libonnxruntime.so.1 without its C
 * header, so the entry points are declared here by their position in
 * OrtApi, which is append-only: the positions below are those of every ORT
 * release since API version 1 (onnxruntime_c_api.h), and GetApi is asked
 * for version 13, which ORT 1.30 serves.  The library is opened with dlopen
 * (ORT_LIB, else the loader's search path).
 */
#ifndef ORT_API_H
#define ORT_API_H

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
	API_SetOptimizedModelFilePath = 11,
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
		fprintf(stderr, "ort: %s: %s\n", what,
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

/* dlopen ORT and take its API (exits on failure) */
static void
ort_open(void)
{
	const char *lib = getenv("ORT_LIB");
	void	   *h = dlopen(lib ? lib : "libonnxruntime.so.1", RTLD_NOW | RTLD_LOCAL);
	const OrtApiBase *(*get_base) (void);
	const OrtApiBase *base;

	if (!h)
	{
		fprintf(stderr, "ort: %s\n", dlerror());
		exit(1);
	}
	get_base = (const OrtApiBase *(*) (void)) dlsym(h, "OrtGetApiBase");
	if (!get_base)
	{
		fprintf(stderr, "ort: no OrtGetApiBase in the library\n");
		exit(1);
	}
	base = get_base();
	api = (void *const *) base->GetApi(13);
	if (!api)
	{
		fprintf(stderr, "ort: ONNX Runtime %s does not serve API version 13\n", base->GetVersionString());
		exit(1);
	}
	fprintf(stderr, "ort: ONNX Runtime %s\n", base->GetVersionString());
}

/* hashing spec written by export_onnx.py: F P T D, then F + P fields */
static Field *
read_meta(const char *path, int *F, int *P, int *T, int *D)
{
	FILE	   *f = fopen(path, "r");
	Field	   *fields;

	if (!f || fscanf(f, "%d %d %d %d", F, P, T, D) != 4)
	{
		fprintf(stderr, "ort: cannot read %s\n", path);
		exit(1);
	}
	fields = calloc(*F + *P, sizeof(Field));
	for (int i = 0; i < *F + *P; i++)
	{
		unsigned long long b,
					o,
					m;

		if (fscanf(f, "%llu %d %llu %llu", &b, &fields[i].hashed, &o, &m) != 4)
		{
			fprintf(stderr, "ort: malformed %s\n", path);
			exit(1);
		}
		fields[i].buckets = b;
		fields[i].offset = o;
		fields[i].mult = m;
	}
	fclose(f);
	return fields;
}

/* one session per domain: PREFIX.PRECISION.d<D>.onnx, one thread, all graph optimizations */
static OrtSession **
ort_sessions(const char *prefix, const char *precision, int D, OrtMemoryInfo **mi)
{
	OrtEnv	   *env;
	OrtSessionOptions *so;
	OrtSession **sess = calloc(D, sizeof(*sess));

	check(FN(API_CreateEnv, OrtStatus *(*) (int, const char *, OrtEnv **)) (ORT_LOGGING_LEVEL_WARNING, "bench", &env),
		  "CreateEnv");
	check(FN(API_CreateSessionOptions, OrtStatus *(*) (OrtSessionOptions **)) (&so), "CreateSessionOptions");
	check(FN(API_SetIntraOpNumThreads, OrtStatus *(*) (OrtSessionOptions *, int)) (so, 1), "SetIntraOpNumThreads");
	check(FN(API_SetInterOpNumThreads, OrtStatus *(*) (OrtSessionOptions *, int)) (so, 1), "SetInterOpNumThreads");
	check(FN(API_SetSessionExecutionMode, OrtStatus *(*) (OrtSessionOptions *, int)) (so, ORT_SEQUENTIAL),
		  "SetSessionExecutionMode");
	check(FN(API_SetSessionGraphOptimizationLevel, OrtStatus *(*) (OrtSessionOptions *, int)) (so, ORT_ENABLE_ALL),
		  "SetSessionGraphOptimizationLevel");
	/* ORT_OPTIMIZED_OUT=FILE: ORT writes the graph as optimized (the last domain's) there */
	if (getenv("ORT_OPTIMIZED_OUT"))
		check(FN(API_SetOptimizedModelFilePath, OrtStatus *(*) (OrtSessionOptions *, const char *))
			  (so, getenv("ORT_OPTIMIZED_OUT")), "SetOptimizedModelFilePath");
	for (int d = 0; d < D; d++)
	{
		char		path[4096];

		snprintf(path, sizeof(path), "%s.%s.d%d.onnx", prefix, precision, d);
		check(FN(API_CreateSession, OrtStatus *(*) (OrtEnv *, const char *, OrtSessionOptions *, OrtSession **))
			  (env, path, so, &sess[d]), path);
	}
	check(FN(API_CreateCpuMemoryInfo, OrtStatus *(*) (int, int, OrtMemoryInfo **)) (OrtArenaAllocator, OrtMemTypeDefault, mi),
		  "CreateCpuMemoryInfo");
	return sess;
}

/* a tensor over a caller's buffer */
static OrtValue *
ort_tensor(OrtMemoryInfo *mi, void *data, size_t bytes, const int64_t *shape, size_t ndim, int type)
{
	OrtValue   *v;

	check(FN(API_CreateTensorWithDataAsOrtValue,
			 OrtStatus *(*) (const OrtMemoryInfo *, void *, size_t, const int64_t *, size_t, int, OrtValue **))
		  (mi, data, bytes, shape, ndim, type, &v), "CreateTensorWithDataAsOrtValue");
	return v;
}

/* run a domain graph: feat [n, F], pers [P] -> p [n, T] (into out's buffer) */
static void
ort_run(OrtSession *s, OrtValue *feat, OrtValue *pers, OrtValue *out)
{
	static const char *in_names[] = {"feat", "pers"};
	static const char *out_names[] = {"p"};
	const OrtValue *ins[2] = {feat, pers};
	OrtValue   *outs[1] = {out};

	check(FN(API_Run, OrtStatus *(*) (OrtSession *, const void *, const char *const *, const OrtValue *const *,
									  size_t, const char *const *, size_t, OrtValue **))
		  (s, NULL, in_names, ins, 2, out_names, 1, outs), "Run");
}

#endif							/* ORT_API_H */
