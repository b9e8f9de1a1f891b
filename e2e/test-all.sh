#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI run it. Installs what is
# missing (Postgres from Debian packages, the Python venv with the mlflow client, the
# Kubernetes control plane and MinIO built from Go modules), then runs: format and lint checks,
# the Rust unit and integration tests (store conformance on SQLite and Postgres, HTTP,
# cluster e2e), and the pytest suite with the real mlflow client on both backends (the
# artifact tests also with artifacts in MinIO, through `--artifacts-destination s3://…`).
# The cluster has a real node (kubelet + containerd, e2e/cluster/node-up.sh) beside the kwok
# nodes; the host settings it may change are compared before it starts and after teardown.
# Everything it starts is stopped on exit, also when a step fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export FERROFLOW_E2E_STATE=${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}
CACHE=${FERROFLOW_CACHE:-$HOME/.cache/ferroflow}
# A fresh clone (CI) reuses the build cache outside the work tree.
if [[ -n ${CI:-} && -z ${CARGO_TARGET_DIR:-} ]]; then
  export CARGO_TARGET_DIR=$CACHE/target
fi
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

# Two runs on one machine would share the Postgres and control-plane ports and state folder,
# and one's teardown would stop the other's servers: the second run waits for the first.
# The daemons the setup scripts start get `9>&-`: inheriting the lock would hold it after exit.
mkdir -p "$FERROFLOW_E2E_STATE"
exec 9>"$FERROFLOW_E2E_STATE.lock"
if ! flock -n 9; then
  echo "test-all: another run holds $FERROFLOW_E2E_STATE.lock; waiting for it (up to 60 min)" >&2
  flock -w 3600 9 || { echo "test-all: gave up waiting for $FERROFLOW_E2E_STATE.lock" >&2; exit 1; }
fi

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS" >&2; }

# The real node's kubelet and CNI change host settings; teardown must write them back.
host_settings_before=$(bash e2e/cluster/host-settings.sh)

# The Rust build, later the Rust tests, in the background in its own session (see below).
rust_job=
cleanup() {
  local status=$?
  step "teardown"
  if [[ -n $rust_job ]]; then
    kill -- "-$rust_job" 2>/dev/null || true
    wait "$rust_job" 2>/dev/null || true
  fi
  bash e2e/cluster/down.sh >&2 || true
  bash e2e/setup/s3.sh stop >&2 || true
  bash e2e/setup/postgres.sh stop >&2 || true
  local after
  after=$(bash e2e/cluster/host-settings.sh)
  printf 'host settings before the cluster / after teardown:\n%s\n' \
    "$(paste -d' ' <(echo "$host_settings_before") <(echo "$after"))" >&2
  if [[ -n $(ls /run/ferroflow-e2e/nodes 2>/dev/null) ]]; then
    echo "test-all: another real node (another cluster) still runs; host settings not compared" >&2
  elif [[ $after != "$host_settings_before" ]]; then
    echo "test-all: teardown left host settings changed" >&2
    status=1
  fi
  exit "$status"
}
trap cleanup EXIT

step "toolchain"
if ! command -v cargo >/dev/null; then
  echo "cargo is required (rustup)" >&2
  exit 1
fi
# rustfmt and clippy ship with rustup's default profile; add them only when missing.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add rustfmt clippy
fi

step "format and lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "generated files are committed"
make --no-print-directory generate-check

step "rust test build (in the background, beside the setup steps below)"
# The setup steps mostly wait on daemons starting; compiling the test binaries meanwhile takes
# them off the critical path. Its own session, so teardown can stop the whole build.
rust_build_log=$FERROFLOW_E2E_STATE/rust-build.log
setsid bash -c 'cargo build --locked --bin ferroflow && cargo test --locked --all-targets --no-run' \
  >"$rust_build_log" 2>&1 9>&- &
rust_job=$!

step "postgres"
# Capture first: `eval "$(cmd)"` would swallow a failing cmd under set -e.
pg_env=$(bash e2e/setup/postgres.sh 9>&-)
eval "$pg_env"
export FERROFLOW_TEST_PG_URL

step "s3 server (MinIO from Go modules)"
s3_env=$(bash e2e/setup/s3.sh 9>&-)
eval "$s3_env"
export FERROFLOW_E2E_S3_ENDPOINT FERROFLOW_E2E_S3_BUCKET FERROFLOW_E2E_S3_ACCESS_KEY_ID \
  FERROFLOW_E2E_S3_SECRET_ACCESS_KEY FERROFLOW_E2E_S3_REGION

step "python venv with mlflow"
venv_env=$(bash e2e/setup/venv.sh)
eval "$venv_env"
export FERROFLOW_VENV

step "Dockerfile lint (static: no container engine here)"
"$FERROFLOW_VENV/bin/hadolint" Dockerfile

step "kubernetes control plane and the real node"
cluster_env=$(bash e2e/cluster/up.sh 9>&-)
eval "$cluster_env"
export FERROFLOW_KUBECONFIG FERROFLOW_KUBECTL

step "rust test build"
rust_build_status=0
wait "$rust_job" || rust_build_status=$?
rust_job=
cat "$rust_build_log" >&2
if [[ $rust_build_status -ne 0 ]]; then
  echo "test-all: building the Rust tests failed" >&2
  exit "$rust_build_status"
fi

step "rust tests beside the mlflow client e2e (sqlite and postgres; artifacts also on S3)"
# Side by side: the pytest lanes spend most of their time waiting on Pods and servers. The Rust
# tests use their own namespaces, databases and (for the outage test) their own Postgres.
rust_tests_log=$FERROFLOW_E2E_STATE/rust-tests.log
setsid cargo test --locked --all-targets >"$rust_tests_log" 2>&1 9>&- &
rust_job=$! # teardown stops it, as it stops the build
# Concurrent lanes: the cluster's tests in one, the others once per backend (run-pytest.sh).
pytest_status=0
FERROFLOW_E2E_LANES=1 FERROFLOW_BIN=$TARGET/debug/ferroflow bash e2e/run-pytest.sh || pytest_status=$?
rust_tests_status=0
wait "$rust_job" || rust_tests_status=$?
rust_job=
step "rust tests (exit $rust_tests_status)"
cat "$rust_tests_log" >&2
if [[ $rust_tests_status -ne 0 || $pytest_status -ne 0 ]]; then
  echo "test-all: rust tests exit $rust_tests_status, pytest exit $pytest_status" >&2
  exit 1
fi

step "done"
