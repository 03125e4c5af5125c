/*
 * evaluate.c
 *		pepnet_evaluate(model, data) and the evaluation pepnet_train runs on
 *		its validation query: every row of a labelled data query scored in
 *		blocks of eval_block_rows() rows by the scoring engine in fp32 (src/core/
 *		evaluate.c: PN's running statistics, ties bit-identical, negative
 *		down-sampling in the output bias), metrics per domain and task
 *		(metrics.c).
 */
#include "features.h"
#include "metrics.h"
#include "reader.h"

#include <math.h>

#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(pepnet_evaluate);
PG_FUNCTION_INFO_V1(pepnet_check_data);

/*
 * Rows scored per call of the engine, which groups them by (domain, persona):
 * a block this large lets rows of one persona that stand apart in the query
 * share their persona's work and fill the engine's tiles, so evaluation does
 * not depend on the query's order for its speed (logits do not depend on the
 * grouping).  Memory is bounded: the block holds at most EVAL_BLOCK_BYTES of
 * inputs and logits (8 bytes per id, 4 per dense value, label and logit),
 * between EVAL_BLOCK_MIN and EVAL_BLOCK_MAX rows.
 */
#define EVAL_BLOCK_BYTES ((Size) 64 * 1024 * 1024)
#define EVAL_BLOCK_MIN 4096
#define EVAL_BLOCK_MAX 262144

static int
eval_block_rows(const PnConfig *c)
{
	Size		row = sizeof(int64) * (c->nfeat + c->npers) + sizeof(float) * (c->dense + 2 * c->ntasks) + 16;
	Size		n = EVAL_BLOCK_BYTES / row;

	return (int) Max(EVAL_BLOCK_MIN, Min(EVAL_BLOCK_MAX, n));
}

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
		if (rows->bags)
			h = features_bags_hash(c, rows->bags + (int64) i * (c->nfeat + c->npers), h);
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
	return evaluate_rows(m, query, what, PN_FP32, nmetrics, NULL);
}

/* evaluate, and (data_hash not NULL) the identity of the query's rows (rows_hash) */
Metric *
evaluate_rows(PnModel *m, const char *query, const char *what, int precision, int *nmetrics, uint64 *data_hash)
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
	int			block = eval_block_rows(c);
	BagBlock	bags = {0};

	/*
	 * scored by the engine, as pepnet_score serves it in that precision:
	 * ties bit-identical, see src/core/evaluate.c
	 */
	pepnet_check_precision(precision);
	if (pn_evaluator_new(m, precision, &ev, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_DATA_CORRUPTED);
	rows_init(&rows, c, block);
	logits = palloc_extended(sizeof(float) * (Size) block * c->ntasks, MCXT_ALLOC_HUGE);
	preds = palloc_extended(sizeof(Pred) * cap, MCXT_ALLOC_HUGE);
	reader_open(&r, query, c, what, false);
	while (more)
	{
		PnBatch		b;

		CHECK_FOR_INTERRUPTS();
		rows.n = 0;
		while (rows.n < block)
			if (reader_fetch(&r, &rows, block - rows.n) == 0)
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
		b.fbag = NULL;
		b.pbag = NULL;
		if (rows.bags)
		{
			features_bags_block(c, &bags, rows.bags, NULL, rows.n);
			b.fbag = bags.fbag;
			b.pbag = bags.pbag;
		}
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


/*
 * pepnet_evaluate(model, data): AUC and logloss per domain and task, and
 * overall.  Declared with a ninth column (pepnet._evaluate_rows, which
 * pepnet_evaluate(model, data, record) records from), each row also carries
 * the data_hash of the rows evaluated (16 hex digits, as pepnet_train's
 * validation records it).
 */
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
	uint64		data_hash = 0;
	bool		with_hash;
	char	   *hash_text = NULL;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("model reference");
	if (PG_ARGISNULL(1))
		pepnet_null_arg("data query");
	pepnet_resolve(text_to_cstring(PG_GETARG_TEXT_PP(0)), &ref);
	/* a private copy: the data query may itself use the backend cache */
	model = pepnet_load_model(&ref, name, &version);
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	InitMaterializedSRF(fcinfo, 0);
	with_hash = rsinfo->setDesc->natts >= 9;
	caller = CurrentMemoryContext;
	pepnet_spi_connect();
	/* a recorded evaluation (the ninth column) is the version's fp32 quality, as training's validation */
	ms = evaluate_rows(model, query, "data", with_hash ? PN_FP32 : pepnet_precision, &nm, with_hash ? &data_hash : NULL);
	MemoryContextSwitchTo(caller);
	if (with_hash)
		hash_text = psprintf("%016llx", (unsigned long long) data_hash);
	for (i = 0; i < nm; i++)
	{
		Datum		values[9];
		bool		nulls[9] = {false, false, false, false, false, false, false, false, !with_hash};

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
		/* pepnet._evaluate_rows: the identity of the rows evaluated */
		values[8] = with_hash ? CStringGetTextDatum(hash_text) : (Datum) 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}


/* one (domain, task) of pepnet_check_data's summary */
typedef struct CheckCount
{
	int64		rows;			/* rows of the domain */
	int64		labeled;		/* rows with a known label for the task */
	int64		positives;		/* labels >= 0.5 */
	double		label_sum;
} CheckCount;

/*
 * The text of pepnet_check_data's config: one without "inputs" (and
 * without the arrays form's "dense": N) takes its form from the data
 * query as pepnet_train's does: a column "features" is the arrays form,
 * otherwise the named form.
 */
static char *
check_config_text(Jsonb *jb, const char *query, bool *arrays_by_query)
{
	char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
	const char *body;
	JsonbValue	k,
			   *dv;
	bool		has_features;

	*arrays_by_query = false;
	if (!JB_ROOT_IS_OBJECT(jb))
		return text;
	k.type = jbvString;
	k.val.string.val = "inputs";
	k.val.string.len = 6;
	if (findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k) != NULL)
		return text;
	k.val.string.val = "dense";
	k.val.string.len = 5;
	if ((dv = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k)) != NULL && dv->type == jbvNumeric)
		return text;
	pepnet_spi_connect();
	has_features = features_has_column(reader_describe(query, "data"), "features");
	SPI_finish();
	if (has_features)
	{
		*arrays_by_query = true;
		return text;
	}
	body = text + 1;			/* after the object's "{" */
	while (*body == ' ')
		body++;
	return psprintf("{\"inputs\": \"columns\"%s%s", *body == '}' ? "" : ", ", body);
}

/*
 * pepnet_check_data(data, config, model): every row of a data query read
 * and checked as pepnet_train reads it (domain, ids, shapes, labels; a
 * fault raises the error training would, naming the row), without
 * training; returns per domain and task (and per task over all domains,
 * domain NULL) rows, labeled rows, positives and the actual rate.
 * WARNINGs for columns that are not used, domains without rows and
 * (domain, task) groups with one class only.  Either input form: a
 * version's, or the config's (check_config_text).
 */
Datum
pepnet_check_data(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *query;
	PnConfig	cfgbuf;
	const PnConfig *c;
	PnModel    *model = NULL;
	PnError		err = {0};
	Reader		r;
	Rows		rows;
	CheckCount *cnt;
	int64		total = 0;
	int			d,
				t,
				i;
	TupleDesc	td;
	MemoryContext caller;
	char	   *reference = NULL;
	bool		restats = false;	/* a reference as config: its statistics from the query */

	if (PG_ARGISNULL(0))
		pepnet_null_arg("data query");
	if (PG_ARGISNULL(1) && PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pepnet_check_data needs a config or a model, not both NULL"),
				 errhint("Check against the config you will train with (config => ...) or a stored version (model => 'ctr@3').")));
	if (!PG_ARGISNULL(1) && !PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pepnet_check_data needs a config or a model, one of them"),
				 errhint("Check against the config you will train with (config => ...) or a stored version (model => 'ctr@3').")));
	query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (!PG_ARGISNULL(1))
	{
		Jsonb	   *jb = PG_GETARG_JSONB_P(1);
		JsonbValue	sv;

		/* a version reference as a JSON string ('"ctr@1"', as pepnet_train takes it): that version */
		if (JB_ROOT_IS_SCALAR(jb) && JsonbExtractScalar(&jb->root, &sv) && sv.type == jbvString)
			reference = pnstrdup(sv.val.string.val, sv.val.string.len);
		else
		{
			bool		arrays_by_query;
			char	   *text = check_config_text(jb, query, &arrays_by_query);

			if (pepnet_config_parse(text, pepnet_max_model_bytes(), &cfgbuf, &err) != PN_OK)
			{
				if (arrays_by_query)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s", err.msg),
							 errdetail("The config has no \"inputs\" and the data query has a column \"features\", "
									   "so the config was read as the arrays form.%s%s", err.detail[0] ? " " : "", err.detail),
							 errhint("Say \"inputs\": \"columns\" in the config, or rename the query's column \"features\" "
									 "if it is not the arrays form's features bigint[].")));
				pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
			}
			c = &cfgbuf;
		}
	}
	else
		reference = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (reference)
	{
		PepnetRef	ref;
		char		name[PEPNET_NAMELEN];
		int32		version;

		pepnet_resolve(reference, &ref);
		model = pepnet_load_model(&ref, name, &version);
		c = &model->cfg;
		/*
		 * config => '"ctr@3"' is the config pepnet_train would train with:
		 * its z-score statistics come from the data query (model => 'ctr@3'
		 * checks with the stored ones, as scoring reads them)
		 */
		if (!PG_ARGISNULL(1))
			for (i = 0; i < c->dense && c->dfield != NULL; i++)
				if (c->dfield[i].zscore)
				{
					c->dfield[i].stats = false;
					restats = true;
				}
	}
	InitMaterializedSRF(fcinfo, 0);
	caller = CurrentMemoryContext;
	cnt = palloc0(sizeof(CheckCount) * c->domains * c->ntasks);
	pepnet_spi_connect();
	/* a new config's z-scored dense fields: their statistics as pepnet_train would compute them */
	if (restats)
		reader_dense_stats(query, &model->cfg, NULL, NULL);
	if (c == &cfgbuf)
	{
		static const int64 no_ids = 0;

		reader_dense_stats(query, &cfgbuf, NULL, NULL);
		/* a min_count field's ids are checked, not counted: an empty vocabulary (every id its OOV row) */
		for (i = 0; i < cfgbuf.nfeat + cfgbuf.npers; i++)
		{
			PnField    *f = i < cfgbuf.nfeat ? &cfgbuf.feat[i] : &cfgbuf.pers[i - cfgbuf.nfeat];

			if (f->min_count > 0)
			{
				f->vocab = &no_ids;
				f->nvocab = 0;
			}
		}
	}
	rows_init(&rows, c, FETCH_ROWS);
	reader_open(&r, query, c, "data", false);
	td = r.portal->tupDesc;
	for (i = 0; i < td->natts; i++)
	{
		const char *col = NameStr(TupleDescAttr(td, i)->attname);

		if (TupleDescAttr(td, i)->attisdropped)
			continue;
		if (r.fb)
		{
			/* the named form: the fields', the domain's and the tasks' columns */
			if (!features_reads(r.fb, i + 1))
				ereport(WARNING,
						(errmsg("data query column \"%s\" is not used by training", col),
						 errhint("Training reads the column of each field of the config, the domain column and each task's label column; check the column's name.")));
			continue;
		}
		if (strcmp(col, "domain") != 0 && strcmp(col, "persona") != 0 && strcmp(col, "features") != 0 &&
			strcmp(col, "dense") != 0 && strcmp(col, "label") != 0 && strcmp(col, "labels") != 0)
			ereport(WARNING,
					(errmsg("data query column \"%s\" is not used by training", col),
					 errhint("Training reads domain, persona, features, dense and label or labels; check the column's name.")));
	}
	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		rows.n = 0;
		if (reader_fetch(&r, &rows, FETCH_ROWS) == 0)
			break;
		for (i = 0; i < rows.n; i++)
		{
			d = rows.domain[i];
			for (t = 0; t < c->ntasks; t++)
			{
				CheckCount *k = &cnt[d * c->ntasks + t];
				float		y = rows.labels[(size_t) i * c->ntasks + t];

				k->rows++;
				if (isnan(y))
					continue;
				k->labeled++;
				k->label_sum += y;
				if (y >= 0.5f)
					k->positives++;
			}
		}
		total += rows.n;
	}
	SPI_cursor_close(r.portal);
	SPI_finish();
	MemoryContextSwitchTo(caller);
	if (total == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("data query returned no rows")));
	for (t = 0; t < c->ntasks; t++)
	{
		CheckCount	all = {0};

		for (d = 0; d <= c->domains; d++)
		{
			CheckCount *k = d < c->domains ? &cnt[d * c->ntasks + t] : &all;
			Datum		values[6];
			bool		nulls[6] = {false, false, false, false, false, false};

			if (d < c->domains)
			{
				all.rows += k->rows;
				all.labeled += k->labeled;
				all.positives += k->positives;
				all.label_sum += k->label_sum;
				if (k->rows == 0)
				{
					if (t == 0)
						ereport(WARNING,
								(errmsg("domain %d of the model has no rows in the data query", d),
								 errdetail("Its domain-specific parameters would keep their initial values.")));
					continue;
				}
				if (k->labeled > 0 && (k->positives == 0 || k->positives == k->labeled))
					ereport(WARNING,
							(errmsg("task \"%s\" has only %s labels in domain %d: its AUC there is undefined",
									c->tasks[t], k->positives ? "positive" : "negative", d)));
			}
			values[0] = Int32GetDatum(d);
			nulls[0] = d == c->domains;
			values[1] = CStringGetTextDatum(c->tasks[t]);
			values[2] = Int64GetDatum(k->rows);
			values[3] = Int64GetDatum(k->labeled);
			values[4] = Int64GetDatum(k->positives);
			values[5] = Float8GetDatum(k->labeled ? k->label_sum / k->labeled : 0);
			nulls[5] = k->labeled == 0;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		if (all.labeled == 0)
			ereport(WARNING,
					(errmsg("task \"%s\" has no known label in the data query", c->tasks[t]),
					 errdetail("Training needs a label 0 or 1 for at least one task.")));
	}
	if (model == NULL)
		pn_config_free(&cfgbuf);
	return (Datum) 0;
}
