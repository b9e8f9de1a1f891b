#!/usr/bin/env bash
# Runs the end-to-end pytest suite (the real mlflow client against a running tracking server).
#
#   FERROFLOW_BIN=target/debug/ferroflow e2e/run-pytest.sh [pytest args...]
#   FERROFLOW_REFERENCE=mlflow e2e/run-pytest.sh [pytest args...]   # MLflow's own server
#
# Sets up what is missing first: the Python venv (e2e/setup/venv.sh) and, unless
# FERROFLOW_TEST_PG_URL is already set, the throwaway Postgres cluster (e2e/setup/postgres.sh;
# set FERROFLOW_E2E_BACKENDS=sqlite to skip Postgres entirely) and, unless
# FERROFLOW_E2E_S3_ENDPOINT is already set, the S3 server the artifact tests also run against
# (e2e/setup/s3.sh: MinIO built from Go modules; FERROFLOW_E2E_ARTIFACT_STORES=local skips it).
# Exits with pytest's exit code.
#
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
set +e
# --durations: the slowest tests are named in every run, so the suite's time budget is watched.
python -m pytest e2e/tests -q -p no:cacheprovider -rfEs --durations=25 "$@"
status=$?
set -e
exit "$status"
