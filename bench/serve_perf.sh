#!/usr/bin/env bash
# serve_perf.sh: the service targets of issue 4 ("Performance"), measured side
# by side in one run, printed as one table with PASS/FAIL per target:
#   1. cold start: exec of `dermal serve` (PRELOAD_MODEL=true) -> first 200 of
#      POST /upload with a real 200x150 HAM10000 JPEG, median of N runs
#      (<= 150 ms); anchor: /usr/bin/python3 exec -> import torch, torchvision
#      -> build mobilenet_v2 -> first inference, median of TORCH_N runs
#   2. RSS (/proc/PID/status VmRSS and /health?verbose=1 rss_mb) after start
#      with the model loaded (<= 40 MB); after REQUESTS uploads, sampled every
#      STEP (<= 60 MB, least-squares slope <= SLOPE_MAX MB per 1000 requests)
#   3. wrk -cCONCURRENCY -dDURATION with bench/upload.lua (multipart, rotating
#      NIMG JPEGs): 2xx / 503 / other non-2xx counts (other must be 0), p50/p99,
#      server CPU-seconds (utime+stime of /proc/PID/stat) per 2xx request vs
#      `dermal bench MODEL --json` CPU per inference (<= 1.15x). The bench CPU
#      is the rusage of two bench processes, --iters ITERS and --iters 1 (both
#      --warmup 0): (cpu(ITERS) - cpu(1)) / (ITERS - 1), so load and the first
#      run cancel out.
#
#   bash bench/serve_perf.sh                      # ~3 minutes
#   DURATION=5 N=3 bash bench/serve_perf.sh       # quick check
#
# Environment (all optional):
#   DERMAL=path      binary (default build/dermal)
#   MODEL=path       default models/dermal-ham10000.onnx, else
#                    build/models/mobilenet_v2.opset13.onnx (exported with
#                    tools/export_torchvision.py when missing; no dermal
#                    metadata, so default preprocessing - fine for timing)
#   IMAGES=dir       JPEGs (default ../shared/data/ham10000/images); NIMG=8 used
#   N=10             cold starts;  TORCH_N=3 torch anchor runs (SKIP_TORCH=1: none)
#   REQUESTS=1000 STEP=250   RSS phase;  SLOPE_MAX=1.0 MB per 1000 requests
#   DURATION=30 CONCURRENCY=8 WRK_THREADS=2   wrk phase
#   ITERS=200        dermal bench iterations (CPU per inference)
#   THREADS=1        server THREADS and bench --threads; WORKERS, QUEUE_SIZE,
#                    ENABLE_GRADCAM, BACKEND ... pass through to the server
#   DATABASE_URL     default none (history store off)
#   TOP=k            send the form field top=k (default: unset, all classes;
#                    TOP=7 makes a 1000-class stand-in answer like the 7-class model)
#   PORT=18766  OUT=build/bench  STRICT=1 (exit 1 on FAIL)
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PY=/usr/bin/python3
HELP="$HERE/serve_perf.py"
DERMAL="${DERMAL:-$ROOT/build/dermal}"
N="${N:-10}"
TORCH_N="${TORCH_N:-3}"
[ "${SKIP_TORCH:-0}" = 1 ] && TORCH_N=0
REQUESTS="${REQUESTS:-1000}"
STEP="${STEP:-250}"
DURATION="${DURATION:-30}"
CONCURRENCY="${CONCURRENCY:-8}"
WRK_THREADS="${WRK_THREADS:-2}"
ITERS="${ITERS:-200}"
THREADS="${THREADS:-1}"
PORT="${PORT:-18766}"
NIMG="${NIMG:-8}"
IMAGES="${IMAGES:-$ROOT/../shared/data/ham10000/images}"
OUT="${OUT:-$ROOT/build/bench}"
export SLOPE_MAX="${SLOPE_MAX:-1.0}"

log() { printf '%s\n' "$*" >&2; }
die() { log "serve_perf: $*"; exit 2; }

command -v wrk >/dev/null || die "wrk missing (apt-get install wrk)"
[ -x "$DERMAL" ] || die "$DERMAL missing (make -j2 all, or DERMAL=path)"
"$DERMAL" serve --help >/dev/null 2>&1 || die "$DERMAL has no serve command"
[ "$CONCURRENCY" -ge "$WRK_THREADS" ] || WRK_THREADS=$CONCURRENCY

# --- model ----------------------------------------------------------------
if [ -z "${MODEL:-}" ]; then
  if [ -f "$ROOT/models/dermal-ham10000.onnx" ]; then
    MODEL="$ROOT/models/dermal-ham10000.onnx"
  else
    MODEL="$ROOT/build/models/mobilenet_v2.opset13.onnx"
    if [ ! -f "$MODEL" ]; then
      log "models/dermal-ham10000.onnx missing; exporting mobilenet_v2 into build/models ..."
      "$PY" "$ROOT/tools/export_torchvision.py" --out "$ROOT/build/models" --opset 13 \
        --models mobilenet_v2 >&2 || die "export failed"
    fi
  fi
fi
[ -f "$MODEL" ] || die "model $MODEL not found"

# --- images -----------------------------------------------------------------
mapfile -t IMGS < <(ls "$IMAGES"/*.jpg 2>/dev/null | head -n "$NIMG")
[ "${#IMGS[@]}" -gt 0 ] || die "no JPEGs in $IMAGES (set IMAGES=dir)"
IMG0="${IMGS[0]}"

mkdir -p "$OUT" || exit 2
STAMP="$(date +%Y%m%d-%H%M%S)"
RES="$OUT/serve_perf-$STAMP.txt"
export SERVE_LOG="$OUT/serve_perf-$STAMP.server.log"
: >"$RES"
: >"$SERVE_LOG"

# server configuration: environment of `dermal serve`
export MODEL_PATH="$MODEL" PORT HOST=127.0.0.1 THREADS
export PRELOAD_MODEL="${PRELOAD_MODEL:-true}"
export DATABASE_URL="${DATABASE_URL:-none}"

SRV=
cleanup() { [ -n "$SRV" ] && kill -TERM "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# rec PREFIX CMD...: run CMD, append its "key value" lines as "PREFIX.key value"
rec() { local p="$1"; shift; "$@" | sed "s/^/$p./" | tee -a "$RES" >/dev/null; }

dims="$("$PY" -c 'import sys; from PIL import Image; print("%dx%d" % Image.open(sys.argv[1]).size)' "$IMG0" 2>/dev/null || echo '?')"
log "model $MODEL ($(( $(stat -c %s "$MODEL") / 1024 )) KiB), ${#IMGS[@]} JPEGs from $IMAGES ($dims),"
log "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), PRELOAD_MODEL=$PRELOAD_MODEL THREADS=$THREADS WORKERS=${WORKERS:-default}"
echo "config model=$MODEL images=${#IMGS[@]} load=$(cut -d' ' -f1 /proc/loadavg)" >>"$RES"

# --- 1. cold start, interleaved with the PyTorch anchor ----------------------
for ((i = 0; i < N || i < TORCH_N; i++)); do
  if ((i < N)); then
    rec cold "$PY" "$HELP" coldstart "$DERMAL" "$PORT" "$IMG0"
    log "cold start $((i + 1))/$N: $(grep '^cold\.' "$RES" | tail -n 4 | tr '\n' ' ')"
  fi
  if ((i < TORCH_N)); then
    rec torch "$PY" "$HELP" torch "$IMG0"
    log "torch anchor $((i + 1))/$TORCH_N: $(grep '^torch\.' "$RES" | tail -n 4 | tr '\n' ' ')"
  fi
done

# --- 2./3. one long-running server: RSS, 1000 requests, wrk ------------------
"$DERMAL" serve >>"$SERVE_LOG" 2>&1 &
SRV=$!
ready=0
for _ in $(seq 1200); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && { ready=1; break; }
  kill -0 "$SRV" 2>/dev/null || break
  sleep 0.05
done
if [ "$ready" = 1 ]; then
  rec ready "$PY" "$HELP" stat "$SRV" "$PORT"
  log "ready: $(grep '^ready\.' "$RES" | tr '\n' ' ')"
  log "RSS phase: $REQUESTS uploads at concurrency $CONCURRENCY ..."
  rec rss "$PY" "$HELP" requests "$PORT" "$SRV" "$REQUESTS" "$STEP" "$CONCURRENCY" "${IMGS[@]}"
  log "  $(grep '^rss\.' "$RES" | grep -v health | tr '\n' ' ')"

  log "wrk -t$WRK_THREADS -c$CONCURRENCY -d${DURATION}s POST /upload ..."
  cpu0="$("$PY" "$HELP" stat "$SRV" | awk '/^cpu_s/ {print $2}')"
  wrk -t"$WRK_THREADS" -c"$CONCURRENCY" -d"${DURATION}s" --timeout 30s --latency \
    -s "$HERE/upload.lua" "http://127.0.0.1:$PORT/upload" -- "${IMGS[@]}" \
    >"$OUT/serve_perf-$STAMP.wrk.txt" 2>&1
  cpu1="$("$PY" "$HELP" stat "$SRV" | awk '/^cpu_s/ {print $2}')"
  if grep -q '^RESULT ' "$OUT/serve_perf-$STAMP.wrk.txt"; then
    {
      echo "wrk.concurrency $CONCURRENCY"
      awk '/^RESULT / {for (i = 2; i <= NF; i++) {split($i, kv, "="); print "wrk." kv[1], kv[2]}}
           /^STATUS / {print "wrk.http_" $2, $3}' "$OUT/serve_perf-$STAMP.wrk.txt"
      awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {printf "wrk.cpu_s %.4f\n", b - a}'
    } >>"$RES"
  else
    echo "wrk.error wrk_failed_see_$OUT/serve_perf-$STAMP.wrk.txt" >>"$RES"
  fi
  log "  $(grep -E '^RESULT|^STATUS' "$OUT/serve_perf-$STAMP.wrk.txt" | tr '\n' ' ')"
  "$PY" "$HELP" stat "$SRV" | awk '/^rss_mb/ {print "wrk.rss_after_mb", $2}' >>"$RES"
else
  echo "ready.error server_not_ready" >>"$RES"
  log "server did not become ready; see $SERVE_LOG"
fi
cleanup
SRV=

# --- dermal bench: CPU per inference, same model -----------------------------
log "dermal bench --threads $THREADS --iters $ITERS (and --iters 1) ..."
echo "bench.iters $ITERS" >>"$RES"
rec bench "$PY" "$HELP" cpu "$DERMAL" bench "$MODEL" --threads "$THREADS" --iters "$ITERS" --warmup 0 --json
rec bench1 "$PY" "$HELP" cpu "$DERMAL" bench "$MODEL" --threads "$THREADS" --iters 1 --warmup 0 --json

# --- table --------------------------------------------------------------------
echo
echo "dermal serve performance ($(basename "$MODEL"), $(nproc) cores, load average at start $(grep '^config' "$RES" | sed 's/.*load=//'))"
"$PY" "$HELP" report "$RES"
rc=$?
log "raw results: $RES (server log ${SERVE_LOG##*/}, wrk output serve_perf-$STAMP.wrk.txt)"
if [ "$rc" -eq 3 ]; then
  [ "${STRICT:-0}" = 1 ] && exit 1
  exit 0
fi
exit "$rc"
