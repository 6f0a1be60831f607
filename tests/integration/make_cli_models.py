"""Writes the small ONNX files the CLI tests use into OUT (argv[1]):
tiny.onnx (Conv+Relu+GAP+Gemm+Softmax, with metadata), bad_op.onnx (an op the
engine does not run), bad_attr.onnx (MaxPool storage_order=1), dyn.onnx
(Reshape to a runtime shape), truncated.onnx and garbage.onnx, and
tiny.input.npy."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)


def save(name, nodes, inits, inputs, outputs, meta=None):
    g = helper.make_graph(nodes, name, inputs, outputs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="dermal-tests")
    m.ir_version = 7
    for k, v in (meta or {}).items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, os.path.join(out, name + ".onnx"))
    return m


x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
inits = {"w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32),
         "b": rng.standard_normal(6).astype(np.float32),
         "fw": rng.standard_normal((4, 6)).astype(np.float32),
         "fb": rng.standard_normal(4).astype(np.float32)}
nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
         helper.make_node("Flatten", ["p"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["l"], transB=1, name="fc"),
         helper.make_node("Softmax", ["l"], ["y"], name="softmax")]
m = save("tiny", nodes, inits, [x], [y], {"labels": "a,b,c,d", "version": "1"})
np.save(os.path.join(out, "tiny.input.npy"), rng.standard_normal((1, 3, 8, 8)).astype(np.float32))

bad = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
       helper.make_node("NonMaxSuppression", ["c"], ["y"], name="nms_node")]
save("bad_op", bad, inits, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
bad = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], storage_order=1,
                        name="pool_node")]
save("bad_attr", bad, {}, [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
s = helper.make_tensor_value_info("s", TensorProto.INT64, [2])
bad = [helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape_node")]
save("dyn", bad, {}, [x, s], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])

data = m.SerializeToString()
with open(os.path.join(out, "truncated.onnx"), "wb") as f:
    f.write(data[: len(data) // 2])
with open(os.path.join(out, "garbage.onnx"), "wb") as f:
    f.write(bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
