/*
 * shcache.c
 *		The shared model cache (shared_preload_libraries = 'pepnet'): one
 *		copy per server of each model version's weights and of its fused
 *		per-domain matrices (what pn_domain_build makes: STAR fused, PN
 *		folded), in the DSA area of shmem.c.  The backend cache (cache.c)
 *		keeps, per backend, only a PnModel whose tensors point into shared
 *		memory, PnDomainCache views of the shared domains, and what stays
 *		per backend: the GEMV workspace and the oneDNN engine (primitives
 *		and its packed copies of the weights).
 *
 * A table of SH_ENTRIES versions in fixed shared memory, under the lock of
 * shmem.c, keyed by (database, name, version, xmin of the row) as the
 * backend cache is keyed.  The first backend that needs a version claims
 * an entry (BUILDING), loads the version outside the lock, copies it into
 * DSA and marks it READY; backends that need it meanwhile wait on the
 * entry's condition variable.  Each DSA block of a build is recorded in
 * its claimed entry as soon as it is allocated (building_record), so a
 * build that fails (ERROR, cancel, statement_timeout) or a backend that
 * exits in the middle (FATAL, before_shmem_exit) frees the blocks with its
 * claim and wakes the waiters, one of which builds again; a backend killed
 * by a signal makes the postmaster reset shared memory.
 *
 * A backend pins an entry when a statement first uses it and unpins it at
 * the end of the transaction (commit, abort, or exit): pinned entries are
 * never evicted.  Between transactions a backend keeps its views; the next
 * use pins again and checks that the entry is still the same (generation
 * number), else the backend entry is dropped and the version looked up
 * again.  The bytes of all entries stay within pepnet.shared_cache_size:
 * least recently used unpinned entries go first; a version (or a domain)
 * that does not fit even then is loaded into the backend cache as without
 * preload.  Grants: every statement resolves its reference with the
 * caller's rights before reaching this cache (cache.c's pepnet_resolve).
 */
#include "pepshm.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/acl.h"
#include "utils/lsyscache.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#define SH_ENTRIES 64

#define SH_FREE 0
#define SH_BUILDING 1
#define SH_READY 2

typedef struct ShEntry
{
	Oid			dbid;
	char		name[PEPNET_NAMELEN];
	int32		version;
	TransactionId xmin;
	int			state;
	int			builder;		/* pid building it (SH_BUILDING) */
	uint64		gen;			/* changes whenever the entry is claimed */
	dsa_pointer hdr;			/* ShModel: config, then the weights */
	dsa_pointer doms;			/* dsa_pointer [D]: fused matrices per domain, 0 until built */
	dsa_pointer packed;			/* ShPacked list: the oneDNN engine's packed weights */
	int			ndomains;
	int			D;
	int			pins;
	int64		hits;
	Size		bytes;
	uint64		lru;
	TimestampTz built_at;
	TimestampTz last_used;
	ConditionVariable cv;
} ShEntry;

typedef struct ShCache
{
	uint64		clock;
	uint64		builds;
	uint64		evictions;
	uint64		fallbacks;		/* versions or domains that did not fit: cached per backend */
	Size		used;
	ShEntry		e[SH_ENTRIES];
} ShCache;

/* a version in DSA: the config (pointers as offsets), then the fields, rates and weights */
typedef struct ShModel
{
	PnConfig	cfg;
	int64		total;
	Size		feat_off,
				pers_off,
				neg_off,
				dfield_off,		/* named dense columns (0: none) */
				data_off;
} ShModel;

/* packed weights of the batched engine (its PnPackShare), a list per entry */
typedef struct ShPacked
{
	dsa_pointer next;
	int			precision;
	char		key[32];
	Size		bytes;
} ShPacked;

static ShCache *sc = NULL;

/* the entries this backend pinned in this transaction */
static struct
{
	int			slot;
	uint64		gen;
}			pinned[SH_ENTRIES];
static int	npinned = 0;
static int	building = -1;		/* the entry this backend is building */
static uint64 building_gen = 0;
static bool callbacks = false;

PG_FUNCTION_INFO_V1(pepnet_shared_cache);
PG_FUNCTION_INFO_V1(pepnet_shared_cache_stats);
PG_FUNCTION_INFO_V1(pepnet_shared_cache_dump);

Size
pepnet_shcache_shmem_size(void)
{
	return sizeof(ShCache);
}

void
pepnet_shcache_shmem_init(void *p, bool found)
{
	int			i;

	sc = (ShCache *) p;
	if (found)
		return;
	memset(sc, 0, sizeof(ShCache));
	for (i = 0; i < SH_ENTRIES; i++)
		ConditionVariableInit(&sc->e[i].cv);
}

static Size
limit_bytes(void)
{
	return (Size) pepnet_shared_cache_size_mb * 1024 * 1024;
}

static bool
enabled(void)
{
	return pepnet_shmem_ready() && sc != NULL && pepnet_shared_cache_size_mb > 0 && IsUnderPostmaster;
}

/* Free an entry's memory (lock held exclusively) */
static void
entry_free(dsa_area *area, ShEntry *s)
{
	if (DsaPointerIsValid(s->doms))
	{
		dsa_pointer *doms = dsa_get_address(area, s->doms);
		int			d;

		for (d = 0; d < s->D; d++)
			if (DsaPointerIsValid(doms[d]))
				dsa_free(area, doms[d]);
		dsa_free(area, s->doms);
	}
	while (DsaPointerIsValid(s->packed))
	{
		dsa_pointer next = ((ShPacked *) dsa_get_address(area, s->packed))->next;

		dsa_free(area, s->packed);
		s->packed = next;
	}
	if (DsaPointerIsValid(s->hdr))
		dsa_free(area, s->hdr);
	sc->used -= s->bytes;
	s->hdr = s->doms = InvalidDsaPointer;
	s->bytes = 0;
	s->ndomains = 0;
	s->pins = 0;
	s->state = SH_FREE;
	s->builder = 0;
	s->name[0] = '\0';
}

/*
 * Make room for need more bytes (lock held exclusively): evict least
 * recently used READY entries that nobody pins, never keep.  False when
 * they cannot make enough room.
 */
static bool
reserve(dsa_area *area, Size need, int keep)
{
	Size		limit = limit_bytes();

	if (need > limit)
		return false;
	while (sc->used + need > limit)
	{
		int			i,
					victim = -1;

		for (i = 0; i < SH_ENTRIES; i++)
			if (i != keep && sc->e[i].state == SH_READY && sc->e[i].pins == 0 &&
				(victim < 0 || sc->e[i].lru < sc->e[victim].lru))
				victim = i;
		if (victim < 0)
			return false;
		entry_free(area, &sc->e[victim]);
		sc->evictions++;
	}
	sc->used += need;
	return true;
}

/* Pin entry i for this transaction (lock held exclusively) */
static void
pin_locked(int i)
{
	ShEntry    *s = &sc->e[i];
	int			k;

	s->hits++;
	s->lru = ++sc->clock;
	s->last_used = GetCurrentTimestamp();
	for (k = 0; k < npinned; k++)
		if (pinned[k].slot == i && pinned[k].gen == s->gen)
			return;
	s->pins++;
	pinned[npinned].slot = i;
	pinned[npinned].gen = s->gen;
	npinned++;
}

/* Release this backend's pins */
static void
unpin_all(void)
{
	int			k;

	if (npinned == 0)
		return;
	LWLockAcquire(pepnet_shmem_lock(), LW_EXCLUSIVE);
	for (k = 0; k < npinned; k++)
	{
		ShEntry    *s = &sc->e[pinned[k].slot];

		if (s->gen == pinned[k].gen && s->pins > 0)
			s->pins--;
	}
	LWLockRelease(pepnet_shmem_lock());
	npinned = 0;
}

/* Give up the entry this backend is building: nothing half-built stays; waiters wake */
static void
abandon_build(void)
{
	int			i = building;
	ShEntry    *s;

	if (i < 0)
		return;
	building = -1;
	s = &sc->e[i];
	if (LWLockHeldByMe(pepnet_shmem_lock()))
		LWLockRelease(pepnet_shmem_lock());
	LWLockAcquire(pepnet_shmem_lock(), LW_EXCLUSIVE);
	if (s->state == SH_BUILDING && s->builder == MyProcPid && s->gen == building_gen)
		entry_free(pepnet_shmem_area(), s);
	LWLockRelease(pepnet_shmem_lock());
	ConditionVariableBroadcast(&s->cv);
}

/*
 * Record the shared memory of the entry this backend is building, so that
 * abandon_build frees it (D: the domains of doms)
 */
static void
building_record(dsa_pointer hdr, dsa_pointer doms, int D)
{
	ShEntry    *s;

	if (building < 0)
		return;
	s = &sc->e[building];
	LWLockAcquire(pepnet_shmem_lock(), LW_EXCLUSIVE);
	if (s->state == SH_BUILDING && s->builder == MyProcPid && s->gen == building_gen)
	{
		s->hdr = hdr;
		s->doms = doms;
		s->D = D;
	}
	LWLockRelease(pepnet_shmem_lock());
}

static void
shcache_xact(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		abandon_build();
		unpin_all();
	}
}

static void
shcache_exit(int code, Datum arg)
{
	abandon_build();
	unpin_all();
}

static void
register_callbacks(void)
{
	if (callbacks)
		return;
	RegisterXactCallback(shcache_xact, NULL);
	before_shmem_exit(shcache_exit, (Datum) 0);
	callbacks = true;
}

/* A PnModel (in CurrentMemoryContext) whose tensors are the shared weights of hdr */
static PnModel *
model_view(dsa_area *area, dsa_pointer hdr)
{
	char	   *base = dsa_get_address(area, hdr);
	ShModel    *h = (ShModel *) base;
	PnConfig	cfg = h->cfg;
	PnModel    *m;
	PnError		err = {0};

	cfg.feat = (PnField *) (base + h->feat_off);
	cfg.pers = (PnField *) (base + h->pers_off);
	cfg.neg_rate = h->neg_off ? (float *) (base + h->neg_off) : NULL;
	cfg.dfield = h->dfield_off ? (PnField *) (base + h->dfield_off) : NULL;
	if (pn_model_layout(&cfg, &m, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	if (m->total != h->total)
		elog(ERROR, "shared model layout mismatch (%lld floats, expected %lld)",
			 (long long) m->total, (long long) h->total);
	m->data = (float *) (base + h->data_off);
	m->borrowed = true;
	pn_model_attach_vocab(m);
	return m;
}

/*
 * Bytes of a ShModel of m, and the offsets; lay is m's canonical layout
 * (pn_model_layout: what model_view rebuilds), into which the tensors are
 * copied (a loaded model may point into its blob in the blob's order).
 */
static Size
model_layout(const PnModel *m, const PnModel *lay, ShModel *h)
{
	const PnConfig *c = &m->cfg;
	Size		off = MAXALIGN(sizeof(ShModel));

	memset(h, 0, sizeof(ShModel));
	h->cfg = *c;
	h->cfg.feat = h->cfg.pers = NULL;
	h->cfg.neg_rate = NULL;
	h->cfg.dfield = NULL;
	h->total = lay->total;
	h->feat_off = off;
	off = MAXALIGN(off + sizeof(PnField) * c->nfeat);
	h->pers_off = off;
	off = MAXALIGN(off + sizeof(PnField) * c->npers);
	if (c->neg_rate)
	{
		h->neg_off = off;
		off = MAXALIGN(off + sizeof(float) * c->domains);
	}
	if (c->dfield)
	{
		h->dfield_off = off;
		off = MAXALIGN(off + sizeof(PnField) * c->dense);
	}
	off = TYPEALIGN(64, off);
	h->data_off = off;
	return off + sizeof(float) * (Size) lay->total;
}

/*
 * Find ref's entry or claim one to build (exclusive lock, released on
 * return).  Returns the claimed entry (SH_BUILDING by this backend); else
 * -1 with *hit the header of a ready entry, now pinned (*slot, *gen), or
 * *hit invalid when there is no room (load a private copy).  Waits while
 * another backend builds the entry.
 */
static int
claim_entry(const PepnetRef *ref, int *slot, uint64 *gen, dsa_pointer *hit)
{
	LWLock	   *lock = pepnet_shmem_lock();
	dsa_area   *area = pepnet_shmem_area();
	int			i;
	bool		sleeping = false;

	*hit = InvalidDsaPointer;
	for (;;)
	{
		int			k,
					freeslot = -1,
					victim = -1;
		ShEntry    *s;

		LWLockAcquire(lock, LW_EXCLUSIVE);
		for (k = 0; k < SH_ENTRIES; k++)
		{
			s = &sc->e[k];
			if (s->state == SH_FREE)
			{
				if (freeslot < 0)
					freeslot = k;
				continue;
			}
			if (s->dbid == MyDatabaseId && s->version == ref->version && s->xmin == ref->xmin &&
				strcmp(s->name, ref->name) == 0)
				break;
			if (s->state == SH_READY && s->pins == 0 && (victim < 0 || s->lru < sc->e[victim].lru))
				victim = k;
		}
		if (k < SH_ENTRIES && sc->e[k].state == SH_READY)
		{
			s = &sc->e[k];
			pin_locked(k);
			*slot = k;
			*gen = s->gen;
			*hit = s->hdr;
			LWLockRelease(lock);
			if (sleeping)
				ConditionVariableCancelSleep();
			return -1;
		}
		if (k < SH_ENTRIES)
		{
			/* another backend is building it: wait, then look again */
			if (sc->e[k].builder == MyProcPid)
			{
				LWLockRelease(lock);
				elog(ERROR, "shared cache entry of \"%s\" version %d is being built by this backend",
					 ref->name, ref->version);
			}
			ConditionVariablePrepareToSleep(&sc->e[k].cv);
			sleeping = true;
			LWLockRelease(lock);
			ConditionVariableSleep(&sc->e[k].cv, PG_WAIT_EXTENSION);
			continue;
		}
		/* nobody has it: claim a free entry, else the least recently used unpinned one */
		if (freeslot < 0 && victim >= 0)
		{
			entry_free(area, &sc->e[victim]);
			sc->evictions++;
			freeslot = victim;
		}
		if (freeslot < 0)
		{
			sc->fallbacks++;
			LWLockRelease(lock);
			if (sleeping)
				ConditionVariableCancelSleep();
			return -1;
		}
		i = freeslot;
		s = &sc->e[i];
		s->dbid = MyDatabaseId;
		strlcpy(s->name, ref->name, PEPNET_NAMELEN);
		s->version = ref->version;
		s->xmin = ref->xmin;
		s->state = SH_BUILDING;
		s->builder = MyProcPid;
		s->gen = ++sc->clock;
		s->hdr = s->doms = s->packed = InvalidDsaPointer;
		s->bytes = 0;
		s->ndomains = 0;
		s->pins = 0;
		s->hits = 0;
		building = i;
		building_gen = s->gen;
		LWLockRelease(lock);
		break;
	}
	if (sleeping)
		ConditionVariableCancelSleep();
	return i;
}

/*
 * Make entry i, built by this backend, ready and pinned by it; wakes its
 * waiters.  Its blocks are already recorded in it (building_record).
 */
static void
publish_entry(int i, int *slot, uint64 *gen)
{
	ShEntry    *s = &sc->e[i];

	LWLockAcquire(pepnet_shmem_lock(), LW_EXCLUSIVE);
	s->state = SH_READY;
	s->builder = 0;
	s->built_at = GetCurrentTimestamp();
	sc->builds++;
	pin_locked(i);
	s->hits = 1;
	*slot = i;
	*gen = s->gen;
	building = -1;
	LWLockRelease(pepnet_shmem_lock());
	ConditionVariableBroadcast(&s->cv);
}

/*
 * The version ref names, for the backend cache: a view of the shared copy
 * (built now if no backend has; *slot, *gen identify it, and it is pinned
 * for this transaction) or, without the shared cache or when the version
 * does not fit, a private copy (*slot = -1), as pepnet_load_model makes.
 * Allocations of the view in CurrentMemoryContext.
 */
PnModel *
pepnet_shcache_model(const PepnetRef *ref, int *slot, uint64 *gen)
{
	char		name[PEPNET_NAMELEN];
	int32		version;
	dsa_area   *area;
	LWLock	   *lock;
	int			i;
	PnModel    *m;
	MemoryContext caller = CurrentMemoryContext,
				tmp;
	dsa_pointer hp = InvalidDsaPointer,
				dp = InvalidDsaPointer;

	*slot = -1;
	*gen = 0;
	if (!enabled())
		return pepnet_load_model(ref, name, &version);
	area = pepnet_shmem_area();
	lock = pepnet_shmem_lock();
	register_callbacks();

	i = claim_entry(ref, slot, gen, &hp);
	if (i < 0)
		return DsaPointerIsValid(hp) ? model_view(area, hp) : pepnet_load_model(ref, name, &version);

	/* build entry i: load outside the lock (a failure or cancel abandons the claim) */
	tmp = AllocSetContextCreate(caller, "pepnet shared build", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		ShEntry    *s = &sc->e[i];
		ShModel		h;
		PnModel    *lay;
		PnError		err = {0};
		Size		hbytes,
					dbytes;
		float	   *data;
		char	   *dst;
		bool		ok;

		MemoryContextSwitchTo(tmp);
		/* the config only: the weights are streamed into shared memory below (chunks.c) */
		m = pepnet_load_layout(ref, name, &version);
		if (pn_model_layout(&m->cfg, &lay, &err) != PN_OK)
			pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
		MemoryContextSwitchTo(caller);
		hbytes = model_layout(m, lay, &h);
		dbytes = sizeof(dsa_pointer) * (Size) m->cfg.domains;

		LWLockAcquire(lock, LW_EXCLUSIVE);
		ok = reserve(area, hbytes + dbytes, i);
		if (ok)
			s->bytes = hbytes + dbytes;
		else
			sc->fallbacks++;
		LWLockRelease(lock);
		if (ok)
		{
			/*
			 * Each block is recorded in the claimed entry as soon as it is
			 * allocated: whatever interrupts the build from here (ERROR,
			 * cancel, statement_timeout, a FATAL such as
			 * pg_terminate_backend) ends in abandon_build, from PG_CATCH,
			 * the transaction's abort or before_shmem_exit, which frees the
			 * entry's blocks with the claim.
			 */
			hp = dsa_allocate_extended(area, hbytes, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO);
			building_record(hp, InvalidDsaPointer, 0);
			if (DsaPointerIsValid(hp))
			{
				dp = dsa_allocate_extended(area, dbytes, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM | DSA_ALLOC_ZERO);
				building_record(hp, dp, m->cfg.domains);
			}
			/* the DSM segments could not grow (dynamic_shared_memory, /dev/shm): per backend */
			if (!DsaPointerIsValid(hp) || !DsaPointerIsValid(dp))
				ok = false;
		}
		if (!ok)
		{
			/* a private copy after all (abandon_build frees what was allocated); the model stays in tmp, a child of the caller's context */
			abandon_build();
			*slot = -1;
			MemoryContextSwitchTo(tmp);
			m = pepnet_load_model(ref, name, &version);
			MemoryContextSwitchTo(caller);
		}
		else
		{
			dst = dsa_get_address(area, hp);
			memcpy(dst, &h, sizeof(ShModel));
			memcpy(dst + h.feat_off, m->cfg.feat, sizeof(PnField) * m->cfg.nfeat);
			memcpy(dst + h.pers_off, m->cfg.pers, sizeof(PnField) * m->cfg.npers);
			if (h.neg_off)
				memcpy(dst + h.neg_off, m->cfg.neg_rate, sizeof(float) * m->cfg.domains);
			if (h.dfield_off)
				memcpy(dst + h.dfield_off, m->cfg.dfield, sizeof(PnField) * m->cfg.dense);
			/*
			 * the weights streamed chunk by chunk straight into the canonical
			 * layout in shared memory (never a private copy of their size)
			 */
			data = (float *) (dst + h.data_off);
			lay->data = data;
			lay->borrowed = true;
			MemoryContextSwitchTo(tmp);
			pepnet_scatter_weights(name, version, lay);
			MemoryContextSwitchTo(caller);
			publish_entry(i, slot, gen);
			m = model_view(area, hp);
			MemoryContextDelete(tmp);
		}
	}
	PG_CATCH();
	{
		/* frees the blocks recorded in the entry (nothing read from this frame's locals) */
		MemoryContextSwitchTo(caller);
		abandon_build();
		PG_RE_THROW();
	}
	PG_END_TRY();
	return m;
}

/* Is e's shared entry still the one it viewed?  Pin it for this transaction if so. */
bool
pepnet_shcache_pin(PepnetEntry *e)
{
	int			k;
	bool		ok;
	ShEntry    *s;

	if (e->sh_slot < 0)
		return true;
	for (k = 0; k < npinned; k++)
		if (pinned[k].slot == e->sh_slot && pinned[k].gen == e->sh_gen)
			return true;
	if (!enabled())
		return false;
	register_callbacks();
	s = &sc->e[e->sh_slot];
	LWLockAcquire(pepnet_shmem_lock(), LW_EXCLUSIVE);
	ok = s->gen == e->sh_gen && s->state == SH_READY;
	if (ok)
		pin_locked(e->sh_slot);
	LWLockRelease(pepnet_shmem_lock());
	return ok;
}

static void
copy_floats(float *dst, const float *src, Size n)
{
	if (src)
		memcpy(dst, src, sizeof(float) * n);
}

/*
 * Walk the arrays of a domain cache of model m (pn_domain_arrays: their
 * order and sizes from m's plan, as pn_domain_build allocates them) in a
 * shared block: with src and dst copy them, with view point view's arrays
 * into base.  Returns the block's size in floats (arrays 64-byte aligned).
 */
static Size
dom_walk(const PnModel *m, PnDomainCache *src, float *dst, PnDomainCache *view, float *base)
{
	int			max = PN_DOMAIN_MAX_ARRAYS(&m->cfg),
				n,
				i;
	float	 ***sslot = palloc(sizeof(float **) * max);
	float	 ***vslot = palloc(sizeof(float **) * max);
	size_t	   *floats = palloc(sizeof(size_t) * max);
	Size		off = 0;

	n = pn_domain_arrays(m, src, sslot, floats);
	if (view)
		pn_domain_arrays(m, view, vslot, floats);
	for (i = 0; i < n; i++)
	{
		if (dst && src)
			copy_floats(dst + off, *sslot[i], floats[i]);
		if (view)
			*vslot[i] = base + off;
		off += ((Size) floats[i] + 15) & ~(Size) 15;
	}
	pfree(sslot);
	pfree(vslot);
	pfree(floats);
	return off;
}

/* A PnDomainCache (allocated in e->cxt) over the shared block p of domain d */
static PnDomainCache *
dom_view(PepnetEntry *e, int d, dsa_pointer p)
{
	const PnConfig *c = &e->model->cfg;
	PnDomainCache *dc = MemoryContextAllocZero(e->cxt, sizeof(PnDomainCache));
	Size		n;

	dc->domain = d;
	dc->nw = c->ntasks * (c->nhidden + 1);
	dc->w = MemoryContextAllocZero(e->cxt, sizeof(float *) * dc->nw);
	dc->b = MemoryContextAllocZero(e->cxt, sizeof(float *) * dc->nw);
	n = dom_walk(e->model, NULL, NULL, dc, (float *) dsa_get_address(pepnet_shmem_area(), p));
	dc->bytes = n * sizeof(float);
	return dc;
}

/*
 * The fused matrices of domain d of a shared version (e pinned): the
 * shared block, built by this backend if no backend has; a private build
 * in e->cxt when it does not fit.  Two backends that miss the same domain
 * at once both fuse it; the first to store it wins, the other frees its
 * copy.
 */
PnDomainCache *
pepnet_shcache_domain(PepnetEntry *e, int d)
{
	ShEntry    *s = &sc->e[e->sh_slot];
	dsa_area   *area = pepnet_shmem_area();
	LWLock	   *lock = pepnet_shmem_lock();
	dsa_pointer *doms;
	dsa_pointer p;
	MemoryContext tmp,
				old;
	PnDomainCache *dc;
	PnError		err = {0};
	Size		bytes;
	bool		ok;

	Assert(s->gen == e->sh_gen && s->state == SH_READY);
	doms = dsa_get_address(area, s->doms);
	LWLockAcquire(lock, LW_SHARED);
	p = doms[d];
	LWLockRelease(lock);
	if (DsaPointerIsValid(p))
		return dom_view(e, d, p);

	tmp = AllocSetContextCreate(e->cxt, "pepnet domain build", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	if (pn_domain_build(e->model, d, &dc, &err) != PN_OK)
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(tmp);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	MemoryContextSwitchTo(old);
	bytes = sizeof(float) * dom_walk(e->model, NULL, NULL, NULL, NULL);

	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (DsaPointerIsValid(doms[d]))
	{
		p = doms[d];
		LWLockRelease(lock);
		MemoryContextDelete(tmp);
		return dom_view(e, d, p);
	}
	ok = reserve(area, bytes, e->sh_slot);
	if (ok)
		s->bytes += bytes;
	else
		sc->fallbacks++;
	LWLockRelease(lock);
	if (!ok)
		return dc;				/* private, in tmp under e->cxt */
	p = dsa_allocate_extended(area, bytes, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (DsaPointerIsValid(p))
		dom_walk(e->model, dc, (float *) dsa_get_address(area, p), NULL, NULL);
	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (!DsaPointerIsValid(p) || DsaPointerIsValid(doms[d]))
	{
		/* no memory, or another backend stored it meanwhile */
		sc->used -= bytes;
		s->bytes -= bytes;
		if (DsaPointerIsValid(p))
			dsa_free(area, p);
		p = doms[d];
	}
	else
	{
		doms[d] = p;
		s->ndomains++;
	}
	LWLockRelease(lock);
	if (!DsaPointerIsValid(p))
		return dc;
	MemoryContextDelete(tmp);
	return dom_view(e, d, p);
}

/*
 * The batched engine's packed weights (a PnPackShare): per shared entry and
 * precision, each matrix by its key, data 64-byte aligned after the header
 * (DSM segments are mapped page-aligned, so the same offset is aligned in
 * every backend).  The engine asks while pepnet_cache_engine makes it or
 * prepares a domain, with the entry pinned; the first backend to pack a
 * matrix publishes a copy, later backends use that copy in place.
 */
static struct
{
	int			slot;
	uint64		gen;
	int			precision;
}			pack_arg;

static char *
packed_data(ShPacked *p)
{
	return (char *) TYPEALIGN(64, (char *) p + sizeof(ShPacked));
}

static ShPacked *
packed_find(dsa_area *area, ShEntry *s, int precision, const char *key, Size bytes)
{
	dsa_pointer dp;

	for (dp = s->packed; DsaPointerIsValid(dp);)
	{
		ShPacked   *p = dsa_get_address(area, dp);

		if (p->precision == precision && p->bytes == bytes && strcmp(p->key, key) == 0)
			return p;
		dp = p->next;
	}
	return NULL;
}

static const void *
pack_lookup(void *arg, const char *key, size_t bytes)
{
	dsa_area   *area = pepnet_shmem_area();
	ShEntry    *s = &sc->e[pack_arg.slot];
	ShPacked   *p = NULL;

	LWLockAcquire(pepnet_shmem_lock(), LW_SHARED);
	if (s->gen == pack_arg.gen && s->state == SH_READY)
		p = packed_find(area, s, pack_arg.precision, key, bytes);
	LWLockRelease(pepnet_shmem_lock());
	return p ? packed_data(p) : NULL;
}

static void
pack_publish(void *arg, const char *key, const void *packed, size_t bytes)
{
	dsa_area   *area = pepnet_shmem_area();
	LWLock	   *lock = pepnet_shmem_lock();
	ShEntry    *s = &sc->e[pack_arg.slot];
	Size		need = sizeof(ShPacked) + 64 + bytes;
	dsa_pointer dp;
	ShPacked   *p;
	bool		ok;

	if (strlen(key) >= sizeof(p->key))
		return;
	LWLockAcquire(lock, LW_EXCLUSIVE);
	ok = s->gen == pack_arg.gen && s->state == SH_READY &&
		packed_find(area, s, pack_arg.precision, key, bytes) == NULL &&
		reserve(area, need, pack_arg.slot);
	if (ok)
		s->bytes += need;
	LWLockRelease(lock);
	if (!ok)
		return;
	dp = dsa_allocate_extended(area, need, DSA_ALLOC_HUGE | DSA_ALLOC_NO_OOM);
	if (DsaPointerIsValid(dp))
	{
		p = dsa_get_address(area, dp);
		memset(p, 0, sizeof(ShPacked));
		p->precision = pack_arg.precision;
		strlcpy(p->key, key, sizeof(p->key));
		p->bytes = bytes;
		memcpy(packed_data(p), packed, bytes);
	}
	LWLockAcquire(lock, LW_EXCLUSIVE);
	if (!DsaPointerIsValid(dp) || packed_find(area, s, pack_arg.precision, key, bytes) != NULL)
	{
		/* no memory, or another backend published it meanwhile */
		sc->used -= need;
		s->bytes -= need;
		if (DsaPointerIsValid(dp))
			dsa_free(area, dp);
	}
	else
	{
		p->next = s->packed;
		s->packed = dp;
	}
	LWLockRelease(lock);
}

static PnPackShare pack_share = {pack_lookup, pack_publish, NULL};

/* The provider of shared packed weights for e's engine in a precision, NULL for a private entry */
PnPackShare *
pepnet_shcache_pack_share(PepnetEntry *e, int precision)
{
	if (e->sh_slot < 0 || !enabled())
		return NULL;
	pack_arg.slot = e->sh_slot;
	pack_arg.gen = e->sh_gen;
	pack_arg.precision = precision;
	return &pack_share;
}

/* How many domains' fused matrices the shared entry slot holds */
int
pepnet_shcache_shared_domains(int slot)
{
	int			n;

	LWLockAcquire(pepnet_shmem_lock(), LW_SHARED);
	n = sc->e[slot].ndomains;
	LWLockRelease(pepnet_shmem_lock());
	return n;
}

/* pepnet_shared_cache(): the versions in the shared cache of this database */
Datum
pepnet_shared_cache(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ShEntry    *copy;
	int			i,
				n = 0;

	InitMaterializedSRF(fcinfo, 0);
	/* names of versions only for roles that may read them */
	{
		Oid			nsp = get_namespace_oid("pepnet", true);
		Oid			rel = OidIsValid(nsp) ? get_relname_relid("models", nsp) : InvalidOid;

		if (!OidIsValid(rel) || pg_class_aclcheck(rel, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for table pepnet.models"),
					 errdetail("The shared cache lists the versions of pepnet.models."),
					 errhint("GRANT SELECT ON pepnet.models to roles that inspect the shared cache.")));
	}
	if (!pepnet_shmem_ready() || sc == NULL)
		return (Datum) 0;
	copy = palloc(sizeof(ShEntry) * SH_ENTRIES);
	LWLockAcquire(pepnet_shmem_lock(), LW_SHARED);
	for (i = 0; i < SH_ENTRIES; i++)
		if (sc->e[i].state != SH_FREE && sc->e[i].dbid == MyDatabaseId)
			copy[n++] = sc->e[i];
	LWLockRelease(pepnet_shmem_lock());
	for (i = 0; i < n; i++)
	{
		Datum		values[10];
		bool		nulls[10] = {0};
		ShEntry    *s = &copy[i];

		values[0] = CStringGetTextDatum(s->name);
		values[1] = Int32GetDatum(s->version);
		values[2] = CStringGetTextDatum(s->state == SH_READY ? "ready" : "building");
		values[3] = Int64GetDatum((int64) s->bytes);
		values[4] = Int32GetDatum(s->ndomains);
		values[5] = Int32GetDatum(s->pins);
		values[6] = Int64GetDatum(s->hits);
		values[7] = TimestampTzGetDatum(s->built_at);
		nulls[7] = s->state != SH_READY;
		values[8] = TimestampTzGetDatum(s->last_used);
		nulls[8] = s->state != SH_READY;
		values[9] = Int32GetDatum(s->builder);
		nulls[9] = s->state != SH_BUILDING;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* pepnet_shared_cache_stats(): one row of server-wide figures */
Datum
pepnet_shared_cache_stats(PG_FUNCTION_ARGS)
{
	TupleDesc	td;
	Datum		values[7];
	bool		nulls[7] = {0};
	int			i,
				n = 0;

	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "pepnet_shared_cache_stats: return type must be a row type");
	values[0] = BoolGetDatum(enabled());
	values[1] = Int64GetDatum((int64) limit_bytes());
	if (!pepnet_shmem_ready() || sc == NULL)
	{
		for (i = 2; i < 7; i++)
			nulls[i] = true;
	}
	else
	{
		LWLockAcquire(pepnet_shmem_lock(), LW_SHARED);
		for (i = 0; i < SH_ENTRIES; i++)
			n += sc->e[i].state != SH_FREE;
		values[2] = Int64GetDatum((int64) sc->used);
		values[3] = Int32GetDatum(n);
		values[4] = Int64GetDatum((int64) sc->builds);
		values[5] = Int64GetDatum((int64) sc->evictions);
		values[6] = Int64GetDatum((int64) sc->fallbacks);
		LWLockRelease(pepnet_shmem_lock());
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(td, values, nulls)));
}

/*
 * pepnet._shared_cache_dump(): the DSA area's own account of its segments
 * and spans (dsa_dump, on the server's stderr: the log without
 * logging_collector), for tests that check that no block is left
 * allocated; false when the shared cache is off.  Superuser only.
 */
Datum
pepnet_shared_cache_dump(PG_FUNCTION_ARGS)
{
	if (!enabled())
		PG_RETURN_BOOL(false);
	dsa_dump(pepnet_shmem_area());
	PG_RETURN_BOOL(true);
}
