#!/usr/bin/env bash
# Search right after heavy logging (issue #11): how fast the search endpoints answer in the first
# minute after a bulk load, against the same database once it has settled.
#
#   bash e2e/bench/search-after-load.sh
#
# Per repetition and server, on a FRESH database each time (one server running at a time):
#
#   1. log-batch  8 clients, 1000 points per request over 10 keys, 10 s at full speed
#   2. log-metric 32 clients, one point per request, 10 s
#   3. sweep      2,000 runs (3 tags, 5 params, 5 metrics each), 50 registered models with 4
#                 versions each, 200 logged models (loadgen sweep)
#   4. first minute: every search path of `loadgen search-paths` (runs: metric+param filter with
#      metric order, param order, tag filter, default order; experiments, registered models,
#      model versions, logged models), 8 clients, a few seconds each, no warm-up
#   5. settle: VACUUM ANALYZE (what autovacuum does within a minute or two); SQLite: nothing
#   6. settled: the same search paths again
#
# MLflow is measured warm: between 3 and 4 one untimed pass over the search paths (its workers
# are ~3x slower on their first requests), so its "first minute" starts later than ferroflow's.
#
# Servers (BENCH_SERVERS, comma separated): ferroflow (Postgres), ferroflow-sqlite (the embedded
# default), mlflow (mlflow server --workers 4, gunicorn, Postgres). Default: ferroflow,ferroflow-sqlite.
# Knobs: BENCH_REPS (5), BENCH_MLFLOW_REPS (2), BENCH_PATH_DURATION (4 s per search path),
# BENCH_SWEEP_RUNS (2000), BENCH_LOG_BATCH_DURATION (10), BENCH_LOG_METRIC_DURATION (10),
# BENCH_AUTO_EXPLAIN=1 (log the plan of every statement slower than 200 ms with
# EXPLAIN ANALYZE BUFFERS into the cluster's postgres.log), FERROFLOW_BIN (default: cargo build
# --release), BENCH_OUT (the markdown table; default: stdout only), FERROFLOW_BENCH_STATE.
# Postgres: $FERROFLOW_TEST_PG_URL if set, else e2e/setup/postgres.sh's cluster.
#
# A benchmark, not a test: CI never runs it. Traffic goes to 127.0.0.1 only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

reps="${BENCH_REPS:-5}"
mlflow_reps="${BENCH_MLFLOW_REPS:-2}"
servers_csv="${BENCH_SERVERS:-ferroflow,ferroflow-sqlite}"
path_duration="${BENCH_PATH_DURATION:-4}"
sweep_runs="${BENCH_SWEEP_RUNS:-2000}"
lb_duration="${BENCH_LOG_BATCH_DURATION:-10}"
lm_duration="${BENCH_LOG_METRIC_DURATION:-10}"
start_timeout=180

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
state="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}/search-after-load-$stamp"
mkdir -p "$state"
raw="$state/raw.jsonl"
: >"$raw"

log() { printf '[search-after-load %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

IFS=',' read -r -a servers <<<"$servers_csv"
for s in "${servers[@]}"; do
  case "$s" in ferroflow|ferroflow-sqlite|mlflow) ;; *) die "unknown server $s in BENCH_SERVERS" ;; esac
done

# ---------------------------------------------------------------------------------------------
# setup

log "state and logs in $state"
if [[ -z "${FERROFLOW_TEST_PG_URL:-}" ]]; then
  eval "$(bash "$root/e2e/setup/postgres.sh")"
fi
pg_url="$FERROFLOW_TEST_PG_URL"
pg_base="postgresql://${pg_url#*://}"; pg_base="${pg_base%/*}"
psql_bin="$(command -v psql || echo "$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k4,4n | tail -n1)/psql")"
psql_admin() { "$psql_bin" "$pg_url" -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_db() { local db="$1"; shift; "$psql_bin" "${pg_url%/*}/$db" -v ON_ERROR_STOP=1 -qAt "$@"; }
command -v curl >/dev/null || die "curl is needed"

if [[ ",$servers_csv," == *",mlflow,"* ]]; then
  eval "$(bash "$root/e2e/setup/venv.sh")"
  mlflow="$FERROFLOW_VENV/bin/mlflow"
  export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
fi
if [[ -n "${FERROFLOW_BIN:-}" ]]; then
  ferroflow="$FERROFLOW_BIN"
else
  log "building ferroflow (cargo build --release)"
  cargo build --release --bin ferroflow >&2
  ferroflow="${CARGO_TARGET_DIR:-$root/target}/release/ferroflow"
fi
[[ -x "$ferroflow" ]] || die "$ferroflow is not executable"
log "building the load generator"
cargo build --release --manifest-path "$here/loadgen/Cargo.toml" >&2
loadgen="${CARGO_TARGET_DIR:-$here/loadgen/target}/release/ferroflow-loadgen"

record() { cat >>"$raw"; tail -n1 "$raw" | cut -c1-300 >&2; }

python3 - "$ferroflow" "$pg_url" "$psql_bin" <<'EOF' | record
import json, os, subprocess, sys
ferroflow, pg_url, psql = sys.argv[1:4]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:
        return f"? ({e})"
print(json.dumps({
    "measure": "facts",
    "cores": os.cpu_count(),
    "postgres": run(psql, pg_url, "-qAtc", "SHOW server_version"),
    "ferroflow": run(ferroflow, "--version"),
    "commit": run("git", "rev-parse", "--short", "HEAD"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}))
EOF

# ---------------------------------------------------------------------------------------------
# one server at a time

server_pid=""
db=""
cleanup() {
  local status=$?
  stop_server
  drop_db
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port, group_alive
source "$here/lib.sh"


stop_server() {
  [[ -n "$server_pid" ]] || return 0
  if group_alive "$server_pid"; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while group_alive "$server_pid" && (( SECONDS < deadline )); do sleep 0.2; done
    group_alive "$server_pid" && kill -KILL -- "-$server_pid" 2>/dev/null || true
  fi
  server_pid=""
}

drop_db() {
  [[ -n "$db" ]] || return 0
  psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" 2>/dev/null || true
  db=""
}

# start_server NAME REP: a fresh database and the server on it; sets url, store
start_server() {
  local name="$1" rep="$2" p store
  p="$(free_port)"
  url="http://127.0.0.1:$p"
  case "$name" in
    ferroflow|mlflow)
      db="bench_sal_${name}_${rep}_${stamp,,}"
      psql_admin -c "CREATE DATABASE \"$db\""
      if [[ "${BENCH_AUTO_EXPLAIN:-0}" == 1 ]]; then
        psql_admin -c "ALTER DATABASE \"$db\" SET session_preload_libraries = 'auto_explain'" \
          -c "ALTER DATABASE \"$db\" SET auto_explain.log_min_duration = '200ms'" \
          -c "ALTER DATABASE \"$db\" SET auto_explain.log_analyze = on" \
          -c "ALTER DATABASE \"$db\" SET auto_explain.log_buffers = on"
      fi
      store="$pg_base/$db" ;;
    ferroflow-sqlite)
      sqlite_file="$state/$name-$rep.db"
      store="sqlite:///$sqlite_file" ;;
  esac
  local artifacts="$state/artifacts-$name-$rep"
  mkdir -p "$artifacts"
  local cmd
  case "$name" in
    ferroflow|ferroflow-sqlite)
      cmd=("$ferroflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts") ;;
    mlflow)
      cmd=("$mlflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts" --workers 4 "--gunicorn-opts=--timeout 120") ;;
  esac
  log "rep $rep: starting $name: ${cmd[*]}"
  local pidfile="$state/$name-$rep.pid"
  setsid bash -c 'echo $$ >"$0"; cd "$1" && shift && exec "$@"' "$pidfile" "$artifacts" "${cmd[@]}" \
    >"$state/$name-$rep.log" 2>&1 &
  local deadline=$((SECONDS + start_timeout))
  until [[ -s "$pidfile" ]]; do (( SECONDS < deadline )) || die "$name did not start"; sleep 0.05; done
  server_pid="$(cat "$pidfile")"
  until curl -fsS --max-time 2 "$url/health" >/dev/null 2>&1; do
    group_alive "$server_pid" || { tail -n 40 "$state/$name-$rep.log" >&2; die "$name exited during start-up"; }
    (( SECONDS < deadline )) || die "$name not healthy within ${start_timeout}s"
    sleep 0.2
  done
}

settle() {
  local name="$1"
  case "$name" in
    ferroflow|mlflow) psql_db "$db" -c "VACUUM ANALYZE" ;;
    # SQLite gathers no statistics by itself (nor does ferroflow run ANALYZE on it): its
    # settled state is the same database, measured again.
    ferroflow-sqlite) : ;;
  esac
}

measure() {
  local name="$1" rep="$2" lab
  lab=(--label "server=$name" --label "rep=$rep")
  start_server "$name" "$rep"
  "$loadgen" log-batch --url "$url" --clients 8 --metrics 1000 --keys 10 --requests 400 \
    --duration "$lb_duration" "${lab[@]}" | record
  "$loadgen" log-metric --url "$url" --clients 32 --requests 2000 --duration "$lm_duration" \
    "${lab[@]}" | record
  # One sweep client on SQLite: concurrent log-batches there fail with "database is locked"
  # (SQLITE_BUSY when a transaction that read first upgrades to a write), a write-path defect
  # this benchmark does not measure.
  local sweep_clients=8
  [[ "$name" != ferroflow-sqlite ]] || sweep_clients=1
  "$loadgen" sweep --url "$url" --runs "$sweep_runs" --clients "$sweep_clients" "${lab[@]}" | record
  local exp
  exp="$(tail -n1 "$raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')"
  if [[ "$name" == mlflow ]]; then
    "$loadgen" search-paths --url "$url" --experiment-id "$exp" --clients 8 --duration "$path_duration" \
      "${lab[@]}" --label phase=warm-up | record
  fi
  "$loadgen" search-paths --url "$url" --experiment-id "$exp" --clients 8 --duration "$path_duration" \
    "${lab[@]}" --label phase=first | record
  settle "$name"
  "$loadgen" search-paths --url "$url" --experiment-id "$exp" --clients 8 --duration "$path_duration" \
    "${lab[@]}" --label phase=settled | record
  stop_server
  drop_db
}

for rep in $(seq 1 "$reps"); do
  for s in "${servers[@]}"; do
    if [[ "$s" == mlflow ]] && (( rep > mlflow_reps )); then continue; fi
    measure "$s" "$rep"
  done
done
python3 -c 'import json; print(json.dumps({"measure":"end","loadavg_end":open("/proc/loadavg").read().split()[:3]}))' | record

python3 "$here/search_after_load_report.py" "$raw" >"$state/results.md"
[[ -z "${BENCH_OUT:-}" ]] || cp "$state/results.md" "$BENCH_OUT"
cat "$state/results.md"
log "raw results: $raw"
