/*
 * pepshm.h
 *		pepnet in shared memory (with shared_preload_libraries = 'pepnet'):
 *		the shared model cache (shcache.c) and the training progress slots
 *		(progress.c), on the infrastructure of shmem.c.  Without preload
 *		every function here is a cheap no-op and pepnet works per backend.
 */
#ifndef PEPSHM_H
#define PEPSHM_H

#include "pepnet.h"

#include "storage/lwlock.h"
#include "utils/dsa.h"

/* settings */
extern int	pepnet_shared_cache_size_mb;

/* shmem.c */
extern void pepnet_shmem_init(void);	/* from _PG_init */
extern bool pepnet_shmem_ready(void);	/* preloaded and shared memory set up */
extern LWLock *pepnet_shmem_lock(void);
extern dsa_area *pepnet_shmem_area(void);	/* attached (created on first use), or ERROR */
extern void *pepnet_shmem_cache_struct(void);
extern void *pepnet_shmem_progress_struct(void);

/* shcache.c */
extern Size pepnet_shcache_shmem_size(void);
extern void pepnet_shcache_shmem_init(void *p, bool found);
extern PnModel *pepnet_shcache_model(const PepnetRef *ref, int *slot, uint64 *gen);
extern bool pepnet_shcache_pin(PepnetEntry *e);
extern PnDomainCache *pepnet_shcache_domain(PepnetEntry *e, int domain);
extern PnPackShare *pepnet_shcache_pack_share(PepnetEntry *e, int precision);
extern int	pepnet_shcache_shared_domains(int slot);

/* progress.c */
extern Size pepnet_progress_shmem_size(void);
extern void pepnet_progress_shmem_init(void *p, bool found);
extern void pepnet_progress_start(const char *name, int32 parent);
extern void pepnet_progress_plan(int epochs);
extern void pepnet_progress_step(int epoch, int64 rows, double loss);
extern void pepnet_progress_epoch_done(int epoch, int64 rows);
extern void pepnet_progress_validation(double logloss, double auc);
extern void pepnet_progress_end(void);

#endif							/* PEPSHM_H */
