"""New ids at serving time: PCOC and AUC of users unseen in training, with and without a vocabulary.

Issue 16's goal: "PCOC of unseen users within [0.9, 1.1] with min_count". Synthetic CTR data with a
per-user effect (docs/model.md "Vocabularies and unseen ids"): users 1..U_TRAIN have a skewed number
of rows (many seen once or twice), users U_TRAIN+1..U_TRAIN+U_NEW appear only in the test rows. The
click probability is sigmoid(base + domain + user + item effects). Two models of the same size are
trained in the server on the same rows and seed:

  hashed     user_id hashed into 4096 buckets (20,000 training users share them; an unseen user's
             bucket is some trained users' row)
  min_count  user_id with "min_count": 3 (--min-count; at most 8192 rows): users seen fewer than 3 times train the
             out-of-vocabulary row, which every unseen user scores with

and scored on held-out rows of the training users ("seen") and all rows of the new users ("unseen").
PCOC = sum of predicted probabilities / sum of clicks; AUC over the group's rows.

Needs a PostgreSQL server in the libpq environment (PGHOST, PGPORT, ...) where pepnet 0.3.0 can be
created by the user (a scratch database is created and dropped). Run with /usr/bin/python3:

    python3 bench/unseen_ids.py [--users 20000] [--new-users 1000] [--epochs 2] [--seed 1]

Prints a markdown table and a JSON line.
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np
import psycopg2

DATA = """
SELECT setseed(%(seed)s);
CREATE TABLE users AS
SELECT u, CASE WHEN u <= %(users)s THEN 1 + floor(60 * power(random(), 4))::int ELSE 1 + floor(20 * random())::int END AS n,
       (random() + random() + random() + random() - 2) * 1.2 AS noise
FROM generate_series(1, %(users)s + %(new)s) u ORDER BY u;
-- the user effect: noise, plus (--activity) a share of the user's activity, log(rows) centred
ALTER TABLE users ADD COLUMN effect float8;
UPDATE users SET effect = noise + %(activity)s * (ln(n) - (SELECT avg(ln(n)) FROM users));
CREATE TABLE items AS
SELECT i, (random() + random() + random() - 1.5) * 0.8 AS effect FROM generate_series(1, 2000) i ORDER BY i;
CREATE TABLE ev AS
SELECT row_number() OVER () AS id, s.u <= %(users)s AS seen, s.domain, s.u AS user_id, (s.u %% 16)::int AS ugroup, s.item,
       random() < 1 / (1 + exp(-(-1.3 + (ARRAY[-0.6, 0.0, 0.5])[s.domain + 1] + us.effect + it.effect))) AS click,
       random() < 0.2 AS holdout
FROM (SELECT u.u, (floor(random() * 3))::int AS domain, 1 + floor(2000 * power(random(), 2))::int AS item
      FROM users u, LATERAL generate_series(1, u.n) k) s
JOIN users us ON us.u = s.u JOIN items it ON it.i = s.item;
"""

BASE = {"inputs": "columns", "domains": 3, "emb_dim": 8, "hidden": [32, 16], "aux_hidden": 8,
        "persona": [{"name": "ugroup", "buckets": 16}]}
MODELS = {
    "hashed": dict(BASE, features=[{"name": "user_id", "buckets": 4096}, {"name": "item", "buckets": 2048}]),
}


def min_count_model(k):
    return dict(BASE, features=[{"name": "user_id", "buckets": 8192, "min_count": k}, {"name": "item", "buckets": 2048}])


def auc(y, p):
    """ROC AUC with ties counted half."""
    y = np.asarray(y, bool)
    order = np.argsort(p, kind="mergesort")
    p = np.asarray(p)[order]
    y = y[order]
    ranks = np.empty(len(p))
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and p[j + 1] == p[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1
        i = j + 1
    npos = y.sum()
    nneg = len(y) - npos
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--new-users", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=float, default=0.42)
    ap.add_argument("--activity", type=float, default=0.0,
                    help="logit of the user effect per unit of ln(rows of the user): > 0, active users click more")
    ap.add_argument("--min-count", type=int, default=3, help="the min_count model's min_count")
    ap.add_argument("--db", default="pepnet_bench_unseen")
    args = ap.parse_args()

    admin = psycopg2.connect("")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS %s" % args.db)
        cur.execute("CREATE DATABASE %s" % args.db)
    conn = psycopg2.connect("", dbname=args.db)
    conn.autocommit = True
    out = {"min_count": args.min_count, "users": args.users, "new_users": args.new_users, "epochs": args.epochs, "activity": args.activity,
           "seed": args.seed}
    try:
        cur = conn.cursor()
        cur.execute("SET client_min_messages = warning")
        cur.execute("CREATE EXTENSION pepnet")
        cur.execute(DATA % {"seed": args.seed, "users": args.users, "new": args.new_users, "activity": args.activity})
        cur.execute("SELECT count(*) FILTER (WHERE seen AND NOT holdout), count(*) FILTER (WHERE seen AND holdout), "
                    "count(*) FILTER (WHERE NOT seen), count(DISTINCT user_id) FILTER (WHERE NOT seen), "
                    "avg(click::int) FROM ev")
        out["train_rows"], out["seen_test_rows"], out["unseen_rows"], out["unseen_users"], out["ctr"] = cur.fetchone()
        out["ctr"] = float(out["ctr"])
        cur.execute("SELECT count(*) FROM (SELECT user_id FROM ev WHERE seen AND NOT holdout GROUP BY 1 HAVING count(*) < %s) r",
                    (args.min_count,))
        out["rare_train_users"] = cur.fetchone()[0]
        rows = {}
        MODELS["min_count"] = min_count_model(args.min_count)
        for name, cfg in MODELS.items():
            t0 = time.time()
            cur.execute("CALL pepnet_train(%s, 'SELECT domain, user_id, ugroup, item, click FROM ev WHERE seen AND NOT holdout', "
                        "%s, epochs => %s, batch_size => 256, lr => 0.005, seed => 7, shuffle_buffer => 100000, "
                        "progress_interval => 0)", ("u_" + name, json.dumps(cfg), args.epochs))
            secs = time.time() - t0
            cur.execute("SELECT config->'features'->0->'buckets' FROM pepnet.models WHERE name = %s ORDER BY version DESC LIMIT 1",
                        ("u_" + name,))
            buckets = cur.fetchone()[0]
            res = {"train_seconds": round(secs, 1), "user_buckets": buckets}
            for group, where in (("seen", "seen AND holdout"), ("unseen", "NOT seen"),
                                 ("rare_train", "seen AND NOT holdout AND user_id IN (SELECT user_id FROM ev WHERE seen AND NOT holdout "
                                                "GROUP BY 1 HAVING count(*) < %d)" % args.min_count)):
                cur.execute("SELECT click, pepnet_predict(%%s, c) FROM (SELECT domain, user_id, ugroup, item, click FROM ev WHERE %s) c"
                            % where, ("u_" + name,))
                r = cur.fetchall()
                y = np.array([x[0] for x in r], bool)
                p = np.array([x[1] for x in r])
                res[group] = {"pcoc": round(float(p.sum() / y.sum()), 3), "auc": round(auc(y, p), 4)}
            rows[name] = res
        out["models"] = rows
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS %s" % args.db)
        admin.close()
    try:
        out["commit"] = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except Exception:
        pass
    print("rows: %d training (%d users, %d of them seen fewer than min_count times), %d held-out rows of those users, "
          "%d rows of %d new users; CTR %.3f" % (out["train_rows"], args.users, out["rare_train_users"], out["seen_test_rows"],
                                                 out["unseen_rows"], out["unseen_users"], out["ctr"]))
    print("| model | user rows | PCOC seen users | AUC seen users | PCOC unseen users | AUC unseen users | PCOC rare users (training rows) | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in out["models"].items():
        print("| %s | %s | %.3f | %.4f | %.3f | %.4f | %.3f | %.1f |" % (name, r["user_buckets"], r["seen"]["pcoc"], r["seen"]["auc"],
                                                                         r["unseen"]["pcoc"], r["unseen"]["auc"], r["rare_train"]["pcoc"],
                                                                         r["train_seconds"]))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
