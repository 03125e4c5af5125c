"""STAR-PEPNet (docs/model.md) as a torch.nn.Module whose state_dict keys are the tensor names.

    m = StarPepNet(config, seed=7)          # the same weights as pepnet_create(..., seed => 7)
    logits = m(domain, persona, features, dense)        # [B, T], raw int64 ids in
    p = m.predict(domain, persona, features, dense)     # [B, T] probabilities, inference mode
    opt = Optimizer(m, lr=1e-3)                          # Adam + SparseAdam, as the extension trains
    loss = m.loss(logits, labels); opt.zero_grad(); loss.backward(); opt.step()

With ``"inputs": "columns"`` (docs/model.md, "Named inputs (since 0.3.0)") the inputs are one named batch,
a dict of columns or any mapping by column name such as a pandas DataFrame:

    logits = m(batch)                      # batch["item"], batch["domain"], ... one value per row
    loss = m.loss(logits, batch)           # labels from the task columns (None/NaN = no label)

``m.state_dict()`` has exactly the tensors of docs/model.md ("emb.feature.0", "pn.running_mean",
"pn.num_batches_tracked", "tower.0.1.w", ...), float32, PyTorch's [out, in] layout.
``m.load_state_dict`` refuses other names or shapes with a StateDictError that lists them.
"""
import decimal
import math
import re
import uuid
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import Config
from .hashing import as_ids, refuse_float_ids, slots, text_id
from . import safetensors

PN_EPS = 1e-5
MAX_BAG = 10000  # ids of a multi-valued field in one row
FLT_MIN = float(np.finfo(np.float32).tiny)  # the smallest normal float32
FLT_MAX = float(np.finfo(np.float32).max)
PN_MIN_MOMENTUM = 0.01
_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


class StateDictError(ValueError):
    """A state_dict (or safetensors file) whose tensor names or shapes do not fit the config."""


def _zeros(*shape):
    return nn.Parameter(torch.zeros(shape))


class _Module(nn.Module):
    """A plain container of named parameters (w1, b1, ...)."""

    def __init__(self, **shapes):
        super().__init__()
        for k, s in shapes.items():
            setattr(self, k, _zeros(*s))


class StarPepNet(nn.Module):
    """The STAR-PEPNet model of one config.

    config: a dict, JSON text or Config (docs/model.md's keys and defaults).
    seed: initial weights as the extension's seeded initialisation (pepnet_create); None leaves zeros.
    Inputs of forward/predict, for a batch of B examples (tensors, numpy arrays or lists):
      domain [B] ints in [0, D); persona [B, P] and features [B, F] raw int64 ids (hashed here);
      dense [B, Nd] floats or None when the config has no dense features.
    With "inputs": "columns" forward/predict take one named batch instead (see _named_inputs) and each
    named field's table has one more row, the missing row (index buckets) that NULL ids use.
    """

    def __init__(self, config, seed=0, vocab=None):
        super().__init__()
        self.config = c = Config(config)
        self.sparse = True  # embedding gradients as sparse tensors (for SparseAdam)
        k, n0, D, T = c.emb_dim, c.n0, c.domains, c.T
        self._names = []

        self.emb = nn.Module()
        extra = 1 if c.named else 0  # the named form's missing row
        self.emb.feature = nn.ParameterList([_zeros(f["buckets"] + extra, k) for f in c.features])
        self.emb.persona = nn.ParameterList([_zeros(f["buckets"] + extra, k) for f in c.persona])
        self.emb.domain = _zeros(D, k)
        self._names += ["emb.feature.%d" % i for i in range(len(c.features))]
        self._names += ["emb.persona.%d" % j for j in range(len(c.persona))]
        self._names.append("emb.domain")
        self.epnet = self.pn = self.ppnet = self.aux = None
        if c.epnet:
            he = c.epnet_hidden
            self.epnet = _Module(w1=(he, k + n0), b1=(he,), w2=(n0, he), b2=(n0,))
            self._names += ["epnet.w1", "epnet.b1", "epnet.w2", "epnet.b2"]
        if c.pn:
            self.pn = _Module(gamma=(n0,), beta=(n0,), domain_gamma=(D, n0), domain_beta=(D, n0))
            self.pn.register_buffer("running_mean", torch.zeros(D, n0))
            self.pn.register_buffer("running_var", torch.ones(D, n0))
            self.pn.register_buffer("num_batches_tracked", torch.zeros(D))
            self._names += ["pn.gamma", "pn.beta", "pn.domain_gamma", "pn.domain_beta",
                            "pn.running_mean", "pn.running_var", "pn.num_batches_tracked"]
        sizes = [n0] + c.hidden + [1]
        self.tower = nn.ModuleList()
        for t in range(T):
            layers = nn.ModuleDict()
            for l in range(1, len(sizes)):
                shapes = {"w": (sizes[l], sizes[l - 1]), "b": (sizes[l],)}
                if c.star:
                    shapes.update(domain_w=(D, sizes[l], sizes[l - 1]), domain_b=(D, sizes[l]))
                layers[str(l)] = _Module(**shapes)
                self._names += ["tower.%d.%d.%s" % (t, l, s) for s in shapes]
            self.tower.append(layers)
        if c.ppnet:
            pk = len(c.persona) * k
            self.ppnet = nn.ModuleDict()
            for l in range(1, len(c.hidden) + 1):
                g = T * c.hidden[l - 1]
                self.ppnet[str(l)] = _Module(w1=(g, pk + n0), b1=(g,), w2=(g, g), b2=(g,))
                self._names += ["ppnet.%d.%s" % (l, s) for s in ("w1", "b1", "w2", "b2")]
        if c.aux:
            ha = c.aux_hidden
            self.aux = _Module(w1=(ha, k + n0), b1=(ha,), w2=(T, ha), b2=(T,))
            self._names += ["aux.w1", "aux.b1", "aux.w2", "aux.b2"]
        # vocabularies of "min_count" fields: int64 buffers vocab.feature.{i} / vocab.persona.{j} of
        # buckets - 1 ids, ascending, after every float tensor (docs/model.md "Vocabularies and unseen ids")
        self.vocab = nn.Module()
        self.vocab.feature = nn.Module()
        self.vocab.persona = nn.Module()
        for key, fields in (("feature", c.features), ("persona", c.persona)):
            for i, f in enumerate(fields):
                if f.get("min_count"):
                    getattr(self.vocab, key).register_buffer(str(i), torch.zeros(f["buckets"] - 1, dtype=torch.int64))
                    self._names.append("vocab.%s.%d" % (key, i))
        # the vocabularies not set yet (by set_vocab or load_state_dict): scoring a batch refuses them
        self._vocab_unset = {n for n in self._names if n.startswith("vocab.")}
        if seed is not None:
            self.init_weights(seed)
        if vocab is not None:
            self.set_vocab(vocab)

    def _vocab(self, key, i, f):
        """The vocabulary buffer of a "min_count" field (int64 [V], CPU), refused while it is not set."""
        name = "vocab.%s.%d" % (key, i)
        if name in self._vocab_unset:
            raise ValueError('%s field %d "%s" has "min_count" but this module has no vocabulary for it: build '
                             'it with config, vocab = pepnet.build_vocab(config, batch) and pass vocab=vocab to '
                             'StarPepNet, or load a version\'s weights (StarPepNet.from_safetensors, '
                             'pepnet.db.load_module)' % (key, i, f["name"]))
        return getattr(getattr(self.vocab, key), str(i)).cpu()

    def set_vocab(self, vocab):
        """Set the vocabularies from {"vocab.feature.0": ids, ...} (as build_vocab returns them): each
        the int64 ids of rows 0..V-1, ascending and unique, V = the field's buckets - 1."""
        own = self.state_dict()
        names = [n for n in self._names if n.startswith("vocab.")]
        if set(vocab) != set(names):
            raise StateDictError("vocabularies %s given, the config has %s" % (sorted(vocab), names))
        for n in names:
            v = torch.as_tensor(np.asarray(vocab[n], dtype=np.int64))
            _check_vocab(n, v, tuple(own[n].shape))
            own[n].copy_(v)
        self._vocab_unset = set()
        return self

    # ------------------------------------------------------------------ names and tensors

    def tensor_names(self):
        """The tensor names of docs/model.md in their documented order (the order of pepnet_export)."""
        return list(self._names)

    def tensor_shapes(self):
        """{name: shape} in documented order."""
        sd = self.state_dict()
        return OrderedDict((n, tuple(sd[n].shape)) for n in self._names)

    def tensors(self):
        """{name: float32 CPU tensor} in documented order (copies); the vocabularies int64."""
        sd = self.state_dict()
        return OrderedDict((n, sd[n].detach().to("cpu", torch.int64 if n.startswith("vocab.") else torch.float32)
                            .contiguous().clone()) for n in self._names)

    def to_safetensors(self):
        """The weights as safetensors bytes, byte for byte what pepnet_export writes for them."""
        return safetensors.dumps(self.tensors())

    @classmethod
    def from_safetensors(cls, config, blob):
        """A module of config with the weights of a safetensors blob (e.g. pepnet_export's)."""
        m = cls(config, seed=None)
        m.load_state_dict(safetensors.loads(blob))
        return m

    def check_state_dict(self, state_dict):
        """Raise StateDictError unless state_dict has exactly this config's tensor names and shapes.

        pn.num_batches_tracked may be absent (it then counts 0, as docs/model.md allows on import).
        """
        want = self.tensor_shapes()
        got = set(state_dict)
        optional = {"pn.num_batches_tracked"}
        missing = [n for n in want if n not in got and n not in optional]
        unexpected = sorted(got - set(want))
        wrong = ["%s has shape %s, the config needs %s" % (n, list(state_dict[n].shape), list(want[n]))
                 for n in want if n in got and tuple(state_dict[n].shape) != want[n]]
        if missing or unexpected or wrong:
            def some(names):
                return ", ".join(names[:20]) + (" and %d more" % (len(names) - 20) if len(names) > 20 else "")
            parts = []
            if missing:
                parts.append("missing tensors: %s" % some(missing))
            if unexpected:
                parts.append("unexpected tensors: %s" % some(unexpected))
            if wrong:
                parts.append("wrong shapes: %s" % "; ".join(wrong[:20]))
            raise StateDictError(
                "state_dict does not fit the config (%d tensors expected): %s. The names and shapes are those "
                "of docs/model.md for the parts the config switches on (epnet %s, pn %s, star %s, ppnet %s, aux %s)."
                % (len(want), "; ".join(parts), self.config.epnet, self.config.pn, self.config.star,
                   self.config.ppnet, self.config.aux))

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Load tensors by their docs/model.md names; strict (default) refuses any other set of names.

        Values are converted to this module's dtype; a missing pn.num_batches_tracked loads as zeros.
        """
        sd = OrderedDict(state_dict)
        if strict:
            self.check_state_dict(sd)
        if self.pn is not None and "pn.num_batches_tracked" not in sd and (strict or "pn.running_mean" in sd):
            sd["pn.num_batches_tracked"] = torch.zeros_like(self.pn.num_batches_tracked)
        own = self.state_dict()
        for n, v in sd.items():
            if n in own:
                if n.startswith("vocab."):
                    v = torch.as_tensor(v)
                    if v.dtype != torch.int64:
                        raise StateDictError("tensor %s has dtype %s, expected int64 (I64): a vocabulary" % (n, v.dtype))
                    _check_vocab(n, v, tuple(own[n].shape))
                    self._vocab_unset.discard(n)
                sd[n] = torch.as_tensor(v).to(own[n].dtype)
        if assign:
            return super().load_state_dict(sd, strict=strict, assign=assign)
        return super().load_state_dict(sd, strict=strict)

    # ------------------------------------------------------------------ initialisation

    @torch.no_grad()
    def init_weights(self, seed=0):
        """The extension's seeded initialisation (bit for bit what pepnet_create(..., seed) stores).

        Each tensor draws from its own splitmix64 stream, seeded by the seed and the tensor's name:
        embedding tables U(-0.05, 0.05), shared matrices ([out, in], names *.w, *.w1, *.w2)
        U(-1/sqrt(in), 1/sqrt(in)); biases 0; STAR domain weights 1, domain biases 0; PN gamma 1,
        beta 0, running mean 0, running variance 1, num_batches_tracked 0.
        """
        sd = self.state_dict()
        seed64 = _U64(int(seed) & 0xFFFFFFFFFFFFFFFF)
        for name in self._names:
            t = sd[name]
            if name.startswith("vocab."):
                continue  # the vocabularies are data, not weights
            if name.startswith("emb."):
                bound = 0.05
            elif name.endswith((".w", ".w1", ".w2")):
                bound = 1.0 / math.sqrt(float(t.shape[1]))
            elif name.endswith(".domain_w") or name in ("pn.gamma", "pn.domain_gamma", "pn.running_var"):
                t.fill_(1.0)
                continue
            else:
                t.zero_()
                continue
            with np.errstate(over="ignore"):
                state = seed64 * _U64(0xD1B54A32D192ED03)
                for ch in name.encode("utf-8"):
                    state = _splitmix64_np(state ^ _U64(ch))
            flat = t.view(-1)
            step = 1 << 20
            for lo in range(0, flat.numel(), step):
                hi = min(flat.numel(), lo + step)
                with np.errstate(over="ignore"):
                    z = state + _GOLDEN * np.arange(lo + 1, hi + 1, dtype=np.uint64)
                u = (_splitmix64_np(z) >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
                flat[lo:hi] = torch.from_numpy(((2.0 * u - 1.0) * bound).astype(np.float32)).to(flat.dtype)
        return self

    # ------------------------------------------------------------------ forward

    def _inputs(self, domain, persona, features, dense):
        """Inputs as tensors on the module's device, checked against the config."""
        c = self.config
        dev = self.emb.domain.device
        domain = as_ids(domain, "domain", device=dev).reshape(-1)
        B = domain.shape[0]

        def ids(v, n, what):
            v = as_ids(v, what, [f["name"] for f in getattr(c, what)], device=dev)
            if n == 0 and v.numel() == 0:
                return v.reshape(B, 0)
            if v.dim() != 2 or v.shape[0] != B or v.shape[1] != n:
                raise ValueError("%s must be [B, %d] = [%d, %d] ids, got shape %s"
                                 % (what, n, B, n, list(v.shape)))
            return v

        features = ids(features, len(c.features), "features")
        persona = ids(persona if persona is not None else np.zeros((B, 0), np.int64), len(c.persona), "persona")
        if c.dense:
            if dense is None:
                raise ValueError("the config has %d dense features: dense must be [B, %d], not None" % (c.dense, c.dense))
            dense = torch.as_tensor(dense, device=dev).to(self.emb.domain.dtype)
            if dense.dim() != 2 or tuple(dense.shape) != (B, c.dense):
                raise ValueError("dense must be [B, %d] = [%d, %d], got shape %s" % (c.dense, B, c.dense, list(dense.shape)))
            if not bool(torch.isfinite(dense).all()):
                raise ValueError("dense holds NaN or infinite values")
        else:
            if dense is not None and torch.as_tensor(dense).numel():
                raise ValueError("the config has no dense features (\"dense\": 0), but dense values were given")
            dense = torch.zeros(B, 0, dtype=self.emb.domain.dtype, device=dev)
        if B and (int(domain.min()) < 0 or int(domain.max()) >= c.domains):
            raise ValueError("domain %d is out of range: the config has %d domains (0 to %d)"
                             % (int(domain.min()) if int(domain.min()) < 0 else int(domain.max()),
                                c.domains, c.domains - 1))
        return domain, persona, features, dense

    def _lookup(self, tables, ids, fields):
        """Concatenated embeddings [B, len(fields)*k] of raw ids [B, n]."""
        return self._embed(tables, self._slots(ids, fields), fields)

    @staticmethod
    def _slots(ids, fields):
        """Embedding rows [B, n] of raw ids [B, n], hashed per field."""
        if not fields:
            return ids.new_zeros((ids.shape[0], 0))
        return torch.stack([slots(ids[:, i], i, f["buckets"], f["hash"], f["name"]) for i, f in enumerate(fields)],
                           dim=1)

    def _embed(self, tables, rows, fields):
        """Concatenated embeddings [B, len(fields)*k] of embedding rows [B, n] (a _Rows with the bags of
        multi-valued fields in the named form: those pooled, docs/model.md "Multi-valued fields")."""
        bags = {}
        if isinstance(rows, _Rows):
            rows, bags = rows.rows, rows.bags
        if not fields:
            return rows.new_zeros((rows.shape[0], 0), dtype=self.emb.domain.dtype)
        return torch.cat([self._pool(tables[i], bags[i], f, rows.shape[0]) if i in bags
                          else F.embedding(rows[:, i], tables[i], sparse=self.sparse)
                          for i, f in enumerate(fields)], dim=1)

    def _pool(self, table, bag, f, B):
        """Pooled embeddings [B, k] of a multi-valued field's bags: sum_j w_j E[rows_j] ("sum"), divided by
        sum_j w_j ("mean"); a row without ids or of total weight 0 takes the empty row (index buckets).
        Only the rows a pooled value uses get a (sparse) gradient, as in the extension's lazy Adam."""
        ids, seg, w = bag
        dtype = table.dtype
        wf = torch.ones(ids.shape[0], dtype=dtype, device=table.device) if w is None else w.to(dtype)
        tot = torch.zeros(B, dtype=torch.float64, device=table.device).index_add_(0, seg, wf.double())
        empty = ~(tot > 0)
        keep = ~empty[seg]
        ids, seg, wf = ids[keep], seg[keep], wf[keep]
        if f["pooling"] == "mean":
            # each id's factor w_j * s with s = 1 / sum w (in float64, rounded to float32), as the server
            # computes it (src/core/bag.c), so that a sum of weights beyond float32's range still pools
            s = (1.0 / torch.where(empty, torch.ones_like(tot), tot)).to(dtype)
            wf = wf * s[seg]
        e = F.embedding(ids, table, sparse=self.sparse) * wf[:, None]
        pooled = torch.zeros(B, table.shape[1], dtype=dtype, device=table.device).index_add(0, seg, e)
        if bool(empty.any()):
            ei = torch.nonzero(empty).squeeze(1)
            pooled = pooled.index_copy(0, ei, F.embedding(torch.full_like(ei, f["buckets"]), table,
                                                          sparse=self.sparse))
        return pooled

    def _parse(self, domain, persona, features, dense):
        """(domain [B], persona rows [B, P], feature rows [B, F], dense [B, Nd]) tensors on the module's
        device, from the positional arrays ("inputs": "arrays") or one named batch ("inputs": "columns")."""
        c = self.config
        if c.named:
            if persona is not None or features is not None or dense is not None or not _is_batch(domain):
                raise TypeError('this model\'s config has "inputs": "columns": pass one named batch, a dict of '
                                'columns or a pandas-like mapping (m(batch), m.predict(batch)), not positional arrays')
            return self._named_inputs(domain)
        if features is None:
            if _is_batch(domain):
                raise TypeError('this model\'s config has "inputs": "arrays": pass m(domain, persona, features, '
                                'dense); named batches (a dict of columns) need a config with "inputs": "columns"')
            raise TypeError("features [B, %d] ids are required" % len(c.features))
        domain, persona, features, dense = self._inputs(domain, persona, features, dense)
        return domain, self._slots(persona, c.persona), self._slots(features, c.features), dense

    # ------------------------------------------------------------------ named batches

    def _column(self, batch, name, what, B):
        """Column `name` of a named batch as a 1-D numpy array of B values."""
        try:
            col = batch[name]
        except (KeyError, IndexError):
            raise ColumnError('the batch has no column "%s" (%s)' % (name, what)) from None
        a = _as_array(col)
        if a.ndim != 1 or (B is not None and a.shape[0] != B):
            raise ValueError('column "%s" (%s) must hold one value per row: %s values, shape %s'
                             % (name, what, B if B is not None else "B", list(a.shape)))
        return a

    def _named_inputs(self, batch):
        """(domain [B], persona rows [B, P], feature rows [B, F], dense [B, Nd]) of a named batch.

        batch: anything with batch[column] (a dict of columns, a pandas DataFrame, ...); each column a
        1-D sequence of B values (list, numpy array, tensor, pandas Series). Column order and other
        columns do not matter. Ids: integers as they are; str, bytes and uuid.UUID through text_id;
        None, NaN (in an object column) and pandas.NA use the field's missing row (index buckets),
        refused for a field with "nullable": false. Float ids are refused as in the arrays form
        (``hashing.refuse_float_ids``): TypeError, ValueError naming a NaN in a float column or 1.5.
        """
        c = self.config
        dev = self.emb.domain.device
        dcol = self._column(batch, c.domain_column, "the domain, an integer in [0, %d)" % c.domains, None)
        B = dcol.shape[0]
        domain = torch.from_numpy(_domain_values(dcol, c.domain_column)).to(dev)
        if B and (int(domain.min()) < 0 or int(domain.max()) >= c.domains):
            bad = int(domain.min()) if int(domain.min()) < 0 else int(domain.max())
            raise ValueError("domain %d (column \"%s\") is out of range: the config has %d domains (0 to %d)"
                             % (bad, c.domain_column, c.domains, c.domains - 1))

        def rows(fields, key):
            out = torch.zeros(B, len(fields), dtype=torch.int64)
            bags = {}
            for i, f in enumerate(fields):
                if "pooling" in f:
                    bags[i] = tuple(None if t is None else t.to(dev) for t in self._bag(batch, f, key, i, B))
                    continue
                what = '%s field %d "%s": integer ids, text or uuid' % (key, i, f["name"])
                ids, missing = _id_values(self._column(batch, f["name"], what, B), key, i, f)
                if not f["nullable"] and missing.any():
                    r = int(np.flatnonzero(missing)[0])
                    raise ValueError('%s field %d "%s" (column "%s") is NULL at row %d, and the field says '
                                     '"nullable": false' % (key, i, f["name"], f["name"], r))
                ids[missing] = 0  # any valid id: its row is replaced by the missing row below
                if f.get("min_count"):
                    r = vocab_rows(self._vocab(key, i, f), torch.from_numpy(ids))
                else:
                    r = slots(torch.from_numpy(ids), i, f["buckets"], f["hash"], f["name"])
                out[:, i] = torch.where(torch.from_numpy(missing), torch.full_like(r, f["buckets"]), r)
            return _Rows(out.to(dev), bags) if bags else out.to(dev)

        frows = rows(c.features, "feature")
        prows = rows(c.persona, "persona")
        dense = torch.zeros(B, c.dense, dtype=torch.float32)
        for i, f in enumerate(c.dense_fields):
            v = _dense_values(self._column(batch, f["name"], 'dense field %d "%s": numbers' % (i, f["name"]), B),
                              i, f["name"], f)
            dense[:, i] = torch.from_numpy(v)
        return domain, prows, frows, dense.to(dev, self.emb.domain.dtype)

    def labels(self, batch):
        """Labels [B, T] of a named batch, from the columns named by "tasks" (NaN = no label).

        Values are 0/1 (or in [0, 1]) as ints, bools or floats; None, NaN and pandas.NA mean no label.
        """
        c = self.config
        if not _is_batch(batch):
            raise TypeError("labels() takes a named batch (a dict of columns or a pandas-like mapping)")
        cols = [self._column(batch, t, 'the labels of task "%s": 0/1, bool or NULL' % t, None) for t in c.tasks]
        B = cols[0].shape[0]
        out = np.empty((B, c.T), np.float32)
        for t, (name, a) in enumerate(zip(c.tasks, cols)):
            if a.shape[0] != B:
                raise ValueError('column "%s" has %d values, column "%s" %d: every column holds one value per row'
                                 % (name, a.shape[0], c.tasks[0], B))
            out[:, t] = _label_values(a, name)
        return torch.from_numpy(out).to(self.emb.domain.device)

    def _gate(self, g, inp):
        """GateNU: gamma * sigmoid(W2 relu(W1 in + b1) + b2)."""
        return self.config.gamma * torch.sigmoid(F.linear(torch.relu(F.linear(inp, g.w1, g.b1)), g.w2, g.b2))

    def _star(self, layer, a, segs):
        """W* a + b* per domain segment (W* = W ⊙ W_d, b* = b + b_d), or W a + b without STAR."""
        if not self.config.star:
            return F.linear(a, layer.w, layer.b)
        return torch.cat([F.linear(a[s:e], layer.w * layer.domain_w[d], layer.b + layer.domain_b[d])
                          for d, s, e in segs], dim=0)

    def _pn(self, x, domain, segs):
        """Partitioned Normalization: batch statistics per domain in training, else the running ones."""
        pn = self.pn
        if not self.training:
            scale = pn.gamma * pn.domain_gamma[domain]
            shift = pn.beta + pn.domain_beta[domain]
            return scale * (x - pn.running_mean[domain]) / torch.sqrt(pn.running_var[domain] + PN_EPS) + shift
        parts, updates = [], []
        for d, s, e in segs:
            xd = x[s:e]
            if e - s >= 2:
                mu = xd.mean(dim=0)
                var = ((xd - mu) ** 2).mean(dim=0)  # biased
                updates.append((d, mu.detach(), var.detach()))
            else:
                mu, var = pn.running_mean[d].clone(), pn.running_var[d].clone()
            parts.append((pn.gamma * pn.domain_gamma[d]) * (xd - mu) / torch.sqrt(var + PN_EPS)
                         + (pn.beta + pn.domain_beta[d]))
        with torch.no_grad():  # the 0.2 rule: warm-started average, then momentum 0.01
            for d, mu, var in updates:
                a = max(PN_MIN_MOMENTUM, 1.0 / (float(pn.num_batches_tracked[d]) + 1.0))
                pn.running_mean[d] = (1 - a) * pn.running_mean[d] + a * mu
                pn.running_var[d] = (1 - a) * pn.running_var[d] + a * var
                pn.num_batches_tracked[d] += 1
        return torch.cat(parts, dim=0)

    def _bag(self, batch, f, key, i, B):
        """(rows [E], row of each id [E], weights [E] or None) of multi-valued field i of a named batch: its
        column holds per row a list (tuple, numpy array) of ids or None (a NULL list); None elements are
        left out with their weights; a NULL or empty list, or total weight 0, uses the empty row. Its
        "weights" column holds a list of non-negative finite numbers per row, one per id."""
        name = f["name"]
        field = '%s field %d "%s"' % (key, i, name)
        where = '%s (column "%s")' % (field, name)
        col = self._bag_column(batch, name, '%s field %d "%s": lists of ids' % (key, i, name), B)
        wcol = None
        if "weights" in f:
            wcol = self._bag_column(batch, f["weights"], 'the weights of %s field %d "%s": lists of numbers'
                                    % (key, i, name), B)
        flat, seg, wts = [], [], []
        for r in range(B):
            v = col[r]
            if _is_null(v):
                if not f["nullable"]:
                    raise ValueError('%s is NULL at row %d, and the field says "nullable": false (an empty list '
                                     'is taken)' % (where, r))
                continue
            vals = list(v)
            if len(vals) > MAX_BAG:
                raise ValueError("%s has %d ids at row %d, more than the limit of %d per row"
                                 % (where, len(vals), r, MAX_BAG))
            wv = None
            if wcol is not None:
                wr = wcol[r]
                if _is_null(wr):
                    if any(not _is_null(x) for x in vals):
                        raise ValueError('the weights of %s (column "%s") are NULL at row %d, but the row has ids'
                                         % (field, f["weights"], r))
                    continue
                wv = list(wr)
                if len(wv) != len(vals):
                    raise ValueError('the weights of %s (column "%s") have %d elements at row %d, but the row has '
                                     '%d ids: one weight per id' % (field, f["weights"], len(wv), r, len(vals)))
            for j, x in enumerate(vals):
                if _is_null(x):
                    continue
                if wv is not None:
                    if wv[j] is None or type(wv[j]).__name__ == "NAType":
                        raise ValueError('weight %d of %s (column "%s") at row %d is NULL, but its id is not'
                                         % (j + 1, field, f["weights"], r))
                    if isinstance(wv[j], (bool, np.bool_)) or not isinstance(wv[j], (int, float, np.integer,
                                                                                      np.floating, decimal.Decimal)):
                        raise TypeError('weight %d of %s (column "%s") at row %d is a %s: weights are numbers'
                                        % (j + 1, field, f["weights"], r, type(wv[j]).__name__))
                    wd = float(wv[j])
                    if not math.isfinite(wd) or wd < 0:
                        raise ValueError('weight %d of %s (column "%s") at row %d is %r: weights must be finite '
                                         'and >= 0' % (j + 1, field, f["weights"], r, wv[j]))
                    with np.errstate(over="ignore", under="ignore"):
                        wj = float(np.float32(wd))
                    # weights are float32: within its range, 0 or normal (a mean divides by their sum)
                    if not math.isfinite(wj) or 0 < wj < FLT_MIN:
                        raise ValueError('weight %d of %s (column "%s") at row %d is %r: a weight is 0 or between '
                                         '%g and %g (a float32\'s normal range)'
                                         % (j + 1, field, f["weights"], r, wv[j], FLT_MIN, FLT_MAX))
                    wts.append(wj)
                flat.append(x)
                seg.append(r)
        ids = np.zeros(len(flat), np.int64)
        j = 0
        while j < len(flat):
            # one batch row's ids at a time, so that an error names the row (and the element)
            r, e = seg[j], j
            while e < len(flat) and seg[e] == r:
                e += 1
            a = np.empty(e - j, dtype=object)
            a[:] = flat[j:e]
            try:
                ids[j:e], _, kinds = _id_values_kinds(a, key, i, f)
            except (TypeError, ValueError) as err:
                raise type(err)(re.sub(r" at row (\d+)", lambda mt: " at row %d (element %d of its list)"
                                       % (r, int(mt.group(1)) + 1), str(err), count=1)) from None
            for kind, _ in kinds:
                _id_kind(f, key, i, kind, r)
            j = e
        if f.get("min_count"):
            rows = vocab_rows(self._vocab(key, i, f), torch.from_numpy(ids))
        else:
            rows = slots(torch.from_numpy(ids), i, f["buckets"], f["hash"], name)
        return (rows, torch.tensor(seg, dtype=torch.int64),
                None if wcol is None else torch.tensor(wts, dtype=torch.float32))

    def _bag_column(self, batch, name, what, B):
        """A multi-valued column of a named batch: B values, each a list of values or None."""
        try:
            col = batch[name]
        except (KeyError, IndexError):
            raise ColumnError('the batch has no column "%s" (%s)' % (name, what)) from None
        if torch.is_tensor(col):
            col = col.detach().cpu().numpy()
        if hasattr(col, "to_numpy") and not isinstance(col, np.ndarray):
            col = col.to_numpy()
        if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
            raise TypeError('column "%s" (%s) is a sequence of lists, got %s' % (name, what, type(col).__name__))
        vals = list(col)
        if len(vals) != B:
            raise ValueError('column "%s" (%s) must hold one list per row: %d values for %d rows'
                             % (name, what, len(vals), B))
        for r, v in enumerate(vals):
            if not _is_null(v) and (isinstance(v, (str, bytes)) or not hasattr(v, "__len__")):
                raise TypeError('column "%s" (%s) holds a %s at row %d: a multi-valued field takes a list of ids '
                                'per row (or None)' % (name, what, type(v).__name__, r))
        return vals

    def forward(self, domain, persona=None, features=None, dense=None):
        """Logits [B, T] (docs/model.md steps 1-8), the ones the loss trains (no negative_rate term).
        In training mode PN uses batch statistics and moves the running statistics; in eval mode it
        uses the running statistics. With "inputs": "columns", m(batch) with one named batch."""
        return self._forward(*self._parse(domain, persona, features, dense))

    def _forward(self, domain, persona, features, dense):
        """Logits [B, T] of parsed inputs: domain [B], persona and feature embedding rows, dense."""
        c = self.config
        B = domain.shape[0]
        if B == 0:
            return torch.zeros(0, c.T, dtype=self.emb.domain.dtype, device=domain.device)
        # rows grouped by domain (stable), restored at the end
        order = torch.argsort(domain, stable=True)
        if isinstance(features, _Rows) or isinstance(persona, _Rows):
            # multi-valued fields: pooled in the input order, then sorted with the rows
            femb = self._embed(self.emb.feature, features, c.features)[order]
            pemb = self._embed(self.emb.persona, persona, c.persona)[order]
            features = persona = None
        domain, dense = domain[order], dense[order]
        if features is not None:
            persona, features = persona[order], features[order]
        doms, counts = torch.unique_consecutive(domain, return_counts=True)
        segs, s = [], 0
        for d, n in zip(doms.tolist(), counts.tolist()):
            segs.append((d, s, s + n))
            s += n

        if features is not None:
            femb = self._embed(self.emb.feature, features, c.features)
            pemb = self._embed(self.emb.persona, persona, c.persona)
        dv = F.embedding(domain, self.emb.domain, sparse=self.sparse)
        # x0 = [feature embeddings ; dense] (; dv with "domain_input", the shared-bottom input)
        x0 = torch.cat([femb, dense] + ([dv] if c.domain_input else []), dim=1)
        pv = pemb
        x = self._gate(self.epnet, torch.cat([dv, x0.detach()], dim=1)) * x0 if c.epnet else x0
        xn = self._pn(x, domain, segs) if c.pn else x
        gates = []
        if c.ppnet:
            gin = torch.cat([pv, x.detach()], dim=1)
            gates = [self._gate(self.ppnet[str(l)], gin) for l in range(1, len(c.hidden) + 1)]
        L = len(c.hidden)
        logits = []
        for t in range(c.T):
            a = xn
            for l in range(1, L + 1):
                a = torch.relu(self._star(self.tower[t][str(l)], a, segs))
                if gates:
                    h = c.hidden[l - 1]
                    a = gates[l - 1][:, t * h:(t + 1) * h] * a
            logits.append(self._star(self.tower[t][str(L + 1)], a, segs)[:, 0])
        logit = torch.stack(logits, dim=1)
        if c.aux:
            logit = logit + F.linear(torch.relu(F.linear(torch.cat([dv, x0], dim=1), self.aux.w1, self.aux.b1)),
                                     self.aux.w2, self.aux.b2)
        return logit[torch.argsort(order)]

    @torch.no_grad()
    def predict(self, domain, persona=None, features=None, dense=None):
        """Probabilities [B, T] (step 9) in inference mode (running statistics), no gradient: what
        pepnet_score returns. With a config "negative_rate" w_d (the share of domain d's negatives
        kept in the training data), sigmoid(logit + ln w_d), the rate on undown-sampled data.
        With "inputs": "columns", m.predict(batch) with one named batch."""
        was = self.training
        self.eval()
        try:
            inputs = self._parse(domain, persona, features, dense)
            logit = self._forward(*inputs)
            if self.config.negative_rate is not None and logit.shape[0]:
                w = torch.tensor(self.config.negative_rate, dtype=torch.float64, device=logit.device)
                d = inputs[0].to(logit.device)
                logit = logit + torch.log(w)[d].unsqueeze(1).to(logit.dtype)
            return torch.sigmoid(logit)
        finally:
            self.train(was)

    # ------------------------------------------------------------------ loss

    def l2_term(self):
        """Sum of squares of the shared weight matrices (*.w, *.w1, *.w2)."""
        sd = dict(self.named_parameters())
        return sum((sd[n] ** 2).sum() for n in self._names if n.endswith((".w", ".w1", ".w2")))

    def loss(self, logits, labels):
        """Mean over the batch of the summed masked BCE over tasks (NaN label = unknown), + l2 * sum(W^2).

        labels: [B, T] (or [B] for one task) of 0/1, NaN where a task has no label; the mean divides
        by B, including rows whose labels are all unknown (as the extension does). With "inputs":
        "columns", labels may be the named batch itself: its task columns (labels()).
        """
        if self.config.named and _is_batch(labels):
            labels = self.labels(labels)
        elif isinstance(labels, Mapping):
            raise TypeError('this model\'s config has "inputs": "arrays": labels are a [B, T] array; '
                            'labels from task columns need "inputs": "columns"')
        labels = torch.as_tensor(labels, device=logits.device).to(logits.dtype).reshape(logits.shape)
        mask = ~torch.isnan(labels)
        bce = F.binary_cross_entropy_with_logits(logits, torch.where(mask, labels, torch.zeros_like(labels)),
                                                 reduction="none")
        out = torch.where(mask, bce, torch.zeros_like(bce)).sum() / max(1, logits.shape[0])
        if self.config.l2:
            out = out + self.config.l2 * self.l2_term()
        return out


class _Rows:
    """Embedding rows of a named batch's fields: rows [B, n] of the single-valued fields and, for each
    multi-valued field i, bags[i] = (rows [E], the batch row of each id [E], weights [E] or None)."""

    def __init__(self, rows, bags):
        self.rows = rows
        self.bags = bags


class ColumnError(KeyError):
    """A named batch without a column the config's fields, domain or tasks need."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def _is_batch(x):
    """Whether x is a named batch (a mapping by column name), not an array of values."""
    if x is None or torch.is_tensor(x) or isinstance(x, (np.ndarray, np.generic, list, tuple, str, bytes, int, float)):
        return False
    return hasattr(x, "__getitem__")


def _as_array(col):
    """A column's values as a numpy array (object dtype for lists of mixed values)."""
    if torch.is_tensor(col):
        return col.detach().cpu().numpy()
    if isinstance(col, np.ndarray):
        return col
    if hasattr(col, "to_numpy"):  # pandas Series (nullable dtypes come back as objects with pandas.NA)
        return np.asarray(col.to_numpy())
    if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
        raise TypeError("a column is a sequence of values (list, numpy array, tensor, Series), got %s"
                        % type(col).__name__)
    vals = list(col)
    a = np.empty(len(vals), dtype=object)
    for r, v in enumerate(vals):
        a[r] = v
    return a


def _is_null(x):
    """None, a float NaN or pandas.NA/NaT (without importing pandas)."""
    if x is None:
        return True
    if isinstance(x, (float, np.floating)):
        return bool(np.isnan(x))
    if isinstance(x, decimal.Decimal):
        return x.is_nan()
    return type(x).__name__ in ("NAType", "NaTType")


_INT64_MAX = (1 << 63) - 1


_CAST_NAMED = ("keep missing ids as None in an object column or as pandas.NA (df[col].astype('Int64')) to use the "
               "field's missing row, and cast the column to an integer dtype, e.g. df[col].astype('int64')")
_IDS_NAMED = "ids must be integers, text or uuid"


def _refuse_float_column(a, key, i, name, row=None, dtype=None):
    """Raise for float ids in field i's column, with the arrays form's refusal (``refuse_float_ids``):
    a: the column's float values, or a 0-d array of the one float at ``row`` of an object column."""
    refuse_float_ids(a, '%s field %d "%s" (column "%s")' % (key, i, name, name),
                     lambda r: " at row %d" % (r if row is None else row), _CAST_NAMED, _IDS_NAMED, dtype)


def _id_kind(f, key, i, kind, r=None):
    """Refuse ids of the kind ("integer" or "text") other than the field's "id" (TypeError): an integer
    id and its text are different ids."""
    want = f.get("id")
    if want is None or want == kind:
        return
    raise TypeError('%s field %d "%s" (column "%s") holds %s ids%s, but the model was trained with %s ids for it '
                    '("id": "%s"); convert the column (e.g. %s)'
                    % (key, i, f["name"], f["name"], kind, "" if r is None else " (row %d)" % r, want, want,
                       "str(x)" if want == "text" else "int(x)"))


def _id_values(a, key, i, f):
    """(int64 ids [B], missing [B] bool) of one id column: ints as they are, str/bytes/uuid as text_id,
    None/NaN/pandas.NA missing; float, bool and other types refused (TypeError). With the field's "id"
    set, ids of the other kind are a TypeError."""
    ids, missing, kinds = _id_values_kinds(a, key, i, f)
    for kind, r in kinds if a.shape[0] else ():
        _id_kind(f, key, i, kind, r)
    return ids, missing


def _id_values_kinds(a, key, i, f):
    """_id_values, and the id kinds seen: (kind, first row or None) pairs."""
    name = f["name"]
    B = a.shape[0]
    missing = np.zeros(B, bool)
    kind = a.dtype.kind
    if kind == "i":
        return a.astype(np.int64), missing, [("integer", None)]
    if kind == "u":
        if B and int(a.max()) > _INT64_MAX:
            raise ValueError('%s field %d "%s" (column "%s") holds the id %d, above the int64 range'
                             % (key, i, name, name, int(a.max())))
        return a.astype(np.int64), missing, [("integer", None)]
    if kind in "fc":
        _refuse_float_column(a, key, i, name)
    if kind in "US":
        return text_id(a), missing, [("text", None)]
    if kind != "O":
        raise TypeError('%s field %d "%s" (column "%s") has dtype %s: ids are integers, text (str) or uuid'
                        % (key, i, name, name, a.dtype))
    vals = a.tolist()
    types = set(map(type, vals))
    if types <= {int}:
        try:
            return np.array(vals, dtype=np.int64), missing, [("integer", None)]
        except OverflowError:
            pass  # an id outside int64: the loop below names it
    if types <= {str}:
        return text_id(vals), missing, [("text", None)]
    ids = np.zeros(B, np.int64)
    tpos, tvals = [], []
    first_int = None
    for r, x in enumerate(vals):
        if isinstance(x, (bool, np.bool_)):
            raise TypeError('%s field %d "%s" (column "%s") holds a bool at row %d: ids are integers, text or uuid'
                            % (key, i, name, name, r))
        if isinstance(x, (int, np.integer)):
            if not -_INT64_MAX - 1 <= int(x) <= _INT64_MAX:
                raise ValueError('%s field %d "%s" (column "%s") holds the id %d at row %d, outside the int64 range'
                                 % (key, i, name, name, int(x), r))
            ids[r] = int(x)
            if first_int is None:
                first_int = r
        elif isinstance(x, (str, bytes, uuid.UUID)):
            tpos.append(r)
            tvals.append(x)
        elif _is_null(x):
            missing[r] = True
        elif isinstance(x, (float, np.floating, decimal.Decimal)):
            _refuse_float_column(np.array(float(x)), key, i, name, r, type(x).__name__)
        else:
            raise TypeError('%s field %d "%s" (column "%s") holds a %s at row %d: ids are integers, text or uuid'
                            % (key, i, name, name, type(x).__name__, r))
    if tpos:
        ids[np.array(tpos)] = text_id(tvals)
    kinds = ([("integer", first_int)] if first_int is not None else []) + ([("text", tpos[0])] if tpos else [])
    return ids, missing, kinds


def _numbers(a, what, null):
    """float64 values [B] of a numeric column (ints, floats, Decimal); NaN where None/NaN/NA when null,
    else those are a ValueError naming the row; bools and other types refused (TypeError)."""
    kind = a.dtype.kind
    if kind in "iuf":
        v = a.astype(np.float64)
    elif kind == "b" and null:  # labels may be bool
        v = a.astype(np.float64)
    elif kind == "O":
        v = np.empty(a.shape[0], np.float64)
        for r, x in enumerate(a.tolist()):
            if _is_null(x):
                v[r] = np.nan
            elif isinstance(x, (bool, np.bool_)) and not null:
                raise TypeError("%s holds a bool at row %d: numbers are expected" % (what, r))
            elif isinstance(x, (int, float, bool, np.integer, np.floating, np.bool_, decimal.Decimal)):
                v[r] = float(x)
            else:
                raise TypeError("%s holds a %s at row %d: numbers are expected" % (what, type(x).__name__, r))
    else:
        raise TypeError("%s has dtype %s: numbers are expected" % (what, a.dtype))
    if not null and np.isnan(v).any():
        raise ValueError("%s is NULL (None or NaN) at row %d: a dense field has no missing value"
                         % (what, int(np.flatnonzero(np.isnan(v))[0])))
    return v


def _dense_values(a, i, name, field=None):
    """float32 values [B] of dense field i's column after its transforms (``dense_transform``); NULL
    refused unless the field is z-scored (then imputed with its mean), non-finite values refused."""
    what = 'dense field %d "%s" (column "%s")' % (i, name, name)
    zscore = field is not None and field.get("normalize") == "zscore"
    v = _numbers(a, what, zscore)
    if not np.isfinite(v[~np.isnan(v)]).all():
        raise ValueError("%s holds an infinite value at row %d" % (what, int(np.flatnonzero(np.isinf(v))[0])))
    with np.errstate(over="ignore"):
        v = v.astype(np.float32)
    if not np.isfinite(v[~np.isnan(v)]).all():
        raise ValueError("%s holds a value beyond float32's range at row %d"
                         % (what, int(np.flatnonzero(np.isinf(v))[0])))
    return v if field is None else dense_transform(v, field, what)


def dense_transform(v, field, what=None):
    """A named dense field's transforms (docs/model.md, "Named inputs", dense transforms), as the extension
    applies them: ``log1p`` (x -> ln(1 + x), refusing x <= -1), then ``clip`` [lo, hi], then ``"normalize": "zscore"``
    ((x - mean) / std with the field's stored mean and std; NaN, a NULL, becomes 0, the mean). v: float32
    values [B] (NaN = NULL); returns float32 [B], bit for bit the server's values."""
    what = what or 'dense field "%s"' % field["name"]
    v = np.asarray(v, np.float32).copy()
    null = np.isnan(v)
    if field.get("log1p"):
        bad = ~null & ~(v > np.float32(-1))
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise ValueError('%s is %g at row %d, but its "log1p" needs values above -1' % (what, v[r], r))
        v = np.log1p(v.astype(np.float64)).astype(np.float32)
    if "clip" in field:
        lo, hi = np.float32(field["clip"][0]), np.float32(field["clip"][1])
        v = np.where(v < lo, lo, np.where(v > hi, hi, v)).astype(np.float32)
    if field.get("normalize") == "zscore":
        if "mean" not in field:
            raise ValueError('%s has "normalize": "zscore" but the config has no "mean" and "std": compute them '
                             'with pepnet.dense_stats(config, batch) or train on the server' % what)
        v = ((v - np.float32(field["mean"])) / np.float32(field["std"])).astype(np.float32)
        v[null] = 0
    return v


def _check_vocab(name, v, shape):
    """Refuse a vocabulary of another shape, or not ascending and unique (StateDictError)."""
    if tuple(v.shape) != shape:
        raise StateDictError("vocabulary %s has shape %s, the config needs %s (buckets - 1 ids)"
                             % (name, list(v.shape), list(shape)))
    if v.numel() > 1:
        bad = torch.nonzero(v[1:] <= v[:-1])
        if bad.numel():
            j = int(bad[0]) + 1
            raise StateDictError("vocabulary %s is not ascending and unique at element %d (id %d follows %d)"
                                 % (name, j, int(v[j]), int(v[j - 1])))


def vocab_rows(vocab, ids):
    """Rows of int64 ids [B] through a vocabulary (int64 [V], ascending): the id's position when it is
    in the vocabulary, else V (the out-of-vocabulary row), as the extension's pn_field_row."""
    V = vocab.numel()
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if V == 0:
        return torch.zeros_like(ids)
    pos = torch.searchsorted(vocab, ids)
    found = vocab[pos.clamp(max=V - 1)] == ids
    return torch.where(found & (pos < V), pos, torch.full_like(pos, V))


def build_vocab(config, batch):
    """(config, vocab) of a named config's "min_count" fields from a named batch, as ``pepnet_train``
    builds them from its data query: the ids seen at least min_count times (NULLs not counted; text
    ids as pepnet.text_id), at most buckets - 1 of them (the most frequent, ties by the smaller id),
    ascending; a multi-valued field counts each non-NULL element of its lists. config: the dict with each
    such field's "buckets" = V + 1; vocab: {"vocab.feature.0": int64 tensor [V], ...}. Give both to
    StarPepNet(config, seed, vocab=vocab)."""
    from .config import Config
    c = Config(config)
    d = c.to_dict()
    vocab = OrderedDict()
    for key, fields in (("feature", d["features"] if c.named else []), ("persona", d["persona"] if c.named else [])):
        for i, f in enumerate(fields):
            if not f.get("min_count"):
                continue
            what = '%s field %d "%s": integer ids, text or uuid' % (key, i, f["name"])
            try:
                col = batch[f["name"]]
            except (KeyError, IndexError):
                raise ColumnError('the batch has no column "%s" (%s)' % (f["name"], what)) from None
            a = _as_array(col)
            if "pooling" in f:
                # a multi-valued field: each non-NULL element of each row's list is one id counted
                flat = [x for v in list(a) if not _is_null(v) for x in list(v) if not _is_null(x)]
                a = np.empty(len(flat), dtype=object)
                a[:] = flat
            ids, missing = _id_values(a, key, i, f)
            u, n = np.unique(ids[~missing], return_counts=True)
            keep = n >= f["min_count"]
            u, n = u[keep], n[keep]
            if u.size > f["buckets"] - 1:
                order = np.lexsort((u, -n))  # the most frequent first, ties by the smaller id
                u = np.sort(u[order[:f["buckets"] - 1]])
            vocab["vocab.%s.%d" % (key, i)] = torch.from_numpy(u.astype(np.int64))
            f["buckets"] = int(u.size) + 1
    return d, vocab


def dense_stats(config, batch):
    """The config (a dict) with the "mean" and "std" of every z-scored named dense field that has none,
    computed as ``pepnet_train`` computes them: over the batch's non-NULL values after the field's log1p
    and clip, the population standard deviation (0 stored as 1), as float32. batch: a named batch (a
    dict of columns or a DataFrame). Fields with statistics keep them."""
    from .config import Config
    c = Config(config)
    d = c.to_dict()
    for i, f in enumerate(d["dense"] if c.named else []):
        if f.get("normalize") != "zscore" or "mean" in f:
            continue
        what = 'dense field %d "%s" (column "%s")' % (i, f["name"], f["name"])
        pre = {k: x for k, x in f.items() if k not in ("normalize", "mean", "std")}
        try:
            col = batch[f["name"]]
        except (KeyError, IndexError):
            raise ColumnError('the batch has no column "%s" (%s)' % (f["name"], what)) from None
        v = dense_transform(_numbers(_as_array(col), what, True).astype(np.float32), pre, what)
        v = v[~np.isnan(v)].astype(np.float64)
        mean = float(v.mean()) if v.size else 0.0
        std = float(np.float32(np.sqrt(((v - mean) ** 2).mean()))) if v.size else 0.0
        f["mean"], f["std"] = float(np.float32(mean)), std if std >= FLT_MIN and math.isfinite(std) else 1.0
    return d


def _domain_values(a, name):
    """int64 domains [B] of the domain column: integers only, never NULL."""
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    what = 'the domain column "%s"' % name
    cast = "cast it with astype('int64')"
    if a.dtype.kind in "fc":
        refuse_float_ids(a, what, lambda r: " at row %d" % r, cast, "domains must be integers")
    if a.dtype.kind != "O":
        raise TypeError("%s has dtype %s: domains are integers" % (what, a.dtype))
    out = np.zeros(a.shape[0], np.int64)
    for r, x in enumerate(a.tolist()):
        if _is_null(x):
            raise ValueError("%s is NULL at row %d: every row needs a domain" % (what, r))
        if isinstance(x, (float, np.floating, decimal.Decimal)):
            refuse_float_ids(np.array(float(x)), what, lambda _: " at row %d" % r, cast, "domains must be integers",
                             type(x).__name__)
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
            raise TypeError("%s holds a %s at row %d: domains are integers" % (what, type(x).__name__, r))
        out[r] = int(x)
    return out


def _label_values(a, task):
    """float32 labels [B] of one task's column (NaN = no label); values outside [0, 1] refused."""
    what = 'the label column "%s"' % task
    v = _numbers(a, what, True)
    bad = ~np.isnan(v) & ((v < 0) | (v > 1))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError("%s holds %g at row %d: labels are 0/1 (in [0, 1]), None or NaN for no label" % (what, v[r], r))
    return v.astype(np.float32)


def _splitmix64_np(z):
    """splitmix64 on numpy uint64 (scalar or array), wrapping."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


class Optimizer:
    """The extension's optimiser: Adam on dense parameters, SparseAdam (lazy Adam) on embedding tables.

    lr, betas, eps as torch.optim.Adam (defaults 1e-3, (0.9, 0.999), 1e-8). Embedding gradients
    must be sparse (StarPepNet.sparse, the default).
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        emb = [p for n, p in model.named_parameters() if n.startswith("emb.")]
        dense = [p for n, p in model.named_parameters() if not n.startswith("emb.")]
        self.params = emb + dense
        self.adam = torch.optim.Adam(dense, lr=lr, betas=betas, eps=eps) if dense else None
        self.sparse_adam = torch.optim.SparseAdam(emb, lr=lr, betas=betas, eps=eps)

    def zero_grad(self):
        """Drop all gradients."""
        for p in self.params:
            p.grad = None

    def step(self):
        """One update of every parameter group."""
        if self.adam is not None:
            self.adam.step()
        self.sparse_adam.step()

    def state_dict(self):
        return {"adam": self.adam.state_dict() if self.adam else None, "sparse_adam": self.sparse_adam.state_dict()}

    def load_state_dict(self, sd):
        if self.adam is not None:
            self.adam.load_state_dict(sd["adam"])
        self.sparse_adam.load_state_dict(sd["sparse_adam"])
