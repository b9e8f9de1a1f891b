# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the scripts that source it
# Names and paths of the real node, shared by node-up.sh and node-down.sh
# (sourced). Everything is derived from the cluster's state folder and port
# base, so two clusters on one machine (different FERROFLOW_E2E_PORT_BASE) get
# different bridges, subnets, nft tables and cgroups.
#
# Env: FERROFLOW_E2E_NODE_BRIDGE (default ffe2e<N>, N = port base / 1000),
# FERROFLOW_E2E_NODE_SUBNET (a /24, default 10.245.<N>.0/24: outside kwok's
# fake Pod range 10.244.0.0/16 and the Service range 10.96.0.0/16),
# FERROFLOW_E2E_NODE_NAME (default real-node-0).

STATE_ROOT=${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}
STATE=$STATE_ROOT/cluster
NODE_DIR=$STATE/node
PORT_BASE=${FERROFLOW_E2E_PORT_BASE:-16000}
NODE_SLOT=$(((PORT_BASE / 1000) % 256))
NODE_NAME=${FERROFLOW_E2E_NODE_NAME:-real-node-0}
BRIDGE=${FERROFLOW_E2E_NODE_BRIDGE:-ffe2e$NODE_SLOT}
NODE_SUBNET=${FERROFLOW_E2E_NODE_SUBNET:-10.245.$NODE_SLOT.0/24}
SERVICE_RANGE=10.96.0.0/16
[[ $NODE_SUBNET =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] ||
  { echo "FERROFLOW_E2E_NODE_SUBNET must be a /24 like 10.245.16.0/24 (got '$NODE_SUBNET')" >&2; exit 1; }
SUBNET_PREFIX=${BASH_REMATCH[1]}
# The bridge's own address: the node IP (a kubelet refuses loopback) and the
# address Pods reach servers on the host through.
NODE_IP=$SUBNET_PREFIX.1
KUBELET_PORT=$((PORT_BASE + 250))
KUBELET_HEALTHZ_PORT=$((PORT_BASE + 248))
NFT_TABLE=ferroflow_e2e_$BRIDGE
# The kubelet's cgroup root, created in every v1 hierarchy (and removed again).
CGROUP_NAME=ferroflow-e2e-$BRIDGE
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
# What the kubelet and the CNI bridge plugin may change on the host (the kubelet's
# setupKernelTunables; ip_forward by a gateway bridge). They are machine-wide,
# so the record is too: the first real node to start records them, each node
# registers under HOST_RECORD_DIR/nodes, and the last one to stop writes them
# back (/run: a reboot resets both the settings and the record).
HOST_SETTINGS=(net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic
  kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_RECORD_DIR=/run/ferroflow-e2e
HOST_SETTINGS_RECORD=$HOST_RECORD_DIR/host-settings.before
REAL_NODE_TAINT=ferroflow.dev/real-node

# live_nodes: the registered real nodes whose containerd or kubelet still runs
# (stale registrations are dropped). Call with the lock on $HOST_RECORD_DIR held.
live_nodes() {
  local reg dir pid pid_file
  for reg in "$HOST_RECORD_DIR"/nodes/*; do
    [[ -f $reg ]] || continue
    dir=$(cat "$reg")
    for pid_file in "$dir/../run/kubelet.pid" "$dir/../run/containerd.pid"; do
      pid=$(cat "$pid_file" 2>/dev/null) || continue
      if [[ -e /proc/$pid ]]; then
        basename "$reg"
        continue 2
      fi
    done
    rm -f "$reg"
  done
}
