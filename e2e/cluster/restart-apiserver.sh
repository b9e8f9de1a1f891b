#!/usr/bin/env bash
# Kill the e2e control plane's kube-apiserver (SIGKILL, as a crash) and bring it back with
# up.sh, which restarts dead components and waits until they answer. For fault tests of the
# operator: its watches and Lease renewals must survive the outage. Same environment as up.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}/cluster

pid=$(cat "$STATE/run/kube-apiserver.pid")
argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1 || true)
if [[ $argv0 != */kube-apiserver ]] || ! grep -qF "$STATE/" "/proc/$pid/cmdline"; then
  echo "restart-apiserver.sh: pid $pid is not this cluster's kube-apiserver" >&2
  exit 1
fi
kill -KILL "$pid"
deadline=$((SECONDS + 30))
while [[ -e /proc/$pid ]]; do
  ((SECONDS < deadline)) || { echo "restart-apiserver.sh: pid $pid outlived SIGKILL" >&2; exit 1; }
  sleep 0.1
done
echo "restart-apiserver.sh: killed kube-apiserver (pid $pid)" >&2
bash "$HERE/up.sh" >/dev/null
