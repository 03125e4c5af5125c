/*
 * vocab_lookup.c
 *		Nanoseconds per id -> row lookup of a vocabulary field (docs/model.md
 *		"Vocabularies and unseen ids"): pn_field_row's bisection of the sorted
 *		int64 vocabulary against an open-addressing hash table built once
 *		(what a model cache could hold), at V = 1e3 .. 1e7 ids, half the ids
 *		looked up in the vocabulary and half not (OOV), in random order.
 *		Thread CPU time, best of 5 runs of 4M lookups.
 *
 *		cc -O2 -Isrc/core -o /tmp/vocab_lookup bench/vocab_lookup.c src/core/model.c src/core/plan.c src/core/alloc.c src/core/json.c src/core/config.c -lm
 *		/tmp/vocab_lookup            # one JSON object per line
 */
#include "pncore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int
cmp64(const void *a, const void *b)
{
	int64_t		x = *(const int64_t *) a,
				y = *(const int64_t *) b;

	return x < y ? -1 : x > y;
}

int
main(void)
{
	static const int64_t sizes[] = {1000, 100000, 1000000, 10000000};
	const int	nq = 1 << 22;
	int			s;

	for (s = 0; s < 4; s++)
	{
		int64_t		V = sizes[s],
					i,
					cap = 1,
					sink = 0;
		int64_t    *vocab = malloc(sizeof(int64_t) * V),
				   *q = malloc(sizeof(int64_t) * nq),
				   *keys,
				   *rows;
		PnField		f;
		double		best_b = 1e9,
					best_h = 1e9;
		int			r;

		for (i = 0; i < V; i++)
			vocab[i] = (int64_t) pn_splitmix64((uint64_t) i * 2 + 1);
		qsort(vocab, V, sizeof(int64_t), cmp64);
		for (i = 0; i < nq; i++)
		{
			uint64_t	z = pn_splitmix64((uint64_t) i + 12345);

			q[i] = (z & 1) ? vocab[(z >> 1) % (uint64_t) V] : (int64_t) pn_splitmix64((uint64_t) i * 2 + 7777777777ULL);
		}
		memset(&f, 0, sizeof(f));
		f.buckets = V + 1;
		f.hash = true;
		f.named = true;
		f.min_count = 1;
		f.vocab = vocab;
		f.nvocab = V;
		while (cap < 2 * V)
			cap <<= 1;
		keys = malloc(sizeof(int64_t) * cap);
		rows = malloc(sizeof(int64_t) * cap);
		for (i = 0; i < cap; i++)
			rows[i] = -1;
		for (i = 0; i < V; i++)
		{
			uint64_t	h = pn_splitmix64((uint64_t) vocab[i]) & (uint64_t) (cap - 1);

			while (rows[h] >= 0)
				h = (h + 1) & (uint64_t) (cap - 1);
			keys[h] = vocab[i];
			rows[h] = i;
		}
		for (r = 0; r < 5; r++)
		{
			double		t0 = now(),
						t1;

			for (i = 0; i < nq; i++)
				sink += pn_field_row(&f, 0, q[i]);
			t1 = now();
			if (t1 - t0 < best_b)
				best_b = t1 - t0;
			t0 = now();
			for (i = 0; i < nq; i++)
			{
				uint64_t	h = pn_splitmix64((uint64_t) q[i]) & (uint64_t) (cap - 1);
				int64_t		row = V;

				while (rows[h] >= 0)
				{
					if (keys[h] == q[i])
					{
						row = rows[h];
						break;
					}
					h = (h + 1) & (uint64_t) (cap - 1);
				}
				sink += row;
			}
			t1 = now();
			if (t1 - t0 < best_h)
				best_h = t1 - t0;
		}
		printf("{\"V\": %lld, \"bisect_ns\": %.1f, \"hash_ns\": %.1f, \"hash_mb\": %.1f, \"sink\": %lld}\n",
			   (long long) V, best_b * 1e9 / nq, best_h * 1e9 / nq, cap * 16.0 / 1048576, (long long) (sink & 1));
		free(vocab);
		free(q);
		free(keys);
		free(rows);
	}
	return 0;
}
