#!/usr/bin/env bash
# int8 speed, side by side in one run (issue 6): for each model, dermal fp32,
# dermal int8 (the QDQ file) and ONNX Runtime on the same QDQ file, at 1 and
# 2 threads, with oneDNN free to use the CPU's best ISA and limited to AVX2
# (ONEDNN_MAX_CPU_ISA=AVX2, the ISA of typical free-tier hosts).
#
#   bash bench/quant_bench.sh
#
# Models (MODELS, default "default resnet50"):
#   default   models/dermal-ham10000.onnx and models/dermal-ham10000.int8.onnx
#             (when that is not shipped: `dermal quantize` with its defaults,
#             200 calibration images, as tests/integration/test_default_model.sh)
#   resnet50  build/models/resnet50.opset13.onnx (tools/export_torchvision.py,
#             random weights) quantized with --fp32-layers none on 16 images
# Calibration images: every 37th train image of ../shared/data/ham10000 (or
# CALIB=dir).  Quantized files are cached in $OUT/quant/.
# Environment: DERMAL, MODELS, THREADS ("1 2"), ISAS ("native AVX2"),
# ITERS (100), WARMUP (10), ROUNDS (3; the runs rotate, the table shows the
# median p50), OUT (build/bench), SKIP_ORT=1.
# Targets (issue 6): int8 <= 0.8 x ORT int8; int8 <= 0.5 x fp32 (default),
# <= 0.35 x fp32 (resnet50); int8 file <= 30 % of fp32.
set -u -o pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY=/usr/bin/python3
DERMAL="${DERMAL:-$ROOT/build/dermal}"
MODELS="${MODELS:-default resnet50}"
THREADS="${THREADS:-1 2}"
ISAS="${ISAS:-native AVX2}"
ITERS="${ITERS:-100}"
WARMUP="${WARMUP:-10}"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-$ROOT/build/bench}"
DATA="$ROOT/../shared/data/ham10000"
log() { printf '%s\n' "$*" >&2; }
. "$HERE/machine_state.sh"
MEM_BEFORE="$(machine_state "$ROOT")"

[ -x "$DERMAL" ] || { log "dermal not built: $DERMAL"; exit 2; }
mkdir -p "$OUT/quant" || exit 1
STAMP="$(date +%Y%m%d-%H%M%S)"
RES="$OUT/quant-$STAMP.tsv"
ERRLOG="$OUT/quant-$STAMP.stderr.log"
: >"$RES"
: >"$ERRLOG"

calib_dir() {
  if [ -n "${CALIB:-}" ]; then echo "$CALIB"; return 0; fi
  [ -f "$DATA/split.csv" ] || return 1
  local d="$OUT/quant/calib"
  if [ ! -d "$d" ]; then
    mkdir -p "$d"
    tr -d '\r' <"$DATA/split.csv" | awk -F, 'NR>1 && $4=="train"{print $1}' | awk 'NR%37==1' |
      while read -r id; do ln -s "$(cd "$DATA/images" && pwd)/$id.jpg" "$d/$id.jpg"; done
  fi
  echo "$d"
}

# fp32 and int8 file of a model name -> "FP32 INT8" on stdout
files() {
  case "$1" in
    default)
      local f="$ROOT/models/dermal-ham10000.onnx" q="$ROOT/models/dermal-ham10000.int8.onnx"
      if [ ! -f "$q" ]; then
        q="$OUT/quant/dermal-ham10000.int8.onnx"
        if [ ! -f "$q" ]; then
          local c; c="$(calib_dir)" || { log "default: no int8 file and no calibration images"; return 1; }
          log "default: quantizing (dermal quantize defaults, 200 images) ..."
          "$DERMAL" quantize "$f" --calib "$c" --calib-count 200 --threads 2 -o "$q" >>"$ERRLOG" 2>&1 || return 1
        fi
      fi
      echo "$f $q" ;;
    *)
      local f="$ROOT/build/models/$1.opset13.onnx" q="$OUT/quant/$1.int8.onnx"
      if [ ! -f "$f" ]; then
        "$PY" "$ROOT/tools/export_torchvision.py" --out "$ROOT/build/models" --opset 13 --models "$1" >>"$ERRLOG" 2>&1 || return 1
      fi
      if [ ! -f "$q" ]; then
        local c; c="$(calib_dir)" || { log "$1: no calibration images"; return 1; }
        log "$1: quantizing (--fp32-layers none, 16 images) ..."
        "$DERMAL" quantize "$f" --calib "$c" --calib-count 16 --fp32-layers none --no-verify \
          --threads 2 -o "$q" >>"$ERRLOG" 2>&1 || return 1
      fi
      echo "$f $q" ;;
  esac
}

have_ort=0
if [ "${SKIP_ORT:-0}" != 1 ] && command -v node >/dev/null 2>&1 && [ -d "$HERE/node_modules/onnxruntime-node" ]; then
  have_ort=1
else
  log "onnxruntime: not used (SKIP_ORT=1, or no node / bench/node_modules: cd bench && npm ci --ignore-scripts)"
fi

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$RES"; }

run() { # key model threads file [isa]
  local key="$1" m="$2" t="$3" f="$4" isa="${5:-native}" line
  if [ "$key" = ort.int8 ]; then
    line="$(node "$HERE/ort_bench.js" "$f" --threads "$t" --iters "$ITERS" --warmup "$WARMUP" 2>>"$ERRLOG" | grep '^{' | tail -n 1)"
  elif [ "$isa" = native ]; then
    line="$("$DERMAL" bench "$f" --threads "$t" --iters "$ITERS" --warmup "$WARMUP" --json 2>>"$ERRLOG" | grep '^{' | tail -n 1)"
  else
    line="$(ONEDNN_MAX_CPU_ISA="$isa" "$DERMAL" bench "$f" --threads "$t" --iters "$ITERS" --warmup "$WARMUP" --json 2>>"$ERRLOG" | grep '^{' | tail -n 1)"
  fi
  [ -n "$line" ] || line="ERROR"
  log "  $key $m t=$t: $line"
  record "$key" "$m" "$t" "$(stat -c %s "$f")" "$line"
}

for m in $MODELS; do
  fq="$(files "$m")" || { log "$m: skipped (see $ERRLOG)"; continue; }
  f="${fq% *}" q="${fq#* }"
  for t in $THREADS; do
    for ((r = 0; r < ROUNDS; r++)); do
      log "$m threads=$t round $((r + 1))/$ROUNDS"
      jobs=()
      for isa in $ISAS; do
        k=$([ "$isa" = native ] && echo "" || echo ".$isa")
        jobs+=("dermal.fp32$k|$f|$isa" "dermal.int8$k|$q|$isa")
      done
      [ "$have_ort" = 1 ] && jobs+=("ort.int8|$q|native")
      n=${#jobs[@]}
      for ((k = 0; k < n; k++)); do
        IFS='|' read -r key file isa <<<"${jobs[$(((k + r) % n))]}"
        run "$key" "$m" "$t" "$file" "$isa"
      done
    done
  done
done

"$PY" - "$RES" "$ITERS" "$ROUNDS" <<'PYEOF'
import json, statistics, sys
res, iters, rounds = sys.argv[1], sys.argv[2], sys.argv[3]
p50, size = {}, {}
for raw in open(res):
    key, m, t, sz, js = raw.rstrip("\n").split("\t", 4)
    if js.startswith("{"):
        p50.setdefault((m, t), {}).setdefault(key, []).append(json.loads(js)["p50_ms"])
    size[(m, key.split(".")[1])] = int(sz)
med = lambda v: statistics.median(v) if v else None
fmt = lambda v: "-" if v is None else "%.3f" % v
target = {"default": 0.5, "resnet50": 0.35}
print("int8 benchmark: %s iters, median p50 of %s rounds, ms" % (iters, rounds))
hdr = ["model", "thr", "fp32", "int8", "ORT int8", "int8/fp32", "int8/ORT", "fp32 AVX2", "int8 AVX2", "int8/fp32 AVX2", "int8 AVX2/ORT"]
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
ok = True
checked = 0  # ratios the targets apply to (native ISA only)
for (m, t), c in sorted(p50.items()):
    g = lambda k: med(c.get(k, []))
    f, q, o, fa, qa = g("dermal.fp32"), g("dermal.int8"), g("ort.int8"), g("dermal.fp32.AVX2"), g("dermal.int8.AVX2")
    r = lambda a, b: None if a is None or b is None else a / b
    row = [m, t, fmt(f), fmt(q), fmt(o), fmt(r(q, f)), fmt(r(q, o)), fmt(fa), fmt(qa), fmt(r(qa, fa)), fmt(r(qa, o))]
    print("| " + " | ".join(row) + " |")
    for v, bar in ((r(q, f), target.get(m, 0.5)), (r(q, o), 0.8)):
        if v is not None:
            checked += 1
            ok &= v <= bar
for m in sorted({m for m, _ in p50}):
    if (m, "fp32") in size and (m, "int8") in size:
        s = size[(m, "int8")] / size[(m, "fp32")]
        print("%s: int8 file %.1f %% of fp32 (target <= 30 %%)" % (m, 100 * s))
        ok &= s <= 0.30
verdict = "PASS" if ok else "FAIL"
if not checked:
    verdict = "none (no native-ISA ratios measured; the targets do not apply to AVX2)"
print("targets: int8/ORT <= 0.80; int8/fp32 <= 0.50 (default), <= 0.35 (resnet50); verdict: %s" % verdict)
PYEOF
machine_report "$ROOT" "$MEM_BEFORE"
log "raw results: $RES"
