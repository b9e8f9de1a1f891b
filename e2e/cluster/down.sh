#!/usr/bin/env bash
# Stop exactly the processes up.sh started (by the PIDs it recorded, checked
# against the binary name so a recycled PID is never hit) and remove the state
# folder. KEEP_LOGS=<folder> keeps the component logs there first
# (KEEP_LOGS=1: next to the state folder, as cluster-logs).
set -euo pipefail

STATE=${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}/cluster
RUN=$STATE/run

log() { echo "down.sh: $*" >&2; }

# The real node first, while the apiserver still answers (its Pods go through
# the kubelet); it restores the host settings the kubelet changed.
bash "$(dirname "${BASH_SOURCE[0]}")/node-down.sh" || log "node-down.sh failed; continuing"

# Reverse start order: the apiserver's clients go first, etcd last.
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  pid_file=$RUN/$name.pid
  [[ -f $pid_file ]] || continue
  pid=$(cat "$pid_file")
  argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1 || true)
  # Only this cluster's process: other clusters run the same binaries.
  if [[ $argv0 == */$name ]] && grep -qF "$STATE/" "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
    if [[ -e /proc/$pid ]]; then
      log "$name (pid $pid) ignored SIGTERM for 15s; killing"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pid_file"
done

if [[ -n ${KEEP_LOGS:-} && -d $STATE/logs ]]; then
  if [[ $KEEP_LOGS == 1 ]]; then
    keep=$(dirname "$STATE")/cluster-logs
  else
    keep=$KEEP_LOGS
  fi
  mkdir -p "$keep"
  cp -a "$STATE/logs/." "$keep/"
  log "logs kept in $keep"
fi
rm -rf "$STATE"
log "removed $STATE"
