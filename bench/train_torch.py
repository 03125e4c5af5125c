#!/usr/bin/python3
"""PyTorch training baseline for pepnet: docs/model.md's STAR-PEPNet trained with docs/model.md's optimiser.

Builds test/python/pepnet_ref.py's StarPepNet, trains it with Adam (dense parameters) + SparseAdam
(embedding tables) on one CPU thread with all data preloaded into tensors, and prints one JSON
document to stdout: training samples/s (training loop only: forward, backward, optimiser step),
validation metrics per epoch, and test AUC (exact, ties counted half) and logloss per task, overall
and per domain.

    eval "$(test/pg.sh env)"                       # libpq environment (PGHOST, PGPORT, ...)
    psql -v rows=200000 -v seed=1 -f examples/synth.sql
    bench/train_torch.py synth --variant all --epochs 1
    bench/load_data.py all && bench/train_torch.py mind     # tables data.mind_{train,valid,test}

DATASET names the tables <schema>.<DATASET>_train / _valid / _test (schema: public for synth, data
otherwise; --schema overrides) and the config bench/configs/<DATASET>.json (--config overrides).
--variant picks docs/model.md's switches: bottom (the shared-bottom baseline: all off, domain_input), shared (all off), star (star+pn+aux), pepnet (epnet+ppnet),
full (all on), all (the four in turn; the output is then a JSON list), or config (as in the file).
--set key=json overrides config keys, e.g. --set 'hidden=[64,32]' --set emb_dim=8.

Labels: a config with one task reads column `label` (else labels[1]); with T tasks, `labels` (T
values, NULL = masked). The last batch of an epoch may be short. Initialisation: the reference's
init_default(seed); the shuffling order comes from numpy's default_rng(seed).

--test-each-epoch adds test metrics to every epoch's log (CTR models often overfit after one epoch).
--pn-refresh (a diagnostic, NOT docs/model.md) replaces PN's running statistics after each epoch by their
exact per-domain values over the training data: with docs/model.md's r = 0.99 r + 0.01 batch, started
at var 1, an epoch of a few hundred steps leaves about 0.99^steps of the initial 1 in the running
variance, far above the variance of x when embeddings start at N(0, 0.01), so inference
normalises with much too large a variance.

--init FILE starts from the weights of a safetensors file (docs/model.md's names, e.g. pepnet_export of a
pepnet_create'd version: `SELECT pepnet_export('m@1')`) instead of init_default(seed); one variant only.
The seed still drives the shuffling order. Used by bench/quality.py to separate the effect of the two
implementations' default initialisations (embeddings N(0, 0.01) here, U(-0.05, 0.05) in pepnet).

--impl fast (default) runs the same model with two exact rewrites that do not change the function
or its gradients, only the speed: ids are hashed to embedding rows once at load time, and the STAR
layers multiply the rows of each domain by that domain's fused W* (instead of materialising a
[B, out, in] weight per row). At start-up it checks logits and all gradients against the plain
reference on one batch and reports the largest difference ("impl_check"). --impl ref trains the
plain reference.
"""
import argparse
import json
import os
import sys
import time

# One thread for real: torch.set_num_threads(1) below limits ATen / OpenMP only, but Debian's
# python3-torch (BLAS_INFO=generic) calls the system BLAS, OpenBLAS' pthreads build, whose own pool
# would run the matrix products on every core. Set before numpy / torch load the library.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402
import psycopg2  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "test", "python"))
import pepnet_ref as ref  # noqa: E402

torch.set_num_threads(1)

VARIANTS = {
    "bottom": dict(epnet=False, ppnet=False, pn=False, star=False, aux=False, domain_input=True),
    "shared": dict(epnet=False, ppnet=False, pn=False, star=False, aux=False),
    "star": dict(epnet=False, ppnet=False, pn=True, star=True, aux=True),
    "pepnet": dict(epnet=True, ppnet=True, pn=False, star=False, aux=False),
    "full": dict(epnet=True, ppnet=True, pn=True, star=True, aux=True),
}


# ----------------------------------------------------------------------------- metrics

def auc_exact(y, s):
    """ROC AUC by the Mann-Whitney statistic with average ranks (ties count half); None if one class."""
    y = np.asarray(y, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    npos = float((y > 0.5).sum())
    nneg = float(len(y) - npos)
    if npos == 0 or nneg == 0:
        return None
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    # average rank (1-based) of each run of equal scores
    starts = np.r_[0, np.flatnonzero(ss[1:] != ss[:-1]) + 1]
    ends = np.r_[starts[1:], len(ss)]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(len(ss))
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y > 0.5].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def logloss(y, logit):
    """Mean binary cross-entropy from logits, in float64."""
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(logit, dtype=np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) if len(y) else None


def metrics(domain, labels, logits, tasks):
    """{task: {"overall": {...}, "domains": {d: {...}}}} with rows, positives, auc, logloss, mean_p, actual, pcoc."""
    out = {}
    for t, name in enumerate(tasks):
        y, z = labels[:, t], logits[:, t]
        known = ~np.isnan(y)

        def one(mask):
            m = mask & known
            n = int(m.sum())
            mean_p = float(np.mean(1.0 / (1.0 + np.exp(-z[m].astype(np.float64))))) if n else None
            actual = float(np.mean(y[m])) if n else None
            return {"rows": n, "positives": int((y[m] > 0.5).sum()),
                    "auc": auc_exact(y[m], z[m]), "logloss": logloss(y[m], z[m]),
                    "mean_p": mean_p, "actual": actual,
                    "pcoc": mean_p / actual if n and actual > 0 else None}   # calibration, as pepnet_evaluate

        out[name] = {"overall": one(np.ones(len(y), dtype=bool)),
                     "domains": {str(d): one(domain == d) for d in np.unique(domain).tolist()}}
    return out


# ----------------------------------------------------------------------------- data

class Data:
    """One table preloaded: domain [N], persona/feature slots [N, P]/[N, F], dense [N, Nd], labels [N, T]."""

    def __init__(self, conn, table, cfg):
        """Read the table and hash ids to embedding rows with docs/model.md's rule."""
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM %s LIMIT 0" % table)
            cols = [d[0] for d in cur.description]
            if cfg.T == 1 and "label" in cols:
                lab = "ARRAY[label::float8]"
            elif "labels" in cols:
                lab = "labels::float8[]"
            else:
                raise SystemExit("%s: no label/labels column" % table)
            dense = "dense::float8[]" if cfg.dense else "NULL::float8[]"
            cur.execute("SELECT domain, persona, features, %s, %s FROM %s" % (dense, lab, table))
            rows = cur.fetchall()
        n = len(rows)
        self.n = n
        self.domain = np.fromiter((r[0] for r in rows), dtype=np.int64, count=n)
        P, Fn, T = len(cfg.persona), len(cfg.features), cfg.T
        self.persona_ids = np.array([r[1] for r in rows], dtype=np.int64).reshape(n, P)
        self.feature_ids = np.array([r[2] for r in rows], dtype=np.int64).reshape(n, Fn)
        if cfg.dense:
            self.dense = np.array([r[3] for r in rows], dtype=np.float32).reshape(n, cfg.dense)
        else:
            self.dense = np.zeros((n, 0), dtype=np.float32)
        lab = np.array([[np.nan if v is None else v for v in r[4]] for r in rows], dtype=np.float64)
        if lab.shape[1:] != (T,) and n:
            raise SystemExit("%s: labels have %d values per row, the config has %d tasks" % (table, lab.shape[1], T))
        self.labels = lab.reshape(n, T)
        if n and (self.domain.min() < 0 or self.domain.max() >= cfg.domains):
            raise SystemExit("%s: domain outside [0, %d)" % (table, cfg.domains))
        self.persona_slots = np.stack([ref.slots_np(self.persona_ids[:, i], i, f["buckets"], f["hash"])
                                       for i, f in enumerate(cfg.persona)], axis=1) if P else np.zeros((n, 0), np.int64)
        self.feature_slots = np.stack([ref.slots_np(self.feature_ids[:, i], i, f["buckets"], f["hash"])
                                       for i, f in enumerate(cfg.features)], axis=1)
        # tensors
        self.t_domain = torch.from_numpy(self.domain)
        self.t_persona = torch.from_numpy(self.persona_slots)
        self.t_features = torch.from_numpy(self.feature_slots)
        self.t_dense = torch.from_numpy(self.dense)
        self.t_labels = torch.from_numpy(self.labels.astype(np.float32))

    def batch(self, idx, slots=True):
        """(domain, persona, features, dense, labels) of rows idx: slots, or raw ids for the reference."""
        if slots:
            return (self.t_domain[idx], self.t_persona[idx], self.t_features[idx],
                    self.t_dense[idx], self.t_labels[idx])
        i = idx.numpy()
        return (self.domain[i], self.persona_ids[i], self.feature_ids[i], self.dense[i], self.labels[i])


# ----------------------------------------------------------------------------- fast model

class FastStarPepNet(ref.StarPepNet):
    """The reference model fed with precomputed embedding rows, STAR layers computed per domain."""

    def _lookup(self, table, ids, fields, rows=True):
        """Embeddings of precomputed slots [B, n] (no hashing here; rows, the reference's flag for
        ids that are already rows, is always true here)."""
        if len(fields) == 0:
            return torch.zeros(ids.shape[0], 0, dtype=self.dtype)
        return torch.cat([F.embedding(ids[:, i], self.t("%s.%d" % (table, i)), sparse=True)
                          for i in range(len(fields))], dim=1)

    def star_linear(self, a, domain, t, l):
        """a @ (W ⊙ W_d)^T + (b + b_d), one matrix product per domain present in the batch."""
        W, b = self.t("tower.%d.%d.w" % (t, l)), self.t("tower.%d.%d.b" % (t, l))
        if not self.cfg.star:
            return F.linear(a, W, b)
        Wd = self.t("tower.%d.%d.domain_w" % (t, l))
        bd = self.t("tower.%d.%d.domain_b" % (t, l))
        parts, rows = [], []
        for d in torch.unique(domain).tolist():
            r = (domain == d).nonzero(as_tuple=True)[0]
            parts.append(F.linear(a[r], W * Wd[d], b + bd[d]))
            rows.append(r)
        if len(parts) == 1:
            return parts[0]
        out = torch.cat(parts, dim=0)
        return torch.zeros_like(out).index_copy(0, torch.cat(rows), out)


def impl_check(cfg, data, seed):
    """Largest |difference| of logits and gradients between FastStarPepNet and the reference on one batch."""
    fast, plain = FastStarPepNet(cfg), ref.StarPepNet(cfg)
    fast.init_random(seed)
    plain.load_tensors(fast.tensors())
    idx = torch.arange(min(512, data.n))
    d, p, f, x, y = data.batch(idx)
    zf = fast(d, p, f, x, train=True)
    fast.loss(zf, y.numpy()).backward()
    d2, p2, f2, x2, y2 = data.batch(idx, slots=False)
    zp = plain(d2, p2, f2, x2, train=True)
    plain.loss(zp, y2).backward()
    worst = float((zf - zp).abs().max())
    for n in fast.shapes:
        if n in fast.buffer_names:
            worst = max(worst, float((fast.t(n) - plain.t(n)).abs().max()))
            continue
        gf, gp = fast.t(n).grad, plain.t(n).grad
        if gf is None and gp is None:
            continue
        gf = torch.zeros_like(fast.t(n)) if gf is None else (gf.to_dense() if gf.is_sparse else gf)
        gp = torch.zeros_like(plain.t(n)) if gp is None else (gp.to_dense() if gp.is_sparse else gp)
        worst = max(worst, float((gf - gp).abs().max()))
    return worst


# ----------------------------------------------------------------------------- training

def predict_logits(model, data, fast, chunk=4096):
    """Inference-mode logits [N, T] as float64 numpy."""
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, data.n, chunk):
            idx = torch.arange(s, min(s + chunk, data.n))
            d, p, f, x, _ = data.batch(idx, slots=fast)
            out.append(model(d, p, f, x, train=False).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.cfg.T))


@torch.no_grad()
def refresh_pn(model, data, chunk=8192):
    """NOT docs/model.md: set PN's running statistics to the exact per-domain mean / biased variance of x
    over the training data (diagnostic for the slow 0.99 running average, see --pn-refresh)."""
    c = model.cfg
    D, n0 = c.domains, c.n0
    s1 = torch.zeros(D, n0, dtype=torch.float64)
    s2 = torch.zeros(D, n0, dtype=torch.float64)
    cnt = torch.zeros(D, dtype=torch.float64)
    for s in range(0, data.n, chunk):
        idx = torch.arange(s, min(s + chunk, data.n))
        d, p, f, x, _ = data.batch(idx, slots=isinstance(model, FastStarPepNet))
        d = torch.as_tensor(np.asarray(d), dtype=torch.long)
        if not isinstance(model, FastStarPepNet):
            f = torch.stack([torch.from_numpy(ref.slots_np(np.asarray(f)[:, i], i, fl["buckets"], fl["hash"]))
                             for i, fl in enumerate(c.features)], dim=1)
        x0 = torch.cat([FastStarPepNet._lookup(model, "emb.feature", f, c.features),
                        torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(len(d), c.dense)], dim=1)
        if c.epnet:
            x0 = model.gate("epnet", torch.cat([model.t("emb.domain")[d], x0], dim=1)) * x0
        x0 = x0.double()
        s1.index_add_(0, d, x0)
        s2.index_add_(0, d, x0 * x0)
        cnt.index_add_(0, d, torch.ones(len(d), dtype=torch.float64))
    for dd in range(D):
        if cnt[dd] >= 2:
            mu = s1[dd] / cnt[dd]
            model.t("pn.running_mean")[dd] = mu.float()
            model.t("pn.running_var")[dd] = (s2[dd] / cnt[dd] - mu * mu).clamp_min(0).float()


def schedule_lr(args, step):
    """pepnet_train's lr_schedule: linear warm-up over --warmup-steps, then cosine decay to
    --min-lr over --cosine-steps (0: constant)."""
    import math
    if args.warmup_steps and step <= args.warmup_steps:
        return args.lr * step / args.warmup_steps
    if args.cosine_steps:
        f = min(step - args.warmup_steps, args.cosine_steps) / args.cosine_steps
        return args.min_lr + (args.lr - args.min_lr) * 0.5 * (1 + math.cos(math.pi * f))
    return args.lr


def run(cfg_dict, train, valid, test, args, variant):
    """Train one configuration; return its result dict."""
    cfg = ref.Config(cfg_dict)
    fast = args.impl == "fast"
    torch.manual_seed(args.seed)
    model = (FastStarPepNet if fast else ref.StarPepNet)(cfg)
    model.init_default(args.seed)
    if getattr(args, "init", None):
        with open(args.init, "rb") as fh:
            model.load_tensors(ref.safetensors_loads(fh.read()))
    opt = ref.RefOptimizer(model, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    result = {"variant": variant, "config": cfg_dict, "impl": args.impl, "init": getattr(args, "init", None) or "default",
              "pn_refresh": bool(args.pn_refresh),
              "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed, "threads": torch.get_num_threads(),
              "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
              "train_rows": train.n, "valid_rows": valid.n if valid else 0, "test_rows": test.n,
              "parameters": int(sum(p.numel() for p in model.parameters())), "epoch_log": []}
    train_seconds = 0.0
    train_cpu = 0.0
    step = 0
    for epoch in range(1, args.epochs + 1):
        perm = torch.from_numpy(rng.permutation(train.n))
        model.train()
        losses = []
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(0, train.n, args.batch_size):
            idx = perm[s:s + args.batch_size]
            d, p, f, x, y = train.batch(idx, slots=fast)
            logits = model(d, p, f, x, train=True)
            loss = model.loss(logits, y)
            opt.zero_grad()
            loss.backward()
            step += 1
            lr_now = schedule_lr(args, step)
            for o in (opt.adam, opt.sparse_adam):
                if o is not None:
                    for g in o.param_groups:
                        g["lr"] = lr_now
            opt.step()
            losses.append(float(loss.detach()))
        dt = time.perf_counter() - t0
        train_seconds += dt
        train_cpu += time.process_time() - c0
        log = {"epoch": epoch, "seconds": round(dt, 3), "samples_per_s": round(train.n / dt, 1),
               "train_loss": float(np.mean(losses))}
        if args.pn_refresh and cfg.pn:
            refresh_pn(model, train)
        if valid is not None and valid.n:
            m = metrics(valid.domain, valid.labels, predict_logits(model, valid, fast), cfg.tasks)
            log["valid"] = {t: {"auc": v["overall"]["auc"], "logloss": v["overall"]["logloss"],
                                "pcoc": v["overall"]["pcoc"],
                                "pcoc_domains": {d: x["pcoc"] for d, x in v["domains"].items()}} for t, v in m.items()}
        if args.test_each_epoch:
            m = metrics(test.domain, test.labels, predict_logits(model, test, fast), cfg.tasks)
            log["test"] = {t: {"auc": v["overall"]["auc"], "logloss": v["overall"]["logloss"],
                               "pcoc": v["overall"]["pcoc"],
                               "pcoc_domains": {d: x["pcoc"] for d, x in v["domains"].items()}} for t, v in m.items()}
            log["test_metrics"] = m
        result["epoch_log"].append(log)
        print("[%s] epoch %d: %.1f s, %.0f samples/s, train loss %.5f%s" % (
            variant, epoch, dt, train.n / dt, log["train_loss"],
            "".join(", valid %s auc %.4f" % (t, v["auc"] or float("nan")) for t, v in log.get("valid", {}).items())),
            file=sys.stderr)
    result["train_seconds"] = round(train_seconds, 3)
    result["samples_per_s"] = round(train.n * args.epochs / train_seconds, 1) if train_seconds else None
    # CPU time of the process over the same training loops (less sensitive to other jobs on the machine)
    result["train_cpu_seconds"] = round(train_cpu, 3)
    result["samples_per_cpu_s"] = round(train.n * args.epochs / train_cpu, 1) if train_cpu else None
    result["test"] = metrics(test.domain, test.labels, predict_logits(model, test, fast), cfg.tasks)
    return result


def parse_set(items):
    """--set key=json pairs as a dict (bare words are strings)."""
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def main():
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", help="table prefix: synth, mind, douban, aliccp, ...")
    ap.add_argument("--schema", help="schema of the tables (default: public for synth, data otherwise)")
    ap.add_argument("--tables", help="train,valid,test table names (override; valid may be empty)")
    ap.add_argument("--config", help="config JSON file (default bench/configs/DATASET.json)")
    ap.add_argument("--variant", default="full", choices=["config", "all"] + list(VARIANTS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config key")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (as pepnet_train's lr_schedule)")
    ap.add_argument("--cosine-steps", type=int, default=0, help="cosine decay steps after the warm-up (0: constant lr)")
    ap.add_argument("--min-lr", type=float, default=0.0, help="lr at the end of the cosine decay")
    ap.add_argument("--impl", choices=["fast", "ref"], default="fast")
    ap.add_argument("--init", metavar="FILE", help="start from these weights (safetensors) instead of init_default(seed)")
    ap.add_argument("--test-each-epoch", action="store_true", help="also report test AUC/logloss after every epoch")
    ap.add_argument("--pn-refresh", action="store_true",
                    help="NOT docs/model.md (diagnostic): after each epoch, recompute PN running statistics exactly "
                         "over the training data before evaluating")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: the PG* environment)")
    args = ap.parse_args()

    with open(args.config or os.path.join(HERE, "configs", args.dataset + ".json")) as fh:
        base = json.load(fh)
    base.update(parse_set(args.set))
    if args.tables:
        names = (args.tables.split(",") + ["", ""])[:3]
    else:
        schema = args.schema or ("public" if args.dataset == "synth" else "data")
        names = ["%s.%s_%s" % (schema, args.dataset, s) for s in ("train", "valid", "test")]
    cfg = ref.Config(base)  # for reading: fields, dense, tasks (identical in every variant)

    conn = psycopg2.connect(args.dsn)
    t0 = time.perf_counter()
    train = Data(conn, names[0], cfg)
    valid = Data(conn, names[1], cfg) if names[1] else None
    test = Data(conn, names[2] or names[0], cfg)
    conn.close()
    load_seconds = time.perf_counter() - t0

    check = impl_check(cfg, train, args.seed) if args.impl == "fast" else None
    if check is not None and check > 1e-4:
        raise SystemExit("fast implementation differs from the reference by %g" % check)

    variants = list(VARIANTS) if args.variant == "all" else [args.variant]
    if args.init and len(variants) > 1:
        raise SystemExit("--init needs a single --variant (the tensor set depends on the variant)")
    results = []
    for v in variants:
        c = dict(base) if v == "config" else dict(base, **VARIANTS[v])
        r = run(c, train, valid, test, args, v)
        r.update({"dataset": args.dataset, "tables": names, "load_seconds": round(load_seconds, 3),
                  "impl_check_max_abs_diff": check})
        results.append(r)
        t = r["test"]
        print("[%s] test: %s; %.0f samples/s" % (v, ", ".join(
            "%s auc %.4f logloss %.5f" % (k, m["overall"]["auc"] or float("nan"), m["overall"]["logloss"] or float("nan"))
            for k, m in t.items()), r["samples_per_s"] or 0), file=sys.stderr)
    json.dump(results if args.variant == "all" else results[0], sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
