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

#include "fmgr.h"
#include "nodes/nodeFuncs.h"
#include "nodes/primnodes.h"
#include "nodes/supportnodes.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

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
