"""Tests of the Python package python/pepnet against the extension, through psycopg2.

Connection from the libpq environment (PGHOST, PGPORT, PGUSER); the test makes and drops its own
database pepnet_pkgtest. Run with /usr/bin/python3 (Debian's torch, numpy, psycopg2, matplotlib).
Prints one line per check and ends with "N passed, M failed"; exit 1 if any check failed.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import traceback
import warnings

import numpy as np
import psycopg2
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import pepnet  # noqa: E402
import pepnet.db  # noqa: E402
import pepnet.plot  # noqa: E402

torch.set_num_threads(1)
DB = "pepnet_pkgtest"
ABS_TOL, REL_TOL = 2e-6, 2e-5   # float32 scores of the same weights, fused (C) vs unfused (torch)
RESULTS = []

OFF = {"epnet": False, "ppnet": False, "pn": False, "star": False, "aux": False}
BASE = {"domains": 3,
        "features": [{"name": "item", "buckets": 500}, {"name": "cat", "buckets": 12, "hash": False},
                     {"name": "f2", "buckets": 50}],
        "persona": [{"name": "user", "buckets": 200}, {"name": "age", "buckets": 6, "hash": False}],
        "dense": 2, "emb_dim": 6, "tasks": ["click", "buy"], "hidden": [16, 8], "aux_hidden": 6}
CONFIGS = {"star_pepnet": BASE,                                   # every part on
           "shared_mlp": dict(BASE, **OFF),                       # every part off
           "star": dict(BASE, **dict(OFF, star=True, pn=True, aux=True)),
           "pepnet": dict(BASE, **dict(OFF, epnet=True, ppnet=True), dense=0, persona=[]),
           # the shared-bottom baseline: every part off, the domain embedding in x0 (domain_input)
           "shared_bottom": dict(BASE, **OFF, domain_input=True),
           "no_pn_domain": dict(BASE, pn=False, domain_input=True)}     # domain_input excludes PN


def check(name, ok, detail=""):
    """Record and print one result."""
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""), flush=True)


def run(name, fn, *args):
    """Run a group of checks; an exception fails it with the traceback printed."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc(file=sys.stdout)
        check("%s ran without error" % name, False, "%s: %s" % (type(e).__name__, str(e).strip()[:300]))


def close(a, b):
    """(all |a-b| <= ABS_TOL + REL_TOL |b|, max abs error)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False, float("inf")
    err = np.abs(a - b)
    return bool(np.all(err <= ABS_TOL + REL_TOL * np.abs(b))), float(err.max()) if err.size else 0.0


def raises(fn, exc, *needles):
    """(raised exc with every needle in its message, message)."""
    try:
        fn()
    except exc as e:
        msg = str(e)
        return all(n in msg for n in needles), msg[:200]
    except Exception as e:  # noqa: BLE001
        return False, "raised %s: %s" % (type(e).__name__, e)
    return False, "no error"


def batch(rng, cfg, n, domain=None):
    """Synthetic inputs of a config: domain [n], persona [n, P], features [n, F], dense [n, Nd] or None."""
    c = pepnet.Config(cfg)

    def ids(fields):
        out = np.zeros((n, len(fields)), np.int64)
        for i, f in enumerate(fields):
            out[:, i] = (rng.integers(0, f["buckets"], n) if not f["hash"]
                         else rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64, endpoint=True))
        return out
    dom = np.full(n, domain) if domain is not None else rng.integers(0, c.domains, n)
    dense = rng.normal(size=(n, c.dense)).astype(np.float32) if c.dense else None
    return dom, ids(c.persona), ids(c.features), dense


# ---------------------------------------------------------------------------- no database

def test_hashing():
    """splitmix64 slots: docs/model.md test vectors; torch int64 arithmetic equals Python's uint64."""
    got = pepnet.slots(torch.tensor([0, 1, -1, 2**63 - 1]), 0, 1000).tolist()
    check("hashing: test vectors of docs/model.md", got == [535, 465, 936, 39], str(got))
    rng = np.random.default_rng(1)
    ids = rng.integers(-2**63, 2**63 - 1, 20000, dtype=np.int64, endpoint=True)
    ids[:4] = [-2**63, 2**63 - 1, -1, 0]
    ok = True
    for fi, b in ((0, 1000), (3, 7), (1023, 2**31), (17, 2**31 - 1), (2, 1)):
        want = [pepnet.splitmix64((int(i) & (2**64 - 1)) + 0x9E3779B97F4A7C15 * (fi + 1)) % b for i in ids]
        ok &= pepnet.slots(torch.from_numpy(ids), fi, b).tolist() == want
    check("hashing: torch slots equal uint64 arithmetic (5 fields, 20000 ids, extremes)", ok)
    ok, msg = raises(lambda: pepnet.slots(torch.tensor([3, 6]), 1, 6, hash=False, name="age"), ValueError,
                     "6", "age", "[0, 6)")
    check("hashing: unhashed id out of range is an error naming the field", ok, msg)


def test_float_ids():
    """Ids that are not integers are refused, naming the argument, the field and the fix (issue 15
    item 9): a float64 id above 2^53, NaN and 1.9 would otherwise hash to other rows than in SQL."""
    cfg = {"domains": 2, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 5, "hash": False}],
           "persona": [{"name": "user", "buckets": 50}], "hidden": [8], "emb_dim": 4}
    m = pepnet.StarPepNet(cfg, seed=3)
    big = 2**53 + 1                     # float64 cannot hold it: stored as 2^53
    good = m.predict([0], [[7]], np.array([[big, 1]], dtype=np.int64))
    cases = [
        ("float64 id above 2^53", lambda: m.predict([0], [[7]], np.array([[big, 1]], dtype=np.float64)),
         TypeError, ("features", "float64", "2^53", "astype('int64')")),
        ("float64 NaN id (a missing value)", lambda: m.predict([0], [[7]], np.array([[np.nan, 1.0]])),
         ValueError, ("features", "nan", "'item'", "fillna")),
        ("id 1.9", lambda: m.predict([0], [[7]], [[1.9, 1]]), ValueError, ("features", "1.9", "'item'", "integer")),
        ("integral float32 ids", lambda: m.predict([0], [[7]], torch.tensor([[5.0, 1.0]])),
         TypeError, ("features", "float32")),
        ("float persona", lambda: m.predict([0], np.array([[7.5]]), [[5, 1]]), ValueError, ("persona", "7.5", "'user'")),
        ("None in an object array", lambda: m.predict([0], [[7]], np.array([[5, None]], dtype=object)),
         TypeError, ("features", "None", "'cat'")),
        ("float domain", lambda: m.predict([1.9], [[7]], [[5, 1]]), ValueError, ("domain", "1.9")),
        ("bool ids", lambda: m.predict([0], [[7]], torch.tensor([[True, False]])), TypeError, ("features", "bool")),
        ("uint64 id beyond int8", lambda: m.predict([0], [[7]], np.array([[2**63, 1]], dtype=np.uint64)),
         ValueError, ("features", "9223372036854775808")),
        ("pepnet.slots of float ids", lambda: pepnet.slots(np.array([3.0]), 0, 1000, name="item"),
         TypeError, ("'item'", "float64")),
        ("pepnet.db.score of float features (before any SQL)",
         lambda: pepnet.db.score(None, "ctr", 0, [7], np.array([[np.nan, 1.0]])), ValueError, ("features", "nan")),
        ("pepnet.db.score of a float domain", lambda: pepnet.db.score(None, "ctr", 0.5, [7], [[5, 1]]),
         ValueError, ("domain", "0.5")),
    ]
    for what, fn, exc, needles in cases:
        ok, msg = raises(fn, exc, *needles)
        check("ids: %s refused with %s" % (what, exc.__name__), ok, msg)
    same = [torch.equal(m.predict([0], [[7]], v), good) for v in
            (np.array([[big, 1]], dtype=np.int64), [[big, 1]], torch.tensor([[big, 1]]),
             np.array([[big, 1]], dtype=np.uint64), np.array([[big, 1]], dtype=object))]
    check("ids: int64, list, tensor, uint64 and object ints give the same scores", all(same), str(same))
    check("ids: an empty persona list is still accepted for a model without persona",
          pepnet.StarPepNet({"domains": 1, "features": [{"name": "f", "buckets": 10}], "hidden": [4]})
          .predict([0], [], [[3]]).shape == (1, 1))


def test_safetensors():
    """Round trip of every dtype bit for bit; malformed input refused with a message that says why."""
    rng = np.random.default_rng(2)
    ts = {"a": torch.from_numpy(rng.normal(size=(3, 4)).astype(np.float32)),
          "b.0": torch.tensor([1.5, -0.0, float("inf")], dtype=torch.float64),
          "half": torch.tensor([[1.0, 2.5]], dtype=torch.float16), "bf": torch.tensor([3.0, -1.0], dtype=torch.bfloat16),
          "i64": torch.tensor([-2**63, 2**63 - 1]), "i32": torch.tensor([7], dtype=torch.int32),
          "u8": torch.tensor([0, 255], dtype=torch.uint8), "flag": torch.tensor([True, False]),
          "empty": torch.zeros(0, 5), "scalar": torch.tensor(4.0)}
    blob = pepnet.dumps(ts)
    back, meta = pepnet.loads(blob, with_metadata=True)
    def raw(t):
        return (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
    same = (list(back) == list(ts) and all(back[k].dtype == v.dtype and back[k].shape == v.shape
                                           and raw(back[k]) == raw(v) for k, v in ts.items()))
    check("safetensors: 10 dtypes and shapes round trip bit for bit, order kept", same)
    check("safetensors: bytes -> tensors -> bytes identical, metadata kept",
          pepnet.dumps(back) == blob and meta == {"format": "pt"})
    (n,) = struct.unpack_from("<Q", blob)
    check("safetensors: header padded to 8 bytes with spaces", n % 8 == 0 and blob[8 + n - 1:8 + n] in (b" ", b"}"))
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.safetensors")
        pepnet.save(ts, p)
        check("safetensors: save/load a file", list(pepnet.load(p)) == list(ts) and open(p, "rb").read() == blob)

    def hdr(h, data=b""):
        raw = json.dumps(h).encode()
        return struct.pack("<Q", len(raw)) + raw + data

    f4 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    bad = [("3 bytes", b"abc", "too short"),
           ("header length past the end", struct.pack("<Q", 1000) + b"{}", "does not fit"),
           ("header not JSON", struct.pack("<Q", 3) + b"{x}", "not valid"),
           ("header a list", hdr([1]), "expected an object"),
           ("duplicate name", struct.pack("<Q", 2 * len(json.dumps(f4)) + 12) + b'{"a":' + json.dumps(f4).encode()
            + b',"a":' + json.dumps(f4).encode() + b"}" + bytes(8), "twice"),
           ("unknown dtype", hdr({"a": dict(f4, dtype="F128")}, bytes(8)), "dtype"),
           ("negative shape", hdr({"a": dict(f4, shape=[-2])}, bytes(8)), "shape"),
           ("offsets past the data", hdr({"a": dict(f4, data_offsets=[0, 16])}, bytes(8)), "outside"),
           ("size not the shape's", hdr({"a": dict(f4, shape=[3])}, bytes(8)), "needs 12"),
           ("overlapping tensors", hdr({"a": f4, "b": dict(f4, data_offsets=[4, 12])}, bytes(12)), "overlap"),
           ("bytes no tensor uses", hdr({"a": f4}, bytes(12)), "4 bytes that no tensor uses"),
           ("metadata not strings", hdr({"__metadata__": {"x": 1}}), "__metadata__")]
    for what, b, needle in bad:
        ok, msg = raises(lambda: pepnet.loads(b), pepnet.SafetensorsError, needle)
        check("safetensors: refuses %s" % what, ok, msg)
    ok, msg = raises(lambda: pepnet.dumps({"a": torch.zeros(2, dtype=torch.complex64)}), pepnet.SafetensorsError,
                     "complex64")
    check("safetensors: refuses to write a dtype it cannot hold", ok, msg)


def test_config_and_state_dict():
    """Config defaults and errors; state_dict names = tensor names; other names or shapes refused."""
    c = pepnet.Config({"domains": 2, "features": [{"name": "a", "buckets": 10}]})
    check("config: defaults of docs/model.md", c.emb_dim == 16 and c.hidden == [256, 128] and c.gamma == 2.0
          and c.tasks == ["click"] and c.aux_hidden == 32 and c.epnet_hidden == 16 and c.l2 == 0.0 and c.pn)
    for what, cfg, needle in (("unknown key", {"domains": 2, "features": [], "hiden": [3]}, "hiden"),
                              ("missing domains", {"features": []}, "domains"),
                              ("hidden out of range", dict(BASE, hidden=[0]), "hidden"),
                              ("duplicate field name", dict(BASE, features=[{"name": "a", "buckets": 2}] * 2), "twice"),
                              ("domain_input not a bool", dict(BASE, pn=False, domain_input=1), "domain_input"),
                              ("domain_input with PN", dict(BASE, domain_input=True), '"domain_input" needs "pn": false')):
        ok, msg = raises(lambda: pepnet.Config(cfg), pepnet.ConfigError, needle)
        check("config: %s is a ConfigError naming it" % what, ok, msg)

    sb = pepnet.Config(CONFIGS["shared_bottom"])
    check("config: domain_input: n0 = F*k + Nd + k, to_dict has it only when true",
          sb.n0 == 3 * 6 + 2 + 6 and sb.to_dict()["domain_input"] is True
          and "domain_input" not in pepnet.Config(dict(CONFIGS["shared_mlp"], domain_input=False)).to_dict()
          and pepnet.Config(dict(CONFIGS["shared_mlp"], domain_input=False)) == pepnet.Config(CONFIGS["shared_mlp"]))
    shapes = pepnet.StarPepNet(CONFIGS["shared_bottom"], seed=1).tensor_shapes()
    check("domain_input: the first tower layer reads n0 = 26 columns", shapes["tower.0.1.w"] == (16, 26), str(shapes["tower.0.1.w"]))

    m = pepnet.StarPepNet(BASE, seed=1)
    names = m.tensor_names()
    check("state_dict keys are exactly the tensor names", set(m.state_dict()) == set(names) and len(names) == 53
          and "pn.num_batches_tracked" in names and "tower.1.3.domain_w" in names, "%d tensors" % len(names))
    shapes = m.tensor_shapes()
    check("tensor shapes as docs/model.md", shapes["emb.feature.0"] == (500, 6) and shapes["epnet.w1"] == (20, 26)
          and shapes["pn.num_batches_tracked"] == (3,) and shapes["tower.0.1.domain_w"] == (3, 16, 20)
          and shapes["ppnet.2.w1"] == (16, 32) and shapes["ppnet.2.w2"] == (16, 16) and shapes["aux.w2"] == (2, 6)
          and shapes["tower.1.3.w"] == (1, 8))

    sd = m.state_dict()
    renamed = {("embedding.item" if k == "emb.feature.0" else k): v for k, v in sd.items()}
    ok, msg = raises(lambda: pepnet.StarPepNet(BASE).load_state_dict(renamed), pepnet.StateDictError,
                     "missing tensors: emb.feature.0", "unexpected tensors: embedding.item")
    check("load_state_dict with other names: error lists missing and unexpected", ok, msg)
    wrong = dict(sd, **{"tower.0.1.w": torch.zeros(16, 21)})
    ok, msg = raises(lambda: pepnet.StarPepNet(BASE).load_state_dict(wrong), pepnet.StateDictError,
                     "tower.0.1.w has shape [16, 21], the config needs [16, 20]")
    check("load_state_dict with a wrong shape: error names tensor and shapes", ok, msg)
    other = pepnet.StarPepNet(CONFIGS["shared_mlp"], seed=1)
    ok, msg = raises(lambda: pepnet.StarPepNet.from_safetensors(BASE, other.to_safetensors()), pepnet.StateDictError,
                     "missing tensors", "epnet.w1", "pn.running_var")
    check("safetensors of another config: error names the missing tensors", ok, msg)
    nobt = {k: v for k, v in sd.items() if k != "pn.num_batches_tracked"}
    m2 = pepnet.StarPepNet(BASE, seed=None)
    m2.pn.num_batches_tracked.fill_(5)
    m2.load_state_dict(nobt)
    check("pn.num_batches_tracked optional on load (absent = 0)", float(m2.pn.num_batches_tracked.abs().sum()) == 0
          and torch.equal(m2.pn.running_var, sd["pn.running_var"]))
    ok, msg = raises(lambda: m(np.array([0, 3]), *batch(np.random.default_rng(0), BASE, 2)[1:]), ValueError,
                     "domain 3 is out of range")
    check("forward: domain out of range is an error", ok, msg)


def test_pn_rule():
    """PN 0.2 in training mode: first batch sets the running statistics, then a plain average; 1-row domains keep them."""
    cfg = dict(CONFIGS["star"], aux=False)
    m = pepnet.StarPepNet(cfg, seed=3).train()
    rng = np.random.default_rng(4)
    seen = []
    for step in range(3):
        dom, per, feat, dense = batch(rng, cfg, 12)
        dom[:] = 0
        dom[:5] = 1
        dom[5] = 2                          # domain 2: one row, uses and keeps the running statistics
        with torch.no_grad():
            x = torch.cat([m._lookup(m.emb.feature, torch.from_numpy(feat), m.config.features),
                           torch.from_numpy(dense)], dim=1)
        seen.append({d: (x[torch.from_numpy(dom == d)].mean(0), x[torch.from_numpy(dom == d)].var(0, unbiased=False))
                     for d in (0, 1)})
        m(dom, per, feat, dense)
    rm, rv, n = m.pn.running_mean, m.pn.running_var, m.pn.num_batches_tracked
    ok = n.tolist() == [3.0, 3.0, 0.0]
    for d in (0, 1):
        want_m = sum(s[d][0] for s in seen) / 3    # a = 1, 1/2, 1/3: the average of the batches
        want_v = sum(s[d][1] for s in seen) / 3
        ok &= bool(torch.allclose(rm[d], want_m, atol=1e-6)) and bool(torch.allclose(rv[d], want_v, atol=1e-6))
    ok &= bool(torch.all(rm[2] == 0)) and bool(torch.all(rv[2] == 1))
    check("PN running statistics: warm-started average over batches, counts, 1-row domain untouched", ok,
          "num_batches_tracked %s" % n.tolist())
    m.pn.num_batches_tracked[0] = 1000
    before = rm[0].clone()
    dom, per, feat, dense = batch(rng, cfg, 6, domain=0)
    with torch.no_grad():
        x = torch.cat([m._lookup(m.emb.feature, torch.from_numpy(feat), m.config.features), torch.from_numpy(dense)], 1)
    m(dom, per, feat, dense)
    check("PN running statistics: momentum 0.01 after 100 batches",
          bool(torch.allclose(rm[0], 0.99 * before + 0.01 * x.mean(0), atol=1e-6)))


# ---------------------------------------------------------------------------- with the extension

def sql_scores(cur, mref, dom, per, feat, dense):
    """Probabilities [N, T] of pepnet_score, one request per domain present; and pepnet_predict of row 0."""
    out = np.zeros((len(dom), 0))
    rows = {}
    for d in sorted(set(dom.tolist())):
        idx = np.nonzero(dom == d)[0]
        # one request = one persona: score each row as its own request to keep per-row personas
        for i in idx:
            cur.execute("SELECT scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[], %s::real[])",
                        (mref, int(d), per[i].tolist(), feat[i:i + 1].tolist(),
                         None if dense is None else dense[i:i + 1].astype(np.float64).tolist()))
            rows[i] = cur.fetchone()[0]
    out = np.array([rows[i] for i in range(len(dom))])
    return out


def test_pytorch_to_sql(conn):
    """Modules trained a few steps in PyTorch, imported with pepnet.db.import_module: SQL scores equal theirs."""
    rng = np.random.default_rng(5)
    cur = conn.cursor()
    for name, cfg in CONFIGS.items():
        m = pepnet.StarPepNet(cfg, seed=11).train()
        opt = pepnet.Optimizer(m, lr=0.01)
        losses = []
        for _ in range(8):
            dom, per, feat, dense = batch(rng, cfg, 64)
            labels = rng.integers(0, 2, (64, 2)).astype(np.float32)
            labels[rng.random((64, 2)) < 0.2] = np.nan
            loss = m.loss(m(dom, per, feat, dense), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            v = pepnet.db.import_module(conn, "pkg_" + name, m, metrics={"source": "pytorch", "train_loss": losses[-1]})
        conn.commit()
        check("%s: trained 8 steps in PyTorch (loss %.4f -> %.4f), imported as version %d" % (name, losses[0], losses[-1], v),
              v >= 1 and all(np.isfinite(losses)), "; ".join(str(x.message) for x in w))
        dom, per, feat, dense = batch(rng, cfg, 40)
        want = m.predict(dom, per, feat, dense).numpy()
        got = sql_scores(cur, "pkg_%s@%d" % (name, v), dom, per, feat, dense)
        ok, err = close(got, want)
        check("%s: pepnet_score equals the module's predict (40 candidates x 2 tasks)" % name, ok, "max err %.2g" % err)
        # a 2-D request: one domain and persona, many candidates
        d, p = 1, per[0]
        want = m.predict(np.full(40, d), np.tile(p, (40, 1)), feat, dense).numpy()
        ok, err = close(pepnet.db.score(conn, "pkg_%s@%d" % (name, v), d, p, feat, dense), want)
        check("%s: pepnet.db.score (pepnet_score, 2-D) equals predict" % name, ok, "max err %.2g" % err)
        cur.execute("SELECT metrics->>'source' FROM pepnet.models WHERE name = %s AND version = %s", ("pkg_" + name, v))
        check("%s: import_module stored the metrics" % name, cur.fetchone()[0] == "pytorch")
    conn.commit()


def test_negative_rate(conn):
    """A config with negative_rate (0.2.0): SQL scores sigmoid(logit + ln w_d), as the module's predict."""
    cfg = dict(BASE, negative_rate=[0.05, 1.0, 0.3])
    c = pepnet.Config(cfg)
    check("config negative_rate: per-domain rates kept as float32, one number for equal rates",
          c.negative_rate[1] == 1.0 and abs(c.negative_rate[0] - 0.05) < 1e-8
          and pepnet.Config(dict(BASE, negative_rate=0.5)).to_dict()["negative_rate"] == 0.5)
    ok, msg = raises(lambda: pepnet.Config(dict(BASE, negative_rate=[0.5, 0.5])), pepnet.ConfigError, "negative_rate")
    check("config negative_rate with 2 rates for 3 domains is an error", ok, msg)
    m = pepnet.StarPepNet(cfg, seed=4)
    plain = pepnet.StarPepNet(BASE, seed=4)
    rng = np.random.default_rng(9)
    dom, per, feat, dense = batch(rng, cfg, 30)
    p, q = m.predict(dom, per, feat, dense).double(), plain.predict(dom, per, feat, dense).double()
    w = torch.tensor(c.negative_rate, dtype=torch.float64)[torch.from_numpy(dom)].unsqueeze(1)
    ok, err = close(p, q / (q + (1 - q) / w))
    check("predict with negative_rate = q / (q + (1 - q) / w_d)", ok, "max err %.2g" % err)
    cur = conn.cursor()
    cur.execute("SAVEPOINT nr")
    try:
        cur.execute("SELECT pepnet_create('pkg_nr_probe', %s::jsonb)", (json.dumps(dict(BASE, negative_rate=0.5)),))
    except psycopg2.Error as e:
        cur.execute("ROLLBACK TO SAVEPOINT nr")
        print("# skip - negative_rate: this server does not know the key (%s)" % str(e.pgerror).strip().splitlines()[0])
        return
    cur.execute("ROLLBACK TO SAVEPOINT nr")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = pepnet.db.import_module(conn, "pkg_nr", m)
    got = sql_scores(cur, "pkg_nr@%d" % v, dom, per, feat, dense)
    ok, err = close(got, p.numpy())
    check("negative_rate: pepnet_score equals the module's predict (30 rows, 3 domains)", ok, "max err %.2g" % err)
    back = pepnet.db.load_module(conn, "pkg_nr@%d" % v)
    check("negative_rate: load_module keeps the rates", back.config.negative_rate == c.negative_rate)
    conn.commit()


def test_bit_for_bit(conn):
    """pepnet_export vs the package's safetensors: the same bytes; seeded init = pepnet_create's."""
    cur = conn.cursor()
    for name, cfg in (("star_pepnet", BASE), ("pepnet", CONFIGS["pepnet"])):
        for seed in (0, -7):
            cur.execute("SELECT pepnet_create(%s, %s::jsonb, seed => %s)", ("pkgc_" + name, json.dumps(cfg), seed))
            v = cur.fetchone()[0]
            blob = pepnet.db.export(conn, "pkgc_%s@%d" % (name, v))
            check("%s seed %d: pepnet_export -> loads -> dumps gives the same bytes" % (name, seed),
                  pepnet.dumps(pepnet.loads(blob)) == blob, "%d bytes" % len(blob))
            mine = pepnet.StarPepNet(cfg, seed=seed)
            exported = pepnet.loads(blob)
            t = mine.tensors()
            if "pn.num_batches_tracked" not in exported:   # a server before the 0.2 PN counter
                t.pop("pn.num_batches_tracked", None)
            check("%s seed %d: StarPepNet(config, seed) is pepnet_create's version bit for bit" % (name, seed),
                  pepnet.dumps(t) == blob, "%d tensors" % len(t))
            loaded = pepnet.db.load_module(conn, "pkgc_%s@%d" % (name, v))
            t = loaded.tensors()
            if "pn.num_batches_tracked" not in exported:
                t.pop("pn.num_batches_tracked", None)
            check("%s seed %d: load_module -> to_safetensors is the exported blob" % (name, seed),
                  pepnet.dumps(t) == blob and loaded.version == ("pkgc_" + name, v))
    # import -> export of a trained module: the same tensors bit for bit
    m = pepnet.StarPepNet(BASE, seed=3)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        m.pn.running_var.uniform_(0.5, 2.0)
        m.pn.num_batches_tracked.copy_(torch.tensor([1.0, 250.0, 7.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = pepnet.db.import_module(conn, "pkgc_trained", m)
    back = pepnet.loads(pepnet.db.export(conn, "pkgc_trained@%d" % v))
    mine = m.tensors()
    same = all(torch.equal(back[k], mine[k]) for k in back) and set(mine) - set(back) <= {"pn.num_batches_tracked"}
    check("import_module -> pepnet_export: every tensor bit for bit", same, "%d tensors back" % len(back))
    conn.commit()


def test_sql_to_pytorch(conn):
    """A version trained in SQL (CALL pepnet_train), loaded with load_module: the module scores as SQL does."""
    cur = conn.cursor()
    cur.execute("""CREATE TABLE pkg_events AS
        SELECT (i % 3) AS domain,
               ARRAY[(hashint8(i) % 300), (i % 6)]::bigint[] AS persona,
               ARRAY[hashint8(i * 7) % 1000, i % 12, hashint8(i * 13)]::bigint[] AS features,
               ARRAY[((i % 17) / 17.0 - 0.5)::real, ((i % 5) - 2)::real] AS dense,
               ARRAY[((hashint8(i * 3) % 100 + 100) % 100 < 20 + 10 * (i % 3) + (i % 12))::int::real,
                     CASE WHEN i % 4 = 0 THEN NULL ELSE ((i % 7) = 0)::int::real END] AS labels,
               i
        FROM generate_series(1, 3000) i""")
    conn.commit()
    conn.autocommit = True
    cur.execute("""CALL pepnet_train('pkg_sql', 'SELECT domain, persona, features, dense, labels FROM pkg_events WHERE i <= 2400',
        config => %s::jsonb, validation => 'SELECT domain, persona, features, dense, labels FROM pkg_events WHERE i > 2400',
        epochs => 2, batch_size => 128, lr => 0.005, seed => 3)""", (json.dumps(BASE),))
    conn.autocommit = False
    m = pepnet.db.load_module(conn, "pkg_sql")
    check("pepnet_train then load_module: the latest version, in eval mode",
          m.version == ("pkg_sql", 2) and not m.training and m.config == pepnet.Config(BASE))
    check("trained PN running statistics loaded (not the initial 0 and 1)",
          float(m.pn.running_mean.abs().sum()) > 0 and bool((m.pn.running_var != 1).any()))
    q = "SELECT domain, persona, features, dense, labels FROM pkg_events WHERE i > 2900 ORDER BY i"
    mine = pepnet.db.score_query(conn, m, q)
    cur.execute("SELECT pepnet_predict('pkg_sql@2', domain, persona, features, dense), "
                "(SELECT scores FROM pepnet_score('pkg_sql@2', domain, persona, features, dense)) "
                "FROM pkg_events WHERE i > 2900 ORDER BY i")
    rows = cur.fetchall()
    ok1, e1 = close(mine[:, 0], [r[0] for r in rows])
    ok2, e2 = close(mine, [r[1] for r in rows])
    check("SQL-trained version: the module's scores equal pepnet_predict (100 rows)", ok1 and len(rows) == 100,
          "max err %.2g" % e1)
    check("SQL-trained version: the module's scores equal pepnet_score, both tasks", ok2, "max err %.2g" % e2)
    cur.execute("SELECT scores FROM pepnet_score_query('pkg_sql@2', 'SELECT i, domain, persona, features, dense "
                "FROM pkg_events WHERE i > 2900') AS t(i int, score float8, scores float8[]) ORDER BY i")
    ok3, e3 = close(mine, [r[0] for r in cur.fetchall()])
    check("SQL-trained version: the module's scores equal pepnet_score_query (batched engine), both tasks", ok3,
          "max err %.2g" % e3)
    data = pepnet.db.fetch(conn, q, m.config)
    check("fetch: NULL labels as NaN, shapes of the config",
          data["features"].shape == (100, 3) and data["dense"].shape == (100, 2) and data["labels"].shape == (100, 2)
          and int(np.isnan(data["labels"][:, 1]).sum()) == 25 and not np.isnan(data["labels"][:, 0]).any())
    chain = pepnet.db.lineage(conn, "pkg_sql")
    check("lineage: parent chain oldest first", [r["version"] for r in chain] == [1, 2] and chain[1]["parent"] == 1)
    ok, msg = raises(lambda: pepnet.db.load_module(conn, "pkg_sql@99"), LookupError, "pkg_sql", "99")
    check("load_module of an unknown version: LookupError naming it", ok, msg)
    conn.rollback()

    # fine-tune the SQL version in PyTorch, import it as a new version: SQL scores the fine-tuned weights
    data = pepnet.db.fetch(conn, "SELECT domain, persona, features, dense, labels FROM pkg_events WHERE i <= 512", m.config)
    m.train()
    opt = pepnet.Optimizer(m, lr=1e-3)
    for s in range(0, 512, 128):
        loss = m.loss(m(data["domain"][s:s + 128], data["persona"][s:s + 128], data["features"][s:s + 128],
                        data["dense"][s:s + 128]), data["labels"][s:s + 128])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        v = pepnet.db.import_module(conn, "pkg_sql", m, metrics={"source": "pytorch"}, parent=m.version[1])
    cur.execute("SELECT pepnet_deploy('pkg_sql', 2)")
    conn.commit()
    mine = pepnet.db.score_query(conn, m, q)
    cur.execute("SELECT pepnet_predict(%s, domain, persona, features, dense) FROM pkg_events WHERE i > 2900 ORDER BY i",
                ("pkg_sql@%d" % v,))
    ok, err = close(mine[:, 0], [r[0] for r in cur.fetchall()])
    check("fine-tuned in PyTorch, imported as version %d: SQL scores equal the module's" % v, ok and v == 3,
          "max err %.2g" % err)
    check("import_module(parent=2): the lineage continues through the fine-tuned version",
          [r["version"] for r in pepnet.db.lineage(conn, "pkg_sql@3")] == [1, 2, 3])
    return "pkg_sql"


def test_plot(ref):
    """python3 -m pepnet.plot writes a PNG of the lineage; calibration drawn when present; bad refs refused."""
    import matplotlib.image
    env = dict(os.environ, PGDATABASE=DB, PYTHONPATH=os.path.join(ROOT, "python"))
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "lineage.png")
        r = subprocess.run([sys.executable, "-P", "-m", "pepnet.plot", ref, "-o", out], env=env, capture_output=True,
                           text=True, timeout=120)
        ok = r.returncode == 0 and os.path.exists(out) and open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        shape = matplotlib.image.imread(out).shape if ok else None
        check("plot command writes a PNG", ok and shape[0] >= 600 and shape[1] >= 900,
              (r.stdout + r.stderr).strip()[:200] + " %s" % (shape,))
        check("plot command: a bare name draws its latest version's lineage, the deployed version marked",
              "3 version(s)" in r.stdout and "deployed v2 marked" in r.stdout, r.stdout.strip())
        r = subprocess.run([sys.executable, "-P", "-m", "pepnet.plot", "pkg_no_such_model", "-o", out + "2"], env=env,
                           capture_output=True, text=True, timeout=120)
        check("plot command: unknown model exits 1 with a message naming it",
              r.returncode == 1 and "pkg_no_such_model" in r.stderr and not os.path.exists(out + "2"), r.stderr.strip())
        r = subprocess.run([sys.executable, "-P", "-m", "pepnet.plot", ref, "--task", "share", "-o", out + "3"], env=env,
                           capture_output=True, text=True, timeout=120)
        check("plot command: unknown task exits 1 listing the tasks", r.returncode == 1 and "buy, click" in r.stderr,
              r.stderr.strip())
    # calibration keys, when the metrics have them, and gaps where versions lack metrics
    chain = [{"name": "x", "version": 1, "metrics": {}, "config": {"tasks": ["click"]}}]
    for v in (2, 3):
        chain.append({"name": "x", "version": v, "config": {"tasks": ["click"]}, "metrics": {
            "epoch": v - 1, "train_loss": 0.5 / v, "validation": {"logloss": 0.4, "auc": 0.7, "tasks": {"click": {
                "logloss": 0.4, "auc": 0.7, "mean_pred": 0.11, "actual_rate": 0.1, "domains": {
                    str(d): {"logloss": 0.3 + d / 10, "auc": 0.6 + d / 20, "pcoc": 0.9 + d / 10 + v / 50}
                    for d in range(3)}}}}}})
    task, labels, overall, domains = pepnet.plot.series(chain)
    check("plot series: per-domain PCOC, overall PCOC from mean_pred / actual_rate, gap for a version without metrics",
          task == "click" and domains["2"]["pcoc"][2] == 0.9 + 0.2 + 3 / 50 and domains["0"]["auc"][0] is None
          and abs(overall["validation PCOC"][1] - 1.1) < 1e-12 and labels[1] == "v2\nep 1")
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cal.png")
        pepnet.plot.plot_lineage(chain, out)
        check("plot_lineage with calibration metrics writes a PNG", os.path.getsize(out) > 10000)


def test_example_and_transactions(conn):
    """examples/pytorch_roundtrip.py runs and reports equal scores; a failed import leaves the transaction usable."""
    env = dict(os.environ, PGDATABASE=DB)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "pytorch_roundtrip.py"), "--steps", "20"],
                       env=env, capture_output=True, text=True, timeout=600)
    check("examples/pytorch_roundtrip.py: round trip ok", r.returncode == 0 and "round trip ok" in r.stdout,
          r.stdout.strip().splitlines()[-1][:200] if r.stdout.strip() else r.stderr.strip()[-200:])
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM pepnet.models")
    before = cur.fetchone()[0]
    m = pepnet.StarPepNet(CONFIGS["shared_mlp"], seed=1)
    try:
        pepnet.db.import_module(conn, "bad@name", m)
        ok, msg = False, "no error"
    except psycopg2.Error as e:
        ok, msg = e.pgcode == "22023", str(e.pgerror).strip()
    cur.execute("SELECT count(*) FROM pepnet.models")
    check("import_module with a bad name: the server's error (22023), the transaction still usable",
          ok and cur.fetchone()[0] == before, msg[:150])
    conn.rollback()


def main():
    run("hashing", test_hashing)
    run("float ids", test_float_ids)
    run("safetensors", test_safetensors)
    run("config and state_dict", test_config_and_state_dict)
    run("PN rule", test_pn_rule)

    admin = psycopg2.connect("")
    admin.autocommit = True
    acur = admin.cursor()
    acur.execute("DROP DATABASE IF EXISTS %s" % DB)
    acur.execute("CREATE DATABASE %s" % DB)
    try:
        conn = psycopg2.connect(dbname=DB)
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION pepnet")
        conn.commit()
        run("PyTorch to SQL", test_pytorch_to_sql, conn)
        conn.rollback()
        run("negative rate", test_negative_rate, conn)
        conn.rollback()
        run("bit for bit", test_bit_for_bit, conn)
        conn.rollback()
        ref = run("SQL to PyTorch", test_sql_to_pytorch, conn)
        conn.rollback()
        run("plot", test_plot, ref or "pkg_sql")
        run("example and transactions", test_example_and_transactions, conn)
        conn.close()
    finally:
        acur.execute("DROP DATABASE IF EXISTS %s" % DB)
        admin.close()
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
