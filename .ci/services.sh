#!/usr/bin/env bash
# A throw-away PostgreSQL cluster and an MLflow tracking server on it, for the tests that need real services.
#   source .ci/services.sh start   -> exports CURVBENCH_TEST_POSTGRES, CURVBENCH_TEST_TRACKING,
#                                     CURVBENCH_TEST_SECRET_POSTGRES (a server URL without database), CURVBENCH_SERVICES_DIR
#   .ci/services.sh stop DIR       -> stops both and removes DIR
# PostgreSQL refuses to run as root: the cluster belongs to the `postgres` user, in a temporary folder, on
# 127.0.0.1 and a free port. Installs Debian's postgresql package when it is missing.

services_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

services_start() {
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  local bin dir pg_port ml_port
  bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
  dir=$(mktemp -d /tmp/curvbench-services.XXXXXX)
  chmod 755 "$dir"
  mkdir "$dir/pg" "$dir/artifacts"
  chown postgres "$dir/pg"
  pg_port=$(services_free_port)
  su postgres -s /bin/sh -c "$bin/initdb -D $dir/pg -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null"
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $dir/pg -o '-h 127.0.0.1 -p $pg_port -k $dir/pg -c max_connections=300' -l $dir/pg/server.log -w start >/dev/null"
  psql_() { su postgres -s /bin/sh -c "psql -h $dir/pg -p $pg_port -U postgres -qAt -c \"$1\""; }
  psql_ "CREATE USER curvbench PASSWORD 'curvbench'"
  psql_ "CREATE DATABASE optuna OWNER curvbench"
  psql_ "CREATE DATABASE mlflow OWNER curvbench"
  # a role whose password appears nowhere else, for the test that greps everything a sweep writes for it
  psql_ "CREATE USER keeper PASSWORD 'Pw9-kX2q-zZ'"
  psql_ "CREATE DATABASE secret_optuna OWNER keeper"
  psql_ "CREATE DATABASE secret_mlflow OWNER keeper"
  ml_port=$(services_free_port)
  (cd "$dir" && nohup "${CURVBENCH_PYTHON:-python3}" -m mlflow server \
      --backend-store-uri "postgresql://curvbench:curvbench@127.0.0.1:$pg_port/mlflow" \
      --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$ml_port" --workers 2 \
      > "$dir/mlflow.log" 2>&1 & echo $! > "$dir/mlflow.pid")
  "${CURVBENCH_PYTHON:-python3}" - "$ml_port" <<'PY'
import sys, time, urllib.request
for _ in range(120):  # the server answers /health once it is up
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
        break
    except OSError:
        time.sleep(1)
else:
    sys.exit("the MLflow tracking server did not start; see its log")
PY
  export CURVBENCH_SERVICES_DIR="$dir"
  export CURVBENCH_TEST_POSTGRES="postgresql://curvbench:curvbench@127.0.0.1:$pg_port/optuna"
  export CURVBENCH_TEST_TRACKING="http://127.0.0.1:$ml_port"
  export CURVBENCH_TEST_SECRET_POSTGRES="postgresql://keeper:Pw9-kX2q-zZ@127.0.0.1:$pg_port"
  echo "services: PostgreSQL on 127.0.0.1:$pg_port, MLflow tracking server on 127.0.0.1:$ml_port ($dir)" >&2
}

services_stop() {
  local dir=$1
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  if [ -f "$dir/mlflow.pid" ]; then
    pkill -TERM -P "$(cat "$dir/mlflow.pid")" 2>/dev/null; kill "$(cat "$dir/mlflow.pid")" 2>/dev/null
  fi
  local bin
  bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $dir/pg -m fast -w stop >/dev/null" 2>/dev/null
  rm -rf "$dir"
}

case "${1:-}" in
  start) services_start ;;
  stop) services_stop "${2:-$CURVBENCH_SERVICES_DIR}" ;;
esac
