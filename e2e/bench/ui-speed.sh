#!/usr/bin/env bash
# MLflow's web UI in the browser, ferroflow vs `mlflow server` (issue #18): how long until the
# runs table of a 10,000-run experiment shows its first rows, and until a chart of 100 runs'
# 10,000-step metric is drawn. Same bundle (MLflow 3.17.2's), same Postgres (a fresh database
# each), each server alone on the machine, median of 5 loads per page. The driver,
# ui_speed.py, explains the seed and what each time covers.
#
#   bash e2e/bench/ui-speed.sh
#
# Knobs: BENCH_UI_RUNS (10000), BENCH_UI_CHART_RUNS (100), BENCH_UI_STEPS (10000),
# BENCH_UI_LOADS (5), BENCH_SERVERS (ferroflow,mlflow), FERROFLOW_BIN (default: cargo build
# --release), BENCH_OUT (also write the markdown table there), FERROFLOW_BENCH_STATE.
# Postgres: $FERROFLOW_TEST_PG_URL if set, else e2e/setup/postgres.sh's cluster.
#
# A benchmark, not a test: CI never runs it. Traffic goes to 127.0.0.1 only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
state="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/ui-speed-$stamp"
mkdir -p "$state"
log() { printf '[ui-speed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -z "${FERROFLOW_TEST_PG_URL:-}" ]]; then
  eval "$(bash "$root/e2e/setup/postgres.sh")"
fi
eval "$(bash "$root/e2e/setup/venv.sh")"
if [[ -z "${FERROFLOW_UI_DIR:-}" ]]; then
  eval "$(FERROFLOW_PYTHON="$FERROFLOW_VENV/bin/python" bash "$root/scripts/fetch-ui.sh")"
fi
if [[ -z "${FERROFLOW_CHROMIUM:-}" ]]; then
  eval "$(bash "$root/e2e/setup/chromium.sh")"
fi
if [[ -n "${FERROFLOW_BIN:-}" ]]; then
  ferroflow="$FERROFLOW_BIN"
else
  log "building ferroflow (cargo build --release)"
  cargo build --release --bin ferroflow >&2
  ferroflow="${CARGO_TARGET_DIR:-$root/target}/release/ferroflow"
fi
[[ -x "$ferroflow" ]] || { log "error: $ferroflow is not executable"; exit 1; }

log "state and server logs in $state"
status=0
"$FERROFLOW_VENV/bin/python" "$here/ui_speed.py" \
  --servers "${BENCH_SERVERS:-ferroflow,mlflow}" \
  --ferroflow-bin "$ferroflow" --mlflow "$FERROFLOW_VENV/bin/mlflow" \
  --ui-dir "$FERROFLOW_UI_DIR" --chromium "$FERROFLOW_CHROMIUM" --pg-url "$FERROFLOW_TEST_PG_URL" \
  --runs "${BENCH_UI_RUNS:-10000}" --chart-runs "${BENCH_UI_CHART_RUNS:-100}" \
  --steps "${BENCH_UI_STEPS:-10000}" --loads "${BENCH_UI_LOADS:-5}" --state "$state" \
  | tee "$state/raw.jsonl" || status=$?
"$FERROFLOW_VENV/bin/python" "$here/ui_speed.py" report "$state/raw.jsonl" >"$state/results.md"
[[ -z "${BENCH_OUT:-}" ]] || cp "$state/results.md" "$BENCH_OUT"
cat "$state/results.md"
exit "$status"
