"""Scoring benchmark of pepnet's batched engine (issue 8): oneDNN tiles, bf16, batch scoring.

Run with Debian's /usr/bin/python3 against a running cluster with pepnet installed (libpq
environment); bench/run_engine.sh does everything end to end.

    /usr/bin/python3 bench/bench_engine.py [--out bench/out] [--quick] [--bin DIR]

Measures, in one run, interleaved in rounds so that a shared host affects every side alike:
 1. pepnet_score at N = 10, 100, 1000 candidates per call (prepared statement, every row fetched
    by the client) with pepnet.precision fp32 and bf16, against the efficient PyTorch scorer of
    bench_score.py (per-domain fusion, PN folded, persona gate parts once per request; 1 thread)
    in fp32 and in bf16 (every tensor bfloat16: F.linear runs oneDNN's bf16 kernels).
 2. pepnet_predict row by row over a table against PyTorch one candidate per call.
 3. The nightly job: INSERT INTO t SELECT ... FROM pepnet_score_query(...) against
    INSERT INTO t SELECT ..., pepnet_predict(...) FROM the same table.
 4. First score of a fresh backend (connect, then the first pepnet_score of N = 100: model load,
    domain fusion, oneDNN primitive creation and JIT, weight packing), no server settings.
 5. The SQL glue's cost per candidate: pepnet_score's server CPU per candidate minus the C core's
    (bench/engine_rate.c) at N = 1000.
 6. GEMM rates of OpenBLAS and oneDNN at pepnet's shapes (bench/gemm_rate.c).

Wall-clock medians; server CPU from /proc/<backend>/schedstat, client CPU from the process.
Writes <out>/engine.md (also printed) and <out>/engine.json.
"""
import argparse
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
sys.path.insert(0, HERE)
import bench_score as bs  # noqa: E402  (pins torch and OpenBLAS to one thread)

ref = bs.ref
NS = [10, 100, 1000]
SEED = 2


def to_bf16(obj):
    """Every float tensor inside obj (attributes, dicts, lists, tuples) as bfloat16."""
    if isinstance(obj, torch.Tensor):
        return obj.to(torch.bfloat16) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: to_bf16(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_bf16(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_bf16(v) for v in obj)
    return obj


def fast_bf16(model):
    f = bs.FastPepNet(model)
    for k, v in list(vars(f).items()):
        if k not in ("c", "t"):
            setattr(f, k, to_bf16(v))
    return f


def median(xs):
    return statistics.median(xs)


def bench_score(cur, mref, fast32, fast16, reqs_by_n, calls, rounds, log):
    cur.execute("DEALLOCATE ALL")
    cur.execute("PREPARE s(int, bigint[], bigint[]) AS SELECT idx, score, scores FROM pepnet_score('%s', $1, $2, $3)"
                % mref)
    cur.execute("PREPARE c(int, bigint[], bigint[]) AS SELECT count(*) FROM pepnet_score('%s', $1, $2, $3)" % mref)
    # the same parameters parsed (array_in of the text literals) and nothing else
    cur.execute("PREPARE p(int, bigint[], bigint[]) AS SELECT cardinality($2) + cardinality($3)")
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    out = {}
    for n in NS:
        meter = bs.CpuMeter(pid)  # per N: kinds accumulate calls and CPU
        reqs = reqs_by_n[n]
        lits = [(d, bs.arr_lit(p), bs.arr_lit(f)) for d, p, f in reqs]
        secs = {k: [] for k in ("pepnet_fp32", "pepnet_bf16", "torch_fp32", "torch_bf16", "server_fp32", "server_bf16", "parse_only")}
        per = max(1, calls[n] // rounds)
        ctr = [0]

        def sql(stmt):
            def fn(i):
                cur.execute(stmt, lits[(ctr[0] + i) % len(lits)])
                cur.fetchall()
            return fn

        def tfn(fast):
            def fn(i):
                d, p, f = reqs[(ctr[0] + i) % len(reqs)]
                fast.predict(d, p, f)
            return fn

        for prec in ("fp32", "bf16"):  # warm: domains fused, primitives made, weights packed
            cur.execute("SET pepnet.precision = " + prec)
            for lit in lits:
                cur.execute("EXECUTE s(%s, %s, %s)", lit)
                assert len(cur.fetchall()) == n
        with torch.no_grad():
            tfn(fast32)(0), tfn(fast16)(0)
            for _ in range(rounds):
                for prec in ("fp32", "bf16"):
                    cur.execute("SET pepnet.precision = " + prec)
                    k = "pepnet_" + prec
                    secs[k] += meter.measure(k, per, lambda: bs.timed(sql("EXECUTE s(%s, %s, %s)"), per, warm=1))
                    k = "server_" + prec
                    secs[k] += meter.measure(k, per, lambda: bs.timed(sql("EXECUTE c(%s, %s, %s)"), per, warm=1))
                secs["parse_only"] += meter.measure("parse_only", per, lambda: bs.timed(sql("EXECUTE p(%s, %s, %s)"), per, warm=1))
                secs["torch_fp32"] += meter.measure("torch_fp32", per, lambda: bs.timed(tfn(fast32), per, warm=1))
                secs["torch_bf16"] += meter.measure("torch_bf16", per, lambda: bs.timed(tfn(fast16), per, warm=1))
                ctr[0] += per
        r = {}
        for k, v in secs.items():
            r[k] = bs.lat_stats(v)
            r[k]["cand_per_s"] = n / median(v)
            r[k].update(meter.per_call(k))
            # PyTorch: its process; pepnet: the backend plus the client fetching the rows
            cpu = r[k]["client_cpu_ms"] if k.startswith("torch") else (
                r[k]["server_cpu_ms"] + r[k]["client_cpu_ms"] if r[k]["server_cpu_ms"] is not None else None)
            if cpu:
                r[k]["cpu_cand_per_s"] = n / (cpu / 1e3)
        out[n] = r
        log("N=%d cand/s: pepnet fp32 %.0f bf16 %.0f | torch fp32 %.0f bf16 %.0f" % (
            n, r["pepnet_fp32"]["cand_per_s"], r["pepnet_bf16"]["cand_per_s"], r["torch_fp32"]["cand_per_s"],
            r["torch_bf16"]["cand_per_s"]))
    cur.execute("SET pepnet.precision = fp32")
    return out


def load_table(cur, rows):
    import io
    cur.execute("DROP TABLE IF EXISTS be_cands, be_out")
    cur.execute("CREATE TABLE be_cands (id int, uid int, domain int, persona bigint[], features bigint[])")
    buf = io.StringIO()
    for i, (u, d, p, f) in enumerate(rows):
        buf.write("%d\t%d\t%d\t%s\t%s\n" % (i, u, d, bs.arr_lit(p), bs.arr_lit(f)))
    buf.seek(0)
    cur.copy_expert("COPY be_cands FROM STDIN", buf)
    cur.execute("VACUUM ANALYZE be_cands")
    cur.execute("CREATE TABLE be_out (uid int, id int, score float8)")


def bench_batch(cur, mref, rows, fast32, runs, one_rows, log):
    """The nightly job and pepnet_predict row by row, interleaved; PyTorch one candidate per call."""
    nrows = len(rows)
    cur.execute("SET max_parallel_workers_per_gather = 0")
    qs = {
        "insert_predict": "INSERT INTO be_out SELECT uid, id, pepnet_predict('%s', domain, persona, features) "
                          "FROM be_cands" % mref,
        "insert_score_query": "INSERT INTO be_out SELECT uid, id, score FROM pepnet_score_query('%s', "
                              "'SELECT uid, id, domain, persona, features FROM be_cands') "
                              "AS t(uid int, id int, score float8, scores float8[])" % mref,
        "select_predict": "SELECT sum(pepnet_predict('%s', domain, persona, features)) FROM be_cands" % mref,
    }
    secs = {k: [] for k in list(qs) + ["torch_one"]}
    cur.execute("SELECT pg_backend_pid()")
    meter = bs.CpuMeter(cur.fetchone()[0])

    def run(k):
        cur.execute("TRUNCATE be_out")
        t0 = time.perf_counter()
        cur.execute(qs[k])
        if k.startswith("select"):
            cur.fetchall()
        return time.perf_counter() - t0

    def torch_one():
        fast32._pkey = None
        t0 = time.perf_counter()
        for u, d, p, f in rows[:one_rows]:
            fast32.predict(d, p, f)
        return time.perf_counter() - t0

    for k in qs:
        run(k)
    with torch.no_grad():
        torch_one()
        for _ in range(runs):
            for k in qs:
                secs[k].append(meter.measure(k, 1, lambda: run(k)))
            secs["torch_one"].append(meter.measure("torch_one", 1, torch_one))
    out = {}
    for k, v in secs.items():
        m = one_rows if k == "torch_one" else nrows
        out[k] = {"seconds": v, "median_s": median(v), "rows_per_s": m / median(v)}
        out[k].update(meter.per_call(k))
        cpu = out[k]["client_cpu_ms"] if k == "torch_one" else out[k]["server_cpu_ms"]
        if cpu:
            out[k]["cpu_rows_per_s"] = m / (cpu / 1e3)
    cur.execute("SELECT count(*) FROM be_out")
    out["rows_written"] = cur.fetchone()[0]
    cur.execute("RESET max_parallel_workers_per_gather")
    log("batch: INSERT..pepnet_score_query %.0f rows/s, INSERT..pepnet_predict %.0f rows/s (%.2fx); "
        "SELECT pepnet_predict %.0f rows/s; torch one per call %.0f cand/s" % (
            out["insert_score_query"]["rows_per_s"], out["insert_predict"]["rows_per_s"],
            out["insert_score_query"]["rows_per_s"] / out["insert_predict"]["rows_per_s"],
            out["select_predict"]["rows_per_s"], out["torch_one"]["rows_per_s"]))
    return out


def bench_first(mref, req, conns, log):
    d, p, f = req
    lit = (d, bs.arr_lit(p), bs.arr_lit(f))
    q = "SELECT idx, score, scores FROM pepnet_score('%s', %%s, %%s::bigint[], %%s::bigint[])" % mref
    out = {}
    for prec in ("fp32", "bf16"):
        first, second, first_cpu = [], [], []
        for _ in range(conns):
            conn = psycopg2.connect("", options="-c pepnet.precision=" + prec)
            cur = conn.cursor()
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            s0 = bs.sched(pid)
            t0 = time.perf_counter()
            cur.execute(q, lit)
            cur.fetchall()
            t1 = time.perf_counter()
            s1 = bs.sched(pid)
            if s0 and s1:
                first_cpu.append((s1[0] - s0[0]) / 1e9)
            cur.execute(q, lit)
            cur.fetchall()
            t2 = time.perf_counter()
            first.append(t1 - t0)
            second.append(t2 - t1)
            conn.close()
        out[prec] = {"first": bs.lat_stats(first), "second": bs.lat_stats(second),
                     "first_server_cpu": bs.lat_stats(first_cpu) if first_cpu else None}
        log("first score %s: %.1f ms (p10 %.1f, p90 %.1f; backend CPU %.1f ms), second %.2f ms" % (
            prec, out[prec]["first"]["median_ms"], out[prec]["first"]["p10_ms"], out[prec]["first"]["p90_ms"],
            out[prec]["first_server_cpu"]["median_ms"] if first_cpu else float("nan"), out[prec]["second"]["median_ms"]))
    return out


def build(bindir, src, name, libs):
    path = os.path.join(bindir, name)
    core = ["src/core/%s.c" % s for s in ("alloc", "json", "config", "model", "infer", "dnnl", "engine", "train")]
    cmd = ["cc", "-O3", "-fno-math-errno", "-fno-trapping-math", "-Isrc/core", "-o", path, src] + \
        (core if name == "engine_rate" else []) + libs
    subprocess.run(cmd, check=True, cwd=bs.ROOT)
    return path


def report(R):
    L = []
    S = R["score"]
    L.append("Commit %s, %s; load average %.1f at start, %.1f at end; CPU %s; oneDNN ISA %s.\n" % (
        R["source"].get("commit", "?"), R["started"], R["loadavg_start"], R["loadavg_end"],
        R["machine"].get("cpu", "?"), R["isa"]))
    L.append("**pepnet_score vs PyTorch** (bench model, 1 thread, same weights; candidates/s from the median "
             "wall time per call, rows fetched by the client; in brackets: from server/process CPU time)\n")
    L.append("| N | PyTorch fp32 | PyTorch bf16 | pepnet fp32 | pepnet bf16 | pepnet fp32 / PyTorch fp32 | "
             "pepnet bf16 / PyTorch bf16 |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for n in NS:
        r = S[str(n)]

        def c(k):
            v = r[k]
            return "%s (%s)" % (bs.fmt(v["cand_per_s"]), bs.fmt(v.get("cpu_cand_per_s", 0)))
        L.append("| %d | %s | %s | %s | %s | **%.2fx** | **%.2fx** |" % (
            n, c("torch_fp32"), c("torch_bf16"), c("pepnet_fp32"), c("pepnet_bf16"),
            r["pepnet_fp32"]["cand_per_s"] / r["torch_fp32"]["cand_per_s"],
            r["pepnet_bf16"]["cand_per_s"] / r["torch_bf16"]["cand_per_s"]))
    core = R["core"]
    L.append("\n**C core alone** (bench/engine_rate.c, CPU time, N = 1000): oneDNN fp32 %s cand/s, bf16 %s, "
             "the 0.1 OpenBLAS path %s; bf16 vs fp32 scores: max |dp| %.2g.\n" % (
                 bs.fmt(core["1000"]["onednn_fp32_cand_s"]), bs.fmt(core["1000"]["onednn_bf16_cand_s"]),
                 bs.fmt(core["1000"]["openblas_cand_s"]), R["bf16_error"]))
    g = R["glue"]
    L.append("**SQL glue per candidate** (N = 1000: server CPU of `SELECT count(*) FROM pepnet_score(...)` minus the "
             "core's time minus the parsing of the text parameters, `SELECT cardinality($2) + cardinality($3)`): "
             "fp32 %.2f - %.2f - %.2f = **%.2f us**, bf16 %.2f - %.2f - %.2f = **%.2f us**.\n" % (
                 g["fp32"]["server_us"], g["fp32"]["core_us"], g["fp32"]["parse_us"], g["fp32"]["glue_us"],
                 g["bf16"]["server_us"], g["bf16"]["core_us"], g["bf16"]["parse_us"], g["bf16"]["glue_us"]))
    B = R["batch"]
    L.append("**Batch scoring** (%d rows: %d users x %d candidates, serial plans, median of %d interleaved runs)\n" % (
        R["table_rows"], R["users"], R["per_user"], R["runs"]))
    L.append("| job | rows/s (wall) | rows/s (server CPU) | vs INSERT ... pepnet_predict |")
    L.append("|---|---:|---:|---:|")
    base = B["insert_predict"]["rows_per_s"]
    for k, label in (("insert_predict", "INSERT ... SELECT pepnet_predict(...)"),
                     ("insert_score_query", "INSERT ... SELECT FROM pepnet_score_query(...)"),
                     ("select_predict", "SELECT sum(pepnet_predict(...))"),
                     ("torch_one", "PyTorch fp32, one candidate per call")):
        L.append("| %s | %s | %s | %.2fx |" % (label, bs.fmt(B[k]["rows_per_s"]), bs.fmt(B[k].get("cpu_rows_per_s", 0)),
                                             B[k]["rows_per_s"] / base))
    L.append("\npepnet_predict (SELECT, row by row) / PyTorch one candidate per call: **%.2fx**.\n" % (
        B["select_predict"]["rows_per_s"] / B["torch_one"]["rows_per_s"]))
    F = R["first"]
    def cpu(p):
        v = F[p].get("first_server_cpu")
        return v["median_ms"] if v else float("nan")
    L.append("**First score** of a fresh backend, no server settings (N = 100; median of %d connections, p10-p90; "
             "in brackets the backend's CPU time): fp32 **%.1f ms** (%.1f-%.1f; CPU %.1f ms), bf16 **%.1f ms** "
             "(%.1f-%.1f; CPU %.1f ms); the second call %.2f / %.2f ms.\n" % (
                 R["conns"], F["fp32"]["first"]["median_ms"], F["fp32"]["first"]["p10_ms"], F["fp32"]["first"]["p90_ms"],
                 cpu("fp32"), F["bf16"]["first"]["median_ms"], F["bf16"]["first"]["p10_ms"], F["bf16"]["first"]["p90_ms"],
                 cpu("bf16"), F["fp32"]["second"]["median_ms"], F["bf16"]["second"]["median_ms"]))
    L.append("**GEMM rates**, GFLOP/s, one thread, C = A W^T (bench/gemm_rate.c; oneDNN with weights packed, "
             "primitive for the fixed m; m = 1 is OpenBLAS's sgemv)\n")
    L.append("| k x n (layer) | m | OpenBLAS | oneDNN fp32 | oneDNN bf16 |")
    L.append("|---|---:|---:|---:|---:|")
    for g in R["gemm"]:
        L.append("| %d x %d (%s) | %d | %.0f | %.0f | %.0f |" % (g["k"], g["n"], g["what"], g["m"], g["openblas"],
                                                               g["onednn_fp32"], g["onednn_bf16"]))
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--config", default=os.path.join(HERE, "bench-config.json"))
    ap.add_argument("--bin", default="/tmp", help="where to build engine_rate and gemm_rate")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()

    def log(m):
        print("[%6.1fs] %s" % (time.time() - t0, m), flush=True)

    q = args.quick
    with open(args.config) as f:
        cfg = json.load(f)
    c = ref.Config(cfg)
    R = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": bs.machine_info(), "source": bs.source_info(),
         "loadavg_start": os.getloadavg()[0], "quick": q}
    calls = {10: 100 if q else 1000, 100: 60 if q else 400, 1000: 20 if q else 150}
    rounds = 2 if q else 8
    users, per_user = (100, 100) if q else (500, 200)
    runs = 1 if q else 3
    one_rows = 2000 if q else 10000
    R.update({"users": users, "per_user": per_user, "runs": runs, "rounds": rounds, "conns": 3 if q else 10})

    model = ref.StarPepNet(c).init_random(SEED)
    model.eval()
    blob = ref.safetensors_dumps(model.tensors())
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    cur.execute("SELECT pepnet_import('bench_engine', %s::jsonb, %s::bytea)", (json.dumps(cfg), psycopg2.Binary(blob)))
    mref = "bench_engine@%d" % cur.fetchone()[0]
    fast32 = bs.FastPepNet(model)
    fast16 = fast_bf16(model)

    rng = np.random.default_rng(SEED)
    reqs_by_n = {n: bs.make_requests(rng, c, 64, n) for n in NS}
    # parity: pepnet fp32 / bf16 against the efficient scorer
    d, p, f = reqs_by_n[1000][0]
    with torch.no_grad():
        want = fast32.predict(d, p, f).numpy()
        want16 = fast16.predict(d, p, f).float().numpy()
    got = {}
    for prec in ("fp32", "bf16"):
        cur.execute("SET pepnet.precision = " + prec)
        cur.execute("SELECT scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[]) ORDER BY idx",
                    (mref, d, bs.arr_lit(p), bs.arr_lit(f)))
        got[prec] = np.array([r[0] for r in cur.fetchall()])
    cur.execute("SET pepnet.precision = fp32")
    R["parity"] = {"pepnet_fp32_vs_torch": float(np.abs(got["fp32"] - want).max()),
                   "pepnet_bf16_vs_fp32": float(np.abs(got["bf16"] - want).max()),
                   "torch_bf16_vs_fp32": float(np.abs(want16 - want).max())}
    R["bf16_error"] = R["parity"]["pepnet_bf16_vs_fp32"]
    log("parity: %s" % R["parity"])

    er = build(args.bin, "bench/engine_rate.c", "engine_rate", ["-ldnnl", "-lgomp", "-lopenblas", "-lm"])
    gr = build(args.bin, "bench/gemm_rate.c", "gemm_rate", ["-ldnnl", "-lgomp", "-lopenblas"])
    R["core"] = {}
    R["isa"] = "?"
    for line in subprocess.run([er, args.config] + [str(n) for n in NS], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        o = json.loads(line)
        if o["kind"] == "score":
            R["core"][str(o["N"])] = o
        elif o["kind"] == "isa":
            R["isa"] = o["isa"]
    log("core alone: %s" % R["core"])

    S = bench_score(cur, mref, fast32, fast16, reqs_by_n, calls, rounds, log)
    R["score"] = {str(n): v for n, v in S.items()}
    R["glue"] = {}
    for prec, key in (("fp32", "onednn_fp32_cand_s"), ("bf16", "onednn_bf16_cand_s")):
        server_us = S[1000]["server_" + prec]["server_cpu_ms"] * 1e3 / 1000 if S[1000]["server_" + prec][
            "server_cpu_ms"] else float("nan")
        core_us = 1e6 / R["core"]["1000"][key]
        parse_us = S[1000]["parse_only"]["server_cpu_ms"] * 1e3 / 1000 if S[1000]["parse_only"]["server_cpu_ms"] \
            else float("nan")
        R["glue"][prec] = {"server_us": server_us, "core_us": core_us, "parse_us": parse_us,
                           "glue_us": server_us - core_us - parse_us}

    rows = bs.make_table_rows(rng, c, users, per_user)
    load_table(cur, rows)
    R["table_rows"] = len(rows)
    R["batch"] = bench_batch(cur, mref, rows, fast32, runs, one_rows, log)
    R["first"] = bench_first(mref, reqs_by_n[100][0], R["conns"], log)
    R["gemm"] = [json.loads(l) for l in subprocess.run([gr], capture_output=True, text=True,
                                                        check=True).stdout.splitlines()]
    R["loadavg_end"] = os.getloadavg()[0]
    conn.close()
    md = report(R)
    with open(os.path.join(args.out, "engine.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, "engine.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    print()
    print(md)


if __name__ == "__main__":
    main()
