#!/usr/bin/python3
"""ImageNet MobileNetV2 weights from a TFLite file, as a float PyTorch module.

Reads ../shared/data/imagenet-mobilenet/mobilenet_v2_1.0_224_quant.tflite
without the tflite/tensorflow packages: a minimal reader of the TFLite
flatbuffer built on the `flatbuffers` package's low-level Table API, following
the public TFLite schema (tensorflow/lite/schema/schema.fbs). Weights are
dequantized to float (w = scale[c] * (q - zero_point[c]), per channel along
quantized_dimension or per tensor; int32 biases b = scale * q). BatchNorm is
already folded into the convolutions, activations are fused ReLU6, and
TensorFlow's SAME padding is reproduced exactly (for stride 2 the extra
row/column of padding goes at the bottom/right).

Usage:
    /usr/bin/python3 tools/tflite_mobilenet.py [--tflite PATH]
prints the operator summary and checks the ImageNet top-1 on cat.bmp and
grace_hopper.bmp (exit status 1 when the check fails). tools/train.py imports
load_mobilenet_v2() and check_imagenet() from here.

Needs Debian's python3-torch, python3-numpy, python3-pil, python3-flatbuffers:
run with /usr/bin/python3.
"""

import argparse
import os
import sys

import flatbuffers
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from flatbuffers import number_types as N
from flatbuffers.table import Table

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "imagenet-mobilenet"))
DEFAULT_TFLITE = os.path.join(DATA, "mobilenet_v2_1.0_224_quant.tflite")

# ---------------------------------------------------------------------------
# Minimal TFLite flatbuffer reader (schema.fbs field order -> vtable slot)
# ---------------------------------------------------------------------------

# BuiltinOperator values used by the MobileNet files
BUILTIN = {0: "ADD", 1: "AVERAGE_POOL_2D", 3: "CONV_2D", 4: "DEPTHWISE_CONV_2D",
           6: "DEQUANTIZE", 9: "FULLY_CONNECTED", 22: "RESHAPE", 25: "SOFTMAX",
           114: "QUANTIZE", 40: "MEAN"}
# TensorType
TTYPE = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64,
         7: np.int16, 9: np.int8}
PADDING = {0: "SAME", 1: "VALID"}
ACT = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


class FbTable:
    """A flatbuffer table; fields are read by schema field index."""

    def __init__(self, buf, pos):
        self.t = Table(buf, pos)

    def _off(self, field):
        return self.t.Offset(4 + 2 * field)

    def scalar(self, field, flags, default=0):
        o = self._off(field)
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def table(self, field):
        o = self._off(field)
        if not o:
            return None
        return FbTable(self.t.Bytes, self.t.Indirect(o + self.t.Pos))

    def string(self, field):
        o = self._off(field)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else None

    def vec_len(self, field):
        o = self._off(field)
        return self.t.VectorLen(o) if o else 0

    def vec_tables(self, field):
        o = self._off(field)
        if not o:
            return []
        start = self.t.Vector(o)
        return [FbTable(self.t.Bytes, self.t.Indirect(start + 4 * i))
                for i in range(self.t.VectorLen(o))]

    def vec_numpy(self, field, flags):
        o = self._off(field)
        if not o:
            return np.zeros((0,), dtype=N.to_numpy_type(flags))
        return self.t.GetVectorAsNumpy(flags, o)


class TFLiteModel:
    """Model.operator_codes(1) / subgraphs(2) / buffers(4) of the first subgraph."""

    def __init__(self, path):
        with open(path, "rb") as f:
            self.buf = bytearray(f.read())
        if self.buf[4:8] != b"TFL3":
            raise ValueError("%s: not a TFLite file (identifier %r)" % (path, bytes(self.buf[4:8])))
        root = flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, self.buf, 0)
        model = FbTable(self.buf, root)
        self.opcodes = []
        for oc in model.vec_tables(1):
            dep = oc.scalar(0, N.Int8Flags)            # deprecated_builtin_code
            code = oc.scalar(3, N.Int32Flags)          # builtin_code
            self.opcodes.append(max(dep, code))
        self.buffers = model.vec_tables(4)
        sg = model.vec_tables(2)[0]
        self.tensors = []
        for t in sg.vec_tables(0):
            q = t.table(4)
            quant = None
            if q is not None and q.vec_len(2):
                quant = {"scale": q.vec_numpy(2, N.Float32Flags).astype(np.float64),
                         "zero_point": q.vec_numpy(3, N.Int64Flags).astype(np.int64),
                         "quantized_dimension": q.scalar(6, N.Int32Flags)}
            self.tensors.append({
                "shape": tuple(int(v) for v in t.vec_numpy(0, N.Int32Flags)),
                "type": t.scalar(1, N.Int8Flags),
                "buffer": t.scalar(2, N.Uint32Flags),
                "name": t.string(3),
                "quant": quant,
            })
        self.inputs = [int(v) for v in sg.vec_numpy(1, N.Int32Flags)]
        self.outputs = [int(v) for v in sg.vec_numpy(2, N.Int32Flags)]
        self.operators = []
        for op in sg.vec_tables(3):
            code = self.opcodes[op.scalar(0, N.Uint32Flags)]
            name = BUILTIN.get(code, "OP%d" % code)
            entry = {"op": name,
                     "inputs": [int(v) for v in op.vec_numpy(1, N.Int32Flags)],
                     "outputs": [int(v) for v in op.vec_numpy(2, N.Int32Flags)]}
            opt = op.table(4)
            if name == "CONV_2D" and opt is not None:
                # Conv2DOptions: padding, stride_w, stride_h, fused_activation_function
                entry.update(padding=PADDING[opt.scalar(0, N.Int8Flags)],
                             stride=(opt.scalar(2, N.Int32Flags), opt.scalar(1, N.Int32Flags)),
                             act=ACT[opt.scalar(3, N.Int8Flags)],
                             dilation=(opt.scalar(5, N.Int32Flags, 1), opt.scalar(4, N.Int32Flags, 1)))
            elif name == "DEPTHWISE_CONV_2D" and opt is not None:
                # DepthwiseConv2DOptions: padding, stride_w, stride_h, depth_multiplier, fused_act
                entry.update(padding=PADDING[opt.scalar(0, N.Int8Flags)],
                             stride=(opt.scalar(2, N.Int32Flags), opt.scalar(1, N.Int32Flags)),
                             depth_multiplier=opt.scalar(3, N.Int32Flags),
                             act=ACT[opt.scalar(4, N.Int8Flags)],
                             dilation=(opt.scalar(6, N.Int32Flags, 1), opt.scalar(5, N.Int32Flags, 1)))
            elif name == "AVERAGE_POOL_2D" and opt is not None:
                # Pool2DOptions: padding, stride_w, stride_h, filter_width, filter_height, fused_act
                entry.update(padding=PADDING[opt.scalar(0, N.Int8Flags)],
                             stride=(opt.scalar(2, N.Int32Flags), opt.scalar(1, N.Int32Flags)),
                             filter=(opt.scalar(4, N.Int32Flags), opt.scalar(3, N.Int32Flags)),
                             act=ACT[opt.scalar(5, N.Int8Flags)])
            elif name == "ADD" and opt is not None:
                entry.update(act=ACT[opt.scalar(0, N.Int8Flags)])    # AddOptions
            self.operators.append(entry)

    def raw(self, ti):
        t = self.tensors[ti]
        data = self.buffers[t["buffer"]].vec_numpy(0, N.Uint8Flags)   # Buffer.data
        if data.size == 0:
            return None
        return np.frombuffer(data.tobytes(), dtype=TTYPE[t["type"]]).reshape(t["shape"])

    def dequantized(self, ti):
        """Float weights: scale[c] * (q - zero_point[c]) along quantized_dimension."""
        q = self.raw(ti)
        t = self.tensors[ti]
        if q is None:
            raise ValueError("tensor %s has no data" % t["name"])
        if q.dtype == np.float32 or t["quant"] is None:
            return q.astype(np.float32)
        scale, zp = t["quant"]["scale"], t["quant"]["zero_point"]
        if scale.size == 1:
            return (scale[0] * (q.astype(np.float64) - zp[0])).astype(np.float32)
        dim = t["quant"]["quantized_dimension"]
        shape = [1] * q.ndim
        shape[dim] = scale.size
        return (scale.reshape(shape) * (q.astype(np.float64) - zp.reshape(shape))).astype(np.float32)


# ---------------------------------------------------------------------------
# MobileNetV2 (width 1.0) with TensorFlow SAME padding
# ---------------------------------------------------------------------------

class ConvTF(nn.Module):
    """Conv (+bias, BN folded) with TF SAME padding and optional ReLU6.

    Stride 1: symmetric padding k//2 inside the conv. Stride 2 (input sizes are
    even at 224): TF pads (k-2)//2 before and k-1-(k-2)//2 after, i.e. for k=3
    0 at the top/left and 1 at the bottom/right: an explicit F.pad, then a
    conv without padding.
    """

    def __init__(self, cin, cout, k, stride, groups=1, relu6=True):
        super().__init__()
        self.stride = stride
        self.k = k
        pad = k // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=True)
        self.relu6 = relu6

    def forward(self, x):
        if self.stride != 1:
            total = max(self.k - self.stride, 0)   # even input: (out-1)*s + k - in
            before = total // 2
            x = F.pad(x, (before, total - before, before, total - before))
        x = self.conv(x)
        return F.relu6(x) if self.relu6 else x


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers.append(ConvTF(cin, hidden, 1, 1))
        layers += [ConvTF(hidden, hidden, 3, stride, groups=hidden),
                   ConvTF(hidden, cout, 1, 1, relu6=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res else y


# (expand t, channels c, repeats n, first stride s) — MobileNetV2 paper, Table 2
V2_CONFIG = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class MobileNetV2TF(nn.Module):
    """features: stem, 17 inverted residual blocks, 1x1 conv to 1280 + ReLU6
    (the Grad-CAM layer); then global average pool and classifier."""

    def __init__(self, num_classes=1001, dropout=0.0):
        super().__init__()
        feats = [ConvTF(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in V2_CONFIG:
            for i in range(n):
                feats.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(ConvTF(cin, 1280, 1, 1))
        self.features = nn.Sequential(*feats)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(x)


def _convs(module):
    return [m for m in module.modules() if isinstance(m, ConvTF)]


def load_mobilenet_v2(path=DEFAULT_TFLITE, verbose=False):
    """A float MobileNetV2TF (1001 ImageNet classes, line 0 = background)."""
    tf = TFLiteModel(path)
    ops = [o for o in tf.operators if o["op"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    model = MobileNetV2TF(1001)
    convs = _convs(model)
    # the TFLite graph ends with a 1x1 CONV_2D to 1001 logits (no activation)
    if len(ops) != len(convs) + 1:
        raise ValueError("unexpected graph: %d convs in the file, %d in MobileNetV2" % (len(ops), len(convs) + 1))
    with torch.no_grad():
        for op, m in zip(ops, convs):
            w = tf.dequantized(op["inputs"][1])
            b = _bias(tf, op)
            if op["op"] == "DEPTHWISE_CONV_2D":      # [1, kh, kw, C] -> [C, 1, kh, kw]
                w = w.transpose(3, 0, 1, 2)
            else:                                     # OHWI -> OIHW
                w = w.transpose(0, 3, 1, 2)
            want = tuple(m.conv.weight.shape)
            if w.shape != want:
                raise ValueError("%s: shape %s, expected %s" % (tf.tensors[op["inputs"][1]]["name"], w.shape, want))
            if op["stride"][0] != m.stride or op["padding"] != "SAME":
                raise ValueError("%s: stride/padding %s/%s" % (op["op"], op["stride"], op["padding"]))
            if (op["act"] == "RELU6") != m.relu6:
                raise ValueError("%s: activation %s" % (op["op"], op["act"]))
            m.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            m.conv.bias.copy_(torch.from_numpy(b))
        last = ops[-1]
        w = tf.dequantized(last["inputs"][1])        # [1001, 1, 1, 1280]
        model.classifier[1].weight.copy_(torch.from_numpy(np.ascontiguousarray(w.reshape(w.shape[0], -1))))
        model.classifier[1].bias.copy_(torch.from_numpy(_bias(tf, last)))
    if verbose:
        counts = {}
        for o in tf.operators:
            counts[o["op"]] = counts.get(o["op"], 0) + 1
        print("%s: %d tensors, %d operators %s" % (os.path.basename(path), len(tf.tensors),
                                                    len(tf.operators), counts))
    return model.eval()


def _bias(tf, op):
    """int32 bias: b = bias_scale * q (zero point 0; bias_scale = in_scale * w_scale)."""
    ti = op["inputs"][2]
    t = tf.tensors[ti]
    q = tf.raw(ti)
    if q.dtype == np.float32:
        return q.astype(np.float32)
    scale = t["quant"]["scale"]
    return (scale.astype(np.float64) * (q.astype(np.float64) - t["quant"]["zero_point"])).astype(np.float32)


def image_tensor(path, size=224):
    from PIL import Image
    img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
    x = (np.asarray(img, dtype=np.float32) - 128.0) / 128.0
    return torch.from_numpy(x.transpose(2, 0, 1).copy()).unsqueeze(0)


def check_imagenet(model=None, path=DEFAULT_TFLITE, verbose=True):
    """ImageNet top-1: cat.bmp -> Egyptian cat / tabby, grace_hopper.bmp ->
    military uniform. Returns True when both are right."""
    if model is None:
        model = load_mobilenet_v2(path, verbose=verbose)
    with open(os.path.join(DATA, "imagenet_labels.txt")) as f:
        labels = [line.strip() for line in f]
    expect = {"cat.bmp": ("Egyptian cat", "tabby"), "grace_hopper.bmp": ("military uniform",)}
    ok = True
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for name, want in expect.items():
            p = torch.softmax(model(image_tensor(os.path.join(DATA, name))), 1)[0]
            top = torch.topk(p, 3)
            names = [(labels[i], float(v)) for v, i in zip(top.values, top.indices)]
            good = names[0][0] in want
            ok &= good
            if verbose:
                print("TFLite port check %-17s top-3 %s -> %s" % (
                    name, ", ".join("%s %.3f" % nv for nv in names), "ok" if good else "WRONG"))
    model.train(was_training)
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tflite", default=DEFAULT_TFLITE)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("TRAIN_THREADS", "2")))
    ok = check_imagenet(load_mobilenet_v2(args.tflite, verbose=True))
    print("TFLite port check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
