"""Writes what tests/integration/test_server.sh needs into OUT (argv[1]):

  ham7.onnx      a tiny 7-class classifier (Conv+Relu+GAP+Gemm+Softmax) with
                 HAM10000 labels and long names in metadata_props, input
                 1x3x32x32 (input_size=32), so the server's whole path runs in
                 well under a millisecond
  garbage.onnx   random bytes (a corrupt model for the failed-preload case)
  lesion.jpg     200x150 RGB JPEG (the HAM10000 thumbnail size)
  lesion.png     the same picture as PNG
  tiny.png       4x4 PNG (below the decoder's minimum side: 422)
  big.png        300x300 PNG (over the test's MAX_PIXELS=50000: 422)
  notimage.bin   bytes that are no image format (415)
  truncated.jpg  the first half of lesion.jpg (415)
"""
import io
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(11)

LABELS = "akiec,bcc,bkl,df,mel,nv,vasc"
NAMES = ("Actinic keratoses and intraepithelial carcinoma|Basal cell carcinoma|"
         "Benign keratosis-like lesions|Dermatofibroma|Melanoma|"
         "Melanocytic nevi|Vascular lesions")

x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])
y = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 7])
inits = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
         "b": rng.standard_normal(8).astype(np.float32),
         "fw": rng.standard_normal((7, 8)).astype(np.float32),
         "fb": rng.standard_normal(7).astype(np.float32)}
nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
         helper.make_node("Flatten", ["p"], ["f"], name="flat"),
         helper.make_node("Gemm", ["f", "fw", "fb"], ["l"], transB=1, name="fc"),
         helper.make_node("Softmax", ["l"], ["probs"], name="softmax")]
g = helper.make_graph(nodes, "ham7", [x], [y],
                      [numpy_helper.from_array(v, k) for k, v in inits.items()])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)],
                      producer_name="dermal-tests")
m.ir_version = 7
for k, v in {"labels": LABELS, "label_names": NAMES, "input_size": "32",
             "resize": "direct", "name": "ham7-test", "model_version": "test-1"}.items():
    e = m.metadata_props.add()
    e.key, e.value = k, v
onnx.save(m, os.path.join(out, "ham7.onnx"))

with open(os.path.join(out, "garbage.onnx"), "wb") as f:
    f.write(bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))

yy, xx = np.mgrid[0:150, 0:200]
img = np.stack([(xx * 255 // 199), (yy * 255 // 149),
                ((xx + yy) * 3) % 256], axis=-1).astype(np.uint8)
im = Image.fromarray(img, "RGB")
buf = io.BytesIO()
im.save(buf, "JPEG", quality=90)
jpg = buf.getvalue()
with open(os.path.join(out, "lesion.jpg"), "wb") as f:
    f.write(jpg)
im.save(os.path.join(out, "lesion.png"))
Image.new("RGB", (4, 4), (120, 60, 30)).save(os.path.join(out, "tiny.png"))
Image.new("RGB", (300, 300), (90, 40, 20)).save(os.path.join(out, "big.png"))
with open(os.path.join(out, "notimage.bin"), "wb") as f:
    f.write(b"this is plain text, not an image\n" * 20)
with open(os.path.join(out, "truncated.jpg"), "wb") as f:
    f.write(jpg[: len(jpg) // 2])
