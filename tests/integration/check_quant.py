#!/usr/bin/python3
"""Checks one quantized model for tests/integration/test_quantize.sh.

usage: check_quant.py FP32.onnx INT8.onnx REF.npy ONEDNN.npy ORT.npy [--rtol R]

Prints one line per check ("ok ..." or "FAIL ...") and exits non-zero on a
failure:
  - onnx.checker.check_model(full_check=True) accepts INT8;
  - INT8 is a QDQ graph: QuantizeLinear/DequantizeLinear present, every
    Conv/Gemm weight is an int8 initializer behind a DequantizeLinear except
    in the nodes metadata_props lists in quant_fp32_layers (mixed precision;
    those must exist, be fewer than a quarter of the Conv/Gemm nodes, and
    keep float weights), and the calibration facts are in metadata_props
    (with the source's keys kept);
  - size(INT8) <= 30 % of size(FP32);
  - dermal ref vs onednn, and dermal ref vs ONNX Runtime: max|a-b| <= rtol *
    max|b| (default 0.02: both compute the QDQ graph in fp32, and a value
    landing within float rounding of a .5 quantization boundary rounds one
    way or the other, a one-step difference that propagates), same top-1.
    The measured differences are printed; they are also expressed in
    "output steps": the scale of the last Gemm's input times its largest
    weight, the change of one logit caused by one input code.
"""
import os
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rtol = 0.02
    if "--rtol" in sys.argv:
        rtol = float(sys.argv[sys.argv.index("--rtol") + 1])
        args = [a for a in args if a != str(sys.argv[sys.argv.index("--rtol") + 1])]
    fp32, int8, ref, dnn, ort = args[:5]
    fails = 0

    def check(ok, msg):
        nonlocal fails
        print(("ok   " if ok else "FAIL ") + msg)
        fails += 0 if ok else 1

    m = onnx.load(int8)
    try:
        onnx.checker.check_model(m, full_check=True)
        check(True, "onnx.checker accepts %s" % os.path.basename(int8))
    except Exception as e:  # noqa: BLE001 - report any checker failure
        check(False, "onnx.checker: %s" % e)
    ops = [n.op_type for n in m.graph.node]
    inits = {t.name: t for t in m.graph.initializer}
    dq = {n.output[0]: n for n in m.graph.node if n.op_type == "DequantizeLinear"}
    meta = {p.key: p.value for p in m.metadata_props}
    fp32_nodes = set(meta.get("quant_fp32_layers", "none").split(",")) - {"none", ""}
    names = {n.name for n in m.graph.node}
    wnodes = [n for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    check(fp32_nodes <= names and len(fp32_nodes & {n.name for n in wnodes}) * 4 < max(len(wnodes), 1),
          "mixed precision: %d nodes left in fp32 (%s)"
          % (len(fp32_nodes), ", ".join(sorted(fp32_nodes)[:4]) + (" ..." if len(fp32_nodes) > 4 else "")))
    bad = []
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm") and n.name in fp32_nodes:
            if n.input[1] not in inits or inits[n.input[1]].data_type != onnx.TensorProto.FLOAT:
                bad.append(n.name)
        elif n.op_type in ("Conv", "Gemm"):
            d = dq.get(n.input[1])
            if d is None or inits.get(d.input[0]) is None or \
                    inits[d.input[0]].data_type != onnx.TensorProto.INT8:
                bad.append(n.name)
    check(ops.count("QuantizeLinear") > 0 and not bad,
          "QDQ graph: %d QuantizeLinear, %d DequantizeLinear, weights int8%s"
          % (ops.count("QuantizeLinear"), ops.count("DequantizeLinear"),
             "" if not bad else " except " + ",".join(bad[:3])))
    src = {p.key: p.value for p in onnx.load(fp32, load_external_data=False).metadata_props}
    kept = all(meta.get(k) == v for k, v in src.items() if not k.startswith("quant_"))
    check(kept and all(k in meta for k in ("quant_method", "quant_calib_count", "quant_date",
                                           "quant_bias_correction", "quant_fp32_layers")),
          "metadata: %d source keys kept, calibration: %s, %s images, %s"
          % (len(src), meta.get("quant_method"), meta.get("quant_calib_count"),
             meta.get("quant_date")))
    sa, sb = os.path.getsize(fp32), os.path.getsize(int8)
    check(sb <= 0.30 * sa, "size %d -> %d bytes (%.1f%%, limit 30%%)" % (sa, sb, 100.0 * sb / sa))

    step = None
    gemms = [n for n in m.graph.node if n.op_type == "Gemm"]
    if gemms and gemms[-1].input[0] in dq and gemms[-1].input[1] in dq:
        xs = numpy_helper.to_array(inits[dq[gemms[-1].input[0]].input[1]])
        wd = dq[gemms[-1].input[1]]
        w = numpy_helper.to_array(inits[wd.input[0]]).astype(np.float32)
        ws = numpy_helper.to_array(inits[wd.input[1]])
        axis = next((a.i for a in wd.attribute if a.name == "axis"), 1)
        if ws.ndim:
            shape = [1] * w.ndim
            shape[axis] = -1
            ws = ws.reshape(shape)
        step = float(xs) * float(np.abs(w * ws).max())
    r, d, o = np.load(ref), np.load(dnn), np.load(ort)
    for name, a, b in (("ref vs onednn", d, r), ("dermal ref vs ORT", r, o)):
        diff = float(np.abs(a.astype(np.float64) - b).max())
        scale = float(np.abs(b).max())
        steps = " = %.1f output steps" % (diff / step) if step else ""
        check(diff <= rtol * scale and int(a.argmax()) == int(b.argmax()),
              "%s: max|a-b| %.3g, %.2f%% of max|b| %.3g%s, top-1 %d/%d"
              % (name, diff, 100 * diff / scale, scale, steps, int(a.argmax()), int(b.argmax())))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
