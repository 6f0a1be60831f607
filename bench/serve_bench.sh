#!/bin/bash
# serve_bench.sh: throughput and latency of `dermal serve` (POST
# /api/v1/predict with a raw JPEG body, wrk at concurrency C) alone and with a
# CPU hog (one `yes > /dev/null` per core) running beside it, for two
# configurations:
#   default   WORKERS=cores THREADS=1 (request-level parallelism: every
#             OpenMP team has one thread, no OpenMP worker exists to spin;
#             with THREADS > 1 `dermal serve` sets OMP_WAIT_POLICY=PASSIVE
#             by re-exec)
#   spinning  WORKERS=1 THREADS=cores OMP_WAIT_POLICY=ACTIVE (what a
#             "use every core for each inference" setup does by default)
# and prints, per configuration, req/s and p50/p99 with and without the hog
# and the ratio hog/alone.  Graceful degradation: the default keeps roughly
# its share of the CPU (ratio near 1/2 with one hog per core), the spinning
# setup collapses.
#
# usage: bench/serve_bench.sh [BUILD_DIR]   env: MODEL, IMAGE, DURATION (10),
#        CONCURRENCY (8), PORT (18765)
set -u
O=${1:-build}
cd "$(dirname "$0")/.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
DURATION=${DURATION:-10}
C=${CONCURRENCY:-8}
PORT=${PORT:-18765}
NCPU=$(nproc)
command -v wrk >/dev/null || { echo "serve_bench: wrk missing (apt-get install wrk)"; exit 2; }
"$DERMAL" serve --help >/dev/null 2>&1 || { echo "serve_bench: $DERMAL has no serve command"; exit 2; }
T=$(mktemp -d)
HOGS=()
SRV=
cleanup() {
  for p in "${HOGS[@]}"; do kill "$p" 2>/dev/null; done
  [ -n "$SRV" ] && kill "$SRV" 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT

if [ -z "${MODEL:-}" ]; then
  for m in models/dermal-ham10000.onnx build/train/smoke/dermal-smoke.onnx \
           build/models/mobilenet_v3_small.opset13.onnx; do
    [ -f "$m" ] && { MODEL=$m; break; }
  done
fi
if [ -z "${MODEL:-}" ]; then
  /usr/bin/python3 tests/integration/make_server_models.py "$T" >/dev/null
  MODEL=$T/ham7.onnx
fi
if [ -z "${IMAGE:-}" ]; then
  IMAGE=$(ls ../shared/data/ham10000/images/*.jpg 2>/dev/null | head -n 1)
  if [ -z "$IMAGE" ]; then
    [ -f "$T/lesion.jpg" ] || /usr/bin/python3 tests/integration/make_server_models.py "$T" >/dev/null
    IMAGE=$T/lesion.jpg
  fi
fi
cat > "$T/post.lua" <<EOF
local f = assert(io.open("$IMAGE", "rb"))
wrk.method = "POST"
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "image/jpeg"
EOF
echo "model $MODEL, image $IMAGE ($(stat -c %s "$IMAGE") bytes), $NCPU cores, wrk -c$C -d${DURATION}s"

start_server() { # env assignments...
  env "$@" PORT=$PORT HOST=127.0.0.1 MODEL_PATH="$MODEL" DATABASE_URL=none \
    QUEUE_SIZE=64 "$DERMAL" serve >"$T/server.log" 2>&1 &
  SRV=$!
  for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "server did not become ready:"; cat "$T/server.log"; exit 1
}
stop_server() { kill -TERM "$SRV"; wait "$SRV" 2>/dev/null; SRV=; }

# Prints "rps p50_ms p99_ms non2xx"
measure() {
  wrk -t2 -c"$C" -d"${DURATION}s" --latency -s "$T/post.lua" \
    "http://127.0.0.1:$PORT/api/v1/predict" >"$T/wrk.txt" 2>&1
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                     if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Non-2xx/ { bad = $NF }
    END { printf "%.1f %.2f %.2f %d\n", rps, p50, p99, bad + 0 }' "$T/wrk.txt"
}

hog_on() { for _ in $(seq "$NCPU"); do yes >/dev/null & HOGS+=($!); done; }
hog_off() { for p in "${HOGS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; HOGS=(); }

run_config() { # name, env assignments...
  local name=$1; shift
  start_server "$@"
  curl -s --data-binary @"$IMAGE" "http://127.0.0.1:$PORT/api/v1/predict" >/dev/null # warm
  read -r r1 a1 b1 x1 < <(measure)
  hog_on
  read -r r2 a2 b2 x2 < <(measure)
  hog_off
  stop_server
  printf '%-9s alone: %8.1f req/s p50 %7.2f ms p99 %7.2f ms | hog: %8.1f req/s p50 %7.2f ms p99 %8.2f ms | hog/alone %.2f | non-2xx %d/%d\n' \
    "$name" "$r1" "$a1" "$b1" "$r2" "$a2" "$b2" "$(echo "$r2 $r1" | awk '{print ($2 > 0) ? $1 / $2 : 0}')" "$x1" "$x2"
}

run_config default WORKERS="$NCPU" THREADS=1
run_config spinning WORKERS=1 THREADS="$NCPU" OMP_WAIT_POLICY=ACTIVE
