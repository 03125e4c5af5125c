"""The named form ("inputs": "columns") on both sides: the extension's scores by name against the
Python package's predict of the same weights and the same named rows.

Needs a PostgreSQL server in the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE) where the
pepnet extension (0.3.0) can be created, as a superuser (it creates two scratch databases, one of
them LATIN1, and drops them). The Python package is the one in python/ of this repository. Run with
/usr/bin/python3.

Checks: a version trained by name in SQL (int, text, uuid, NULL-bearing fields, a numeric dense
column) exported and scored by pepnet.StarPepNet on the rows fetched by name equals
pepnet_score_rows and pepnet_predict(model, row) to float32 rounding; text ids hash alike on both
sides ('' 'a' 'zürich' and a uuid's text, docs/model.md's vectors), also in a LATIN1 database,
where the server converts the text to UTF-8 before hashing; a version with dense transforms (log1p,
clip, zscore with NULLs) scores alike and its stored statistics equal pepnet.dense_stats of the same
rows; weights made in Python and imported score alike; multi-valued fields ("pooling": "sum"/"mean",
"weights"; NULL lists, empty lists, NULL elements, total weight 0, a multi-valued persona field)
score alike on every entry point, and one training step on the server from Python's weights equals
pepnet.Optimizer's step on the same batch (every tensor, and the same embedding rows move).
Prints one line per check and "N passed, M failed"; exit 1 if any check failed.
"""
import json
import os
import sys
import uuid

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

CFG = {"inputs": "columns", "domains": 3,
       "features": [{"name": "item", "buckets": 97}, {"name": "city", "buckets": 31},
                    {"name": "region", "buckets": 7, "hash": False}],
       "persona": [{"name": "user_id", "buckets": 41}],
       "dense": [{"name": "price"}], "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [8, 4], "aux_hidden": 5}
CITIES = ["", "a", "zürich", "123e4567-e89b-12d3-a456-426614174000", "Genève", "köln"]
ROWS = """SELECT g AS id, g %% 3 AS domain, (g * 7919)::bigint AS item,
                 CASE WHEN g %% 9 = 0 THEN NULL ELSE (ARRAY[{cities}])[1 + g %% 6] END AS city,
                 CASE WHEN g %% 4 = 0 THEN NULL ELSE g %% 7 END AS region,
                 ('00000000-0000-0000-0000-' || lpad(to_hex(g %% 17), 12, '0'))::uuid AS user_id,
                 (g %% 10) * 0.1 AS price,
                 (g %% 3 = 0 OR g %% 4 = 0) AS click, CASE WHEN g %% 5 = 0 THEN NULL ELSE (g %% 2)::int END AS buy
          FROM generate_series(1, 600) g"""


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""))


def batch_of(rows, cols):
    """A named batch from fetched rows: uuid as uuid.UUID, NULL as None, numeric as float."""
    b = {c: [r[i] for r in rows] for i, c in enumerate(cols)}
    b["user_id"] = [uuid.UUID(u) if isinstance(u, str) else u for u in b["user_id"]]
    b["price"] = [float(p) for p in b["price"]]
    return b


def scratch_db(admin, name, encoding):
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS %s" % name)
        cur.execute("CREATE DATABASE %s ENCODING '%s' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0" % (name, encoding))
    conn = psycopg2.connect("", dbname=name)
    conn.autocommit = True
    conn.set_client_encoding("UTF8")
    with conn.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute("CREATE EXTENSION pepnet")
        cur.execute("CREATE TABLE ev AS " + ROWS.replace("{cities}", ", ".join(["%s"] * len(CITIES))), CITIES)
    return conn


def scores_of(cur, model):
    cur.execute("SELECT (s.candidate).id, s.score, s.scores FROM pepnet_score_rows(%s, ARRAY(SELECT c FROM ev c ORDER BY id)) s",
                (model,))
    rows = cur.fetchall()
    cur.execute("SELECT pepnet_predict(%s, c) FROM (SELECT * FROM ev ORDER BY id) c", (model,))
    pred = [r[0] for r in cur.fetchall()]
    return np.array([r[2] for r in rows]), np.array(pred)


BCFG = {"inputs": "columns", "domains": 3,
        "features": [{"name": "item", "buckets": 97}, {"name": "tags", "buckets": 23, "pooling": "mean", "weights": "tw"},
                     {"name": "hist", "buckets": 19, "pooling": "sum"}],
        "persona": [{"name": "user_id", "buckets": 41}, {"name": "likes", "buckets": 13, "pooling": "sum"}],
        "dense": [{"name": "price"}], "emb_dim": 4, "tasks": ["click", "buy"], "hidden": [8, 4], "aux_hidden": 5}
BROWS = """SELECT id, domain, item, user_id, price, click, buy,
                  CASE WHEN id % 11 = 0 THEN NULL WHEN id % 13 = 0 THEN '{}'::text[]
                       ELSE ARRAY['t' || (id % 5), CASE WHEN id % 3 = 0 THEN NULL ELSE 'zürich' || (id % 4) END, 'u' || (id % 7)] END AS tags,
                  CASE WHEN id % 11 = 0 THEN NULL WHEN id % 13 = 0 THEN '{}'::real[]
                       WHEN id % 17 = 0 THEN '{0,0,0}'::real[] ELSE ARRAY[1 + id % 3, 0.25, (id % 4) * 0.5]::real[] END AS tw,
                  ARRAY(SELECT (id * k) % 31 FROM generate_series(1, id % 4) k)::bigint[] AS hist,
                  CASE WHEN id % 10 = 0 THEN NULL ELSE ARRAY[id % 5, id % 3]::int[] END AS likes
           FROM ev"""


def bags(cur):
    """Multi-valued fields: the server's scores and one training step against the package's."""
    cur.execute("CALL pepnet_train('nmb', %s, %s, epochs => 2, batch_size => 32, lr => 0.01, seed => 4, "
                "progress_interval => 0)", (BROWS, json.dumps(BCFG)))
    cur.execute("SELECT config FROM pepnet.models WHERE name = 'nmb' ORDER BY version DESC LIMIT 1")
    stored = cur.fetchone()[0]
    cur.execute("SELECT pepnet_export('nmb')")
    m = pepnet.StarPepNet.from_safetensors(stored, bytes(cur.fetchone()[0]))
    m.eval()
    cur.execute(BROWS + " ORDER BY id")
    cols = [d[0] for d in cur.description]
    b = batch_of(cur.fetchall(), cols)
    check("the fetched multi-valued columns are lists, with NULL lists and NULL elements",
          any(t is None for t in b["tags"]) and any(t == [] for t in b["tags"]) and
          any(t is not None and None in t for t in b["tags"]) and any(h == [] for h in b["hist"]))
    want = m.predict(b).double().numpy()
    cur.execute("SELECT s.scores FROM pepnet_score_rows('nmb', ARRAY(SELECT c FROM (" + BROWS + ") c ORDER BY id)) s")
    got = np.array([r[0] for r in cur.fetchall()])
    err = float(np.max(np.abs(got - want)))
    check("multi-valued fields: pepnet_score_rows == StarPepNet.predict (sum, weighted mean, empty rows, persona bags)",
          err <= TOL and len(got) == 600, "max err %.3g" % err)
    cur.execute("SELECT pepnet_predict('nmb', c) FROM (" + BROWS + ") c ORDER BY id")
    pred = np.array([r[0] for r in cur.fetchall()])
    err = float(np.max(np.abs(pred - want[:, 0])))
    check("multi-valued fields: pepnet_predict(model, row) == StarPepNet.predict", err <= TOL, "max err %.3g" % err)
    cur.execute("SELECT id, score FROM pepnet_score_query('nmb', %s) AS t(id int, domain int, item bigint, user_id uuid, "
                "price numeric, click boolean, buy int, tags text[], tw real[], hist bigint[], likes int[], score float8, "
                "scores float8[]) ORDER BY id", (BROWS,))
    q = np.array([r[1] for r in cur.fetchall()])
    check("multi-valued fields: pepnet_score_query == pepnet_score_rows", np.array_equal(q, got[:, 0]))
    empty = [i for i in range(600) if not b["tags"][i] or all(t is None for t in b["tags"][i]) or
             (b["tw"][i] is not None and sum(w for t, w in zip(b["tags"][i], b["tw"][i]) if t is not None) == 0)]
    check("rows of the empty row (NULL, empty, zero weight) are among them", len(empty) > 60, "%d rows" % len(empty))

    # one training step from Python's weights: the server's step == pepnet.Optimizer's
    mp = pepnet.StarPepNet(BCFG, seed=21)
    cur.execute("SELECT pepnet_import('nmbt', %s, %s)", (json.dumps(BCFG), psycopg2.Binary(mp.to_safetensors())))
    first = BROWS + " ORDER BY id LIMIT 64"
    cur.execute("CALL pepnet_train('nmbt', %s, epochs => 1, batch_size => 64, lr => 0.01, shuffle_buffer => 1, "
                "progress_interval => 0)", (first,))
    cur.execute("SELECT pepnet_export('nmbt')")
    server = pepnet.StarPepNet.from_safetensors(BCFG, bytes(cur.fetchone()[0])).state_dict()
    cur.execute(first)
    b1 = batch_of(cur.fetchall(), [d[0] for d in cur.description])
    before = {k: v.clone() for k, v in mp.state_dict().items()}
    mp.train()
    opt = pepnet.Optimizer(mp, lr=0.01)
    opt.zero_grad()
    mp.loss(mp(b1), b1).backward()
    opt.step()
    after = mp.state_dict()
    worst, moved_alike = 0.0, True
    for k, v in after.items():
        if k == "pn.num_batches_tracked":
            continue
        worst = max(worst, float((server[k].double() - v.double()).abs().max()))
        if k.startswith("emb."):
            moved_p = (v != before[k]).any(dim=1)
            moved_s = (server[k] != before[k]).any(dim=1)
            moved_alike &= bool(torch.equal(moved_p, moved_s))
    check("one training step with multi-valued fields: the server's weights == pepnet.Optimizer's", worst <= 1e-4,
          "max |diff| %.3g" % worst)
    check("the step moves the same embedding rows (the pooled ids, the empty rows) on both sides", moved_alike)
    tag_rows = {int(r) for r in torch.nonzero((after["emb.feature.1"] != before["emb.feature.1"]).any(dim=1))}
    check("the step moves the tags' empty row and pooled rows", 23 in tag_rows and len(tag_rows) > 5, str(sorted(tag_rows)))


def main():
    admin = psycopg2.connect("")
    admin.autocommit = True
    utf8 = scratch_db(admin, "pepnet_named_utf8", "UTF8")
    latin1 = scratch_db(admin, "pepnet_named_latin1", "LATIN1")
    try:
        cur = utf8.cursor()
        cur.execute("CALL pepnet_train('nmp', 'SELECT * FROM ev', %s, epochs => 2, batch_size => 32, lr => 0.01, seed => 4, "
                    "progress_interval => 0)", (json.dumps(CFG),))
        cur.execute("SELECT config FROM pepnet.models WHERE name = 'nmp' ORDER BY version DESC LIMIT 1")
        stored = cur.fetchone()[0]
        cur.execute("SELECT pepnet_export('nmp')")
        blob = bytes(cur.fetchone()[0])
        check("the stored config says \"inputs\": \"columns\"", stored.get("inputs") == "columns")
        m = pepnet.StarPepNet.from_safetensors(stored, blob)
        m.eval()
        cur.execute("SELECT * FROM ev ORDER BY id")
        cols = [d[0] for d in cur.description]
        b = batch_of(cur.fetchall(), cols)
        want = m.predict(b).double().numpy()
        got, pred = scores_of(cur, "nmp")
        err = float(np.max(np.abs(got - want)))
        check("pepnet_score_rows == StarPepNet.predict of the exported weights on the same rows by name", err <= TOL,
              "max err %.3g over %d rows, 2 tasks" % (err, len(got)))
        err = float(np.max(np.abs(pred - want[:, 0])))
        check("pepnet_predict(model, row) == StarPepNet.predict", err <= TOL, "max err %.3g" % err)
        # the rows with a NULL city or region go through the missing rows on both sides
        nulls = [i for i in range(len(b["city"])) if b["city"][i] is None or b["region"][i] is None]
        check("rows with NULL ids agree too", len(nulls) > 100 and float(np.max(np.abs(got[nulls] - want[nulls]))) <= TOL)
        # text ids: docs/model.md's vectors on the server's side, through the scores of one-field rows
        cur.execute("SELECT count(DISTINCT s.score) FROM pepnet_score_rows('nmp', ARRAY(SELECT c FROM "
                    "(SELECT 0 AS domain, 1 AS item, t AS city, 1 AS region, '00000000-0000-0000-0000-000000000001'::uuid AS user_id, "
                    "0.5 AS price FROM unnest(%s::text[]) t) c)) s", (CITIES,))
        check("distinct text ids score apart", cur.fetchone()[0] == len(CITIES))
        # the same version in a LATIN1 database: the server converts its text to UTF-8 before hashing
        lcur = latin1.cursor()
        lcur.execute("SELECT pepnet_import('nmp', %s, %s)", (json.dumps(stored), psycopg2.Binary(blob)))
        lgot, lpred = scores_of(lcur, "nmp")
        check("a LATIN1 database scores the same text ids alike ('zürich', 'Genève', 'köln')",
              np.array_equal(lgot, got) and np.array_equal(lpred, pred))
        # dense transforms: log1p, clip and zscore with the statistics pepnet_train stored, NULL imputed
        tq = ("SELECT id, domain, item, city, region, user_id, price, click, buy, "
              "CASE WHEN id % 8 = 0 THEN NULL ELSE exp((id * 37 % 100) / 12.0)::float8 END AS w FROM ev")
        tcfg = dict(CFG, dense=[{"name": "price", "clip": [0.1, 0.7], "normalize": "zscore"},
                                {"name": "w", "log1p": True, "normalize": "zscore"}])
        cur.execute("CALL pepnet_train('nmt', %s, %s, epochs => 2, batch_size => 32, lr => 0.01, seed => 4, "
                    "progress_interval => 0)", (tq, json.dumps(tcfg)))
        cur.execute("SELECT config FROM pepnet.models WHERE name = 'nmt' ORDER BY version DESC LIMIT 1")
        tstored = cur.fetchone()[0]
        cur.execute("SELECT pepnet_export('nmt')")
        mt = pepnet.StarPepNet.from_safetensors(tstored, bytes(cur.fetchone()[0]))
        mt.eval()
        cur.execute(tq + " ORDER BY id")
        tcols = [d[0] for d in cur.description]
        tb = batch_of(cur.fetchall(), tcols)
        stats = pepnet.dense_stats(tcfg, tb)["dense"]
        check("dense_stats of the fetched rows == the statistics pepnet_train stored",
              all(abs(stats[i][k] - tstored["dense"][i][k]) <= 1e-6 * abs(tstored["dense"][i][k])
                  for i in range(2) for k in ("mean", "std")), "%s vs %s" % (stats, tstored["dense"]))
        twant = mt.predict(tb).double().numpy()
        cur.execute("SELECT s.scores FROM pepnet_score_rows('nmt', ARRAY(SELECT c FROM (" + tq
                    + ") c ORDER BY id)) s")
        tgot = np.array([r[0] for r in cur.fetchall()])
        err = float(np.max(np.abs(tgot - twant)))
        check("dense transforms: pepnet_score_rows == StarPepNet.predict (log1p, clip, zscore, NULL imputed)",
              err <= 1e-5 and len(tgot) == 600, "max err %.3g" % err)
        bags(cur)
        # weights made in Python, imported, score as Python predicts
        mp = pepnet.StarPepNet(CFG, seed=11)
        mp.eval()
        cur.execute("SELECT pepnet_import('nmpy', %s, %s)", (json.dumps(CFG), psycopg2.Binary(mp.to_safetensors())))
        got2, _ = scores_of(cur, "nmpy")
        err = float(np.max(np.abs(got2 - mp.predict(b).double().numpy())))
        check("Python's weights imported score as StarPepNet.predict", err <= TOL, "max err %.3g" % err)
    finally:
        utf8.close()
        latin1.close()
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS pepnet_named_utf8")
            cur.execute("DROP DATABASE IF EXISTS pepnet_named_latin1")
        admin.close()
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
