/*
 * pninternal.h
 *		Helpers shared inside the numeric core (not part of its interface):
 *		the logistic function in double, relu, row fills, the widest tower
 *		layer, PN's epsilon, a dot product summed in a fixed order, and the
 *		checked slot lookup that words the out-of-range-id error once; and
 *		the layer plan (plan.h).
 */
#ifndef PN_INTERNAL_H
#define PN_INTERNAL_H

#include "pncore.h"
#include "plan.h"
#include "vmath.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* the epsilon of Partitioned Normalization (PN, docs/model.md step 4) */
#define PN_PARTNORM_EPS 1e-5

/* a pointer rounded up to 64 bytes (allocations of size + 64) */
#define PN_ALIGN64(p) ((void *) (((uintptr_t) (p) + 63) & ~(uintptr_t) 63))

/* numerically safe logistic function, double */
static inline double
pn_sigmoidd(double v)
{
	if (v >= 0)
		return 1.0 / (1.0 + exp(-v));
	else
	{
		double		e = exp(v);

		return e / (1.0 + e);
	}
}

/* widest tower layer (at least 1) */
static inline int
pn_max_hidden(const PnConfig *c)
{
	int			i,
				h = 1;

	for (i = 0; i < c->nhidden; i++)
		if (c->hidden[i] > h)
			h = c->hidden[i];
	return h;
}

/* Y [n, cols] = bias broadcast over rows */
static inline void
pn_fill_rows(float *Y, int n, int cols, const float *bias)
{
	int			r;

	for (r = 0; r < n; r++)
		memcpy(Y + (size_t) r * cols, bias, sizeof(float) * cols);
}

/*
 * a . b over n floats, summed in an order that depends on n only (16
 * partial sums, then the tail, then the partial sums in index order), so
 * that equal inputs give equal results wherever they are; vectorizes.
 */
static inline float
pn_dot(const float *restrict a, const float *restrict b, int n)
{
	float		acc[16] = {0};
	float		s = 0.0f;
	int			i = 0,
				j;

	for (; i + 16 <= n; i += 16)
		for (j = 0; j < 16; j++)
			acc[j] += a[i + j] * b[i + j];
	for (; i < n; i++)
		s += a[i] * b[i];
	for (j = 0; j < 16; j++)
		s += acc[j];
	return s;
}

/*
 * PN_EINPUT for a logit that left float32 (NaN) at row `row`: too large
 * dense values, or (a model without dense fields too) weights near
 * float32's limits
 */
static inline int
pn_overflow_error(const PnConfig *c, int64_t row, PnError *err)
{
	pn_seterr(err, PN_EINPUT, "score overflowed float32");
	if (c->dense > 0)
		pn_setdetail(err, "The dense values or the version's weights are too large in magnitude; "
					 "scale dense features to a sensible range, or check the weights (pepnet_export).");
	else
		pn_setdetail(err, "The version's weights are too large in magnitude (this model has no dense features); "
					 "check them (pepnet_export).");
	err->row = row;
	return PN_EINPUT;
}

/*
 * The embedding row of id in field f (index i of a list named `what`,
 * "feature" or "persona"); -1 with err set when a non-hashed id is out of
 * range.
 */
static inline int64_t
pn_slot_checked(const PnField *f, int i, int64_t id, const char *what, PnError *err)
{
	int64_t		s = pn_slot(f, i, id);

	if (s < 0)
	{
		pn_seterr(err, PN_EINPUT, "%s id %lld of field \"%s\" is out of range", what, (long long) id, f->name);
		pn_setdetail(err, "Field \"%s\" is not hashed: ids must be in [0, %lld).", f->name, (long long) f->buckets);
	}
	return s;
}

/*
 * x0 [n, n0] of n candidates (infer.c); fbag [F]: the multi-valued feature
 * fields' bags of the n rows, NULL when none
 */
int			pn_gather_x0(const PnModel *m, int n, const int64_t *features, const PnBag *fbag,
						 const float *dense, float *x0, PnError *err);

/* the factor of each id's weight in row r of a multi-valued field's bag, 0: the empty row (bag.c) */
float		pn_bag_scale(const PnField *f, const PnBag *bag, int64_t r);
/* with domain_input, the domain embedding dv into the last k columns of x0 [n, n0] (infer.c) */
void		pn_x0_domain(const PnModel *m, int domain, int n, float *x0);

/*
 * int8 scoring (quant.c; the arithmetic is written out at its top and in
 * docs/model.md "int8 scoring").  Fallback layout: int16 lanes, rows
 * padded with zeros to PN_Q8_KP(K); packed weights of pn_q8_bytes(N, K)
 * bytes (64-byte aligned): sw [N], then the values.
 */
#define PN_Q8_KP(K) (((K) + 15) & ~15)
#define PN_Q8_MAX_K 65536		/* K * 255 * 127 fits an int32 (u8 inputs) */
typedef struct PnQ8Work
{
	int16_t    *qa;				/* [M, Kp] the quantized input rows */
	float	   *sa;				/* [M] their scales */
	int32_t    *acc;			/* [M, N] */
} PnQ8Work;
extern bool pn_q8_portable;		/* tests: portable C where AVX2 exists */
float		pn_q8_scale(const float *x, int n, bool u8, float *inv);
void		pn_q8_rows16(int M, int K, const float *A, int lda, bool u8, int16_t *qa, float *sa);
void		pn_q8_rows8(int M, int K, const float *A, int lda, bool u8, void *q, int ldq, float *sa);
size_t		pn_q8_bytes(int N, int K);
void		pn_q8_pack(int N, int K, const float *W, int ldw, void *out);
const float *pn_q8_sw(const void *wq);
void		pn_q8_gemm(int M, int N, int K, const int16_t *qa, const void *wq, int32_t *acc, int ldacc);
void		pn_q8_epilogue(int M, int N, const int32_t *acc, int ldacc, const float *sa, const float *sw,
						   const float *bias, float *C, int ldc, int epi, float gamma, const float *X, int ldx);
void		pn_q8_layer(int M, int N, int K, const float *A, int lda, bool u8, const void *wq, const float *bias,
						float *C, int ldc, int epi, float gamma, const float *X, int ldx, PnQ8Work *ws);

#endif							/* PN_INTERNAL_H */
