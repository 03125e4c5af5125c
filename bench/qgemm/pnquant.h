/*
 * pnquant.h
 *		An int8 matmul for scoring, measured against the fp32 row-wise
 *		matmul of the engine's fallback (bench/qgemm/run.sh; BENCHMARKS.md
 *		"int8 on a CPU without VNNI"); not part of the extension's build.
 *		Weights quantized per output
 *		channel once, activations quantized per row at each call (dynamic
 *		quantization, as ONNX Runtime's MatMulInteger path does), products
 *		summed exactly in int32.
 *
 * Symmetric quantization to [-127, 127]:
 *   weights      sw[n] = max_k |W[n,k]| / 127,  qw[n,k] = round(W[n,k] / sw[n])
 *   activations  sa[m] = max_k |A[m,k]| / 127,  qa[m,k] = round(A[m,k] / sa[m])
 *   C[m,n] += (float) (sum_k qa[m,k] qw[n,k]) * (sa[m] * sw[n])
 * (a zero row or channel has scale 0 and contributes 0).  The integer sum is
 * exact, so a row's result does not depend on which rows share its call or
 * its place among them: identical candidates get identical scores
 * wherever they stand.  Values are held in int16 lanes (AVX2's
 * vpmaddwd multiplies 16 pairs per instruction, twice the fp32 FMA's 8);
 * K is padded with zeros to a multiple of 16.  K is at most
 * PN_QGEMM_MAX_K, so that a sum of K products of at most 127 * 127 fits
 * an int32.
 *
 * Plain C on src/core's pncore.h (pn_alloc, PnError).
 */
#ifndef PNQUANT_H
#define PNQUANT_H

#include <stdint.h>

#include "pncore.h"

#define PN_QGEMM_MAX_K 131072

/* the padded row length of K values */
#define PN_QGEMM_KP(K) (((K) + 15) & ~15)

/* one weight matrix W [N, K], quantized per output channel n */
typedef struct PnQWeights
{
	int			N,
				K,
				Kp;				/* K rounded up to a multiple of 16 */
	int16_t    *q;				/* [N, Kp] values in [-127, 127], zero padded */
	float	   *scale;			/* [N] sw */
} PnQWeights;

/* quantize W [N, K] (row stride ldw) into *out; PN_ETOOBIG when K > PN_QGEMM_MAX_K */
int			pn_qweights_init(PnQWeights *out, const float *W, int N, int K, int ldw, PnError *err);
void		pn_qweights_free(PnQWeights *q);

/* quantize A [M, K] (row stride lda) per row: qa [M, Kp] (zero padded), sa [M] */
void		pn_quantize_rows(int M, int K, const float *A, int lda, int Kp, int16_t *qa, float *sa);

/*
 * C [M, N] += dequantized (qa [M, Kp] qw [N, Kp]^T), row stride ldc of C;
 * the int16 row stride of qa is w->Kp
 */
void		pn_qgemm_rows(int M, const int16_t *qa, const float *sa, const PnQWeights *w, float *C, int ldc);

/* whether pn_qgemm_rows runs its AVX2 kernel on this CPU (else portable C, same results) */
bool		pn_qgemm_avx2(void);

#endif							/* PNQUANT_H */
