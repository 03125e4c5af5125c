/*
 * fuzz_safetensors.c
 *		libFuzzer target for pn_safetensors_read (and through it the JSON
 *		parser).  Input: byte 0 picks one of the fixed configs of
 *		fuzz_configs.h, the rest is the blob.  Checked beyond "no crash":
 *		- a failure returns PN_EFORMAT (or PN_ENOMEM), equal to err.code,
 *		  with a non-empty, terminated message;
 *		- on success every tensor of the model equals the bytes at its
 *		  data_offsets in the blob, and all values are finite;
 *		- pn_safetensors_write of the model reads back (into a fresh model)
 *		  bit for bit, and writing that model again gives the same bytes;
 *		- out of memory (fuzz_oom.h): with one allocation of pn_model_new or
 *		  pn_safetensors_read failing, the call returns PN_ENOMEM with
 *		  err.code PN_ENOMEM and nothing leaks.
 *
 * Build and run: test/fuzz/run.sh.
 */
#include "pncore.h"
#include "fuzz_configs.h"
#include "fuzz_oom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static PnConfig configs[PN_FUZZ_NCONFIGS];
static bool parsed;

/* Stop with a message: libFuzzer records the input as a crash */
static void
fail(const char *what, const PnError *e)
{
	fprintf(stderr, "fuzz_safetensors: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
	abort();
}

/* Parse the fixed configs once */
static void
parse_configs(void)
{
	int			i;

	for (i = 0; i < PN_FUZZ_NCONFIGS; i++)
	{
		PnError		e = {0};

		if (pn_config_parse(pn_fuzz_configs[i], strlen(pn_fuzz_configs[i]), (int64_t) 64 << 20,
							&configs[i], &e) != PN_OK)
		{
			fprintf(stderr, "fixed config %d: %s\n", i, e.msg);
			abort();
		}
	}
	parsed = true;
}

/* An error returned by the reader must be well-formed */
static void
check_error(int rc, const PnError *e)
{
	if (rc != PN_EFORMAT && rc != PN_ENOMEM)
		fail("pn_safetensors_read returned an unexpected code", e);
	if (e->code != rc)
		fail("return code differs from err.code", e);
	if (memchr(e->msg, '\0', sizeof(e->msg)) == NULL || e->msg[0] == '\0')
		fail("error message empty or unterminated", NULL);
	if (memchr(e->detail, '\0', sizeof(e->detail)) == NULL)
		fail("error detail unterminated", NULL);
}

/* After a successful read: each tensor holds exactly its bytes of the blob */
static void
check_contents(const PnModel *m, const uint8_t *blob, size_t len)
{
	uint64_t	hlen = 0;
	PnJson	   *root = NULL;
	PnError		e = {0};
	int			i,
				found = 0;

	for (i = 7; i >= 0; i--)
		hlen = (hlen << 8) | blob[i];
	if (hlen > len - 8 || pn_json_parse((const char *) blob + 8, (size_t) hlen, &root, &e) != PN_OK)
		fail("accepted blob whose header does not parse again", &e);
	for (i = 0; i < root->n; i++)
	{
		const PnJson *t = root->items[i];
		const PnJson *off;
		int			idx;
		int64_t		j;
		const float *p;

		if (strcmp(t->key, "__metadata__") == 0)
			continue;
		idx = pn_model_find(m, t->key);
		off = pn_json_get(t, "data_offsets");
		if (idx < 0 || off == NULL || off->n != 2)
			fail("accepted blob with an unknown tensor or bad data_offsets", NULL);
		if (memcmp(PN_T(m, idx), blob + 8 + hlen + off->items[0]->ival,
				   (size_t) PN_TENSOR_BYTES(&m->tensors[idx])) != 0)
			fail("tensor contents differ from the blob", NULL);
		p = PN_T(m, idx);
		if (m->tensors[idx].i64)
		{
			/* a vocabulary: ascending and unique ids, attached to its field */
			const int64_t *v = (const int64_t *) p;

			for (j = 1; j < m->tensors[idx].numel; j++)
				if (v[j] <= v[j - 1])
					fail("accepted a vocabulary that is not ascending and unique", NULL);
		}
		else
			for (j = 0; j < m->tensors[idx].numel; j++)
				if (!isfinite(p[j]))
					fail("accepted a non-finite value", NULL);
		found++;
	}
	/* optional tensors (pn.num_batches_tracked, docs/model.md 0.2) may be absent: then read as 0 */
	if (found + m->nabsent != m->ntensors)
		fail("accepted blob without every tensor", NULL);
	if (m->nabsent > 0)
	{
		/* the one optional tensor is the count; absent, it reads as 0 */
		int64_t		e;

		if (m->t_pn_count < 0 || m->nabsent != 1)
			fail("absent tensors other than pn.num_batches_tracked", NULL);
		for (e = 0; e < m->tensors[m->t_pn_count].numel; e++)
			if (PN_T(m, m->t_pn_count)[e] != 0.0f)
				fail("an absent pn.num_batches_tracked did not read as 0", NULL);
	}
	pn_json_free(root);
}

/* Write m, read it into a fresh model, compare; write again, compare bytes */
static void
check_round_trip(const PnModel *m, const PnConfig *cfg)
{
	size_t		n = pn_safetensors_size(m);
	uint8_t    *out = malloc(n),
			   *out2 = malloc(n);
	PnModel    *m2 = NULL;
	PnError		e = {0};
	int			i;

	if (!out || !out2)
		fail("malloc", NULL);
	pn_safetensors_write(m, out);
	if (pn_model_new(cfg, &m2, &e) != PN_OK)
		fail("pn_model_new (round trip)", &e);
	if (pn_safetensors_read(m2, out, n, &e) != PN_OK)
		fail("written blob does not read back", &e);
	for (i = 0; i < m->ntensors; i++)
		if (memcmp(PN_T(m, i), PN_T(m2, i), (size_t) PN_TENSOR_BYTES(&m->tensors[i])) != 0)
			fail("round trip is not bit for bit", NULL);
	if (pn_safetensors_size(m2) != n)
		fail("size differs after round trip", NULL);
	pn_safetensors_write(m2, out2);
	if (memcmp(out, out2, n) != 0)
		fail("second write differs from the first", NULL);
	pn_model_free(m2);
	free(out);
	free(out2);
}

/* Run the input again with one allocation failing */
static void
check_oom(const uint8_t *data, size_t size, const PnConfig *cfg, int64_t nmodel, int64_t nread)
{
	PnModel    *m = NULL;
	PnError		e = {0};
	int64_t		k;
	int			rc;

	if (nmodel + nread == 0)
		return;
	k = 1 + (int64_t) (fz_hash(data, size) % (uint64_t) (nmodel + nread));
	fz_count(k <= nmodel ? k : 0);
	rc = pn_model_new(cfg, &m, &e);
	if (k <= nmodel)
	{
		if (rc != PN_ENOMEM || e.code != PN_ENOMEM || m != NULL)
			fail("pn_model_new out of memory is not reported as PN_ENOMEM", &e);
		fz_count(0);
		return;
	}
	if (rc != PN_OK)
		fail("pn_model_new failed the second time", &e);
	fz_count(k - nmodel);
	rc = pn_safetensors_read(m, data + 1, size - 1, &e);
	if (rc != PN_ENOMEM || e.code != PN_ENOMEM)
	{
		fprintf(stderr, "allocation %lld of %lld failed: returned %d, err.code %d\n",
				(long long) (k - nmodel), (long long) nread, rc, e.code);
		fail("pn_safetensors_read out of memory is not reported as PN_ENOMEM", &e);
	}
	fz_count(0);
	pn_model_free(m);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const PnConfig *cfg;
	PnModel    *m = NULL;
	PnError		e = {0};
	int			rc;
	int64_t		nmodel,
				nread;

	if (!parsed)
		parse_configs();
	if (size < 1)
		return 0;
	cfg = &configs[data[0] % PN_FUZZ_NCONFIGS];
	fz_count(0);
	if (pn_model_new(cfg, &m, &e) != PN_OK)
		fail("pn_model_new", &e);
	nmodel = fz_nalloc;
	fz_count(0);
	rc = pn_safetensors_read(m, data + 1, size - 1, &e);
	nread = fz_nalloc;
	if (rc != PN_OK)
		check_error(rc, &e);
	else
	{
		check_contents(m, data + 1, size - 1);
		check_round_trip(m, cfg);
	}
	pn_model_free(m);
	check_oom(data, size, cfg, nmodel, nread);
	return 0;
}
