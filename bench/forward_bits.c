/*
 * forward_bits.c
 *		A fingerprint (FNV-1a of the bytes) of what every forward path
 *		computes for a few configs (all parts on, shared bottom with
 *		domain_input, multi-valued fields, PEPNet only, STAR with negative
 *		down-sampling, every part but PN with domain_input, the bench
 *		model's widths): pn_score_bags (the GEMV scorer), the batched
 *		engine, the evaluator, and four training steps (losses, logits, the
 *		weights after them).  Built against two trees, equal output means a
 *		refactoring of the core changed no bit of any path on this CPU.
 *
 *		cc -std=gnu99 -O3 -fno-math-errno -fno-trapping-math -Isrc/core -o /tmp/forward_bits \
 *			bench/forward_bits.c src/core/*.c -ldnnl -lgomp -lopenblas -lm
 *		/tmp/forward_bits
 */
#include "pncore.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t h64(const void *p, size_t n, uint64_t h)
{ const unsigned char *c = p; for (size_t i = 0; i < n; i++) { h ^= c[i]; h *= 1099511628211ULL; } return h; }
static uint64_t rs = 88172645463325252ULL;
static uint64_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs; }
static float rf(void) { return (float) ((rnd() >> 11) * (1.0 / 9007199254740992.0)); }

static void run(const char *json)
{
	PnConfig c; PnError e = {0}; PnModel *m; int n = 37, i, j, F, P, T;
	if (pn_config_parse(json, strlen(json), (int64_t) 1 << 32, &c, &e) || pn_model_new(&c, &m, &e)) { printf("ERR %s\n", e.msg); exit(1); }
	pn_model_init(m, 3);
	/* perturb PN stats and STAR domain weights so they matter */
	for (i = 0; i < m->ntensors; i++) if (!m->tensors[i].i64 && (strstr(m->tensors[i].name, "domain_") || strstr(m->tensors[i].name, "running") || strstr(m->tensors[i].name, "pn.")))
		for (j = 0; j < m->tensors[i].numel; j++) PN_T(m, i)[j] += 0.1f * rf();
	F = c.nfeat; P = c.npers; T = c.ntasks;
	int64_t *feat = malloc(8 * n * (F + 1)), *pers = malloc(8 * n * (P + 1)); float *dense = malloc(4 * n * (c.dense + 1)), *lab = malloc(4 * n * T);
	int32_t *dom = malloc(4 * n);
	PnBag fbag[16], pbag[16]; int64_t off[16][64]; int64_t rows[16][512]; float wts[16][512];
	for (i = 0; i < n * F; i++) feat[i] = rnd() % 5;
	for (i = 0; i < n * P; i++) pers[i] = rnd() % 3;
	for (i = 0; i < n * c.dense; i++) dense[i] = rf() * 2 - 1;
	for (i = 0; i < n * T; i++) lab[i] = (rnd() % 3) == 0;
	for (i = 0; i < n; i++) dom[i] = rnd() % c.domains;
	for (j = 0; j < 16; j++) { int q = 0; off[j][0] = 0; for (i = 0; i < n; i++) { int cnt = rnd() % 4; while (cnt--) { rows[j][q] = rnd() % 5; wts[j][q] = rf(); q++; } off[j][i + 1] = q; }
		fbag[j].off = off[j]; fbag[j].rows = rows[j]; fbag[j].weights = (j & 1) ? wts[j] : NULL; pbag[j] = fbag[j]; }
	PnBag *fb = c.bags ? fbag : NULL, *pb = c.bags ? pbag : NULL;
	uint64_t hs = 1469598103934665603ULL, he = hs, ht = hs, hv = hs;
	PnDomainCache *dc; PnPersona *pp; double *out = malloc(8 * n * T); float *lg = malloc(4 * n * T);
	PnWork *w = pn_work_new(m, n); PnEngine *eng;
	if (pn_engine_new(m, PN_FP32, PN_TILE, NULL, &eng, &e)) { printf("ERR %s\n", e.msg); exit(1); }
	for (int d = 0; d < c.domains; d++) {
		if (pn_domain_build(m, d, &dc, &e) || pn_persona_build_bags(m, pers, pb, &pp, &e)) { printf("ERR %s\n", e.msg); exit(1); }
		if (pn_score_bags(m, dc, pp, w, n, feat, fb, dense, out, &e)) { printf("ERR %s\n", e.msg); exit(1); }
		hs = h64(out, 8 * n * T, hs);
		if (pn_score_bags(m, dc, pp, w, 1, feat, fb, dense, out, &e)) { printf("ERR %s\n", e.msg); exit(1); }
		hs = h64(out, 8 * T, hs);
		if (pn_engine_prepare_domain(eng, dc, NULL, &e) || pn_engine_score_bags(eng, dc, pp, n, feat, fb, dense, out, NULL, &e)) { printf("ERR %s\n", e.msg); exit(1); }
		he = h64(out, 8 * n * T, he);
		pn_domain_free(dc); pn_persona_free(pp);
	}
	PnBatch b = {n, dom, pers, feat, c.dense ? dense : NULL, lab, fb, pb};
	PnEvaluator *ev;
	if (pn_evaluator_new(m, PN_FP32, &ev, &e) || pn_evaluator_logits(ev, &b, lg, NULL, &e)) { printf("ERR ev %s\n", e.msg); exit(1); }
	hv = h64(lg, 4 * n * T, hv); pn_evaluator_free(ev);
	PnTrainer *tr; double loss;
	if (pn_trainer_new(m, 64, 1e-2f, &tr, &e)) { printf("ERR %s\n", e.msg); exit(1); }
	for (i = 0; i < 4; i++) { if (pn_train_step(tr, &b, &loss, &e)) { printf("ERR tr %s\n", e.msg); exit(1); } ht = h64(&loss, 8, ht); }
	if (pn_train_predict(tr, &b, lg, &e)) { printf("ERR %s\n", e.msg); exit(1); }
	ht = h64(lg, 4 * n * T, ht); ht = h64(m->data, 4 * (size_t) m->total, ht);
	printf("score %016llx engine %016llx eval %016llx train %016llx\n", (unsigned long long) hs, (unsigned long long) he, (unsigned long long) hv, (unsigned long long) ht);
	pn_trainer_free(tr); pn_engine_free(eng); pn_work_free(w); pn_model_free(m); pn_config_free(&c);
}

int main(void)
{
	run("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], \"persona\": [{\"name\": \"u\", \"buckets\": 40}, {\"name\": \"g\", \"buckets\": 3, \"hash\": false}], \"dense\": 3, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], \"hidden\": [8, 6, 5], \"epnet_hidden\": 7, \"aux_hidden\": 5}");
	run("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 4, \"hidden\": [8, 4], \"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, \"aux\": false, \"domain_input\": true}");
	run("{\"inputs\": \"columns\", \"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 7}, {\"name\": \"t\", \"buckets\": 9, \"pooling\": \"mean\", \"weights\": \"tw\"}, {\"name\": \"h\", \"buckets\": 8, \"pooling\": \"sum\"}], \"persona\": [{\"name\": \"u\", \"buckets\": 7}, {\"name\": \"l\", \"buckets\": 8, \"pooling\": \"mean\"}, {\"name\": \"s\", \"buckets\": 8, \"pooling\": \"sum\", \"weights\": \"sw\"}], \"dense\": [{\"name\": \"p\"}], \"emb_dim\": 3, \"tasks\": [\"click\", \"buy\"], \"hidden\": [6, 4], \"epnet_hidden\": 5, \"aux_hidden\": 4, \"l2\": 0.01}");
	run("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"persona\": [{\"name\": \"u\", \"buckets\": 9}], \"emb_dim\": 3, \"hidden\": [8], \"tasks\": [\"a\", \"b\", \"c\"], \"pn\": false, \"star\": false, \"aux\": false}");
	run("{\"domains\": 4, \"features\": [{\"name\": \"a\", \"buckets\": 50}], \"dense\": 2, \"emb_dim\": 3, \"hidden\": [8, 8], \"epnet\": false, \"ppnet\": false, \"negative_rate\": [0.1, 0.5, 1, 0.3]}");
	run("{\"domains\": 3, \"features\": [{\"name\": \"a\", \"buckets\": 50}, {\"name\": \"b\", \"buckets\": 7, \"hash\": false}], \"persona\": [{\"name\": \"u\", \"buckets\": 40}], \"dense\": 1, \"emb_dim\": 4, \"tasks\": [\"click\", \"buy\"], \"hidden\": [8, 6], \"epnet_hidden\": 7, \"aux_hidden\": 5, \"pn\": false, \"domain_input\": true}");
	run("{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 5000}, {\"name\": \"b\", \"buckets\": 64}, {\"name\": \"c\", \"buckets\": 100}, {\"name\": \"d\", \"buckets\": 100}], \"persona\": [{\"name\": \"u\", \"buckets\": 100}], \"emb_dim\": 16, \"tasks\": [\"click\", \"buy\"], \"hidden\": [256, 128]}");
	return 0;
}
