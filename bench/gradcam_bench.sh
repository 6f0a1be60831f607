#!/usr/bin/env bash
# Grad-CAM cost, side by side in one run: dermal's inference + Grad-CAM
# against its plain inference (`dermal bench MODEL --gradcam`: two engines in
# one process, interleaved; the target is its model's gradcam_target or the
# automatic choice), and PyTorch's plain forward against the
# pytorch-grad-cam way (hooks + a backward pass through the whole network).
# Also reports dermal's overlay rendering and PNG encoding separately.
# Target (issue 5): dermal inference + CAM <= 1.25 x plain inference on the
# default model.
#   bash bench/gradcam_bench.sh            ITERS=100 THREADS=1 MODELS="..."
set -u -o pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY=/usr/bin/python3
DERMAL=${DERMAL:-build/dermal}
ITERS=${ITERS:-100}
THREADS=${THREADS:-1}
MODELS=${MODELS:-"default mobilenet_v2 resnet50 efficientnet_b0"}
printf '%-18s %8s %10s %10s %7s %10s %10s %7s %9s %7s\n' model threads \
  dermal_ms +cam_ms ratio torch_ms +cam_ms ratio overlay png
verdict=PASS
for m in $MODELS; do
  if [ "$m" = default ]; then
    f=models/dermal-ham10000.onnx; targ=(--default-model "$f")
  else
    f=build/models/$m.opset13.onnx; targ=(--arch "$m")
    [ -f "$f" ] || $PY tools/export_torchvision.py --out build/models --opset 13 --models "$m" >/dev/null 2>&1
  fi
  [ -f "$f" ] || { echo "$m: $f missing"; continue; }
  d=$("$DERMAL" bench "$f" --gradcam --json --iters "$ITERS" --threads "$THREADS") || { echo "$m: dermal failed"; continue; }
  t=$($PY bench/torch_gradcam_bench.py "${targ[@]}" --iters $((ITERS / 3 + 5)) --threads "$THREADS" 2>/dev/null || echo '{}')
  line=$($PY -c "
import json, sys
d = json.loads(sys.argv[1]); t = json.loads(sys.argv[2] or '{}')
g = lambda o, k: ('%.2f' % o[k]) if k in o else '-'
print('%-18s %8d %10s %10s %7s %10s %10s %7s %9s %7s' % (sys.argv[3], d['threads'],
  g(d, 'p50_ms'), g(d, 'cam_p50_ms'), g(d, 'cam_ratio'), g(t, 'p50_ms'), g(t, 'cam_p50_ms'),
  g(t, 'cam_ratio'), g(d, 'overlay_600x450_ms'), g(d, 'png_ms')))
if sys.argv[3] == 'default' and d['cam_ratio'] > 1.25: sys.exit(3)
" "$d" "$t" "$m") 
  st=$?
  echo "$line"
  [ $st -eq 3 ] && verdict=FAIL
done
echo "verdict: default model inference + Grad-CAM <= 1.25 x inference: $verdict"
