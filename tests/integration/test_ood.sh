#!/bin/bash
# Out-of-distribution scores (issue 3, "Not a skin lesion? Say so").
# Generated models: a classifier with a second output `ood_score` gets
# in_distribution/ood_score/ood_threshold in every `predict --json` answer
# and an `ood_rejected` count in `eval --json`; a classifier without one gets
# the three keys as null; a second output under another name, a missing or
# malformed threshold, or ood_output metadata without the output are refused
# at load with a message.  The default model (when ../shared/data and
# python3-skimage's sample images exist): AUROC >= 0.95 between the `val`
# images and ordinary photos/drawings, <= 3 % of `val` rejected, all through
# the C decoder and engine.
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
M=${DEFAULT_MODEL:-models/dermal-ham10000.onnx}
D=../shared/data/ham10000
SK=/usr/lib/python3/dist-packages/skimage/data
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
no() { fail=$((fail + 1)); echo "FAIL $1"; }
sk() { skip=$((skip + 1)); echo "SKIP $1"; }
if ! $PY -c 'import onnx, numpy, PIL' 2>/dev/null; then
  echo "SKIP: python3-onnx/numpy/pil missing"; echo "test_ood: 0 passed, 0 failed, 1 skipped"; exit 0
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
C=tests/integration/check_ood.py
$PY $C models "$T" || { echo "FAIL fixtures"; echo "test_ood: 0 passed, 1 failed"; exit 1; }

"$DERMAL" predict --model "$T/ood.onnx" --json "$T"/imgs/*.png > "$T/pred.jsonl" 2>"$T/err" &&
  $PY $C check "$T/pred.jsonl" && ok "predict: in_distribution == (ood_score <= threshold), both outcomes" ||
  no "predict OOD keys: $(head -c 300 "$T/err")"
"$DERMAL" predict --model "$T/ood.onnx" "$T"/imgs/*.png 2>/dev/null | grep -q "NOT IN DISTRIBUTION" &&
  ok "predict text says NOT IN DISTRIBUTION" || no "predict text"
"$DERMAL" predict --model "$T/ood.onnx" --json --gradcam "$T/cams" "$T"/imgs/*.png > "$T/cam.jsonl" 2>/dev/null &&
  $PY - "$T/pred.jsonl" "$T/cam.jsonl" <<'PYEOF' && ok "with Grad-CAM the OOD score is the same" || no "OOD score with Grad-CAM"
import json, sys
a = [json.loads(s) for s in open(sys.argv[1])]
b = [json.loads(s) for s in open(sys.argv[2])]
assert len(a) == len(b) == 12
for x, y in zip(a, b):
    assert x["ood_score"] == y["ood_score"] and x["in_distribution"] == y["in_distribution"], (x, y)
PYEOF
ls "$T/imgs" | sed 's/\.png$//' | awk 'BEGIN{print "image_id,dx"} {print $1",nv"}' > "$T/labels.csv"
"$DERMAL" eval --model "$T/ood.onnx" --images "$T/imgs" --labels "$T/labels.csv" --json > "$T/eval.json" 2>/dev/null &&
  $PY - "$T/eval.json" "$T/pred.jsonl" <<'PYEOF' && ok "eval --json counts ood_rejected" || no "eval ood_rejected"
import json, sys
e = json.load(open(sys.argv[1]))
p = [json.loads(s) for s in open(sys.argv[2])]
out = sum(not d["in_distribution"] for d in p)
assert e["ood_rejected"] == out and abs(e["ood_rejected_rate"] - out / len(p)) < 1e-6, (e, out)
assert e["ood_threshold"] == 0.5, e
PYEOF
"$DERMAL" eval --model "$T/ood.onnx" --images "$T/imgs" --labels "$T/labels.csv" 2>/dev/null | grep -q "above the OOD threshold" &&
  ok "eval text reports the OOD rejections" || no "eval text"
$PY tests/integration/make_predict_fixtures.py "$T/plain" >/dev/null &&
  "$DERMAL" predict --model "$T/plain/ham7.onnx" --json "$T"/imgs/img00.png > "$T/plain.jsonl" &&
  $PY $C null "$T/plain.jsonl" && ok "no OOD output: the three keys are null" || no "null keys"
refuse() {  # model, expected message fragment, description
  if "$DERMAL" predict --model "$1" "$T/imgs/img00.png" >/dev/null 2>"$T/err"; then
    no "$3 accepted"
  elif grep -q "$2" "$T/err"; then ok "$3 refused: $(head -c 120 "$T/err")"
  else no "$3: $(cat "$T/err")"; fi
}
refuse "$T/ood_noth.onnx" "needs metadata ood_threshold" "OOD output without threshold"
refuse "$T/ood_badth.onnx" "ood_threshold" "malformed threshold"
refuse "$T/ood_name.onnx" "is not the OOD score" "second output under another name"
refuse "$T/ood_meta.onnx" "ood_output 'ood_score' but the graph has one output" "ood_output without the output"

# the default model
if [ ! -f "$M" ] || [ ! -d "$D" ]; then
  sk "default model quality: $M or $D missing"
elif ! "$DERMAL" inspect "$M" | grep -q "ood_threshold"; then
  no "default model has no OOD score (tools/ood.py)"
elif [ ! -d "$SK" ]; then
  sk "default model quality: $SK missing (python3-skimage; scripts/install-deps)"
else
  $PY $C lists ../shared/data "$SK" "$T"
  xargs "$DERMAL" predict --model "$M" --json < "$T/val.txt" > "$T/val.jsonl" 2>/dev/null
  xargs "$DERMAL" predict --model "$M" --json < "$T/neg.txt" > "$T/neg.jsonl" 2>/dev/null
  if $PY $C quality "$T/val.jsonl" "$T/neg.jsonl" > "$T/q" 2>&1; then ok "$(tail -1 "$T/q")"
  else no "default model OOD quality: $(tail -3 "$T/q")"; fi
fi
echo "test_ood: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
