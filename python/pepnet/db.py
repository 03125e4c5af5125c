"""pepnet over psycopg2: versions to modules and back, scoring in SQL, training data out of SQL.

    import psycopg2, pepnet
    conn = psycopg2.connect("")                  # libpq environment (PGHOST, PGDATABASE, ...)
    v = pepnet.db.import_module(conn, "ctr", m)   # SELECT pepnet_import(...): a new version
    conn.commit()
    m2 = pepnet.db.load_module(conn, "ctr")       # the deployed (else latest) version as a module
    p = pepnet.db.score(conn, "ctr", 2, persona, features)   # pepnet_score in the database

The helpers run in the caller's transaction and never commit: call conn.commit().
"""
import json
import warnings

import numpy as np
import psycopg2

from .hashing import as_ids
from .model import StarPepNet
from . import safetensors

_OPTIONAL = "pn.num_batches_tracked"


def _split_ref(ref):
    """(name, version or None) of a model reference 'ctr' or 'ctr@7'."""
    if not isinstance(ref, str) or not ref:
        raise ValueError("a model reference is 'name' or 'name@version', got %r" % (ref,))
    name, at, v = ref.partition("@")
    if not at:
        return name, None
    if not v.isdigit() or int(v) < 1:
        raise ValueError("model reference %r: the version after @ must be a positive integer" % ref)
    return name, int(v)


def resolve(conn, ref):
    """(name, version, config dict, metrics dict, parent) of a reference: 'ctr@7', or 'ctr' = the
    deployed version, else the latest. LookupError if there is none."""
    name, version = _split_ref(ref)
    with conn.cursor() as cur:
        cur.execute("""SELECT m.name, m.version, m.config, m.metrics, m.parent FROM pepnet.models m
            WHERE m.name = %(n)s AND m.version = COALESCE(%(v)s::int,
                (SELECT d.version FROM pepnet.deployments d WHERE d.name = %(n)s),
                (SELECT max(x.version) FROM pepnet.models x WHERE x.name = %(n)s))""", {"n": name, "v": version})
        row = cur.fetchone()
    if row is None:
        raise LookupError("model %s does not exist in pepnet.models" % (
            "\"%s\" version %d" % (name, version) if version else "\"%s\"" % name))
    return row


def latest(conn, name):
    """The highest version number of a model name; LookupError if it has none."""
    with conn.cursor() as cur:
        cur.execute("SELECT max(version) FROM pepnet.models WHERE name = %s", (name,))
        v = cur.fetchone()[0]
    if v is None:
        raise LookupError("model \"%s\" does not exist in pepnet.models" % name)
    return v


def deployed(conn, name):
    """The deployed version of a model name, or None."""
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM pepnet.deployments WHERE name = %s", (name,))
        row = cur.fetchone()
    return row[0] if row else None


def export(conn, ref):
    """The safetensors bytes of a version (pepnet_export)."""
    with conn.cursor() as cur:
        cur.execute("SELECT pepnet_export(%s)", (ref,))
        return bytes(cur.fetchone()[0])


def load_module(conn, ref, device=None):
    """The version a reference names as a StarPepNet in eval mode, with its stored config and weights.

    The module's .version holds (name, version), .metrics the version's metrics.
    """
    name, version, config, metrics, _ = resolve(conn, ref)
    blob = export(conn, "%s@%d" % (name, version))
    m = StarPepNet.from_safetensors(config, blob)
    m.version, m.metrics = (name, version), metrics
    if device is not None:
        m.to(device)
    return m.eval()


def import_module(conn, name, module, metrics=None, parent=None):
    """Store a module's weights and config as a new version of name (pepnet_import); returns the version.

    metrics: an optional dict merged into the version's metrics (e.g. the PyTorch training history);
    parent: the version it was fine-tuned from (e.g. module.version[1] of a loaded module), so that
    the lineage continues through it. Either needs UPDATE on pepnet.models besides pepnet_import's rights.
    A server that predates pn.num_batches_tracked (extension 0.1.0) refuses that tensor: the version
    is then stored without it (a warning says so; scores do not depend on it).
    """
    tensors = module.tensors()
    config = module.config.to_dict()
    if config["inputs"] == "arrays":
        del config["inputs"]  # the default: also taken by servers before 0.3.0, which know no "inputs"
    config = json.dumps(config)
    version = _import(conn, name, config, tensors)
    if metrics is not None or parent is not None:
        with conn.cursor() as cur:
            cur.execute("UPDATE pepnet.models SET metrics = metrics || %s::jsonb, parent = COALESCE(%s, parent) "
                        "WHERE name = %s AND version = %s",
                        (json.dumps(metrics or {}), parent, name, version))
    return version


def _import(conn, name, config, tensors):
    """SELECT pepnet_import, retrying without pn.num_batches_tracked on a server that predates it."""
    sql = "SELECT pepnet_import(%s, %s::jsonb, %s::bytea)"
    savepoint = not conn.autocommit
    with conn.cursor() as cur:
        if savepoint:
            cur.execute("SAVEPOINT pepnet_import")
        try:
            cur.execute(sql, (name, config, psycopg2.Binary(safetensors.dumps(tensors))))
            version = cur.fetchone()[0]
        except psycopg2.Error as e:
            if not (e.pgcode == "22P03" and _OPTIONAL in str(e.pgerror) and _OPTIONAL in tensors):
                if savepoint:
                    cur.execute("ROLLBACK TO SAVEPOINT pepnet_import")
                raise
            if savepoint:
                cur.execute("ROLLBACK TO SAVEPOINT pepnet_import")
            warnings.warn("this pepnet server does not take %s (a build before 0.2.0's PN counter): the version "
                          "is stored without it, so its PN batch counts start at 0 (scores do not depend on them)"
                          % _OPTIONAL)
            tensors = {k: v for k, v in tensors.items() if k != _OPTIONAL}
            cur.execute(sql, (name, config, psycopg2.Binary(safetensors.dumps(tensors))))
            version = cur.fetchone()[0]
        if savepoint:
            cur.execute("RELEASE SAVEPOINT pepnet_import")
    return version


def score(conn, ref, domain, persona, features, dense=None):
    """Probabilities [N, T] from pepnet_score in the database: one request (domain, persona [P])
    and N candidates (features [N, F], dense [N, Nd] or None)."""
    features = as_ids(features, "features").numpy()
    persona = as_ids(persona, "persona").numpy()
    domain = as_ids(domain, "domain").reshape(-1)
    if domain.numel() != 1:
        raise ValueError("domain must be one int (one request), got %d values" % domain.numel())
    with conn.cursor() as cur:
        cur.execute("SELECT scores FROM pepnet_score(%s, %s, %s::bigint[], %s::bigint[], %s::real[]) ORDER BY idx",
                    (ref, int(domain[0]), persona.tolist(), features.tolist(),
                     None if dense is None else np.asarray(dense, dtype=np.float32).astype(np.float64).tolist()))
        rows = cur.fetchall()
    return np.array([r[0] for r in rows], dtype=np.float64).reshape(len(rows), -1)


_UUID_ARRAY = 2951  # the type OID of uuid[]


def fetch(conn, query, config, params=None):
    """Rows of a data query (columns domain, persona, features, optional dense, label or labels, as
    pepnet_train reads them) as numpy arrays {domain [B], persona [B, P], features [B, F],
    dense [B, Nd] or None, labels [B, T] with NaN = unknown}.

    With a config of "inputs": "columns", the named batch of the query instead: {column: [B] numpy
    object array} of every column (NULL as None, uuid as its text), which StarPepNet's forward,
    predict and loss take as it is."""
    from .config import Config
    c = Config(config)
    with conn.cursor() as cur:
        cur.execute(query, params)
        cols = [d.name for d in cur.description]
        types = [d.type_code for d in cur.description]
        rows = cur.fetchall()
    if c.named:
        out = {}
        for j, name in enumerate(cols):
            a = np.empty(len(rows), dtype=object)
            for i, r in enumerate(rows):
                v = r[j]
                if types[j] == _UUID_ARRAY and isinstance(v, str):
                    # psycopg2 leaves uuid[] as its text: a list of the uuids' texts (NULL elements None)
                    v = [None if x == "NULL" else x for x in v.strip("{}").split(",")] if v != "{}" else []
                a[i] = v  # one value per row, a list for an array column (a multi-valued field)
            out[name] = a
        return out
    for need in ("domain", "persona", "features"):
        if need not in cols:
            raise ValueError("data query has no column %r (it returns %s)" % (need, ", ".join(cols)))
    col = {n: i for i, n in enumerate(cols)}
    B = len(rows)
    out = {"domain": np.array([r[col["domain"]] for r in rows], dtype=np.int64),
           "persona": np.array([r[col["persona"]] or [] for r in rows], dtype=np.int64).reshape(B, len(c.persona)),
           "features": np.array([r[col["features"]] for r in rows], dtype=np.int64).reshape(B, len(c.features)),
           "dense": None, "labels": None}
    if c.dense:
        out["dense"] = np.array([r[col["dense"]] for r in rows], dtype=np.float32).reshape(B, c.dense)
    if "labels" in col:
        out["labels"] = np.array([[np.nan if x is None else float(x) for x in r[col["labels"]]] for r in rows],
                                 dtype=np.float32).reshape(B, c.T)
    elif "label" in col:
        out["labels"] = np.array([np.nan if r[col["label"]] is None else float(r[col["label"]]) for r in rows],
                                 dtype=np.float32).reshape(B, 1)
    return out


def score_query(conn, module, query, params=None, batch_size=4096):
    """The module's probabilities [B, T] for the rows of a data query (scored in PyTorch); for a module
    of "inputs": "columns", a query whose columns carry its fields by name."""
    import torch
    data = fetch(conn, query, module.config, params)
    B = len(next(iter(data.values()))) if module.config.named else len(data["domain"])
    out = []
    for s in range(0, B, batch_size):
        e = min(B, s + batch_size)
        if module.config.named:
            out.append(module.predict({k: v[s:e] for k, v in data.items()}))
            continue
        out.append(module.predict(data["domain"][s:e], data["persona"][s:e], data["features"][s:e],
                                  None if data["dense"] is None else data["dense"][s:e]))
    return torch.cat(out).cpu().numpy() if out else np.zeros((0, module.config.T))


def lineage(conn, ref):
    """The version a reference names and its parent chain, oldest first: a list of
    {name, version, parent, created_at, metrics, config}."""
    name, version, _, _, _ = resolve(conn, ref)
    with conn.cursor() as cur:
        cur.execute("""WITH RECURSIVE chain AS (
                SELECT m.name, m.version, m.parent, m.created_at, m.metrics, m.config, 1 AS depth
                FROM pepnet.models m WHERE m.name = %(n)s AND m.version = %(v)s
              UNION ALL
                SELECT m.name, m.version, m.parent, m.created_at, m.metrics, m.config, c.depth + 1
                FROM pepnet.models m JOIN chain c ON m.name = c.name AND m.version = c.parent
                WHERE c.depth < 100000)
            SELECT name, version, parent, created_at, metrics, config FROM chain ORDER BY depth DESC""",
                    {"n": name, "v": version})
        return [dict(zip(("name", "version", "parent", "created_at", "metrics", "config"), r)) for r in cur.fetchall()]
