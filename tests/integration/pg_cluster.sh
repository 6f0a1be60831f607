# pg_cluster.sh: a throwaway PostgreSQL cluster for tests (source it; bash).
#
#   pg_cluster_start DIR   initdb into DIR/data, start on a free loopback TCP
#                          port (PG_PORT) with its unix socket in DIR/sock;
#                          trust auth, superuser "postgres"; returns non-zero
#                          (reason on stderr) when it cannot
#   pg_cluster_stop        stop it (immediate) and delete DIR/data
#   pg_sql DB SQL          psql -qAt as postgres against DB
#
# As root the server runs as an unprivileged user (postgres refuses root):
# PG_USER, default "nobody", through runuser.  PG_BIN: the newest
# /usr/lib/postgresql/*/bin unless set.  The cluster is tuned for tests
# (fsync off, tiny buffers): never point it at data you want to keep.
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_USER=${PG_USER:-nobody}
PG_DIR="" PG_PORT=""

pg_as() { # command... run as the cluster's owner
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi
}

pg_free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_cluster_start() {
  PG_DIR=$1
  [ -x "$PG_BIN/initdb" ] || { echo "pg_cluster: no initdb under '$PG_BIN'" >&2; return 1; }
  mkdir -p "$PG_DIR/data" "$PG_DIR/sock" || return 1
  chmod 755 "$PG_DIR" # the owner must reach data/ through it
  if [ "$(id -u)" -eq 0 ]; then
    id -u "$PG_USER" >/dev/null 2>&1 || { echo "pg_cluster: no user $PG_USER" >&2; return 1; }
    chown "$PG_USER" "$PG_DIR/data" "$PG_DIR/sock" || return 1
  fi
  chmod 700 "$PG_DIR/data"
  pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 \
    --locale=C --no-sync --no-instructions >"$PG_DIR/initdb.log" 2>&1 ||
    { echo "pg_cluster: initdb failed:" >&2; tail -n 5 "$PG_DIR/initdb.log" >&2; return 1; }
  local try
  for try in 1 2 3; do # a port taken between probe and bind: pick another
    PG_PORT=$(pg_free_port) || return 1
    touch "$PG_DIR/pg.log" && chmod 666 "$PG_DIR/pg.log"
    if pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/pg.log" -w -t 30 \
      -o "-p $PG_PORT -k $PG_DIR/sock -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=16MB -c max_connections=40" \
      start >/dev/null 2>&1; then
      return 0
    fi
  done
  echo "pg_cluster: server did not start:" >&2; tail -n 5 "$PG_DIR/pg.log" >&2
  return 1
}

pg_cluster_stop() {
  [ -n "$PG_DIR" ] || return 0
  if [ -f "$PG_DIR/data/postmaster.pid" ]; then
    pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w -t 20 stop >/dev/null 2>&1
  fi
  rm -rf "$PG_DIR/data" "$PG_DIR/sock"
}

pg_sql() { # db, sql
  "$PG_BIN/psql" -X -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$1" -c "$2"
}
