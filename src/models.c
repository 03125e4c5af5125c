/*
 * models.c
 *		The registry: model versions as rows of pepnet.models (inserting a
 *		version, looking up references, loading weights), its guards
 *		(writes refused on a hot standby, in a read-only transaction or on a
 *		read-only node; DROP EXTENSION; TRUNCATE) and the deploy log.
 *		Creating, importing and exporting versions is transfer.c's.
 *
 * Every query is schema-qualified, operators included, so that a hostile
 * search_path cannot redirect it.
 */
#include "pepnet.h"

#include <limits.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parse_relation.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/fmgroids.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "catalog/pg_class.h"

PG_FUNCTION_INFO_V1(pepnet_require_writable_sql);
PG_FUNCTION_INFO_V1(pepnet_read_only_guard);
PG_FUNCTION_INFO_V1(pepnet_drop_guard);
PG_FUNCTION_INFO_V1(pepnet_deploy_log);

/* settings of the registry */
int			pepnet_max_model_size_mb = 1024;
bool		pepnet_read_only = false;
static bool pepnet_allow_drop = false;
static char *pepnet_deploy_strategy = NULL;

/* pepnet.max_model_size in bytes */
int64
pepnet_max_model_bytes(void)
{
	return (int64) pepnet_max_model_size_mb * 1024 * 1024;
}

/* Serialize a model as a safetensors bytea */
bytea *
model_to_bytea(const PnModel *m)
{
	size_t		n = pn_safetensors_size(m);
	bytea	   *b;

	if (n > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model weights of %zu bytes exceed the 1 GB limit of a bytea value", n)));
	b = (bytea *) palloc(n + VARHDRSZ);
	SET_VARSIZE(b, n + VARHDRSZ);
	pn_safetensors_write(m, (uint8_t *) VARDATA(b));
	return b;
}

/*
 * Insert a new version of name and return its number.  The number is
 * given by the trigger models_number: never reused, above both the name's
 * high-water mark in pepnet.model_names (which outlives deletes) and its
 * highest stored version.  Its upsert of the high-water row locks it, which
 * serializes concurrent writers of one name until they commit.
 */
int32
pepnet_insert_version(const char *name, const char *config_json, const PnModel *model,
					  const char *metrics_json, int32 parent)
{
	Oid			argtypes[5] = {TEXTOID, TEXTOID, BYTEAOID, TEXTOID, INT4OID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', parent > 0 ? ' ' : 'n'};
	int32		version;
	bool		isnull;

	pepnet_check_writable("creating a model version");
	/* 0.2.0: weights in chunks (chunks.c) */
	if (pepnet_chunked_schema())
		return pepnet_store_chunked(name, 0, config_json, model, NULL, 0, metrics_json, parent, NULL, NULL);

	values[0] = CStringGetTextDatum(name);
	values[1] = CStringGetTextDatum(config_json);
	values[2] = PointerGetDatum(model_to_bytea(model));
	values[3] = CStringGetTextDatum(metrics_json ? metrics_json : "{}");
	values[4] = Int32GetDatum(parent);

	pepnet_spi_connect();
	if (!OidIsValid(get_relname_relid("model_names", get_namespace_oid("pepnet", false))))
	{
		/* the 0.1.0 schema (before ALTER EXTENSION pepnet UPDATE): max + 1 under a lock */
		if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock(" CppAsString2(PEPNET_LOCK_KEY) ", pg_catalog.hashtext($1))",
								  1, argtypes, values, nulls, false, 0) != SPI_OK_SELECT ||
			SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, metrics, parent) "
								  "SELECT $1, COALESCE(pg_catalog.max(m.version), 0) OPERATOR(pg_catalog.+) 1, "
								  "$2::pg_catalog.jsonb, $3, $4::pg_catalog.jsonb, $5 "
								  "FROM pepnet.models m WHERE m.name OPERATOR(pg_catalog.=) $1 RETURNING version",
								  5, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
			SPI_processed != 1)
			elog(ERROR, "could not insert a version of model \"%s\"", name);
	}
	else if (SPI_execute_with_args("INSERT INTO pepnet.models (name, version, config, weights, metrics, parent) "
								   "VALUES ($1, NULL, $2::pg_catalog.jsonb, $3, $4::pg_catalog.jsonb, $5) RETURNING version",
								   5, argtypes, values, nulls, false, 0) != SPI_OK_INSERT_RETURNING ||
			 SPI_processed != 1)
		elog(ERROR, "could not insert a version of model \"%s\"", name);
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the new version of model \"%s\" got no number", name),
				 errhint("The trigger models_number on pepnet.models numbers versions; is it disabled?")));
	SPI_finish();
	return version;
}

/*
 * Store model m (its config and weights) as a new version of name, with
 * metrics (JSON text, NULL for {}) and the version it came from (0: none);
 * returns the new version's number.
 */
int32
pepnet_store_model(const char *name, const PnModel *m, const char *metrics_json, int32 parent)
{
	char	   *cj = pn_config_to_json(&m->cfg);

	if (cj == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return pepnet_insert_version(name, cj, m, metrics_json, parent);
}

/* A plan kept for the life of the backend (replanned by the plan cache as needed) */
static SPIPlanPtr
kept_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *argtypes)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, argtypes);

		if (p == NULL)
			elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
		SPI_keepplan(p);
		*slot = p;
	}
	return *slot;
}

/*
 * The error of a reference that names no version: a deployment of a
 * version this node lacks (deployed > 0; foreign keys are not checked by
 * logical replication's apply worker), a version that does not exist
 * (latest: the name's latest version, 0 when it has none), or a name
 * without versions.
 */
static void
pg_attribute_noreturn()
lookup_error(const char *name, int32 version, int32 deployed, int32 latest)
{
	if (deployed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" is deployed at version %d, which does not exist on this node", name, deployed),
				 errdetail("pepnet.deployments names a version that pepnet.models lacks: it was deleted by logical replication or has not arrived."),
				 errhint("Deploy an existing version with pepnet_deploy (on the publisher if this node subscribes to it), or score a version by number, as in '%s@N'.", name)));
	if (version > 0 && latest > 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" has no version %d", name, version),
				 errdetail("Its latest version is %d.", latest)));
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("model \"%s\" does not exist", name),
			 errhint("Create it with pepnet_create, pepnet_import or pepnet_train; see pepnet.models.")));
}

/*
 * The primary key of a registry table, opened (AccessShareLock), when it
 * is the one pepnet made: a valid unique btree index on the heap columns
 * cols[0..ncols-1] of types types[] in the default btree operator
 * families fams[], without expressions.  Else NULL: the lookup then runs
 * as SQL.  attnums receives the columns' attribute numbers in the heap.
 */
static Relation
open_pkey(Relation heap, int ncols, const char *const *cols, const Oid *types, const Oid *fams,
		  AttrNumber *attnums)
{
	Oid			pk = RelationGetPrimaryKeyIndex(heap);
	TupleDesc	desc = RelationGetDescr(heap);
	Relation	idx;
	int			i;

	if (!OidIsValid(pk))
		return NULL;
	idx = index_open(pk, AccessShareLock);
	if (idx->rd_rel->relam != BTREE_AM_OID || !idx->rd_index->indisvalid || !idx->rd_index->indisunique ||
		idx->rd_index->indnkeyatts != ncols)
		goto unusable;
	for (i = 0; i < ncols; i++)
	{
		AttrNumber	a = idx->rd_index->indkey.values[i];
		Form_pg_attribute att;

		if (a <= 0 || a > desc->natts || idx->rd_opfamily[i] != fams[i] || idx->rd_opcintype[i] != types[i])
			goto unusable;
		att = TupleDescAttr(desc, a - 1);
		if (att->attisdropped || att->atttypid != types[i] || strcmp(NameStr(att->attname), cols[i]) != 0)
			goto unusable;
		attnums[i] = a;
	}
	return idx;
unusable:
	index_close(idx, NoLock);
	return NULL;
}

/*
 * The first row of an index scan of heap through idx in direction dir with
 * the statement's snapshot: its column attno and, when xmin is not NULL,
 * the row's xmin.  False when no row is visible.
 */
static bool
scan_first(Relation heap, Relation idx, Snapshot snap, ScanKey keys, int nkeys, ScanDirection dir,
		   AttrNumber attno, Datum *value, bool *isnull, TransactionId *xmin)
{
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	IndexScanDesc scan = index_beginscan(heap, idx, snap, nkeys, 0);
	bool		found;

	index_rescan(scan, keys, nkeys, NULL, 0);
	found = index_getnext_slot(scan, dir, slot);
	if (found)
	{
		*value = slot_getattr(slot, attno, isnull);
		if (xmin)
		{
			bool		n;

			*xmin = DatumGetTransactionId(slot_getsysattr(slot, MinTransactionIdAttributeNumber, &n));
		}
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	return found;
}

/* a plain heap table without row-level security (which the SQL lookup applies) */
static bool
plain_table(Relation rel)
{
	return rel->rd_rel->relkind == RELKIND_RELATION && rel->rd_rel->relam == HEAP_TABLE_AM_OID &&
		!rel->rd_rel->relrowsecurity;
}

/*
 * pepnet_lookup_ref by index scans of the primary keys of pepnet.models
 * (name, version) and pepnet.deployments (name) with the statement's
 * snapshot: the same rows as the SQL form, without an executor.  False
 * when the tables are not as pepnet made them (row-level security enabled,
 * a primary key dropped or changed, no active snapshot): then the SQL form
 * runs.  The relations stay locked to the end of the transaction, as by a
 * query.
 */
static bool
lookup_ref_scan(const char *name, int32 version, const PepnetTables *t, PepnetRef *out)
{
	static const char *const mcols[2] = {"name", "version"};
	static const Oid mtypes[2] = {TEXTOID, INT4OID};
	static const Oid mfams[2] = {TEXT_BTREE_FAM_OID, INTEGER_BTREE_FAM_OID};
	Snapshot	snap;
	Relation	models,
				mpk,
				deploy = NULL,
				dpk = NULL;
	AttrNumber	mattr[2],
				dattr[2];
	ScanKeyData keys[2];
	Datum		namedatum,
				v;
	bool		isnull,
				found;
	int32		deployed = 0,
				want,
				latest = 0;
	TransactionId xmin = InvalidTransactionId;

	if (!ActiveSnapshotSet())
		return false;
	snap = GetActiveSnapshot();
	models = table_open(t->models, AccessShareLock);
	mpk = plain_table(models) ? open_pkey(models, 2, mcols, mtypes, mfams, mattr) : NULL;
	if (mpk == NULL)
	{
		table_close(models, NoLock);
		return false;
	}
	namedatum = CStringGetTextDatum(name);
	if (version == 0)
	{
		static const Oid dtypes[1] = {TEXTOID};
		static const Oid dfams[1] = {TEXT_BTREE_FAM_OID};

		if (OidIsValid(t->deployments))
			deploy = try_table_open(t->deployments, AccessShareLock);
		/* (locking it read the invalidation messages: are both still the tables of those names?) */
		if (deploy != NULL && t->valid && plain_table(deploy))
			dpk = open_pkey(deploy, 1, mcols, dtypes, dfams, dattr);
		if (dpk == NULL || (dattr[1] = attnameAttNum(deploy, "version", false)) == InvalidAttrNumber ||
			TupleDescAttr(RelationGetDescr(deploy), dattr[1] - 1)->atttypid != INT4OID)
		{
			if (dpk)
				index_close(dpk, NoLock);
			if (deploy)
				table_close(deploy, NoLock);
			index_close(mpk, NoLock);
			table_close(models, NoLock);
			return false;
		}
		ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, dpk->rd_indcollation[0],
							   F_TEXTEQ, namedatum);
		if (scan_first(deploy, dpk, snap, keys, 1, ForwardScanDirection, dattr[1], &v, &isnull, NULL) && !isnull)
			deployed = DatumGetInt32(v);
		index_close(dpk, NoLock);
		table_close(deploy, NoLock);
	}

	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, InvalidOid, mpk->rd_indcollation[0],
						   F_TEXTEQ, namedatum);
	want = version > 0 ? version : deployed;
	if (want > 0)
	{
		/* the version named, or deployed */
		ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid, mpk->rd_indcollation[1],
							   F_INT4EQ, Int32GetDatum(want));
		found = scan_first(models, mpk, snap, keys, 2, ForwardScanDirection, mattr[1], &v, &isnull, &xmin);
		if (!found && version > 0 &&
			scan_first(models, mpk, snap, keys, 1, BackwardScanDirection, mattr[1], &v, &isnull, NULL) && !isnull)
			latest = DatumGetInt32(v);
	}
	else
	{
		/* the latest version: the first visible row from the top of the name's range */
		found = scan_first(models, mpk, snap, keys, 1, BackwardScanDirection, mattr[1], &v, &isnull, &xmin);
	}
	index_close(mpk, NoLock);
	table_close(models, NoLock);
	if (!found || isnull)
		lookup_error(name, version, deployed, latest);
	out->version = DatumGetInt32(v);
	out->xmin = xmin;
	strlcpy(out->name, name, PEPNET_NAMELEN);
	return true;
}

/*
 * Look up name (version 0: the deployed one, else the latest) in the
 * models table with the current snapshot.  Raises an error that names
 * what is missing, including a deployment whose version is gone (foreign
 * keys are not checked by logical replication's apply worker).
 */
void
pepnet_lookup_ref(const char *name, int32 version, const PepnetTables *tables, PepnetRef *out)
{
	static SPIPlanPtr by_version = NULL,
				by_name = NULL,
				latest = NULL;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		isnull = true,
				deployed_null;
	int			rc;
	int32		deployed = 0,
				latest_version = 0;

	if (lookup_ref_scan(name, version, tables, out))
		return;

	/* the same as SQL (row-level security applied, any indexes) */
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	pepnet_spi_connect();
	if (version > 0)
		rc = SPI_execute_plan(kept_plan(&by_version,
										"SELECT NULL::pg_catalog.int4, version, xmin FROM pepnet.models "
										"WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
										2, argtypes),
							  values, NULL, true, 1);
	else
		rc = SPI_execute_plan(kept_plan(&by_name,
										"SELECT d.version, m.version, m.xmin "
										"FROM (SELECT $1 AS name) n "
										"LEFT JOIN pepnet.deployments d ON d.name OPERATOR(pg_catalog.=) n.name "
										"LEFT JOIN pepnet.models m ON m.name OPERATOR(pg_catalog.=) n.name "
										"AND m.version OPERATOR(pg_catalog.=) COALESCE(d.version, "
										"(SELECT pg_catalog.max(x.version) FROM pepnet.models x WHERE x.name OPERATOR(pg_catalog.=) n.name))",
										1, argtypes),
							  values, NULL, true, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not look up model \"%s\"", name);
	if (SPI_processed == 1)
	{
		Datum		dv = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &deployed_null);

		if (!deployed_null)
			deployed = DatumGetInt32(dv);
		(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	}
	if (SPI_processed == 0 || isnull)
	{
		if (deployed == 0 && version > 0 &&
			SPI_execute_plan(kept_plan(&latest,
									   "SELECT pg_catalog.max(version) FROM pepnet.models WHERE name OPERATOR(pg_catalog.=) $1",
									   1, argtypes),
							 values, NULL, true, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			Datum		lv = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			if (!isnull)
				latest_version = DatumGetInt32(lv);
		}
		lookup_error(name, version, deployed, latest_version);
	}
	out->version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	out->xmin = DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	strlcpy(out->name, name, PEPNET_NAMELEN);
	SPI_finish();
}

/*
 * The layout (tensors, no weights: data NULL) of the version a resolved
 * reference names, from its stored config (invalid: XX001).  Allocated in
 * the caller's memory context; name (of PEPNET_NAMELEN bytes) and version
 * receive what was read.
 */
PnModel *
pepnet_load_layout(const PepnetRef *ref, char *name, int32 *version)
{
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		isnull;
	char	   *cfgtext;
	PnConfig	cfg;
	PnModel    *m;
	PnError		err = {0};

	values[0] = CStringGetTextDatum(ref->name);
	values[1] = Int32GetDatum(ref->version);
	pepnet_spi_connect();
	if (SPI_execute_with_args("SELECT name, version, config::pg_catalog.text FROM pepnet.models "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read model \"%s\" version %d", ref->name, ref->version);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref->name, ref->version)));
	strlcpy(name, TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)), PEPNET_NAMELEN);
	*version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	cfgtext = MemoryContextStrdup(caller, TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)));
	SPI_finish();

	if (pn_config_parse(cfgtext, strlen(cfgtext), pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
	{
		if (err.code == PN_ETOOBIG)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("model \"%s\" version %d is larger than pepnet.max_model_size (%d MB) allows in this session",
							name, *version, pepnet_max_model_size_mb),
					 errdetail("%s", err.msg),
					 errhint("A superuser can raise pepnet.max_model_size for the server (ALTER SYSTEM), the database or the role (ALTER DATABASE / ALTER ROLE ... SET).")));
		pn_setdetail(&err, "The stored config of model \"%s\" version %d is not valid.", name, *version);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	if (pn_model_layout(&cfg, &m, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	pn_config_free(&cfg);
	return m;
}

/*
 * Load the version a resolved reference names: config and weights, checked
 * again as they are read (stored weights that fail are corrupt: XX001).
 * The model is allocated in the caller's memory context; name (of
 * PEPNET_NAMELEN bytes) and version receive what was loaded.
 */
PnModel *
pepnet_load_model(const PepnetRef *ref, char *name, int32 *version)
{
	PnModel    *m = pepnet_load_layout(ref, name, version);
	PnError		err = {0};
	uint8	   *blob;
	uint64		len;

	/*
	 * The weights are read (chunk by chunk, chunks.c) into one buffer in the
	 * caller's context and the model's tensors point into it: one copy of
	 * the weights, not two.
	 */
	blob = pepnet_read_weights(name, *version, 0, 8 + (uint64) PN_MAX_HEADER + (uint64) m->total * 4, &len);
	if (pn_safetensors_read(m, blob, (size_t) len, &err) != PN_OK)
	{
		pn_setdetail(&err, "The stored weights of model \"%s\" version %d are corrupt.", name, *version);
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	}
	if (!m->borrowed)
		pfree(blob);
	return m;
}

/*
 * Refuse a write on a read-only node (pepnet.read_only = on), before any
 * work.  Logical replication's apply worker (session_replication_role =
 * replica) may write: that is how versions arrive there.
 */
void
pepnet_check_writable(const char *what)
{
	if (pepnet_read_only && SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s is not allowed: pepnet is read-only on this node", what),
				 errdetail("pepnet.read_only is on: this node receives model versions and deployments by logical replication."),
				 errhint("Run it on the registry node that publishes pepnet's tables.")));
}

/*
 * Refuse a writing function (what) at once on a hot standby, in a
 * read-only transaction or on a read-only node (pepnet.read_only), before
 * it does any work.
 */
/* the tables a writing function (what) writes, as its read-only error says */
static const char *
writes_of(const char *what)
{
	if (strcmp(what, "pepnet_prune_optimizer") == 0)
		return "pepnet.optimizer_state and pepnet.optimizer_chunks (it deletes Adam state)";
	if (strcmp(what, "pepnet_evaluate") == 0)
		return "pepnet.models (the evaluated version's metrics)";
	return "pepnet.models or pepnet.deployments";
}

void
pepnet_require_writable(const char *what)
{
	pepnet_check_writable(what);	/* pepnet.read_only: a logical-replication subscriber */
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s cannot run on a hot standby", what),
				 errdetail("This server (%s) is in recovery: it replays the primary's versions and deployments and writes none of its own.",
						   node_label()),
				 errhint("Run %s on the primary; the standby sees the result once it has replayed the commit.", what)));
	if (XactReadOnly)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s cannot run in a read-only transaction", what),
				 errdetail("%s writes to %s.", what, writes_of(what)),
				 errhint("Run it in a read-write transaction on the primary (BEGIN READ WRITE, or SET default_transaction_read_only = off).")));
}

/* pepnet._require_writable(what text): the guard for plpgsql writers */
Datum
pepnet_require_writable_sql(PG_FUNCTION_ARGS)
{
	pepnet_require_writable(PG_ARGISNULL(0) ? "this pepnet function" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/* pepnet._read_only_guard(): statement trigger refusing writes to pepnet's tables on a read-only node */
Datum
pepnet_read_only_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "pepnet._read_only_guard must be called as a trigger");
	if (pepnet_read_only && SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA)
	{
		const char *op = TRIGGER_FIRED_BY_INSERT(td->tg_event) ? "INSERT" :
		TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? "UPDATE" :
		TRIGGER_FIRED_BY_DELETE(td->tg_event) ? "DELETE" : "TRUNCATE";

		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("%s on pepnet.%s is not allowed: pepnet is read-only on this node",
						op, RelationGetRelationName(td->tg_relation)),
				 errdetail("pepnet.read_only is on: this node receives model versions and deployments by logical replication."),
				 errhint("Run it on the registry node that publishes pepnet's tables.")));
	}
	/*
	 * TRUNCATE skips the row triggers that keep deployed versions and record
	 * every deployment change: allowed only as DROP EXTENSION is.
	 */
	if (TRIGGER_FIRED_BY_TRUNCATE(td->tg_event) && !pepnet_allow_drop &&
		SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("TRUNCATE on pepnet.%s is not allowed: it would delete versions or deployments without their guards and history",
						RelationGetRelationName(td->tg_relation)),
				 errhint("Delete versions with DELETE (deployed ones are kept), or SET pepnet.allow_drop = on to empty pepnet's tables.")));
	return PointerGetDatum(NULL);
}

/*
 * pepnet._drop_guard(): event trigger at ddl_command_start of DROP
 * EXTENSION and DROP SCHEMA.  Dropping pepnet (by name, or with CASCADE
 * through the schema it was created in) deletes its tables and so every
 * stored version: refused while versions exist, unless pepnet.allow_drop.
 */
Datum
pepnet_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trig;
	DropStmt   *ds;
	ListCell   *lc;
	bool		hit = false;
	char	   *extschema = NULL;
	int64		versions = 0,
				names = 0;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "pepnet._drop_guard must be called as an event trigger");
	trig = (EventTriggerData *) fcinfo->context;
	if (pepnet_allow_drop || !IsA(trig->parsetree, DropStmt) ||
		!OidIsValid(get_extension_oid("pepnet", true)))
		PG_RETURN_VOID();
	ds = (DropStmt *) trig->parsetree;

	pepnet_spi_connect();
	if (ds->removeType == OBJECT_SCHEMA && ds->behavior == DROP_CASCADE &&
		SPI_execute("SELECT n.nspname::pg_catalog.text FROM pg_catalog.pg_extension e "
					"JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace "
					"WHERE e.extname OPERATOR(pg_catalog.=) 'pepnet'", true, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
		extschema = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	foreach(lc, ds->objects)
	{
		Node	   *obj = lfirst(lc);

		if (ds->removeType == OBJECT_EXTENSION && IsA(obj, String) && strcmp(strVal(obj), "pepnet") == 0)
			hit = true;
		if (extschema && IsA(obj, String) && strcmp(strVal(obj), extschema) == 0)
			hit = true;
	}
	if (hit && OidIsValid(get_namespace_oid("pepnet", true)) &&
		OidIsValid(get_relname_relid("models", get_namespace_oid("pepnet", true))))
	{
		Oid			models = get_relname_relid("models", get_namespace_oid("pepnet", true));
		Oid			save_userid;
		int			save_sec;
		HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(models));

		/* count as the table's owner: whoever drops need not be able to read the models */
		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for relation %u", models);
		GetUserIdAndSecContext(&save_userid, &save_sec);
		SetUserIdAndSecContext(((Form_pg_class) GETSTRUCT(tup))->relowner,
							   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
		ReleaseSysCache(tup);
		if (SPI_execute("SELECT pg_catalog.count(*), pg_catalog.count(DISTINCT name) FROM pepnet.models",
						true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			bool		isnull;

			versions = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			names = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
		}
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	SPI_finish();
	if (versions > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg_plural("cannot drop extension pepnet: it would delete %lld stored model version",
							   "cannot drop extension pepnet: it would delete %lld stored model versions",
							   versions, (long long) versions),
				 errdetail("pepnet keeps the versions of %lld model name(s), their deployments and deploy history in its own tables (pepnet.models, pepnet.model_chunks, pepnet.deployments, pepnet.deploy_history), which DROP EXTENSION deletes.",
						   (long long) names),
				 errhint("Keep what you need first (pg_dump, or pepnet_export per version), then SET pepnet.allow_drop = on and drop again.")));
	PG_RETURN_VOID();
}

/* Settings of the registry; called by _PG_init (a pre-existing schema pepnet: sql/pepnet--0.2.0.sql.in) */
void
pepnet_registry_init(void)
{
	DefineCustomIntVariable("pepnet.max_model_size",
							"Largest model (weights) that may be created, imported or loaded.",
							"Configurations whose weights would exceed it are refused before allocating.",
							&pepnet_max_model_size_mb, 1024, 1, INT_MAX / 2,
							PGC_SUSET, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomBoolVariable("pepnet.read_only",
							 "Refuse every write to pepnet's model registry on this node.",
							 "For logical-replication subscribers: versions and deployments arrive from the publisher; "
							 "the apply worker may still write.",
							 &pepnet_read_only, false, PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("pepnet.allow_drop",
							 "Let DROP EXTENSION pepnet delete stored model versions.",
							 "Off: DROP EXTENSION pepnet is refused while pepnet.models has rows.",
							 &pepnet_allow_drop, false, PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("pepnet.deploy_strategy",
							   "Internal: the strategy label pepnet_deploy records in pepnet.deploy_history.",
							   NULL, &pepnet_deploy_strategy, "", PGC_USERSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL, NULL, NULL, NULL);
}

PG_FUNCTION_INFO_V1(pepnet_copy_into_sql);

/* pepnet._copy_into(table text) RETURNS boolean: pepnet_copy_into for the SQL triggers */
Datum
pepnet_copy_into_sql(PG_FUNCTION_ARGS)
{
	char	   *t;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	t = text_to_cstring(PG_GETARG_TEXT_PP(0));
	PG_RETURN_BOOL(pepnet_copy_into(t));
}

/*
 * pepnet._deploy_log(): AFTER ROW trigger on pepnet.deployments writing
 * pepnet.deploy_history: the deploying role, from and to versions and the
 * strategy pepnet_deploy set (else 'sql').  The row is written as the
 * table's owner, as foreign-key triggers do, so deployers need no grant on
 * the history and cannot write it themselves.
 */
Datum
pepnet_deploy_log(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	HeapTuple	oldt = NULL,
				newt = NULL;
	int			aname,
				aversion;
	char	   *name;
	Datum		fromv = 0,
				tov = 0;
	bool		from_null = true,
				to_null = true;
	Oid			save_userid;
	int			save_sec;
	Oid			argtypes[5] = {TEXTOID, INT4OID, INT4OID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(td->tg_event) || !TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "pepnet._deploy_log must be called as an AFTER ROW trigger");
	if (pepnet_copy_into("deployments"))
		return PointerGetDatum(NULL);
	desc = RelationGetDescr(td->tg_relation);
	aname = SPI_fnumber(desc, "name");
	aversion = SPI_fnumber(desc, "version");
	if (aname <= 0 || aversion <= 0)
		elog(ERROR, "pepnet._deploy_log: pepnet.deployments lacks name or version");
	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
		newt = td->tg_trigtuple;
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		oldt = td->tg_trigtuple;
		newt = td->tg_newtuple;
	}
	else
		oldt = td->tg_trigtuple;
	name = SPI_getvalue(newt ? newt : oldt, desc, aname);
	if (oldt && newt)
	{
		char	   *oldname = SPI_getvalue(oldt, desc, aname);

		if (strcmp(oldname, name) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("a deployment cannot be renamed"),
					 errhint("Deploy the other name with pepnet_deploy and DELETE the old deployment.")));
	}
	if (oldt)
		fromv = heap_getattr(oldt, aversion, desc, &from_null);
	if (newt)
		tov = heap_getattr(newt, aversion, desc, &to_null);
	if (from_null == to_null && (from_null || DatumGetInt32(fromv) == DatumGetInt32(tov)))
		return PointerGetDatum(NULL);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	values[0] = CStringGetTextDatum(name);
	values[1] = fromv;
	nulls[1] = from_null ? 'n' : ' ';
	values[2] = tov;
	nulls[2] = to_null ? 'n' : ' ';
	values[3] = CStringGetTextDatum(pepnet_deploy_strategy && pepnet_deploy_strategy[0] ? pepnet_deploy_strategy : "sql");
	values[4] = CStringGetTextDatum(GetUserNameFromId(save_userid, false));

	SetUserIdAndSecContext(td->tg_relation->rd_rel->relowner,
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_NOFORCE_RLS);
	pepnet_spi_connect();
	if (SPI_execute_with_args("INSERT INTO pepnet.deploy_history (name, seq, from_version, to_version, strategy, deployed_by) "
							  "SELECT $1, COALESCE(pg_catalog.max(h.seq), 0) OPERATOR(pg_catalog.+) 1, $2, $3, $4, $5 "
							  "FROM pepnet.deploy_history h WHERE h.name OPERATOR(pg_catalog.=) $1",
							  5, argtypes, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the deployment of model \"%s\"", name);
	SPI_finish();
	SetUserIdAndSecContext(save_userid, save_sec);
	return PointerGetDatum(NULL);
}
