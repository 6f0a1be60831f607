#!/usr/bin/python3
"""QDQ analysis for `dermal quantize` (issue 6): where does an int8 model lose
top-1 agreement with its fp32 source?

usage: quant_sim.py FP32.onnx QDQ.onnx --images DIR|LIST.csv [--count N]
                    [--split train|val] [--per-layer] [--batch B]

A small PyTorch interpreter runs both ONNX graphs (the ops of dermal's
MobileNetV2 / ResNet-style classifiers plus QuantizeLinear and
DequantizeLinear, round half to even as the ONNX spec says) on the same
images, preprocessed from the model's metadata like serving does (PIL
resize; dermal's decoder is PIL-exact for these images).  It prints

  - top-1 agreement of QDQ with fp32, and the logit error;
  - for every quantized activation: its scale and zero point, the observed
    fp32 range on these images, the fraction of values clipped by the QDQ
    range, and the SQNR (dB) of the QDQ graph's value against fp32 at that
    point (error accumulated from the input up to there);
  - with --per-layer: the graph with only ONE quantized tensor at a time
    (one activation QDQ pair, or one weight DequantizeLinear together with
    its bias), every other QDQ bypassed: logit SQNR and top-1 agreement.
    This is the sensitivity of each quantization point in isolation.

LIST.csv is split.csv of ../shared/data/ham10000 (image_id, split columns);
--split chooses the rows.  Analysis tool only; not used by the tests.
"""
import argparse
import csv
import math
import os
import random
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image


def attrs(n):
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


class Graph:
    """An ONNX graph as a list of torch-evaluable nodes."""

    def __init__(self, path):
        self.m = onnx.load(path)
        g = self.m.graph
        self.inits = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy())
                      for t in g.initializer}
        self.nodes = list(g.node)
        self.input = [i.name for i in g.input if i.name not in self.inits][0]
        self.output = g.output[0].name
        self.meta = {p.key: p.value for p in self.m.metadata_props}

    def run(self, x, bypass=frozenset(), keep=None):
        """bypass: names of QuantizeLinear outputs / weight DequantizeLinear
        outputs whose quantization is skipped (value passes through as fp32).
        keep: dict filled with every tensor by name."""
        env = dict(self.inits)
        env[self.input] = x
        raw = {}  # QuantizeLinear output name -> its float input (for bypass)
        for n in self.nodes:
            op = n.op_type
            a = attrs(n)
            i = [env[k] if k else None for k in n.input]
            if op == "QuantizeLinear":
                s, z = i[1].float(), i[2]
                lo, hi = (0, 255) if z.dtype == torch.uint8 else (-128, 127)
                q = torch.clamp(torch.round(i[0] / s) + z.float(), lo, hi)
                raw[n.output[0]] = i[0]
                y = q
            elif op == "DequantizeLinear":
                s = i[1].float()
                z = i[2].float() if len(i) > 2 and i[2] is not None else torch.zeros(())
                src = n.input[0]
                if src in raw:  # activation pair
                    y = raw[src] if src in bypass else (i[0] - z) * s
                else:  # weight or bias
                    w = i[0].float()
                    if s.ndim == 1 and s.numel() > 1:
                        ax = a.get("axis", 1)
                        shp = [1] * w.ndim
                        shp[ax] = -1
                        s, z = s.reshape(shp), z.reshape(shp)
                    y = (w - z) * s
                    if n.output[0] in bypass:
                        y = self.float_of[n.output[0]]
            elif op == "Conv":
                w, b = i[1], i[2] if len(i) > 2 else None
                p = a.get("pads", [0] * 4)
                xx = i[0]
                if p[0] != p[2] or p[1] != p[3]:
                    xx = F.pad(xx, (p[1], p[3], p[0], p[2]))
                    pad = 0
                else:
                    pad = (p[0], p[1])
                y = F.conv2d(xx, w, b, a.get("strides", [1, 1]), pad,
                             a.get("dilations", [1, 1]), a.get("group", 1))
            elif op == "Clip":
                lo = i[1] if len(i) > 1 and i[1] is not None else a.get("min", -math.inf)
                hi = i[2] if len(i) > 2 and i[2] is not None else a.get("max", math.inf)
                y = torch.clamp(i[0], float(lo), float(hi))
            elif op == "Relu":
                y = torch.relu(i[0])
            elif op == "Add":
                y = i[0] + i[1]
            elif op == "Mul":
                y = i[0] * i[1]
            elif op == "GlobalAveragePool":
                y = i[0].mean(dim=(2, 3), keepdim=True)
            elif op == "MaxPool":
                p = a.get("pads", [0] * 4)
                y = F.max_pool2d(F.pad(i[0], (p[1], p[3], p[0], p[2]), value=-math.inf),
                                 a["kernel_shape"], a.get("strides", [1, 1]))
            elif op == "Flatten":
                ax = a.get("axis", 1)
                y = i[0].reshape(int(np.prod(i[0].shape[:ax])), -1)
            elif op == "Reshape":
                shp = [int(v) for v in i[1]]
                shp = [i[0].shape[k] if v == 0 else v for k, v in enumerate(shp)]
                y = i[0].reshape(shp)
            elif op == "Gemm":
                w = i[1].t() if a.get("transB", 0) else i[1]
                y = a.get("alpha", 1.0) * (i[0] @ w)
                if len(i) > 2 and i[2] is not None:
                    y = y + a.get("beta", 1.0) * i[2]
            elif op == "MatMul":
                y = i[0] @ i[1]
            elif op == "Constant":
                y = torch.from_numpy(numpy_helper.to_array(a["value"]).copy())
            else:
                raise SystemExit("quant_sim: op %s not supported" % op)
            env[n.output[0]] = y
            if keep is not None:
                keep[n.output[0]] = y
        return env[self.output]


def load_images(args, meta):
    size = int(meta.get("input_size", 224))
    mean = [float(v) for v in meta.get("mean", "0.485,0.456,0.406").split(",")]
    std = [float(v) for v in meta.get("std", "0.229,0.224,0.225").split(",")]
    if os.path.isdir(args.images):
        names = sorted(f for f in os.listdir(args.images)
                       if f.lower().endswith((".jpg", ".jpeg", ".png")))
        paths = [os.path.join(args.images, f) for f in names]
    else:
        d = os.path.join(os.path.dirname(args.images), "images")
        rows = [r for r in csv.DictReader(open(args.images))
                if not args.split or r.get("split") == args.split]
        random.Random(args.seed).shuffle(rows)
        paths = [os.path.join(d, r["image_id"] + ".jpg") for r in rows]
    paths = paths[:args.count]
    xs = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        if meta.get("resize", "direct") == "direct":
            im = im.resize((size, size), Image.BILINEAR)
        else:  # shorter side then centre crop
            r = int(meta.get("resize", 256)) if meta.get("resize", "").isdigit() else 256
            w, h = im.size
            k = r / min(w, h)
            im = im.resize((round(w * k), round(h * k)), Image.BILINEAR)
            w, h = im.size
            l, t = (w - size) // 2, (h - size) // 2
            im = im.crop((l, t, l + size, t + size))
        a = np.asarray(im, dtype=np.float32) / 255.0
        a = (a - np.array(mean, np.float32)) / np.array(std, np.float32)
        xs.append(a.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(xs)), paths


def sqnr(ref, x):
    e = float(((ref - x) ** 2).sum())
    s = float((ref ** 2).sum())
    return 10 * math.log10(s / e) if e > 0 else math.inf


def batched(g, x, bs, **kw):
    return torch.cat([g.run(x[k:k + bs], **kw) for k in range(0, len(x), bs)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fp32")
    ap.add_argument("qdq")
    ap.add_argument("--images", required=True)
    ap.add_argument("--split", default="")
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--per-layer", action="store_true")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    f, q = Graph(args.fp32), Graph(args.qdq)
    x, paths = load_images(args, f.meta)
    print("%d images" % len(x))
    # fp32 weights behind each weight DequantizeLinear (for bypass)
    q.float_of = {}
    dq_w = {}
    prod = {o: n for n in q.nodes for o in n.output}
    for n in q.nodes:
        if n.op_type == "DequantizeLinear" and n.input[0] in q.inits:
            dq_w[n.output[0]] = n
    consumers = {}
    for n in q.nodes:
        for k, v in enumerate(n.input):
            consumers.setdefault(v, []).append((n, k))
    for name, n in dq_w.items():
        base = n.input[0].rsplit("_quantized", 1)[0]
        if base in f.inits:
            q.float_of[name] = f.inits[base]
    acts = [n.output[0] for n in q.nodes if n.op_type == "QuantizeLinear"]

    ref = batched(f, x, args.batch)
    out = batched(q, x, args.batch)
    agree = float((ref.argmax(1) == out.argmax(1)).float().mean())
    top2 = ref.topk(2, dim=1).values
    print("full QDQ: top-1 agreement %.4f, logit SQNR %.1f dB, median fp32 top-1 "
          "margin %.3f" % (agree, sqnr(ref, out), float((top2[:, 0] - top2[:, 1]).median())))

    # per-tensor SQNR on one batch
    kf, kq = {}, {}
    xb = x[:min(len(x), args.batch)]
    f.run(xb, keep=kf)
    q.run(xb, keep=kq)
    print("\n%-60s %9s %4s %9s %9s %7s %6s" % ("activation", "scale", "zp", "min", "max",
                                                "clip%", "SQNR"))
    for a in acts:
        n = prod[a]
        src = n.input[0]
        s = float(q.inits[n.input[1]])
        z = int(q.inits[n.input[2]])
        v = kf.get(src, f.inits.get(src) if src == f.input else None)
        if src == f.input:
            v = xb
        dq = [c for c, _ in consumers[a] if c.op_type == "DequantizeLinear"][0].output[0]
        lo = (0 - z) * s if q.inits[n.input[2]].dtype == torch.uint8 else (-128 - z) * s
        hi = lo + 255 * s
        clip = float(((v < lo - s / 2) | (v > hi + s / 2)).float().mean()) * 100
        print("%-60s %9.5f %4d %9.3f %9.3f %7.3f %6.1f" % (
            src[-60:], s, z, float(v.min()), float(v.max()), clip, sqnr(v, kq[dq])))

    if not args.per_layer:
        return
    all_q = set(acts) | set(q.float_of)
    points = [("act", a, prod[a].input[0]) for a in acts] + \
             [("weight", w, dq_w[w].input[0]) for w in q.float_of]
    print("\none quantization point at a time (everything else fp32):")
    print("%-7s %-62s %7s %7s" % ("kind", "tensor", "SQNR", "agree"))
    res = []
    for kind, key, label in points:
        by = frozenset(all_q - {key})
        o = batched(q, x, args.batch, bypass=by)
        s = sqnr(ref, o)
        ag = float((ref.argmax(1) == o.argmax(1)).float().mean())
        res.append((s, kind, label, ag))
        print("%-7s %-62s %7.1f %7.4f" % (kind, label[-62:], s, ag))
        sys.stdout.flush()
    print("\nmost sensitive:")
    for s, kind, label, ag in sorted(res)[:12]:
        print("%-7s %-62s %7.1f %7.4f" % (kind, label[-62:], s, ag))


if __name__ == "__main__":
    main()
