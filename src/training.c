/*
 * training.c
 *		The C side of CALL pepnet_train: _train_begin (fresh weights or the
 *		version continued from), _train_setup (checks before work, the
 *		learning-rate schedule, negative down-sampling, selection, Adam
 *		resumed), _train_epoch (one pass through a seeded shuffle buffer,
 *		batches into the core's trainer, progress NOTICEs), _train_eval
 *		(validation metrics, evaluate.c), _train_save (a version and its
 *		optimizer state) and _train_end.  The data query is read by
 *		reader.c.
 *
 * The plpgsql procedure pepnet_train drives these functions epoch by epoch
 * and COMMITs a version after each.  The trainer lives in a memory context
 * of its own under TopMemoryContext, so it survives those COMMITs; a backend
 * holds at most one, released by _train_end or the next _train_begin.
 */
#include "metrics.h"
#include "reader.h"
#include "features.h"
#include "pepshm.h"

#include <math.h>
#include <time.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "utils/acl.h"

PG_FUNCTION_INFO_V1(pepnet_train_begin);
PG_FUNCTION_INFO_V1(pepnet_train_epoch);
PG_FUNCTION_INFO_V1(pepnet_train_eval);
PG_FUNCTION_INFO_V1(pepnet_train_save);
PG_FUNCTION_INFO_V1(pepnet_train_end);
PG_FUNCTION_INFO_V1(pepnet_train_check);

/* pepnet._train_check is running _train_begin's checks (no COMMIT follows) */
static bool train_checking = false;
PG_FUNCTION_INFO_V1(pepnet_train_setup);

/* the backend's trainer */
typedef struct TrainState
{
	MemoryContext cxt;
	PnModel    *model;
	PnTrainer  *trainer;
	char		name[PEPNET_NAMELEN];
	int32		parent;			/* version trained from, 0 for none */
	int			batch_size;
	int			epochs_done;	/* in this call */
	int			epoch_base;		/* epochs of the lineage before this call (resumed) */
	/* learning-rate schedule (pepnet_train's lr_schedule) */
	double		base_lr;
	int64		warmup_steps;
	int			decay;			/* SCHED_* */
	int64		decay_steps;
	double		decay_gamma;
	double		min_lr;
	double		last_lr;
	/* negative down-sampling rate per domain (NULL: none) */
	float	   *neg_rate;
	/*
	 * divergence stop (pepnet.max_loss_growth when training began, 0: off):
	 * the mean loss of a window of LOSS_WINDOW steps may not exceed
	 * max_loss_growth times that of the call's first window
	 */
	double		max_loss_growth;
	double		loss_ref;		/* first window's mean loss, 0 until known */
	double		win_loss;		/* the current window's sum of batch losses */
	int64		win_steps,
				win_first;		/* steps in it, its first step (1-based in this call) */
	int64		call_steps;		/* optimiser steps of this call */
	/*
	 * a new config without "inputs": the model is made by _train_setup once
	 * the data query says which form (config text and seed kept till then)
	 */
	char	   *pending_config;
	int32		seed;
	bool		explicit_inputs;	/* a new config that says "inputs" */
	/*
	 * a new config with "min_count" fields: their vocabularies come from the
	 * data query before the first step (train_data_stats), and the model is
	 * made again with each such field's buckets = V + 1
	 */
	bool		vocab_pending;
} TrainState;

#define LOSS_WINDOW 20

#define SCHED_NONE 0
#define SCHED_COSINE 1
#define SCHED_STEP 2

static TrainState *train = NULL;

/* pepnet.max_loss_growth: the divergence stop's factor (0: off) */
static double pepnet_max_loss_growth = 100;

static emit_log_hook_type prev_emit_log_hook = NULL;

/*
 * Whether a line of an error's context is one of pepnet's own PL/pgSQL
 * frames: pepnet_train's procedure and the internal functions it and
 * pepnet_evaluate(model, data, record) use, the statements they run and the
 * grid's CALL of each run.
 */
static bool
internal_context_line(const char *line, size_t len)
{
	static const char *const prefixes[] = {
		"PL/pgSQL function pepnet_train(",
		"PL/pgSQL function pepnet._train_grid(",
		"PL/pgSQL function pepnet._record_evaluation(",
		"PL/pgSQL function pepnet._config_of(",
		"PL/pgSQL function pepnet_evaluate(text,text,text)",
		"SQL statement \"SELECT pepnet._",
		"SQL statement \"SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(e))",
		"SQL statement \"CALL pepnet._train_grid(",
	};
	int			i;

	for (i = 0; i < lengthof(prefixes); i++)
		if (len >= strlen(prefixes[i]) && strncmp(line, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	/* the grid's CALL of a run (the schema qualification varies) */
	return strncmp(line, "SQL statement \"CALL ", 20) == 0 && len > 40 &&
		memmem(line, len, ".pepnet_train(base, data,", 25) != NULL;
}

/*
 * emit_log_hook: drops pepnet's internal PL/pgSQL frames from the context of
 * an error report (they name procedure lines, not the user's statement);
 * frames of the caller's own functions stay.  In place, no allocation.
 */
static void
pepnet_emit_log(ErrorData *edata)
{
	if (edata->context && strstr(edata->context, "pepnet"))
	{
		char	   *src = edata->context,
				   *dst = edata->context;
		bool		in_statement = false;	/* dropping a multi-line SQL statement */

		while (*src)
		{
			char	   *nl = strchr(src, '\n');
			size_t		len = nl ? (size_t) (nl - src) : strlen(src);
			bool		drop = in_statement || internal_context_line(src, len);

			/* a statement's text runs to the line ending in its closing quote */
			if (drop && (in_statement || strncmp(src, "SQL statement \"", 15) == 0))
				in_statement = !(len > 0 && src[len - 1] == '"' && (in_statement || len > 15));
			if (!drop)
			{
				if (dst != edata->context)
					*dst++ = '\n';
				memmove(dst, src, len);
				dst += len;
			}
			src += len + (nl ? 1 : 0);
		}
		*dst = '\0';
		if (edata->context[0] == '\0')
			edata->context = NULL;
	}
	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}

/* Define training's settings (from _PG_init) */
void
pepnet_training_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = pepnet_emit_log;

	DefineCustomRealVariable("pepnet.max_loss_growth",
							 "Stops pepnet_train when the mean loss of 20 steps exceeds this many times that of its first 20 steps (0: never).",
							 NULL, &pepnet_max_loss_growth, 100, 0, 1e300, PGC_USERSET, 0,
							 NULL, NULL, NULL);
}

/* Seconds since some fixed point */
static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}


/* Raise a core error */
static void
core_error(PnError *err)
{
	pepnet_report(err, ERRCODE_DATA_CORRUPTED);
}

/* Free the backend's trainer */
static void
train_free(void)
{
	if (train)
	{
		MemoryContext cxt = train->cxt;
		PnTrainer  *tr = train->trainer;

		train = NULL;
		pepnet_progress_end();	/* frees the progress slot (also on abort) */
		pn_trainer_free(tr);	/* its oneDNN primitives live outside the context */
		MemoryContextDelete(cxt);
	}
}

/*
 * The trainer outlives the COMMITs between epochs, but not an error: a
 * failed (aborted) transaction frees it (about 3x the model: gradients and
 * Adam's moments), so nothing stays behind until the next training.
 */
static void
train_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		train_free();
}

/* Register the abort callback once per backend */
static void
train_register_callback(void)
{
	static bool registered = false;

	if (!registered)
	{
		RegisterXactCallback(train_xact_callback, NULL);
		registered = true;
	}
}


/* The trainer's model (made by _train_setup or the first epoch), or an error */
static PnModel *
train_model(TrainState *st)
{
	if (st->model == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the training in this session has no model yet"),
				 errhint("Use CALL pepnet_train(...).")));
	return st->model;
}

/* The trainer, or an error when none is active */
static TrainState *
train_get(void)
{
	if (train == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no training in progress in this session"),
				 errhint("Use CALL pepnet_train(...).")));
	return train;
}

/* The model of a new config (JSON text) with fresh weights from the seed */
static void
train_new_model(TrainState *st, const char *text)
{
	PnConfig	cfg;
	PnError		err = {0};
	int			i;

	if (pepnet_config_parse(text, pepnet_max_model_bytes(), &cfg, &err) != PN_OK)
		pepnet_report(&err, ERRCODE_INVALID_PARAMETER_VALUE);
	if (pn_model_new(&cfg, &st->model, &err) != PN_OK)
		core_error(&err);
	pn_config_free(&cfg);
	pn_model_init(st->model, (uint64) (int64) st->seed);
	st->vocab_pending = false;
	for (i = 0; i < st->model->cfg.nfeat; i++)
		st->vocab_pending |= st->model->cfg.feat[i].min_count > 0;
	for (i = 0; i < st->model->cfg.npers; i++)
		st->vocab_pending |= st->model->cfg.pers[i].min_count > 0;
}

/*
 * The model of a new config made again with the vocabularies built from
 * the data query (vocab[g], nvocab[g] of field g, the features then the
 * persona fields): each vocabulary field's buckets is V + 1 (rows 0..V-1
 * the vocabulary's ids, V the out-of-vocabulary row, then the missing
 * row), weights initialised from the seed as for that config, and a new
 * trainer.  Nothing has been trained yet.
 */
static void
train_set_vocab(TrainState *st, int64 **vocab, const int64 *nvocab)
{
	MemoryContext old = MemoryContextSwitchTo(st->cxt);
	PnConfig	nc = st->model->cfg;
	PnModel    *m;
	PnError		err = {0};
	int			F = nc.nfeat,
				g;

	nc.feat = palloc(sizeof(PnField) * (F + 1));
	nc.pers = palloc(sizeof(PnField) * (nc.npers + 1));
	memcpy(nc.feat, st->model->cfg.feat, sizeof(PnField) * F);
	memcpy(nc.pers, st->model->cfg.pers, sizeof(PnField) * nc.npers);
	for (g = 0; g < F + nc.npers; g++)
		if (vocab[g])
			(g < F ? &nc.feat[g] : &nc.pers[g - F])->buckets = nvocab[g] + 1;
	if (pn_model_new(&nc, &m, &err) != PN_OK)
		core_error(&err);
	pn_model_init(m, (uint64) (int64) st->seed);
	for (g = 0; g < F + nc.npers; g++)
	{
		int			x = g < F ? m->t_vocab_feat[g] : m->t_vocab_pers[g - F];

		if (vocab[g] && nvocab[g] > 0)
			memcpy(PN_T(m, x), vocab[g], sizeof(int64) * nvocab[g]);
	}
	pn_model_attach_vocab(m);
	pfree(nc.feat);
	pfree(nc.pers);
	pn_trainer_free(st->trainer);
	st->trainer = NULL;
	pn_model_free(st->model);
	st->model = m;
	if (pn_trainer_new(st->model, st->batch_size, (float) st->base_lr, &st->trainer, &err) != PN_OK)
		core_error(&err);
	st->vocab_pending = false;
	MemoryContextSwitchTo(old);
}

/*
 * What a new config takes from the data query before the first step, in
 * one read of it (reader_dense_stats): z-scored dense fields' statistics
 * and min_count fields' vocabularies.  Continued training keeps the
 * version's (it has both).  SPI connected.
 */
static void
train_data_stats(TrainState *st, const char *query)
{
	int			G = st->model->cfg.nfeat + st->model->cfg.npers;
	int64	  **vocab = NULL,
			   *nvocab = NULL;

	if (st->vocab_pending)
	{
		vocab = palloc0(sizeof(int64 *) * (G + 1));
		nvocab = palloc0(sizeof(int64) * (G + 1));
	}
	reader_dense_stats(query, &st->model->cfg, vocab, nvocab);
	if (vocab)
		train_set_vocab(st, vocab, nvocab);
}

/* A config's JSON text (an object) with "inputs" set to form, first */
static char *
config_with_inputs(const char *text, const char *form)
{
	const char *body = text + 1;	/* after the object's "{" */

	while (*body == ' ')
		body++;
	return psprintf("{\"inputs\": \"%s\"%s%s", form, *body == '}' ? "" : ", ", body);
}

/*
 * A new config without "inputs", whose form waits for the data query,
 * checked now (as every config is checked before any training, a grid's
 * every run before the first): it must be valid in one of the two forms.
 * The error is the arrays form's, or the named form's when the config has
 * keys of the named form only.
 */
static void
train_check_pending(const char *text)
{
	PnConfig	cfg;
	PnError		ea = {0},
				ec = {0};
	char	   *named;

	if (pepnet_config_parse(text, pepnet_max_model_bytes(), &cfg, &ea) == PN_OK)
	{
		pn_config_free(&cfg);
		return;
	}
	named = config_with_inputs(text, "columns");
	if (pepnet_config_parse(named, pepnet_max_model_bytes(), &cfg, &ec) == PN_OK)
	{
		pn_config_free(&cfg);
		pfree(named);
		return;
	}
	pfree(named);
	pepnet_report(strstr(ea.msg, "belongs to the named form") ? &ec : &ea, ERRCODE_INVALID_PARAMETER_VALUE);
}

/*
 * The form of a new config's inputs from the data query (before any row is
 * read): a query with a column "features" is the arrays form, otherwise
 * the named form.  A config without "inputs" gets it and its model is made
 * now; one that says "inputs" must agree with the query (22023 naming the
 * column that decides).
 */
static void
train_resolve_inputs(TrainState *st, const char *query)
{
	TupleDesc	td;
	bool		has_features;

	if (st->pending_config == NULL && !st->explicit_inputs)
		return;
	st->explicit_inputs = false;	/* checked once, before the first epoch */
	pepnet_spi_connect();
	td = reader_describe(query, "data");
	has_features = features_has_column(td, "features");
	SPI_finish();
	if (st->pending_config)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);
		PnError		err = {0};

		train_new_model(st, config_with_inputs(st->pending_config, has_features ? "arrays" : "columns"));
		st->pending_config = NULL;
		if (pn_trainer_new(st->model, st->batch_size, (float) st->base_lr, &st->trainer, &err) != PN_OK)
			core_error(&err);
		MemoryContextSwitchTo(old);
		return;
	}
	if (st->model->cfg.inputs == PN_INPUTS_ARRAYS && !has_features)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the config says \"inputs\": \"arrays\" but the data query has no column \"features\""),
				 errdetail("The arrays form reads features bigint[], persona bigint[] and dense real[]; a query without "
						   "\"features\" is the named form."),
				 errhint("Return the arrays, or say \"inputs\": \"columns\" (or leave \"inputs\" out) to bind fields to columns by name.")));
	if (st->model->cfg.inputs == PN_INPUTS_COLUMNS && has_features)
	{
		const PnConfig *c = &st->model->cfg;
		bool		field = false;
		int			i;

		for (i = 0; i < c->nfeat; i++)
			field |= strcmp(c->feat[i].name, "features") == 0;
		for (i = 0; i < c->npers; i++)
			field |= strcmp(c->pers[i].name, "features") == 0;
		for (i = 0; i < c->dense; i++)
			field |= strcmp(c->dfield[i].name, "features") == 0;
		if (!field)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("the config says \"inputs\": \"columns\" but the data query has a column \"features\", the arrays form"),
					 errdetail("No field of the config is named \"features\"."),
					 errhint("Return one column per field, or say \"inputs\": \"arrays\" (or leave \"inputs\" out).")));
	}
}

/*
 * pepnet._train_begin(name, config, seed, lr, batch_size): a model with
 * fresh weights from config, or (config NULL) the deployed / latest /
 * given version of name to continue from.
 */
Datum
pepnet_train_begin(PG_FUNCTION_ARGS)
{
	char	   *name;
	int32		seed = PG_GETARG_INT32(2);
	double		lr = PG_GETARG_FLOAT8(3);
	int32		bs = PG_GETARG_INT32(4);
	MemoryContext cxt,
				old;
	TrainState *st;
	PnError		err = {0};
	char	   *at;

	pepnet_require_writable("pepnet_train");	/* on a standby, before any work */
	/* before anything is read: training COMMITs a version per epoch */
	if (!train_checking && IsTransactionBlock())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("pepnet_train cannot run inside a transaction block"),
				 errdetail("It commits a new version after each epoch."),
				 errhint("Run CALL pepnet_train(...) on its own, outside BEGIN ... COMMIT; from a driver that opens transactions "
						 "itself, turn autocommit on first (psycopg: conn.autocommit = True; JDBC: setAutoCommit(true)).")));
	if (!train_checking && !SPI_inside_nonatomic_context())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_TERMINATION),
				 errmsg("pepnet_train cannot run where it cannot COMMIT"),
				 errdetail("It commits a new version after each epoch; a CALL from a function, or from a procedure "
						   "called that way, cannot."),
				 errhint("Run CALL pepnet_train(...) as a statement of its own, or from a procedure or DO block "
						 "that is itself called that way.")));
	if (PG_ARGISNULL(0))
		pepnet_null_arg("model name");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	train_register_callback();
	train_free();
	cxt = AllocSetContextCreate(TopMemoryContext, "pepnet trainer", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);
	st = palloc0(sizeof(TrainState));
	st->cxt = cxt;
	st->batch_size = bs;
	st->base_lr = st->last_lr = lr;
	st->max_loss_growth = pepnet_max_loss_growth;
	PG_TRY();
	{
		if (!PG_ARGISNULL(1))
		{
			Jsonb	   *jb = PG_GETARG_JSONB_P(1);
			char	   *text = JsonbToCString(NULL, &jb->root, VARSIZE(jb));
			JsonbValue	k,
					   *dv;

			pepnet_check_name(name);
			strlcpy(st->name, name, PEPNET_NAMELEN);
			st->seed = seed;
			k.type = jbvString;
			k.val.string.val = "inputs";
			k.val.string.len = 6;
			st->explicit_inputs = JB_ROOT_IS_OBJECT(jb) &&
				findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k) != NULL;
			k.val.string.val = "dense";
			k.val.string.len = 5;
			if (st->explicit_inputs || !JB_ROOT_IS_OBJECT(jb))
				train_new_model(st, text);
			else if ((dv = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k)) != NULL && dv->type == jbvNumeric)
				train_new_model(st, text);	/* "dense": N is the arrays form's alone */
			else
			{
				train_check_pending(text);
				st->pending_config = text;	/* the form comes from the data query (_train_setup) */
			}
		}
		else
		{
			PepnetRef	ref;
			char		lname[PEPNET_NAMELEN];
			int32		v;

			pepnet_resolve(name, &ref);
			st->model = pepnet_load_model(&ref, lname, &v);
			strlcpy(st->name, ref.name, PEPNET_NAMELEN);
			st->parent = ref.version;
		}
		at = strchr(st->name, '@');
		if (at)
			*at = '\0';
		if (st->model && pn_trainer_new(st->model, bs, (float) lr, &st->trainer, &err) != PN_OK)
			core_error(&err);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(old);
		MemoryContextDelete(cxt);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	train = st;
	pepnet_progress_start(st->name, st->parent);
	PG_RETURN_INT32(st->parent);
}

/* what one epoch carries from batch to batch */
typedef struct Epoch
{
	TrainState *st;
	Rows		batch;
	BagBlock	bags;			/* the batch's multi-valued fields, as the core takes them */
	int32		epoch;
	double		t0,
				last,
				progress,
				loss_sum,
				run_loss;
	int64		rows,
				steps,
				run_rows,
				labeled;		/* rows with at least one known label */
} Epoch;

/*
 * Learning rate of optimiser step `step` (1-based, counted over every
 * training of the lineage): linear warm-up over warmup_steps, then cosine
 * decay to min_lr over decay_steps, or times gamma every decay_steps.
 */
static double
schedule_lr(const TrainState *st, int64 step)
{
	double		lr = st->base_lr;
	int64		t;

	if (st->warmup_steps > 0 && step <= st->warmup_steps)
		return lr * (double) step / (double) st->warmup_steps;
	t = step - st->warmup_steps;
	if (st->decay == SCHED_COSINE)
	{
		double		f = (double) Min(t, st->decay_steps) / (double) st->decay_steps;

		lr = st->min_lr + (lr - st->min_lr) * 0.5 * (1.0 + cos(M_PI * f));
	}
	else if (st->decay == SCHED_STEP)
		lr *= pow(st->decay_gamma, (double) (t / st->decay_steps));
	return lr;
}

/*
 * The divergence stop: a finite loss that grows past max_loss_growth times
 * the first LOSS_WINDOW steps' mean stops training before the epoch's
 * version is stored (a non-finite one is caught by the core).
 */
static void
loss_window(TrainState *st, double loss)
{
	st->call_steps++;
	if (st->max_loss_growth <= 0)
		return;
	if (st->win_steps == 0)
		st->win_first = st->call_steps;
	st->win_loss += loss;
	if (++st->win_steps < LOSS_WINDOW)
		return;
	if (st->loss_ref <= 0)
		st->loss_ref = Max(st->win_loss / st->win_steps, 1e-6);
	else if (st->win_loss / st->win_steps > st->max_loss_growth * st->loss_ref)
		ereport(ERROR,
				(errcode(ERRCODE_FLOATING_POINT_EXCEPTION),
				 errmsg("training diverged: the mean loss of steps %lld to %lld is %g, more than %g times the %g of the first %d steps",
						(long long) st->win_first, (long long) st->call_steps, st->win_loss / st->win_steps,
						st->max_loss_growth, st->loss_ref, LOSS_WINDOW),
				 errdetail("The epoch's version is not stored; earlier epochs' versions are kept."),
				 errhint("Lower lr (or use an lr_schedule with warm-up), scale dense values, or raise pepnet.max_loss_growth (0 turns the stop off).")));
	st->win_loss = 0;
	st->win_steps = 0;
}

/* Train on the rows collected in the batch, with a progress NOTICE now and then */
static void
epoch_step(Epoch *ep)
{
	const PnConfig *c = &ep->st->model->cfg;
	PnBatch		b;
	PnError		err = {0};
	double		loss;

	if (ep->batch.n == 0)
		return;
	b.n = ep->batch.n;
	b.domain = ep->batch.domain;
	b.persona = ep->batch.persona;
	b.features = ep->batch.features;
	b.dense = c->dense ? ep->batch.dense : NULL;
	b.labels = ep->batch.labels;
	b.fbag = NULL;
	b.pbag = NULL;
	if (ep->batch.bags)
	{
		features_bags_block(c, &ep->bags, ep->batch.bags, NULL, b.n);
		b.fbag = ep->bags.fbag;
		b.pbag = ep->bags.pbag;
	}
	CHECK_FOR_INTERRUPTS();
	{
		int			i,
					t;

		for (i = 0; i < b.n; i++)
			for (t = 0; t < c->ntasks; t++)
				if (!isnan(b.labels[(size_t) i * c->ntasks + t]))
				{
					ep->labeled++;
					break;
				}
	}
	ep->st->last_lr = schedule_lr(ep->st, pn_trainer_steps(ep->st->trainer) + 1);
	pn_trainer_set_lr(ep->st->trainer, (float) ep->st->last_lr);
	{
		/* the trainer's room for the rows of multi-valued fields grows in its own context */
		MemoryContext old = MemoryContextSwitchTo(ep->st->cxt);
		int			rc = pn_train_step(ep->st->trainer, &b, &loss, &err);

		MemoryContextSwitchTo(old);
		if (rc != PN_OK)
			train_core_error(&err, "data", &ep->batch);
	}
	loss_window(ep->st, loss);
	ep->loss_sum += loss * b.n;
	ep->run_loss += loss * b.n;
	ep->run_rows += b.n;
	ep->rows += b.n;
	ep->steps++;
	ep->batch.n = 0;
	pepnet_progress_step(ep->epoch, ep->rows, ep->loss_sum / ep->rows);
	if (ep->progress > 0 && now_seconds() - ep->last >= ep->progress)
	{
		double		t = now_seconds();

		ereport(NOTICE,
				(errmsg("pepnet_train \"%s\" epoch %d: %lld rows, %.0f rows/s, loss %.5f",
						ep->st->name, ep->epoch, (long long) ep->rows, ep->rows / (t - ep->t0),
						ep->run_loss / ep->run_rows)));
		ep->last = t;
		ep->run_loss = 0;
		ep->run_rows = 0;
	}
}

/* Append row i of src to the batch, training when it is full */
static void
epoch_emit(Epoch *ep, const Rows *src, int i)
{
	rows_copy(&ep->batch, ep->batch.n++, src, i, &ep->st->model->cfg);
	if (ep->batch.n == ep->st->batch_size)
		epoch_step(ep);
}

/*
 * pepnet._train_epoch(data, epoch, shuffle_buffer, seed, progress_seconds):
 * one pass over the data query through a seeded shuffle buffer (rows leave
 * it in random order; 1 keeps the query's order); returns jsonb {epoch,
 * rows, steps, seconds, rows_per_s, train_loss}.
 */
Datum
pepnet_train_epoch(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	int32		sbuf = Max(PG_GETARG_INT32(2), 1);
	int32		seed = PG_GETARG_INT32(3);
	const PnConfig *c;
	Reader		r;
	Rows		in,
				buf;
	Epoch		ep;
	uint64		rng;
	StringInfoData out;
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "pepnet epoch", ALLOCSET_DEFAULT_SIZES);
	MemoryContext old;
	double		secs;

	/* 0.1.0's pepnet_train calls no _train_setup: the form of a new config is settled here then */
	train_resolve_inputs(st, query);
	c = &st->model->cfg;
	memset(&ep, 0, sizeof(ep));
	ep.st = st;
	ep.epoch = PG_GETARG_INT32(1);
	ep.progress = PG_GETARG_FLOAT8(4);
	ep.t0 = ep.last = now_seconds();
	/* the shuffle of the lineage's n-th epoch, so that continued training repeats a longer one */
	rng = (uint64) (int64) seed * UINT64CONST(0xD1B54A32D192ED03) + (uint64) (st->epoch_base + ep.epoch);

	pepnet_spi_connect();
	old = MemoryContextSwitchTo(tmp);
	rows_init(&in, c, FETCH_ROWS);
	rows_init(&buf, c, sbuf);
	rows_init(&ep.batch, c, st->batch_size);
	/* when no _train_setup computed them (0.1.0's pepnet_train) */
	if (st->vocab_pending)
	{
		MemoryContextSwitchTo(old);
		train_data_stats(st, query);
		MemoryContextSwitchTo(tmp);
		c = &st->model->cfg;
	}
	else
		reader_dense_stats(query, &st->model->cfg, NULL, NULL);
	reader_open(&r, query, c, "data", false);
	/* a named field's id kind, when its config has none, is the data query's: kept in the version */
	if (r.fb)
		features_fill_ids(r.fb, &st->model->cfg);
	for (;;)
	{
		int			i;

		CHECK_FOR_INTERRUPTS();
		in.n = 0;
		if (reader_fetch(&r, &in, FETCH_ROWS) == 0)
			break;
		for (i = 0; i < in.n; i++)
		{
			int			j;

			if (buf.n < sbuf)
			{
				rows_copy(&buf, buf.n++, &in, i, c);
				continue;
			}
			/* a random row leaves the buffer; the incoming row takes its place */
			rng += UINT64CONST(0x9E3779B97F4A7C15);
			j = (int) (pn_splitmix64(rng) % (uint64) buf.n);
			epoch_emit(&ep, &buf, j);
			rows_copy(&buf, j, &in, i, c);
		}
	}
	/* drain the buffer in random order */
	while (buf.n > 0)
	{
		int			j;

		rng += UINT64CONST(0x9E3779B97F4A7C15);
		j = sbuf == 1 ? 0 : (int) (pn_splitmix64(rng) % (uint64) buf.n);
		epoch_emit(&ep, &buf, j);
		rows_copy(&buf, j, &buf, buf.n - 1, c);
		buf.n--;
	}
	epoch_step(&ep);
	SPI_cursor_close(r.portal);
	MemoryContextSwitchTo(old);
	SPI_finish();
	MemoryContextDelete(tmp);
	if (ep.rows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("data query returned no rows")));
	if (ep.labeled == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("data query returned %lld rows but every label is unknown (NULL)", (long long) ep.rows),
				 errhint("Training needs rows with a label 0 or 1 for at least one task; check the label column.")));
	st->epochs_done = ep.epoch;
	pepnet_progress_epoch_done(ep.epoch, ep.rows);
	secs = now_seconds() - ep.t0;
	initStringInfo(&out);
	appendStringInfo(&out, "{\"epoch\": %d, \"rows\": %lld, \"steps\": %lld, \"seconds\": %.3f, "
					 "\"rows_per_s\": %.1f, \"train_loss\": %.6f, \"labeled_rows\": %lld, "
					 "\"optimizer_steps\": %lld, \"lr_last\": %.9g, \"lineage_epoch\": %d}",
					 ep.epoch, (long long) ep.rows, (long long) ep.steps, secs, ep.rows / Max(secs, 1e-9),
					 ep.loss_sum / ep.rows, (long long) ep.labeled,
					 (long long) pn_trainer_steps(st->trainer), st->last_lr, st->epoch_base + ep.epoch);
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
/*
 * pepnet._train_eval(query): validation metrics of the trainer's model as
 * jsonb (metrics_json: rows, logloss, auc, mean_p, actual, pcoc of the
 * first task, then per task and domain), and data_hash: the identity of
 * the validation rows (16 hex digits, the same for the same rows in any
 * order), by which deploy strategy 'best' tells comparable figures.
 */
Datum
pepnet_train_eval(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	char	   *query = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Metric	   *ms;
	int			nm,
				i;
	MemoryContext caller = CurrentMemoryContext;
	char	   *json;
	uint64		data_hash = 0;
	char	   *extra;

	pepnet_spi_connect();
	ms = evaluate_rows(train_model(st), query, "validation", PN_FP32, &nm, &data_hash);
	for (i = 0; i < nm; i++)
		if (ms[i].domain < 0 && ms[i].task == 0)
			pepnet_progress_validation(ms[i].logloss, ms[i].auc);
	json = metrics_json(ms, nm, &st->model->cfg);
	json = MemoryContextStrdup(caller, json);
	SPI_finish();
	extra = psprintf("{\"data_hash\": \"%016llx\"}", (unsigned long long) data_hash);
	PG_RETURN_DATUM(DirectFunctionCall2(jsonb_concat,
										DirectFunctionCall1(jsonb_in, CStringGetDatum(json)),
										DirectFunctionCall1(jsonb_in, CStringGetDatum(extra))));
}

/*
 * A copy of the model's layout for Adam's moments: its float tensors only
 * (a vocabulary is not trained and has no moments)
 */
static void
moments_layout(PnModel *mm)
{
	mm->ntensors -= mm->nvocab;
	mm->nvocab = 0;
}

/* Adam's first (which = 1) or second (2) moments as a safetensors bytea, the model's tensor names */
static bytea *
moments_bytea(TrainState *st, int which)
{
	PnModel		mm = *st->model;
	size_t		n;
	bytea	   *b;

	mm.data = pn_trainer_moment(st->trainer, which);
	mm.borrowed = true;
	moments_layout(&mm);
	n = pn_safetensors_size(&mm);
	if (n > MaxAllocSize - VARHDRSZ)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("optimizer state of %zu bytes exceeds the 1 GB limit of a bytea value", n)));
	b = (bytea *) palloc(n + VARHDRSZ);
	SET_VARSIZE(b, n + VARHDRSZ);
	pn_safetensors_write(&mm, (uint8_t *) VARDATA(b));
	return b;
}

/*
 * pepnet.optimizer_state exists from extension version 0.2.0 on; a database
 * still at 0.1.0 (library updated, ALTER EXTENSION pepnet UPDATE not yet run)
 * trains as 0.1.0 did, without storing or resuming the optimiser.
 */
static bool
optimizer_table_exists(void)
{
	Oid			ns = get_namespace_oid("pepnet", true);

	return OidIsValid(ns) && OidIsValid(get_relname_relid("optimizer_state", ns));
}

/*
 * Store Adam's state (step count and moments) of a version just saved in
 * pepnet.optimizer_state, a table scoring never reads, so that training
 * continued from the version resumes the optimiser.
 */
static void
optimizer_save(TrainState *st, int32 version)
{
	Oid			argtypes[6] = {TEXTOID, INT4OID, INT8OID, BYTEAOID, BYTEAOID, INT4OID};
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', 'n', 'n', ' '};
	bool		chunked;

	if (!optimizer_table_exists())
		return;
	/* 0.2.0: the moments in chunks of pepnet.optimizer_chunks (chunks.c), any size */
	chunked = pepnet_optimizer_chunked();
	values[0] = CStringGetTextDatum(st->name);
	values[1] = Int32GetDatum(version);
	values[2] = Int64GetDatum(pn_trainer_steps(st->trainer));
	if (!chunked)
	{
		values[3] = PointerGetDatum(moments_bytea(st, 1));
		values[4] = PointerGetDatum(moments_bytea(st, 2));
		nulls[3] = nulls[4] = ' ';
	}
	values[5] = Int32GetDatum(st->epoch_base + st->epochs_done);
	pepnet_spi_connect();
	if (SPI_execute_with_args("INSERT INTO pepnet.optimizer_state (name, version, steps, adam_m, adam_v, epochs) "
							  "VALUES ($1, $2, $3, $4, $5, $6)", 6, argtypes, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not store the optimizer state of \"%s\" version %d", st->name, version);
	SPI_finish();
	if (chunked)
	{
		int			which;

		for (which = 1; which <= 2; which++)
		{
			PnModel		mm = *st->model;

			mm.data = pn_trainer_moment(st->trainer, which);
			mm.borrowed = true;
			moments_layout(&mm);
			pepnet_write_moment_chunks(st->name, version, which, &mm);
		}
	}
	else
	{
		pfree(DatumGetPointer(values[3]));
		pfree(DatumGetPointer(values[4]));
	}
}

/* Read a moments blob into the trainer's moment array; false if it does not fit the model */
static bool
moments_read(TrainState *st, int which, bytea *b)
{
	PnModel		mm = *st->model;
	PnError		err = {0};

	mm.data = pn_trainer_moment(st->trainer, which);
	mm.borrowed = false;		/* copy into mm.data (mm is never freed) */
	moments_layout(&mm);
	return pn_safetensors_read(&mm, (const uint8_t *) VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b), &err) == PN_OK;
}

/* Resume Adam from the state stored with the parent version; returns the steps resumed (0: fresh) */
static int64
optimizer_load(TrainState *st)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	int64		steps = 0;

	if (st->parent <= 0 || !optimizer_table_exists())
		return 0;
	values[0] = CStringGetTextDatum(st->name);
	values[1] = Int32GetDatum(st->parent);
	pepnet_spi_connect();
	if (SPI_execute_with_args("SELECT steps, adam_m, adam_v, epochs FROM pepnet.optimizer_state "
							  "WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
							  2, argtypes, values, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the optimizer state of \"%s\" version %d", st->name, st->parent);
	if (SPI_processed == 1)
	{
		bool		n1,
					n2,
					n3;
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	td = SPI_tuptable->tupdesc;
		Datum		s = SPI_getbinval(tup, td, 1, &n1);
		Datum		m = SPI_getbinval(tup, td, 2, &n2);
		Datum		v = SPI_getbinval(tup, td, 3, &n3);

		bool		n4;
		Datum		e = SPI_getbinval(tup, td, 4, &n4);

		if (!n1 && n2 && n3 && pepnet_optimizer_chunked())
		{
			/* the moments in chunks (chunks.c), read into the trainer's moment arrays */
			PnModel		mm1 = *st->model,
						mm2 = *st->model;

			mm1.data = pn_trainer_moment(st->trainer, 1);
			mm1.borrowed = false;	/* copy into mm.data (mm is never freed) */
			mm2.data = pn_trainer_moment(st->trainer, 2);
			mm2.borrowed = false;
			moments_layout(&mm1);
			moments_layout(&mm2);
			n2 = n3 = !(pepnet_read_moment_chunks(st->name, st->parent, 1, &mm1) &&
						pepnet_read_moment_chunks(st->name, st->parent, 2, &mm2));
			m = v = (Datum) 0;
		}
		if (!n1 && !n2 && !n3 &&
			(m == (Datum) 0 ||
			 (moments_read(st, 1, DatumGetByteaPP(m)) && moments_read(st, 2, DatumGetByteaPP(v)))))
		{
			steps = DatumGetInt64(s);
			st->epoch_base = n4 ? 0 : DatumGetInt32(e);
		}
		else
		{
			/* unusable state: start Adam afresh rather than from half-read moments */
			size_t		bytes = sizeof(float) * (size_t) st->model->total;

			memset(pn_trainer_moment(st->trainer, 1), 0, bytes);
			memset(pn_trainer_moment(st->trainer, 2), 0, bytes);
			ereport(WARNING,
					(errmsg("the optimizer state of model \"%s\" version %d does not fit the model; Adam starts afresh",
							st->name, st->parent)));
		}
	}
	SPI_finish();
	pn_trainer_set_steps(st->trainer, steps);
	return steps;
}

/* A number member of a jsonb object, or def when absent */
static double
sched_num(Jsonb *jb, const char *key, double def, double lo, double hi)
{
	JsonbValue	k,
			   *v;

	k.type = jbvString;
	k.val.string.val = (char *) key;
	k.val.string.len = strlen(key);
	v = findJsonbValueFromContainer(&jb->root, JB_FOBJECT, &k);
	if (v == NULL || v->type == jbvNull)
		return def;
	if (v->type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule key \"%s\" must be a number", key)));
	{
		double		d = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric)));

		if (!(d >= lo && d <= hi))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("lr_schedule key \"%s\" must be between %g and %g, got %g", key, lo, hi, d)));
		return d;
	}
}

/* Parse lr_schedule {"warmup_steps", "decay": "none"|"cosine"|"step", "decay_steps", "gamma", "min_lr"} */
static void
schedule_parse(TrainState *st, Jsonb *jb)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *decay = "none";

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule must be a JSON object"),
				 errhint("E.g. '{\"warmup_steps\": 500, \"decay\": \"cosine\", \"decay_steps\": 20000, \"min_lr\": 1e-5}'.")));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
		if (tok == WJB_KEY)
		{
			char	   *key = pnstrdup(v.val.string.val, v.val.string.len);

			if (strcmp(key, "warmup_steps") != 0 && strcmp(key, "decay") != 0 && strcmp(key, "decay_steps") != 0 &&
				strcmp(key, "gamma") != 0 && strcmp(key, "min_lr") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("lr_schedule has unknown key \"%s\"", key),
						 errhint("Known keys: warmup_steps, decay (none, cosine, step), decay_steps, gamma, min_lr.")));
			tok = JsonbIteratorNext(&it, &v, true);
			if (strcmp(key, "decay") == 0)
			{
				if (v.type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("lr_schedule \"decay\" must be \"none\", \"cosine\" or \"step\"")));
				decay = pnstrdup(v.val.string.val, v.val.string.len);
			}
		}
	st->warmup_steps = (int64) sched_num(jb, "warmup_steps", 0, 0, 1e12);
	st->decay_steps = (int64) sched_num(jb, "decay_steps", 0, 0, 1e12);
	st->decay_gamma = sched_num(jb, "gamma", 0.1, 1e-9, 1);
	st->min_lr = sched_num(jb, "min_lr", 0, 0, st->base_lr);
	if (strcmp(decay, "none") == 0)
		st->decay = SCHED_NONE;
	else if (strcmp(decay, "cosine") == 0)
		st->decay = SCHED_COSINE;
	else if (strcmp(decay, "step") == 0)
		st->decay = SCHED_STEP;
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule \"decay\" must be \"none\", \"cosine\" or \"step\", got \"%s\"", decay)));
	if (st->decay != SCHED_NONE && st->decay_steps < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lr_schedule with decay \"%s\" needs \"decay_steps\" of at least 1", decay),
				 errhint("cosine: steps after the warm-up to reach min_lr; step: steps between multiplications by gamma.")));
}

/*
 * pepnet._train_setup(data, validation, lr_schedule, negative_rate): after
 * _train_begin and before the first epoch: check the data and validation
 * queries (columns, types; the validation query must return rows), set
 * the learning-rate schedule and the negative down-sampling rate, and
 * resume Adam from the state stored with the version trained from.
 * Returns jsonb {resumed_steps}.
 */
Datum
pepnet_train_setup(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	PnConfig   *c;
	int64		resumed;

	if (PG_ARGISNULL(0))
		pepnet_null_arg("data query");
	train_resolve_inputs(st, text_to_cstring(PG_GETARG_TEXT_PP(0)));
	c = &st->model->cfg;
	/* the rights to store what training makes, before any work */
	{
		Oid			ns = get_namespace_oid("pepnet", false);
		Oid			models = get_relname_relid("models", ns);
		Oid			opt = get_relname_relid("optimizer_state", ns);
		AclResult	acl;

		if (!OidIsValid(models) || !OidIsValid(opt))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_TABLE),
					 errmsg("pepnet's tables are missing"),
					 errhint("Run ALTER EXTENSION pepnet UPDATE.")));
		acl = pg_class_aclcheck(models, GetUserId(), ACL_INSERT);
		if (acl != ACLCHECK_OK)
			aclcheck_error(acl, OBJECT_TABLE, "models");
		acl = pg_class_aclcheck(opt, GetUserId(), ACL_INSERT | ACL_SELECT);
		if (acl != ACLCHECK_OK)
			aclcheck_error(acl, OBJECT_TABLE, "optimizer_state");
	}
	pepnet_spi_connect();
	reader_check(text_to_cstring(PG_GETARG_TEXT_PP(0)), c, "data", false);
	/* the id kinds a new named config lacks, from the data query: the validation query must agree */
	reader_fill_ids(text_to_cstring(PG_GETARG_TEXT_PP(0)), &st->model->cfg);
	/* z-scored dense fields without stored statistics: one read of the data query, kept in the version */
	/* and min_count fields' vocabularies, in the same read: the model is made again with them */
	train_data_stats(st, text_to_cstring(PG_GETARG_TEXT_PP(0)));
	c = &st->model->cfg;
	if (!PG_ARGISNULL(1))
		reader_check(text_to_cstring(PG_GETARG_TEXT_PP(1)), c, "validation", true);
	SPI_finish();
	if (!PG_ARGISNULL(2))
		schedule_parse(st, PG_GETARG_JSONB_P(2));
	if (!PG_ARGISNULL(3))
	{
		ArrayType  *a = PG_GETARG_ARRAYTYPE_P(3);
		Datum	   *el;
		bool	   *nulls;
		int			n,
					d;
		float	   *w;

		if (ARR_NDIM(a) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("negative_rate must be a 1-D array")));
		deconstruct_array(a, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &el, &nulls, &n);
		if (n != 1 && n != c->domains)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("negative_rate has %d elements: give one rate for every domain or %d, one per domain",
							n, c->domains)));
		w = MemoryContextAlloc(st->cxt, sizeof(float) * c->domains);
		for (d = 0; d < c->domains; d++)
		{
			double		v;

			if (nulls[n == 1 ? 0 : d])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("negative_rate must not contain NULL")));
			v = DatumGetFloat8(el[n == 1 ? 0 : d]);
			if (!(v > 0 && v <= 1))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("negative_rate must be in (0, 1], the share of negatives kept; got %g", v)));
			w[d] = (float) v;
		}
		if (c->neg_rate)
			pfree(c->neg_rate);
		c->neg_rate = w;
	}
	/* selection: "logloss" | "auc" | "pcoc", optionally ":task" (default the first task) */
	{
		char	   *sel = PG_ARGISNULL(4) ? pstrdup("logloss") : text_to_cstring(PG_GETARG_TEXT_PP(4));
		char	   *colon = strchr(sel, ':');
		const char *task = c->tasks[0];
		int			t;

		if (colon)
		{
			*colon = '\0';
			task = colon + 1;
			for (t = 0; t < c->ntasks; t++)
				if (strcmp(c->tasks[t], task) == 0)
					break;
			if (t == c->ntasks)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("selection names task \"%s\", which the model does not have", task),
						 errhint("The model's tasks are in its config; the first is \"%s\".", c->tasks[0])));
		}
		if (strcmp(sel, "logloss") != 0 && strcmp(sel, "auc") != 0 && strcmp(sel, "pcoc") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("selection must be logloss, auc or pcoc, optionally followed by :task, got \"%s\"",
							sel),
					 errhint("logloss: lowest wins; auc: highest wins; pcoc: closest to 1 wins.")));
		resumed = optimizer_load(st);
		{
			StringInfoData o;

			initStringInfo(&o);
			appendStringInfo(&o, "{\"resumed_steps\": %lld, \"selection\": {\"metric\": \"%s\", \"task\": ",
							 (long long) resumed, sel);
			escape_json(&o, task);
			appendStringInfoString(&o, "}}");
			PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(o.data)));
		}
	}
}

/* pepnet._train_save(metrics): store the trainer's weights as a new version */
Datum
pepnet_train_save(PG_FUNCTION_ARGS)
{
	TrainState *st = train_get();
	Jsonb	   *metrics = PG_GETARG_JSONB_P(0);
	char	   *mj = JsonbToCString(NULL, &metrics->root, VARSIZE(metrics));
	int32		version;
	int			x;

	/* never store what the loader would refuse (training checks each step; this is the last guard) */
	for (x = 0; x < PN_NFLOAT(train_model(st)); x++)
	{
		const float *p = PN_T(st->model, x);
		int64		q;

		for (q = 0; q < st->model->tensors[x].numel; q++)
			if (!isfinite(p[q]))
				ereport(ERROR,
						(errcode(ERRCODE_FLOATING_POINT_EXCEPTION),
						 errmsg("training diverged: tensor \"%s\" holds a non-finite value, the version is not stored",
								st->model->tensors[x].name),
						 errhint("Scale dense values or lower the learning rate; earlier epochs' versions are kept.")));
	}
	version = pepnet_store_model(st->name, st->model, mj, st->parent);
	st->parent = version;
	optimizer_save(st, version);
	PG_RETURN_INT32(version);
}

/*
 * pepnet._train_check(name, config, seed, lr, batch_size): what
 * _train_begin checks of a config (the config's errors, the model's size,
 * the rights to store versions), the trainer made and freed at once.
 * Callable in a subtransaction (a grid checks each run's config in an
 * exception block, to name the run in the error): nothing is trained.
 */
Datum
pepnet_train_check(PG_FUNCTION_ARGS)
{
	train_checking = true;
	PG_TRY();
	{
		(void) pepnet_train_begin(fcinfo);
	}
	PG_FINALLY();
	{
		train_checking = false;
	}
	PG_END_TRY();
	train_free();
	PG_RETURN_VOID();
}

/* pepnet._train_end(): release the trainer */
Datum
pepnet_train_end(PG_FUNCTION_ARGS)
{
	train_free();
	PG_RETURN_VOID();
}

