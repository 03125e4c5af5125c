#!/usr/bin/python3
"""Named inputs against the positional 0.2 form on the same data, quality (issue 16's goals).

Run with Debian's /usr/bin/python3 (python3-numpy, python3-psycopg2) against a running cluster
where the pepnet extension (0.3.0) is installed; the connection comes from the libpq environment.

    /usr/bin/python3 bench/named_quality.py [--train 300000] [--test 60000] [--epochs 2] [--out FILE]

The data (synthetic, seeded; written to tables nq_train, nq_test, nq_unseen) has what real CTR
logs have and the 0.2 form handles badly:
  - item_id   int8, 40,000 items, few impressions each (its own effect is hard to learn);
  - category  text, 120 categories, effect per (category, domain);
  - tags      text[], 1 to 6 of 400 tags per item, the item's appeal is the mean of its tags'
              effects (so the tags generalise across items where the item id cannot);
  - user_id   text (a uuid), a per-user effect, in persona;
  - price     float8, log-normal (heavy-tailed: 0.05 .. 10^4), its effect linear in log(1 + price);
  - domain    3 domains with different base rates.
Both models have the same size (buckets, emb_dim, hidden; the tags field adds one table of 4,096
rows to the named model, the first-tag field of the positional model the same table):
  - positional: features [item, hashtext(category), hashtext(first tag)], persona [hashtext(user)],
    dense [price] as it is (what a 0.2 user writes by hand);
  - named:      item_id, category (text), tags (text[], "pooling": "mean"), persona user_id (text),
    price with "log1p" and "normalize": "zscore"; and the same with "min_count": 2 on user_id
    (the unseen-user rows then use the out-of-vocabulary row).
Reports test AUC and per-domain PCOC of each (pepnet_evaluate of the last epoch's version), and the
PCOC of 2,000 users never seen in training (nq_unseen).
"""
import argparse
import json
import math
import time
import uuid

import numpy as np
import psycopg2

D = 3
ITEMS = 40000
CATS = 120
TAGS = 400
USERS = 30000


def world(seed):
    r = np.random.default_rng(seed)
    w = {
        "base": np.array([-2.2, -1.6, -2.8]),
        "user": r.normal(0, 0.6, USERS + 2000),
        "item": r.normal(0, 0.3, ITEMS),
        "cat": r.normal(0, 0.5, (CATS, D)),
        "tag": r.normal(0, 0.9, TAGS),
        "item_cat": r.integers(0, CATS, ITEMS),
        "item_tags": [r.choice(TAGS, size=r.integers(1, 7), replace=False) for _ in range(ITEMS)],
        "item_price": np.exp(r.normal(1.5, 1.6, ITEMS)),
        "users": [str(uuid.UUID(int=int(r.integers(0, 2**62)) << 64 | int(r.integers(0, 2**62)))) for _ in range(USERS + 2000)],
        "cats": ["cat-%03d-%s" % (c, "äöü"[c % 3]) for c in range(CATS)],
        "tags": ["tag-%d" % t for t in range(TAGS)],
    }
    return w


def sample(w, n, seed, users):
    """n impressions of users drawn from `users` (an index range): columns and labels."""
    r = np.random.default_rng(seed)
    lo, hi = users
    # users: a heavy-ish tail of activity
    u = lo + np.minimum((r.pareto(1.2, n) * (hi - lo) / 8).astype(np.int64), hi - lo - 1)
    i = r.integers(0, ITEMS, n)
    d = r.integers(0, D, n)
    c = w["item_cat"][i]
    tag_mean = np.array([w["tag"][w["item_tags"][k]].mean() for k in i])
    lp = np.log1p(w["item_price"][i])
    logit = (w["base"][d] + w["user"][u] + w["item"][i] + w["cat"][c, d] + tag_mean
             - 0.5 * (lp - 2.0))
    y = (r.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return u, i, d, y


def pg_text_array(xs):
    return "{" + ",".join('"%s"' % x for x in xs) + "}"


def load(cur, w, name, u, i, d, y):
    import io
    cur.execute(f"DROP TABLE IF EXISTS {name}")
    cur.execute(f"""CREATE TABLE {name} (domain int, user_id text, item_id bigint, category text,
                    tags text[], price float8, click int)""")
    buf = io.StringIO()
    for uu, ii, dd, yy in zip(u, i, d, y):
        buf.write("%d\t%s\t%d\t%s\t%s\t%r\t%d\n" % (
            dd, w["users"][uu], ii, w["cats"][w["item_cat"][ii]],
            pg_text_array(w["tags"][t] for t in w["item_tags"][ii]), float(w["item_price"][ii]), yy))
    buf.seek(0)
    cur.copy_expert(f"COPY {name} FROM STDIN", buf)
    cur.execute(f"ANALYZE {name}")


COMMON = {"domains": D, "emb_dim": 16, "hidden": [128, 64], "tasks": ["click"]}

POSITIONAL_Q = """SELECT domain, ARRAY[hashtext(user_id)::bigint] AS persona,
    ARRAY[item_id, hashtext(category)::bigint, hashtext(tags[1])::bigint] AS features,
    ARRAY[price::real] AS dense, click AS label FROM {t}"""
NAMED_Q = "SELECT domain, user_id, item_id, category, tags, price, click FROM {t}"


def configs():
    pos = dict(COMMON, inputs="arrays", dense=1,
               features=[{"name": "item", "buckets": 65536}, {"name": "category", "buckets": 1024},
                         {"name": "tag1", "buckets": 4096}],
               persona=[{"name": "user", "buckets": 65536}])
    named = dict(COMMON, inputs="columns",
                 features=[{"name": "item_id", "buckets": 65536}, {"name": "category", "buckets": 1024},
                           {"name": "tags", "buckets": 4096, "pooling": "mean"}],
                 persona=[{"name": "user_id", "buckets": 65536}],
                 dense=[{"name": "price", "log1p": True, "normalize": "zscore"}])
    vocab = json.loads(json.dumps(named))
    vocab["persona"][0]["min_count"] = 2
    return [("positional (0.2 form)", "nq_pos", pos, POSITIONAL_Q),
            ("named", "nq_named", named, NAMED_Q),
            ("named, min_count 2 on user_id", "nq_vocab", vocab, NAMED_Q)]


def evaluate(cur, model, q):
    cur.execute("SELECT domain, auc, pcoc, rows FROM pepnet_evaluate(%s, %s) ORDER BY domain NULLS FIRST",
                (model, q))
    return cur.fetchall()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=300000)
    ap.add_argument("--test", type=int, default=60000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated model names (nq_pos,nq_named,nq_vocab)")
    ap.add_argument("--out")
    a = ap.parse_args()

    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    w = world(a.seed)
    t0 = time.time()
    load(cur, w, "nq_train", *sample(w, a.train, a.seed + 1, (0, USERS)))
    load(cur, w, "nq_test", *sample(w, a.test, a.seed + 2, (0, USERS)))
    load(cur, w, "nq_unseen", *sample(w, a.test // 3, a.seed + 3, (USERS, USERS + 2000)))
    print("data loaded in %.0f s" % (time.time() - t0), flush=True)

    rows = []
    for label, name, cfg, q in configs():
        if a.only and name not in a.only.split(","):
            continue
        cur.execute("DELETE FROM pepnet.deployments WHERE name = %s", (name,))
        cur.execute("SET pepnet.allow_drop = on")
        cur.execute("DELETE FROM pepnet.models WHERE name = %s", (name,))
        t0 = time.time()
        cur.execute("CALL pepnet_train(%s, %s, %s, epochs => %s, batch_size => 512, lr => 1e-3, seed => 0)",
                    (name, q.format(t="nq_train"), json.dumps(cfg), a.epochs))
        secs = time.time() - t0
        test = evaluate(cur, name, q.format(t="nq_test"))
        unseen = evaluate(cur, name, q.format(t="nq_unseen"))
        rows.append((label, secs, test, unseen))
        print(label, "%.0f s" % secs, test, unseen, flush=True)

    out = ["| model | test AUC | PCOC per domain (0, 1, 2) | unseen users: AUC | unseen users: PCOC | train s |",
           "|---|---|---|---|---|---|"]
    for label, secs, test, unseen in rows:
        allr = [r for r in test if r[0] is None][0]
        per = ", ".join("%.3f" % r[2] for r in test if r[0] is not None)
        ua = [r for r in unseen if r[0] is None][0]
        out.append("| %s | %.4f | %s | %.4f | %.3f | %.0f |" % (label, allr[1], per, ua[1], ua[2], secs))
    text = "\n".join(out)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
