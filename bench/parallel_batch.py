#!/usr/bin/python3
"""bench/parallel_batch.py: a nightly batch-scoring job on one core and on several (issue 18 item 4).

    eval "$(test/pg.sh env)"      # a cluster with pepnet installed (libpq environment)
    bench/parallel_batch.py [--rows 200000] [--workers 2] [--rounds 3] [--no-predict]

The bench model (bench/bench-config.json, pepnet_create seed 2, fp32) and a table of ROWS rows
(ROWS / 1000 users x 1000 candidates: uid, id, domain, persona, features), scored into a new table
four ways, interleaved, ROUNDS rounds:

  score_query serial     CREATE TABLE AS SELECT uid, id, score FROM pepnet_score_query(...)
                         with max_parallel_workers_per_gather = 0
  score_query parallel   the same statement with max_parallel_workers_per_gather = WORKERS: the
                         leader reads the data query, WORKERS parallel workers and the leader
                         score its blocks of 8,192 rows
  predict serial         CREATE TABLE AS SELECT uid, id, pepnet_predict(...) FROM the table
  predict parallel       the same under a Parallel Seq Scan (parallel costs 0, WORKERS workers)

Per job: wall time of the statement, and CPU time: the backend's (/proc/PID/stat utime + stime)
plus its parallel workers' (they are children of the postmaster, which reaps them when they exit:
the postmaster's cutime + cstime grow by their CPU; run this on a cluster of its own so that no
other backend exits meanwhile; the tables are made with autovacuum off, so that no autovacuum
worker's CPU is counted).  Needs to read /proc of the server's processes (same user or
root).  Checks after the first round: the parallel tables equal the serial ones row for row
(same keys, scores bit-identical).  Prints a markdown table (medians) to stdout.
"""
import argparse
import json
import os
import statistics
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf('SC_CLK_TCK')


def proc_times(pid):
    """(utime + stime, cutime + cstime) of a process, seconds"""
    with open(f'/proc/{pid}/stat') as f:
        s = f.read()
    fields = s[s.rindex(')') + 2:].split()
    # fields[0] is state (field 3): utime is field 14, stime 15, cutime 16, cstime 17
    return ((int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK)


def ppid(pid):
    with open(f'/proc/{pid}/stat') as f:
        s = f.read()
    return int(s[s.rindex(')') + 2:].split()[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--rows', type=int, default=200000)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--no-predict', action='store_true', help='leave out the two pepnet_predict jobs')
    args = ap.parse_args()

    con = psycopg2.connect('')
    con.autocommit = True
    cur = con.cursor()
    cur.execute("SET client_min_messages = warning")
    cur.execute("CREATE EXTENSION IF NOT EXISTS pepnet")
    cur.execute("SELECT count(*) FROM pepnet.models WHERE name = 'pbench'")
    if cur.fetchone()[0] == 0:
        with open(os.path.join(ROOT, 'bench', 'bench-config.json')) as f:
            cfg = f.read()
        cur.execute("SELECT pepnet_create('pbench', %s, 2)", (cfg,))
    users = max(1, args.rows // 1000)
    cur.execute("DROP TABLE IF EXISTS pb_big")
    cur.execute(f"""
        CREATE TABLE pb_big AS
        SELECT u AS uid, c AS id, u % 4 AS domain, ARRAY[u, u % 8, u % 100]::bigint[] AS persona,
               ARRAY[abs(hashint4(u * 1000 + c)) % 20000, c % 64, (u + c) % 24, abs(hashint4(c)) % 1000,
                     abs(hashint4(-c)) % 1000, abs(hashint4(u - c)) % 1000, (c * 7) % 1000, (u * 13 + c) % 1000]::bigint[] AS features
        FROM generate_series(1, {users}) u, generate_series(1, {args.rows // users}) c""")
    cur.execute("VACUUM ANALYZE pb_big")
    cur.execute("SELECT count(*), pg_size_pretty(pg_relation_size('pb_big')) FROM pb_big")
    nrows, size = cur.fetchone()
    cur.execute("SELECT pg_backend_pid(), version()")
    pid, version = cur.fetchone()
    postmaster = ppid(pid)
    cur.execute("SELECT pepnet_preload('pbench')")  # this backend's cache (shared when preloaded)
    cur.execute("SELECT count(*) FROM generate_series(0, 3) d, pepnet_score('pbench', d, '{1, 2, 3}', '{{1, 2, 3, 4, 5, 6, 7, 8}}') s")

    data = "SELECT uid, id, domain, persona, features FROM pb_big"
    sq = (f"CREATE TABLE pb_out WITH (autovacuum_enabled = off) AS SELECT uid, id, score, scores FROM pepnet_score_query('pbench', '{data}') "
          "AS t(uid int, id int, score float8, scores float8[])")
    pr = ("CREATE TABLE pb_out WITH (autovacuum_enabled = off) AS SELECT uid, id, pepnet_predict('pbench', domain, persona, features) AS score "
          "FROM pb_big")
    par = (f"SET max_parallel_workers_per_gather = {args.workers}; SET parallel_setup_cost = 0; "
           "SET parallel_tuple_cost = 0; SET min_parallel_table_scan_size = 0; SET parallel_leader_participation = on")
    ser = "SET max_parallel_workers_per_gather = 0"
    jobs = [('score_query serial', ser, sq), (f'score_query parallel ({args.workers} workers + leader)', par, sq)]
    if not args.no_predict:
        jobs += [('predict serial', ser, pr), (f'predict parallel ({args.workers} workers + leader)', par, pr)]

    res = {j[0]: [] for j in jobs}
    for rnd in range(args.rounds):
        for name, setting, stmt in jobs:
            cur.execute("DROP TABLE IF EXISTS pb_out")
            cur.execute("RESET ALL")
            cur.execute(setting)
            if stmt is pr:
                cur.execute("EXPLAIN " + stmt)
                plan = '\n'.join(r[0] for r in cur.fetchall())
                if ('parallel' in name) != ('Gather' in plan):
                    raise SystemExit(f'{name}: unexpected plan\n{plan}')
            time.sleep(0.5)
            b0, c0 = proc_times(pid)
            p0 = proc_times(postmaster)[1]
            t0 = time.monotonic()
            cur.execute(stmt)
            wall = time.monotonic() - t0
            time.sleep(0.5)  # the postmaster reaps the exited workers
            b1, c1 = proc_times(pid)
            p1 = proc_times(postmaster)[1]
            res[name].append({'wall': wall, 'backend': b1 - b0, 'workers': p1 - p0})
            print(f'round {rnd + 1} {name}: wall {wall:.2f} s, backend {b1 - b0:.2f} s, workers {p1 - p0:.2f} s',
                  flush=True)
            if rnd == 0:
                k = [j[0] for j in jobs].index(name)
                cur.execute(f"DROP TABLE IF EXISTS pb_keep_{k}")
                cur.execute(f"ALTER TABLE pb_out RENAME TO pb_keep_{k}")
    checks = []
    for a, b in ((0, 1), (2, 3)):
        if b >= len(jobs):
            continue
        cmp_scores = 'AND x.scores = y.scores' if a == 0 else ''
        cur.execute(f"""SELECT count(*), count(*) FILTER (WHERE x.score = y.score {cmp_scores})
                        FROM pb_keep_{a} x FULL JOIN pb_keep_{b} y USING (uid, id)""")
        n, same = cur.fetchone()
        checks.append(f'{jobs[b][0]} vs {jobs[a][0]}: {same} of {n} rows identical (keys and scores)')
        if n != nrows or same != n:
            raise SystemExit('MISMATCH: ' + checks[-1])
    diff = None
    if len(jobs) > 2:
        cur.execute("SELECT max(abs(x.score - y.score)) FROM pb_keep_0 x JOIN pb_keep_2 y USING (uid, id)")
        diff = cur.fetchone()[0]
    for k in range(len(jobs)):
        cur.execute(f"DROP TABLE IF EXISTS pb_keep_{k}")
    cur.execute("DROP TABLE IF EXISTS pb_out")

    med = lambda xs: statistics.median(xs)
    load = open('/proc/loadavg').read().split()[:3]
    print()
    print(f'{nrows:,} rows ({size}), {args.rounds} rounds interleaved, medians; {os.cpu_count()} CPUs, '
          f'load average {" / ".join(load)} at the end; {version.split(",")[0]}')
    print()
    print('| job | wall s | CPU s (backend + workers) | backend | workers | rows/s (wall) | CPU / wall |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    base = {}
    for name, _, _ in jobs:
        w = med([r['wall'] for r in res[name]])
        b = med([r['backend'] for r in res[name]])
        k = med([r['workers'] for r in res[name]])
        c = med([r['backend'] + r['workers'] for r in res[name]])
        base.setdefault(name.split()[0], w)
        print(f'| {name} | {w:.2f} | {c:.2f} | {b:.2f} | {k:.2f} | {nrows / w:,.0f} | {c / w:.2f} |')
    print()
    for name, _, _ in jobs:
        kind = name.split()[0]
        if 'parallel' in name:
            print(f'- {name}: wall-time speed-up {base[kind] / med([r["wall"] for r in res[name]]):.2f}x over {kind} serial')
    for c in checks:
        print('- ' + c)
    if diff is not None:
        print(f'- pepnet_predict vs pepnet_score_query: max |dp| {diff:.2e} (GEMVs vs the batched engine)')
    print()
    print('```json')
    print(json.dumps({'rows': nrows, 'workers': args.workers, 'runs': res}, indent=None))
    print('```')


if __name__ == '__main__':
    main()
