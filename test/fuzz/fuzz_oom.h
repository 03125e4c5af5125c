/*
 * fuzz_oom.h
 *		Allocation failure injection for the fuzz targets, through the
 *		core's pn_alloc_hook (the PostgreSQL glue's hook returns NULL on
 *		failure too).  A target runs an input once counting allocations,
 *		then again with the k-th allocation failing, k picked from a hash of
 *		the input: the call must report PN_ENOMEM and free everything it
 *		allocated (LeakSanitizer checks).
 */
#ifndef PN_FUZZ_OOM_H
#define PN_FUZZ_OOM_H

#include <stdint.h>
#include <stdlib.h>

static int64_t fz_nalloc;		/* allocations since fz_count() */
static int64_t fz_fail_at;		/* the allocation that fails, 0 = none */

/* The hook: malloc, except for allocation number fz_fail_at */
static void *
fz_alloc(size_t n)
{
	if (++fz_nalloc == fz_fail_at)
		return NULL;
	return malloc(n);
}

/* Start counting; fail allocation number fail_at (0: none) from now on */
static void
fz_count(int64_t fail_at)
{
	pn_alloc_hook = fz_alloc;
	fz_nalloc = 0;
	fz_fail_at = fail_at;
}

/* FNV-1a of the input, to pick the failing allocation */
static uint64_t
fz_hash(const uint8_t *data, size_t size)
{
	uint64_t	h = UINT64_C(0xcbf29ce484222325);
	size_t		i;

	for (i = 0; i < size; i++)
		h = (h ^ data[i]) * UINT64_C(0x100000001b3);
	return h;
}

#endif							/* PN_FUZZ_OOM_H */
