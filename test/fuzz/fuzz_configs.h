/*
 * fuzz_configs.h
 *		The fixed configurations the safetensors fuzz target lays models out
 *		for; shared with make_corpus.c so the seed blobs match.  The first
 *		byte of a fuzz input picks one (byte % PN_FUZZ_NCONFIGS).  They are
 *		small so that a valid blob fits well inside -max_len.
 */
#ifndef PN_FUZZ_CONFIGS_H
#define PN_FUZZ_CONFIGS_H

static const char *const pn_fuzz_configs[] = {
	/* 0: every part on, two tasks, persona, dense, a non-hashed field */
	"{\"domains\": 2, \"features\": [{\"name\": \"a\", \"buckets\": 3}, "
	"{\"name\": \"b\", \"buckets\": 4, \"hash\": false}], "
	"\"persona\": [{\"name\": \"p\", \"buckets\": 2}], \"dense\": 1, \"emb_dim\": 2, "
	"\"tasks\": [\"click\", \"like\"], \"hidden\": [3, 2], \"epnet_hidden\": 2, "
	"\"aux_hidden\": 2}",
	/* 1: the smallest model: one feature, one layer, every part off */
	"{\"domains\": 1, \"features\": [{\"name\": \"f\", \"buckets\": 2}], \"emb_dim\": 1, "
	"\"hidden\": [1], \"epnet\": false, \"ppnet\": false, \"pn\": false, \"star\": false, "
	"\"aux\": false}",
	/* 2: dense input only, three domains, STAR + PN + EPNet (epnet_hidden = n0) */
	"{\"domains\": 3, \"features\": [], \"dense\": 2, \"emb_dim\": 1, \"hidden\": [2], "
	"\"epnet_hidden\": null, \"ppnet\": false, \"aux\": false}",
	/* 3: three tasks, three layers, PPNet and aux on, STAR and PN off */
	"{\"domains\": 2, \"features\": [{\"name\": \"x\", \"buckets\": 2}], "
	"\"persona\": [{\"name\": \"u\", \"buckets\": 2}, {\"name\": \"v\", \"buckets\": 1}], "
	"\"emb_dim\": 1, \"tasks\": [\"t1\", \"t2\", \"t3\"], \"hidden\": [2, 1, 1], "
	"\"star\": false, \"pn\": false, \"epnet\": false, \"aux_hidden\": 1}",
	/* 4: the named form with vocabularies (int64 tensors, I64): V = 2 and V = 0 */
	"{\"inputs\": \"columns\", \"domains\": 1, \"features\": [{\"name\": \"a\", \"buckets\": 3, \"min_count\": 2}, "
	"{\"name\": \"b\", \"buckets\": 2}], \"persona\": [{\"name\": \"p\", \"buckets\": 1, \"min_count\": 1}], "
	"\"emb_dim\": 1, \"hidden\": [1], \"epnet\": false, \"star\": false, \"aux\": false}",
};

#define PN_FUZZ_NCONFIGS ((int) (sizeof(pn_fuzz_configs) / sizeof(pn_fuzz_configs[0])))

#endif							/* PN_FUZZ_CONFIGS_H */
