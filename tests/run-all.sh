#!/bin/bash
# Runs every dermal test and prints one combined summary line at the end:
#   TOTAL: N passed, N failed, N skipped
# Each test program/script prints its own `... N passed, N failed[, N skipped]`
# line; this script sums them.  A test binary that crashes or exits non-zero
# without reporting counts as one failure.
#
# usage: tests/run-all.sh [BUILD_DIR]   (default build)
#   ALL_ARCHS=1 also runs the parity tests on all 13 torchvision archs.
set -u
O=${1:-build}
cd "$(dirname "$0")/.." || exit 2
export DERMAL="$PWD/$O/dermal"
export PY=/usr/bin/python3
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
pass=0 fail=0 skip=0

tally() { # name, logfile, exit status
  local name=$1 f=$2 st=$3 line p x s
  line=$(grep -E '[0-9]+ passed, [0-9]+ failed' "$f" | tail -n 1)
  if [ -z "$line" ]; then
    echo "FAIL   $name: no summary line (exit $st)"; tail -n 20 "$f"
    fail=$((fail + 1)); return
  fi
  p=$(echo "$line" | grep -oE '[0-9]+ passed' | grep -oE '[0-9]+')
  x=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+')
  s=$(echo "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || echo 0)
  pass=$((pass + p)); fail=$((fail + x)); skip=$((skip + ${s:-0}))
  if [ "$st" -ne 0 ] && [ "$x" -eq 0 ]; then
    echo "FAIL   $name: exit status $st"; fail=$((fail + 1))
  fi
  printf '%-28s %s\n' "$name" "$line"
}

run() { # name, command...
  local name=$1; shift
  echo "running $name" >&2
  local f="$log/$name.log"
  "$@" >"$f" 2>&1
  local st=$?
  [ -n "${VERBOSE:-}" ] && cat "$f"
  tally "$name" "$f" "$st"
  if grep -qE '^(FAIL|not ok)' "$f"; then grep -E '^(FAIL|not ok)' "$f" | head -n 20; fi
}

# The unit tests that compare backends on real networks (test_onednn) read
# the torchvision exports in build/models: make them first (cached; ~30 s
# the first time; skipped without Debian's python3-torch).
if $PY -c 'import torch, torchvision, onnx' 2>/dev/null; then
  $PY tools/export_torchvision.py --out build/models --opset 13 >/dev/null 2>&1 ||
    echo "warning: torchvision export failed; model-based unit checks will skip" >&2
fi
for t in "$O"/tests/test_*; do
  [ -x "$t" ] || continue
  run "$(basename "$t")" "$t"
done
# oneDNN limited to AVX2 (the ISA of typical free-tier hosts): blocked
# activation layouts (nChw8c) instead of channels-last, other kernels
ONEDNN_MAX_CPU_ISA=AVX2 run test_onednn.avx2 "$O/tests/test_onednn"
run conformance "$O/tests/conformance" --report "$O/conformance-report.tsv"
for t in tests/integration/test_*.sh; do
  run "$(basename "$t" .sh)" bash "$t" "$O"
done
# Sanitizer variants (built by `make check`): ASan+UBSan over the unit
# tests, the conformance runner and the CLI tests; TSan over concurrent
# sessions sharing one engine.
if [ -x build-asan/dermal ]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  for t in build-asan/tests/test_*; do
    [ -x "$t" ] || continue
    run "asan.$(basename "$t")" "$t"
  done
  run asan.conformance build-asan/tests/conformance
  DERMAL="$PWD/build-asan/dermal" run asan.test_cli bash tests/integration/test_cli.sh build-asan
  DERMAL="$PWD/build-asan/dermal" run asan.test_server bash tests/integration/test_server.sh build-asan
fi
if [ -x build-tsan/tests/test_engine ]; then
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" run tsan.test_engine build-tsan/tests/test_engine
fi
echo "TOTAL: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
