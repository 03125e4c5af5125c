/*
 * alloc.c
 *		Allocation of the core: every allocation goes through pn_alloc_hook
 *		and pn_free_hook (malloc and free by default; palloc in the
 *		extension, set by util.c), so that the core never fails by itself
 *		on memory: a NULL result is returned as PN_ENOMEM.
 */
#include "pncore.h"

#include <stdlib.h>
#include <string.h>

void	   *(*pn_alloc_hook) (size_t size) = malloc;
void		(*pn_free_hook) (void *ptr) = free;

/* Allocate through the hook */
void *
pn_alloc(size_t size)
{
	return pn_alloc_hook(size ? size : 1);
}

/* Allocate zeroed memory through the hook */
void *
pn_alloc0(size_t size)
{
	void	   *p = pn_alloc(size);

	if (p)
		memset(p, 0, size ? size : 1);
	return p;
}

/* Free through the hook (NULL is fine) */
void
pn_free(void *ptr)
{
	if (ptr)
		pn_free_hook(ptr);
}
