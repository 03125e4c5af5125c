"""The model configuration (docs/model.md, "Configuration"), with the extension's defaults and limits.

``Config(d)`` takes the jsonb dict (or its JSON text) that ``pepnet_create``, ``pepnet_import`` and
``pepnet_train`` take, fills in the defaults and checks the same limits as the extension, raising
ConfigError (a ValueError) that names the key to fix. ``Config.to_dict()`` is the config with every
default filled in, as ``pepnet.models.config`` stores it.

Two input forms (docs/model.md, "Named inputs (since 0.3.0)"): ``"inputs": "arrays"`` (the default, the
0.2 positional form) and ``"inputs": "columns"`` (fields bound to columns by name, with ``"nullable"``,
``"dense"`` as an array of ``{"name": column}`` and ``"domain_column"``).
"""
import json
import math

import numpy as np

DEFAULTS = {"persona": [], "dense": 0, "emb_dim": 16, "tasks": ["click"], "hidden": [256, 128],
            "gamma": 2.0, "epnet": True, "epnet_hidden": None, "ppnet": True, "pn": True,
            "star": True, "aux": True, "aux_hidden": 32, "l2": 0.0, "negative_rate": None,
            "domain_input": False}
KEYS = ("domains", "features") + tuple(DEFAULTS) + ("inputs", "domain_column")
INPUTS = ("arrays", "columns")
FIELD_KEYS = ("name", "buckets", "hash")
NAMED_FIELD_KEYS = FIELD_KEYS + ("nullable", "id", "pooling", "weights", "min_count")
POOLINGS = ("sum", "mean")
ID_KINDS = ("integer", "text")

MAX_DOMAINS = 100000
MAX_FIELDS = 1024
MAX_BUCKETS = 1 << 31
MAX_EMB_DIM = 1024
MAX_DENSE = 65536
MAX_TASKS = 64
MAX_LAYERS = 8
MAX_WIDTH = 65536
MAX_NAME = 63


class ConfigError(ValueError):
    """An invalid model configuration."""


def _int(v, key, lo, hi):
    """An integer config value within [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and v != math.floor(v)):
        raise ConfigError("config %s must be an integer, got %r" % (key, v))
    if not lo <= v <= hi:
        raise ConfigError("config %s is %r, out of range: it must be between %d and %d" % (key, v, lo, hi))
    return int(v)


def _bool(v, key):
    """A boolean config value."""
    if not isinstance(v, bool):
        raise ConfigError("config %s must be true or false, got %r" % (key, v))
    return v


def _num(v, key, lo, hi):
    """A number stored as float32 (as the extension stores it), within [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        raise ConfigError("config %s must be a number between %g and %g, got %r" % (key, lo, hi, v))
    return float(np.float32(v))


def _name(v, what):
    """A name of 1 to 63 bytes of UTF-8 (a column name's limit)."""
    if not isinstance(v, str) or not 1 <= len(v.encode("utf-8")) <= MAX_NAME:
        raise ConfigError("config %s must be a string of 1 to %d bytes (UTF-8), got %r" % (what, MAX_NAME, v))
    return v


def _fields(v, key, named=False):
    """A list of {name, buckets, hash} field specs ({name, buckets, hash, nullable} in the named form)."""
    allowed = NAMED_FIELD_KEYS if named else FIELD_KEYS
    if not isinstance(v, list):
        raise ConfigError('config "%s" must be an array of {%s} objects'
                          % (key, ", ".join('"%s"' % a for a in allowed)))
    if len(v) > MAX_FIELDS:
        raise ConfigError('config "%s" has %d fields, more than the limit of %d' % (key, len(v), MAX_FIELDS))
    out, names = [], set()
    for i, f in enumerate(v):
        where = '"%s"[%d]' % (key, i)
        if not isinstance(f, dict):
            raise ConfigError("config %s must be an object with name and buckets" % where)
        for k in ("nullable", "id", "pooling", "weights", "min_count"):
            if not named and k in f:
                raise ConfigError('config %s has the key "%s" of the named form: it needs "inputs": "columns" '
                                  '(the fields of an "arrays" config are positions of the features/persona arrays)'
                                  % (where, k))
        extra = set(f) - set(allowed)
        if extra:
            raise ConfigError("config %s has unknown keys %s (allowed: %s)" % (where, sorted(extra), ", ".join(allowed)))
        if "name" not in f or "buckets" not in f:
            raise ConfigError("config %s needs a name and a buckets count" % where)
        name = _name(f["name"], where + ".name")
        if name in names:
            raise ConfigError('config "%s" names the field "%s" twice' % (key, name))
        names.add(name)
        field = {"name": name, "buckets": _int(f["buckets"], where + ".buckets", 1, MAX_BUCKETS),
                 "hash": _bool(f.get("hash", True), where + ".hash")}
        if named:
            field["nullable"] = _bool(f.get("nullable", True), where + ".nullable")
            if "id" in f:
                if f["id"] not in ID_KINDS:
                    raise ConfigError('config %s.id must be "integer" or "text", got %r' % (where, f["id"]))
                field["id"] = f["id"]
            if "pooling" in f:
                if f["pooling"] not in POOLINGS:
                    raise ConfigError('config %s.pooling must be "sum" or "mean" (a multi-valued field: its column '
                                      'holds a list of ids per row), got %r' % (where, f["pooling"]))
                field["pooling"] = f["pooling"]
            if "weights" in f:
                if "pooling" not in f:
                    raise ConfigError('config %s has "weights" but no "pooling": the weights column belongs to a '
                                      'multi-valued field' % where)
                field["weights"] = _name(f["weights"], where + ".weights")
            if "min_count" in f:
                mc = f["min_count"]
                if isinstance(mc, bool) or not isinstance(mc, int) or not 1 <= mc <= 2 ** 31 - 1:
                    raise ConfigError('config field "%s": "min_count" must be an integer of at least 1, got %r'
                                      % (name, mc))
                if not field["hash"]:
                    raise ConfigError('config field "%s": "min_count" needs a hashed field, not "hash": false' % name)
                field["min_count"] = mc
        out.append(field)
    return out


DENSE_KEYS = ("name", "log1p", "clip", "normalize", "mean", "std")


def _finite32(v):
    """A finite number as the float32 the extension stores, or None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    with np.errstate(over="ignore"):
        x = float(np.float32(v))
    return x if math.isfinite(x) else None


def _dense_field(f, where):
    """One named dense field {"name", "log1p", "clip", "normalize", "mean", "std"} (docs/model.md, "Named
    inputs", dense transforms), written back as the extension writes it: keys only when set, numbers as float32."""
    name = _name(f["name"], where + ".name")
    out = {"name": name}
    what = 'config dense field "%s"' % name
    if "log1p" in f:
        if not isinstance(f["log1p"], bool):
            raise ConfigError('%s: "log1p" must be true or false, got %r' % (what, f["log1p"]))
        if f["log1p"]:
            out["log1p"] = True
    if "clip" in f:
        c = f["clip"]
        lo, hi = (_finite32(c[0]), _finite32(c[1])) if isinstance(c, (list, tuple)) and len(c) == 2 else (None, None)
        if lo is None or hi is None or not lo < hi:
            raise ConfigError('%s: "clip" must be [lo, hi], two finite numbers with lo < hi, got %r' % (what, c))
        out["clip"] = [lo, hi]
    if "normalize" in f:
        if f["normalize"] != "zscore":
            raise ConfigError('%s: "normalize" must be "zscore", got %r' % (what, f["normalize"]))
        out["normalize"] = "zscore"
    if "mean" in f or "std" in f:
        if "normalize" not in out:
            raise ConfigError('%s has "mean" or "std" without "normalize": "zscore"' % what)
        mean, std = _finite32(f.get("mean")), _finite32(f.get("std"))
        if mean is None or std is None or not std >= float(np.finfo(np.float32).tiny):
            raise ConfigError('%s: "mean" and "std" must both be given, finite, with std >= %g (a normal float32; '
                              'leave both out and training computes them)' % (what, float(np.finfo(np.float32).tiny)))
        out["mean"], out["std"] = mean, std
    return out


def _dense_fields(v):
    """The named form's "dense": an array of {"name": column} objects with their transforms (0, as a stored
    arrays config has it: none)."""
    if v == 0 and not isinstance(v, bool):
        return []
    if not isinstance(v, list):
        raise ConfigError('config "dense" must be an array of {"name": column} objects with "inputs": "columns" '
                          '(a count of dense features, %r, is the "arrays" form)' % (v,))
    if len(v) > MAX_DENSE:
        raise ConfigError('config "dense" has %d fields, more than the limit of %d' % (len(v), MAX_DENSE))
    out = []
    for i, f in enumerate(v):
        where = '"dense"[%d]' % i
        if not isinstance(f, dict) or "name" not in f:
            raise ConfigError('config %s must be an object {"name": column}, got %r' % (where, f))
        extra = set(f) - set(DENSE_KEYS)
        if extra:
            raise ConfigError("config %s has unknown keys %s (allowed: %s)" % (where, sorted(extra), ", ".join(DENSE_KEYS)))
        out.append(_dense_field(f, where))
    return out


class Config:
    """A parsed configuration; attributes hold the values, defaults filled in.

    inputs ("arrays" or "columns"; named is True for "columns"), domain_column ("domain" unless the
    named form sets it), domains (D), features and persona (lists of {name, buckets, hash}, plus
    nullable in the named form), dense (Nd), dense_fields (the named form's [{name}], else None), emb_dim (k),
    tasks (names, T of them), hidden (h_1..h_L), gamma, epnet, epnet_hidden (he), ppnet, pn, star,
    aux, aux_hidden (ha), l2, negative_rate ([D] floats or None), domain_input; derived:
    n0 = F*k + Nd (+ k with domain_input), T.
    """

    def __init__(self, d):
        if isinstance(d, Config):
            d = d.to_dict()
        if isinstance(d, (str, bytes)):
            try:
                d = json.loads(d)
            except ValueError as e:
                raise ConfigError("config is not valid JSON: %s" % e) from None
        if not isinstance(d, dict):
            raise ConfigError("config must be a JSON object, got %s" % type(d).__name__)
        unknown = sorted(set(d) - set(KEYS))
        if unknown:
            raise ConfigError("config has unknown keys %s; the keys are %s" % (unknown, ", ".join(KEYS)))
        for key in ("domains", "features"):
            if key not in d:
                raise ConfigError('config needs "%s"' % key)
        v = dict(DEFAULTS)
        v.update(d)
        self.inputs = v.get("inputs", "arrays")
        if self.inputs not in INPUTS:
            raise ConfigError('config "inputs" must be "arrays" (the positional features/persona/dense arrays) or '
                              '"columns" (fields bound to columns by name), got %r' % (self.inputs,))
        named = self.inputs == "columns"
        if not named:
            if "domain_column" in d:
                raise ConfigError('config "domain_column" is a key of the named form: it needs "inputs": "columns" '
                                  '(the "arrays" form reads the domain from column "domain")')
            if isinstance(v["dense"], list):
                raise ConfigError('config "dense" is an array of columns, the named form: it needs "inputs": "columns" '
                                  '(with "inputs": "arrays", "dense" is the number of dense features)')
        self.domains = _int(v["domains"], '"domains"', 1, MAX_DOMAINS)
        self.features = _fields(v["features"], "features", named)
        self.persona = _fields(v["persona"], "persona", named)
        if named:
            self.dense_fields = _dense_fields(v["dense"] if "dense" in d else [])
            self.dense = len(self.dense_fields)
            self.domain_column = _name(v.get("domain_column", "domain"), '"domain_column"')
        else:
            self.dense_fields = None
            self.dense = _int(v["dense"], '"dense"', 0, MAX_DENSE)
            self.domain_column = "domain"
        self.emb_dim = _int(v["emb_dim"], '"emb_dim"', 1, MAX_EMB_DIM)
        if not isinstance(v["tasks"], list) or not 1 <= len(v["tasks"]) <= MAX_TASKS:
            raise ConfigError('config "tasks" must be an array of 1 to %d task names' % MAX_TASKS)
        self.tasks = [_name(t, '"tasks"[%d]' % i) for i, t in enumerate(v["tasks"])]
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError('config "tasks" names a task twice: %s' % self.tasks)
        if named:
            self._check_columns()
        if not isinstance(v["hidden"], list) or not 1 <= len(v["hidden"]) <= MAX_LAYERS:
            raise ConfigError('config "hidden" must be an array of 1 to %d layer widths' % MAX_LAYERS)
        self.hidden = [_int(h, '"hidden"[%d]' % i, 1, MAX_WIDTH) for i, h in enumerate(v["hidden"])]
        self.gamma = _num(v["gamma"], '"gamma"', 1e-6, 1e6)
        for key in ("epnet", "ppnet", "pn", "star", "aux", "domain_input"):
            setattr(self, key, _bool(v[key], '"%s"' % key))
        if self.domain_input and self.pn:
            raise ConfigError('config "domain_input" needs "pn": false: the domain embedding is the same for every row '
                              'of a domain, so PN\'s per-domain statistics would erase it in training and amplify its '
                              'drift at inference; PN\'s domain scale and shift already tell domains apart')
        self.aux_hidden = _int(v["aux_hidden"], '"aux_hidden"', 1, MAX_WIDTH)
        self.l2 = _num(v["l2"], '"l2"', 0.0, 1e6)
        # domain_input (since 0.3.0): x0 ends with the domain embedding dv
        self.n0 = len(self.features) * self.emb_dim + self.dense + (self.emb_dim if self.domain_input else 0)
        if self.n0 < 1:
            raise ConfigError('config has no inputs: give at least one field in "features" or %s'
                              % ('a column in "dense"' if named else '"dense" > 0'))
        if self.n0 > 4 * MAX_WIDTH:
            raise ConfigError("config input width %d (features * emb_dim + dense, + emb_dim with domain_input) exceeds the limit of %d"
                              % (self.n0, 4 * MAX_WIDTH))
        self.epnet_hidden = (self.n0 if v["epnet_hidden"] is None
                             else _int(v["epnet_hidden"], '"epnet_hidden"', 1, 4 * MAX_WIDTH))
        self.negative_rate = self._negative_rate(v["negative_rate"])

    def _check_columns(self):
        """Named form: field names are column names, unique across features, persona and dense, and
        neither the domain column nor a task (label) column."""
        seen = {}
        for key, fields in (("features", self.features), ("persona", self.persona), ("dense", self.dense_fields)):
            for i, f in enumerate(fields):
                where = '"%s"[%d]' % (key, i)
                if f["name"] in seen:
                    raise ConfigError('config %s.name "%s" is also the column of %s: with "inputs": "columns" each '
                                      'field names its own column, unique across features, persona and dense'
                                      % (where, f["name"], seen[f["name"]]))
                if f["name"] == self.domain_column:
                    raise ConfigError('config %s.name "%s" is the domain column (%s); name the field\'s own column'
                                      % (where, f["name"], '"domain_column"' if self.domain_column != "domain"
                                         else 'the default of "domain_column"'))
                if f["name"] in self.tasks:
                    raise ConfigError('config %s.name "%s" is a task of "tasks", whose column holds its labels; '
                                      'name the field\'s own column' % (where, f["name"]))
                seen[f["name"]] = where
        if self.domain_column in self.tasks:
            raise ConfigError('config "domain_column" "%s" is a task of "tasks", whose column holds its labels'
                              % self.domain_column)
        for key, fields in (("features", self.features), ("persona", self.persona)):
            for i, f in enumerate(fields):
                w = f.get("weights")
                if w is None:
                    continue
                if w in seen or w == self.domain_column or w in self.tasks:
                    raise ConfigError('config "%s"[%d] has "weights": "%s", a column the model reads otherwise; '
                                      'a weights column holds only its field\'s weights' % (key, i, w))
                seen[w] = '"%s"[%d].weights' % (key, i)

    @property
    def named(self):
        """Whether the config is in the named form ("inputs": "columns")."""
        return self.inputs == "columns"

    def _negative_rate(self, v):
        """Negative down-sampling rate per domain ([D] floats in (0, 1], float32 values), or None."""
        if v is None:
            return None
        vals = v if isinstance(v, list) else [v] * self.domains
        if len(vals) not in (1, self.domains) or isinstance(v, bool):
            raise ConfigError('config "negative_rate" must be a number or an array of %d numbers (one per domain) '
                              'in (0, 1]' % self.domains)
        if len(vals) == 1:
            vals = vals * self.domains
        out = []
        for x in vals:
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 < np.float32(x) <= 1.0:
                raise ConfigError('config "negative_rate" must be in (0, 1]: the share of negatives kept in the '
                                  'training data, got %r' % (x,))
            out.append(float(np.float32(x)))
        return out

    @property
    def T(self):
        """Number of tasks."""
        return len(self.tasks)

    def to_dict(self):
        """The config with every default filled in (as pepnet.models.config stores it), "inputs" included;
        the named form also has every field's "nullable", "dense" as its [{"name"}] and "domain_column"."""
        return {"inputs": self.inputs, "domains": self.domains, "features": [dict(f) for f in self.features],
                "persona": [dict(f) for f in self.persona],
                "dense": [dict(f) for f in self.dense_fields] if self.named else self.dense,
                **({"domain_column": self.domain_column} if self.named else {}), "emb_dim": self.emb_dim,
                "tasks": list(self.tasks), "hidden": list(self.hidden), "gamma": self.gamma,
                "epnet": self.epnet, "epnet_hidden": self.epnet_hidden, "ppnet": self.ppnet, "pn": self.pn,
                "star": self.star, "aux": self.aux, "aux_hidden": self.aux_hidden, "l2": self.l2,
                **({} if self.negative_rate is None else {"negative_rate": (
                    self.negative_rate[0] if len(set(self.negative_rate)) == 1 else list(self.negative_rate))}),
                **({"domain_input": True} if self.domain_input else {})}

    def to_json(self):
        """to_dict() as JSON text."""
        return json.dumps(self.to_dict())

    def __eq__(self, other):
        return isinstance(other, Config) and self.to_dict() == other.to_dict()

    def __repr__(self):
        return "Config(%s)" % self.to_json()
