#!/bin/bash
# Keras/TensorFlow-style graphs (NHWC input + Transpose, auto_pad=SAME_UPPER,
# ReduceMean global pooling, Softmax in the graph, squeeze-and-excitation)
# built with python3-onnx's helper API, against the numpy reference the same
# script computes; onednn also with oneDNN limited to AVX2.
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
K=build/keras
pass=0 fail=0
if ! $PY -c 'import onnx, numpy' 2>/dev/null; then
  echo "SKIP: Debian python3-onnx/python3-numpy missing"
  echo "test_keras: 0 passed, 0 failed, 1 skipped"; exit 0
fi
$PY tools/make_keras_graphs.py --out $K >/dev/null || { echo "FAIL generating graphs"; fail=1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for f in $K/*.onnx; do
  n=$(basename "$f" .onnx)
  # onednn-avx2: oneDNN limited to AVX2 (blocked layouts, other passes)
  for be in ref onednn onednn-avx2; do
    isa=; [ $be = onednn-avx2 ] && isa=AVX2
    if ONEDNN_MAX_CPU_ISA=$isa "$DERMAL" run "$f" --input $K/$n.input.npy \
        --output "$tmp/$n.$be.npy" --backend ${be%-avx2} >"$tmp/err" 2>&1 &&
      $PY tests/integration/compare.py "$tmp/$n.$be.npy" $K/$n.expected.npy \
        --label "$n $be vs numpy"; then
      pass=$((pass + 1))
    else
      echo "FAIL $n $be: $(cat "$tmp/err")"; fail=$((fail + 1))
    fi
  done
done
echo "test_keras: $pass passed, $fail failed"
[ $fail -eq 0 ]
