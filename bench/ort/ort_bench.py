"""pepnet against ONNX Runtime (issue 18): scoring per request size and the end-to-end jobs.

Run with Debian's /usr/bin/python3 against a running cluster with pepnet installed (libpq
environment) after the ONNX graphs and C programs are built; bench/ort.sh does everything.

    /usr/bin/python3 bench/ort/ort_bench.py --build bench/ort/build [--out bench/out] [--quick]

1. Scoring, N = 1, 10, 100, 1000 candidates per request, interleaved in rounds, one thread each,
   the same weights (bench model, StarPepNet.init_random(2)) and the same requests:
   ONNX Runtime fp32 and int8 (bench/ort/ort_score.c, C API; CPU time of its process) against
   pepnet_score fp32 (and bf16, int8 where the build and CPU have them) through a prepared statement, every row
   fetched (CPU time of the backend from /proc/<pid>/schedstat; the Python client's CPU apart),
   and pepnet_predict at N = 1.  Scores are compared first (max abs diff).
2. End to end (bench/ort/ort_pipeline.c, CPU of every process: client and backends):
   top-20 of 100,000 candidates of a table for one user, and scoring a table into a new table,
   in SQL with pepnet against binary COPY out, ORT in batches of 1,000, binary COPY in.
Writes <out>/ort.md (also printed) and <out>/ort.json.
"""
import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import psycopg2
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.dirname(HERE)
sys.path.insert(0, BENCH)
sys.path.insert(0, HERE)
import bench_score as bs  # noqa: E402  (pins torch and OpenBLAS to one thread)
import export_onnx as ex  # noqa: E402

NS = (1, 10, 100, 1000)
MODEL = "bench_ort"
REDUCED = ("bf16", "int8")    # pepnet.precision values tried besides fp32


def ort_lib():
    return os.path.join(HERE, "node_modules", "onnxruntime-node", "bin", "napi-v6", "linux", "x64",
                        "libonnxruntime.so.1")


class OrtScorer:
    """A running ort_score process (one precision)."""

    def __init__(self, build, prefix, prec, reqfile):
        env = dict(os.environ, ORT_LIB=ort_lib())
        self.p = subprocess.Popen([os.path.join(build, "ort_score"), prefix + ".meta", prefix, prec, reqfile],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.p.stdout.readline().strip() == "ready"

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().split()

    def run(self, s, calls, start):
        cpu, wall, _ = self.cmd("run %d %d %d" % (s, calls, start))
        return float(cpu) * 1e-9, float(wall) * 1e-9

    def dump(self, s, path):
        assert self.cmd("dump %d %s" % (s, path)) == ["ok"]
        return np.fromfile(path, dtype=np.float32)

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait()


def pipeline(build, prefix, prec, args, workers=0):
    env = dict(os.environ, ORT_LIB=ort_lib())
    out = subprocess.run([os.path.join(build, "ort_pipeline"), prefix + ".meta", prefix, prec,
                          "options='-c max_parallel_workers_per_gather=%d'" % workers] + list(args),
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError("ort_pipeline %s: %s" % (" ".join(args[:1]), out.stderr))
    r = {}
    for kv in out.stdout.split():
        k, v = kv.split("=", 1)
        r[k] = v if k == "top" else float(v)
    return r


def reaped_cpu(pid):
    """CPU seconds of the exited children a process has reaped (cutime + cstime of /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        st = f.read().rsplit(")", 1)[1].split()
    return (int(st[13]) + int(st[14])) / os.sysconf("SC_CLK_TCK")


def parent_pid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def sql_job(build, query, workers=0, postmaster=None):
    """The job in SQL on a connection of its own.  With workers > 0 (max_parallel_workers_per_gather)
    the parallel workers' CPU is the postmaster's reaped-children CPU over the job (the workers and,
    once it exits, the job's backend, whose own CPU in the query is subtracted: its connection
    start and exit, a few ms, count as the workers')."""
    t0 = reaped_cpu(postmaster) if postmaster else 0.0
    r = pipeline(build, "-", "-", ["sql", query], workers)
    r["workers_cpu"] = 0.0
    if workers and postmaster:
        pid = int(r["pid"])
        for _ in range(500):
            if not os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.01)
        time.sleep(0.05)
        r["workers_cpu"] = max(0.0, reaped_cpu(postmaster) - t0 - r["backend_cpu"])
    return r


def total_cpu(r):
    return r["client_cpu"] + r["backend_cpu"] + r.get("workers_cpu", 0.0)


def fmt(v):
    return "{:,.0f}".format(v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(HERE, "build"))
    ap.add_argument("--out", default=os.path.join(BENCH, "out"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int, default=200000, help="rows of the table-scoring job")
    ap.add_argument("--top-rows", type=int, default=100000, help="candidates of the top-20 job")
    ap.add_argument("--score-only", action="store_true", help="part 1 only (scoring per request size)")
    ap.add_argument("--e2e-only", action="store_true", help="part 2 only (the end-to-end jobs; parity still checked)")
    ap.add_argument("--workers", type=int, default=2, help="max_parallel_workers_per_gather of the parallel "
                    "pepnet_score_query rows (0: no parallel rows)")
    ap.add_argument("--user-runs", type=int, default=8, help="pepnet_score at N <= 10 also on the same requests "
                    "with each persona repeated for this many requests in a row (a user's requests; kind "
                    "pepnet_fp32_user), 0: not")
    ap.add_argument("--before-so", help="another build's pepnet.so: its pepnet_score and pepnet_predict "
                    "measured too, interleaved, in a second backend (A/B of two builds in one run)")
    args = ap.parse_args()
    q = args.quick
    t_start = time.time()

    def log(msg):
        print("[%6.1fs] %s" % (time.time() - t_start, msg), flush=True)

    R = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "loadavg_start": os.getloadavg(),
         "machine": bs.machine_info(), "source": bs.source_info(), "quick": q}
    cfg = json.load(open(os.path.join(BENCH, "bench-config.json")))
    c = bs.ref.Config(cfg)
    model = bs.ref.StarPepNet(c).init_random(bs.SEED)
    model.eval()
    fast = bs.FastPepNet(model)
    R["flops_per_candidate"] = bs.flops_per_candidate(c)

    # ONNX graphs (fp32, int8) of the same weights
    os.makedirs(args.build, exist_ok=True)
    prefix = os.path.join(args.build, "bench")
    ex.export(fast, prefix)
    log("exported the ONNX graphs to %s.{fp32,int8}.d*.onnx" % prefix)

    conn = psycopg2.connect("", options="-c max_parallel_workers_per_gather=0")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    cur.execute("SELECT pepnet_import(%s, %s::jsonb, %s::bytea)",
                (MODEL, json.dumps(cfg), psycopg2.Binary(bs.ref.safetensors_dumps(model.tensors()))))
    mref = "%s@%d" % (MODEL, cur.fetchone()[0])
    R["model_ref"] = mref
    cur.execute("SELECT version()")
    R["postgres"] = cur.fetchone()[0]

    rng = np.random.default_rng(bs.SEED)
    count = {1: 64, 10: 64, 100: 64, 1000: 16}
    sets = [bs.make_requests(rng, c, count[n], n) for n in NS]
    reqfile = os.path.join(args.build, "requests.bin")
    ex.write_requests(reqfile, sets)
    ort = {p: OrtScorer(args.build, prefix, p, reqfile) for p in ("fp32", "int8")}

    # the reduced precisions where this build and CPU have them (pepnet refuses them elsewhere)
    precs = ["fp32"]
    for pr in REDUCED:
        try:
            cur.execute("SET pepnet.precision = " + pr)
            d, p, f = sets[1][0]
            cur.execute("SELECT count(*) FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[])",
                        (mref, d, bs.arr_lit(p), bs.arr_lit(f)))
            precs.append(pr)
            R[pr] = "available"
        except psycopg2.Error as e:
            R[pr] = "not available: %s" % e.pgerror.strip().splitlines()[0]
        cur.execute("SET pepnet.precision = fp32")
        log("pepnet %s: %s" % (pr, R[pr]))

    # parity on the same requests: pepnet fp32 vs ORT fp32 / int8 / PyTorch
    par = {}
    for si, n in enumerate(NS):
        got = {p: ort[p].dump(si, os.path.join(args.build, "dump.bin")).reshape(-1, c.T) for p in ort}
        pg = {pr: [] for pr in precs}
        tch = []
        for d, p, f in sets[si]:
            for pr in precs:
                cur.execute("SET pepnet.precision = " + pr)
                cur.execute("SELECT scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[]) ORDER BY idx",
                            (mref, d, bs.arr_lit(p), bs.arr_lit(f)))
                pg[pr] += [r[0] for r in cur.fetchall()]
            with torch.no_grad():
                tch.append(fast.predict(d, p, f).numpy().reshape(-1, c.T))
        pf = np.array(pg["fp32"])
        par[n] = {"ort_fp32_vs_pepnet_fp32": float(np.abs(got["fp32"] - pf).max()),
                  "ort_int8_vs_pepnet_fp32": float(np.abs(got["int8"] - pf).max()),
                  "torch_vs_pepnet_fp32": float(np.abs(np.concatenate(tch) - pf).max())}
        for pr in precs[1:]:
            par[n]["pepnet_%s_vs_fp32" % pr] = float(np.abs(np.array(pg[pr]) - pf).max())
    cur.execute("SET pepnet.precision = fp32")
    R["parity"] = {str(k): v for k, v in par.items()}
    log("parity (max abs diff of probabilities): %s" % json.dumps(R["parity"]))
    if max(v["ort_fp32_vs_pepnet_fp32"] for v in par.values()) > 1e-5:
        sys.exit("ORT fp32 and pepnet fp32 disagree: the benchmark would compare different functions")

    # 1. interleaved rounds per N
    cur.execute("DEALLOCATE ALL")
    cur.execute("PREPARE s(text, int, bigint[], bigint[]) AS SELECT idx, score FROM pepnet_score($1, $2, $3, $4)")
    cur.execute("PREPARE pr(text, int, bigint[], bigint[]) AS SELECT pepnet_predict($1, $2, $3, $4)")
    # pepnet_predict over the N candidates of a request, one call per row ($4[i:i]: a 1 x F slice)
    PRN = ("PREPARE prn(text, int, bigint[], bigint[]) AS SELECT i, pepnet_predict($1, $2, $3, $4[i:i]) "
           "FROM generate_series(1, array_length($4, 1)) i")
    cur.execute(PRN)
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    # --before-so: a second backend that loaded the other build (pepnet.so swapped in by rename while
    # it connects and loads it, then this build's put back: each backend keeps the file it mapped)
    cur_b = backend_b = None
    if args.before_so:
        cur.execute("SHOW dynamic_library_path")
        libdir = subprocess.run([os.environ.get("PG_CONFIG", "pg_config"), "--pkglibdir"], capture_output=True,
                                text=True, check=True).stdout.strip()
        so = os.path.join(libdir, "pepnet.so")
        keep = so + ".after"
        subprocess.run(["cp", "-p", so, keep], check=True)
        subprocess.run(["cp", args.before_so, so + ".tmp"], check=True)
        os.rename(so + ".tmp", so)
        try:
            conn_b = psycopg2.connect("", options="-c max_parallel_workers_per_gather=0")
            conn_b.autocommit = True
            cur_b = conn_b.cursor()
            d, p, f = sets[1][0]
            cur_b.execute("SELECT count(*) FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[])",
                          (mref, d, bs.arr_lit(p), bs.arr_lit(f)))
        finally:
            os.rename(keep, so)
        cur_b.execute("PREPARE s(text, int, bigint[], bigint[]) AS SELECT idx, score FROM pepnet_score($1, $2, $3, $4)")
        cur_b.execute("PREPARE pr(text, int, bigint[], bigint[]) AS SELECT pepnet_predict($1, $2, $3, $4)")
        cur_b.execute(PRN)
        cur_b.execute("SELECT pg_backend_pid()")
        backend_b = cur_b.fetchone()[0]
        maps = open("/proc/%d/maps" % backend_b).read()
        if "pepnet.so (deleted)" not in maps:
            sys.exit("the second backend did not keep the --before-so build mapped")
        R["before_so"] = args.before_so
        log("second backend %d runs %s" % (backend_b, args.before_so))
    rounds = 2 if q else 6
    target = 0.05 if q else 0.4     # seconds of scoring per kind and round, roughly
    S = {}
    for si, n in enumerate(NS):
        if args.e2e_only:
            break
        lits = [(mref, d, bs.arr_lit(p), bs.arr_lit(f)) for d, p, f in sets[si]]
        # the same requests, each persona repeated for args.user_runs requests in a row
        K = max(1, args.user_runs)
        lits_user = [(mref, d, bs.arr_lit(sets[si][i - i % K][1]), bs.arr_lit(f)) for i, (d, p, f) in enumerate(sets[si])]
        user_runs = args.user_runs > 0 and n <= 10
        meter = bs.CpuMeter(backend)  # per N
        meter_b = bs.CpuMeter(backend_b) if cur_b else None
        acc = {}

        def add(kind, calls, cpu, wall, client=0.0):
            a = acc.setdefault(kind, {"calls": 0, "cpu": 0.0, "wall": 0.0, "client": 0.0})
            a["calls"] += calls
            a["cpu"] += cpu
            a["wall"] += wall
            a["client"] += client

        def pg_kind(stmt, prec, calls, start, before=False, user=False):
            cu, me = (cur_b, meter_b) if before else (cur, meter)
            cu.execute("SET pepnet.precision = " + prec)
            kind = "%s_%s%s%s" % ("predict" if stmt in ("pr", "prn") else "pepnet", prec, "_user" if user else "",
                                  "_before" if before else "")
            ls = lits_user if user else lits
            t0 = time.perf_counter()

            def go():
                for i in range(calls):
                    cu.execute("EXECUTE " + stmt + "(%s, %s, %s, %s)", ls[(start + i) % len(ls)])
                    cu.fetchall()
            me.measure(kind, calls, go)
            return kind, time.perf_counter() - t0

        # warm every path, then size the calls per round from a probe
        for p in ort:
            ort[p].run(si, 3, 0)
        for prec in precs:
            pg_kind("s", prec, 3, 0)
        if n == 1:
            pg_kind("pr", "fp32", 3, 0)
        if cur_b:
            pg_kind("s", "fp32", 3, 0, True)
            pg_kind("pr" if n == 1 else "prn", "fp32", 3, 0, True)
            if n > 1:
                pg_kind("prn", "fp32", 3, 0)
        if user_runs:
            pg_kind("s", "fp32", 3, 0, user=True)
            if cur_b:
                pg_kind("s", "fp32", 3, 0, True, user=True)
        meter = bs.CpuMeter(backend)  # the warm-up calls not counted
        meter_b = bs.CpuMeter(backend_b) if cur_b else None
        predict_all = cur_b is not None   # A/B runs: pepnet_predict at every N too
        cpu1, _ = ort["fp32"].run(si, 5, 0)
        per = max(3, int(target / max(cpu1 / 5, 1e-6)))
        start = 0
        for _ in range(rounds):
            for p in ("fp32", "int8"):
                cpu, wall = ort[p].run(si, per, start)
                add("ort_" + p, per, cpu, wall)
            for prec in precs:
                kind, wall = pg_kind("s", prec, per, start)
                acc.setdefault(kind, {"calls": 0, "cpu": 0.0, "wall": 0.0, "client": 0.0})["wall"] += wall
            if n == 1 or predict_all:
                kind, wall = pg_kind("pr" if n == 1 else "prn", "fp32", per, start)
                acc.setdefault(kind, {"calls": 0, "cpu": 0.0, "wall": 0.0, "client": 0.0})["wall"] += wall
            if cur_b:
                for stmt in ("s", "pr" if n == 1 else "prn"):
                    kind, wall = pg_kind(stmt, "fp32", per, start, True)
                    acc.setdefault(kind, {"calls": 0, "cpu": 0.0, "wall": 0.0, "client": 0.0})["wall"] += wall
            if user_runs:
                for before in ((False, True) if cur_b else (False,)):
                    kind, wall = pg_kind("s", "fp32", per, start, before, user=True)
                    acc.setdefault(kind, {"calls": 0, "cpu": 0.0, "wall": 0.0, "client": 0.0})["wall"] += wall
            start += per
        r = {}
        for kind, a in acc.items():
            if kind.startswith("ort"):
                r[kind] = {"calls": a["calls"], "cpu_us_per_call": a["cpu"] / a["calls"] * 1e6,
                           "cand_per_s_cpu": n * a["calls"] / a["cpu"], "wall_us_per_call": a["wall"] / a["calls"] * 1e6}
            else:
                me = meter_b if kind.endswith("_before") else meter
                m = me.per_call(kind)
                r[kind] = {"calls": me.acc[kind]["calls"], "cpu_us_per_call": m["server_cpu_ms"] * 1e3,
                           "client_us_per_call": m["client_cpu_ms"] * 1e3,
                           "cand_per_s_cpu": n / (m["server_cpu_ms"] * 1e-3),
                           "cand_per_s_cpu_with_client": n / ((m["server_cpu_ms"] + m["client_cpu_ms"]) * 1e-3),
                           "wall_us_per_call": a["wall"] / me.acc[kind]["calls"] * 1e6}
        S[n] = r
        log("N=%d cand/s (CPU): %s" % (n, ", ".join("%s %s" % (k, fmt(v["cand_per_s_cpu"])) for k, v in r.items())))
    cur.execute("SET pepnet.precision = fp32")
    R["score"] = {str(k): v for k, v in S.items()}
    for p in ort.values():
        p.close()

    if args.score_only:
        conn.close()
        R["loadavg_end"] = os.getloadavg()
        md = score_report(R)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "ort_score.md"), "w") as f:
            f.write(md + "\n")
        with open(os.path.join(args.out, "ort_score.json"), "w") as f:
            json.dump(R, f, indent=1, default=str)
        print()
        print(md)
        return

    # 2. end to end
    top_rows = 20000 if q else args.top_rows
    rows = 20000 if q else args.rows
    per_user = 1000
    users = max(1, rows // per_user)
    log("loading tables: %d candidates (top-20), %d rows = %d users x %d (table job)" % (top_rows, users * per_user,
                                                                                        users, per_user))
    cur.execute("DROP TABLE IF EXISTS e2e_cands, e2e_rows, e2e_out_pepnet, e2e_out_ort")
    cur.execute("CREATE TABLE e2e_cands (id int, features bigint[])")
    feats = np.stack([rng.integers(0, 10 * f["buckets"], top_rows) for f in c.features], 1)
    buf = io.StringIO()
    for i in range(top_rows):
        buf.write("%d\t%s\n" % (i + 1, bs.arr_lit(feats[i])))
    buf.seek(0)
    cur.copy_expert("COPY e2e_cands FROM STDIN", buf)
    cur.execute("CREATE TABLE e2e_rows (uid int, id int, domain int, persona bigint[], features bigint[])")
    buf = io.StringIO()
    for i, (uid, d, p, f) in enumerate(bs.make_table_rows(rng, c, users, per_user)):
        buf.write("%d\t%d\t%d\t%s\t%s\n" % (uid, i + 1, d, bs.arr_lit(p), bs.arr_lit(f)))
    buf.seek(0)
    cur.copy_expert("COPY e2e_rows FROM STDIN", buf)
    cur.execute("VACUUM ANALYZE e2e_cands")
    cur.execute("VACUUM ANALYZE e2e_rows")
    user_d, user_p = 1, np.array([424242, 3, 17][:len(c.persona)], dtype=np.int64)
    plit = bs.arr_lit(user_p)
    # the named form (since 0.3.0): the same weights as a version whose fields are columns (bigint
    # ids: the same ids as the arrays form), the candidates as a table of columns and the user's
    # domain and persona added by a view (a named row type for (s.candidate).id)
    ncfg = json.loads(json.dumps(cfg))
    ncfg["inputs"] = "columns"
    nt = model.tensors()
    for k in nt:   # the named tables' missing row (docs/model.md), never used here: no NULL ids
        if k.startswith("emb.feature.") or k.startswith("emb.persona."):
            nt[k] = torch.cat([nt[k], torch.zeros(1, nt[k].shape[1], dtype=nt[k].dtype)])
    cur.execute("SELECT pepnet_import(%s, %s::jsonb, %s::bytea)",
                (MODEL + "_named", json.dumps(ncfg), psycopg2.Binary(bs.ref.safetensors_dumps(nt))))
    nref = "%s_named@%d" % (MODEL, cur.fetchone()[0])
    fq = lambda n: '"%s"' % n  # noqa: E731
    cur.execute("DROP VIEW IF EXISTS e2e_cands_v")
    cur.execute("DROP TABLE IF EXISTS e2e_cands_n")
    cur.execute("CREATE TABLE e2e_cands_n AS SELECT id, %s FROM e2e_cands" % ", ".join(
        "features[%d] AS %s" % (i + 1, fq(f["name"])) for i, f in enumerate(cfg["features"])))
    cur.execute("CREATE VIEW e2e_cands_v AS SELECT c.*, %d AS domain, %s FROM e2e_cands_n c" % (user_d, ", ".join(
        "%d::bigint AS %s" % (v, fq(f["name"])) for v, f in zip(user_p, cfg["persona"]))))
    cur.execute("VACUUM ANALYZE e2e_cands_n")
    cur.execute("SELECT pg_backend_pid()")
    postmaster = parent_pid(cur.fetchone()[0])
    # no autovacuum worker (reaped by the postmaster) during the jobs: it would count as parallel workers' CPU
    cur.execute("ALTER SYSTEM SET autovacuum = off")
    cur.execute("SELECT pg_reload_conf()")
    jobs = {
        "top20_pepnet_score_query": ("sql", "SELECT id, score FROM pepnet_score_query('%s', 'SELECT id, %d AS domain, "
                                     "''%s''::bigint[] AS persona, features FROM e2e_cands') AS t(id int, score float8, "
                                     "scores float8[]) ORDER BY score DESC LIMIT 20" % (mref, user_d, plit)),
        "top20_pepnet_score": ("sql", "WITH a AS MATERIALIZED (SELECT array_agg(id) ids, array_agg(features) f "
                               "FROM e2e_cands) SELECT a.ids[s.idx], s.score FROM a, pepnet_score('%s', %d, '%s', a.f) s "
                               "ORDER BY s.score DESC LIMIT 20" % (mref, user_d, plit)),
        "top20_pepnet_score_rows": ("sql", "SELECT (s.candidate).id, s.score FROM pepnet_score_rows('%s', "
                                    "ARRAY(SELECT c FROM e2e_cands_v c)) s ORDER BY s.score DESC LIMIT 20" % nref),
        "top20_ort_fp32": ("fp32", "top20", str(user_d), ",".join(map(str, user_p)), "e2e_cands"),
        "top20_ort_int8": ("int8", "top20", str(user_d), ",".join(map(str, user_p)), "e2e_cands"),
        "table_pepnet_ctas": ("sql", "CREATE TABLE e2e_out_pepnet AS SELECT uid, id, score FROM pepnet_score_query('%s', "
                              "'SELECT uid, id, domain, persona, features FROM e2e_rows') AS t(uid int, id int, "
                              "score float8, scores float8[])" % mref),
        "table_ort_fp32": ("fp32", "table", "e2e_rows", "e2e_out_ort"),
        "table_ort_int8": ("int8", "table", "e2e_rows", "e2e_out_ort"),
        # the in-database job without the model: read the rows and write a constant score
        "table_floor_ctas": ("sql", "CREATE TABLE e2e_out_pepnet AS SELECT uid, id, 0.5::float8 AS score FROM e2e_rows"),
        # the pipeline's COPY out alone, rows fetched and dropped by the server side
        "table_floor_copy_out": ("sql", "SELECT count(*) FROM (SELECT uid, id, domain, persona, features FROM e2e_rows) s"),
    }
    if args.workers > 0:
        for k in ("top20_pepnet_score_query", "table_pepnet_ctas"):
            jobs[k + "_parallel"] = ("sql", jobs[k][1], args.workers)
    for pr in precs[1:]:
        for k in ("top20_pepnet_score_query", "table_pepnet_ctas"):
            jobs[k.replace("pepnet", "pepnet_" + pr)] = ("sql", "SET pepnet.precision = %s; %s" % (pr, jobs[k][1]))
    E = {k: [] for k in jobs}
    runs = 1 if q else 3

    def run_job(k):
        j = jobs[k]
        cur.execute("DROP TABLE IF EXISTS e2e_out_pepnet, e2e_out_ort")
        if j[0] == "sql":
            return sql_job(args.build, j[1], j[2] if len(j) > 2 else 0, postmaster)
        return pipeline(args.build, prefix, j[0], list(j[1:]))

    for k in jobs:   # warm: model load, sessions
        if k.startswith("top20"):
            run_job(k)
    checks = {}
    for rnd in range(runs):
        for k in jobs:
            r = run_job(k)
            E[k].append(r)
            if rnd == 0 and k == "table_pepnet_ctas":
                cur.execute("ALTER TABLE e2e_out_pepnet RENAME TO e2e_keep_pepnet")
            if rnd == 0 and k == "table_pepnet_ctas_parallel":
                cur.execute("ALTER TABLE e2e_out_pepnet RENAME TO e2e_keep_pepnet_par")
            if rnd == 0 and k == "table_ort_fp32":
                cur.execute("ALTER TABLE e2e_out_ort RENAME TO e2e_keep_ort")
        log("e2e round %d: %s" % (rnd + 1, ", ".join("%s %.2f s" % (k, total_cpu(E[k][-1])) for k in jobs)))
    cur.execute("SELECT count(*), count(o.uid), max(abs(p.score - o.score)) FROM e2e_keep_pepnet p "
                "LEFT JOIN e2e_keep_ort o USING (uid, id)")
    n_p, n_o, diff = cur.fetchone()
    checks["table_rows_pepnet"], checks["table_rows_matched"], checks["table_max_abs_diff"] = n_p, n_o, diff
    if "table_pepnet_ctas_parallel" in jobs:
        cur.execute("SELECT count(*), count(q.uid), count(*) FILTER (WHERE p.score = q.score AND p.uid = q.uid AND "
                    "p.id = q.id) FROM (SELECT row_number() OVER () n, * FROM e2e_keep_pepnet) p LEFT JOIN "
                    "(SELECT row_number() OVER () n, * FROM e2e_keep_pepnet_par) q USING (n)")
        n_s, n_q, n_eq = cur.fetchone()
        checks["table_parallel_rows_equal_serial"] = "%d of %d (rows in the same order, scores bit for bit)" % (n_eq, n_s)
    cur.execute("DROP TABLE IF EXISTS e2e_keep_pepnet, e2e_keep_pepnet_par, e2e_keep_ort, e2e_out_pepnet, e2e_out_ort")
    cur.execute("ALTER SYSTEM RESET autovacuum")
    cur.execute("SELECT pg_reload_conf()")

    def top_ids(r):
        return [int(x.split(":")[0]) for x in r["top"].split(",")]
    checks["top20_same_ids_pepnet_query_vs_ort_fp32"] = top_ids(E["top20_pepnet_score_query"][0]) == top_ids(
        E["top20_ort_fp32"][0])
    checks["top20_same_ids_pepnet_score_vs_query"] = top_ids(E["top20_pepnet_score"][0]) == top_ids(
        E["top20_pepnet_score_query"][0])
    if "top20_pepnet_score_query_parallel" in E:
        checks["top20_same_ids_parallel_vs_serial"] = top_ids(E["top20_pepnet_score_query_parallel"][0]) == top_ids(
            E["top20_pepnet_score_query"][0])
    checks["top20_same_ids_pepnet_score_rows_vs_query"] = top_ids(E["top20_pepnet_score_rows"][0]) == top_ids(
        E["top20_pepnet_score_query"][0])
    checks["top20_overlap_ort_int8_vs_fp32"] = len(set(top_ids(E["top20_ort_int8"][0])) & set(top_ids(
        E["top20_ort_fp32"][0])))
    for pr in precs[1:]:
        checks["top20_overlap_pepnet_%s_vs_fp32" % pr] = len(set(top_ids(E["top20_pepnet_%s_score_query" % pr][0])) & set(
            top_ids(E["top20_pepnet_score_query"][0])))
    R["e2e_checks"] = checks
    R["e2e"] = {k: {"runs": v, "median_cpu": statistics.median(total_cpu(x) for x in v)}
                for k, v in E.items()}
    R["workers"] = args.workers
    R["e2e_sizes"] = {"top_rows": top_rows, "rows": users * per_user, "users": users, "per_user": per_user}
    log("e2e checks: %s" % json.dumps(checks))
    conn.close()
    R["loadavg_end"] = os.getloadavg()
    md = report(R, precs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "ort.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, "ort.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    print()
    print(md)


def med(runs, key):
    return statistics.median(r.get(key, 0.0) for r in runs)


def score_report(R):
    """Part 1 alone (--score-only): candidates/s from CPU time per kind, and the ratios to ORT fp32."""
    S = R["score"]
    la0, la1 = R["loadavg_start"], R["loadavg_end"]
    L = ["Commit %s, %s; CPU: %s (%d CPUs); %s; ONNX Runtime 1.30.0, C API, 1 thread.  Load average "
         "%.1f/%.1f/%.1f at the start, %.1f/%.1f/%.1f at the end.%s\n" % (
             R["source"].get("commit", "?"), R["started"], R["machine"].get("cpu", "?"), R["machine"].get("nproc", 0),
             R["postgres"].split(",")[0], la0[0], la0[1], la0[2], la1[0], la1[1], la1[2],
             (" Before: %s in a second backend." % R["before_so"]) if R.get("before_so") else "")]
    kinds = [k for k in ("ort_fp32", "ort_int8", "pepnet_fp32", "pepnet_fp32_before", "pepnet_fp32_user",
                         "pepnet_fp32_user_before", "predict_fp32", "predict_fp32_before", "pepnet_bf16", "pepnet_int8")
             if any(k in S[str(n)] for n in NS)]
    L.append("| N | " + " | ".join(kinds) + " | pepnet_fp32 / ORT fp32 | pepnet_fp32 / before | pepnet_fp32 / predict_fp32 |")
    L.append("|---|" + "---|" * (len(kinds) + 3))
    for n in NS:
        r = S[str(n)]

        def cs(k):
            return r[k]["cand_per_s_cpu"] if k in r else float("nan")
        L.append("| %d | %s | %.2fx | %.2fx | %.2fx |" % (
            n, " | ".join(fmt(cs(k)) if k in r else "" for k in kinds), cs("pepnet_fp32") / cs("ort_fp32"),
            cs("pepnet_fp32") / cs("pepnet_fp32_before"), cs("pepnet_fp32") / cs("predict_fp32")))
    L.append("")
    L.append("CPU us per call: " + "; ".join("N=%d: %s" % (n, ", ".join("%s %.0f" % (k, S[str(n)][k]["cpu_us_per_call"])
                                                                       for k in kinds if k in S[str(n)])) for n in NS))
    return "\n".join(L)


def score_table(R, precs):
    """Part 1's table (candidates/s per N), parity, per-call CPU."""
    L = []
    S = R["score"]
    if not S:
        return L
    L.append("**Scoring, candidates/s per core from CPU time** (ORT: its process; pepnet: the backend, "
             "`EXECUTE` of a prepared `SELECT idx, score FROM pepnet_score(...)`, rows fetched; in brackets "
             "with the Python client's CPU):\n")
    head = ["N", "ORT fp32", "ORT int8 (dynamic)", "pepnet_score fp32"] + ["pepnet_score " + pr for pr in precs[1:]] + \
        ["pepnet fp32 / ORT fp32", "pepnet fp32 / ORT int8"] + \
        (["pepnet int8 / ORT int8", "pepnet int8 / pepnet fp32"] if "int8" in precs else [])
    L.append("| " + " | ".join(head) + " |")
    L.append("|" + "---|" * len(head))
    for n in NS:
        r = S[str(n)]
        pf = r["pepnet_fp32"]
        cells = [str(n), fmt(r["ort_fp32"]["cand_per_s_cpu"]), fmt(r["ort_int8"]["cand_per_s_cpu"]),
                 "%s (%s)%s" % (fmt(pf["cand_per_s_cpu"]), fmt(pf["cand_per_s_cpu_with_client"]),
                                ("; pepnet_predict %s (%s)" % (fmt(r["predict_fp32"]["cand_per_s_cpu"]),
                                                               fmt(r["predict_fp32"]["cand_per_s_cpu_with_client"])))
                                if "predict_fp32" in r else "")]
        for pr in precs[1:]:
            cells.append("%s (%s)" % (fmt(r["pepnet_" + pr]["cand_per_s_cpu"]), fmt(r["pepnet_" + pr]["cand_per_s_cpu_with_client"])))
        cells += ["%.2fx" % (pf["cand_per_s_cpu"] / r["ort_fp32"]["cand_per_s_cpu"]),
                  "%.2fx" % (pf["cand_per_s_cpu"] / r["ort_int8"]["cand_per_s_cpu"])]
        if "int8" in precs:
            cells += ["%.2fx" % (r["pepnet_int8"]["cand_per_s_cpu"] / r["ort_int8"]["cand_per_s_cpu"]),
                      "%.2fx" % (r["pepnet_int8"]["cand_per_s_cpu"] / pf["cand_per_s_cpu"])]
        L.append("| " + " | ".join(cells) + " |")
    L.append("")
    L.append("Per call, us of CPU (ORT / pepnet backend / pepnet's Python client): " + "; ".join(
        "N=%d: %.0f / %.0f / %.0f" % (n, S[str(n)]["ort_fp32"]["cpu_us_per_call"], S[str(n)]["pepnet_fp32"]["cpu_us_per_call"],
                                      S[str(n)]["pepnet_fp32"]["client_us_per_call"]) for n in NS) + ".\n")
    return L


def report(R, precs):
    L = []
    la0, la1 = R["loadavg_start"], R["loadavg_end"]
    L.append("Commit %s, %s; CPU: %s (%d CPUs); %s; ONNX Runtime 1.30.0 (npm onnxruntime-node), C API, "
             "1 thread, ORT_ENABLE_ALL.  Load average (1/5/15 min) %.1f/%.1f/%.1f at the start, %.1f/%.1f/%.1f at "
             "the end: %s.\n" % (
                 R["source"].get("commit", "?"), R["started"], R["machine"].get("cpu", "?"), R["machine"].get("nproc", 0),
                 R["postgres"].split(",")[0], la0[0], la0[1], la0[2], la1[0], la1[1], la1[2],
                 "a shared, noisy machine" if max(la0[0], la1[0]) > 1.5 else "a quiet machine"))
    L.append("".join("pepnet %s: %s.\n" % (pr, R.get(pr, "not tried")) for pr in REDUCED))
    L += score_table(R, precs)
    L.append("Parity (max abs diff of probabilities, all tasks, same requests): " + "; ".join(
        "N=%s: %s" % (n, ", ".join("%s %.1e" % (k, v) for k, v in p.items())) for n, p in R["parity"].items()) + ".\n")
    E = R["e2e"]
    z = R["e2e_sizes"]
    L.append("**End to end**, CPU seconds of every process (client + backends + parallel workers), median of %d runs; "
             "top-20 over %s candidates for one user, table job over %s rows (%d users x %d candidates):\n" % (
                 len(E["top20_ort_fp32"]["runs"]), fmt(z["top_rows"]), fmt(z["rows"]), z["users"], z["per_user"]))
    L.append("| job | CPU s total | client | backend(s) | where the time goes | wall s |")
    L.append("|---|---:|---:|---:|---|---:|")
    w = R.get("workers", 0)
    labels = {
        "top20_pepnet_score_query": "top-20, pepnet_score_query ... ORDER BY score DESC LIMIT 20 (fp32, serial)",
        "top20_pepnet_score_query_parallel": "top-20, the same with max_parallel_workers_per_gather = %d" % w,
        "top20_pepnet_bf16_score_query": "top-20, the same in bf16",
        "top20_pepnet_int8_score_query": "top-20, the same in int8",
        "top20_pepnet_score": "top-20, pepnet_score over array_agg, ids by subscript (fp32)",
        "top20_pepnet_score_rows": "top-20, named form: pepnet_score_rows over ARRAY(SELECT c FROM view c) (fp32)",
        "top20_ort_fp32": "top-20, C pipeline: binary COPY out, ORT fp32 batches of 1,000, heap",
        "top20_ort_int8": "top-20, the same with ORT int8",
        "table_pepnet_ctas": "table, CREATE TABLE AS ... pepnet_score_query (fp32, serial)",
        "table_pepnet_ctas_parallel": "table, the same with max_parallel_workers_per_gather = %d" % w,
        "table_pepnet_bf16_ctas": "table, the same in bf16",
        "table_pepnet_int8_ctas": "table, the same in int8",
        "table_ort_fp32": "table, C pipeline: binary COPY out, ORT fp32, binary COPY in (2 connections)",
        "table_ort_int8": "table, the same with ORT int8",
        "table_floor_ctas": "(floor) CREATE TABLE AS SELECT uid, id, 0.5 FROM the table: no model",
        "table_floor_copy_out": "(floor) SELECT count(*) over the data query: reading the rows",
    }
    for k, lab in labels.items():
        if k not in E:
            continue
        runs = E[k]["runs"]
        where = ""
        if "client_ort" in runs[0]:
            where = "client: ORT %.2f, hashing %.2f, COPY/libpq/parsing %.2f" % (
                med(runs, "client_ort"), med(runs, "client_hash"), med(runs, "client_copy_rest"))
            if "backend_in_cpu" in runs[0]:
                where += "; backends: COPY out %.2f, COPY in %.2f" % (med(runs, "backend_out_cpu"), med(runs, "backend_in_cpu"))
        if k.endswith("_parallel"):
            where = "leader %.2f + workers %.2f" % (med(runs, "backend_cpu"), med(runs, "workers_cpu"))
        L.append("| %s | **%.2f** | %.2f | %.2f | %s | %.2f |" % (
            lab, E[k]["median_cpu"], med(runs, "client_cpu"), med(runs, "backend_cpu") + med(runs, "workers_cpu"),
            where, med(runs, "wall")))
    L.append("")

    def ratio(a, b):
        return E[a]["median_cpu"] / E[b]["median_cpu"] if a in E and b in E else float("nan")
    L.append("Ratios (pipeline CPU / pepnet CPU, > 1 = pepnet ahead): top-20 fp32 %.2fx (parallel %.2fx, pepnet_score "
             "form %.2fx, pepnet_score_rows %.2fx), table fp32 %.2fx (parallel %.2fx); against ORT int8: top-20 %.2fx, "
             "table %.2fx.\n" % (
                 ratio("top20_ort_fp32", "top20_pepnet_score_query"),
                 ratio("top20_ort_fp32", "top20_pepnet_score_query_parallel"),
                 ratio("top20_ort_fp32", "top20_pepnet_score"), ratio("top20_ort_fp32", "top20_pepnet_score_rows"),
                 ratio("table_ort_fp32", "table_pepnet_ctas"), ratio("table_ort_fp32", "table_pepnet_ctas_parallel"),
                 ratio("top20_ort_int8", "top20_pepnet_score_query"), ratio("table_ort_int8", "table_pepnet_ctas")))
    for pr in ("bf16", "int8"):
        if "top20_pepnet_%s_score_query" % pr in E:
            L.append("Same precision on both sides where ORT has it: pepnet %s against ORT int8: top-20 %.2fx, table %.2fx; "
                     "against ORT fp32: top-20 %.2fx, table %.2fx.\n" % (
                         pr, ratio("top20_ort_int8", "top20_pepnet_%s_score_query" % pr),
                         ratio("table_ort_int8", "table_pepnet_%s_ctas" % pr),
                         ratio("top20_ort_fp32", "top20_pepnet_%s_score_query" % pr),
                         ratio("table_ort_fp32", "table_pepnet_%s_ctas" % pr)))
    L.append("Checks: %s.\n" % json.dumps(R["e2e_checks"]))
    return "\n".join(L)


if __name__ == "__main__":
    main()
