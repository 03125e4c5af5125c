"""ONNX graphs of the bench model for the ONNX Runtime anchor (issue 18), built with python3-onnx.

One graph per domain, computing exactly what bench_score.FastPepNet computes (docs/model.md with
the precomputation it allows): STAR fused into the tower weights, PN folded into the first tower
layer, the domain embedding's part of the first EPNet and aux layers as biases, and the persona
part of the PPNet gates' first layers once per request (a [1, G] row added to every candidate).
Matmuls that read the same input are one MatMul: EPNet layer 1 and aux layer 1 on x0; both tasks'
tower layer 1 and both PPNet gates' layer 1 on x (1280 x 128 for the bench model); the persona
parts of both gates on the persona embeddings.

Inputs (the client hashes the raw ids, docs/model.md, into rows of the concatenated tables):
  feat int64 [n, F]  rows of the concatenated feature embedding table
  pers int64 [P]     rows of the concatenated persona embedding table
Output:
  p float [n, T]     every task's probability

int8 (what onnxruntime.quantization.quantize_dynamic(per_channel=True) makes; it is Python-only
and not packaged here): every MatMul with a constant weight becomes DynamicQuantizeLinear
(activations uint8, scale and zero point per tensor computed at run time) -> MatMulInteger with
int8 weights (symmetric, one scale per output channel) -> Cast -> Mul by the product of scales ->
Add bias; ONNX Runtime's graph optimizer fuses each into one DynamicQuantizeMatMul (11 per graph;
ORT_OPTIMIZED_OUT=FILE makes ort_score write the optimized graph).  Embedding gathers and
elementwise ops stay fp32.
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


class Graph:
    def __init__(self, int8):
        self.nodes, self.inits, self.int8, self.n = [], [], int8, 0

    def name(self, base):
        self.n += 1
        return "%s_%d" % (base, self.n)

    def const(self, arr, base="c"):
        nm = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), nm))
        return nm

    def op(self, typ, ins, nout=1, **attrs):
        outs = [self.name(typ.lower()) for _ in range(nout)]
        self.nodes.append(helper.make_node(typ, ins, outs, **attrs))
        return outs[0] if nout == 1 else outs

    def linear(self, x, w, b, bias_tensor=None):
        """x [n, in] times w.T (w [out, in] as torch stores it) plus b [out] (or a bias tensor)."""
        w = np.asarray(w, dtype=np.float32)
        wt = np.ascontiguousarray(w.T)  # [in, out]
        if not self.int8:
            y = self.op("MatMul", [x, self.const(wt, "w")])
        else:
            amax = np.abs(wt).max(axis=0)
            scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
            q = np.clip(np.rint(wt / scale), -127, 127).astype(np.int8)
            xq, xs, xz = self.op("DynamicQuantizeLinear", [x], nout=3)
            acc = self.op("MatMulInteger", [xq, self.const(q, "wq"), xz,
                                            self.const(np.zeros(q.shape[1], np.int8), "wz")])
            accf = self.op("Cast", [acc], to=TensorProto.FLOAT)
            s = self.op("Mul", [xs, self.const(scale, "ws")])
            y = self.op("Mul", [accf, s])
        if bias_tensor is not None:
            return self.op("Add", [y, bias_tensor])
        return self.op("Add", [y, self.const(np.asarray(b, dtype=np.float32), "b")])

    def cols(self, x, lo, hi):
        return self.op("Slice", [x, self.const(np.array([lo], np.int64)), self.const(np.array([hi], np.int64)),
                                 self.const(np.array([1], np.int64))])


def domain_graph(fast, d, int8):
    """The ONNX model of domain d of a bench_score.FastPepNet."""
    c = fast.c
    assert c.epnet and c.ppnet and c.aux and c.dense == 0, "the anchor covers the bench model's config"
    k, n0, T, L, g = fast.k, fast.n0, fast.T, fast.L, float(fast.gamma)
    dc = fast.dom[d]
    G = Graph(int8)
    f32 = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731

    femb, pemb = G.const(f32(fast.femb), "femb"), G.const(f32(fast.pemb), "pemb")
    x0 = G.op("Reshape", [G.op("Gather", [femb, "feat"], axis=0), G.const(np.array([-1, n0], np.int64))])
    # EPNet layer 1 and aux layer 1: one matmul on x0
    ep_h, aux_h = fast.ep_w1x.shape[0], fast.aux_w1x.shape[0]
    w = np.concatenate([f32(fast.ep_w1x), f32(fast.aux_w1x)], 0)
    b = np.concatenate([f32(dc["ep_b"]), f32(dc["aux_b"])], 0)
    h = G.op("Relu", [G.linear(x0, w, b)])
    eh, ah = G.cols(h, 0, ep_h), G.cols(h, ep_h, ep_h + aux_h)
    gate_in = G.op("Sigmoid", [G.linear(eh, f32(fast.ep_w2), f32(fast.ep_b2))])
    x = G.op("Mul", [G.op("Mul", [gate_in, G.const(np.array(g, np.float32))]), x0])
    # persona part of both PPNet gates' layer 1, once per request: [1, G1 + G2]
    pv = G.op("Reshape", [G.op("Gather", [pemb, "pers"], axis=0), G.const(np.array([1, -1], np.int64))])
    gsz = [fast.pp[l][0].shape[0] for l in range(L)]
    gb = G.linear(pv, np.concatenate([f32(fast.pp[l][0]) for l in range(L)], 0),
                  np.concatenate([f32(fast.pp[l][2]) for l in range(L)], 0))
    # towers' layer 1 (both tasks) and both gates' layer 1: one matmul on x, 1280 x 128
    tw = f32(dc["w1"])
    nt = tw.shape[0]
    w = np.concatenate([tw] + [f32(fast.pp[l][1]) for l in range(L)], 0)
    bias = G.op("Concat", [G.const(f32(dc["b1"]).reshape(1, -1)), gb], axis=1)
    big = G.op("Relu", [G.linear(x, w, None, bias_tensor=bias)])
    a = G.cols(big, 0, nt)
    off = nt
    gh = []
    for l in range(L):
        gh.append(G.cols(big, off, off + gsz[l]))
        off += gsz[l]
    for l in range(L):
        if l > 0:
            hp = c.hidden[l - 1]
            parts = [G.linear(G.cols(a, i * hp, (i + 1) * hp), f32(dc["w"][i][l - 1]), f32(dc["b"][i][l - 1]))
                     for i in range(T)]
            a = G.op("Relu", [G.op("Concat", parts, axis=1)])
        _, _, _, w2, b2 = fast.pp[l]
        gate = G.op("Mul", [G.op("Sigmoid", [G.linear(gh[l], f32(w2), f32(b2))]),
                            G.const(np.array(g, np.float32))])
        a = G.op("Mul", [a, gate])
    hL = c.hidden[-1]
    logits = G.op("Concat", [G.linear(G.cols(a, i * hL, (i + 1) * hL), f32(dc["w"][i][-1]), f32(dc["b"][i][-1]))
                             for i in range(T)], axis=1)
    logits = G.op("Add", [logits, G.linear(ah, f32(fast.aux_w2), f32(fast.aux_b2))])
    G.nodes.append(helper.make_node("Sigmoid", [logits], ["p"]))
    graph = helper.make_graph(
        G.nodes, "pepnet_bench_d%d%s" % (d, "_int8" if int8 else ""),
        [helper.make_tensor_value_info("feat", TensorProto.INT64, ["n", len(c.features)]),
         helper.make_tensor_value_info("pers", TensorProto.INT64, [len(c.persona)])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["n", T])], initializer=G.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="pepnet-bench")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def export(fast, prefix):
    """prefix.fp32.d<D>.onnx, prefix.int8.d<D>.onnx and prefix.meta (hashing spec for ort_score.c)."""
    paths = []
    for int8 in (False, True):
        for d in range(fast.c.domains):
            p = "%s.%s.d%d.onnx" % (prefix, "int8" if int8 else "fp32", d)
            onnx.save(domain_graph(fast, d, int8), p)
            paths.append(p)
    with open(prefix + ".meta", "w") as f:
        # F P T D, then per field (features, then persona): buckets hashed offset multiplier
        f.write("%d %d %d %d\n" % (len(fast.c.features), len(fast.c.persona), fast.T, fast.c.domains))
        for bk, hs, off, mul in list(zip(fast.fbuck, fast.fhash, fast.foff, fast.fmult)) + \
                list(zip(fast.pbuck, fast.phash, fast.poff, fast.pmult)):
            f.write("%d %d %d %d\n" % (int(bk), int(hs), int(off), int(mul)))
    return paths


def write_requests(path, sets):
    """Request sets for ort_score.c: int32 nsets; per set int32 count; per request int32 domain,
    int32 n, int64 persona[P], int64 features[n * F] (raw ids, row-major)."""
    with open(path, "wb") as f:
        f.write(np.int32(len(sets)).tobytes())
        for reqs in sets:
            f.write(np.int32(len(reqs)).tobytes())
            for d, p, feats in reqs:
                feats = np.asarray(feats, dtype=np.int64)
                n = feats.shape[0] if feats.ndim == 2 else 1
                f.write(np.array([d, n], np.int32).tobytes())
                f.write(np.asarray(p, dtype=np.int64).tobytes())
                f.write(np.ascontiguousarray(feats).tobytes())


if __name__ == "__main__":
    import json
    import bench_score as bs
    cfg = json.load(open(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "bench-config.json")))
    model = bs.ref.StarPepNet(bs.ref.Config(cfg)).init_random(bs.SEED)
    model.eval()
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "build", "bench")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    for p in export(bs.FastPepNet(model), out):
        print(p, os.path.getsize(p))
