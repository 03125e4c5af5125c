/*
 * pepnet.c
 *		Module entry: _PG_init calls each file's init, which defines the
 *		settings that file owns (see docs/source-layout.md).
 */
#include "pepnet.h"
#include "pepshm.h"

#include <cblas.h>

#include "fmgr.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Define settings, point the core at palloc, pin OpenBLAS to one thread */
void
_PG_init(void)
{
	pepnet_registry_init();
	pepnet_chunks_init();
	pepnet_cache_init();
	pepnet_score_init();
	pepnet_training_init();
	pepnet_shmem_init();
	pepnet_pinned_init();
	MarkGUCPrefixReserved("pepnet");

	pepnet_util_init();
	openblas_set_num_threads(1);
}
