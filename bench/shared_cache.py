#!/usr/bin/python3
"""bench/shared_cache.py: the shared model cache (issue 9) against the per-backend cache.

Run by bench/shared_cache.sh, which starts a cluster with shared_preload_libraries = 'pepnet';
connects through the libpq environment (PGHOST, PGPORT, ...).  The model is bench/bench-config.json
(pepnet_create, seed 2; about 9.5 MB of weights).  Two modes on the same server, switched with
ALTER SYSTEM SET pepnet.shared_cache_size + pg_reload_conf() (no restart):

  shared   pepnet.shared_cache_size = 1GB, the version preloaded (pepnet_preload)
  private  pepnet.shared_cache_size = 0: every backend loads and fuses its own copy (as without
           preload)

Measured in each mode:
  1. a fresh backend's first pepnet_predict and first pepnet_score (100 candidates), client-side
     wall time of the statement (the connection is made first and not timed), FRESH backends;
  2. proportional set size (Pss, /proc/PID/smaps_rollup, kB) of BACKENDS backends that each scored
     every domain with pepnet_score and pepnet_predict, against the same number of idle backends
     that ran SELECT 1 (the difference is what scoring added);
  3. pepnet_score (100 candidates, one request, random domain) throughput of 1 and of 2
     concurrent pgbench clients (-c N -j N -T SECONDS, tps without the initial connection time)
     and their ratio; REPS rounds alternating the modes.
Writes a markdown report to stdout and JSON to --json.
"""
import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import time

import numpy as np
import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_CAND = 100


def connect():
    c = psycopg2.connect('')
    c.autocommit = True
    return c


def q(cur, sql, *args):
    cur.execute(sql, args)
    return cur.fetchall() if cur.description else None


def requests(cfg, count, seed):
    rng = np.random.default_rng(seed)
    out = []
    for r in range(count):
        persona = [int(rng.integers(0, f["buckets"])) for f in cfg.get("persona", [])]
        feats = [[int(rng.integers(0, f["buckets"])) for f in cfg["features"]] for _ in range(N_CAND)]
        out.append((r % cfg["domains"], persona, feats))
    return out


SCORE = "SELECT count(*) FROM pepnet_score('bench', %s, %s::bigint[], %s::bigint[])"
PREDICT = "SELECT pepnet_predict('bench', %s, %s::bigint[], %s::bigint[])"


def set_mode(mode):
    c = connect()
    cur = c.cursor()
    size = '1GB' if mode == 'shared' else '0'
    cur.execute(f"ALTER SYSTEM SET pepnet.shared_cache_size = '{size}'")
    cur.execute("SELECT pg_reload_conf()")
    want = mode == 'shared'
    for _ in range(100):
        c2 = connect()
        got = q(c2.cursor(), "SELECT enabled FROM pepnet_shared_cache_stats()")[0][0]
        c2.close()
        if got == want:
            break
        time.sleep(0.05)
    if want:
        q(cur, "SELECT pepnet_preload('bench')")
    c.close()


def first_scores(reqs, fresh):
    pred, score = [], []
    for i in range(fresh):
        d, p, f = reqs[i % len(reqs)]
        for kind, sql, args, acc in (("predict", PREDICT, (d, p, f[0]), pred), ("score", SCORE, (d, p, f), score)):
            c = connect()
            cur = c.cursor()
            q(cur, "SELECT 1")
            t = time.perf_counter()
            cur.execute(sql, args)
            cur.fetchall()
            acc.append((time.perf_counter() - t) * 1000)
            c.close()
    return pred, score


def pss_kb(pid):
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError("no Pss")


def pss_of(n, reqs, score, predict_only=False):
    conns = [connect() for _ in range(n)]
    pids = []
    for c in conns:
        cur = c.cursor()
        pids.append(q(cur, "SELECT pg_backend_pid()")[0][0])
        if score:
            for d, p, f in reqs[:4]:
                if not predict_only:
                    q(cur, SCORE, d, p, f)
                q(cur, PREDICT, d, p, f[0])
        else:
            q(cur, "SELECT 1")
    time.sleep(0.2)
    vals = [pss_kb(pid) for pid in pids]
    for c in conns:
        c.close()
    return vals


def client(reqs, seconds, start, out):
    c = connect()
    cur = c.cursor()
    for d, p, f in reqs[:8]:
        q(cur, SCORE, d, p, f)
    start.wait()
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        d, p, f = reqs[n % len(reqs)]
        q(cur, SCORE, d, p, f)
        n += 1
    out.put(n / (time.perf_counter() - t0))
    c.close()


def pgbench_script(reqs, path):
    d, p, f = reqs[0]
    lit = lambda a: "'" + json.dumps(a).replace('[', '{').replace(']', '}') + "'::bigint[]"
    with open(path, "w") as fh:
        fh.write("\\set d random(0, %d)\n" % (len({r[0] for r in reqs}) - 1))
        fh.write("SELECT count(*) FROM pepnet_score('bench', :d, %s, %s);\n" % (lit(p), lit(f)))


def throughput(reqs, clients, seconds):
    """pgbench (a C client: less of the 2 CPUs than Python) running pepnet_score, transactions/s"""
    path = "/tmp/pepnet-bench-shared-score.sql"
    pgbench_script(reqs, path)
    out = subprocess.run(["pgbench", "-n", "-f", path, "-c", str(clients), "-j", str(clients), "-T", str(int(seconds))],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(out)


def throughput_py(reqs, clients, seconds):
    start = mp.Barrier(clients + 1)
    out = mp.Queue()
    ps = [mp.Process(target=client, args=(reqs, seconds, start, out)) for _ in range(clients)]
    for p in ps:
        p.start()
    start.wait()
    rates = [out.get() for _ in ps]
    for p in ps:
        p.join()
    return sum(rates)


def med(xs):
    return statistics.median(xs)


def p90(xs):
    return sorted(xs)[int(0.9 * (len(xs) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fresh", type=int, default=20)
    ap.add_argument("--backends", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(ROOT, "bench", "bench-config.json")))
    c = connect()
    cur = c.cursor()
    q(cur, "SET client_min_messages = warning")
    q(cur, "CREATE EXTENSION IF NOT EXISTS pepnet")
    q(cur, "DELETE FROM pepnet.deployments WHERE name = 'bench'")
    if not q(cur, "SELECT 1 FROM pepnet.models WHERE name = 'bench'"):
        q(cur, "SELECT pepnet_create('bench', %s, 2)", json.dumps(cfg))
    wbytes = q(cur, "SELECT COALESCE(weights_size, length(weights)) FROM pepnet.models WHERE name = 'bench' ORDER BY version DESC LIMIT 1")[0][0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    c.close()
    reqs = requests(cfg, 64, 1)
    res = {"commit": commit, "weights_bytes": wbytes, "backends": a.backends, "fresh": a.fresh, "seconds": a.seconds,
           "nproc": os.cpu_count(), "modes": {}}
    res["load_before"] = open('/proc/loadavg').read().split()[:3]
    idle = pss_of(a.backends, reqs, False)
    res["idle_pss_kb"] = idle
    for mode in ("private", "shared"):
        set_mode(mode)
        r = {}
        r["first_predict_ms"], r["first_score_ms"] = first_scores(reqs, a.fresh)
        r["pss_kb"] = pss_of(a.backends, reqs, True)
        r["pss_predict_kb"] = pss_of(a.backends, reqs, True, predict_only=True)
        c = connect()
        r["stats"] = q(c.cursor(), "SELECT row_to_json(s) FROM pepnet_shared_cache_stats() s")[0][0]
        r["entry"] = q(c.cursor(), "SELECT row_to_json(s) FROM pepnet.shared_cache s WHERE model = 'bench'")
        c.close()
        res["modes"][mode] = r
    # throughput: the modes alternate, REPS times each (the machine's load changes over minutes)
    for mode in ("private", "shared"):
        res["modes"][mode]["rate1_runs"], res["modes"][mode]["rate2_runs"] = [], []
    for rep in range(a.reps):
        for mode in ("private", "shared"):
            set_mode(mode)
            res["modes"][mode]["rate1_runs"].append(throughput(reqs, 1, a.seconds))
            res["modes"][mode]["rate2_runs"].append(throughput(reqs, 2, a.seconds))
    for mode in ("private", "shared"):
        r = res["modes"][mode]
        r["rate1"] = med(r["rate1_runs"])
        r["rate2"] = med(r["rate2_runs"])
        r["ratio_runs"] = [b / x for x, b in zip(r["rate1_runs"], r["rate2_runs"])]
    set_mode("shared")
    if a.json:
        json.dump(res, open(a.json, "w"), indent=1)

    print(f"commit {commit}; bench model {wbytes / 1e6:.1f} MB of weights; {os.cpu_count()} CPUs; "
          f"load average before {res['load_before']}, after {open('/proc/loadavg').read().split()[:3]}\n")
    print(f"| | per-backend cache (shared_cache_size = 0) | shared cache |")
    print("|---|---|---|")
    P, S = res["modes"]["private"], res["modes"]["shared"]
    for key, label in (("first_predict_ms", "fresh backend's first pepnet_predict, ms, median (p90)"),
                       ("first_score_ms", f"fresh backend's first pepnet_score ({N_CAND} cand.), ms, median (p90)")):
        print(f"| {label} | {med(P[key]):.1f} ({p90(P[key]):.1f}) | {med(S[key]):.1f} ({p90(S[key]):.1f}) |")
    mi = sum(idle) / len(idle)
    print(f"| Pss of {a.backends} scoring backends, sum, MB | {sum(P['pss_kb']) / 1024:.0f} | {sum(S['pss_kb']) / 1024:.0f} |")
    print(f"| Pss per scoring backend, mean, MB | {statistics.mean(P['pss_kb']) / 1024:.1f} | {statistics.mean(S['pss_kb']) / 1024:.1f} |")
    print(f"| of which added by scoring (mean minus an idle backend's {mi / 1024:.1f} MB), MB | "
          f"{(sum(P['pss_kb']) / len(P['pss_kb']) - mi) / 1024:.1f} | {(sum(S['pss_kb']) / len(S['pss_kb']) - mi) / 1024:.1f} |")
    print(f"| same, backends that ran pepnet_predict only (no oneDNN engine), added, MB | "
          f"{(statistics.mean(P['pss_predict_kb']) - mi) / 1024:.1f} | {(statistics.mean(S['pss_predict_kb']) - mi) / 1024:.1f} |")
    print(f"| pepnet_score ({N_CAND} cand.) calls/s, 1 client, median of {a.reps} | {P['rate1']:.0f} | {S['rate1']:.0f} |")
    print(f"| calls/s, 2 concurrent clients, median of {a.reps} | {P['rate2']:.0f} | {S['rate2']:.0f} |")
    print(f"| ratio 2 clients / 1 per run | {', '.join('%.2f' % x for x in P['ratio_runs'])} | "
          f"{', '.join('%.2f' % x for x in S['ratio_runs'])} |")
    print(f"\nshared cache entry: {S['entry']}")


if __name__ == "__main__":
    main()
