#!/bin/bash
# The int8 layer of the engine's fallback (src/core/quant.c pn_q8_layer) against its fp32 layer
# (src/core/gemm.c pn_gemm_panels), single thread, same process.  The int8 arithmetic is checked
# by the unit tests (make unittest).
#   bench/qgemm/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cc -std=gnu11 -O3 -fno-math-errno -fno-trapping-math -Wall -Isrc/core -o /tmp/pn_qgemm_rate \
	bench/qgemm/qgemm_rate.c src/core/quant.c src/core/gemm.c src/core/infer.c src/core/alloc.c src/core/config.c \
	src/core/json.c src/core/model.c src/core/textid.c src/core/bag.c src/core/plan.c -lopenblas -lm
grep -m1 'model name' /proc/cpuinfo
grep -o -w -E 'avx512_vnni|avx_vnni|avx512f|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ' || true; echo "(the VNNI, AVX-512 and AMX flags of this CPU)"
/tmp/pn_qgemm_rate
