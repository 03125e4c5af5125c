#!/bin/bash
# The int8 matmul (qgemm.c) against the fp32 row-wise matmul of the engine's fallback
# (src/core/infer.c pn_gemm_rows), single thread, same process: checks first, then rates.
#   bench/qgemm/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CORE="src/core/infer.c src/core/alloc.c src/core/config.c src/core/json.c src/core/model.c src/core/textid.c src/core/bag.c src/core/plan.c"
cc -std=gnu99 -O3 -fno-math-errno -fno-trapping-math -Wall -Isrc/core -Ibench/qgemm -o /tmp/pn_test_qgemm \
	bench/qgemm/test_qgemm.c bench/qgemm/qgemm.c src/core/alloc.c src/core/config.c src/core/json.c -lm
/tmp/pn_test_qgemm
cc -std=gnu99 -O3 -fno-math-errno -fno-trapping-math -Wall -Isrc/core -Ibench/qgemm -o /tmp/pn_qgemm_rate \
	bench/qgemm/qgemm_rate.c bench/qgemm/qgemm.c $CORE -lopenblas -lm
grep -m1 'model name' /proc/cpuinfo
grep -o -w -E 'avx512_vnni|avx_vnni|avx512f|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ' || true; echo "(the VNNI, AVX-512 and AMX flags of this CPU)"
/tmp/pn_qgemm_rate
