/* ref_forward.h: the unfused double-precision reference forward (test only) */
#ifndef PN_REF_FORWARD_H
#define PN_REF_FORWARD_H
#include "pncore.h"

/* logits [T] of one example, following docs/model.md literally */
int			pn_forward_ref(const PnModel *m, int domain, const int64_t *persona,
						   const int64_t *features, const float *dense,
						   double *logits, PnError *err);
#endif
