"""Writes the small ONNX files the CLI tests use into OUT (argv[1]):
tiny.onnx (Conv+Relu+GAP+Gemm+Softmax, with metadata), bad_op.onnx (an op the
engine does not run), bad_attr.onnx (MaxPool storage_order=1), dyn.onnx
(Reshape to a runtime shape), truncated.onnx and garbage.onnx, and
tiny.input.npy; files an engine must refuse rather than misread:
clip_attrs.onnx and pad_value.onnx (opset-10 attributes in an opset-13
file), out_dtype.onnx (an output declared int64 that computes float32),
const_bomb.onnx (300 bytes asking for a 1.6 GB constant), many_nodes.onnx
(100,001 nodes, one past the limit); and odd_meta.onnx
(control characters and invalid UTF-8 in its strings)."""
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

r = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
save("clip_attrs", [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.5,
                                     name="clip_node")], {}, [x], [r])
save("pad_value", [helper.make_node("Pad", ["x", "pads"], ["y"], value=3.0,
                                    name="pad_node")],
     {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}, [x],
     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 10, 10])])
save("out_dtype", [helper.make_node("Relu", ["x"], ["y"], name="relu")], {}, [x],
     [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 3, 8, 8])])
save("const_bomb", [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="bomb"),
                    helper.make_node("Add", ["x", "c"], ["y"], name="add")],
     {"shape": np.array([1, 1, 20000, 20000], np.int64)}, [x],
     [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
odd = save("odd_meta", [helper.make_node("Relu", ["x"], ["y"], name="relu")], {},
           [x], [r], {"k\ney": "v\x01al"})
odd.producer_name = "p\x1b[31mred"
odd_bytes = odd.SerializeToString().replace(b"v\x01al", b"v\xffal")
with open(os.path.join(out, "odd_meta.onnx"), "wb") as f:
    f.write(odd_bytes)

# one node past the engine's limit (graph.c DM_GRAPH_MAX_NODES)
chain = [helper.make_node("Relu", ["x" if i == 0 else "r%d" % (i - 1)],
                          ["y" if i == 100000 else "r%d" % i]) for i in range(100001)]
save("many_nodes", chain, {}, [x], [r])

data = m.SerializeToString()
with open(os.path.join(out, "truncated.onnx"), "wb") as f:
    f.write(data[: len(data) // 2])
with open(os.path.join(out, "garbage.onnx"), "wb") as f:
    f.write(bytes(rng.integers(0, 256, 5000, dtype=np.uint8)))
