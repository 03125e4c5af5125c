/*
 * ort_pipeline.c
 *		The end-to-end jobs of issue 18 done the usual way, and the same jobs
 *		in SQL, each with the CPU time of every process involved.
 *
 *	ort_pipeline META MODEL_PREFIX PRECISION CONNINFO top20 DOMAIN PERSONA TABLE
 *		top-20 of every candidate of TABLE (columns id int, features bigint[])
 *		for one request (DOMAIN, PERSONA "p1,p2,..."): binary COPY out, ONNX
 *		Runtime in batches of 1,000, a top-20 heap in the client
 *	ort_pipeline META MODEL_PREFIX PRECISION CONNINFO table SRC DST
 *		scores SRC (uid int, id int, domain int, persona bigint[], features
 *		bigint[], rows of one request contiguous) into a new table DST (uid
 *		int, id int, score float8): binary COPY out on one connection, ONNX
 *		Runtime per request in batches of at most 1,000, binary COPY in on a
 *		second connection, streamed
 *	ort_pipeline - - - CONNINFO sql QUERY
 *		runs QUERY (e.g. the same job done by pepnet in SQL), rows fetched;
 *		prints the backend's pid too (its parallel workers' CPU is read by
 *		the caller from the postmaster's cutime once they are reaped)
 *
 * Prints one line of key=value: wall and CPU seconds of the client and of
 * every backend used (from /proc/<pid>/schedstat), the client's CPU split
 * into COPY (libpq and parsing or formatting), hashing, ORT and the rest; for
 * top20 the ids and scores of the top 20 (fp32 scores of the first task).
 */
#include "ort_api.h"

#include <sys/resource.h>

#include "libpq-fe.h"

#define BATCH 1000
#define TOPK 20

static int	F,
			P,
			T,
			D;
static Field *fields;
static OrtSession **sess;
static OrtMemoryInfo *mi;

/* buffers of one batch and tensors over them, one set per batch size */
static int64_t frows[BATCH * 64],
			prows[64];
static float out[BATCH * 8];
static OrtValue *vfeat[BATCH + 1],
		   *vpers,
		   *vout[BATCH + 1];

/* client CPU per phase (thread CPU clock) */
static double t_hash,
			t_ort;

static double
cpu_self(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double
backend_cpu(int pid)
{
	char		path[64];
	FILE	   *f;
	unsigned long long cpu = 0;

	snprintf(path, sizeof(path), "/proc/%d/schedstat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%llu", &cpu) != 1)
		cpu = 0;
	fclose(f);
	return cpu * 1e-9;
}

static PGconn *
connect_db(const char *conninfo)
{
	PGconn	   *c = PQconnectdb(conninfo);

	if (PQstatus(c) != CONNECTION_OK)
	{
		fprintf(stderr, "ort_pipeline: %s", PQerrorMessage(c));
		exit(1);
	}
	return c;
}

static void
exec_ok(PGconn *c, const char *sql, ExecStatusType want)
{
	PGresult   *r = PQexec(c, sql);

	if (PQresultStatus(r) != want)
	{
		fprintf(stderr, "ort_pipeline: %s: %s", sql, PQerrorMessage(c));
		exit(1);
	}
	PQclear(r);
}

static inline uint32_t
be32(const char *p)
{
	uint32_t	v;

	memcpy(&v, p, 4);
	return __builtin_bswap32(v);
}

static inline uint64_t
be64(const char *p)
{
	uint64_t	v;

	memcpy(&v, p, 8);
	return __builtin_bswap64(v);
}

/* a binary bigint[] field of n ids into dst; returns the number of ids */
static int
parse_ids(const char *p, int len, int64_t *dst, int max)
{
	int			ndim = be32(p),
				n = 1,
				off;

	if (ndim == 0)
		return 0;
	for (int d = 0; d < ndim; d++)
		n *= (int) be32(p + 12 + 8 * d);
	if (n > max)
	{
		fprintf(stderr, "ort_pipeline: an array of %d ids, at most %d expected\n", n, max);
		exit(1);
	}
	off = 12 + 8 * ndim;
	for (int i = 0; i < n; i++)
	{
		if ((int) be32(p + off) != 8)
		{
			fprintf(stderr, "ort_pipeline: NULL or non-bigint element\n");
			exit(1);
		}
		dst[i] = (int64_t) be64(p + off + 4);
		off += 12;
	}
	(void) len;
	return n;
}

/* score the batch in frows (raw ids, n rows) for one request; probabilities in out */
static void
score_batch(int domain, const int64_t *persona, int n)
{
	struct timespec a,
				b,
				c;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
	for (int r = 0; r < n; r++)
		for (int j = 0; j < F; j++)
			frows[r * F + j] = slot(frows[r * F + j], &fields[j]);
	for (int j = 0; j < P; j++)
		prows[j] = slot(persona[j], &fields[F + j]);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
	if (!vfeat[n])
	{
		int64_t		fs[2] = {n, F},
					os[2] = {n, T};

		vfeat[n] = ort_tensor(mi, frows, sizeof(int64_t) * n * F, fs, 2, ONNX_INT64);
		vout[n] = ort_tensor(mi, out, sizeof(float) * n * T, os, 2, ONNX_FLOAT);
	}
	ort_run(sess[domain], vfeat[n], vpers, vout[n]);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c);
	t_hash += (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
	t_ort += (c.tv_sec - b.tv_sec) + (c.tv_nsec - b.tv_nsec) * 1e-9;
}

/*
 * Iterate the rows of a binary COPY out: calls row(fields, lens, nfields)
 * for every tuple.
 */
typedef void (*RowFn) (const char **f, const int *len, int nf, void *arg);

static void
copy_out(PGconn *c, const char *sql, RowFn row, void *arg)
{
	PGresult   *r = PQexec(c, sql);
	char	   *buf;
	int			n,
				first = 1;

	if (PQresultStatus(r) != PGRES_COPY_OUT)
	{
		fprintf(stderr, "ort_pipeline: %s: %s", sql, PQerrorMessage(c));
		exit(1);
	}
	PQclear(r);
	while ((n = PQgetCopyData(c, &buf, 0)) > 0)
	{
		const char *p = buf,
				   *end = buf + n;

		if (first)
		{
			/* signature (11), flags (4), header extension length (4) + extension */
			p += 15;
			p += 4 + be32(p);
			first = 0;
		}
		while (p + 2 <= end)
		{
			int			nf = (int16_t) (((unsigned char) p[0] << 8) | (unsigned char) p[1]);
			const char *fv[16];
			int			fl[16];

			p += 2;
			if (nf < 0)
				break;
			for (int i = 0; i < nf && i < 16; i++)
			{
				fl[i] = (int32_t) be32(p);
				p += 4;
				fv[i] = fl[i] >= 0 ? p : NULL;
				if (fl[i] > 0)
					p += fl[i];
			}
			row(fv, fl, nf, arg);
		}
		PQfreemem(buf);
	}
	r = PQgetResult(c);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "ort_pipeline: COPY out: %s", PQerrorMessage(c));
		exit(1);
	}
	PQclear(r);
}

/* ---- top20 ---- */

typedef struct Top
{
	int			domain;
	int64_t		persona[64];
	int			n;				/* rows in the batch */
	int32_t		ids[BATCH];
	int32_t		top_id[TOPK];
	float		top_p[TOPK];
	int			ntop;
	long		rows;
} Top;

static void
top_push(Top *t, int32_t id, float p)
{
	int			i;

	if (t->ntop == TOPK && p <= t->top_p[TOPK - 1])
		return;
	i = t->ntop < TOPK ? t->ntop++ : TOPK - 1;
	while (i > 0 && t->top_p[i - 1] < p)
	{
		t->top_p[i] = t->top_p[i - 1];
		t->top_id[i] = t->top_id[i - 1];
		i--;
	}
	t->top_p[i] = p;
	t->top_id[i] = id;
}

static void
top_flush(Top *t)
{
	if (t->n == 0)
		return;
	score_batch(t->domain, t->persona, t->n);
	for (int r = 0; r < t->n; r++)
		top_push(t, t->ids[r], out[r * T]);
	t->rows += t->n;
	t->n = 0;
}

static void
top_row(const char **f, const int *len, int nf, void *arg)
{
	Top		   *t = arg;

	t->ids[t->n] = (int32_t) be32(f[0]);
	if (parse_ids(f[1], len[1], frows + (size_t) t->n * F, F) != F)
	{
		fprintf(stderr, "ort_pipeline: a candidate without %d feature ids\n", F);
		exit(1);
	}
	if (++t->n == BATCH)
		top_flush(t);
}

/* ---- table ---- */

typedef struct Tab
{
	PGconn	   *in;
	int			domain;
	int64_t		persona[64];
	int			n;
	int32_t		uid[BATCH],
				id[BATCH];
	char	   *obuf;
	size_t		olen,
				ocap;
	long		rows;
	double		t_fmt;
} Tab;

static void
tab_send(Tab *t, int force)
{
	if (t->olen > 0 && (force || t->olen > (1 << 16)))
	{
		if (PQputCopyData(t->in, t->obuf, (int) t->olen) != 1)
		{
			fprintf(stderr, "ort_pipeline: COPY in: %s", PQerrorMessage(t->in));
			exit(1);
		}
		t->olen = 0;
	}
}

static inline void
put32(char *p, uint32_t v)
{
	v = __builtin_bswap32(v);
	memcpy(p, &v, 4);
}

static void
tab_flush(Tab *t)
{
	if (t->n == 0)
		return;
	score_batch(t->domain, t->persona, t->n);
	for (int r = 0; r < t->n; r++)
	{
		char	   *p;
		double		s = out[r * T];
		uint64_t	b;

		if (t->olen + 64 > t->ocap)
			tab_send(t, 1);
		p = t->obuf + t->olen;
		p[0] = 0;
		p[1] = 3;
		put32(p + 2, 4);
		put32(p + 6, (uint32_t) t->uid[r]);
		put32(p + 10, 4);
		put32(p + 14, (uint32_t) t->id[r]);
		put32(p + 18, 8);
		memcpy(&b, &s, 8);
		b = __builtin_bswap64(b);
		memcpy(p + 22, &b, 8);
		t->olen += 30;
	}
	tab_send(t, 0);
	t->rows += t->n;
	t->n = 0;
}

static void
tab_row(const char **f, const int *len, int nf, void *arg)
{
	Tab		   *t = arg;
	int			domain = (int32_t) be32(f[2]);
	int64_t		persona[64];
	int			np = parse_ids(f[3], len[3], persona, 64);

	if (np != P)
	{
		fprintf(stderr, "ort_pipeline: a persona of %d ids, %d expected\n", np, P);
		exit(1);
	}
	if (t->n > 0 && (domain != t->domain || memcmp(persona, t->persona, sizeof(int64_t) * P) != 0))
		tab_flush(t);
	t->domain = domain;
	memcpy(t->persona, persona, sizeof(int64_t) * P);
	t->uid[t->n] = (int32_t) be32(f[0]);
	t->id[t->n] = (int32_t) be32(f[1]);
	if (parse_ids(f[4], len[4], frows + (size_t) t->n * F, F) != F)
	{
		fprintf(stderr, "ort_pipeline: a candidate without %d feature ids\n", F);
		exit(1);
	}
	if (++t->n == BATCH)
		tab_flush(t);
}

static int
backend_pid(PGconn *c)
{
	return PQbackendPID(c);
}

int
main(int argc, char **argv)
{
	PGconn	   *c;
	const char *mode;
	double		c0,
				w0,
				b0,
				b0in = 0,
				w1;
	int			pid;

	if (argc < 7)
	{
		fprintf(stderr, "usage: see the comment at the top of ort_pipeline.c\n");
		return 2;
	}
	mode = argv[5];
	c = connect_db(argv[4]);
	pid = backend_pid(c);
	if (strcmp(mode, "sql") == 0)
	{
		PGresult   *r;
		double		cpu;

		b0 = backend_cpu(pid);
		c0 = cpu_self();
		w0 = ns(CLOCK_MONOTONIC);
		r = PQexec(c, argv[6]);
		if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "ort_pipeline: %s", PQerrorMessage(c));
			return 1;
		}
		w1 = ns(CLOCK_MONOTONIC);
		cpu = cpu_self() - c0;
		printf("wall=%.4f client_cpu=%.4f backend_cpu=%.4f rows=%d pid=%d", (w1 - w0) * 1e-9, cpu,
			   backend_cpu(pid) - b0, PQntuples(r), pid);
		if (PQnfields(r) >= 2)
		{
			printf(" top=");
			for (int i = 0; i < PQntuples(r) && i < TOPK; i++)
				printf("%s%s:%s", i ? "," : "", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1));
		}
		printf("\n");
		PQclear(r);
		PQfinish(c);
		return 0;
	}

	ort_open();
	fields = read_meta(argv[1], &F, &P, &T, &D);
	if (F > 64 || P > 64 || T > 8)
		return 1;
	sess = ort_sessions(argv[2], argv[3], D, &mi);
	{
		int64_t		ps[1] = {P};

		vpers = ort_tensor(mi, prows, sizeof(int64_t) * P, ps, 1, ONNX_INT64);
	}
	/* one warm-up batch per domain: the sessions' first runs allocate */
	for (int d = 0; d < D; d++)
	{
		int64_t		persona[64] = {0};

		memset(frows, 0, sizeof(int64_t) * F * BATCH);
		score_batch(d, persona, BATCH);
	}
	t_hash = t_ort = 0;

	if (strcmp(mode, "top20") == 0 && argc == 9)
	{
		Top		   *t = calloc(1, sizeof(Top));
		char		sql[1024],
				   *s = argv[7];
		int			np = 0;

		t->domain = atoi(argv[6]);
		while (*s && np < 64)
		{
			t->persona[np++] = strtoll(s, &s, 10);
			if (*s == ',')
				s++;
		}
		snprintf(sql, sizeof(sql), "COPY (SELECT id, features FROM %s) TO STDOUT (FORMAT binary)", argv[8]);
		b0 = backend_cpu(pid);
		c0 = cpu_self();
		w0 = ns(CLOCK_MONOTONIC);
		copy_out(c, sql, top_row, t);
		top_flush(t);
		w1 = ns(CLOCK_MONOTONIC);
		{
			double		cpu = cpu_self() - c0;

			printf("wall=%.4f client_cpu=%.4f backend_cpu=%.4f rows=%ld client_hash=%.4f client_ort=%.4f "
				   "client_copy_rest=%.4f top=",
				   (w1 - w0) * 1e-9, cpu, backend_cpu(pid) - b0, t->rows, t_hash, t_ort, cpu - t_hash - t_ort);
			for (int i = 0; i < t->ntop; i++)
				printf("%s%d:%.9g", i ? "," : "", t->top_id[i], t->top_p[i]);
			printf("\n");
		}
	}
	else if (strcmp(mode, "table") == 0 && argc == 8)
	{
		Tab		   *t = calloc(1, sizeof(Tab));
		char		sql[1024];
		int			pin;
		PGresult   *r;
		static const char hdr[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0";

		t->in = connect_db(argv[4]);
		pin = backend_pid(t->in);
		t->ocap = 1 << 17;
		t->obuf = malloc(t->ocap);
		b0 = backend_cpu(pid);
		b0in = backend_cpu(pin);
		c0 = cpu_self();
		w0 = ns(CLOCK_MONOTONIC);
		exec_ok(t->in, "BEGIN", PGRES_COMMAND_OK);
		snprintf(sql, sizeof(sql), "CREATE TABLE %s (uid int, id int, score float8)", argv[7]);
		exec_ok(t->in, sql, PGRES_COMMAND_OK);
		snprintf(sql, sizeof(sql), "COPY %s FROM STDIN (FORMAT binary)", argv[7]);
		exec_ok(t->in, sql, PGRES_COPY_IN);
		memcpy(t->obuf, hdr, 19);
		t->olen = 19;
		snprintf(sql, sizeof(sql), "COPY (SELECT uid, id, domain, persona, features FROM %s) TO STDOUT (FORMAT binary)",
				 argv[6]);
		copy_out(c, sql, tab_row, t);
		tab_flush(t);
		t->obuf[t->olen++] = (char) 0xff;
		t->obuf[t->olen++] = (char) 0xff;
		tab_send(t, 1);
		if (PQputCopyEnd(t->in, NULL) != 1)
			return 1;
		r = PQgetResult(t->in);
		if (PQresultStatus(r) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "ort_pipeline: COPY in: %s", PQerrorMessage(t->in));
			return 1;
		}
		PQclear(r);
		exec_ok(t->in, "COMMIT", PGRES_COMMAND_OK);
		w1 = ns(CLOCK_MONOTONIC);
		{
			double		cpu = cpu_self() - c0,
						bout = backend_cpu(pid) - b0,
						bin = backend_cpu(pin) - b0in;

			printf("wall=%.4f client_cpu=%.4f backend_cpu=%.4f backend_out_cpu=%.4f backend_in_cpu=%.4f rows=%ld "
				   "client_hash=%.4f client_ort=%.4f client_copy_rest=%.4f\n",
				   (w1 - w0) * 1e-9, cpu, bout + bin, bout, bin, t->rows, t_hash, t_ort, cpu - t_hash - t_ort);
		}
		PQfinish(t->in);
	}
	else
	{
		fprintf(stderr, "ort_pipeline: unknown mode or arguments\n");
		return 2;
	}
	PQfinish(c);
	return 0;
}
