#!/bin/bash
# The PostgreSQL history store end to end (issue 4, scale-out path): starts
# a throwaway cluster (tests/integration/pg_cluster.sh: initdb into a temp
# dir, loopback TCP on a free port, trust auth, run as `nobody` when we are
# root), then
#   - the store unit tests against it (DERMAL_TEST_PG_URL=... test_store),
#   - `dermal migrate` up / down / --status with postgres:// and
#     postgresql:// URLs, schema checked with psql after each step,
#   - four `dermal migrate` processes at once on a new database: all exit 0,
#     every step applied exactly once,
#   - refusals (closed port, missing database) without echoing a password,
#   - two `dermal serve` replicas sharing one new database: predictions on
#     both, /history newest first with pagination (pg_server_check.py).
# The cluster is stopped and deleted on exit.  Skips when initdb is missing.
# usage: tests/integration/test_store_pg.sh BUILD_DIR
set -u
O=${1:-build}
cd "$(dirname "$0")/../.." || exit 2
DERMAL=${DERMAL:-$PWD/$O/dermal}
PY=/usr/bin/python3
pass=0 fail=0 skip=0
summary() { echo "test_store_pg: $pass passed, $fail failed, $skip skipped"; }
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && echo "$2" | tail -n 8 | sed 's/^/     /'; }
# check DESCRIPTION CONDITION-EXIT-STATUS [DETAIL]
check() { if [ "$2" -eq 0 ]; then ok "$1"; else bad "$1" "${3:-}"; fi; }

. tests/integration/pg_cluster.sh
if [ ! -x "$PG_BIN/initdb" ]; then
  echo "SKIP: no PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"
  echo "test_store_pg: 0 passed, 0 failed, 1 skipped"; exit 0
fi
if [ ! -x "$DERMAL" ]; then
  echo "FAIL: $DERMAL not built"; echo "test_store_pg: 0 passed, 1 failed"; exit 1
fi
T=$(mktemp -d /tmp/dermal-pg.XXXXXX)
trap 'pg_cluster_stop; rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
if ! pg_cluster_start "$T" 2>"$T/start.err"; then
  bad "start a throwaway PostgreSQL cluster" "$(cat "$T/start.err")"; summary; exit 1
fi
ok "throwaway cluster on 127.0.0.1:$PG_PORT ($("$PG_BIN/postgres" --version))"
BASE="postgres://postgres@127.0.0.1:$PG_PORT"
for db in d_unit d_mig d_race d_srv; do pg_sql postgres "CREATE DATABASE $db" || bad "create database $db"; done

# ---------------------------------------------------------------- unit tests on PostgreSQL
TS=$O/tests/test_store
if [ -x "$TS" ]; then
  out=$(DERMAL_TEST_PG_URL="$BASE/d_unit" timeout 60 "$TS" 2>&1); st=$?
  line=$(echo "$out" | grep '^postgres:')
  echo "$line" | grep -qE '^postgres: [1-9][0-9]* passed, 0 failed'
  check "test_store against PostgreSQL (${line#postgres: })" $((st | $?)) "$out"
else
  skip=$((skip + 1)); echo "SKIP: $TS not built"
fi

# ---------------------------------------------------------------- dermal migrate
mig() { timeout 60 "$DERMAL" migrate "$@" 2>&1; }
U="$BASE/d_mig"
out=$(mig --database-url "$U" --status); st=$?
echo "$out" | grep -q 'schema version 0'; check "migrate --status on a new database: version 0" $((st | $?)) "$out"
echo "$out" | grep -q 'model: skipped'; check "migrate never opens the model" $? "$out"
out=$(mig --database-url "$U"); st=$?
echo "$out" | grep -q 'applied 1' && echo "$out" | grep -q 'applied 2' && echo "$out" | grep -q 'schema version 2'
check "migrate up: applied 1, 2" $((st | $?)) "$out"
r=$(pg_sql d_mig "SELECT string_agg(version::text || ':' || name, ',' ORDER BY version) FROM schema_migrations")
[ "$r" = "1:create predictions,2:image format and stored image path" ]; check "schema_migrations rows 1, 2" $? "$r"
r=$(pg_sql d_mig "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name='predictions'")
[ "$r" = "id,created_ms,request_id,image_sha256,image_bytes,image_width,image_height,model_name,model_version,model_sha256,label,probability,probabilities,ms_decode,ms_preprocess,ms_inference,ms_total,image_format,image_path" ]
check "predictions has the SQLite schema's columns, same order" $? "$r"
r=$(pg_sql d_mig "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE tablename='predictions'")
[ "$r" = "predictions_created,predictions_image,predictions_pkey" ]; check "indexes at version 2" $? "$r"
out=$(mig --database-url "$U"); st=$?
echo "$out" | grep -q '(0 steps)'; check "migrate again: nothing to do" $((st | $?)) "$out"
out=$(mig --database-url "$U" --to 1); st=$?
echo "$out" | grep -q 'reverted 2' && echo "$out" | grep -q 'schema version 1'
check "migrate --to 1: reverted 2" $((st | $?)) "$out"
r=$(pg_sql d_mig "SELECT count(*) FROM information_schema.columns WHERE table_name='predictions' AND column_name IN ('image_format','image_path')")/$(pg_sql d_mig "SELECT count(*) FROM pg_indexes WHERE indexname='predictions_image'")/$(pg_sql d_mig "SELECT max(version) FROM schema_migrations")
[ "$r" = "0/0/1" ]; check "version 1: step 2's columns and index gone" $? "$r"
out=$(mig --database-url "$U" --to 0); st=$?
echo "$out" | grep -q 'reverted 1' && echo "$out" | grep -q 'schema version 0'
check "migrate --to 0: reverted 1" $((st | $?)) "$out"
r=$(pg_sql d_mig "SELECT coalesce(to_regclass('predictions')::text, 'none') || '/' || (SELECT count(*) FROM schema_migrations)")
[ "$r" = "none/0" ]; check "version 0: predictions dropped, no migration rows" $? "$r"
out=$(mig --database-url "postgresql://postgres@127.0.0.1:$PG_PORT/d_mig"); st=$?
echo "$out" | grep -q 'schema version 2'; check "postgresql:// scheme: up to 2" $((st | $?)) "$out"
out=$(DATABASE_URL="$U" timeout 60 "$DERMAL" migrate --status 2>&1); st=$?
echo "$out" | grep -q 'schema version 2 (latest 2)'; check "DATABASE_URL from the environment, --status" $((st | $?)) "$out"

# ---------------------------------------------------------------- concurrent migrations
U="$BASE/d_race"
for i in 1 2 3 4; do
  timeout 60 "$DERMAL" migrate --database-url "$U" >"$T/race$i.out" 2>&1 &
  pids[i]=$!
done
rcs=""
for i in 1 2 3 4; do wait "${pids[i]}"; rcs="$rcs$?"; done
[ "$rcs" = "0000" ]; check "four migrate processes at once: all exit 0" $? "$rcs $(cat "$T"/race*.out)"
# The "(N steps)" line counts what this process ran under the lock (its
# "applied" lines compare with the version read before waiting for it).
n=$(cat "$T"/race*.out | grep -oE '\([0-9]+ steps?\)' | grep -oE '[0-9]+' | awk '{s += $1} END {print s + 0}')
r=$(pg_sql d_race "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations")
[ "$n" = 2 ] && [ "$r" = "1,2" ]; check "schema applied once ($n steps in all, rows $r)" $? "$(cat "$T"/race*.out)"

# ---------------------------------------------------------------- refusals
CLOSED=$(pg_free_port)
out=$(mig --database-url "postgres://postgres:hunter2@127.0.0.1:$CLOSED/x"); st=$?
[ $st -eq 1 ] && echo "$out" | grep -q 'PostgreSQL' && ! echo "$out" | grep -q hunter2
check "closed port: exit 1, PostgreSQL error, password not echoed" $? "$st $out"
out=$(mig --database-url "$BASE/no_such_db" --status); st=$?
[ $st -eq 1 ] && echo "$out" | grep -q 'no_such_db'; check "missing database: exit 1 with the server's reason" $? "$st $out"

# ---------------------------------------------------------------- dermal serve on PostgreSQL
if ! $PY -c 'import onnx, numpy, PIL' 2>/dev/null; then
  skip=$((skip + 1)); echo "SKIP: serve on PostgreSQL (python3-onnx/numpy/PIL missing)"
elif ! $PY tests/integration/make_server_models.py "$T/m" >"$T/models.log" 2>&1; then
  bad "model generation" "$(cat "$T/models.log")"
else
  out=$(timeout 90 $PY tests/integration/pg_server_check.py "$DERMAL" "$T/m" "$BASE/d_srv" "$T" 2>&1); st=$?
  echo "$out" | grep -E '^(ok|FAIL)'
  p=$(echo "$out" | grep -c '^ok '); f=$(echo "$out" | grep -c '^FAIL')
  pass=$((pass + p)); fail=$((fail + f))
  if [ $st -ne 0 ] && [ "$f" -eq 0 ]; then bad "pg_server_check.py exit $st" "$out"; fi
  if [ $st -ne 0 ] || [ -n "${VERBOSE:-}" ]; then tail -n 5 "$T"/replica_*.log; fi
  r=$(pg_sql d_srv "SELECT (SELECT count(*) FROM predictions) || '/' || (SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations)")
  [ "$r" = "5/1,2" ]; check "rows in PostgreSQL after the replicas stopped (5, migrated once)" $? "$r"
fi

summary
[ "$fail" -eq 0 ]
