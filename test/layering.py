#!/usr/bin/env python3
"""test/layering.py [DIR]: which file of the glue (src/*.c) uses which: an edge a -> b
when a.c calls a function or names a variable that b.c defines with external linkage.
Prints the edges and every cycle (strongly connected component of more than one file);
exits 1 when there is a cycle other than the shared-memory hub (docs/source-layout.md)."""
import re, glob, os, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = sorted(glob.glob(os.path.join(root, '*.c')))
strip = lambda s: re.sub(r'//.*|/\*.*?\*/|"(\\.|[^"\\])*"', ' ', s, flags=re.S)
defs, text, isfn = {}, {}, set()
for f in files:
    s = strip(open(f).read()); text[f] = s
    for m in re.finditer(r'^(?!static\b)[A-Za-z][^\n;(]*?\n([a-z_][a-z_0-9]*)\(', s, re.M):
        defs.setdefault(m.group(1), f); isfn.add(m.group(1))
    for m in re.finditer(r'^(?!static\b|extern\b|typedef\b)[A-Za-z][\w\s\*]*?\b([a-z_][a-z_0-9]*)\s*(=[^;]*)?;', s, re.M):
        defs.setdefault(m.group(1), f)
edges = {f: set() for f in files}
for f in files:
    used = set(re.findall(r'\b([a-z_][a-z_0-9]*)\s*\(', text[f])) | \
        {w for w in re.findall(r'\b[a-z_][a-z_0-9]*\b', text[f]) if w not in isfn}
    for w in used:
        g = defs.get(w)
        if g and g != f:
            edges[f].add(g)
n = lambda f: os.path.basename(f)
for f in files:
    print(f"{n(f):14s} -> {' '.join(sorted(n(g) for g in edges[f]))}")
# Tarjan
idx, low, st, on, sccs, c = {}, {}, [], set(), [], [0]
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in files:
    if v not in idx: sc(v)
cyc = [sorted(n(x) for x in s) for s in sccs if len(s) > 1]
print("cycles:", cyc if cyc else "none")
HUB = ['progress.c', 'shcache.c', 'shmem.c']
sys.exit(0 if all(c == HUB for c in cyc) else 1)
