# pepnet: STAR-PEPNet multi-domain CTR models inside PostgreSQL (PGXS build)
EXTENSION = pepnet
EXTVERSION = 0.3.0

MODULE_big = pepnet
CORE_OBJS = src/core/alloc.o src/core/json.o src/core/config.o src/core/model.o src/core/textid.o src/core/infer.o src/core/gemm.o src/core/dnnl.o src/core/engine.o src/core/train.o src/core/evaluate.o src/core/bag.o src/core/plan.o src/core/quant.o
OBJS = src/pepnet.o src/util.o src/fingerprint.o src/models.o src/cache.o src/score.o src/batch.o src/reader.o src/features.o src/score_rows.o src/metrics.o src/evaluate.o \
	src/training.o src/scaleout.o src/shmem.o src/shcache.o src/progress.o src/chunks.o src/transfer.o src/support.o $(CORE_OBJS)
DATA = sql/pepnet--0.1.0.sql sql/pepnet--0.1.0--0.2.0.sql sql/pepnet--0.2.0--0.3.0.sql
# CREATE EXTENSION's scripts of 0.2.0 and 0.3.0: a preamble, then 0.1.0's script and the upgrades,
# as they are (0.2.0's stays installable: upgrade and restore tests create databases at each release)
DATA_built = sql/pepnet--0.2.0.sql sql/pepnet--0.3.0.sql
PGFILEDESC = "pepnet - STAR-PEPNet CTR scoring and training in SQL"

# pg_regress suites (sql/NAME.sql, expected/NAME.out): each runs alone, pg_regress creates the
# extension in its database first (`make installcheck REGRESS=score`)
REGRESS = models score batch errors train train_faults calibration security scaleout shared chunks pinned_plans workflow integrity api_errors deploy_best planning named bags pinned_named baseline vocab parallel_batch persona_reuse retrain_config int8 int8_limits
REGRESS_OPTS = --outputdir=test/results --load-extension=pepnet

# TAP tests (test/t/*.pl on PostgreSQL::Test::Cluster; needs libipc-run-perl): each starts its own
# throwaway clusters from the pg_config on PATH; `make prove_installcheck` (as a user other than
# root: PostgreSQL refuses to run as root), or one file: `make prove_installcheck PROVE_TESTS=test/t/005_upgrade.pl`
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CPPFLAGS = -Isrc/core
PG_CFLAGS = -std=gnu99 -Wno-declaration-after-statement
SHLIB_LINK = -ldnnl -lgomp -lopenblas -lm
EXTRA_CLEAN = test/unit/test_core test/results tmp_check

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/pepnet--0.2.0.sql: sql/pepnet--0.2.0.sql.in sql/pepnet--0.1.0.sql sql/pepnet--0.1.0--0.2.0.sql
	{ cat sql/pepnet--0.2.0.sql.in; sed '/^\\echo /d' sql/pepnet--0.1.0.sql sql/pepnet--0.1.0--0.2.0.sql; } > $@

sql/pepnet--0.3.0.sql: sql/pepnet--0.3.0.sql.in sql/pepnet--0.1.0.sql sql/pepnet--0.1.0--0.2.0.sql sql/pepnet--0.2.0--0.3.0.sql
	{ cat sql/pepnet--0.3.0.sql.in; sed '/^\\echo /d' sql/pepnet--0.1.0.sql sql/pepnet--0.1.0--0.2.0.sql sql/pepnet--0.2.0--0.3.0.sql; } > $@

# After include $(PGXS), so that its "all" stays the default goal (a rule above it would become
# the default and plain `make` would build one object file).
# PGXS tracks no header dependencies: every object depends on the headers
$(OBJS): src/core/pncore.h src/core/vmath.h src/core/pninternal.h src/core/plan.h src/core/pndnnl.h src/pepnet.h src/pepshm.h src/reader.h src/metrics.h src/features.h

# the numeric core's loops (sigmoid, Adam, PN) vectorize at -O3; it never reads errno or FP traps
$(CORE_OBJS): CFLAGS += -O3 -fno-math-errno -fno-trapping-math

# C unit tests of the numeric core: no PostgreSQL involved
CORE_SRC = $(CORE_OBJS:.o=.c)
test/unit/test_core: test/unit/test_core.c test/unit/ref_forward.c $(CORE_SRC) src/core/pncore.h src/core/pninternal.h src/core/plan.h src/core/pndnnl.h
	$(CC) -std=gnu99 -O3 -fno-math-errno -fno-trapping-math -g -Wall -Wextra -Wno-unused-parameter -Isrc/core -Itest/unit -o $@ test/unit/test_core.c test/unit/ref_forward.c $(CORE_SRC) -ldnnl -lgomp -lopenblas -lm

unittest: test/unit/test_core
	./test/unit/test_core

.PHONY: unittest

# TAP tests alone (PGXS runs them only inside installcheck): make prove_installcheck [PROVE_TESTS=...]
prove_installcheck:
	$(prove_installcheck)

.PHONY: prove_installcheck

# the glue's layering (docs/source-layout.md): no call cycle but the shared-memory hub
layering:
	python3 test/layering.py

.PHONY: layering
