"""The Python package's vocabularies ("min_count", docs/model.md "Vocabularies and unseen ids"),
without a database: Config's refusals, pepnet.build_vocab (counts, the buckets limit and its ties,
NULLs, text ids), pepnet.vocab_rows, StarPepNet's vocab buffers (rows of a named batch, the I64
tensors of its safetensors, refusals of bad vocabularies). Run with /usr/bin/python3.
Prints one line per check and "N passed, M failed"; exit 1 if any check failed.
"""
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))
import pepnet  # noqa: E402

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(bool(ok))
    print("%s - %s%s" % ("ok" if ok else "not ok", name, (" (%s)" % detail) if detail else ""))


def raises(exc, fn, text):
    try:
        fn()
    except exc as e:
        return text in str(e)
    return False


def main():
    base = {"inputs": "columns", "domains": 2, "emb_dim": 2, "hidden": [3]}
    cfg = dict(base, features=[{"name": "item", "buckets": 4, "min_count": 2}, {"name": "cat", "buckets": 5}],
               persona=[{"name": "u", "buckets": 10, "min_count": 1}])
    for bad, text in ((0, "at least 1"), (True, "at least 1"), (1.5, "at least 1"), ("2", "at least 1")):
        check("Config refuses min_count %r" % (bad,),
              raises(pepnet.ConfigError, lambda: pepnet.Config(dict(base, features=[{"name": "a", "buckets": 3, "min_count": bad}])), text))
    check("Config refuses min_count on a field with hash false",
          raises(pepnet.ConfigError, lambda: pepnet.Config(dict(base, features=[{"name": "a", "buckets": 3, "hash": False, "min_count": 2}])),
                 "needs a hashed field"))
    check("Config refuses min_count in the arrays form",
          raises(pepnet.ConfigError, lambda: pepnet.Config({"domains": 1, "features": [{"name": "a", "buckets": 3, "min_count": 2}]}),
                 "named form"))
    check("Config keeps min_count", pepnet.Config(cfg).to_dict()["features"][0]["min_count"] == 2)

    # item: 9 x4, 2 x3, 7 x3, 5 x3, 1 x1, NULL x2; the limit (3 ids) keeps 9 and, of the ties at 3, 2 and 5
    b = {"domain": [0] * 16,
         "item": [9, 9, 9, 9, 2, 2, 2, 7, 7, 7, 5, 5, 5, 1, None, None],
         "cat": ["x"] * 16,
         "u": ["a", "b", "a", None, "c", "c", "c", "d", "a", "b", "a", "e", "e", "e", "e", "e"],
         "click": [1, 0] * 8}
    built, vocab = pepnet.build_vocab(cfg, b)
    check("build_vocab: the most frequent ids, ties by the smaller id, ascending", vocab["vocab.feature.0"].tolist() == [2, 5, 9])
    check("build_vocab: buckets = V + 1", built["features"][0]["buckets"] == 4 and built["persona"][0]["buckets"] == 6)
    check("build_vocab: text ids as pepnet.text_id, NULL not counted",
          vocab["vocab.persona.0"].tolist() == sorted(int(x) for x in pepnet.text_id(["a", "b", "c", "d", "e"])))
    check("build_vocab: a field without min_count has none", list(vocab) == ["vocab.feature.0", "vocab.persona.0"] and
          built["features"][1]["buckets"] == 5)
    check("build_vocab: int64 tensors", all(v.dtype == torch.int64 for v in vocab.values()))
    few, fv = pepnet.build_vocab(dict(cfg, features=[{"name": "item", "buckets": 4, "min_count": 5}, {"name": "cat", "buckets": 5}]), b)
    check("build_vocab: no id seen min_count times gives V = 0, one OOV row", fv["vocab.feature.0"].numel() == 0 and
          few["features"][0]["buckets"] == 1)

    v = torch.tensor([-5, 2, 9, 2 ** 62], dtype=torch.int64)
    check("vocab_rows: ids of the vocabulary to their positions, others to V",
          pepnet.vocab_rows(v, [-5, 2, 9, 2 ** 62, 3, -6, 2 ** 63 - 1, -2 ** 63]).tolist() == [0, 1, 2, 3, 4, 4, 4, 4])
    check("vocab_rows: an empty vocabulary maps every id to row 0", pepnet.vocab_rows(torch.zeros(0, dtype=torch.int64), [1, 2]).tolist() == [0, 0])

    m = pepnet.StarPepNet(built, seed=3, vocab=vocab)
    m.eval()
    names = m.tensor_names()
    check("the vocabularies come last in the tensor order", names[-2:] == ["vocab.feature.0", "vocab.persona.0"])
    d, prows, frows, _ = m._named_inputs({"domain": [0, 0, 0, 0], "item": [2, 9, 1000, None], "cat": ["x"] * 4, "u": ["a", "zz", None, "e"]})
    check("named rows: vocabulary ids, the OOV row V, NULL the missing row buckets",
          frows[:, 0].tolist() == [0, 2, 3, 4] and
          prows[:, 0].tolist() == [vocab["vocab.persona.0"].tolist().index(int(pepnet.text_id(["a"])[0])), 5, 6,
                                   vocab["vocab.persona.0"].tolist().index(int(pepnet.text_id(["e"])[0]))])
    p = m.predict({"domain": [1, 1], "item": [1000, -7], "cat": ["x", "x"], "u": ["unseen", "other"]})
    check("two unseen ids score alike", float(p[0, 0]) == float(p[1, 0]))
    blob = m.to_safetensors()
    h, _ = pepnet.safetensors.header(blob)
    check("the vocabularies are written as I64", h["vocab.feature.0"]["dtype"] == "I64" and h["vocab.feature.0"]["shape"] == [3] and
          h["emb.feature.0"]["dtype"] == "F32")
    m2 = pepnet.StarPepNet.from_safetensors(built, blob)
    check("from_safetensors reads them back bit for bit", m2.to_safetensors() == blob and torch.equal(m2.vocab.feature._buffers["0"], vocab["vocab.feature.0"]))
    t = pepnet.loads(blob)
    t["vocab.feature.0"] = torch.tensor([9, 5, 2])
    check("load_state_dict refuses a vocabulary out of order", raises(pepnet.StateDictError, lambda: m2.load_state_dict(t), "not ascending and unique"))
    t["vocab.feature.0"] = torch.tensor([2.0, 5.0, 9.0])
    check("load_state_dict refuses a float vocabulary", raises(pepnet.StateDictError, lambda: m2.load_state_dict(t), "int64"))
    del t["vocab.feature.0"]
    check("load_state_dict refuses weights without the vocabulary", raises(pepnet.StateDictError, lambda: m2.load_state_dict(t), "missing tensors: vocab.feature.0"))
    check("init_weights leaves the vocabularies alone", torch.equal(m.init_weights(5).vocab.feature._buffers["0"], vocab["vocab.feature.0"]))
    # training moves embeddings and weights, never the vocabulary
    opt = pepnet.Optimizer(m, lr=0.01)
    m.train()
    loss = m.loss(m(b), b)
    loss.backward()
    opt.step()
    check("the optimiser does not hold the vocabularies", torch.equal(m.vocab.feature._buffers["0"], vocab["vocab.feature.0"]) and
          all(not n.startswith("vocab.") for n, _ in m.named_parameters()))

    # a multi-valued field with a vocabulary: each non-NULL element of each list is one id counted, its
    # ids mapped through the vocabulary (rare and unseen ids pool the OOV row)
    tcfg = dict(base, features=[{"name": "tags", "buckets": 30, "pooling": "mean", "min_count": 2}])
    tb = {"domain": [0, 1, 0, 1, 0], "tags": [["a", "b"], ["a", None, "c"], ["a", "b", "d"], None, []],
          "click": [1, 0, 1, 0, 1]}
    tbuilt, tvocab = pepnet.build_vocab(tcfg, tb)
    check("build_vocab counts each element of a multi-valued field's lists",
          tvocab["vocab.feature.0"].tolist() == sorted(int(x) for x in pepnet.text_id(["a", "b"])) and
          tbuilt["features"][0]["buckets"] == 3)
    tm = pepnet.StarPepNet(tbuilt, seed=1, vocab=tvocab)
    tm.eval()
    with torch.no_grad():
        p = tm.predict({"domain": [0, 0, 0, 0], "tags": [["c"], ["zz"], ["zz", "c"], ["a"]]})[:, 0].tolist()
    check("a multi-valued field's unseen and rare ids pool the OOV row", p[0] == p[1] == p[2] and p[3] != p[0], str(p))
    # a module of a min_count config without its vocabulary refuses to map ids (it would map them all
    # to the OOV row, or id 0 to row 0) and says how to get one
    bare = pepnet.StarPepNet(tbuilt, seed=1)
    check("a min_count field without a vocabulary is refused with how to build one",
          raises(ValueError, lambda: bare.predict({"domain": [0], "tags": [["a"]]}), "pepnet.build_vocab"))
    loaded = pepnet.StarPepNet.from_safetensors(tbuilt, pepnet.dumps(tm.tensors()))
    check("a vocabulary loaded with the weights is set (from_safetensors scores as the module it came from)",
          torch.equal(loaded.predict({"domain": [0, 0], "tags": [["a"], ["zz"]]}),
                      tm.predict({"domain": [0, 0], "tags": [["a"], ["zz"]]})))
    print("%d passed, %d failed" % (sum(RESULTS), len(RESULTS) - sum(RESULTS)))
    return 0 if all(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
