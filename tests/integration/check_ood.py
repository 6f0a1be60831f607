"""Drivers for test_ood.sh.

models OUT          writes OUT/ood.onnx (a 7-class conv classifier with a
                    second output ood_score = mean of squared features,
                    ood_threshold 0.5), OUT/ood_noth.onnx (no threshold),
                    OUT/ood_name.onnx (second output under another name),
                    OUT/ood_meta.onnx (ood_output metadata, one output) and
                    OUT/imgs/ (flat and busy images).
check PRED.jsonl    every line has in_distribution == (ood_score <=
                    ood_threshold), both outcomes occur.
null PRED.jsonl     every line has the three keys, all null.
lists DATA SKDATA OUT
                    OUT/val.txt (val images), OUT/neg.txt (negatives).
quality VAL.jsonl NEG.jsonl
                    the default model: AUROC >= 0.95 between val (positives)
                    and negatives, <= 3 % of val rejected.
"""
import json
import os
import sys

import numpy as np


def models(out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image
    rng = np.random.default_rng(5)
    inits = {"w1": (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32),
             "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
             "fw": (rng.standard_normal((7, 8)) * 2).astype(np.float32),
             "fb": (rng.standard_normal(7) * 0.1).astype(np.float32),
             "half": np.array([1.0], np.float32)}

    def make(name, out_name="ood_score", meta_extra=None, second=True):
        nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("GlobalAveragePool", ["r"], ["p"]),
                 helper.make_node("Flatten", ["p"], ["f"]),
                 helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1)]
        outs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7])]
        if second:
            nodes += [helper.make_node("ReduceSumSquare", ["f"], ["ss"], axes=[1], keepdims=0),
                      helper.make_node("Mul", ["ss", "half"], [out_name])]
            outs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [1]))
        g = helper.make_graph(nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                              outs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 7
        meta = {"labels": "akiec,bcc,bkl,df,mel,nv,vasc", "input_size": "32", "resize": "direct",
                "mean": "0.5,0.5,0.5", "std": "0.5,0.5,0.5", "ood_threshold": "0.5",
                "ood_method": "test: sum of squared pooled features"}
        meta.update(meta_extra or {})
        for k, v in meta.items():
            if v is None:
                continue
            p = m.metadata_props.add()
            p.key, p.value = k, v
        onnx.save(m, os.path.join(out, name + ".onnx"))

    make("ood")
    make("ood_noth", meta_extra={"ood_threshold": None})
    make("ood_badth", meta_extra={"ood_threshold": "high"})
    make("ood_name", out_name="extra")
    make("ood_meta", second=False, meta_extra={"ood_output": "ood_score"})
    os.makedirs(os.path.join(out, "imgs"), exist_ok=True)
    for i in range(12):
        if i % 2:
            a = np.full((40, 48, 3), 40 * (i % 6), np.uint8)          # flat colour
        else:
            a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)     # noise
        Image.fromarray(a).save(os.path.join(out, "imgs", "img%02d.png" % i))


def lists(data, skdata, out):
    """out/val.txt: the val images; out/neg.txt: the negatives (BMPs, which
    dermal does not decode, converted to PNG in out/neg/)."""
    import csv
    from PIL import Image
    ham = os.path.join(data, "ham10000")
    with open(os.path.join(ham, "split.csv"), newline="") as f:
        val = [os.path.join(ham, "images", r["image_id"] + ".jpg")
               for r in csv.DictReader(f) if r["split"] == "val"]
    with open(os.path.join(out, "val.txt"), "w") as f:
        f.write("\n".join(val) + "\n")
    neg = sorted(os.path.join(skdata, n) for n in os.listdir(skdata)
                 if n.endswith((".png", ".jpg")))
    os.makedirs(os.path.join(out, "neg"), exist_ok=True)
    mob = os.path.join(data, "imagenet-mobilenet")
    for n in sorted(os.listdir(mob)) if os.path.isdir(mob) else []:
        if n.endswith(".bmp"):
            dst = os.path.join(out, "neg", n[:-4] + ".png")
            Image.open(os.path.join(mob, n)).convert("RGB").save(dst)
            neg.append(dst)
    with open(os.path.join(out, "neg.txt"), "w") as f:
        f.write("\n".join(neg) + "\n")


def lines(path):
    with open(path) as f:
        return [json.loads(s) for s in f if s.strip()]


def check(path):
    seen = set()
    for d in lines(path):
        s, t, ind = d["ood_score"], d["ood_threshold"], d["in_distribution"]
        assert isinstance(s, float) and t == 0.5 and isinstance(ind, bool), d
        assert ind == (s <= t), d
        seen.add(ind)
    assert seen == {True, False}, "only %s" % seen


def null(path):
    for d in lines(path):
        assert d["in_distribution"] is None and d["ood_score"] is None and d["ood_threshold"] is None, d


def auroc(pos, neg):
    pos, neg = np.asarray(pos), np.asarray(neg)
    gt = (neg[:, None] > pos[None, :]).sum() + 0.5 * (neg[:, None] == pos[None, :]).sum()
    return float(gt) / (len(pos) * len(neg))


def quality(val_path, neg_path):
    val = [d for d in lines(val_path) if "error" not in d]
    neg = [d for d in lines(neg_path) if "error" not in d]
    sv = [d["ood_score"] for d in val]
    sn = [d["ood_score"] for d in neg]
    rej = sum(not d["in_distribution"] for d in val) / len(val)
    acc = [os.path.basename(d["image"]) for d in neg if d["in_distribution"]]
    au = auroc(sv, sn)
    print("OOD: AUROC %.4f over %d val and %d negative images; val rejected %.2f%% at "
          "threshold %.4g; negatives accepted %d: %s" % (
              au, len(sv), len(sn), 100 * rej, val[0]["ood_threshold"], len(acc), ", ".join(acc)))
    assert au >= 0.95, "AUROC %.4f < 0.95" % au
    assert rej <= 0.03, "val rejected %.4f > 0.03" % rej


if __name__ == "__main__":
    cmd = sys.argv[1]
    {"models": models, "lists": lists, "check": check, "null": null,
     "quality": quality}[cmd](*sys.argv[2:])
