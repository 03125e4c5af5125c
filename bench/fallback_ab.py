"""pepnet_score through SQL with two builds of pepnet.so, interleaved: candidates/s per core.

For the engine's fallback (CPUs without oneDNN brgemm matmuls): the same bench model
(bench-config.json, StarPepNet.init_random(2)) and the same 64 requests per N, scored by a
prepared `SELECT idx, score, scores FROM pepnet_score(...)` with text array parameters (every row
fetched), by a backend running build A or build B: each round installs one build's pepnet.so into
the server's libdir (copy + rename, so running backends keep theirs), opens a new connection, warms
up, and charges the backend's CPU time (/proc/<pid>/schedstat) per N; the builds alternate, and
their order alternates per round.  Also the largest |score A - score B| over one request of 1000.

    python3 bench/fallback_ab.py --a /tmp/before/pepnet.so --b ./pepnet.so \
        --libdir $($PG_CONFIG --pkglibdir) [--rounds 6]

Connects with libpq's environment (PGHOST, PGPORT, PGUSER, PGDATABASE: test/pg.sh env).
Restores build B into the libdir at the end.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_score as bs  # noqa: E402

ref = bs.ref
SEED = 2


def install(so, libdir):
    tmp = os.path.join(libdir, ".pepnet.so.ab")
    shutil.copyfile(so, tmp)
    os.chmod(tmp, 0o755)
    os.rename(tmp, os.path.join(libdir, "pepnet.so"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="pepnet.so before")
    ap.add_argument("--b", required=True, help="pepnet.so after")
    ap.add_argument("--libdir", required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--ns", default="1,10,100,1000")
    ap.add_argument("--secs", type=float, default=0.4, help="backend CPU seconds per N, build and round (about)")
    args = ap.parse_args()
    ns = [int(x) for x in args.ns.split(",")]
    with open(os.path.join(HERE, "bench-config.json")) as f:
        cfg = json.load(f)
    c = ref.Config(cfg)
    model = ref.StarPepNet(c).init_random(SEED)
    blob = ref.safetensors_dumps(model.tensors())
    install(args.b, args.libdir)
    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    cur.execute("SELECT pepnet_import('bench_ab', %s::jsonb, %s::bytea)", (json.dumps(cfg), psycopg2.Binary(blob)))
    mref = "bench_ab@%d" % cur.fetchone()[0]
    conn.close()
    rng = np.random.default_rng(SEED)
    reqs = {n: [(d, bs.arr_lit(p), bs.arr_lit(f)) for d, p, f in bs.make_requests(rng, c, 64, n)] for n in ns}
    # calls per measurement: about args.secs of backend CPU at ~15,000 candidates/s (before)
    calls = {n: max(4, int(args.secs * 15000 / n)) for n in ns}
    rate = {(k, n): [] for k in "ab" for n in ns}
    scores = {}
    print("started %s, load average %s, %d rounds" % (time.strftime("%H:%M:%S"), os.getloadavg(), args.rounds),
          flush=True)
    for rnd in range(args.rounds):
        for k in ("ab" if rnd % 2 == 0 else "ba"):
            install(args.a if k == "a" else args.b, args.libdir)
            conn = psycopg2.connect("")
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("SET pepnet.precision = fp32")
            cur.execute("PREPARE s(int, bigint[], bigint[]) AS SELECT idx, score, scores FROM pepnet_score('%s', $1, $2, $3)"
                        % mref)
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
            for n in ns:
                for i in range(2):
                    cur.execute("EXECUTE s(%s, %s, %s)", reqs[n][i])
                    cur.fetchall()
                if rnd == 0 and n == max(ns):
                    cur.execute("EXECUTE s(%s, %s, %s)", reqs[n][0])
                    scores[k] = np.array([r[2] for r in sorted(cur.fetchall())], dtype=np.float64)
                s0 = bs.sched(pid)
                for i in range(calls[n]):
                    cur.execute("EXECUTE s(%s, %s, %s)", reqs[n][i % 64])
                    cur.fetchall()
                s1 = bs.sched(pid)
                rate[(k, n)].append(calls[n] * n / ((s1[0] - s0[0]) * 1e-9))
            conn.close()
        print("round %d: %s" % (rnd, "  ".join("N=%d %.0f/%.0f" % (n, rate[("a", n)][-1], rate[("b", n)][-1])
                                              for n in ns)), flush=True)
    install(args.b, args.libdir)
    print("finished %s, load average %s" % (time.strftime("%H:%M:%S"), os.getloadavg()))
    print("max |score b - score a| over one request of %d: %.3g" % (max(ns), float(np.abs(scores["a"] - scores["b"]).max())))
    print()
    print("| N | before (a) | after (b) | after / before |")
    print("|---:|---:|---:|---:|")
    for n in ns:
        a = statistics.median(rate[("a", n)])
        b = statistics.median(rate[("b", n)])
        print("| %d | %s | %s | %.2fx |" % (n, format(round(a), ","), format(round(b), ","), b / a))


if __name__ == "__main__":
    main()
