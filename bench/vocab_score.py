"""What a vocabulary lookup costs in scoring: pepnet_score_rows with the item field hashed or looked up
in a vocabulary of 1,000,000 ids (docs/model.md "Vocabularies and unseen ids"), side by side.

Run with Debian's /usr/bin/python3 (python3-psycopg2, torch) against a running cluster on this
machine where pepnet 0.3.0 is installed (libpq environment); the backend's CPU time is read from
/proc/<pid>/schedstat.

    /usr/bin/python3 bench/vocab_score.py [--rounds 6] [--calls 30]

The bench model of bench/named_score.py (8 feature fields, 3 persona fields, 2 tasks, hidden [256,
128], the candidates of one user by name), three versions that differ only in the item field:
  hashed 20k   "buckets": 20000 (bench/named_score.py's)
  hashed 1M    "buckets": 1000001 (the table of the vocabulary's size)
  vocab 1M     "buckets": 1000001, "min_count": 1, a vocabulary of 1,000,000 ids (made in Python
               with pepnet.StarPepNet(..., vocab=...) and imported by pepnet.db), the odd candidate
               items in it, the even ones not (the OOV row)
Candidates/s per backend core of SELECT count(*), max(score) FROM pepnet_score_rows(...) at N = 100
and 1000, the variants interleaved block by block.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
import named_score  # noqa: E402
import pepnet  # noqa: E402
import pepnet.db  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=30)
    a = ap.parse_args()
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid()")
    pid = cur.fetchone()[0]
    cur.execute("SET client_min_messages = warning")
    cur.execute("SET max_parallel_workers_per_gather = 0")
    cur.execute(named_score.SETUP)
    _, named = named_score.configs()
    big = json.loads(json.dumps(named))
    big["features"][0]["buckets"] = 1000001
    voc = json.loads(json.dumps(big))
    voc["features"][0]["min_count"] = 1
    cur.execute("DELETE FROM pepnet.models WHERE name IN ('vs_h20k', 'vs_h1m', 'vs_v1m')")
    cur.execute("SELECT pepnet_create('vs_h20k', %s, 2), pepnet_create('vs_h1m', %s, 2)", (json.dumps(named), json.dumps(big)))
    rng = np.random.default_rng(5)
    odd = np.arange(1, 1001, 2, dtype=np.int64)
    others = rng.integers(2000, 10 ** 12, size=1000000 - odd.size, dtype=np.int64)
    ids = np.unique(np.concatenate([odd, others]))
    while ids.size < 1000000:
        ids = np.unique(np.concatenate([ids, rng.integers(2000, 10 ** 12, size=1000000 - ids.size, dtype=np.int64)]))
    import torch
    m = pepnet.StarPepNet(voc, seed=2, vocab={"vocab.feature.0": torch.from_numpy(ids)})
    pepnet.db.import_module(conn, "vs_v1m", m)
    models = {"hashed 20k": "vs_h20k", "hashed 1M": "vs_h1m", "vocab 1M": "vs_v1m"}
    variants = {}
    for n in (100, 1000):
        for label, model in models.items():
            variants[(label, n)] = ("SELECT count(*), max(score) FROM pepnet_score_rows(%s, ARRAY(SELECT c FROM nb_cand c WHERE item <= %s))",
                                    (model, n))
    for k, (sql, args) in variants.items():
        for _ in range(3):
            cur.execute(sql, args)
            assert cur.fetchone()[0] == k[1]
    cpu = {k: 0.0 for k in variants}
    for r in range(a.rounds):
        for k, (sql, args) in variants.items():
            c0 = named_score.backend_cpu(pid)
            for _ in range(a.calls):
                cur.execute(sql, args)
                cur.fetchone()
            cpu[k] += named_score.backend_cpu(pid) - c0
    print("| N | " + " | ".join("%s cand/s" % l for l in models) + " | vocab 1M / hashed 1M |")
    print("|---|" + "---|" * (len(models) + 1))
    for n in (100, 1000):
        rates = [n * a.calls * a.rounds / cpu[(l, n)] for l in models]
        print("| %d | %s | %.2f |" % (n, " | ".join("%.0f" % x for x in rates), rates[2] / rates[1]))
    cur.execute("DELETE FROM pepnet.models WHERE name IN ('vs_h20k', 'vs_h1m', 'vs_v1m')")
    return 0


if __name__ == "__main__":
    time.sleep(0)
    sys.exit(main())
