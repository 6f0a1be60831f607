#!/bin/bash
# `dermal predict` and `dermal eval` end to end on a generated 7-class model
# and PIL-made images: probabilities equal softmax of the model run on a
# tensor preprocessed by PIL+numpy (so decode + resize + normalisation match
# PIL), eval's metrics equal those recomputed from predict's answers,
# unreadable/missing images are skipped and counted, --plot writes a PNG.
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
no() { fail=$((fail + 1)); echo "FAIL $1"; }
if ! $PY -c 'import onnx, numpy, PIL' 2>/dev/null; then
  echo "SKIP: python3-onnx/numpy/pil missing"; echo "test_predict: 0 passed, 0 failed, 1 skipped"; exit 0
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
$PY tests/integration/make_predict_fixtures.py "$T" || { echo "FAIL fixtures"; exit 1; }
M=$T/ham7.onnx
"$DERMAL" predict --help | grep -q "usage: dermal predict" && ok "predict --help" || no "predict --help"
"$DERMAL" eval --help | grep -q "usage: dermal eval" && ok "eval --help" || no "eval --help"
"$DERMAL" predict --model "$M" --json --top 3 "$T"/imgs/img*.* "$T/imgs/broken.jpg" > "$T/pred.jsonl" 2>"$T/err"
[ $? -eq 1 ] && ok "predict exits 1 when an image fails" || no "predict exit status"
[ "$(wc -l < "$T/pred.jsonl")" -eq 25 ] && ok "one JSON line per image" || no "line count $(wc -l < "$T/pred.jsonl")"
grep -q '"image":"[^"]*broken.jpg","error":' "$T/pred.jsonl" && ok "corrupt image reported as error" || no "broken image line"
"$DERMAL" predict "$M" "$T/imgs/img01.jpg" | grep -q "img01.jpg: " && ok "first .onnx positional is the model" || no "positional model"
mkdir -p "$T/np"
$PY tests/integration/check_predict.py probs "$T/imgs" "$T/np" || no "preprocessing reference"
for x in "$T"/np/img*.npy; do
  case "$x" in *.out.npy) continue;; esac
  "$DERMAL" run "$M" --input "$x" --output "${x%.npy}.out.npy" --backend ref || no "run $x"
done
$PY tests/integration/check_predict.py compare "$T/pred.jsonl" "$T/np" && ok "probabilities match PIL+numpy+ref" || no "probabilities"
"$DERMAL" eval --model "$M" --images "$T/imgs" --labels "$T/labels.csv" --json --plot "$T/conf.png" > "$T/eval.json" 2>"$T/eval.err"
[ $? -eq 0 ] && ok "eval runs despite skipped images" || no "eval exit: $(cat "$T/eval.err")"
$PY tests/integration/check_predict.py eval "$T/pred.jsonl" "$T/eval.json" "$T/labels.csv" && ok "eval metrics" || no "eval metrics"
$PY -c "from PIL import Image; im = Image.open('$T/conf.png'); assert im.size[0] > 300, im.size" && ok "confusion PNG" || no "confusion PNG"
"$DERMAL" eval --model "$M" --images "$T/imgs" --labels "$T/labels.csv" | grep -q "balanced accuracy" && ok "eval text" || no "eval text"
"$DERMAL" eval --model "$M" --images "$T/imgs" 2>/dev/null; [ $? -eq 2 ] && ok "eval without --labels is a usage error" || no "eval usage"
"$DERMAL" eval --model "$M" --compare "$M" --images "$T/imgs" --labels "$T/labels.csv" --json 2>/dev/null |
  $PY -c "
import json, sys
d = json.load(sys.stdin); c = d['compare']
assert c['top1_agreement'] == 1.0 and c['balanced_accuracy_delta'] == 0, c
assert c['confusion'] == d['confusion'] and c['n'] == d['n'], c" && ok "eval --compare (a model against itself)" || no "eval --compare"
echo "test_predict: $pass passed, $fail failed"
[ $fail -eq 0 ]
