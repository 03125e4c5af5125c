"""python3 -m pepnet.plot --compare: several runs side by side (since 0.3.0).

A grid of three runs trained in SQL, a version created without metrics with a recorded evaluation;
the command writes a PNG of the expected size with four panels, a bare name standing for each run,
--source drawing a recorded evaluation; unknown models and evaluations refused.
Connection from the libpq environment; the test makes and drops its own database pepnet_plottest.
Run with /usr/bin/python3 (Debian's psycopg2 and matplotlib).
"""
import os
import subprocess
import sys
import tempfile

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import pepnet.db  # noqa: E402
import pepnet.plot  # noqa: E402

DB = "pepnet_plottest"
RESULTS = []
CFG = ('{"domains": 3, "features": [{"name": "item", "buckets": 400}, {"name": "cat", "buckets": 10, "hash": false}], '
       '"persona": [{"name": "user", "buckets": 50}], "dense": 1, "emb_dim": 4, "hidden": [16, 8]}')
DATA = "SELECT domain, persona, features, dense, clicked AS label FROM ev WHERE i % 5 <> 0"
HOLDOUT = "SELECT domain, persona, features, dense, clicked AS label FROM ev WHERE i % 5 = 0"


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""), flush=True)


def plot(*args):
    env = dict(os.environ, PGDATABASE=DB, PYTHONPATH=os.path.join(ROOT, "python"))
    return subprocess.run([sys.executable, "-P", "-m", "pepnet.plot", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def is_png(path):
    return os.path.exists(path) and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def tests(conn):
    import matplotlib.image
    cur = conn.cursor()
    cur.execute("""CREATE TABLE ev AS SELECT i, i % 3 AS domain, ARRAY[abs(hashint4(-i)) % 50]::bigint[] AS persona,
        ARRAY[abs(hashint4(i)) % 300, i % 10]::bigint[] AS features, ARRAY[(i % 5) / 5.0]::real[] AS dense,
        (abs(hashint4(i)) % 300) % 2 = i % 3 % 2 AS clicked FROM generate_series(1, 2400) i""")
    cur.execute("CALL pepnet_train('cmp', %s, jsonb_build_array(%s::jsonb, %s::jsonb || '{\"epnet\": false, \"ppnet\": false}', "
                "jsonb_build_object('config', %s::jsonb || '{\"hidden\": [8]}', 'lr', 0.003)), validation => %s, epochs => 2, "
                "batch_size => 64, lr => 0.01, progress_interval => 0)", (DATA, CFG, CFG, CFG, HOLDOUT))
    cur.execute("SELECT pepnet_create('cmp_imported', %s::jsonb, 3)", (CFG,))
    cur.execute("SELECT count(*) FROM pepnet_evaluate('cmp_imported', %s, record => 'holdout')", (HOLDOUT,))
    cur.execute("SELECT count(*) FROM pepnet_evaluate('cmp@2', %s, record => 'holdout')", (HOLDOUT,))
    check("runs of the grid are the leaves", pepnet.plot.leaves(conn, "cmp") == [2, 4, 6], pepnet.plot.leaves(conn, "cmp"))

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "runs.png")
        r = plot("--compare", "cmp", "-o", out)
        ok = r.returncode == 0 and is_png(out)
        shape = matplotlib.image.imread(out).shape if ok else None
        check("--compare NAME writes a PNG of 1500x900", ok and shape[:2] == (900, 1500), (r.stdout + r.stderr).strip()[:300])
        check("--compare NAME draws each run of the grid in four panels",
              "3 run(s) (cmp@2, cmp@4, cmp@6), 4 panels, 3 domain(s)" in r.stdout, r.stdout.strip())

        out2 = os.path.join(d, "runs2.png")
        r = plot("--compare", "cmp@2", "cmp_imported@1", "--source", "holdout", "-o", out2)
        check("--compare REFS --source EVALUATION draws a version without validation",
              r.returncode == 0 and is_png(out2) and "2 run(s) (cmp@2, cmp_imported@1), 4 panels" in r.stdout,
              (r.stdout + r.stderr).strip()[:300])

        r = plot("--compare", "cmp", "--source", "nosuch", "-o", out + "3")
        check("--source with an evaluation no run has exits 1 naming it",
              r.returncode == 1 and "nosuch" in r.stderr and not os.path.exists(out + "3"), r.stderr.strip())
        r = plot("--compare", "cmp", "cmp_nope", "-o", out + "4")
        check("--compare with an unknown model exits 1 naming it",
              r.returncode == 1 and "cmp_nope" in r.stderr and not os.path.exists(out + "4"), r.stderr.strip())
        r = plot("cmp@2", "cmp@4", "-o", out + "5")
        check("two references without --compare are refused", r.returncode == 2 and "--compare" in r.stderr, r.stderr.strip())

    # the function: figures present and absent (a run without validation leaves gaps, not errors)
    chains = [pepnet.db.lineage(conn, "cmp@2"), pepnet.db.lineage(conn, "cmp_imported@1")]
    with tempfile.TemporaryDirectory() as d:
        info = pepnet.plot.plot_compare(chains, os.path.join(d, "f.png"))
        check("plot_compare: 4 axes, 2 runs, 3 domains, first task",
              info == {"task": "click", "runs": 2, "axes": 4, "domains": 3}, info)
        info = pepnet.plot.plot_compare(chains, os.path.join(d, "g.png"), source="holdout")
        check("plot_compare from a recorded evaluation", info["axes"] == 4 and info["domains"] == 3 and
              is_png(os.path.join(d, "g.png")), info)


def main():
    admin = psycopg2.connect(dbname="postgres")
    admin.autocommit = True
    acur = admin.cursor()
    acur.execute("DROP DATABASE IF EXISTS %s" % DB)
    acur.execute("CREATE DATABASE %s" % DB)
    try:
        conn = psycopg2.connect(dbname=DB)
        conn.autocommit = True   # CALL pepnet_train commits
        conn.cursor().execute("CREATE EXTENSION pepnet")
        tests(conn)
        conn.close()
    finally:
        acur.execute("DROP DATABASE IF EXISTS %s" % DB)
        admin.close()
    passed = sum(RESULTS)
    print("%d passed, %d failed" % (passed, len(RESULTS) - passed))
    sys.exit(0 if passed == len(RESULTS) else 1)


if __name__ == "__main__":
    main()
