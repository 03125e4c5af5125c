#!/usr/bin/python3
"""Calibration of trained models, pepnet against PyTorch, on the real MIND and Douban samples.

    eval "$(test/pg.sh env)"; export PGDATABASE=...     # a database with pepnet
    bench/load_data.py mind && bench/load_data.py douban  # tables data.<name>_{train,valid,test}
    bench/quality_calibration.py [--datasets mind,douban] [--epochs 5] [--lr 1e-3] [--batch-size 512]
                                 [--warmup-steps 0] [--cosine-steps 0 | --cosine] [--out bench/out]

Normally run by bench/quality.sh calibration. For each data set (bench/configs/<name>.json, all
parts of MODEL.md on): CALL pepnet_train with the validation table, seed 0, the given epochs,
batch size, learning rate and schedule, deploy => true (the version of lowest validation logloss
of the first task: pepnet_train's default selection), then pepnet_evaluate of the deployed version
on the test table: per domain rows, AUC, mean predicted probability, actual rate and their ratio
(PCOC). bench/train_torch.py trains PyTorch's implementation of MODEL.md (test/python/pepnet_ref.py)
with the same config, epochs, batch size, lr and schedule (its own default initialisation and
shuffling), and the epoch of lowest validation logloss is reported the same way. Writes
<out>/calibration.md and <out>/calibration.json.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PY = "/usr/bin/python3"


def git(*a):
    """Output of a git command in the repository ('' on failure)."""
    try:
        return subprocess.run(["git", "-C", ROOT] + list(a), capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def pepnet(cur, ds, cfg, args):
    """Train with CALL pepnet_train, evaluate the deployed version on the test table."""
    name = "calib_" + ds
    cur.execute("DELETE FROM pepnet.deployments WHERE name = %s", (name,))
    cur.execute("DELETE FROM pepnet.models WHERE name = %s", (name,))
    q = "SELECT domain, persona, features, label FROM data.%s_%%s" % ds
    sched = None
    if args.warmup_steps or args.cosine_steps:
        sched = json.dumps({"warmup_steps": args.warmup_steps,
                            "decay": "cosine" if args.cosine_steps else "none",
                            "decay_steps": args.cosine_steps, "min_lr": args.min_lr})
    cur.execute("CALL pepnet_train(%s, %s, %s, validation => %s, epochs => %s, batch_size => %s, lr => %s, "
                "seed => 0, lr_schedule => %s, deploy => true, progress_interval => 0)",
                (name, q % "train", json.dumps(cfg), q % "valid", args.epochs, args.batch_size, args.lr, sched))
    cur.execute("SELECT version FROM pepnet.deployments WHERE name = %s", (name,))
    deployed = cur.fetchone()[0]
    cur.execute("SELECT domain, rows, auc, mean_p, actual, pcoc, logloss FROM pepnet_evaluate(%s, %s) "
                "WHERE task = %s ORDER BY domain NULLS LAST", (name, q % "test", cfg["tasks"][0]))
    rows = [dict(zip(("domain", "rows", "auc", "mean_p", "actual", "pcoc", "logloss"), r)) for r in cur.fetchall()]
    cur.execute("SELECT version, (metrics #>> '{validation,logloss}')::float8, (metrics #>> '{validation,pcoc}')::float8 "
                "FROM pepnet.models WHERE name = %s ORDER BY version", (name,))
    epochs = [{"epoch": v, "valid_logloss": ll, "valid_pcoc": pc} for v, ll, pc in cur.fetchall()]
    return {"deployed_epoch": deployed, "test": rows, "epochs": epochs}


def torch_run(ds, cfg, args):
    """bench/train_torch.py with the same settings; the epoch of lowest validation logloss."""
    path = os.path.join(args.out, "calib_%s_config.json" % ds)
    with open(path, "w") as fh:
        json.dump(cfg, fh)
    cmd = [PY, os.path.join(HERE, "train_torch.py"), ds, "--config", path, "--variant", "config",
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", "0",
           "--warmup-steps", str(args.warmup_steps), "--cosine-steps", str(args.cosine_steps),
           "--min-lr", str(args.min_lr), "--test-each-epoch"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res = json.loads(out)
    task = cfg["tasks"][0]
    best = min(res["epoch_log"], key=lambda e: e["valid"][task]["logloss"])
    m = best["test_metrics"][task]
    rows = [dict(domain=int(d), **{k: x[k] for k in ("rows", "auc", "mean_p", "actual", "pcoc", "logloss")})
            for d, x in sorted(m["domains"].items(), key=lambda kv: int(kv[0]))]
    rows.append(dict(domain=None, **{k: m["overall"][k] for k in ("rows", "auc", "mean_p", "actual", "pcoc", "logloss")}))
    return {"best_epoch": best["epoch"], "test": rows,
            "epochs": [{"epoch": e["epoch"], "valid_logloss": e["valid"][task]["logloss"],
                        "valid_pcoc": e["valid"][task]["pcoc"]} for e in res["epoch_log"]]}


def fmt(v, nd=4):
    """A number for the table ('-' for None)."""
    return "-" if v is None else ("%.*f" % (nd, v))


def main():
    """Run every data set, write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="mind,douban")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--cosine-steps", type=int, default=0)
    ap.add_argument("--cosine", action="store_true",
                    help="cosine decay to --min-lr over all steps after the warm-up (per data set: epochs x "
                         "ceil(train rows / batch size) - warm-up)")
    ap.add_argument("--min-lr", type=float, default=0.0)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    report = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "commit": git("log", "-1", "--format=%h %s"), "dirty": bool(git("status", "--porcelain", "src", "sql")),
              "args": vars(args), "datasets": {}}
    lines = ["### Calibration on the real samples: pepnet vs PyTorch (bench/quality_calibration.py)", "",
             "Command: `bash bench/quality.sh calibration` (= `bench/quality_calibration.py --epochs %d --batch-size %d "
             "--lr %g --warmup-steps %d%s`), commit %s%s, %s." % (
                 args.epochs, args.batch_size, args.lr, args.warmup_steps,
                 " --cosine" if args.cosine else " --cosine-steps %d" % args.cosine_steps, report["commit"],
                 " (uncommitted changes)" if report["dirty"] else "", report["when"]),
             "All parts of MODEL.md on, bench/configs/<name>.json, seed 0. Each side reports the epoch of lowest "
             "validation logloss (pepnet: the version `deploy => true` deploys) on the test table. PCOC = mean "
             "predicted probability / actual rate (1 = calibrated). The test tables are small (hundreds of rows "
             "per domain), so per-domain figures carry sampling noise of several percent.", ""]
    for ds in args.datasets.split(","):
        with open(os.path.join(HERE, "configs", ds + ".json")) as fh:
            cfg = json.load(fh)
        if args.cosine:
            cur.execute("SELECT count(*) FROM data.%s_train" % ds)
            n = cur.fetchone()[0]
            args.cosine_steps = args.epochs * -(-n // args.batch_size) - args.warmup_steps
        p = pepnet(cur, ds, cfg, args)
        t = torch_run(ds, cfg, args)
        p["cosine_steps"] = args.cosine_steps
        report["datasets"][ds] = {"pepnet": p, "torch": t}
        lines += ["**%s** (pepnet: epoch %d of %d deployed; PyTorch: epoch %d; cosine decay over %d steps)" % (
                      ds, p["deployed_epoch"], args.epochs, t["best_epoch"], args.cosine_steps), "",
                  "| domain | test rows | actual rate | pepnet predicted | pepnet PCOC | pepnet AUC | PyTorch predicted | PyTorch PCOC | PyTorch AUC |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for a, b in zip(p["test"], t["test"]):
            lines.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                "all" if a["domain"] is None else a["domain"], a["rows"], fmt(a["actual"]), fmt(a["mean_p"]),
                fmt(a["pcoc"], 3), fmt(a["auc"]), fmt(b["mean_p"]), fmt(b["pcoc"], 3), fmt(b["auc"])))
        lines += ["", "Validation PCOC by epoch: pepnet %s; PyTorch %s." % (
            ", ".join(fmt(e["valid_pcoc"], 3) for e in p["epochs"]),
            ", ".join(fmt(e["valid_pcoc"], 3) for e in t["epochs"])), ""]
        print("\n".join(lines[-(len(p["test"]) + 6):]), flush=True)
    with open(os.path.join(args.out, "calibration.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    with open(os.path.join(args.out, "calibration.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
