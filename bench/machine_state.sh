# Sourced by the benchmark scripts: machine_state prints build/machine's
# memory-latency line (bench/machine.c, built here when missing or older
# than its source), or nothing when it cannot be built (no C compiler, not
# x86-64).
# The scripts print it before and after their runs: the VMs we measure on
# change speed with their neighbours, and a slow phase shows up as cache
# misses that cost more (docs/engine.md and bench/README.md).
machine_state() { # ROOT
  local bin="$1/build/machine" src="$1/bench/machine.c"
  if [ ! -x "$bin" ] || [ "$src" -nt "$bin" ]; then
    mkdir -p "$1/build" && cc -O2 -pthread "$src" -o "$bin" 2>/dev/null || return 0
  fi
  "$bin" --memory 2>/dev/null || true
}

machine_report() { # ROOT LINE_BEFORE: both lines, when there was one before
  [ -n "$2" ] || return 0
  printf 'machine before the runs: %s\nmachine after the runs:  %s\n' "$2" "$(machine_state "$1")"
}
