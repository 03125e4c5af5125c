"""Scoring parity: the pepnet extension against the PyTorch reference, through psycopg2.

Connection from the standard libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE).
Run with /usr/bin/python3. Exit 1 if any check fails.
"""
import copy
import json
import os
import sys
import traceback

import numpy as np
import psycopg2
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pepnet_ref as ref  # noqa: E402

torch.set_num_threads(1)

N_CANDIDATES = 64
ABS_TOL, REL_TOL = 1e-5, 1e-4
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1

OFF = {"epnet": False, "ppnet": False, "pn": False, "star": False, "aux": False}

CONFIGS = {
    # every part on, dense features, 2 tasks, an unhashed small field
    "parity_all": {"domains": 3,
                   "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 50},
                                {"name": "hour", "buckets": 24, "hash": False}, {"name": "f3", "buckets": 100}],
                   "persona": [{"name": "user", "buckets": 500}, {"name": "age", "buckets": 8, "hash": False}],
                   "dense": 3, "emb_dim": 8, "tasks": ["click", "buy"], "hidden": [32, 16], "aux_hidden": 8},
    # all parts off: a shared MLP
    "parity_off": dict({"domains": 2, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 30}],
                        "persona": [{"name": "user", "buckets": 100}], "dense": 2, "emb_dim": 6,
                        "hidden": [16, 8]}, **OFF),
    # STAR: star + pn + aux, no dense (NULL dense), 2 tasks
    "parity_star": dict({"domains": 4, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 7},
                                                    {"name": "c", "buckets": 5, "hash": False}],
                         "persona": [{"name": "user", "buckets": 100}], "emb_dim": 4,
                         "tasks": ["click", "like"], "hidden": [12, 6], "aux_hidden": 5},
                        **dict(OFF, star=True, pn=True, aux=True)),
    # PEPNet: epnet + ppnet, one dense feature, 2 tasks
    "parity_pepnet": dict({"domains": 3, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 40}],
                           "persona": [{"name": "user", "buckets": 200}, {"name": "g", "buckets": 3}], "dense": 1,
                           "emb_dim": 5, "tasks": ["click", "like"], "hidden": [10, 7]},
                          **dict(OFF, epnet=True, ppnet=True)),
    # docs/model.md defaults (emb_dim 16, hidden [256, 128], all parts on), shaped like bench-config.json
    "parity_default": {"domains": 4,
                       "features": [{"name": "item", "buckets": 20000}, {"name": "cat", "buckets": 64},
                                    {"name": "hour", "buckets": 24}] + [{"name": "f%d" % i, "buckets": 1000}
                                                                        for i in range(3, 8)],
                       "persona": [{"name": "user", "buckets": 50000}, {"name": "age", "buckets": 8},
                                   {"name": "p2", "buckets": 100}],
                       "tasks": ["click", "buy"]},
    # no persona fields (PPNet gate sees x only), non-default gamma and epnet_hidden, one hidden layer
    "parity_nopersona": {"domains": 2, "features": [{"name": "a", "buckets": 100}, {"name": "b", "buckets": 9}],
                         "persona": [], "dense": 2, "emb_dim": 3, "tasks": ["click", "buy", "share"],
                         "hidden": [6], "gamma": 1.5, "epnet_hidden": 5, "aux_hidden": 4},
    # the shared-bottom baseline: all parts off, the domain embedding at the end of x0 (domain_input)
    "parity_shared_bottom": dict({"domains": 3, "features": [{"name": "a", "buckets": 300}, {"name": "b", "buckets": 30}],
                                  "persona": [{"name": "user", "buckets": 100}], "dense": 2, "emb_dim": 6,
                                  "hidden": [16, 8], "domain_input": True}, **OFF),
    # every part but PN (which domain_input excludes) on: EPNet, PPNet, aux and the STAR towers see dv in x0
    "parity_all_domain": {"domains": 3, "features": [{"name": "item", "buckets": 1000}, {"name": "cat", "buckets": 50}],
                          "persona": [{"name": "user", "buckets": 500}], "dense": 1, "emb_dim": 5,
                          "tasks": ["click", "buy"], "hidden": [12, 6], "aux_hidden": 6, "pn": False,
                          "domain_input": True},
}

RESULTS = []


def check(name, ok, detail=""):
    """Record and print one result line."""
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""), flush=True)


def close(a, b):
    """Elementwise tolerance |a-b| <= ABS_TOL + REL_TOL*|b|; returns (all ok, max abs error)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return False, float("inf")
    err = np.abs(a - b)
    return bool(np.all(err <= ABS_TOL + REL_TOL * np.abs(b))), float(err.max()) if err.size else 0.0


def random_ids(rng, fields, n):
    """n x len(fields) raw ids: full int64 range, negatives, small ids, extremes; in range for unhashed fields."""
    out = np.zeros((n, len(fields)), dtype=np.int64)
    for i, f in enumerate(fields):
        if not f["hash"]:
            out[:, i] = rng.integers(0, f["buckets"], n)
            continue
        big = rng.integers(INT64_MIN, INT64_MAX, n, dtype=np.int64, endpoint=True)
        small = rng.integers(-20, 200, n)
        col = np.where(rng.random(n) < 0.5, big, small)
        col[:4] = [INT64_MIN, INT64_MAX, -1, 0][:n]
        out[:, i] = col
    return out


def ints(a):
    """numpy ints as a (nested) list of Python ints, for psycopg2."""
    return np.asarray(a, dtype=np.int64).tolist()


def reals(a):
    """float32 values as a (nested) list of Python floats (exact in real), or None."""
    return None if a is None else np.asarray(a, dtype=np.float32).astype(np.float64).tolist()


def ref_probs(model64, domain, persona, feats, dense):
    """Reference probabilities [N, T] in float64, inference mode, one request (domain, persona)."""
    n = feats.shape[0]
    return model64.predict(np.full(n, domain), np.tile(persona, (n, 1)), feats, dense).numpy()


def score_rows(cur, mref, domain, persona, feats, dense):
    """Call pepnet_score; return (idx list, score array, scores array)."""
    cur.execute("SELECT idx, score, scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[], %s::real[])",
                (mref, domain, ints(persona), ints(feats), reals(dense)))
    rows = cur.fetchall()
    return [r[0] for r in rows], np.array([r[1] for r in rows]), np.array([r[2] for r in rows], dtype=np.float64)


def run_config(cur, name, cfg, seed):
    """Import random weights for one config and compare every scoring path with the reference."""
    c = ref.Config(cfg)
    model = ref.StarPepNet(c).init_random(seed)
    tensors = model.tensors()
    blob = ref.safetensors_dumps(tensors)
    cur.execute("SELECT pepnet_import(%s, %s::jsonb, %s::bytea)", (name, json.dumps(cfg), psycopg2.Binary(blob)))
    version = cur.fetchone()[0]
    mref = "%s@%d" % (name, version)
    check("%s: pepnet_import" % name, isinstance(version, int) and version >= 1, "version %s" % version)

    # export is bit-identical to the import
    cur.execute("SELECT pepnet_export(%s)", (mref,))
    exported = ref.safetensors_loads(bytes(cur.fetchone()[0]), raw=True)
    mine = ref.safetensors_loads(blob, raw=True)
    diff = sorted(k for k in set(exported) | set(mine) if exported.get(k) != mine.get(k))
    check("%s: pepnet_export bit-identical" % name, not diff,
          "%d tensors%s" % (len(mine), (", differ: %s" % diff[:5]) if diff else ""))

    model64 = copy.deepcopy(model).double().eval()
    rng = np.random.default_rng(seed)
    errs = {"2d": [True, 0.0, 0], "1d": [True, 0.0, 0], "predict": [True, 0.0, 0], "idx": [True, 0.0, 0]}

    def note(key, ok_err, count):
        """Accumulate (ok, max error, count) for one kind of call."""
        e = errs[key]
        e[0] &= ok_err[0]
        e[1] = max(e[1], ok_err[1])
        e[2] += count

    for d in range(c.domains):
        persona = random_ids(rng, c.persona, 1)[0]
        feats = random_ids(rng, c.features, N_CANDIDATES)
        dense = rng.normal(size=(N_CANDIDATES, c.dense)).astype(np.float32) if c.dense else None
        want = ref_probs(model64, d, persona, feats, dense)
        idx, score, scores = score_rows(cur, mref, d, persona, feats, dense)
        note("idx", (idx == list(range(1, N_CANDIDATES + 1)), 0.0), 1)
        ok1, e1 = close(score, want[:, 0])
        ok2, e2 = close(scores, want)
        note("2d", (ok1 and ok2, max(e1, e2)), N_CANDIDATES)

        # one candidate, 1-D arrays
        idx1, s1, ss1 = score_rows(cur, mref, d, persona, feats[0], None if dense is None else dense[0])
        ok1, e1 = close(s1, want[:1, 0])
        ok2, e2 = close(ss1, want[:1])
        note("1d", (ok1 and ok2 and idx1 == [1], max(e1, e2)), 1)

        # pepnet_predict row by row, for a few candidates
        for i in range(3):
            cur.execute("SELECT pepnet_predict(%s, %s, %s::bigint[], %s::bigint[], %s::real[])",
                        (mref, d, ints(persona), ints(feats[i]), reals(None if dense is None else dense[i])))
            note("predict", close([cur.fetchone()[0]], want[i:i + 1, 0]), 1)

    check("%s: pepnet_score idx 1..N in input order" % name, errs["idx"][0])
    for key, label, tasks in (("2d", "pepnet_score 2-D", c.T), ("1d", "pepnet_score 1-D", c.T),
                              ("predict", "pepnet_predict", 1)):
        ok, err, count = errs[key]
        check("%s: %s, %d candidates x %d task(s)" % (name, label, count, tasks), ok, "max err %.3g" % err)

    # model from the setting pepnet.model, and an unversioned reference (latest version, none deployed)
    persona = random_ids(rng, c.persona, 1)[0]
    feats = random_ids(rng, c.features, 5)
    dense = rng.normal(size=(5, c.dense)).astype(np.float32) if c.dense else None
    want = ref_probs(model64, 0, persona, feats, dense)
    cur.execute("SELECT set_config('pepnet.model', %s, false)", (mref,))
    cur.execute("SELECT idx, score, scores FROM pepnet_score(%s, %s::bigint[], %s::bigint[], %s::real[])",
                (0, ints(persona), ints(feats), reals(dense)))
    ok, err = close([r[2] for r in cur.fetchall()], want)
    check("%s: pepnet_score with pepnet.model setting" % name, ok, "max err %.3g" % err)
    _, _, scores = score_rows(cur, name, 0, persona, feats, dense)
    ok, err = close(scores, want)
    check("%s: unversioned reference = latest version" % name, ok, "max err %.3g" % err)
    return version


def sql_predict():
    """The pepnet_predict statement used by the error checks."""
    return "SELECT pepnet_predict(%s, %s, %s::bigint[], %s::bigint[], %s::real[])"


def expect_no_error(cur, name, sql, args):
    """Check that a statement succeeds (the control for expect_error)."""
    try:
        cur.execute(sql, args)
        check(name, cur.fetchall() is not None)
    except psycopg2.Error as e:
        check(name, False, (e.pgerror or str(e)).strip().splitlines()[0])


def expect_error(cur, name, sql, args, must_contain=None):
    """Check that a statement fails (and, optionally, that its message contains a given text)."""
    try:
        cur.execute(sql, args)
        cur.fetchall()
        check(name, False, "no error raised")
    except psycopg2.Error as e:
        msg = (e.pgerror or str(e)).strip()
        check(name, must_contain is None or must_contain in msg, msg.splitlines()[0] if msg else "")


def run_error_checks(cur, versions):
    """Errors the contract requires, on a model that exists (else an error would prove nothing)."""
    if "parity_all" not in versions:
        check("error checks: parity_all was imported", False)
        return
    mref = "parity_all@%d" % versions["parity_all"]
    cfg = ref.Config(CONFIGS["parity_all"])
    expect_no_error(cur, "parity_all: valid inputs score without error", sql_predict(),
                    (mref, 0, [7, 3], [1, 2, 3, 4], [0.5, -1.0, 2.0]))
    persona = [7, 3]
    feats = [1, 2, 3, 4]
    dense = [0.5, -1.0, 2.0]
    sql = sql_predict()
    expect_error(cur, "unhashed feature id = buckets is an error", sql,
                 (mref, 0, persona, feats[:2] + [cfg.features[2]["buckets"]] + feats[3:], dense))
    expect_error(cur, "unhashed feature id -1 is an error", sql,
                 (mref, 0, persona, feats[:2] + [-1] + feats[3:], dense))
    expect_error(cur, "unhashed persona id out of range is an error", sql,
                 (mref, 0, [7, 8], feats, dense))
    expect_error(cur, "unknown version is an error naming it", sql,
                 ("parity_all@987654", 0, persona, feats, dense), "987654")
    expect_error(cur, "unknown model is an error naming it", sql,
                 ("parity_no_such_model", 0, persona, feats, dense), "parity_no_such_model")
    expect_error(cur, "domain = D is an error", sql, (mref, cfg.domains, persona, feats, dense))
    expect_error(cur, "wrong number of features is an error", sql, (mref, 0, persona, feats[:3], dense))


def main():
    """Run the parity checks for every configuration; exit 1 if any failed."""
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    names = list(CONFIGS)
    try:
        # leftovers of an interrupted earlier run of this test (same names) would change "latest"
        cur.execute("DELETE FROM pepnet.models WHERE name = ANY(%s)", (names,))
        versions = {}
        for seed, name in enumerate(names, 1):
            try:
                versions[name] = run_config(cur, name, CONFIGS[name], seed)
            except Exception as e:  # noqa: BLE001
                traceback.print_exc(file=sys.stdout)
                check("%s: ran without error" % name, False, "%s: %s" % (type(e).__name__, str(e).strip()))

        run_error_checks(cur, versions)
    finally:
        cur.execute("DELETE FROM pepnet.models WHERE name = ANY(%s)", (names,))
        conn.close()
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
