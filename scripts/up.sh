#!/usr/bin/env bash
# Start Airflow (API server + UI, scheduler, DAG processor) and the MLflow UI on the embedded
# defaults, bound to 127.0.0.1, each in its own process group; `make down` stops them.
# Pids go to var/run/, logs to var/log/ (FRESHRANK_RUN_DIR, FRESHRANK_LOG_DIR move them).
# Ports: AIRFLOW_PORT (8080), MLFLOW_PORT (5000); FRESHRANK_UP_MLFLOW=0 skips the MLflow UI.
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
start airflow-api "$BIN/airflow" api-server --host "$AIRFLOW__API__HOST" --port "$AIRFLOW_PORT"
# The scheduler's log server would listen on every interface; tasks run on this machine and
# the API server reads their log files directly, so it is not started.
start airflow-scheduler "$BIN/airflow" scheduler --skip-serve-logs
start airflow-dag-processor "$BIN/airflow" dag-processor
[[ ${FRESHRANK_UP_MLFLOW:-1} == 0 ]] || start mlflow-ui "$BIN/mlflow" ui --backend-store-uri "${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/var/mlflow/mlflow.db}" \
  --default-artifact-root "$ROOT/var/mlflow/artifacts" --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1

for _ in $(seq 1 90); do
  curl -sf "http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health" > /dev/null && break
  sleep 2
done
cat <<MSG

Airflow UI:  http://127.0.0.1:$AIRFLOW_PORT   (user admin; password generated into
             $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)
MLflow UI:   http://127.0.0.1:$MLFLOW_PORT
Stop with:   make down
MSG
