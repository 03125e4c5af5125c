/*
 * scaleout.c
 *		What pepnet needs beyond one server:
 *
 *		- the type pepnet_pinned ('ctr@3#<fingerprint>'): a version-pinned
 *		  model reference that is not collatable, so that postgres_fdw ships
 *		  the IMMUTABLE pepnet_predict(pepnet_pinned, ...) to the shards, and
 *		  that refuses to score on a node whose version has other weights
 *		  (both forms: arrays, and a candidate row by name);
 *		- version bundles (pepnet_export_version, pepnet_import_version) that
 *		  copy a version between nodes keeping its name, number, parent,
 *		  metrics and fingerprint.
 *
 * Scoring itself is the score path of score.c (pepnet_predict) or of
 * score_rows.c (pepnet_predict_row, by name), called with the pinned
 * reference as 'name@version' once the fingerprint of this node's version
 * has been checked.
 */
#include "pepnet.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/pg_bswap.h"
#include "postmaster/postmaster.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "catalog/namespace.h"
#include "optimizer/planner.h"
#include "utils/lsyscache.h"
#include "utils/plancache.h"

PG_FUNCTION_INFO_V1(pepnet_pinned_in);
PG_FUNCTION_INFO_V1(pepnet_pinned_out);
PG_FUNCTION_INFO_V1(pepnet_pinned_recv);
PG_FUNCTION_INFO_V1(pepnet_pinned_send);
PG_FUNCTION_INFO_V1(pepnet_pin);
PG_FUNCTION_INFO_V1(pepnet_pinned_predict);
PG_FUNCTION_INFO_V1(pepnet_pinned_predict_row);
PG_FUNCTION_INFO_V1(pepnet_export_version);
PG_FUNCTION_INFO_V1(pepnet_import_version);

/* the scoring paths this file reuses (score.c, score_rows.c) */
extern Datum pepnet_predict(PG_FUNCTION_ARGS);
extern Datum pepnet_predict_row(PG_FUNCTION_ARGS);

#define BUNDLE_MAGIC "PEPNETV1"
#define BUNDLE_MAGIC_LEN 8

/* ---------------------------------------------------------------- */
/* the type pepnet_pinned                                            */
/* ---------------------------------------------------------------- */

/* varlena: a version of a model and the fingerprint it must have */
typedef struct Pinned
{
	int32		vl_len_;
	int32		version;
	uint8		fp[FP_LEN];
	char		name[FLEXIBLE_ARRAY_MEMBER];	/* NUL-terminated */
} Pinned;

#define PG_GETARG_PINNED(n) ((Pinned *) PG_DETOAST_DATUM(PG_GETARG_DATUM(n)))

static Pinned *
pinned_make(const char *name, int32 version, const uint8 *fp)
{
	size_t		nlen = strlen(name);
	Pinned	   *p = palloc0(offsetof(Pinned, name) + nlen + 1);

	SET_VARSIZE(p, offsetof(Pinned, name) + nlen + 1);
	p->version = version;
	memcpy(p->fp, fp, FP_LEN);
	memcpy(p->name, name, nlen + 1);
	return p;
}

#define PINNED_HINT "A pinned model reference is 'name@version' (its fingerprint is looked up on this node) or 'name@version#<64 hex digits of pepnet.models.fingerprint>'."

/*
 * pepnet_pinned input: 'ctr@3' (the fingerprint of version 3 on the node
 * that parses it) or 'ctr@3#<64 hex digits>'.  A bare name is refused: its
 * meaning changes with every deploy and differs between nodes.
 */
Datum
pepnet_pinned_in(PG_FUNCTION_ARGS)
{
	char	   *s = PG_GETARG_CSTRING(0);
	const char *at = strchr(s, '@');
	const char *p;
	const char *shown = pepnet_clip(s, 40);	/* the input in messages, shortened */
	char		name[PEPNET_NAMELEN];
	int64		v = 0;
	uint8		fp[FP_LEN];
	size_t		nlen;

	if (at == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("pinned model reference \"%s\" names no version", shown),
				 errdetail("A bare name means the deployed version, which changes with every deploy and may differ between nodes."),
				 errhint("Pin a version: '%s@3', or pepnet_pin('%s') for the one deployed now.", shown, shown)));
	nlen = at - s;
	if (nlen == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid pinned model reference \"%s\": the name is empty", shown),
				 errhint(PINNED_HINT)));
	/* names of 1 to 63 characters (of the server encoding, not bytes), as pepnet_check_name */
	if (nlen >= PEPNET_NAMELEN || pg_mbstrlen_with_len(s, nlen) > PEPNET_NAME_MAXCHARS)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("model name in pinned reference \"%s\" is longer than %d characters", shown, PEPNET_NAME_MAXCHARS)));
	memcpy(name, s, nlen);
	name[nlen] = '\0';
	for (p = at + 1; *p >= '0' && *p <= '9'; p++)
	{
		v = v * 10 + (*p - '0');
		if (v > PG_INT32_MAX)
			break;
	}
	if (p == at + 1 || v < 1 || v > PG_INT32_MAX || (*p != '\0' && *p != '#'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("invalid pinned model reference \"%s\": the version must be a number from 1 to %d", shown, PG_INT32_MAX),
				 errhint(PINNED_HINT)));
	if (*p == '#')
	{
		const char *h = p + 1;
		size_t		hl = strlen(h),
					i;

		for (i = 0; i < hl; i++)
			if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f') || (h[i] >= 'A' && h[i] <= 'F')))
				break;
		if (hl != FP_HEX || i != hl)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("invalid pinned model reference \"%s\": the fingerprint must be %d hex digits", shown, FP_HEX),
					 errhint(PINNED_HINT)));
		hex_decode(h, FP_HEX, (char *) fp);
	}
	else if (!stored_fingerprint(name, (int32) v, fp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" has no version %d on this node (%s)", name, (int32) v, node_label()),
				 errhint("Build the reference where the version exists, give its fingerprint ('%s@%d#<hex>'), or copy the version here with pepnet_import_version.",
						 name, (int32) v)));
	PG_RETURN_POINTER(pinned_make(name, (int32) v, fp));
}

/* pepnet_pinned output: 'name@version#<64 hex digits>' */
Datum
pepnet_pinned_out(PG_FUNCTION_ARGS)
{
	Pinned	   *p = PG_GETARG_PINNED(0);

	PG_RETURN_CSTRING(psprintf("%s@%d#%s", p->name, p->version, fp_hex(p->fp)));
}

/* binary form (COPY BINARY, drivers that ask for binary results): the text form */
Datum
pepnet_pinned_send(PG_FUNCTION_ARGS)
{
	Pinned	   *p = PG_GETARG_PINNED(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendtext(&buf, p->name, strlen(p->name));
	appendStringInfo(&buf, "@%d#%s", p->version, fp_hex(p->fp));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

Datum
pepnet_pinned_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			n;
	char	   *s = pq_getmsgtext(buf, buf->len - buf->cursor, &n);

	return DirectFunctionCall1(pepnet_pinned_in, CStringGetDatum(s));
}

/* pepnet_pin(model text): the version a reference names now, pinned */
Datum
pepnet_pin(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	uint8		fp[FP_LEN];

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	if (!stored_fingerprint(ref.name, ref.version, fp))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref.name, ref.version)));
	PG_RETURN_POINTER(pinned_make(ref.name, ref.version, fp));
}

/* What pepnet_predict(pepnet_pinned, ...) keeps across the rows of a statement */
typedef struct PinnedState
{
	FmgrInfo	inner;			/* the text form's scorer, with its own fn_extra */
	Pinned	   *pin;			/* the reference it was set up for */
	text	   *ref;			/* 'name@version' */
	LocalTransactionId lxid;	/* statement last checked */
	TimestampTz stmt_start;
	int32		ok_version;		/* version (number, row xmin) whose fingerprint matched */
	TransactionId ok_xmin;
} PinnedState;

/*
 * The version this node holds for p, checked against p's fingerprint once
 * per version row (versions never change) and looked up once per statement.
 */
static void
pinned_check(PinnedState *st)
{
	Pinned	   *p = st->pin;
	PepnetRef	ref;
	uint8		fp[FP_LEN];
	char		refbuf[PEPNET_NAMELEN + 16];

	if (st->lxid == MyProc->lxid && st->stmt_start == GetCurrentStatementStartTimestamp())
		return;
	snprintf(refbuf, sizeof(refbuf), "%s@%d", p->name, p->version);
	pepnet_resolve(refbuf, &ref);
	if (ref.version != st->ok_version || ref.xmin != st->ok_xmin)
	{
		if (!stored_fingerprint(p->name, p->version, fp))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("model \"%s\" version %d no longer exists", p->name, p->version)));
		if (memcmp(fp, p->fp, FP_LEN) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("model \"%s\" version %d on this node (%s) is not the pinned version: other config or weights",
							p->name, p->version, node_label()),
					 errdetail("Pinned fingerprint %s, this node's %s.", fp_hex(p->fp), fp_hex(fp)),
					 errhint("A version number must mean the same weights on every node: copy versions with pepnet_export_version and pepnet_import_version instead of importing them as new versions.")));
		st->ok_version = ref.version;
		st->ok_xmin = ref.xmin;
	}
	st->lxid = MyProc->lxid;
	st->stmt_start = GetCurrentStatementStartTimestamp();
}

/* ---------------------------------------------------------------- */
/* pinned scores folded at plan time                                 */
/* ---------------------------------------------------------------- */

/*
 * The pinned pepnet_predict (either form) is IMMUTABLE (so that postgres_fdw
 * ships it), and PostgreSQL evaluates an IMMUTABLE function with constant
 * arguments once, while planning, as the planning role.  Its privilege checks (USAGE
 * on schema pepnet, SELECT on pepnet.models, row-level security) then ran
 * for that role only, and a cached plan (a prepared statement, a plpgsql
 * function's statements) would hand the folded score to any role that runs
 * it later, and after a REVOKE.  A plan into which pepnet_predict was folded
 * is therefore marked as PostgreSQL marks plans that row-level security
 * depends on: dependsOnRole (replanned, and so checked again, when another
 * role runs it) and depending on pepnet.models (replanned after GRANT,
 * REVOKE, ALTER TABLE or a policy change on it; a change of the schema's
 * privileges replans every plan).
 */
static planner_hook_type prev_planner_hook = NULL;
static int	planning_depth = 0;
static bool pinned_folded = false;
static bool reset_plans_at_xact_end = false;

static PlannedStmt *
pinned_planner(Query *parse, const char *query_string, int cursorOptions, ParamListInfo boundParams)
{
	bool		outer = pinned_folded;
	PlannedStmt *result;

	pinned_folded = false;
	planning_depth++;
	PG_TRY();
	{
		if (prev_planner_hook)
			result = prev_planner_hook(parse, query_string, cursorOptions, boundParams);
		else
			result = standard_planner(parse, query_string, cursorOptions, boundParams);
	}
	PG_CATCH();
	{
		planning_depth--;
		pinned_folded = outer;
		PG_RE_THROW();
	}
	PG_END_TRY();
	planning_depth--;
	if (pinned_folded)
	{
		Oid			nsp = get_namespace_oid("pepnet", true);
		Oid			models = OidIsValid(nsp) ? get_relname_relid("models", nsp) : InvalidOid;

		result->dependsOnRole = true;
		if (OidIsValid(models))
			result->relationOids = lappend_oid(result->relationOids, models);
	}
	/* a score folded while planning a query folded into the outer plan belongs to it too */
	pinned_folded = outer || pinned_folded;
	return result;
}

/*
 * The library is loaded by the first pepnet function a session calls, which
 * may be the pinned pepnet_predict being folded by a planner that started
 * before the hook was installed: the plans built in that transaction are
 * replanned (with the hook) when they are next used.
 */
static void
pinned_xact_cb(XactEvent event, void *arg)
{
	if (reset_plans_at_xact_end &&
		(event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		 event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT))
	{
		reset_plans_at_xact_end = false;
		ResetPlanCache();
	}
}

/* called by _PG_init */
void
pepnet_pinned_init(void)
{
	prev_planner_hook = planner_hook;
	planner_hook = pinned_planner;
	RegisterXactCallback(pinned_xact_cb, NULL);
	reset_plans_at_xact_end = IsTransactionState();
}

/*
 * A pinned score: this node's version checked against the pin's fingerprint,
 * then scored by the text form's function inner (nargs arguments, the model
 * first) with the reference 'name@version'; the other arguments as given
 * (those the call leaves out NULL).
 */
static Datum
pinned_score(FunctionCallInfo fcinfo, PGFunction inner_fn, int nargs)
{
	PinnedState *st = (PinnedState *) fcinfo->flinfo->fn_extra;
	Pinned	   *p;
	int			i;
	Datum		result;

	LOCAL_FCINFO(inner, 5);

	Assert(nargs <= 5);
	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	p = PG_GETARG_PINNED(0);
	if (planning_depth > 0)
		pinned_folded = true;
	if (st == NULL)
	{
		st = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(PinnedState));
		st->inner.fn_addr = inner_fn;
		st->inner.fn_oid = InvalidOid;
		st->inner.fn_nargs = nargs;
		st->inner.fn_strict = false;
		st->inner.fn_retset = false;
		st->inner.fn_stats = TRACK_FUNC_OFF;
		st->inner.fn_mcxt = fcinfo->flinfo->fn_mcxt;
		st->ok_version = -1;
		fcinfo->flinfo->fn_extra = st;
	}
	if (st->pin == NULL || VARSIZE(st->pin) != VARSIZE(p) || memcmp(st->pin, p, VARSIZE(p)) != 0)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (st->pin)
		{
			pfree(st->pin);
			pfree(st->ref);
		}
		st->pin = (Pinned *) palloc(VARSIZE(p));
		memcpy(st->pin, p, VARSIZE(p));
		{
			char	   *r = psprintf("%s@%d", p->name, p->version);

			st->ref = cstring_to_text(r);
			pfree(r);
		}
		st->lxid = InvalidLocalTransactionId;
		st->ok_version = -1;
		MemoryContextSwitchTo(old);
	}
	pinned_check(st);

	InitFunctionCallInfoData(*inner, &st->inner, nargs, InvalidOid, NULL, NULL);
	inner->args[0].value = PointerGetDatum(st->ref);
	inner->args[0].isnull = false;
	for (i = 1; i < nargs; i++)
	{
		inner->args[i].value = i < PG_NARGS() ? PG_GETARG_DATUM(i) : (Datum) 0;
		inner->args[i].isnull = i < PG_NARGS() ? PG_ARGISNULL(i) : true;
	}
	result = FunctionCallInvoke(inner);
	if (inner->isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

/*
 * pepnet_predict(model pepnet_pinned, domain, persona, features, dense):
 * IMMUTABLE (a pinned version's scores never change), so postgres_fdw may
 * ship it; scored by score.c's pepnet_predict.
 */
Datum
pepnet_pinned_predict(PG_FUNCTION_ARGS)
{
	return pinned_score(fcinfo, pepnet_predict, 5);
}

/*
 * pepnet_predict(model pepnet_pinned, candidate record): the by-name form,
 * IMMUTABLE as the arrays form; scored by score_rows.c's pepnet_predict_row
 * (which refuses a version of the arrays form as its text form does).
 */
Datum
pepnet_pinned_predict_row(PG_FUNCTION_ARGS)
{
	return pinned_score(fcinfo, pepnet_predict_row, 2);
}

/* ---------------------------------------------------------------- */
/* version bundles                                                   */
/* ---------------------------------------------------------------- */

/*
 * A bundle is "PEPNETV1", the length of a JSON header (4 bytes, big-endian),
 * the header {"name", "version", "parent", "metrics", "created_at", "config",
 * "fingerprint"} and the weights (safetensors) as stored.
 */
Datum
pepnet_export_version(PG_FUNCTION_ARGS)
{
	PepnetRef	ref;
	MemoryContext caller = CurrentMemoryContext;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	bool		isnull;
	char	   *header;
	bytea	   *out;
	size_t		hl,
				total;
	uint64		wl;
	uint32		hl_be;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	values[0] = CStringGetTextDatum(ref.name);
	values[1] = Int32GetDatum(ref.version);
	pepnet_spi_connect();
	if (SPI_execute_with_args("SELECT pg_catalog.jsonb_build_object('name', name, 'version', version, 'parent', parent, "
							  "'metrics', metrics, 'created_at', created_at, 'config', config, "
							  "'fingerprint', pg_catalog.encode(fingerprint, 'hex'))::pg_catalog.text "
							  "FROM pepnet.models WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d no longer exists", ref.name, ref.version)));
	header = MemoryContextStrdup(caller, TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)));
	SPI_finish();
	hl = strlen(header);
	wl = pepnet_weights_size(ref.name, ref.version);
	total = BUNDLE_MAGIC_LEN + 4 + hl + wl;
	if (total > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" version %d is too large for a bundle (%zu bytes, a bytea holds at most 1 GB)",
						ref.name, ref.version, total),
				 errhint("Copy the rows of pepnet.models and pepnet.model_chunks with INSERT ... SELECT from foreign tables over the source's (README, Big models).")));
	/* the weights, read chunk by chunk straight behind the bundle's header */
	out = (bytea *) pepnet_read_weights(ref.name, ref.version, VARHDRSZ + BUNDLE_MAGIC_LEN + 4 + hl, wl, &wl);
	SET_VARSIZE(out, VARHDRSZ + total);
	memcpy(VARDATA(out), BUNDLE_MAGIC, BUNDLE_MAGIC_LEN);
	hl_be = pg_hton32((uint32) hl);
	memcpy(VARDATA(out) + BUNDLE_MAGIC_LEN, &hl_be, 4);
	memcpy(VARDATA(out) + BUNDLE_MAGIC_LEN + 4, header, hl);
	PG_RETURN_BYTEA_P(out);
}

static void
bad_bundle(const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("not a valid pepnet version bundle: %s", why),
			 errhint("Pass the bytea that pepnet_export_version returned, unchanged.")));
}

/*
 * Parse a bundle's header as jsonb, and its created_at (when a string) as
 * a timestamptz, in a subtransaction: a data exception (not JSON, \u0000,
 * a date out of range ...) is a malformed bundle (22P03), reported with
 * PostgreSQL's message as detail.
 */
static Jsonb *
bundle_parse(const char *header)
{
	MemoryContext caller = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Jsonb	   *volatile h = NULL;
	ErrorData  *volatile edata = NULL;
	const char *volatile what = "its header is not JSON";

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(caller);
	PG_TRY();
	{
		JsonbValue	vbuf,
				   *v;

		h = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(header)));
		v = JB_ROOT_IS_OBJECT(h) ? getKeyJsonValueFromContainer(&h->root, "created_at", 10, &vbuf) : NULL;
		what = "its created_at is not a timestamp";
		if (v && v->type == jbvString)
			(void) DirectFunctionCall3(timestamptz_in,
									   CStringGetDatum(pnstrdup(v->val.string.val, v->val.string.len)),
									   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(caller);
		CurrentResourceOwner = owner;
	}
	PG_END_TRY();
	if (edata != NULL)
	{
		/* cancel, out of memory ...: as they are */
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			ReThrowError(edata);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("not a valid pepnet version bundle: %s", what),
				 errdetail("%s", edata->message),
				 errhint("Pass the bytea that pepnet_export_version returned, unchanged.")));
	}
	if (!JB_ROOT_IS_OBJECT(h))
		bad_bundle("its header is not a JSON object");
	return h;
}

/* The value of key in a bundle's header, NULL when absent or JSON null */
static JsonbValue *
bundle_field(Jsonb *h, const char *key)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&h->root, key, strlen(key), NULL);

	return v == NULL || v->type == jbvNull ? NULL : v;
}

/* A header field that must be an integer from 1 to 2147483647 */
static int32
bundle_int(JsonbValue *v, const char *why)
{
	char	   *t;
	size_t		n;

	if (v == NULL || v->type != jbvNumeric)
		bad_bundle(why);
	t = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
	n = strspn(t, "0123456789");
	if (n == 0 || t[n] != '\0' || n > 10 || strtoll(t, NULL, 10) < 1 || strtoll(t, NULL, 10) > PG_INT32_MAX)
		bad_bundle(why);
	return (int32) strtoll(t, NULL, 10);
}

/* A header field that must be a JSON object: its text */
static char *
bundle_object(JsonbValue *v, const char *why)
{
	if (v == NULL || v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		bad_bundle(why);
	return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
}

/*
 * The fields of a bundle's header, each checked for its type before
 * anything is stored (22P03 naming the field): name a string, version an
 * integer from 1, config and metrics objects, fingerprint 64 hex digits,
 * parent (if not null) an integer from 1, created_at (if not null) a
 * timestamp.
 */
static void
bundle_fields(const char *header, char **name, int32 *version, char **cfgtext, char **fphex)
{
	Jsonb	   *h = bundle_parse(header);
	JsonbValue *v;

	v = bundle_field(h, "name");
	if (v == NULL || v->type != jbvString)
		bad_bundle("its name is not a string");
	*name = pnstrdup(v->val.string.val, v->val.string.len);
	*version = bundle_int(bundle_field(h, "version"), "its version is not an integer from 1 to 2147483647");
	*cfgtext = bundle_object(bundle_field(h, "config"), "its config is not a JSON object");
	(void) bundle_object(bundle_field(h, "metrics"), "its metrics are not a JSON object");
	v = bundle_field(h, "fingerprint");
	if (v == NULL || v->type != jbvString || v->val.string.len != FP_HEX ||
		strspn(pnstrdup(v->val.string.val, v->val.string.len), "0123456789abcdefABCDEF") != FP_HEX)
		bad_bundle("its fingerprint is not 64 hex digits");
	*fphex = pnstrdup(v->val.string.val, v->val.string.len);
	v = bundle_field(h, "parent");
	if (v != NULL)
		(void) bundle_int(v, "its parent is not null or an integer from 1 to 2147483647");
	v = bundle_field(h, "created_at");
	if (v != NULL && v->type != jbvString)
		bad_bundle("its created_at is not a timestamp");
}

/*
 * pepnet_import_version(bundle bytea) RETURNS int: the version, with its
 * number, parent, metrics and creation time, as on the node that exported
 * it.  A version of that name and number that exists here already is
 * accepted if its fingerprint is the same (nothing is written) and refused
 * otherwise: versions are never renumbered.
 */
Datum
pepnet_import_version(PG_FUNCTION_ARGS)
{
	bytea	   *b;
	const char *data;
	size_t		len,
				hl;
	uint32		hl_be;
	char	   *header;
	Oid			targs[2] = {TEXTOID, BYTEAOID};
	Datum		vals[2];
	char	   *name,
			   *cfgtext,
			   *fphex;
	int32		version;
	uint8		fp[FP_LEN],
				have[FP_LEN];
	PnConfig	cfg;
	PnModel    *m;
	PnError		err = {0};
	bytea	   *weights;

	pepnet_require_writable("pepnet_import_version");
	if (PG_ARGISNULL(0))
		pepnet_null_arg("bundle");
	b = PG_GETARG_BYTEA_PP(0);
	data = VARDATA_ANY(b);
	len = VARSIZE_ANY_EXHDR(b);
	if (len < BUNDLE_MAGIC_LEN + 4 || memcmp(data, BUNDLE_MAGIC, BUNDLE_MAGIC_LEN) != 0)
		bad_bundle("it does not start with \"" BUNDLE_MAGIC "\"");
	memcpy(&hl_be, data + BUNDLE_MAGIC_LEN, 4);
	hl = pg_ntoh32(hl_be);
	if (hl > len - BUNDLE_MAGIC_LEN - 4)
		bad_bundle("its header is longer than the bundle");
	header = pnstrdup(data + BUNDLE_MAGIC_LEN + 4, hl);
	if (strlen(header) != hl)
		bad_bundle("its header contains a NUL byte");
	/* the header's text is in the encoding of the database that made it: never stored invalid here */
	if (!pg_verifymbstr(header, hl, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("not a valid pepnet version bundle: its header is not valid text in this database's encoding %s",
						GetDatabaseEncodingName()),
				 errdetail("A bundle carries its config and metrics in the encoding of the database that made it."),
				 errhint("Copy versions between databases of one encoding, or move this one with pepnet_export and pepnet_import, "
						 "whose config passes through the client's encoding.")));

	/* the weights as a bytea of their own */
	{
		size_t		wl = len - BUNDLE_MAGIC_LEN - 4 - hl;

		weights = (bytea *) palloc_extended(VARHDRSZ + wl, MCXT_ALLOC_HUGE);
		SET_VARSIZE(weights, VARHDRSZ + wl);
		memcpy(VARDATA(weights), data + BUNDLE_MAGIC_LEN + 4 + hl, wl);
	}

	/* the header's fields, each checked for its type (22P03 naming the field) */
	bundle_fields(header, &name, &version, &cfgtext, &fphex);
	pepnet_check_name(name);
	pepnet_spi_connect();
	hex_decode(fphex, FP_HEX, (char *) fp);

	/* the bundle's config and weights must give its fingerprint: checked before anything else */
	{
		Jsonb	   *cj = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(cfgtext)));
		uint8		got[FP_LEN];

		fingerprint(cj, weights, got);
		if (memcmp(got, fp, FP_LEN) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("bundle of model \"%s\" version %d does not match its fingerprint", name, version),
					 errdetail("The bundle says %s, its config and weights give %s.", fphex, fp_hex(got)),
					 errhint("The bundle was changed after pepnet_export_version made it; export it again.")));
	}

	/* one writer per name at a time, as pepnet_insert_version */
	vals[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock(" CppAsString2(PEPNET_LOCK_KEY) ", pg_catalog.hashtext($1))",
							  1, targs, vals, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock model \"%s\"", name);
	SPI_finish();

	/* the version exists here: the same one (nothing to do) or another (refused) */
	if (stored_fingerprint(name, version, have))
	{
		if (memcmp(have, fp, FP_LEN) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("model \"%s\" version %d already exists on this node (%s) with other config or weights",
							name, version, node_label()),
					 errdetail("Fingerprint here %s, in the bundle %s.", fp_hex(have), fp_hex(fp)),
					 errhint("Versions are never renumbered: delete this node's version %d (if it is not deployed) or keep the models of one name on one registry.", version)));
		ereport(NOTICE,
				(errmsg("model \"%s\" version %d is already here with the same fingerprint", name, version)));
		PG_RETURN_INT32(version);
	}

	/* the config and the weights, checked as pepnet_import checks them */
	if (pepnet_config_parse(cfgtext, pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	if (pn_model_layout(&cfg, &m, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	pn_config_free(&cfg);
	if (pn_safetensors_read(m, (const uint8_t *) VARDATA(weights), VARSIZE(weights) - VARHDRSZ, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_BINARY_REPRESENTATION);
	pn_model_free(m);

	/* the row, as it was, and its weights in chunks; its fingerprint is computed again here */
	{
		uint8		got[FP_LEN];

		(void) pepnet_store_chunked(name, version, cfgtext, NULL, (const uint8 *) VARDATA(weights),
									VARSIZE(weights) - VARHDRSZ, NULL, 0, header, got);
		/* the stored config must give the same canonical text as the bundle's */
		if (memcmp(got, fp, FP_LEN) != 0)
			elog(ERROR, "model \"%s\" version %d was stored with another fingerprint than its bundle's", name, version);
	}
	PG_RETURN_INT32(version);
}
