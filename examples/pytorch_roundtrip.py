#!/usr/bin/python3
"""PyTorch <-> pepnet round trip: train in PyTorch, import, score in SQL, export, load, same scores.

    eval "$(test/pg.sh env)"                 # or any PG* environment with CREATE EXTENSION pepnet rights
    /usr/bin/python3 examples/pytorch_roundtrip.py [--lineage roundtrip.png]

1. trains a small STAR-PEPNet in PyTorch on synthetic two-task data (a few hundred steps);
2. imports it as a new version of "roundtrip" (pepnet_import) and scores candidates in SQL
   (pepnet_score) next to the module's own probabilities;
3. continues training the version in SQL for an epoch (CALL pepnet_train), exports that version
   (pepnet_export), loads it as a module and compares its scores with SQL's;
4. optionally draws the lineage (python3 -m pepnet.plot does the same from the shell).
Uses Debian's python3-torch, python3-numpy, python3-psycopg2 (and python3-matplotlib for the PNG).
"""
import argparse
import os
import sys

import numpy as np
import psycopg2
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import pepnet  # noqa: E402
import pepnet.db  # noqa: E402

CONFIG = {"domains": 3,
          "features": [{"name": "item", "buckets": 2000}, {"name": "category", "buckets": 20, "hash": False},
                       {"name": "hour", "buckets": 24, "hash": False}],
          "persona": [{"name": "user", "buckets": 1000}, {"name": "age", "buckets": 6, "hash": False}],
          "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16]}


def synth(rng, n):
    """n synthetic rows: click depends on domain, category x age and hour; buy on click and category."""
    dom = rng.integers(0, 3, n)
    user = rng.integers(0, 5000, n)
    age = rng.integers(0, 6, n)
    item = rng.integers(0, 20000, n)
    cat = item % 20
    hour = rng.integers(0, 24, n)
    z = -2.0 + 0.5 * dom + 0.8 * np.cos(cat * 0.7 + age) + 0.4 * np.sin(hour / 24 * 2 * np.pi)
    click = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float32)
    buy = np.where(click > 0, (rng.random(n) < 0.2 + 0.03 * (cat % 5)).astype(np.float32), 0.0).astype(np.float32)
    return dom, np.stack([user, age], 1), np.stack([item, cat, hour], 1), np.stack([click, buy], 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lineage", help="also draw the version's lineage to this PNG")
    ap.add_argument("--steps", type=int, default=300, help="PyTorch training steps (batch 256)")
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    conn = psycopg2.connect("")
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")

    print("== 1. training in PyTorch (%d steps of 256 rows)" % args.steps)
    model = pepnet.StarPepNet(CONFIG, seed=1).train()   # the same initial weights as pepnet_create(seed => 1)
    opt = pepnet.Optimizer(model, lr=3e-3)              # Adam + SparseAdam, as the extension trains
    for step in range(1, args.steps + 1):
        dom, per, feat, y = synth(rng, 256)
        loss = model.loss(model(dom, per, feat), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == args.steps:
            print("   step %d: train loss %.4f" % (step, float(loss)))

    print("== 2. import as a new version, score in SQL")
    v = pepnet.db.import_module(conn, "roundtrip", model,
                                metrics={"source": "pytorch", "steps": args.steps, "train_loss": float(loss)})
    conn.commit()
    ref = "roundtrip@%d" % v
    print("   pepnet_import: %s (%d tensors, %.1f KB)" % (ref, len(model.state_dict()), len(model.to_safetensors()) / 1024))
    _, per, feat, _ = synth(rng, 8)
    domain, persona = 2, per[0]
    sql = pepnet.db.score(conn, ref, domain, persona, feat)          # pepnet_score in the database
    mine = model.predict(np.full(8, domain), np.tile(persona, (8, 1)), feat).numpy()
    print("   candidate (item, cat, hour)    p_click SQL   p_click torch   p_buy SQL   p_buy torch")
    for f, s, t in zip(feat, sql, mine):
        print("   %-30s %11.6f %15.6f %11.6f %13.6f" % (tuple(int(x) for x in f), s[0], t[0], s[1], t[1]))
    err1 = float(np.abs(sql - mine).max())
    print("   max |SQL - PyTorch| = %.2g" % err1)

    print("== 3. train one more epoch in SQL from that version, export, load, score in PyTorch")
    cur.execute("DROP TABLE IF EXISTS roundtrip_events")
    cur.execute("CREATE TABLE roundtrip_events (id int GENERATED ALWAYS AS IDENTITY, domain int, persona bigint[], features bigint[], labels real[])")
    dom, per, feat, y = synth(rng, 20000)
    cur.executemany("INSERT INTO roundtrip_events (domain, persona, features, labels) VALUES (%s, %s, %s, %s)",
                    [(int(d), p.tolist(), f.tolist(), l.tolist()) for d, p, f, l in zip(dom, per, feat, y)])
    conn.commit()
    conn.autocommit = True
    cur.execute("CALL pepnet_train(%s, 'SELECT domain, persona, features, labels FROM roundtrip_events', "
                "validation => 'SELECT domain, persona, features, labels FROM roundtrip_events WHERE id %% 5 = 0', "
                "batch_size => 256, lr => 1e-3)", (ref,))
    conn.autocommit = False
    loaded = pepnet.db.load_module(conn, "roundtrip")                # latest version: the SQL-trained one
    blob = pepnet.db.export(conn, "roundtrip@%d" % loaded.version[1])
    print("   %s@%d (parent %d) loaded: %d tensors; re-serialised bit for bit: %s"
          % (loaded.version[0], loaded.version[1], v, len(loaded.state_dict()), loaded.to_safetensors() == blob
             or pepnet.dumps({k: t for k, t in loaded.tensors().items() if k in pepnet.loads(blob)}) == blob))
    sample = "FROM roundtrip_events WHERE id % 20 = 0 ORDER BY id"      # 1000 rows
    data = pepnet.db.fetch(conn, "SELECT domain, persona, features, labels " + sample, loaded.config)
    mine = loaded.predict(data["domain"], data["persona"], data["features"]).numpy()
    cur.execute("SELECT pepnet_predict(%s, domain, persona, features) " + sample.replace("%", "%%"),
                ("roundtrip@%d" % loaded.version[1],))
    sql = np.array([r[0] for r in cur.fetchall()])
    err2 = float(np.abs(sql - mine[:, 0]).max())
    print("   1000 rows: mean p_click SQL %.6f, PyTorch %.6f; max |SQL - PyTorch| = %.2g"
          % (sql.mean(), mine[:, 0].mean(), err2))
    conn.commit()
    if args.lineage:
        from pepnet.plot import plot_lineage
        plot_lineage(pepnet.db.lineage(conn, "roundtrip@%d" % loaded.version[1]), args.lineage)
        print("== 4. lineage drawn to %s" % args.lineage)
    conn.close()
    ok = err1 < 1e-5 and err2 < 1e-5
    print("round trip %s: the same scores in SQL and PyTorch, both ways" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
