/*
 * shmem.c
 *		pepnet's shared memory (PostgreSQL 15's shmem_request_hook): one
 *		named LWLock tranche of one lock, a fixed struct for the shared
 *		model cache's table (shcache.c) and one for the training progress
 *		slots (progress.c), and a DSA area for the cached versions, created
 *		by the first backend that needs it (its handle kept in the fixed
 *		struct) and pinned until the server stops or restarts after a crash.
 *
 * All of it needs shared_preload_libraries = 'pepnet'.  A library loaded
 * later (CREATE EXTENSION, LOAD, the first call) cannot reserve shared
 * memory: pepnet_shmem_ready() is then false and everything works per
 * backend as without this file.
 */
#include "pepshm.h"

#include <limits.h>

#include "miscadmin.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/memutils.h"

int			pepnet_shared_cache_size_mb = 1024;

typedef struct PepnetShmem
{
	LWLock	   *lock;			/* the tranche "pepnet": the cache table, the DSA handle */
	int			dsa_tranche;	/* LWLock tranche of the DSA area's own locks */
	dsa_handle	dsa;			/* DSM_HANDLE_INVALID until the first backend creates it */
} PepnetShmem;

static PepnetShmem *shm = NULL;
static void *cache_struct = NULL;
static void *progress_struct = NULL;
static dsa_area *area = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Reserve the fixed structs and the lock (postmaster, at start-up) */
static void
pepnet_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(PepnetShmem)) + MAXALIGN(pepnet_shcache_shmem_size()) +
						   MAXALIGN(pepnet_progress_shmem_size()));
	RequestNamedLWLockTranche("pepnet", 1);
}

/*
 * Create (postmaster, also after a crash restart: everything starts empty)
 * or find the fixed structs.
 */
static void
pepnet_shmem_startup(void)
{
	bool		found,
				found2,
				found3;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	area = NULL;
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shm = ShmemInitStruct("pepnet", sizeof(PepnetShmem), &found);
	cache_struct = ShmemInitStruct("pepnet shared cache", pepnet_shcache_shmem_size(), &found2);
	progress_struct = ShmemInitStruct("pepnet training progress", pepnet_progress_shmem_size(), &found3);
	if (!found)
	{
		shm->lock = &(GetNamedLWLockTranche("pepnet"))->lock;
		shm->dsa_tranche = LWLockNewTrancheId();
		shm->dsa = DSM_HANDLE_INVALID;
	}
	pepnet_shcache_shmem_init(cache_struct, found2);
	pepnet_progress_shmem_init(progress_struct, found3);
	LWLockRelease(AddinShmemInitLock);
	LWLockRegisterTranche(shm->dsa_tranche, "pepnet_dsa");
}

/* Settings of the shared cache; the hooks when preloaded */
void
pepnet_shmem_init(void)
{
	DefineCustomIntVariable("pepnet.shared_cache_size",
							"Shared memory for model versions shared by all backends (needs shared_preload_libraries = 'pepnet').",
							"Least recently used versions not in use go first; a version that does not fit is cached per backend. 0 turns the shared cache off.",
							&pepnet_shared_cache_size_mb, 1024, 0, INT_MAX / 2,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = pepnet_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = pepnet_shmem_startup;
}

bool
pepnet_shmem_ready(void)
{
	return shm != NULL;
}

LWLock *
pepnet_shmem_lock(void)
{
	return shm->lock;
}

void *
pepnet_shmem_cache_struct(void)
{
	return cache_struct;
}

void *
pepnet_shmem_progress_struct(void)
{
	return progress_struct;
}

/*
 * The DSA area, attached for the rest of this backend's life; the first
 * backend creates it (in a transaction, so that its DSM segment is known
 * to a resource owner until dsa_pin_mapping takes it over).
 */
dsa_area *
pepnet_shmem_area(void)
{
	MemoryContext old;

	if (area)
		return area;
	Assert(shm != NULL);
	old = MemoryContextSwitchTo(TopMemoryContext);
	LWLockAcquire(shm->lock, LW_EXCLUSIVE);
	PG_TRY();
	{
		LWLockRegisterTranche(shm->dsa_tranche, "pepnet_dsa");
		if (shm->dsa == DSM_HANDLE_INVALID)
		{
			area = dsa_create(shm->dsa_tranche);
			dsa_pin(area);
			shm->dsa = dsa_get_handle(area);
		}
		else
			area = dsa_attach(shm->dsa);
		dsa_pin_mapping(area);
	}
	PG_CATCH();
	{
		LWLockRelease(shm->lock);
		MemoryContextSwitchTo(old);
		PG_RE_THROW();
	}
	PG_END_TRY();
	LWLockRelease(shm->lock);
	MemoryContextSwitchTo(old);
	return area;
}
