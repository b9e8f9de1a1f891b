#!/usr/bin/env bash
# Bring up a loopback Kubernetes control plane for ferroflow's e2e tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake
# nodes that run Pods on paper), and the Gateway API CRDs. Builds the binaries first when the cache is
# cold. Idempotent: components already running are left alone, dead ones are
# restarted. The last stdout line is `export FERROFLOW_KUBECONFIG=...`.
#
# Env: FERROFLOW_E2E_STATE (default /tmp/ferroflow-e2e; state goes to
# $FERROFLOW_E2E_STATE/cluster), FERROFLOW_E2E_PORT_BASE (default 16000),
# FERROFLOW_E2E_NODES (default 2), FERROFLOW_CLUSTER_BIN (use these binaries,
# skip build.sh), FERROFLOW_E2E_REAL_NODE (default 1: also start the real node,
# node-up.sh; 0: kwok nodes only).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}/cluster
# Below the ephemeral range (32768+) and clear of 5000/5432/54329.
BASE=${FERROFLOW_E2E_PORT_BASE:-16000}
ETCD_PORT=$((BASE + 379))
ETCD_PEER_PORT=$((BASE + 380))
API_PORT=$((BASE + 443))
KCM_PORT=$((BASE + 257))
SCHED_PORT=$((BASE + 259))
KWOK_PORT=$((BASE + 247))
NODES=${FERROFLOW_E2E_NODES:-2}

PKI=$STATE/pki
RUN=$STATE/run
LOGS=$STATE/logs
KUBECONFIG_PATH=$STATE/kubeconfig
mkdir -p "$PKI" "$RUN" "$LOGS" "$STATE/etcd" "$STATE/kcm" "$STATE/scheduler"

log() { echo "up.sh: $*" >&2; }

if [[ -n ${FERROFLOW_CLUSTER_BIN:-} ]]; then
  BIN=$FERROFLOW_CLUSTER_BIN
else
  BIN=$(bash "$HERE/build.sh" | tail -n 1)
fi
[[ -x $BIN/kube-apiserver ]] || { log "no binaries in '$BIN'"; exit 1; }

# A component counts as running when its pid file names a live process whose
# argv[0] is that component's binary (any bin folder: a rebuilt cache must not
# start a second set on the same ports) and whose arguments name this state
# folder (other clusters on the machine run the same binaries).
pid_of_running() {
  local name=$1 pid argv0
  pid=$(cat "$RUN/$name.pid" 2>/dev/null) || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  argv0=$(tr '\0' '\n' <"/proc/$pid/cmdline" | head -n 1)
  [[ $argv0 == */$name ]] || return 1
  grep -qF "$STATE/" "/proc/$pid/cmdline" || return 1
  echo "$pid"
}

start() {
  local name=$1 pid
  shift
  if pid=$(pid_of_running "$name"); then
    log "$name already running (pid $pid)"
    return 0
  fi
  log "starting $name (log: $LOGS/$name.log)"
  echo "--- $(date -u +%FT%TZ) up.sh starts $name" >>"$LOGS/$name.log"
  # setsid: the control plane outlives this script and the terminal or test
  # runner that called it; down.sh stops it by PID.
  setsid "$BIN/$name" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  # setsid forks (and its own PID exits at once) when it starts as a process-group
  # leader, so record the component's PID, found by its exact binary path and this
  # cluster's state folder (every component's arguments name it).
  local launcher=$! real="" deadline=$((SECONDS + 10))
  while [[ -z $real && $SECONDS -lt $deadline ]]; do
    real=$(pgrep -n -f "^$BIN/$name .*$STATE/" || true)
    [[ -n $real ]] || sleep 0.1
  done
  echo "${real:-$launcher}" >"$RUN/$name.pid"
}

fail() {
  local name=$1
  shift
  log "$name: $*"
  log "last lines of $LOGS/$name.log:"
  tail -n 40 "$LOGS/$name.log" >&2 || true
  exit 1
}

# wait_http <component> <seconds> <curl args...>: poll until the URL answers
# 2xx, failing early if the component died.
wait_http() {
  local name=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs)) err
  until err=$(curl -fsS -o /dev/null --max-time 2 "$@" 2>&1); do
    pid_of_running "$name" >/dev/null || fail "$name" "exited during start-up"
    ((SECONDS < deadline)) || fail "$name" "not healthy after ${secs}s: $err"
    sleep 0.2
  done
}

started_at=$SECONDS

# --- PKI and the admin kubeconfig ----------------------------------------------
bash "$HERE/pki.sh" "$PKI"
# shellcheck source=kubeconfig.sh
source "$HERE/kubeconfig.sh"
write_kubeconfig "$KUBECONFIG_PATH.tmp" ferroflow-e2e-admin "$PKI/admin.crt" "$PKI/admin.key" default
mv "$KUBECONFIG_PATH.tmp" "$KUBECONFIG_PATH"
ADMIN_TLS=(--cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")
kubectl() { "$BIN/kubectl" --kubeconfig="$KUBECONFIG_PATH" "$@"; }

# --- etcd ----------------------------------------------------------------------
# No fsync: the data is thrown away with the state folder anyway.
start etcd --name=ferroflow-e2e --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="ferroflow-e2e=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --log-level=warn
wait_http etcd 60 "http://127.0.0.1:$ETCD_PORT/readyz"

# --- kube-apiserver ------------------------------------------------------------
# --advertise-address=127.0.0.1 with --endpoint-reconciler-type=none: the
# apiserver would otherwise advertise a non-loopback address, and a loopback one
# is not allowed in Endpoints. Nothing in this cluster needs the endpoints of
# the `kubernetes` Service (there are no real kubelets or pods).
start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --endpoint-reconciler-type=none \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=Node,RBAC --allow-privileged=true --profiling=false \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP --v=1
wait_http kube-apiserver 120 "${ADMIN_TLS[@]}" "https://127.0.0.1:$API_PORT/readyz"

# --- kube-controller-manager ----------------------------------------------------
start kube-controller-manager --kubeconfig="$KUBECONFIG_PATH" \
  --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/kcm" \
  --leader-elect=false --use-service-account-credentials=false \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --kube-api-qps=200 --kube-api-burst=400 --profiling=false --v=1
wait_http kube-controller-manager 60 -k "https://127.0.0.1:$KCM_PORT/healthz"

# --- kube-scheduler (configured by file: the bare client flags are deprecated) --
cat >"$STATE/scheduler.yaml" <<SCHEDULER
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$KUBECONFIG_PATH", qps: 200, burst: 400}
leaderElection: {leaderElect: false}
SCHEDULER
start kube-scheduler --config="$STATE/scheduler.yaml" \
  --authentication-kubeconfig="$KUBECONFIG_PATH" --authorization-kubeconfig="$KUBECONFIG_PATH" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$STATE/scheduler" --v=1
wait_http kube-scheduler 60 -k "https://127.0.0.1:$SCHED_PORT/healthz"

# --- kwok: stock stages from the kwok module, then ours -------------------------
# --node-ip=127.0.0.1 keeps any apiserver->"kubelet" call (logs, exec) on
# loopback, landing on kwok's own server.
cat "$BIN/kwok-default-stages.yaml" "$HERE/kwok-stages.yaml" >"$STATE/kwok-stages.yaml"
start kwok --kubeconfig="$KUBECONFIG_PATH" --config="$STATE/kwok-stages.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --cidr=10.244.0.0/16 --node-ip=127.0.0.1 --node-port="$KWOK_PORT" \
  --server-address="127.0.0.1:$KWOK_PORT" --node-lease-duration-seconds=40 \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key"
wait_http kwok 60 -k "https://127.0.0.1:$KWOK_PORT/healthz"

# --- fake nodes; wait until they are Ready and the default ServiceAccount exists
for ((i = 0; i < NODES; i++)); do
  cat <<NODE
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
NODE
done | kubectl apply -f - >&2
kubectl wait --for=condition=Ready node --selector=type=kwok --timeout=90s >&2 ||
  fail kwok "fake nodes did not become Ready"
# Pods in a namespace are rejected until its `default` ServiceAccount exists.
kubectl wait --for=create serviceaccount/default --namespace=default --timeout=60s >&2 ||
  fail kube-controller-manager "no default ServiceAccount"

# --- Gateway API CRDs (HTTPRoute: ModelDeployment's exact traffic split) --------
# Server-side: HTTPRoute's CRD is too big for client-side apply's annotation.
kubectl apply --server-side --field-manager=ferroflow-e2e -f "$(bash "$HERE/gateway-api.sh")" >&2
# Polled rather than `kubectl wait --for=condition`: that fails at once ("<nil> is of the type
# <nil>") when it reads the CRD before the API server has written any condition.
deadline=$((SECONDS + 60))
until [[ $(kubectl get crd httproutes.gateway.networking.k8s.io \
  -o jsonpath='{.status.conditions[?(@.type=="Established")].status}') == True ]]; do
  ((SECONDS < deadline)) || fail kube-apiserver "the Gateway API CRDs were not established"
  sleep 0.2
done

log "control plane up in $((SECONDS - started_at))s; kubectl: $BIN/kubectl"

# --- the real node (kubelet + containerd), beside the kwok nodes -----------------
if [[ ${FERROFLOW_E2E_REAL_NODE:-1} != 0 ]]; then
  node_started=$SECONDS
  node_env=$(bash "$HERE/node-up.sh" "$BIN")
  echo "$node_env"
  log "real node up in $((SECONDS - node_started))s"
fi
printf 'export FERROFLOW_KUBECTL=%q\n' "$BIN/kubectl"
printf 'export FERROFLOW_KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
