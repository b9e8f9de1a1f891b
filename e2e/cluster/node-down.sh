#!/usr/bin/env bash
# Stop the real node of the e2e cluster and leave nothing behind: its Pods
# (through the kubelet while the apiserver still answers, so CNI tears their
# networks down), the kubelet, every container and shim of its containerd,
# containerd itself, mounts under its folder, Pod network namespaces, the
# bridge, the nftables table, the kubelet's cgroups, the kubelet's container
# log links, and the host settings it changed (written back from the record
# node-up.sh made). Safe to run when nothing (or half of it) is up; called by
# down.sh before the control plane stops, and by node-up.sh when a step fails.
set -uo pipefail
# Also when called with a narrower PATH: sysctl, nft and umount live in sbin.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=node-env.sh
source "$HERE/node-env.sh"
RUN=$STATE/run

log() { echo "node-down.sh: $*" >&2; }

[[ -d $NODE_DIR ]] || ip link show "$BRIDGE" >/dev/null 2>&1 || [[ -f $HOST_RECORD_DIR/nodes/$BRIDGE ]] || exit 0
[[ $(id -u) == 0 ]] || { log "needs root"; exit 1; }

# stop <name>: TERM the recorded PID (if it is still that binary), KILL after 15s.
stop() {
  local name=$1 pid argv0 deadline
  pid=$(cat "$RUN/$name.pid" 2>/dev/null) || return 0
  argv0=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | head -n 1)
  if [[ $argv0 == */$name ]]; then
    kill -TERM "$pid" 2>/dev/null
    deadline=$((SECONDS + 15))
    while [[ -e /proc/$pid ]] && ((SECONDS < deadline)); do sleep 0.1; done
    [[ -e /proc/$pid ]] && { log "$name ignored SIGTERM for 15s; killing"; kill -KILL "$pid" 2>/dev/null; }
    log "stopped $name (pid $pid)"
  fi
  rm -f "$RUN/$name.pid"
}

# 1. Pods on the node, deleted through the kubelet (it stops their sandboxes,
#    which runs CNI DEL). Best effort: the apiserver or kubelet may be gone.
kubectl_bin=$NODE_DIR/bin/kubectl
kubelet_pid=$(cat "$RUN/kubelet.pid" 2>/dev/null)
if [[ -x $kubectl_bin && -n $kubelet_pid && -e /proc/$kubelet_pid && -f $STATE/kubeconfig ]]; then
  timeout 60 "$kubectl_bin" --kubeconfig="$STATE/kubeconfig" delete pods --all-namespaces \
    --field-selector="spec.nodeName=$NODE_NAME" --grace-period=5 --wait=true --request-timeout=10s >&2 ||
    log "could not delete the node's Pods through the kubelet; removing their containers directly"
  timeout 20 "$kubectl_bin" --kubeconfig="$STATE/kubeconfig" delete node "$NODE_NAME" \
    --ignore-not-found --request-timeout=10s >&2 || true
fi
stop kubelet

# 2. Whatever containers remain, straight through containerd: remember each
#    sandbox's network namespace first, then kill and delete tasks and containers.
netns_paths=()
if [[ -S $CONTAINERD_SOCK ]]; then
  ctr() { timeout 30 ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
  for id in $(ctr containers list --quiet 2>/dev/null); do
    path=$(ctr containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec") or {}
for ns in spec.get("linux", {}).get("namespaces", []):
    if ns.get("type") == "network" and ns.get("path"):
        print(ns["path"])' 2>/dev/null)
    [[ -n $path ]] && netns_paths+=("$path")
    ctr tasks kill --signal SIGKILL "$id" >/dev/null 2>&1
    ctr tasks delete --force "$id" >/dev/null 2>&1
    ctr containers delete "$id" >/dev/null 2>&1 && log "removed container $id"
  done
fi
stop containerd
# Shims of this containerd only (their command line names its socket).
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK( |$)"); do
  kill -KILL "$pid" 2>/dev/null && log "killed shim $pid"
done

# 3. Mounts under the node's folder (overlay snapshots, sandbox shm, Pod
#    volumes, the kubelet's rshared root), deepest first.
if [[ -d $NODE_DIR ]]; then
  while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || log "cannot unmount $target"
  done < <(findmnt -rn -o TARGET | awk -v dir="$NODE_DIR" 'index($0, dir) == 1' | sort -r)
fi

# 4. Network: leftover Pod namespaces, the bridge (its ports go with the
#    namespaces), the guard table, containerd's CNI result cache.
for path in "${netns_paths[@]}"; do
  [[ -e $path ]] || continue
  if [[ $path == /var/run/netns/* || $path == /run/netns/* ]]; then
    ip netns delete "$(basename "$path")" 2>/dev/null && log "removed netns $(basename "$path")"
  fi
done
ip link delete "$BRIDGE" 2>/dev/null && log "removed bridge $BRIDGE"
nft delete table inet "$NFT_TABLE" 2>/dev/null && log "removed nft table $NFT_TABLE"
rm -f /var/lib/cni/results/"$BRIDGE"-* 2>/dev/null
rmdir /var/lib/cni/results /var/lib/cni /run/containerd/s /run/containerd /run/netns 2>/dev/null

# 5. The kubelet's cgroups, deepest first, in every hierarchy.
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -d $hierarchy$CGROUP_NAME ]] || continue
  find "$hierarchy$CGROUP_NAME" -depth -type d -exec rmdir {} + 2>/dev/null ||
    log "cannot remove every cgroup under $hierarchy$CGROUP_NAME"
done

# 6. The kubelet links container logs into /var/log/containers (not configurable).
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$NODE_DIR/*" -delete
  rmdir /var/log/containers 2>/dev/null
fi

# 7. Host settings back to what they were before the first real node started,
#    once no other real node on this machine runs.
if [[ -d $HOST_RECORD_DIR ]]; then
  (
    flock 7
    rm -f "$HOST_RECORD_DIR/nodes/$BRIDGE"
    others=$(live_nodes | tr '\n' ' ')
    if [[ -n $others ]]; then
      log "other real nodes still run ($others): host settings stay until the last stops"
    elif [[ -f $HOST_SETTINGS_RECORD ]]; then
      while IFS='=' read -r key value; do
        current=$(sysctl -n "$key" 2>/dev/null)
        if [[ $current != "$value" ]]; then
          sysctl -qw "$key=$value" && log "restored $key=$value (was $current)"
        fi
      done <"$HOST_SETTINGS_RECORD"
      rm -f "$HOST_SETTINGS_RECORD"
      rm -rf "$HOST_RECORD_DIR"
    fi
  ) 7>>"$HOST_RECORD_DIR/.lock"
fi

# --one-file-system: never into a mount that would not come off.
rm -rf --one-file-system "$NODE_DIR"
log "real node $NODE_NAME removed"
