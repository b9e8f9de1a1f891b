#!/usr/bin/env bash
# Runs the end-to-end pytest suite (the real mlflow client against a running tracking server).
#
#   FERROFLOW_BIN=target/debug/ferroflow e2e/run-pytest.sh [test files or node ids] [pytest args...]
#   FERROFLOW_REFERENCE=mlflow e2e/run-pytest.sh [pytest args...]   # MLflow's own server
#
# Sets up what is missing first: the Python venv (e2e/setup/venv.sh) and, unless
# FERROFLOW_TEST_PG_URL is already set, the throwaway Postgres cluster (e2e/setup/postgres.sh;
# set FERROFLOW_E2E_BACKENDS=sqlite to skip Postgres entirely) and, unless
# FERROFLOW_E2E_S3_ENDPOINT is already set, the S3 server the artifact tests also run against
# (e2e/setup/s3.sh: MinIO built from Go modules; FERROFLOW_E2E_ARTIFACT_STORES=local skips it).
# Exits with pytest's exit code.
#
# FERROFLOW_E2E_LANES=1 runs the suite as concurrent pytest processes (see the end of this file).
# Other environment: FERROFLOW_E2E_BACKENDS (sqlite,postgres), FERROFLOW_E2E_ARTIFACT_STORES
# (local,s3), FERROFLOW_E2E_STATE (logs, the Postgres cluster, the S3 data, the UI tests'
# screenshots; default /tmp/ferroflow-e2e), FERROFLOW_VENV, FERROFLOW_PG_PORT, FERROFLOW_S3_PORT,
# FERROFLOW_UI_DIR (the UI bundle; default: fetched by scripts/fetch-ui.sh), FERROFLOW_CHROMIUM.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ -z "${FERROFLOW_BIN:-}" && -z "${FERROFLOW_REFERENCE:-}" ]]; then
  echo "run-pytest.sh: set FERROFLOW_BIN=/path/to/ferroflow or FERROFLOW_REFERENCE=mlflow" >&2
  exit 2
fi
if [[ -n "${FERROFLOW_BIN:-}" ]]; then
  # the suite starts the server from temporary directories: make the path absolute
  FERROFLOW_BIN="$(cd "$(dirname "$FERROFLOW_BIN")" && pwd)/$(basename "$FERROFLOW_BIN")"
  export FERROFLOW_BIN
fi

eval "$("$here/setup/venv.sh")"
backends="${FERROFLOW_E2E_BACKENDS:-sqlite,postgres}"
if [[ ",$backends," == *",postgres,"* && -z "${FERROFLOW_TEST_PG_URL:-}" ]]; then
  eval "$("$here/setup/postgres.sh")"
fi
artifact_stores="${FERROFLOW_E2E_ARTIFACT_STORES:-local,s3}"
if [[ ",$artifact_stores," == *",s3,"* && -z "${FERROFLOW_E2E_S3_ENDPOINT:-}" ]]; then
  s3_env="$("$here/setup/s3.sh")"
  eval "$s3_env"
fi

# The web UI tests: MLflow's UI bundle (for ferroflow; `mlflow server` carries its own, cached
# under ~/.cache/ferroflow/ui) and Debian's chromium to drive it.
if [[ -z "${FERROFLOW_UI_DIR:-}" ]]; then
  eval "$(FERROFLOW_PYTHON="$FERROFLOW_VENV/bin/python" "$here/../scripts/fetch-ui.sh")"
  export FERROFLOW_UI_DIR
fi
if [[ -z "${FERROFLOW_CHROMIUM:-}" ]]; then
  eval "$("$here/setup/chromium.sh")"
  export FERROFLOW_CHROMIUM
fi

# shellcheck disable=SC1091
source "$FERROFLOW_VENV/bin/activate"
cd "$here/.."
state="${FERROFLOW_E2E_STATE:-/tmp/ferroflow-e2e}"
# The mlflow client never removes the folders it downloads models into to load them: the suite
# gets its own TMPDIR, removed when it ends, so runs do not fill /tmp.
export TMPDIR="$state/tmp"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
# --durations: the slowest tests are named in every run, so the suite's time budget is watched.
pytest_cmd=(python -m pytest -q -p no:cacheprovider -rfEs --durations=25)

# wait_pid PID: waits until PID ends, also when a trapped signal interrupts `wait` (the trap
# passes the signal on; pytest then still tears its servers down); its exit code in `code`.
wait_pid() {
  while true; do
    code=0
    wait "$1" || code=$?
    if ((code > 128)) && kill -0 "$1" 2>/dev/null; then
      continue
    fi
    return 0
  done
}

if [[ -z "${FERROFLOW_E2E_LANES:-}" ]]; then
  # Test files or node ids given: only those; otherwise the whole suite.
  targets=(e2e/tests)
  for arg in "$@"; do
    if [[ $arg == *.py || $arg == *.py::* ]]; then
      targets=()
      break
    fi
  done
  # In the background, so a SIGTERM or Ctrl-C here reaches pytest (which tears its servers
  # down) instead of waiting for it to end.
  "${pytest_cmd[@]}" "${targets[@]}" "$@" &
  pid=$!
  trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
  wait_pid "$pid"
  exit "$code"
fi

# FERROFLOW_E2E_LANES=1 (test-all.sh): the suite in concurrent lanes, each its own pytest. The
# files that use the Kubernetes cluster form one lane on every backend, in order, so a test that
# restarts the API server, kills the operator or installs the chart still has the cluster to
# itself; the other files never touch the cluster and run as one lane per backend beside it
# (each backend has its own server and database, as in a single run).
cluster_files=()
local_files=()
for file in e2e/tests/test_*.py; do
  if grep -qE 'KUBECONFIG|kubectl_helpers|helm_helpers' "$file"; then
    cluster_files+=("$file")
  else
    local_files+=("$file")
  fi
done
lanes=(cluster)
for backend in ${backends//,/ }; do
  lanes+=("$backend")
done
declare -A pids
for lane in "${lanes[@]}"; do
  if [[ $lane == cluster ]]; then
    lane_args=("${cluster_files[@]}")
  else
    lane_args=(--backends "$lane" "${local_files[@]}")
  fi
  rm -rf "$state/pytest-$lane"
  mkdir -p "$state/pytest-$lane"
  "${pytest_cmd[@]}" --basetemp "$state/pytest-$lane/tmp" "${lane_args[@]}" "$@" \
    >"$state/pytest-$lane/output.log" 2>&1 &
  pids[$lane]=$!
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
status=0
for lane in "${lanes[@]}"; do
  wait_pid "${pids[$lane]}"
  lane_status=$code
  printf '\n===== pytest lane %s (exit %s) =====\n' "$lane" "$lane_status"
  cat "$state/pytest-$lane/output.log"
  # 5: no test selected in this lane (e.g. a -k that matches only another lane's files)
  if [[ $lane_status -ne 0 && $lane_status -ne 5 ]]; then
    status=$lane_status
  fi
done
exit "$status"
