#!/usr/bin/env bash
# Start the real node of the e2e cluster beside the kwok nodes: a CNI bridge
# with its own subnet and guards, a private containerd (root, state and socket
# under the state folder), the local images, and a kubelet that registers Node
# $NODE_NAME, tainted ferroflow.dev/real-node:NoSchedule and labelled
# ferroflow.dev/real-node=true, so only Pods that ask for it land there. Called
# by up.sh once the control plane is up (needs root). Idempotent. Prints
# `export ...` lines for the tests on stdout. When a step fails, node-down.sh
# undoes what was done (host settings included).
#
# Guards (this machine may only send traffic to loopback and to namespaces the
# tests made): Pods get no default route and no masquerading, only routes to
# the Pod subnet and the Service range; an nftables table drops forwarded
# traffic that leaves or enters the bridge; the bridge is no gateway, so
# ip_forward stays as it was; the kubelet gets `resolvConf: ""` (Pods never use
# the host's resolver) and a PATH without iptables (it adds no chains); the
# images set MLFLOW_DISABLE_TELEMETRY and DO_NOT_TRACK.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=node-env.sh
source "$HERE/node-env.sh"
BIN=${1:?usage: node-up.sh <cluster bin folder>}
API_PORT=$((PORT_BASE + 443))
PKI=$STATE/pki
RUN=$STATE/run
LOGS=$STATE/logs

log() { echo "node-up.sh: $*" >&2; }
kubectl() { "$BIN/kubectl" --kubeconfig="$STATE/kubeconfig" "$@"; }

[[ $(id -u) == 0 ]] || { log "the real node needs root (bridge, mounts, cgroups)"; exit 1; }

on_failure() {
  local status=$?
  ((status == 0)) && return
  log "failed (exit $status); undoing the real node"
  for name in kubelet containerd; do
    [[ -f $LOGS/$name.log ]] && { log "last lines of $LOGS/$name.log:"; tail -n 15 "$LOGS/$name.log" >&2; }
  done
  bash "$HERE/node-down.sh" >&2 || true
}
trap on_failure EXIT

# --- packages (a fresh CI machine has none of them) --------------------------
# shellcheck source=../images/lib.sh
source "$HERE/../images/lib.sh"
need_packages containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
  nft:nftables catatonit:catatonit mmdebstrap:mmdebstrap umoci:umoci

mkdir -p "$NODE_DIR" "$RUN" "$LOGS"
# node-down.sh finds kubectl here.
ln -sfn "$BIN" "$NODE_DIR/bin"

# --- host settings: recorded by the first real node on this machine ----------
mkdir -p "$HOST_RECORD_DIR/nodes"
(
  flock 7
  mkdir -p "$HOST_RECORD_DIR/nodes"
  others=$(live_nodes | grep -vxF "$BRIDGE" || true)
  # A re-run (our registration live) or another live node: the record stands.
  if [[ -z $others && ! -f $HOST_RECORD_DIR/nodes/$BRIDGE ]] || [[ ! -f $HOST_SETTINGS_RECORD ]]; then
    bash "$HERE/host-settings.sh" >"$HOST_SETTINGS_RECORD.tmp"
    mv "$HOST_SETTINGS_RECORD.tmp" "$HOST_SETTINGS_RECORD"
  fi
  echo "$NODE_DIR" >"$HOST_RECORD_DIR/nodes/$BRIDGE"
) 7>"$HOST_RECORD_DIR/.lock"

# --- images (cold: ~3 min for the Python image; warm: cache hits) -----------
# Captured first: a failing build must stop this script (set -e, pipefail).
pause_image=$(bash "$HERE/../images/pause.sh" | tail -n 1)
python_image=$(bash "$HERE/../images/python.sh" | tail -n 1)
read -r pause_archive pause_ref <<<"$pause_image"
read -r python_archive python_ref <<<"$python_image"

# --- bridge, CNI config, guards ------------------------------------------------
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
fi
# No IPv6 on the bridge: nothing here needs it, and no router solicitations.
sysctl -qw "net.ipv6.conf.$BRIDGE.disable_ipv6=1" 2>/dev/null || true
ip addr replace "$NODE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

# inet: IPv4 and IPv6. The policy stays accept (other forwarding on this
# machine is not ours to judge); a drop in any base chain is final.
nft -f - <<NFT
table inet $NFT_TABLE
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "$BRIDGE" oifname != "$BRIDGE" counter drop comment "ferroflow e2e: Pods reach only the bridge"
    oifname "$BRIDGE" iifname != "$BRIDGE" counter drop comment "ferroflow e2e: nothing is routed into the bridge"
  }
}
NFT

mkdir -p "$NODE_DIR/net.d" "$NODE_DIR/cni-ipam"
# isGateway false: the bridge already has its address, and a gateway bridge
# would turn on net.ipv4.ip_forward. Routes: the subnet (on link) and the
# Service range via the bridge; no default route.
cat >"$NODE_DIR/net.d/10-$BRIDGE.conflist" <<CNI
{
  "cniVersion": "0.4.0",
  "name": "$BRIDGE",
  "plugins": [{
    "type": "bridge",
    "bridge": "$BRIDGE",
    "isGateway": false,
    "isDefaultGateway": false,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": "$NODE_DIR/cni-ipam",
      "ranges": [[{"subnet": "$NODE_SUBNET", "rangeStart": "$SUBNET_PREFIX.10",
                   "rangeEnd": "$SUBNET_PREFIX.250", "gateway": "$NODE_IP"}]],
      "routes": [{"dst": "$SERVICE_RANGE", "gw": "$NODE_IP"}]
    }
  }]
}
CNI

# --- containerd ----------------------------------------------------------------
ctd=$NODE_DIR/containerd
mkdir -p "$ctd/root" "$ctd/state" "$ctd/runc"
cat >"$ctd/config.toml" <<TOML
version = 2
root = "$ctd/root"
state = "$ctd/state"
# opt would create /opt/containerd; the others do not apply here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  # No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj below containerd's.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$ctd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/net.d"
    max_conf_num = 1
TOML

# pid_of_running/start as in up.sh, for binaries outside $BIN.
running() {
  local pid argv0
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  argv0=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/cmdline" | head -n 1) || return 1
  [[ $argv0 == "$2" ]]
}
launch() {
  local name=$1 exe=$2
  shift 2
  if running "$name" "$exe"; then
    log "$name already running (pid $(cat "$RUN/$name.pid"))"
    return 0
  fi
  log "starting $name (log: $LOGS/$name.log)"
  echo "--- $(date -u +%FT%TZ) node-up.sh starts $name" >>"$LOGS/$name.log"
  # setsid: the node outlives this script (as the control plane does). env and
  # setsid exec in place (setsid forks only for a process-group leader, which a
  # job of a script is not), so $! is the daemon; checked all the same.
  env PATH="${LAUNCH_PATH:-$PATH}" setsid "$exe" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  disown
  local deadline=$((SECONDS + 5))
  until running "$name" "$exe"; do
    ((SECONDS < deadline)) || { log "$name did not start"; exit 1; }
    sleep 0.1
  done
}

launch containerd "$(command -v containerd)" --config "$ctd/config.toml"
ctr() { command ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
deadline=$((SECONDS + 60))
until ctr version >/dev/null 2>&1; do
  running containerd "$(command -v containerd)" || { log "containerd exited"; exit 1; }
  ((SECONDS < deadline)) || { log "containerd not answering after 60s"; exit 1; }
  sleep 0.2
done

# --- images into containerd (CRI namespace k8s.io) --------------------------------
bash "$HERE/../images/import.sh" "$pause_archive" "$pause_ref"
bash "$HERE/../images/import.sh" "$python_archive" "$python_ref"

# --- kubelet -----------------------------------------------------------------------
bash "$HERE/pki.sh" "$PKI" "$NODE_NAME" "$NODE_IP"
kl=$NODE_DIR/kubelet
mkdir -p "$kl/root" "$NODE_DIR/pod-logs"
# shellcheck source=kubeconfig.sh
source "$HERE/kubeconfig.sh"
write_kubeconfig "$kl/kubeconfig" "$NODE_NAME" "$PKI/kubelet-$NODE_NAME.crt" "$PKI/kubelet-$NODE_NAME.key"

# The kubelet's cgroup root must exist in every hierarchy it uses.
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -L ${hierarchy%/} ]] && continue
  mkdir -p "$hierarchy$CGROUP_NAME"
done

cat >"$kl/config.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-$NODE_NAME-$NODE_IP-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-$NODE_NAME-$NODE_IP-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
# This machine: cgroup v1 without systemd, no CAP_SYS_RESOURCE.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_NAME
oomScoreAdj: 0
# Pods get no resolver at all (never the host's).
resolvConf: ""
registerWithTaints:
- {key: $REAL_NODE_TAINT, effect: NoSchedule}
podLogsDir: $NODE_DIR/pod-logs
maxPods: 16
failSwapOn: false
serializeImagePulls: false
# The images are imported, never pulled: the kubelet must not collect them, and a
# full disk (benchmarks) must not evict the test Pods.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
KUBELET

# PATH without /usr/sbin: no iptables, so the kubelet adds no KUBE-* chains to
# the host's firewall (it only does that for other components' sake).
LAUNCH_PATH=/usr/local/bin:/usr/bin:/bin launch kubelet "$BIN/kubelet" --config="$kl/config.yaml" \
  --kubeconfig="$kl/kubeconfig" --root-dir="$kl/root" --hostname-override="$NODE_NAME" \
  --node-ip="$NODE_IP" --node-labels="$REAL_NODE_TAINT=true,type=real" --v=1

deadline=$((SECONDS + 120))
until [[ $(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]; do
  running kubelet "$BIN/kubelet" || { log "kubelet exited"; exit 1; }
  ((SECONDS < deadline)) || { log "node $NODE_NAME not Ready after 120s"; exit 1; }
  sleep 0.5
done
log "node $NODE_NAME Ready ($NODE_IP on $BRIDGE)"
trap - EXIT

printf 'export FERROFLOW_E2E_NODE_NAME=%q\n' "$NODE_NAME"
printf 'export FERROFLOW_E2E_NODE_IP=%q\n' "$NODE_IP"
printf 'export FERROFLOW_E2E_NODE_SUBNET=%q\n' "$NODE_SUBNET"
printf 'export FERROFLOW_E2E_NODE_BRIDGE=%q\n' "$BRIDGE"
printf 'export FERROFLOW_E2E_PYTHON_IMAGE=%q\n' "$python_ref"
printf 'export FERROFLOW_E2E_HOST_SETTINGS_RECORD=%q\n' "$HOST_SETTINGS_RECORD"
