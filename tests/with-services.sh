#!/usr/bin/env bash
# Runs a command (the test suite) with PostgreSQL and Redis available:
#   1. the ones named by TEST_DATABASE_URL / TEST_REDIS_URL, if set;
#   2. else those answering on 127.0.0.1:5432 / 127.0.0.1:6379;
#   3. else private throwaway servers started here from the local binaries (initdb in a temporary
#      folder, redis-server without persistence), stopped and deleted when the command ends.
set -euo pipefail

cleanup() {
  local status=$?
  set +e
  for pid in "${pg_pid:-}" "${redis_pid:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  done
  [ -n "${scratch:-}" ] && rm -rf "$scratch"
  exit "$status"
}
trap cleanup EXIT

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  local port=$1
  while answers "$port"; do port=$((port + 1)); done
  echo "$port"
}
wait_for() {
  for _ in $(seq 1 100); do answers "$1" && return 0; sleep 0.1; done
  echo "with-services: $2 did not start on port $1" >&2
  return 1
}
scratch_dir() {
  [ -n "${scratch:-}" ] || scratch=$(mktemp -d -t portcullis-test.XXXXXX)
}

if [ -z "${TEST_DATABASE_URL:-}" ]; then
  if answers 5432; then
    export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
  else
    bin=$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)")
    if [ ! -x "$bin/initdb" ] || [ ! -x "$bin/postgres" ]; then
      echo "with-services: nothing answers on 127.0.0.1:5432 and PostgreSQL is not installed." >&2
      echo "  Install it (Debian/Ubuntu: apt-get install postgresql), or set TEST_DATABASE_URL." >&2
      exit 1
    fi
    scratch_dir
    mkdir -p "$scratch/pg"
    port=$(free_port 55432)
    # PostgreSQL refuses to run as root: run it as the postgres user when we are root.
    as=()
    if [ "$(id -u)" = 0 ]; then
      id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
      chown -R postgres "$scratch/pg"
      chmod 755 "$scratch"
      as=(runuser -u postgres --)
    fi
    echo "with-services: starting a private PostgreSQL on port $port"
    "${as[@]}" "$bin/initdb" -D "$scratch/pg/data" -U postgres --auth=trust -E UTF8 >"$scratch/pg/initdb.log" 2>&1 \
      || { cat "$scratch/pg/initdb.log" >&2; exit 1; }
    "${as[@]}" "$bin/postgres" -D "$scratch/pg/data" -p "$port" -k "$scratch/pg" \
      -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 >"$scratch/pg/server.log" 2>&1 &
    pg_pid=$!
    wait_for "$port" PostgreSQL
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
  fi
fi

if [ -z "${TEST_REDIS_URL:-}" ]; then
  if answers 6379; then
    export TEST_REDIS_URL=redis://127.0.0.1:6379/
  else
    if ! command -v redis-server >/dev/null; then
      echo "with-services: nothing answers on 127.0.0.1:6379 and redis-server is not installed." >&2
      echo "  Install it (Debian/Ubuntu: apt-get install redis-server), or set TEST_REDIS_URL." >&2
      exit 1
    fi
    scratch_dir
    mkdir -p "$scratch/redis"
    port=$(free_port 56379)
    echo "with-services: starting a private Redis on port $port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$scratch/redis" \
      >"$scratch/redis/server.log" 2>&1 &
    redis_pid=$!
    wait_for "$port" Redis
    export TEST_REDIS_URL="redis://127.0.0.1:$port/"
  fi
fi

# The Redis failure test starts redis-server processes of its own.
command -v redis-server >/dev/null || {
  echo "with-services: redis-server is needed by the tests (apt-get install redis-server)." >&2
  exit 1
}

"$@"
