"""Vocabularies ("min_count", docs/model.md "Vocabularies and unseen ids") on both sides: the
vocabularies pepnet_train builds against pepnet.build_vocab of the same rows, and the extension's
scores against the Python package's for seen, rare and unseen ids.

Needs a PostgreSQL server in the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE) where the
pepnet extension (0.3.0) can be created, as a superuser (it creates a scratch database and drops
it). The Python package is the one in python/ of this repository. Run with /usr/bin/python3.

Checks: the stored config's buckets (V + 1) and the exported vocab tensors equal pepnet.build_vocab
of the training rows (integer and text ids, ties at the buckets limit, NULLs); StarPepNet of the
exported weights scores as pepnet_predict and pepnet_score_rows, to float32 rounding, rows with seen,
rare (count < min_count) and unseen ids and NULLs, and two unseen ids alike; a module made in Python
with build_vocab, moved by pepnet.db.import_module, scores alike in the server and comes back by
pepnet.db.load_module with its vocabularies; one training step of it on both sides moves the same
embedding rows (the OOV rows among them) to the same values and leaves the vocabularies. Prints one line per check and "N passed, M failed";
exit 1 if any check failed.
"""
import json
import os
import sys

import numpy as np
import psycopg2
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
import pepnet  # noqa: E402

torch.set_num_threads(1)
RESULTS = []
TOL = 2e-6

# item: 0..52 seen 17 or 18 times (ids 1..49 18 times), 1951..1999 once: the buckets limit (39 ids)
# cuts ties by the smaller id (ids 1..39); usr: text, some rare, NULL every 11th row; cat: hashed
CFG = {"inputs": "columns", "domains": 2,
       "features": [{"name": "item", "buckets": 40, "min_count": 3}, {"name": "cat", "buckets": 13}],
       "persona": [{"name": "usr", "buckets": 500, "min_count": 2}],
       "emb_dim": 4, "hidden": [8], "aux_hidden": 5}
ROWS = """SELECT g AS id, g % 2 AS domain, (CASE WHEN g > 950 THEN 1000 + g ELSE g % 53 END)::bigint AS item, (g % 7)::int AS cat,
                 CASE WHEN g % 11 = 0 THEN NULL ELSE 'user' || (g % 97) || CASE WHEN g > 900 THEN 'x' || g ELSE '' END END AS usr,
                 (g % 53 < 25) <> (g % 97 < 30) AS click
          FROM generate_series(1, 1000) g"""


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""))


def batch_of(rows, cols):
    return {c: [r[i] for r in rows] for i, c in enumerate(cols)}


def main():
    admin = psycopg2.connect("")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS pepnet_vocab_py")
        cur.execute("CREATE DATABASE pepnet_vocab_py ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    conn = psycopg2.connect("", dbname="pepnet_vocab_py")
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SET client_min_messages = warning")
        cur.execute("CREATE EXTENSION pepnet")
        cur.execute("CREATE TABLE ev AS " + ROWS)
        cur.execute("CALL pepnet_train('vp', 'SELECT * FROM ev', %s, epochs => 2, batch_size => 32, lr => 0.02, seed => 5, "
                    "progress_interval => 0)", (json.dumps(CFG),))
        cur.execute("SELECT config FROM pepnet.models WHERE name = 'vp' ORDER BY version DESC LIMIT 1")
        stored = cur.fetchone()[0]
        cur.execute("SELECT pepnet_export('vp')")
        blob = bytes(cur.fetchone()[0])
        tensors = pepnet.loads(blob)

        # the vocabularies: pepnet.build_vocab of the same rows gives the same config and ids
        cur.execute("SELECT * FROM ev ORDER BY id")
        cols = [d[0] for d in cur.description]
        b = batch_of(cur.fetchall(), cols)
        built, vocab = pepnet.build_vocab(CFG, b)
        iv, uv = tensors["vocab.feature.0"], tensors["vocab.persona.0"]
        check("the vocab tensors are int64 (I64)", iv.dtype == torch.int64 and uv.dtype == torch.int64)
        check("item: the buckets limit keeps 39 ids (V + 1 = 40 rows), ties by the smaller id",
              stored["features"][0]["buckets"] == 40 and iv.tolist() == list(range(1, 40)),
              "buckets %s, V %d" % (stored["features"][0]["buckets"], iv.numel()))
        check("usr: fewer ids than the limit, buckets = V + 1", stored["persona"][0]["buckets"] == uv.numel() + 1 < 500,
              "V %d" % uv.numel())
        check("build_vocab's config equals the stored one's buckets and min_count",
              [f["buckets"] for f in built["features"] + built["persona"]] ==
              [f["buckets"] for f in stored["features"] + stored["persona"]] and
              built["persona"][0]["min_count"] == stored["persona"][0]["min_count"] == 2)
        check("build_vocab's ids equal the server's (integer ids, ties cut by the smaller id)", torch.equal(vocab["vocab.feature.0"], iv))
        check("build_vocab's ids equal the server's (text ids)", torch.equal(vocab["vocab.persona.0"], uv))
        # the module of the exported weights, bit for bit back
        m = pepnet.StarPepNet.from_safetensors(stored, blob)
        m.eval()
        check("StarPepNet writes the exported blob back bit for bit", m.to_safetensors() == blob)

        # scores: the training rows, then seen / rare / unseen / NULL ids
        want = m.predict(b).double().numpy()[:, 0]
        cur.execute("SELECT pepnet_predict('vp', c) FROM (SELECT * FROM ev ORDER BY id) c")
        got = np.array([r[0] for r in cur.fetchall()])
        err = float(np.max(np.abs(got - want)))
        check("pepnet_predict == StarPepNet.predict on the training rows", err <= TOL, "max err %.3g over %d rows" % (err, len(got)))
        probe = {"domain": [0, 0, 0, 0, 1, 1, 1, 1, 0, 0],
                 "item": [int(iv[0]), 1960, 10 ** 12, -3, int(iv[5]), int(iv[5]), int(iv[5]), int(iv[5]), None, 45],
                 "cat": [1, 1, 1, 1, 2, 2, 2, 2, 3, 1],
                 "usr": ["user5", "user5", "user5", "user5", "user5", "user7x999", "never seen", None, "user7", "user5"]}
        cur.execute("SELECT s.score FROM pepnet_score_rows('vp', ARRAY(SELECT c FROM unnest(%s::int[], %s::bigint[], %s::int[], %s::text[]) "
                    "WITH ORDINALITY c(domain, item, cat, usr, k) ORDER BY k)) s",
                    (probe["domain"], probe["item"], probe["cat"], probe["usr"]))
        pgot = np.array([r[0] for r in cur.fetchall()])
        pwant = m.predict(probe).double().numpy()[:, 0]
        err = float(np.max(np.abs(pgot - pwant)))
        check("seen, rare, unseen and NULL ids: pepnet_score_rows == StarPepNet.predict", err <= TOL, "max err %.3g" % err)
        check("a rare item, one cut by the buckets limit and two unseen items score alike (the OOV row), on both sides",
              pgot[1] == pgot[2] == pgot[3] == pgot[9] and pwant[1] == pwant[2] == pwant[3] == pwant[9] and pgot[0] != pgot[1])
        check("a rare user and an unseen user score alike, NULL apart", pgot[5] == pgot[6] and pgot[4] != pgot[5] and pgot[7] != pgot[5])

        # a module made in Python with build_vocab, moved by pepnet.db both ways
        mp = pepnet.StarPepNet(built, seed=9, vocab=vocab)
        mp.eval()
        v = pepnet.db.import_module(conn, "vp_py", mp)
        cur.execute("SELECT s.score FROM pepnet_score_rows('vp_py', ARRAY(SELECT c FROM unnest(%s::int[], %s::bigint[], %s::int[], %s::text[]) "
                    "WITH ORDINALITY c(domain, item, cat, usr, k) ORDER BY k)) s",
                    (probe["domain"], probe["item"], probe["cat"], probe["usr"]))
        sgot = np.array([r[0] for r in cur.fetchall()])
        swant = mp.predict(probe).double().numpy()[:, 0]
        err = float(np.max(np.abs(sgot - swant)))
        check("a Python-made module imported by pepnet.db scores alike in the server", v == 1 and err <= TOL, "max err %.3g" % err)
        back = pepnet.db.load_module(conn, "vp_py")
        check("pepnet.db.load_module brings its vocabularies back", torch.equal(back.vocab.persona._buffers["0"], vocab["vocab.persona.0"]) and
              back.to_safetensors() == mp.to_safetensors())
        # one training step from the same weights on both sides: the OOV rows train alike, rows of
        # ids outside the batch stay (lazy Adam), the vocabularies do not move
        q = "SELECT * FROM ev WHERE id <= 39 OR id > 975 ORDER BY id"  # 64 rows: one batch
        cur.execute("CALL pepnet_train('vp_py', %s, epochs => 1, batch_size => 64, lr => 0.01, shuffle_buffer => 1, "
                    "progress_interval => 0)", (q,))
        cur.execute("SELECT pepnet_export('vp_py@2')")
        after = pepnet.loads(bytes(cur.fetchone()[0]))
        cur.execute(q)
        tb = batch_of(cur.fetchall(), [d[0] for d in cur.description])
        before = mp.tensors()
        mp.train()
        opt = pepnet.Optimizer(mp, lr=0.01)
        loss = mp.loss(mp(tb), tb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mp.eval()
        py = mp.tensors()
        _, prow, frow, _ = mp._named_inputs(tb)
        oov_f, oov_p = built["features"][0]["buckets"] - 1, built["persona"][0]["buckets"] - 1
        check("the training batch holds OOV ids of both vocabulary fields", bool((frow[:, 0] == oov_f).any() and (prow[:, 0] == oov_p).any()))
        for name in ("emb.feature.0", "emb.persona.0"):
            moved_c = (after[name] != before[name]).any(dim=1)
            moved_p = (py[name] != before[name]).any(dim=1)
            err = float((after[name] - py[name]).abs().max())
            check("%s after one step: the same rows moved (the OOV row among them), values alike" % name,
                  torch.equal(moved_c, moved_p) and bool(moved_c[oov_f if name == "emb.feature.0" else oov_p]) and err <= 1e-5,
                  "%d rows moved, max err %.3g" % (int(moved_c.sum()), err))
        check("training leaves the vocabularies as they were", torch.equal(after["vocab.feature.0"], before["vocab.feature.0"]) and
              torch.equal(after["vocab.persona.0"], before["vocab.persona.0"]) and torch.equal(py["vocab.persona.0"], before["vocab.persona.0"]))
        err = max(float((after[n] - py[n]).abs().max()) for n in py if not n.startswith("vocab.") and n != "pn.num_batches_tracked")
        check("every float tensor after one step alike", err <= 1e-4, "max err %.3g" % err)
        # refusals: a vocabulary not ascending, of another length
        bad = dict(vocab)
        bad["vocab.feature.0"] = bad["vocab.feature.0"].flip(0)
        try:
            pepnet.StarPepNet(built, seed=9, vocab=bad)
            ok = False
        except pepnet.StateDictError as e:
            ok = "not ascending and unique" in str(e)
        check("StarPepNet refuses a vocabulary out of order", ok)
        try:
            pepnet.StarPepNet(CFG, seed=9, vocab=vocab)
            ok = False
        except pepnet.StateDictError as e:
            ok = "shape" in str(e)
        check("StarPepNet refuses a vocabulary of another length than buckets - 1", ok)
    finally:
        conn.close()
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS pepnet_vocab_py")
        admin.close()
    print("%d passed, %d failed" % (sum(RESULTS), len(RESULTS) - sum(RESULTS)))
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
