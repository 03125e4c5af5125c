/*
 * metrics.c
 *		Metrics of labelled predictions: exact AUC (ties count half),
 *		logloss, mean predicted probability, actual rate and PCOC per
 *		domain and task and per task overall, and their JSON for
 *		pepnet_train's validation metrics.
 */
#include "metrics.h"

#include <math.h>

#include "utils/json.h"

/* order by task, domain, logit */
static int
pred_cmp_domain(const void *a, const void *b)
{
	const Pred *x = a,
			   *y = b;

	if (x->task != y->task)
		return x->task < y->task ? -1 : 1;
	if (x->domain != y->domain)
		return x->domain < y->domain ? -1 : 1;
	return x->logit < y->logit ? -1 : x->logit > y->logit;
}

/* order by task, logit */
static int
pred_cmp_task(const void *a, const void *b)
{
	const Pred *x = a,
			   *y = b;

	if (x->task != y->task)
		return x->task < y->task ? -1 : 1;
	return x->logit < y->logit ? -1 : x->logit > y->logit;
}

/*
 * Exact AUC (ties count half; a label >= 0.5 counts as positive), logloss
 * (soft labels as they are), mean predicted probability and mean label of
 * p[0..n) sorted by logit; auc NaN if one class.
 */
static void
group_metrics(const Pred *p, int64 n, double *auc, double *logloss, double *mean_p, double *rate)
{
	int64		i = 0,
				npos = 0;
	double		rank_pos = 0,
				ll = 0,
				pos_w = 0,
				sp = 0;

	while (i < n)
	{
		int64		j = i;
		int64		pos_here = 0;

		while (j < n && p[j].logit == p[i].logit)
		{
			if (p[j].label >= 0.5f)
				pos_here++;
			j++;
		}
		/* ranks i+1 .. j share the average (i + 1 + j) / 2 */
		rank_pos += pos_here * (i + 1 + j) / 2.0;
		npos += pos_here;
		i = j;
	}
	for (i = 0; i < n; i++)
	{
		double		z = p[i].logit,
					y = p[i].label;

		ll += (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))) - y * z;
		pos_w += y;
		sp += z >= 0 ? 1.0 / (1.0 + exp(-z)) : exp(z) / (1.0 + exp(z));
	}
	*logloss = n ? ll / n : NAN;
	*mean_p = n ? sp / n : NAN;
	*rate = n ? pos_w / n : NAN;
	if (npos == 0 || npos == n)
		*auc = NAN;
	else
		*auc = (rank_pos - npos * (npos + 1) / 2.0) / ((double) npos * (n - npos));
}


/*
 * The metrics of preds[0..npred) (reordered in place): one Metric per
 * (domain, task) present, then one per task over all domains (domain -1).
 */
Metric *
metrics_compute(Pred *preds, int64 npred, int *nmetrics)
{
	Metric	   *ms;
	int			nm = 0,
				mcap = 64;
	int64		i;

	ms = palloc(sizeof(Metric) * mcap);
	qsort(preds, npred, sizeof(Pred), pred_cmp_domain);
	for (i = 0; i < npred;)
	{
		int64		j = i;

		while (j < npred && preds[j].task == preds[i].task && preds[j].domain == preds[i].domain)
			j++;
		if (nm == mcap)
		{
			mcap *= 2;
			ms = repalloc(ms, sizeof(Metric) * mcap);
		}
		ms[nm].domain = preds[i].domain;
		ms[nm].task = preds[i].task;
		ms[nm].rows = j - i;
		group_metrics(preds + i, j - i, &ms[nm].auc, &ms[nm].logloss, &ms[nm].mean_p, &ms[nm].rate);
		nm++;
		i = j;
	}
	qsort(preds, npred, sizeof(Pred), pred_cmp_task);
	for (i = 0; i < npred;)
	{
		int64		j = i;

		while (j < npred && preds[j].task == preds[i].task)
			j++;
		if (nm == mcap)
		{
			mcap *= 2;
			ms = repalloc(ms, sizeof(Metric) * mcap);
		}
		ms[nm].domain = -1;
		ms[nm].task = preds[i].task;
		ms[nm].rows = j - i;
		group_metrics(preds + i, j - i, &ms[nm].auc, &ms[nm].logloss, &ms[nm].mean_p, &ms[nm].rate);
		nm++;
		i = j;
	}
	*nmetrics = nm;
	return ms;
}

/* Append a double as JSON (null for NaN) */
static void
json_num(StringInfo s, double v)
{
	if (isnan(v) || isinf(v))
		appendStringInfoString(s, "null");
	else
		appendStringInfo(s, "%.6f", v);
}

/* Append a JSON string literal */
static void
json_str(StringInfo s, const char *v)
{
	escape_json(s, v);
}

/* Append one metric's figures as JSON members (no braces) */
static void
json_metric(StringInfo s, const Metric *m)
{
	appendStringInfo(s, "\"rows\": %lld, \"logloss\": ", (long long) m->rows);
	json_num(s, m->logloss);
	appendStringInfoString(s, ", \"auc\": ");
	json_num(s, m->auc);
	appendStringInfoString(s, ", \"mean_p\": ");
	json_num(s, m->mean_p);
	appendStringInfoString(s, ", \"actual\": ");
	json_num(s, m->rate);
	appendStringInfoString(s, ", \"pcoc\": ");
	json_num(s, m->rate > 0 ? m->mean_p / m->rate : NAN);
}


/*
 * Validation metrics as JSON {rows, logloss, auc, mean_p, actual, pcoc
 * (first task), tasks: {name: {rows, logloss, auc, mean_p, actual, pcoc,
 * domains: {d: {...}}}}}, palloc'd in the current memory context.
 */
char *
metrics_json(const Metric *ms, int nm, const PnConfig *c)
{
	StringInfoData s;
	int			t,
				i;

	initStringInfo(&s);
	appendStringInfoChar(&s, '{');
	for (i = 0; i < nm; i++)
		if (ms[i].domain < 0 && ms[i].task == 0)
		{
			json_metric(&s, &ms[i]);
			appendStringInfoString(&s, ", ");
		}
	appendStringInfoString(&s, "\"tasks\": {");
	for (t = 0; t < c->ntasks; t++)
	{
		bool		first = true;

		appendStringInfoString(&s, t ? ", " : "");
		json_str(&s, c->tasks[t]);
		appendStringInfoString(&s, ": {");
		for (i = 0; i < nm; i++)
			if (ms[i].domain < 0 && ms[i].task == t)
			{
				json_metric(&s, &ms[i]);
				appendStringInfoString(&s, ", ");
			}
		appendStringInfoString(&s, "\"domains\": {");
		for (i = 0; i < nm; i++)
			if (ms[i].domain >= 0 && ms[i].task == t)
			{
				appendStringInfo(&s, "%s\"%d\": {", first ? "" : ", ", ms[i].domain);
				json_metric(&s, &ms[i]);
				appendStringInfoChar(&s, '}');
				first = false;
			}
		appendStringInfoString(&s, "}}");
	}
	appendStringInfoString(&s, "}}");
	return s.data;
}
