"""Fixtures for test_predict.sh, written into OUT (argv[1]):
ham7.onnx  a small 7-class conv classifier with dermal metadata (HAM10000
           labels, input 1x3x32x32, direct resize, mean/std 0.5), output
           logits (no Softmax: dermal applies it);
imgs/      PIL-made JPEG and PNG images of different sizes, one corrupt file;
labels.csv image_id,dx for them plus a missing image and an unknown label."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

out = sys.argv[1]
os.makedirs(os.path.join(out, "imgs"), exist_ok=True)
rng = np.random.default_rng(11)
labels = "akiec,bcc,bkl,df,mel,nv,vasc".split(",")

inits = {"w1": (rng.standard_normal((8, 3, 3, 3)) * 0.5).astype(np.float32),
         "b1": (rng.standard_normal(8) * 0.1).astype(np.float32),
         "fw": (rng.standard_normal((7, 8)) * 2).astype(np.float32),
         "fb": (rng.standard_normal(7) * 0.1).astype(np.float32)}
nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1)]
g = helper.make_graph(nodes, "ham7",
                      [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
                      [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 7])],
                      [numpy_helper.from_array(v, k) for k, v in inits.items()])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
m.ir_version = 7
meta = {"labels": ",".join(labels),
        "label_names": "Actinic keratosis|Basal cell carcinoma|Benign keratosis|"
                       "Dermatofibroma|Melanoma|Melanocytic nevus|Vascular lesion",
        "input_size": "32", "resize": "direct", "mean": "0.5,0.5,0.5",
        "std": "0.5,0.5,0.5", "color": "RGB", "model_version": "test-1"}
for k, v in meta.items():
    e = m.metadata_props.add()
    e.key, e.value = k, v
onnx.save(m, os.path.join(out, "ham7.onnx"))

rows = []
for i in range(24):
    w, h = int(rng.integers(40, 120)), int(rng.integers(40, 120))
    base = rng.integers(0, 256, (1, 1, 3))
    noise = rng.integers(-60, 60, (h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    ext = "png" if i % 3 == 0 else "jpg"
    Image.fromarray(arr).save(os.path.join(out, "imgs", f"img{i:02d}.{ext}"))
    rows.append((f"img{i:02d}", labels[i % 7]))
with open(os.path.join(out, "imgs", "broken.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
rows.append(("broken", "nv"))
rows.append(("missing", "mel"))
rows.append(("img00", "unknown_class"))
with open(os.path.join(out, "labels.csv"), "w") as f:
    f.write("lesion_id,image_id,dx\n")
    for i, (a, b) in enumerate(rows):
        f.write(f"L{i},{a},{b}\n")
