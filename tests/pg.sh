#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests that need one.
#
#   eval "$(tests/pg.sh start)"   # initdb + start on 127.0.0.1; sets STEER_TEST_PG_URL and STEER_PG_DIR
#   tests/pg.sh stop              # stop the server of $STEER_PG_DIR and delete its data folder
#
# Each `start` makes its own data folder and picks a free port, so two runs
# (two CI jobs, a developer's server and a CI run on one machine) never share
# a server, and `stop` only stops the one its shell started. To keep one
# across shells, set STEER_PG_DIR (and STEER_PG_PORT) yourself: `start` then
# reuses a server already running there.
#
# It uses Debian's server binaries (package `postgresql`; as root it installs
# them with apt-get when missing) and never touches a system cluster. The
# role `steer` (password `steer`, may create databases: each test makes its
# own) owns the database `steer`. As root the server runs as the `postgres`
# user, which PostgreSQL requires.
set -euo pipefail

find_bin() {
  local found
  found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -z "$found" ] && command -v pg_ctl >/dev/null 2>&1; then
    found="$(dirname "$(command -v pg_ctl)")"
  fi
  echo "$found"
}

as_owner() {  # run a command as the data folder's owner (postgres refuses to run as root)
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

print_env() {  # $1 folder, $2 port: what the caller's shell evaluates
  echo "export STEER_PG_DIR='$1'"
  echo "export STEER_TEST_PG_URL='postgresql+psycopg://steer:steer@127.0.0.1:$2/steer'"
}

start() {
  local bin dir port
  bin="$(find_bin)"
  if [ -z "$bin" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "pg.sh: installing PostgreSQL (apt-get install postgresql)" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
      bin="$(find_bin)"
    fi
    [ -n "$bin" ] || { echo "pg.sh: no PostgreSQL server binaries (install Debian's postgresql package)" >&2; exit 1; }
  fi
  if [ -n "${STEER_PG_DIR:-}" ] && [ -f "$STEER_PG_DIR/postmaster.pid" ] \
     && as_owner "$bin/pg_ctl" -D "$STEER_PG_DIR" status >/dev/null 2>&1; then
    port="$(sed -n 4p "$STEER_PG_DIR/postmaster.pid")"
    echo "pg.sh: already running in $STEER_PG_DIR on port $port" >&2
    print_env "$STEER_PG_DIR" "$port"
    return
  fi
  dir="${STEER_PG_DIR:-$(mktemp -d /tmp/steer-pg.XXXXXX)}"
  port="${STEER_PG_PORT:-$(free_port)}"
  rm -rf "$dir"
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  chmod 700 "$dir"
  as_owner "$bin/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$dir.initdb.log" 2>&1 \
    || { cat "$dir.initdb.log" >&2; exit 1; }
  # Throwaway, so fast: no fsync. Enough connections for several workers per test.
  as_owner "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2
  as_owner "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE steer LOGIN CREATEDB PASSWORD 'steer'" \
    -c "CREATE DATABASE steer OWNER steer" >&2
  rm -f "$dir.initdb.log"
  echo "pg.sh: PostgreSQL running in $dir on 127.0.0.1:$port" >&2
  print_env "$dir" "$port"
}

stop() {
  local bin dir="${STEER_PG_DIR:-}"
  if [ -z "$dir" ]; then
    echo "pg.sh: STEER_PG_DIR is not set: nothing to stop (it is set by eval \"\$(tests/pg.sh start)\")" >&2
    exit 1
  fi
  bin="$(find_bin)"
  if [ -n "$bin" ] && [ -f "$dir/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir" -m fast -w stop >&2 || true
  fi
  rm -rf "$dir" "$dir.initdb.log"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: tests/pg.sh start|stop" >&2; exit 2 ;;
esac
