#!/bin/bash
# Parity of dermal with PyTorch on torchvision classifiers exported with
# torch.onnx.export (random seeded weights, randomised BatchNorm statistics,
# opset 13 and 17): both backends against PyTorch's logits and against each
# other, max|a-b| <= 1e-4 * max|ref|, and onednn limited to AVX2 (blocked
# layouts) against PyTorch.  Five archs by default; ALL_ARCHS=1 runs
# all 13.  Models are generated into build/models (cached), never committed.
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
M=build/models
pass=0 fail=0 skip=0
if ! $PY -c 'import torch, torchvision, onnx' 2>/dev/null; then
  echo "SKIP: Debian python3-torch/python3-torchvision/python3-onnx missing"
  echo "test_torchvision: 0 passed, 0 failed, 1 skipped"; exit 0
fi
if [ -n "${ALL_ARCHS:-}" ]; then
  archs="resnet18 resnet50 mobilenet_v2 mobilenet_v3_small mobilenet_v3_large
    efficientnet_b0 densenet121 squeezenet1_1 shufflenet_v2_x1_0 mnasnet1_0
    regnet_y_400mf googlenet vgg11_bn"
else
  archs="resnet18 mobilenet_v2 mobilenet_v3_small efficientnet_b0 squeezenet1_1"
fi
list=$(echo $archs | tr ' ' ',')
for opset in 13 17; do
  $PY tools/export_torchvision.py --out $M --opset $opset --models "$list" \
    >/dev/null 2>&1 || { echo "FAIL export opset $opset"; fail=$((fail + 1)); }
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
check() { # label, command...
  local label=$1; shift
  if out=$("$@" 2>&1); then pass=$((pass + 1)); echo "$out"
  else fail=$((fail + 1)); echo "FAIL $label: $out"; fi
}
for a in $archs; do
  for opset in 13 17; do
    f=$M/$a.opset$opset.onnx
    if [ ! -f "$f" ]; then echo "FAIL $a opset $opset: not exported"; fail=$((fail + 1)); continue; fi
    # onednn-avx2: oneDNN limited to AVX2, where it picks blocked layouts
    # (nChw8c) instead of channels-last, and our passes take other paths
    for be in ref onednn onednn-avx2; do
      isa=; [ $be = onednn-avx2 ] && isa=AVX2
      if ONEDNN_MAX_CPU_ISA=$isa "$DERMAL" run "$f" --input $M/$a.input.npy \
          --output "$tmp/$a.$opset.$be.npy" --backend ${be%-avx2} >"$tmp/err" 2>&1; then
        check "$a/$opset/$be" $PY tests/integration/compare.py "$tmp/$a.$opset.$be.npy" \
          $M/$a.opset$opset.torch.npy --label "$a opset$opset $be vs torch"
      else
        echo "FAIL $a opset$opset $be: $(cat "$tmp/err")"; fail=$((fail + 1))
      fi
    done
    if [ -f "$tmp/$a.$opset.onednn.npy" ] && [ -f "$tmp/$a.$opset.ref.npy" ]; then
      check "$a/$opset/ref-vs-onednn" $PY tests/integration/compare.py \
        "$tmp/$a.$opset.onednn.npy" "$tmp/$a.$opset.ref.npy" \
        --label "$a opset$opset onednn vs ref"
    fi
  done
done
echo "test_torchvision: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
