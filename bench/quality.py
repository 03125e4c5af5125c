#!/usr/bin/python3
"""Training quality and speed of CALL pepnet_train against the PyTorch baseline (bench/train_torch.py).

    eval "$(test/pg.sh env)"; export PGDATABASE=...    # a database with pepnet and the data tables
    bench/quality.py quality [--epochs-synth 2] [--epochs-real 5] [--out bench/out]
    bench/quality.py speed [--epochs 1] [--runs 3] [--rows 100000] [--out bench/out]

Normally run by bench/quality.sh, which installs, builds, starts a cluster and loads the data.

quality: for each data set (synth = public.synth_*, examples/synth.sql; mind and douban =
data.<name>_*, bench/load_data.py) and each configuration of docs/model.md (shared bottom: epnet, ppnet,
pn, star, aux all false and domain_input; all off without the domain; STAR: star+pn+aux; PEPNet:
epnet+ppnet; STAR-PEPNet: all on), trains
with CALL pepnet_train(..., validation => ..., epochs => E, batch_size => 512, lr => 1e-3,
seed => 0) and evaluates the LAST epoch's version with pepnet_evaluate on the test table, and
runs bench/train_torch.py with the same config, epochs, batch size, lr and seed (also the last
epoch), and once more from pepnet's initial weights (--init with the pepnet_export of
pepnet_create(name, config, seed => 0)), which separates the two default initialisations from the
rest. Every epoch's validation and test metrics of all three are kept for the curves. Writes
<out>/quality.md and <out>/quality.json.

speed: a synthetic table for bench/bench-config.json (8 hashed features, 3 persona fields, 2
tasks, hidden [256, 128], 4 domains; ids within the buckets; labels drawn from a logistic model
of item, category x domain, user, age x domain, hour and p2 effects), --rows training rows plus
20 % test rows; per run: CALL pepnet_train from the table (rows_per_s of the versions: the epoch
loop including reading the rows from the table through the cursor and the shuffle buffer) and
train_torch.py --variant config (1 thread, eager, data preloaded as tensors; its samples/s
counts forward, backward and optimiser step only), both batch 512, lr 1e-3, seed 0; test AUC of
both. Median over --runs runs; per run also the samples per CPU second of both (backend CPU time
from /proc, process_time in train_torch.py) and the CPUs other processes used meanwhile (/proc/stat);
--quiet-wait S waits up to S seconds before each measurement for them to use < --quiet-cpus.
Writes <out>/train_speed.md and <out>/train_speed.json.
"""
import argparse
import datetime
import hashlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"

VARIANTS = [  # (key for train_torch.py --variant, label, switches)
    # the baseline of the STAR and PEPNet papers: one MLP over the features and the domain embedding
    ("bottom", "shared bottom", dict(epnet=False, ppnet=False, pn=False, star=False, aux=False, domain_input=True)),
    # every part off without the domain: cannot tell domains apart (docs/model.md "Baselines")
    ("shared", "all off (no domain)", dict(epnet=False, ppnet=False, pn=False, star=False, aux=False)),
    ("star", "STAR", dict(epnet=False, ppnet=False, pn=True, star=True, aux=True)),
    ("pepnet", "PEPNet", dict(epnet=True, ppnet=True, pn=False, star=False, aux=False)),
    ("full", "STAR-PEPNet", dict(epnet=True, ppnet=True, pn=True, star=True, aux=True)),
]


# ----------------------------------------------------------------------------- helpers

def connect():
    """Autocommit connection from the PG* environment (CALL pepnet_train commits itself)."""
    conn = psycopg2.connect("")
    conn.autocommit = True
    return conn


def load_info():
    """uptime's load averages and the CPU count, for the report."""
    la = os.getloadavg()
    return {"load1": round(la[0], 2), "load5": round(la[1], 2), "load15": round(la[2], 2), "cpus": os.cpu_count()}


def provenance(conn):
    """What was measured: git commit, uncommitted changes to the build inputs, the installed pepnet.so."""
    def git(*a):
        try:
            return subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    out = {"commit": git("log", "-1", "--format=%h %cI %s"),
           "dirty": git("status", "--porcelain", "--", "src", "sql", "Makefile").splitlines()}
    with conn.cursor() as cur:
        cur.execute("SELECT extversion FROM pg_extension WHERE extname = 'pepnet'")
        out["extversion"] = (cur.fetchone() or [None])[0]
    try:
        libdir = subprocess.run(["pg_config", "--pkglibdir"], capture_output=True, text=True).stdout.strip()
        so = os.path.join(libdir, "pepnet.so")
        with open(so, "rb") as fh:
            out["pepnet_so_md5"] = hashlib.md5(fh.read()).hexdigest()
        out["pepnet_so_mtime"] = datetime.datetime.fromtimestamp(os.path.getmtime(so)).isoformat(timespec="seconds")
    except OSError as e:
        out["pepnet_so_md5"] = "unreadable: %s" % e
    return out


def provenance_md(p):
    """One markdown line about provenance()."""
    return "Measured build: commit %s%s; installed pepnet.so md5 %s (%s)." % (
        p["commit"], "" if not p["dirty"] else " **plus uncommitted changes to %s**" % ", ".join(
            x[3:] for x in p["dirty"]), p.get("pepnet_so_md5"), p.get("pepnet_so_mtime"))


def data_query(table, cfg):
    """The pepnet data query of a table: one task reads `label`, several `labels`."""
    cols = ["domain", "persona", "features"]
    if cfg.get("dense"):
        cols.append("dense")
    cols.append("label" if len(cfg["tasks"]) == 1 else "labels")
    return "SELECT %s FROM %s" % (", ".join(cols), table)


def pepnet_train(conn, name, cfg, train_q, valid_q, epochs, seed=0):
    """Fresh versions of `name` (old ones deleted), trained with CALL pepnet_train; returns
    (wall seconds, [(version, metrics)])."""
    with conn.cursor() as cur:
        cur.execute("DELETE FROM pepnet.deployments WHERE name = %s", (name,))
        cur.execute("DELETE FROM pepnet.models WHERE name = %s", (name,))
        t0 = time.perf_counter()
        cur.execute("CALL pepnet_train(%s, %s, %s::jsonb, validation => %s, epochs => %s, batch_size => 512, "
                    "lr => 1e-3, seed => %s, progress_interval => 0)",
                    (name, train_q, json.dumps(cfg), valid_q, epochs, seed))
        wall = time.perf_counter() - t0
        cur.execute("SELECT version, metrics FROM pepnet.models WHERE name = %s ORDER BY version", (name,))
        versions = cur.fetchall()
    if len(versions) != epochs:
        raise SystemExit("%s: expected %d versions, found %d" % (name, epochs, len(versions)))
    return wall, versions


def backend_cpu(conn):
    """CPU seconds (user + system) used so far by the connection's backend process (/proc, same machine)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    with open("/proc/%d/stat" % pid) as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def system_busy():
    """CPU seconds all CPUs have spent busy (not idle / iowait) since boot, from /proc/stat."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    """CPU seconds used by finished child processes of this one (user + system)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_cpus, max_wait, window=2.0):
    """Wait (at most max_wait seconds) until the other processes use less than max_cpus CPUs over a
    window; returns the CPUs they used in the last window."""
    t_end = time.time() + max_wait
    while True:
        b0, t0 = system_busy(), time.time()
        time.sleep(window)
        used = (system_busy() - b0) / (time.time() - t0)
        if used < max_cpus or time.time() >= t_end:
            return round(used, 2)


def pepnet_evaluate(conn, ref, test_q):
    """{task: {"overall": {rows, auc, logloss}, "domains": {d: {...}}}} from pepnet_evaluate."""
    out = {}
    with conn.cursor() as cur:
        cur.execute("SELECT domain, task, rows, auc, logloss FROM pepnet_evaluate(%s, %s)", (ref, test_q))
        for domain, task, rows, auc, ll in cur.fetchall():
            t = out.setdefault(task, {"overall": None, "domains": {}})
            m = {"rows": rows, "auc": auc, "logloss": ll}
            if domain is None:
                t["overall"] = m
            else:
                t["domains"][str(domain)] = m
    return out


def run_torch(args_list, log_path):
    """bench/train_torch.py with arguments; its JSON output (stderr kept in log_path)."""
    cmd = [PY, os.path.join(HERE, "train_torch.py")] + args_list
    with open(log_path, "w") as err:
        err.write("$ %s\n" % " ".join(cmd))
        err.flush()
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    if p.returncode:
        raise SystemExit("train_torch.py failed (%d), see %s" % (p.returncode, log_path))
    return json.loads(p.stdout)


def auc_se(a, npos, nneg):
    """Hanley-McNeil standard error of an AUC a with npos positives and nneg negatives."""
    if a is None or not npos or not nneg:
        return None
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    v = (a * (1 - a) + (npos - 1) * (q1 - a * a) + (nneg - 1) * (q2 - a * a)) / (npos * nneg)
    return math.sqrt(max(v, 0.0))


def f4(x):
    """4 decimals or a dash."""
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else "%.4f" % x


def sgn4(x):
    """Signed 4 decimals or a dash."""
    return "-" if x is None else "%+.4f" % x


# ----------------------------------------------------------------------------- quality

def quality(args):
    """Train and evaluate every (dataset, configuration) with pepnet and PyTorch; write the report."""
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    conn = connect()
    datasets = [("synth", "public", args.epochs_synth), ("mind", "data", args.epochs_real),
                ("douban", "data", args.epochs_real)]
    if args.only:
        datasets = [d for d in datasets if d[0] in args.only.split(",")]
    variants = [v for v in VARIANTS if not args.variants or v[0] in args.variants.split(",")]
    result = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "load_start": load_info(),
              "batch_size": 512, "lr": 1e-3, "seed": 0, "rule": "last epoch", "datasets": []}
    for ds, schema, epochs in datasets:
        with open(os.path.join(HERE, "configs", ds + ".json")) as fh:
            base = json.load(fh)
        tables = {s: "%s.%s_%s" % (schema, ds, s) for s in ("train", "valid", "test")}
        qs = {s: data_query(t, base) for s, t in tables.items()}
        dres = {"dataset": ds, "epochs": epochs, "tables": tables, "queries": qs, "config": base, "variants": []}
        with conn.cursor() as cur:
            for s, t in tables.items():
                cur.execute("SELECT count(*) FROM %s" % t)
                dres["rows_" + s] = cur.fetchone()[0]
        print("== %s: %d epochs, train %d / valid %d / test %d rows" % (
            ds, epochs, dres["rows_train"], dres["rows_valid"], dres["rows_test"]), file=sys.stderr)
        targs = [ds, "--epochs", str(epochs), "--batch-size", "512", "--lr", "1e-3", "--seed", "0",
                 "--test-each-epoch"]
        dres["torch_command"] = "bench/train_torch.py " + " ".join(targs) + " --variant V"
        dres["torch_same_init_command"] = dres["torch_command"] + " --init <pepnet_export of pepnet_create(.., seed => 0)>"
        for key, label, sw in variants:
            cfg = dict(base, **sw)
            name = "q_%s_%s" % (ds, key)
            print("   %s: CALL pepnet_train('%s', ...)" % (label, name), file=sys.stderr)
            wall, versions = pepnet_train(conn, name, cfg, qs["train"], qs["valid"], epochs)
            if "provenance" not in result:
                result["provenance"] = provenance(conn)
            curve = []
            for v, m in versions:
                te = pepnet_evaluate(conn, "%s@%d" % (name, v), qs["test"])
                curve.append({"version": v, "epoch": m["epoch"], "train_loss": m["train_loss"],
                              "rows_per_s": m["rows_per_s"], "seconds": m["seconds"],
                              "valid": {t: {"auc": vt["auc"], "logloss": vt["logloss"]}
                                        for t, vt in m["validation"]["tasks"].items()},
                              "test": {t: {"auc": x["overall"]["auc"], "logloss": x["overall"]["logloss"]}
                                       for t, x in te.items()},
                              "test_full": te})
            last = curve[-1]
            tr = run_torch(targs + ["--variant", key], os.path.join(args.out, "logs", "torch_%s_%s.log" % (ds, key)))
            # the same run from pepnet's initial weights (pepnet_create with the same config and seed)
            init_path = os.path.join(args.out, "init", "%s_%s.safetensors" % (ds, key))
            os.makedirs(os.path.dirname(init_path), exist_ok=True)
            with conn.cursor() as cur:
                cur.execute("DELETE FROM pepnet.models WHERE name = %s", ("init_" + name,))
                cur.execute("SELECT pepnet_create(%s, %s::jsonb, seed => 0)", ("init_" + name, json.dumps(cfg)))
                cur.execute("SELECT pepnet_export(%s)", ("init_" + name,))
                with open(init_path, "wb") as fh:
                    fh.write(bytes(cur.fetchone()[0]))
            ts = run_torch(targs + ["--variant", key, "--init", init_path],
                           os.path.join(args.out, "logs", "torch_%s_%s_pepnet_init.log" % (ds, key)))
            rec = {"variant": key, "label": label, "config": cfg, "pepnet_model": "%s@%d" % (name, last["version"]),
                   "pepnet_wall_seconds": round(wall, 3),
                   "pepnet_rows_per_s": round(sum(c["seconds"] * c["rows_per_s"] for c in curve) /
                                              sum(c["seconds"] for c in curve), 1),
                   "pepnet_test": last["test_full"], "pepnet_epochs": [{k: c[k] for k in c if k != "test_full"} for c in curve],
                   "torch_test": tr["test"], "torch_samples_per_s": tr["samples_per_s"],
                   "torch_epochs": tr["epoch_log"], "torch_impl_check": tr.get("impl_check_max_abs_diff"),
                   "torch_same_init_test": ts["test"], "torch_same_init_epochs": ts["epoch_log"]}
            dres["variants"].append(rec)
            for t in base["tasks"]:
                print("      %s: pepnet test auc %s logloss %s | torch auc %s logloss %s | torch (pepnet init) auc %s logloss %s" % (
                    t, f4(rec["pepnet_test"][t]["overall"]["auc"]), f4(rec["pepnet_test"][t]["overall"]["logloss"]),
                    f4(tr["test"][t]["overall"]["auc"]), f4(tr["test"][t]["overall"]["logloss"]),
                    f4(ts["test"][t]["overall"]["auc"]), f4(ts["test"][t]["overall"]["logloss"])), file=sys.stderr)
        result["datasets"].append(dres)
    result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    result["load_end"] = load_info()
    with open(os.path.join(args.out, "quality.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    md = quality_md(result)
    with open(os.path.join(args.out, "quality.md"), "w") as fh:
        fh.write(md)
    print(md)


def quality_md(res):
    """The markdown report of quality()."""
    L = ["# pepnet training quality vs PyTorch (bench/quality.sh)", "",
         "Run %s to %s; %d CPUs, load average at start %.2f / %.2f / %.2f, at end %.2f / %.2f / %.2f (1/5/15 min)." % (
             res["started"], res["finished"], res["load_start"]["cpus"], res["load_start"]["load1"],
             res["load_start"]["load5"], res["load_start"]["load15"], res["load_end"]["load1"],
             res["load_end"]["load5"], res["load_end"]["load15"]), "", provenance_md(res["provenance"]), "",
         "Both sides: batch 512, lr 1e-3, seed 0, the same epochs E, Adam + SparseAdam (docs/model.md). pepnet: "
         "`CALL pepnet_train(name, train query, config, validation => valid query, epochs => E, batch_size => 512, "
         "lr => 1e-3, seed => 0)`, then `pepnet_evaluate(name@version, test query)`. PyTorch: "
         "`bench/train_torch.py DATASET --variant V --epochs E --batch-size 512 --lr 1e-3 --seed 0 --test-each-epoch` "
         "(1 thread, OpenBLAS included) from its own default initialisation (embeddings N(0, 0.01)), and the same again from pepnet's "
         "initial weights (`--init`, the pepnet_export of `pepnet_create(name, config, seed => 0)`; embeddings "
         "U(-0.05, 0.05)), so that only the shuffling order differs from pepnet. "
         "**Reported: the model after the last epoch** (for all). Test AUC is exact (ties count half); "
         "Δ = pepnet − PyTorch. ±SE is the Hanley–McNeil standard error of pepnet's overall test AUC given the test "
         "set's positives / negatives: the sampling noise of one AUC on that test set.", ""]
    for d in res["datasets"]:
        cfg = d["config"]
        tv0 = d["variants"][0]["torch_test"]
        L += ["## %s (E = %d epochs; train %d, valid %d, test %d rows)" % (d["dataset"], d["epochs"], d["rows_train"],
                                                                          d["rows_valid"], d["rows_test"]), ""]
        for t in cfg["tasks"]:
            doms = sorted(tv0[t]["domains"], key=int)
            pos = tv0[t]["overall"]["positives"]
            n = tv0[t]["overall"]["rows"]
            L.append("Task **%s** (test rows / positives: %s; overall %d / %d). Test AUC:" % (
                t, ", ".join("d%s %d / %d" % (x, tv0[t]["domains"][x]["rows"], tv0[t]["domains"][x]["positives"]) for x in doms),
                n, pos))
            L.append("")
            hdr = (["configuration", "pepnet overall"] + ["pepnet d%s" % x for x in doms] +
                   ["PyTorch overall"] + ["PyTorch d%s" % x for x in doms] +
                   ["Δ overall", "±SE", "PyTorch, pepnet's init: overall", "Δ same init",
                    "logloss pepnet", "logloss PyTorch", "logloss PyTorch (pepnet's init)"])
            L.append("| " + " | ".join(hdr) + " |")
            L.append("|" + "---|" * len(hdr))
            for v in d["variants"]:
                pt, tt, st = v["pepnet_test"][t], v["torch_test"][t], v["torch_same_init_test"][t]
                pa, ta, sa = pt["overall"]["auc"], tt["overall"]["auc"], st["overall"]["auc"]
                row = ([v["label"], f4(pa)] + [f4(pt["domains"].get(x, {}).get("auc")) for x in doms] +
                       [f4(ta)] + [f4(tt["domains"][x]["auc"]) for x in doms] +
                       [sgn4(diff(pa, ta)), f4(auc_se(pa, pos, n - pos)), f4(sa), sgn4(diff(pa, sa)),
                        f4(pt["overall"]["logloss"]), f4(tt["overall"]["logloss"]), f4(st["overall"]["logloss"])])
                L.append("| " + " | ".join(row) + " |")
            L.append("")
        t0 = cfg["tasks"][0]
        L += ["Per epoch (task %s), each cell pepnet / PyTorch / PyTorch from pepnet's init:" % t0, "",
              "| configuration | epoch | train loss | valid AUC | valid logloss | test AUC | test logloss |",
              "|---|---|---|---|---|---|---|"]
        for v in d["variants"]:
            for pe, te, se in zip(v["pepnet_epochs"], v["torch_epochs"], v["torch_same_init_epochs"]):
                L.append("| %s | %d | %.4f / %.4f / %.4f | %s | %s | %s | %s |" % (
                    v["label"], pe["epoch"], pe["train_loss"], te["train_loss"], se["train_loss"],
                    " / ".join(f4(x) for x in (pe["valid"][t0]["auc"], te["valid"][t0]["auc"], se["valid"][t0]["auc"])),
                    " / ".join(f4(x) for x in (pe["valid"][t0]["logloss"], te["valid"][t0]["logloss"], se["valid"][t0]["logloss"])),
                    " / ".join(f4(x) for x in (pe["test"][t0]["auc"], te["test"][t0]["auc"], se["test"][t0]["auc"])),
                    " / ".join(f4(x) for x in (pe["test"][t0]["logloss"], te["test"][t0]["logloss"], se["test"][t0]["logloss"]))))
        L += ["", "Training throughput in this run (informational; see the speed benchmark for the measurement): " +
              "; ".join("%s pepnet %.0f rows/s, PyTorch %.0f samples/s" % (v["label"], v["pepnet_rows_per_s"],
                                                                          v["torch_samples_per_s"])
                        for v in d["variants"]) + ".", ""]
    return "\n".join(L) + "\n"


def diff(a, b):
    """a - b or None."""
    return None if a is None or b is None else a - b


# ----------------------------------------------------------------------------- speed

SPEED_SQL = """
DROP TABLE IF EXISTS speed_all, speed_train, speed_test;
CREATE FUNCTION pg_temp.u(stream int, k bigint) RETURNS float8 LANGUAGE sql IMMUTABLE STRICT AS
$$ SELECT (((hashint8extended(k, 7919 * stream + 17) >> 11) & 9007199254740991)::float8 + 0.5) / 9007199254740992.0 $$;
-- a per-entity effect, uniform in (-1, 1)
CREATE FUNCTION pg_temp.e(stream int, k bigint) RETURNS float8 LANGUAGE sql IMMUTABLE STRICT AS
$$ SELECT 2 * pg_temp.u(stream, k) - 1 $$;
CREATE TABLE speed_all AS
SELECT r, domain, ARRAY[usr, age, p2]::bigint[] AS persona,
       ARRAY[item, item %% 64, hour, f3, f4, f5, f6, f7]::bigint[] AS features,
       -2.6 + 0.3 * domain + 1.2 * pg_temp.e(10, item) + 1.2 * pg_temp.e(11, (item %% 64) * 4 + domain)
            + 1.0 * pg_temp.e(12, usr) + 0.8 * pg_temp.e(13, age * 4 + domain) + 0.5 * pg_temp.e(14, hour)
            + 0.8 * pg_temp.e(15, p2) AS zc,
       -1.0 + 1.0 * pg_temp.e(16, item) + 0.8 * pg_temp.e(17, usr) AS zb
FROM (SELECT r, floor(4 * pg_temp.u(1, r))::int AS domain,
             floor(20000 * pg_temp.u(2, r) ^ 2)::bigint AS item,
             floor(24 * pg_temp.u(3, r))::bigint AS hour,
             floor(1000 * pg_temp.u(4, r))::bigint AS f3, floor(1000 * pg_temp.u(5, r))::bigint AS f4,
             floor(1000 * pg_temp.u(6, r))::bigint AS f5, floor(1000 * pg_temp.u(7, r))::bigint AS f6,
             floor(1000 * pg_temp.u(8, r))::bigint AS f7,
             floor(50000 * pg_temp.u(9, r) ^ 2.5)::bigint AS usr,
             floor(8 * pg_temp.u(30, r))::bigint AS age, floor(100 * pg_temp.u(31, r))::bigint AS p2
      FROM generate_series(1, %(total)s) r) x;
CREATE TABLE speed_train AS
SELECT domain, persona, features, ARRAY[c, c * (pg_temp.u(41, r) < 1 / (1 + exp(-zb)))::int]::real[] AS labels
FROM (SELECT *, (pg_temp.u(40, r) < 1 / (1 + exp(-zc)))::int AS c FROM speed_all WHERE r <= %(rows)s) s ORDER BY r;
CREATE TABLE speed_test AS
SELECT domain, persona, features, ARRAY[c, c * (pg_temp.u(41, r) < 1 / (1 + exp(-zb)))::int]::real[] AS labels
FROM (SELECT *, (pg_temp.u(40, r) < 1 / (1 + exp(-zc)))::int AS c FROM speed_all WHERE r > %(rows)s) s ORDER BY r;
DROP TABLE speed_all;
ANALYZE speed_train, speed_test;
"""


def speed(args):
    """Training samples/s of pepnet_train (from a table) and train_torch.py on bench-config.json."""
    os.makedirs(os.path.join(args.out, "logs"), exist_ok=True)
    with open(os.path.join(HERE, "bench-config.json")) as fh:
        cfg = json.load(fh)
    conn = connect()
    test_rows = args.rows // 5
    print("== speed: generating speed_train (%d rows) and speed_test (%d rows)" % (args.rows, test_rows), file=sys.stderr)
    with conn.cursor() as cur:
        cur.execute(SPEED_SQL % {"total": args.rows + test_rows, "rows": args.rows})
        cur.execute("SELECT count(*), avg(labels[1]), avg(labels[2]) FROM speed_train")
        n, ctr, buy = cur.fetchone()
        cur.execute("SELECT pg_total_relation_size('speed_train')")
        size = cur.fetchone()[0]
    train_q = "SELECT domain, persona, features, labels FROM speed_train"
    test_q = "SELECT domain, persona, features, labels FROM speed_test"
    res = {"started": datetime.datetime.now().isoformat(timespec="seconds"), "config": cfg, "epochs": args.epochs,
           "quiet_cpus": args.quiet_cpus, "quiet_wait": args.quiet_wait,
           "rows": n, "test_rows": test_rows, "ctr": float(ctr), "buy_rate": float(buy), "table_bytes": size,
           "train_query": train_q, "test_query": test_q, "runs": []}
    targs = ["speed", "--tables", "public.speed_train,,public.speed_test", "--config",
             os.path.join(HERE, "bench-config.json"), "--variant", "config", "--epochs", str(args.epochs),
             "--batch-size", "512", "--lr", "1e-3", "--seed", "0"]
    res["torch_command"] = "bench/train_torch.py " + " ".join(targs).replace(HERE + "/", "bench/")
    for i in range(1, args.runs + 1):
        run = {"run": i, "load_before": load_info()}
        run["others_before_pepnet"] = wait_quiet(args.quiet_cpus, args.quiet_wait)
        c0, b0 = backend_cpu(conn), system_busy()
        wall, versions = pepnet_train(conn, "speed", cfg, train_q, None, args.epochs)
        cpu = backend_cpu(conn) - c0
        if "provenance" not in res:
            res["provenance"] = provenance(conn)
        # CPUs used by everything else during the CALL (other jobs, and this client's own waiting)
        run["others_during_pepnet"] = round(max(system_busy() - b0 - cpu, 0.0) / wall, 2)
        rows = sum(m["rows"] for _, m in versions)
        secs = sum(m["seconds"] for _, m in versions)
        run["pepnet"] = {"rows_per_s": round(rows / secs, 1), "epoch_rows_per_s": [m["rows_per_s"] for _, m in versions],
                         "seconds": secs, "wall_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                         "rows_per_cpu_s": round(rows / cpu, 1),
                         "train_loss": versions[-1][1]["train_loss"],
                         "test": pepnet_evaluate(conn, "speed@%d" % versions[-1][0], test_q)}
        run["load_between"] = load_info()
        run["others_before_torch"] = wait_quiet(args.quiet_cpus, args.quiet_wait)
        b0, k0, t0 = system_busy(), children_cpu(), time.perf_counter()
        tr = run_torch(targs, os.path.join(args.out, "logs", "torch_speed_%d.log" % i))
        run["others_during_torch"] = round(max(system_busy() - b0 - (children_cpu() - k0), 0.0) /
                                           (time.perf_counter() - t0), 2)
        run["torch"] = {"samples_per_s": tr["samples_per_s"], "seconds": tr["train_seconds"],
                        "samples_per_cpu_s": tr["samples_per_cpu_s"], "cpu_seconds": tr["train_cpu_seconds"],
                        "openblas_threads": tr.get("openblas_threads"),
                        "train_loss": tr["epoch_log"][-1]["train_loss"], "test": tr["test"],
                        "impl_check": tr.get("impl_check_max_abs_diff")}
        run["load_after"] = load_info()
        run["ratio"] = run["pepnet"]["rows_per_s"] / run["torch"]["samples_per_s"]
        run["cpu_ratio"] = run["pepnet"]["rows_per_cpu_s"] / run["torch"]["samples_per_cpu_s"]
        res["runs"].append(run)
        print("   run %d: pepnet %.0f rows/s, PyTorch %.0f samples/s, ratio %.2f (load %.2f)" % (
            i, run["pepnet"]["rows_per_s"], run["torch"]["samples_per_s"], run["ratio"],
            run["load_before"]["load1"]), file=sys.stderr)
    # not timed: PyTorch once more from pepnet's initial weights (pepnet_create, same config and seed),
    # to separate the two implementations' default initialisations from the rest
    init_path = os.path.join(args.out, "init", "speed.safetensors")
    os.makedirs(os.path.dirname(init_path), exist_ok=True)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM pepnet.models WHERE name = 'init_speed'")
        cur.execute("SELECT pepnet_create('init_speed', %s::jsonb, seed => 0)", (json.dumps(cfg),))
        cur.execute("SELECT pepnet_export('init_speed')")
        with open(init_path, "wb") as fh:
            fh.write(bytes(cur.fetchone()[0]))
    ts = run_torch(targs + ["--init", init_path], os.path.join(args.out, "logs", "torch_speed_pepnet_init.log"))
    res["torch_same_init"] = {"samples_per_s": ts["samples_per_s"], "test": ts["test"],
                              "train_loss": ts["epoch_log"][-1]["train_loss"]}
    res["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    res["median_pepnet_rows_per_s"] = statistics.median(r["pepnet"]["rows_per_s"] for r in res["runs"])
    res["median_torch_samples_per_s"] = statistics.median(r["torch"]["samples_per_s"] for r in res["runs"])
    res["ratio_of_medians"] = res["median_pepnet_rows_per_s"] / res["median_torch_samples_per_s"]
    res["median_ratio"] = statistics.median(r["ratio"] for r in res["runs"])
    res["median_pepnet_rows_per_cpu_s"] = statistics.median(r["pepnet"]["rows_per_cpu_s"] for r in res["runs"])
    res["median_torch_samples_per_cpu_s"] = statistics.median(r["torch"]["samples_per_cpu_s"] for r in res["runs"])
    res["cpu_ratio_of_medians"] = res["median_pepnet_rows_per_cpu_s"] / res["median_torch_samples_per_cpu_s"]
    with open(os.path.join(args.out, "train_speed.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    md = speed_md(res)
    with open(os.path.join(args.out, "train_speed.md"), "w") as fh:
        fh.write(md)
    print(md)


def speed_md(res):
    """The markdown report of speed()."""
    cfg = res["config"]
    loads = [r[k]["load1"] for r in res["runs"] for k in ("load_before", "load_between", "load_after")]
    others = [r[k] for r in res["runs"] for k in ("others_during_pepnet", "others_during_torch")]
    cpus = res["runs"][0]["load_before"]["cpus"]
    L = ["# pepnet training speed vs PyTorch (bench/train_speed.sh)", "",
         "Run %s to %s, %d CPUs; 1-minute load average during the runs %.2f to %.2f%s." % (
             res["started"], res["finished"], cpus, min(loads), max(loads),
             " (**shared machine**: other jobs were running, timings are noisy)" if max(others) > 0.3 else ""), "",
         provenance_md(res["provenance"]), "",
         "Model: bench/bench-config.json (%d domains, %d hashed features, %d persona fields, tasks %s, hidden %s, "
         "all parts on). Data: synthetic table speed_train, %d rows (CTR %.3f, buy rate %.4f, %.1f MB), test "
         "speed_test %d rows. %d epoch(s), batch 512, lr 1e-3, seed 0; %d runs, medians reported." % (
             cfg["domains"], len(cfg["features"]), len(cfg["persona"]), "/".join(cfg["tasks"]), cfg["hidden"],
             res["rows"], res["ctr"], res["buy_rate"], res["table_bytes"] / 1e6, res["test_rows"], res["epochs"],
             len(res["runs"])), "",
         "* pepnet: `CALL pepnet_train('speed', '%s', config, epochs => %d, batch_size => 512, lr => 1e-3, seed => 0)`; "
         "samples/s = metrics->>'rows_per_s' of the version(s) (the epoch loop: reading the table through the cursor, "
         "the shuffle buffer, forward, backward, Adam); test AUC from `pepnet_evaluate`." % (res["train_query"], res["epochs"]),
         "* PyTorch: `%s` (1 thread: torch.set_num_threads(1) and OPENBLAS_NUM_THREADS=1 (openblas_threads=%s in "
         "its output), eager, data preloaded as tensors; samples/s counts forward, backward and optimiser steps "
         "only)." % (res["torch_command"], res["runs"][0]["torch"].get("openblas_threads")),
         "* Per CPU second (a check that is less sensitive to other jobs): pepnet's rows over the CPU time "
         "(user + system, /proc) of its backend during the whole CALL (which also stores the version); PyTorch's "
         "samples over the process CPU time (time.process_time) of its training loops.", "",
         "* Other jobs: CPUs used by all other processes during each measurement (from /proc/stat, minus the "
         "measured process; %d CPUs in all), after waiting up to %.0f s for them to drop below %.2f." % (
             cpus, res["quiet_wait"], res["quiet_cpus"]), "",
         "| run | load (1 min) | other CPUs during pepnet / PyTorch | pepnet rows/s | PyTorch samples/s | ratio | "
         "pepnet rows/CPU-s | PyTorch samples/CPU-s | CPU ratio |", "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        L.append("| %d | %.2f | %.2f / %.2f | %.0f | %.0f | %.2fx | %.0f | %.0f | %.2fx |" % (
            r["run"], r["load_before"]["load1"], r["others_during_pepnet"], r["others_during_torch"],
            r["pepnet"]["rows_per_s"], r["torch"]["samples_per_s"], r["ratio"],
            r["pepnet"]["rows_per_cpu_s"], r["torch"]["samples_per_cpu_s"], r["cpu_ratio"]))
    L.append("| **median** | | | **%.0f** | **%.0f** | **%.2fx** (median of ratios %.2fx) | %.0f | %.0f | %.2fx |" % (
        res["median_pepnet_rows_per_s"], res["median_torch_samples_per_s"], res["ratio_of_medians"], res["median_ratio"],
        res["median_pepnet_rows_per_cpu_s"], res["median_torch_samples_per_cpu_s"], res["cpu_ratio_of_medians"]))
    L += ["", "Test AUC / logloss (last epoch; identical in every run, both sides are deterministic%s):" % (
        "" if all_same(res) else " — NOTE: they differed between runs, run 1 shown"), "",
          "| task | pepnet AUC | PyTorch AUC | Δ AUC | PyTorch from pepnet's init: AUC | Δ same init | "
          "pepnet logloss | PyTorch logloss | PyTorch (pepnet's init) logloss |", "|---|---|---|---|---|---|---|---|---|"]
    r1 = res["runs"][0]
    si = res["torch_same_init"]["test"]
    for t in cfg["tasks"]:
        pa, ta, sa = (r1["pepnet"]["test"][t]["overall"]["auc"], r1["torch"]["test"][t]["overall"]["auc"],
                      si[t]["overall"]["auc"])
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            t, f4(pa), f4(ta), sgn4(pa - ta), f4(sa), sgn4(pa - sa), f4(r1["pepnet"]["test"][t]["overall"]["logloss"]),
            f4(r1["torch"]["test"][t]["overall"]["logloss"]), f4(si[t]["overall"]["logloss"])))
    L += ["", "Train loss of the last epoch: pepnet %.5f, PyTorch %.5f, PyTorch from pepnet's init %.5f." % (
        r1["pepnet"]["train_loss"], r1["torch"]["train_loss"], res["torch_same_init"]["train_loss"])]
    t0 = cfg["tasks"][0]
    dauc = r1["pepnet"]["test"][t0]["overall"]["auc"] - r1["torch"]["test"][t0]["overall"]["auc"]
    ok_speed = res["median_ratio"] >= 1.5
    ok_auc = dauc >= -0.005
    L += ["", "Goal (issue 3): samples/s >= 1.5x PyTorch's with test AUC (%s) no more than 0.005 below: speed %s "
          "(median of the per-run ratios %.2fx), AUC %s (Δ %+.4f)." % (t0, "met" if ok_speed else "NOT met", res["median_ratio"],
                                          "met" if ok_auc else "NOT met", dauc), ""]
    return "\n".join(L) + "\n"


def all_same(res):
    """True if every run gave the same test AUCs."""
    key = [(json.dumps(r["pepnet"]["test"], sort_keys=True), json.dumps(r["torch"]["test"], sort_keys=True)) for r in res["runs"]]
    return len(set(key)) == 1


def main():
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--epochs-synth", type=int, default=2)
    q.add_argument("--epochs-real", type=int, default=5)
    q.add_argument("--only", help="comma-separated data sets (synth,mind,douban)")
    q.add_argument("--variants", help="comma-separated configurations (bottom,shared,star,pepnet,full)")
    q.add_argument("--out", default=os.path.join(HERE, "out"))
    s = sub.add_parser("speed")
    s.add_argument("--epochs", type=int, default=1)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--rows", type=int, default=100000)
    s.add_argument("--quiet-cpus", type=float, default=0.3,
                   help="before each measurement wait until other processes use fewer CPUs than this ...")
    s.add_argument("--quiet-wait", type=float, default=0, help="... but at most this many seconds (default 0: no wait)")
    s.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    os.chdir(ROOT)
    (quality if args.mode == "quality" else speed)(args)


if __name__ == "__main__":
    main()
