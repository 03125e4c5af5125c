#!/usr/bin/python3
"""bench/scaleout.py: pinned scoring and postgres_fdw shipping, side by side in one run.

Run by bench/scaleout.sh (a throwaway cluster with databases co, s1, s2 on one server; the
coordinator co reaches the shards s1 and s2 over postgres_fdw on loopback).  Measures, with the
variants interleaved in every repetition (median of REPS):

  local_text     SELECT count(*) FROM cands_local WHERE pepnet_predict('b@1', ...) > t
  local_pinned   the same with 'b@1'::pepnet_pinned (the pinned overload: fingerprint check once
                 per statement, then the same scoring code)
  fdw_pulled     the same over the hash-partitioned foreign table with the text reference: not
                 shippable, every row travels to the coordinator and is scored there
  fdw_shipped    the same with the pinned reference: the WHERE clause runs on the shards
                 (async foreign scans, so both shards work at once)

Prints a markdown table (medians, ratios) and the machine's load average before and after.
"""
import json
import os
import statistics
import sys
import time

import psycopg2

ROWS = int(os.environ.get("ROWS", "100000"))
REPS = int(os.environ.get("REPS", "5"))
CFG = json.load(open(os.path.join(os.path.dirname(__file__), "bench-config.json")))


def conn(db):
    c = psycopg2.connect(dbname=db)
    c.autocommit = True
    return c


def q(c, sql, args=None):
    with c.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall() if cur.description else None


def main():
    host, port = os.environ["PGHOST"], os.environ["PGPORT"]
    co = conn("co")
    shards = {"s1": conn("s1"), "s2": conn("s2")}
    q(co, "SELECT pepnet_create('b', %s::jsonb, 1)", (json.dumps(CFG),))
    bundle = q(co, "SELECT pepnet_export_version('b@1')")[0][0]
    cands = """SELECT i::bigint AS id, i %% 4 AS domain,
                      ARRAY[i %% 5000, i %% 8, i %% 100]::bigint[] AS persona,
                      ARRAY[(i * 7919) %% 20000, i %% 64, i %% 24, i %% 1000, (i * 3) %% 1000,
                            (i * 7) %% 1000, (i * 11) %% 1000, (i * 13) %% 1000]::bigint[] AS features
               FROM generate_series(1, %s) i"""
    for i, (db, c) in enumerate(sorted(shards.items())):
        q(c, "SELECT pepnet_import_version(%s)", (bundle,))
        q(c, f"CREATE TABLE cands_p{i} (id bigint, domain int, persona bigint[], features bigint[])")
        q(co, f"""CREATE SERVER {db} FOREIGN DATA WRAPPER postgres_fdw
                  OPTIONS (host %s, port %s, dbname %s, extensions 'pepnet', async_capable 'true',
                           fetch_size '1000', batch_size '1000')""",
          (host, port, db))
        q(co, f"CREATE USER MAPPING FOR CURRENT_USER SERVER {db}")
    q(co, "CREATE TABLE cands (id bigint, domain int, persona bigint[], features bigint[]) PARTITION BY HASH (id)")
    q(co, "CREATE FOREIGN TABLE cands_p0 PARTITION OF cands FOR VALUES WITH (MODULUS 2, REMAINDER 0) SERVER s1")
    q(co, "CREATE FOREIGN TABLE cands_p1 PARTITION OF cands FOR VALUES WITH (MODULUS 2, REMAINDER 1) SERVER s2")
    q(co, f"CREATE TABLE cands_local AS {cands}", (ROWS,))
    q(co, "INSERT INTO cands SELECT * FROM cands_local")
    q(co, "ANALYZE cands_local")
    for i, c in enumerate(c for _, c in sorted(shards.items())):
        q(c, f"ANALYZE cands_p{i}")
    n_sharded = q(co, "SELECT count(*) FROM cands")[0][0]
    assert n_sharded == ROWS, (n_sharded, ROWS)

    t = q(co, "SELECT percentile_disc(0.9) WITHIN GROUP (ORDER BY pepnet_predict('b@1', domain, persona, features)) "
              "FROM cands_local WHERE id % 50 = 0")[0][0]
    pred = "pepnet_predict({m}, domain, persona, features) > %s"
    variants = {
        "local_text": f"SELECT count(*) FROM cands_local WHERE {pred.format(m=chr(39) + 'b@1' + chr(39))}",
        "local_pinned": f"SELECT count(*) FROM cands_local WHERE {pred.format(m=chr(39) + 'b@1' + chr(39) + '::pepnet_pinned')}",
        "fdw_pulled": f"SELECT count(*) FROM cands WHERE {pred.format(m=chr(39) + 'b@1' + chr(39))}",
        "fdw_shipped": f"SELECT count(*) FROM cands WHERE {pred.format(m=chr(39) + 'b@1' + chr(39) + '::pepnet_pinned')}",
    }
    plan = "\n".join(r[0] for r in q(co, "EXPLAIN (VERBOSE, COSTS OFF) " + variants["fdw_shipped"], (t,)))
    assert plan.count("public.pepnet_predict(") == 2, plan
    plan = "\n".join(r[0] for r in q(co, "EXPLAIN (VERBOSE, COSTS OFF) " + variants["fdw_pulled"], (t,)))
    assert "pepnet_predict(" not in "".join(l for l in plan.splitlines() if "Remote SQL" in l), plan

    counts, times = {}, {k: [] for k in variants}
    for k, sql in variants.items():          # warm-up: caches, connections
        counts[k] = q(co, sql, (t,))[0][0]
    assert len(set(counts.values())) == 1, counts
    load0 = os.getloadavg()
    names = list(variants)
    for r in range(REPS):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            q(co, variants[k], (t,))
            times[k].append(time.perf_counter() - t0)
    load1 = os.getloadavg()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"rows {ROWS}, repetitions {REPS} (median), candidates passing the filter {counts['local_text']}, "
          f"load average {load0[0]:.2f} before, {load1[0]:.2f} after, cores {os.cpu_count()}\n")
    print("| variant | median s | rows/s |")
    print("|---|---|---|")
    for k in names:
        print(f"| {k} | {med[k]:.3f} | {ROWS / med[k]:,.0f} |")
    print()
    print(f"- pinned / text on one node: {med['local_pinned'] / med['local_text']:.3f}")
    print(f"- fdw shipped / fdw pulled: {med['fdw_shipped'] / med['fdw_pulled']:.3f}")
    print(f"- fdw shipped / one node (pinned): {med['fdw_shipped'] / med['local_pinned']:.3f}")


if __name__ == "__main__":
    sys.exit(main())
