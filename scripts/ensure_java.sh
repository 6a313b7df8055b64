#!/usr/bin/env bash
# PySpark 4 needs Java 17 or newer. Use the one on PATH/JAVA_HOME when it is new enough,
# otherwise install OpenJDK 17 (headless) with apt-get, which needs root.
set -euo pipefail
java_major() {
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}
for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)"; do
  if [[ -n "$candidate" && -x "$candidate" ]] && (( $(java_major "$candidate") >= 17 )); then
    exit 0
  fi
done
echo "Java 17+ not found: installing openjdk-17-jre-headless with apt-get" >&2
if ! command -v apt-get >/dev/null; then
  echo "error: no apt-get here; install Java 17 yourself and put it on PATH" >&2
  exit 1
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openjdk-17-jre-headless >/dev/null
java -version
