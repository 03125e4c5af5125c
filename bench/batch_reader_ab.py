"""A/B of pepnet_score_query between two builds of the library, interleaved in one run.

    bench/batch_reader_ab.py --before OLD.so --after NEW.so [--rows 200000] [--rounds 7]

Needs a running server whose pkglibdir (pg_config --pkglibdir) holds the extension and PG* variables
(test/pg.sh env).  Each round copies one build over $libdir/pepnet.so, opens a fresh session (which
loads it), warms it with one call and times `INSERT INTO ab_out SELECT ... FROM pepnet_score_query(...)`
over a table of --rows candidates of the bench model (bench/bench-config.json, random weights, 200 users
of 4 domains); the builds alternate round by round.  Prints medians of wall time and of the backend's
CPU time (/proc/PID/stat) per build, and their ratio.  Restores --after at the end.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import time

import psycopg2

ap = argparse.ArgumentParser()
ap.add_argument("--before", required=True)
ap.add_argument("--after", required=True)
ap.add_argument("--rows", type=int, default=200000)
ap.add_argument("--rounds", type=int, default=7)
a = ap.parse_args()
lib = os.path.join(subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True,
                                  check=True).stdout.strip(), "pepnet.so")
cfg = json.load(open(os.path.join(os.path.dirname(__file__), "bench-config.json")))
F, P = cfg["features"], cfg["persona"]


def arr(fields, seed):
    return "ARRAY[%s]::bigint[]" % ", ".join(
        "(abs(hashint8(%s * 31 + %d)) %% %d)" % (seed, i, f["buckets"]) for i, f in enumerate(fields))


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def install(path):
    shutil.copyfile(path, lib + ".tmp")
    os.replace(lib + ".tmp", lib)


install(a.after)
con = psycopg2.connect("")
con.autocommit = True
cur = con.cursor()
cur.execute("DROP EXTENSION IF EXISTS pepnet CASCADE")
cur.execute("CREATE EXTENSION pepnet")
cur.execute("SELECT pepnet_create('ab', %s::jsonb, 1)", (json.dumps(cfg),))
cur.execute("DROP TABLE IF EXISTS ab_cands, ab_out")
cur.execute("CREATE TABLE ab_cands AS SELECT i AS id, i / 500 AS uid, (i / 500) %% 4 AS domain, "
            "%s AS persona, %s AS features FROM generate_series(1, %d) i ORDER BY uid"
            % (arr(P, "i / 500"), arr(F, "i"), a.rows))
cur.execute("VACUUM ANALYZE ab_cands")
cur.execute("CREATE TABLE ab_out (uid int, id int, score float8)")
con.close()
q = ("INSERT INTO ab_out SELECT uid, id, score FROM pepnet_score_query('ab', "
     "'SELECT uid, id, domain, persona, features FROM ab_cands') AS t(uid int, id int, score float8, scores float8[])")
res = {"before": {"wall": [], "cpu": []}, "after": {"wall": [], "cpu": []}}
for r in range(a.rounds):
    for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
        install(getattr(a, name))
        con = psycopg2.connect("")
        con.autocommit = True
        cur = con.cursor()
        cur.execute("SET max_parallel_workers_per_gather = 0")
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
        cur.execute("TRUNCATE ab_out")
        cur.execute(q)  # warm: library loaded, model cached, engine made
        cur.execute("TRUNCATE ab_out")
        c0, t0 = cpu_s(pid), time.perf_counter()
        cur.execute(q)
        t1, c1 = time.perf_counter(), cpu_s(pid)
        res[name]["wall"].append(t1 - t0)
        res[name]["cpu"].append(c1 - c0)
        con.close()
install(a.after)
for name in ("before", "after"):
    w, c = statistics.median(res[name]["wall"]), statistics.median(res[name]["cpu"])
    print("%-6s median wall %.3f s (%.0f rows/s), backend CPU %.3f s (%.0f rows/s); walls %s" % (
        name, w, a.rows / w, c, a.rows / c, " ".join("%.3f" % x for x in res[name]["wall"])))
print("after/before rows/s ratio: wall %.3f, backend CPU %.3f" % (
    statistics.median(res["before"]["wall"]) / statistics.median(res["after"]["wall"]),
    statistics.median(res["before"]["cpu"]) / statistics.median(res["after"]["cpu"])))
