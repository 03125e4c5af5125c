/*
 * metrics.h
 *		Metrics of labelled predictions and their JSON (metrics.c), and the
 *		evaluation of a model on a labelled query (evaluate.c).
 *		Internal to the glue; the core's API is pncore.h.
 */
#ifndef PEPNET_METRICS_H
#define PEPNET_METRICS_H

#include "pepnet.h"

#include "lib/stringinfo.h"

/* one labeled prediction */
typedef struct Pred
{
	int32		domain;
	int32		task;
	float		logit;
	float		label;
} Pred;

/* one (domain, task) result; domain -1 = all domains */
typedef struct Metric
{
	int32		domain;
	int32		task;
	int64		rows;
	double		auc;
	double		logloss;
	double		mean_p;			/* mean predicted probability */
	double		rate;			/* mean label (actual rate) */
} Metric;

/* metrics.c */
extern Metric *metrics_compute(Pred *preds, int64 npred, int *nmetrics);
extern char *metrics_json(const Metric *ms, int nm, const PnConfig *c);

/* evaluate.c */
extern Metric *evaluate(PnModel *m, const char *query, const char *what, int *nmetrics);
extern Metric *evaluate_rows(PnModel *m, const char *query, const char *what, int precision, int *nmetrics,
							  uint64 *data_hash);

#endif							/* PEPNET_METRICS_H */
