#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests that need one.
#
#   eval "$(tests/pg.sh start)"   # initdb + start on 127.0.0.1:$STEER_PG_PORT, print `export STEER_TEST_PG_URL=...`
#   tests/pg.sh stop              # stop it and delete its data folder
#
# It uses Debian's server binaries (package `postgresql`; as root it installs
# them with apt-get when missing), its own data folder ($STEER_PG_DIR, default
# /tmp/steer-pg) and its own port ($STEER_PG_PORT, default 55432), so it never
# touches a system cluster. The role `steer` (password `steer`, may create
# databases: each test makes its own) owns the database `steer`. When run as
# root the server runs as the `postgres` user, which PostgreSQL requires.
set -euo pipefail

PORT="${STEER_PG_PORT:-55432}"
DIR="${STEER_PG_DIR:-/tmp/steer-pg}"
URL="postgresql+psycopg://steer:steer@127.0.0.1:${PORT}/steer"

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

start() {
  local bin
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
  if [ -f "$DIR/postmaster.pid" ] && as_owner "$bin/pg_ctl" -D "$DIR" status >/dev/null 2>&1; then
    echo "pg.sh: already running in $DIR on port $PORT" >&2
    echo "export STEER_TEST_PG_URL='$URL'"
    return
  fi
  rm -rf "$DIR"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
  chmod 700 "$DIR"
  as_owner "$bin/initdb" -D "$DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    -E UTF8 --locale=C.UTF-8 >"$DIR.initdb.log" 2>&1 \
    || { cat "$DIR.initdb.log" >&2; exit 1; }
  # Fast and throwaway: no fsync. Enough connections for several workers per test.
  as_owner "$bin/pg_ctl" -D "$DIR" -l "$DIR/server.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2
  as_owner "$bin/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE ROLE steer LOGIN CREATEDB PASSWORD 'steer'" \
    -c "CREATE DATABASE steer OWNER steer" >&2
  echo "pg.sh: PostgreSQL running in $DIR on 127.0.0.1:$PORT" >&2
  echo "export STEER_TEST_PG_URL='$URL'"
}

stop() {
  local bin
  bin="$(find_bin)"
  if [ -n "$bin" ] && [ -f "$DIR/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$DIR" -m fast -w stop >&2 || true
  fi
  rm -rf "$DIR" "$DIR.initdb.log"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: tests/pg.sh start|stop" >&2; exit 2 ;;
esac
