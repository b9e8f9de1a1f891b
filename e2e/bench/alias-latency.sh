#!/usr/bin/env bash
# Alias move → Deployment template latency of ModelDeployment (issue #14): p50/p99 over
# BENCH_MOVES (20) moves through git (RegisteredModel re-applied) and 20 through the REST API
# (MlflowClient.set_registered_model_alias). Target: p99 under 1 s.
#
#   eval "$(bash e2e/cluster/up.sh)"     # FERROFLOW_E2E_REAL_NODE=0 is enough
#   FERROFLOW_BIN=target/debug/ferroflow bash e2e/bench/alias-latency.sh
#
# BENCH_OPERATOR_ARGS is appended to `ferroflow operator`. Not part of any default run; results
# in runs/*-alias-latency.md.
#
# Starts, on a fresh Postgres database ($FERROFLOW_TEST_PG_URL, else e2e/setup/postgres.sh's
# cluster), `ferroflow server` and `ferroflow operator` (admin kubeconfig), runs
# alias_latency.py, stops exactly those two processes and drops the database.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

: "${FERROFLOW_BIN:?set FERROFLOW_BIN to the ferroflow binary}"
: "${FERROFLOW_KUBECTL:?start the e2e cluster: eval \"\$(bash e2e/cluster/up.sh)\"}"
: "${FERROFLOW_KUBECONFIG:?start the e2e cluster: eval \"\$(bash e2e/cluster/up.sh)\"}"
STATE=${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/alias-latency
mkdir -p "$STATE"

eval "$(bash "$ROOT/e2e/setup/venv.sh")"
if [[ -z ${FERROFLOW_TEST_PG_URL:-} ]]; then
  eval "$(bash "$ROOT/e2e/setup/postgres.sh")"
fi
psql_bin="$(command -v psql || echo "$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k4,4n | tail -n1)/psql")"
db=bench_alias_$$
"$psql_bin" "$FERROFLOW_TEST_PG_URL" -qc "CREATE DATABASE $db" >/dev/null
store=${FERROFLOW_TEST_PG_URL%/*}/$db

kubectl() { "$FERROFLOW_KUBECTL" --kubeconfig="$FERROFLOW_KUBECONFIG" "$@"; }
kubectl apply --server-side --force-conflicts -k "$ROOT/crds" >/dev/null
# Polled rather than `kubectl wait --for=condition`, which fails at once on a CRD the API server
# has not yet given any condition (as e2e/cluster/up.sh does).
deadline=$((SECONDS + 60))
until [[ $(kubectl get crd modeldeployments.ferroflow.dev \
  -o jsonpath='{.status.conditions[?(@.type=="Established")].status}') == True ]]; do
  ((SECONDS < deadline)) || { echo "alias-latency.sh: the ModelDeployment CRD was not established in 60 s" >&2; exit 1; }
  sleep 0.2
done

port=$(free_port)
metrics_port=$(free_port)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$psql_bin" "$FERROFLOW_TEST_PG_URL" -qc "DROP DATABASE IF EXISTS $db" >/dev/null || true
}
trap cleanup EXIT

"$FERROFLOW_BIN" server --port "$port" --backend-store-uri "$store" \
  --artifacts-destination "$STATE/artifacts" >"$STATE/server.log" 2>&1 &
pids+=($!)
# shellcheck disable=SC2086  # BENCH_OPERATOR_ARGS is a list of flags
KUBECONFIG=$FERROFLOW_KUBECONFIG "$FERROFLOW_BIN" operator --backend-store-uri "$store" \
  --metrics-address "127.0.0.1:$metrics_port" --lease-name "bench-alias-$$" \
  ${BENCH_OPERATOR_ARGS:-} >"$STATE/operator.log" 2>&1 &
pids+=($!)

deadline=$((SECONDS + 60))
until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 &&
  curl -fsS "http://127.0.0.1:$metrics_port/leader" >/dev/null 2>&1; do
  ((SECONDS < deadline)) || { echo "alias-latency.sh: server or operator not up in 60 s (logs in $STATE)" >&2; exit 1; }
  sleep 0.2
done

# shellcheck disable=SC1091
source "$FERROFLOW_VENV/bin/activate"
MLFLOW_TRACKING_URI=http://127.0.0.1:$port MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true \
  python "$HERE/alias_latency.py"
