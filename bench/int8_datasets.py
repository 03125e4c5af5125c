#!/usr/bin/python3
"""int8 scoring against fp32 on trained models: probabilities, AUC, logloss, calibration, speed.

    bench/int8_datasets.sh                       # throwaway cluster, data, this script (writes bench/out/int8_datasets.md)
    eval "$(test/pg.sh env)"; export PGDATABASE=...      # or by hand, in a database with pepnet
    bench/load_data.py all                               # data.<name>_{train,valid,test}
    bench/int8_datasets.py [--datasets synth,aliccp,mind,douban] [--rows 200000] [--epochs 2] [--out bench/out]

Issue 18 item 3's accuracy goal: int8 scores within 1e-2 of fp32 and test AUC within 1e-3, on the
demo and bench models. For each data set a model is trained with CALL pepnet_train (validation
table, deploy => true, seed 0): synth is the demo (examples/synth.sql with form=columns, the demo's
named config and schedule, --rows rows), the real samples use bench/configs/<name>.json. Then the
deployed version's test rows are scored in both precisions (SET pepnet.precision): pepnet_evaluate
(AUC, logloss, mean prediction, PCOC per domain and task) and pepnet_score_query (the probability of
every task of every row, to compare row by row). The bench model (bench/bench-config.json,
StarPepNet.init_random, as in bench/ort) is scored on 20,000 random candidates in both precisions
(probabilities only: its weights are random, its AUC means nothing). Speed: CPU time of the backend
for pepnet_score_query over each test table, int8 and fp32 alternated (3 rounds each), as a ratio.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time

import numpy as np
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import bench_score as bs  # noqa: E402  (the bench model, requests, machine info)

# the demo's named config (examples/demo.sh)
SYNTH_CONFIG = {
    "inputs": "columns", "domains": 4,
    "features": [{"name": "item_id", "buckets": 20000}, {"name": "category", "buckets": 1000},
                 {"name": "hour", "buckets": 24, "hash": False}, {"name": "device", "buckets": 4, "hash": False},
                 {"name": "noise1", "buckets": 1000}, {"name": "noise2", "buckets": 64}],
    "persona": [{"name": "user_id", "buckets": 5000}, {"name": "age", "buckets": 8, "hash": False},
                {"name": "segment", "buckets": 20, "hash": False}],
    "dense": [{"name": "item_views", "log1p": True, "normalize": "zscore"}],
    "emb_dim": 16, "tasks": ["click", "buy"], "hidden": [128, 64]}


def cpu_of(pid):
    """CPU seconds of a local process (the backend), from /proc/<pid>/schedstat."""
    with open("/proc/%d/schedstat" % pid) as f:
        return int(f.read().split()[0]) * 1e-9


def coldef(cur, query):
    """The column definition list of pepnet_score_query's result for a data query whose every column passes
    through (the named form) or whose only key is rid (the positional form: field columns are consumed)."""
    cur.execute("SELECT * FROM (%s) q LIMIT 0" % query)
    cols = [(d.name, d.type_code) for d in cur.description]
    out = []
    for name, oid in cols:
        cur.execute("SELECT pg_catalog.format_type(%s, NULL)", (oid,))
        out.append('"%s" %s' % (name, cur.fetchone()[0]))
    return cols, out


def scores(cur, mref, query, named):
    """{rid: [p_task...]} of the rows of query (a column rid first) in the session's precision."""
    cols, defs = coldef(cur, query)
    if not named:
        defs = [defs[0]]
    cur.execute("SELECT rid, scores FROM pepnet_score_query(%%s, %%s) AS t(%s, score float8, scores float8[])"
                % ", ".join(defs), (mref, query))
    return dict(cur.fetchall())


def evaluate(cur, mref, query):
    cur.execute("SELECT domain, task, rows, auc, logloss, mean_p, actual, pcoc FROM pepnet_evaluate(%s, %s)",
                (mref, query))
    return [dict(zip(("domain", "task", "rows", "auc", "logloss", "mean_p", "actual", "pcoc"), r)) for r in cur.fetchall()]


def train(cur, name, cfg, train_q, valid_q, epochs, batch, lr, schedule=None):
    cur.execute("DELETE FROM pepnet.deployments WHERE name = %s", (name,))
    cur.execute("DELETE FROM pepnet.models WHERE name = %s", (name,))
    cur.execute("CALL pepnet_train(%s, %s, %s::jsonb, validation => %s, epochs => %s, batch_size => %s, lr => %s, "
                "lr_schedule => %s::jsonb, deploy => true, seed => 0)",
                (name, train_q, json.dumps(cfg), valid_q, epochs, batch, lr, json.dumps(schedule) if schedule else None))
    cur.execute("SELECT version FROM pepnet.deployments WHERE name = %s", (name,))
    return "%s@%d" % (name, cur.fetchone()[0])


def speed(cur, backend, mref, query, named, rounds=3):
    """Backend CPU seconds of pepnet_score_query over query per precision, alternated; medians."""
    _, defs = coldef(cur, query)
    if not named:
        defs = [defs[0]]
    t = {"fp32": [], "int8": []}
    for _ in range(rounds):
        for pr in ("fp32", "int8"):
            cur.execute("SET pepnet.precision = " + pr)
            c0 = cpu_of(backend)
            cur.execute("SELECT count(*) FROM pepnet_score_query(%%s, %%s) AS t(%s, score float8, scores float8[])"
                        % ", ".join(defs), (mref, query))
            cur.fetchone()
            t[pr].append(cpu_of(backend) - c0)
    cur.execute("SET pepnet.precision = fp32")
    return {pr: float(np.median(v)) for pr, v in t.items()}


def compare(cur, mref, test_q, key_q, named):
    """Both precisions: evaluation rows and row-by-row probabilities; the differences."""
    res = {}
    sc = {}
    for pr in ("fp32", "int8"):
        cur.execute("SET pepnet.precision = " + pr)
        res[pr] = evaluate(cur, mref, test_q)
        sc[pr] = scores(cur, mref, key_q, named)
    cur.execute("SET pepnet.precision = fp32")
    keys = sorted(sc["fp32"])
    a = np.array([sc["fp32"][k] for k in keys], dtype=np.float64)
    b = np.array([sc["int8"][k] for k in keys], dtype=np.float64)
    d = np.abs(a - b)
    ev = []
    for r32, r8 in zip(res["fp32"], res["int8"]):
        assert (r32["domain"], r32["task"]) == (r8["domain"], r8["task"])
        ev.append({"domain": r32["domain"], "task": r32["task"], "rows": r32["rows"],
                   "auc_fp32": r32["auc"], "auc_int8": r8["auc"],
                   "d_auc": None if r32["auc"] is None else r8["auc"] - r32["auc"],
                   "logloss_fp32": r32["logloss"], "logloss_int8": r8["logloss"],
                   "pcoc_fp32": r32["pcoc"], "pcoc_int8": r8["pcoc"]})
    return {"rows": len(keys), "max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean()),
            "p99_abs_dp": float(np.quantile(d, 0.99)), "eval": ev}


def bench_model(cur):
    """The bench model (random weights) on random candidates: probabilities in both precisions."""
    cfg = json.load(open(os.path.join(HERE, "bench-config.json")))
    c = bs.ref.Config(cfg)
    model = bs.ref.StarPepNet(c).init_random(bs.SEED)
    cur.execute("DELETE FROM pepnet.deployments WHERE name = 'int8_bench'")
    cur.execute("DELETE FROM pepnet.models WHERE name = 'int8_bench'")
    cur.execute("SELECT pepnet_import('int8_bench', %s::jsonb, %s::bytea)",
                (json.dumps(cfg), psycopg2.Binary(bs.ref.safetensors_dumps(model.tensors()))))
    mref = "int8_bench@%d" % cur.fetchone()[0]
    rng = np.random.default_rng(bs.SEED)
    reqs = bs.make_requests(rng, c, 20, 1000)
    out = {}
    for pr in ("fp32", "int8"):
        cur.execute("SET pepnet.precision = " + pr)
        ps = []
        for d, p, f in reqs:
            cur.execute("SELECT scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[]) ORDER BY idx",
                        (mref, d, bs.arr_lit(p), bs.arr_lit(f)))
            ps += [r[0] for r in cur.fetchall()]
        out[pr] = np.array(ps, dtype=np.float64)
    cur.execute("SET pepnet.precision = fp32")
    d = np.abs(out["fp32"] - out["int8"])
    return {"rows": int(out["fp32"].shape[0]), "max_abs_dp": float(d.max()), "mean_abs_dp": float(d.mean()),
            "p99_abs_dp": float(np.quantile(d, 0.99))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="synth,aliccp,mind,douban")
    ap.add_argument("--rows", type=int, default=200000, help="rows of the synthetic demo data")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    t0 = time.time()
    R = {"started": datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC"), "loadavg_start": os.getloadavg(),
         "machine": bs.machine_info(), "source": bs.source_info(), "datasets": {}}
    conn = psycopg2.connect("", options="-c max_parallel_workers_per_gather=0")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    cur.execute("SET pepnet.precision = int8")     # fails here on a build without the int8 mode
    cur.execute("SET pepnet.precision = fp32")
    for ds in args.datasets.split(","):
        if ds == "synth":
            env = dict(os.environ)
            subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "rows=%d" % args.rows, "-v", "seed=1",
                            "-v", "form=columns", "-f", os.path.join(ROOT, "examples", "synth.sql")],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            steps = (args.rows * 8 // 10 + 511) // 512
            sched = {"warmup_steps": steps // 6, "decay": "cosine", "decay_steps": args.epochs * steps - steps // 6}
            mref = train(cur, "int8_synth", SYNTH_CONFIG, "SELECT * FROM synth_train", "SELECT * FROM synth_valid",
                         args.epochs, 512, 2e-3, sched)
            test_q = "SELECT * FROM synth_test"
            cur.execute("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
                        "WHERE attrelid = 'synth_test'::regclass AND attnum > 0 AND NOT attisdropped "
                        "AND attname NOT IN ('click', 'buy')")
            key_q = "SELECT ctid::text AS rid, %s FROM synth_test" % cur.fetchone()[0]
            named = True
        else:
            cfg = json.load(open(os.path.join(HERE, "configs", ds + ".json")))
            cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'data' "
                        "AND table_name = %s AND column_name = 'dense'", (ds + "_test",))
            dense = ", dense" if cur.fetchone()[0] else ""
            cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'data' "
                        "AND table_name = %s AND column_name = 'labels'", (ds + "_test",))
            lab = "labels" if cur.fetchone()[0] else "label"
            q = "SELECT domain, persona, features%s, %s FROM data.%s_%%s" % (dense, lab, ds)
            mref = train(cur, "int8_" + ds, cfg, q % "train", q % "valid", 5 if ds != "aliccp" else args.epochs,
                         512, 1e-3)
            test_q = q % "test"
            key_q = "SELECT ctid::text AS rid, domain, persona, features%s FROM data.%s_test" % (dense, ds)
            named = False
        r = compare(cur, mref, test_q, key_q, named)
        r["model"] = mref
        r["cpu_s"] = speed(cur, backend, mref, key_q, named)
        R["datasets"][ds] = r
        print("[%6.1fs] %s: %d rows, max |dp| %.2e, %s" % (
            time.time() - t0, ds, r["rows"], r["max_abs_dp"],
            "; ".join("%s AUC %.4f -> %.4f" % (e["task"], e["auc_fp32"], e["auc_int8"])
                      for e in r["eval"] if e["domain"] is None and e["auc_fp32"] is not None)), flush=True)
    R["bench_model"] = bench_model(cur)
    print("[%6.1fs] bench model: max |dp| %.2e" % (time.time() - t0, R["bench_model"]["max_abs_dp"]), flush=True)
    R["loadavg_end"] = os.getloadavg()
    os.makedirs(args.out, exist_ok=True)
    json.dump(R, open(os.path.join(args.out, "int8_datasets.json"), "w"), indent=1, default=str)
    open(os.path.join(args.out, "int8_datasets.md"), "w").write(report(R))
    print(report(R))
    bad = [ds for ds, r in R["datasets"].items() if r["max_abs_dp"] > 1e-2 or any(
        e["d_auc"] is not None and e["domain"] is None and abs(e["d_auc"]) > 1e-3 for e in r["eval"])]
    if R["bench_model"]["max_abs_dp"] > 1e-2:
        bad.append("bench model")
    print("goal (max |dp| <= 1e-2, overall test AUC within 1e-3 per task): %s" % (
        "met on every model" if not bad else "NOT met on " + ", ".join(bad)))


def report(R):
    L = ["Commit %s, %s; CPU: %s (%d CPUs); load average %.1f/%.1f/%.1f at the start, %.1f/%.1f/%.1f at the end.\n" % (
        R["source"].get("commit", "?"), R["started"], R["machine"].get("cpu", "?"), R["machine"].get("nproc", 0),
        *R["loadavg_start"], *R["loadavg_end"])]
    L.append("| model | test rows | task | AUC fp32 | AUC int8 | d AUC | max d AUC per domain | logloss fp32 / int8 | "
             "PCOC fp32 / int8 | max abs dp | p99 abs dp | mean abs dp | CPU int8 / fp32 |")
    L.append("|---|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|")
    for ds, r in R["datasets"].items():
        for e in r["eval"]:
            if e["domain"] is not None:
                continue
            per = [abs(x["d_auc"]) for x in r["eval"] if x["task"] == e["task"] and x["domain"] is not None
                   and x["d_auc"] is not None]
            sp = r["cpu_s"]
            L.append("| %s (%s) | %d | %s | %s | %s | %s | %s | %.4f / %.4f | %s / %s | %.1e | %.1e | %.1e | %s |" % (
                ds, r["model"], r["rows"], e["task"],
                "%.4f" % e["auc_fp32"] if e["auc_fp32"] is not None else "-",
                "%.4f" % e["auc_int8"] if e["auc_int8"] is not None else "-",
                "%+.5f" % e["d_auc"] if e["d_auc"] is not None else "-",
                "%.5f" % max(per) if per else "-",
                e["logloss_fp32"], e["logloss_int8"],
                "%.3f" % e["pcoc_fp32"] if e["pcoc_fp32"] is not None else "-",
                "%.3f" % e["pcoc_int8"] if e["pcoc_int8"] is not None else "-",
                r["max_abs_dp"], r["p99_abs_dp"], r["mean_abs_dp"],
                "%.2fx (%.3f / %.3f s)" % (sp["int8"] / sp["fp32"], sp["int8"], sp["fp32"]) if sp else "-"))
    b = R["bench_model"]
    L.append("| bench model (random weights) | %d | all | | | | | | | %.1e | %.1e | %.1e | |" % (
        b["rows"], b["max_abs_dp"], b["p99_abs_dp"], b["mean_abs_dp"]))
    L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    main()
