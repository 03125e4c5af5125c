"""Independent PyTorch reference of the STAR-PEPNet model contract (docs/model.md).

Readable and unfused on purpose: every step of docs/model.md appears once, in order. Used by the
self-check, the parity tests against the C extension and benchmarks. Run it with Debian's
/usr/bin/python3 (python3-torch, python3-numpy).

Choices where docs/model.md is silent (see also the module README in the test report):
* emb.domain always exists, even when neither EPNet nor aux reads it (it is listed unconditionally).
* Partitioned Normalization in training mode back-propagates through the batch mean/variance of a
  domain (as torch BatchNorm does); running statistics are updated without gradient, with
  docs/model.md 0.2's warm-started average a = max(0.01, 1/(n_d+1)) and the count pn.num_batches_tracked
  (optional on import: absent = 0).
* The loss divides by the full batch size B, also for rows whose labels are all masked.
* Dense Adam updates every dense parameter every step (zero gradient included), exactly as
  torch.optim.Adam does; embedding tables use torch.optim.SparseAdam (per-table step count, which
  equals the global step because every table is read by every batch).
"""
import json
import math
import struct

import numpy as np
import torch
import torch.nn.functional as F

torch.set_num_threads(1)

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
PN_EPS = 1e-5
PN_MOMENTUM = 0.01


# ----------------------------------------------------------------------------- hashing

def splitmix64(z):
    """splitmix64 finaliser of docs/model.md on a Python int, uint64 wrapping."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def slot(id, field_index, buckets, hash=True):
    """Embedding row of one int64 id in field `field_index` (0-based) with `buckets` rows."""
    id = int(id)
    if not hash:
        if not 0 <= id < buckets:
            raise ValueError("id %d out of range [0, %d) for unhashed field %d" % (id, buckets, field_index))
        return id
    return splitmix64((id & MASK64) + GOLDEN * (field_index + 1)) % buckets


def slots_np(ids, field_index, buckets, hash=True):
    """Vectorised slot() for an array of int64 ids; returns an int64 numpy array."""
    ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64))
    if not hash:
        if ids.size and (ids.min() < 0 or ids.max() >= buckets):
            bad = ids[(ids < 0) | (ids >= buckets)].flat[0]
            raise ValueError("id %d out of range [0, %d) for unhashed field %d" % (bad, buckets, field_index))
        return ids.copy()
    with np.errstate(over="ignore"):
        z = ids.view(np.uint64) + np.uint64((GOLDEN * (field_index + 1)) & MASK64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        return (z % np.uint64(buckets)).astype(np.int64)


TEXT_SEED = 0x6A09E667F3BCC909


def text_id(value):
    """docs/model.md's text id (since 0.3.0): the int64 id of a str (UTF-8) or uuid (its canonical text),
    state = 0x6A09E667F3BCC909, then state = splitmix64(state ^ byte) for each byte, as int64."""
    text = str(value) if not isinstance(value, str) else value   # uuid.UUID: lower-case hyphenated
    state = TEXT_SEED
    for byte in text.encode("utf-8"):
        state = splitmix64(state ^ byte)
    return state - (1 << 64) if state >> 63 else state


def named_slot(value, field_index, field):
    """Embedding row of one value of a named field (docs/model.md, "Named inputs"): None and NaN ->
    the missing row (index buckets); a text or uuid through text_id; an integer as it is."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if not field.get("nullable", True):
            raise ValueError("NULL id in field %s, which is not nullable" % field["name"])
        return field["buckets"]
    if isinstance(value, (bool, float, np.bool_, np.floating)):
        raise TypeError("id %r of field %s is not an integer, text or uuid" % (value, field["name"]))
    if not isinstance(value, (int, np.integer)):
        value = text_id(value)
    return slot(value, field_index, field["buckets"], field["hash"])


# ----------------------------------------------------------------------------- config

class Config:
    """Model configuration parsed from docs/model.md's jsonb dict, with its defaults."""

    DEFAULTS = {"persona": [], "dense": 0, "emb_dim": 16, "tasks": ["click"], "hidden": [256, 128],
                "gamma": 2.0, "epnet": True, "epnet_hidden": None, "ppnet": True, "pn": True,
                "star": True, "aux": True, "aux_hidden": 32, "l2": 0.0}

    def __init__(self, d):
        """Parse a config dict (or JSON string); missing keys take docs/model.md's defaults."""
        if isinstance(d, str):
            d = json.loads(d)
        self.raw = dict(d)
        v = dict(self.DEFAULTS)
        v.update(d)
        self.domains = int(v["domains"])
        self.features = [self._field(f, i, "f") for i, f in enumerate(v["features"])]
        self.persona = [self._field(f, i, "p") for i, f in enumerate(v["persona"])]
        self.inputs = v.get("inputs", "arrays")
        self.named = self.inputs == "columns"
        self.domain_column = v.get("domain_column", "domain")
        self.dense_names = [f["name"] for f in v["dense"]] if isinstance(v["dense"], list) else None
        self.dense = len(v["dense"]) if isinstance(v["dense"], list) else int(v["dense"])
        self.emb_dim = int(v["emb_dim"])
        self.tasks = list(v["tasks"])
        self.hidden = [int(h) for h in v["hidden"]]
        self.gamma = float(v["gamma"])
        self.epnet = bool(v["epnet"])
        self.ppnet = bool(v["ppnet"])
        self.pn = bool(v["pn"])
        self.star = bool(v["star"])
        self.aux = bool(v["aux"])
        self.aux_hidden = int(v["aux_hidden"])
        self.l2 = float(v["l2"])
        # "domain_input" (since 0.3.0): x0 ends with the domain embedding
        self.domain_input = bool(v.get("domain_input", False))
        self.n0 = len(self.features) * self.emb_dim + self.dense + (self.emb_dim if self.domain_input else 0)
        self.epnet_hidden = self.n0 if v["epnet_hidden"] is None else int(v["epnet_hidden"])

    @staticmethod
    def _field(f, i, prefix):
        """Normalise one field spec to {name, buckets, hash}."""
        return {"name": f.get("name", "%s%d" % (prefix, i)), "buckets": int(f["buckets"]),
                "hash": bool(f.get("hash", True)), "nullable": bool(f.get("nullable", True))}

    @property
    def T(self):
        """Number of tasks."""
        return len(self.tasks)

    def to_json(self):
        """The config as given (JSON text), for sending to the extension."""
        return json.dumps(self.raw)


# ----------------------------------------------------------------------------- model

def _key(name):
    """Parameter-dict key of a docs/model.md tensor name (torch forbids dots in keys)."""
    return name.replace(".", "__")


class StarPepNet(torch.nn.Module):
    """STAR-PEPNet of docs/model.md; tensors() / load_tensors() use docs/model.md names and shapes."""

    def __init__(self, config):
        """Create all tensors of the enabled parts with a default (deterministic) init."""
        super().__init__()
        self.cfg = c = config if isinstance(config, Config) else Config(config)
        self.params = torch.nn.ParameterDict()
        self.shapes = {}          # docs/model.md name -> shape, in docs/model.md order
        self.buffer_names = []    # docs/model.md names that are buffers (PN running statistics)
        self.sparse_names = []    # embedding tables (SparseAdam)
        k, n0, D, T = c.emb_dim, c.n0, c.domains, c.T
        missing_row = 1 if c.named else 0     # named form: one more row per table, for NULL ids
        for i, f in enumerate(c.features):
            self._add("emb.feature.%d" % i, (f["buckets"] + missing_row, k), sparse=True)
        for j, f in enumerate(c.persona):
            self._add("emb.persona.%d" % j, (f["buckets"] + missing_row, k), sparse=True)
        self._add("emb.domain", (D, k), sparse=True)
        if c.epnet:
            he = c.epnet_hidden
            self._add("epnet.w1", (he, k + n0))
            self._add("epnet.b1", (he,))
            self._add("epnet.w2", (n0, he))
            self._add("epnet.b2", (n0,))
        if c.pn:
            self._add("pn.gamma", (n0,))
            self._add("pn.beta", (n0,))
            self._add("pn.domain_gamma", (D, n0))
            self._add("pn.domain_beta", (D, n0))
            self._add("pn.running_mean", (D, n0), buffer=True)
            self._add("pn.running_var", (D, n0), buffer=True)
            self._add("pn.num_batches_tracked", (D,), buffer=True)   # docs/model.md 0.2, F32 counts
        sizes = [n0] + c.hidden + [1]
        for t in range(T):
            for l in range(1, len(sizes)):
                self._add("tower.%d.%d.w" % (t, l), (sizes[l], sizes[l - 1]))
                self._add("tower.%d.%d.b" % (t, l), (sizes[l],))
                if c.star:
                    self._add("tower.%d.%d.domain_w" % (t, l), (D, sizes[l], sizes[l - 1]))
                    self._add("tower.%d.%d.domain_b" % (t, l), (D, sizes[l]))
        if c.ppnet:
            pk = len(c.persona) * k
            for l in range(1, len(c.hidden) + 1):
                w = T * c.hidden[l - 1]
                self._add("ppnet.%d.w1" % l, (w, pk + n0))
                self._add("ppnet.%d.b1" % l, (w,))
                self._add("ppnet.%d.w2" % l, (w, w))
                self._add("ppnet.%d.b2" % l, (w,))
        if c.aux:
            self._add("aux.w1", (c.aux_hidden, k + n0))
            self._add("aux.b1", (c.aux_hidden,))
            self._add("aux.w2", (T, c.aux_hidden))
            self._add("aux.b2", (T,))
        self.init_default(0)

    def _add(self, name, shape, sparse=False, buffer=False):
        """Register one docs/model.md tensor as a parameter or buffer."""
        self.shapes[name] = tuple(shape)
        if buffer:
            self.register_buffer(_key(name), torch.zeros(shape))
            self.buffer_names.append(name)
        else:
            self.params[_key(name)] = torch.nn.Parameter(torch.zeros(shape))
            if sparse:
                self.sparse_names.append(name)

    def t(self, name):
        """The live tensor (parameter or buffer) of a docs/model.md name."""
        if name in self.buffer_names:
            return getattr(self, _key(name))
        return self.params[_key(name)]

    def has(self, name):
        """Whether the tensor exists in this config."""
        return name in self.shapes

    # --------------------------------------------------------------- import / export / init

    def tensors(self):
        """{docs/model.md name: float32 CPU tensor copy}, in docs/model.md order."""
        return {n: self.t(n).detach().to(torch.float32).clone().contiguous() for n in self.shapes}

    @torch.no_grad()
    def load_tensors(self, d):
        """Load every tensor from a {name: tensor/array} dict; names and shapes must match exactly."""
        d = dict(d)
        if "pn.num_batches_tracked" in self.shapes and "pn.num_batches_tracked" not in d:
            d["pn.num_batches_tracked"] = np.zeros(self.shapes["pn.num_batches_tracked"], np.float32)  # 0.1: absent = 0
        missing = set(self.shapes) - set(d)
        extra = set(d) - set(self.shapes)
        if missing or extra:
            raise ValueError("tensor set mismatch: missing %s, unexpected %s" % (sorted(missing), sorted(extra)))
        for n, shape in self.shapes.items():
            v = torch.as_tensor(np.asarray(d[n]))
            if tuple(v.shape) != shape:
                raise ValueError("tensor %s has shape %s, expected %s" % (n, tuple(v.shape), shape))
            self.t(n).copy_(v)

    @torch.no_grad()
    def init_default(self, seed=0):
        """Seeded default init: emb N(0,0.01), weights U(+-1/sqrt(in)), biases 0, STAR/PN neutral."""
        g = torch.Generator().manual_seed(seed)
        for n, shape in self.shapes.items():
            t = self.t(n)
            if n.startswith("emb."):
                t.copy_(torch.randn(shape, generator=g) * 0.01)
            elif n.endswith((".domain_w", "pn.gamma", "pn.domain_gamma", "pn.running_var")):
                t.fill_(1.0)
            elif n.endswith((".w", ".w1", ".w2")):
                bound = 1.0 / math.sqrt(shape[1])
                t.copy_((torch.rand(shape, generator=g) * 2 - 1) * bound)
            else:
                t.zero_()

    @torch.no_grad()
    def init_random(self, seed):
        """Random, non-trivial weights for parity tests (every part visibly active)."""
        g = torch.Generator().manual_seed(seed)

        def randn(shape):
            return torch.randn(shape, generator=g, dtype=torch.float64)

        for n, shape in self.shapes.items():
            t = self.t(n)
            if n.startswith("emb."):
                v = 0.1 * randn(shape)
            elif n.endswith(".domain_w"):
                v = 1.0 + 0.2 * randn(shape)
            elif n.endswith(".domain_b"):
                v = 0.05 * randn(shape)
            elif n in ("pn.gamma", "pn.domain_gamma"):
                v = 1.0 + 0.1 * randn(shape)
            elif n in ("pn.beta", "pn.domain_beta", "pn.running_mean"):
                v = 0.1 * randn(shape)
            elif n == "pn.running_var":
                v = 0.5 + torch.rand(shape, generator=g, dtype=torch.float64)
            elif n == "pn.num_batches_tracked":   # both regimes of a = max(0.01, 1/(n+1))
                v = torch.randint(0, 200, shape, generator=g).to(torch.float64)
            elif n.endswith((".w", ".w1", ".w2")):
                bound = 1.0 / math.sqrt(shape[1])
                v = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1) * bound
            else:  # biases
                v = 0.1 * randn(shape)
            t.copy_(v.to(t.dtype))
        return self

    # --------------------------------------------------------------- forward

    def _lookup(self, table, ids, fields, rows=False):
        """Concatenated embeddings [B, len(fields)*k] of raw ids [B, n] hashed per field (of embedding
        rows [B, n] when rows is true)."""
        B = ids.shape[0]
        if len(fields) == 0:
            return torch.zeros(B, 0, dtype=self.dtype)
        parts = []
        ids_np = ids.cpu().numpy()
        for i, f in enumerate(fields):
            s = (torch.from_numpy(ids_np[:, i].copy()) if rows
                 else torch.from_numpy(slots_np(ids_np[:, i], i, f["buckets"], f["hash"])))
            parts.append(F.embedding(s, self.t("%s.%d" % (table, i)), sparse=True))
        return torch.cat(parts, dim=1)

    @property
    def dtype(self):
        """Floating dtype of the parameters."""
        return self.t("emb.domain").dtype

    def gate(self, prefix, inp):
        """GateNU: gamma * sigmoid(W2 relu(W1 in + b1) + b2)."""
        h = torch.relu(F.linear(inp, self.t(prefix + ".w1"), self.t(prefix + ".b1")))
        return self.cfg.gamma * torch.sigmoid(F.linear(h, self.t(prefix + ".w2"), self.t(prefix + ".b2")))

    def star_linear(self, a, domain, t, l):
        """Layer l of task t's tower with STAR fusion W* = W ⊙ W_d, b* = b + b_d, row by row."""
        W, b = self.t("tower.%d.%d.w" % (t, l)), self.t("tower.%d.%d.b" % (t, l))
        if not self.cfg.star:
            return F.linear(a, W, b)
        Wd = self.t("tower.%d.%d.domain_w" % (t, l))[domain]   # [B, out, in]
        bd = self.t("tower.%d.%d.domain_b" % (t, l))[domain]   # [B, out]
        Wstar = W.unsqueeze(0) * Wd
        bstar = b.unsqueeze(0) + bd
        return torch.einsum("boi,bi->bo", Wstar, a) + bstar

    def partitioned_norm(self, x, domain, train):
        """Partitioned Normalization: per-domain batch stats (train, >= 2 rows) or running stats."""
        rm, rv = self.t("pn.running_mean"), self.t("pn.running_var")
        mean = rm[domain]   # [B, n0] running statistics by default (constants)
        var = rv[domain]
        if train:
            mean_rows, var_rows = [], []
            for d in torch.unique(domain).tolist():
                rows = (domain == d).nonzero(as_tuple=True)[0]
                if len(rows) < 2:
                    continue
                xd = x[rows]
                mu = xd.mean(dim=0)
                va = ((xd - mu) ** 2).mean(dim=0)  # biased
                with torch.no_grad():
                    # docs/model.md 0.2: warm-started average a = max(0.01, 1 / (n_d + 1)), then n_d += 1
                    nb = self.t("pn.num_batches_tracked")
                    a = max(PN_MOMENTUM, 1.0 / (float(nb[d]) + 1.0))
                    rm[d] = (1 - a) * rm[d] + a * mu.detach()
                    rv[d] = (1 - a) * rv[d] + a * va.detach()
                    nb[d] += 1
                mean_rows.append((rows, mu))
                var_rows.append((rows, va))
            # replace the running statistics by the batch statistics of domains that have them
            mean = mean.detach().clone()
            var = var.detach().clone()
            for (rows, mu), (_, va) in zip(mean_rows, var_rows):
                mean = mean.index_copy(0, rows, mu.unsqueeze(0).expand(len(rows), -1))
                var = var.index_copy(0, rows, va.unsqueeze(0).expand(len(rows), -1))
        scale = self.t("pn.gamma").unsqueeze(0) * self.t("pn.domain_gamma")[domain]
        shift = self.t("pn.beta").unsqueeze(0) + self.t("pn.domain_beta")[domain]
        return scale * (x - mean) / torch.sqrt(var + PN_EPS) + shift

    def named_inputs(self, batch):
        """(domain [B], persona rows [B, P], feature rows [B, F], dense [B, Nd]) of a named batch (a dict
        of columns), value by value: docs/model.md's "Named inputs"."""
        c = self.cfg
        domain = [int(d) for d in batch[c.domain_column]]
        B = len(domain)

        def rows(fields):
            out = np.zeros((B, len(fields)), np.int64)
            for i, f in enumerate(fields):
                col = list(batch[f["name"]])
                for r in range(B):
                    out[r, i] = named_slot(col[r], i, f)
            return out
        dense = np.zeros((B, c.dense), np.float32)
        for i, name in enumerate(c.dense_names or []):
            dense[:, i] = [float(x) for x in batch[name]]
        return np.array(domain, np.int64), rows(c.persona), rows(c.features), dense

    def forward_named(self, batch, train=False):
        """Logits [B, T] of a named batch (a config with "inputs": "columns")."""
        return self.forward(*self.named_inputs(batch), train=train, rows=True)

    def named_labels(self, batch):
        """Labels [B, T] of a named batch's task columns, NaN for None/NaN."""
        cols = [list(batch[t]) for t in self.cfg.tasks]
        return np.array([[np.nan if v is None else float(v) for v in r] for r in zip(*cols)], np.float64)

    def forward(self, domain, persona, features, dense=None, train=False, rows=False):
        """Logits [B, T] of docs/model.md steps 1-9 (raw ids in, hashing done here; embedding rows in
        when rows is true)."""
        c = self.cfg
        domain = torch.as_tensor(np.asarray(domain), dtype=torch.long).reshape(-1)
        B = domain.shape[0]
        features = torch.as_tensor(np.asarray(features, dtype=np.int64)).reshape(B, len(c.features))
        persona = torch.as_tensor(np.asarray(persona, dtype=np.int64)).reshape(B, len(c.persona))
        if c.dense:
            dense = torch.as_tensor(np.asarray(dense, dtype=np.float32)).reshape(B, c.dense).to(self.dtype)
        else:
            dense = torch.zeros(B, 0, dtype=self.dtype)
        if domain.numel() and (domain.min() < 0 or domain.max() >= c.domains):
            raise ValueError("domain out of range [0, %d)" % c.domains)

        # 1. inputs
        dv = F.embedding(domain, self.t("emb.domain"), sparse=True)
        x0 = torch.cat([self._lookup("emb.feature", features, c.features, rows), dense]
                       + ([dv] if c.domain_input else []), dim=1)
        pv = self._lookup("emb.persona", persona, c.persona, rows)

        # 3. EPNet
        if c.epnet:
            x = self.gate("epnet", torch.cat([dv, x0.detach()], dim=1)) * x0
        else:
            x = x0

        # 4. Partitioned Normalization
        xn = self.partitioned_norm(x, domain, train) if c.pn else x

        # 6. PPNet gates (one per hidden layer, all tasks): input [pv ; sg(x)]
        gates = []
        if c.ppnet:
            gin = torch.cat([pv, x.detach()], dim=1)
            for l in range(1, len(c.hidden) + 1):
                gates.append(self.gate("ppnet.%d" % l, gin))

        # 5., 7. towers
        L = len(c.hidden)
        logits = []
        for t in range(c.T):
            a = xn
            for l in range(1, L + 1):
                a = torch.relu(self.star_linear(a, domain, t, l))
                if c.ppnet:
                    h = c.hidden[l - 1]
                    a = gates[l - 1][:, t * h:(t + 1) * h] * a
            logits.append(self.star_linear(a, domain, t, L + 1)[:, 0])
        logit = torch.stack(logits, dim=1)

        # 8. auxiliary network on [dv ; x0]
        if c.aux:
            h = torch.relu(F.linear(torch.cat([dv, x0], dim=1), self.t("aux.w1"), self.t("aux.b1")))
            logit = logit + F.linear(h, self.t("aux.w2"), self.t("aux.b2"))
        return logit

    def predict(self, domain, persona, features, dense=None):
        """Probabilities [B, T] in inference mode (step 9), no gradient."""
        with torch.no_grad():
            return torch.sigmoid(self.forward(domain, persona, features, dense, train=False))

    # --------------------------------------------------------------- loss

    def l2_term(self):
        """sum of squares of the shared weight matrices (*.w, *.w1, *.w2)."""
        total = torch.zeros((), dtype=self.dtype)
        for n in self.shapes:
            if n.endswith((".w", ".w1", ".w2")) and not n.startswith("emb."):
                total = total + (self.t(n) ** 2).sum()
        return total

    def loss(self, logits, labels, l2=None):
        """Mean over the batch of the summed masked BCE over tasks, + l2 * sum(W^2)."""
        labels = torch.as_tensor(np.asarray(labels, dtype=np.float64)).to(logits.dtype).reshape(logits.shape)
        mask = ~torch.isnan(labels)
        target = torch.where(mask, labels, torch.zeros_like(labels))
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        data = torch.where(mask, bce, torch.zeros_like(bce)).sum() / logits.shape[0]
        l2 = self.cfg.l2 if l2 is None else l2
        if l2:
            return data + l2 * self.l2_term()
        return data


def loss(model, logits, labels, l2=None):
    """Module-level alias of StarPepNet.loss."""
    return model.loss(logits, labels, l2)


# ----------------------------------------------------------------------------- optimiser

class RefOptimizer:
    """docs/model.md's optimiser: torch Adam on dense parameters, SparseAdam on embedding tables."""

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        """Split the model's parameters into dense (Adam) and embedding (SparseAdam) groups."""
        self.model = model
        sparse = [model.t(n) for n in model.sparse_names]
        dense = [model.t(n) for n in model.shapes if n not in model.sparse_names and n not in model.buffer_names]
        self.adam = torch.optim.Adam(dense, lr=lr, betas=betas, eps=eps) if dense else None
        self.sparse_adam = torch.optim.SparseAdam(sparse, lr=lr, betas=betas, eps=eps)

    def zero_grad(self):
        """Drop all gradients."""
        for p in self.model.parameters():
            p.grad = None

    def step(self):
        """One update of both optimisers."""
        if self.adam is not None:
            self.adam.step()
        self.sparse_adam.step()


# ----------------------------------------------------------------------------- safetensors

_DTYPES = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8"), "F16": np.dtype("<f2"),
           "I64": np.dtype("<i8"), "I32": np.dtype("<i4")}


def safetensors_dumps(d):
    """Serialise {name: float32 tensor/array} as safetensors bytes (header padded to 8 bytes)."""
    header, blobs, off = {}, [], 0
    for name, v in d.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        a = np.asarray(v, dtype="<f4", order="C")  # keeps 0-d shapes, unlike ascontiguousarray
        b = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def safetensors_loads(buf, raw=False):
    """Parse safetensors bytes into {name: torch tensor} (or {name: (dtype, shape, bytes)} if raw)."""
    buf = bytes(buf)
    (n,) = struct.unpack_from("<Q", buf, 0)
    header = json.loads(buf[8:8 + n].decode())
    data = buf[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        chunk = data[b:e]
        if raw:
            out[name] = (info["dtype"], tuple(info["shape"]), chunk)
        else:
            a = np.frombuffer(chunk, dtype=_DTYPES[info["dtype"]]).reshape(info["shape"])
            out[name] = torch.from_numpy(a.astype(a.dtype.newbyteorder("=")).copy())
    return out
