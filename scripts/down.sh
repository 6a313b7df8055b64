#!/usr/bin/env bash
# Stop what scripts/up.sh started: SIGINT to each process group (Airflow's clean shutdown),
# then SIGTERM, then SIGKILL for anything still there after the grace period.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN=${FRESHRANK_RUN_DIR:-var/run}
shopt -s nullglob
pids=()
for f in "$RUN"/*.pid; do
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -INT -- "-$pid" 2>/dev/null
    pids+=("$pid")
  fi
done
for sig in TERM KILL; do
  for _ in $(seq 1 25); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
    (( alive )) || break
    sleep 1
  done
  (( alive )) || break
  for pid in "${pids[@]}"; do kill "-$sig" -- "-$pid" 2>/dev/null; done
done
rm -f "$RUN"/*.pid
echo "stopped ${#pids[@]} service(s)"
