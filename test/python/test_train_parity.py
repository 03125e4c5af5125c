"""Training parity: CALL pepnet_train against the PyTorch reference (train_ref.py), through psycopg2.

For each configuration: random weights from the reference are imported (version 1); a table of rows
with an explicit row number is trained on with shuffle_buffer => 1 (query order kept, so the
batches are rows 1-64, 65-128, ... and a last partial batch), for 2 epochs with a validation query
(versions 2 and 3) and, from version 1 again, for one batch only (version 4).  The reference runs
the same batches in float64 from the same weights (Adam on dense parameters, SparseAdam on the
embedding rows of the batch, docs/model.md's masked loss with l2, PN batch statistics and running
statistics).  Compared: every exported tensor after 1 step, 1 epoch and 2 epochs; the epochs'
train_loss; versions, parents and metrics; validation metrics; pepnet_evaluate.

Tolerances.  C trains in float32, the reference in float64 (a difference is C's rounding or a
bug).  After one Adam step a parameter moves by lr * g / (|g| + e) (e: Adam's eps; SparseAdam's
eps / sqrt(1 - b2^t)): for ordinary elements the difference is float32 rounding of the parameter
and of the update: 1e-6 abs + 2e-6 rel.  Where |g| is within ~100 x of e, the update is far from
saturated and a float32 error dg of a tiny, often cancelling gradient changes it by
lr * e * dg / (|g| + e)^2 (up to lr * dg / (4 e)).  Every element therefore also gets that much,
with dg = GERR_REL (1e-5) x the tensor's largest |g| at that step, summed over the steps
(adam_sensitivity); elements where this allowance exceeds the absolute tolerance are counted and
reported as "eps-sensitive".  (Measured: C's implied gradient error on such elements is <= 2e-6 of
the tensor's largest |g|; C's parameters differ there by up to 5.5e-5 after one step, e.g. a
tower weight with g = -7e-9; the float32 run of the reference itself differs as much.)  After 4
and 8 steps: 1e-4 abs + 1e-4 rel plus the same allowance (observed up to 5e-5, with 20 data
seeds the largest difference/allowance ratio was 0.25).  Elements the reference leaves exactly
unchanged (embedding rows never looked up, tables that no enabled part reads) must be
bit-identical.  PEPNET_TPARITY_SEED=k shifts every seed (other weights and data) for soak runs.

Connection from the standard libpq environment. Run with /usr/bin/python3; exit 1 on failure.
"""
import copy
import json
import math
import os
import sys
import time
import traceback

import numpy as np
import psycopg2
import psycopg2.extras
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pepnet_ref as ref  # noqa: E402
from train_ref import train_step  # noqa: E402

torch.set_num_threads(1)

LR = 1e-2
SEED_OFFSET = int(os.environ.get("PEPNET_TPARITY_SEED", "0"))   # other data and weights, for soak runs
BATCH = 64
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1

ADAM_EPS, ADAM_B2 = 1e-8, 0.999
GERR_REL = 1e-5                 # float32 gradient error: this fraction of the tensor's largest |g| (observed <= 2e-6)
TOL_1STEP = (1e-6, 2e-6)        # (abs, rel) after one step, plus adam_sensitivity()
TOL_STEPS = (1e-4, 1e-4)        # after 4 and 8 steps, plus adam_sensitivity()
LOSS_TOL = 2e-6                 # train_loss is stored with 6 decimals
EVAL_TOL = 2e-6                 # logloss of C-trained weights through the reference forward
LL_TOL = 1e-4                   # logloss of reference-trained weights

OFF = {"epnet": False, "ppnet": False, "pn": False, "star": False, "aux": False}

# name, config, rows, validation rows, label column kind, forced domain counts per batch (index ->
# {domain: exact rows}; the other rows of the batch get random other domains), seed
CASES = [
    # every part on, dense, 2 tasks, unhashed feature and persona fields, l2 > 0; single-row domains
    # (PN falls back to running statistics), an absent domain, a 2-row domain
    ("tparity_all",
     {"domains": 4,
      "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 50},
                   {"name": "hour", "buckets": 24, "hash": False}, {"name": "f3", "buckets": 100}],
      "persona": [{"name": "user", "buckets": 500}, {"name": "age", "buckets": 8, "hash": False}],
      "dense": 3, "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16], "aux_hidden": 8,
      "l2": 1e-3},
     250, 160, "labels", {0: {3: 1}, 1: {3: 0, 2: 1}, 2: {3: 2}, 3: {3: 1, 0: 1}}, 101),
    # all parts off: a shared MLP, one task with a scalar "label real" column (some NULL)
    ("tparity_off",
     dict({"domains": 2, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 30}],
           "persona": [{"name": "user", "buckets": 100}], "dense": 2, "emb_dim": 6, "hidden": [16, 8]},
          **OFF),
     230, 120, "label", {0: {1: 1}}, 102),
    # STAR: star + pn + aux, no dense column in the query, 2 tasks, l2 > 0; single-row domains
    ("tparity_star",
     dict({"domains": 4, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 7},
                                      {"name": "c", "buckets": 5, "hash": False}],
           "persona": [{"name": "user", "buckets": 100}], "emb_dim": 4,
           "tasks": ["click", "like"], "hidden": [12, 6], "aux_hidden": 5, "l2": 5e-4},
          **dict(OFF, star=True, pn=True, aux=True)),
     240, 150, "labels", {0: {0: 1}, 1: {2: 1, 3: 1}, 3: {1: 1}}, 103),
    # PEPNet: epnet + ppnet, one dense feature, 2 tasks, non-default gamma and epnet_hidden
    ("tparity_pepnet",
     dict({"domains": 3, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 40}],
           "persona": [{"name": "user", "buckets": 200}, {"name": "g", "buckets": 3, "hash": False}],
           "dense": 1, "emb_dim": 5, "tasks": ["click", "like"], "hidden": [10, 7], "gamma": 1.5,
           "epnet_hidden": 9},
          **dict(OFF, epnet=True, ppnet=True)),
     220, 140, "labels", {1: {2: 1}}, 104),
    # the shared-bottom baseline: all parts off, dv at the end of x0 (domain_input): emb.domain
    # trains through the towers alone; a single-row domain
    ("tparity_shared_bottom",
     dict({"domains": 3, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 30}],
           "persona": [{"name": "user", "buckets": 100}], "dense": 2, "emb_dim": 6, "hidden": [16, 8],
           "domain_input": True}, **OFF),
     230, 120, "labels", {0: {2: 1}}, 105),
    # every part but PN (which domain_input excludes) on: EPNet, PPNet, aux and the STAR towers see dv in x0
    ("tparity_all_domain",
     dict({"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 50}],
           "persona": [{"name": "user", "buckets": 500}], "dense": 2, "emb_dim": 5, "tasks": ["click", "buy"],
           "hidden": [12, 6], "aux_hidden": 6, "domain_input": True}, pn=False),
     240, 150, "labels", {1: {0: 1}}, 106),
]

RESULTS = []
WORST = {}   # summary of the largest differences, printed at the end


def check(name, ok, detail=""):
    """Record and print one result line."""
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""), flush=True)


# ----------------------------------------------------------------------------- data

def random_ids(rng, fields, n):
    """n x len(fields) raw ids: full int64 range, negatives, small ids, extremes; in range for unhashed fields."""
    out = np.zeros((n, len(fields)), dtype=np.int64)
    for i, f in enumerate(fields):
        if not f["hash"]:
            out[:, i] = rng.integers(0, f["buckets"], n)
            continue
        big = rng.integers(INT64_MIN, INT64_MAX, n, dtype=np.int64, endpoint=True)
        small = rng.integers(-30, 60, n)
        col = np.where(rng.random(n) < 0.4, big, small)
        col[:4] = [INT64_MIN, INT64_MAX, -1, 0][:n]
        out[:, i] = col
    return out


def make_domains(rng, n, D, forced):
    """Domains of n rows: batch b holds exactly forced[b][d] rows of domain d, other rows other domains."""
    dom = np.zeros(n, dtype=np.int64)
    for b in range((n + BATCH - 1) // BATCH):
        lo, hi = b * BATCH, min(n, (b + 1) * BATCH)
        f = forced.get(b, {})
        free = [d for d in range(D) if d not in f]
        vals = list(rng.choice(free, hi - lo - sum(f.values())))
        for d, cnt in f.items():
            vals += [d] * cnt
        vals = np.array(vals)
        rng.shuffle(vals)
        dom[lo:hi] = vals
    return dom


def make_data(c, n, rng, forced, kind):
    """Rows as numpy arrays; labels [n, T] float64 with NaN = NULL (masked)."""
    dom = make_domains(rng, n, c.domains, forced) if forced is not None else rng.integers(0, c.domains, n)
    persona = random_ids(rng, c.persona, n)
    feats = random_ids(rng, c.features, n)
    dense = rng.normal(size=(n, c.dense)).astype(np.float32) if c.dense else None
    # labels that depend a little on the inputs, so that AUCs are not all 0.5
    base = 0.3 * dom + 0.5 * (feats[:, -1] % 2) + (dense[:, 0] if c.dense else 0.0)
    labels = (rng.random((n, c.T)) < 1 / (1 + np.exp(-(base[:, None] - base.mean())))).astype(np.float64)
    labels[rng.random((n, c.T)) < 0.15] = np.nan
    if c.T > 1:
        labels[[5, 77], :] = np.nan                 # rows with every label masked
    null_rows = [40] if kind == "labels" else []   # a NULL labels array: all masked
    labels[null_rows, :] = np.nan
    return {"domain": dom, "persona": persona, "features": feats, "dense": dense, "labels": labels,
            "null_rows": null_rows}


def create_table(cur, table, c, data, kind):
    """CREATE TABLE table (i, domain, persona, features, dense, labels real[] | label real) and fill it."""
    cur.execute("DROP TABLE IF EXISTS %s" % table)
    cur.execute("CREATE TABLE %s (i int PRIMARY KEY, domain int, persona bigint[], features bigint[], "
                "dense real[], %s)" % (table, "labels real[]" if kind == "labels" else "label real"))
    rows = []
    for i in range(len(data["domain"])):
        lab = [None if math.isnan(v) else float(v) for v in data["labels"][i]]
        if kind == "labels":
            lab = None if i in data["null_rows"] else lab
        else:
            lab = lab[0]
        dense = None if data["dense"] is None else data["dense"][i].astype(np.float64).tolist()
        rows.append((i + 1, int(data["domain"][i]), data["persona"][i].tolist(), data["features"][i].tolist(),
                     dense, lab))
    lab_cast = "%s::real[]" if kind == "labels" else "%s::real"
    psycopg2.extras.execute_values(
        cur, "INSERT INTO %s VALUES %%s" % table, rows,
        template="(%%s, %%s, %%s::bigint[], %%s::bigint[], %%s::real[], %s)" % lab_cast)


def query(table, c, kind, limit=None):
    """The data query: columns by name, ordered by row number (dense omitted without dense features)."""
    cols = ["domain", "persona", "features"] + (["dense"] if c.dense else []) + [kind]
    return "SELECT %s FROM %s %sORDER BY i" % (", ".join(cols), table, "WHERE i <= %d " % limit if limit else "")


def batches_of(data, lo, hi):
    """Reference batches of rows [lo, hi) in query order, BATCH rows each (the last one partial)."""
    out = []
    for s in range(lo, hi, BATCH):
        e = min(hi, s + BATCH)
        out.append({"domain": data["domain"][s:e], "persona": data["persona"][s:e],
                    "features": data["features"][s:e],
                    "dense": None if data["dense"] is None else data["dense"][s:e],
                    "labels": data["labels"][s:e]})
    return out


# ----------------------------------------------------------------------------- reference

def snapshot(model):
    """{name: float64 numpy copy} of every tensor."""
    return {n: model.t(n).detach().to(torch.float64).numpy().copy() for n in model.shapes}


def ref_train(model, opt, batches, grads):
    """One reference epoch; appends each step's gradients ({name: dense float64 array}) to grads."""
    losses = []
    for b in batches:
        losses.append(train_step(model, opt, b))
        g = {}
        for n in model.shapes:
            if n in model.buffer_names:
                continue
            p = model.t(n)
            if p.grad is None:
                g[n] = np.zeros(p.shape)
            else:
                gg = p.grad.coalesce().to_dense() if p.grad.is_sparse else p.grad
                g[n] = gg.detach().numpy().copy()
        grads.append(g)
    rows = [len(b["domain"]) for b in batches]
    return losses, float(np.dot(losses, rows) / sum(rows))


def ref_logits(model, data):
    """Inference-mode logits [n, T] in float64."""
    model.eval()
    with torch.no_grad():
        return model(data["domain"], data["persona"], data["features"], data["dense"], train=False).numpy()


# ----------------------------------------------------------------------------- metrics

def auc_exact(z, y):
    """Exact AUC of scores z for 0/1 labels y, ties counted half; NaN with one class only."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y) >= 0.5
    npos, n = int(y.sum()), len(y)
    if npos == 0 or npos == n:
        return float("nan")
    order = np.argsort(z, kind="mergesort")
    zs = z[order]
    ranks = np.empty(n)
    i = 0
    while i < n:
        j = i
        while j < n and zs[j] == zs[i]:
            j += 1
        ranks[order[i:j]] = (i + 1 + j) / 2.0
        i = j
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * (n - npos)))


def ambiguous_pairs(z, y, delta):
    """(positive, negative) pairs whose scores are within delta: their order may flip by delta."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y) >= 0.5
    zp, zn = np.sort(z[y]), z[~y]
    return int(sum(np.searchsorted(zp, v + delta, "right") - np.searchsorted(zp, v - delta, "left") for v in zn))


def logloss(z, y):
    """Mean binary cross-entropy on logits."""
    z, y = np.asarray(z, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def np_metrics(c, data, logits):
    """{(domain or None, task index): (rows, auc, logloss, logits, labels)} over labeled elements."""
    out = {}
    for t in range(c.T):
        y = data["labels"][:, t]
        lab = ~np.isnan(y)
        groups = [(None, lab)] + [(d, lab & (data["domain"] == d)) for d in range(c.domains)]
        for d, sel in groups:
            if sel.sum() == 0:
                continue
            z, yy = logits[sel, t], y[sel]
            out[(d, t)] = (int(sel.sum()), auc_exact(z, yy), logloss(z, yy), z, yy)
    return out


def compare_metric(label, got_rows, got_auc, got_ll, want, delta, ll_tol):
    """Compare one (rows, auc, logloss) triple; AUC may differ by the pairs within delta. Returns (ok, why, errs)."""
    rows, auc, ll, z, y = want
    why = []
    if got_rows != rows:
        why.append("%s rows %s != %d" % (label, got_rows, rows))
    if math.isnan(auc):
        if got_auc is not None and not (isinstance(got_auc, float) and math.isnan(got_auc)):
            why.append("%s auc %s, expected NULL (one class)" % (label, got_auc))
        aerr = 0.0
    else:
        npos = int((y >= 0.5).sum())
        allow = ambiguous_pairs(z, y, delta) / (npos * (len(y) - npos)) + 2e-6
        aerr = float("inf") if got_auc is None else abs(got_auc - auc)
        if aerr > allow:
            why.append("%s auc %s vs %.6f (allowed %.2g)" % (label, got_auc, auc, allow))
    lerr = float("inf") if got_ll is None else abs(got_ll - ll)
    if lerr > ll_tol:
        why.append("%s logloss %s vs %.6f" % (label, got_ll, ll))
    return not why, why, (aerr, lerr)


# ----------------------------------------------------------------------------- tensor comparison

def export(cur, mref):
    """{name: float64 numpy} of a version's weights."""
    cur.execute("SELECT pepnet_export(%s)", (mref,))
    return {n: v.to(torch.float64).numpy() for n, v in ref.safetensors_loads(bytes(cur.fetchone()[0])).items()}


def adam_sensitivity(name, grads):
    """Per-element allowance for float32 gradient rounding amplified by Adam near |g| ~ eps.

    At a step with reference gradient g (not exactly 0), Adam moves a parameter by about
    lr * g / (|g| + e), e the optimiser's effective eps on the |g| scale (Adam: eps; SparseAdam:
    eps / sqrt(1 - b2^t)), so a gradient error dg changes the step by lr * e * dg / (|g| + e)^2.
    dg is taken as GERR_REL x the tensor's largest |gradient| at that step (float32 accumulation
    over a batch, with cancellation).  Summed over the steps, each term capped at 2 lr.
    """
    extra = None
    for t, g in enumerate(grads, 1):
        if name not in g:
            continue
        ga = np.abs(g[name])
        if extra is None:
            extra = np.zeros(ga.shape)
        if not ga.size or ga.max() == 0:
            continue
        e = ADAM_EPS / math.sqrt(1 - ADAM_B2 ** t) if name.startswith("emb.") else ADAM_EPS
        term = LR * e * GERR_REL * ga.max() / (ga + e) ** 2
        extra += np.where(ga > 0, np.minimum(term, 2 * LR), 0.0)
    return extra


def compare_tensors(got, want, init, grads, tol):
    """Compare C tensors with reference tensors element by element.

    Every element: |C - ref| <= abs + rel * |ref| + adam_sensitivity (the last is what makes an
    element "eps-sensitive" when it exceeds abs; those are counted and reported separately).
    Elements the reference left exactly at their imported value must be bit-identical in C.
    Returns (ok, detail, stats).
    """
    atol, rtol = tol
    bad = []
    stats = {"max_abs": 0.0, "max_rel": 0.0, "where": "", "sens": 0, "sens_max": 0.0, "sens_where": "",
             "unchanged": 0, "ratio": 0.0}
    if set(got) != set(want):
        return False, "tensor sets differ: %s" % sorted(set(got) ^ set(want)), stats
    for n in want:
        a, b = got[n], want[n]
        if a.shape != b.shape:
            bad.append("%s shape %s vs %s" % (n, a.shape, b.shape))
            continue
        err = np.abs(a - b)
        rel = err / np.maximum(np.abs(b), 1e-3)
        extra = adam_sensitivity(n, grads)
        if extra is None:
            extra = np.zeros(b.shape)
        unchanged = b == init[n]
        sens = (extra > atol) & ~unchanged
        stats["unchanged"] += int(unchanged.sum())
        ub = unchanged & (a.astype(np.float32) != init[n].astype(np.float32))
        if ub.any():
            idx = np.unravel_index(np.argmax(ub), ub.shape)
            bad.append("%s: %d elements left unchanged by the reference moved in C, e.g. %s: %.8g -> %.8g"
                       % (n, int(ub.sum()), list(idx), init[n][idx], a[idx]))
        allowed = atol + rtol * np.abs(b) + extra
        if err.size:
            stats["ratio"] = max(stats["ratio"], float((err / allowed).max()))
        stats["sens"] += int(sens.sum())
        if sens.any():
            es = np.where(sens, err, 0.0)
            idx = np.unravel_index(np.argmax(es), es.shape)
            if es[idx] > stats["sens_max"]:
                stats["sens_max"] = float(es[idx])
                stats["sens_where"] = "%s%s (allowed %.2g, ref grads %s)" % (n, list(idx), allowed[idx], ", ".join(
                    "%.2g" % g[n][idx] for g in grads if n in g))
        e = np.where(sens, 0.0, err)
        r = np.where(sens, 0.0, rel)
        if e.size and e.max() > stats["max_abs"]:
            idx = np.unravel_index(np.argmax(e), e.shape)
            stats["max_abs"] = float(e.max())
            stats["where"] = "%s%s: C %.8g ref %.8g" % (n, list(idx), a[idx], b[idx])
        stats["max_rel"] = max(stats["max_rel"], float(r.max()) if r.size else 0.0)
        fail = err > allowed
        if fail.any():
            idx = np.unravel_index(np.argmax(np.where(fail, err / allowed, 0)), err.shape)
            gs = ", ".join("%.3g" % g[n][idx] for g in grads if n in g)
            bad.append("%s: %d elements off, worst %s C %.8g ref %.8g init %.8g, allowed %.2g (ref grads per step: %s)"
                       % (n, int(fail.sum()), list(idx), a[idx], b[idx], init[n][idx], allowed[idx], gs))
    detail = ("%d tensors: max abs %.3g, max rel %.3g at %s; %d eps-sensitive elements: max abs %.3g%s; "
              "worst diff/allowed %.2f; %d elements unchanged, bit-identical"
              % (len(want), stats["max_abs"], stats["max_rel"], stats["where"], stats["sens"], stats["sens_max"],
                 (" at " + stats["sens_where"]) if stats["sens"] else "", stats["ratio"], stats["unchanged"]))
    if bad:
        detail += "; " + "; ".join(bad[:6])
    return not bad, detail, stats


def note_worst(key, value):
    """Keep the largest value seen for a summary key."""
    WORST[key] = max(WORST.get(key, 0.0), value)


# ----------------------------------------------------------------------------- one case

def run_case(cur, name, cfg, n, nval, kind, forced, seed):
    """All training-parity checks of one configuration."""
    seed += SEED_OFFSET
    c = ref.Config(cfg)
    rng = np.random.default_rng(seed)
    table, vtable = name + "_data", name + "_val"
    data = make_data(c, n, rng, forced, kind)
    vdata = make_data(c, nval, rng, None, kind)
    if name == "tparity_star":
        # one class only for task "like" in domain 3 of the validation data: its AUC is NULL
        sel = vdata["domain"] == 3
        vdata["labels"][sel, 1] = np.where(np.isnan(vdata["labels"][sel, 1]), np.nan, 1.0)
    create_table(cur, table, c, data, kind)
    create_table(cur, vtable, c, vdata, kind)

    # 1. reference weights -> pepnet_import (version 1)
    model = ref.StarPepNet(c).init_random(seed)
    blob = ref.safetensors_dumps(model.tensors())
    cur.execute("SELECT pepnet_import(%s, %s::jsonb, %s::bytea)", (name, json.dumps(cfg), psycopg2.Binary(blob)))
    v1 = cur.fetchone()[0]
    check("%s: pepnet_import -> version 1" % name, v1 == 1, "version %s" % v1)
    init = {k: v.to(torch.float64).numpy() for k, v in ref.safetensors_loads(blob).items()}

    # batches where PN falls back to running statistics for a domain
    singles = []
    for bi, b in enumerate(batches_of(data, 0, n)):
        cnt = np.bincount(b["domain"], minlength=c.domains)
        singles += ["batch %d domain %d" % (bi + 1, d) for d in range(c.domains) if cnt[d] == 1]

    # 2. two epochs from version 1, with validation: versions 2 and 3
    t0 = time.time()
    cur.execute("CALL pepnet_train(%s, %s, validation => %s, epochs => 2, batch_size => %s, lr => %s, "
                "shuffle_buffer => 1, progress_interval => 0)",
                (name, query(table, c, kind), query(vtable, c, kind), BATCH, LR))
    secs = time.time() - t0
    cur.execute("SELECT version, parent, metrics FROM pepnet.models WHERE name = %s ORDER BY version", (name,))
    vers = cur.fetchall()
    links = [(v, p) for v, p, _ in vers]
    check("%s: 2-epoch run created versions 2, 3 with parents 1, 2" % name,
          links == [(1, None), (2, 1), (3, 2)], "(version, parent): %s, %.2f s" % (links, secs))
    metrics = {v: m for v, _, m in vers}
    steps_per_epoch = (n + BATCH - 1) // BATCH
    ok, why = True, []
    for v, ep in ((2, 1), (3, 2)):
        m = metrics.get(v) or {}
        for key in ("epoch", "rows", "steps", "seconds", "train_loss", "validation"):
            if key not in m:
                ok = False
                why.append("v%d lacks %s" % (v, key))
        if m.get("epoch") != ep or m.get("rows") != n or m.get("steps") != steps_per_epoch \
                or not (isinstance(m.get("seconds"), (int, float)) and m["seconds"] >= 0):
            ok = False
            why.append("v%d: epoch %s rows %s steps %s seconds %s" % (v, m.get("epoch"), m.get("rows"),
                                                                       m.get("steps"), m.get("seconds")))
        val = m.get("validation") or {}
        tasks = val.get("tasks") or {}
        if "logloss" not in val or "auc" not in val or set(tasks) != set(c.tasks):
            ok = False
            why.append("v%d validation keys %s, tasks %s" % (v, sorted(val), sorted(tasks)))
        for tname in c.tasks:
            doms = (tasks.get(tname) or {}).get("domains") or {}
            if not doms or not all({"rows", "logloss", "auc"} <= set(x) for x in doms.values()):
                ok = False
                why.append("v%d task %s domains %s" % (v, tname, doms))
    check("%s: metrics hold epoch, rows, steps, seconds, train_loss, validation {logloss, auc, tasks.*.domains}"
          % name, ok, "; ".join(why))

    # 3. the reference: the same batches from the same weights, float64
    m64 = copy.deepcopy(model).double()
    opt = ref.RefOptimizer(m64, lr=LR)
    batches = batches_of(data, 0, n)
    grads = []
    losses1, _ = ref_train(m64, opt, batches[:1], grads)
    after1 = snapshot(m64)
    losses_rest, _ = ref_train(m64, opt, batches[1:], grads)
    rows = [len(b["domain"]) for b in batches]
    loss_ep1 = float(np.dot(losses1 + losses_rest, rows) / sum(rows))
    ep1 = snapshot(m64)
    val1 = np_metrics(c, vdata, ref_logits(m64, vdata))
    _, loss_ep2 = ref_train(m64, opt, batches, grads)
    ep2 = snapshot(m64)
    val2 = np_metrics(c, vdata, ref_logits(m64, vdata))

    # 4a. train loss of each epoch
    for v, want in ((2, loss_ep1), (3, loss_ep2)):
        got = (metrics.get(v) or {}).get("train_loss")
        err = abs(got - want) if isinstance(got, (int, float)) else float("inf")
        note_worst("train_loss abs diff", err)
        check("%s: epoch %d train_loss = reference's" % (name, v - 1), err <= LOSS_TOL,
              "C %s, reference %.7f, diff %.2g" % (got, want, err))

    # 4b. one step from version 1 (version 4, parent 1): tight tolerance
    cur.execute("CALL pepnet_train(%s, %s, epochs => 1, batch_size => %s, lr => %s, shuffle_buffer => 1, "
                "progress_interval => 0)", (name + "@1", query(table, c, kind, limit=BATCH), BATCH, LR))
    cur.execute("SELECT parent, metrics FROM pepnet.models WHERE name = %s AND version = 4", (name,))
    r4 = cur.fetchone()
    check("%s: one-batch run from %s@1 -> version 4, parent 1, 1 step" % (name, name),
          r4 is not None and r4[0] == 1 and r4[1].get("steps") == 1 and r4[1].get("rows") == BATCH,
          str(r4 and (r4[0], r4[1].get("steps"), r4[1].get("rows"))))
    got4 = export(cur, name + "@4")
    ok, detail, st = compare_tensors(got4, after1, init, grads[:1], TOL_1STEP)
    note_worst("1 step: max abs", st["max_abs"])
    note_worst("1 step: max rel", st["max_rel"])
    note_worst("1 step: eps-sensitive max abs", st["sens_max"])
    note_worst("diff/allowed", st["ratio"])
    check("%s: all tensors after 1 step (abs %g + rel %g + Adam-eps sensitivity)"
          % (name, TOL_1STEP[0], TOL_1STEP[1]), ok, detail)
    if c.pn:
        cnt = np.bincount(batches[0]["domain"], minlength=c.domains)
        one = [d for d in range(c.domains) if cnt[d] == 1]
        many = [d for d in range(c.domains) if cnt[d] >= 2]
        kept = all(np.array_equal(got4[k][d], init[k][d]) for k in ("pn.running_mean", "pn.running_var")
                   for d in one + [d for d in range(c.domains) if cnt[d] == 0])
        moved = all(not np.array_equal(got4["pn.running_mean"][d], init["pn.running_mean"][d]) for d in many)
        check("%s: after batch 1, PN running stats kept (bit-identical) for domains with < 2 rows %s, moved for %s"
              % (name, one, many), bool(one) and kept and moved)
    err = abs(r4[1].get("train_loss", float("inf")) - losses1[0]) if r4 else float("inf")
    check("%s: loss of the first batch = reference's" % name, err <= LOSS_TOL,
          "reference %.7f, diff %.2g" % (losses1[0], err))

    # 4c. after epoch 1 (version 2) and epoch 2 (version 3)
    got2, got3 = export(cur, name + "@2"), export(cur, name + "@3")
    for label, got, want, g, steps in (("epoch 1 (%d steps)" % len(batches), got2, ep1, grads[:len(batches)],
                                        len(batches)),
                                       ("epoch 2 (%d steps)" % (2 * len(batches)), got3, ep2, grads,
                                        2 * len(batches))):
        ok, detail, st = compare_tensors(got, want, init, g, TOL_STEPS)
        note_worst("%s: max abs" % label.split(" (")[0], st["max_abs"])
        note_worst("%s: max rel" % label.split(" (")[0], st["max_rel"])
        note_worst("%s: eps-sensitive max abs" % label.split(" (")[0], st["sens_max"])
        note_worst("diff/allowed", st["ratio"])
        check("%s: all tensors after %s (abs %g + rel %g + Adam-eps sensitivity)"
              % (name, label, TOL_STEPS[0], TOL_STEPS[1]), ok, detail)

    if c.pn:
        for label, got, want in (("epoch 1", got2, ep1), ("epoch 2", got3, ep2)):
            e = max(float(np.abs(got[k] - want[k]).max()) for k in ("pn.running_mean", "pn.running_var"))
            moved = float(np.abs(want["pn.running_mean"] - init["pn.running_mean"]).max())
            note_worst("pn running stats: max abs", e)
            check("%s: pn.running_mean/var after %s (%s)" % (name, label, ", ".join(singles) or "no single-row domain"),
                  e <= 1e-5 and moved > 0, "max abs diff %.3g, moved by up to %.3g" % (e, moved))
            k = "pn.num_batches_tracked"
            check("%s: %s after %s equals the reference's exactly (docs/model.md 0.2, from %s)"
                  % (name, k, label, list(init[k].astype(int))),
                  k in got and np.array_equal(got[k], want[k]) and (want[k] > init[k]).any(),
                  "C %s, reference %s" % (list(got.get(k, [])), list(want[k])))

    # 5a. validation metrics of each epoch: C's numbers vs numpy on the reference's trained weights
    for v, want, got_t in ((2, val1, got2), (3, val2, got3)):
        val = (metrics.get(v) or {}).get("validation") or {}
        # logit deviation between C's and the reference's weights, for the AUC allowance
        mc = ref.StarPepNet(c).double()
        mc.load_tensors({k: torch.from_numpy(x) for k, x in got_t.items()})
        zc = ref_logits(mc, vdata)
        mr = ref.StarPepNet(c).double()
        mr.load_tensors({k: torch.from_numpy(x) for k, x in (ep1 if v == 2 else ep2).items()})
        delta = 2 * float(np.abs(zc - ref_logits(mr, vdata)).max()) + 1e-5
        ok, why, worst_a, worst_l = True, [], 0.0, 0.0
        for (d, t), w in want.items():
            node = (val.get("tasks") or {}).get(c.tasks[t]) or {}
            if d is not None:
                node = (node.get("domains") or {}).get(str(d))
            if node is None:
                ok = False
                why.append("missing domain %s task %s" % (d, c.tasks[t]))
                continue
            o, wy, (ae, le) = compare_metric("d%s/%s" % (d, c.tasks[t]), node.get("rows"), node.get("auc"),
                                             node.get("logloss"), w, delta, LL_TOL)
            ok, why = ok and o, why + wy
            worst_a, worst_l = max(worst_a, ae), max(worst_l, le)
            if d is None and t == 0:
                o, wy, _ = compare_metric("top", val.get("rows"), val.get("auc"), val.get("logloss"), w, delta, LL_TOL)
                ok, why = ok and o, why + wy
        note_worst("validation: auc abs diff", worst_a)
        note_worst("validation: logloss abs diff", worst_l)
        check("%s: validation metrics of version %d vs reference (per domain, per task, overall)" % (name, v), ok,
              "max auc diff %.3g, max logloss diff %.3g, logit deviation %.3g%s"
              % (worst_a, worst_l, delta / 2, ("; " + "; ".join(why[:5])) if why else ""))

    # 5b. pepnet_evaluate of version 3
    cur.execute("SELECT domain, task, rows, auc, logloss FROM pepnet_evaluate(%s, %s)",
                (name + "@3", query(vtable, c, kind)))
    ev = {(r[0], c.tasks.index(r[1])): r[2:] for r in cur.fetchall()}
    mc = ref.StarPepNet(c).double()
    mc.load_tensors({k: torch.from_numpy(x) for k, x in got3.items()})
    zc = ref_logits(mc, vdata)
    mr = ref.StarPepNet(c).double()
    mr.load_tensors({k: torch.from_numpy(x) for k, x in ep2.items()})
    zr = ref_logits(mr, vdata)
    for key_, label, z, delta, lltol in (("C weights", "C-trained weights through the reference forward "
                                          "(metric computation)", zc, 1e-5, EVAL_TOL),
                                         ("reference weights", "the reference's trained weights",
                                          zr, 2 * float(np.abs(zc - zr).max()) + 1e-5, LL_TOL)):
        want = np_metrics(c, vdata, z)
        ok, why, worst_a, worst_l = set(ev) == set(want), [], 0.0, 0.0
        if not ok:
            why.append("groups %s vs %s" % (sorted(ev, key=str), sorted(want, key=str)))
        for key, w in want.items():
            if key not in ev:
                continue
            o, wy, (ae, le) = compare_metric("d%s/%s" % (key[0], c.tasks[key[1]]), ev[key][0], ev[key][1],
                                             ev[key][2], w, delta, lltol)
            ok, why = ok and o, why + wy
            worst_a, worst_l = max(worst_a, ae), max(worst_l, le)
        nulls = sum(1 for w in want.values() if math.isnan(w[1]))
        note_worst("pepnet_evaluate vs %s: auc" % key_, worst_a)
        note_worst("pepnet_evaluate vs %s: logloss" % key_, worst_l)
        check("%s: pepnet_evaluate(@3) per domain and overall vs numpy on %s" % (name, label), ok,
              "%d groups (%d with NULL auc), max auc diff %.3g, max logloss diff %.3g%s"
              % (len(want), nulls, worst_a, worst_l, ("; " + "; ".join(why[:5])) if why else ""))


def main():
    """Run every case; exit 1 if any check failed."""
    t0 = time.time()
    conn = psycopg2.connect("")
    conn.autocommit = True      # CALL pepnet_train commits per epoch
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    names = [case[0] for case in CASES]

    def cleanup():
        """Drop this test's models and tables."""
        cur.execute("DELETE FROM pepnet.deployments WHERE name = ANY(%s)", (names,))
        cur.execute("DELETE FROM pepnet.models WHERE name = ANY(%s)", (names,))
        for nm in names:
            cur.execute("DROP TABLE IF EXISTS %s_data, %s_val" % (nm, nm))

    try:
        cleanup()
        for case in CASES:
            try:
                run_case(cur, *case)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc(file=sys.stdout)
                check("%s: ran without error" % case[0], False, "%s: %s" % (type(e).__name__, str(e).strip()))
    finally:
        cleanup()
        conn.close()
    print("# largest differences: " + ", ".join("%s %.3g" % kv for kv in WORST.items()))
    print("# %.1f s" % (time.time() - t0))
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
