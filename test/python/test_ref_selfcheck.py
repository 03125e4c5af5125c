"""Self-checks of the PyTorch reference alone (no database): run with /usr/bin/python3."""
import copy
import json
import math
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pepnet_ref as ref  # noqa: E402
from train_ref import train_steps  # noqa: E402

torch.set_num_threads(1)

RESULTS = []

TINY = {"domains": 2, "features": [{"name": "a", "buckets": 5}, {"name": "b", "buckets": 4, "hash": False}],
        "persona": [{"name": "u", "buckets": 3}], "dense": 1, "emb_dim": 2, "hidden": [3],
        "tasks": ["click", "like"], "aux_hidden": 3}

FULL = {"domains": 3, "features": [{"name": "item", "buckets": 50}, {"name": "cat", "buckets": 7},
                                   {"name": "hour", "buckets": 24, "hash": False}],
        "persona": [{"name": "user", "buckets": 40}, {"name": "age", "buckets": 6}], "dense": 2,
        "emb_dim": 4, "hidden": [8, 5], "tasks": ["click", "buy"], "epnet_hidden": 9, "aux_hidden": 6}


def check(name, ok, detail=""):
    """Record and print one check result."""
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""))


def run(name, fn):
    """Run a check function returning (ok, detail); an exception is a failure."""
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001
        ok, detail = False, "%s: %s" % (type(e).__name__, e)
    check(name, ok, detail)


def random_batch(cfg, B, rng, domains=None):
    """Random raw inputs for a config: ids over the full int64 range, small ids, in-range unhashed ids."""
    c = ref.Config(cfg)

    def ids(fields):
        out = np.zeros((B, len(fields)), dtype=np.int64)
        for i, f in enumerate(fields):
            if not f["hash"]:
                out[:, i] = rng.integers(0, f["buckets"], B)
            else:
                big = rng.integers(-2**63, 2**63 - 1, B, dtype=np.int64, endpoint=True)
                small = rng.integers(-5, 50, B)
                out[:, i] = np.where(rng.random(B) < 0.5, big, small)
        return out

    dom = rng.integers(0, c.domains, B) if domains is None else np.asarray(domains)
    return {"domain": dom, "persona": ids(c.persona), "features": ids(c.features),
            "dense": rng.normal(size=(B, c.dense)).astype(np.float32) if c.dense else None,
            "labels": rng.integers(0, 2, (B, c.T)).astype(np.float64)}


# ----------------------------------------------------------------------------- loop reference

def loop_forward(P, c, batch, train, frozen=None):
    """Explicit scalar-loop forward in float64 (independent of torch); returns logits, new running stats, x0s, xs."""
    k = c.emb_dim
    B = len(batch["domain"])
    sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
    relu = lambda v: v if v > 0 else 0.0  # noqa: E731

    def mv(W, b, v):
        """Matrix-vector product plus bias with loops."""
        return [sum(W[i][j] * v[j] for j in range(len(v))) + b[i] for i in range(len(W))]

    def gate(prefix, v):
        """GateNU with loops."""
        h = [relu(a) for a in mv(P[prefix + ".w1"], P[prefix + ".b1"], v)]
        return [c.gamma * sig(a) for a in mv(P[prefix + ".w2"], P[prefix + ".b2"], h)]

    x0s, dvs, pvs, xs = [], [], [], []
    for r in range(B):
        x0 = []
        for i, f in enumerate(c.features):
            s = ref.slot(int(batch["features"][r][i]), i, f["buckets"], f["hash"])
            x0 += list(P["emb.feature.%d" % i][s])
        if c.dense:
            x0 += [float(v) for v in batch["dense"][r]]
        pv = []
        for j, f in enumerate(c.persona):
            s = ref.slot(int(batch["persona"][r][j]), j, f["buckets"], f["hash"])
            pv += list(P["emb.persona.%d" % j][s])
        dv = list(P["emb.domain"][int(batch["domain"][r])])
        x0_sg = frozen["x0"][r] if frozen else x0
        if c.epnet:
            g = gate("epnet", dv + list(x0_sg))
            x = [g[i] * x0[i] for i in range(c.n0)]
        else:
            x = list(x0)
        x0s.append(x0)
        dvs.append(dv)
        pvs.append(pv)
        xs.append(x)

    rm = [list(row) for row in P["pn.running_mean"]] if c.pn else None
    rv = [list(row) for row in P["pn.running_var"]] if c.pn else None
    stats = {}
    if c.pn:
        for d in range(c.domains):
            rows = [r for r in range(B) if int(batch["domain"][r]) == d]
            if train and len(rows) >= 2:
                mu = [sum(xs[r][i] for r in rows) / len(rows) for i in range(c.n0)]
                va = [sum((xs[r][i] - mu[i]) ** 2 for r in rows) / len(rows) for i in range(c.n0)]
                stats[d] = (mu, va)
                a = max(0.01, 1.0 / (float(P["pn.num_batches_tracked"][d]) + 1.0))   # docs/model.md 0.2
                rm[d] = [(1 - a) * rm[d][i] + a * mu[i] for i in range(c.n0)]
                rv[d] = [(1 - a) * rv[d][i] + a * va[i] for i in range(c.n0)]
            else:
                stats[d] = (list(P["pn.running_mean"][d]), list(P["pn.running_var"][d]))

    L = len(c.hidden)
    logits = []
    for r in range(B):
        d = int(batch["domain"][r])
        x = xs[r]
        if c.pn:
            mu, va = stats[d]
            xn = [P["pn.gamma"][i] * P["pn.domain_gamma"][d][i] * (x[i] - mu[i]) / math.sqrt(va[i] + 1e-5)
                  + P["pn.beta"][i] + P["pn.domain_beta"][d][i] for i in range(c.n0)]
        else:
            xn = list(x)
        x_sg = frozen["x"][r] if frozen else x
        gates = [gate("ppnet.%d" % l, pvs[r] + list(x_sg)) for l in range(1, L + 1)] if c.ppnet else []
        row = []
        for t in range(c.T):
            a = xn
            for l in range(1, L + 2):
                W = P["tower.%d.%d.w" % (t, l)]
                b = P["tower.%d.%d.b" % (t, l)]
                if c.star:
                    Wd = P["tower.%d.%d.domain_w" % (t, l)][d]
                    bd = P["tower.%d.%d.domain_b" % (t, l)][d]
                    W = [[W[i][j] * Wd[i][j] for j in range(len(W[i]))] for i in range(len(W))]
                    b = [b[i] + bd[i] for i in range(len(b))]
                z = mv(W, b, a)
                if l <= L:
                    a = [relu(v) for v in z]
                    if c.ppnet:
                        h = c.hidden[l - 1]
                        a = [gates[l - 1][t * h + i] * a[i] for i in range(h)]
                else:
                    row.append(z[0])
        if c.aux:
            h = [relu(v) for v in mv(P["aux.w1"], P["aux.b1"], dvs[r] + x0s[r])]
            e = mv(P["aux.w2"], P["aux.b2"], h)
            row = [row[t] + e[t] for t in range(c.T)]
        logits.append(row)
    return logits, (rm, rv), x0s, xs


def loop_loss(logits, labels):
    """Masked BCE-with-logits summed over tasks, mean over batch, with loops."""
    total = 0.0
    for r, row in enumerate(logits):
        for t, z in enumerate(row):
            y = labels[r][t]
            if not math.isnan(y):
                total += max(z, 0) - z * y + math.log1p(math.exp(-abs(z)))
    return total / len(logits)


def params64(model):
    """The model's tensors as float64 numpy arrays."""
    return {n: v.double().numpy() for n, v in model.tensors().items()}


# ----------------------------------------------------------------------------- checks

def c_hash_vectors():
    """docs/model.md's test vectors, scalar and vectorised."""
    want = {0: 535, 1: 465, -1: 936, 9223372036854775807: 39}
    got = {i: ref.slot(i, 0, 1000) for i in want}
    vec = ref.slots_np(np.array(list(want), dtype=np.int64), 0, 1000)
    return got == want and list(vec) == list(want.values()), "scalar %s vector %s" % (got, list(vec))


def c_hash_vectorised():
    """The numpy hash equals the Python-int hash for many ids, fields and bucket counts."""
    rng = np.random.default_rng(1)
    ids = np.concatenate([rng.integers(-2**63, 2**63 - 1, 2000, dtype=np.int64, endpoint=True),
                          np.arange(-100, 100), np.array([-2**63, 2**63 - 1, 0])]).astype(np.int64)
    bad = 0
    for field in range(5):
        for buckets in (1, 2, 7, 1000, 2**31 - 1, 2**40 + 3):
            vec = ref.slots_np(ids, field, buckets)
            bad += sum(int(v) != ref.slot(int(i), field, buckets) for i, v in zip(ids, vec))
    return bad == 0, "%d mismatches" % bad


def c_unhashed():
    """An unhashed field maps id -> id and refuses ids outside [0, buckets)."""
    ok = ref.slot(3, 0, 4, hash=False) == 3 and list(ref.slots_np([0, 3], 1, 4, False)) == [0, 3]
    for bad in (-1, 4, 2**62):
        for fn in (lambda: ref.slot(bad, 0, 4, hash=False), lambda: ref.slots_np([0, bad], 0, 4, False)):
            try:
                fn()
                ok = False
            except ValueError:
                pass
    m = ref.StarPepNet(TINY)
    try:
        m(np.array([0]), np.array([[1]]), np.array([[1, 4]]), np.array([[0.5]]))
        ok = False
    except ValueError:
        pass
    return ok, ""


def c_config_defaults():
    """Config defaults match docs/model.md."""
    c = ref.Config({"domains": 3, "features": [{"name": "a", "buckets": 10}, {"buckets": 5}]})
    ok = (c.emb_dim == 16 and c.tasks == ["click"] and c.hidden == [256, 128] and c.gamma == 2.0
          and c.epnet and c.ppnet and c.pn and c.star and c.aux and c.aux_hidden == 32 and c.l2 == 0.0
          and c.dense == 0 and c.persona == [] and c.n0 == 32 and c.epnet_hidden == 32
          and c.features[1]["hash"] is True)
    return ok, ""


def expected_shapes(cfg):
    """Tensor names and shapes written out from docs/model.md's table, independently of the model class."""
    c = ref.Config(cfg)
    k, n0, D, T = c.emb_dim, c.n0, c.domains, c.T
    s = {}
    for i, f in enumerate(c.features):
        s["emb.feature.%d" % i] = (f["buckets"], k)
    for j, f in enumerate(c.persona):
        s["emb.persona.%d" % j] = (f["buckets"], k)
    s["emb.domain"] = (D, k)
    if c.epnet:
        he = c.epnet_hidden
        s.update({"epnet.w1": (he, k + n0), "epnet.b1": (he,), "epnet.w2": (n0, he), "epnet.b2": (n0,)})
    if c.pn:
        s.update({"pn.gamma": (n0,), "pn.beta": (n0,), "pn.domain_gamma": (D, n0), "pn.domain_beta": (D, n0),
                  "pn.running_mean": (D, n0), "pn.running_var": (D, n0), "pn.num_batches_tracked": (D,)})
    h = [n0] + c.hidden + [1]
    for t in range(T):
        for l in range(1, len(h)):
            s["tower.%d.%d.w" % (t, l)] = (h[l], h[l - 1])
            s["tower.%d.%d.b" % (t, l)] = (h[l],)
            if c.star:
                s["tower.%d.%d.domain_w" % (t, l)] = (D, h[l], h[l - 1])
                s["tower.%d.%d.domain_b" % (t, l)] = (D, h[l])
    if c.ppnet:
        for l in range(1, len(c.hidden) + 1):
            w = T * c.hidden[l - 1]
            s.update({"ppnet.%d.w1" % l: (w, len(c.persona) * k + n0), "ppnet.%d.b1" % l: (w,),
                      "ppnet.%d.w2" % l: (w, w), "ppnet.%d.b2" % l: (w,)})
    if c.aux:
        s.update({"aux.w1": (c.aux_hidden, k + n0), "aux.b1": (c.aux_hidden,), "aux.w2": (T, c.aux_hidden),
                  "aux.b2": (T,)})
    return s


def c_tensor_names():
    """tensors() has exactly docs/model.md's names and shapes for every combination of parts."""
    bad = []
    for bits in range(32):
        cfg = dict(FULL)
        for i, part in enumerate(("epnet", "ppnet", "pn", "star", "aux")):
            cfg[part] = bool(bits >> i & 1)
        got = {n: tuple(v.shape) for n, v in ref.StarPepNet(cfg).init_random(bits).tensors().items()}
        if got != expected_shapes(cfg):
            bad.append(bits)
        if any(v.dtype != torch.float32 for v in ref.StarPepNet(cfg).tensors().values()):
            bad.append(bits)
    return not bad, "bad combinations %s" % bad if bad else "32 combinations"


def c_safetensors_roundtrip():
    """safetensors_dumps/loads round trip is bit for bit, header format as specified."""
    m = ref.StarPepNet(FULL).init_random(3)
    t = m.tensors()
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -3.4028235e38], dtype=np.float32)
    nan = np.array([0x7FC00001, 0xFFA00000], dtype=np.uint32).view(np.float32)
    t["special"] = torch.from_numpy(np.concatenate([special, nan]))
    t["scalar"] = torch.tensor(1.5)
    blob = ref.safetensors_dumps(t)
    (n,) = struct.unpack_from("<Q", blob, 0)
    header = json.loads(blob[8:8 + n])
    ok = n % 8 == 0 and list(header) == list(t)
    ok = ok and all(h["dtype"] == "F32" and h["shape"] == list(t[k].shape) for k, h in header.items())
    ok = ok and len(blob) == 8 + n + sum(v.numel() * 4 for v in t.values())
    back = ref.safetensors_loads(blob)
    ok = ok and set(back) == set(t) and all(back[k].numpy().tobytes() == t[k].numpy().tobytes() for k in t)
    ok = ok and ref.safetensors_dumps(back) == blob
    m2 = ref.StarPepNet(FULL)
    del back["special"], back["scalar"]
    m2.load_tensors(back)
    ok = ok and all(m2.tensors()[k].numpy().tobytes() == t[k].numpy().tobytes() for k in back)
    return ok, "%d tensors, %d bytes" % (len(t), len(blob))


def c_load_rejects():
    """load_tensors refuses a missing, extra or misshaped tensor."""
    m = ref.StarPepNet(TINY)
    t = m.tensors()
    fails = 0
    for mutate in (lambda d: d.pop("emb.domain"), lambda d: d.__setitem__("x", torch.zeros(1)),
                   lambda d: d.__setitem__("aux.b2", torch.zeros(3))):
        d = dict(t)
        mutate(d)
        try:
            m.load_tensors(d)
        except ValueError:
            fails += 1
    return fails == 3, ""


def compare_loop(cfg, seed, B, train, domains=None):
    """Max abs difference of torch float64 logits (and running stats) against the loop reference."""
    rng = np.random.default_rng(seed)
    m = ref.StarPepNet(cfg).init_random(seed).double()
    batch = random_batch(cfg, B, rng, domains)
    P = params64(m)
    want, (rm, rv), _, _ = loop_forward(P, m.cfg, batch, train)
    got = m(batch["domain"], batch["persona"], batch["features"], batch["dense"], train=train).detach().numpy()
    err = float(np.max(np.abs(got - np.array(want))))
    if m.cfg.pn:
        err = max(err, float(np.max(np.abs(m.t("pn.running_mean").numpy() - np.array(rm)))),
                  float(np.max(np.abs(m.t("pn.running_var").numpy() - np.array(rv)))))
    return err


def c_tiny_eval():
    """Tiny all-on config: torch eval forward equals the scalar-loop forward."""
    err = max(compare_loop(TINY, s, 6, False) for s in range(4))
    return err < 1e-12, "max err %.3g" % err


def c_tiny_train():
    """Tiny config, training mode: PN batch stats (domain 0: 4 rows, domain 1: 1 row) and running-stat updates."""
    err = max(compare_loop(TINY, s, 5, True, domains=[0, 1, 0, 0, 0]) for s in range(4))
    err = max(err, compare_loop(TINY, 9, 4, True, domains=[1, 0, 1, 1]))
    return err < 1e-12, "max err %.3g" % err


def c_parts_loop():
    """Every combination of parts (FULL config) against the loop forward, eval and train."""
    err = 0.0
    for bits in range(32):
        cfg = dict(FULL)
        for i, part in enumerate(("epnet", "ppnet", "pn", "star", "aux")):
            cfg[part] = bool(bits >> i & 1)
        err = max(err, compare_loop(cfg, bits, 5, bool(bits & 1), domains=[0, 2, 0, 1, 2]))
    return err < 1e-11, "max err %.3g" % err


def c_no_persona_no_hidden():
    """Edge configs: no persona fields, no hidden layers, no dense."""
    a = dict(FULL, persona=[])
    b = dict(FULL, hidden=[], dense=0)
    err = max(compare_loop(a, 1, 4, False), compare_loop(b, 2, 4, True, domains=[1, 1, 0, 2]))
    return err < 1e-12, "max err %.3g" % err


def fused_eval(m, batch):
    """Inference with everything precomputed per domain (docs/model.md's fusions), float64."""
    c = m.cfg
    T = {n: v.double() for n, v in m.tensors().items()}
    k, n0, L = c.emb_dim, c.n0, len(c.hidden)
    with torch.no_grad():
        mm = copy.deepcopy(m).double()
        B = len(batch["domain"])
        feats = torch.as_tensor(batch["features"])
        x0 = torch.cat([mm._lookup("emb.feature", feats, c.features),
                        torch.as_tensor(batch["dense"]).double() if c.dense else torch.zeros(B, 0, dtype=torch.float64)], 1)
        pv = mm._lookup("emb.persona", torch.as_tensor(batch["persona"]), c.persona)
    out = torch.zeros(B, c.T, dtype=torch.float64)
    for r in range(B):
        d = int(batch["domain"][r])
        dv = T["emb.domain"][d]
        x = x0[r]
        if c.epnet:
            b1 = T["epnet.w1"][:, :k] @ dv + T["epnet.b1"]
            h = torch.relu(T["epnet.w1"][:, k:] @ x0[r] + b1)
            x = c.gamma * torch.sigmoid(T["epnet.w2"] @ h + T["epnet.b2"]) * x0[r]
        if c.pn:
            s = T["pn.gamma"] * T["pn.domain_gamma"][d] / torch.sqrt(T["pn.running_var"][d] + 1e-5)
            sh = T["pn.beta"] + T["pn.domain_beta"][d] - s * T["pn.running_mean"][d]
        for t in range(c.T):
            a = x
            for l in range(1, L + 2):
                W, b = T["tower.%d.%d.w" % (t, l)], T["tower.%d.%d.b" % (t, l)]
                if c.star:
                    W = W * T["tower.%d.%d.domain_w" % (t, l)][d]
                    b = b + T["tower.%d.%d.domain_b" % (t, l)][d]
                if l == 1 and c.pn:
                    W, b = W * s.unsqueeze(0), W @ sh + b
                z = W @ a + b
                if l <= L:
                    a = torch.relu(z)
                    if c.ppnet:
                        w1 = T["ppnet.%d.w1" % l]
                        pk = pv.shape[1]
                        pb = w1[:, :pk] @ pv[r] + T["ppnet.%d.b1" % l]  # per request
                        g = c.gamma * torch.sigmoid(T["ppnet.%d.w2" % l] @ torch.relu(w1[:, pk:] @ x + pb)
                                                    + T["ppnet.%d.b2" % l])
                        h = c.hidden[l - 1]
                        a = g[t * h:(t + 1) * h] * a
                else:
                    out[r, t] = z[0]
        if c.aux:
            e1 = T["aux.w1"][:, :k] @ dv + T["aux.b1"]
            out[r] += T["aux.w2"] @ torch.relu(T["aux.w1"][:, k:] @ x0[r] + e1) + T["aux.b2"]
    return out


def c_fused():
    """Fused per-domain inference (PN folded, dv parts as biases, STAR pre-multiplied) equals the unfused forward."""
    rng = np.random.default_rng(5)
    cfg = dict(FULL, hidden=[16, 8], emb_dim=8)
    m = ref.StarPepNet(cfg).init_random(5)
    batch = random_batch(cfg, 12, rng)
    want = copy.deepcopy(m).double()(batch["domain"], batch["persona"], batch["features"], batch["dense"]).detach()
    err = float((fused_eval(m, batch) - want).abs().max())
    return err < 1e-12, "max err %.3g" % err


def c_eval_batch_invariance():
    """In eval mode a row's score does not depend on the rest of the batch; float32 close to float64."""
    rng = np.random.default_rng(6)
    m = ref.StarPepNet(FULL).init_random(6)
    b = random_batch(FULL, 10, rng)
    full = m.predict(b["domain"], b["persona"], b["features"], b["dense"])
    one = torch.cat([m.predict(b["domain"][i:i + 1], b["persona"][i:i + 1], b["features"][i:i + 1],
                               b["dense"][i:i + 1]) for i in range(10)])
    p64 = copy.deepcopy(m).double().predict(b["domain"], b["persona"], b["features"], b["dense"])
    e1 = float((full - one).abs().max())
    e2 = float((full.double() - p64).abs().max())
    return e1 < 1e-6 and e2 < 1e-5, "batch err %.3g, f32 vs f64 %.3g" % (e1, e2)


def c_loss():
    """Loss: masked labels excluded, divided by B, + l2 over shared *.w/*.w1/*.w2 only."""
    rng = np.random.default_rng(7)
    m = ref.StarPepNet(dict(TINY, l2=0.01)).init_random(7).double()
    b = random_batch(TINY, 6, rng)
    labels = b["labels"].copy()
    labels[0, 1] = np.nan
    labels[3, :] = np.nan
    logits = m(b["domain"], b["persona"], b["features"], b["dense"])
    got = float(m.loss(logits, labels))
    P = params64(m)
    l2 = sum(float((P[n] ** 2).sum()) for n in P
             if n.split(".")[-1] in ("w", "w1", "w2"))
    want = loop_loss(logits.detach().numpy().tolist(), labels.tolist()) + 0.01 * l2
    names = sorted(n for n in P if n.split(".")[-1] in ("w", "w1", "w2"))
    ok = abs(got - want) < 1e-12 and not any("domain" in n or n.startswith(("emb", "pn")) for n in names)
    got0 = float(m.loss(logits, labels, l2=0.0))
    ok = ok and abs(got0 - (want - 0.01 * l2)) < 1e-12
    return ok, "loss %.6f vs %.6f" % (got, want)


def grad_check(cfg, seed, train, domains):
    """Autograd gradients vs central finite differences of the loop loss with sg inputs frozen."""
    rng = np.random.default_rng(seed)
    m = ref.StarPepNet(cfg).init_random(seed).double()
    batch = random_batch(cfg, len(domains), rng, domains)
    batch["labels"][0, 0] = np.nan
    P0 = params64(m)
    _, _, x0s, xs = loop_forward(P0, m.cfg, batch, train)
    frozen = {"x0": x0s, "x": xs}
    mm = copy.deepcopy(m)
    logits = mm(batch["domain"], batch["persona"], batch["features"], batch["dense"], train=train)
    mm.loss(logits, batch["labels"]).backward()
    worst = 0.0
    prng = np.random.default_rng(seed + 100)
    for name in P0:
        if name.startswith(("pn.running", "pn.num_batches")):
            continue
        p = mm.t(name)
        g = p.grad
        g = torch.zeros_like(p) if g is None else (g.to_dense() if g.is_sparse else g)
        flat = P0[name].reshape(-1)
        # probe entries with a nonzero gradient first (embedding rows used), plus random ones
        nz = np.flatnonzero(g.reshape(-1).numpy())
        probes = list(prng.choice(nz, min(3, len(nz)), replace=False)) if len(nz) else []
        probes += list(prng.integers(0, flat.size, 2))
        for idx in probes:
            vals = []
            for sign in (1, -1):
                P = {n: v.copy() for n, v in P0.items()}
                P[name].reshape(-1)[idx] += sign * 1e-6
                lg, _, _, _ = loop_forward(P, m.cfg, batch, train, frozen)
                vals.append(loop_loss(lg, batch["labels"].tolist()))
            fd = (vals[0] - vals[1]) / 2e-6
            ag = float(g.reshape(-1)[idx])
            worst = max(worst, abs(fd - ag) / (1e-4 + abs(fd)))
    return worst


def c_gradients():
    """Gradients (incl. sg in EPNet/PPNet gates and PN batch statistics) match finite differences."""
    w1 = grad_check(TINY, 11, False, [0, 1, 1, 0])
    w2 = grad_check(TINY, 12, True, [0, 1, 1, 0, 1])
    w3 = grad_check(dict(TINY, star=False, aux=False), 13, True, [1, 1, 0])
    w = max(w1, w2, w3)
    return w < 1e-4, "worst relative error %.3g" % w


def c_optimizer():
    """Two steps: dense Adam and lazy SparseAdam (untouched rows keep value and moments) match hand formulas."""
    rng = np.random.default_rng(8)
    cfg = dict(TINY, features=[{"name": "a", "buckets": 5, "hash": False}, {"name": "b", "buckets": 4, "hash": False}])
    m = ref.StarPepNet(cfg).init_random(8).double()
    opt = ref.RefOptimizer(m, lr=0.01)
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, 0.01
    # step 1 uses rows 0,0,1 of feature 0 (row 0 twice: gradients summed); step 2 uses rows 1,2
    batches = [random_batch(cfg, 3, rng, [0, 1, 0]), random_batch(cfg, 2, rng, [1, 1])]
    batches[0]["features"][:, 0] = [0, 0, 1]
    batches[1]["features"][:, 0] = [1, 2]
    state = {}
    err = 0.0
    for step, b in enumerate(batches, 1):
        before64 = {n: m.t(n).detach().clone() for n in m.shapes}
        logits = m(b["domain"], b["persona"], b["features"], b["dense"], train=True)
        loss = m.loss(logits, b["labels"])
        opt.zero_grad()
        loss.backward()
        grads = {}
        for n in m.shapes:
            p = m.t(n)
            if p.grad is not None:
                grads[n] = p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad.clone()
        opt.step()
        for n in ("epnet.w1", "tower.1.1.domain_w", "emb.feature.0"):
            g = grads[n]
            mo, v = state.get(n, (torch.zeros_like(g), torch.zeros_like(g)))
            p = before64[n]
            bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
            if n.startswith("emb."):
                rows = g.abs().sum(dim=1) > 0   # lazy: only rows with a gradient
                mo_new, v_new = mo.clone(), v.clone()
                mo_new[rows] = b1 * mo[rows] + (1 - b1) * g[rows]
                v_new[rows] = b2 * v[rows] + (1 - b2) * g[rows] ** 2
                want = p.clone()
                want[rows] = p[rows] - lr * math.sqrt(bc2) / bc1 * mo_new[rows] / (v_new[rows].sqrt() + eps)
            else:
                mo_new = b1 * mo + (1 - b1) * g
                v_new = b2 * v + (1 - b2) * g ** 2
                want = p - lr / bc1 * mo_new / (v_new.sqrt() / math.sqrt(bc2) + eps)
            state[n] = (mo_new, v_new)
            err = max(err, float((m.t(n).detach() - want).abs().max()))
    initial = ref.StarPepNet(cfg).init_random(8).double().t("emb.feature.0").detach()
    ok = err < 1e-12 and torch.equal(m.t("emb.feature.0").detach()[3:], initial[3:])
    return ok, "max err %.3g" % err


def c_train_steps():
    """train_steps: losses finite and decreasing when fitting one batch repeatedly."""
    rng = np.random.default_rng(10)
    m = ref.StarPepNet(FULL).init_random(10)
    b = random_batch(FULL, 32, rng)
    losses = train_steps(m, [b] * 60, lr=1e-2, l2=0.0)
    ok = all(math.isfinite(x) for x in losses) and losses[-1] < 0.7 * losses[0]
    return ok, "loss %.4f -> %.4f" % (losses[0], losses[-1])


def c_pn_warm_start():
    """docs/model.md 0.2: a 0.1 tensor set (no count) loads with n = 0; the first batch sets the running
    statistics outright, the next ones average them, a 1-row domain keeps them; n counts batches."""
    cfg = dict(TINY)
    m = ref.StarPepNet(cfg).init_random(3)
    t = m.tensors()
    del t["pn.num_batches_tracked"]
    m.load_tensors(t)
    ok = bool((m.t("pn.num_batches_tracked") == 0).all())
    rng = np.random.default_rng(4)
    mus = []
    for step in range(3):
        b = random_batch(cfg, 5, rng, [0, 0, 0, 0, 1])
        P = params64(m)
        _, (rm, rv), _, xs = loop_forward(P, m.cfg, b, True)
        mus.append(np.mean(np.array(xs[:4]), axis=0))
        with torch.no_grad():
            m.double()(b["domain"], b["persona"], b["features"], b["dense"], train=True)
        m.float()
    want = np.mean(np.array(mus), axis=0)
    got = m.t("pn.running_mean")[0].double().numpy()
    ok = ok and float(np.abs(got - want).max()) < 1e-5
    ok = ok and list(m.t("pn.num_batches_tracked").numpy()) == [3.0, 0.0]
    return ok, "running mean = average of 3 batch means (max err %.2g), counts %s" % (
        float(np.abs(got - want).max()), list(m.t("pn.num_batches_tracked").numpy()))


def main():
    """Run every check; exit 0 only if all pass."""
    for fn in (c_hash_vectors, c_hash_vectorised, c_unhashed, c_config_defaults, c_tensor_names,
               c_safetensors_roundtrip, c_load_rejects, c_tiny_eval, c_tiny_train, c_parts_loop,
               c_no_persona_no_hidden, c_fused, c_eval_batch_invariance, c_loss, c_gradients,
               c_optimizer, c_train_steps, c_pn_warm_start):
        run(fn.__name__[2:], fn)
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
