#!/usr/bin/python3
"""The baselines of docs/model.md ("Baselines"): every part off, the shared bottom (every part off and
"domain_input": true) and STAR-PEPNet, trained by CALL pepnet_train on the data of bench/quality.sh.

    eval "$(test/pg.sh env)"; export PGDATABASE=...   # pepnet and the data tables (bench/quality.sh baselines)
    bench/baselines.py [--only synth,mind,douban,aliccp] [--epochs-synth 2] [--epochs-real 5] [--out bench/out]

For each data set with its tables present (synth = public.synth_*, examples/synth.sql; mind, douban,
aliccp = data.<name>_*, bench/load_data.py; configs in bench/configs) and each configuration: CALL
pepnet_train(..., validation => valid, epochs => E, batch_size => 512, lr => 1e-3, seed => 0), then
pepnet_evaluate of the last epoch's version on the test table: AUC, logloss and PCOC (mean score /
click rate) overall and per domain, first task. Writes <out>/baselines.md and <out>/baselines.json.
A quality benchmark, not a speed one: the figures do not depend on the machine's load.
"""
import argparse
import json
import os
import subprocess
import sys

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OFF = dict(epnet=False, ppnet=False, pn=False, star=False, aux=False)
VARIANTS = [  # (key, label, switches)
    ("off", "all off (no domain)", OFF),
    ("bottom", "shared bottom (all off + domain_input)", dict(OFF, domain_input=True)),
    ("full", "STAR-PEPNet", {}),
]
DATASETS = [("synth", "public"), ("mind", "data"), ("douban", "data"), ("aliccp", "data")]


def data_query(table, cfg):
    """The data query of a table: one task reads `label`, several `labels`."""
    cols = ["domain", "persona", "features"] + (["dense"] if cfg.get("dense") else [])
    return "SELECT %s, %s FROM %s" % (", ".join(cols), "label" if len(cfg["tasks"]) == 1 else "labels", table)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated data sets (synth,mind,douban,aliccp)")
    ap.add_argument("--epochs-synth", type=int, default=2)
    ap.add_argument("--epochs-real", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    args = ap.parse_args()
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h %s"], capture_output=True,
                            text=True).stdout.strip()
    res = {"commit": commit, "datasets": []}
    for ds, schema in DATASETS:
        if args.only and ds not in args.only.split(","):
            continue
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", ("%s.%s_train" % (schema, ds),))
        if not cur.fetchone()[0]:
            print("== %s: no table %s.%s_train, skipped" % (ds, schema, ds), file=sys.stderr)
            continue
        with open(os.path.join(HERE, "configs", ds + ".json")) as fh:
            base = json.load(fh)
        epochs = args.epochs_synth if ds == "synth" else args.epochs_real
        q = {s: data_query("%s.%s_%s" % (schema, ds, s), base) for s in ("train", "valid", "test")}
        task = base["tasks"][0]
        dres = {"dataset": ds, "epochs": epochs, "task": task, "variants": []}
        for key, label, sw in VARIANTS:
            name = "bl_%s_%s" % (ds, key)
            cfg = dict(base, **sw)
            print("== %s %s: CALL pepnet_train('%s', ...)" % (ds, label, name), file=sys.stderr)
            cur.execute("DELETE FROM pepnet.deployments WHERE name = %s", (name,))
            cur.execute("DELETE FROM pepnet.models WHERE name = %s", (name,))
            cur.execute("CALL pepnet_train(%s, %s, %s::jsonb, validation => %s, epochs => %s, batch_size => 512, "
                        "lr => 1e-3, seed => 0, progress_interval => 0)", (name, q["train"], json.dumps(cfg), q["valid"], epochs))
            cur.execute("SELECT max(version) FROM pepnet.models WHERE name = %s", (name,))
            v = cur.fetchone()[0]
            cur.execute("SELECT domain, rows, auc, logloss, pcoc, actual FROM pepnet_evaluate(%s, %s) WHERE task = %s "
                        "ORDER BY domain NULLS FIRST", ("%s@%d" % (name, v), q["test"], task))
            rows = [dict(zip(("domain", "rows", "auc", "logloss", "pcoc", "actual"), r)) for r in cur.fetchall()]
            dres["variants"].append({"key": key, "label": label, "config": cfg, "version": v, "test": rows})
            o = rows[0]
            print("   auc %.4f logloss %.4f pcoc %.3f; per domain pcoc %s" % (
                o["auc"], o["logloss"], o["pcoc"], " ".join("%.2f" % r["pcoc"] for r in rows[1:])), file=sys.stderr)
        res["datasets"].append(dres)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "baselines.json"), "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    L = ["Measured build: commit %s. Test set of each data set, task `%s` (the first), the version after the last "
         "epoch; batch 512, lr 1e-3, seed 0." % (commit, "/".join(sorted({d["task"] for d in res["datasets"]}))), ""]
    for d in res["datasets"]:
        doms = [r["domain"] for r in d["variants"][0]["test"][1:]]
        L += ["**%s** (E = %d; test rows per domain %s; click rate %s)" % (
            d["dataset"], d["epochs"], " / ".join(str(r["rows"]) for r in d["variants"][0]["test"][1:]),
            " / ".join("%.3f" % r["actual"] for r in d["variants"][0]["test"][1:])), "",
              "| configuration | AUC | logloss | PCOC | " + " | ".join("AUC d%s" % x for x in doms) + " | " +
              " | ".join("PCOC d%s" % x for x in doms) + " |",
              "|---" * (4 + 2 * len(doms)) + "|"]
        for vr in d["variants"]:
            t = vr["test"]
            L.append("| %s | %.4f | %.4f | %.3f | %s | %s |" % (
                vr["label"], t[0]["auc"], t[0]["logloss"], t[0]["pcoc"],
                " | ".join("-" if r["auc"] is None else "%.4f" % r["auc"] for r in t[1:]),
                " | ".join("%.2f" % r["pcoc"] for r in t[1:])))
        L.append("")
    md = "\n".join(L)
    with open(os.path.join(args.out, "baselines.md"), "w") as fh:
        fh.write(md)
    print(md)


if __name__ == "__main__":
    main()
