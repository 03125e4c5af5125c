/*
 * progress.c
 *		Training progress in shared memory: each backend running CALL
 *		pepnet_train publishes model, epoch of epochs, rows, rows/s, loss,
 *		the last validation figures and an ETA in its own slot (one per
 *		backend, MaxBackends slots, indexed by MyBackendId, so no slot is
 *		ever looked for or contended); pepnet_training_progress() and the
 *		view pepnet.training_progress read them from any session.
 *
 * A slot is released when the trainer is (training.c's train_free: the end
 * of pepnet_train, an ERROR or cancel aborting it, the next training), and
 * when the backend exits (before_shmem_exit).  A backend killed by a signal
 * makes the postmaster restart and re-create shared memory: no slot stays.
 * On every server, with or without shared_preload_libraries = 'pepnet', the
 * training backend's pg_stat_activity.query shows the progress (at most once
 * a second): 'CALL pepnet_train -- "m": epoch 2 of 3, 4200 rows, loss
 * 0.41234, 2100 rows/s' and the statement on the next line; without preload
 * the view pepnet.training_progress reads its rows from there.
 */
#include "pepshm.h"

#include <math.h>

#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "catalog/pg_authid.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"

typedef struct ProgressSlot
{
	slock_t		mutex;
	bool		active;
	int			pid;
	Oid			userid;
	Oid			dbid;
	char		name[PEPNET_NAMELEN];
	int32		parent;			/* version trained from, 0 for none */
	int			epoch;			/* current (1-based), 0 before the first */
	int			epochs;			/* planned, 0 when unknown */
	int64		rows;			/* rows of the current epoch done */
	int64		rows_total;		/* rows done over all epochs */
	int64		epoch_rows;		/* rows of one epoch, known after the first (else -1) */
	double		loss;			/* mean training loss of the current epoch so far */
	double		val_logloss;	/* last validation, NaN before */
	double		val_auc;
	int			val_epoch;
	TimestampTz started_at;
	TimestampTz epoch_started_at;
	TimestampTz updated_at;
} ProgressSlot;

/*
 * This backend's training as pg_stat_activity shows it (kept without shared
 * memory): the model, epochs planned, the epoch's start and the last report.
 */
static struct
{
	bool		active;
	char		name[PEPNET_NAMELEN];
	int			epochs;
	int			epoch;
	TimestampTz epoch_started_at;
	TimestampTz reported_at;
} local;

static ProgressSlot *slots = NULL;
static int	nslots = 0;
static bool exit_registered = false;

PG_FUNCTION_INFO_V1(pepnet_training_progress);
PG_FUNCTION_INFO_V1(pepnet_progress_plan_sql);

Size
pepnet_progress_shmem_size(void)
{
	return mul_size(MaxBackends, sizeof(ProgressSlot));
}

void
pepnet_progress_shmem_init(void *p, bool found)
{
	int			i;

	slots = (ProgressSlot *) p;
	nslots = MaxBackends;
	if (found)
		return;
	memset(p, 0, pepnet_progress_shmem_size());
	for (i = 0; i < nslots; i++)
		SpinLockInit(&slots[i].mutex);
}

/* This backend's slot, or NULL without preload */
static ProgressSlot *
my_slot(void)
{
	if (slots == NULL || !pepnet_shmem_ready() || MyBackendId < 1 || MyBackendId > nslots)
		return NULL;
	return &slots[MyBackendId - 1];
}

/*
 * Show the training in pg_stat_activity.query: a line of progress, then the
 * statement running (what it showed before); what is NULL for the epoch's
 * figures.  At most once a second unless force.
 */
static void
report_activity(const char *what, int64 rows, double loss, bool force)
{
	TimestampTz now = GetCurrentTimestamp();
	StringInfoData buf;
	double		secs;

	if (!local.active || !pgstat_track_activities || proc_exit_inprogress)
		return;
	if (!force && now - local.reported_at < USECS_PER_SEC)
		return;
	local.reported_at = now;
	initStringInfo(&buf);
	appendStringInfo(&buf, "CALL pepnet_train -- \"%s\": epoch %d of ", local.name, Max(local.epoch, 1));
	if (local.epochs > 0)
		appendStringInfo(&buf, "%d", local.epochs);
	else
		appendStringInfoChar(&buf, '?');
	if (what)
		appendStringInfo(&buf, ", %s", what);
	else
	{
		secs = (double) (now - local.epoch_started_at) / USECS_PER_SEC;
		appendStringInfo(&buf, ", %lld rows, loss %.5f, %.0f rows/s", (long long) rows, loss,
						 secs > 0 ? rows / secs : 0.0);
	}
	if (debug_query_string)
		appendStringInfo(&buf, "\n%s", debug_query_string);
	pgstat_report_activity(STATE_RUNNING, buf.data);
	pfree(buf.data);
}

static void
progress_exit(int code, Datum arg)
{
	pepnet_progress_end();
}

/* A training starts: occupy this backend's slot */
void
pepnet_progress_start(const char *name, int32 parent)
{
	ProgressSlot *s = my_slot();
	TimestampTz now = GetCurrentTimestamp();

	local.active = true;
	strlcpy(local.name, name, PEPNET_NAMELEN);
	local.epochs = 0;
	local.epoch = 0;
	local.epoch_started_at = now;
	report_activity("reading the data query", 0, 0, true);
	if (s == NULL)
		return;
	if (!exit_registered)
	{
		before_shmem_exit(progress_exit, (Datum) 0);
		exit_registered = true;
	}
	SpinLockAcquire(&s->mutex);
	s->active = true;
	s->pid = MyProcPid;
	s->userid = GetUserId();
	s->dbid = MyDatabaseId;
	strlcpy(s->name, name, PEPNET_NAMELEN);
	s->parent = parent;
	s->epoch = 0;
	s->epochs = 0;
	s->rows = s->rows_total = 0;
	s->epoch_rows = -1;
	s->loss = NAN;
	s->val_logloss = s->val_auc = NAN;
	s->val_epoch = 0;
	s->started_at = s->epoch_started_at = s->updated_at = now;
	SpinLockRelease(&s->mutex);
}

/* The number of epochs planned (from pepnet_train) */
void
pepnet_progress_plan(int epochs)
{
	ProgressSlot *s = my_slot();

	local.epochs = epochs;
	report_activity("reading the data query", 0, 0, true);
	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	if (s->active && s->pid == MyProcPid)
		s->epochs = epochs;
	SpinLockRelease(&s->mutex);
}

/* After each optimiser step: rows of the epoch so far and its mean loss */
void
pepnet_progress_step(int epoch, int64 rows, double loss)
{
	ProgressSlot *s = my_slot();
	TimestampTz now;

	if (epoch != local.epoch)
	{
		local.epoch = epoch;
		local.epoch_started_at = GetCurrentTimestamp();
	}
	report_activity(NULL, rows, loss, false);
	if (s == NULL || !s->active)
		return;
	now = GetCurrentTimestamp();
	SpinLockAcquire(&s->mutex);
	if (epoch != s->epoch)
	{
		s->epoch = epoch;
		s->epoch_started_at = now;
		s->rows = 0;
	}
	s->rows_total += rows - s->rows;
	s->rows = rows;
	s->loss = loss;
	s->updated_at = now;
	SpinLockRelease(&s->mutex);
}

/* An epoch read all rows: the size of an epoch is now known */
void
pepnet_progress_epoch_done(int epoch, int64 rows)
{
	ProgressSlot *s = my_slot();

	report_activity("validating and storing the version", rows, 0, true);
	if (s == NULL || !s->active)
		return;
	SpinLockAcquire(&s->mutex);
	s->epoch_rows = rows;
	SpinLockRelease(&s->mutex);
}

/* The validation figures (first task, all domains) after an epoch */
void
pepnet_progress_validation(double logloss, double auc)
{
	ProgressSlot *s = my_slot();

	if (s == NULL || !s->active)
		return;
	SpinLockAcquire(&s->mutex);
	s->val_logloss = logloss;
	s->val_auc = auc;
	s->val_epoch = s->epoch;
	SpinLockRelease(&s->mutex);
}

/* The training ended (done, failed, cancelled) or the backend exits: free the slot */
void
pepnet_progress_end(void)
{
	ProgressSlot *s = my_slot();

	if (local.active)
	{
		local.active = false;
		/* the statement alone again (the next statement reports its own) */
		if (pgstat_track_activities && !proc_exit_inprogress && debug_query_string)
			pgstat_report_activity(STATE_RUNNING, debug_query_string);
	}
	if (s == NULL)
		return;
	SpinLockAcquire(&s->mutex);
	s->active = false;
	s->pid = 0;
	SpinLockRelease(&s->mutex);
}

/* pepnet._progress_plan(epochs): called by pepnet_train after _train_begin */
Datum
pepnet_progress_plan_sql(PG_FUNCTION_ARGS)
{
	pepnet_progress_plan(PG_GETARG_INT32(0));
	PG_RETURN_VOID();
}

/*
 * pepnet_training_progress(): one row per running training.  Roles see
 * every training's pid and database; model and figures only of trainings
 * by roles whose privileges they have, or with pg_read_all_stats (as
 * pg_stat_activity shows queries).
 */
Datum
pepnet_training_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;
	TimestampTz now = GetCurrentTimestamp();
	bool		all_stats;

	InitMaterializedSRF(fcinfo, 0);
	if (slots == NULL || !pepnet_shmem_ready())
		return (Datum) 0;
	all_stats = has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	for (i = 0; i < nslots; i++)
	{
		ProgressSlot s;
		Datum		values[16];
		bool		nulls[16];
		double		secs,
					rate;

		if (!slots[i].active)
			continue;
		SpinLockAcquire(&slots[i].mutex);
		s = slots[i];
		SpinLockRelease(&slots[i].mutex);
		if (!s.active)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(s.pid);
		values[1] = ObjectIdGetDatum(s.dbid);
		if (!all_stats && !has_privs_of_role(GetUserId(), s.userid))
		{
			int			k;

			for (k = 2; k < 16; k++)
				nulls[k] = true;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			continue;
		}
		secs = (double) (now - s.epoch_started_at) / USECS_PER_SEC;
		rate = s.rows > 0 && secs > 0 ? (double) s.rows / secs : NAN;
		values[2] = CStringGetTextDatum(s.name);
		values[3] = Int32GetDatum(s.parent);
		nulls[3] = s.parent == 0;
		values[4] = Int32GetDatum(s.epoch);
		values[5] = Int32GetDatum(s.epochs);
		nulls[5] = s.epochs == 0;
		values[6] = Int64GetDatum(s.rows);
		values[7] = Int64GetDatum(s.epoch_rows);
		nulls[7] = s.epoch_rows < 0;
		values[8] = Int64GetDatum(s.rows_total);
		values[9] = Float8GetDatum(rate);
		nulls[9] = isnan(rate);
		values[10] = Float8GetDatum(s.loss);
		nulls[10] = isnan(s.loss);
		values[11] = Float8GetDatum(s.val_logloss);
		nulls[11] = isnan(s.val_logloss);
		values[12] = Float8GetDatum(s.val_auc);
		nulls[12] = isnan(s.val_auc);
		values[13] = TimestampTzGetDatum(s.started_at);
		values[14] = TimestampTzGetDatum(s.updated_at);
		/* ETA: rows left at this epoch's rate, once an epoch's size is known */
		nulls[15] = true;
		if (s.epoch_rows > 0 && s.epochs > 0 && !isnan(rate) && rate > 0)
		{
			double		left = (double) (s.epochs - s.epoch) * s.epoch_rows + Max(s.epoch_rows - s.rows, 0);

			values[15] = TimestampTzGetDatum(now + (TimestampTz) (left / rate * USECS_PER_SEC));
			nulls[15] = false;
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
