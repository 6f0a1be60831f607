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
  p=$(echo "$line" | sed -E 's/.*[^0-9]?([0-9]+) passed.*/\1/')
  x=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  s=$(echo "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || echo 0)
  pass=$((pass + p)); fail=$((fail + x)); skip=$((skip + ${s:-0}))
  if [ "$st" -ne 0 ] && [ "$x" -eq 0 ]; then
    echo "FAIL   $name: exit status $st"; fail=$((fail + 1))
  fi
  printf '%-28s %s\n' "$name" "$line"
}

run() { # name, command...
  local name=$1; shift
  local f="$log/$name.log"
  "$@" >"$f" 2>&1
  local st=$?
  [ -n "${VERBOSE:-}" ] && cat "$f"
  tally "$name" "$f" "$st"
  if grep -qE '^(FAIL|not ok)' "$f"; then grep -E '^(FAIL|not ok)' "$f" | head -n 20; fi
}

for t in "$O"/tests/test_*; do
  [ -x "$t" ] || continue
  run "$(basename "$t")" "$t"
done
run conformance "$O/tests/conformance" --report "$O/conformance-report.tsv"
for t in tests/integration/test_*.sh; do
  run "$(basename "$t" .sh)" bash "$t" "$O"
done
echo "TOTAL: $pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
