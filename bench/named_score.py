"""Scoring and training by name (issue 16) against the arrays form, side by side in one run.

Run with Debian's /usr/bin/python3 (python3-psycopg2) against a running cluster where the pepnet
extension (0.3.0) is installed; the connection comes from the libpq environment (PGHOST, PGPORT,
PGUSER, PGDATABASE).  The cluster must be on this machine: the backend's CPU time is read from
/proc/<pid>/schedstat.

    /usr/bin/python3 bench/named_score.py [--rounds 6] [--calls 40] [--train-rows 100000] [--out FILE]

What it measures (BENCHMARKS.md, "Scoring and training by name (issue 16)"):
 1. Candidates/s of one request of N = 10, 100, 1000 candidates for one user, on the bench model
    (bench/bench-config.json: 8 feature fields, 3 persona fields, 2 tasks, hidden [256, 128]),
    the same weights in both forms (pepnet_create with the same seed: the named tables only add
    the missing row):
      - arrays, parameter:  pepnet_score(m, domain, persona, features) with features a bigint[][]
                            parameter (the client sends the ids), as BENCHMARKS.md's engine runs;
      - arrays, from table: the same, the ids built in SQL from the candidate table
                            (array_agg(ARRAY[item, ...]) over the N rows);
      - named, table rows:  pepnet_score_rows(m, ARRAY(SELECT c FROM cand c WHERE ...)) over the
                            same candidate table by name (cat a text column, user a uuid);
      - named, join rows:   the same candidates as the anonymous rows of a user x items join
                            (SELECT u.*, i.* ...), the top-k form of docs/api.md.
    Each call is SELECT count(*), max(score) FROM ... (no rows to the client), 'calls' calls per
    block, the variants interleaved block by block for 'rounds' rounds; the backend's CPU time
    (schedstat) over all blocks of a variant gives candidates/s per core.
 2. Training samples/s: pepnet_train for one epoch over the same 'train-rows' rows, positional
    (features bigint[] ...) and by name (the columns), interleaved, 2 runs each; samples/s from
    the backend's CPU time and the epoch's own rows_per_s (wall).

Prints a markdown report (and writes it to --out when given).
"""
import argparse
import json
import os
import statistics
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
NS = (10, 100, 1000)


def backend_cpu(pid):
    """CPU seconds the backend has run (schedstat: ns on CPU, ns waiting, timeslices)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def configs():
    with open(os.path.join(HERE, "bench-config.json")) as f:
        arrays = json.load(f)
    named = json.loads(json.dumps(arrays))
    named["inputs"] = "columns"
    # the named form's column names: item int8, cat text, hour int4, f3..f7 int8; user uuid, age, p2
    names_f = ["item", "cat", "hour", "f3", "f4", "f5", "f6", "f7"]
    names_p = ["user_id", "age", "p2"]
    for f, n in zip(named["features"], names_f):
        f["name"] = n
    for f, n in zip(named["persona"], names_p):
        f["name"] = n
    return arrays, named


SETUP = """
DROP TABLE IF EXISTS nb_users, nb_items, nb_cand, nb_train;
CREATE TABLE nb_users AS
SELECT u AS uid, md5(u::text)::uuid AS user_id, u % 8 AS age, u % 100 AS p2, u % 4 AS domain
FROM generate_series(1, 50) u;
CREATE TABLE nb_items AS
SELECT i AS item, 'cat-' || (i % 64) AS cat, i % 24 AS hour, (i * 7)::bigint % 1000 AS f3, (i * 11)::bigint % 1000 AS f4,
       (i * 13)::bigint % 1000 AS f5, (i * 17)::bigint % 1000 AS f6, (i * 19)::bigint % 1000 AS f7
FROM generate_series(1, 1000) i;
-- the candidates of user 1 as one table (a named row type)
CREATE TABLE nb_cand AS
SELECT i.item::bigint AS item, i.cat, i.hour, i.f3, i.f4, i.f5, i.f6, i.f7, u.user_id, u.age, u.p2, u.domain
FROM nb_users u, nb_items i WHERE u.uid = 1;
CREATE INDEX ON nb_cand (item);
ANALYZE nb_cand;
"""


def ids_of(cur, n):
    """The arrays form's ids of the first n candidates: text and uuid ids as the server hashes them
    (here simply their positions; the arrays form takes any int64)."""
    cur.execute("SELECT item, abs(hashtext(cat)), hour, f3, f4, f5, f6, f7 FROM nb_cand WHERE item <= %s ORDER BY item", (n,))
    rows = cur.fetchall()
    return "{" + ",".join("{" + ",".join(str(v) for v in r) + "}" for r in rows) + "}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--train-rows", type=int, default=100000)
    ap.add_argument("--out")
    a = ap.parse_args()

    conn = psycopg2.connect("")
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT pg_backend_pid(), extversion FROM pg_extension WHERE extname = 'pepnet'")
    pid, ver = cur.fetchone()
    cur.execute("SET client_min_messages = warning")
    cur.execute("SET max_parallel_workers_per_gather = 0")
    cur.execute(SETUP)
    arrays, named = configs()
    cur.execute("SELECT pepnet_create('nb_arrays', %s, 2), pepnet_create('nb_named', %s, 2)",
                (json.dumps(arrays), json.dumps(named)))
    va, vn = cur.fetchone()
    ma, mn = f"nb_arrays@{va}", f"nb_named@{vn}"
    load0 = os.getloadavg()

    variants = {}
    for n in NS:
        lit = ids_of(cur, n)
        variants[("arrays, parameter", n)] = (
            "SELECT count(*), max(score) FROM pepnet_score(%s, 1, '{11,1,1}', %s::bigint[][])", (ma, lit))
        variants[("arrays, from table", n)] = (
            "SELECT count(*), max(score) FROM pepnet_score(%s, 1, '{11,1,1}', "
            "(SELECT array_agg(ARRAY[item, abs(hashtext(cat)), hour, f3, f4, f5, f6, f7] ORDER BY item) "
            "FROM nb_cand WHERE item <= %s))", (ma, n))
        variants[("named, table rows", n)] = (
            "SELECT count(*), max(score) FROM pepnet_score_rows(%s, ARRAY(SELECT c FROM nb_cand c WHERE item <= %s))",
            (mn, n))
        variants[("named, join rows", n)] = (
            "SELECT count(*), max(score) FROM pepnet_score_rows(%s, ARRAY(SELECT c FROM "
            "(SELECT u.user_id, u.age, u.p2, u.domain, i.* FROM nb_users u, nb_items i WHERE u.uid = 1 AND i.item <= %s) c))",
            (mn, n))
    # warm up: caches, plans, the engine's packed weights
    for (name, n), (sql, args) in variants.items():
        for _ in range(3):
            cur.execute(sql, args)
            assert cur.fetchone()[0] == n, (name, n)

    cpu = {k: 0.0 for k in variants}
    wall = {k: [] for k in variants}
    for r in range(a.rounds):
        for k, (sql, args) in variants.items():
            c0, t0 = backend_cpu(pid), time.perf_counter()
            for _ in range(a.calls):
                cur.execute(sql, args)
                cur.fetchone()
            t1, c1 = time.perf_counter(), backend_cpu(pid)
            cpu[k] += c1 - c0
            wall[k].append((t1 - t0) / a.calls)

    lines = []
    lines.append(f"pepnet {ver}, backend pid {pid}; load average {load0[0]:.1f} at the start, "
                 f"{os.getloadavg()[0]:.1f} at the end ({os.cpu_count()} CPUs); {a.rounds} rounds x {a.calls} calls per variant and N")
    lines.append("")
    lines.append("| N | variant | candidates/s (backend CPU) | median wall per call | vs arrays, parameter | vs arrays, from table |")
    lines.append("|---|---|---|---|---|---|")
    results = {}
    for n in NS:
        base_p = n * a.rounds * a.calls / cpu[("arrays, parameter", n)]
        base_t = n * a.rounds * a.calls / cpu[("arrays, from table", n)]
        for name in ("arrays, parameter", "arrays, from table", "named, table rows", "named, join rows"):
            k = (name, n)
            rate = n * a.rounds * a.calls / cpu[k]
            results[f"{name} N={n}"] = rate
            lines.append(f"| {n} | {name} | {rate:,.0f} | {statistics.median(wall[k]) * 1e3:.3f} ms | "
                         f"{rate / base_p:.2f}x | {rate / base_t:.2f}x |")

    # training: the same rows positional and by name
    cur.execute("DROP TABLE IF EXISTS nb_train")
    cur.execute("""CREATE TABLE nb_train AS
        SELECT g, g %% 4 AS domain, (abs(hashint4(g)) %% 20000)::bigint AS item, 'cat-' || (g %% 64) AS cat, g %% 24 AS hour,
               (g * 7)::bigint %% 1000 AS f3, (g * 11)::bigint %% 1000 AS f4, (g * 13)::bigint %% 1000 AS f5,
               (g * 17)::bigint %% 1000 AS f6, (g * 19)::bigint %% 1000 AS f7,
               md5((g %% 5000)::text)::uuid AS user_id, g %% 8 AS age, g %% 100 AS p2,
               (abs(hashint4(g)) %% 3 = 0) AS click, (abs(hashint4(-g)) %% 7 = 0) AS buy
        FROM generate_series(1, %s) g""", (a.train_rows,))
    cur.execute("ANALYZE nb_train")
    pos_q = ("SELECT domain, ARRAY[abs(hashtext(user_id::text)), age, p2]::bigint[] AS persona, "
             "ARRAY[item, abs(hashtext(cat)), hour, f3, f4, f5, f6, f7]::bigint[] AS features, "
             "ARRAY[click::int, buy::int]::real[] AS labels FROM nb_train")
    nam_q = "SELECT * FROM nb_train"
    train = {"positional": [], "named": []}
    for run in range(2):
        for form, q, cfg in (("positional", pos_q, arrays), ("named", nam_q, named)):
            c0 = backend_cpu(pid)
            cur.execute("CALL pepnet_train(%s, %s, %s, epochs => 1, batch_size => 512, seed => 1, "
                        "shuffle_buffer => 10000, progress_interval => 0)", (f"nb_train_{form}", q, json.dumps(cfg)))
            c1 = backend_cpu(pid)
            cur.execute("SELECT (metrics->>'rows_per_s')::float8 FROM pepnet.models WHERE name = %s "
                        "ORDER BY version DESC LIMIT 1", (f"nb_train_{form}",))
            train[form].append((a.train_rows / (c1 - c0), cur.fetchone()[0]))
    lines.append("")
    lines.append(f"Training, one epoch of {a.train_rows} rows (batch 512, shuffle buffer 10000), 2 runs each, interleaved:")
    lines.append("")
    lines.append("| form | samples/s (backend CPU, whole CALL) | rows_per_s of the epoch (wall) |")
    lines.append("|---|---|---|")
    for form in ("positional", "named"):
        lines.append(f"| {form} | {' / '.join(f'{x[0]:,.0f}' for x in train[form])} | "
                     f"{' / '.join(f'{x[1]:,.0f}' for x in train[form])} |")
    best = {f: max(x[0] for x in train[f]) for f in train}
    lines.append("")
    lines.append(f"named / positional (best of each, CPU): {best['named'] / best['positional']:.2f}x; "
                 f"scoring at N = 1000, named table rows / arrays parameter: "
                 f"{results['named, table rows N=1000'] / results['arrays, parameter N=1000']:.2f}x, "
                 f"/ arrays from table: {results['named, table rows N=1000'] / results['arrays, from table N=1000']:.2f}x")
    lines.append(f"load average at the end: {os.getloadavg()[0]:.1f}")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    cur.execute("DELETE FROM pepnet.optimizer_state WHERE name LIKE 'nb\\_%%'")
    cur.execute("DELETE FROM pepnet.models WHERE name LIKE 'nb\\_%%'")
    cur.execute("DROP TABLE IF EXISTS nb_users, nb_items, nb_cand, nb_train")


if __name__ == "__main__":
    main()
