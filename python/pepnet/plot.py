"""Training curves of a version's lineage as a PNG.

    PYTHONPATH=python /usr/bin/python3 -m pepnet.plot demo -o demo.png [--task click] [--dsn "dbname=x"]

Follows the parent chain of a version ('demo@3'; a bare name 'demo' means its latest version) back
to its first version and draws, per version in order (x: version and epoch), the deployed version
marked in green:
  1. train loss and validation logloss (all domains),
  2. validation logloss per domain,
  3. validation AUC per domain,
  4. calibration per domain: PCOC = mean predicted probability / actual rate (1 = calibrated).
Values come from pepnet.models.metrics (keys of pepnet_train: train_loss, validation.logloss,
validation.tasks.<task>.{logloss, auc, domains.<d>.{logloss, auc, ...}}); calibration from
``pcoc`` or the ratio of a mean prediction to an actual rate where the metrics have them. Keys
a version lacks are left out of its panel (a gap), never an error. Needs python3-matplotlib.
Connection: libpq's environment (PGHOST, PGPORT, PGDATABASE, ...) or --dsn.

Several runs side by side (since 0.3.0):

    PYTHONPATH=python /usr/bin/python3 -m pepnet.plot --compare ctr -o runs.png [--source holdout]
    PYTHONPATH=python /usr/bin/python3 -m pepnet.plot --compare ctr@2 ctr@4 other@7 -o runs.png

A bare name stands for every run of that name (each version no other version continues from, e.g.
the last epoch of each run of a grid); 'name@v' for that version. Draws 2x2 panels: the validation
logloss and AUC of each run's lineage per epoch (one curve per run), and per-domain AUC and PCOC
bars of each run's version (one bar per run), from its validation or, with --source, from a
recorded evaluation (pepnet_evaluate(model, data, record => 'holdout')).
"""
import argparse
import math
import sys

PRED_KEYS = ("mean_pred", "mean_predicted", "predicted", "avg_pred", "pred_mean", "mean_p")
ACTUAL_KEYS = ("actual_rate", "actual", "mean_label", "label_rate", "ctr", "actual_mean")


def _num(v):
    """v as a finite float, else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def pcoc(d):
    """Calibration (predicted / actual) of one metrics group dict, or None if it has none."""
    if not isinstance(d, dict):
        return None
    for k in ("pcoc", "PCOC", "calibration"):
        if _num(d.get(k)) is not None:
            return _num(d.get(k))
    p = next((_num(d.get(k)) for k in PRED_KEYS if _num(d.get(k)) is not None), None)
    a = next((_num(d.get(k)) for k in ACTUAL_KEYS if _num(d.get(k)) is not None), None)
    if p is not None and a:
        return p / a
    return None


def series(chain, task=None):
    """Curves of a lineage (list of {version, metrics}, oldest first) for one task.

    Returns (task name or None, x labels, {curve: [value or None per version]}, {domain: {metric: [...]}}).
    """
    if task is None:  # the config's first task (jsonb does not keep the metrics' key order)
        for row in reversed(chain):
            tasks = (row.get("config") or {}).get("tasks")
            if tasks:
                task = tasks[0]
                break
    if task is None:
        for row in chain:
            tasks = ((row.get("metrics") or {}).get("validation") or {}).get("tasks") or {}
            if tasks:
                task = next(iter(tasks))
                break
    labels, overall, domains = [], {"train loss": [], "validation logloss": [], "validation AUC": [],
                                     "validation PCOC": []}, {}
    n = len(chain)
    for i, row in enumerate(chain):
        m = row.get("metrics") or {}
        ep = m.get("epoch")
        src = m.get("source") if isinstance(m.get("source"), str) else None
        labels.append("v%s%s" % (row["version"], "\nep %s" % ep if ep is not None else "\n%s" % src[:12] if src else ""))
        val = m.get("validation") or {}
        t = (val.get("tasks") or {}).get(task) or {} if task is not None else {}
        overall["train loss"].append(_num(m.get("train_loss")))
        overall["validation logloss"].append(_num(t.get("logloss", val.get("logloss"))))
        overall["validation AUC"].append(_num(t.get("auc", val.get("auc"))))
        overall["validation PCOC"].append(pcoc(t) if t else pcoc(val))
        for d, dm in (t.get("domains") or {}).items():
            slot = domains.setdefault(str(d), {"logloss": [None] * n, "auc": [None] * n, "pcoc": [None] * n})
            slot["logloss"][i] = _num((dm or {}).get("logloss"))
            slot["auc"][i] = _num((dm or {}).get("auc"))
            slot["pcoc"][i] = pcoc(dm)
    domains = dict(sorted(domains.items(), key=lambda kv: (len(kv[0]), kv[0])))
    return task, labels, overall, domains


def plot_lineage(chain, out, task=None, title=None, deployed=None):
    """Draw the four panels of a lineage to the PNG file out; returns the task drawn.

    deployed: a version number to mark in every panel (when it is in the chain)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task, labels, overall, domains = series(chain, task)
    x = list(range(len(chain)))
    fig, axes = plt.subplots(2, 2, figsize=(15, 8.5), constrained_layout=True)
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>p"

    def draw(ax, ys, label, color, marker, style="-"):
        pts = [(xi, y) for xi, y in zip(x, ys) if y is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=color, marker=marker, label=label,
                    linewidth=1.8, markersize=6 if len(x) <= 20 else 4, markevery=max(1, len(pts) // 20))
        return bool(pts)

    mark = next((i for i, row in enumerate(chain) if deployed is not None and row["version"] == deployed), None)

    def finish(ax, title_, ylabel, drew, empty, outside=False):
        if mark is not None:
            ax.axvline(mark, color="tab:green", linewidth=6, alpha=0.15, label="deployed (v%s)" % deployed)
        ax.set_title(title_)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("version (epoch), oldest first")
        step = max(1, math.ceil(len(x) / 16))   # at most 16 tick labels, the last one always
        ticks = [t for t in x[::step] if x[-1] - t >= step] + x[-1:]
        ax.set_xticks(ticks)
        ax.set_xticklabels([labels[i] for i in ticks], fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(-0.3, len(x) - 0.7)
        if drew and outside:  # per-domain panels: the legend beside the axes, off the curves
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if len(domains) <= 12 else 2)
        elif drew:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", color="gray", wrap=True)

    ax = axes[0][0]
    d1 = draw(ax, overall["train loss"], "train loss (summed over all tasks)", "tab:blue", "o")
    d2 = draw(ax, overall["validation logloss"], "validation logloss (this task, all domains)", "black", "s", "--")
    finish(ax, "Loss", "logloss (binary cross-entropy)", d1 or d2, "no train_loss or validation logloss in metrics")

    panels = (("logloss", axes[0][1], "Validation logloss per domain", "logloss", "validation logloss"),
              ("auc", axes[1][0], "Validation AUC per domain", "AUC", "validation AUC"),
              ("pcoc", axes[1][1], "Calibration per domain (PCOC = predicted / actual)", "PCOC",
               "validation PCOC"))
    for key, ax, ttl, ylabel, okey in panels:
        drew = False
        for j, (d, curves) in enumerate(domains.items()):
            drew |= draw(ax, curves[key], "domain %s" % d, colors[j % len(colors)], markers[j % len(markers)])
        drew |= draw(ax, overall[okey], "all domains", "black", "s", "--")
        if key == "pcoc" and drew:
            ax.axhline(1.0, color="gray", linewidth=1, linestyle=":")
        finish(ax, ttl, ylabel, drew,
               "no calibration metrics in this lineage\n(mean predicted / actual rate per domain)"
               if key == "pcoc" else "no validation %s in metrics\n(train with a validation query)" % ylabel,
               outside=True)

    if title is None and chain:
        title = "pepnet model \"%s\": lineage v%s \u2192 v%s%s" % (
            chain[0].get("name", "?"), chain[0]["version"], chain[-1]["version"],
            ", task \"%s\"" % task if task else "")
    fig.suptitle(title or "pepnet lineage", fontsize=13)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return task


def _run_label(chain):
    """A short label of a run: name@version, parts and hidden sizes, lr."""
    row = chain[-1]
    c = row.get("config") or {}
    m = row.get("metrics") or {}
    parts = "+".join(p for p in ("star", "pn", "epnet", "ppnet", "aux") if c.get(p, True) is not False) or "mlp"
    hidden = "x".join(str(h) for h in (c.get("hidden") or [])) or "-"
    lr = m.get("lr")
    return "%s@%s %s h%s%s" % (row.get("name", "?"), row["version"], parts, hidden,
                               " lr%g" % lr if isinstance(lr, (int, float)) else "")


def _figures(row, source, task):
    """The (task figures dict) of a version from its validation or a recorded evaluation."""
    m = row.get("metrics") or {}
    src = m.get("validation") if source in (None, "validation") else (m.get("evaluations") or {}).get(source)
    src = src or {}
    return ((src.get("tasks") or {}).get(task) or {}) if task is not None else {}


def plot_compare(chains, out, task=None, source=None, title=None):
    """Draw several runs (each a lineage, oldest first, as db.lineage returns) side by side to the PNG
    file out.  Returns {"task", "runs", "axes", "domains"}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if task is None:
        for chain in chains:
            task = series(chain)[0]
            if task is not None:
                break
    colors = plt.get_cmap("tab10").colors
    markers = "osD^vP*Xh<>p"
    fig, axes = plt.subplots(2, 2, figsize=(15, 9), constrained_layout=True)
    labels = [_run_label(c) for c in chains]
    # curves: x = the lineage's epoch (1-based position in the chain)
    for key, ax, ttl in (("logloss", axes[0][0], "Validation logloss per epoch (all domains)"),
                         ("auc", axes[0][1], "Validation AUC per epoch (all domains)")):
        drew = False
        for j, chain in enumerate(chains):
            pts = []
            for i, row in enumerate(chain):
                t = _figures(row, "validation", task)
                y = _num(t.get(key))
                if y is not None:
                    pts.append((i + 1, y))
            if pts:
                drew = True
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=colors[j % len(colors)],
                        marker=markers[j % len(markers)], label=labels[j], linewidth=1.8, markersize=5)
        ax.set_title(ttl)
        ax.set_xlabel("epoch of the run's lineage")
        ax.set_ylabel(key if key == "logloss" else "AUC")
        ax.grid(True, alpha=0.3)
        if drew:
            ax.legend(fontsize=8, loc="best")
            ax.xaxis.get_major_locator().set_params(integer=True)
        else:
            ax.text(0.5, 0.5, "no validation %s in these runs" % key, transform=ax.transAxes, ha="center",
                    va="center", color="gray")
    # bars: one group per domain (and "all"), one bar per run
    domains = set()
    for chain in chains:
        domains |= set((_figures(chain[-1], source, task).get("domains") or {}).keys())
    domains = sorted(domains, key=lambda d: (len(d), d))
    groups = domains + ["all"]
    n = max(1, len(chains))
    width = 0.8 / n
    src_name = source or "validation"
    for key, ax, ttl in (("auc", axes[1][0], "AUC per domain (%s; runs coloured as above)" % src_name),
                         ("pcoc", axes[1][1], "Calibration per domain: PCOC (%s; runs coloured as above)" % src_name)):
        drew = False
        for j, chain in enumerate(chains):
            t = _figures(chain[-1], source, task)
            ys = []
            for g in groups:
                d = t if g == "all" else (t.get("domains") or {}).get(g) or {}
                ys.append((pcoc(d) if key == "pcoc" else _num(d.get(key))) if d else None)
            xs = [k + (j - (n - 1) / 2) * width for k in range(len(groups))]
            pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
            if pts:
                drew = True
                ax.bar([p[0] for p in pts], [p[1] for p in pts], width=width * 0.95, color=colors[j % len(colors)],
                       label=labels[j])
        ax.set_xticks(list(range(len(groups))))
        ax.set_xticklabels(["domain %s" % g if g != "all" else "all domains" for g in groups],
                           fontsize=8 if len(groups) <= 12 else 6, rotation=0 if len(groups) <= 8 else 45)
        ax.set_title(ttl)
        ax.set_ylabel("AUC" if key == "auc" else "PCOC (predicted / actual)")
        ax.grid(True, axis="y", alpha=0.3)
        if key == "auc" and drew:
            lo = min(p.get_height() for p in ax.patches)
            ax.set_ylim(max(0.0, min(0.5, lo - 0.05)), 1.0)
        if key == "pcoc" and drew:
            ax.axhline(1.0, color="gray", linewidth=1, linestyle=":")
        if not drew:
            ax.text(0.5, 0.5, "no %s figures with %s in these runs" % (src_name, key.upper()), transform=ax.transAxes,
                    ha="center", va="center", color="gray")
    fig.suptitle(title or "pepnet: %d run(s) compared%s" % (len(chains), ", task \"%s\"" % task if task else ""),
                 fontsize=13)
    fig.savefig(out, dpi=100)
    naxes = len(fig.axes)
    plt.close(fig)
    return {"task": task, "runs": len(chains), "axes": naxes, "domains": len(domains)}


def leaves(conn, name):
    """The runs of a model name: its versions no other version of the name continues from."""
    with conn.cursor() as cur:
        cur.execute("""SELECT m.version FROM pepnet.models m
            WHERE m.name = %(n)s AND NOT EXISTS (SELECT 1 FROM pepnet.models c WHERE c.name = m.name AND c.parent = m.version)
            ORDER BY m.version""", {"n": name})
        return [r[0] for r in cur.fetchall()]


def main_compare(args):
    """python -m pepnet.plot --compare REF [REF ...]"""
    import psycopg2
    from . import db
    try:
        conn = psycopg2.connect(args.dsn)
    except psycopg2.Error as e:
        print("pepnet.plot: cannot connect: %s" % str(e).strip(), file=sys.stderr)
        return 1
    conn.autocommit = True
    chains = []
    try:
        for ref in args.model:
            name, version = db._split_ref(ref)
            versions = [version] if version is not None else leaves(conn, name)
            if not versions:
                raise LookupError("model \"%s\" does not exist" % name)
            for v in versions:
                chains.append(db.lineage(conn, "%s@%d" % (name, v)))
    except (LookupError, ValueError, psycopg2.Error) as e:
        print("pepnet.plot: %s" % str(e).strip(), file=sys.stderr)
        return 1
    finally:
        conn.close()
    if args.source not in (None, "validation") and not any(
            args.source in ((c[-1].get("metrics") or {}).get("evaluations") or {}) for c in chains):
        print("pepnet.plot: no run has an evaluation %r (record one with pepnet_evaluate(model, data, record => %r))"
              % (args.source, args.source), file=sys.stderr)
        return 1
    out = args.output or "%s-runs.png" % chains[0][-1]["name"]
    try:
        info = plot_compare(chains, out, args.task, args.source)
    except OSError as e:
        print("pepnet.plot: cannot write %s: %s" % (out, e.strerror or e), file=sys.stderr)
        return 1
    print("wrote %s: %d run(s) (%s), %d panels, %d domain(s)%s" % (
        out, info["runs"], ", ".join("%s@%s" % (c[-1]["name"], c[-1]["version"]) for c in chains), info["axes"],
        info["domains"], ", task %s" % info["task"] if info["task"] else ""))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m pepnet.plot",
                                 description="Draw a pepnet version's lineage (train loss, validation logloss, "
                                             "AUC and calibration per domain, per epoch) to a PNG.")
    ap.add_argument("model", nargs="+", help="'name' (the lineage of its latest version) or 'name@version'; "
                    "with --compare, one or more: a bare name = each run of that name")
    ap.add_argument("--compare", action="store_true",
                    help="draw several runs side by side (validation curves, per-domain AUC and PCOC bars)")
    ap.add_argument("--source", help="with --compare: the bars' figures from this recorded evaluation "
                    "(default: each version's validation)")
    ap.add_argument("-o", "--output", help="PNG file to write (default: <name>-lineage.png)")
    ap.add_argument("--task", help="task to draw (default: the config's first task)")
    ap.add_argument("--dsn", default="", help="libpq connection string (default: the PG* environment)")
    args = ap.parse_args(argv)
    import importlib.util
    if importlib.util.find_spec("matplotlib") is None:
        print("pepnet.plot needs matplotlib: apt-get install python3-matplotlib", file=sys.stderr)
        return 2
    if args.compare:
        return main_compare(args)
    if len(args.model) != 1:
        print("pepnet.plot: one model reference draws its lineage; use --compare for several", file=sys.stderr)
        return 2
    args.model = args.model[0]
    import psycopg2
    from . import db
    try:
        conn = psycopg2.connect(args.dsn)
    except psycopg2.Error as e:
        print("pepnet.plot: cannot connect: %s" % str(e).strip(), file=sys.stderr)
        return 1
    conn.autocommit = True
    try:
        name, version = db._split_ref(args.model)
        if version is None:   # a bare name: the latest version's lineage, the deployed one marked
            version = db.latest(conn, name)
        chain = db.lineage(conn, "%s@%d" % (name, version))
        dep = db.deployed(conn, name)
    except (LookupError, ValueError, psycopg2.Error) as e:
        print("pepnet.plot: %s" % str(e).strip(), file=sys.stderr)
        return 1
    finally:
        conn.close()
    out = args.output or "%s-lineage.png" % chain[-1]["name"]
    if args.task:
        known = set()
        for row in chain:
            known |= set((((row["metrics"] or {}).get("validation") or {}).get("tasks") or {}))
            known |= set(((row.get("config") or {}).get("tasks")) or [])
        if args.task not in known:
            print("pepnet.plot: task %r has no metrics in this lineage; tasks: %s" % (args.task, ", ".join(sorted(known))),
                  file=sys.stderr)
            return 1
    try:
        task = plot_lineage(chain, out, args.task, deployed=dep)
    except OSError as e:
        print("pepnet.plot: cannot write %s: %s" % (out, e.strerror or e), file=sys.stderr)
        return 1
    print("wrote %s: %d version(s) of \"%s\" (v%s to v%s)%s%s" % (
        out, len(chain), chain[-1]["name"], chain[0]["version"], chain[-1]["version"],
        ", task %s" % task if task else "",
        ", deployed v%d marked" % dep if dep is not None and any(r["version"] == dep for r in chain) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
