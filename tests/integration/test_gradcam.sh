#!/bin/bash
# Grad-CAM parity: dermal's raw CAM (`dermal run --cam`, target chosen
# automatically) against tools/gradcam_reference.py (PyTorch forward and
# backward hooks on the same seeded torchvision models), on real dermatoscopic
# images from ../shared/data/ham10000-fullres: Pearson r >= 0.999, for
# Grad-CAM and Grad-CAM++, on both backends' forward passes.
# Then earlier targets (`--cam-target`, EARLY below): a block output with
# Convs, pooling windows, residual Adds, SE multiplies and fused
# activations between target and scores, so the engine back-propagates
# through them (oneDNN backward primitives on `onednn`, plain C on `ref`).
# The tensor name of each module's output comes from the exported file
# (tools/gradcam_reference.py --onnx-tensor).  HiResCAM joins there: on these
# seeded random-weight models, Grad-CAM at a linear bottleneck is often
# all-zero after its ReLU, and a flat map checks nothing.
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
M=build/models
DATA=../shared/data/ham10000-fullres/images
pass=0 fail=0
if ! $PY -c 'import torch, torchvision, onnx, PIL' 2>/dev/null; then
  echo "SKIP: python3-torch/torchvision/onnx/pil missing"
  echo "test_gradcam: 0 passed, 0 failed, 1 skipped"; exit 0
fi
if [ ! -d "$DATA" ]; then
  echo "SKIP: $DATA absent (real images needed)"
  echo "test_gradcam: 0 passed, 0 failed, 1 skipped"; exit 0
fi
archs=${ARCHS:-"resnet18 mobilenet_v2 efficientnet_b0 mobilenet_v3_small"}
[ -n "${ALL_ARCHS:-}" ] && archs="$archs resnet50 mobilenet_v3_large regnet_y_400mf mnasnet1_0 shufflenet_v2_x1_0"
$PY tools/export_torchvision.py --out $M --opset 13 --models "$(echo $archs | tr ' ' ,)" >/dev/null 2>&1
images=$(ls "$DATA" | head -n 2)
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
for a in $archs; do
  for img in $images; do
    for method in gradcam gradcampp; do
      c=$($PY tools/gradcam_reference.py --arch $a --image "$DATA/$img" \
            --tensor-out "$T/x.npy" --cam-out "$T/ref.npy" --method $method 2>"$T/err") ||
        { echo "FAIL reference $a: $(tail -2 "$T/err")"; fail=$((fail + 1)); continue; }
      for be in onednn ref; do
        if ! "$DERMAL" run $M/$a.opset13.onnx --input "$T/x.npy" --cam "$T/cam.npy" \
            --cam-class "$c" --cam-method $method --backend $be 2>"$T/err"; then
          echo "FAIL $a $img $method $be: $(cat "$T/err")"; fail=$((fail + 1)); continue
        fi
        r=$($PY -c "
import numpy as np
a = np.load('$T/cam.npy').ravel().astype(np.float64); b = np.load('$T/ref.npy').ravel().astype(np.float64)
assert a.shape == b.shape, (a.shape, b.shape)
if a.std() == 0 and b.std() == 0: print(1.0 if np.allclose(a, b) else 0.0)
else: print(np.corrcoef(a, b)[0, 1])" 2>&1)
        if $PY -c "import sys; sys.exit(0 if float('$r') >= 0.999 else 1)" 2>/dev/null; then
          pass=$((pass + 1)); echo "ok   $a $img $method $be class $c r=$r"
        else
          fail=$((fail + 1)); echo "FAIL $a $img $method $be class $c r=$r"
        fi
      done
    done
  done
done
# arch:module:methods (one image each; the model must be in $archs' export)
EARLY=${EARLY:-"resnet18:layer3:gradcam,gradcampp resnet18:layer1:hirescam
  mobilenet_v2:features.13:gradcampp,hirescam
  efficientnet_b0:features.5:hirescam mobilenet_v3_small:features.9:gradcam,hirescam"}
img=$(echo $images | cut -d' ' -f1)
for spec in $EARLY; do
  IFS=: read -r a mod methods <<<"$spec"
  case " $archs " in *" $a "*) ;; *) continue ;; esac
  name=$($PY tools/gradcam_reference.py --arch $a --target $mod \
           --onnx-tensor $M/$a.opset13.onnx 2>"$T/err") ||
    { echo "FAIL tensor name $a $mod: $(tail -2 "$T/err")"; fail=$((fail + 1)); continue; }
  for method in $(echo $methods | tr , ' '); do
    c=$($PY tools/gradcam_reference.py --arch $a --target $mod --image "$DATA/$img" \
          --tensor-out "$T/x.npy" --cam-out "$T/ref.npy" --method $method 2>"$T/err") ||
      { echo "FAIL reference $a $mod: $(tail -2 "$T/err")"; fail=$((fail + 1)); continue; }
    for be in onednn ref; do
      if ! "$DERMAL" run $M/$a.opset13.onnx --input "$T/x.npy" --cam "$T/cam.npy" \
          --cam-class "$c" --cam-method $method --cam-target "$name" \
          --backend $be 2>"$T/err"; then
        echo "FAIL $a $mod $method $be: $(cat "$T/err")"; fail=$((fail + 1)); continue
      fi
      r=$($PY -c "
import numpy as np
a = np.load('$T/cam.npy').ravel().astype(np.float64); b = np.load('$T/ref.npy').ravel().astype(np.float64)
assert a.shape == b.shape, (a.shape, b.shape)
if a.std() == 0 or b.std() == 0: print(0.0)  # a flat map checks nothing
else: print(np.corrcoef(a, b)[0, 1])" 2>&1)
      if $PY -c "import sys; sys.exit(0 if float('$r') >= 0.999 else 1)" 2>/dev/null; then
        pass=$((pass + 1)); echo "ok   $a@$mod $img $method $be class $c r=$r"
      else
        fail=$((fail + 1)); echo "FAIL $a@$mod $img $method $be class $c r=$r"
      fi
    done
  done
done
echo "test_gradcam: $pass passed, $fail failed"
[ $fail -eq 0 ]
