/*
 * evaluate.c
 *		pepnet_evaluate(model, data) and the evaluation pepnet_train runs on
 *		its validation query: every row of a labelled data query scored in
 *		batches of EVAL_BATCH by the scoring engine in fp32 (src/core/
 *		evaluate.c: PN's running statistics, ties bit-identical, negative
 *		down-sampling in the output bias), metrics per domain and task
 *		(metrics.c).
 */
#include "training.h"

#include <math.h>

#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(pepnet_evaluate);

#define EVAL_BATCH 1024

/*
 * The identity of the rows of a batch, added to *sum: each row's domain,
 * ids, dense values and labels hashed, the rows' hashes summed, so that
 * the same rows in any order give the same sum.
 */
static void
rows_hash(const Rows *rows, const PnConfig *c, uint64 *sum)
{
	int			i;

	for (i = 0; i < rows->n; i++)
	{
		uint64		h = hash_bytes_extended((const unsigned char *) &rows->domain[i], sizeof(int32), 0);

		h = hash_combine64(h, hash_bytes_extended((const unsigned char *) (rows->persona + (int64) i * c->npers),
												  sizeof(int64) * c->npers, 1));
		h = hash_combine64(h, hash_bytes_extended((const unsigned char *) (rows->features + (int64) i * c->nfeat),
												  sizeof(int64) * c->nfeat, 2));
		if (c->dense)
			h = hash_combine64(h, hash_bytes_extended((const unsigned char *) (rows->dense + (int64) i * c->dense),
													  sizeof(float) * c->dense, 3));
		h = hash_combine64(h, hash_bytes_extended((const unsigned char *) (rows->labels + (int64) i * c->ntasks),
												  sizeof(float) * c->ntasks, 4));
		*sum += h;
	}
}

/*
 * Score every row of a query with the model in batches (inference mode)
 * and compute the metrics per domain and task, and per task overall.
 */
Metric *
evaluate(PnModel *m, const char *query, const char *what, int *nmetrics)
{
	return evaluate_rows(m, query, what, nmetrics, NULL);
}

/* evaluate, and (data_hash not NULL) the identity of the query's rows (rows_hash) */
Metric *
evaluate_rows(PnModel *m, const char *query, const char *what, int *nmetrics, uint64 *data_hash)
{
	const PnConfig *c = &m->cfg;
	PnEvaluator *ev;
	PnError		err = {0};
	Reader		r;
	Rows		rows;
	Pred	   *preds;
	int64		npred = 0,
				cap = 1 << 16,
				i;
	float	   *logits;
	Metric	   *ms;
	bool		more = true;

	/* scored by the engine, as pepnet_score serves it (fp32): ties bit-identical, see src/core/evaluate.c */
	if (pn_evaluator_new(m, PN_FP32, &ev, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	rows_init(&rows, c, EVAL_BATCH);
	logits = palloc(sizeof(float) * EVAL_BATCH * c->ntasks);
	preds = palloc_extended(sizeof(Pred) * cap, MCXT_ALLOC_HUGE);
	reader_open(&r, query, c, what, false);
	while (more)
	{
		PnBatch		b;

		CHECK_FOR_INTERRUPTS();
		rows.n = 0;
		while (rows.n < EVAL_BATCH)
			if (reader_fetch(&r, &rows, EVAL_BATCH - rows.n) == 0)
			{
				more = false;
				break;
			}
		if (rows.n == 0)
			break;
		if (data_hash)
			rows_hash(&rows, c, data_hash);
		b.n = rows.n;
		b.domain = rows.domain;
		b.persona = rows.persona;
		b.features = rows.features;
		b.dense = c->dense ? rows.dense : NULL;
		b.labels = NULL;
		if (pn_evaluator_logits(ev, &b, logits, pepnet_interrupt_check, &err) != PN_OK)
			train_core_error(&err, what, &rows);
		for (i = 0; i < (int64) rows.n * c->ntasks; i++)
		{
			float		y = rows.labels[i];

			if (isnan(y))
				continue;
			/* (negative down-sampling, logit + ln w, is in the engine's output bias) */
			if (npred == cap)
			{
				cap *= 2;
				preds = repalloc_huge(preds, sizeof(Pred) * cap);
			}
			preds[npred].domain = rows.domain[i / c->ntasks];
			preds[npred].task = (int32) (i % c->ntasks);
			preds[npred].logit = logits[i];
			preds[npred].label = y;
			npred++;
		}
	}
	SPI_cursor_close(r.portal);
	pn_evaluator_free(ev);
	if (npred == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("%s query returned no rows with a known label", what),
				 errhint("Evaluation needs rows with a label 0 or 1 for at least one task.")));

	ms = metrics_compute(preds, npred, nmetrics);
	pfree(preds);
	return ms;
}


/* pepnet_evaluate(model, data): AUC and logloss per domain and task, and overall */
Datum
pepnet_evaluate(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PepnetRef	ref;
	PnModel    *model;
	char		name[PEPNET_NAMELEN];
	int32		version;
	char	   *query;
	Metric	   *ms;
	int			nm,
				i;
	MemoryContext caller;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("data query");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	/* a private copy: the data query may itself use the backend cache */
	model = pepnet_load_model(&ref, name, &version);
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	InitMaterializedSRF(fcinfo, 0);
	caller = CurrentMemoryContext;
	SPI_connect();
	ms = evaluate(model, query, "data", &nm);
	MemoryContextSwitchTo(caller);
	for (i = 0; i < nm; i++)
	{
		Datum		values[8];
		bool		nulls[8] = {false, false, false, false, false, false, false, false};

		values[0] = Int32GetDatum(ms[i].domain);
		nulls[0] = ms[i].domain < 0;
		values[1] = CStringGetTextDatum(model->cfg.tasks[ms[i].task]);
		values[2] = Int64GetDatum(ms[i].rows);
		values[3] = Float8GetDatum(ms[i].auc);
		nulls[3] = isnan(ms[i].auc);
		values[4] = Float8GetDatum(ms[i].logloss);
		/* 0.2.0: calibration (the 0.1.0 declaration has the first five columns only) */
		values[5] = Float8GetDatum(ms[i].mean_p);
		values[6] = Float8GetDatum(ms[i].rate);
		values[7] = Float8GetDatum(ms[i].rate > 0 ? ms[i].mean_p / ms[i].rate : 0);
		nulls[7] = !(ms[i].rate > 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
