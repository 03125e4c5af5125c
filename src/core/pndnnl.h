/*
 * pndnnl.h
 *		The core's one use of oneDNN's process-wide objects (internal to the
 *		core, dnnl.c): the CPU engine and stream, thread pinning, and the
 *		brgemm-only filter of matmul primitives, shared by the scoring
 *		engine (engine.c) and the trainer (train.c).
 */
#ifndef PN_DNNL_H
#define PN_DNNL_H

#include "pncore.h"

#include <stdbool.h>

#include <oneapi/dnnl/dnnl.h>

/* the CPU engine and its stream, NULL until pn_dnnl_init succeeds */
extern dnnl_engine_t pn_dnnl_engine;
extern dnnl_stream_t pn_dnnl_stream;

/* oneDNN runs on OpenMP: one thread in this process (a backend) */
void		pn_dnnl_pin_threads(void);

/*
 * Make the engine and stream on first use in this process (never in the
 * postmaster: callers make them when they first build a primitive), with
 * one OpenMP thread and a small primitive cache.
 */
int			pn_dnnl_init(PnError *err);

/*
 * Whether oneDNN chose a brgemm kernel for the matmul of pd (*impl: the
 * name of the implementation it chose, NULL if none).  Only brgemm is used:
 * oneDNN's other matmul, gemm:jit (e.g. on a CPU without AVX-512), runs the
 * sgemm code that corrupted the backend's heap under load (AVX2, see
 * BENCHMARKS.md); the callers fall back (GEMV in engine.c, OpenBLAS in
 * train.c).
 */
bool		pn_dnnl_is_brgemm(const_dnnl_primitive_desc_t pd, const char **impl);
/*
 * Tests only (test_core --any-matmul): take any oneDNN matmul implementation,
 * so that the engine's oneDNN tiles and the trainer's primitives run on a
 * CPU without brgemm kernels (never set in the server: its gemm:jit kernels
 * corrupted the heap under load)
 */
extern bool pn_dnnl_any_impl;

#endif							/* PN_DNNL_H */
