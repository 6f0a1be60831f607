#!/usr/bin/python3
"""Build small Keras/TensorFlow-style ONNX classifier graphs (opset 13) with a
pure-numpy reference output, for dermal's tests.

Usage:
    /usr/bin/python3 tools/make_keras_graphs.py --out build/keras [--seed N]

The graphs look like what tf2onnx / keras2onnx produce for a Keras classifier:
NHWC float input [1,H,W,3] -> Transpose(perm 0,3,1,2) -> Conv with
auto_pad=SAME_UPPER (stride 1 and 2, odd and even input and kernel sizes,
one dilated), depthwise Conv (group=C) with SAME_UPPER, separate
BatchNormalization (epsilon 1e-3, Keras' default), Relu and Clip(0, 6) (ReLU6;
min/max as inputs, opset 13), Add residuals, ReduceMean over axes [2,3]
keepdims=0 (GlobalAveragePooling2D), MatMul + Add (Dense) and Softmax inside
the graph (output "probs").

keras_dilated adds dilated SAME_UPPER convolutions; it is valid ONNX but ONNX
Runtime refuses dilation with auto_pad SAME_*, so it has only the numpy
expected output.

For each graph NAME it writes DIR/NAME.onnx, DIR/NAME.input.npy (float32
NHWC) and DIR/NAME.expected.npy (float32 probabilities, computed in float64 by
the numpy reference below, not by any ONNX runtime). Every model passes
onnx.checker (full check, with shape inference).
"""

import argparse
import math
import os
import sys
import zlib

import numpy as np

OPSET = 13
BN_EPS = 1e-3


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# numpy reference (float64, NCHW)
# ----------------------------------------------------------------------------

def same_upper_pads(in_size, k, stride, dil):
    """ONNX auto_pad=SAME_UPPER: output = ceil(in/stride); the odd pad goes at the end."""
    out = -(-in_size // stride)
    total = max((out - 1) * stride + (k - 1) * dil + 1 - in_size, 0)
    begin = total // 2
    return begin, total - begin, out


def ref_conv(x, w, b, stride, dil, group):
    """x: [1,C,H,W], w: [M, C/group, kh, kw], SAME_UPPER padding, via im2col."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    assert n == 1 and c == cg * group and m % group == 0
    pt, pb, oh = same_upper_pads(h, kh, stride, dil)
    pl, pr, ow = same_upper_pads(wd, kw, stride, dil)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    # im2col: cols[c, i, j, oy, ox] = xp[c, oy*s + i*d, ox*s + j*d]
    cols = np.empty((c, kh, kw, oh, ow), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            ys = i * dil
            xs = j * dil
            cols[:, i, j] = xp[0, :, ys:ys + (oh - 1) * stride + 1:stride,
                               xs:xs + (ow - 1) * stride + 1:stride]
    mg = m // group
    y = np.empty((m, oh * ow), dtype=np.float64)
    for g in range(group):
        cg_cols = cols[g * cg:(g + 1) * cg].reshape(cg * kh * kw, oh * ow)
        wg = w[g * mg:(g + 1) * mg].reshape(mg, cg * kh * kw)
        y[g * mg:(g + 1) * mg] = wg @ cg_cols
    if b is not None:
        y += b[:, None]
    return y.reshape(1, m, oh, ow)


def ref_bn(x, scale, bias, mean, var, eps):
    s = (scale / np.sqrt(var + eps))[None, :, None, None]
    return (x - mean[None, :, None, None]) * s + bias[None, :, None, None]


def ref_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------
# graph builder: records ONNX nodes and evaluates the numpy reference at once
# ----------------------------------------------------------------------------

class Builder:
    def __init__(self, name, seed, input_hw):
        import onnx  # noqa: F401  (fail early if missing)
        self.name = name
        self.rng = np.random.RandomState(seed)
        self.nodes = []
        self.inits = []
        self.count = 0
        h, w = input_hw
        self.input_shape = [1, h, w, 3]
        self.x_nhwc = self.rng.standard_normal(self.input_shape).astype(np.float32)
        self.vals = {"input": self.x_nhwc.astype(np.float64)}

    def _n(self, prefix):
        self.count += 1
        return "%s_%d" % (prefix, self.count)

    def init(self, prefix, arr):
        from onnx import numpy_helper
        nm = self._n(prefix)
        a = np.asarray(arr, dtype=np.float32)
        self.inits.append(numpy_helper.from_array(a, nm))
        self.vals[nm] = a.astype(np.float64)
        return nm

    def node(self, op, inputs, value, prefix=None, **attrs):
        from onnx import helper
        out = self._n(prefix or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", **attrs))
        self.vals[out] = value
        return out

    # --- layers (Keras names) ---
    def transpose_nchw(self, x):
        return self.node("Transpose", [x], self.vals[x].transpose(0, 3, 1, 2), perm=[0, 3, 1, 2])

    def conv(self, x, cout, k, stride=1, dil=1, bias=True, prefix="conv"):
        kh, kw = (k, k) if isinstance(k, int) else k
        cin = self.vals[x].shape[1]
        std = math.sqrt(2.0 / (cin * kh * kw))
        w = (self.rng.standard_normal((cout, cin, kh, kw)) * std).astype(np.float32)
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32) if bias else None
        wn = self.init(prefix + "_W", w)
        ins = [x, wn]
        if bias:
            ins.append(self.init(prefix + "_B", b))
        y = ref_conv(self.vals[x], w.astype(np.float64), None if b is None else b.astype(np.float64),
                     stride, dil, 1)
        return self.node("Conv", ins, y, prefix=prefix, auto_pad="SAME_UPPER",
                         kernel_shape=[kh, kw], strides=[stride, stride], dilations=[dil, dil])

    def dwconv(self, x, k, stride=1, dil=1, bias=True, prefix="dwconv"):
        kh, kw = (k, k) if isinstance(k, int) else k
        c = self.vals[x].shape[1]
        std = math.sqrt(2.0 / (kh * kw))
        w = (self.rng.standard_normal((c, 1, kh, kw)) * std).astype(np.float32)
        b = (self.rng.standard_normal(c) * 0.1).astype(np.float32) if bias else None
        ins = [x, self.init(prefix + "_W", w)]
        if bias:
            ins.append(self.init(prefix + "_B", b))
        y = ref_conv(self.vals[x], w.astype(np.float64), None if b is None else b.astype(np.float64),
                     stride, dil, c)
        return self.node("Conv", ins, y, prefix=prefix, auto_pad="SAME_UPPER", group=c,
                         kernel_shape=[kh, kw], strides=[stride, stride], dilations=[dil, dil])

    def bn(self, x):
        c = self.vals[x].shape[1]
        scale = self.rng.uniform(0.5, 1.5, c)
        bias = self.rng.standard_normal(c) * 0.1
        mean = self.rng.standard_normal(c) * 0.1
        var = self.rng.uniform(0.5, 1.5, c)
        ins = [x] + [self.init("bn_" + s, a) for s, a in
                     (("gamma", scale), ("beta", bias), ("mean", mean), ("var", var))]
        f = lambda nm: self.vals[nm]
        y = ref_bn(self.vals[x], f(ins[1]), f(ins[2]), f(ins[3]), f(ins[4]), np.float32(BN_EPS))
        return self.node("BatchNormalization", ins, y, prefix="bn", epsilon=BN_EPS)

    def relu(self, x):
        return self.node("Relu", [x], np.maximum(self.vals[x], 0.0))

    def relu6(self, x):
        lo = self.init("clip_min", np.array(0.0, dtype=np.float32))
        hi = self.init("clip_max", np.array(6.0, dtype=np.float32))
        return self.node("Clip", [x, lo, hi], np.clip(self.vals[x], 0.0, 6.0), prefix="relu6")

    def add(self, a, b):
        return self.node("Add", [a, b], self.vals[a] + self.vals[b])

    def gap(self, x):
        return self.node("ReduceMean", [x], self.vals[x].mean(axis=(2, 3)), prefix="gap",
                         axes=[2, 3], keepdims=0)

    def sigmoid(self, x):
        return self.node("Sigmoid", [x], 1.0 / (1.0 + np.exp(-self.vals[x])))

    def mul(self, a, b):
        return self.node("Mul", [a, b], self.vals[a] * self.vals[b])

    def squeeze_excite(self, x, squeeze):
        """GlobalAveragePooling2D (ReduceMean, keepdims) -> 1x1 conv + ReLU ->
        1x1 conv + sigmoid -> Multiply with x, one scale per channel."""
        c = self.vals[x].shape[1]
        s = self.node("ReduceMean", [x], self.vals[x].mean(axis=(2, 3), keepdims=True),
                      prefix="se_pool", axes=[2, 3], keepdims=1)
        s = self.relu(self.conv(s, squeeze, 1, prefix="se_reduce"))
        s = self.sigmoid(self.conv(s, c, 1, prefix="se_expand"))
        return self.mul(x, s)

    def dense(self, x, units, logit_std=2.5):
        cin = self.vals[x].shape[1]
        w = self.rng.standard_normal((cin, units)) / math.sqrt(cin)
        b = self.rng.standard_normal(units) * 0.1
        z = self.vals[x] @ w
        # Scale so that the logits are spread out and the softmax is far from
        # uniform (a near-uniform softmax would hide errors upstream).
        s = logit_std / max(float(z.std()), 1e-12)
        w = (w * s).astype(np.float32)
        b = b.astype(np.float32)
        wn = self.init("dense_W", w)
        bn = self.init("dense_B", b)
        mm = self.node("MatMul", [x, wn], self.vals[x] @ w.astype(np.float64), prefix="dense_matmul")
        return self.node("Add", [mm, bn], self.vals[mm] + b.astype(np.float64), prefix="dense_add")

    def softmax(self, x):
        return self.node("Softmax", [x], ref_softmax(self.vals[x]), prefix="probs", axis=-1)

    def build(self, out_name):
        import onnx
        from onnx import TensorProto, helper
        # rename the last node's output to "probs"
        last = self.nodes[-1]
        self.vals["probs"] = self.vals[last.output[0]]
        last.output[0] = "probs"
        k = self.vals["probs"].shape[-1]
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, self.input_shape)],
            [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, k])],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="dermal-make_keras_graphs",
                                  producer_version="1")
        model.ir_version = 8
        model.doc_string = "Keras-style test classifier (random weights), see tools/make_keras_graphs.py"
        onnx.checker.check_model(model, full_check=True)
        return model


# ----------------------------------------------------------------------------
# the graphs
# ----------------------------------------------------------------------------

def g_keras_small_even(b):
    """32x32 (even): conv 3x3/s2, depthwise 3x3/s1 + ReLU6, pointwise, residual Add."""
    x = b.transpose_nchw("input")
    x = b.relu(b.bn(b.conv(x, 16, 3, stride=2, bias=False)))          # 16x16
    r = x
    y = b.relu6(b.bn(b.dwconv(x, 3, stride=1, bias=False)))
    y = b.bn(b.conv(y, 16, 1, bias=False))
    x = b.add(r, y)
    x = b.relu6(b.bn(b.dwconv(x, 3, stride=2, bias=False)))            # 8x8
    x = b.relu(b.conv(x, 24, 1))
    x = b.gap(x)
    return b.softmax(b.dense(x, 7))                                     # HAM10000 has 7 classes


def g_keras_odd_stride2(b):
    """33x33 (odd): 5x5/s2, even kernels (2x2, 4x4) with SAME_UPPER asymmetric pads,
    depthwise 3x3/s2 on odd size."""
    x = b.transpose_nchw("input")
    x = b.relu(b.bn(b.conv(x, 12, 5, stride=2)))                        # 17x17
    x = b.relu6(b.bn(b.dwconv(x, 3, stride=2)))                        # 9x9
    x = b.relu(b.bn(b.conv(x, 20, 4, stride=1)))                        # 9x9, pads 1/2
    r = x
    y = b.relu6(b.bn(b.dwconv(x, 3, stride=1)))
    y = b.bn(b.conv(y, 20, 2, stride=1))                                # pads 0/1
    x = b.add(r, y)
    x = b.relu(b.bn(b.conv(x, 32, 2, stride=2)))                        # 5x5
    x = b.gap(x)
    return b.softmax(b.dense(x, 7))


def g_keras_mobilenet_like(b):
    """64x48 (non-square): MobileNetV2-style inverted residual blocks."""
    x = b.transpose_nchw("input")
    x = b.relu6(b.bn(b.conv(x, 16, 3, stride=2, bias=False)))          # 32x24

    def block(x, cout, expand, stride):
        cin = b.vals[x].shape[1]
        y = b.relu6(b.bn(b.conv(x, cin * expand, 1, bias=False)))
        y = b.relu6(b.bn(b.dwconv(y, 3, stride=stride, bias=False)))
        y = b.bn(b.conv(y, cout, 1, bias=False))
        if stride == 1 and cin == cout:
            y = b.add(x, y)
        return y

    x = block(x, 16, 1, 1)
    x = block(x, 24, 4, 2)                                              # 16x12
    x = block(x, 24, 4, 1)
    x = block(x, 32, 4, 2)                                              # 8x6
    x = block(x, 32, 4, 1)
    x = b.relu6(b.bn(b.conv(x, 64, 1, bias=False)))
    x = b.gap(x)
    return b.softmax(b.dense(x, 7))


def g_keras_resnet_like(b):
    """40x40: conv 7x7/s2, basic blocks, projection shortcut 1x1/s2 (no padding needed)."""
    x = b.transpose_nchw("input")
    x = b.relu(b.bn(b.conv(x, 16, 7, stride=2, bias=False)))            # 20x20

    def basic(x, cout, stride):
        cin = b.vals[x].shape[1]
        y = b.relu(b.bn(b.conv(x, cout, 3, stride=stride, bias=False)))
        y = b.bn(b.conv(y, cout, 3, bias=False))
        if stride != 1 or cin != cout:
            x = b.bn(b.conv(x, cout, 1, stride=stride, bias=False))
        return b.relu(b.add(x, y))

    x = basic(x, 16, 1)
    x = basic(x, 32, 2)                                                 # 10x10
    x = basic(x, 48, 2)                                                 # 5x5
    x = b.gap(x)
    return b.softmax(b.dense(x, 7))


def g_keras_dilated(b):
    """24x21: dilated Conv and dilated depthwise Conv with SAME_UPPER (Keras
    dilation_rate=2 with padding='same'). Valid ONNX, but ONNX Runtime (1.30)
    rejects dilation with auto_pad SAME_*: only the numpy expected output exists."""
    x = b.transpose_nchw("input")
    x = b.relu(b.bn(b.conv(x, 8, 3, stride=1, dil=2)))                  # 24x21
    r = x
    y = b.relu6(b.bn(b.dwconv(x, 3, stride=1, dil=2)))
    y = b.bn(b.conv(y, 8, 1, bias=False))
    x = b.add(r, y)
    x = b.relu6(b.bn(b.dwconv(x, 4, stride=2, dil=3)))                 # 12x11, even kernel
    x = b.relu(b.conv(x, 16, 1))
    x = b.gap(x)
    return b.softmax(b.dense(x, 7))


def g_keras_se(b):
    """36x28: squeeze-and-excitation blocks on 12 and 20 channels (not a
    multiple of 8: oneDNN pads them in its blocked layouts below AVX-512)."""
    x = b.transpose_nchw("input")
    x = b.relu(b.bn(b.conv(x, 12, 3, stride=2)))                        # 18x14
    x = b.squeeze_excite(x, 4)
    y = b.relu6(b.bn(b.dwconv(x, 3, stride=1)))
    y = b.squeeze_excite(y, 4)
    x = b.add(x, b.bn(b.conv(y, 12, 1, bias=False)))
    x = b.relu(b.bn(b.conv(x, 20, 3, stride=2)))                        # 9x7
    x = b.squeeze_excite(x, 6)
    x = b.gap(x)
    return b.softmax(b.dense(x, 7))


# keras_dilated does not run in ONNX Runtime (see above); the others do.
GRAPHS = [
    ("keras_small_even", (32, 32), g_keras_small_even),
    ("keras_odd_stride2", (33, 33), g_keras_odd_stride2),
    ("keras_mobilenet_like", (64, 48), g_keras_mobilenet_like),
    ("keras_resnet_like", (40, 40), g_keras_resnet_like),
    ("keras_dilated", (24, 21), g_keras_dilated),
    ("keras_se", (36, 28), g_keras_se),
]


def self_test():
    """Cross-check ref_conv's im2col against a direct loop on random small cases."""
    rng = np.random.RandomState(1)
    for (h, w, k, s, d, c, m, g) in [(7, 6, 3, 2, 1, 4, 6, 2), (5, 5, 4, 1, 1, 3, 2, 1),
                                     (9, 8, 3, 2, 2, 4, 4, 4), (6, 7, 2, 2, 1, 2, 3, 1)]:
        x = rng.standard_normal((1, c, h, w))
        wt = rng.standard_normal((m, c // g, k, k))
        y = ref_conv(x, wt, None, s, d, g)
        pt, _, oh = same_upper_pads(h, k, s, d)
        pl, _, ow = same_upper_pads(w, k, s, d)
        ref = np.zeros((1, m, oh, ow))
        for o in range(m):
            gi = o // (m // g)
            for oy in range(oh):
                for ox in range(ow):
                    acc = 0.0
                    for ci in range(c // g):
                        for i in range(k):
                            for j in range(k):
                                iy = oy * s + i * d - pt
                                ix = ox * s + j * d - pl
                                if 0 <= iy < h and 0 <= ix < w:
                                    acc += x[0, gi * (c // g) + ci, iy, ix] * wt[o, ci, i, j]
                    ref[0, o, oy, ox] = acc
        assert np.allclose(y, ref, atol=1e-10), "ref_conv self-test failed"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    args = ap.parse_args(argv)

    import onnx

    self_test()
    os.makedirs(args.out, exist_ok=True)
    for name, hw, fn in GRAPHS:
        seed = (zlib.crc32(name.encode()) + args.seed) % (2**31 - 1)
        b = Builder(name, seed, hw)
        fn(b)
        model = b.build(name)
        logits = b.vals[b.nodes[-1].input[0]]
        probs = b.vals["probs"].astype(np.float32)
        onnx.save(model, os.path.join(args.out, name + ".onnx"))
        np.save(os.path.join(args.out, name + ".input.npy"), b.x_nhwc)
        np.save(os.path.join(args.out, name + ".expected.npy"), probs)
        ops = sorted(set(n.op_type for n in model.graph.node))
        log("[%s] input %s -> probs %s; %d nodes (%s); logits std %.3g, max prob %.3f"
            % (name, b.input_shape, list(probs.shape), len(model.graph.node), ",".join(ops),
               float(logits.std()), float(probs.max())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
