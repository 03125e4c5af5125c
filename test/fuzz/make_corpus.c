/*
 * make_corpus.c
 *		Writes the seed corpora of the fuzz targets:
 *		  corpus/safetensors/: byte 0 = config index of fuzz_configs.h, then
 *		    a blob: valid weights of each config (seeded initialisation),
 *		    valid variants (reordered header, unicode escapes, padding) and
 *		    invalid ones (truncated, huge header length, overlapping offsets,
 *		    NaN / Inf data, deep nesting, huge numbers, ...);
 *		  corpus/config/: config JSON texts, valid and invalid.
 *
 * Regenerate from the repository root (deterministic output):
 *   cc -std=gnu99 -Isrc/core -o /tmp/make_corpus test/fuzz/make_corpus.c \
 *      src/core/alloc.c src/core/json.c src/core/config.c src/core/model.c src/core/plan.c -lm
 *   rm -rf test/fuzz/corpus && /tmp/make_corpus test/fuzz/corpus
 */
#include "pncore.h"
#include "fuzz_configs.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *outdir;
static int	nfiles;

/* Die with a message */
static void
die(const char *fmt,...)
{
	va_list		ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

/* Check that an entry is accepted iff its name starts with "valid" */
static void
verify(const char *sub, const char *name, const void *data, size_t len)
{
	bool		want = strncmp(name, "valid", 5) == 0;
	PnError		e = {0};
	int			rc;

	if (strcmp(sub, "config") == 0)
	{
		PnConfig	c;

		rc = pn_config_parse(data, len, (int64_t) 64 << 20, &c, &e);
		if (rc == PN_OK)
			pn_config_free(&c);
	}
	else
	{
		const uint8_t *b = data;
		PnConfig	c;
		PnModel    *m;

		if (len < 1)
			die("%s: empty", name);
		if (pn_config_parse(pn_fuzz_configs[b[0] % PN_FUZZ_NCONFIGS], strlen(pn_fuzz_configs[b[0] % PN_FUZZ_NCONFIGS]),
							(int64_t) 64 << 20, &c, &e) != PN_OK ||
			pn_model_new(&c, &m, &e) != PN_OK)
			die("%s: %s", name, e.msg);
		pn_config_free(&c);
		rc = pn_safetensors_read(m, b + 1, len - 1, &e);
		pn_model_free(m);
	}
	if ((rc == PN_OK) != want)
		die("%s/%s: expected %s, got %s", sub, name, want ? "success" : "an error",
			rc == PN_OK ? "success" : e.msg);
	printf("%-48s %s\n", name, rc == PN_OK ? "accepted" : e.msg);
}

/* Write one corpus file outdir/sub/name (after checking it) */
static void
put(const char *sub, const char *name, const void *data, size_t len)
{
	char		path[512];
	FILE	   *f;

	verify(sub, name, data, len);

	snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
	f = fopen(path, "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0)
		die("cannot write %s: %s", path, strerror(errno));
	nfiles++;
}

/* ---- safetensors ---- */

/* A growing byte buffer */
typedef struct Buf
{
	char	   *s;
	size_t		len,
				cap;
} Buf;

static void
buf_add(Buf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		b->cap = (b->len + n + 1) * 2;
		b->s = realloc(b->s, b->cap);
		if (!b->s)
			die("out of memory");
	}
	memcpy(b->s + b->len, p, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void
buf_printf(Buf *b, const char *fmt,...)
{
	char		tmp[4096];
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t) n >= sizeof(tmp))
		die("buf_printf overflow");
	buf_add(b, tmp, (size_t) n);
}

/* How to write a header; every override applies to tensor `target` */
typedef struct Variant
{
	bool		reverse;		/* list tensors in reverse order */
	bool		data_reverse;	/* lay out the data in reverse order too */
	int			target;			/* tensor the overrides below apply to */
	const char *name;			/* JSON text of its key (with quotes) */
	const char *dtype;			/* JSON text of its dtype */
	const char *shape;			/* JSON text of its shape */
	const char *offsets;		/* JSON text of its data_offsets */
	bool		omit;			/* leave it out */
	const char *front;			/* members before the tensors ("k": v,) */
	const char *back;			/* members after the tensors (,"k": v) */
	const char *pad;			/* white space after the closing brace */
	const char *sep;			/* separator after ':' and ',' */
	int			nan_at;			/* set data float nan_at (1-based) to NaN */
	int			inf_at;			/* ... to +Inf */
	int			extra;			/* zero bytes appended to the data */
} Variant;

/* Build config idx's model with seeded weights */
static PnModel *
model_of(int idx)
{
	PnConfig	c;
	PnModel    *m;
	PnError		e = {0};

	if (pn_config_parse(pn_fuzz_configs[idx], strlen(pn_fuzz_configs[idx]), (int64_t) 64 << 20, &c, &e) != PN_OK ||
		pn_model_new(&c, &m, &e) != PN_OK)
		die("config %d: %s", idx, e.msg);
	pn_config_free(&c);
	pn_model_init(m, 1234 + idx);
	/* vocabularies: ascending ids -1000, 0, 1000, ... */
	{
		int			x;
		int64_t		j;

		for (x = m->ntensors - m->nvocab; x < m->ntensors; x++)
			for (j = 0; j < m->tensors[x].numel; j++)
				((int64_t *) PN_T(m, x))[j] = (j - 1) * 1000;
	}
	return m;
}

/* Corpus entry: selector byte, then the blob of m written per v */
static Buf
blob_of(const PnModel *m, int idx, const Variant *v)
{
	Buf			h = {0},
				d = {0},
				out = {0};
	uint64_t   *off = calloc(m->ntensors, sizeof(uint64_t));
	const char *sep = v->sep ? v->sep : "";
	int			k,
				i;
	uint64_t	hlen;
	uint8_t		sel = (uint8_t) idx,
				lenb[8];

	/* data: the tensors in layout order (or reversed) */
	for (k = 0; k < m->ntensors; k++)
	{
		i = v->data_reverse ? m->ntensors - 1 - k : k;
		off[i] = d.len;
		buf_add(&d, PN_T(m, i), (size_t) m->tensors[i].numel * 4);
	}
	if (v->extra > 0)
	{
		static const char zeros[64];

		buf_add(&d, zeros, (size_t) v->extra);
	}
	if (v->nan_at > 0)
	{
		float		x = NAN;

		memcpy(d.s + 4 * (v->nan_at - 1), &x, 4);
	}
	if (v->inf_at > 0)
	{
		float		x = INFINITY;

		memcpy(d.s + 4 * (v->inf_at - 1), &x, 4);
	}
	buf_add(&h, "{", 1);
	if (v->front)
		buf_printf(&h, "%s", v->front);
	for (k = 0; k < m->ntensors; k++)
	{
		const PnTensor *t;
		int			dd;

		i = v->reverse ? m->ntensors - 1 - k : k;
		t = &m->tensors[i];
		if (v->omit && i == v->target)
			continue;
		if (h.len > 1 && h.s[h.len - 1] != ',')
			buf_printf(&h, ",%s", sep);
		if (v->name && i == v->target)
			buf_printf(&h, "%s", v->name);
		else
			buf_printf(&h, "\"%s\"", t->name);
		buf_printf(&h, ":%s{\"dtype\":%s%s,%s\"shape\":%s", sep, sep,
				   v->dtype && i == v->target ? v->dtype : "\"F32\"", sep, sep);
		if (v->shape && i == v->target)
			buf_printf(&h, "%s", v->shape);
		else
		{
			buf_add(&h, "[", 1);
			for (dd = 0; dd < t->ndim; dd++)
				buf_printf(&h, "%s%lld", dd ? "," : "", (long long) t->shape[dd]);
			buf_add(&h, "]", 1);
		}
		buf_printf(&h, ",%s\"data_offsets\":%s", sep, sep);
		if (v->offsets && i == v->target)
			buf_printf(&h, "%s}", v->offsets);
		else
			buf_printf(&h, "[%llu,%llu]}", (unsigned long long) off[i],
					   (unsigned long long) (off[i] + (uint64_t) t->numel * 4));
	}
	if (v->back)
		buf_printf(&h, "%s", v->back);
	buf_add(&h, "}", 1);
	if (v->pad)
		buf_printf(&h, "%s", v->pad);
	hlen = h.len;
	for (k = 0; k < 8; k++)
		lenb[k] = (uint8_t) (hlen >> (8 * k));
	buf_add(&out, &sel, 1);
	buf_add(&out, lenb, 8);
	buf_add(&out, h.s, h.len);
	buf_add(&out, d.s, d.len);
	free(h.s);
	free(d.s);
	free(off);
	return out;
}

/* Write a variant of config idx */
static void
st_put(const char *name, const PnModel *m, int idx, const Variant *v)
{
	Buf			b = blob_of(m, idx, v);

	put("safetensors", name, b.s, b.len);
	free(b.s);
}

/* Set the 8-byte header length of a corpus entry (after the selector) */
static void
set_hlen(Buf *b, uint64_t hlen)
{
	int			k;

	for (k = 0; k < 8; k++)
		b->s[1 + k] = (char) (uint8_t) (hlen >> (8 * k));
}

static void
make_safetensors(void)
{
	PnModel    *m[PN_FUZZ_NCONFIGS];
	Variant		v0 = {0};
	char		name[64];
	int			i;

	for (i = 0; i < PN_FUZZ_NCONFIGS; i++)
	{
		m[i] = model_of(i);
		/* exactly what pn_safetensors_write produces */
		{
			size_t		n = pn_safetensors_size(m[i]);
			uint8_t    *b = malloc(n + 1);

			b[0] = (uint8_t) i;
			pn_safetensors_write(m[i], b + 1);
			snprintf(name, sizeof(name), "valid-cfg%d", i);
			put("safetensors", name, b, n + 1);
			free(b);
		}
	}

	/* valid variants */
	{
		Variant		v = {.reverse = true, .data_reverse = true, .front = "\"__metadata__\":{\"format\":\"pt\",\"x\":[1,2.5,null,true]},",
		.sep = " ", .pad = "  \n\t"};

		st_put("valid-cfg0-reordered", m[0], 0, &v);
	}
	{
		Variant		v = {.reverse = true, .back = ",\"__metadata__\":{}"};

		st_put("valid-cfg3-listed-backwards", m[3], 3, &v);
	}
	{
		/* "emb.feature.0" and "F32" spelled with \u escapes */
		Variant		v = {.target = 0, .name = "\"emb.\\u0066eature\\u002E0\"", .dtype = "\"\\u0046\\u00332\""};

		st_put("valid-cfg1-unicode-escapes", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 1, .name = "\"emb\\/domain\"", .sep = "\r\n"};

		st_put("invalid-cfg1-escaped-slash-name", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 1, .name = "\"emb.dom\\u00e9in\""};

		st_put("invalid-cfg1-non-ascii-name", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 1, .name = "\"emb.domain\\ud83d\\ude00\""};

		st_put("invalid-cfg1-surrogate-name", m[1], 1, &v);
	}

	/* truncations and header lengths */
	{
		Buf			b = blob_of(m[0], 0, &v0);

		put("safetensors", "invalid-cfg0-truncated-data", b.s, b.len - 3);
		put("safetensors", "invalid-cfg0-truncated-header", b.s, 40);
		put("safetensors", "invalid-cfg0-5-bytes", b.s, 6);
		set_hlen(&b, UINT64_MAX);
		put("safetensors", "invalid-cfg0-header-length-max", b.s, b.len);
		set_hlen(&b, (uint64_t) 64 * 1024 * 1024 + 1);
		put("safetensors", "invalid-cfg0-header-length-64mb", b.s, b.len);
		set_hlen(&b, b.len - 9);
		put("safetensors", "invalid-cfg0-header-length-all", b.s, b.len);
		set_hlen(&b, 1);
		put("safetensors", "invalid-cfg0-header-length-1", b.s, b.len);
		free(b.s);
	}
	{
		Buf			b = blob_of(m[1], 1, &v0);

		b.s[9] = '[';			/* header is an array */
		put("safetensors", "invalid-cfg1-header-not-object", b.s, b.len);
		b.s[20] = '\0';			/* NUL inside a key */
		put("safetensors", "invalid-cfg1-nul-in-header", b.s, b.len);
		free(b.s);
	}
	{
		uint8_t		empty[1 + 8 + 2] = {1, 2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};

		put("safetensors", "invalid-cfg1-empty-header", empty, sizeof(empty));
	}

	/* offsets */
	{
		Variant		v = {.target = 1, .offsets = "[0,4]"};

		st_put("invalid-cfg1-overlapping-offsets", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 5, .offsets = "[28,32]", .extra = 4};

		st_put("invalid-cfg1-offsets-hole", m[1], 1, &v);
	}
	{
		Variant		v = {.extra = 4};

		st_put("invalid-cfg1-unused-data", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .offsets = "[8,0]"};

		st_put("invalid-cfg1-offsets-reversed", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .offsets = "[-8,0]"};

		st_put("invalid-cfg1-offsets-negative", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .offsets = "[18446744073709551608,18446744073709551616]"};

		st_put("invalid-cfg1-offsets-huge", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .offsets = "[9223372036854775807,9223372036854775807]"};

		st_put("invalid-cfg1-offsets-int64-max", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .offsets = "[0.0,8e0]"};

		st_put("invalid-cfg1-offsets-not-integer", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .offsets = "[0,8,16]"};

		st_put("invalid-cfg1-offsets-three", m[1], 1, &v);
	}

	/* shapes, dtypes, names */
	{
		Variant		v = {.target = 0, .shape = "[1e400,1]"};

		st_put("invalid-cfg1-shape-1e400", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .shape = "[99999999999999999999,1]"};

		st_put("invalid-cfg1-shape-beyond-int64", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .shape = "[-9223372036854775808,1]"};

		st_put("invalid-cfg1-shape-int64-min", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .shape = "[2,1,1,1,1,1,1,1,1,1,1]"};

		st_put("invalid-cfg1-shape-11-dims", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .shape = "[2,\"1\"]"};

		st_put("invalid-cfg1-shape-string", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .dtype = "\"F16\""};

		st_put("invalid-cfg1-dtype-f16", m[1], 1, &v);
	}
	{
		Variant		v = {.target = 0, .omit = true};

		st_put("invalid-cfg1-missing-tensor", m[1], 1, &v);
	}
	{
		Variant		v = {.back = ",\"epnet.w1\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"};

		st_put("invalid-cfg1-unknown-tensor", m[1], 1, &v);
	}
	{
		Variant		v = {.back = ",\"emb.domain\":{}"};

		st_put("invalid-cfg1-duplicate-key", m[1], 1, &v);
	}

	{
		/* a tensor entry that is an array; the header alone, no data */
		static const char hdr[] = "{\"emb.domain\":[1]}";
		uint8_t		b[64] = {1, (uint8_t) (sizeof(hdr) - 1)};

		memcpy(b + 9, hdr, sizeof(hdr) - 1);
		put("safetensors", "invalid-cfg1-entry-not-object", b, 9 + sizeof(hdr) - 1);
	}
	{
		/* a 600-digit number in __metadata__ */
		static char front[700];
		Variant		v = {0};
		int			n = sprintf(front, "\"__metadata__\":");

		memset(front + n, '7', 600);
		strcpy(front + n + 600, ",");
		v.front = front;
		st_put("invalid-cfg1-number-600-digits", m[1], 1, &v);
	}

	/* data values */
	{
		Variant		v = {.nan_at = 5};

		st_put("invalid-cfg0-nan-data", m[0], 0, &v);
	}
	{
		Variant		v = {.inf_at = 1};

		st_put("invalid-cfg2-inf-data", m[2], 2, &v);
	}

	/*
	 * nesting in __metadata__: arrays and objects alternating around a
	 * number; the parser allows depth 32 (the header object is depth 0), so
	 * 31 levels are accepted and 32 or more refused.
	 */
	{
		static const int depths[] = {31, 32, 40};
		char		front[512];
		int			di;

		for (di = 0; di < 3; di++)
		{
			Variant		v = {0};
			int			depth = depths[di],
						k,
						n = 0;

			n += sprintf(front + n, "\"__metadata__\":");
			for (k = 0; k < depth; k++)
				n += sprintf(front + n, "%s", k % 2 ? "{\"k\":" : "[");
			n += sprintf(front + n, "0");
			for (k = depth - 1; k >= 0; k--)
				n += sprintf(front + n, "%s", k % 2 ? "}" : "]");
			n += sprintf(front + n, ",");
			v.front = front;
			snprintf(name, sizeof(name), "%s-cfg1-metadata-depth-%d", depth > 31 ? "invalid" : "valid", depth);
			st_put(name, m[1], 1, &v);
		}
	}

	for (i = 0; i < PN_FUZZ_NCONFIGS; i++)
		pn_model_free(m[i]);
}

/* ---- config ---- */

static const struct
{
	const char *name;
	const char *text;
}			configs[] = {
	{"valid-minimal", "{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 1}]}"},
	{"valid-dense-only", "{\"domains\":2,\"features\":[],\"dense\":3,\"hidden\":[4],\"emb_dim\":2}"},
	{"valid-every-key",
		"{\n  \"domains\": 4,\n  \"features\": [{\"name\": \"item\", \"buckets\": 1000, \"hash\": true},\n"
		"    {\"name\": \"age\", \"buckets\": 8, \"hash\": false}],\n"
		"  \"persona\": [{\"name\": \"user\", \"buckets\": 500}],\n  \"dense\": 2,\n  \"emb_dim\": 8,\n"
		"  \"tasks\": [\"click\", \"like\", \"share\"],\n  \"hidden\": [64, 32],\n  \"gamma\": 1.5,\n"
		"  \"epnet\": true,\n  \"epnet_hidden\": 16,\n  \"ppnet\": true,\n  \"pn\": true,\n  \"star\": true,\n"
		"  \"aux\": true,\n  \"aux_hidden\": 8,\n  \"l2\": 1e-5\n}"},
	{"valid-parts-off",
		"{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"epnet\": false, \"ppnet\": false, "
	"\"pn\": false, \"star\": false, \"aux\": false, \"hidden\": [1,1,1,1,1,1,1,1], \"epnet_hidden\": null}"},
	{"valid-unicode-names",
		"{\"domains\": 1, \"features\": [{\"name\": \"\\u00e9t\\u00e9\", \"buckets\": 2}, "
		"{\"name\": \"\\u4e2d\\u6587\", \"buckets\": 2}, {\"name\": \"\\ud83d\\ude00\", \"buckets\": 2}, "
		"{\"name\": \"q\\\"b\\\\s\\/n\\nt\\t\", \"buckets\": 2}, {\"name\": \"raw \xc3\xa9\", \"buckets\": 2}], "
	"\"tasks\": [\"\\u0063lick\", \"\\u007f\"], \"hidden\": [2], \"emb_dim\": 1}"},
	{"valid-numbers",
		"{\"domains\": 100000, \"features\": [{\"name\": \"a\", \"buckets\": 1000000, \"hash\": false}], \"emb_dim\": 1, "
	"\"hidden\": [1], \"gamma\": 1E+2, \"l2\": 0.0, \"epnet\": false, \"pn\": false, \"star\": false, \"ppnet\": false, \"aux\": false}"},
	{"invalid-too-big",
	"{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 2000000000}], \"emb_dim\": 1024}"},
	{"invalid-huge-numbers",
	"{\"domains\": 1e400, \"features\": [{\"name\": \"a\", \"buckets\": 99999999999999999999}]}"},
	{"invalid-int64-min",
	"{\"domains\": -9223372036854775808, \"features\": [{\"name\": \"a\", \"buckets\": 9223372036854775807}]}"},
	{"invalid-number-600-digits",
		"{\"domains\": 1, \"dense\": 1, \"features\": [], \"l2\": 0."
		"0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
		"0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
		"0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
		"0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
		"0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
		"00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001}"},
	{"invalid-fraction", "{\"domains\": 1.0, \"features\": [{\"name\": \"a\", \"buckets\": 1}]}"},
	{"invalid-deep-nesting",
		"{\"domains\": 1, \"features\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"},
	{"invalid-nesting-31-arrays",
	"{\"domains\": 1, \"features\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[{}]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"},
	{"invalid-duplicate-key", "{\"domains\": 1, \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 1}]}"},
	{"invalid-unknown-key", "{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 1, \"hsh\": 1}]}"},
	{"invalid-long-name",
		"{\"domains\": 1, \"features\": [{\"name\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"buckets\": 1}]}"},
	{"invalid-bad-escapes", "{\"domains\": 1, \"features\": [{\"name\": \"\\u00zz\\x\", \"buckets\": 1}]}"},
	{"invalid-nul-escape", "{\"domains\": 1, \"features\": [{\"name\": \"a\\u0000b\", \"buckets\": 1}]}"},
	{"invalid-trailing", "{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 1}]} x"},
	{"invalid-unterminated", "{\"domains\": 1, \"features\": [{\"name\": \"a\\"},
	{"invalid-not-object", "[{\"domains\": 1}]"},
	{"invalid-literals", "{\"domains\": 1, \"features\": [], \"dense\": 1, \"star\": tru, \"aux\": nul}"},
	{"invalid-no-input", "{\"domains\": 1, \"features\": [], \"dense\": 0}"},
	{"invalid-tasks", "{\"domains\": 1, \"dense\": 1, \"features\": [], \"tasks\": [\"a\", \"a\"]}"},
	{"invalid-gamma-range", "{\"domains\": 1, \"dense\": 1, \"features\": [], \"gamma\": 0.0000009}"},
};

static void
make_config(void)
{
	size_t		i;

	for (i = 0; i < sizeof(configs) / sizeof(configs[0]); i++)
		put("config", configs[i].name, configs[i].text, strlen(configs[i].text));
	for (i = 0; i < (size_t) PN_FUZZ_NCONFIGS; i++)
	{
		char		name[32];

		snprintf(name, sizeof(name), "valid-fixed-%d", (int) i);
		put("config", name, pn_fuzz_configs[i], strlen(pn_fuzz_configs[i]));
	}
}

int
main(int argc, char **argv)
{
	char		path[512];

	if (argc != 2)
		die("usage: make_corpus OUTDIR");
	outdir = argv[1];
	mkdir(outdir, 0755);
	snprintf(path, sizeof(path), "%s/safetensors", outdir);
	mkdir(path, 0755);
	snprintf(path, sizeof(path), "%s/config", outdir);
	mkdir(path, 0755);
	make_safetensors();
	make_config();
	printf("%d files in %s\n", nfiles, outdir);
	return 0;
}
