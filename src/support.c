/*
 * support.c
 *		Planner support for the set-returning scorers: row estimates
 *		(SupportRequestRows) the planner can use when the candidates are
 *		known at plan time.
 *
 * pepnet_score returns one row per candidate.  When its features argument
 * is a constant array (a literal, a folded ARRAY[...] of constants, or a
 * parameter value of a custom plan), the number of candidates is its first
 * dimension (2-D), 1 (1-D: one candidate) or 0 (empty); an ARRAY[[...], ...]
 * constructor of non-constant rows has as many candidates as rows.  Any
 * other features expression (a column, a subquery, a generic plan's
 * parameter) leaves the declared ROWS 100 in place.
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/executor.h"
#include "fmgr.h"
#include "nodes/nodeFuncs.h"
#include "nodes/plannodes.h"
#include "nodes/primnodes.h"
#include "nodes/supportnodes.h"
#include "utils/array.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"

/*
 * Candidates of a features expression when the planner can know them; -1
 * when it cannot.
 */
static double
features_rows(Node *features)
{
	if (features == NULL)
		return -1;
	/* a cast between array types of the same elements (e.g. to bigint[]) */
	while (IsA(features, RelabelType))
		features = (Node *) ((RelabelType *) features)->arg;

	if (IsA(features, Const))
	{
		Const	   *c = (Const *) features;
		ArrayType  *arr;

		if (c->constisnull)
			return 0;			/* an ERROR at run time: no rows */
		if (!type_is_array(c->consttype))
			return -1;
		arr = DatumGetArrayTypeP(c->constvalue);
		switch (ARR_NDIM(arr))
		{
			case 0:
				return 0;		/* '{}' scores nothing */
			case 1:
				return 1;		/* one candidate of F ids */
			case 2:
				return ARR_DIMS(arr)[0];
			default:
				return -1;		/* an ERROR at run time */
		}
	}
	if (IsA(features, ArrayExpr))
	{
		ArrayExpr  *a = (ArrayExpr *) features;

		return a->multidims ? list_length(a->elements) : 1;
	}
	return -1;
}

/*
 * pepnet._score_support(internal): SupportRequestRows of both pepnet_score
 * forms, pepnet_score(model, domain, persona, features, dense) (features is
 * the 4th argument) and pepnet_score(domain, persona, features, dense) (the
 * 3rd).  The planner passes the call with its defaults inserted, so the
 * number of arguments tells the forms apart.
 */
PG_FUNCTION_INFO_V1(pepnet_score_support);

Datum
pepnet_score_support(PG_FUNCTION_ARGS)
{
	Node	   *rawreq = (Node *) PG_GETARG_POINTER(0);
	SupportRequestRows *req;
	List	   *args;
	int			pos;
	double		rows;

	if (!IsA(rawreq, SupportRequestRows))
		PG_RETURN_POINTER(NULL);
	req = (SupportRequestRows *) rawreq;
	if (req->node == NULL || !IsA(req->node, FuncExpr))
		PG_RETURN_POINTER(NULL);
	args = ((FuncExpr *) req->node)->args;
	switch (list_length(args))
	{
		case 5:
			pos = 3;
			break;
		case 4:
			pos = 2;
			break;
		default:
			PG_RETURN_POINTER(NULL);
	}
	rows = features_rows((Node *) list_nth(args, pos));
	if (rows < 0)
		PG_RETURN_POINTER(NULL);
	req->rows = rows;
	PG_RETURN_POINTER(req);
}

/* The planner's row estimate of one SELECT; -1 for anything else */
static double
query_rows(const char *sql)
{
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	RawStmt    *rs;
	List	   *queries;
	PlannedStmt *ps;

	if (list_length(raw) != 1)
		return -1;
	rs = linitial_node(RawStmt, raw);
	if (!IsA(rs->stmt, SelectStmt))
		return -1;
	queries = pg_analyze_and_rewrite_fixedparams(rs, sql, NULL, 0, NULL);
	if (list_length(queries) != 1)
		return -1;
	ps = pg_plan_query(linitial_node(Query, queries), sql, 0, NULL);
	/*
	 * The estimate only for a caller who may read what the query reads (the
	 * executor's check, on every relation of the plan): planner statistics
	 * of other tables stay hidden, as EXPLAIN of the query would keep them
	 */
	if (!ExecCheckRTPerms(ps->rtable, false))
		return -1;
	return ps->planTree ? ps->planTree->plan_rows : -1;
}

/*
 * pepnet._score_query_support(internal): SupportRequestRows of
 * pepnet_score_query(model, data).  The data query is planned in a
 * subtransaction, so that a query that fails to parse or plan changes
 * nothing but the estimate; its locks are kept, as execution takes them
 * anyway.
 */
PG_FUNCTION_INFO_V1(pepnet_score_query_support);

Datum
pepnet_score_query_support(PG_FUNCTION_ARGS)
{
	Node	   *rawreq = (Node *) PG_GETARG_POINTER(0);
	SupportRequestRows *req;
	List	   *args;
	Node	   *data;
	char	   *sql;
	double		rows = -1;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	if (!IsA(rawreq, SupportRequestRows))
		PG_RETURN_POINTER(NULL);
	req = (SupportRequestRows *) rawreq;
	if (req->node == NULL || !IsA(req->node, FuncExpr))
		PG_RETURN_POINTER(NULL);
	args = ((FuncExpr *) req->node)->args;
	if (list_length(args) != 2)
		PG_RETURN_POINTER(NULL);
	data = (Node *) lsecond(args);
	if (!IsA(data, Const) || ((Const *) data)->constisnull || ((Const *) data)->consttype != TEXTOID)
		PG_RETURN_POINTER(NULL);
	/* planning needs a snapshot; subtransactions are refused in parallel mode */
	if (!ActiveSnapshotSet() || IsInParallelMode())
		PG_RETURN_POINTER(NULL);
	sql = TextDatumGetCString(((Const *) data)->constvalue);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		rows = query_rows(sql);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		/* a cancel (or statement timeout) during planning stays a cancel */
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		FreeErrorData(edata);
		rows = -1;
	}
	PG_END_TRY();

	if (rows < 0)
		PG_RETURN_POINTER(NULL);
	req->rows = rows;
	PG_RETURN_POINTER(req);
}
