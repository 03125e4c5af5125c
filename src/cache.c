/*
 * cache.c
 *		The backend cache of model versions (after postgres_fdw/shippable.c):
 *		model references resolved to version ids, and per version the
 *		tensors, a scoring workspace and, built on first use per domain, the
 *		fused STAR matrices.  Bounded by pepnet.cache_size, least recently
 *		used out first.
 *
 * Versions are immutable, so a version's entry, keyed by (name, version)
 * and checked against the row's xmin (a version deleted and stored again,
 * e.g. by a re-created extension or a restore, is another row), never goes
 * stale.  What a reference ('ctr', 'ctr@7') means can change at any
 * commit, so it is looked up once per statement with the statement's
 * snapshot (index scans of the tables' primary keys, models.c) and
 * remembered for the rest of that statement: every call of one statement
 * uses the same version, the one deployed when the statement's snapshot
 * was taken.
 */
#include "pepnet.h"
#include "pepshm.h"

#include <limits.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/acl.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#define REF_KEY_LEN (PEPNET_NAMELEN + 16)
/* the hash key of a version: the first fields of PepnetEntry */
#define ENTRY_KEY_LEN (offsetof(PepnetEntry, version) + sizeof(int32))

typedef struct RefEntry
{
	char		key[REF_KEY_LEN];
	PepnetRef	ref;
	LocalTransactionId lxid;	/* the statement it was looked up in */
	TimestampTz stmt_start;
} RefEntry;

int			pepnet_cache_size_mb = 256;

static HTAB *entries = NULL;	/* (name, version) -> PepnetEntry */
static HTAB *refs = NULL;		/* reference text -> PepnetRef, per statement */
static Oid	models_relid = InvalidOid;	/* the table the cached versions came from */
static PepnetTables tables;		/* pepnet's tables, found by name */
static bool callbacks_registered = false;
static uint64 lru_clock = 0;
static MemoryContext cache_cxt = NULL;

static void evict(PepnetEntry *keep, bool at_end);

PG_FUNCTION_INFO_V1(pepnet_cache);
PG_FUNCTION_INFO_V1(pepnet_cache_clear);
PG_FUNCTION_INFO_V1(pepnet_preload);

/* pepnet.cache_size, defined from _PG_init */
void
pepnet_cache_init(void)
{
	DefineCustomIntVariable("pepnet.cache_size",
							"Memory a backend may use to cache model versions (least recently used out first).",
							NULL, &pepnet_cache_size_mb, 256, 1, INT_MAX / 2,
							PGC_USERSET, GUC_UNIT_MB, NULL, NULL, NULL);
}

/* Drop one entry and its memory */
static void
entry_drop(PepnetEntry *e)
{
	MemoryContext cxt = e->cxt;

	hash_search(entries, e, HASH_REMOVE, NULL);
	if (cxt)
		MemoryContextDelete(cxt);
}

/*
 * Whether e is in use by the running statement: a statement (a scoring call,
 * pepnet_score_query reading its data query, a plpgsql loop) may hold
 * pointers into an entry across calls, and whatever else runs in the same
 * statement (pepnet_cache_clear, a smaller pepnet.cache_size, other
 * versions) must not free it under it.
 */
static bool
entry_pinned(const PepnetEntry *e)
{
	return e->pin_lxid == MyProc->lxid && e->pin_stmt == GetCurrentStatementStartTimestamp();
}

/* Drop every entry, also those in use (only when the extension itself is gone) */
static void
entries_clear(void)
{
	HASH_SEQ_STATUS st;
	PepnetEntry *e;

	if (entries == NULL)
		return;
	hash_seq_init(&st, entries);
	while ((e = hash_seq_search(&st)) != NULL)
	{
		if (e->cxt)
			MemoryContextDelete(e->cxt);
		hash_search(entries, e, HASH_REMOVE, NULL);
	}
}

/*
 * At the end of every transaction: a version larger than pepnet.cache_size
 * was kept for the transaction that used it, and goes now, so that an idle
 * backend never holds more than the setting allows.
 */
static void
xact_cb(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		evict(NULL, true);
}

/*
 * pepnet's tables as last found by name: valid until an invalidation
 * message names one of them (DDL, GRANT, DROP EXTENSION; a relcache reset)
 * or changes a schema (ALTER SCHEMA ... RENAME), then looked up by name
 * again.
 */
static void
tables_relcache_cb(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == tables.models || relid == tables.deployments)
		tables.valid = false;
}

static void
tables_syscache_cb(Datum arg, int cacheid, uint32 hashvalue)
{
	tables.valid = false;
}

/*
 * Make the hash tables once per backend, and find pepnet's tables, with
 * pepnet.models locked (AccessShareLock, to the end of the transaction, as
 * any statement reading it).  If the extension was dropped and created
 * again, versions start over: forget all.
 */
static void
ensure_tables(void)
{
	HASHCTL		ctl;

	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(TopMemoryContext, "pepnet cache", ALLOCSET_DEFAULT_SIZES);
	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(tables_relcache_cb, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, tables_syscache_cb, (Datum) 0);
		callbacks_registered = true;
	}
	for (;;)
	{
		if (!tables.valid)
		{
			Oid			nsp = get_namespace_oid("pepnet", true);
			Oid			mrel = OidIsValid(nsp) ? get_relname_relid("models", nsp) : InvalidOid;

			if (!OidIsValid(mrel))
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_TABLE),
						 errmsg("table pepnet.models does not exist"),
						 errhint("Run CREATE EXTENSION pepnet.")));
			tables.nsp = nsp;
			tables.models = mrel;
			tables.deployments = get_relname_relid("deployments", nsp);
			tables.valid = true;
		}
		/* taking the lock reads the invalidation messages committed before it */
		LockRelationOid(tables.models, AccessShareLock);
		if (tables.valid)
			break;
		UnlockRelationOid(tables.models, AccessShareLock);
	}
	if (entries == NULL)
	{
		memset(&ctl, 0, sizeof(ctl));
		StaticAssertStmt(offsetof(PepnetEntry, version) == PEPNET_NAMELEN, "PepnetEntry key is padded");
		ctl.keysize = ENTRY_KEY_LEN;
		ctl.entrysize = sizeof(PepnetEntry);
		ctl.hcxt = cache_cxt;
		entries = hash_create("pepnet versions", 16, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		RegisterXactCallback(xact_cb, NULL);
	}
	if (refs == NULL || tables.models != models_relid)
	{
		if (OidIsValid(models_relid) && tables.models != models_relid)
			entries_clear();
		if (refs)
			hash_destroy(refs);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = REF_KEY_LEN;
		ctl.entrysize = sizeof(RefEntry);
		ctl.hcxt = cache_cxt;
		refs = hash_create("pepnet references", 16, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		models_relid = tables.models;
	}
}

/*
 * The current role must be able to read the models (and, for a bare name,
 * the deployments) even when this backend serves them from its cache.
 */
static void
check_read_access(bool deployments)
{
	Oid			user = GetUserId();
	Oid			nsp = tables.nsp;

	if (pg_namespace_aclcheck(nsp, user, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for schema pepnet"),
				 errhint("GRANT USAGE ON SCHEMA pepnet and SELECT ON pepnet.models, pepnet.deployments to roles that score.")));
	if (pg_class_aclcheck(tables.models, user, ACL_SELECT) != ACLCHECK_OK ||
		(deployments && OidIsValid(tables.deployments) &&
		 pg_class_aclcheck(tables.deployments, user, ACL_SELECT) != ACLCHECK_OK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", deployments ? "pepnet.models or pepnet.deployments" : "pepnet.models"),
				 errhint("GRANT SELECT ON pepnet.models, pepnet.deployments to roles that score.")));
}

/*
 * Resolve a model reference, 'name' (deployed, else latest version) or
 * 'name@N', to a version: looked up once per statement, so that every call
 * of a statement uses the same version, and each new statement sees the
 * deployments committed before its snapshot.
 */
void
pepnet_resolve(const char *ref, PepnetRef *out)
{
	const char *at = strchr(ref, '@');
	char		name[PEPNET_NAMELEN];
	char		key[REF_KEY_LEN];
	int32		version = 0;
	RefEntry   *re;
	bool		found;
	size_t		nlen = at ? (size_t) (at - ref) : strlen(ref);

	if (nlen == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed model reference \"%s\": the name is empty", ref),
				 errhint("Use 'name' for the deployed version or 'name@version', as in 'ctr@7'.")));
	if (nlen >= PEPNET_NAMELEN || pg_mbstrlen_with_len(ref, nlen) > PEPNET_NAME_MAXCHARS)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("model name in reference \"%s\" is longer than %d characters", pepnet_clip(ref, 40), PEPNET_NAME_MAXCHARS)));
	memcpy(name, ref, nlen);
	name[nlen] = '\0';
	if (at)
	{
		const char *p = at + 1;
		int64		v = 0;

		if (*p == '\0')
			goto malformed;
		for (; *p; p++)
		{
			if (*p < '0' || *p > '9')
				goto malformed;
			v = v * 10 + (*p - '0');
			if (v > PG_INT32_MAX)
				goto malformed;
		}
		if (v < 1)
			goto malformed;
		version = (int32) v;
	}

	ensure_tables();
	check_read_access(version == 0);
	snprintf(key, sizeof(key), "%s@%d", name, version);
	re = hash_search(refs, key, HASH_FIND, NULL);
	if (re && re->lxid == MyProc->lxid && re->stmt_start == GetCurrentStatementStartTimestamp())
	{
		*out = re->ref;
		return;
	}
	pepnet_lookup_ref(name, version, &tables, out);
	re = hash_search(refs, key, HASH_ENTER, &found);
	re->ref = *out;
	re->lxid = MyProc->lxid;
	re->stmt_start = GetCurrentStatementStartTimestamp();
	return;

malformed:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("malformed model reference \"%s\"", ref),
			 errhint("Use 'name' for the deployed version or 'name@version' with a version from 1, as in 'ctr@7'.")));
}

/*
 * Evict least recently used entries, other than keep and those in use by
 * the running statement, until within the budget; entries cleared while in
 * use (stale) go as soon as they are not.  An entry in use stays even when
 * it alone exceeds the budget; the end of the transaction (at_end: nothing
 * is in use any more) then drops it (xact_cb).
 */
static void
evict(PepnetEntry *keep, bool at_end)
{
	Size		budget = (Size) pepnet_cache_size_mb * 1024 * 1024;

	if (entries == NULL)
		return;

	for (;;)
	{
		HASH_SEQ_STATUS st;
		PepnetEntry *e,
				   *oldest = NULL;
		Size		total = 0;
		bool		dropped = false;

		hash_seq_init(&st, entries);
		while ((e = hash_seq_search(&st)) != NULL)
		{
			bool		in_use = e == keep || (!at_end && entry_pinned(e));

			if (e->stale && !in_use)
			{
				entry_drop(e);
				dropped = true;
				continue;
			}
			total += e->bytes;
			if (!in_use && (oldest == NULL || e->lru < oldest->lru))
				oldest = e;
		}
		if (dropped)
			continue;
		if (total <= budget || oldest == NULL)
			return;
		entry_drop(oldest);
	}
}

/* The cached version a resolved reference names, loading it on a miss */
PepnetEntry *
pepnet_cache_get(const PepnetRef *ref)
{
	PepnetEntry *e;
	bool		found;
	MemoryContext cxt,
				old;
	PnModel    *m;
	PepnetEntry key;
	int			sh_slot;
	uint64		sh_gen;

	/* pepnet_resolve, which made ref, has checked the tables this statement */
	if (entries == NULL)
		ensure_tables();
	memset(&key, 0, ENTRY_KEY_LEN);
	strlcpy(key.name, ref->name, PEPNET_NAMELEN);
	key.version = ref->version;
	e = hash_search(entries, &key, HASH_FIND, NULL);
	if (e && e->xmin != ref->xmin)
	{
		/* (name, version) now names another row */
		entry_drop(e);
		e = NULL;
	}
	if (e && !pepnet_shcache_pin(e))
	{
		/* its shared copy was evicted since: look it up again */
		entry_drop(e);
		e = NULL;
	}
	if (e)
	{
		e->hits++;
		e->lru = ++lru_clock;
		e->pin_lxid = MyProc->lxid;
		e->pin_stmt = GetCurrentStatementStartTimestamp();
		e->stale = false;
		return e;
	}

	/* build under the statement's context: an error frees everything */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "pepnet model", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	/* shared by all backends with pepnet preloaded, else (or when it does not fit) private */
	m = pepnet_shcache_model(ref, &sh_slot, &sh_gen);
	{
		PnDomainCache **domains = palloc0(sizeof(PnDomainCache *) * m->cfg.domains);
		PnWork	   *work = pn_work_new(m, PEPNET_BLOCK);

		if (work == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory for the scoring workspace")));
		MemoryContextSwitchTo(old);
		MemoryContextSetParent(cxt, cache_cxt);

		e = hash_search(entries, &key, HASH_ENTER, &found);
		e->cxt = cxt;
		e->model = m;
		e->domains = domains;
		e->engine[PN_FP32] = e->engine[PN_BF16] = e->engine[PN_INT8] = NULL;
		e->persona = NULL;
		e->persona_ids = NULL;
		e->ndomains = 0;
		e->work = work;
		e->xmin = ref->xmin;
		e->sh_slot = sh_slot;
		e->sh_gen = sh_gen;
		e->hits = 1;
		e->built_at = GetCurrentTimestamp();
		e->lru = ++lru_clock;
		e->bytes = MemoryContextMemAllocated(cxt, true);
		e->pin_lxid = MyProc->lxid;
		e->pin_stmt = GetCurrentStatementStartTimestamp();
		e->stale = false;
	}
	evict(e, false);
	return e;
}

/* The fused matrices of one domain of a cached version, built on first use */
PnDomainCache *
pepnet_cache_domain(PepnetEntry *e, int domain)
{
	if (e->domains[domain] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(e->cxt);
		PnError		err = {0};
		PnDomainCache *dc;

		if (e->sh_slot >= 0)
			dc = pepnet_shcache_domain(e, domain);	/* shared, or private if it does not fit */
		else if (pn_domain_build(e->model, domain, &dc, &err) != PN_OK)
		{
			MemoryContextSwitchTo(old);
			pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
		}
		MemoryContextSwitchTo(old);
		e->domains[domain] = dc;
		e->ndomains++;
		e->bytes = MemoryContextMemAllocated(e->cxt, true);
		evict(e, false);
	}
	return e->domains[domain];
}

/* Free a version's oneDNN objects with its memory context */
static void
engine_free_cb(void *arg)
{
	pn_engine_free((PnEngine *) arg);
}

/*
 * ERROR when this CPU cannot score in the precision at its rate: bf16
 * without AVX512-BF16 or AMX; int8 without AVX2 (int8 runs oneDNN's int8
 * matmuls with VNNI or AMX, else pepnet's AVX2 int8 kernel at about fp32's
 * speed, the same scores; docs/api.md)
 */
void
pepnet_check_precision(int precision)
{
	if (precision == PN_BF16 && !pn_engine_bf16_supported())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pepnet.precision = bf16 needs a CPU with AVX512-BF16 or AMX instructions"),
				 errdetail("oneDNN runs this CPU as %s; bf16 there would be emulated and slower than fp32.", pn_engine_isa()),
				 errhint("SET pepnet.precision = 'fp32'.")));
	if (precision == PN_INT8 && !pn_engine_int8_supported() && !pn_q8_avx2())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("pepnet.precision = int8 needs a CPU with AVX2 (or AVX512-VNNI or AMX)"),
				 errdetail("oneDNN runs this CPU as %s; int8 there would run portable C, slower than fp32.", pn_engine_isa()),
				 errhint("SET pepnet.precision = 'fp32'.")));
}

/*
 * The batched-scoring engine of a cached version in a precision, made on
 * first use: oneDNN primitives (JIT code shared between versions of the
 * same shapes through oneDNN's primitive cache) and the packed weights.
 */
PnEngine *
pepnet_cache_engine(PepnetEntry *e, int precision, PnDomainCache *dc)
{
	PnEngine   *eng = e->engine[precision];
	PnError		err = {0};
	MemoryContext old;
	int			rc;

	if (eng == NULL)
	{
		MemoryContextCallback *cb;

		pepnet_check_precision(precision);
		old = MemoryContextSwitchTo(e->cxt);
		cb = palloc(sizeof(MemoryContextCallback));
		/* packed weights shared when preloaded */
		rc = pn_engine_new(e->model, precision, PN_TILE, pepnet_shcache_pack_share(e, precision), &eng, &err);
		if (rc != PN_OK)
		{
			MemoryContextSwitchTo(old);
			pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
		}
		cb->func = engine_free_cb;
		cb->arg = eng;
		MemoryContextRegisterResetCallback(e->cxt, cb);
		MemoryContextSwitchTo(old);
		e->engine[precision] = eng;
	}
	/* the domain's packed tower weights (the engine keeps them) */
	old = MemoryContextSwitchTo(e->cxt);
	rc = pn_engine_prepare_domain(eng, dc, pepnet_shcache_pack_share(e, precision), &err);
	if (rc != PN_OK)
	{
		MemoryContextSwitchTo(old);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	MemoryContextSwitchTo(old);
	e->bytes = MemoryContextMemAllocated(e->cxt, true);
	evict(e, false);
	return eng;
}

/*
 * The persona part of a request to version e (the persona's embeddings and
 * the PPNet gates' persona biases), persona: its ids [npers] (NULL without
 * persona fields).  The last one built for e is kept in e's memory (freed
 * with the version's entry) and returned while the same ids come again, as
 * a user's requests in a row do; another persona replaces it.  The ids are
 * the whole key: the version's weights never change under its entry.
 */
const PnPersona *
pepnet_cache_persona(PepnetEntry *e, const int64 *persona)
{
	int			P = e->model->cfg.npers;
	PnPersona  *pp;
	PnError		err = {0};
	MemoryContext old;

	if (e->persona != NULL && (P == 0 || memcmp(e->persona_ids, persona, sizeof(int64) * P) == 0))
		return e->persona;
	old = MemoryContextSwitchTo(e->cxt);
	if (pn_persona_build(e->model, persona, &pp, &err) != PN_OK)
	{
		MemoryContextSwitchTo(old);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	if (e->persona_ids == NULL)
		e->persona_ids = palloc(sizeof(int64) * (P + 1));
	MemoryContextSwitchTo(old);
	pn_persona_free(e->persona);
	e->persona = pp;
	if (P > 0)
		memcpy(e->persona_ids, persona, sizeof(int64) * P);
	return pp;
}

/* pepnet_cache(): what this backend holds */
Datum
pepnet_cache(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HASH_SEQ_STATUS st;
	PepnetEntry *e;

	InitMaterializedSRF(fcinfo, 0);
	if (entries == NULL)
		return (Datum) 0;
	hash_seq_init(&st, entries);
	while ((e = hash_seq_search(&st)) != NULL)
	{
		Datum		values[6];
		bool		nulls[6] = {0};

		values[0] = CStringGetTextDatum(e->name);
		values[1] = Int32GetDatum(e->version);
		values[2] = Int64GetDatum((int64) e->bytes);
		values[3] = Int32GetDatum(e->ndomains);
		values[4] = Int64GetDatum(e->hits);
		values[5] = TimestampTzGetDatum(e->built_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * pepnet_cache_clear(): drop every cached version of this backend; those in
 * use by the running statement go when it is over
 */
Datum
pepnet_cache_clear(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS st;
	PepnetEntry *e;

	if (entries != NULL)
	{
		hash_seq_init(&st, entries);
		while ((e = hash_seq_search(&st)) != NULL)
		{
			if (entry_pinned(e))
				e->stale = true;
			else
				entry_drop(e);
		}
	}
	PG_RETURN_VOID();
}

/*
 * pepnet_preload(model): load a version into the shared cache ahead of
 * traffic (e.g. after pepnet_deploy), with the fused matrices of every
 * domain.  True when it is shared; false (with a NOTICE) when pepnet is not
 * preloaded, the shared cache is off, or the version does not fit; then it
 * is in this backend's cache only.
 */
Datum
pepnet_preload(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	PepnetEntry *e;
	int			d;
	bool		shared;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	e = pepnet_cache_get(&ref);
	shared = e->sh_slot >= 0;
	if (!shared)
	{
		ereport(NOTICE,
				(errmsg("model \"%s\" version %d is cached by this backend only", ref.name, ref.version),
				 !pepnet_shmem_ready() ?
				 errhint("Add pepnet to shared_preload_libraries and restart the server to share versions between backends.") :
				 errhint("pepnet.shared_cache_size (%d MB) is 0 or too small for this version beside the versions in use.",
						 pepnet_shared_cache_size_mb)));
		PG_RETURN_BOOL(false);
	}
	for (d = 0; d < e->model->cfg.domains; d++)
	{
		CHECK_FOR_INTERRUPTS();
		(void) pepnet_cache_domain(e, d);
	}
	shared = pepnet_shcache_shared_domains(e->sh_slot) == e->model->cfg.domains;
	if (!shared)
		ereport(NOTICE,
				(errmsg("the weights of model \"%s\" version %d are shared, but not the fused matrices of every domain",
						ref.name, ref.version),
				 errhint("Raise pepnet.shared_cache_size; the other domains are fused per backend.")));
	PG_RETURN_BOOL(true);
}
