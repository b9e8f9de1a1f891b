#!/usr/bin/env bash
# ferroflow vs MLflow tracking-server benchmark: each server measured alone, warm, cross-checked.
#
#   bash e2e/bench/run.sh                         # PostgreSQL: setup, build, measure, table
#   BENCH_BACKEND=sqlite bash e2e/bench/run.sh    # the same against SQLite files
#
# Servers (BENCH_SERVERS, comma separated; default all three):
#
#   ferroflow        ferroflow server
#   mlflow-default   mlflow server                        (3.x default: uvicorn, 4 workers)
#   mlflow-gunicorn  mlflow server --workers 4 --gunicorn-opts "--timeout 120"
#
# Per round (BENCH_REPS rounds, every server once per round, so drift on the machine shows up
# as a difference between rounds) and per server, with no other server running:
#
#   1. a fresh database (PostgreSQL: a new database; SQLite: a new file), the server started on
#      it, GET /health;
#   2. the 10,000-run search experiment seeded into it (ferroflow through its API, MLflow by COPY
#      of the rows its store writes), VACUUM ANALYZE, a read-back check against the first
#      server's content;
#   3. quiet: wait until the server's processes use under 25% of a core (start-up work done);
#   4. per logging measure (log-batch, log-metric): warm-up windows of the measured load until
#      two successive windows differ by less than BENCH_WARMUP_TOLERANCE, or BENCH_WARMUP_MAX
#      windows ran (flagged); then the measured window; then the independent client
#      (crosscheck.py) for the same measure against the same server;
#   5. single-point logging (log-metric, log-param, set-tag at 8 and 64 clients: throughput,
#      CPU, latency p50/p99), after one untimed window of the same load;
#   6. search (max_results 100 and 1000), keep-alive probe, history (below), memory;
#   7. the server stopped (its whole process group gone) and its database dropped.
#
# The load average is recorded before and after each server's turn. The table goes to
# e2e/bench/results.md (BENCH_OUT), raw JSON lines and logs stay in the state directory.
#
# ferroflow is built from the work tree by default; BENCH_FERROFLOW_REV=HEAD (or any commit)
# builds that committed revision from `git archive` instead, FERROFLOW_BIN=path uses a prebuilt
# binary; BENCH_LOADGEN=path a prebuilt load generator.
#
# Knobs (environment): BENCH_BACKEND (postgres | sqlite), BENCH_REPS (3), BENCH_SEARCH_RUNS
# (10000), BENCH_CLIENTS (8), BENCH_LOG_BATCH_DURATION (20 s) / _REQUESTS (300 per client),
# BENCH_LOG_METRIC_DURATION (10 s) / _REQUESTS (20000 per client), BENCH_SEARCH_CLIENTS (4),
# BENCH_SEARCH_DURATION (20 s) / _QUERIES (400), BENCH_KEEPALIVE_REQUESTS (200),
# BENCH_WARMUP_WINDOW (10 s), BENCH_WARMUP_TOLERANCE (0.05), BENCH_WARMUP_MAX (12 windows),
# BENCH_SINGLE_POINT_CLIENTS ("8 64"), BENCH_SINGLE_POINT_DURATION (10 s),
# BENCH_QUIET_MAX (120 s), BENCH_QUIET_SHARE (0.25 of a core), BENCH_CROSSCHECK_DURATION
# (10 s), BENCH_CROSSCHECK_CLIENT (aiohttp | mlflow), BENCH_SERVERS, BENCH_OUT
# (e2e/bench/results.md), BENCH_KEEP_DBS=1 keeps the databases, FERROFLOW_BENCH_STATE (logs;
# default /tmp/ferroflow-bench). PostgreSQL: e2e/setup/postgres.sh's cluster
# (FERROFLOW_E2E_STATE / FERROFLOW_PG_PORT choose which).
#
# History (BENCH_HISTORY=1, the default; e2e/bench/history.py): get-history of
# BENCH_HISTORY_POINTS (100000) points paged as MlflowClient pages it, and the UI charts'
# get-history-bulk-interval over BENCH_HISTORY_BULK_RUNS (100) runs × BENCH_HISTORY_BULK_STEPS
# (10000) steps, each timed against reading the same rows straight from the server's database
# in the same script; the server's RSS around the reads. BENCH_ONLY=history: each server's turn
# is start, quiet, history, stop (no search seed, no logging load).
#
# A benchmark, not a test: CI never runs it. Traffic goes to 127.0.0.1 only.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

backend="${BENCH_BACKEND:-postgres}"
reps="${BENCH_REPS:-3}"
search_runs="${BENCH_SEARCH_RUNS:-10000}"
clients="${BENCH_CLIENTS:-8}"
lb_duration="${BENCH_LOG_BATCH_DURATION:-20}"
lb_requests="${BENCH_LOG_BATCH_REQUESTS:-300}"
lm_duration="${BENCH_LOG_METRIC_DURATION:-10}"
lm_requests="${BENCH_LOG_METRIC_REQUESTS:-20000}"
sp_clients="${BENCH_SINGLE_POINT_CLIENTS:-8 64}"
sp_duration="${BENCH_SINGLE_POINT_DURATION:-10}"
search_clients="${BENCH_SEARCH_CLIENTS:-4}"
search_duration="${BENCH_SEARCH_DURATION:-20}"
search_queries="${BENCH_SEARCH_QUERIES:-400}"
ka_requests="${BENCH_KEEPALIVE_REQUESTS:-200}"
warmup_window="${BENCH_WARMUP_WINDOW:-10}"
warmup_tolerance="${BENCH_WARMUP_TOLERANCE:-0.05}"
warmup_max="${BENCH_WARMUP_MAX:-12}"
quiet_max="${BENCH_QUIET_MAX:-120}"
quiet_share="${BENCH_QUIET_SHARE:-0.25}"
crosscheck_duration="${BENCH_CROSSCHECK_DURATION:-10}"
crosscheck_client="${BENCH_CROSSCHECK_CLIENT:-aiohttp}"
servers_csv="${BENCH_SERVERS:-ferroflow,mlflow-default,mlflow-gunicorn}"
out="${BENCH_OUT:-$here/results.md}"
start_timeout="${BENCH_START_TIMEOUT:-180}"
bench_root="${FERROFLOW_BENCH_STATE:-/tmp/ferroflow-bench}"
history="${BENCH_HISTORY:-1}"
history_points="${BENCH_HISTORY_POINTS:-100000}"
history_bulk_runs="${BENCH_HISTORY_BULK_RUNS:-100}"
history_bulk_steps="${BENCH_HISTORY_BULK_STEPS:-10000}"
history_repeats="${BENCH_HISTORY_REPEATS:-5}"
only="${BENCH_ONLY:-}"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
state="$bench_root/$stamp"
mkdir -p "$state"
raw="$state/raw.jsonl"
: >"$raw"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$backend" in postgres|sqlite) ;; *) die "BENCH_BACKEND=$backend: postgres or sqlite" ;; esac
case "$only" in ''|history) ;; *) die "BENCH_ONLY=$only: empty or history" ;; esac
case "$crosscheck_client" in aiohttp|mlflow) ;; *) die "BENCH_CROSSCHECK_CLIENT=$crosscheck_client: aiohttp or mlflow" ;; esac
IFS=',' read -r -a servers <<<"$servers_csv"
for s in "${servers[@]}"; do
  case "$s" in ferroflow|mlflow-default|mlflow-gunicorn) ;; *) die "unknown server $s in BENCH_SERVERS" ;; esac
done
want() { [[ ",$servers_csv," == *",$1,"* ]]; }

# free_port, group_alive, group_cpu_ticks
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

record() { cat >>"$raw"; tail -n1 "$raw" | cut -c1-400 >&2; }
# last_field KEY: KEY of the last raw record
last_field() { tail -n1 "$raw" | python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
loadavg3() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------------------------------------
# setup: database server, Python venv, binaries

setup_postgres() {
  eval "$(bash "$root/e2e/setup/postgres.sh")"
  pg_url="$FERROFLOW_TEST_PG_URL"                      # postgres://postgres@127.0.0.1:PORT/postgres
  pg_base="postgresql://${pg_url#*://}"; pg_base="${pg_base%/*}"
  # shellcheck disable=SC2012 # Debian's version directories: plain numbers
  psql_bin="$(command -v psql || echo "$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k4,4n | tail -n1)/psql")"
}
psql_admin() { "$psql_bin" "$pg_url" -v ON_ERROR_STOP=1 -qAt "$@"; }
psql_db() { local db="$1"; shift; "$psql_bin" "${pg_url%/*}/$db" -v ON_ERROR_STOP=1 -qAt "$@"; }

setup_ferroflow() {
  ferroflow=/bin/false; ferroflow_source="not measured"
  if ! want ferroflow; then
    return 0
  elif [[ -n "${FERROFLOW_BIN:-}" ]]; then
    ferroflow="$(cd "$(dirname "$FERROFLOW_BIN")" && pwd)/$(basename "$FERROFLOW_BIN")"
    [[ -x "$ferroflow" ]] || die "FERROFLOW_BIN=$FERROFLOW_BIN is not executable"
    ferroflow_source="prebuilt $ferroflow"
  elif [[ -n "${BENCH_FERROFLOW_REV:-}" ]]; then
    # a committed revision, exported from git (the work tree may hold others' unfinished edits)
    local rev src
    rev="$(git rev-parse --short "$BENCH_FERROFLOW_REV")"
    src="$bench_root/src-$rev"
    if [[ ! -f "$src/Cargo.toml" ]]; then
      mkdir -p "$src" && git archive "$rev" | tar -x -C "$src"
    fi
    log "building ferroflow $rev in $src (cargo build --release)"
    (cd "$src" && CARGO_TARGET_DIR="$bench_root/target" cargo build --release --bin ferroflow >&2)
    ferroflow="$bench_root/target/release/ferroflow"
    ferroflow_source="commit $rev, cargo build --release"
  else
    log "building ferroflow (cargo build --release)"
    cargo build --release --bin ferroflow >&2
    ferroflow="${CARGO_TARGET_DIR:-$root/target}/release/ferroflow"
    local rev; rev="$(git rev-parse --short HEAD)"
    if [[ -n "$(git status --porcelain -- src migrations Cargo.toml Cargo.lock build.rs)" ]]; then
      ferroflow_source="work tree at $rev with uncommitted changes, cargo build --release"
    else
      ferroflow_source="commit $rev, cargo build --release"
    fi
  fi
}

setup_loadgen() {
  if [[ -n "${BENCH_LOADGEN:-}" ]]; then
    loadgen="$BENCH_LOADGEN"
  else
    log "building the load generator"
    CARGO_TARGET_DIR="$here/loadgen/target" cargo build --release --manifest-path "$here/loadgen/Cargo.toml" >&2
    loadgen="$here/loadgen/target/release/ferroflow-loadgen"
  fi
  [[ -x "$loadgen" ]] || die "$loadgen is not executable"
}

setup() {
  log "state and logs in $state; backend $backend"
  [[ "$backend" == sqlite ]] || setup_postgres
  eval "$(bash "$root/e2e/setup/venv.sh")"
  mlflow="$FERROFLOW_VENV/bin/mlflow"
  venv_python="$FERROFLOW_VENV/bin/python"
  export MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
  command -v curl >/dev/null || die "curl is needed"
  setup_ferroflow
  [[ "$only" == history ]] || setup_loadgen  # the history section needs no load generator
  clk_tck="$(getconf CLK_TCK 2>/dev/null || echo 100)"
}

# machine facts: one record
record_facts() {
  local postgres="none (SQLite files)"
  [[ "$backend" == sqlite ]] || postgres="$(psql_admin -c 'SHOW server_version')"
  python3 - "$ferroflow" "$ferroflow_source" "$mlflow" "$backend" "$postgres" <<'EOF' | record
import json, os, platform, sqlite3, subprocess, sys
ferroflow, ferroflow_source, mlflow, backend, postgres = sys.argv[1:6]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:
        return f"? ({e})"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
mem_kib = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1])
python = os.path.join(os.path.dirname(mlflow), "python")
print(json.dumps({
    "measure": "facts",
    "backend": backend,
    "cores": os.cpu_count(),
    "cpu": cpu,
    "memory_gib": round(mem_kib / 1024 / 1024, 1),
    "kernel": platform.release(),
    "postgres": postgres,
    "sqlite": run(python, "-c", "import sqlite3; print(sqlite3.sqlite_version)"),
    "mlflow": run(mlflow, "--version"),
    "gunicorn": run(python, "-c", "import gunicorn; print(gunicorn.__version__)"),
    "uvicorn": run(python, "-c", "import uvicorn; print(uvicorn.__version__)"),
    "python": run(python, "--version"),
    "ferroflow": ferroflow_source if ferroflow == "/bin/false" else run(ferroflow, "--version") + " (" + ferroflow_source + ")",
    "commit": run("git", "rev-parse", "--short", "HEAD"),
    "rustc": run("rustc", "--version"),
    "loadavg_start": open("/proc/loadavg").read().split()[:3],
}))
EOF
}

# ---------------------------------------------------------------------------------------------
# one server at a time: its store, start, stop

server_pid=""; db=""; sqlite_file=""; url=""
cpu_args=()

# fresh_store NAME ROUND: a new database (or SQLite file); sets store
fresh_store() {
  local name="$1" round="$2"
  if [[ "$backend" == sqlite ]]; then
    sqlite_file="$state/$name-$round.db"
    rm -f "$sqlite_file"
    store="sqlite:///$sqlite_file"
  else
    db="bench_${name//-/_}_${round}_${stamp,,}"
    psql_admin -c "CREATE DATABASE \"$db\""
    store="$pg_base/$db"
  fi
}

drop_store() {
  [[ "${BENCH_KEEP_DBS:-0}" != 1 ]] || { db=""; sqlite_file=""; return 0; }
  if [[ -n "$db" ]]; then
    psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" 2>/dev/null || true
  fi
  [[ -z "$sqlite_file" ]] || rm -f "$sqlite_file" "$sqlite_file-wal" "$sqlite_file-shm"
  db=""; sqlite_file=""
}

# start_server NAME ROUND: on a fresh store; sets server_pid, url, cpu_args; records start-up time
start_server() {
  local name="$1" round="$2" p artifacts cmd
  fresh_store "$name" "$round"
  p="$(free_port)"
  url="http://127.0.0.1:$p"
  artifacts="$state/artifacts-$name-$round"
  mkdir -p "$artifacts"
  case "$name" in
    ferroflow) cmd=("$ferroflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts") ;;
    mlflow-default) cmd=("$mlflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts") ;;
    mlflow-gunicorn) cmd=("$mlflow" server --host 127.0.0.1 --port "$p" --backend-store-uri "$store" --artifacts-destination "$artifacts" --workers 4 "--gunicorn-opts=--timeout 120") ;;
  esac
  log "round $round: starting $name alone on 127.0.0.1:$p: ${cmd[*]}"
  [[ "$round" != 1 ]] || echo "$name: ${cmd[*]}" >>"$state/commands.txt"
  # its own session, so that stopping it reaches every worker and job runner: the session
  # leader writes its pid (= the process group id) before exec'ing the server
  local pidfile="$state/$name-$round.pid" t0=$SECONDS
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'echo $$ >"$0"; cd "$1" && shift && exec "$@"' "$pidfile" "$artifacts" "${cmd[@]}" \
    >"$state/$name-$round.log" 2>&1 &
  local deadline=$((SECONDS + start_timeout))
  until [[ -s "$pidfile" ]]; do (( SECONDS < deadline )) || die "$name did not start"; sleep 0.05; done
  server_pid="$(cat "$pidfile")"
  until curl -fsS --max-time 2 "$url/health" >/dev/null 2>&1; do
    group_alive "$server_pid" || { tail -n 40 "$state/$name-$round.log" >&2; die "$name exited during start-up"; }
    (( SECONDS < deadline )) || { tail -n 40 "$state/$name-$round.log" >&2; die "$name not healthy within ${start_timeout}s"; }
    sleep 0.2
  done
  cpu_args=(--server-pid "$server_pid" --clk-tck "$clk_tck")
  [[ -z "$db" ]] || cpu_args+=(--db "$db")
  printf '{"measure":"start","server":"%s","rep":"%s","healthy_after_s":%s}\n' "$name" "$round" "$((SECONDS - t0))" | record
}

# stop_server: SIGTERM to the whole group, SIGKILL after 30 s; returns once no process is left
stop_server() {
  [[ -n "$server_pid" ]] || return 0
  if group_alive "$server_pid"; then
    kill -TERM -- "-$server_pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while group_alive "$server_pid" && (( SECONDS < deadline )); do sleep 0.2; done
    if group_alive "$server_pid"; then
      log "server group $server_pid did not stop within 30 s of SIGTERM; SIGKILL"
      kill -KILL -- "-$server_pid" 2>/dev/null || true
      deadline=$((SECONDS + 10))
      while group_alive "$server_pid" && (( SECONDS < deadline )); do sleep 0.2; done
      if group_alive "$server_pid"; then
        die "server group $server_pid survived SIGKILL: the next server would not run alone"
      fi
    fi
  fi
  server_pid=""
}

cleanup() {
  local status=$?
  stop_server
  drop_store
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# seeding: one 10,000-run experiment per database, identical content (a pure function of the
# run index, see `seed_run` in loadgen). Seeded per server on its own fresh database, right after
# its start: a template database would have to be one per schema anyway (ferroflow's and
# MLflow's tables differ) and would hand MLflow a database its migrations did not create.
# ferroflow is seeded through its API (runs/create + log-batch per run). MLflow needs many
# minutes for that on 2 cores, so by default its experiment is created through its API and the
# runs are COPY'd into MLflow's own tables (`loadgen seed-sql`: the rows MLflow's store writes
# for the same calls; on SQLite loaded by seed_sqlite.py); BENCH_MLFLOW_SEED=api seeds MLflow
# through its API too. check_seed.py compares sample runs, read back through each server's
# API, with the first server's.

# seed NAME ROUND: sets exp_id
seed() {
  local name="$1" round="$2"
  local lab=(--label "server=$name" --label "rep=$round")
  if [[ "$name" == ferroflow || "${BENCH_MLFLOW_SEED:-sql}" == api ]]; then
    # one client on SQLite: concurrent writers there meet "database is locked"
    local seed_clients="$clients"
    [[ "$backend" != sqlite ]] || seed_clients=1
    log "seeding $search_runs runs into $name through its API"
    "$loadgen" seed --url "$url" --runs "$search_runs" --clients "$seed_clients" \
      --experiment-name bench-search "${lab[@]}" | record
    exp_id="$(last_field experiment_id)"
  else
    log "seeding $search_runs runs into $name: experiment through the API, runs by COPY into MLflow's tables"
    local t0=$SECONDS
    exp_id="$(curl -fsS --max-time 60 -H 'Content-Type: application/json' -d '{"name":"bench-search"}' \
      "$url/api/2.0/mlflow/experiments/create" | python3 -c 'import json,sys; print(json.load(sys.stdin)["experiment_id"])')"
    if [[ "$backend" == sqlite ]]; then
      "$loadgen" seed-sql --experiment-id "$exp_id" --runs "$search_runs" | python3 "$here/seed_sqlite.py" "$sqlite_file"
    else
      "$loadgen" seed-sql --experiment-id "$exp_id" --runs "$search_runs" | psql_db "$db" >&2
    fi
    printf '{"measure":"seed","method":"sql","server":"%s","rep":"%s","experiment_id":"%s","runs":%s,"elapsed_s":%s}\n' \
      "$name" "$round" "$exp_id" "$search_runs" "$((SECONDS - t0))" | record
  fi
  # same planner statistics everywhere before measuring
  if [[ "$backend" == sqlite ]]; then
    python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=60); c.execute("ANALYZE"); c.close()' "$sqlite_file"
  else
    psql_db "$db" -c "VACUUM ANALYZE"
  fi
  python3 "$here/check_seed.py" --reference "$state/seed-reference.json" "$search_runs" "$name=$url=$exp_id" \
    | record || die "the seeded experiment of $name differs from the first server's (see above)"
}

# ---------------------------------------------------------------------------------------------
# warm-up, judged

# wait_quiet NAME ROUND: until the server's processes used under BENCH_QUIET_SHARE (25%) of one
# core in each of two successive 2-s samples — start-up work done (an idle MLflow's job
# runners poll at ~10% of a core; importing, migrating or spawning takes a whole one) — or
# BENCH_QUIET_MAX seconds passed (then flagged)
wait_quiet() {
  local name="$1" round="$2" t0=$SECONDS before after used=0 calm=0
  local limit; limit="$(python3 -c 'import sys; print(int(float(sys.argv[1]) * int(sys.argv[2]) * 2))' "$quiet_share" "$clk_tck")"
  while (( calm < 2 && SECONDS - t0 < quiet_max )); do
    before="$(group_cpu_ticks "$server_pid")"
    sleep 2
    after="$(group_cpu_ticks "$server_pid")"
    used=$((after - before))
    if (( used < limit )); then calm=$((calm + 1)); else calm=0; fi
  done
  local quiet=false; (( calm < 2 )) || quiet=true
  printf '{"measure":"quiet","server":"%s","rep":"%s","quiet":%s,"waited_s":%s,"threshold_core_share":%s,"last_2s_core_share":%s}\n' \
    "$name" "$round" "$quiet" "$((SECONDS - t0))" "$quiet_share" \
    "$(python3 -c 'import sys; print(round(int(sys.argv[1]) / int(sys.argv[2]) / 2, 3))' "$used" "$clk_tck")" | record
  [[ "$quiet" == true ]] || log "$name still busy after ${quiet_max}s without load: measuring anyway (flagged)"
}

# load MEASURE DURATION ARGS...: one closed-loop window of a logging measure through loadgen
load() {
  local measure="$1" duration="$2"; shift 2
  case "$measure" in
    log-batch) "$loadgen" log-batch --url "$url" --clients "$clients" --metrics 1000 --keys 10 \
      --requests "$lb_requests" --duration "$duration" "${cpu_args[@]}" "$@" ;;
    log-metric) "$loadgen" log-metric --url "$url" --clients "$clients" \
      --requests "$lm_requests" --duration "$duration" "${cpu_args[@]}" "$@" ;;
  esac
}

rate_key() { if [[ "$1" == log-batch ]]; then echo points_per_s; else echo requests_per_s; fi; }

# warm_up NAME ROUND MEASURE: windows of the measured load until two successive windows differ
# by less than the tolerance (relative to the larger), or the cap; records every window and
# the verdict
warm_up() {
  local name="$1" round="$2" measure="$3" n rate prev="" rates=() converged=false change=null
  for ((n = 1; n <= warmup_max; n++)); do
    load "$measure" "$warmup_window" --label "server=$name" --label "rep=$round" \
      --label phase=warm-up --label "window=$n" | record
    rate="$(last_field "$(rate_key "$measure")")"
    rates+=("$rate")
    if [[ -n "$prev" ]]; then
      change="$(python3 -c 'import sys; a, b = map(float, sys.argv[1:]); print(round(abs(a - b) / max(a, b, 1e-9), 4))' "$prev" "$rate")"
      if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)' "$change" "$warmup_tolerance"; then
        converged=true; break
      fi
    fi
    prev="$rate"
  done
  local joined; joined="$(IFS=,; echo "${rates[*]}")"
  printf '{"measure":"warm-up","of":"%s","server":"%s","rep":"%s","window_s":%s,"tolerance":%s,"rates":[%s],"last_change":%s,"converged":%s}\n' \
    "$measure" "$name" "$round" "$warmup_window" "$warmup_tolerance" "$joined" "$change" "$converged" | record
  if [[ "$converged" == true ]]; then
    log "$name $measure warm after ${#rates[@]} windows of ${warmup_window}s (last two within $change < $warmup_tolerance): $joined"
  else
    log "$name $measure NOT converged after $warmup_max windows (last change $change): $joined — flagged"
  fi
}

# ---------------------------------------------------------------------------------------------
# measurements

# crosscheck NAME ROUND MEASURE: the independent client against the same server, printed next
# to loadgen's figure of the measured window just before
crosscheck() {
  local name="$1" round="$2" measure="$3" key ours theirs processes=1
  key="$(rate_key "$measure")"
  ours="$(last_field "$key")"
  # one Python process cannot drive ferroflow's single-point rate; MlflowClient: a process per client
  [[ "$measure" == log-batch ]] || processes=2
  [[ "$crosscheck_client" != mlflow ]] || processes="$clients"
  local budget="$lb_requests"
  [[ "$measure" == log-batch ]] || budget="$lm_requests"
  "$venv_python" "$here/crosscheck.py" "$measure" --url "$url" --client "$crosscheck_client" \
    --clients "$clients" --processes "$processes" --duration "$crosscheck_duration" --requests "$budget" \
    --label "server=$name" --label "rep=$round" | record
  theirs="$(last_field "$key")"
  python3 - "$name" "$measure" "$key" "$ours" "$theirs" <<'EOF' >&2
import sys
name, measure, key = sys.argv[1:4]
ours, theirs = float(sys.argv[4]), float(sys.argv[5])
diff = abs(ours - theirs) / max(ours, theirs, 1e-9)
flag = "  ** differ by more than 20% **" if diff > 0.20 else ""
print(f"[bench] {name} {measure} {key}: loadgen {ours:,.0f}, independent client {theirs:,.0f} ({diff:.0%}){flag}")
EOF
}

# ---------------------------------------------------------------------------------------------
# single-point logging: what `mlflow.log_metric`, `log_param` and `set_tag` in a training loop
# send, one value per request, at several client counts (ferroflow writes concurrent ones in
# one group commit; at 64 clients the groups are large, and the latency p99 shows what waiting
# for a group costs). Each window is preceded by an untimed one of the same load (the log-metric
# row of the main table has the judged warm-up); the rows carry section=single-point. At
# BENCH_CLIENTS, log-param and set-tag are cross-checked with the independent client too.

# measure_single_points NAME ROUND
measure_single_points() {
  local name="$1" round="$2" measure c
  for measure in log-metric log-param set-tag; do
    for c in $sp_clients; do
      "$loadgen" "$measure" --url "$url" --clients "$c" --requests "$lm_requests" \
        --duration "$warmup_window" >/dev/null
      "$loadgen" "$measure" --url "$url" --clients "$c" --requests "$lm_requests" \
        --duration "$sp_duration" "${cpu_args[@]}" --label "server=$name" --label "rep=$round" \
        --label section=single-point | record
      # the independent client for the new shapes (log-metric's is in the main table)
      if [[ "$c" == "$clients" && "$measure" != log-metric ]]; then
        crosscheck "$name" "$round" "$measure"
      fi
    done
  done
}

# measure_server NAME ROUND: everything for one server, alone on the machine
measure_server() {
  local name="$1" round="$2" lab=(--label "server=$1" --label "rep=$2")
  local load_before; load_before="$(loadavg3)"
  start_server "$name" "$round"
  seed "$name" "$round"
  wait_quiet "$name" "$round"
  local measure
  for measure in log-batch log-metric; do
    warm_up "$name" "$round" "$measure"
    local duration="$lb_duration"
    [[ "$measure" == log-batch ]] || duration="$lm_duration"
    load "$measure" "$duration" "${lab[@]}" | record
    crosscheck "$name" "$round" "$measure"
  done
  measure_single_points "$name" "$round"
  local mr
  for mr in 100 1000; do
    "$loadgen" search --url "$url" --experiment-id "$exp_id" --max-results "$mr" \
      --clients "$search_clients" --queries "$search_queries" --duration "$search_duration" \
      "${cpu_args[@]}" "${lab[@]}" | record
  done
  "$loadgen" keepalive --url "$url" --requests "$ka_requests" "${lab[@]}" | record
  [[ "$history" != 1 ]] || measure_history "$name" "$round"
  "$loadgen" rss --pid "$server_pid" "${lab[@]}" | record
  stop_server
  drop_store
  printf '{"measure":"turn","server":"%s","rep":"%s","loadavg_before":"%s","loadavg_after":"%s"}\n' \
    "$name" "$round" "$load_before" "$(loadavg3)" | record
}

# ---------------------------------------------------------------------------------------------
# history: reads of long metric histories against the raw read of the same rows

# measure_history NAME ROUND: history.py seeds its runs through the server's API, checks the
# answers, then times them against its own read of the server's database
measure_history() {
  local name="$1" round="$2" raw_store="sqlite:///$sqlite_file" seed_clients="$clients"
  if [[ "$backend" == sqlite ]]; then
    seed_clients=1  # concurrent writers meet "database is locked" on SQLite
  else
    raw_store="$pg_base/$db"
  fi
  log "history: $history_points-point get-history and $history_bulk_runs × $history_bulk_steps bulk-interval on $name"
  "$venv_python" "$here/history.py" --url "$url" --server "$name" --rep "$round" \
    --pgid "$server_pid" --store "$raw_store" --points "$history_points" \
    --bulk-runs "$history_bulk_runs" --bulk-steps "$history_bulk_steps" \
    --repeats "$history_repeats" --seed-clients "$seed_clients" | record
}

# history_turn NAME ROUND: BENCH_ONLY=history — the server alone, fresh, quiet, then history
history_turn() {
  local name="$1" round="$2" load_before; load_before="$(loadavg3)"
  start_server "$name" "$round"
  wait_quiet "$name" "$round"
  measure_history "$name" "$round"
  stop_server
  drop_store
  printf '{"measure":"turn","server":"%s","rep":"%s","loadavg_before":"%s","loadavg_after":"%s"}\n' \
    "$name" "$round" "$load_before" "$(loadavg3)" | record
}

# ---------------------------------------------------------------------------------------------
# main (not when sourced: scale.sh reuses the functions above)

[[ "${BASH_SOURCE[0]}" == "$0" ]] || return 0
setup
record_facts
for round in $(seq 1 "$reps"); do
  for s in "${servers[@]}"; do
    log "round $round/$reps: $s"
    if [[ "$only" == history ]]; then history_turn "$s" "$round"; else measure_server "$s" "$round"; fi
  done
done
python3 -c 'import json; print(json.dumps({"measure":"end","loadavg_end":open("/proc/loadavg").read().split()[:3]}))' | record

python3 "$here/report.py" "$raw" "$state/commands.txt" >"$state/results.md"
cp "$state/results.md" "$out"
cat "$out"
log "raw results: $raw; table written to $out"
