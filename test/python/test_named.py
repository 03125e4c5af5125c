"""Tests of the Python package's named form ("inputs": "columns", docs/model.md "Named inputs (since 0.3.0)").

Config parsing, text ids, the missing row, named batches against the positional form of the same weights
and against the independent oracle test/python/pepnet_ref.py; with a PostgreSQL server in the libpq
environment (PGHOST, PGPORT, PGUSER; no extension needed), pepnet.db.fetch of a named query too.
Run with /usr/bin/python3.
Prints one line per check and ends with "N passed, M failed"; exit 1 if any check failed.
"""
import json
import math
import os
import sys
import traceback
import uuid

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
import pepnet  # noqa: E402
import pepnet_ref as ref  # noqa: E402

torch.set_num_threads(1)
RESULTS = []
ABS_TOL, REL_TOL = 2e-6, 2e-5

# the test vectors of docs/model.md, "Text ids (since 0.3.0)"
UUID = "123e4567-e89b-12d3-a456-426614174000"
VECTORS = [("", 7640891576956012809), ("a", -2763434719279598279), ("zürich", -7350671518096820925),
           (UUID, 8034182327392527262)]

NAMED = {"inputs": "columns", "domains": 3,
         "features": [{"name": "item", "buckets": 500}, {"name": "cat", "buckets": 12, "hash": False},
                      {"name": "city", "buckets": 50}],
         "persona": [{"name": "user", "buckets": 200}, {"name": "age", "buckets": 6, "hash": False}],
         "dense": [{"name": "price"}, {"name": "hour"}], "emb_dim": 6, "tasks": ["click", "buy"],
         "hidden": [16, 8], "aux_hidden": 6}
ARRAYS = dict(NAMED, dense=2)
del ARRAYS["inputs"]


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
        return all(n in msg for n in needles), msg[:300]
    except Exception as e:  # noqa: BLE001
        return False, "raised %s: %s" % (type(e).__name__, e)
    return False, "no error"


def named_batch(rng, n, nulls=True, texts=True):
    """A named batch (dict of columns) for NAMED: ints, text and uuid ids, None/NaN where nulls."""
    item = rng.integers(-2**63, 2**63 - 1, n, dtype=np.int64, endpoint=True).astype(object)
    city = np.array(["zürich", "bern", "genève", "", "東京", "basel"], dtype=object)[rng.integers(0, 6, n)]
    user = np.array([uuid.UUID(int=int(x)) for x in rng.integers(0, 2**62, n)], dtype=object)
    if not texts:
        city = rng.integers(0, 1000, n).astype(object)
        user = rng.integers(0, 10**6, n).astype(object)
    if nulls:
        item[rng.random(n) < 0.2] = None
        city[rng.random(n) < 0.2] = float("nan")
        user[rng.random(n) < 0.2] = None
    return {"domain": rng.integers(0, 3, n), "item": item, "cat": rng.integers(0, 12, n), "city": city,
            "user": user, "age": rng.integers(0, 6, n),
            "price": rng.normal(size=n).astype(np.float32), "hour": rng.integers(0, 24, n),
            "click": rng.integers(0, 2, n).astype(float), "buy": rng.integers(0, 2, n).astype(float)}


def _pos_ids(col):
    """Positional int64 ids of a null-free column, by hand: ints as they are, text and uuid via text_id."""
    return np.array([int(v) if isinstance(v, (int, np.integer)) else ref.text_id(v) for v in col], np.int64)


# ---------------------------------------------------------------------------- text ids

def test_text_id():
    """text_id: docs/model.md's vectors, the oracle's scalar text_id, vectorised forms, uuid = its text."""
    got = [pepnet.text_id(s) for s, _ in VECTORS]
    check("text_id: test vectors of docs/model.md", got == [v for _, v in VECTORS], str(got))
    check("text_id: the oracle computes the same vectors", [ref.text_id(s) for s, _ in VECTORS] == got)
    rng = np.random.default_rng(1)
    alphabet = list("abcxyz019 -_") + ["ü", "é", "東", "京", "🙂", "\x00"]
    texts = ["".join(rng.choice(alphabet, rng.integers(0, 40))) for _ in range(3000)]
    texts += ["", "a", "a", "", "x" * 1000] + texts[:50]
    want = [ref.text_id(t) for t in texts]
    v = pepnet.text_id(texts)
    check("text_id of a list: int64 array equal to the oracle's, one by one (3055 texts, duplicates, 1000 bytes)",
          isinstance(v, np.ndarray) and v.dtype == np.int64 and v.tolist() == want)
    check("text_id of a numpy str array and of an object array", pepnet.text_id(np.array(texts)).tolist() == want
          and pepnet.text_id(np.array(texts, dtype=object)).tolist() == want)
    m = pepnet.text_id(np.array(texts[:12]).reshape(3, 4))
    check("text_id keeps the shape of a 2-D array", m.shape == (3, 4) and m.reshape(-1).tolist() == want[:12])
    check("text_id of an empty list", pepnet.text_id([]).shape == (0,))
    u = uuid.UUID(UUID.upper())
    check("text_id: a uuid hashes as its canonical lower-case hyphenated text",
          pepnet.text_id(u) == pepnet.text_id(UUID) == VECTORS[3][1] and pepnet.text_id([u, UUID]).tolist() == [VECTORS[3][1]] * 2)
    check("text_id: text is not normalised (upper case, trailing blank are other ids)",
          len({pepnet.text_id(UUID.upper()), pepnet.text_id(UUID), pepnet.text_id("a "), pepnet.text_id("a")}) == 4)
    check("text_id: bytes are taken as UTF-8", pepnet.text_id("zürich".encode()) == VECTORS[2][1])
    ok, msg = raises(lambda: pepnet.text_id(None), TypeError, "NULL")
    check("text_id(None) is a TypeError (NULL ids use the missing row)", ok, msg)
    ok, msg = raises(lambda: pepnet.text_id(["a", 3.5]), TypeError, "float")
    check("text_id of a non-text value is a TypeError", ok, msg)


# ---------------------------------------------------------------------------- config

def test_config():
    """"inputs", the named form's keys and their errors; to_dict as the server stores it."""
    old = {"domains": 2, "features": [{"name": "a", "buckets": 10}], "dense": 3}
    d = pepnet.Config(old).to_dict()
    check("config: no \"inputs\" means \"arrays\", stored with it; the 0.2 keys unchanged",
          d["inputs"] == "arrays" and d["dense"] == 3 and d["features"] == [{"name": "a", "buckets": 10, "hash": True}]
          and "domain_column" not in d and pepnet.Config(old) == pepnet.Config(dict(old, inputs="arrays")))
    c = pepnet.Config({"inputs": "columns", "domains": 2, "features": [{"name": "a", "buckets": 10}]})
    d = c.to_dict()
    check("config: the named form's defaults (nullable true, dense [], domain_column \"domain\")",
          c.named and d["inputs"] == "columns" and d["dense"] == [] and d["domain_column"] == "domain"
          and d["features"] == [{"name": "a", "buckets": 10, "hash": True, "nullable": True}] and c.dense == 0
          and c.n0 == 16)
    c = pepnet.Config(NAMED)
    check("config: named dense fields count as Nd; to_dict round-trips",
          c.dense == 2 and c.n0 == 3 * 6 + 2 and pepnet.Config(c.to_dict()) == c
          and pepnet.Config(c.to_json()).to_dict() == c.to_dict()
          and c.to_dict()["dense"] == [{"name": "price"}, {"name": "hour"}])
    c = pepnet.Config(dict(NAMED, domain_column="scenario", features=[{"name": "domain", "buckets": 3}]))
    check("config: domain_column names the domain's column (a field may then be called domain)",
          c.domain_column == "scenario" and c.to_dict()["domain_column"] == "scenario")
    F = [{"name": "a", "buckets": 10}]
    cases = [
        ("\"inputs\" not arrays/columns", {"inputs": "rows", "domains": 2, "features": F}, ['"inputs"', "rows"]),
        ("\"nullable\" in an arrays config", {"domains": 2, "features": [dict(F[0], nullable=False)]},
         ['"features"[0]', "nullable", '"inputs": "columns"']),
        ("\"domain_column\" in an arrays config", {"domains": 2, "features": F, "domain_column": "d"},
         ["domain_column", '"inputs": "columns"']),
        ("\"dense\" columns in an arrays config", {"domains": 2, "features": F, "dense": [{"name": "x"}]},
         ['"dense"', '"inputs": "columns"']),
        ("\"dense\" count in a columns config", {"inputs": "columns", "domains": 2, "features": F, "dense": 2},
         ['"dense"', '{"name": column}']),
        ("dense field without a name", {"inputs": "columns", "domains": 2, "features": F, "dense": [{"col": "x"}]},
         ['"dense"[0]']),
        ("dense field with another key", {"inputs": "columns", "domains": 2, "features": F,
                                          "dense": [{"name": "x", "scale": 2}]}, ['"dense"[0]', "scale"]),
        ("nullable not a bool", {"inputs": "columns", "domains": 2, "features": [dict(F[0], nullable="no")]},
         ['"features"[0].nullable']),
        ("a column named twice (features, persona)", {"inputs": "columns", "domains": 2, "features": F,
                                                      "persona": [{"name": "a", "buckets": 3}]},
         ['"persona"[0].name "a"', '"features"[0]', "unique"]),
        ("a column named twice (features, dense)", {"inputs": "columns", "domains": 2, "features": F,
                                                    "dense": [{"name": "a"}]}, ['"dense"[0].name "a"']),
        ("a field on the domain column", {"inputs": "columns", "domains": 2, "features": [{"name": "domain", "buckets": 3}]},
         ['"features"[0].name "domain"', "domain column"]),
        ("a field on a task column", {"inputs": "columns", "domains": 2, "features": F, "persona": [{"name": "click", "buckets": 3}]},
         ['"persona"[0].name "click"', "task"]),
        ("domain_column on a task column", {"inputs": "columns", "domains": 2, "features": F, "domain_column": "click"},
         ['"domain_column"', "task"]),
        ("domain_column too long", {"inputs": "columns", "domains": 2, "features": F, "domain_column": "d" * 64},
         ['"domain_column"']),
    ]
    for what, cfg, needles in cases:
        ok, msg = raises(lambda: pepnet.Config(cfg), pepnet.ConfigError, *needles)
        check("config: %s is a ConfigError naming it" % what, ok, msg)


# ---------------------------------------------------------------------------- model

def _init_value(seed, name, j):
    """Element j of a tensor's seeded initialisation (docs/model.md, "Initialisation"), bound 0.05."""
    M = (1 << 64) - 1
    state = ((seed & M) * 0xD1B54A32D192ED03) & M
    for ch in name.encode():
        state = ref.splitmix64(state ^ ch)
    state = (state + 0x9E3779B97F4A7C15 * (j + 1)) & M
    u = (ref.splitmix64(state) >> 11) * 2.0 ** -53
    return float(np.float32((2 * u - 1) * 0.05))


def test_init_and_shapes():
    """Named tables have the missing row, initialised as the stream's next rows; other tensors as the arrays form."""
    mn, ma = pepnet.StarPepNet(NAMED, seed=11), pepnet.StarPepNet(ARRAYS, seed=11)
    sn, sa = mn.state_dict(), ma.state_dict()
    check("named form: emb tables [buckets + 1, k], the rest as the arrays form",
          sn["emb.feature.0"].shape == (501, 6) and sn["emb.feature.1"].shape == (13, 6)
          and sn["emb.persona.1"].shape == (7, 6) and sn["emb.domain"].shape == (3, 6)
          and sa["emb.feature.0"].shape == (500, 6) and mn.tensor_names() == ma.tensor_names()
          and all(sn[n].shape == sa[n].shape for n in sn if not n.startswith(("emb.feature", "emb.persona"))))
    ok = all(torch.equal(sn[n][:sa[n].shape[0]], sa[n]) if n.startswith("emb.") else torch.equal(sn[n], sa[n])
             for n in sn)
    check("init: the named form's first buckets rows and every other tensor equal the arrays form's", ok)
    k = 6
    ok = True
    for name, b in (("emb.feature.0", 500), ("emb.feature.1", 12), ("emb.persona.0", 200), ("emb.persona.1", 6)):
        want = [_init_value(11, name, b * k + c) for c in range(k)]
        ok &= sn[name][b].tolist() == want
    check("init: the missing row continues the tensor's splitmix64 stream (elements buckets*k ..)", ok)
    blob = mn.to_safetensors()
    m2 = pepnet.StarPepNet.from_safetensors(NAMED, blob)
    ok, msg = raises(lambda: pepnet.StarPepNet.from_safetensors(ARRAYS, blob), pepnet.StateDictError,
                     "emb.feature.0 has shape [501, 6], the config needs [500, 6]")
    check("safetensors: named weights round-trip; an arrays config refuses their shapes", ok
          and all(torch.equal(m2.state_dict()[n], sn[n]) for n in sn), msg)


def _to_arrays(mn):
    """An arrays-form module with the named module's weights (its tables without the missing rows)."""
    ma = pepnet.StarPepNet(dict(ARRAYS, **{k: mn.config.to_dict()[k] for k in ("negative_rate",)
                                           if k in mn.config.to_dict()}), seed=None)
    sd = {n: (v[:-1] if n.startswith(("emb.feature", "emb.persona")) else v) for n, v in mn.state_dict().items()}
    ma.load_state_dict(sd)
    return ma


def test_named_equals_positional():
    """A named batch without NULLs scores as the positional batch of the same ids built by hand."""
    rng = np.random.default_rng(3)
    for neg in (None, [0.5, 1.0, 0.25]):
        cfg = dict(NAMED, **({} if neg is None else {"negative_rate": neg}))
        mn = pepnet.StarPepNet(cfg, seed=5)
        with torch.no_grad():
            for p in mn.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        ma = _to_arrays(mn)
        b = named_batch(rng, 64, nulls=False)
        feat = np.stack([_pos_ids(b["item"]), b["cat"], _pos_ids(b["city"])], 1)
        per = np.stack([_pos_ids(b["user"]), b["age"]], 1)
        dense = np.stack([b["price"], b["hour"]], 1).astype(np.float32)
        ok, err = close(mn.predict(b), ma.predict(b["domain"], per, feat, dense))
        check("named predict == positional predict of the same weights (%s)" % ("negative_rate" if neg else "plain"),
              ok and torch.equal(mn.predict(b), ma.predict(b["domain"], per, feat, dense)), "max err %g" % err)
    mn.train()
    ma.train()
    ln = mn.loss(mn(b), b)
    la = ma.loss(ma(b["domain"], per, feat, dense), np.stack([b["click"], b["buy"]], 1))
    check("named forward + loss in training mode (PN batch statistics) == positional", torch.equal(ln, la),
          "%r vs %r" % (float(ln), float(la)))
    ln.backward()
    la.backward()
    gn = {n: p.grad for n, p in mn.named_parameters()}
    ga = {n: p.grad for n, p in ma.named_parameters()}
    ok = True
    for n in ga:
        a, g = ga[n], gn[n]
        if a.is_sparse:
            a, g = a.to_dense(), g.to_dense()[:a.shape[0]] if n.startswith("emb.f") or n.startswith("emb.p") else g.to_dense()
        ok &= bool(torch.allclose(a, g, atol=1e-7))
    check("named gradients == positional gradients (sparse embedding gradients too)", ok)
    check("PN running statistics move alike", torch.equal(mn.pn.running_mean, ma.pn.running_mean)
          and torch.equal(mn.pn.num_batches_tracked, ma.pn.num_batches_tracked))


def test_against_oracle():
    """Named batches with NULLs, text and uuid ids: the package equals the independent oracle."""
    rng = np.random.default_rng(4)
    for parts in ({}, {"epnet": False, "ppnet": False, "pn": False, "star": False, "aux": False}):
        cfg = dict(NAMED, **parts)
        m = pepnet.StarPepNet(cfg, seed=9)
        r = ref.StarPepNet(cfg).init_random(21)
        m.load_state_dict(r.tensors())
        b = named_batch(rng, 80)
        want = torch.sigmoid(r.forward_named(b)).detach().numpy()
        ok, err = close(m.predict(b).numpy(), want)
        check("named predict == oracle (NULL, NaN, text, uuid, unhashed fields; %s)" % ("all on" if not parts else "all off"),
              ok, "max err %g" % err)
        m.train()
        lm = m.loss(m(b), b)
        lr = r.loss(r.forward_named(b, train=True), r.named_labels(b))
        check("named training loss == oracle (%s)" % ("all on" if not parts else "all off"),
              abs(float(lm) - float(lr)) <= 1e-5, "%r vs %r" % (float(lm), float(lr)))


def test_missing_row():
    """NULL uses the missing row: it changes the score, only it gets the gradient; nullable false refuses."""
    m = pepnet.StarPepNet(NAMED, seed=2)
    rng = np.random.default_rng(5)
    b = named_batch(rng, 6, nulls=False)
    b2 = dict(b, item=np.array(list(b["item"][:5]) + [None], dtype=object))
    p1, p2 = m.predict(b), m.predict(b2)
    check("a NULL id changes the row's score, not the others'", torch.equal(p1[:5], p2[:5]) and not torch.equal(p1[5], p2[5]))
    with torch.no_grad():
        m.emb.feature[0][500].add_(0.3)
    p3 = m.predict(b2)
    check("the NULL row's score reads the missing row (index buckets)", torch.equal(p3[:5], p2[:5])
          and not torch.equal(p3[5], p2[5]))
    m.sparse = False
    m.train()
    allnull = dict(b, item=[None] * 6, city=[float("nan")] * 6)
    m.zero_grad()
    m.loss(m(allnull), allnull).backward()
    ok = True
    for i, bk in ((0, 500), (2, 50)):
        g = m.emb.feature[i].grad
        nz = torch.nonzero(g.abs().sum(1)).flatten().tolist()
        ok &= nz == [bk]
    check("gradient of all-NULL fields reaches only their missing rows", ok)
    m.sparse = True
    opt = pepnet.Optimizer(m, lr=0.01)
    opt.zero_grad()
    before = m.emb.feature[0].detach().clone()
    m.loss(m(allnull), allnull).backward()
    opt.step()
    changed = torch.nonzero((m.emb.feature[0].detach() != before).any(1)).flatten().tolist()
    check("an optimiser step on a NULL batch trains the missing row only (SparseAdam)", changed == [500], str(changed))

    cfg = dict(NAMED, features=[dict(NAMED["features"][0], nullable=False)] + NAMED["features"][1:])
    m = pepnet.StarPepNet(cfg, seed=2)
    bad = dict(b, item=np.array([1, 2, None, 4, 5, 6], dtype=object))
    ok, msg = raises(lambda: m.predict(bad), ValueError, 'feature field 0 "item"', 'column "item"', "row 2",
                     '"nullable": false')
    check("\"nullable\": false refuses a NULL id, naming the field, the column and the row", ok, msg)
    check("\"nullable\": false takes the batch without NULLs", m.predict(b).shape == (6, 2))
    cfg = dict(NAMED, persona=[dict(NAMED["persona"][0], nullable=False), NAMED["persona"][1]])
    ok, msg = raises(lambda: pepnet.StarPepNet(cfg, seed=2).predict(dict(b, user=[None] + list(b["user"][1:]))),
                     ValueError, 'persona field 0 "user"', "row 0")
    check("\"nullable\": false on a persona field", ok, msg)


def test_refusals():
    """Float ids, bad domains, dense NULLs, missing columns and the wrong input form are errors that say why."""
    m = pepnet.StarPepNet(NAMED, seed=2)
    b = named_batch(np.random.default_rng(6), 5, nulls=False)
    for what, col, exc, needles in (
            ("float64 numpy", np.array([1.0, 2, 3, 4, 5]), TypeError, ("is float64", "2^53")),
            ("float32 tensor", torch.ones(5), TypeError, ("is float32",)),
            ("floats with NaN", np.array([1.0, np.nan, 3, 4, 5]), ValueError, ("holds nan at row 1", "not an id")),
            ("a float in an object column", np.array([1, 2, 3.0, 4, 5], dtype=object), TypeError,
             ("holds a float at row 2",)),
            ("a list of floats", [1.5, 2.0, 3.0, 4.0, 5.0], ValueError, ("holds 1.5 at row 0", "not an integer id"))):
        ok, msg = raises(lambda: m.predict(dict(b, item=col)), exc, 'feature field 0 "item" (column "item")',
                         "astype('int64')", "missing", *needles)
        check("float ids refused with a %s naming the field, the row and the cast (%s)" % (exc.__name__, what), ok, msg)
    # one refusal for both input forms: the same error and wording after the argument or field named
    ma = pepnet.StarPepNet(ARRAYS, seed=2)
    same = []
    for ids, exc, body in (([[2**53 + 1, 1, 1]], TypeError, "is float64: "), ([[np.nan, 1, 1]], ValueError,
                           "holds nan at "), ([[1.9, 1, 1]], ValueError, "holds 1.9 at ")):
        arr = np.array(ids, dtype=np.float64)
        pos = raises(lambda: ma.predict([0], [[1, 1]], arr, [[0.0, 0.0]]), exc, "features " + body)
        named = raises(lambda: m.predict({"domain": [0], "item": arr[:, 0], "cat": [1], "city": ["x"], "user": [1],
                                          "age": [1], "price": [0.0], "hour": [0]}), exc, '(column "item") ' + body)
        same.append(pos[0] and named[0])
        if not same[-1]:
            print("#   arrays: %s\n#   named: %s" % (pos[1], named[1]))
    check("float ids: the arrays and the named form raise the same error with the same wording (2^53 + 1, NaN, 1.9)",
          all(same), str(same))
    ok, msg = raises(lambda: m.predict(dict(b, cat=np.ones(5, bool))), TypeError, '"cat"', "bool")
    check("bool ids refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, domain=np.zeros(5))), TypeError, '"domain"', "astype('int64')")
    check("float domains refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, domain=[0, None, 1, 1, 2])), ValueError, '"domain"', "NULL", "row 1")
    check("a NULL domain refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, domain=[0, 3, 1, 1, 2])), ValueError, "domain 3", "out of range")
    check("a domain out of range refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, price=[1.0, None, 2.0, 3.0, 4.0])), ValueError,
                     'dense field 0 "price"', "row 1", "NULL")
    check("a NULL dense value refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, hour=np.array([1.0, np.inf, 2, 3, 4]))), ValueError, '"hour"', "infinite")
    check("an infinite dense value refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, cat=[1, 2, 3, 4, 12])), ValueError, "12", "cat", "[0, 12)")
    check("an unhashed field's id out of range refused", ok, msg)
    nocity = {k: v for k, v in b.items() if k != "city"}
    ok, msg = raises(lambda: m.predict(nocity), pepnet.ColumnError, 'no column "city"', "feature field 2")
    check("a missing column: ColumnError (a KeyError) naming the column and the field", ok
          and issubclass(pepnet.ColumnError, KeyError), msg)
    ok, msg = raises(lambda: m.loss(m.predict(b), {k: v for k, v in b.items() if k != "buy"}), pepnet.ColumnError,
                     'no column "buy"', "task")
    check("loss without a task's label column: ColumnError", ok, msg)
    ok, msg = raises(lambda: m.loss(m.predict(b), dict(b, click=[0, 1, 2, 0, 1])), ValueError, '"click"', "row 2")
    check("a label outside [0, 1] refused", ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, item=list(b["item"][:4]))), ValueError, '"item"', "5 values")
    check("a column of another length refused", ok, msg)
    ok, msg = raises(lambda: m.predict(b["domain"], np.zeros((5, 2)), np.zeros((5, 3))), TypeError,
                     '"inputs": "columns"', "named batch")
    check("a named-form model refuses positional arrays", ok, msg)
    ok, msg = raises(lambda: ma.predict(b), TypeError, '"inputs": "arrays"', "m(domain, persona, features, dense)")
    check("an arrays-form model refuses a named batch", ok, msg)
    zi = np.zeros((5, 3), np.int64)
    ok, msg = raises(lambda: ma.loss(ma.predict(b["domain"], zi[:, :2], zi, np.zeros((5, 2))),
                                     {"click": [0] * 5, "buy": [1] * 5}), TypeError, '"inputs": "arrays"')
    check("an arrays-form model's loss refuses labels by column", ok, msg)
    e = m.predict({k: v[:0] for k, v in b.items()})
    check("an empty named batch scores to [0, T]", tuple(e.shape) == (0, 2))
    ok, msg = raises(lambda: pepnet.Config({"inputs": "columns", "domains": 2, "features": []}), pepnet.ConfigError,
                     'a column in "dense"')
    check("a named config without fields or dense columns is a ConfigError", ok, msg)


class Frame:
    """A pandas-like frame: len() is the row count, frame[column] a Series-like with to_numpy()."""

    class Series:
        def __init__(self, values):
            self.values = list(values)

        def to_numpy(self):
            a = np.empty(len(self.values), dtype=object)
            a[:] = self.values
            return a

        def __array__(self, dtype=None):
            return np.asarray(self.values, dtype=dtype)

        def __getitem__(self, i):
            return self.values[i]

        def __len__(self):
            return len(self.values)

    def __init__(self, columns):
        self.columns = {k: list(v) for k, v in columns.items()}

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def __getitem__(self, name):
        return Frame.Series(self.columns[name])


class NA:
    """Stands for pandas.NA (pandas' missing value; recognised by its type name)."""


NA.__name__ = "NAType"


def test_mappings():
    """Column order and extra columns do not matter; pandas-like frames; pandas itself when installed."""
    m = pepnet.StarPepNet(NAMED, seed=8)
    b = named_batch(np.random.default_rng(7), 40)
    want = m.predict(b)
    shuffled = {k: b[k] for k in reversed(list(b))}
    shuffled.update({"extra": ["x"] * 40, "item_id_2": np.ones(40), "features": [[1, 2]] * 40})
    check("column order does not matter; extra columns are ignored", torch.equal(m.predict(shuffled), want))
    lists = {k: list(v) for k, v in b.items()}
    tensors = dict(b, domain=torch.from_numpy(b["domain"]), cat=torch.from_numpy(b["cat"]),
                   price=torch.from_numpy(b["price"]))
    check("columns as lists, numpy arrays or tensors score alike", torch.equal(m.predict(lists), want)
          and torch.equal(m.predict(tensors), want))
    check("a pandas-like frame (len = rows, frame[col].to_numpy()) scores alike", torch.equal(m.predict(Frame(b)), want))
    ma = _to_arrays(m)
    b0 = named_batch(np.random.default_rng(9), 8, nulls=False, texts=False)
    per = np.stack([b0["user"], b0["age"]], 1).astype(np.int64)
    feat = np.stack([b0["item"], b0["cat"], b0["city"]], 1).astype(np.int64)
    dense = np.stack([b0["price"], b0["hour"]], 1).astype(np.float32)
    check("the arrays form still takes a Series-like domain (array-like with __getitem__)",
          torch.equal(ma.predict(Frame.Series(b0["domain"]), per, feat, dense), ma.predict(b0["domain"], per, feat, dense)))
    nab = dict(b, item=[NA() if v is None else v for v in b["item"]])
    check("pandas.NA is a NULL id", torch.equal(m.predict(Frame(nab)), want))
    m.train()
    check("loss reads the labels of a frame", torch.equal(m.loss(m(Frame(b)), Frame(b)), m.loss(m(b), b)))
    lab = m.labels(dict(b, click=[None, 1, True, False] + [0.0] * 36, buy=np.full(40, np.nan)))
    check("labels: None/NaN = no label, bools and ints are 0/1", np.isnan(lab[0, 0].item())
          and lab[1:4, 0].tolist() == [1, 1, 0] and bool(torch.isnan(lab[:, 1]).all()))
    try:
        import pandas as pd
    except ImportError:
        print("# pandas is not installed: the pandas-like Frame stands in for it")
        return
    m.eval()
    want = m.predict(b)  # the training-mode forwards above moved PN's running statistics
    df = pd.DataFrame(b)
    df["item"] = df["item"].astype(object)
    check("a pandas DataFrame scores as the dict of its columns", torch.equal(m.predict(df), want))
    df2 = pd.DataFrame(dict(b, cat=pd.array(list(b["cat"][:39]) + [None], dtype="Int64")))
    p = m.predict(df2)
    check("pandas' nullable Int64 column: NA uses the missing row", torch.equal(p[:39], want[:39])
          and not torch.equal(p[39], want[39]))
    cities = [None if isinstance(v, float) else v for v in b["city"]]
    df3 = pd.DataFrame(dict(b, city=pd.array(cities, dtype="string")))
    df4 = pd.DataFrame(dict(b, city=pd.Categorical(cities)))
    check("pandas string and categorical columns: text ids, NA uses the missing row",
          torch.equal(m.predict(df3), want) and torch.equal(m.predict(df4), want))
    ok, msg = raises(lambda: m.predict(pd.DataFrame(dict(b, cat=b["cat"].astype(float)))), TypeError, "astype('int64')")
    check("a pandas float64 id column refused", ok, msg)


def test_db_fetch(conn):
    """pepnet.db.fetch of a named config: the query's columns as a named batch, NULL as None, uuid as
    text, numeric as Decimal, bool labels; score_query scores it in slices as predict does."""
    import pepnet.db
    cfg = dict(NAMED, features=[dict(NAMED["features"][0], nullable=True)] + NAMED["features"][1:])
    m = pepnet.StarPepNet(cfg, seed=4)
    q = """SELECT 'k' || i AS key, (i %% 3)::int2 AS domain, CASE WHEN i %% 4 = 0 THEN NULL ELSE i * 7919 END AS item,
                  (i %% 12)::int4 AS cat, CASE WHEN i %% 5 = 0 THEN NULL ELSE 'city ' || (i %% 7) END AS city,
                  ('00000000-0000-0000-0000-' || lpad(to_hex(i), 12, '0'))::uuid AS "user", (i %% 6)::int8 AS age,
                  (i * 0.25)::numeric AS price, (i %% 24)::float8 AS hour,
                  (i %% 2)::bool AS click, CASE WHEN i %% 3 = 0 THEN NULL ELSE 1 END AS buy
           FROM generate_series(1, %s) i"""
    data = pepnet.db.fetch(conn, q, cfg, (30,))
    n = 30
    by_hand = {"domain": [i % 3 for i in range(1, n + 1)], "item": [None if i % 4 == 0 else i * 7919 for i in range(1, n + 1)],
               "cat": [i % 12 for i in range(1, n + 1)],
               "city": [None if i % 5 == 0 else "city %d" % (i % 7) for i in range(1, n + 1)],
               "user": [uuid.UUID(int=i) for i in range(1, n + 1)], "age": [i % 6 for i in range(1, n + 1)],
               "price": [i * 0.25 for i in range(1, n + 1)], "hour": [float(i % 24) for i in range(1, n + 1)],
               "click": [float(i % 2) for i in range(1, n + 1)], "buy": [None if i % 3 == 0 else 1 for i in range(1, n + 1)]}
    check("db.fetch of a named config: every column of the query, by name", sorted(data) == sorted(list(by_hand) + ["key"])
          and data["user"][0] == "00000000-0000-0000-0000-000000000001" and data["item"][3] is None)
    want = m.predict(by_hand)
    check("the fetched batch scores as the same rows built in Python (uuid text = uuid, numeric, NULLs)",
          torch.equal(m.predict(data), want))
    ok, err = close(pepnet.db.score_query(conn, m, q, (30,), batch_size=7), want.numpy())
    check("db.score_query of a named module, in slices", ok, "max err %g" % err)
    m.train()
    check("loss of the fetched batch reads bool and NULL labels", torch.equal(m.loss(m(data), data), m.loss(m(by_hand), by_hand)))
    # multi-valued fields: array columns come back as lists (NULL lists and elements as None), equal lengths too
    mb = pepnet.StarPepNet(BAGS, seed=4)
    qb = """SELECT (i %% 2) AS domain, i AS item, i %% 5 AS "user", 0.5 AS price, (i %% 2)::int AS click,
                   CASE WHEN i %% 4 = 0 THEN NULL ELSE ARRAY['a', CASE WHEN i %% 3 = 0 THEN NULL ELSE 'b' END] END AS tags,
                   CASE WHEN i %% 4 = 0 THEN NULL ELSE ARRAY[1, i]::real[] END AS tw,
                   ARRAY[i, i + 1]::bigint[] AS hist, CASE WHEN i %% 5 = 0 THEN '{}' ELSE ARRAY[i %% 3] END AS likes
            FROM generate_series(1, %s) i"""
    qu = qb.replace("ARRAY['a', CASE WHEN i %% 3 = 0 THEN NULL ELSE 'b' END]",
                    "ARRAY['123e4567-e89b-12d3-a456-426614174000'::uuid, CASE WHEN i %% 3 = 0 THEN NULL ELSE "
                    "'00000000-0000-0000-0000-000000000001'::uuid END]")
    datab = pepnet.db.fetch(conn, qb, BAGS, (12,))
    by_hand = {"domain": [i % 2 for i in range(1, 13)], "item": list(range(1, 13)), "user": [i % 5 for i in range(1, 13)],
               "price": [0.5] * 12, "click": [i % 2 for i in range(1, 13)],
               "tags": [None if i % 4 == 0 else ["a", None if i % 3 == 0 else "b"] for i in range(1, 13)],
               "tw": [None if i % 4 == 0 else [1.0, float(i)] for i in range(1, 13)],
               "hist": [[i, i + 1] for i in range(1, 13)], "likes": [[] if i % 5 == 0 else [i % 3] for i in range(1, 13)]}
    check("db.fetch of multi-valued columns: lists per row, scored as the same rows built in Python",
          isinstance(datab["hist"][0], list) and datab["tags"][3] is None and torch.equal(mb.predict(datab), mb.predict(by_hand)))
    datau = pepnet.db.fetch(conn, qu, BAGS, (12,))
    by_hand["tags"] = [None if t is None else [uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
                                               None if x is None else uuid.UUID(int=1)] for t, x in
                       zip(by_hand["tags"], [t and t[1] for t in by_hand["tags"]])]
    check("db.fetch of a uuid[] column: lists of the uuids' texts (NULL elements None), scored as uuid.UUID",
          datau["tags"][0] == ["123e4567-e89b-12d3-a456-426614174000", "00000000-0000-0000-0000-000000000001"]
          and datau["tags"][2][1] is None and torch.equal(mb.predict(datau), mb.predict(by_hand)))


def test_id_kind():
    """A named field's "id" ("integer" or "text"): accepted and kept by the config, refused in an arrays config
    or with another value; a named batch with ids of the other kind is a TypeError; "dense": 0 is no dense
    field in the named form; names are limited in bytes."""
    cfg = dict(NAMED, features=[dict(NAMED["features"][0], id="integer"), NAMED["features"][1],
                                dict(NAMED["features"][2], id="text")])
    c = pepnet.Config(cfg)
    check('"id" kept by to_dict()', c.to_dict()["features"][0]["id"] == "integer"
          and c.to_dict()["features"][2]["id"] == "text" and "id" not in c.to_dict()["features"][1])
    ok, msg = raises(lambda: pepnet.Config(dict(cfg, features=[dict(NAMED["features"][0], id="int")])),
                     pepnet.ConfigError, '"features"[0].id must be "integer" or "text"')
    check('"id" other than integer/text refused', ok, msg)
    ok, msg = raises(lambda: pepnet.Config(dict(ARRAYS, features=[dict(NAMED["features"][0], id="text")])),
                     pepnet.ConfigError, 'the key "id" of the named form')
    check('"id" in an arrays config refused', ok, msg)
    m = pepnet.StarPepNet(cfg, seed=2)
    b = named_batch(np.random.default_rng(6), 5, nulls=False)
    check("ids of the kind the field says are scored", np.all(np.isfinite(m.predict(b).detach().numpy())))
    ok, msg = raises(lambda: m.predict(dict(b, item=[str(x) for x in b["item"]])), TypeError,
                     'feature field 0 "item" (column "item") holds text ids', '"id": "integer"')
    check('text ids for an "id": "integer" field: TypeError', ok, msg)
    ok, msg = raises(lambda: m.predict(dict(b, city=np.arange(5))), TypeError,
                     'feature field 2 "city" (column "city") holds integer ids', '"id": "text"')
    check('integer ids for an "id": "text" field: TypeError', ok, msg)
    mixed = np.array(["a", "b", 3, "c", "d"], dtype=object)
    ok, msg = raises(lambda: m.predict(dict(b, city=mixed)), TypeError, "holds integer ids (row 2)")
    check("an integer among text ids names its row", ok, msg)
    named_zero = dict(NAMED, dense=0)
    check('"dense": 0 in the named form is no dense field', pepnet.Config(named_zero).dense == 0
          and pepnet.Config(named_zero).to_dict()["dense"] == [])
    ok, msg = raises(lambda: pepnet.Config(dict(NAMED, features=[{"name": "é" * 32, "buckets": 5}])),
                     pepnet.ConfigError, "1 to 63 bytes")
    check("a name of 32 two-byte characters (64 bytes) refused in bytes", ok, msg)


def test_dense_transforms():
    """Dense transforms (docs/model.md "Named inputs", dense transforms): log1p, then clip, then zscore with the stored
    mean and std, float32 as the extension computes them; a NULL of a z-scored field imputed with the mean
    (0 after zscore); dense_stats computes mean/std as pepnet_train does; config errors."""
    f = {"name": "x", "log1p": True, "clip": [0, 6], "normalize": "zscore", "mean": 1, "std": 2}
    x = np.array([0.5, np.nan, 1000.0, -0.5, 3.0], np.float32)
    want = []
    for v in x.tolist():
        if math.isnan(v):
            want.append(0.0)
            continue
        y = float(np.float32(math.log1p(v)))
        y = min(max(y, 0.0), 6.0)
        want.append(float(np.float32((np.float32(y) - np.float32(1)) / np.float32(2))))
    got = pepnet.dense_transform(x, pepnet.Config(dict(NAMED, dense=[f])).dense_fields[0])
    check("log1p -> clip -> zscore equals the hand-computed float32 values", got.dtype == np.float32
          and got.tolist() == [float(np.float32(w)) for w in want], "%s vs %s" % (got.tolist(), want))
    ok, msg = raises(lambda: pepnet.dense_transform(np.array([2.0, -1.0], np.float32), f), ValueError,
                     'dense field "x" is -1 at row 1', '"log1p" needs values above -1')
    check("log1p refuses -1 naming the field and the row", ok, msg)
    # the same weights: a model with transforms on raw values = a model without them on transformed values
    tcfg = dict(NAMED, dense=[{"name": "price", "log1p": True, "normalize": "zscore", "mean": 2.5, "std": 1.5},
                              {"name": "hour", "clip": [2, 20]}])
    m1 = pepnet.StarPepNet(tcfg, seed=4)
    m2 = pepnet.StarPepNet(NAMED, seed=4)
    m1.eval()
    m2.eval()
    b = named_batch(np.random.default_rng(8), 40)
    price = np.exp(np.random.default_rng(9).uniform(0, 8, 40)).astype(object)
    price[[3, 17]] = None
    hour = np.random.default_rng(10).uniform(-5, 30, 40)
    raw = dict(b, price=price, hour=hour)
    hand = np.array([0.0 if p is None else float(np.float32((np.float32(math.log1p(float(np.float32(p)))) - np.float32(2.5))
                                                            / np.float32(1.5))) for p in price], np.float32)
    done = dict(b, price=hand, hour=np.clip(hour.astype(np.float32), 2, 20))
    a1, a2 = m1.predict(raw).detach().numpy(), m2.predict(done).detach().numpy()
    check("named batch applies the config's transforms (same weights, hand-transformed values)",
          np.array_equal(a1, a2), "max %g" % float(np.abs(a1 - a2).max()))
    mean_row = dict(raw, price=np.where(price == None, math.expm1(2.5), price).astype(object))  # noqa: E711
    a3 = m1.predict(mean_row).detach().numpy()
    ok, err = close(a1, a3)
    check("a NULL of a z-scored field scores as its mean", ok, "max %g" % err)
    ok, msg = raises(lambda: m1.predict(dict(raw, hour=np.where(np.arange(40) == 5, np.nan, hour))), ValueError,
                     'dense field 1 "hour"', "row 5")
    check("a NULL of a field without zscore is still refused", ok, msg)
    # statistics from a batch, as pepnet_train computes them (population std over non-NULL values after log1p)
    d = pepnet.dense_stats(dict(tcfg, dense=[{"name": "price", "log1p": True, "normalize": "zscore"},
                                             {"name": "hour", "clip": [2, 20]}]), raw)
    v = np.log1p(np.array([p for p in price if p is not None], np.float32).astype(np.float64)).astype(np.float32)
    v = v.astype(np.float64)
    check("dense_stats: mean and population std of log1p(x) over non-NULL values",
          abs(d["dense"][0]["mean"] / v.mean() - 1) < 1e-6 and abs(d["dense"][0]["std"] / v.std() - 1) < 1e-6
          and "mean" not in d["dense"][1], str(d["dense"]))
    ok, msg = raises(lambda: pepnet.StarPepNet(dict(tcfg, dense=[{"name": "price", "normalize": "zscore"}]),
                                               seed=1).predict(raw), ValueError, 'no "mean" and "std"', "dense_stats")
    check("zscore without statistics refused, pointing at dense_stats", ok, msg)
    c = pepnet.Config(dict(NAMED, dense=[{"name": "x", "clip": [-2.5, 1e6], "normalize": "zscore", "mean": 1.5,
                                          "std": 0.25, "log1p": False}]))
    check("to_dict writes the transforms back as the extension does",
          c.to_dict()["dense"] == [{"name": "x", "clip": [-2.5, 1e6], "normalize": "zscore", "mean": 1.5, "std": 0.25}],
          str(c.to_dict()["dense"]))
    for bad, needle in (({"clip": [5, 1]}, '"clip" must be [lo, hi]'), ({"clip": [0]}, '"clip" must be [lo, hi]'),
                        ({"normalize": "zscore", "mean": 0, "std": 0}, "std >= 1.17549e-38"),
                        ({"normalize": "zscore", "mean": 0, "std": 1e-40}, "a normal float32"),
                        ({"normalize": "zscore", "mean": 0}, "must both be given"),
                        ({"mean": 0, "std": 1}, 'without "normalize": "zscore"'),
                        ({"normalize": "minmax"}, '"normalize" must be "zscore"'), ({"scale": 2}, "unknown keys")):
        ok, msg = raises(lambda: pepnet.Config(dict(NAMED, dense=[dict({"name": "x"}, **bad)])), pepnet.ConfigError, needle)
        check("config refuses %s" % json.dumps(bad), ok, msg)
    ok, msg = raises(lambda: pepnet.Config(dict(ARRAYS, dense=[{"name": "x", "normalize": "zscore"}])), pepnet.ConfigError,
                     "named form")
    check("zscore in the arrays form refused", ok, msg)


# ---------------------------------------------------------------------------- multi-valued fields

BAGS = {"inputs": "columns", "domains": 2,
        "features": [{"name": "item", "buckets": 50}, {"name": "tags", "buckets": 17, "pooling": "mean", "weights": "tw"},
                     {"name": "hist", "buckets": 13, "pooling": "sum"}],
        "persona": [{"name": "user", "buckets": 9}, {"name": "likes", "buckets": 7, "pooling": "sum"}],
        "dense": [{"name": "price"}], "emb_dim": 3, "tasks": ["click"], "hidden": [6, 4], "aux_hidden": 4}


def _bags_batch():
    return {"domain": [0, 1, 0, 1, 0, 1], "item": [1, 2, 3, 4, 5, 6],
            "tags": [["a", "b"], None, [], [None, "c"], ["a", "a"], ["b", "c"]],
            "tw": [[0.3, 1.7], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]],
            "hist": [[1, 2, 3], [], [4], np.array([4, 4]), [7, None], None],
            "user": [1, 2, 3, 1, 2, 3], "likes": [[1, 2], None, [3], [], [2, 1], [5]],
            "price": [0.5, -1.0, 0.2, 0.0, 1.0, 0.3], "click": [1, 0, None, 1, 0, 1]}


def _pool_by_hand(table, ids, weights, mean, buckets):
    """The pooled vector of one row, in float64 as docs/model.md says it (the empty row without weight)."""
    t = table.detach().double()
    pairs = [(x, 1.0 if weights is None else float(w)) for x, w in zip(ids, weights or [None] * len(ids))
             if x is not None]
    sw = sum(w for _, w in pairs)
    if not pairs or sw <= 0:
        return t[buckets]
    s = sum(w * t[x] for x, w in pairs)
    return s / sw if mean else s


def test_bags():
    """Multi-valued fields: pooled as docs/model.md says (sum, weighted mean, the empty row), gradients only
    to the rows used, the config keys, and the refusals (with the field, column and row)."""
    c = pepnet.Config(BAGS)
    check("config: pooling and weights kept", c.features[1]["pooling"] == "mean" and c.features[1]["weights"] == "tw"
          and c.persona[1]["pooling"] == "sum" and "pooling" not in c.features[0])
    for bad, needle in ((dict(BAGS, inputs="arrays", dense=1), "named form"),
                        (dict(BAGS, features=[dict(BAGS["features"][1], pooling="max")]), '"sum" or "mean"'),
                        (dict(BAGS, features=[{"name": "t", "buckets": 3, "weights": "w"}]), 'no "pooling"'),
                        (dict(BAGS, features=[dict(BAGS["features"][1], weights="item"), BAGS["features"][0]]), "reads otherwise")):
        ok, msg = raises(lambda: pepnet.Config(bad), pepnet.ConfigError, needle)
        check("config refused: %s" % needle, ok, msg)
    m = pepnet.StarPepNet(BAGS, seed=3)
    m.eval()
    b = _bags_batch()
    p = m.predict(b)
    # the reference: each row's pooled vectors by hand, put in the missing rows of the same model without pooling
    plain = json.loads(json.dumps(BAGS))
    for f in plain["features"] + plain["persona"]:
        f.pop("pooling", None)
        f.pop("weights", None)
    u = pepnet.StarPepNet(plain, seed=3)
    u.eval()
    worst = 0.0
    for r in range(6):
        u.load_state_dict(m.state_dict())
        with torch.no_grad():
            tag_ids = None if b["tags"][r] is None else [None if x is None else pepnet.slots(
                torch.tensor([pepnet.text_id(x)]), 1, 17, True, "tags").item() for x in b["tags"][r]]
            hist_ids = None if b["hist"][r] is None else [None if x is None else pepnet.slots(
                torch.tensor([int(x)]), 2, 13, True, "hist").item() for x in b["hist"][r]]
            like_ids = None if b["likes"][r] is None else [pepnet.slots(torch.tensor([x]), 1, 7, True, "likes").item()
                                                             for x in b["likes"][r]]
            u.emb.feature[1][17] = _pool_by_hand(m.emb.feature[1], tag_ids or [], b["tw"][r], True, 17).float()
            u.emb.feature[2][13] = _pool_by_hand(m.emb.feature[2], hist_ids or [], None, False, 13).float()
            u.emb.persona[1][7] = _pool_by_hand(m.emb.persona[1], like_ids or [], None, False, 7).float()
        row = {k: [v[r]] for k, v in b.items()}
        row.update(tags=[None], tw=[None], hist=[None], likes=[None])
        worst = max(worst, float((u.predict(row)[0] - p[r]).abs().max()))
    check("pooled rows score as the rows pooled by hand (sum, weighted mean, NULL/empty lists, NULL elements, "
          "total weight 0)", worst < 1e-6, "max err %.3g" % worst)
    same = dict(b, hist=[[3, 2, 1], [], [4], [4, 4], [None, 7], None])
    check("the order of a sum's ids does not matter", close(m.predict(same), p)[0])
    # gradients reach exactly the rows the pooled values use (the empty row only where used)
    m.train()
    m.sparse = False
    m.zero_grad()
    m.loss(m(b), b).backward()
    g = m.emb.feature[1].grad
    used = {pepnet.slots(torch.tensor([pepnet.text_id(x)]), 1, 17, True, "tags").item() for x in ("a", "b", "c")}
    nz = set(torch.nonzero(g.abs().sum(1)).flatten().tolist())
    check("gradient of a weighted mean: the rows of its ids and the empty row, nothing else", nz <= used | {17} and 17 in nz,
          "%s vs %s" % (sorted(nz), sorted(used)))
    m.sparse = True
    # refusals
    for col, val, exc, needles in (
            ("tags", [["a", "b"], None, [], [None, "c"], ["a", "a"], ["b", 1.5]], ValueError,
             ('"tags"', "1.5", "row 5 (element 2")),
            ("tw", [[1.0, 3.0], None, [], [5.0], [1.0, 1.0], [0.0, 0.0]], ValueError, ("one weight per id", "row 3")),
            ("tw", [[1.0, -3.0], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]], ValueError, ("finite and >= 0", "row 0")),
            ("tw", [[1.0, float("nan")], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]], ValueError, ("finite", "row 0")),
            ("tw", [None, None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]], ValueError, ("NULL", "row 0")),
            ("tw", [[1.0, 1e-39], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]], ValueError, ("normal range", "row 0")),
            ("tw", [[1.0, 1e300], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]], ValueError, ("normal range", "row 0")),
            ("hist", [[1] * 10001, [], [4], [4], [7], None], ValueError, ("10000", "row 0")),
            ("tags", ["ab", None, [], [None, "c"], ["a"], ["b"]], TypeError, ("list of ids", "row 0"))):
        ok, msg = raises(lambda: m.predict(dict(b, **{col: val})), exc, *needles)
        check("refused: %s %s" % (col, needles), ok, msg)
    m.eval()
    big = m.predict(dict(b, tw=[[2e38, 2e38], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]]))
    one = m.predict(dict(b, tw=[[1.0, 1.0], None, [], [5.0, 2.0], [1.0, 1.0], [0.0, 0.0]]))
    check("a weighted mean whose sum of weights exceeds float32 pools as the server does (1 / sum w in float64)",
          float((big[0] - one[0]).abs().max()) < 1e-6, "%s vs %s" % (big[0].tolist(), one[0].tolist()))
    nn = json.loads(json.dumps(BAGS))
    nn["features"][2]["nullable"] = False
    ok, msg = raises(lambda: pepnet.StarPepNet(nn, seed=1).predict(b), ValueError, '"hist"', "row 5", '"nullable": false')
    check('"nullable": false refuses a NULL list (takes an empty one)', ok, msg)
    nb = dict(b, hist=[[1], [], [4], [4], [7], []])
    check('"nullable": false takes empty lists', pepnet.StarPepNet(nn, seed=1).predict(nb).shape == (6, 1))
    ok, msg = raises(lambda: m.predict({k: v for k, v in b.items() if k != "tw"}), pepnet.ColumnError, '"tw"')
    check("a missing weights column is a ColumnError", ok, msg)


def main():
    run("text ids", test_text_id)
    run("config", test_config)
    run("init and shapes", test_init_and_shapes)
    run("named == positional", test_named_equals_positional)
    run("oracle", test_against_oracle)
    run("missing row", test_missing_row)
    run("refusals", test_refusals)
    run("mappings", test_mappings)
    run("id kind", test_id_kind)
    run("dense transforms", test_dense_transforms)
    run("multi-valued fields", test_bags)
    try:
        import psycopg2
        conn = psycopg2.connect("", connect_timeout=5)
    except Exception as e:  # noqa: BLE001
        print("# no PostgreSQL server reachable through the libpq environment (%s): pepnet.db not tested"
              % str(e).strip().splitlines()[0])
    else:
        run("db fetch", test_db_fetch, conn)
        conn.close()
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
