"""Scoring benchmark of pepnet (issue 2) against PyTorch on the same model and weights.

(Written for 0.1's OpenBLAS path; bench/bench_engine.py measures the batched oneDNN engine of
issue 8 and imports this module's PyTorch scorer.)

Run with Debian's /usr/bin/python3 (python3-torch, python3-numpy, python3-psycopg2) against a
running cluster where the pepnet extension is installed; the connection comes from the libpq
environment (PGHOST, PGPORT, PGUSER, PGDATABASE).  bench/run.sh does everything end to end.

    /usr/bin/python3 bench/bench_score.py [--out bench/out] [--quick] [--sgemm-bin PATH] [--work DIR]

What it measures, in one run (see BENCHMARKS.md, "Scoring (issue 2)"):
 1. pepnet_score candidates/s at N = 10, 100, 1000 per call: a bigint[][] parameter sent as an
    array literal, every row fetched by the client; plain and prepared (PREPARE/EXECUTE), plus
    breakdowns: the same call aggregated on the server (count(*), no rows to the client) and a
    trivial set-returning query of the same shape (same parameters, N rows of idx, score, scores).
 2. pepnet_predict rows/s over a 100,000-row table, sorted by user and shuffled; serial (no
    parallel workers: the fair single-core comparison) and with the cluster's parallel default.
 3. PyTorch (1 thread, eager, eval, no_grad): the reference module as is, and an efficient eager
    implementation (fused per-domain weights precomputed, PN folded, embeddings by index_select);
    N = 10, 100, 1000 per forward call and one candidate per call over the table's rows.
 4. The single-thread OpenBLAS sgemm rate (bench/sgemm_rate.c) and FLOPs per candidate.
 5. First-score latency of a fresh backend (connect, first pepnet_score of N = 100, second call).

It also builds and runs bench/core_score.c (pepnet's C core alone, compiled with the flags the
Makefile uses for src/core) to separate the model's time from the SQL overhead.  pepnet and PyTorch
are measured interleaved, in rounds, so that a busy shared host affects both alike.

Writes <out>/score.md (markdown tables, also printed) and <out>/score.json (every number).
"""
import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import psycopg2
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "test", "python"))
import pepnet_ref as ref  # noqa: E402

torch.set_num_threads(1)


def pin_openblas_threads():
    """torch.set_num_threads(1) does not reach OpenBLAS in Debian's python3-torch: its F.linear calls
    libblas.so.3 = OpenBLAS (pthreads), which keeps one thread per CPU.  Set OpenBLAS itself to one
    thread through the libraries loaded in this process (no environment variable is changed)."""
    import ctypes
    done = []
    with open("/proc/self/maps") as f:
        paths = sorted({l.split()[-1] for l in f if "blas" in l and l.split()[-1].startswith("/")})
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "openblas_set_num_threads"):
            lib.openblas_set_num_threads(1)
            done.append((path, lib.openblas_get_num_threads()))
    return done


OPENBLAS_PINNED = pin_openblas_threads()

MODEL_NAME = "bench"
SEED = 2
NS = (10, 100, 1000)
MASK64 = (1 << 64) - 1


# ----------------------------------------------------------------------------- helpers

def pct(xs, p):
    """p-th percentile (0..100) of a list, linear interpolation."""
    return float(np.percentile(np.asarray(xs, dtype=np.float64), p))


def lat_stats(secs):
    """Median / p10 / p90 of a list of seconds, in milliseconds."""
    return {"calls": len(secs), "median_ms": 1e3 * statistics.median(secs),
            "p10_ms": 1e3 * pct(secs, 10), "p90_ms": 1e3 * pct(secs, 90),
            "mean_ms": 1e3 * statistics.mean(secs)}


def arr_lit(a):
    """A bigint array literal '{...}' / '{{...},{...}}' of a 1-D or 2-D int64 array."""
    a = np.asarray(a, dtype=np.int64)
    if a.ndim == 1:
        return "{" + ",".join(map(str, a.tolist())) + "}"
    return "{" + ",".join("{" + ",".join(map(str, r)) + "}" for r in a.tolist()) + "}"


def pepnet_block():
    """Candidates per pn_score call in 0.1's pepnet_score (blocks of 256).  Since issue 8,
    pepnet_score runs the oneDNN engine (src/core/engine.c, bench/bench_engine.py) and pn_score
    serves pepnet_predict only; this benchmark's core figures describe the 0.1 path."""
    return 256


def flops_per_candidate(c):
    """FLOPs (2 x multiply-adds) of the matrix products of one candidate in pepnet's fused
    inference (src/core/infer.c pn_score): EPNet, tower layers (PN folded), PPNet gates (the
    x part; the persona part is per request), output layer, aux (the x0 part).  Elementwise work
    (relu, sigmoid, products, bias) is not counted."""
    k, n0, T, H = c.emb_dim, c.n0, c.T, c.hidden
    macs = 0
    if c.epnet:
        macs += c.epnet_hidden * n0 + n0 * c.epnet_hidden
    prev = n0
    for h in H:
        macs += T * h * prev
        prev = h
    macs += T * H[-1]
    if c.ppnet:
        for h in H:
            macs += T * h * n0 + (T * h) ** 2
    if c.aux:
        macs += c.aux_hidden * n0 + T * c.aux_hidden
    return 2 * macs


def source_info():
    """The commit measured, and whether the extension's sources differ from it."""
    def git(*a):
        try:
            return subprocess.run(["git"] + list(a), cwd=ROOT, capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    dirty = git("status", "--porcelain", "--", "src", "sql", "Makefile", "pepnet.control")
    return {"commit": git("rev-parse", "--short", "HEAD"), "subject": git("log", "-1", "--format=%s"),
            "dirty": bool(dirty), "dirty_files": dirty.splitlines()}


def machine_info():
    """nproc, CPU model, OpenBLAS environment, versions."""
    model = "?"
    flags = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    fam = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith(("CPU family", "Model:", "Vendor ID")):
                fam += line.split(":", 1)[1].strip() + " "
    except OSError:
        pass
    simd = [f for f in ("avx2", "fma", "avx512f") if f in flags]
    return {"nproc": os.cpu_count(), "cpu": model, "cpu_id": fam.strip(), "simd": simd,
            "kernel": platform.release(), "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "env": {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS_")}}


# ----------------------------------------------------------------------------- efficient PyTorch

class FastPepNet:
    """Eager PyTorch inference of docs/model.md with the precomputation docs/model.md allows (the same that
    pepnet does): per domain the STAR-fused tower weights, PN folded into the first layer of every
    task (stacked into one matrix), the dv parts of the first EPNet/aux layers as biases; per
    request (persona) the persona part of the PPNet gates.  Embeddings: one concatenated table,
    ids hashed vectorised in numpy, one index_select.  Every product is F.linear (addmm, BLAS)."""

    def __init__(self, model):
        c = self.c = model.cfg
        t = {n: v.detach().to(torch.float32).contiguous() for n, v in model.tensors().items()}
        k, n0, T, L = c.emb_dim, c.n0, c.T, len(c.hidden)
        self.k, self.n0, self.T, self.L, self.gamma = k, n0, T, L, c.gamma
        self.F, self.P = len(c.features), len(c.persona)

        def table(prefix, fields):
            tabs = [t["%s.%d" % (prefix, i)] for i in range(len(fields))]
            offs = np.cumsum([0] + [f["buckets"] for f in fields])[:-1].astype(np.int64)
            mult = np.array([(ref.GOLDEN * (i + 1)) & MASK64 for i in range(len(fields))], dtype=np.uint64)
            buck = np.array([f["buckets"] for f in fields], dtype=np.uint64)
            hashed = np.array([f["hash"] for f in fields], dtype=bool)
            big = torch.cat(tabs, 0).contiguous() if tabs else torch.zeros(0, k)
            return big, offs, mult, buck, hashed

        self.femb, self.foff, self.fmult, self.fbuck, self.fhash = table("emb.feature", c.features)
        self.pemb, self.poff, self.pmult, self.pbuck, self.phash = table("emb.persona", c.persona)
        self.t = t
        if c.epnet:
            self.ep_w1x = t["epnet.w1"][:, k:].contiguous()
            self.ep_w2, self.ep_b2 = t["epnet.w2"], t["epnet.b2"]
        if c.ppnet:
            pk = self.P * k
            self.pp = [(t["ppnet.%d.w1" % l][:, :pk].contiguous(), t["ppnet.%d.w1" % l][:, pk:].contiguous(),
                        t["ppnet.%d.b1" % l], t["ppnet.%d.w2" % l], t["ppnet.%d.b2" % l]) for l in range(1, L + 1)]
        if c.aux:
            self.aux_w1x = t["aux.w1"][:, k:].contiguous()
            self.aux_w2, self.aux_b2 = t["aux.w2"], t["aux.b2"]
        self.dom = [self._domain(d) for d in range(c.domains)]
        self._pkey, self._pgb = None, None

    def _domain(self, d):
        """Fused per-domain weights (float64 arithmetic, stored float32), as pn_domain_build."""
        c, t, k, n0, T = self.c, self.t, self.k, self.n0, self.T
        dv = t["emb.domain"][d].double()
        out = {}
        if c.epnet:
            out["ep_b"] = (t["epnet.w1"][:, :k].double() @ dv + t["epnet.b1"].double()).float()
        if c.aux:
            out["aux_b"] = (t["aux.w1"][:, :k].double() @ dv + t["aux.b1"].double()).float()
        if c.pn:
            scale = t["pn.gamma"].double() * t["pn.domain_gamma"][d].double() / torch.sqrt(
                t["pn.running_var"][d].double() + ref.PN_EPS)
            shift = t["pn.beta"].double() + t["pn.domain_beta"][d].double() - scale * t["pn.running_mean"][d].double()
        else:
            scale, shift = torch.ones(n0, dtype=torch.float64), torch.zeros(n0, dtype=torch.float64)
        sizes = [n0] + c.hidden + [1]
        w1, b1, ws, bs = [], [], [], []
        for task in range(T):
            lw, lb = [], []
            for l in range(1, len(sizes)):
                W = t["tower.%d.%d.w" % (task, l)].double()
                B = t["tower.%d.%d.b" % (task, l)].double()
                if c.star:
                    W = W * t["tower.%d.%d.domain_w" % (task, l)][d].double()
                    B = B + t["tower.%d.%d.domain_b" % (task, l)][d].double()
                if l == 1:
                    w1.append(W * scale.unsqueeze(0))
                    b1.append(B + W @ shift)
                else:
                    lw.append(W.float().contiguous())
                    lb.append(B.float().contiguous())
            ws.append(lw)
            bs.append(lb)
        out["w1"] = torch.cat(w1, 0).float().contiguous()
        out["b1"] = torch.cat(b1, 0).float().contiguous()
        out["w"], out["b"] = ws, bs
        return out

    @staticmethod
    def _slots(ids, mult, buck, hashed, off):
        """Row indices into a concatenated table of raw ids [n, F] (docs/model.md hashing)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with np.errstate(over="ignore"):
            z = ids.view(np.uint64) + mult
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
            s = (z % buck).astype(np.int64)
        if not hashed.all():
            raw = ids[..., ~hashed]
            if raw.size and (raw.min() < 0 or (raw >= buck[~hashed].astype(np.int64)).any()):
                raise ValueError("id out of range for an unhashed field")
            s[..., ~hashed] = raw
        return s + off

    def _persona(self, persona):
        """Persona part of every PPNet gate's first layer, cached while the persona repeats."""
        key = tuple(int(v) for v in persona)
        if key != self._pkey:
            rows = self._slots(np.asarray(persona, dtype=np.int64).reshape(1, -1), self.pmult, self.pbuck,
                               self.phash, self.poff)
            pv = self.pemb.index_select(0, torch.from_numpy(rows.reshape(-1))).reshape(-1)
            self._pgb = [F.linear(pv, w1p, b1) for (w1p, _, b1, _, _) in self.pp] if self.c.ppnet else None
            self._pkey = key
        return self._pgb

    def predict(self, domain, persona, features):
        """Probabilities [n, T] of n candidates of one request (one domain, one persona)."""
        c, g = self.c, self.gamma
        feats = np.asarray(features, dtype=np.int64).reshape(-1, self.F)
        n = feats.shape[0]
        rows = self._slots(feats, self.fmult, self.fbuck, self.fhash, self.foff)
        x0 = self.femb.index_select(0, torch.from_numpy(rows.reshape(-1))).view(n, self.n0)
        dc = self.dom[int(domain)]
        if c.epnet:
            eh = torch.relu(F.linear(x0, self.ep_w1x, dc["ep_b"]))
            x = torch.sigmoid(F.linear(eh, self.ep_w2, self.ep_b2)).mul_(g).mul_(x0)
        else:
            x = x0
        gb = self._persona(persona) if c.ppnet else None
        a = torch.relu(F.linear(x, dc["w1"], dc["b1"]))
        T = self.T
        for l in range(self.L):
            if l > 0:
                hp = c.hidden[l - 1]
                a = torch.relu(torch.cat([F.linear(a[:, i * hp:(i + 1) * hp], dc["w"][i][l - 1], dc["b"][i][l - 1])
                                          for i in range(T)], 1))
            if c.ppnet:
                _, w1x, _, w2, b2 = self.pp[l]
                gate = torch.sigmoid(F.linear(torch.relu(F.linear(x, w1x, gb[l])), w2, b2)).mul_(g)
                a = a * gate
        hL = c.hidden[-1]
        logit = torch.cat([F.linear(a[:, i * hL:(i + 1) * hL], dc["w"][i][-1], dc["b"][i][-1]) for i in range(T)], 1)
        if c.aux:
            logit = logit + F.linear(torch.relu(F.linear(x0, self.aux_w1x, dc["aux_b"])), self.aux_w2, self.aux_b2)
        return torch.sigmoid(logit)


# ----------------------------------------------------------------------------- data

def make_requests(rng, c, count, n):
    """`count` requests of n candidates: (domain, persona [P], features [n, F])."""
    reqs = []
    for r in range(count):
        persona = np.array([rng.integers(0, 10**6), rng.integers(0, 8), rng.integers(0, 100)][:len(c.persona)],
                           dtype=np.int64)
        feats = np.stack([rng.integers(0, 10 * f["buckets"], n) for f in c.features], 1).astype(np.int64)
        reqs.append((r % c.domains, persona, feats))
    return reqs


def make_table_rows(rng, c, users, per_user):
    """Rows of the pepnet_predict table, sorted by user: (uid, domain, persona, features)."""
    out = []
    for u in range(users):
        persona = np.array([10007 * u + 13, rng.integers(0, 8), rng.integers(0, 100)][:len(c.persona)],
                           dtype=np.int64)
        d = int(rng.integers(0, c.domains))
        feats = np.stack([rng.integers(0, 10 * f["buckets"], per_user) for f in c.features], 1).astype(np.int64)
        for i in range(per_user):
            out.append((u, d, persona, feats[i]))
    return out


# ----------------------------------------------------------------------------- measurements

def timed(fn, calls, warm=5):
    """Per-call seconds of fn(i) for i in range(calls), after `warm` unmeasured calls."""
    for i in range(warm):
        fn(i)
    out = []
    for i in range(calls):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def sched(pid):
    """(on-CPU ns, run-queue wait ns) of a process from /proc/<pid>/schedstat, or None (the server
    on another host, or no schedstat): CPU time is robust when the host is shared, wall time is not."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            cpu, wait = f.read().split()[:2]
        return int(cpu), int(wait)
    except (OSError, ValueError):
        return None


class CpuMeter:
    """Accumulates, per kind, calls and the CPU time of the server backend and of this process."""

    def __init__(self, pid):
        self.pid = pid
        self.acc = {}

    def measure(self, kind, calls, fn):
        """Run fn(); charge its backend CPU, backend run-queue wait and client CPU to `kind`."""
        s0, c0 = sched(self.pid), time.process_time_ns()
        out = fn()
        s1, c1 = sched(self.pid), time.process_time_ns()
        a = self.acc.setdefault(kind, {"calls": 0, "server_cpu_ns": 0, "server_wait_ns": 0, "client_cpu_ns": 0,
                                       "server_known": s0 is not None and s1 is not None})
        a["calls"] += calls
        a["client_cpu_ns"] += c1 - c0
        if a["server_known"] and s0 and s1:
            a["server_cpu_ns"] += s1[0] - s0[0]
            a["server_wait_ns"] += s1[1] - s0[1]
        return out

    def per_call(self, kind):
        """{server_cpu_ms, server_wait_ms, client_cpu_ms} per call (server ones None if unknown)."""
        a = self.acc[kind]
        k = 1e-6 / max(1, a["calls"])
        return {"server_cpu_ms": a["server_cpu_ns"] * k if a["server_known"] else None,
                "server_wait_ms": a["server_wait_ns"] * k if a["server_known"] else None,
                "client_cpu_ms": a["client_cpu_ns"] * k}


def prepare_statements(cur, mref):
    """The prepared statements of part 1 (pepnet_score, its server-only form, trivial SRFs)."""
    cur.execute("DEALLOCATE ALL")
    cur.execute("PREPARE bscore(int, bigint[], bigint[]) AS "
                "SELECT idx, score, scores FROM pepnet_score('%s', $1, $2, $3)" % mref)
    cur.execute("PREPARE bcount(int, bigint[], bigint[]) AS "
                "SELECT count(*), sum(score) FROM pepnet_score('%s', $1, $2, $3)" % mref)
    # the same parameters and result shape without the model: parse the features, emit N rows
    cur.execute("PREPARE btrivial(int, bigint[], bigint[]) AS "
                "SELECT g.i AS idx, 0.5::float8 AS score, '{0.5,0.25}'::float8[] AS scores "
                "FROM generate_series(1, array_length($3, 1)) g(i)")
    cur.execute("PREPARE btrivcount(int, bigint[], bigint[]) AS "
                "SELECT count(*) FROM generate_series(1, array_length($3, 1)) g(i)")


def bench_score_vs_torch(cur, mref, model, fast, reqs_by_n, calls_by_n, ref_calls_by_n, rounds, log):
    """Part 1 and the N-per-call half of part 3, interleaved: for each N, `rounds` rounds, each
    running a slice of the calls of every kind in turn, so that pepnet and PyTorch see the same
    machine (this host may be shared).  Kinds: pepnet plain / prepared (rows fetched by the
    client), server-only (count(*)), trivial SRF (rows fetched) and its server-only form, PyTorch
    efficient.  The PyTorch reference module is slow: measured after, with fewer calls."""
    prepare_statements(cur, mref)
    plain_sql = "SELECT idx, score, scores FROM pepnet_score('%s', %%s, %%s::bigint[], %%s::bigint[])" % mref
    sqls = {"plain": plain_sql, "prepared": "EXECUTE bscore(%s, %s, %s)", "server_only": "EXECUTE bcount(%s, %s, %s)",
            "trivial_srf": "EXECUTE btrivial(%s, %s, %s)", "trivial_server_only": "EXECUTE btrivcount(%s, %s, %s)"}
    score, torch_res = {}, {"efficient": {}, "reference": {}}
    model.eval()
    for n in NS:
        reqs = reqs_by_n[n]
        lits = [(d, arr_lit(p), arr_lit(f)) for d, p, f in reqs]
        # warm: every domain's fused matrices built, every request seen once, statements planned
        for d, p, f in lits:
            for sql in sqls.values():
                cur.execute(sql, (d, p, f))
                rows = cur.fetchall()
            cur.execute("EXECUTE bscore(%s, %s, %s)", (d, p, f))
            rows = cur.fetchall()
            assert len(rows) == n and rows[0][0] == 1
        secs = {k: [] for k in list(sqls) + ["torch"]}
        per = max(1, calls_by_n[n] // rounds)
        ctr = [0]
        cur.execute("SELECT pg_backend_pid()")
        meter = CpuMeter(cur.fetchone()[0])

        def sql_fn(sql):
            def fn(i):
                cur.execute(sql, lits[(ctr[0] + i) % len(lits)])
                cur.fetchall()
            return fn

        def torch_fn(i):
            d, p, f = reqs[(ctr[0] + i) % len(reqs)]
            fast.predict(d, p, f)

        with torch.no_grad():
            for _ in range(rounds):
                for k, sql in sqls.items():
                    sql_fn(sql)(-1)
                    secs[k] += meter.measure(k, per, lambda: timed(sql_fn(sql), per, warm=0))
                torch_fn(-1)
                secs["torch"] += meter.measure("torch", per, lambda: timed(torch_fn, per, warm=0))
                ctr[0] += per
            r = {k: lat_stats(v) for k, v in secs.items() if k != "torch"}
            for k, v in r.items():
                v["cand_per_s"] = n / statistics.median(secs[k])
                v.update(meter.per_call(k))
                if v["server_cpu_ms"] is not None:
                    # the candidates/s one core sustains: server plus client CPU per call
                    v["cpu_cand_per_s"] = n / ((v["server_cpu_ms"] + v["client_cpu_ms"]) / 1e3)
                    v["server_cpu_cand_per_s"] = n / (v["server_cpu_ms"] / 1e3)
            score[n] = r
            te = lat_stats(secs["torch"])
            te["cand_per_s"] = n / statistics.median(secs["torch"])
            te.update(meter.per_call("torch"))
            te["cpu_cand_per_s"] = n / (te["client_cpu_ms"] / 1e3)
            torch_res["efficient"][n] = te

            def ref_fn(i):
                d, p, f = reqs[i % len(reqs)]
                model.forward(np.full(n, d), np.tile(p, (n, 1)), f)

            s = timed(ref_fn, ref_calls_by_n[n], warm=1)
            torch_res["reference"][n] = lat_stats(s)
            torch_res["reference"][n]["cand_per_s"] = n / statistics.median(s)
        log("N=%d: pepnet prepared %.3f ms (p10 %.3f, p90 %.3f) = %.0f cand/s; plain %.3f ms; server-only %.3f ms; "
            "trivial SRF %.3f ms | torch efficient %.3f ms (p10 %.3f, p90 %.3f) = %.0f cand/s; reference %.3f ms" % (
                n, r["prepared"]["median_ms"], r["prepared"]["p10_ms"], r["prepared"]["p90_ms"],
                r["prepared"]["cand_per_s"], r["plain"]["median_ms"], r["server_only"]["median_ms"],
                r["trivial_srf"]["median_ms"], te["median_ms"], te["p10_ms"], te["p90_ms"], te["cand_per_s"],
                torch_res["reference"][n]["median_ms"]))
    return score, torch_res


def load_table(cur, rows, shuffled_seed):
    """bench_cands (sorted by user) and bench_cands_shuffled (same rows, random order)."""
    import io
    cur.execute("DROP TABLE IF EXISTS bench_cands, bench_cands_shuffled")
    perm = np.random.default_rng(shuffled_seed).permutation(len(rows))
    for table, order in (("bench_cands", range(len(rows))), ("bench_cands_shuffled", perm)):
        cur.execute("CREATE TABLE %s (id int, uid int, domain int, persona bigint[], features bigint[])" % table)
        buf = io.StringIO()
        for i in order:
            u, d, p, f = rows[i]
            buf.write("%d\t%d\t%d\t%s\t%s\n" % (i, u, d, arr_lit(p), arr_lit(f)))
        buf.seek(0)
        cur.copy_expert("COPY %s FROM STDIN" % table, buf)
        cur.execute("VACUUM ANALYZE %s" % table)
    return perm


def bench_predict_vs_torch(cur, mref, model, fast, rows, perm, runs, one_rows, log):
    """Part 2 and the one-per-call half of part 3, interleaved in `runs` rounds: each round runs
    sum(pepnet_predict(...)) serially over both tables and PyTorch efficient one candidate per
    call over the first `one_rows` rows of both orders.  Then, not interleaved: pepnet_predict
    with the cluster's parallel setting, a scan baseline, and the PyTorch reference module."""
    nrows = len(rows)
    cur.execute("SHOW max_parallel_workers_per_gather")
    default_workers = cur.fetchone()[0]
    tables = {"bench_cands": np.arange(nrows), "bench_cands_shuffled": perm}
    q = "SELECT sum(pepnet_predict('%s', domain, persona, features)) FROM %%s" % mref
    res = {t: {"serial": [], "parallel": []} for t in tables}
    one = {t: [] for t in tables}

    def torch_one(order, m):
        fast._pkey = None
        t0 = time.perf_counter()
        for i in order[:m]:
            u, d, p, f = rows[i]
            fast.predict(d, p, f)
        return time.perf_counter() - t0

    cur.execute("SET max_parallel_workers_per_gather = 0")
    cur.execute("SELECT pg_backend_pid()")
    meter = CpuMeter(cur.fetchone()[0])

    def run_q(t):
        t0 = time.perf_counter()
        cur.execute(q % t)
        cur.fetchone()
        return time.perf_counter() - t0

    with torch.no_grad():
        for t, order in tables.items():  # warm
            run_q(t)
            torch_one(order, 200)
        for _ in range(runs):
            for t, order in tables.items():
                res[t]["serial"].append(meter.measure(t, 1, lambda: run_q(t)))
                one[t].append(meter.measure("torch " + t, 1, lambda: torch_one(order, one_rows)))
    out = {}
    for t, order in tables.items():
        r = {"serial": lat_stats(res[t]["serial"])}
        r["serial"]["rows_per_s"] = nrows / statistics.median(res[t]["serial"])
        r["serial"]["workers_planned"] = 0
        r["serial"].update(meter.per_call(t))
        if r["serial"]["server_cpu_ms"] is not None:
            r["serial"]["cpu_rows_per_s"] = nrows / (r["serial"]["server_cpu_ms"] / 1e3)
        tcpu = meter.per_call("torch " + t)["client_cpu_ms"]
        r["torch_efficient_one"] = {"rows": one_rows, "runs": runs, "seconds": one[t],
                                    "cand_per_s": one_rows / statistics.median(one[t]),
                                    "us_per_cand": 1e6 * statistics.median(one[t]) / one_rows,
                                    "cpu_ms_per_run": tcpu, "cpu_cand_per_s": one_rows / (tcpu / 1e3)}
        # a baseline that reads the same columns (detoasts both arrays) without the model
        qb = "SELECT sum(domain + cardinality(persona) + cardinality(features)) FROM %s" % t
        secs = timed(lambda i: (cur.execute(qb), cur.fetchone()), 3, warm=1)
        r["scan_baseline"] = lat_stats(secs)
        r["scan_baseline"]["rows_per_s"] = nrows / statistics.median(secs)
        out[t] = r
    cur.execute("SET max_parallel_workers_per_gather = %s" % default_workers)
    for t in tables:
        cur.execute("EXPLAIN " + q % t)
        plan = "\n".join(row[0] for row in cur.fetchall())
        secs = timed(lambda i: (cur.execute(q % t), cur.fetchone()), max(1, runs - 1), warm=0)
        out[t]["parallel"] = lat_stats(secs)
        out[t]["parallel"]["rows_per_s"] = nrows / statistics.median(secs)
        out[t]["parallel"]["workers_planned"] = int(plan.split("Workers Planned:")[1].split()[0]) \
            if "Workers Planned:" in plan else 0
    with torch.no_grad():
        for t, order in tables.items():
            m = max(200, one_rows // 20)
            t0 = time.perf_counter()
            for i in order[:m]:
                u, d, p, f = rows[i]
                model.forward(np.array([d]), p.reshape(1, -1), f.reshape(1, -1))
            secs = time.perf_counter() - t0
            out[t]["torch_reference_one"] = {"rows": m, "seconds": secs, "cand_per_s": m / secs,
                                             "us_per_cand": 1e6 * secs / m}
    for t in tables:
        r = out[t]
        log("%s: pepnet_predict serial %.0f rows/s (median of %d runs, p10-p90 %.2f-%.2f s), parallel (%d workers) "
            "%.0f rows/s; scan baseline %.0f rows/s | torch efficient one per call %.0f cand/s, reference %.0f" % (
                t, r["serial"]["rows_per_s"], runs, r["serial"]["p10_ms"] / 1e3, r["serial"]["p90_ms"] / 1e3,
                r["parallel"]["workers_planned"], r["parallel"]["rows_per_s"], r["scan_baseline"]["rows_per_s"],
                r["torch_efficient_one"]["cand_per_s"], r["torch_reference_one"]["cand_per_s"]))
    return out


def bench_first_score(mref, req, conns, log):
    """Fresh backends: connect, first pepnet_score of N = 100 (model load + fuse), second call;
    and, in other fresh backends, the library load and a model reload timed apart."""
    d, p, f = req
    lit = (d, arr_lit(p), arr_lit(f))
    sql = "SELECT idx, score, scores FROM pepnet_score('%s', %%s, %%s::bigint[], %%s::bigint[])" % mref
    triv = ("SELECT g.i, 0.5::float8, '{0.5,0.25}'::float8[] FROM generate_series(1, array_length(%s::bigint[], 1)) g(i)"
            " WHERE %s IS NOT NULL AND %s::bigint[] IS NOT NULL")
    out = {"connect": [], "first": [], "second": [], "third_other_domain": [], "trivial_first": [],
           "load_library": [], "after_load_first": [], "reload_after_cache_clear": [], "detoast_first": [],
           "first_server_cpu": [], "first_server_wait": [],
           "detoast_again": []}
    for _ in range(conns):
        # A: connect, first score, second score, then a domain not seen yet in this backend
        t0 = time.perf_counter()
        conn = psycopg2.connect("")
        out["connect"].append(time.perf_counter() - t0)
        conn.autocommit = True
        cur = conn.cursor()
        s0 = sched(conn.get_backend_pid())
        t1 = time.perf_counter()
        cur.execute(sql, lit)
        cur.fetchall()
        t2 = time.perf_counter()
        s1 = sched(conn.get_backend_pid())
        if s0 and s1:
            out["first_server_cpu"].append((s1[0] - s0[0]) / 1e9)
            out["first_server_wait"].append((s1[1] - s0[1]) / 1e9)
        cur.execute(sql, lit)
        cur.fetchall()
        t3 = time.perf_counter()
        cur.execute(sql, ((d + 1) % 4, lit[1], lit[2]))
        cur.fetchall()
        t4 = time.perf_counter()
        out["first"].append(t2 - t1)
        out["second"].append(t3 - t2)
        out["third_other_domain"].append(t4 - t3)
        # reload the model in the same (warm) backend: pepnet_cache_clear() then score
        cur.execute("SELECT pepnet_cache_clear()")
        t5 = time.perf_counter()
        cur.execute(sql, lit)
        cur.fetchall()
        out["reload_after_cache_clear"].append(time.perf_counter() - t5)
        conn.close()
        # B: a fresh backend's first statement of the same shape without pepnet, then LOAD, then score
        conn = psycopg2.connect("")
        conn.autocommit = True
        cur = conn.cursor()
        t0 = time.perf_counter()
        cur.execute(triv, (lit[2], lit[1], lit[2]))
        cur.fetchall()
        t1 = time.perf_counter()
        cur.execute("LOAD 'pepnet'")
        t2 = time.perf_counter()
        cur.execute(sql, lit)
        cur.fetchall()
        t3 = time.perf_counter()
        out["trivial_first"].append(t1 - t0)
        out["load_library"].append(t2 - t1)
        out["after_load_first"].append(t3 - t2)
        conn.close()
        # C: a fresh backend that only detoasts the weights (get_byte reads the whole bytea)
        conn = psycopg2.connect("")
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute(triv, (lit[2], lit[1], lit[2]))
        cur.fetchall()
        t0 = time.perf_counter()
        cur.execute("SELECT get_byte(weights, 0) FROM pepnet.models WHERE name = %s AND version = %s",
                    tuple(mref.split("@")))
        cur.fetchall()
        t1 = time.perf_counter()
        cur.execute("SELECT get_byte(weights, 0) FROM pepnet.models WHERE name = %s AND version = %s",
                    tuple(mref.split("@")))
        cur.fetchall()
        out["detoast_first"].append(t1 - t0)
        out["detoast_again"].append(time.perf_counter() - t1)
        conn.close()
    res = {k: lat_stats(v) for k, v in out.items() if v}
    log("first score of a fresh backend: %.2f ms (p10 %.2f, p90 %.2f), second %.2f ms; connect %.2f ms; "
        "LOAD pepnet %.2f ms; model load+fuse after cache clear %.2f ms" % (
            res["first"]["median_ms"], res["first"]["p10_ms"], res["first"]["p90_ms"], res["second"]["median_ms"],
            res["connect"]["median_ms"], res["load_library"]["median_ms"],
            res["reload_after_cache_clear"]["median_ms"]))
    return res


def run_sgemm(binary, c, block, log, env=None, label="as configured"):
    """Run bench/sgemm_rate (built here when no binary is given); parsed JSON lines."""
    if binary is None:
        binary = os.path.join(tempfile.mkdtemp(prefix="pepnet-sgemm-"), "sgemm_rate")
        subprocess.run(["cc", "-O2", os.path.join(HERE, "sgemm_rate.c"), "-lopenblas", "-o", binary], check=True)
    H = c.hidden + [c.hidden[-1]] if len(c.hidden) == 1 else c.hidden
    args = [binary, str(c.n0), str(c.epnet_hidden), str(c.T), str(H[0]), str(H[1]),
            str(len(c.persona) * c.emb_dim), str(c.aux_hidden), str(block)] + [str(n) for n in (1,) + NS]
    out = subprocess.run(args, capture_output=True, text=True, check=True, env=env).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    sq = [l for l in lines if l.get("name") == "square"][0]
    log("sgemm (%s): square %dx%d %.1f GFLOP/s; pepnet's GEMMs alone: %s" % (
        label, sq["m"], sq["m"], sq["gflops"],
        ", ".join("N=%d %.1f GFLOP/s" % (l["N"], l["gflops"]) for l in lines if l["kind"] == "model")))
    return lines


def openblas_core(env=None):
    """The OpenBLAS core name libopenblas picks under an environment (openblas_get_corename)."""
    src = "char *openblas_get_corename(void);\n#include <stdio.h>\nint main(void){puts(openblas_get_corename());return 0;}\n"
    d = tempfile.mkdtemp(prefix="pepnet-obcore-")
    with open(os.path.join(d, "c.c"), "w") as f:
        f.write(src)
    try:
        subprocess.run(["cc", os.path.join(d, "c.c"), "-lopenblas", "-o", os.path.join(d, "c")], check=True,
                       capture_output=True)
        return subprocess.run([os.path.join(d, "c")], capture_output=True, text=True, env=env).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def core_cflags():
    """The flags the extension's Makefile compiles the numeric core with (from `make -n`), so that
    bench/core_score.c measures the same machine code as the installed extension."""
    out = subprocess.run(["make", "-s", "-n", "-B", "src/core/infer.o"], cwd=ROOT, capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        words = line.split()
        if words and "src/core/infer.c" in words and "-c" in words:
            flags, skip = [], False
            for w in words[1:]:
                if skip:
                    skip = False
                elif w == "-o":
                    skip = True
                elif w not in ("-c", "src/core/infer.c"):
                    flags.append(w)
            return flags
    # fallback: PostgreSQL's CFLAGS (what PGXS uses without Makefile overrides)
    return subprocess.run(["pg_config", "--cflags"], capture_output=True, text=True, check=True).stdout.split() + [
        "-Isrc/core"]


def run_core(cfg_path, blob_path, block, work, log):
    """Build bench/core_score.c with the extension's core flags and run it on the bench model:
    pn_score alone, without PostgreSQL."""
    flags = core_cflags()
    binary = os.path.join(work, "core_score")
    srcs = sorted(os.path.join("src", "core", f) for f in os.listdir(os.path.join(ROOT, "src", "core"))
                  if f.endswith(".c"))
    subprocess.run(["cc"] + flags + ["-Wno-declaration-after-statement", "-Wno-missing-prototypes", "-o", binary,
                                     os.path.join("bench", "core_score.c")] + srcs + ["-lopenblas", "-lm"],
                   cwd=ROOT, check=True)
    out = subprocess.run([binary, cfg_path, blob_path, str(block)] + [str(n) for n in (1,) + NS],
                         capture_output=True, text=True, check=True).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    res = {"cflags": " ".join(flags)}
    for l in lines:
        if l["kind"] == "score":
            res[str(l["N"])] = l
        else:
            res[l["kind"]] = l
    log("C core alone: %s; load %.1f ms first, %.1f ms again; domain build %.2f ms; persona build %.1f us" % (
        ", ".join("N=%d %.3f ms" % (n, res[str(n)]["median_us"] / 1e3) for n in (1,) + NS),
        res["load"]["first_ms"], res["load"]["median_ms"], res["domain_build"]["median_ms"],
        res["persona_build"]["median_us"]))
    return res


# ----------------------------------------------------------------------------- report

def fmt(v, digits=0):
    """Thousands-separated number."""
    return ("{:,.%df}" % digits).format(v)


def report(R):
    """The markdown of score.md."""
    m = R["machine"]
    fl = R["flops_per_candidate"]
    sg = R["sgemm"]
    square = [l for l in sg if l.get("name") == "square"][0]["gflops"]
    gemm_model = {l["N"]: l for l in sg if l["kind"] == "model"}
    S, P, TT, FS = R["score"], R["predict"], R["torch"], R["first_score"]
    L = []
    L.append("# pepnet scoring benchmark (issue 2)\n")
    L.append("Machine: %d CPUs, %s (%s; %s), kernel %s; torch %s, numpy %s; OpenBLAS env %s.  "
             "Model: bench/bench-config.json (%d domains, %d features, %d persona fields, emb_dim %d, "
             "hidden %s, tasks %s, all parts on), weights `init_random(%d)`, %s FLOPs per candidate.  "
             "Run: %s.\n" % (
                 m["nproc"], m["cpu"], m["cpu_id"], "/".join(m["simd"]), m["kernel"], m["torch"], m["numpy"],
                 " ".join("%s=%s" % kv for kv in sorted(m["env"].items())) or "none", R["config"]["domains"],
                 len(R["config"]["features"]), len(R["config"]["persona"]), R["emb_dim"], R["hidden"],
                 R["tasks"], SEED, fmt(fl), R["started"]))
    L.append("PyTorch runs on one thread: torch.set_num_threads(1), and OpenBLAS (which Debian's torch calls for "
             "F.linear) set to 1 thread with openblas_set_num_threads in the benchmark process (%s).\n" % (
                 "done" if R["openblas_pinned"] else "NOT done: torch may have used several cores"))
    L.append("Load average (1 min) at start / end of the run: %.2f / %.2f (a busy shared host makes every "
             "number noisier; the ratios are measured interleaved).\n" % (R["loadavg_start"], R["loadavg_end"]))
    src = R["source"]
    L.append("Extension measured: commit %s (%s)%s, as built and installed by bench/run.sh; %s.\n" % (
        src["commit"], src["subject"][:100], " with uncommitted changes to %s" % ", ".join(
            f.split()[-1] for f in src["dirty_files"]) if src["dirty"] else "", R["postgres"].split(" on ")[0]))
    L.append("Parity check before timing: pepnet_score vs the PyTorch reference (float64), max |diff| %.2e; "
             "efficient PyTorch vs reference %.2e.\n" % (R["parity"]["pepnet_vs_ref"], R["parity"]["fast_vs_ref"]))

    L.append("## 1. pepnet_score vs PyTorch, candidates per call N\n")
    L.append("Latencies are per call, milliseconds, median (p10-p90); candidates/s = N / median latency; "
             "calls per N: %s (64 different requests, 4 domains, warm caches), pepnet and PyTorch interleaved in "
             "%d rounds.  pepnet: the bigint[][] features and the persona as array-literal parameters, all rows "
             "fetched by psycopg2; prepared = PREPARE/EXECUTE.  PyTorch: 1 thread, eager, eval, no_grad, hashing "
             "included; reference = pepnet_ref.StarPepNet as is (%s calls).\n" % (
                 " / ".join(str(R["calls_by_n"][str(n)]) for n in NS), R["rounds"],
                 " / ".join(str(R["ref_calls_by_n"][str(n)]) for n in NS)))
    L.append("| N | pepnet prepared | cand/s | pepnet plain | cand/s | torch efficient | cand/s | "
             "torch reference | cand/s | pepnet / torch eff. |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for n in NS:
        s, te, tr = S[str(n)], TT["efficient"][str(n)], TT["reference"][str(n)]
        L.append("| %d | %.3f (%.3f-%.3f) | %s | %.3f (%.3f-%.3f) | %s | %.3f (%.3f-%.3f) | %s | %.2f | %s | %.2fx |" % (
            n, s["prepared"]["median_ms"], s["prepared"]["p10_ms"], s["prepared"]["p90_ms"],
            fmt(s["prepared"]["cand_per_s"]), s["plain"]["median_ms"], s["plain"]["p10_ms"], s["plain"]["p90_ms"],
            fmt(s["plain"]["cand_per_s"]), te["median_ms"], te["p10_ms"], te["p90_ms"], fmt(te["cand_per_s"]),
            tr["median_ms"], fmt(tr["cand_per_s"]), s["prepared"]["cand_per_s"] / te["cand_per_s"]))
    L.append("")
    if S[str(NS[0])]["prepared"].get("server_cpu_ms") is not None:
        L.append("CPU time per call (from /proc/<pid>/schedstat of the backend and the client process's CPU clock; "
                 "robust when the host is shared, unlike wall time).  Per core = N / (server + client CPU).\n")
        L.append("| N | pepnet server CPU ms | client CPU ms | backend run-queue wait ms | pepnet cand/s per core "
                 "| server-only cand/s per core | torch CPU ms | torch cand/s per core | pepnet / torch (CPU) |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for n in NS:
            p, te = S[str(n)]["prepared"], TT["efficient"][str(n)]
            L.append("| %d | %.3f | %.3f | %.3f | %s | %s | %.3f | %s | %.2fx |" % (
                n, p["server_cpu_ms"], p["client_cpu_ms"], p["server_wait_ms"], fmt(p["cpu_cand_per_s"]),
                fmt(p["server_cpu_cand_per_s"]), te["client_cpu_ms"], fmt(te["cpu_cand_per_s"]),
                p["cpu_cand_per_s"] / te["cpu_cand_per_s"]))
        L.append("")
    L.append("Where pepnet_score's time goes (prepared, medians, ms per call):\n")
    C = R["core"]
    L.append("| N | full call, rows to client | same call, count(*) on the server | trivial SRF of the same "
             "shape, rows to client | trivial, count(*) on server | pn_score alone (C core, bench/core_score.c, CPU time) "
             "| BLAS calls of pn_score alone (sgemm_rate, CPU time) "
             "| achieved GFLOP/s (full call) | % of square sgemm | % of pn_score's BLAS-only rate |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for n in NS:
        s = S[str(n)]
        ach = s["prepared"]["cand_per_s"] * fl / 1e9
        L.append("| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.1f | %.0f%% | %.0f%% |" % (
            n, s["prepared"]["median_ms"], s["server_only"]["median_ms"], s["trivial_srf"]["median_ms"],
            s["trivial_server_only"]["median_ms"], C[str(n)]["median_us"] / 1e3,
            gemm_model[n]["us"] / 1e3, ach, 100 * ach / square, 100 * ach / gemm_model[n]["gflops"]))
    L.append("")
    L.append("The C core is built with the extension's flags for src/core (`%s`).  The C programs time the "
             "CPU time of their thread (a shared host does not inflate it); the SQL columns are wall clock.\n" % " ".join(
        f for f in C["cflags"].split() if f.startswith(("-O", "-f", "-m", "-std"))))
    L.append("PyTorch efficient, same view: achieved %s GFLOP/s at N = %s.\n" % (
        " / ".join("%.1f" % (TT["efficient"][str(n)]["cand_per_s"] * fl / 1e9) for n in NS),
        " / ".join(str(n) for n in NS)))

    L.append("## 2. pepnet_predict row by row, %s rows\n" % fmt(R["table_rows"]))
    L.append("`SELECT sum(pepnet_predict('bench@v', domain, persona, features)) FROM <table>`; %d users x %d "
             "candidates; median of %d runs.  Serial = max_parallel_workers_per_gather 0 (one core, the fair "
             "comparison); parallel = the cluster's setting.  PyTorch: the efficient module, one candidate per "
             "call (batch of 1), over the first %s rows of the same order (persona part cached while it repeats, "
             "as pepnet does), interleaved with the serial pepnet runs.\n" % (
                 R["table_users"], R["table_rows"] // R["table_users"], R["predict_runs"], fmt(R["one_rows"])))
    L.append("| table order | pepnet serial rows/s | parallel rows/s (workers) | scan baseline rows/s | "
             "torch efficient 1/call | torch reference 1/call | pepnet serial / torch eff. |")
    L.append("|---|---|---|---|---|---|---|")
    for label, table in (("sorted by user", "bench_cands"), ("shuffled", "bench_cands_shuffled")):
        p = P[table]
        te, tr = p["torch_efficient_one"], p["torch_reference_one"]
        L.append("| %s | %s | %s (%s) | %s | %s | %s | %.2fx |" % (
            label, fmt(p["serial"]["rows_per_s"]), fmt(p["parallel"]["rows_per_s"]),
            p["parallel"]["workers_planned"], fmt(p["scan_baseline"]["rows_per_s"]), fmt(te["cand_per_s"]),
            fmt(tr["cand_per_s"]), p["serial"]["rows_per_s"] / te["cand_per_s"]))
    L.append("")
    if P["bench_cands"]["serial"].get("cpu_rows_per_s"):
        L.append("CPU time (robust on a shared host): pepnet_predict backend CPU %s rows/s (sorted) / %s (shuffled); "
                 "PyTorch efficient one per call %s / %s per CPU second; ratios %.2fx / %.2fx.\n" % (
                     fmt(P["bench_cands"]["serial"]["cpu_rows_per_s"]),
                     fmt(P["bench_cands_shuffled"]["serial"]["cpu_rows_per_s"]),
                     fmt(P["bench_cands"]["torch_efficient_one"]["cpu_cand_per_s"]),
                     fmt(P["bench_cands_shuffled"]["torch_efficient_one"]["cpu_cand_per_s"]),
                     P["bench_cands"]["serial"]["cpu_rows_per_s"] / P["bench_cands"]["torch_efficient_one"]["cpu_cand_per_s"],
                     P["bench_cands_shuffled"]["serial"]["cpu_rows_per_s"]
                     / P["bench_cands_shuffled"]["torch_efficient_one"]["cpu_cand_per_s"]))
    g1 = [l for l in sg if l["kind"] == "model_gemv"]
    L.append("Per candidate, microseconds: pepnet_predict serial %.1f (sorted) / %.1f (shuffled); pn_score alone "
             "with n = 1 (C core) %.1f; persona part (pn_persona_build, redone whenever the persona changes) %.1f; "
             "the BLAS calls of pn_score at n = 1 alone %.1f as one-row cblas_sgemm%s; PyTorch efficient "
             "one per call %.1f (sorted).\n" % (
                 1e6 / P["bench_cands"]["serial"]["rows_per_s"], 1e6 / P["bench_cands_shuffled"]["serial"]["rows_per_s"],
                 C["1"]["median_us"], C["persona_build"]["median_us"], gemm_model[1]["us"],
                 (", %.1f as cblas_sgemv (what pn_score does when n = 1)" % g1[0]["us"]) if g1 else "",
                 P["bench_cands"]["torch_efficient_one"]["us_per_cand"]))

    L.append("## 3. OpenBLAS sgemm, 1 thread (bench/sgemm_rate.c)\n")
    L.append("Big square %dx%dx%d: **%.1f GFLOP/s**.  pepnet's GEMM shapes (C = A B^T, weights [out, in]):\n" % (
        2048, 2048, 2048, square))
    L.append("| shape | m=1 | m=1 as sgemv | m=10 | m=100 | m=256 | m=1000 |")
    L.append("|---|---|---|---|---|---|---|")
    names = []
    for l in sg:
        if l["kind"] == "gemm" and l["name"] != "square" and l["name"] not in names:
            names.append(l["name"])
    for nm in names:
        cells = []
        for mm in (1, "gemv", 10, 100, 256, 1000):
            if mm == "gemv":
                v = [l for l in sg if l.get("name") == nm and l["kind"] == "gemv"]
            else:
                v = [l for l in sg if l.get("name") == nm and l["m"] == mm and l["kind"] == "gemm"]
            cells.append("%.1f" % v[0]["gflops"] if v else "")
        L.append("| %s | %s |" % (nm, " | ".join(cells)))
    L.append("")
    L.append("All BLAS calls of pn_score alone (blocks of %d, pepnet's transposes): %s.  OpenBLAS core: %s.\n" % (
        R["block"], "; ".join("N=%d: %.1f GFLOP/s = %s cand/s" % (n, gemm_model[n]["gflops"],
                                                                   fmt(gemm_model[n]["cand_per_s"]))
                              for n in sorted(gemm_model)), R["openblas_core"]))
    if R.get("sgemm_autodetect"):
        sa = R["sgemm_autodetect"]
        sq2 = [l for l in sa if l.get("name") == "square"][0]["gflops"]
        gm2 = {l["N"]: l for l in sa if l["kind"] == "model"}
        L.append("For information only (sgemm_rate alone, not pepnet, not torch): with OPENBLAS_CORETYPE unset, "
                 "OpenBLAS picks %s on this CPU: square %.1f GFLOP/s; pn_score's BLAS calls %s.\n" % (
                     R["openblas_core_autodetect"], sq2, "; ".join(
                         "N=%d: %.1f GFLOP/s" % (n, gm2[n]["gflops"]) for n in sorted(gm2))))

    L.append("## 4. First score of a fresh backend (N = 100)\n")
    L.append("Median (p10-p90) of %d fresh connections, ms.  The C core alone loads this model (a copy of the "
             "%.1f MB of weights as detoasting makes, config parse, pn_model_layout, pn_safetensors_read in place) "
             "in %.1f ms the first time in a process (fresh memory) "
             "and %.1f ms when the memory is reused; pn_domain_build %.2f ms.  First touch of fresh memory on "
             "this machine: %.1f ms for %.1f MB (%.1f us per 4 KiB page).\n" % (
                 FS["first"]["calls"], R["weights_bytes"] / 1e6, R["core"]["load"]["first_ms"],
                 R["core"]["load"]["median_ms"], R["core"]["domain_build"]["median_ms"],
                 R["core"]["first_touch"]["ms"], R["core"]["first_touch"]["bytes"] / 1e6,
                 R["core"]["first_touch"]["us_per_page"]))
    L.append("| step | ms |")
    L.append("|---|---|")
    for key, label in (("connect", "connect (psycopg2.connect)"),
                       ("first", "**first pepnet_score call** (library + model load + fuse + score)"),
                       ("first_server_cpu", "of which the backend was on CPU"),
                       ("first_server_wait", "of which the backend waited for a CPU (run queue)"),
                       ("second", "second call (same domain)"),
                       ("third_other_domain", "third call, another domain (fuse that domain)"),
                       ("reload_after_cache_clear", "after pepnet_cache_clear(): load + fuse + score"),
                       ("trivial_first", "other fresh backend: first trivial query of the same shape"),
                       ("load_library", "then LOAD 'pepnet' (pepnet.so + libopenblas)"),
                       ("after_load_first", "then the first pepnet_score call"),
                       ("detoast_first", "other fresh backend: detoast the weights bytea (get_byte), first time"),
                       ("detoast_again", "the same again in that backend")):
        if key not in FS:
            continue
        v = FS[key]
        L.append("| %s | %.2f (%.2f-%.2f) |" % (label, v["median_ms"], v["p10_ms"], v["p90_ms"]))
    L.append("")

    L.append("## Goals\n")
    L.append("| goal | measured (wall clock, medians) | result | by CPU time | result by CPU time |")
    L.append("|---|---|---|---|---|")
    for g in R["goals"]:
        L.append("| %s | %s | %s | %s | %s |" % (g["goal"], g["measured"], "PASS" if g["pass"] else "**FAIL**",
                                              g.get("cpu_measured", "n/a"),
                                              "PASS" if g.get("cpu_pass") else "**FAIL**"))
    L.append("")
    return "\n".join(L)


def goals(R):
    """The four goals of issue 2, pass/fail."""
    S, P, TT, FS = R["score"], R["predict"], R["torch"], R["first_score"]
    out = []
    for n, target in ((100, 1.5), (1000, 1.0)):
        p, te = S[str(n)]["prepared"], TT["efficient"][str(n)]
        r = p["cand_per_s"] / te["cand_per_s"]
        rc = p["cpu_cand_per_s"] / te["cpu_cand_per_s"] if p.get("cpu_cand_per_s") else None
        out.append({"goal": "pepnet_score N=%d >= %.1fx PyTorch cand/s" % (n, target),
                    "measured": "%.2fx (%s vs %s cand/s)" % (r, fmt(p["cand_per_s"]), fmt(te["cand_per_s"])),
                    "ratio": r, "pass": r >= target, "cpu_ratio": rc, "cpu_pass": rc is not None and rc >= target,
                    "cpu_measured": "%.2fx" % rc if rc else "n/a"})
    for table, label in (("bench_cands", "sorted"), ("bench_cands_shuffled", "shuffled")):
        te = P[table]["torch_efficient_one"]
        r = P[table]["serial"]["rows_per_s"] / te["cand_per_s"]
        sc = P[table]["serial"].get("cpu_rows_per_s")
        rc = sc / te["cpu_cand_per_s"] if sc else None
        out.append({"goal": "pepnet_predict (%s, serial) >= 3x PyTorch one candidate per call" % label,
                    "measured": "%.2fx (%s vs %s rows/s)" % (r, fmt(P[table]["serial"]["rows_per_s"]),
                                                          fmt(te["cand_per_s"])),
                    "ratio": r, "pass": r >= 3.0, "cpu_ratio": rc, "cpu_pass": rc is not None and rc >= 3.0,
                    "cpu_measured": "%.2fx" % rc if rc else "n/a"})
    f = FS["first"]["median_ms"]
    fc = FS["first_server_cpu"]["median_ms"] if "first_server_cpu" in FS else None
    out.append({"goal": "fresh backend's first pepnet_score (N=100) within 50 ms",
                "measured": "%.1f ms median (p90 %.1f)" % (f, FS["first"]["p90_ms"]), "pass": f <= 50.0,
                "cpu_measured": "%.1f ms backend CPU" % fc if fc is not None else "n/a",
                "cpu_pass": fc is not None and fc <= 50.0})
    return out


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--config", default=os.path.join(HERE, "bench-config.json"))
    ap.add_argument("--sgemm-bin", default=None, help="a built bench/sgemm_rate (else built here with cc)")
    ap.add_argument("--work", default=None, help="scratch directory for the weights file (default: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="fewer calls and rows (a smoke test, not for numbers)")
    ap.add_argument("--first-score-only", metavar="LABEL", default=None,
                    help="only part 5 (fresh backends), printed as one markdown table row labelled LABEL "
                         "(bench/first_score_variants.sh)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_start = time.time()

    def log(msg):
        print("[%6.1fs] %s" % (time.time() - t_start, msg), flush=True,
              file=sys.stderr if args.first_score_only is not None else sys.stdout)

    with open(args.config) as f:
        cfg = json.load(f)
    c = ref.Config(cfg)
    q = args.quick
    calls_by_n = {10: 100 if q else 1000, 100: 60 if q else 500, 1000: 20 if q else 300}
    ref_calls_by_n = {10: 20 if q else 200, 100: 10 if q else 100, 1000: 3 if q else 5}
    users, per_user = (100, 100) if q else (1000, 100)
    predict_runs = 2 if q else 3
    rounds = 3 if q else 10
    one_rows = 2000 if q else 20000
    fresh_conns = 3 if q else 10

    R = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(), "config": cfg,
         "emb_dim": c.emb_dim, "hidden": c.hidden, "tasks": c.tasks, "block": pepnet_block(),
         "flops_per_candidate": flops_per_candidate(c), "quick": q, "loadavg_start": os.getloadavg()[0],
         "openblas_pinned": OPENBLAS_PINNED, "source": source_info(),
         "calls_by_n": {str(k): v for k, v in calls_by_n.items()}, "rounds": rounds,
         "ref_calls_by_n": {str(k): v for k, v in ref_calls_by_n.items()}}
    log("machine: %(nproc)d CPUs, %(cpu)s (%(cpu_id)s)" % R["machine"])

    # model: reference init_random, imported into pepnet
    model = ref.StarPepNet(c).init_random(SEED)
    model.eval()
    blob = ref.safetensors_dumps(model.tensors())
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT version()")
    R["postgres"] = cur.fetchone()[0]
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    cur.execute("SELECT pepnet_import(%s, %s::jsonb, %s::bytea)", (MODEL_NAME, json.dumps(cfg), psycopg2.Binary(blob)))
    version = cur.fetchone()[0]
    mref = "%s@%d" % (MODEL_NAME, version)
    R["model_ref"] = mref
    R["weights_bytes"] = len(blob)
    log("imported %s (%.1f MB of weights), %s FLOPs per candidate" % (mref, len(blob) / 1e6,
                                                                       fmt(R["flops_per_candidate"])))

    rng = np.random.default_rng(SEED)
    reqs_by_n = {n: make_requests(rng, c, 64, n) for n in NS}
    if args.first_score_only is not None:
        conn.close()
        fs = bench_first_score(mref, reqs_by_n[100][0], 5 if q else 20, lambda m: print(m, file=sys.stderr))

        def cell(k):
            v = fs.get(k)
            return "%.1f (%.1f-%.1f)" % (v["median_ms"], v["p10_ms"], v["p90_ms"]) if v else "n/a"
        print("| %s | %s | %s | %s | %s | %s |" % (args.first_score_only, cell("first"), cell("first_server_cpu"),
                                                 cell("second"), cell("load_library"),
                                                 cell("reload_after_cache_clear")))
        return
    fast = FastPepNet(model)

    # parity before timing
    d, p, f = reqs_by_n[100][1]
    model64 = copy.deepcopy(model).double().eval()
    want = model64.predict(np.full(100, d), np.tile(p, (100, 1)), f).numpy()
    del model64
    with torch.no_grad():
        got_fast = fast.predict(d, p, f).numpy()
    cur.execute("SELECT scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[]) ORDER BY idx",
                (mref, d, arr_lit(p), arr_lit(f)))
    got = np.array([r[0] for r in cur.fetchall()])
    R["parity"] = {"pepnet_vs_ref": float(np.abs(got - want).max()), "fast_vs_ref": float(np.abs(got_fast - want).max())}
    log("parity: pepnet vs reference %.2e, efficient torch vs reference %.2e" % (
        R["parity"]["pepnet_vs_ref"], R["parity"]["fast_vs_ref"]))
    if R["parity"]["pepnet_vs_ref"] > 1e-4 or R["parity"]["fast_vs_ref"] > 1e-4:
        sys.exit("parity check failed: the benchmark would compare different functions")

    # 4. sgemm first (nothing else running in this process yet); then the C core alone
    R["sgemm"] = run_sgemm(args.sgemm_bin, c, R["block"], log)
    R["openblas_core"] = openblas_core()
    if os.environ.get("OPENBLAS_CORETYPE"):
        # informational only, sgemm_rate alone: what OpenBLAS would pick by itself on this CPU
        # (pepnet, the cluster and torch keep the environment as it is)
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        R["openblas_core_autodetect"] = openblas_core(env)
        R["sgemm_autodetect"] = run_sgemm(args.sgemm_bin, c, R["block"], log, env=env,
                                          label="OPENBLAS_CORETYPE unset: " + R["openblas_core_autodetect"])
    work = args.work or tempfile.mkdtemp(prefix="pepnet-bench-")
    blob_path = os.path.join(work, "bench.safetensors")
    with open(blob_path, "wb") as f:
        f.write(blob)
    R["core"] = run_core(os.path.abspath(args.config), blob_path, R["block"], work, log)

    # 1. + 3. pepnet_score and PyTorch, N candidates per call, interleaved
    S, TT = bench_score_vs_torch(cur, mref, model, fast, reqs_by_n, calls_by_n, ref_calls_by_n, rounds, log)
    R["score"] = {str(n): v for n, v in S.items()}
    R["torch"] = {impl: {str(k): v for k, v in d.items()} for impl, d in TT.items()}

    # 2. + 3. pepnet_predict over a table and PyTorch one candidate per call, interleaved
    rows = make_table_rows(rng, c, users, per_user)
    perm = load_table(cur, rows, SEED)
    R["table_rows"], R["table_users"], R["predict_runs"], R["one_rows"] = len(rows), users, predict_runs, one_rows
    R["predict"] = bench_predict_vs_torch(cur, mref, model, fast, rows, perm, predict_runs, one_rows, log)

    # 5. fresh backends
    R["first_score"] = bench_first_score(mref, reqs_by_n[100][0], fresh_conns, log)
    conn.close()

    R["loadavg_end"] = os.getloadavg()[0]
    R["goals"] = goals(R)
    md = report(R)
    with open(os.path.join(args.out, "score.md"), "w") as f:
        f.write(md + "\n")
    with open(os.path.join(args.out, "score.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    print()
    print(md)


if __name__ == "__main__":
    main()
