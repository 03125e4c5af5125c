/*
 * pepnet.c
 *		Module entry: settings, allocation hooks of the core, error
 *		reporting.
 */
#include "pepnet.h"
#include "pepshm.h"

#include <cblas.h>
#include <limits.h>

#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PG_MODULE_MAGIC;

char	   *pepnet_default_model = NULL;
int			pepnet_cache_size_mb = 256;
int			pepnet_max_model_size_mb = 1024;

/* Core allocations land in the current memory context; NULL on failure */
static void *
pepnet_core_alloc(size_t size)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size,
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

/* Core frees are pfree */
static void
pepnet_core_free(void *ptr)
{
	pfree(ptr);
}

void		_PG_init(void);

/* Define settings, point the core at palloc, pin OpenBLAS to one thread */
void
_PG_init(void)
{
	DefineCustomStringVariable("pepnet.model",
							   "Model reference used by the pepnet functions that take no model argument.",
							   "A model name ('ctr': its deployed version) or name@version ('ctr@7').",
							   &pepnet_default_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("pepnet.cache_size",
							"Memory a backend may use to cache model versions (least recently used out first).",
							NULL, &pepnet_cache_size_mb, 256, 1, INT_MAX / 2,
							PGC_USERSET, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("pepnet.max_model_size",
							"Largest model (weights) that may be created, imported or loaded.",
							"Configurations whose weights would exceed it are refused before allocating.",
							&pepnet_max_model_size_mb, 1024, 1, INT_MAX / 2,
							PGC_SUSET, GUC_UNIT_MB, NULL, NULL, NULL);
	pepnet_registry_init();
	pepnet_chunks_init();
	pepnet_score_init();
	pepnet_training_init();
	pepnet_shmem_init();
	pepnet_pinned_init();
	MarkGUCPrefixReserved("pepnet");

	pn_alloc_hook = pepnet_core_alloc;
	pn_free_hook = pepnet_core_free;
	openblas_set_num_threads(1);
}

/* pepnet.max_model_size in bytes */
int64
pepnet_max_model_bytes(void)
{
	return (int64) pepnet_max_model_size_mb * 1024 * 1024;
}

/*
 * The SQLSTATE of a core error: bad config or input 22023, a size limit
 * 54000, out of memory 53200, a non-finite value in training 22P01;
 * malformed weights format_code (22P03 for input, XX001 for stored), any
 * other failure (the engine's) other_code.
 */
int
pepnet_sqlstate(const PnError *err, int format_code, int other_code)
{
	switch (err->code)
	{
		case PN_ECONFIG:
		case PN_EINPUT:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case PN_EFORMAT:
			return format_code;
		case PN_ETOOBIG:
			return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		case PN_ENOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		case PN_ENUMERIC:
			return ERRCODE_FLOATING_POINT_EXCEPTION;
		default:
			return other_code;
	}
}

/*
 * Raise a core error as an ERROR with a fitting SQLSTATE.  format_code is
 * the SQLSTATE for malformed weights (22P03 for input, XX001 for stored).
 */
void
pepnet_report(PnError *err, int format_code)
{
	int			code = pepnet_sqlstate(err, format_code, ERRCODE_INTERNAL_ERROR);

	ereport(ERROR,
			(errcode(code),
			 errmsg("%s", (pepnet_fix_encoding(err->msg), err->msg)),
			 err->detail[0] ? errdetail("%s", (pepnet_fix_encoding(err->detail), err->detail)) : 0,
			 err->row >= 0 ? errcontext("candidate %lld of the request", (long long) err->row + 1) : 0));
}

/* CHECK_FOR_INTERRUPTS for the core's long loops (the engine calls it once per tile) */
void
pepnet_interrupt_check(void)
{
	CHECK_FOR_INTERRUPTS();
}

/* Error for a NULL argument */
void
pepnet_null_arg(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			 errmsg("%s must not be NULL", what)));
}

/* A model name: 1 to 63 characters (not bytes), no '@' */
void
pepnet_check_name(const char *name)
{
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name must not be empty")));
	if (strchr(name, '@') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name \"%s\" must not contain \"@\"", name),
				 errhint("\"@\" separates a name from a version in a model reference, as in 'ctr@7'.")));
	if (strlen(name) >= PEPNET_NAMELEN || pg_mbstrlen(name) > PEPNET_NAME_MAXCHARS)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("model name \"%s\" is longer than %d characters", pepnet_clip(name, 20), PEPNET_NAME_MAXCHARS)));
}
