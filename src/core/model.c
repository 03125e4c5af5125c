/*
 * model.c
 *		Hashing of ids, the tensor layout of a configuration (docs/model.md's
 *		names and shapes), seeded initialisation, and the safetensors format.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* memmem */
#endif
#include "pncore.h"
#include "plan.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PN_ALIGN 16				/* floats: tensors start on 64-byte lines */

/* splitmix64 finaliser of docs/model.md */
uint64_t
pn_splitmix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/*
 * Embedding row of id in field i; -1 when a non-hashed id is out of range.
 * A named field's ids reach the core as rows (pn_field_row, or the missing
 * row), so for it this only checks the row.
 */
int64_t
pn_slot(const PnField *f, int field_index, int64_t id)
{
	if (f->named)
		return (id >= 0 && id <= PN_MISSING_ROW(f)) ? id : -1;
	return pn_field_row(f, field_index, id);
}

/*
 * Embedding row of id in field i, hashed, not hashed or through its
 * vocabulary; -1 when a non-hashed id is out of range or a vocabulary
 * field has none attached.  A vocabulary is searched by bisection
 * (BENCHMARKS.md "Unseen ids and vocabularies": a few hundred nanoseconds
 * at a million ids, against tens of microseconds of scoring per candidate).
 */
int64_t
pn_field_row(const PnField *f, int field_index, int64_t id)
{
	if (f->min_count > 0)
	{
		const int64_t *v = f->vocab;
		int64_t		lo = 0,
					hi = f->nvocab;

		if (v == NULL)
			return -1;
		while (lo < hi)
		{
			int64_t		mid = lo + (hi - lo) / 2;

			if (v[mid] < id)
				lo = mid + 1;
			else
				hi = mid;
		}
		return (lo < f->nvocab && v[lo] == id) ? lo : PN_OOV_ROW(f);
	}
	if (!f->hash)
		return (id >= 0 && id < f->buckets) ? id : -1;
	return (int64_t) (pn_splitmix64((uint64_t) id + UINT64_C(0x9E3779B97F4A7C15) * (uint64_t) (field_index + 1))
					  % (uint64_t) f->buckets);
}

/* Append a tensor to the layout being built */
static int
add_tensor(PnModel *m, PnKind kind, bool trainable, int ndim, int64_t a, int64_t b, int64_t c,
		   const char *fmt, int i, int j)
{
	PnTensor   *t = &m->tensors[m->ntensors];

	snprintf(t->name, sizeof(t->name), fmt, i, j);
	t->ndim = ndim;
	t->shape[0] = a;
	t->shape[1] = b;
	t->shape[2] = c;
	t->numel = a * (ndim > 1 ? b : 1) * (ndim > 2 ? c : 1);
	t->kind = kind;
	t->trainable = trainable;
	t->offset = m->total;
	m->total += (t->numel + PN_ALIGN - 1) / PN_ALIGN * PN_ALIGN;
	return m->ntensors++;
}

/* Append a vocabulary (int64 [n], never trained) to the layout being built */
static int
add_vocab(PnModel *m, int64_t n, const char *fmt, int i)
{
	int			x = add_tensor(m, PNT_OTHER, false, 1, n, 0, 0, fmt, i, 0);
	PnTensor   *t = &m->tensors[x];

	/* an int64 takes 2 floats; offsets stay multiples of PN_ALIGN floats (8-byte aligned) */
	m->total = t->offset + (2 * n + PN_ALIGN - 1) / PN_ALIGN * PN_ALIGN;
	t->i64 = true;
	m->nvocab++;
	return x;
}

/* Point the vocabulary fields of m->cfg at their tensors in m->data */
void
pn_model_attach_vocab(PnModel *m)
{
	int			i;

	for (i = 0; i < m->cfg.nfeat; i++)
	{
		PnField    *f = &m->cfg.feat[i];

		/* a copy of the layout without the vocabularies (Adam's moments) leaves the fields alone */
		if (m->t_vocab_feat[i] >= 0 && m->t_vocab_feat[i] < m->ntensors && m->data)
		{
			f->vocab = (const int64_t *) (m->data + m->tensors[m->t_vocab_feat[i]].offset);
			f->nvocab = m->tensors[m->t_vocab_feat[i]].numel;
		}
	}
	for (i = 0; i < m->cfg.npers; i++)
	{
		PnField    *f = &m->cfg.pers[i];

		if (m->t_vocab_pers[i] >= 0 && m->t_vocab_pers[i] < m->ntensors && m->data)
		{
			f->vocab = (const int64_t *) (m->data + m->tensors[m->t_vocab_pers[i]].offset);
			f->nvocab = m->tensors[m->t_vocab_pers[i]].numel;
		}
	}
}

static int	model_build(const PnConfig *cfg, bool alloc, PnModel **out, PnError *err);

/* Free a model and everything it owns */
void
pn_model_free(PnModel *m)
{
	if (m == NULL)
		return;
	if (!m->borrowed)
		pn_free(m->data);
	pn_plan_free(m->plan);
	pn_free(m->tensors);
	pn_free(m->t_emb_feat);
	pn_free(m->t_emb_pers);
	pn_free(m->t_vocab_feat);
	pn_free(m->t_vocab_pers);
	pn_free(m->t_tw_w);
	pn_free(m->t_tw_b);
	pn_free(m->t_tw_dw);
	pn_free(m->t_tw_db);
	pn_config_free(&m->cfg);
	pn_free(m);
}

/* Lay out the tensors of a configuration and allocate zeroed storage */
int
pn_model_new(const PnConfig *cfg, PnModel **out, PnError *err)
{
	return model_build(cfg, true, out, err);
}

/* Lay out the tensors without storage: pn_safetensors_read then points them into its blob */
int
pn_model_layout(const PnConfig *cfg, PnModel **out, PnError *err)
{
	return model_build(cfg, false, out, err);
}

/* The layout of cfg, with zeroed storage when alloc */
static int
model_build(const PnConfig *cfg, bool alloc, PnModel **out, PnError *err)
{
	PnModel    *m;
	const PnConfig *c;
	int64_t		k = cfg->emb_dim,
				n0 = cfg->n0,
				D = cfg->domains;
	int			i,
				t,
				l,
				ntw = cfg->ntasks * (cfg->nhidden + 1);

	*out = NULL;
	m = pn_alloc0(sizeof(PnModel));
	if (!m)
		return pn_seterr(err, PN_ENOMEM, "out of memory building the model");
	m->cfg = *cfg;
	m->cfg.neg_rate = NULL;
	m->cfg.dfield = NULL;
	m->cfg.feat = pn_alloc(sizeof(PnField) * (cfg->nfeat ? cfg->nfeat : 1));
	m->cfg.pers = pn_alloc(sizeof(PnField) * (cfg->npers ? cfg->npers : 1));
	m->tensors = pn_alloc0(sizeof(PnTensor) * (8 + 2 * cfg->nfeat + 2 * cfg->npers + 4 * ntw + 4 * cfg->nhidden + 16));
	m->t_emb_feat = pn_alloc(sizeof(int) * (cfg->nfeat + 1));
	m->t_emb_pers = pn_alloc(sizeof(int) * (cfg->npers + 1));
	m->t_vocab_feat = pn_alloc(sizeof(int) * (cfg->nfeat + 1));
	m->t_vocab_pers = pn_alloc(sizeof(int) * (cfg->npers + 1));
	m->t_tw_w = pn_alloc(sizeof(int) * ntw);
	m->t_tw_b = pn_alloc(sizeof(int) * ntw);
	m->t_tw_dw = pn_alloc(sizeof(int) * ntw);
	m->t_tw_db = pn_alloc(sizeof(int) * ntw);
	if (!m->cfg.feat || !m->cfg.pers || !m->tensors || !m->t_emb_feat || !m->t_emb_pers ||
		!m->t_vocab_feat || !m->t_vocab_pers ||
		!m->t_tw_w || !m->t_tw_b || !m->t_tw_dw || !m->t_tw_db)
	{
		pn_model_free(m);
		return pn_seterr(err, PN_ENOMEM, "out of memory building the model");
	}
	if (cfg->nfeat > 0)
		memcpy(m->cfg.feat, cfg->feat, sizeof(PnField) * cfg->nfeat);
	if (cfg->npers > 0)
		memcpy(m->cfg.pers, cfg->pers, sizeof(PnField) * cfg->npers);
	if (cfg->neg_rate)
	{
		m->cfg.neg_rate = pn_alloc(sizeof(float) * cfg->domains);
		if (!m->cfg.neg_rate)
		{
			pn_model_free(m);
			return pn_seterr(err, PN_ENOMEM, "out of memory building the model");
		}
		memcpy(m->cfg.neg_rate, cfg->neg_rate, sizeof(float) * cfg->domains);
	}
	if (cfg->dfield)
	{
		m->cfg.dfield = pn_alloc(sizeof(PnField) * (cfg->dense ? cfg->dense : 1));
		if (!m->cfg.dfield)
		{
			pn_model_free(m);
			return pn_seterr(err, PN_ENOMEM, "out of memory building the model");
		}
		memcpy(m->cfg.dfield, cfg->dfield, sizeof(PnField) * cfg->dense);
	}
	c = &m->cfg;

	for (i = 0; i < c->nfeat; i++)
		m->t_emb_feat[i] = add_tensor(m, PNT_EMBED, true, 2, PN_FIELD_ROWS(&c->feat[i]), k, 0, "emb.feature.%d", i, 0);
	for (i = 0; i < c->npers; i++)
		m->t_emb_pers[i] = add_tensor(m, PNT_EMBED, true, 2, PN_FIELD_ROWS(&c->pers[i]), k, 0, "emb.persona.%d", i, 0);
	m->t_emb_dom = add_tensor(m, PNT_EMBED, true, 2, D, k, 0, "emb.domain", 0, 0);
	m->t_ep_w1 = m->t_ep_b1 = m->t_ep_w2 = m->t_ep_b2 = -1;
	if (c->epnet)
	{
		int64_t		he = c->epnet_hidden;

		m->t_ep_w1 = add_tensor(m, PNT_WEIGHT, true, 2, he, k + n0, 0, "epnet.w1", 0, 0);
		m->t_ep_b1 = add_tensor(m, PNT_OTHER, true, 1, he, 0, 0, "epnet.b1", 0, 0);
		m->t_ep_w2 = add_tensor(m, PNT_WEIGHT, true, 2, n0, he, 0, "epnet.w2", 0, 0);
		m->t_ep_b2 = add_tensor(m, PNT_OTHER, true, 1, n0, 0, 0, "epnet.b2", 0, 0);
	}
	m->t_pn_gamma = m->t_pn_beta = m->t_pn_dgamma = m->t_pn_dbeta = m->t_pn_rmean = m->t_pn_rvar = -1;
	m->t_pn_count = -1;
	if (c->pn)
	{
		m->t_pn_gamma = add_tensor(m, PNT_OTHER, true, 1, n0, 0, 0, "pn.gamma", 0, 0);
		m->t_pn_beta = add_tensor(m, PNT_OTHER, true, 1, n0, 0, 0, "pn.beta", 0, 0);
		m->t_pn_dgamma = add_tensor(m, PNT_OTHER, true, 2, D, n0, 0, "pn.domain_gamma", 0, 0);
		m->t_pn_dbeta = add_tensor(m, PNT_OTHER, true, 2, D, n0, 0, "pn.domain_beta", 0, 0);
		m->t_pn_rmean = add_tensor(m, PNT_OTHER, false, 2, D, n0, 0, "pn.running_mean", 0, 0);
		m->t_pn_rvar = add_tensor(m, PNT_OTHER, false, 2, D, n0, 0, "pn.running_var", 0, 0);
		/* 0.2: batches that moved each domain's running statistics (absent in 0.1 blobs) */
		m->t_pn_count = add_tensor(m, PNT_OTHER, false, 1, D, 0, 0, "pn.num_batches_tracked", 0, 0);
		m->tensors[m->t_pn_count].optional = true;
	}
	for (t = 0; t < c->ntasks; t++)
	{
		int64_t		prev = n0;

		for (l = 1; l <= c->nhidden + 1; l++)
		{
			int64_t		h = l <= c->nhidden ? c->hidden[l - 1] : 1;
			int			x = PN_TW(c, t, l);

			m->t_tw_w[x] = add_tensor(m, PNT_WEIGHT, true, 2, h, prev, 0, "tower.%d.%d.w", t, l);
			m->t_tw_b[x] = add_tensor(m, PNT_OTHER, true, 1, h, 0, 0, "tower.%d.%d.b", t, l);
			m->t_tw_dw[x] = m->t_tw_db[x] = -1;
			if (c->star)
			{
				m->t_tw_dw[x] = add_tensor(m, PNT_OTHER, true, 3, D, h, prev, "tower.%d.%d.domain_w", t, l);
				m->t_tw_db[x] = add_tensor(m, PNT_OTHER, true, 2, D, h, 0, "tower.%d.%d.domain_b", t, l);
			}
			prev = h;
		}
	}
	for (l = 0; l < PN_MAX_LAYERS; l++)
		m->t_pp_w1[l] = m->t_pp_b1[l] = m->t_pp_w2[l] = m->t_pp_b2[l] = -1;
	if (c->ppnet)
		for (l = 1; l <= c->nhidden; l++)
		{
			int64_t		g = (int64_t) c->ntasks * c->hidden[l - 1];

			m->t_pp_w1[l - 1] = add_tensor(m, PNT_WEIGHT, true, 2, g, c->pk + n0, 0, "ppnet.%d.w1", l, 0);
			m->t_pp_b1[l - 1] = add_tensor(m, PNT_OTHER, true, 1, g, 0, 0, "ppnet.%d.b1", l, 0);
			m->t_pp_w2[l - 1] = add_tensor(m, PNT_WEIGHT, true, 2, g, g, 0, "ppnet.%d.w2", l, 0);
			m->t_pp_b2[l - 1] = add_tensor(m, PNT_OTHER, true, 1, g, 0, 0, "ppnet.%d.b2", l, 0);
		}
	m->t_aux_w1 = m->t_aux_b1 = m->t_aux_w2 = m->t_aux_b2 = -1;
	if (c->aux)
	{
		int64_t		ha = c->aux_hidden;

		m->t_aux_w1 = add_tensor(m, PNT_WEIGHT, true, 2, ha, k + n0, 0, "aux.w1", 0, 0);
		m->t_aux_b1 = add_tensor(m, PNT_OTHER, true, 1, ha, 0, 0, "aux.b1", 0, 0);
		m->t_aux_w2 = add_tensor(m, PNT_WEIGHT, true, 2, c->ntasks, ha, 0, "aux.w2", 0, 0);
		m->t_aux_b2 = add_tensor(m, PNT_OTHER, true, 1, c->ntasks, 0, 0, "aux.b2", 0, 0);
	}
	/* the vocabularies (int64) last: every float tensor before them */
	for (i = 0; i < c->nfeat; i++)
	{
		m->cfg.feat[i].vocab = NULL;
		m->cfg.feat[i].nvocab = 0;
		m->t_vocab_feat[i] = c->feat[i].min_count > 0 ?
			add_vocab(m, c->feat[i].buckets - 1, "vocab.feature.%d", i) : -1;
	}
	for (i = 0; i < c->npers; i++)
	{
		m->cfg.pers[i].vocab = NULL;
		m->cfg.pers[i].nvocab = 0;
		m->t_vocab_pers[i] = c->pers[i].min_count > 0 ?
			add_vocab(m, c->pers[i].buckets - 1, "vocab.persona.%d", i) : -1;
	}
	{
		int			rc = pn_plan_build(m, &m->plan, err);

		if (rc != PN_OK)
		{
			pn_model_free(m);
			return rc;
		}
	}
	if (!alloc)
	{
		*out = m;
		return PN_OK;
	}
	m->data = pn_alloc0(sizeof(float) * (size_t) m->total);
	if (!m->data)
	{
		int64_t		total = m->total;

		pn_model_free(m);
		return pn_seterr(err, PN_ENOMEM, "out of memory allocating %.1f MB of weights",
						 (double) total * 4 / (1024.0 * 1024.0));
	}
	pn_model_attach_vocab(m);
	*out = m;
	return PN_OK;
}

/* Index of a tensor by name, -1 if the layout has none */
int
pn_model_find(const PnModel *m, const char *name)
{
	int			i;

	for (i = 0; i < m->ntensors; i++)
		if (strcmp(m->tensors[i].name, name) == 0)
			return i;
	return -1;
}

/* Next uniform double in [0, 1) from a splitmix64 stream */
static double
rng_uniform(uint64_t *state)
{
	*state += UINT64_C(0x9E3779B97F4A7C15);
	return (double) (pn_splitmix64(*state) >> 11) * (1.0 / 9007199254740992.0);
}

/* Fill a tensor with a constant */
static void
fill(PnModel *m, int idx, float v)
{
	int64_t		i;
	float	   *p;

	if (idx < 0)
		return;
	p = PN_T(m, idx);
	for (i = 0; i < m->tensors[idx].numel; i++)
		p[i] = v;
}

/*
 * Seeded initialisation.  Each tensor draws from its own splitmix64 stream
 * (seed mixed with a hash of the tensor name), so switching one part off
 * leaves the others' values unchanged.  Embeddings U(-0.05, 0.05); shared
 * matrices [out, in] U(-1/sqrt(in), 1/sqrt(in)); biases 0; domain weights 1,
 * domain biases 0; PN gamma 1, beta 0, running mean 0, running variance 1.
 */
void
pn_model_init(PnModel *m, uint64_t seed)
{
	int			i;

	for (i = 0; i < PN_NFLOAT(m); i++)
		memset(m->data + m->tensors[i].offset, 0, sizeof(float) * (size_t) m->tensors[i].numel);
	/* the vocabularies (int64) are left as they are */
	for (i = 0; i < PN_NFLOAT(m); i++)
	{
		PnTensor   *t = &m->tensors[i];
		float	   *p = m->data + t->offset;
		uint64_t	state = seed * UINT64_C(0xD1B54A32D192ED03);
		const char *s;
		double		bound = 0.0;
		int64_t		j;

		for (s = t->name; *s; s++)
			state = pn_splitmix64(state ^ (uint64_t) (unsigned char) *s);
		if (t->kind == PNT_EMBED)
			bound = 0.05;
		else if (t->kind == PNT_WEIGHT)
			bound = 1.0 / sqrt((double) t->shape[1]);
		if (bound > 0.0)
			for (j = 0; j < t->numel; j++)
				p[j] = (float) ((2.0 * rng_uniform(&state) - 1.0) * bound);
	}
	for (i = 0; i < m->cfg.ntasks * (m->cfg.nhidden + 1); i++)
		fill(m, m->t_tw_dw[i], 1.0f);
	fill(m, m->t_pn_gamma, 1.0f);
	fill(m, m->t_pn_dgamma, 1.0f);
	fill(m, m->t_pn_rvar, 1.0f);
}

/* Read a little-endian uint64 */
static uint64_t
read_u64le(const uint8_t *p)
{
	uint64_t	v = 0;
	int			i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

/* qsort comparator by begin offset */
static int
span_cmp(const void *a, const void *b)
{
	const PnStSpan *x = a,
			   *y = b;

	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Format a shape for messages */
static void
shape_str(char *buf, size_t n, const int64_t *shape, int ndim)
{
	int			i;
	size_t		len = 0;

	len += snprintf(buf + len, n - len, "[");
	for (i = 0; i < ndim && len < n; i++)
		len += snprintf(buf + len, n - len, "%s%lld", i ? ", " : "", (long long) shape[i]);
	if (len < n)
		snprintf(buf + len, n - len, "]");
}

/*
 * Check the header of a safetensors blob of len bytes against the model's
 * layout, from its first headlen bytes (at least 8 + the header length, or
 * the whole blob): header length, JSON, dtype F32, shapes, offsets inside
 * the data, no overlaps or holes, every tensor present (optional ones may
 * be absent: m->nabsent), no unknown tensor.  On success *spans (pn_alloc'd,
 * sorted by offset, relative to the data, which starts at *data_start) and
 * *nspans describe where each tensor's bytes are.
 */
int
pn_safetensors_plan(PnModel *m, const uint8_t *blob, size_t headlen, uint64_t len,
					PnStSpan **spans_out, int *nspans_out, uint64_t *data_start, PnError *err)
{
	uint64_t	hlen,
				dlen;
	PnJson	   *root = NULL;
	PnStSpan   *spans = NULL;
	bool	   *seen = NULL;
	int			nspans = 0,
				rc = PN_OK,
				i;
	uint64_t	covered = 0;

	*spans_out = NULL;
	*nspans_out = 0;
	if (len < 8 || headlen < 8)
		return pn_seterr(err, PN_EFORMAT, "weights are not safetensors: %llu bytes, too short for a header", (unsigned long long) len);
	hlen = read_u64le(blob);
	if (hlen < 2)
		return pn_seterr(err, PN_EFORMAT, "weights are not safetensors: header length %llu is too short for a JSON object",
						 (unsigned long long) hlen);
	if (hlen > len - 8 || hlen > PN_MAX_HEADER || hlen > headlen - 8)
	{
		pn_seterr(err, PN_EFORMAT, "weights are not safetensors: header length %llu does not fit in %llu bytes",
				  (unsigned long long) hlen, (unsigned long long) len);
		return PN_EFORMAT;
	}
	dlen = len - 8 - hlen;
	*data_start = 8 + hlen;
	if ((rc = pn_json_parse((const char *) blob + 8, hlen, &root, err)) != PN_OK)
	{
		pn_setdetail(err, "The safetensors header is not valid JSON.");
		return rc == PN_ENOMEM ? rc : (err->code = PN_EFORMAT);
	}
	if (root->type != PNJ_OBJECT)
	{
		pn_json_free(root);
		return pn_seterr(err, PN_EFORMAT, "safetensors header is not a JSON object");
	}
	spans = pn_alloc(sizeof(PnStSpan) * (root->n + 1));
	seen = pn_alloc0(sizeof(bool) * (m->ntensors + 1));
	if (!spans || !seen)
	{
		rc = pn_seterr(err, PN_ENOMEM, "out of memory reading weights");
		goto done;
	}
	for (i = 0; i < root->n; i++)
	{
		const PnJson *e = root->items[i];
		const PnJson *dt,
				   *sh,
				   *off;
		PnTensor   *t;
		int			idx,
					d;
		char		want[96],
					got[96];

		if (strcmp(e->key, "__metadata__") == 0)
			continue;
		idx = pn_model_find(m, e->key);
		if (idx < 0)
		{
			rc = pn_seterr(err, PN_EFORMAT, "weights have a tensor \"%.*s\" that the config does not use", pn_utf8_prefix(e->key, 60), e->key);
			pn_setdetail(err, "Check the tensor names in docs/model.md and the parts switched on in the config.");
			goto done;
		}
		t = &m->tensors[idx];
		if (e->type != PNJ_OBJECT)
		{
			rc = pn_seterr(err, PN_EFORMAT, "safetensors entry \"%s\" is not an object", t->name);
			goto done;
		}
		dt = pn_json_get(e, "dtype");
		if (dt == NULL || dt->type != PNJ_STRING || strcmp(dt->str, t->i64 ? "I64" : "F32") != 0)
		{
			rc = pn_seterr(err, PN_EFORMAT, "tensor \"%s\" has dtype %.*s, expected %s", t->name,
						   pn_utf8_prefix((dt && dt->type == PNJ_STRING) ? dt->str : "(missing)", 20),
						   (dt && dt->type == PNJ_STRING) ? dt->str : "(missing)", t->i64 ? "I64" : "F32");
			if (t->i64)
				pn_setdetail(err, "A vocabulary is int64: the ids of the field's rows 0..V-1, ascending.");
			goto done;
		}
		sh = pn_json_get(e, "shape");
		shape_str(want, sizeof(want), t->shape, t->ndim);
		if (sh == NULL || sh->type != PNJ_ARRAY)
		{
			rc = pn_seterr(err, PN_EFORMAT, "tensor \"%s\" has no shape, expected %s", t->name, want);
			goto done;
		}
		{
			int64_t		gs[8] = {0};
			bool		ok = sh->n == t->ndim;

			for (d = 0; d < sh->n && d < 8; d++)
			{
				if (sh->items[d]->type != PNJ_NUMBER || !sh->items[d]->is_int)
					ok = false;
				else
				{
					gs[d] = sh->items[d]->ival;
					if (d < t->ndim && d < 3 && gs[d] != t->shape[d])
						ok = false;
				}
			}
			if (!ok)
			{
				shape_str(got, sizeof(got), gs, sh->n < 8 ? sh->n : 8);
				rc = pn_seterr(err, PN_EFORMAT, "tensor \"%s\" has shape %s, the config needs %s", t->name, got, want);
				goto done;
			}
		}
		off = pn_json_get(e, "data_offsets");
		if (off == NULL || off->type != PNJ_ARRAY || off->n != 2 ||
			off->items[0]->type != PNJ_NUMBER || !off->items[0]->is_int ||
			off->items[1]->type != PNJ_NUMBER || !off->items[1]->is_int ||
			off->items[0]->ival < 0 || off->items[1]->ival < off->items[0]->ival ||
			(uint64_t) off->items[1]->ival > dlen)
		{
			rc = pn_seterr(err, PN_EFORMAT, "tensor \"%s\" has data_offsets outside the %llu bytes of data",
						   t->name, (unsigned long long) dlen);
			goto done;
		}
		if ((uint64_t) (off->items[1]->ival - off->items[0]->ival) != PN_TENSOR_BYTES(t))
		{
			rc = pn_seterr(err, PN_EFORMAT, "tensor \"%s\" has %lld bytes of data, its shape needs %lld",
						   t->name, (long long) (off->items[1]->ival - off->items[0]->ival),
						   (long long) PN_TENSOR_BYTES(t));
			goto done;
		}
		spans[nspans].begin = (uint64_t) off->items[0]->ival;
		spans[nspans].end = (uint64_t) off->items[1]->ival;
		spans[nspans].tensor = idx;
		nspans++;
		seen[idx] = true;
	}
	m->nabsent = 0;
	for (i = 0; i < m->ntensors; i++)
		if (!seen[i] && m->tensors[i].optional)
			m->nabsent++;
		else if (!seen[i])
		{
			rc = pn_seterr(err, PN_EFORMAT, "weights lack tensor \"%s\" that the config needs", m->tensors[i].name);
			goto done;
		}
	qsort(spans, nspans, sizeof(PnStSpan), span_cmp);
	for (i = 0; i < nspans; i++)
	{
		if (i > 0 && spans[i].begin < spans[i - 1].end)
		{
			rc = pn_seterr(err, PN_EFORMAT, "tensors \"%s\" and \"%s\" overlap in the data",
						   m->tensors[spans[i - 1].tensor].name, m->tensors[spans[i].tensor].name);
			goto done;
		}
		covered += spans[i].end - spans[i].begin;
	}
	if (covered != dlen)
	{
		rc = pn_seterr(err, PN_EFORMAT, "safetensors data has %llu bytes that no tensor uses",
					   (unsigned long long) (dlen - covered));
		goto done;
	}
done:
	pn_free(seen);
	pn_json_free(root);
	if (rc != PN_OK)
	{
		pn_free(spans);
		return rc;
	}
	*spans_out = spans;
	*nspans_out = nspans;
	return PN_OK;
}

/*
 * After the spanned tensors' bytes are in m->data: zero the optional
 * tensors the blob lacks and check that every value is finite.
 */
int
pn_safetensors_check(PnModel *m, const PnStSpan *spans, int nspans, PnError *err)
{
	bool	   *seen = pn_alloc0(sizeof(bool) * (m->ntensors + 1));
	int			i;

	if (!seen)
		return pn_seterr(err, PN_ENOMEM, "out of memory reading weights");
	for (i = 0; i < nspans; i++)
		seen[spans[i].tensor] = true;
	for (i = 0; i < m->ntensors; i++)
		if (!seen[i])
			memset(m->data + m->tensors[i].offset, 0, sizeof(float) * (size_t) m->tensors[i].numel);
	pn_free(seen);
	for (i = 0; i < nspans; i++)
	{
		const PnTensor *t = &m->tensors[spans[i].tensor];
		const float *p = m->data + t->offset;
		int64_t		j;

		if (t->i64)
		{
			/* a vocabulary: ascending and unique, so that lookups bisect it */
			const int64_t *v = (const int64_t *) p;

			for (j = 1; j < t->numel; j++)
				if (v[j] <= v[j - 1])
				{
					pn_seterr(err, PN_EFORMAT, "tensor \"%s\" is not ascending and unique at element %lld",
							  t->name, (long long) j);
					pn_setdetail(err, "A vocabulary lists the field's ids in ascending order, each once (id %lld follows %lld).",
								 (long long) v[j], (long long) v[j - 1]);
					return PN_EFORMAT;
				}
			continue;
		}
		for (j = 0; j < t->numel; j++)
			if (!isfinite(p[j]))
				return pn_seterr(err, PN_EFORMAT, "tensor \"%s\" holds a non-finite value at element %lld",
								 t->name, (long long) j);
	}
	pn_model_attach_vocab(m);
	return PN_OK;
}

/*
 * Validate a safetensors blob against the model's layout and copy its
 * tensors in (pn_safetensors_plan, then the bytes, then
 * pn_safetensors_check).  A model made by pn_model_layout (no storage yet)
 * instead points its tensors into the blob when they are float-aligned
 * there (no copy: the blob must then outlive the model, and is written to
 * if the model is trained); otherwise storage is allocated and filled.
 */
int
pn_safetensors_read(PnModel *m, const uint8_t *blob, size_t len, PnError *err)
{
	PnStSpan   *spans = NULL;
	int			nspans = 0,
				rc,
				i;
	uint64_t	start = 0,
				dlen;
	const uint8_t *data;

	if ((rc = pn_safetensors_plan(m, blob, len, len, &spans, &nspans, &start, err)) != PN_OK)
		return rc;
	data = blob + start;
	dlen = len - start;
	if (m->data == NULL)
	{
		bool		aligned = ((uintptr_t) data % sizeof(float)) == 0;

		for (i = 0; i < nspans; i++)
			aligned &= spans[i].begin % sizeof(float) == 0 &&
				(!m->tensors[spans[i].tensor].i64 || ((uintptr_t) (data + spans[i].begin)) % sizeof(int64_t) == 0);
		/* an absent optional tensor has no place in the blob: copy instead */
		if (aligned && m->nabsent == 0)
		{
			m->data = (float *) (uintptr_t) data;
			m->borrowed = true;
			m->total = (int64_t) (dlen / sizeof(float));
			for (i = 0; i < nspans; i++)
				m->tensors[spans[i].tensor].offset = (int64_t) (spans[i].begin / sizeof(float));
		}
		else if ((m->data = pn_alloc0(sizeof(float) * (size_t) m->total)) == NULL)
		{
			rc = pn_seterr(err, PN_ENOMEM, "out of memory for %.1f MB of weights",
						   (double) m->total * 4 / (1024.0 * 1024.0));
			goto done;
		}
	}
	for (i = 0; i < nspans; i++)
		if (!m->borrowed)
			memcpy(m->data + m->tensors[spans[i].tensor].offset, data + spans[i].begin,
				   (size_t) PN_TENSOR_BYTES(&m->tensors[spans[i].tensor]));
	rc = pn_safetensors_check(m, spans, nspans, err);
done:
	pn_free(spans);
	return rc;
}


/* Write the JSON header into buf (or only measure with buf NULL); returns length */
static size_t
header_write(const PnModel *m, char *buf)
{
	size_t		len = 0,
				pad;
	uint64_t	off = 0;
	int			i,
				d;
	char		tmp[256];

#define PUT(s) do { size_t n_ = strlen(s); if (buf) memcpy(buf + len, s, n_); len += n_; } while (0)
	PUT("{\"__metadata__\":{\"format\":\"pt\"}");
	for (i = 0; i < m->ntensors; i++)
	{
		const PnTensor *t = &m->tensors[i];

		snprintf(tmp, sizeof(tmp), ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name, t->i64 ? "I64" : "F32");
		PUT(tmp);
		for (d = 0; d < t->ndim; d++)
		{
			snprintf(tmp, sizeof(tmp), "%s%lld", d ? "," : "", (long long) t->shape[d]);
			PUT(tmp);
		}
		snprintf(tmp, sizeof(tmp), "],\"data_offsets\":[%llu,%llu]}", (unsigned long long) off,
				 (unsigned long long) (off + PN_TENSOR_BYTES(t)));
		PUT(tmp);
		off += PN_TENSOR_BYTES(t);
	}
	PUT("}");
	/* pad with spaces so the data starts 8-byte aligned */
	pad = (8 - len % 8) % 8;
	if (buf)
		memset(buf + len, ' ', pad);
	return len + pad;
#undef PUT
}

/*
 * Whether the first len bytes of a safetensors blob (its length and JSON
 * header at least) hold PN's running statistics but no
 * pn.num_batches_tracked: weights stored by 0.1.0 (docs/model.md 0.2 added
 * the count).  False for anything shorter than its header says.
 */
bool
pn_safetensors_lacks_count(const uint8_t *p, size_t len)
{
	uint64_t	hlen = 0;
	int			i;

	if (len < 8)
		return false;
	for (i = 7; i >= 0; i--)
		hlen = (hlen << 8) | p[i];
	if (hlen > len - 8)
		return false;
	return memmem(p + 8, hlen, "\"pn.running_mean\"", 17) != NULL &&
		memmem(p + 8, hlen, "\"pn.num_batches_tracked\"", 24) == NULL;
}

/* Bytes of the safetensors blob of m */
size_t
pn_safetensors_size(const PnModel *m)
{
	size_t		n = 8 + header_write(m, NULL);
	int			i;

	for (i = 0; i < m->ntensors; i++)
		n += (size_t) PN_TENSOR_BYTES(&m->tensors[i]);
	return n;
}

/* Write the safetensors blob of m into out (pn_safetensors_size bytes) */
void
pn_safetensors_write(const PnModel *m, uint8_t *out)
{
	size_t		hlen = header_write(m, (char *) out + 8),
				pos;
	int			i;

	for (i = 0; i < 8; i++)
		out[i] = (uint8_t) (((uint64_t) hlen >> (8 * i)) & 0xFF);
	pos = 8 + hlen;
	for (i = 0; i < m->ntensors; i++)
	{
		memcpy(out + pos, m->data + m->tensors[i].offset, (size_t) PN_TENSOR_BYTES(&m->tensors[i]));
		pos += (size_t) PN_TENSOR_BYTES(&m->tensors[i]);
	}
}

/* The first bytes of the blob of m: header length and header; returns their size */
size_t
pn_safetensors_prefix(const PnModel *m, uint8_t *out)
{
	size_t		hlen = header_write(m, out ? (char *) out + 8 : NULL);
	int			i;

	if (out)
		for (i = 0; i < 8; i++)
			out[i] = (uint8_t) (((uint64_t) hlen >> (8 * i)) & 0xFF);
	return 8 + hlen;
}

/* Bytes [off, off + len) of the blob of m, whose prefix (pn_safetensors_prefix) is given */
void
pn_safetensors_write_range(const PnModel *m, const uint8_t *prefix, size_t prefixlen,
						   uint64_t off, size_t len, uint8_t *out)
{
	uint64_t	end = off + len,
				pos;
	int			i;

	if (off < prefixlen)
	{
		size_t		n = (size_t) ((end < prefixlen ? end : prefixlen) - off);

		memcpy(out, prefix + off, n);
	}
	pos = prefixlen;
	for (i = 0; i < m->ntensors && pos < end; i++)
	{
		uint64_t	nb = PN_TENSOR_BYTES(&m->tensors[i]),
					b = pos > off ? pos : off,
					e = pos + nb < end ? pos + nb : end;

		if (b < e)
			memcpy(out + (b - off), (const uint8_t *) (m->data + m->tensors[i].offset) + (b - pos), (size_t) (e - b));
		pos += nb;
	}
}
