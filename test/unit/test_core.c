/*
 * test_core.c
 *		Unit tests of pepnet's numeric core, without PostgreSQL: hashing,
 *		configuration, the safetensors reader (accept and reject), the fused
 *		vectorized forward against the unfused reference, and a tiny model
 *		whose output is computed by hand.
 *
 * Prints "ok - name" / "not ok - name" per check and "N passed, M failed".
 */
#define _GNU_SOURCE				/* memmem */
#include "pncore.h"
#include "pndnnl.h"
#include "pninternal.h"
#include "plan.h"
#include "ref_forward.h"
#include "vmath.h"

#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern void openblas_set_num_threads(int);

static int	npass,
			nfail;

#define CHECK(cond, ...) check((cond), __VA_ARGS__)

/* Record one check */
static void
check(int ok, const char *fmt,...)
{
	va_list		ap;

	printf(ok ? "ok - " : "not ok - ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (ok)
		npass++;
	else
		nfail++;
}

/* Parse a config or die */
static PnConfig
parse(const char *json)
{
	PnConfig	c;
	PnError		e = {0};

	if (pn_config_parse(json, strlen(json), (int64_t) 1 << 32, &c, &e) != PN_OK)
	{
		fprintf(stderr, "config failed: %s\n", e.msg);
		exit(2);
	}
	return c;
}

/* Expect a config to be rejected with a message containing substr */
static void
config_rejects(const char *json, int code, const char *substr)
{
	PnConfig	c;
	PnError		e = {0};
	int			rc = pn_config_parse(json, strlen(json), (int64_t) 64 << 20, &c, &e);

	CHECK(rc == code && strstr(e.msg, substr) != NULL, "config rejects %s (%s)", json, e.msg);
	if (rc == PN_OK)
		pn_config_free(&c);
}

/* Hash test vectors of docs/model.md */
static void
test_hash(void)
{
	PnField		f = {.name = "f", .buckets = 1000, .hash = true};
	PnField		nh = {.name = "age", .buckets = 8, .hash = false};

	CHECK(pn_slot(&f, 0, 0) == 535, "hash id 0 -> 535 (got %lld)", (long long) pn_slot(&f, 0, 0));
	CHECK(pn_slot(&f, 0, 1) == 465, "hash id 1 -> 465");
	CHECK(pn_slot(&f, 0, -1) == 936, "hash id -1 -> 936");
	CHECK(pn_slot(&f, 0, INT64_MAX) == 39, "hash id INT64_MAX -> 39");
	CHECK(pn_slot(&f, 0, INT64_MIN) >= 0 && pn_slot(&f, 0, INT64_MIN) < 1000, "hash id INT64_MIN in range");
	CHECK(pn_slot(&nh, 0, 7) == 7 && pn_slot(&nh, 0, 8) == -1 && pn_slot(&nh, 0, -1) == -1,
		  "non-hashed field: slot = id, out of range is -1");
}

/* Configuration defaults and rejections */
static void
test_config(void)
{
	PnConfig	c = parse("{\"domains\": 3, \"features\": [{\"name\": \"item\", \"buckets\": 100}]}");
	char	   *js;
	PnConfig	c2;
	PnError		e = {0};

	CHECK(c.emb_dim == 16 && c.nhidden == 2 && c.hidden[0] == 256 && c.hidden[1] == 128 &&
		  c.ntasks == 1 && strcmp(c.tasks[0], "click") == 0 && c.gamma == 2.0f &&
		  c.epnet && c.ppnet && c.pn && c.star && c.aux && c.aux_hidden == 32 &&
		  c.n0 == 16 && c.epnet_hidden == 16 && c.feat[0].hash, "config defaults of docs/model.md");
	js = pn_config_to_json(&c);
	CHECK(js && pn_config_parse(js, strlen(js), 0, &c2, &e) == PN_OK && c2.n0 == c.n0 &&
		  c2.hidden[1] == 128, "canonical config JSON parses back");
	pn_free(js);
	pn_config_free(&c2);
	pn_config_free(&c);

	config_rejects("[1]", PN_ECONFIG, "JSON object");
	config_rejects("{\"domains\": 2, \"domains\": 3, \"features\": []}", PN_ECONFIG, "duplicate key");
	config_rejects("{\"domains\": 2", PN_ECONFIG, "invalid JSON");
	config_rejects("{\"features\": [{\"name\": \"a\", \"buckets\": 10}]}", PN_ECONFIG, "domains");
	config_rejects("{\"domains\": 0, \"features\": [{\"name\": \"a\", \"buckets\": 10}]}", PN_ECONFIG, "out of range");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"hiden\": [4]}", PN_ECONFIG, "unknown key");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 0}]}", PN_ECONFIG, "buckets");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}, {\"name\": \"a\", \"buckets\": 10}]}", PN_ECONFIG, "twice");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"hidden\": []}", PN_ECONFIG, "hidden");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"emb_dim\": 1.5}", PN_ECONFIG, "integer");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"star\": 1}", PN_ECONFIG, "true or false");
	config_rejects("{\"domains\": 2, \"features\": [], \"dense\": 0}", PN_ECONFIG, "no input");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 2000000000}], \"emb_dim\": 1024}", PN_ETOOBIG, "MB");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"hidden\": [65536, 65536, 65536]}", PN_ETOOBIG, "MB");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"tasks\": [\"a\", \"a\"]}", PN_ECONFIG, "twice");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"gamma\": \"x\"}", PN_ECONFIG, "gamma");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"\", \"buckets\": 10}]}", PN_ECONFIG, "63 bytes");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"domain_input\": 1}", PN_ECONFIG, "\"domain_input\" must be true or false");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"domain_input\": \"yes\"}", PN_ECONFIG, "\"domain_input\" must be true or false");

	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"domain_input\": true}", PN_ECONFIG, "\"domain_input\" needs \"pn\": false");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"epnet\": false, \"domain_input\": true}", PN_ECONFIG, "\"domain_input\" needs \"pn\": false");

	/* domain_input: n0 grows by k; the canonical JSON has the key only when it is on */
	c = parse("{\"domains\": 3, \"features\": [{\"name\": \"item\", \"buckets\": 100}], \"dense\": 2, \"emb_dim\": 4, \"pn\": false, \"domain_input\": true}");
	CHECK(c.domain_input && c.n0 == 4 + 2 + 4 && c.epnet_hidden == 10, "domain_input: n0 = F*k + Nd + k");
	js = pn_config_to_json(&c);
	CHECK(js && strstr(js, ", \"domain_input\": true}") != NULL && pn_config_parse(js, strlen(js), 0, &c2, &e) == PN_OK &&
		  c2.domain_input && c2.n0 == c.n0, "domain_input: canonical JSON writes it and parses back (%s)", js ? js : "NULL");
	pn_free(js);
	pn_config_free(&c2);
	pn_config_free(&c);
	c = parse("{\"domains\": 3, \"features\": [{\"name\": \"item\", \"buckets\": 100}], \"dense\": 2, \"emb_dim\": 4, \"domain_input\": false}");
	js = pn_config_to_json(&c);
	CHECK(!c.domain_input && c.n0 == 6 && js && strstr(js, "domain_input") == NULL &&
		  strcmp(js, "{\"inputs\": \"arrays\", \"domains\": 3, \"features\": [{\"name\": \"item\", \"buckets\": 100, \"hash\": true}], "
				 "\"persona\": [], \"dense\": 2, \"emb_dim\": 4, \"tasks\": [\"click\"], \"hidden\": [256, 128], \"gamma\": 2, "
				 "\"epnet\": true, \"epnet_hidden\": 6, \"ppnet\": true, \"pn\": true, \"star\": true, \"aux\": true, "
				 "\"aux_hidden\": 32, \"l2\": 0}") == 0,
		  "domain_input false: the canonical JSON of 0.2 (%s)", js ? js : "NULL");
	pn_free(js);
	pn_config_free(&c);
	c = parse("{\"domains\": 2, \"features\": [], \"emb_dim\": 3, \"pn\": false, \"domain_input\": true}");
	CHECK(c.n0 == 3, "domain_input alone is an input (n0 = k)");
	pn_config_free(&c);
}

/*
 * domain_input: an all-off model scores the same features differently per
 * domain (x0 ends with dv), and without it equally; the scores agree with
 * the engine's and the domain embedding's change moves them.
 */
static void
test_domain_input(void)
{
	const char *cfgs[2] = {
		"{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 1, \"emb_dim\": 4, \"hidden\": [8, 4], "
		"\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false}",
		"{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 1, \"emb_dim\": 4, \"hidden\": [8, 4], "
		"\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false, \"domain_input\": true}"
	};
	int			v;

	for (v = 0; v < 2; v++)
	{
		PnConfig	c = parse(cfgs[v]);
		PnModel    *m;
		PnError		e = {0};
		PnEngine   *eng = NULL;
		int64_t		feat[2] = {17, 42};
		float		dense[2] = {0.5f, -1.0f};
		double		p[3][2],
					q[2];
		int			d;
		bool		differ = false,
					engine_ok = true;

		pn_model_new(&c, &m, &e);
		pn_model_init(m, 3);
		if (pn_engine_new(m, PN_FP32, PN_TILE, NULL, &eng, &e) != PN_OK)
			engine_ok = false;
		for (d = 0; d < 3; d++)
		{
			PnDomainCache *dc;
			PnPersona  *pp;
			PnWork	   *w = pn_work_new(m, 2);

			pn_domain_build(m, d, &dc, &e);
			pn_persona_build(m, NULL, &pp, &e);
			pn_score(m, dc, pp, w, 2, feat, dense, p[d], &e);
			if (engine_ok && (pn_engine_prepare_domain(eng, dc, NULL, &e) != PN_OK ||
							  pn_engine_score(eng, dc, pp, 2, feat, dense, q, NULL, &e) != PN_OK ||
							  fabs(q[0] - p[d][0]) > 1e-6 || fabs(q[1] - p[d][1]) > 1e-6))
				engine_ok = false;
			if (d > 0)
				differ |= p[d][0] != p[0][0] || p[d][1] != p[0][1];
			pn_work_free(w);
			pn_persona_free(pp);
			pn_domain_free(dc);
		}
		CHECK(engine_ok, "domain_input %s: the engine's scores equal pn_score's", v ? "on" : "off");
		CHECK(v ? differ : !differ, "domain_input %s: an all-off model's scores %s across domains (%.6f %.6f %.6f)",
			  v ? "on" : "off", v ? "differ" : "are equal", p[0][0], p[1][0], p[2][0]);
		pn_engine_free(eng);
		pn_model_free(m);
		pn_config_free(&c);
	}
}

/* Text ids and the named form ("inputs": "columns"): config, canonical JSON, missing rows */
static void
test_named(void)
{
	static const char *named = "{\"inputs\": \"columns\", \"domains\": 2, "
		"\"features\": [{\"name\": \"item\", \"buckets\": 50}, {\"name\": \"age\", \"buckets\": 5, \"hash\": false, \"nullable\": false}], "
		"\"persona\": [{\"name\": \"user\", \"buckets\": 9}], \"dense\": [{\"name\": \"price\"}, {\"name\": \"qty\"}], "
		"\"domain_column\": \"scene\", \"emb_dim\": 3, \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4}";
	static const char *arrays = "{\"domains\": 2, "
		"\"features\": [{\"name\": \"item\", \"buckets\": 50}, {\"name\": \"age\", \"buckets\": 5, \"hash\": false}], "
		"\"persona\": [{\"name\": \"user\", \"buckets\": 9}], \"dense\": 2, "
		"\"emb_dim\": 3, \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4}";
	const char *uuid = "123e4567-e89b-12d3-a456-426614174000";
	PnField		f = {.name = "f", .buckets = 1000, .hash = true};
	PnConfig	c,
				c2,
				a;
	PnError		e = {0};
	char	   *js,
			   *js2;
	PnModel    *mn,
			   *ma;
	int			i;

	/* docs/model.md's vectors, which the Python package's pepnet.text_id gives too */
	CHECK(pn_text_id("", 0) == INT64_C(7640891576956012809), "text id '' = 7640891576956012809 (got %lld)", (long long) pn_text_id("", 0));
	CHECK(pn_text_id("a", 1) == INT64_C(-2763434719279598279), "text id 'a' = -2763434719279598279 (got %lld)", (long long) pn_text_id("a", 1));
	CHECK(pn_text_id("z\xc3\xbcrich", 7) == INT64_C(-7350671518096820925), "text id 'zürich' = -7350671518096820925 (got %lld)",
		  (long long) pn_text_id("z\xc3\xbcrich", 7));
	CHECK(pn_text_id(uuid, strlen(uuid)) == INT64_C(8034182327392527262), "text id of a uuid's text = 8034182327392527262 (got %lld)",
		  (long long) pn_text_id(uuid, strlen(uuid)));
	CHECK(pn_field_row(&f, 0, pn_text_id("", 0)) == 746 && pn_field_row(&f, 0, pn_text_id("a", 1)) == 322 &&
		  pn_field_row(&f, 0, pn_text_id("z\xc3\xbcrich", 7)) == 25 && pn_field_row(&f, 0, pn_text_id(uuid, strlen(uuid))) == 335,
		  "text ids' slots in field 0 of 1000 buckets: 746, 322, 25, 335");
	CHECK(pn_text_id("a ", 2) != pn_text_id("a", 1) && pn_text_id("A", 1) != pn_text_id("a", 1), "text is not normalised");

	c = parse(named);
	CHECK(c.inputs == PN_INPUTS_COLUMNS && c.dense == 2 && c.dfield && strcmp(c.dfield[1].name, "qty") == 0 &&
		  strcmp(c.domain_column, "scene") == 0 && c.feat[0].named && c.feat[0].nullable && !c.feat[1].nullable &&
		  c.pers[0].named && c.pers[0].nullable && c.n0 == 2 * 3 + 2, "named config: inputs, dense columns, domain_column, nullable");
	js = pn_config_to_json(&c);
	CHECK(js && strstr(js, "\"inputs\": \"columns\"") && strstr(js, "\"nullable\": false") &&
		  strstr(js, "\"dense\": [{\"name\": \"price\"}, {\"name\": \"qty\"}]") && strstr(js, "\"domain_column\": \"scene\""),
		  "named config's canonical JSON: %s", js ? js : "(null)");
	CHECK(js && pn_config_parse(js, strlen(js), 0, &c2, &e) == PN_OK, "named canonical JSON parses back");
	js2 = pn_config_to_json(&c2);
	CHECK(js2 && strcmp(js, js2) == 0, "named canonical JSON is a fixed point");
	pn_free(js2);
	pn_free(js);
	pn_config_free(&c2);

	a = parse(arrays);
	js = pn_config_to_json(&a);
	CHECK(a.inputs == PN_INPUTS_ARRAYS && !a.feat[0].named && a.dfield == NULL && js &&
		  strstr(js, "\"inputs\": \"arrays\"") && !strstr(js, "nullable") && strstr(js, "\"dense\": 2"),
		  "a config without inputs is the arrays form; its canonical JSON says so: %s", js ? js : "(null)");
	pn_free(js);

	/* tables [buckets + 1, k] in the named form; the first buckets rows are the arrays form's (same seed) */
	CHECK(pn_model_new(&c, &mn, &e) == PN_OK && pn_model_new(&a, &ma, &e) == PN_OK, "models of both forms");
	pn_model_init(mn, 7);
	pn_model_init(ma, 7);
	CHECK(mn->tensors[mn->t_emb_feat[0]].shape[0] == 51 && mn->tensors[mn->t_emb_feat[1]].shape[0] == 6 &&
		  mn->tensors[mn->t_emb_pers[0]].shape[0] == 10 && ma->tensors[ma->t_emb_feat[0]].shape[0] == 50 &&
		  pn_config_numel(&c) == pn_config_numel(&a) + 3 * 3, "named tables have the missing row: [buckets + 1, k]");
	CHECK(memcmp(PN_T(mn, mn->t_emb_feat[0]), PN_T(ma, ma->t_emb_feat[0]), sizeof(float) * 50 * 3) == 0 &&
		  memcmp(PN_T(mn, mn->t_tw_w[0]), PN_T(ma, ma->t_tw_w[0]), sizeof(float) * 6 * 8) == 0,
		  "same seed: the first buckets rows and the other tensors equal the arrays form's");
	CHECK(pn_slot(&mn->cfg.feat[0], 0, 50) == 50 && pn_slot(&mn->cfg.feat[0], 0, 51) == -1 && pn_slot(&mn->cfg.feat[0], 0, -1) == -1,
		  "a named field takes rows 0..buckets (the missing row last)");
	{
		/* named rows (hashed by the glue) score as the arrays form's ids; a NULL id is the missing row */
		int64_t		ids[2] = {12345, 3},
					rows[2],
					pid = -77,
					prow;
		float		dense[2] = {0.5f, -1.0f};
		double		sa[1] = {-1},
					sn[1] = {-2},
					smiss[1] = {-3};
		bool		built;
		PnDomainCache *da,
				   *dn;
		PnPersona  *pa,
				   *pn;
		PnWork	   *wa = pn_work_new(ma, 1),
				   *wn = pn_work_new(mn, 1);

		for (i = 0; i < 2; i++)
			rows[i] = pn_field_row(&c.feat[i], i, ids[i]);
		prow = pn_field_row(&c.pers[0], 0, pid);
		built = pn_domain_build(ma, 1, &da, &e) == PN_OK && pn_domain_build(mn, 1, &dn, &e) == PN_OK &&
			pn_persona_build(ma, &pid, &pa, &e) == PN_OK && pn_persona_build(mn, &prow, &pn, &e) == PN_OK;
		if (!built)
		{
			fprintf(stderr, "domain or persona build failed: %s\n", e.msg);
			exit(2);
		}
		built = pn_score(ma, da, pa, wa, 1, ids, dense, sa, &e) == PN_OK &&
			pn_score(mn, dn, pn, wn, 1, rows, dense, sn, &e) == PN_OK;
		CHECK(built && sa[0] == sn[0], "named rows score bit for bit as the arrays form's ids (%.9g, %.9g)", sa[0], sn[0]);
		rows[0] = PN_MISSING_ROW(&c.feat[0]);
		built = pn_score(mn, dn, pn, wn, 1, rows, dense, smiss, &e) == PN_OK;
		CHECK(built && smiss[0] != sn[0] && smiss[0] > 0 && smiss[0] < 1, "a NULL id scores through the missing row");
		pn_domain_free(da);
		pn_domain_free(dn);
		pn_persona_free(pa);
		pn_persona_free(pn);
		pn_work_free(wa);
		pn_work_free(wn);
	}
	pn_model_free(mn);
	pn_model_free(ma);
	pn_config_free(&a);
	pn_config_free(&c);

	config_rejects("{\"inputs\": \"rows\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}]}", PN_ECONFIG, "\"arrays\" or \"columns\"");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"nullable\": false}]}", PN_ECONFIG, "named form");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\"}]}", PN_ECONFIG, "named form");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"domain_column\": \"d\"}", PN_ECONFIG, "named form");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": 2}", PN_ECONFIG, "{\"name\": column}");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"persona\": [{\"name\": \"a\", \"buckets\": 10}]}", PN_ECONFIG, "twice");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"a\"}]}", PN_ECONFIG, "twice");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"domain\", \"buckets\": 10}]}", PN_ECONFIG, "domain column");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"click\", \"buckets\": 10}]}", PN_ECONFIG, "label column");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"nullable\": 0}]}", PN_ECONFIG, "nullable");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"scale\": 2}]}", PN_ECONFIG, "unknown key");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"domain_column\": \"\"}", PN_ECONFIG, "63 bytes");
	/* dense transforms (named form): parsed, written back only when set, the canonical JSON a fixed point */
	{
		const char *t = "{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], "
			"\"dense\": [{\"name\": \"p\", \"log1p\": true, \"clip\": [-2.5, 1e6], \"normalize\": \"zscore\", \"mean\": 0.1, \"std\": 3}, "
			"{\"name\": \"q\", \"normalize\": \"zscore\"}, {\"name\": \"r\", \"log1p\": false}]}";
		PnConfig	ct,
					ct2;
		PnError		et = {0};
		char	   *js = NULL,
				   *js2 = NULL;

		CHECK(pn_config_parse(t, strlen(t), 0, &ct, &et) == PN_OK, "a named config with dense transforms parses (%s)", et.msg);
		if (et.code == PN_OK)
		{
			CHECK(ct.dfield[0].log1p && ct.dfield[0].clip && ct.dfield[0].clip_lo == -2.5f && ct.dfield[0].clip_hi == 1e6f &&
				  ct.dfield[0].zscore && ct.dfield[0].stats && ct.dfield[0].mean == 0.1f && ct.dfield[0].std == 3.0f &&
				  ct.dfield[1].zscore && !ct.dfield[1].stats && !ct.dfield[2].log1p && !ct.dfield[2].zscore,
				  "dense transforms parsed per field");
			js = pn_config_to_json(&ct);
			CHECK(js && strstr(js, "{\"name\": \"p\", \"log1p\": true, \"clip\": [-2.5, 1e+06], \"normalize\": \"zscore\", "
							   "\"mean\": 0.1, \"std\": 3}, {\"name\": \"q\", \"normalize\": \"zscore\"}, {\"name\": \"r\"}]"),
				  "dense transforms written back when set (%s)", js ? js : "");
			CHECK(js && pn_config_parse(js, strlen(js), 0, &ct2, &et) == PN_OK, "dense transforms' canonical JSON parses back");
			if (et.code == PN_OK)
			{
				js2 = pn_config_to_json(&ct2);
				CHECK(js2 && strcmp(js, js2) == 0, "dense transforms' canonical JSON is a fixed point");
				pn_free(js2);
				pn_config_free(&ct2);
			}
			pn_free(js);
			pn_config_free(&ct);
		}
	}
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"clip\": [1, 1]}]}", PN_ECONFIG, "lo < hi");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"clip\": [0, \"x\"]}]}", PN_ECONFIG, "\"clip\"");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"log1p\": 1}]}", PN_ECONFIG, "\"log1p\"");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"normalize\": \"minmax\"}]}", PN_ECONFIG, "\"zscore\"");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"normalize\": \"zscore\", \"mean\": 1, \"std\": 0}]}", PN_ECONFIG, "std >= 1.17549e-38");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"normalize\": \"zscore\", \"mean\": 1, \"std\": 1e-40}]}", PN_ECONFIG, "a normal float32");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"normalize\": \"zscore\", \"std\": 1}]}", PN_ECONFIG, "both");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10}], \"dense\": [{\"name\": \"p\", \"mean\": 1, \"std\": 1}]}", PN_ECONFIG, "without");
	/* a named field's "id": "integer" or "text", kept by the stored config; named form only */
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"id\": \"int\"}]}", PN_ECONFIG, "\"integer\" or \"text\"");
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"id\": \"text\"}]}", PN_ECONFIG, "named form");
	{
		const char *t = "{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"id\": \"text\"}, "
			"{\"name\": \"b\", \"buckets\": 10}], \"persona\": [{\"name\": \"u\", \"buckets\": 10, \"id\": \"integer\"}], \"dense\": 0}";
		PnConfig	ci;
		PnError		ei = {0};
		char	   *js = NULL;

		CHECK(pn_config_parse(t, strlen(t), 0, &ci, &ei) == PN_OK, "a named config with \"id\" and \"dense\": 0 parses (%s)", ei.msg);
		if (ei.code == PN_OK)
		{
			js = pn_config_to_json(&ci);
			CHECK(ci.feat[0].id == PN_ID_TEXT && ci.feat[1].id == PN_ID_ANY && ci.pers[0].id == PN_ID_INTEGER && ci.dense == 0,
				  "\"id\" parsed per field, absent = not fixed; \"dense\": 0 is no dense field");
			CHECK(js && strstr(js, "\"name\": \"a\", \"buckets\": 10, \"hash\": true, \"nullable\": true, \"id\": \"text\"}") &&
				  strstr(js, "\"name\": \"b\", \"buckets\": 10, \"hash\": true, \"nullable\": true}") &&
				  strstr(js, "\"id\": \"integer\"") && strstr(js, "\"dense\": []"), "the stored config keeps \"id\" (%s)", js ? js : "");
			pn_free(js);
			pn_config_free(&ci);
		}
	}
}

/* Random weights everywhere, domain weights around 1, PN statistics non-trivial */
static void
randomize(PnModel *m, unsigned seed)
{
	int			i;
	int64_t		j;

	srand(seed);
	for (i = 0; i < m->ntensors; i++)
	{
		PnTensor   *t = &m->tensors[i];
		float	   *p = PN_T(m, i);

		for (j = 0; j < t->numel; j++)
		{
			float		u = (float) rand() / RAND_MAX * 2 - 1;

			if (strstr(t->name, "domain_w") || strstr(t->name, "gamma"))
				p[j] = 1.0f + 0.3f * u;
			else if (strstr(t->name, "running_var"))
				p[j] = 1.0f + 0.5f * u;
			else if (t->kind == PNT_WEIGHT)
				p[j] = u / sqrtf((float) t->shape[1]) * 1.5f;
			else
				p[j] = 0.3f * u;
		}
	}
}

/* Fused vectorized scoring equals the unfused double reference */
static void
test_score_vs_ref(const char *json, const char *label)
{
	PnConfig	c = parse(json);
	PnModel    *m;
	PnError		e = {0};
	int			n = 37,
				d,
				i,
				t;

	if (pn_model_new(&c, &m, &e) != PN_OK)
	{
		CHECK(0, "model_new %s: %s", label, e.msg);
		return;
	}
	randomize(m, 7);
	for (d = 0; d < c.domains; d++)
	{
		PnDomainCache *dc;
		PnPersona  *pp;
		PnWork	   *w = pn_work_new(m, 64);
		int64_t    *feat = malloc(sizeof(int64_t) * n * (c.nfeat + 1));
		int64_t		pers[8];
		float	   *dense = malloc(sizeof(float) * n * (c.dense + 1));
		double	   *out = malloc(sizeof(double) * n * c.ntasks);
		double		maxerr = 0;
		int			rc;

		for (i = 0; i < c.npers; i++)
			pers[i] = c.pers[i].hash ? (int64_t) rand() * 7919 - 5 : rand() % c.pers[i].buckets;
		for (i = 0; i < n * c.nfeat; i++)
			feat[i] = c.feat[i % c.nfeat].hash ? ((int64_t) rand() << 33) ^ rand() : rand() % c.feat[i % c.nfeat].buckets;
		for (i = 0; i < n * c.dense; i++)
			dense[i] = (float) rand() / RAND_MAX * 4 - 2;
		rc = pn_domain_build(m, d, &dc, &e);
		rc = rc ? rc : pn_persona_build(m, pers, &pp, &e);
		rc = rc ? rc : pn_score(m, dc, pp, w, n, feat, dense, out, &e);
		if (rc != PN_OK)
		{
			CHECK(0, "score %s domain %d: %s", label, d, e.msg);
			continue;
		}
		for (i = 0; i < n; i++)
		{
			double		lg[PN_MAX_TASKS];

			pn_forward_ref(m, d, pers, feat + (size_t) i * c.nfeat, dense + (size_t) i * c.dense, lg, &e);
			for (t = 0; t < c.ntasks; t++)
			{
				double		p = 1.0 / (1.0 + exp(-lg[t]));

				if (fabs(p - out[i * c.ntasks + t]) > maxerr)
					maxerr = fabs(p - out[i * c.ntasks + t]);
			}
		}
		CHECK(maxerr < 2e-5, "fused score = reference, %s, domain %d (max |dp| %.2e)", label, d, maxerr);
		/* one candidate at a time gives the same as the block */
		{
			double		one[PN_MAX_TASKS];

			pn_score(m, dc, pp, w, 1, feat + (size_t) 5 * c.nfeat, dense + (size_t) 5 * c.dense, one, &e);
			CHECK(fabs(one[0] - out[5 * c.ntasks]) < 1e-6, "single candidate = block row, %s, domain %d", label, d);
		}
		/* the batched engine (oneDNN tiles): = reference; ties bit-identical; bf16 close */
		{
			int			prec;

			for (prec = PN_FP32; prec <= PN_BF16; prec++)
			{
				PnEngine   *eng;
				double	   *eo = malloc(sizeof(double) * n * c.ntasks);
				double	   *dup = malloc(sizeof(double) * n * c.ntasks);
				int64_t    *feat5 = malloc(sizeof(int64_t) * n * (c.nfeat + 1));
				float	   *dense5 = malloc(sizeof(float) * n * (c.dense + 1));
				double		err = 0;
				int			ties = 1,
							j;

				if (prec == PN_BF16 && !pn_engine_bf16_supported())
				{
					CHECK(pn_engine_new(m, prec, PN_TILE, NULL, &eng, &e) == PN_EUNSUPPORTED, "bf16 refused without bf16 instructions");
					free(eo), free(dup), free(feat5), free(dense5);
					continue;
				}
				rc = pn_engine_new(m, prec, PN_TILE, NULL, &eng, &e);
				rc = rc ? rc : pn_engine_prepare_domain(eng, dc, NULL, &e);
				rc = rc ? rc : pn_engine_score(eng, dc, pp, n, feat, dense, eo, NULL, &e);
				for (i = 0; i < n; i++)
				{
					memcpy(feat5 + (size_t) i * c.nfeat, feat + (size_t) 5 * c.nfeat, sizeof(int64_t) * c.nfeat);
					memcpy(dense5 + (size_t) i * c.dense, dense + (size_t) 5 * c.dense, sizeof(float) * c.dense);
				}
				rc = rc ? rc : pn_engine_score(eng, dc, pp, n, feat5, dense5, dup, NULL, &e);
				CHECK(rc == PN_OK, "engine %s %s domain %d: %s", prec ? "bf16" : "fp32", label, d, rc ? e.msg : "ok");
				if (rc == PN_OK)
				{
					for (i = 0; i < n * c.ntasks; i++)
						if (fabs(eo[i] - out[i]) > err)
							err = fabs(eo[i] - out[i]);
					for (i = 0; i < n; i++)
						for (j = 0; j < c.ntasks; j++)
							ties &= dup[i * c.ntasks + j] == eo[5 * c.ntasks + j];
					CHECK(err < (prec ? 5e-3 : 2e-5), "engine %s = fused GEMV/GEMM path, %s, domain %d (max |dp| %.2e)",
						  prec ? "bf16" : "fp32", label, d, err);
					CHECK(ties, "engine %s: %d copies of one candidate, bit-identical to it at position 6 of another request, %s, domain %d",
						  prec ? "bf16" : "fp32", n, label, d);
				}
				pn_engine_free(eng);
				free(eo), free(dup), free(feat5), free(dense5);
			}
		}
		pn_domain_free(dc);
		pn_persona_free(pp);
		pn_work_free(w);
		free(feat);
		free(dense);
		free(out);
	}
	pn_model_free(m);
	pn_config_free(&c);
}


/* xorshift floats in [-1, 1) for the row tests */
static uint64_t rows_rs = 88172645463325252ULL;
static float
rows_rand(void)
{
	rows_rs ^= rows_rs << 13;
	rows_rs ^= rows_rs >> 7;
	rows_rs ^= rows_rs << 17;
	return (float) ((double) (rows_rs >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/*
 * Row-wise bit identity of the matmuls of the engine's fallback: a row of
 * C [M, N] += A [M, K] W [N, K]^T computed by pn_gemm_rows in calls of
 * M = 1..64 rows, at every position, is bit-identical to that row alone,
 * for pepnet's shapes (K up to 1300, N up to 1280, tails of K mod 8 and
 * odd N).  OpenBLAS's sgemm of the same operands (row-major, W
 * transposed) is measured too and reported, not checked: with 0.3.21's
 * Zen/Haswell kernels it is not row-wise stable (a row's sum order depends
 * on M and on its place in the block), which is why the fallback does not
 * use it (engine.c).
 */
static void
test_rowwise_gemm(void)
{
	static const int shapes[][2] = {{1300, 1280}, {1288, 128}, {128, 512}, {512, 512}, {256, 128},
	{1288, 16}, {16, 1288}, {53, 37}, {37, 5}, {130, 3}, {7, 2}, {128, 1}};
	int			s;
	/* PN_TEST_QUICK (set by test/t/003_memory.pl under valgrind): the small shapes only */
	bool		quick = getenv("PN_TEST_QUICK") != NULL;

	openblas_set_num_threads(1);
	for (s = 0; s < (int) (sizeof(shapes) / sizeof(shapes[0])); s++)
	{
		int			K = shapes[s][0],
					N = shapes[s][1],
					big = (size_t) K * N > 100000,
					M,
					r,
					i,
					bad = 0,
					bad_blas = 0,
					rows = 0;
		float	   *W = malloc(sizeof(float) * (size_t) N * K),
				   *A = malloc(sizeof(float) * (size_t) 64 * K),
				   *bias = malloc(sizeof(float) * N),
				   *ref = malloc(sizeof(float) * (size_t) 64 * N),
				   *refb = malloc(sizeof(float) * (size_t) 64 * N),
				   *C = malloc(sizeof(float) * (size_t) 64 * N),
				   *Cb = malloc(sizeof(float) * (size_t) 64 * N);

		if (quick && big)
		{
			free(W), free(A), free(bias), free(ref), free(refb), free(C), free(Cb);
			continue;
		}

		for (i = 0; i < N * K; i++)
			W[i] = rows_rand();
		for (i = 0; i < 64 * K; i++)
			A[i] = rows_rand();
		for (i = 0; i < N; i++)
			bias[i] = rows_rand();
		/* each of 64 rows alone (M = 1) */
		for (r = 0; r < 64; r++)
		{
			memcpy(ref + (size_t) r * N, bias, sizeof(float) * N);
			memcpy(refb + (size_t) r * N, bias, sizeof(float) * N);
			pn_gemm_rows(1, N, K, A + (size_t) r * K, K, W, K, ref + (size_t) r * N, N);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, N, K, 1.0f, A + (size_t) r * K, K, W, K,
						1.0f, refb + (size_t) r * N, N);
		}
		/* blocks of M rows starting at row `first`: row first + p sits at position p */
		for (M = 1; M <= 64; M++)
		{
			int			first = (M * 7) % (65 - M);

			if (big && M > 4 && M % 4 != 0 && M % 16 != 1 && M % 16 != 14 && M != 63)
				continue;
			for (r = 0; r < M; r++)
			{
				memcpy(C + (size_t) r * N, bias, sizeof(float) * N);
				memcpy(Cb + (size_t) r * N, bias, sizeof(float) * N);
			}
			pn_gemm_rows(M, N, K, A + (size_t) first * K, K, W, K, C, N);
			cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A + (size_t) first * K, K, W, K,
						1.0f, Cb, N);
			for (r = 0; r < M; r++)
			{
				bad += memcmp(C + (size_t) r * N, ref + (size_t) (first + r) * N, sizeof(float) * N) != 0;
				bad_blas += memcmp(Cb + (size_t) r * N, refb + (size_t) (first + r) * N, sizeof(float) * N) != 0;
				rows++;
			}
		}
		/* and the same rows agree with OpenBLAS to float rounding */
		{
			double		maxd = 0;

			for (i = 0; i < 64 * N; i++)
				if (fabs((double) ref[i] - refb[i]) > maxd)
					maxd = fabs((double) ref[i] - refb[i]);
			CHECK(maxd < 1e-4 * sqrt((double) K), "pn_gemm_rows = OpenBLAS sgemm to float rounding, K %d N %d (max |d| %.2e)",
				  K, N, maxd);
		}
		CHECK(bad == 0, "pn_gemm_rows (%s): K %d N %d, %d rows in calls of M = 1..64 at every position: %d differ from the row alone",
			  pn_gemm_rows_avx2() ? "AVX2" : "portable", K, N, rows, bad);
		printf("# OpenBLAS sgemm, K %d N %d: %d of %d rows differ from the row alone (M = 1)\n", K, N, bad_blas, rows);
		free(W), free(A), free(bias), free(ref), free(refb), free(C), free(Cb);
	}
}

/* the panel kernel's element in its documented order: bias, then chunks of 64 fused multiply-adds */
static float
panels_ref(const float *a, const float *w, int ldw, int K, float bias, int epi, float gamma, float x)
{
	float		t = bias;
	int			kc,
				k;

	for (kc = 0; kc < K; kc += 64)
	{
		float		s = 0.0f;

		for (k = kc; k < K && k < kc + 64; k++)
			s = fmaf(a[k], w[(size_t) k * ldw], s);
		t = t + s;
	}
	if (epi == PN_EPI_RELU)
		return t > 0.0f ? t : 0.0f;
	if (epi == PN_EPI_GATE)
	{
		t = t < -87.0f ? -87.0f : (t > 87.0f ? 87.0f : t);
		return gamma / (1.0f + pn_expf(-t)) * x;
	}
	return t;
}

/*
 * The fallback's packed matmul (pn_gemm_panels over pn_panels_pack):
 * (1) each row of a call of M = 1..64 rows, at every position, is
 * bit-identical to the row alone (M = 1), for every post-op; (2) the
 * merged form (two matrices' rows concatenated, one pass over the input,
 * as the engine merges EPNet + aux layer 1 and the towers' + the gates'
 * layer 1) is bit-identical to the two matmuls apart: each element's sum
 * is the same chain; (3) relu and no post-op are bit-identical to the
 * documented order computed with fmaf (the gate to 1e-6: the scalar
 * sigmoid may be contracted differently by the compiler); (4) against
 * pn_gemm_rows (eight partial sums per element, another order) to 1e-6
 * relative to the sum of |terms|.
 */
static void
test_panels_gemm(void)
{
	static const int shapes[][2] = {{128, 1280}, {512, 512}, {256, 128}, {128, 96}, {53, 37}, {37, 5}, {130, 3},
	{7, 2}, {128, 1}, {1288, 16}, {64, 17}, {65, 33}};
	int			s;
	bool		quick = getenv("PN_TEST_QUICK") != NULL;

	for (s = 0; s < (int) (sizeof(shapes) / sizeof(shapes[0])); s++)
	{
		int			K = shapes[s][0],
					N = shapes[s][1],
					N1 = N / 3,
					epi,
					M,
					r,
					j,
					i,
					rows = 0,
					bad = 0,
					bad_merge = 0,
					bad_ref = 0;
		double		maxd_gate = 0,
					maxd_rows = 0;
		float	   *W = malloc(sizeof(float) * (size_t) N * K),
				   *A = malloc(sizeof(float) * (size_t) 64 * K),
				   *X = malloc(sizeof(float) * (size_t) 64 * N),
				   *bias = malloc(sizeof(float) * N),
				   *ref = malloc(sizeof(float) * (size_t) 64 * N),
				   *C = malloc(sizeof(float) * (size_t) 64 * N),
				   *C2 = malloc(sizeof(float) * (size_t) 64 * N),
				   *Wp = aligned_alloc(64, sizeof(float) * (pn_panels_floats(N, K) + 16)),
				   *Wp1 = aligned_alloc(64, sizeof(float) * (pn_panels_floats(N1 > 0 ? N1 : 1, K) + 16)),
				   *Wp2 = aligned_alloc(64, sizeof(float) * (pn_panels_floats(N - N1, K) + 16));

		if (quick && (size_t) K * N > 100000)
		{
			free(W), free(A), free(X), free(bias), free(ref), free(C), free(C2), free(Wp), free(Wp1), free(Wp2);
			continue;
		}
		for (i = 0; i < N * K; i++)
			W[i] = rows_rand();
		for (i = 0; i < 64 * K; i++)
			A[i] = rows_rand();
		for (i = 0; i < 64 * N; i++)
			X[i] = rows_rand();
		for (i = 0; i < N; i++)
			bias[i] = rows_rand();
		pn_panels_pack(N, K, W, K, Wp);
		if (N1 > 0)
			pn_panels_pack(N1, K, W, K, Wp1);
		pn_panels_pack(N - N1, K, W + (size_t) N1 * K, K, Wp2);
		for (epi = PN_EPI_NONE; epi <= PN_EPI_GATE; epi++)
		{
			const float *x = epi == PN_EPI_GATE ? X : NULL;

			/* each row alone; against the documented order */
			for (r = 0; r < 64; r++)
			{
				pn_gemm_panels(1, N, K, A + (size_t) r * K, K, Wp, bias, ref + (size_t) r * N, N, epi, 0.9f,
							   x ? x + (size_t) r * N : NULL, N);
				for (j = 0; j < N; j++)
				{
					float		e = panels_ref(A + (size_t) r * K, W + (size_t) j * K, 1, K, bias[j], epi, 0.9f,
											   x ? x[(size_t) r * N + j] : 0.0f);

					if (epi == PN_EPI_GATE)
						maxd_gate = fmax(maxd_gate, fabs((double) e - ref[(size_t) r * N + j]));
					else
						bad_ref += memcmp(&e, &ref[(size_t) r * N + j], sizeof(float)) != 0;
				}
			}
			for (M = 1; M <= 64; M++)
			{
				int			first = (M * 7) % (65 - M);

				/* large shapes, and every shape under valgrind (PN_TEST_QUICK): a sample of M */
				if (((size_t) K * N > 100000 || quick) && M > 8 && M % 6 != 0 && M % 16 != 1 && M != 63)
					continue;
				/* the gate multiply in place (C is X), as the engine runs it */
				if (x)
					memcpy(C, X + (size_t) first * N, sizeof(float) * (size_t) M * N);
				pn_gemm_panels(M, N, K, A + (size_t) first * K, K, Wp, bias, C, N, epi, 0.9f, x ? C : NULL, N);
				/* merged = apart: the first N1 output columns, then the rest, into C2 */
				if (x)
					memcpy(C2, X + (size_t) first * N, sizeof(float) * (size_t) M * N);
				if (N1 > 0)
					pn_gemm_panels(M, N1, K, A + (size_t) first * K, K, Wp1, bias, C2, N, epi, 0.9f, x ? C2 : NULL, N);
				pn_gemm_panels(M, N - N1, K, A + (size_t) first * K, K, Wp2, bias + N1, C2 + N1, N, epi, 0.9f,
							   x ? C2 + N1 : NULL, N);
				for (r = 0; r < M; r++)
				{
					bad += memcmp(C + (size_t) r * N, ref + (size_t) (first + r) * N, sizeof(float) * N) != 0;
					bad_merge += memcmp(C + (size_t) r * N, C2 + (size_t) r * N, sizeof(float) * N) != 0;
					rows++;
				}
			}
		}
		/* against pn_gemm_rows's order (no post-op): float rounding of sums of K terms */
		for (r = 0; r < 64; r++)
		{
			float		row[1280];
			const float *a = A + (size_t) r * K;

			memcpy(row, bias, sizeof(float) * N);
			pn_gemm_rows(1, N, K, a, K, W, K, row, N);
			pn_gemm_panels(1, N, K, a, K, Wp, bias, C, N, PN_EPI_NONE, 0, NULL, 0);
			for (j = 0; j < N; j++)
			{
				double		mag = fabs(bias[j]);

				for (i = 0; i < K; i++)
					mag += fabs((double) a[i] * W[(size_t) j * K + i]);
				maxd_rows = fmax(maxd_rows, fabs((double) row[j] - C[j]) / mag);
			}
		}
		CHECK(bad == 0 && bad_merge == 0,
			  "pn_gemm_panels (%s): K %d N %d, %d rows in calls of M = 1..64 at every position, 3 post-ops: "
			  "%d differ from the row alone, %d from the merged matrix's two parts apart",
			  pn_gemm_rows_avx2() ? "AVX2" : "portable", K, N, rows, bad, bad_merge);
		CHECK(bad_ref == 0 && maxd_gate < 1e-6,
			  "pn_gemm_panels K %d N %d = its documented order (fmaf chains of 64, then the bias-first sum): "
			  "%d of %d relu/none elements differ, gate max |d| %.2e", K, N, bad_ref, 128 * N, maxd_gate);
		CHECK(maxd_rows < 1e-6, "pn_gemm_panels K %d N %d = pn_gemm_rows to float rounding (max |d| / sum |terms| %.2e)",
			  K, N, maxd_rows);
		free(W), free(A), free(X), free(bias), free(ref), free(C), free(C2), free(Wp), free(Wp1), free(Wp2);
	}
}

/*
 * Small requests on the engine: every request of N = 1..33 candidates
 * (random ones, plus a probe at every position) scores each candidate
 * within 1e-6 of pn_score one at a time (pepnet_predict's GEMVs: another
 * summation order), and the probe bit-identical to the probe alone (N = 1).
 */
static void
test_engine_small(const char *json, const char *label)
{
	PnConfig	c = parse(json);
	PnModel    *m;
	PnError		e = {0};
	PnDomainCache *dc;
	PnPersona  *pp;
	PnEngine   *eng;
	PnWork	   *w1;
	int64_t		pers[PN_MAX_FIELDS];
	int			F,
				Nd,
				T,
				n,
				pos,
				i,
				t,
				ties = 1,
				calls = 0,
				rc;
	int64_t    *feat;
	float	   *dense;
	double		out[34 * PN_MAX_TASKS],
				alone[PN_MAX_TASKS],
				maxd = 0;

	if (pn_model_new(&c, &m, &e) != PN_OK)
	{
		CHECK(0, "model_new %s: %s", label, e.msg);
		return;
	}
	randomize(m, 13);
	F = c.nfeat;
	Nd = c.dense;
	T = c.ntasks;
	srand(9);
	for (i = 0; i < c.npers; i++)
		pers[i] = c.pers[i].hash ? (int64_t) rand() * 7919 : rand() % c.pers[i].buckets;
	feat = malloc(sizeof(int64_t) * 35 * (F + 1));
	dense = malloc(sizeof(float) * 35 * (Nd + 1));
	rc = pn_domain_build(m, 0, &dc, &e);
	rc = rc ? rc : pn_persona_build(m, pers, &pp, &e);
	rc = rc ? rc : pn_engine_new(m, PN_FP32, PN_TILE, NULL, &eng, &e);
	rc = rc ? rc : pn_engine_prepare_domain(eng, dc, NULL, &e);
	w1 = pn_work_new(m, 1);
	if (rc != PN_OK || !w1)
	{
		CHECK(0, "engine %s: %s", label, e.msg);
		return;
	}
	/* the probe: row 34, scored alone */
	for (i = 0; i < F; i++)
		feat[(size_t) 34 * F + i] = c.feat[i].hash ? ((int64_t) rand() << 33) ^ rand() : rand() % c.feat[i].buckets;
	for (i = 0; i < Nd; i++)
		dense[(size_t) 34 * Nd + i] = (float) rand() / RAND_MAX * 4 - 2;
	rc = pn_engine_score(eng, dc, pp, 1, feat + (size_t) 34 * F, Nd ? dense + (size_t) 34 * Nd : NULL, alone, NULL, &e);
	for (n = 1; n <= 33 && rc == PN_OK; n++)
		for (pos = 0; pos < n; pos += (n > 8 ? 3 : 1))
		{
			/* under valgrind (PN_TEST_QUICK): N = 1..8, 13, 17, 33, the probe first, middle or last */
			if (getenv("PN_TEST_QUICK") && ((n > 8 && n != 13 && n != 17 && n != 33) ||
											(pos != 0 && pos != n / 2 && pos != n - 1)))
				continue;
			for (i = 0; i < n * F; i++)
				feat[i] = c.feat[i % F].hash ? ((int64_t) rand() << 33) ^ rand() : rand() % c.feat[i % F].buckets;
			for (i = 0; i < n * Nd; i++)
				dense[i] = (float) rand() / RAND_MAX * 4 - 2;
			memcpy(feat + (size_t) pos * F, feat + (size_t) 34 * F, sizeof(int64_t) * F);
			memcpy(dense + (size_t) pos * Nd, dense + (size_t) 34 * Nd, sizeof(float) * Nd);
			if ((rc = pn_engine_score(eng, dc, pp, n, feat, Nd ? dense : NULL, out, NULL, &e)) != PN_OK)
				break;
			calls++;
			for (t = 0; t < T; t++)
				ties &= memcmp(&alone[t], &out[(size_t) pos * T + t], sizeof(double)) == 0;
			for (i = 0; i < n; i++)
			{
				double		one[PN_MAX_TASKS];

				if ((rc = pn_score(m, dc, pp, w1, 1, feat + (size_t) i * F, Nd ? dense + (size_t) i * Nd : NULL, one, &e)) != PN_OK)
					break;
				for (t = 0; t < T; t++)
					maxd = fmax(maxd, fabs(one[t] - out[(size_t) i * T + t]));
			}
		}
	CHECK(rc == PN_OK, "engine small requests (%s): %s", label, rc == PN_OK ? "ok" : e.msg);
	CHECK(ties, "engine small requests (%s): a candidate placed in %d requests of 1..33 candidates (%s) is bit-identical to it alone",
		  label, calls, getenv("PN_TEST_QUICK") ? "a sample of sizes and positions" : "every position up to 8, every third beyond");
	CHECK(maxd < 1e-6, "engine small requests (%s): every score of requests of 1..33 = pn_score one at a time (pepnet_predict) within 1e-6 (max |dp| %.2e)",
		  label, maxd);
	pn_engine_free(eng);
	pn_work_free(w1);
	pn_domain_free(dc);
	pn_persona_free(pp);
	free(feat), free(dense);
	pn_model_free(m);
	pn_config_free(&c);
}

/*
 * The batched engine where it runs here (the fallback on CPUs without
 * oneDNN brgemm, else the oneDNN tiles): one candidate at positions 0, 15,
 * 16, 17, 63, 64, 999 of requests of 1, 16, 17 and 1000 candidates (the
 * others random) has bit-identical scores everywhere, and every score
 * agrees with pn_score one row at a time (pepnet_predict) within 1e-6.
 */
static void
test_engine_positions(const char *json, const char *label)
{
	PnConfig	c = parse(json);
	PnModel    *m;
	PnError		e = {0};
	PnDomainCache *dc;
	PnPersona  *pp;
	PnEngine   *eng;
	PnWork	   *w1;
	int64_t		pers[PN_MAX_FIELDS];
	int			sizes[] = {1, 16, 17, 1000},
				positions[] = {0, 15, 16, 17, 63, 64, 999},
				F,
				Nd,
				T,
				si,
				pi,
				i,
				t,
				placed = 0,
				ties = 1,
				rc;
	int64_t    *feat;
	float	   *dense;
	double	   *out,
				probe[PN_MAX_TASKS],
				maxd = 0;
	bool		have = false;

	if (pn_model_new(&c, &m, &e) != PN_OK)
	{
		CHECK(0, "model_new %s: %s", label, e.msg);
		return;
	}
	randomize(m, 11);
	F = c.nfeat;
	Nd = c.dense;
	T = c.ntasks;
	srand(5);
	for (i = 0; i < c.npers; i++)
		pers[i] = c.pers[i].hash ? (int64_t) rand() * 7919 : rand() % c.pers[i].buckets;
	feat = malloc(sizeof(int64_t) * 1001 * (F + 1));
	dense = malloc(sizeof(float) * 1001 * (Nd + 1));
	out = malloc(sizeof(double) * 1000 * T);
	rc = pn_domain_build(m, 1, &dc, &e);
	rc = rc ? rc : pn_persona_build(m, pers, &pp, &e);
	rc = rc ? rc : pn_engine_new(m, PN_FP32, PN_TILE, NULL, &eng, &e);
	rc = rc ? rc : pn_engine_prepare_domain(eng, dc, NULL, &e);
	w1 = pn_work_new(m, 1);
	if (rc != PN_OK || !w1)
	{
		CHECK(0, "engine %s: %s", label, e.msg);
		return;
	}
	/* the probe candidate: row 1000 */
	for (i = 0; i < F; i++)
		feat[(size_t) 1000 * F + i] = c.feat[i].hash ? ((int64_t) rand() << 33) ^ rand() : rand() % c.feat[i].buckets;
	for (i = 0; i < Nd; i++)
		dense[(size_t) 1000 * Nd + i] = (float) rand() / RAND_MAX * 4 - 2;
	for (si = 0; si < 4; si++)
		for (pi = 0; pi < 7; pi++)
		{
			int			n = sizes[si],
						pos = positions[pi];

			if (pos >= n)
				continue;
			for (i = 0; i < n * F; i++)
				feat[i] = c.feat[i % F].hash ? ((int64_t) rand() << 33) ^ rand() : rand() % c.feat[i % F].buckets;
			for (i = 0; i < n * Nd; i++)
				dense[i] = (float) rand() / RAND_MAX * 4 - 2;
			memcpy(feat + (size_t) pos * F, feat + (size_t) 1000 * F, sizeof(int64_t) * F);
			memcpy(dense + (size_t) pos * Nd, dense + (size_t) 1000 * Nd, sizeof(float) * Nd);
			if (pn_engine_score(eng, dc, pp, n, feat, Nd ? dense : NULL, out, NULL, &e) != PN_OK)
			{
				CHECK(0, "engine score %s: %s", label, e.msg);
				continue;
			}
			placed++;
			for (t = 0; t < T; t++)
			{
				if (!have)
					probe[t] = out[(size_t) pos * T + t];
				else
					ties &= memcmp(&probe[t], &out[(size_t) pos * T + t], sizeof(double)) == 0;
			}
			have = true;
			/* every row against pn_score alone (pepnet_predict's GEMVs), in the request of 1000 */
			if (n == 1000 && pos == 999)
				for (i = 0; i < n; i++)
				{
					double		one[PN_MAX_TASKS];

					if (pn_score(m, dc, pp, w1, 1, feat + (size_t) i * F, Nd ? dense + (size_t) i * Nd : NULL, one, &e) != PN_OK)
						continue;
					for (t = 0; t < T; t++)
						if (fabs(one[t] - out[(size_t) i * T + t]) > maxd)
							maxd = fabs(one[t] - out[(size_t) i * T + t]);
				}
		}
	CHECK(placed == 13 && ties, "engine %s (%s): one candidate at positions 0, 15, 16, 17, 63, 64, 999 of requests of 1, 16, 17, 1000: bit-identical in all %d",
		  pn_engine_onednn(eng) ? "oneDNN tiles" : "fallback", label, placed);
	CHECK(maxd < 1e-6, "engine %s (%s): 1000 scores = pn_score one row at a time within 1e-6 (max |dp| %.2e)",
		  pn_engine_onednn(eng) ? "oneDNN tiles" : "fallback", label, maxd);
	pn_engine_free(eng);
	pn_work_free(w1);
	pn_domain_free(dc);
	pn_persona_free(pp);
	free(feat), free(dense), free(out);
	pn_model_free(m);
	pn_config_free(&c);
}

/* ---- int8 scoring (quant.c) ---- */

/*
 * int8's int32 sums are exact up to PN_Q8_MAX_K inputs per matmul: an engine
 * of a model with a wider int8 matmul (EPNet's layer 2 on epnet_hidden, EPNet's
 * layer 1 on n0) is refused with PN_ETOOBIG naming the layer; fp32 takes it
 */
static void
test_int8_widths(void)
{
	static const char *const cfgs[3] = {
		"{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 1}], \"emb_dim\": 1, \"hidden\": [1], "
		"\"epnet_hidden\": 65537, \"ppnet\": false, \"pn\": false, \"aux\": false, \"star\": false}",
		"{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 1}], \"dense\": 65536, \"emb_dim\": 1, \"hidden\": [1], "
		"\"epnet_hidden\": 1, \"ppnet\": false, \"pn\": false, \"aux\": false, \"star\": false}",
		"{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 1}], \"emb_dim\": 1, \"hidden\": [1], "
		"\"epnet_hidden\": 65536, \"ppnet\": false, \"pn\": false, \"aux\": false, \"star\": false}"};
	static const char *const layer[2] = {"EPNet's layer 2 of this model has 65537", "EPNet's layer 1 of this model has 65537"};
	int			i;

	for (i = 0; i < 3; i++)
	{
		PnConfig	c = parse(cfgs[i]);
		PnModel    *m = NULL;
		PnEngine   *eng = NULL;
		PnError		e = {0};
		int			rc;

		pn_model_new(&c, &m, &e);
		pn_model_init(m, 1);
		rc = pn_engine_new(m, PN_INT8, PN_TILE, NULL, &eng, &e);
		if (i < 2)
			CHECK(rc == PN_ETOOBIG && strstr(e.msg, layer[i]) != NULL, "int8 refuses a matmul of 65,537 inputs: %s", e.msg);
		else
			CHECK(rc == PN_OK, "int8 takes a matmul of 65,536 inputs: %s", rc ? e.msg : "ok");
		pn_engine_free(eng);
		eng = NULL;
		CHECK(pn_engine_new(m, PN_FP32, PN_TILE, NULL, &eng, &e) == PN_OK, "fp32 takes it (%d)", i);
		pn_engine_free(eng);
		pn_model_free(m);
		pn_config_free(&c);
	}
}

/* docs/model.md "int8 scoring", written out: the scale and values of one row, s8 or u8 */
static float
q8_direct_row(const float *x, int K, bool u8, int *q)
{
	float		amax = 0.0f,
				qmax = u8 ? 255.0f : 127.0f,
				qmin = u8 ? 0.0f : -127.0f,
				inv;
	int			k;

	for (k = 0; k < K; k++)
		amax = fmaxf(amax, fabsf(x[k]));
	inv = qmax / amax;
	if (amax == 0.0f || isinf(inv))
	{
		for (k = 0; k < K; k++)
			q[k] = 0;
		return 0.0f;
	}
	for (k = 0; k < K; k++)
	{
		float		r = rintf(x[k] * inv);

		q[k] = r > qmax ? (int) qmax : r < qmin ? (int) qmin : (int) r;
	}
	return amax / qmax;
}

/*
 * The quantizers: the rounding of ties (to even), a row's scale, zero and
 * tiny rows, the int8 form (oneDNN's) equal to the int16 lanes (the
 * fallback's), the portable code equal to AVX2 on rows of every length
 */
static void
test_int8_quantizer(void)
{
	float		ties[8] = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -2.5f, 63.5f, -126.5f},
				uties[8] = {255.0f, 0.5f, 1.5f, 254.5f, -0.5f, -3.0f, 63.5f, 127.5f};
	int			expect[8] = {127, 0, 2, 2, 0, -2, 64, -126},
				uexpect[8] = {255, 0, 2, 254, 0, 0, 64, 128};
	int16_t		q16[2 * 80],
				p16[2 * 80];
	int8_t		q8[80];
	int			u8;
	float		s,
				s2,
				x[80],
				zero[17] = {0},
				tiny[5] = {1e-38f, -2e-38f, 0, 0, 1e-39f};
	int			ok = 1,
				okp = 1,
				ok8 = 1,
				i,
				K,
				rep;

	pn_q8_rows16(1, 8, ties, 8, false, q16, &s);
	for (i = 0; i < 8; i++)
		ok &= q16[i] == expect[i];
	for (i = 8; i < 16; i++)
		ok &= q16[i] == 0;
	CHECK(ok && s == 1.0f, "int8: halves round to even (0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -2.5 -> -2, 63.5 -> 64), scale = amax / 127 = %g, padding 0", s);
	for (u8 = 0; u8 < 2; u8++)
	{
		pn_q8_portable = u8;
		pn_q8_rows16(1, 8, uties, 8, true, q16, &s);
		pn_q8_portable = false;
		ok = s == 1.0f;
		for (i = 0; i < 8; i++)
			ok &= q16[i] == uexpect[i];
		for (i = 8; i < 16; i++)
			ok &= q16[i] == 0;
		CHECK(ok, "int8 u8 (%s): halves round to even (0.5 -> 0, 1.5 -> 2, 254.5 -> 254, 127.5 -> 128), negatives clamp to 0, scale = amax / 255 = %g, padding 0",
			  u8 ? "portable" : "AVX2 or portable", s);
	}
	ok = 1;
	for (u8 = 0; u8 < 2; u8++)
	{
		pn_q8_rows16(1, 17, zero, 17, u8, q16, &s);
		ok &= s == 0.0f;
		for (i = 0; i < 32; i++)
			ok &= q16[i] == 0;
		pn_q8_rows16(1, 5, tiny, 5, u8, p16, &s2);
		ok &= s2 == 0.0f;
		for (i = 0; i < 16; i++)
			ok &= p16[i] == 0;
	}
	CHECK(ok, "int8 s8 and u8: a zero row and a row with 127 / amax (255 / amax) beyond float's range have scale 0 and every value 0");
	/* random rows of every length 1..80, some scaled so that many products are exact halves; s8 and u8 */
	srand(21);
	for (u8 = 0; u8 < 2; u8++)
	for (rep = 0; rep < 3; rep++)
		for (K = 1; K <= 80; K++)
		{
			int			qd[80];
			float		sd,
						sp,
						s8;

			for (i = 0; i < K; i++)
				x[i] = rep == 2 ? (float) ((rand() % 509) - 254) * 0.5f : ((float) rand() / RAND_MAX * 2 - 1) * (rep ? 1e-3f : 10.0f);
			if (u8)
				for (i = 0; i < K; i++)
					x[i] = (i % 11) == 5 ? -x[i] * x[i] : fabsf(x[i]);	/* a few negatives: clamp to 0 */
			if (rep == 2)
				x[rand() % K] = u8 ? 255.0f : 127.0f;	/* inv = 1: every x.5 a tie */
			sd = q8_direct_row(x, K, u8, qd);
			pn_q8_portable = false;
			pn_q8_rows16(1, K, x, K, u8, q16, &s);
			pn_q8_portable = true;
			pn_q8_rows16(1, K, x, K, u8, p16, &sp);
			pn_q8_portable = false;
			pn_q8_rows8(1, K, x, K, u8, q8, K, &s8);
			ok &= s == sd && sp == sd && s8 == sd;
			okp &= memcmp(q16, p16, sizeof(int16_t) * PN_Q8_KP(K)) == 0;
			for (i = 0; i < K; i++)
			{
				ok &= q16[i] == qd[i];
				ok8 &= (u8 ? (int) ((uint8_t *) q8)[i] : (int) q8[i]) == qd[i];
			}
			for (i = K; i < PN_Q8_KP(K); i++)
				ok &= q16[i] == 0;
		}
	CHECK(ok, "int8 s8 and u8: rows of 1..80 values (random, and halves at scale 1; u8 with negatives) quantize as the formula says, padded with 0");
	CHECK(okp, "int8 s8 and u8: the portable quantizer = the AVX2 one bit for bit (AVX2 %s)", pn_q8_avx2() ? "on" : "absent: portable twice");
	CHECK(ok8, "int8 s8 and u8: the byte quantizer (oneDNN's operands) = the int16 lanes (the fallback's)");
}

/* one layer by the formula: quantize, exact sum in int64, fmaf, post-op */
static void
q8_direct_layer(int M, int N, int K, const float *A, bool u8, const float *W, const float *bias, float *C, int epi,
				float gamma, const float *X)
{
	int		   *qa = malloc(sizeof(int) * M * K),
			   *qw = malloc(sizeof(int) * N * K);
	float	   *sa = malloc(sizeof(float) * M),
			   *sw = malloc(sizeof(float) * N);
	int			m,
				n,
				k;

	for (m = 0; m < M; m++)
		sa[m] = q8_direct_row(A + (size_t) m * K, K, u8, qa + (size_t) m * K);
	for (n = 0; n < N; n++)
		sw[n] = q8_direct_row(W + (size_t) n * K, K, false, qw + (size_t) n * K);
	for (m = 0; m < M; m++)
		for (n = 0; n < N; n++)
		{
			int64_t		acc = 0;
			float		y;

			for (k = 0; k < K; k++)
				acc += (int64_t) qa[m * K + k] * qw[n * K + k];
			y = fmaf((float) acc, sa[m] * sw[n], bias[n]);
			if (epi == PN_EPI_RELU)
				y = y > 0 ? y : 0;
			else if (epi == PN_EPI_GATE)
			{
				pn_sigmoid_scale(&y, 1, gamma);
				y *= X[(size_t) m * N + n];
			}
			C[(size_t) m * N + n] = y;
		}
	free(qa), free(qw), free(sa), free(sw);
}

/*
 * The fallback's int8 layer (pn_q8_layer: quantize, pn_q8_gemm, the shared
 * epilogue) = the formula bit for bit at many shapes (every block and tail
 * of the AVX2 kernel), each post-op; portable = AVX2; full-range operands
 * (every value +-127) summed exactly; a row's bits the same in calls of any
 * M at any position
 */
static void
test_int8_gemm(void)
{
	int			Ms[] = {1, 2, 3, 4, 5, 7, 9, 17, 33, 64},
				Ns[] = {1, 2, 3, 5, 16, 17, 33, 128},
				Ks[] = {1, 7, 15, 16, 17, 33, 128, 257},
				mi,
				ni,
				ki,
				u8,
				shapes = 0,
				bad = 0,
				badp = 0,
				badpos = 0;

	srand(33);
	for (u8 = 0; u8 < 2; u8++)
	for (ki = 0; ki < 8; ki++)
		for (ni = 0; ni < 8; ni++)
			for (mi = 0; mi < 10; mi++)
			{
				int			M = Ms[mi],
							N = Ns[ni],
							K = Ks[ki],
							epi = (mi + ni + ki) % 3,
							i;
				float	   *A = malloc(sizeof(float) * M * K),
						   *W = malloc(sizeof(float) * N * K),
						   *b = malloc(sizeof(float) * N),
						   *X = malloc(sizeof(float) * M * N),
						   *Cd = malloc(sizeof(float) * M * N),
						   *C = malloc(sizeof(float) * M * N),
						   *Cp = malloc(sizeof(float) * M * N),
						   *C1 = malloc(sizeof(float) * N);
				void	   *wq = aligned_alloc(64, (pn_q8_bytes(N, K) + 63) & ~(size_t) 63);
				PnQ8Work	ws;

				if (getenv("PN_TEST_QUICK") && mi % 3 != 0)
				{
					free(A), free(W), free(b), free(X), free(Cd), free(C), free(Cp), free(C1), free(wq);
					continue;
				}
				ws.qa = malloc(sizeof(int16_t) * M * PN_Q8_KP(K));
				ws.sa = malloc(sizeof(float) * M);
				ws.acc = malloc(sizeof(int32_t) * M * N);
				for (i = 0; i < M * K; i++)
					A[i] = u8 ? (float) rand() / RAND_MAX * 2 : (float) rand() / RAND_MAX * 4 - 2;
				for (i = 0; i < N * K; i++)
					W[i] = ((float) rand() / RAND_MAX * 2 - 1) / sqrtf((float) K);
				if (ki == 7 && ni == 7)
				{
					/* full range: every product 127 * 127 (u8: 255 * 127) or its negative */
					for (i = 0; i < M * K; i++)
						A[i] = u8 || (i % 3) ? 1.0f : -1.0f;
					for (i = 0; i < N * K; i++)
						W[i] = -0.25f;
				}
				if (N > 3)
					for (i = 0; i < K; i++)
						W[2 * K + i] = 0.0f;	/* a zero channel */
				for (i = 0; i < N; i++)
					b[i] = (float) rand() / RAND_MAX - 0.5f;
				for (i = 0; i < M * N; i++)
					X[i] = (float) rand() / RAND_MAX * 2 - 1;
				q8_direct_layer(M, N, K, A, u8, W, b, Cd, epi, 1.7f, X);
				pn_q8_pack(N, K, W, K, wq);
				pn_q8_layer(M, N, K, A, K, u8, wq, b, C, N, epi, 1.7f, X, N, &ws);
				pn_q8_portable = true;
				pn_q8_pack(N, K, W, K, wq);
				pn_q8_layer(M, N, K, A, K, u8, wq, b, Cp, N, epi, 1.7f, X, N, &ws);
				pn_q8_portable = false;
				bad += memcmp(C, Cd, sizeof(float) * M * N) != 0;
				badp += memcmp(C, Cp, sizeof(float) * M * N) != 0;
				/* the last row alone */
				pn_q8_pack(N, K, W, K, wq);
				pn_q8_layer(1, N, K, A + (size_t) (M - 1) * K, K, u8, wq, b, C1, N, epi, 1.7f, X + (size_t) (M - 1) * N, N, &ws);
				badpos += memcmp(C1, C + (size_t) (M - 1) * N, sizeof(float) * N) != 0;
				shapes++;
				free(A), free(W), free(b), free(X), free(Cd), free(C), free(Cp), free(C1), free(wq);
				free(ws.qa), free(ws.sa), free(ws.acc);
			}
	CHECK(bad == 0, "int8 layer = the formula bit for bit (quantize s8 and u8 inputs, exact int32 sum, fmaf, relu / gate / none) at %d shapes M 1..64, N 1..128, K 1..257 incl. full-range operands (%d differ)",
		  shapes, bad);
	CHECK(badp == 0, "int8 layer: portable C = AVX2 bit for bit at %d shapes (%d differ; AVX2 %s)", shapes, badp,
		  pn_q8_avx2() ? "on" : "absent");
	CHECK(badpos == 0, "int8 layer: the last row of a call = that row alone, %d shapes (%d differ)", shapes, badpos);
}

/*
 * The engine in int8 (the fallback's int8 matmuls, or under --any-matmul
 * oneDNN's int8 tiles where it has them): scores within 1e-2 of fp32 on a
 * random model, a candidate bit-identical at every position of requests
 * of 1..33, the portable quantized arithmetic = AVX2, and pn_evaluator in
 * int8 = the engine's logits bit for bit
 */
static void
test_engine_int8(const char *json, const char *label)
{
	PnConfig	c = parse(json);
	PnModel    *m;
	PnError		e = {0};
	PnDomainCache *dc[2] = {NULL, NULL};
	PnPersona  *pp[2] = {NULL, NULL};
	PnEngine   *e8 = NULL,
			   *e32 = NULL,
			   *ep = NULL;
	PnEvaluator *ev = NULL;
	int64_t		pers[2 * PN_MAX_FIELDS];
	enum
	{
	NR = 600};
	int			F,
				Nd,
				T,
				n,
				pos,
				i,
				t,
				d,
				ties = 1,
				calls = 0,
				same_p = 1,
				same_ev = 1,
				rc = PN_OK;
	int64_t    *feat;
	float	   *dense,
			   *lg,
			   *lgp,
			   *lev,
				one[PN_MAX_TASKS];
	double	   *o8,
			   *o32,
				alone[PN_MAX_TASKS],
				maxd = 0;
	int32_t    *dom;
	int64_t    *bpers;
	float	   *labels;
	PnBatch		b;

	if (pn_model_new(&c, &m, &e) != PN_OK)
	{
		CHECK(0, "model_new %s: %s", label, e.msg);
		return;
	}
	randomize(m, 17);
	F = c.nfeat;
	Nd = c.dense;
	T = c.ntasks;
	srand(3);
	for (i = 0; i < 2 * c.npers; i++)
		pers[i] = c.pers[i % c.npers].hash ? (int64_t) rand() * 7919 : rand() % c.pers[i % c.npers].buckets;
	feat = malloc(sizeof(int64_t) * (NR + 1) * (F + 1));
	dense = malloc(sizeof(float) * (NR + 1) * (Nd + 1));
	o8 = malloc(sizeof(double) * NR * T);
	o32 = malloc(sizeof(double) * NR * T);
	lg = malloc(sizeof(float) * NR * T);
	lgp = malloc(sizeof(float) * NR * T);
	lev = malloc(sizeof(float) * NR * T);
	dom = malloc(sizeof(int32_t) * NR);
	bpers = malloc(sizeof(int64_t) * NR * (c.npers + 1));
	labels = calloc((size_t) NR * T, sizeof(float));
	for (d = 0; d < 2 && rc == PN_OK; d++)
	{
		rc = pn_domain_build(m, d, &dc[d], &e);
		rc = rc ? rc : pn_persona_build(m, pers + d * c.npers, &pp[d], &e);
	}
	rc = rc ? rc : pn_engine_new(m, PN_INT8, PN_TILE, NULL, &e8, &e);
	rc = rc ? rc : pn_engine_new(m, PN_FP32, PN_TILE, NULL, &e32, &e);
	for (d = 0; d < 2 && rc == PN_OK; d++)
	{
		rc = pn_engine_prepare_domain(e8, dc[d], NULL, &e);
		rc = rc ? rc : pn_engine_prepare_domain(e32, dc[d], NULL, &e);
	}
	if (rc != PN_OK)
	{
		CHECK(0, "engine int8 %s: %s", label, e.msg);
		return;
	}
	for (i = 0; i < (NR + 1) * F; i++)
		feat[i] = c.feat[i % F].hash ? ((int64_t) rand() << 33) ^ rand() : rand() % c.feat[i % F].buckets;
	for (i = 0; i < (NR + 1) * Nd; i++)
		dense[i] = (float) rand() / RAND_MAX * 4 - 2;
	/* int8 against fp32 */
	for (d = 0; d < 2 && rc == PN_OK; d++)
	{
		rc = pn_engine_score(e8, dc[d], pp[d], NR, feat, Nd ? dense : NULL, o8, NULL, &e);
		rc = rc ? rc : pn_engine_score(e32, dc[d], pp[d], NR, feat, Nd ? dense : NULL, o32, NULL, &e);
		for (i = 0; i < NR * T && rc == PN_OK; i++)
			maxd = fmax(maxd, fabs(o8[i] - o32[i]));
	}
	CHECK(rc == PN_OK && maxd < 1e-2, "engine int8 (%s, %s): %d scores x 2 domains within 1e-2 of fp32 (max |dp| %.2e) %s",
		  pn_engine_onednn(e8) ? "oneDNN int8 tiles" : "fallback", label, NR, maxd, rc ? e.msg : "");
	/* the probe (row NR) at every position of requests of 1..33 */
	rc = rc ? rc : pn_engine_score(e8, dc[0], pp[0], 1, feat + (size_t) NR * F, Nd ? dense + (size_t) NR * Nd : NULL, alone, NULL, &e);
	for (n = 1; n <= 33 && rc == PN_OK; n++)
		for (pos = 0; pos < n; pos += (n > 8 ? 3 : 1))
		{
			int64_t    *f = feat + (size_t) (n % 7) * F;
			float	   *dn = dense + (size_t) (n % 7) * Nd;
			int64_t		save[64];
			float		saved[64];

			memcpy(save, f + (size_t) pos * F, sizeof(int64_t) * F);
			memcpy(saved, dn + (size_t) pos * Nd, sizeof(float) * Nd);
			memcpy(f + (size_t) pos * F, feat + (size_t) NR * F, sizeof(int64_t) * F);
			memcpy(dn + (size_t) pos * Nd, dense + (size_t) NR * Nd, sizeof(float) * Nd);
			rc = pn_engine_score(e8, dc[0], pp[0], n, f, Nd ? dn : NULL, o8, NULL, &e);
			memcpy(f + (size_t) pos * F, save, sizeof(int64_t) * F);
			memcpy(dn + (size_t) pos * Nd, saved, sizeof(float) * Nd);
			calls++;
			for (t = 0; t < T && rc == PN_OK; t++)
				ties &= memcmp(&alone[t], &o8[(size_t) pos * T + t], sizeof(double)) == 0;
		}
	CHECK(rc == PN_OK && ties, "engine int8 (%s): a candidate placed in %d requests of 1..33 candidates is bit-identical to it alone %s",
		  label, calls, rc ? e.msg : "");
	/* the portable quantized arithmetic: a new engine with it */
	pn_q8_portable = true;
	rc = rc ? rc : pn_engine_new(m, PN_INT8, PN_TILE, NULL, &ep, &e);
	rc = rc ? rc : pn_engine_prepare_domain(ep, dc[1], NULL, &e);
	rc = rc ? rc : pn_engine_logits(ep, dc[1], pp[1], 97, feat, Nd ? dense : NULL, lgp, NULL, &e);
	pn_q8_portable = false;
	rc = rc ? rc : pn_engine_logits(e8, dc[1], pp[1], 97, feat, Nd ? dense : NULL, lg, NULL, &e);
	same_p = rc == PN_OK && memcmp(lg, lgp, sizeof(float) * 97 * T) == 0;
	CHECK(same_p, "engine int8 (%s): the portable C kernel = the engine's int8 (%s) bit for bit, 97 candidates %s", label,
		  pn_engine_onednn(e8) ? "oneDNN int8 tiles" : pn_q8_avx2() ? "AVX2 kernel" : "portable", rc ? e.msg : "");
	if (pn_engine_onednn(e8) && !pn_engine_int8_supported())
	{
		/* --any-matmul on a CPU without oneDNN's int8 brgemm: the fallback's AVX2 kernel against the tiles */
		PnEngine   *ef = NULL;

		pn_dnnl_any_impl = false;
		rc = rc ? rc : pn_engine_new(m, PN_INT8, PN_TILE, NULL, &ef, &e);
		pn_dnnl_any_impl = true;
		rc = rc ? rc : pn_engine_prepare_domain(ef, dc[1], NULL, &e);
		rc = rc ? rc : pn_engine_logits(ef, dc[1], pp[1], 97, feat, Nd ? dense : NULL, lgp, NULL, &e);
		CHECK(rc == PN_OK && !pn_engine_onednn(ef) && memcmp(lg, lgp, sizeof(float) * 97 * T) == 0,
			  "engine int8 (%s): the oneDNN int8 tiles = the fallback's AVX2 int8 kernel bit for bit, 97 candidates %s", label,
			  rc ? e.msg : "");
		if (ef)
			pn_engine_free(ef);
	}
	/* the evaluator: rows of both domains and personas, interleaved */
	for (i = 0; i < NR; i++)
	{
		dom[i] = (i % 5) < 2;
		memcpy(bpers + (size_t) i * c.npers, pers + dom[i] * c.npers, sizeof(int64_t) * c.npers);
	}
	memset(&b, 0, sizeof(b));
	b.n = NR;
	b.domain = dom;
	b.persona = bpers;
	b.features = feat;
	b.dense = Nd ? dense : NULL;
	b.labels = labels;
	rc = rc ? rc : pn_evaluator_new(m, PN_INT8, &ev, &e);
	rc = rc ? rc : pn_evaluator_logits(ev, &b, lev, NULL, &e);
	for (i = 0; i < NR && rc == PN_OK; i++)
	{
		rc = pn_engine_logits(e8, dc[dom[i]], pp[dom[i]], 1, feat + (size_t) i * F, Nd ? dense + (size_t) i * Nd : NULL, one, NULL, &e);
		same_ev &= memcmp(one, lev + (size_t) i * T, sizeof(float) * T) == 0;
	}
	CHECK(rc == PN_OK && same_ev, "pn_evaluator int8 = pn_engine int8 bit for bit, %d rows of 2 domains and personas (%s) %s", NR, label,
		  rc ? e.msg : "");
	if (ev)
		pn_evaluator_free(ev);
	pn_engine_free(e8);
	pn_engine_free(e32);
	if (ep)
		pn_engine_free(ep);
	for (d = 0; d < 2; d++)
	{
		pn_domain_free(dc[d]);
		pn_persona_free(pp[d]);
	}
	free(feat), free(dense), free(o8), free(o32), free(lg), free(lgp), free(lev), free(dom), free(bpers), free(labels);
	pn_model_free(m);
	pn_config_free(&c);
}

/*
 * A tiny model computed by hand: 1 domain, 1 feature of 1 bucket, emb_dim 1,
 * hidden [1], everything off but the tower.  x0 = e, a = relu(w1 e + b1),
 * logit = w2 a + b2.
 */
static void
test_by_hand(void)
{
	PnConfig	c = parse("{\"domains\": 2, \"features\": [{\"name\": \"f\", \"buckets\": 1}], \"emb_dim\": 1, "
						  "\"hidden\": [1], \"epnet\": false, \"ppnet\": false, \"pn\": true, \"star\": true, \"aux\": false}");
	PnModel    *m;
	PnError		e = {0};
	PnDomainCache *dc;
	PnPersona  *pp;
	PnWork	   *w;
	int64_t		f = 12345;
	double		out,
				expect;

	pn_model_new(&c, &m, &e);
	pn_model_init(m, 1);
	PN_T(m, m->t_emb_feat[0])[0] = 0.5f;
	/* PN of domain 1: gamma 2 * 1.5, beta 0.25 + 0.25, mean 0.1, var 3.99999 */
	PN_T(m, m->t_pn_gamma)[0] = 2.0f;
	PN_T(m, m->t_pn_dgamma)[1] = 1.5f;
	PN_T(m, m->t_pn_beta)[0] = 0.25f;
	PN_T(m, m->t_pn_dbeta)[1] = 0.25f;
	PN_T(m, m->t_pn_rmean)[1] = 0.1f;
	PN_T(m, m->t_pn_rvar)[1] = 4.0f - 1e-5f;
	/* tower layer 1: w 0.8 * domain 0.5, b 0.1 + domain 0.2; output: w -1 * 2, b 0.3 + 0 */
	PN_T(m, m->t_tw_w[PN_TW(&c, 0, 1)])[0] = 0.8f;
	PN_T(m, m->t_tw_dw[PN_TW(&c, 0, 1)])[1] = 0.5f;
	PN_T(m, m->t_tw_b[PN_TW(&c, 0, 1)])[0] = 0.1f;
	PN_T(m, m->t_tw_db[PN_TW(&c, 0, 1)])[1] = 0.2f;
	PN_T(m, m->t_tw_w[PN_TW(&c, 0, 2)])[0] = -1.0f;
	PN_T(m, m->t_tw_dw[PN_TW(&c, 0, 2)])[1] = 2.0f;
	PN_T(m, m->t_tw_b[PN_TW(&c, 0, 2)])[0] = 0.3f;
	/* xn = 3 * (0.5 - 0.1) / 2 + 0.5 = 1.1; a = relu(0.4 * 1.1 + 0.3) = 0.74; logit = -2 * 0.74 + 0.3 = -1.18 */
	expect = 1.0 / (1.0 + exp(1.18));
	pn_domain_build(m, 1, &dc, &e);
	pn_persona_build(m, NULL, &pp, &e);
	w = pn_work_new(m, 4);
	pn_score(m, dc, pp, w, 1, &f, NULL, &out, &e);
	CHECK(fabs(out - expect) < 1e-6, "tiny model by hand: p = %.7f, expected %.7f", out, expect);
	pn_domain_free(dc);
	pn_persona_free(pp);
	pn_work_free(w);
	pn_model_free(m);
	pn_config_free(&c);
}

/* Overwrite the header of a valid blob with a given JSON, keeping data */
static uint8_t *
with_header(const uint8_t *blob, size_t len, const char *hdr, size_t *outlen)
{
	uint64_t	oldh = 0,
				newh = strlen(hdr);
	size_t		dlen;
	uint8_t    *b;
	int			i;

	for (i = 7; i >= 0; i--)
		oldh = (oldh << 8) | blob[i];
	dlen = len - 8 - oldh;
	*outlen = 8 + newh + dlen;
	b = malloc(*outlen);
	for (i = 0; i < 8; i++)
		b[i] = (uint8_t) (newh >> (8 * i));
	memcpy(b + 8, hdr, newh);
	memcpy(b + 8 + newh, blob + 8 + oldh, dlen);
	return b;
}

/* Expect the reader to refuse a blob with a message containing substr */
static void
st_rejects(PnModel *m, const uint8_t *b, size_t len, const char *substr, const char *label)
{
	PnError		e = {0};
	int			rc = pn_safetensors_read(m, b, len, &e);

	CHECK(rc == PN_EFORMAT && strstr(e.msg, substr) != NULL, "safetensors rejects %s (%s)", label, e.msg);
}

/* Round trip and every rejection of the weight reader */
static void
test_safetensors(void)
{
	PnConfig	c = parse("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 3}], \"emb_dim\": 2, "
						  "\"hidden\": [2], \"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false}");
	PnModel    *m,
			   *m2;
	PnError		e = {0};
	size_t		len,
				l2;
	uint8_t    *blob,
			   *b;
	int			i,
				same = 1;

	pn_model_new(&c, &m, &e);
	pn_model_new(&c, &m2, &e);
	pn_model_init(m, 42);
	len = pn_safetensors_size(m);
	blob = malloc(len);
	pn_safetensors_write(m, blob);
	CHECK(pn_safetensors_read(m2, blob, len, &e) == PN_OK, "safetensors round trip reads (%s)", e.msg);
	for (i = 0; i < m->ntensors; i++)
		same &= memcmp(PN_T(m, i), PN_T(m2, i), m->tensors[i].numel * 4) == 0;
	CHECK(same, "safetensors round trip is bit for bit");
	{
		/* chunked writing: ranges of every size, concatenated, equal the whole blob */
		size_t		plen = pn_safetensors_prefix(m, NULL);
		uint8_t    *prefix = malloc(plen),
				   *cat = malloc(len);
		size_t		sizes[] = {1, 3, 7, 64, 1000, plen, plen + 1, len - 1, len};
		int			k,
					allsame = 1;

		CHECK(pn_safetensors_prefix(m, prefix) == plen && memcmp(prefix, blob, plen) == 0 && plen % 8 == 0,
			  "safetensors prefix = the blob's first %zu bytes", plen);
		for (k = 0; k < (int) (sizeof(sizes) / sizeof(sizes[0])); k++)
		{
			size_t		off;

			memset(cat, 0xAB, len);
			for (off = 0; off < len; off += sizes[k])
				pn_safetensors_write_range(m, prefix, plen, off, off + sizes[k] <= len ? sizes[k] : len - off, cat + off);
			allsame &= memcmp(cat, blob, len) == 0;
		}
		CHECK(allsame, "safetensors written in ranges of 1 .. %zu bytes = written whole", len);
		{
			/* read in steps (pn_safetensors_plan from the header alone, bytes scattered, check) = read whole */
			PnModel    *m4;
			PnStSpan   *spans = NULL;
			int			nsp = 0,
						k2,
						same4 = 1;
			uint64_t	start = 0;

			pn_model_new(&c, &m4, &e);
			CHECK(pn_safetensors_plan(m4, blob, plen - 1, len, &spans, &nsp, &start, &e) == PN_EFORMAT,
				  "safetensors plan refuses a header cut short (%s)", e.msg);
			k2 = pn_safetensors_plan(m4, blob, plen, len, &spans, &nsp, &start, &e);
			CHECK(k2 == PN_OK && start == plen && nsp == m4->ntensors,
				  "safetensors plan from the header alone: %d spans, data at %llu", nsp, (unsigned long long) start);
			for (k2 = 0; k2 < nsp; k2++)
				memcpy(m4->data + m4->tensors[spans[k2].tensor].offset, blob + start + spans[k2].begin,
					   (size_t) (spans[k2].end - spans[k2].begin));
			k2 = pn_safetensors_check(m4, spans, nsp, &e);
			CHECK(k2 == PN_OK, "safetensors check passes");
			for (i = 0; i < m->ntensors; i++)
				same4 &= memcmp(PN_T(m, i), PN_T(m4, i), m->tensors[i].numel * 4) == 0;
			CHECK(same4, "safetensors read in steps = read whole");
			m4->data[m4->tensors[spans[0].tensor].offset] = NAN;
			CHECK(pn_safetensors_check(m4, spans, nsp, &e) == PN_EFORMAT && strstr(e.msg, "non-finite") != NULL,
				  "safetensors check finds a non-finite value (%s)", e.msg);
			pn_free(spans);
			pn_model_free(m4);
		}
		free(prefix);
		free(cat);
	}
	{
		/* a layout-only model points into the blob instead of copying */
		PnModel    *m3;
		int			same3 = 1;

		pn_model_layout(&c, &m3, &e);
		CHECK(pn_safetensors_read(m3, blob, len, &e) == PN_OK && m3->borrowed &&
			  (const uint8_t *) m3->data > blob && (const uint8_t *) m3->data < blob + len,
			  "layout-only model reads in place (%s)", e.msg);
		for (i = 0; i < m->ntensors; i++)
			same3 &= memcmp(PN_T(m, i), PN_T(m3, i), m->tensors[i].numel * 4) == 0;
		CHECK(same3, "in-place tensors equal the copied ones");
		pn_model_free(m3);
		pn_model_layout(&c, &m3, &e);
		/* misaligned: one byte in front */
		{
			uint8_t    *mis = malloc(len + 1);

			memcpy(mis + 1, blob, len);
			CHECK(pn_safetensors_read(m3, mis + 1, len, &e) == PN_OK && !m3->borrowed,
				  "a misaligned blob is copied instead (%s)", e.msg);
			free(mis);
		}
		pn_model_free(m3);
	}
	/* the seeded init is deterministic and seed-dependent */
	pn_model_init(m2, 42);
	CHECK(memcmp(m->data, m2->data, m->total * 4) == 0, "init with the same seed is identical");
	pn_model_init(m2, 43);
	CHECK(memcmp(m->data, m2->data, m->total * 4) != 0, "init with another seed differs");

	st_rejects(m2, blob, 5, "too short", "5 bytes");
	st_rejects(m2, blob, len - 1, "", "truncated data");
	b = malloc(len);
	memcpy(b, blob, len);
	b[7] = 0x7f;
	st_rejects(m2, b, len, "header length", "huge header length");
	free(b);
	/* the layout: emb.feature.0 [3,2], emb.domain [2,2], tower.0.1.w [2,2], .b [2], tower.0.2.w [1,2], .b [1]: 15 floats */
#define T_OK "\"emb.domain\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[24,40]}," \
	"\"tower.0.1.w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[40,56]}," \
	"\"tower.0.1.b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[56,64]}," \
	"\"tower.0.2.w\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[64,72]}," \
	"\"tower.0.2.b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[72,76]}"
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}," T_OK "}", &l2);
	CHECK(pn_safetensors_read(m2, b, l2, &e) == PN_OK, "hand-written header accepted (%s)", e.msg);
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F16\",\"shape\":[3,2],\"data_offsets\":[0,24]}," T_OK "}", &l2);
	st_rejects(m2, b, l2, "dtype", "F16");
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}," T_OK "}", &l2);
	st_rejects(m2, b, l2, "shape", "transposed shape");
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[16,40]}," T_OK "}", &l2);
	st_rejects(m2, b, l2, "overlap", "overlapping tensors");
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}}", &l2);
	st_rejects(m2, b, l2, "lack", "missing tensor");
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]}," T_OK ",\"epnet.w1\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", &l2);
	st_rejects(m2, b, l2, "does not use", "unknown tensor");
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,2400]}," T_OK "}", &l2);
	st_rejects(m2, b, l2, "outside", "offsets past the end");
	free(b);
	b = with_header(blob, len, "{\"emb.feature.0\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[0,24]," T_OK "}", &l2);
	st_rejects(m2, b, l2, "JSON", "broken JSON");
	free(b);
	/* a NaN in the data */
	b = malloc(len);
	memcpy(b, blob, len);
	{
		float		nan = NAN;

		memcpy(b + len - 4, &nan, 4);
	}
	st_rejects(m2, b, len, "non-finite", "NaN weight");
	free(b);
	free(blob);
	pn_model_free(m);
	pn_model_free(m2);
	pn_config_free(&c);
}

/* Out-of-range ids of non-hashed fields are errors, not clamps */
static void
test_bad_ids(void)
{
	PnConfig	c = parse("{\"domains\": 2, \"features\": [{\"name\": \"hour\", \"buckets\": 24, \"hash\": false}], "
						  "\"persona\": [{\"name\": \"age\", \"buckets\": 8, \"hash\": false}], \"emb_dim\": 2, \"hidden\": [4]}");
	PnModel    *m;
	PnError		e = {0};
	PnDomainCache *dc = NULL;
	PnPersona  *pp = NULL;
	PnWork	   *w;
	int64_t		f = 24,
				p = 8;
	double		out;

	pn_model_new(&c, &m, &e);
	pn_model_init(m, 3);
	CHECK(pn_domain_build(m, 2, &dc, &e) == PN_EINPUT && strstr(e.msg, "out of range"), "domain 2 of 2 rejected");
	CHECK(pn_persona_build(m, &p, &pp, &e) == PN_EINPUT && strstr(e.msg, "age"), "persona id 8 of 8 buckets rejected (%s)", e.msg);
	p = 7;
	pn_persona_build(m, &p, &pp, &e);
	pn_domain_build(m, 1, &dc, &e);
	w = pn_work_new(m, 2);
	CHECK(pn_score(m, dc, pp, w, 1, &f, NULL, &out, &e) == PN_EINPUT && strstr(e.msg, "hour"), "feature id 24 of 24 buckets rejected (%s)", e.msg);
	f = 23;
	CHECK(pn_score(m, dc, pp, w, 1, &f, NULL, &out, &e) == PN_OK && out > 0 && out < 1, "feature id 23 scores");
	pn_domain_free(dc);
	pn_persona_free(pp);
	pn_work_free(w);
	pn_model_free(m);
	pn_config_free(&c);
}

/* A random batch over the model's domains, with one single-row domain and masked labels */
static void
make_batch(const PnConfig *c, int n, unsigned seed, int32_t *dom, int64_t *pers, int64_t *feat,
		   float *dense, float *labels)
{
	int			i,
				j;

	srand(seed);
	for (i = 0; i < n; i++)
	{
		dom[i] = i == n - 1 ? c->domains - 1 : i % (c->domains - 1 > 0 ? c->domains - 1 : 1);
		for (j = 0; j < c->npers; j++)
			pers[i * c->npers + j] = c->pers[j].hash ? rand() % 5 : rand() % c->pers[j].buckets;
		for (j = 0; j < c->nfeat; j++)
			feat[i * c->nfeat + j] = c->feat[j].hash ? rand() % 7 : rand() % c->feat[j].buckets;
		for (j = 0; j < c->dense; j++)
			dense[i * c->dense + j] = (float) rand() / RAND_MAX * 2 - 1;
		for (j = 0; j < c->ntasks; j++)
			labels[i * c->ntasks + j] = (rand() % 5 == 0) ? NAN : (float) (rand() % 2);
	}
}

/*
 * Finite-difference check of the whole model's gradient: every tensor,
 * a few elements each (embedding rows that the batch uses), centred
 * differences of the training loss with running statistics frozen.  A
 * batch of n rows for a trainer of bmax: n = bmax runs the fixed-shape GEMMs
 * on oneDNN primitives, and domain segments of 64 rows or more run the
 * towers' GEMMs in 64-row tiles (train.c's gemm, gemm_rows); n < bmax runs
 * every GEMM on OpenBLAS.
 */
/*
 * Bags of the multi-valued fields of c for n rows (test data): row r has
 * no ids when r % 5 == 0, total weight 0 when r % 7 == 3 (weighted
 * fields), else 1 to 4 ids (repeats possible) with weights in [0, 2).
 */
typedef struct TestBags
{
	PnBag		fb[8],
				pb[8];
	void	   *mem[48];
	int			nmem;
} TestBags;

static void *
tb_alloc(TestBags *tb, size_t n)
{
	void	   *p = calloc(1, n ? n : 1);

	tb->mem[tb->nmem++] = p;
	return p;
}

static void
tb_free(TestBags *tb)
{
	int			i;

	for (i = 0; i < tb->nmem; i++)
		free(tb->mem[i]);
	tb->nmem = 0;
}

static void
make_bags(const PnConfig *c, int n, unsigned seed, TestBags *tb)
{
	int			j,
				r;

	srand(seed);
	memset(tb, 0, sizeof(*tb));
	for (j = 0; j < c->nfeat + c->npers; j++)
	{
		const PnField *f = j < c->nfeat ? &c->feat[j] : &c->pers[j - c->nfeat];
		PnBag	   *bag = j < c->nfeat ? &tb->fb[j] : &tb->pb[j - c->nfeat];
		int64_t    *off,
				   *rows;
		float	   *w = NULL;
		int64_t		at = 0;

		if (f->pooling == PN_POOL_NONE)
			continue;
		off = tb_alloc(tb, sizeof(int64_t) * (n + 1));
		rows = tb_alloc(tb, sizeof(int64_t) * n * 4);
		if (f->weights[0])
			w = tb_alloc(tb, sizeof(float) * n * 4);
		for (r = 0; r < n; r++)
		{
			int			len = r % 5 == 0 ? 0 : 1 + rand() % 4,
						e;

			off[r] = at;
			for (e = 0; e < len; e++)
			{
				rows[at] = rand() % f->buckets;
				if (w)
					w[at] = (r % 7 == 3) ? 0.0f : (float) rand() / RAND_MAX * 2;
				at++;
			}
		}
		off[n] = at;
		bag->off = off;
		bag->rows = rows;
		bag->weights = w;
	}
}

static void
test_gradcheck_n(const char *json, const char *label, int n, int bmax)
{
	PnConfig	c = parse(json);
	PnModel    *m;
	PnTrainer  *tr;
	PnError		e = {0};
	int			x,
				bad = 0,
				checked = 0;
	int32_t    *dom = malloc(sizeof(int32_t) * n);
	int64_t    *pers = malloc(sizeof(int64_t) * n * (c.npers + 1)),
			   *feat = malloc(sizeof(int64_t) * n * (c.nfeat + 1));
	float	   *dense = malloc(sizeof(float) * n * (c.dense + 1)),
			   *labels = malloc(sizeof(float) * n * c.ntasks);
	float	   *grad;
	PnBatch		b;
	double		loss,
				worst = 0;
	TestBags	tb;

	pn_model_new(&c, &m, &e);
	randomize(m, 11);
	make_batch(&c, n, 5, dom, pers, feat, dense, labels);
	make_bags(&c, n, 6, &tb);
	b.fbag = c.bags ? tb.fb : NULL;
	b.pbag = c.bags ? tb.pb : NULL;
	b.n = n;
	b.domain = dom;
	b.persona = pers;
	b.features = feat;
	b.dense = dense;
	b.labels = labels;
	if (pn_trainer_new(m, bmax, 1e-3f, &tr, &e) != PN_OK || pn_train_grad(tr, &b, false, &loss, &e) != PN_OK)
	{
		CHECK(0, "gradcheck %s: %s", label, e.msg);
		return;
	}
	grad = malloc(sizeof(float) * m->total);
	memcpy(grad, pn_trainer_grad(tr), sizeof(float) * m->total);
	pn_trainer_freeze_sg(tr, true);
	for (x = 0; x < m->ntensors; x++)
	{
		PnTensor   *t = &m->tensors[x];
		int			tries;

		if (!t->trainable)
			continue;
		for (tries = 0; tries < 6; tries++)
		{
			int64_t		q;
			float	   *p,
						old;
			double		lp,
						lm,
						fd,
						an,
						h = 1e-3;

			if (t->kind == PNT_EMBED)
			{
				/* a row the batch uses */
				int64_t		row;

				if (strcmp(t->name, "emb.domain") == 0)
					row = dom[tries % n];
				else
				{
					int			fi = atoi(strrchr(t->name, '.') + 1);

					bool		isf = strncmp(t->name, "emb.feature", 11) == 0;
					const PnField *f = isf ? &c.feat[fi] : &c.pers[fi];

					if (f->pooling != PN_POOL_NONE)
					{
						/* a row of a bag, or the empty row (tries 0: row 0's bag is empty) */
						const PnBag *bg = isf ? &tb.fb[fi] : &tb.pb[fi];
						int			r = 1 + tries % (n - 1);

						row = tries == 0 || bg->off[r + 1] == bg->off[r] ? PN_MISSING_ROW(f) :
							bg->rows[bg->off[r] + tries % (bg->off[r + 1] - bg->off[r])];
					}
					else if (isf)
						row = pn_slot(&c.feat[fi], fi, feat[(tries % n) * c.nfeat + fi]);
					else
						row = pn_slot(&c.pers[fi], fi, pers[(tries % n) * c.npers + fi]);
				}
				q = row * t->shape[1] + tries % t->shape[1];
			}
			else
				q = (int64_t) ((tries * 7919) % t->numel);
			p = PN_T(m, x) + q;
			old = *p;
			*p = (float) (old + h);
			pn_train_grad(tr, &b, false, &lp, &e);
			*p = (float) (old - h);
			pn_train_grad(tr, &b, false, &lm, &e);
			*p = old;
			fd = (lp - lm) / (2 * h);
			an = grad[t->offset + q];
			checked++;
			if (fabs(fd - an) > 2e-3 + 3e-2 * fabs(an))
			{
				/* a ReLU kink inside [-h, h] spoils the difference: retry with h / 8 */
				h /= 8;
				*p = (float) (old + h);
				pn_train_grad(tr, &b, false, &lp, &e);
				*p = (float) (old - h);
				pn_train_grad(tr, &b, false, &lm, &e);
				*p = old;
				fd = (lp - lm) / (2 * h);
			}
			if (fabs(fd - an) > 2e-3 + 3e-2 * fabs(an))
			{
				if (bad < 8)
					printf("# %s %s[%lld]: analytic %.6g, numeric %.6g\n", label, t->name, (long long) q, an, fd);
				bad++;
			}
			if (fabs(fd - an) > worst)
				worst = fabs(fd - an);
		}
	}
	CHECK(bad == 0, "gradient check %s: %d elements, %d off (worst |diff| %.2e)", label, checked, bad, worst);
	tb_free(&tb);
	free(grad);
	free(dom);
	free(pers);
	free(feat);
	free(dense);
	free(labels);
	pn_trainer_free(tr);
	pn_model_free(m);
	pn_config_free(&c);
}

/* the gradient check on a batch of 11 rows (every GEMM on OpenBLAS) */
static void
test_gradcheck(const char *json, const char *label)
{
	test_gradcheck_n(json, label, 11, 16);
}

/* Training on a learnable toy task lowers the loss; predict gives input order */
static void
test_training_learns(void)
{
	PnConfig	c = parse("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 8, \"hash\": false}], "
						  "\"persona\": [{\"name\": \"u\", \"buckets\": 4, \"hash\": false}], \"emb_dim\": 4, \"hidden\": [8]}");
	PnModel    *m;
	PnTrainer  *tr;
	PnError		e = {0};
	int32_t		dom[64];
	int64_t		pers[64],
				feat[64];
	float		labels[64],
				logits[64];
	PnBatch		b = {.n = 64, .domain = dom, .persona = pers, .features = feat, .dense = NULL, .labels = labels};
	double		first = 0,
				last = 0;
	int			i,
				step,
				right = 0;

	pn_model_new(&c, &m, &e);
	pn_model_init(m, 1);
	for (i = 0; i < 64; i++)
	{
		dom[i] = i % 2;
		pers[i] = i % 4;
		feat[i] = i % 8;
		/* click when the feature parity matches the domain */
		labels[i] = (float) ((feat[i] % 2) == dom[i]);
	}
	pn_trainer_new(m, 64, 1e-2f, &tr, &e);
	for (step = 0; step < 200; step++)
	{
		double		loss;

		pn_train_step(tr, &b, &loss, &e);
		if (step == 0)
			first = loss;
		last = loss;
	}
	CHECK(last < first * 0.2, "training lowers the loss on a toy task (%.4f -> %.4f)", first, last);
	pn_train_predict(tr, &b, logits, &e);
	for (i = 0; i < 64; i++)
		right += (logits[i] > 0) == (labels[i] > 0.5f);
	CHECK(right == 64, "trained model classifies the toy task in input order (%d/64)", right);
	CHECK(pn_trainer_steps(tr) == 200, "trainer counts steps");
	labels[3] = 1.5f;
	CHECK(pn_train_step(tr, &b, &first, &e) == PN_EINPUT && strstr(e.msg, "outside"), "label 1.5 rejected (%s)", e.msg);
	pn_trainer_free(tr);
	pn_model_free(m);
	pn_config_free(&c);
}

/*
 * docs/model.md 0.2 PN running statistics: with EPNet off and dense inputs only,
 * x is the dense input, so after each batch the running mean of a domain is
 * exactly the plain average of its batch means (a = 1/(n+1)), the count
 * grows by one per batch with >= 2 rows of the domain, and a domain with one
 * row keeps its statistics and count.
 */
static void
test_pn_running_stats(void)
{
	PnConfig	c = parse("{\"domains\": 2, \"features\": [], \"dense\": 1, \"emb_dim\": 2, \"hidden\": [3], "
						  "\"epnet\": false, \"ppnet\": false, \"aux\": false}");
	PnModel    *m;
	PnTrainer  *tr;
	PnError		e = {0};
	int32_t		dom[5] = {0, 0, 0, 0, 1};
	int64_t		dummy[5] = {0};
	float		dense[5],
				labels[5] = {0, 1, 0, 1, 1};
	PnBatch		b = {.n = 5, .domain = dom, .persona = dummy, .features = dummy, .dense = dense, .labels = labels};
	double		loss,
				means[3] = {0},
				vars[3] = {0},
				want_m = 0,
				want_v = 0;
	int			step,
				i;
	const float *rm,
			   *rv,
			   *cnt;

	pn_model_new(&c, &m, &e);
	pn_model_init(m, 3);
	pn_trainer_new(m, 8, 1e-3f, &tr, &e);
	rm = PN_T(m, m->t_pn_rmean);
	rv = PN_T(m, m->t_pn_rvar);
	cnt = PN_T(m, m->t_pn_count);
	CHECK(m->t_pn_count >= 0 && m->tensors[m->t_pn_count].numel == 2 && cnt[0] == 0 && cnt[1] == 0,
		  "pn.num_batches_tracked [D] exists and starts at 0");
	for (step = 0; step < 3; step++)
	{
		double		mu = 0,
					va = 0;

		for (i = 0; i < 5; i++)
			dense[i] = (float) (100 + 3 * step + i * (step + 1));
		for (i = 0; i < 4; i++)
			mu += dense[i] / 4.0;
		for (i = 0; i < 4; i++)
			va += (dense[i] - mu) * (dense[i] - mu) / 4.0;
		means[step] = mu;
		vars[step] = va;
		pn_train_step(tr, &b, &loss, &e);
		if (step == 0)
			CHECK(rm[0] == (float) mu && fabsf(rv[0] - (float) va) <= 1e-5f * (float) va,
				  "first batch sets the running statistics outright (mean %g = %g, var %g = %g)", rm[0], mu, rv[0], va);
	}
	for (step = 0; step < 3; step++)
	{
		want_m += means[step] / 3;
		want_v += vars[step] / 3;
	}
	CHECK(fabs(rm[0] - want_m) < 1e-4 && fabs(rv[0] - want_v) < 1e-4 * want_v,
		  "three batches give the plain average (mean %g vs %g, var %g vs %g)", rm[0], want_m, rv[0], want_v);
	CHECK(cnt[0] == 3 && cnt[1] == 0 && rm[1] == 0 && rv[1] == 1,
		  "a one-row domain keeps its statistics and count (counts %g, %g)", cnt[0], cnt[1]);
	/* past 100 batches the rate is 0.01: r moves 1% towards the batch */
	((float *) cnt)[0] = 500;
	{
		float		before = rm[0];

		pn_train_step(tr, &b, &loss, &e);
		CHECK(fabsf(rm[0] - (0.99f * before + 0.01f * (float) means[2])) < 1e-3f, "after 100 batches the momentum is 0.01 (%g)", rm[0]);
	}

	/* a finite but huge dense value overflows PN's variance: PN_ENUMERIC naming the row */
	dense[2] = 1e30f;
	CHECK(pn_train_step(tr, &b, &loss, &e) == PN_ENUMERIC && e.row == 2 && strstr(e.msg, "dense value 1") &&
		  strstr(e.detail, "unscaled"), "dense value 1e30 stops training, row %lld named (%s)", (long long) e.row, e.msg);
	pn_trainer_free(tr);

	/* a learning rate that diverges: non-finite weights or loss are reported, never kept silently */
	pn_model_init(m, 3);
	for (i = 0; i < 5; i++)
		dense[i] = (float) i;
	pn_trainer_new(m, 8, 3e37f, &tr, &e);
	{
		int			rc = PN_OK;

		for (step = 0; step < 20 && rc == PN_OK; step++)
			rc = pn_train_step(tr, &b, &loss, &e);
		CHECK(rc == PN_ENUMERIC && strstr(e.msg, "diverged"), "a diverging learning rate stops training (%s)", e.msg);
	}
	pn_trainer_free(tr);
	pn_model_free(m);
	pn_config_free(&c);
}

/* A 0.1 blob (no pn.num_batches_tracked) reads with count 0; header length 1 is too short */
static void
test_optional_count(void)
{
	PnConfig	c = parse("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 5}], \"emb_dim\": 2, \"hidden\": [3]}");
	PnModel    *m,
			   *m2,
			   *m3;
	PnError		e = {0};
	size_t		n;
	uint8_t    *blob,
			   *old;
	int			i;
	size_t		oldlen;

	pn_model_new(&c, &m, &e);
	pn_model_init(m, 5);
	for (i = 0; i < 3; i++)
		PN_T(m, m->t_pn_count)[i] = (float) (i + 7);
	n = pn_safetensors_size(m);
	blob = malloc(n);
	pn_safetensors_write(m, blob);
	CHECK(memmem(blob, n, "pn.num_batches_tracked", 22) != NULL, "pn.num_batches_tracked is always written");
	/* the 0.1 format: the same model without the count tensor */
	{
		PnModel    *v1;
		int			x;

		pn_model_new(&c, &v1, &e);
		memcpy(v1->data, m->data, sizeof(float) * m->total);
		x = v1->t_pn_count;
		memmove(&v1->tensors[x], &v1->tensors[x + 1], sizeof(PnTensor) * (v1->ntensors - x - 1));
		v1->ntensors--;
		oldlen = pn_safetensors_size(v1);
		old = malloc(oldlen);
		pn_safetensors_write(v1, old);
		pn_model_free(v1);
	}
	CHECK(memmem(old, oldlen, "pn.num_batches_tracked", 22) == NULL, "a 0.1-format blob has no count tensor");
	CHECK(pn_safetensors_lacks_count(old, oldlen) && !pn_safetensors_lacks_count(blob, n),
		  "pn_safetensors_lacks_count: true for the 0.1 blob, false for the 0.2 blob");
	CHECK(pn_safetensors_lacks_count(old, 8 + (size_t) old[0] + ((size_t) old[1] << 8)) &&
		  !pn_safetensors_lacks_count(old, 7 + (size_t) old[0] + ((size_t) old[1] << 8)) &&
		  !pn_safetensors_lacks_count(old, 4),
		  "pn_safetensors_lacks_count reads the header alone, and nothing shorter than it");
	pn_model_layout(&c, &m2, &e);
	CHECK(pn_safetensors_read(m2, old, oldlen, &e) == PN_OK && m2->nabsent == 1 && !m2->borrowed,
		  "0.1 blob without the count reads (%s)", e.msg);
	{
		bool		same = true,
					zero = true;

		for (i = 0; i < m->ntensors; i++)
			if (i != m->t_pn_count)
				same &= memcmp(PN_T(m, i), PN_T(m2, i), sizeof(float) * m->tensors[i].numel) == 0;
		for (i = 0; i < 3; i++)
			zero &= PN_T(m2, m2->t_pn_count)[i] == 0.0f;
		CHECK(same && zero, "its tensors are bit-identical and the count is 0");
	}
	pn_model_new(&c, &m3, &e);
	CHECK(pn_safetensors_read(m3, blob, n, &e) == PN_OK && m3->nabsent == 0 && PN_T(m3, m3->t_pn_count)[2] == 9.0f,
		  "a 0.2 blob reads its counts");
	/* header length 1 */
	{
		uint8_t		b1[16] = {1, 0, 0, 0, 0, 0, 0, 0, '{', '}'};

		CHECK(pn_safetensors_read(m3, b1, 16, &e) == PN_EFORMAT && strstr(e.msg, "too short"),
			  "header length 1 is too short (%s)", e.msg);
	}
	free(blob);
	free(old);
	pn_model_free(m);
	pn_model_free(m2);
	pn_model_free(m3);
	pn_config_free(&c);
}

/* Messages cut strings on UTF-8 character boundaries (a cut inside a character reaches clients
 * in other encodings as an invalid byte sequence) */
static int
valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *) s;

	while (*p)
	{
		int			n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
		int			i;

		if (n == 0)
			return 0;
		for (i = 1; i < n; i++)
			if ((p[i] & 0xC0) != 0x80)
				return 0;
		p += n;
	}
	return 1;
}

static void
test_utf8_messages(void)
{
	char		key[400] = "{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 2}], \"";
	char		longkey[600];
	PnConfig	c;
	PnError		e = {0};
	int			i;

	CHECK(pn_utf8_prefix("abc", 2) == 2 && pn_utf8_prefix("\xc3\xa9\xc3\xa9x", 1) == 2 &&
		  pn_utf8_prefix("\xe2\x82\xac\xc3\xa9", 2) == 5 && pn_utf8_prefix("ab", 9) == 2,
		  "pn_utf8_prefix counts characters, not bytes");
	/* an unknown key of 59 ASCII letters and 10 two-byte characters: cut after 60 characters */
	for (i = 0; i < 59; i++)
		strcat(key, "x");
	for (i = 0; i < 10; i++)
		strcat(key, "\xc3\xa9");
	strcat(key, "\": 1}");
	CHECK(pn_config_parse(key, strlen(key), 0, &c, &e) == PN_ECONFIG && valid_utf8(e.msg) &&
		  strstr(e.msg, "x\xc3\xa9\"") != NULL, "unknown key cut after 60 characters on a boundary (%s)", e.msg);
	/* a message longer than PnError's buffer ends on a character boundary */
	for (i = 0; i < 299; i++)
		memcpy(longkey + 2 * i, "\xc3\xa9", 2);
	longkey[598] = '\0';
	pn_seterr(&e, PN_ECONFIG, "x%s", longkey);
	CHECK(strlen(e.msg) == sizeof(e.msg) - 1 && valid_utf8(e.msg),
		  "a message cut by its buffer on a boundary keeps every whole character (%zu bytes)", strlen(e.msg));
	pn_seterr(&e, PN_ECONFIG, "%s", longkey);
	CHECK(strlen(e.msg) == sizeof(e.msg) - 2 && valid_utf8(e.msg),
		  "a message cut by its buffer inside a character drops that character (%zu bytes)", strlen(e.msg));
	pn_setdetail(&e, "%s", longkey);
	CHECK(valid_utf8(e.detail), "a detail cut by its buffer ends on a character boundary");
}

/*
 * Shared packed weights (PnPackShare, the glue's shared cache): a provider
 * that keeps what engines publish.  The first engine packs and publishes
 * every matrix; a second finds every one of them and packs nothing; both
 * score bit-identically to an engine without the provider, also after the
 * first engine is freed (the second's shared matrices are the provider's).
 */
typedef struct PackItem
{
	char		key[32];
	size_t		bytes;
	void	   *p;
} PackItem;
static PackItem pack_items[256];
static int	npack_items,
			npack_lookups,
			npack_hits,
			npack_publishes;

static const void *
pack_lookup_test(void *arg, const char *key, size_t bytes)
{
	int			i;

	npack_lookups++;
	for (i = 0; i < npack_items; i++)
		if (strcmp(pack_items[i].key, key) == 0 && pack_items[i].bytes == bytes)
		{
			npack_hits++;
			return pack_items[i].p;
		}
	return NULL;
}

static void
pack_publish_test(void *arg, const char *key, const void *packed, size_t bytes)
{
	PackItem   *it;

	npack_publishes++;
	if (npack_items >= 256)
		return;
	it = &pack_items[npack_items++];
	snprintf(it->key, sizeof(it->key), "%s", key);
	it->bytes = bytes;
	it->p = aligned_alloc(64, (bytes + 63) / 64 * 64);
	memcpy(it->p, packed, bytes);
}

static void
test_pack_share(void)
{
	PnConfig	c = parse("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], "
						  "\"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 2, \"emb_dim\": 4, "
						  "\"tasks\": [\"click\", \"buy\"], \"hidden\": [8, 6, 5], \"epnet_hidden\": 7, \"aux_hidden\": 5}");
	PnPackShare prov = {pack_lookup_test, pack_publish_test, NULL};
	PnModel    *m;
	PnError		e = {0};
	PnEngine   *a = NULL,
			   *b = NULL,
			   *own = NULL;
	PnDomainCache *dc[3];
	PnPersona  *pp;
	int64_t		pers = 11,
				feat[20];
	float		dense[40];
	double		oa[40],
				ob[40],
				oo[40];
	int			d,
				i,
				rc = PN_OK,
				same = 1,
				after_publishes;

	if (pn_model_new(&c, &m, &e) != PN_OK)
	{
		CHECK(0, "pack share model: %s", e.msg);
		return;
	}
	randomize(m, 3);
	{
		PnEngine   *probe = NULL;

		if (pn_engine_new(m, PN_FP32, PN_TILE, NULL, &probe, &e) == PN_OK && !pn_engine_onednn(probe))
		{
			/* no brgemm matmul here (e.g. ONEDNN_MAX_CPU_ISA=AVX2): nothing is packed to share */
			pn_engine_free(probe);
			pn_model_free(m);
			pn_config_free(&c);
			CHECK(1, "pack share: skipped, the engine runs its row-wise fallback (no oneDNN brgemm) on this CPU (%s)", pn_engine_isa());
			return;
		}
		pn_engine_free(probe);
	}
	for (i = 0; i < 20; i++)
		feat[i] = i * 7 + 1;
	for (i = 0; i < 40; i++)
		dense[i] = (float) (i % 5) - 2.0f;
	rc = pn_persona_build(m, &pers, &pp, &e);
	for (d = 0; d < 3 && rc == PN_OK; d++)
		rc = pn_domain_build(m, d, &dc[d], &e);
	rc = rc ? rc : pn_engine_new(m, PN_FP32, PN_TILE, &prov, &a, &e);
	for (d = 0; d < 3 && rc == PN_OK; d++)
		rc = pn_engine_prepare_domain(a, dc[d], &prov, &e);
	after_publishes = npack_publishes;
	CHECK(rc == PN_OK && npack_hits == 0 && npack_publishes > 3 && npack_publishes == npack_lookups,
		  "pack share: the first engine packs and publishes every matrix (%d)", npack_publishes);
	rc = rc ? rc : pn_engine_new(m, PN_FP32, PN_TILE, &prov, &b, &e);
	for (d = 0; d < 3 && rc == PN_OK; d++)
		rc = pn_engine_prepare_domain(b, dc[d], &prov, &e);
	CHECK(rc == PN_OK && npack_hits == after_publishes && npack_publishes == after_publishes,
		  "pack share: the second engine finds all %d and publishes none", npack_hits);
	rc = rc ? rc : pn_engine_new(m, PN_FP32, PN_TILE, NULL, &own, &e);
	for (d = 0; d < 3 && rc == PN_OK; d++)
	{
		rc = pn_engine_prepare_domain(own, dc[d], NULL, &e);
		rc = rc ? rc : pn_engine_score(a, dc[d], pp, 20, feat, dense, oa, NULL, &e);
		rc = rc ? rc : pn_engine_score(b, dc[d], pp, 20, feat, dense, ob, NULL, &e);
		rc = rc ? rc : pn_engine_score(own, dc[d], pp, 20, feat, dense, oo, NULL, &e);
		same &= rc == PN_OK && memcmp(oa, oo, sizeof(double) * 40) == 0 && memcmp(ob, oo, sizeof(double) * 40) == 0;
	}
	CHECK(rc == PN_OK && same, "pack share: both engines score bit-identically to one that packs alone (%s)", rc ? e.msg : "ok");
	pn_engine_free(a);
	for (d = 0; d < 3 && rc == PN_OK; d++)
	{
		rc = pn_engine_score(b, dc[d], pp, 20, feat, dense, ob, NULL, &e);
		rc = rc ? rc : pn_engine_score(own, dc[d], pp, 20, feat, dense, oo, NULL, &e);
		same &= rc == PN_OK && memcmp(ob, oo, sizeof(double) * 40) == 0;
	}
	CHECK(rc == PN_OK && same, "pack share: the second engine scores the same after the first is freed");
	pn_engine_free(b);
	pn_engine_free(own);
	for (d = 0; d < 3; d++)
		pn_domain_free(dc[d]);
	pn_persona_free(pp);
	pn_model_free(m);
	pn_config_free(&c);
	for (i = 0; i < npack_items; i++)
		free(pack_items[i].p);
}

/*
 * Multi-valued fields: pooled by hand in double (weights, mean's division,
 * the empty row for no ids or total weight 0) into the missing row of the
 * same model without "pooling", scored as that row; every forward path
 * (pn_score, the engine's tiles, the evaluator, the trainer's forward) must
 * give the pooled model's scores.
 */
static const char *bags_json =
	"{\"inputs\": \"columns\", \"domains\": 2, "
	"\"features\": [{\"name\": \"item\", \"buckets\": 11}, {\"name\": \"tags\", \"buckets\": 9, \"pooling\": \"mean\", \"weights\": \"tw\"}, "
	"{\"name\": \"hist\", \"buckets\": 13, \"pooling\": \"sum\"}], "
	"\"persona\": [{\"name\": \"user\", \"buckets\": 7}, {\"name\": \"likes\", \"buckets\": 8, \"pooling\": \"sum\", \"weights\": \"lw\"}], "
	"\"dense\": [{\"name\": \"price\"}], \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], \"hidden\": [8, 5], \"epnet_hidden\": 6, \"aux_hidden\": 5}";

/* the pooled vector of row r of a bag, in double, as docs/model.md says it */
static void
pool_by_hand(const PnModel *m, const PnField *f, const float *table, const PnBag *bag, int r, float *out)
{
	int			k = m->cfg.emb_dim,
				e;
	int64_t		j;
	double		sw = 0,
				acc[64] = {0};

	for (j = bag->off[r]; j < bag->off[r + 1]; j++)
	{
		double		w = bag->weights ? bag->weights[j] : 1.0;

		sw += w;
		for (e = 0; e < k; e++)
			acc[e] += w * table[bag->rows[j] * k + e];
	}
	for (e = 0; e < k; e++)
		out[e] = sw > 0 ? (float) (f->pooling == PN_POOL_MEAN ? acc[e] / sw : acc[e]) : table[PN_MISSING_ROW(f) * k + e];
}

static void
test_bags(void)
{
	PnConfig	c = parse(bags_json),
				u;
	char	   *plain;
	PnModel    *m,
			   *mu;
	PnError		e = {0};
	enum
	{
		N = 40
	};
	int32_t		dom[N];
	int64_t		pers[N * 2],
				feat[N * 3],
				urow[3],
				upers[2];
	float		dense[N],
				labels[N * 2],
				lev[N * 2],
				ltr[N * 2];
	double		sc[N * 2],
				se[N * 2],
				ref[N * 2];
	TestBags	tb;
	PnBatch		b;
	PnWork	   *w;
	PnEngine   *eng = NULL;
	PnEvaluator *ev = NULL;
	PnTrainer  *tr = NULL;
	PnDomainCache *dc[2];
	int			r,
				i,
				rc = 0;
	double		worst = 0,
				worst_tr = 0,
				worst_ev = 0,
				worst_eng = 0;
	char	   *js;

	/* config: parsed, written back, rejected where wrong */
	CHECK(c.bags && c.feat[1].pooling == PN_POOL_MEAN && strcmp(c.feat[1].weights, "tw") == 0 &&
		  c.feat[2].pooling == PN_POOL_SUM && c.feat[2].weights[0] == '\0' && c.feat[0].pooling == PN_POOL_NONE &&
		  c.pers[1].pooling == PN_POOL_SUM && c.n0 == 3 * 4 + 1, "multi-valued fields parsed: pooling, weights");
	js = pn_config_to_json(&c);
	CHECK(js && strstr(js, "\"name\": \"tags\", \"buckets\": 9, \"hash\": true, \"nullable\": true, \"pooling\": \"mean\", \"weights\": \"tw\"}") &&
		  strstr(js, "\"name\": \"hist\", \"buckets\": 13, \"hash\": true, \"nullable\": true, \"pooling\": \"sum\"}") &&
		  !strstr(js, "\"name\": \"item\", \"buckets\": 11, \"hash\": true, \"nullable\": true, \"pooling\""),
		  "pooling and weights written back when set (%s)", js ? js : "");
	pn_free(js);
	config_rejects("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"pooling\": \"sum\"}]}", PN_ECONFIG, "named form");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"pooling\": \"max\"}]}", PN_ECONFIG, "\"sum\" or \"mean\"");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"weights\": \"w\"}]}", PN_ECONFIG, "no \"pooling\"");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"pooling\": \"sum\", \"weights\": \"b\"}, "
				   "{\"name\": \"b\", \"buckets\": 10}]}", PN_ECONFIG, "reads otherwise");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 10, \"pooling\": \"sum\", \"weights\": \"w\"}, "
				   "{\"name\": \"b\", \"buckets\": 10, \"pooling\": \"mean\", \"weights\": \"w\"}]}", PN_ECONFIG, "reads otherwise");

	/* the same config without pooling: the same tensors */
	plain = strdup(bags_json);
	{
		char	   *q;

		while ((q = strstr(plain, ", \"pooling\": \"mean\", \"weights\": \"tw\"")) != NULL)
			memmove(q, q + 36, strlen(q + 36) + 1);
		while ((q = strstr(plain, ", \"pooling\": \"sum\", \"weights\": \"lw\"")) != NULL)
			memmove(q, q + 35, strlen(q + 35) + 1);
		while ((q = strstr(plain, ", \"pooling\": \"sum\"")) != NULL)
			memmove(q, q + 18, strlen(q + 18) + 1);
	}
	u = parse(plain);
	CHECK(!u.bags && pn_config_numel(&u) == pn_config_numel(&c), "without pooling: the same tensors (%s)", plain);
	pn_model_new(&c, &m, &e);
	pn_model_new(&u, &mu, &e);
	randomize(m, 3);
	make_batch(&c, N, 9, dom, pers, feat, dense, labels);
	for (r = 0; r < N; r++)
		for (i = 0; i < 3; i++)
			feat[r * 3 + i] %= c.feat[i].buckets;
	make_bags(&c, N, 10, &tb);
	b.n = N;
	b.domain = dom;
	b.persona = pers;
	b.features = feat;
	b.dense = dense;
	b.labels = labels;
	b.fbag = tb.fb;
	b.pbag = tb.pb;

	/* every path of the pooled model; the persona of row 0 throughout for pn_score / the engine */
	w = pn_work_new(m, N);
	rc |= pn_engine_new(m, PN_FP32, PN_TILE, NULL, &eng, &e);
	for (i = 0; i < 2; i++)
	{
		rc |= pn_domain_build(m, i, &dc[i], &e);
		rc |= pn_engine_prepare_domain(eng, dc[i], NULL, &e);
	}
	for (r = 0; r < N && rc == 0; r++)
	{
		PnPersona  *pp = NULL,
				   *pu = NULL;
		PnBag		pv[2],
					fv[3];
		PnDomainCache *du = NULL;
		PnWork	   *wu = pn_work_new(mu, 1);
		int			t;

		/* the reference: row r's bags pooled by hand into mu's missing rows */
		memcpy(mu->data, m->data, sizeof(float) * m->total);
		for (i = 0; i < 3; i++)
		{
			urow[i] = feat[r * 3 + i];
			if (c.feat[i].pooling != PN_POOL_NONE)
			{
				pool_by_hand(m, &c.feat[i], PN_T(m, m->t_emb_feat[i]), &tb.fb[i], r,
							 PN_T(mu, mu->t_emb_feat[i]) + PN_MISSING_ROW(&c.feat[i]) * c.emb_dim);
				urow[i] = PN_MISSING_ROW(&c.feat[i]);
			}
		}
		for (i = 0; i < 2; i++)
		{
			upers[i] = pers[r * 2 + i];
			if (c.pers[i].pooling != PN_POOL_NONE)
			{
				pool_by_hand(m, &c.pers[i], PN_T(m, m->t_emb_pers[i]), &tb.pb[i], r,
							 PN_T(mu, mu->t_emb_pers[i]) + PN_MISSING_ROW(&c.pers[i]) * c.emb_dim);
				upers[i] = PN_MISSING_ROW(&c.pers[i]);
			}
		}
		rc |= pn_domain_build(mu, dom[r], &du, &e);
		rc |= pn_persona_build(mu, upers, &pu, &e);
		rc |= pn_score(mu, du, pu, wu, 1, urow, dense + r, ref + r * 2, &e);
		/* the pooled model, row r alone (views of the block's bags) */
		for (i = 0; i < 2; i++)
		{
			pv[i] = tb.pb[i];
			if (c.pers[i].pooling != PN_POOL_NONE)
				pv[i].off += r;
		}
		for (i = 0; i < 3; i++)
		{
			fv[i] = tb.fb[i];
			if (c.feat[i].pooling != PN_POOL_NONE)
				fv[i].off += r;
		}
		rc |= pn_persona_build_bags(m, pers + r * 2, pv, &pp, &e);
		rc |= pn_score_bags(m, dc[dom[r]], pp, w, 1, feat + r * 3, fv, dense + r, sc + r * 2, &e);
		for (t = 0; t < 2 && rc == 0; t++)
			worst = fmax(worst, fabs(sc[r * 2 + t] - ref[r * 2 + t]));
		pn_persona_free(pp);
		pn_persona_free(pu);
		pn_domain_free(du);
		pn_work_free(wu);
	}
	CHECK(rc == 0 && worst < 2e-6, "pooled rows (sum, weighted mean, empty, zero weight) score as the rows pooled by hand (worst %.2e) %s",
		  worst, rc ? e.msg : "");
	/* the engine's tiles over the whole block (a view per tile), persona of row 0 */
	{
		PnPersona  *pp = NULL;
		PnBag		pv[2];

		for (i = 0; i < 2; i++)
			pv[i] = tb.pb[i];
		rc |= pn_persona_build_bags(m, pers, pv, &pp, &e);
		rc |= pn_engine_score_bags(eng, dc[0], pp, N, feat, tb.fb, dense, se, NULL, &e);
		rc |= pn_score_bags(m, dc[0], pp, w, N, feat, tb.fb, dense, sc, &e);
		for (i = 0; i < N * 2 && rc == 0; i++)
			worst_eng = fmax(worst_eng, fabs(se[i] - sc[i]));
		CHECK(rc == 0 && worst_eng < 1e-5, "the engine's tiles pool as pn_score does, %d rows over %d-row tiles (worst %.2e) %s",
			  N, PN_TILE, worst_eng, rc ? e.msg : "");
		pn_persona_free(pp);
	}
	/* the evaluator (rows grouped by domain and persona bags) and the trainer's forward, every row its own */
	rc |= pn_evaluator_new(m, PN_FP32, &ev, &e);
	rc |= pn_evaluator_logits(ev, &b, lev, NULL, &e);
	rc |= pn_trainer_new(m, N, 1e-2f, &tr, &e);
	rc |= pn_train_predict(tr, &b, ltr, &e);
	for (i = 0; i < N * 2 && rc == 0; i++)
	{
		worst_ev = fmax(worst_ev, fabs(1 / (1 + exp(-(double) lev[i])) - ref[i]));
		worst_tr = fmax(worst_tr, fabs(1 / (1 + exp(-(double) ltr[i])) - ref[i]));
	}
	CHECK(rc == 0 && worst_ev < 1e-5, "the evaluator pools every row's own bags (worst %.2e) %s", worst_ev, rc ? e.msg : "");
	CHECK(rc == 0 && worst_tr < 1e-5, "the trainer's forward pools as scoring does (worst %.2e) %s", worst_tr, rc ? e.msg : "");
	/* the order of a sum's ids does not matter; an out-of-range row is refused */
	{
		int64_t    *rows = (int64_t *) tb.fb[2].rows;
		int64_t		a,
					z,
					tmp;
		int			q = 1;
		double		s2[N * 2];
		PnPersona  *pp = NULL;

		while (q < N - 1 && tb.fb[2].off[q + 1] - tb.fb[2].off[q] < 2)
			q++;
		a = tb.fb[2].off[q];
		z = tb.fb[2].off[q + 1] - 1;
		while (z > a && rows[z] == rows[a])
			z--;
		rc |= pn_persona_build_bags(m, pers, tb.pb, &pp, &e);
		rc |= pn_score_bags(m, dc[0], pp, w, N, feat, tb.fb, dense, sc, &e);
		tmp = rows[a];
		rows[a] = rows[z];
		rows[z] = tmp;
		rc |= pn_score_bags(m, dc[0], pp, w, N, feat, tb.fb, dense, s2, &e);
		CHECK(rc == 0 && z > a && fabs(s2[q * 2] - sc[q * 2]) < 1e-6 && s2[0] == sc[0],
			  "a sum's ids in another order score the same (row %d: %.9g, %.9g)", q, sc[q * 2], s2[q * 2]);
		tmp = rows[a];
		rows[a] = rows[z];
		rows[z] = tmp;
		a = tb.fb[2].off[1];
		tmp = rows[a];
		rows[a] = 13 + 1;
		CHECK(pn_score_bags(m, dc[0], pp, w, N, feat, tb.fb, dense, s2, &e) == PN_EINPUT && e.row == 1 && strstr(e.msg, "hist"),
			  "a bag's row beyond the empty row is refused, naming the field and row (%s)", e.msg);
		rows[a] = tmp;
		CHECK(pn_score(m, dc[0], pp, w, 1, feat, dense, s2, &e) == PN_EINPUT && strstr(e.msg, "multi-valued"),
			  "scoring a model with multi-valued fields without bags is refused (%s)", e.msg);
		pn_persona_free(pp);
	}
	/* lazy Adam: a step moves every pooled row (and the empty row) and no other row of the table */
	{
		float	   *before = malloc(sizeof(float) * m->total);
		const PnTensor *t = &m->tensors[m->t_emb_feat[2]];
		int			k = c.emb_dim,
					moved = 0,
					wrong = 0;
		bool		used[14] = {false};
		double		loss;
		int64_t		j;

		for (j = 0; j < tb.fb[2].off[N]; j++)
			used[tb.fb[2].rows[j]] = true;
		used[13] = true;		/* row 0's bag is empty */
		/* a row no bag uses */
		for (j = 0; j < 13 && used[j]; j++)
			;
		if (j < 13)
			used[j] = false;
		memcpy(before, m->data, sizeof(float) * m->total);
		rc = pn_train_step(tr, &b, &loss, &e);
		for (j = 0; j < 14; j++)
		{
			bool		changed = memcmp(before + t->offset + j * k, m->data + t->offset + j * k, sizeof(float) * k) != 0;

			moved += changed;
			wrong += changed != used[j];
		}
		CHECK(rc == 0 && wrong == 0 && moved > 0, "a step moves the %d rows of the bags and the empty row, no other (%d wrong) %s",
			  moved, wrong, rc ? e.msg : "");
		/* the next step's batch uses no bag of "hist": its rows keep their values (zero_grads cleared them) */
		memcpy(before, m->data, sizeof(float) * m->total);
		{
			int64_t    *off = (int64_t *) tb.fb[2].off;
			int64_t		saved[N + 1];

			memcpy(saved, off, sizeof(saved));
			for (j = 0; j <= N; j++)
				off[j] = 0;		/* every bag empty: only the empty row */
			rc = pn_train_step(tr, &b, &loss, &e);
			memcpy(off, saved, sizeof(saved));
		}
		moved = 0;
		for (j = 0; j < 13; j++)
			moved += memcmp(before + t->offset + j * k, m->data + t->offset + j * k, sizeof(float) * k) != 0;
		CHECK(rc == 0 && moved == 0 && memcmp(before + t->offset + 13 * k, m->data + t->offset + 13 * k, sizeof(float) * k) != 0,
			  "a batch of empty bags moves only the empty row (%d others moved)", moved);
		free(before);
	}
	pn_trainer_free(tr);
	pn_evaluator_free(ev);
	for (i = 0; i < 2; i++)
		pn_domain_free(dc[i]);
	pn_engine_free(eng);
	pn_work_free(w);
	tb_free(&tb);
	pn_model_free(m);
	pn_model_free(mu);
	pn_config_free(&c);
	pn_config_free(&u);
	free(plain);
}

/* Replace the first occurrence of from (same length) in a blob's header */
static void
blob_patch(uint8_t *blob, size_t len, const char *from, const char *to)
{
	uint8_t    *p = memmem(blob, len, from, strlen(from));

	if (p)
		memcpy(p, to, strlen(to));
}

/*
 * Vocabularies ("min_count"): the config key and its refusals, the int64
 * tensor in the layout (after every float tensor, untouched by init), the
 * lookup (ids of the vocabulary to rows 0..V-1, any other id to the OOV
 * row V), the safetensors round trip (dtype I64) and the import checks.
 */
static void
test_vocab(void)
{
	const char *json = "{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 6, \"min_count\": 2}, "
		"{\"name\": \"b\", \"buckets\": 9}], \"persona\": [{\"name\": \"u\", \"buckets\": 1, \"min_count\": 1}], \"emb_dim\": 3, \"hidden\": [4]}";
	PnConfig	c = parse(json),
				c2;
	PnModel    *m,
			   *m2,
			   *mb;
	PnError		e = {0};
	char	   *js;
	int64_t		ids[5] = {-9, 3, 17, 100, INT64_MAX};
	int64_t    *v;
	uint8_t    *blob,
			   *bad;
	size_t		n;
	int			x,
				i;
	bool		ok;

	config_rejects("{\"inputs\": \"columns\", \"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 6, \"min_count\": 0}]}",
				   PN_ECONFIG, "\"min_count\" must be an integer of at least 1");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 6, \"min_count\": \"2\"}]}",
				   PN_ECONFIG, "\"min_count\" must be an integer of at least 1");
	config_rejects("{\"inputs\": \"columns\", \"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 6, \"hash\": false, \"min_count\": 2}]}",
				   PN_ECONFIG, "needs a hashed field");
	config_rejects("{\"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 6, \"min_count\": 2}]}",
				   PN_ECONFIG, "min_count belongs to the named form");
	CHECK(c.feat[0].min_count == 2 && c.feat[1].min_count == 0 && c.pers[0].min_count == 1, "min_count parsed");
	js = pn_config_to_json(&c);
	CHECK(js && strstr(js, "\"buckets\": 6, \"hash\": true, \"nullable\": true, \"min_count\": 2}") &&
		  pn_config_parse(js, strlen(js), 0, &c2, &e) == PN_OK && c2.feat[0].min_count == 2,
		  "the canonical JSON keeps min_count: %s", js ? js : "(null)");
	pn_config_free(&c2);
	pn_free(js);

	CHECK(pn_model_new(&c, &m, &e) == PN_OK, "model with vocabularies");
	x = m->t_vocab_feat[0];
	CHECK(m->nvocab == 2 && m->t_vocab_feat[1] == -1 && x == m->ntensors - 2 && m->t_vocab_pers[0] == m->ntensors - 1 &&
		  m->tensors[x].i64 && !m->tensors[x].trainable && m->tensors[x].numel == 5 &&
		  strcmp(m->tensors[x].name, "vocab.feature.0") == 0 && m->tensors[m->t_vocab_pers[0]].numel == 0 &&
		  m->tensors[m->t_emb_feat[0]].shape[0] == 7 && m->tensors[x].offset % 2 == 0,
		  "vocab.feature.0 int64 [buckets - 1] and vocab.persona.0 [0], last, 8-byte aligned");
	v = (int64_t *) PN_T(m, x);
	v[0] = -9;
	v[1] = 3;
	v[2] = 17;
	v[3] = 100;
	v[4] = INT64_MAX;
	pn_model_init(m, 3);
	CHECK(v[0] == -9 && v[4] == INT64_MAX, "initialisation leaves the vocabularies alone");
	ok = m->cfg.feat[0].vocab == v && m->cfg.feat[0].nvocab == 5;
	for (i = 0; i < 5; i++)
		ok &= pn_field_row(&m->cfg.feat[0], 0, ids[i]) == i;
	CHECK(ok, "vocabulary ids map to rows 0..V-1");
	CHECK(pn_field_row(&m->cfg.feat[0], 0, 4) == 5 && pn_field_row(&m->cfg.feat[0], 0, -10) == 5 &&
		  pn_field_row(&m->cfg.feat[0], 0, INT64_MIN) == 5 && pn_field_row(&m->cfg.feat[0], 0, 101) == 5 &&
		  PN_OOV_ROW(&m->cfg.feat[0]) == 5 && PN_MISSING_ROW(&m->cfg.feat[0]) == 6,
		  "ids outside the vocabulary map to the OOV row V = buckets - 1; the missing row stays buckets");
	CHECK(pn_field_row(&m->cfg.pers[0], 0, 42) == 0 && pn_field_row(&m->cfg.feat[1], 1, 42) == pn_field_row(&c.feat[1], 1, 42),
		  "an empty vocabulary maps every id to its OOV row; other fields hash as before");
	CHECK(pn_field_row(&c.feat[0], 0, 3) == -1, "a vocabulary field without its vocabulary attached has no row");

	/* safetensors: dtype I64, the same bytes back, the vocabulary attached after reading */
	n = pn_safetensors_size(m);
	blob = malloc(n);
	pn_safetensors_write(m, blob);
	CHECK(memmem(blob, n, "\"vocab.feature.0\":{\"dtype\":\"I64\",\"shape\":[5]", 44) != NULL, "exported as I64 [5]");
	CHECK(pn_model_new(&c, &m2, &e) == PN_OK && pn_safetensors_read(m2, blob, n, &e) == PN_OK &&
		  m2->cfg.feat[0].vocab == (const int64_t *) PN_T(m2, x) && pn_field_row(&m2->cfg.feat[0], 0, 100) == 3,
		  "read back: the vocabulary attached (%s)", e.msg);
	{
		uint8_t    *again = malloc(n);

		pn_safetensors_write(m2, again);
		CHECK(memcmp(blob, again, n) == 0, "round trip bit for bit");
		free(again);
	}
	/* a blob read in place (pn_model_layout) points its vocabulary into the blob, or copies it */
	CHECK(pn_model_layout(&c, &mb, &e) == PN_OK && pn_safetensors_read(mb, blob, n, &e) == PN_OK &&
		  pn_field_row(&mb->cfg.feat[0], 0, INT64_MAX) == 4 && pn_field_row(&mb->cfg.feat[0], 0, 5) == 5,
		  "read into a layout: lookups work (%s)", e.msg);
	pn_model_free(mb);
	bad = malloc(n);
	memcpy(bad, blob, n);
	blob_patch(bad, n, "\"vocab.feature.0\":{\"dtype\":\"I64\"", "\"vocab.feature.0\":{\"dtype\":\"F32\"");
	e.msg[0] = 0;
	CHECK(pn_safetensors_read(m2, bad, n, &e) == PN_EFORMAT && strstr(e.msg, "has dtype F32, expected I64"),
		  "import refuses a vocabulary of dtype F32 (%s)", e.msg);
	memcpy(bad, blob, n);
	blob_patch(bad, n, "\"emb.feature.0\":{\"dtype\":\"F32\"", "\"emb.feature.0\":{\"dtype\":\"I64\"");
	CHECK(pn_safetensors_read(m2, bad, n, &e) == PN_EFORMAT && strstr(e.msg, "has dtype I64, expected F32"),
		  "import refuses a float tensor of dtype I64 (%s)", e.msg);
	{
		uint64_t	hl = 0;
		uint8_t    *d;
		const char *key = "\"vocab.feature.0\":{\"dtype\":\"I64\",\"shape\":[5],\"data_offsets\":[";
		uint8_t    *p;

		for (i = 7; i >= 0; i--)
			hl = (hl << 8) | blob[i];
		p = memmem(blob, n, key, strlen(key));
		d = bad + 8 + hl + strtoull((const char *) p + strlen(key), NULL, 10);
		memcpy(bad, blob, n);
		memcpy(d + 8, d + 16, 8);	/* ids -9, 17, 17, 100, max */
		CHECK(pn_safetensors_read(m2, bad, n, &e) == PN_EFORMAT && strstr(e.msg, "not ascending and unique at element 2"),
			  "import refuses a repeated id (%s)", e.msg);
		memcpy(bad, blob, n);
		memcpy(d, d + 32, 8);	/* ids max, 3, ... */
		CHECK(pn_safetensors_read(m2, bad, n, &e) == PN_EFORMAT && strstr(e.msg, "not ascending and unique at element 1"),
			  "import refuses ids out of order (%s)", e.msg);
	}
	free(bad);
	free(blob);
	/* the layout without the vocabularies (Adam's moments) leaves the fields' vocabularies alone */
	{
		PnModel		mm = *m2;

		mm.ntensors -= mm.nvocab;
		mm.nvocab = 0;
		pn_model_attach_vocab(&mm);
		CHECK(m2->cfg.feat[0].vocab == (const int64_t *) PN_T(m2, x), "a moments layout does not re-point the vocabularies");
	}
	pn_model_free(m2);
	pn_model_free(m);
	pn_config_free(&c);
}

/* a tensor's shape is [a, b] (b < 0: one dimension [a]) */
static bool
shape_is(const PnModel *m, int x, int64_t a, int64_t b)
{
	const PnTensor *t;

	if (x < 0 || x >= m->ntensors)
		return false;
	t = &m->tensors[x];
	if (b < 0)
		return t->ndim == 1 && t->shape[0] == a;
	return t->ndim == 2 && t->shape[0] == a && t->shape[1] == b;
}

/*
 * The layer plan of a config (plan.c): every layer's shapes are its
 * tensors' shapes, the layers chain (each reads the width its input
 * activation has), every weight matrix is one layer's, x0's segments tile
 * [0, n0) and pv's [0, P*k), and the size table holds every layer's output.
 */
static void
test_plan(const char *json, const char *what, int expect_layers)
{
	PnConfig	c = parse(json);
	PnModel    *m = NULL;
	PnError		e = {0};
	const PnPlan *p;
	int			i,
				x,
				end,
				nweights = 0,
				bad = 0,
				T,
				L,
				k;
	int		   *seen;

	if (pn_model_new(&c, &m, &e) != PN_OK)
	{
		CHECK(0, "plan (%s): model: %s", what, e.msg);
		pn_config_free(&c);
		return;
	}
	p = m->plan;
	T = c.ntasks;
	L = c.nhidden;
	k = c.emb_dim;
	CHECK(p != NULL && p->nlayers == expect_layers, "plan (%s): %d layers (expected %d)", what,
		  p ? p->nlayers : -1, expect_layers);
	seen = calloc(m->ntensors, sizeof(int));
	for (i = 0; i < p->nlayers; i++)
	{
		const PnLayer *ly = &p->layers[i];
		int			inw;

		/* the shapes of its tensors */
		if (!shape_is(m, ly->w, ly->nout, ly->ldw) || !shape_is(m, ly->b, ly->nout, -1) || ly->ldw != ly->npre + ly->nin)
			bad++, printf("# layer %d: weight %s or bias shape differs\n", i, ly->w >= 0 ? m->tensors[ly->w].name : "?");
		if (c.star && (ly->part == PN_PART_TOWER || ly->part == PN_PART_OUTPUT))
		{
			const PnTensor *dw = &m->tensors[ly->dw];

			if (!(dw->ndim == 3 && dw->shape[0] == c.domains && dw->shape[1] == ly->nout && dw->shape[2] == ly->nin) ||
				!shape_is(m, ly->db, c.domains, ly->nout))
				bad++, printf("# layer %d: STAR domain tensors' shapes differ\n", i);
		}
		else if (ly->dw != -1 || ly->db != -1)
			bad++, printf("# layer %d: domain tensors without STAR\n", i);
		/* its prefix and input widths are those of the size table */
		if (ly->pre != PN_ACT_NONE && ly->npre != p->width[ly->pre])
			bad++, printf("# layer %d: prefix width %d\n", i, ly->npre);
		if (ly->in == PN_ACT_A)
			inw = c.hidden[ly->in_layer - 1];
		else if (ly->in == PN_ACT_GH)
			inw = T * c.hidden[ly->in_layer];
		else
			inw = p->width[ly->in];
		if (ly->nin != inw)
			bad++, printf("# layer %d: reads %d columns, its input has %d\n", i, ly->nin, inw);
		/* its output fits the size table */
		if (ly->out == PN_ACT_A || ly->out == PN_ACT_G || ly->out == PN_ACT_GH)
		{
			if ((ly->part == PN_PART_TOWER ? T * ly->nout : ly->nout) > p->width[ly->out])
				bad++, printf("# layer %d: output wider than the size table's\n", i);
		}
		else if (ly->out == PN_ACT_LOGIT ? (ly->nout != 1 && ly->nout != T) : ly->nout != p->width[ly->out])
			bad++, printf("# layer %d: output width %d, size table %d\n", i, ly->nout, p->width[ly->out]);
		/* gates multiply the tower layer of their index */
		if (ly->part == PN_PART_TOWER)
		{
			if (c.ppnet ? (ly->gate < 0 || p->layers[ly->gate].part != PN_PART_PPNET ||
						   p->layers[ly->gate].step != 2 || p->layers[ly->gate].layer != ly->layer - 1 ||
						   p->layers[ly->gate].nout != T * ly->nout) : ly->gate != -1)
				bad++, printf("# layer %d: gate hookup\n", i);
		}
		if (ly->w >= 0 && ly->w < m->ntensors)
			seen[ly->w]++;
	}
	for (x = 0; x < m->ntensors; x++)
		if (m->tensors[x].kind == PNT_WEIGHT || strstr(m->tensors[x].name, "tower.") == m->tensors[x].name)
		{
			if (m->tensors[x].kind == PNT_WEIGHT)
				nweights++;
			if (m->tensors[x].kind == PNT_WEIGHT && seen[x] != 1)
				bad++, printf("# tensor %s is %d layers' weight\n", m->tensors[x].name, seen[x]);
		}
	free(seen);
	CHECK(bad == 0 && nweights > 0, "plan (%s): every layer's shapes are its tensors', the layers chain, every weight matrix is one layer's", what);

	/* x0's segments tile [0, n0) in order, pv's [0, P*k) */
	bad = 0;
	end = 0;
	for (i = 0; i < p->nx0seg; i++)
	{
		const PnSeg *s = &p->x0seg[i];

		if (s->off != end || s->width <= 0)
			bad++;
		if (s->kind == PN_SEG_ID || s->kind == PN_SEG_BAG)
		{
			if (s->width != k || s->table != m->t_emb_feat[s->field] ||
				(s->kind == PN_SEG_BAG) != (c.feat[s->field].pooling != PN_POOL_NONE))
				bad++;
		}
		else if (s->kind == PN_SEG_DENSE ? s->width != c.dense : (s->width != k || s->table != m->t_emb_dom || !c.domain_input))
			bad++;
		end = s->off + s->width;
	}
	CHECK(bad == 0 && end == c.n0 && p->width[PN_ACT_X0] == c.n0,
		  "plan (%s): x0's %d segments tile [0, %d)", what, p->nx0seg, c.n0);
	bad = 0;
	end = 0;
	for (i = 0; i < p->npvseg; i++)
	{
		const PnSeg *s = &p->pvseg[i];

		if (s->off != end || s->width != k || s->table != m->t_emb_pers[s->field] ||
			(s->kind == PN_SEG_BAG) != (c.pers[s->field].pooling != PN_POOL_NONE))
			bad++;
		end = s->off + s->width;
	}
	CHECK(bad == 0 && end == c.pk && p->npvseg == c.npers, "plan (%s): pv's segments tile [0, %d)", what, c.pk);
	/* the size table against the tensors the paths read */
	CHECK(p->width[PN_ACT_IN_E] == k + c.n0 && p->width[PN_ACT_IN_P] == c.pk + c.n0 &&
		  p->width[PN_ACT_EH] == (c.epnet ? (int) m->tensors[m->t_ep_w1].shape[0] : 0) &&
		  p->width[PN_ACT_AH] == (c.aux ? (int) m->tensors[m->t_aux_w1].shape[0] : 0) &&
		  p->width[PN_ACT_LOGIT] == T && p->wide == T * p->hmax &&
		  p->width[PN_ACT_G] == (c.ppnet ? p->wide : 0) &&
		  (!c.ppnet || (int) m->tensors[m->t_pp_w1[0]].shape[1] == p->width[PN_ACT_IN_P]) &&
		  (!c.epnet || (int) m->tensors[m->t_ep_w1].shape[1] == p->width[PN_ACT_IN_E]),
		  "plan (%s): the size table's widths are the tensors'", what);
	/* the readers of x0 and x (the fallback's merged matmuls) */
	{
		int			idx[64],
					n0r = pn_plan_readers(p, PN_ACT_X0, 0, idx),
					nxr = pn_plan_readers(p, PN_ACT_X, 0, idx),
					nx = pn_plan_readers(p, PN_ACT_XN, 0, idx);

		CHECK(n0r == (c.epnet ? 1 : 0) + (c.aux ? 1 : 0) && nxr == (c.ppnet ? L : 0) && nx == T,
			  "plan (%s): %d layers read x0, %d x, %d xn", what, n0r, nxr, nx);
	}
	/* a domain cache's arrays (what the shared cache copies): sized by the size table, dc's own */
	{
		PnDomainCache *dc = NULL;
		float	 ***slot = malloc(sizeof(float **) * PN_DOMAIN_MAX_ARRAYS(&c));
		size_t	   *fl = malloc(sizeof(size_t) * PN_DOMAIN_MAX_ARRAYS(&c)),
				   *fl2 = malloc(sizeof(size_t) * PN_DOMAIN_MAX_ARRAYS(&c)),
					sum = 0;
		int			n = 0,
					n2 = -1,
					ok = 0,
					want = (c.epnet ? 1 : 0) + (c.aux ? 1 : 0) + 2 + 2 * T * L;

		pn_model_init(m, 7);
		if (pn_domain_build(m, c.domains - 1, &dc, &e) == PN_OK)
		{
			n = pn_domain_arrays(m, dc, slot, fl);
			n2 = pn_domain_arrays(m, NULL, NULL, fl2);
			ok = n == want && n2 == n && n <= PN_DOMAIN_MAX_ARRAYS(&c);
			for (i = 0; ok && i < n; i++)
			{
				ok = *slot[i] != NULL && fl[i] == fl2[i] && fl[i] > 0;
				sum += fl[i];
			}
			i = 0;
			if (ok && c.epnet)
				ok = slot[i] == &dc->ep_bias && fl[i++] == (size_t) p->width[PN_ACT_EH];
			if (ok && c.aux)
				ok = slot[i] == &dc->aux_bias && fl[i++] == (size_t) p->width[PN_ACT_AH];
			ok = ok && slot[i] == &dc->w1 && fl[i] == (size_t) T * c.hidden[0] * p->width[PN_ACT_XN] &&
				slot[i + 1] == &dc->b1 && fl[i + 1] == (size_t) T * c.hidden[0] && sum * sizeof(float) == dc->bytes;
		}
		CHECK(ok, "plan (%s): the domain cache's %d arrays (expected %d) are sized by the plan, %zu bytes (%s)",
			  what, n, want, sum * sizeof(float), e.msg);
		pn_domain_free(dc);
		free(slot);
		free(fl);
		free(fl2);
	}
	pn_model_free(m);
	pn_config_free(&c);
}


/*
 * test_core [--any-matmul]: with --any-matmul the oneDNN matmul primitives
 * take any implementation (pn_dnnl_any_impl), so that on a CPU without
 * brgemm kernels (AVX2) the engine's oneDNN tiles and the trainer's
 * primitives are the paths tested rather than the fallback and OpenBLAS
 */
int
main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--any-matmul") == 0)
	{
		pn_dnnl_any_impl = true;
		printf("# --any-matmul: oneDNN matmuls of any implementation (the engine's tiles on this CPU)\n");
	}
	test_hash();
	test_config();
	test_named();
	test_vocab();
	test_utf8_messages();
	test_by_hand();
	test_safetensors();
	test_bad_ids();
	test_rowwise_gemm();
	/* the layer plan: T = 2, L = 3 with every part: 2 + 3 * (2 + 2) + 2 + 2 */
	test_plan("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], "
			  "\"persona\": [{\"name\": \"u\", \"buckets\": 40}, {\"name\": \"g\", \"buckets\": 3, \"hash\": false}], "
			  "\"dense\": 3, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], \"hidden\": [8, 6, 5], \"epnet_hidden\": 7, \"aux_hidden\": 5}",
			  "all parts on", 18);
	test_plan("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 4, \"hidden\": [8, 4], "
			  "\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false, \"domain_input\": true}",
			  "shared bottom, domain_input", 3);
	test_plan("{\"inputs\": \"columns\", \"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}, "
			  "{\"name\": \"t\", \"buckets\": 9, \"pooling\": \"mean\", \"weights\": \"tw\"}, {\"name\": \"h\", \"buckets\": 8, \"pooling\": \"sum\"}], "
			  "\"persona\": [{\"name\": \"u\", \"buckets\": 7}, {\"name\": \"l\", \"buckets\": 8, \"pooling\": \"mean\"}], "
			  "\"dense\": [{\"name\": \"p\"}], \"emb_dim\": 3, \"tasks\": [\"click\", \"buy\"], \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4}",
			  "multi-valued fields", 14);
	test_plan("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"persona\": [{\"name\": \"u\", \"buckets\": 9}], "
			  "\"emb_dim\": 3, \"hidden\": [8], \"tasks\": [\"a\", \"b\", \"c\"], \"pn\": false, \"star\": false, \"aux\": false}", "PEPNet only", 10);
	test_plan("{\"domains\": 4, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 3, \"hidden\": [8, 8], "
			  "\"epnet\": false, \"ppnet\": false}", "STAR only", 5);
	test_plan("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], "
			  "\"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 1, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], "
			  "\"hidden\": [8, 6], \"epnet_hidden\": 7, \"aux_hidden\": 5, \"pn\": false, \"domain_input\": true}",
			  "every part but PN on, domain_input", 14);
	test_panels_gemm();
	test_engine_small("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 500}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], "
					  "\"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 3, \"emb_dim\": 8, "
					  "\"tasks\": [\"click\", \"buy\"], \"hidden\": [37, 19], \"epnet_hidden\": 21, \"aux_hidden\": 11}",
					  "all parts on, odd widths");
	if (!getenv("PN_TEST_QUICK"))
		test_engine_small("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 5000}, {\"name\": \"b\", \"buckets\": 64}, "
						  "{\"name\": \"c\", \"buckets\": 100}, {\"name\": \"d\", \"buckets\": 100}], \"persona\": [{\"name\": \"u\", \"buckets\": 100}], "
						  "\"emb_dim\": 16, \"tasks\": [\"click\", \"buy\"], \"hidden\": [256, 128]}",
						  "the bench model's widths, 4 features");
	test_engine_positions("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 500}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}, "
						  "{\"name\": \"c\", \"buckets\": 90}], \"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 5, \"emb_dim\": 16, "
						  "\"tasks\": [\"click\", \"buy\"], \"hidden\": [37, 19], \"epnet_hidden\": 21, \"aux_hidden\": 11}",
						  "all parts on, odd widths");
	if (!getenv("PN_TEST_QUICK"))	/* the bench model's widths: minutes under valgrind */
		test_engine_positions("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 5000}, {\"name\": \"b\", \"buckets\": 64}, "
						  "{\"name\": \"c\", \"buckets\": 100}, {\"name\": \"d\", \"buckets\": 100}], \"persona\": [{\"name\": \"u\", \"buckets\": 100}], "
						  "\"emb_dim\": 16, \"tasks\": [\"click\", \"buy\"], \"hidden\": [256, 128]}",
						  "the bench model's widths, 4 features");
	test_int8_quantizer();
	test_int8_widths();
	test_int8_gemm();
	test_engine_int8("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 500}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}, "
					 "{\"name\": \"c\", \"buckets\": 90}], \"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 5, \"emb_dim\": 16, "
					 "\"tasks\": [\"click\", \"buy\"], \"hidden\": [37, 19], \"epnet_hidden\": 21, \"aux_hidden\": 11}",
					 "all parts on, odd widths");
	test_engine_int8("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 3, \"hidden\": [8, 8], "
					 "\"epnet\": false, \"ppnet\": false}", "STAR only");
	test_engine_int8("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], "
					 "\"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 1, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], "
					 "\"hidden\": [8, 6, 5], \"epnet_hidden\": 7, \"aux_hidden\": 5, \"pn\": false, \"domain_input\": true}",
					 "every part but PN on, three layers, domain_input");
	if (!getenv("PN_TEST_QUICK"))
		test_engine_int8("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 5000}, {\"name\": \"b\", \"buckets\": 64}, "
						 "{\"name\": \"c\", \"buckets\": 100}, {\"name\": \"d\", \"buckets\": 100}], \"persona\": [{\"name\": \"u\", \"buckets\": 100}], "
						 "\"emb_dim\": 16, \"tasks\": [\"click\", \"buy\"], \"hidden\": [256, 128]}",
						 "the bench model's widths, 4 features");
	test_score_vs_ref("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], "
					  "\"persona\": [{\"name\": \"u\", \"buckets\": 40}, {\"name\": \"g\", \"buckets\": 3, \"hash\": false}], "
					  "\"dense\": 3, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], \"hidden\": [8, 6, 5], \"epnet_hidden\": 7, \"aux_hidden\": 5}",
					  "all parts on");
	test_score_vs_ref("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"emb_dim\": 4, \"hidden\": [8, 4], "
					  "\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false}", "shared MLP");
	test_score_vs_ref("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"persona\": [{\"name\": \"u\", \"buckets\": 9}], "
					  "\"emb_dim\": 3, \"hidden\": [8], \"tasks\": [\"a\", \"b\", \"c\"], \"pn\": false, \"star\": false, \"aux\": false}", "PEPNet");
	test_score_vs_ref("{\"domains\": 4, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 3, \"hidden\": [8, 8], "
					  "\"epnet\": false, \"ppnet\": false}", "STAR");
	test_score_vs_ref("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 1, \"emb_dim\": 3, \"hidden\": [6], "
					  "\"negative_rate\": [0.05, 0.5, 1]}", "negative down-sampling per domain");
	test_score_vs_ref("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 4, \"hidden\": [8, 4], "
					  "\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false, \"domain_input\": true}",
					  "shared-bottom (all off, domain_input)");
	test_score_vs_ref("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], "
					  "\"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 1, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], "
					  "\"hidden\": [8, 6], \"epnet_hidden\": 7, \"aux_hidden\": 5, \"pn\": false, \"domain_input\": true}",
					  "every part but PN on, domain_input");
	test_domain_input();
	test_gradcheck("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}, {\"name\": \"b\", \"buckets\": 5, \"hash\": false}], "
				   "\"persona\": [{\"name\": \"u\", \"buckets\": 5}, {\"name\": \"g\", \"buckets\": 3, \"hash\": false}], "
				   "\"dense\": 2, \"emb_dim\": 3, \"tasks\": [\"click\", \"buy\"], \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4, \"l2\": 0.01}",
				   "all parts on");
	test_gradcheck("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 7}], \"emb_dim\": 3, \"hidden\": [5], "
				   "\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false}", "shared MLP");
	test_gradcheck("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}], \"dense\": 1, \"emb_dim\": 3, \"hidden\": [5, 3], "
				   "\"epnet\": false, \"ppnet\": false}", "STAR");
	test_gradcheck("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}], \"dense\": 1, \"emb_dim\": 3, \"hidden\": [5], "
				   "\"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false, \"domain_input\": true}",
				   "shared-bottom (all off, domain_input)");
	test_gradcheck("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}, {\"name\": \"b\", \"buckets\": 5, \"hash\": false}], "
				   "\"persona\": [{\"name\": \"u\", \"buckets\": 5}], \"dense\": 2, \"emb_dim\": 3, \"tasks\": [\"click\", \"buy\"], "
				   "\"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4, \"l2\": 0.01, \"pn\": false, \"domain_input\": true}",
				   "every part but PN on, domain_input");
	/* a full batch: oneDNN matmul primitives; domain 0 holds 149 rows = two 64-row tower tiles + 21 */
	test_gradcheck_n("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 7}, {\"name\": \"b\", \"buckets\": 5, \"hash\": false}], "
					 "\"persona\": [{\"name\": \"u\", \"buckets\": 5}], "
					 "\"dense\": 2, \"emb_dim\": 3, \"tasks\": [\"click\", \"buy\"], \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4, \"l2\": 0.01}",
					 "all parts on, a full batch of 150 rows (oneDNN primitives, 64-row tower tiles)", 150, 150);
	test_bags();
	test_gradcheck("{\"inputs\": \"columns\", \"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}, "
				   "{\"name\": \"t\", \"buckets\": 9, \"pooling\": \"mean\", \"weights\": \"tw\"}, {\"name\": \"h\", \"buckets\": 8, \"pooling\": \"sum\"}], "
				   "\"persona\": [{\"name\": \"u\", \"buckets\": 7}, {\"name\": \"l\", \"buckets\": 8, \"pooling\": \"mean\"}, "
				   "{\"name\": \"s\", \"buckets\": 8, \"pooling\": \"sum\", \"weights\": \"sw\"}], "
				   "\"dense\": [{\"name\": \"p\"}], \"emb_dim\": 3, \"tasks\": [\"click\", \"buy\"], \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4, \"l2\": 0.01}",
				   "multi-valued fields: sum and mean, weighted, empty bags, zero weights");
	test_gradcheck_n("{\"inputs\": \"columns\", \"domains\": 2, \"features\": [{\"name\": \"t\", \"buckets\": 9, \"pooling\": \"mean\", \"weights\": \"tw\"}, "
					 "{\"name\": \"h\", \"buckets\": 8, \"pooling\": \"sum\"}], \"persona\": [{\"name\": \"s\", \"buckets\": 8, \"pooling\": \"sum\", \"weights\": \"sw\"}], "
					 "\"emb_dim\": 3, \"hidden\": [6], \"epnet_hidden\": 5, \"aux_hidden\": 4}",
					 "multi-valued fields, a full batch of 150 rows (oneDNN primitives)", 150, 150);
	test_training_learns();
	test_pn_running_stats();
	test_optional_count();
	test_pack_share();
	printf("%d passed, %d failed\n", npass, nfail);
	return nfail ? 1 : 0;
}
