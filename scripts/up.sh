#!/usr/bin/env bash
# Start Airflow (API server + UI, scheduler, DAG processor) and the MLflow server on the embedded
# defaults, bound to 127.0.0.1, each in its own process group; `make down` stops them.
# Pids go to var/run/, logs to var/log/ (FRESHRANK_RUN_DIR, FRESHRANK_LOG_DIR move them).
# Ports: AIRFLOW_PORT (8080), MLFLOW_PORT (5000); FRESHRANK_UP_MLFLOW=0 skips the MLflow server.
# The MLflow server runs MLflow's basic-auth app: admin password, auth database and secret key
# are generated once into var/mlflow/auth/ (FRESHRANK_MLFLOW_AUTH_DIR; ops/mlflow_auth.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
RUN=${FRESHRANK_RUN_DIR:-$ROOT/var/run}
LOG=${FRESHRANK_LOG_DIR:-$ROOT/var/log}
mkdir -p "$RUN" "$LOG" "$AIRFLOW_HOME" "$ROOT/var/mlflow/artifacts"
AIRFLOW_PORT=${AIRFLOW_PORT:-8080}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
export AIRFLOW__API__HOST=${AIRFLOW__API__HOST:-127.0.0.1}
export AIRFLOW__API__PORT=$AIRFLOW_PORT
# Task processes report to the API server's execution API: point them at the port used here.
export AIRFLOW__API__BASE_URL=${AIRFLOW__API__BASE_URL:-http://127.0.0.1:$AIRFLOW_PORT}
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-$AIRFLOW__API__BASE_URL/execution/}
# The API server signs task and UI tokens with these: generated once per machine, never committed.
if [[ ! -f $AIRFLOW_HOME/secrets.env ]]; then
  umask 077
  {
    echo "export AIRFLOW__API_AUTH__JWT_SECRET=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
    echo "export AIRFLOW__API__SECRET_KEY=$("$BIN/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
  } > "$AIRFLOW_HOME/secrets.env"
fi
# shellcheck disable=SC1091
source "$AIRFLOW_HOME/secrets.env"
# The admin's password: generated here (mode 600) rather than by the API server, which would
# also print it to its log.
PASSWORDS=$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
if [[ ! -s $PASSWORDS ]]; then
  (umask 077; "$BIN/python" -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(16)}))' > "$PASSWORDS")
fi

# MLflow's login (basic-auth app): config, auth DB, secret key and the admin's password, each
# mode 600, generated once; credentials.env exports MLFLOW_TRACKING_USERNAME/PASSWORD, which
# MLflow's client reads. Tasks get them when they use this server as their tracking URI.
UP_MLFLOW=${FRESHRANK_UP_MLFLOW:-1}
MLFLOW_AUTH=${FRESHRANK_MLFLOW_AUTH_DIR:-$ROOT/var/mlflow/auth}
MLFLOW_URL=http://127.0.0.1:$MLFLOW_PORT
if [[ $UP_MLFLOW != 0 ]]; then
  "$BIN/python" -m ops.mlflow_auth "$MLFLOW_AUTH" > /dev/null
  if [[ ${MLFLOW_TRACKING_URI:-} =~ ^http://(127\.0\.0\.1|localhost):$MLFLOW_PORT/?$ && -z ${MLFLOW_TRACKING_USERNAME:-} ]]; then
    # shellcheck disable=SC1091
    source "$MLFLOW_AUTH/credentials.env"
  fi
fi
# The server's store: the tracking URI when it is a store (not this server's own URL).
MLFLOW_STORE=${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/var/mlflow/mlflow.db}
[[ $MLFLOW_STORE != http://* && $MLFLOW_STORE != https://* ]] || MLFLOW_STORE=sqlite:///$ROOT/var/mlflow/mlflow.db

start() {  # name, command...
  local name=$1; shift
  if [[ -f $RUN/$name.pid ]] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return
  fi
  setsid "$@" > "$LOG/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  echo "started $name (pid $!, log $LOG/$name.log)"
}

"$BIN/airflow" db migrate > "$LOG/db-migrate.log" 2>&1
# One training at a time: the nightly and intra-day DAGs' fine_tune and compress share it.
"$BIN/airflow" pools set freshrank_training 1 "FreshRank training: one at a time" >> "$LOG/db-migrate.log" 2>&1
start airflow-api "$BIN/airflow" api-server --host "$AIRFLOW__API__HOST" --port "$AIRFLOW_PORT"
# The scheduler's log server would listen on every interface; tasks run on this machine and
# the API server reads their log files directly, so it is not started.
start airflow-scheduler "$BIN/airflow" scheduler --skip-serve-logs
start airflow-dag-processor "$BIN/airflow" dag-processor
if [[ $UP_MLFLOW != 0 ]]; then
  (  # in a subshell: the server's secret key stays out of the other services' environment
    # shellcheck disable=SC1091
    source "$MLFLOW_AUTH/server.env"
    # MLflow's job runner (GenAI scorers, 7 worker processes) is not used here.
    export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
    start mlflow-server "$BIN/mlflow" server --app-name basic-auth --backend-store-uri "$MLFLOW_STORE" \
      --default-artifact-root "$ROOT/var/mlflow/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1
  )
fi

for _ in $(seq 1 90); do
  curl -sf "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health" > /dev/null && break
  sleep 2
done
cat <<MSG

Airflow UI:  http://127.0.0.1:$AIRFLOW_PORT   (user admin; password generated into
             $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
MSG
if [[ $UP_MLFLOW != 0 ]]; then
  for _ in $(seq 1 30); do
    curl -sf "$MLFLOW_URL/health" > /dev/null && break
    sleep 2
  done
  curl -sf "$MLFLOW_URL/health" > /dev/null || echo "MLflow server not answering yet: see $LOG/mlflow-server.log"
  cat <<MSG
MLflow UI:   $MLFLOW_URL   (user admin; password generated into
             $MLFLOW_AUTH/credentials.env)
             pipeline through it: source $MLFLOW_AUTH/credentials.env
                                  export MLFLOW_TRACKING_URI=$MLFLOW_URL
MSG
fi
echo "Stop with:   make down"
