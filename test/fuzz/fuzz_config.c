/*
 * fuzz_config.c
 *		libFuzzer target for pn_config_parse (and the JSON parser).  The
 *		input is the config text.  Checked beyond "no crash":
 *		- a failure returns PN_ECONFIG / PN_ETOOBIG / PN_ENOMEM, equal to
 *		  err.code, with a non-empty, terminated message;
 *		- on success pn_config_numel is >= 0 and within the size limit, the
 *		  canonical JSON of pn_config_to_json parses again to an equal
 *		  config, and its canonical JSON is the same text (a fixpoint);
 *		- for small models, the tensor layout of pn_model_new adds up to
 *		  pn_config_numel, tensors are aligned and disjoint, and a seeded
 *		  model survives a safetensors write/read round trip bit for bit;
 *		- out of memory (fuzz_oom.h): with one allocation of
 *		  pn_config_parse or pn_config_to_json failing, the parse returns
 *		  PN_ENOMEM with err.code PN_ENOMEM, to_json returns NULL, and
 *		  nothing leaks.
 *
 * Build and run: test/fuzz/run.sh.
 */
#include "pncore.h"
#include "fuzz_oom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BYTES ((int64_t) 64 << 20)	/* the size limit given to the parser */
#define MAX_BUILD ((int64_t) 1 << 18)	/* build models up to 1 MB of floats */

/* Stop with a message: libFuzzer records the input as a crash */
static void
fail(const char *what, const PnError *e, const char *text)
{
	fprintf(stderr, "fuzz_config: %s%s%s\n", what, e ? ": " : "", e ? e->msg : "");
	if (e && e->detail[0])
		fprintf(stderr, "detail: %s\n", e->detail);
	if (text)
		fprintf(stderr, "canonical JSON: %s\n", text);
	abort();
}

/* An error returned by the parser must be well-formed */
static void
check_error(int rc, const PnError *e)
{
	if (rc != PN_ECONFIG && rc != PN_ETOOBIG && rc != PN_ENOMEM)
		fail("pn_config_parse returned an unexpected code", e, NULL);
	if (e->code != rc)
		fail("return code differs from err.code", e, NULL);
	if (memchr(e->msg, '\0', sizeof(e->msg)) == NULL || e->msg[0] == '\0')
		fail("error message empty or unterminated", NULL, NULL);
	if (memchr(e->detail, '\0', sizeof(e->detail)) == NULL)
		fail("error detail unterminated", NULL, NULL);
}

/* Field arrays equal */
static bool
fields_equal(const PnField *a, const PnField *b, int n)
{
	int			i;

	for (i = 0; i < n; i++)
		if (strcmp(a[i].name, b[i].name) != 0 || a[i].buckets != b[i].buckets || a[i].hash != b[i].hash ||
			a[i].named != b[i].named || a[i].nullable != b[i].nullable)
			return false;
	return true;
}

/* Every field of two configs equal; returns the name of the first difference */
static const char *
config_diff(const PnConfig *a, const PnConfig *b)
{
	int			i;

	if (a->domains != b->domains)
		return "domains";
	if (a->inputs != b->inputs)
		return "inputs";
	if (strcmp(a->domain_column, b->domain_column) != 0)
		return "domain_column";
	if ((a->dfield == NULL) != (b->dfield == NULL))
		return "dense";
	for (i = 0; a->dfield && i < a->dense && i < b->dense; i++)
		if (strcmp(a->dfield[i].name, b->dfield[i].name) != 0)
			return "dense";
	if (a->nfeat != b->nfeat || !fields_equal(a->feat, b->feat, a->nfeat))
		return "features";
	if (a->npers != b->npers || !fields_equal(a->pers, b->pers, a->npers))
		return "persona";
	if (a->dense != b->dense)
		return "dense";
	if (a->emb_dim != b->emb_dim)
		return "emb_dim";
	if (a->ntasks != b->ntasks)
		return "ntasks";
	for (i = 0; i < a->ntasks; i++)
		if (strcmp(a->tasks[i], b->tasks[i]) != 0)
			return "tasks";
	if (a->nhidden != b->nhidden)
		return "nhidden";
	for (i = 0; i < a->nhidden; i++)
		if (a->hidden[i] != b->hidden[i])
			return "hidden";
	if (memcmp(&a->gamma, &b->gamma, sizeof(float)) != 0)
		return "gamma";
	if (a->epnet != b->epnet)
		return "epnet";
	if (a->epnet_hidden != b->epnet_hidden)
		return "epnet_hidden";
	if (a->ppnet != b->ppnet)
		return "ppnet";
	if (a->pn != b->pn)
		return "pn";
	if (a->star != b->star)
		return "star";
	if (a->aux != b->aux)
		return "aux";
	if (a->aux_hidden != b->aux_hidden)
		return "aux_hidden";
	if (memcmp(&a->l2, &b->l2, sizeof(float)) != 0)
		return "l2";
	if ((a->neg_rate == NULL) != (b->neg_rate == NULL) ||
		(a->neg_rate && memcmp(a->neg_rate, b->neg_rate, sizeof(float) * a->domains) != 0))
		return "negative_rate";
	if (a->domain_input != b->domain_input)
		return "domain_input";
	if (a->n0 != b->n0)
		return "n0";
	if (a->pk != b->pk)
		return "pk";
	return NULL;
}

/* Layout of a small model against pn_config_numel, and a weight round trip */
static void
check_model(const PnConfig *cfg, int64_t numel)
{
	PnModel    *m = NULL,
			   *m2 = NULL;
	PnError		e = {0};
	int64_t		sum = 0,
				end = 0;
	int			i;
	size_t		n;
	uint8_t    *blob;

	if (pn_model_new(cfg, &m, &e) != PN_OK)
		fail("pn_model_new", &e, NULL);
	if (m->ntensors > PN_MAX_TENSORS)
		fail("more tensors than PN_MAX_TENSORS", NULL, NULL);
	for (i = 0; i < m->ntensors; i++)
	{
		const PnTensor *t = &m->tensors[i];

		if (t->numel < 1 || t->offset % 16 != 0 || t->offset < end || t->offset + t->numel > m->total)
			fail("tensor layout overlaps, is unaligned or outside the data", NULL, NULL);
		if (m->ntensors <= 256 && pn_model_find(m, t->name) != i)
			fail("tensor names are not unique", NULL, NULL);
		end = t->offset + t->numel;
		sum += t->numel;
	}
	if (sum != numel)
		fail("tensors do not add up to pn_config_numel", NULL, NULL);
	pn_model_init(m, 7);
	n = pn_safetensors_size(m);
	blob = malloc(n);
	if (!blob)
		fail("malloc", NULL, NULL);
	pn_safetensors_write(m, blob);
	if (pn_model_new(cfg, &m2, &e) != PN_OK)
		fail("pn_model_new", &e, NULL);
	if (pn_safetensors_read(m2, blob, n, &e) != PN_OK)
		fail("weights of the config do not read back", &e, NULL);
	for (i = 0; i < m->ntensors; i++)
		if (memcmp(PN_T(m, i), PN_T(m2, i), (size_t) m->tensors[i].numel * 4) != 0)
			fail("weight round trip is not bit for bit", NULL, NULL);
	free(blob);
	pn_model_free(m2);
	pn_model_free(m);
}

/* Run the input again with one allocation failing */
static void
check_oom(const uint8_t *data, size_t size, int64_t nparse, int64_t njson)
{
	PnConfig	c;
	PnError		e = {0};
	int64_t		k;
	int			rc;

	if (nparse + njson == 0)
		return;
	k = 1 + (int64_t) (fz_hash(data, size) % (uint64_t) (nparse + njson));
	fz_count(k <= nparse ? k : 0);
	rc = pn_config_parse((const char *) data, size, MAX_BYTES, &c, &e);
	if (k <= nparse)
	{
		if (rc == PN_OK)
			fail("pn_config_parse succeeded with an allocation failing", NULL, NULL);
		if (rc != PN_ENOMEM || e.code != PN_ENOMEM)
		{
			fprintf(stderr, "allocation %lld of %lld failed: returned %d, err.code %d\n",
					(long long) k, (long long) nparse, rc, e.code);
			fail("pn_config_parse out of memory is not reported as PN_ENOMEM", &e, NULL);
		}
	}
	else
	{
		char	   *js;

		if (rc != PN_OK)
			fail("pn_config_parse failed the second time", &e, NULL);
		fz_count(k - nparse);
		js = pn_config_to_json(&c);
		if (js != NULL)
			fail("pn_config_to_json returned text with an allocation failing", NULL, NULL);
		pn_config_free(&c);
	}
	fz_count(0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	PnConfig	c,
				c2;
	PnError		e = {0};
	int			rc;
	int64_t		numel,
				nparse,
				njson = 0;
	char	   *js,
			   *js2;
	const char *diff;

	fz_count(0);
	rc = pn_config_parse((const char *) data, size, MAX_BYTES, &c, &e);
	nparse = fz_nalloc;
	if (rc != PN_OK)
	{
		check_error(rc, &e);
		check_oom(data, size, nparse, 0);
		return 0;
	}
	numel = pn_config_numel(&c);
	if (numel < 0 || numel > MAX_BYTES / 4)
		fail("pn_config_numel negative or above the limit", NULL, NULL);
	fz_count(0);
	js = pn_config_to_json(&c);
	njson = fz_nalloc;
	if (js == NULL)
		fail("pn_config_to_json returned NULL", NULL, NULL);
	rc = pn_config_parse(js, strlen(js), MAX_BYTES, &c2, &e);
	if (rc != PN_OK)
		fail("canonical JSON does not parse again", &e, js);
	if ((diff = config_diff(&c, &c2)) != NULL)
	{
		fprintf(stderr, "config differs in \"%s\"\n", diff);
		fail("canonical JSON parses to another config", NULL, js);
	}
	js2 = pn_config_to_json(&c2);
	if (js2 == NULL || strcmp(js, js2) != 0)
		fail("canonical JSON is not a fixpoint", NULL, js);
	if (numel <= MAX_BUILD)
		check_model(&c, numel);
	pn_free(js2);
	pn_free(js);
	pn_config_free(&c2);
	pn_config_free(&c);
	check_oom(data, size, nparse, njson);
	return 0;
}
