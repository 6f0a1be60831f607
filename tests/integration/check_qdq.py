#!/usr/bin/python3
"""QDQ pattern matching and the int8 path, for test_quantize.sh.

usage: check_qdq.py DERMAL TMPDIR

Builds small QDQ graphs with python3-onnx, in the shapes dermal quantize,
ONNX Runtime's QDQ quantizer and PyTorch's exporter emit:
DequantizeLinear(QuantizeLinear(x)) -> Conv(DequantizeLinear(int8 W,
per-channel or per-tensor scales), float bias) [-> Relu | Clip] ->
QuantizeLinear -> DequantizeLinear, chained, with uint8 and int8
activations, nonzero zero points, padding, strides, groups (depthwise),
residual joins Add(DequantizeLinear(a), DequantizeLinear(b)) [-> Relu |
Clip] -> QuantizeLinear, residual joins kept in float (a Conv whose output
has no QuantizeLinear, read by a float Add: an int8 conv with a float
output), and a MaxPool between two pairs of one scale.
For each it checks that the engine fused every Conv, Add and MaxPool into an 8-bit op
(with oneDNN limited to AVX2, no VNNI: only depthwise convs on uint8, adds, pools and
dense convs whose weights fit in +-64, see dm_graph_opts.int8_wmax)
(`dermal bench --json` int8_ops), and that the ref backend (plain integer
arithmetic, the oracle) and the onednn backend (oneDNN int8 primitives)
agree within one quantization step of the output (oneDNN scales by the
reciprocal where QuantizeLinear divides, so exact ties may round apart).
Gemm (transposed weights or not) and 2-D MatMul heads with int8 weights,
8-bit or float outputs, must be fused the same way (on AVX2 only with
weights within +-64).  A graph whose weights are not int8 (uint8 with a
zero point) must not be fused.  Prints "ok ..."/"FAIL ..." lines; exits non-zero on a failure.
"""
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DERMAL, TMP = sys.argv[1], sys.argv[2]
fails = 0


def check(ok, msg):
    global fails
    print(("ok   " if ok else "FAIL ") + msg)
    fails += 0 if ok else 1


def graph_parts(act_type, seed):
    """What the model builders start from: a seeded generator, the 8-bit
    ONNX and numpy types, the node and initializer lists, and const()."""
    rng = np.random.default_rng(seed)
    qt = TensorProto.UINT8 if act_type == "u8" else TensorProto.INT8
    npq = np.uint8 if act_type == "u8" else np.int8
    nodes, inits = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    return rng, qt, npq, nodes, inits, const


def qdq_model(layers, act_type, in_ch, size, seed, weight_u8=False, wmax=127):
    """layers: list of (out_ch, k, stride, pad, group, act) convs."""
    rng, qt, npq, nodes, inits, const = graph_parts(act_type, seed)

    def qdq(x, scale, zp, tag):
        s = const(tag + "_s", np.array(scale, np.float32))
        z = const(tag + "_z", np.array(zp, npq))
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [tag + "_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [tag + "_q", s, z], [tag + "_dq"]))
        return tag + "_dq"

    zp_in = 128 if act_type == "u8" else 0
    x = qdq("x", 2.0 / 255, zp_in if act_type == "u8" else 3, "in")
    c, hw = in_ch, size
    for i, (oc, k, st, pad, g, act) in enumerate(layers):
        hw = (hw + 2 * pad - k) // st + 1
        w = rng.integers(-wmax, wmax + 1, size=(oc, c // g, k, k)).astype(np.int8)
        ws = (rng.uniform(0.5, 1.5, size=oc) * 0.02).astype(np.float32)
        if i % 2:  # per-tensor weights on odd layers
            ws = ws[:1]
        if weight_u8:
            wq = const("w%d" % i, (w.astype(np.int16) + 128).astype(np.uint8))
            wz = const("w%d_z" % i, np.full(ws.shape, 128, np.uint8))
        else:
            wq = const("w%d" % i, w)
            wz = const("w%d_z" % i, np.zeros(ws.shape, np.int8))
        wsn = const("w%d_s" % i, ws)
        nodes.append(helper.make_node("DequantizeLinear", [wq, wsn, wz], ["w%d_dq" % i], axis=0))
        b = const("b%d" % i, rng.normal(0, 0.1, size=oc).astype(np.float32))
        y = "y%d" % i
        nodes.append(helper.make_node("Conv", [x, "w%d_dq" % i, b], [y], group=g,
                                      kernel_shape=[k, k], strides=[st, st],
                                      pads=[pad] * 4))
        if act and act.startswith("add"):
            # residual join: Add(DQ(Q(conv)), block input) [-> Relu | Clip]
            y = qdq(y, 0.0437, 118 if act_type == "u8" else 2, "r%d" % i)
            nodes.append(helper.make_node("Add", [y, x], ["s%d" % i]))
            y = "s%d" % i
            act = act[4:] or None
        elif act and act.startswith("fadd"):
            # residual join kept in fp32 (dermal quantize's mixed
            # precision): the conv's output is not quantized, the engine
            # runs an int8 conv with a float output and the Add as its
            # post-op
            nodes.append(helper.make_node("Add", [y, x], ["s%d" % i]))
            y = "s%d" % i
            act = act[5:] or None
        pool = act == "relu_pool"
        if pool:
            act = "relu"
        if act == "relu":
            nodes.append(helper.make_node("Relu", [y], [y + "_a"]))
            y += "_a"
        elif act == "clip":
            lo = const("lo%d" % i, np.array(0.0, np.float32))
            hi = const("hi%d" % i, np.array(6.0, np.float32))
            nodes.append(helper.make_node("Clip", [y, lo, hi], [y + "_a"]))
            y += "_a"
        # output ranges: relu/clip outputs start at 0
        zp = (0 if act else 120) if act_type == "u8" else (-128 if act else -5)
        x = qdq(y, 0.05 + 0.01 * i, zp, "a%d" % i)
        if pool:  # ResNet's stem: MaxPool between pairs of the same scale
            nodes.append(helper.make_node("MaxPool", [x], ["p%d" % i], kernel_shape=[3, 3],
                                          strides=[2, 2], pads=[1, 1, 1, 1]))
            x = qdq("p%d" % i, 0.05 + 0.01 * i, zp, "pq%d" % i)
            hw = (hw + 2 - 3) // 2 + 1
        c = oc
    nodes.append(helper.make_node("Identity", [x], ["out"]))
    graph = helper.make_graph(
        nodes, "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, in_ch, size, size])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, c, hw, hw])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def isa_env(isa):
    env = dict(os.environ)
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    env.pop("DERMAL_ONEDNN_AMX", None)
    if isa == "AMX":
        env["DERMAL_ONEDNN_AMX"] = "1"
    elif isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    return env


def run(model, backend, x, isa=None, threads=1, env=None):
    np.save(TMP + "/x.npy", x)
    out = TMP + "/y_%s.npy" % backend
    subprocess.run([DERMAL, "run", model, "--input", TMP + "/x.npy", "--output", out,
                    "--backend", backend, "--threads", str(threads)],
                   check=True, capture_output=True, env=dict(isa_env(isa), **(env or {})))
    return np.load(out)


def int8_ops(model, isa=None, key="int8_ops"):
    r = subprocess.run([DERMAL, "bench", model, "--iters", "1", "--warmup", "0", "--json"],
                       check=True, capture_output=True, text=True, env=isa_env(isa))
    return json.loads(r.stdout.strip().splitlines()[-1])[key]


CASES = [
    ("u8 pointwise+3x3+depthwise, relu/clip/none", "u8", 8, 12,
     [(16, 1, 1, 0, 1, "relu"), (16, 3, 1, 1, 16, "clip"), (24, 3, 2, 1, 1, None),
      (24, 1, 1, 0, 1, "relu")]),
    ("s8 activations, strided 5x5 and grouped", "s8", 6, 11,
     [(12, 5, 2, 2, 1, "relu"), (12, 3, 1, 1, 3, None), (8, 1, 1, 0, 1, None)]),
    # residual joins, one per graph: a one-step tie flip inside a chain is
    # amplified by the layers after it, so chains would not test the bound
    ("u8 residual join Add+Relu", "u8", 8, 10, [(8, 1, 1, 0, 1, "add_relu")]),
    ("u8 residual join Add after depthwise", "u8", 8, 10, [(8, 3, 1, 1, 8, "add")]),
    ("u8 residual join Add+Clip", "u8", 8, 10, [(8, 1, 1, 0, 1, "add_clip")]),
    ("s8 residual join Add+Relu", "s8", 6, 9, [(6, 3, 1, 1, 1, "add_relu")]),
    ("s8 residual join Add", "s8", 6, 9, [(6, 1, 1, 0, 1, "add")]),
    ("u8 float residual join (int8 conv, float output)", "u8", 8, 10,
     [(8, 1, 1, 0, 1, "fadd")]),
    ("s8 float residual join after depthwise, Relu", "s8", 6, 9,
     [(6, 3, 1, 1, 6, "fadd_relu")]),
    ("u8 MaxPool between equal pairs", "u8", 3, 15,
     [(8, 3, 2, 1, 1, "relu_pool"), (8, 1, 1, 0, 1, "relu")]),
]

CASES.append(("u8 7-bit weights", "u8", 8, 12, CASES[0][4], 64))
# MobileNet-v2's projections: 1x1 convs to at most 32 channels on maps of
# 56x56 or more run on oneDNN's jit_int8_1x1 kernel (int8_prefer)
PROJ = len(CASES)
CASES.append(("u8 projections 96->24->24 at 56x56, float residual", "u8", 96, 56,
              [(24, 1, 1, 0, 1, None), (24, 1, 1, 0, 1, "fadd")]))

# native: this CPU's best ISA, with the engine's choice between AMX and
# VNNI kernels (these small convs: VNNI); AMX (on CPUs that have it):
# oneDNN's AMX kernels for every int8 conv (DERMAL_ONEDNN_AMX=1); AVX2: no
# VNNI, where oneDNN's int8 convs add pairs of products in saturating
# 16-bit lanes, so dense convs with weights beyond +-64 must stay on the
# float path
with open("/proc/cpuinfo") as f:
    has_amx = " amx_int8" in f.read()
if not has_amx:
    print("skip [AMX]: this CPU has no AMX")
for isa in (None, "AMX", "AVX2") if has_amx else (None, "AVX2"):
    tag = " [%s]" % (isa or "native ISA")
    for i, case in enumerate(CASES):
        name, at, cin, size, layers = case[:5]
        wmax = case[5] if len(case) > 5 else 127
        path = "%s/qdq%d.onnx" % (TMP, i)
        onnx.save(qdq_model(layers, at, cin, size, seed=i, wmax=wmax), path)
        n = int8_ops(path, isa)
        adds = sum(1 for l in layers if l[5] and (l[5].startswith("add") or l[5].endswith("pool")))
        # depthwise convs are exact on AVX2 only on uint8 input (int8 input
        # is shifted to uint8 and multiplied in saturating pairs)
        dw = sum(1 for l in layers if l[4] > 1 and l[4] == l[0]) if at == "u8" else 0
        want = len(layers) + adds if isa != "AVX2" or wmax <= 64 else dw + adds
        check(n == want, "%s%s: %d 8-bit ops (convs, adds, pools), want %d" % (name, tag, n, want))
        # the convs left dequantized for that reason are counted
        unf, want_unf = int8_ops(path, isa, "int8_unfused"), len(layers) + adds - want
        check(unf == want_unf, "%s%s: %d convs dequantized (no VNNI), want %d"
              % (name, tag, unf, want_unf))
        x = np.random.default_rng(10 + i).uniform(-1, 1, size=(1, cin, size, size)).astype(np.float32)
        a, b = run(path, "ref", x), run(path, "onednn", x, isa)
        step = 0.05 + 0.01 * (len(layers) - 1)
        d = np.abs(a - b).max() / step
        frac = float(np.mean(np.abs(a - b) > 1e-6))
        check(d <= 1.0 + 1e-3, "%s%s: ref vs onednn max %.3g output steps (%.2f%% differ)"
              % (name, tag, d, 100 * frac))
        # 2 and 3 threads run the convs in bands of rows or pixels, each
        # band its own primitive: the same integer arithmetic, so the same
        # bits as one thread
        for t in (2, 3) if isa != "AVX2" else ():
            c = run(path, "onednn", x, isa, threads=t)
            check(np.array_equal(b, c), "%s%s: onednn %d threads vs 1 thread: max diff %.3g"
                  % (name, tag, t, np.abs(b - c).max()))



def stem_model(at, cin, c, batch, h, w, pads, act1, act2, seed):
    """An int8 file that keeps its stem in float (as dermal quantize's
    --fp32-layers does): float Conv 3x3 stride 2 (pads: top/left, bottom/
    right) -> act1 -> float depthwise Conv 3x3 pad 1 -> act2 ->
    QuantizeLinear -> DequantizeLinear -> MaxPool 2x2 -> QDQ.  The engine
    runs the first part as one pass (stem.c) and the pool on 8 bits, so the
    output differs from the reference only where the pass's quantized
    value does: by one step next to a tie."""
    rng, qt, npq, nodes, inits, const = graph_parts(at, seed)

    def act(y, kind, tag):
        if kind == "clip":
            nodes.append(helper.make_node("Clip", [y, const(tag + "lo", np.array(0.0, np.float32)),
                                                   const(tag + "hi", np.array(6.0, np.float32))],
                                          [tag + "_a"]))
            return tag + "_a"
        if kind == "swish":
            nodes.append(helper.make_node("Sigmoid", [y], [tag + "_s"]))
            nodes.append(helper.make_node("Mul", [y, tag + "_s"], [tag + "_a"]))
            return tag + "_a"
        return y

    w1 = const("w1", rng.normal(0, 0.5, size=(c, cin, 3, 3)).astype(np.float32))
    b1 = const("b1", rng.normal(0, 0.2, size=c).astype(np.float32))
    nodes.append(helper.make_node("Conv", ["x", w1, b1], ["c1"], kernel_shape=[3, 3],
                                  strides=[2, 2], pads=[pads[0], pads[0], pads[1], pads[1]]))
    y = act("c1", act1, "a1")
    w2 = const("w2", rng.normal(0, 0.5, size=(c, 1, 3, 3)).astype(np.float32))
    nodes.append(helper.make_node("Conv", [y, w2], ["c2"], kernel_shape=[3, 3], group=c,
                                  pads=[1, 1, 1, 1]))
    y = act("c2", act2, "a2")
    sc, zp = const("s", np.array(0.037, np.float32)), const("z", np.array(
        20 if at == "u8" else -9, npq))
    nodes += [helper.make_node("QuantizeLinear", [y, sc, zp], ["q"]),
              helper.make_node("DequantizeLinear", ["q", sc, zp], ["dq"]),
              helper.make_node("MaxPool", ["dq"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("QuantizeLinear", ["p", sc, zp], ["pq"]),
              helper.make_node("DequantizeLinear", ["pq", sc, zp], ["out"])]
    oh, ow = (h + sum(pads) - 3) // 2 + 1, (w + sum(pads) - 3) // 2 + 1
    graph = helper.make_graph(
        nodes, "stem",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, cin, h, w])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, c, oh // 2, ow // 2])],
        inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def steps(model, x, threads=1, env=None):
    """The onednn backend's step names (DERMAL_ONEDNN_PROFILE)."""
    np.save(TMP + "/x.npy", x)
    env = dict(isa_env(None), **(env or {}))
    env["DERMAL_ONEDNN_PROFILE"] = "1"
    r = subprocess.run([DERMAL, "run", model, "--input", TMP + "/x.npy", "--output",
                        TMP + "/y_p.npy", "--threads", str(threads)],
                       check=True, capture_output=True, text=True, env=env)
    return [l.split()[2] for l in r.stderr.splitlines() if l.startswith("profile:")]


# the stem pass needs AVX-512F; elsewhere (and with DERMAL_ONEDNN_STEM=0)
# the same graph runs as oneDNN steps, also within one step of ref
STEMS = [  # (act type, cin, c, batch, h, w, pads, act1, act2)
    ("u8", 3, 32, 1, 37, 29, (1, 1), "clip", "clip"),
    ("s8", 3, 24, 2, 30, 41, (0, 1), "swish", "swish"),
    ("u8", 1, 16, 1, 26, 26, (1, 1), None, "clip"),
    ("s8", 4, 20, 1, 19, 50, (1, 0), "clip", None),
    ("s8", 3, 32, 1, 25, 31, (1, 1), "swish", "clip"),
]
with open("/proc/cpuinfo") as f:
    has_avx512 = " avx512f" in f.read()
for i, (at, cin, c, batch, h, w, pads, a1, a2) in enumerate(STEMS):
    name = "stem %s cin %d c %d batch %d %dx%d pads %s %s/%s" % (at, cin, c, batch, h, w, pads,
                                                                 a1, a2)
    path = "%s/stem%d.onnx" % (TMP, i)
    onnx.save(stem_model(at, cin, c, batch, h, w, pads, a1, a2, seed=40 + i), path)
    x = np.random.default_rng(50 + i).uniform(-1, 1, size=(batch, cin, h, w)).astype(np.float32)
    st = steps(path, x)
    if has_avx512:
        check(st[:1] == ["stem"] and "stem" not in st[1:],
              "%s: one stem pass first (steps: %s)" % (name, " ".join(st)))
    a, b = run(path, "ref", x), run(path, "onednn", x)
    d = np.abs(a - b).max() / 0.037
    check(d <= 1.0 + 1e-3, "%s: ref vs onednn max %.3g output steps (%.2f%% differ)"
          % (name, d, 100 * float(np.mean(np.abs(a - b) > 1e-6))))
    # with the pass off: oneDNN steps; where oneDNN's first conv is a
    # brgemm one (AVX-512 cores), it sums in the pass's order, so the pass
    # changes no bit of the output (docs/engine.md)
    off = {"DERMAL_ONEDNN_STEM": "0"}
    u, so = run(path, "onednn", x, env=off), steps(path, x, env=off)
    same = has_avx512 and any(n.startswith("brgconv") for n in so[:2])
    du = np.abs(b - u).max() / 0.037
    check(du == 0 if same else du <= 1.0 + 1e-3,
          "%s: stem pass vs oneDNN steps (%s): max %.3g output steps, want %s"
          % (name, " ".join(so), du, "0" if same else "<= 1"))
    for t in (2, 3):
        c2 = run(path, "onednn", x, threads=t)
        check(np.array_equal(b, c2), "%s: onednn %d threads vs 1 thread: max diff %.3g"
              % (name, t, np.abs(b - c2).max()))

# the projection rule: jit_int8_1x1 where oneDNN has it (AVX-512), and
# the same bits as oneDNN's first choice (DERMAL_ONEDNN_PROJ=0)
path = "%s/qdq%d.onnx" % (TMP, PROJ)
x = np.random.default_rng(10 + PROJ).uniform(-1, 1, size=(1, 96, 56, 56)).astype(np.float32)
on, off = steps(path, x), steps(path, x, env={"DERMAL_ONEDNN_PROJ": "0"})
if has_avx512:
    check(on.count("jit_int8_1x1:avx512_core_vnni") + on.count("jit_int8_1x1:avx512_core") == 2,
          "projections on jit_int8_1x1 (steps: %s; with DERMAL_ONEDNN_PROJ=0: %s)"
          % (" ".join(on), " ".join(off)))
a, b = run(path, "onednn", x), run(path, "onednn", x, env={"DERMAL_ONEDNN_PROJ": "0"})
check(np.array_equal(a, b), "projections: jit_int8_1x1 vs oneDNN's first choice: max diff %.3g"
      % np.abs(a - b).max())

path = TMP + "/qdq_u8w.onnx"
onnx.save(qdq_model(CASES[0][4], "u8", 8, 12, seed=5, weight_u8=True), path)
check(int8_ops(path) == 0, "uint8 weights with a zero point stay on the float path")


def gemm_model(at, m, k, n, op, per_channel, act, qout, seed, wmax=127, weight_u8=False):
    """DQ(Q(x)) -> Gemm(transB=1 | transB=0) or MatMul with int8 weights
    (DequantizeLinear, per output column or per tensor), float bias (Gemm)
    -> act -> QDQ when qout: the classifier heads of quantized models."""
    rng, qt, npq, nodes, inits, const = graph_parts(at, seed)
    s = const("xs", np.array(2.0 / 255, np.float32))
    z = const("xz", np.array(128 if at == "u8" else 3, npq))
    nodes += [helper.make_node("QuantizeLinear", ["x", s, z], ["xq"]),
              helper.make_node("DequantizeLinear", ["xq", s, z], ["xd"])]
    tb = op == "gemm_tb"
    shape = (n, k) if tb else (k, n)
    w = rng.integers(-wmax, wmax + 1, size=shape).astype(np.int8)
    ws = (rng.uniform(0.5, 1.5, size=n if per_channel else 1) * 0.02).astype(np.float32)
    if weight_u8:
        wq = const("w", (w.astype(np.int16) + 128).astype(np.uint8))
        wz = const("wz", np.full(ws.shape, 128, np.uint8))
    else:
        wq, wz = const("w", w), const("wz", np.zeros(ws.shape, np.int8))
    if not per_channel:
        ws, wz_ = ws[0], None
    nodes.append(helper.make_node("DequantizeLinear", [wq, const("ws", ws), wz], ["wd"],
                                  axis=(0 if tb else 1)))
    if op == "matmul":
        nodes.append(helper.make_node("MatMul", ["xd", "wd"], ["y"]))
    else:
        b = const("b", rng.normal(0, 0.1, size=n).astype(np.float32))
        nodes.append(helper.make_node("Gemm", ["xd", "wd", b], ["y"], transB=int(tb)))
    y = "y"
    if act == "relu":
        nodes.append(helper.make_node("Relu", [y], ["ya"]))
        y = "ya"
    elif act == "clip":
        nodes.append(helper.make_node("Clip", [y, const("lo", np.array(0.0, np.float32)),
                                               const("hi", np.array(6.0, np.float32))], ["ya"]))
        y = "ya"
    if qout:
        os_ = const("os", np.array(0.04, np.float32))
        oz = const("oz", np.array((0 if act else 120) if at == "u8" else (-128 if act else -5), npq))
        nodes += [helper.make_node("QuantizeLinear", [y, os_, oz], ["oq"]),
                  helper.make_node("DequantizeLinear", ["oq", os_, oz], ["od"])]
        y = "od"
    nodes.append(helper.make_node("Identity", [y], ["out"]))
    graph = helper.make_graph(
        nodes, "qgemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [m, n])], inits)
    mdl = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    mdl.ir_version = 7
    onnx.checker.check_model(mdl)
    return mdl


# Gemm/MatMul on 8-bit data (graph.c fuse_qgemm, a oneDNN int8 matmul)
GEMMS = [("u8 Gemm transB=1, per-channel, Relu, 8-bit out", "u8", 1, 64, 40, "gemm_tb", True, "relu", True),
         ("s8 Gemm transB=0, per-tensor, Clip, 8-bit out", "s8", 3, 48, 20, "gemm", False, "clip", True),
         ("u8 MatMul per-channel, float out", "u8", 2, 32, 16, "matmul", True, None, False),
         ("s8 Gemm transB=1 to 1000, float out", "s8", 1, 256, 1000, "gemm_tb", True, None, False)]
for i, (name, at, m, k, n, op, pc, act, qout) in enumerate(GEMMS):
    for isa, wmax in ((None, 127), ("AVX2", 127), ("AVX2", 64)):
        tag = " [%s, weights +-%d]" % (isa or "native ISA", wmax)
        path = "%s/qgemm%d.onnx" % (TMP, i)
        onnx.save(gemm_model(at, m, k, n, op, pc, act, qout, seed=40 + i, wmax=wmax), path)
        want = 0 if isa == "AVX2" and wmax > 64 else 1
        got = int8_ops(path, isa)
        check(got == want, "%s%s: %d 8-bit ops, want %d" % (name, tag, got, want))
        x = np.random.default_rng(50 + i).uniform(-1, 1, size=(m, k)).astype(np.float32)
        a, b = run(path, "ref", x), run(path, "onednn", x, isa)
        if qout:
            d = np.abs(a - b).max() / 0.04
            ok, what = d <= 1.0 + 1e-3, "%.3g output steps" % d
        else:
            d = np.abs(a - b).max() / max(np.abs(a).max(), 1e-30)
            ok, what = d <= 1e-5, "%.3g of max|a|" % d
        check(ok, "%s%s: ref vs onednn max %s" % (name, tag, what))
path = TMP + "/qgemm_u8w.onnx"
onnx.save(gemm_model("u8", 1, 64, 40, "gemm_tb", True, None, True, seed=49, weight_u8=True), path)
check(int8_ops(path) == 0, "Gemm with uint8 weights and a zero point stays on the float path")
print("check_qdq: %d failed" % fails)
sys.exit(1 if fails else 0)
