#!/usr/bin/python3
"""Load the real multi-domain samples into PostgreSQL tables in pepnet's input format.

    eval "$(test/pg.sh env)"            # libpq environment: PGHOST, PGPORT, PGUSER, PGDATABASE
    bench/load_data.py mind|douban|aliccp|all [--schema data] [--data-dir /work/shared/data]

Creates <schema>.<dataset>_train / _valid / _test (replacing them), prints per table its rows and
rows per domain, and the pepnet config to train on it, which it also writes to
bench/configs/<dataset>.json. The CSV files are only read (nothing is copied into the repository).

Tables: domain int, persona bigint[], features bigint[], [dense real[],] label real [, labels real[]].
* mind    (mind-sample/mind_sample.csv): domain = Category (news 0, lifestyle 1, sports 2,
          finance 3; rows of any other category are dropped and counted, the sample has none),
          persona = {User_ID}, features = {News_ID, SubCategory}, label = label (click).
* douban  (douban-sample/douban_sample.csv): domain = domain (book 0, music 1, movie 2; others
          dropped), persona = {user_id, living_place}, features = {item_id, time_bin},
          label = rating (already 0/1). An empty living_place is hashed like any string ('').
* aliccp  (ali-ccp-sample/ali_ccp_{train,val,test}_sample.csv, its own split): domain = column 301
          (1, 2, 3 -> 0, 1, 2), persona = the user-profile fields 101, 121, 122, 124, 125, 126,
          127, 128, 129, features = the other sparse fields 205, 206, 207, 210, 216, 508, 509,
          702, 853, 109_14, 110_14, 127_14, 150_14, dense = D109_14, D110_14, D127_14, D150_14,
          D508, D509, D702, D853, labels = {click, purchase}, label = click.
Ids: integer columns are used as they are; strings (MIND ids, subcategories, living_place) become
the first 8 bytes of their UTF-8 md5 as a big-endian signed int64, the same as SQL's
('x' || substr(md5(s), 1, 16))::bit(64)::bigint, so ids can be hashed identically at scoring time.
Split of mind and douban: row i (0-based, data rows in file order) goes by the first byte of
md5('split:<i>') mod 10: 0-7 train, 8 valid, 9 test.

Configs: every field hashed ("hash": true), buckets = the smallest power of two >= 2 x the distinct
ids of the field over all three tables (at least 8); emb_dim 16 and hidden [256, 128] (docs/model.md's
defaults; on these small samples a smaller model would do as well).
"""
import argparse
import csv
import hashlib
import io
import json
import os
import sys

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
SPLITS = ("train", "valid", "test")

MIND_DOMAINS = {"news": 0, "lifestyle": 1, "sports": 2, "finance": 3}
DOUBAN_DOMAINS = {"book": 0, "music": 1, "movie": 2}
ALI_PERSONA = ["101", "121", "122", "124", "125", "126", "127", "128", "129"]
ALI_FEATURES = ["205", "206", "207", "210", "216", "508", "509", "702", "853",
                "109_14", "110_14", "127_14", "150_14"]
ALI_DENSE = ["D109_14", "D110_14", "D127_14", "D150_14", "D508", "D509", "D702", "D853"]


def sid(s):
    """Stable int64 id of a string: first 8 bytes of md5(utf-8) as big-endian signed."""
    return int.from_bytes(hashlib.md5(s.encode("utf-8")).digest()[:8], "big", signed=True)


def split_of(i):
    """Deterministic 80/10/10 split of data row i."""
    b = hashlib.md5(b"split:%d" % i).digest()[0] % 10
    return "train" if b < 8 else ("valid" if b == 8 else "test")


def read_csv(path):
    """Rows of a CSV file with a header, as dicts."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ----------------------------------------------------------------------------- datasets
# Each loader returns (tables, spec): tables = {split: [row dicts]}, row dict keys domain, persona,
# features, [dense], label, [labels]; spec = {"domains", "tasks", "persona": names,
# "features": names, "dense": n, "domain_names", "dropped"}.

def load_mind(data_dir):
    """MIND sample -> (tables, spec)."""
    rows = read_csv(os.path.join(data_dir, "mind-sample", "mind_sample.csv"))
    tables = {s: [] for s in SPLITS}
    dropped = {}
    for i, r in enumerate(rows):
        d = MIND_DOMAINS.get(r["Category"])
        if d is None:
            dropped[r["Category"]] = dropped.get(r["Category"], 0) + 1
            continue
        tables[split_of(i)].append({"domain": d, "persona": [sid(r["User_ID"])],
                                    "features": [sid(r["News_ID"]), sid(r["SubCategory"])],
                                    "label": float(r["label"])})
    spec = {"domains": 4, "domain_names": sorted(MIND_DOMAINS, key=MIND_DOMAINS.get), "tasks": ["click"],
            "persona": ["user"], "features": ["news", "subcategory"], "dense": 0, "dropped": dropped}
    return tables, spec


def load_douban(data_dir):
    """Douban sample -> (tables, spec)."""
    rows = read_csv(os.path.join(data_dir, "douban-sample", "douban_sample.csv"))
    tables = {s: [] for s in SPLITS}
    dropped = {}
    for i, r in enumerate(rows):
        d = DOUBAN_DOMAINS.get(r["domain"])
        if d is None:
            dropped[r["domain"]] = dropped.get(r["domain"], 0) + 1
            continue
        tables[split_of(i)].append({"domain": d, "persona": [int(r["user_id"]), sid(r["living_place"] or "")],
                                    "features": [int(r["item_id"]), int(r["time_bin"])],
                                    "label": float(r["rating"])})
    spec = {"domains": 3, "domain_names": sorted(DOUBAN_DOMAINS, key=DOUBAN_DOMAINS.get), "tasks": ["rating"],
            "persona": ["user", "living_place"], "features": ["item", "time_bin"], "dense": 0, "dropped": dropped}
    return tables, spec


def load_aliccp(data_dir):
    """Ali-CCP sample (own train/val/test files) -> (tables, spec)."""
    tables, dropped = {}, {}
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test")):
        out = tables[split] = []
        for r in read_csv(os.path.join(data_dir, "ali-ccp-sample", "ali_ccp_%s_sample.csv" % name)):
            dom = int(r["301"]) - 1
            if dom not in (0, 1, 2):
                dropped[r["301"]] = dropped.get(r["301"], 0) + 1
                continue
            click, buy = float(r["click"]), float(r["purchase"])
            out.append({"domain": dom, "persona": [int(r[c]) for c in ALI_PERSONA],
                        "features": [int(r[c]) for c in ALI_FEATURES],
                        "dense": [float(r[c]) for c in ALI_DENSE], "label": click, "labels": [click, buy]})
    spec = {"domains": 3, "domain_names": ["301=1", "301=2", "301=3"], "tasks": ["click", "purchase"],
            "persona": ["f" + c for c in ALI_PERSONA], "features": ["f" + c for c in ALI_FEATURES],
            "dense": len(ALI_DENSE), "dropped": dropped}
    return tables, spec


LOADERS = {"mind": load_mind, "douban": load_douban, "aliccp": load_aliccp}


# ----------------------------------------------------------------------------- output

def buckets_for(distinct):
    """Smallest power of two >= 2 * distinct, at least 8."""
    b = 8
    while b < 2 * distinct:
        b *= 2
    return b


def make_config(tables, spec):
    """pepnet config (docs/model.md format) sized from the loaded rows."""
    rows = [r for s in SPLITS for r in tables[s]]

    def fields(key, names):
        return [{"name": n, "buckets": buckets_for(len({r[key][i] for r in rows})), "hash": True}
                for i, n in enumerate(names)]

    return {"domains": spec["domains"], "features": fields("features", spec["features"]),
            "persona": fields("persona", spec["persona"]), "dense": spec["dense"], "emb_dim": 16,
            "tasks": spec["tasks"], "hidden": [256, 128]}


def arr(values, fmt):
    """PostgreSQL array literal of numbers."""
    return "{" + ",".join(fmt(v) for v in values) + "}"


def write_table(cur, name, rows, spec):
    """Create table `name` and COPY the rows into it."""
    cols = ["domain int", "persona bigint[]", "features bigint[]"]
    if spec["dense"]:
        cols.append("dense real[]")
    cols.append("label real")
    multi = len(spec["tasks"]) > 1
    if multi:
        cols.append("labels real[]")
    cur.execute("DROP TABLE IF EXISTS %s" % name)
    cur.execute("CREATE TABLE %s (%s)" % (name, ", ".join(cols)))
    buf = io.StringIO()
    for r in rows:
        parts = [str(r["domain"]), arr(r["persona"], str), arr(r["features"], str)]
        if spec["dense"]:
            parts.append(arr(r["dense"], repr))
        parts.append(repr(r["label"]))
        if multi:
            parts.append(arr(r["labels"], lambda v: "NULL" if v is None else repr(v)))
        buf.write("\t".join(parts) + "\n")
    buf.seek(0)
    cur.copy_expert("COPY %s FROM STDIN" % name, buf)


def main():
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=list(LOADERS) + ["all"])
    ap.add_argument("--schema", default="data")
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--configs", default=os.path.join(HERE, "configs"), help="where to write <dataset>.json")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: the PG* environment)")
    args = ap.parse_args()

    names = list(LOADERS) if args.dataset == "all" else [args.dataset]
    conn = psycopg2.connect(args.dsn)
    os.makedirs(args.configs, exist_ok=True)
    for ds in names:
        tables, spec = LOADERS[ds](args.data_dir)
        config = make_config(tables, spec)
        with conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA IF NOT EXISTS %s" % args.schema)
            for s in SPLITS:
                write_table(cur, "%s.%s_%s" % (args.schema, ds, s), tables[s], spec)
        print("== %s (domains: %s)" % (ds, ", ".join("%d=%s" % (i, n) for i, n in enumerate(spec["domain_names"]))))
        if spec["dropped"]:
            print("   dropped rows of unmapped domains: %s" % json.dumps(spec["dropped"], ensure_ascii=False))
        for s in SPLITS:
            rows = tables[s]
            per = {}
            for r in rows:
                per[r["domain"]] = per.get(r["domain"], 0) + 1
            pos = sum(r["label"] for r in rows)
            print("   %s.%s_%s: %d rows, label mean %.4f, rows per domain %s" % (
                args.schema, ds, s, len(rows), pos / len(rows) if rows else 0.0,
                json.dumps({str(d): per[d] for d in sorted(per)})))
        path = os.path.join(args.configs, ds + ".json")
        with open(path, "w") as fh:
            json.dump(config, fh, indent=1)
            fh.write("\n")
        print("   config (%s): %s" % (os.path.relpath(path), json.dumps(config)))
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
