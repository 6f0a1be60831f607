#!/bin/bash
# The `dermal` command line: help for every subcommand, run/inspect/bench on a
# tiny generated model, the exact `bench --json` keys other tools read, and
# clear errors (never a crash) for corrupt, truncated and unsupported models.
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
no() { fail=$((fail + 1)); echo "FAIL $1"; }
expect() { # label, expected exit status, grep pattern ('' = none), command...
  local label=$1 want=$2 pat=$3; shift 3
  out=$("$@" 2>&1); st=$?
  if [ "$st" -ne "$want" ]; then no "$label: exit $st, want $want: $out"; return; fi
  if [ "$st" -ge 128 ]; then no "$label: crashed"; return; fi
  if [ -n "$pat" ] && ! echo "$out" | grep -qE "$pat"; then
    no "$label: output lacks /$pat/: $out"; return; fi
  ok "$label"
}
if ! $PY -c 'import onnx, numpy' 2>/dev/null; then
  echo "SKIP: python3-onnx missing"; echo "test_cli: 0 passed, 0 failed, 1 skipped"; exit 0
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
$PY tests/integration/make_cli_models.py "$T" || { echo "FAIL model generation"; exit 1; }

expect "help" 0 "commands:" "$DERMAL" --help
expect "no args is a usage error" 2 "usage" "$DERMAL"
expect "unknown command" 2 "unknown command" "$DERMAL" frobnicate
for c in run inspect bench predict eval meta quantize serve migrate; do
  expect "$c --help" 0 "usage: dermal $c" "$DERMAL" $c --help
done
expect "version does not open a model" 0 "model not opened" "$DERMAL" version
expect "run without model" 2 "no model" "$DERMAL" run --input x --output y
expect "bad --threads" 2 "threads" "$DERMAL" bench "$T/tiny.onnx" --threads zero

for be in ref onednn; do
  expect "run $be" 0 "" "$DERMAL" run "$T/tiny.onnx" --input "$T/tiny.input.npy" \
    --output "$T/y.$be.npy" --backend $be
  expect "run --model form $be" 0 "" "$DERMAL" run --model "$T/tiny.onnx" \
    --input "$T/tiny.input.npy" --output "$T/y2.$be.npy" --backend $be
done
expect "softmax output sums to 1" 0 "" $PY -c "
import numpy as np, sys
a = np.load('$T/y.ref.npy'); b = np.load('$T/y.onednn.npy')
assert a.shape == (1, 4), a.shape
assert abs(a.sum() - 1) < 1e-5 and np.abs(a - b).max() < 1e-5, (a, b)"

expect "inspect text" 0 "Conv +1" "$DERMAL" inspect "$T/tiny.onnx"
expect "inspect shows metadata" 0 "labels = a,b,c,d" "$DERMAL" inspect "$T/tiny.onnx"
expect "inspect shows the Grad-CAM target" 0 "gradcam +r \(chosen automatically\)" "$DERMAL" inspect "$T/tiny.onnx"
expect "inspect --json" 0 "" sh -c "'$DERMAL' inspect '$T/tiny.onnx' --json | $PY -c '
import json, sys
d = json.loads(sys.stdin.read())
assert d[\"inputs\"][0][\"shape\"] == [1, 3, 8, 8], d
assert d[\"ops\"][\"Conv\"] == 1 and d[\"unsupported_ops\"] == [], d
assert d[\"parameters\"] == 6*3*3*3 + 6 + 24 + 4, d[\"parameters\"]
assert d[\"metadata\"][\"labels\"] == \"a,b,c,d\"'"
expect "inspect lists unsupported op" 0 "NonMaxSuppression +1 +UNSUPPORTED" "$DERMAL" inspect "$T/bad_op.onnx"

expect "meta prints metadata" 0 "^labels=a,b,c,d" "$DERMAL" meta "$T/tiny.onnx"
expect "meta --set writes a checked copy" 0 "wrote .*4 classes, input 8x8, direct" \
  "$DERMAL" meta "$T/tiny.onnx" --set labels=w,x,y,z --set "label_names=W|X|Y|Z" \
  --set resize=direct --unset version -o "$T/meta.onnx"
expect "meta copy carries the new keys" 0 "label_names=W\|X\|Y\|Z" "$DERMAL" meta "$T/meta.onnx"
expect "meta copy runs" 0 "" "$DERMAL" run "$T/meta.onnx" --input "$T/tiny.input.npy" --output "$T/m.npy"
expect "meta refuses inconsistent labels" 1 "2 entries, the output 4" \
  "$DERMAL" meta "$T/tiny.onnx" --set labels=a,b -o "$T/bad_meta.onnx"
expect "refused copy removed" 1 "" test -e "$T/bad_meta.onnx"
expect "bench --json keys" 0 "" sh -c "'$DERMAL' bench '$T/tiny.onnx' --iters 20 --json | $PY -c '
import json, sys
lines = sys.stdin.read().strip().splitlines()
assert len(lines) == 1, lines
d = json.loads(lines[0])
for k in \"model backend precision threads iters load_ms first_ms p50_ms p90_ms p99_ms peak_rss_mb\".split():
    assert k in d, k
assert d[\"backend\"] == \"onednn\" and d[\"precision\"] == \"fp32\" and d[\"threads\"] == 1
assert d[\"iters\"] == 20 and d[\"p50_ms\"] <= d[\"p90_ms\"] <= d[\"p99_ms\"]'"
expect "bench ref backend" 0 "backend +ref" "$DERMAL" bench "$T/tiny.onnx" --iters 5 --backend ref

refused() { # label, pattern, model file in $T: `dermal run` exits 1 naming why
  expect "$1" 1 "$2" "$DERMAL" run "$T/$3" --input "$T/tiny.input.npy" --output "$T/z.npy"
}
refused "unsupported op named at load" "nms_node.*NonMaxSuppression.*not supported" bad_op.onnx
refused "unsupported attribute value named" "pool_node.*MaxPool.*storage_order" bad_attr.onnx
expect "dynamic reshape refused" 1 "reshape_node.*Reshape.*constant" \
  "$DERMAL" bench "$T/dyn.onnx" --iters 1
refused "opset-10 Clip attributes refused at opset 13" \
  "clip_node.*Clip.*does not exist at opset 13" clip_attrs.onnx
refused "opset-10 Pad value refused at opset 13" \
  "pad_node.*Pad.*'value' does not exist at opset 13" pad_value.onnx
refused "declared output dtype checked" \
  "output 'y' is declared int64 but the graph computes float32" out_dtype.onnx
expect "constant bomb refused at load" 1 "bomb.*ConstantOfShape.*1600.0 MB" \
  "$DERMAL" bench "$T/const_bomb.onnx" --iters 1
expect "node count bounded" 1 "100001 nodes; at most 100000" \
  "$DERMAL" bench "$T/many_nodes.onnx" --iters 1
expect "inspect escapes control characters" 0 "producer p.x1b.31mred.*" \
  "$DERMAL" inspect "$T/odd_meta.onnx"
expect "inspect --json parses despite invalid UTF-8" 0 "" sh -c "'$DERMAL' inspect --json '$T/odd_meta.onnx' | $PY -c '
import json, sys
d = json.loads(sys.stdin.buffer.read().decode(\"utf-8\"))
assert d[\"metadata\"] == {\"k\\ney\": \"v\\ufffdal\"}, d[\"metadata\"]
assert d[\"producer\"] == \"p\\x1b[31mred\", d[\"producer\"]'"
expect "two models are a usage error" 2 "two models given" \
  "$DERMAL" run "$T/tiny.onnx" --model "$T/meta.onnx" --input "$T/tiny.input.npy" --output "$T/z.npy"
expect "ref bench reports one thread" 0 '"threads":1' \
  "$DERMAL" bench "$T/tiny.onnx" --backend ref --threads 2 --iters 2 --json
expect "help COMMAND" 0 "usage: dermal run" "$DERMAL" help run
expect "truncated model" 1 "malformed|truncat|exceeds" "$DERMAL" inspect "$T/truncated.onnx"
expect "garbage model" 1 "dermal: " "$DERMAL" run "$T/garbage.onnx" --input "$T/tiny.input.npy" --output "$T/z.npy"
expect "missing model" 1 "No such file" "$DERMAL" inspect "$T/nope.onnx"
expect "wrong input shape" 1 "expects float32 1x3x8x8" \
  "$DERMAL" run "$T/tiny.onnx" --input "$T/y.ref.npy" --output "$T/z.npy"
echo "test_cli: $pass passed, $fail failed"
[ $fail -eq 0 ]
